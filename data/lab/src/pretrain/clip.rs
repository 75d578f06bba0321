//! `distill pretrain clip`: a miniature CLIP trained from scratch on a captioned corpus with the CLIP
//! contrastive loss, saved in Hugging Face's layout (`config.json`, `model.safetensors`, `tokenizer.json`)
//! so that `embed --model DIR` loads it exactly like a hub model. It is the offline demo's teacher.
//!
//! The loss is CLIP's symmetric cross-entropy over the batch's image–caption similarity matrix, with one
//! change for a corpus whose captions repeat: the target of a row is spread evenly over every column with
//! the same caption text (identical captions are not negatives of each other).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::synth::{render, Style, CLASSES};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;
use vl2v::image::Preprocess;
use vl2v::model::clip::{load_clip_config, Clip};

use super::corpus::Corpus;
use super::tokenizer::{self, END_ID, START_ID};
use super::{init_vars, write_model_dir, Schedule};
use vl2v::rng::SplitMix64;
use vl2v::train::graph::{log_softmax, normalize_rows};
use vl2v::train::Adam;

/// Sizes of the miniature CLIP.
#[derive(Clone, Debug, clap::Args)]
pub struct Size {
    /// Image side (the corpus's), a multiple of --patch-size.
    #[arg(long, default_value_t = 64, value_parser = crate::at_least(1))]
    pub image_size: usize,
    /// Patch side, at least 1: 16 gives a 4×4 grid at 64 pixels, which a 2-core machine trains in minutes.
    #[arg(long, default_value_t = 16, value_parser = crate::at_least(1))]
    pub patch_size: usize,
    /// Width of both towers, a multiple of --heads.
    #[arg(long, default_value_t = 128, value_parser = crate::at_least(1))]
    pub width: usize,
    /// Transformer layers of the image tower, at least 1.
    #[arg(long, default_value_t = 4, value_parser = crate::at_least(1))]
    pub vision_layers: usize,
    /// Transformer layers of the text tower, at least 1.
    #[arg(long, default_value_t = 3, value_parser = crate::at_least(1))]
    pub text_layers: usize,
    /// Attention heads of both towers, at least 1.
    #[arg(long, default_value_t = 4, value_parser = crate::at_least(1))]
    pub heads: usize,
    /// Joint embedding dimension, at least 1.
    #[arg(long, default_value_t = 128, value_parser = crate::at_least(1))]
    pub projection_dim: usize,
    /// Longest prompt in tokens, start and end included: at least 3 (start, a word, end).
    #[arg(long, default_value_t = 24, value_parser = crate::at_least(3))]
    pub context: usize,
}

/// Train a miniature CLIP on a captioned corpus (the offline demo's teacher; `make lab-models`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A corpus written by `synthdg corpus` (captions.jsonl + images).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output model directory (Hugging Face layout).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub size: Size,
    /// Training steps, at least 1.
    #[arg(long, default_value_t = 4000, value_parser = crate::at_least(1))]
    pub steps: usize,
    /// Images per step, at least 2 (the contrastive loss needs a negative).
    #[arg(long, default_value_t = 128, value_parser = crate::at_least(2))]
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up, cosine decay to 0), finite and > 0.
    #[arg(
        long,
        default_value_t = 1e-3,
        value_parser = vl2v::ranges::positive,
        allow_negative_numbers = true
    )]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The generated sample every model's recorded accuracy is measured on (never trained on).
pub const EVAL_SEED: u64 = 7;
pub const EVAL_PER_CLASS: usize = 6;

fn config_json(size: &Size, vocab: usize) -> serde_json::Value {
    json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": size.projection_dim,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "vocab_size": vocab,
            "hidden_size": size.width,
            "intermediate_size": 4 * size.width,
            "num_hidden_layers": size.text_layers,
            "num_attention_heads": size.heads,
            "max_position_embeddings": size.context,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": START_ID,
            "eos_token_id": END_ID,
            "pad_token_id": END_ID,
        },
        "vision_config": {
            "hidden_size": size.width,
            "intermediate_size": 4 * size.width,
            "num_hidden_layers": size.vision_layers,
            "num_attention_heads": size.heads,
            "num_channels": 3,
            "image_size": size.image_size,
            "patch_size": size.patch_size,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    })
}

