//! A word-level tokenizer trained on the corpus captions with the `tokenizers` crate, in CLIP's shape:
//! lower-cased, split on whitespace and punctuation, `<|startoftext|> … <|endoftext|>` around every
//! prompt, so that `embed` loads it like a hub CLIP's `tokenizer.json`.

use std::path::Path;

use anyhow::{anyhow, Result};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{Lowercase, NormalizerWrapper};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

pub const START: &str = "<|startoftext|>";
pub const END: &str = "<|endoftext|>";
pub const UNKNOWN: &str = "<|unknown|>";
/// Ids of the special tokens: the trainer places them first, in this order.
pub const START_ID: u32 = 0;
pub const END_ID: u32 = 1;

/// Trains on `captions` and returns the tokenizer.
pub fn train(captions: &[String]) -> Result<Tokenizer> {
    let e = |e: tokenizers::Error| anyhow!("tokenizer: {e}");
    let model = WordLevel::builder()
        .unk_token(UNKNOWN.into())
        .build()
        .map_err(e)?;
    let template = TemplateProcessing::builder()
        .try_single(format!("{START} $A {END}"))
        .map_err(|e| anyhow!("tokenizer template: {e}"))?
        .special_tokens(vec![(START, START_ID), (END, END_ID)])
        .build()
        .map_err(|e| anyhow!("tokenizer template: {e}"))?;
    let mut tokenizer = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        tokenizers::decoders::DecoderWrapper,
    >::new()
    .with_model(model.into())
    .with_normalizer(Some(Lowercase.into()))
    .with_pre_tokenizer(Some(Whitespace {}.into()))
    .with_post_processor(Some(template.into()))
    .build()
    .map_err(e)?;
    let mut trainer = TrainerWrapper::WordLevelTrainer(
        WordLevelTrainer::builder()
            .show_progress(false)
            .special_tokens(vec![
                AddedToken::from(START, true),
                AddedToken::from(END, true),
                AddedToken::from(UNKNOWN, true),
            ])
            .build()
            .map_err(|e| anyhow!("tokenizer trainer: {e}"))?,
    );
    tokenizer.train(&mut trainer, captions.iter()).map_err(e)?;
    let tokenizer = Tokenizer::from(tokenizer);
    for (token, id) in [(START, START_ID), (END, END_ID)] {
        anyhow::ensure!(
            tokenizer.token_to_id(token) == Some(id),
            "the trained tokenizer put {token} at {:?}, not {id}",
            tokenizer.token_to_id(token)
        );
    }
    Ok(tokenizer)
}

/// Token ids of `text` with start and end of text.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, true)
        .map_err(|e| anyhow!("cannot tokenize '{text}': {e}"))?
        .get_ids()
        .to_vec())
}

pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    tokenizer
        .save(path, true)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_caption_words_and_wraps_prompts() {
        let captions: Vec<String> = ["a sketch of a red star", "A photo of a Cup.", "neon star"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let tk = train(&captions).unwrap();
        let ids = encode(&tk, "a photo of a star").unwrap();
        assert_eq!(ids.first(), Some(&START_ID));
        assert_eq!(ids.last(), Some(&END_ID));
        assert_eq!(ids.len(), 7);
        let unk = tk.token_to_id(UNKNOWN).unwrap();
        assert!(!ids.contains(&unk), "{ids:?}");
        assert!(encode(&tk, "a zebra").unwrap().contains(&unk));
        // Lower-cased, punctuation split off.
        assert_eq!(encode(&tk, "CUP").unwrap(), encode(&tk, "cup").unwrap());
        assert!(tk.token_to_id(".").is_some());
        let dir = tempfile::tempdir().unwrap();
        save(&tk, &dir.path().join("tokenizer.json")).unwrap();
        let back = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            back.encode("a photo of a star", true).unwrap().get_ids(),
            &ids[..]
        );
    }
}