/// Symmetric contrastive loss; `groups[i]` identifies row i's caption text.
fn contrastive_loss(
    image: &Tensor,
    text: &Tensor,
    scale: &Tensor,
    groups: &[usize],
) -> Result<Tensor> {
    let n = groups.len();
    let logits = image
        .matmul(&text.t()?)?
        .broadcast_mul(&scale.exp()?.reshape((1, 1))?)?;
    let mut target = vec![0.0f32; n * n];
    for i in 0..n {
        let same: Vec<usize> = (0..n).filter(|&j| groups[j] == groups[i]).collect();
        for &j in &same {
            target[i * n + j] = 1.0 / same.len() as f32;
        }
    }
    // Symmetric: the same targets serve both directions.
    let target = Tensor::from_vec(target, (n, n), image.device())?;
    let rows = (log_softmax(&logits)? * &target)?
        .sum(D::Minus1)?
        .mean_all()?;
    let cols = (log_softmax(&logits.t()?)? * &target)?
        .sum(D::Minus1)?
        .mean_all()?;
    Ok(((rows + cols)? * -0.5)?)
}

/// What the sizes must satisfy together (each one's own range is checked as it is parsed).
fn check_size(size: &Size) -> Result<()> {
    anyhow::ensure!(
        size.image_size.is_multiple_of(size.patch_size),
        "--image-size {} must be a multiple of --patch-size {}",
        size.image_size,
        size.patch_size
    );
    anyhow::ensure!(
        size.width.is_multiple_of(size.heads),
        "--width {} must be a multiple of --heads {}",
        size.width,
        size.heads
    );
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    check_size(&args.size)?;
    let started = Instant::now();
    let corpus = Corpus::load(&args.corpus)?;
    eprintln!(
        "pretrain clip: {} captioned images, {} classes, from {}",
        corpus.len(),
        corpus.class_names.len(),
        args.corpus.display()
    );
    let tokenizer = tokenizer::train(&corpus.captions)?;
    let ids: Vec<Vec<u32>> = corpus
        .captions
        .iter()
        .map(|c| tokenizer::encode(&tokenizer, c))
        .collect::<Result<_>>()?;
    let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
    anyhow::ensure!(
        longest <= args.size.context,
        "a caption has {longest} tokens, more than --context {}",
        args.size.context
    );
    let mut caption_groups: Vec<&str> = corpus.captions.iter().map(String::as_str).collect();
    caption_groups.sort_unstable();
    caption_groups.dedup();
    let group_of: Vec<usize> = corpus
        .captions
        .iter()
        .map(|c| caption_groups.binary_search(&c.as_str()).unwrap_or(0))
        .collect();

    // The model, through the same config reader embed uses.
    let scratch = tempfile::tempdir()?;
    let config_path = scratch.path().join("config.json");
    let config = config_json(&args.size, tokenizer.get_vocab_size(true));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    let clip_config = load_clip_config(&config_path)?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Clip::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &clip_config,
        false,
    )?;
    let vars = init_vars(&varmap, args.seed)?;
    let logit_scale = vars
        .iter()
        .find(|(n, _)| n == "logit_scale")
        .map(|(_, v)| v.clone())
        .context("no logit_scale")?;
    logit_scale.set(&Tensor::new(2.6592f32, &device)?)?;
    let var_refs: Vec<&Var> = vars.iter().map(|(_, v)| v).collect();
    let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
    let mut adam = Adam::new(&sizes, args.lr, 0.0);
    let schedule = Schedule::new(args.lr, args.steps);
    let preprocess = Preprocess::clip(args.size.image_size as u32);
    let mut rng = SplitMix64::new(args.seed ^ 0x636c_6970);

    let bar = super::progress(args.steps as u64, "pretrain clip");
    let mut recent = Vec::new();
    for step in 0..args.steps {
        let items: Vec<usize> = (0..args.batch_size)
            .map(|_| rng.below(corpus.len()))
            .collect();
        let pixels = corpus.pixels(&items, &preprocess, Some(&mut rng));
        let s = args.size.image_size;
        let x = Tensor::from_vec(pixels, (items.len(), 3, s, s), &device)?;
        let batch_ids: Vec<Vec<u32>> = items.iter().map(|&i| ids[i].clone()).collect();
        let image = normalize_rows(&model.image_features(&x, true)?)?;
        let text = normalize_rows(&model.text_features(&batch_ids, END_ID, true)?)?;
        let groups: Vec<usize> = items.iter().map(|&i| group_of[i]).collect();
        let loss = contrastive_loss(&image, &text, logit_scale.as_tensor(), &groups)?;
        let value = loss.to_scalar::<f32>()?;
        anyhow::ensure!(
            value.is_finite(),
            "the contrastive loss is {value} at step {step}"
        );
        let grads = loss.backward()?;
        adam.lr = schedule.lr(step);
        adam.step_vars(&var_refs, &grads)?;
        // CLIP clamps the temperature at 100.
        let ls = logit_scale.as_tensor().to_scalar::<f32>()?;
        if ls > 100f32.ln() {
            logit_scale.set(&Tensor::new(100f32.ln(), &device)?)?;
        }
        recent.push(value);
        bar.inc(1);
        if (step + 1) % 100 == 0 || step + 1 == args.steps {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            bar.suspend(|| {
                eprintln!(
                    "pretrain clip step {}: loss {mean:.4} logit scale {:.1}",
                    step + 1,
                    ls.exp()
                )
            });
            recent.clear();
        }
    }
    bar.finish_and_clear();

    // Save in f16 (half the size), then measure the saved model through embed's own loader.
    let tensors: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(name, v)| Ok((name.clone(), v.as_tensor().to_dtype(DType::F16)?)))
        .collect::<Result<_>>()?;
    let accuracy = |dir: &Path| zero_shot_by_style(dir);
    let provenance = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "corpus": args.corpus,
        "corpus_images": corpus.len(),
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    let dir = write_model_dir(
        &args.out,
        &config,
        &tensors,
        Some(&tokenizer),
        provenance,
        accuracy,
    )?;
    eprintln!("pretrain clip: wrote {}", dir.display());
    println!("{}", dir.display());
    Ok(())
}

/// `EVAL_PER_CLASS` images of every class in `style` rendered with `seed`, preprocessed (evaluation
/// view), and their labels (indices into `CLASSES`).
pub fn eval_sample(
    seed: u64,
    style: Style,
    size: usize,
    preprocess: &Preprocess,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in CLASSES.iter().enumerate() {
        for i in 0..EVAL_PER_CLASS {
            let (img, _) = render(seed, style, class, i, size).context("render")?;
            pixels.extend(preprocess.apply(&img, &vl2v::views::ViewParams::identity()));
            labels.push(label);
        }
    }
    Ok((pixels, labels))
}

/// Zero-shot accuracy ("a photo of a {class}" over every class of the corpus universe) of the model in
/// `dir`, loaded as embed loads it, on the fixed evaluation sample: `EVAL_PER_CLASS` images per (style,
/// class) rendered with `EVAL_SEED`. Per style, plus the mean.
pub fn zero_shot_by_style(dir: &Path) -> Result<serde_json::Value> {
    zero_shot_on(dir, EVAL_SEED)
}

/// [`zero_shot_by_style`] on the images rendered with `seed` (the corpus's seed measures training fit).
pub fn zero_shot_on(dir: &Path, seed: u64) -> Result<serde_json::Value> {
    let files = vl2v::model::resolve(
        dir.to_str().context("path")?,
        None,
        vl2v::model::Needs::Clip,
    )?;
    let teacher = vl2v::model::ClipTeacher::load(&files, &Device::Cpu)?;
    let prompts: Vec<String> = CLASSES
        .iter()
        .map(|c| format!("a photo of a {c}"))
        .collect();
    let texts: Vec<f32> = teacher.embed_texts(&prompts, 64)?.concat();
    let size = teacher.image_size();
    let preprocess = Preprocess::clip(size as u32);
    let head =
        vl2v::zeroshot::ZeroShotHead::from_prototypes(texts, teacher.embedding_dim(), 100.0)?;
    let mut by_style = serde_json::Map::new();
    let mut total = 0.0;
    for style in Style::ALL {
        let (pixels, labels) = eval_sample(seed, style, size, &preprocess)?;
        let embeddings = teacher.embed_images(&pixels, labels.len())?.concat();
        let predicted = head.predict(&embeddings)?;
        let acc = vl2v::train::accuracy_of(&predicted, &labels);
        total += acc;
        by_style.insert(
            style.name().to_string(),
            json!((acc * 1000.0).round() / 1000.0),
        );
    }
    let mean = total / Style::ALL.len() as f64;
    Ok(json!({
        "zero_shot_accuracy": (mean * 1000.0).round() / 1000.0,
        "zero_shot_accuracy_by_style": by_style,
        "eval_sample": format!("synthdg render seed {seed}, {EVAL_PER_CLASS} per (style, class), prompt \"a photo of a {{class}}\""),
    }))
}
