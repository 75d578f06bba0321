//! Parity with Hugging Face transformers (PyTorch) on the committed tiny CLIP: token ids, text and image
//! embeddings, in both preprocessing modes. Fixtures come from tests/fixtures/make_fixtures.py.

use candle_core::Device;
use serde_json::Value;
use vl2v::image::{load_rgb, Preprocess, PreprocessMode};
use vl2v::model::{resolve, ClipTeacher, Needs};
use vl2v::views::ViewParams;
use vl2v_tests::{fixtures, tiny_clip};

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn teacher() -> ClipTeacher {
    let files = resolve(tiny_clip().to_str().unwrap(), None, Needs::Clip).unwrap();
    ClipTeacher::load(&files, &Device::Cpu).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_match_transformers() {
    let teacher = teacher();
    for prompt in expected()["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let ids: Vec<u32> = prompt["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(teacher.tokenize(text).unwrap(), ids, "{text:?}");
    }
}

#[test]
fn text_embeddings_match_transformers() {
    let teacher = teacher();
    let expected = expected();
    let prompts = expected["prompts"].as_array().unwrap();
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    // One padded batch: padding with end-of-text must not change any prompt's embedding.
    let embeddings = teacher.embed_texts(&texts, texts.len()).unwrap();
    for (prompt, embedding) in prompts.iter().zip(&embeddings) {
        let cos = cosine(embedding, &floats(&prompt["text_embedding"]));
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", prompt["text"]);
    }
    let scale = expected["logit_scale"]["exp"].as_f64().unwrap() as f32;
    assert!((teacher.logit_scale() - scale).abs() < 1e-3 * scale);
}

#[test]
fn image_embeddings_match_transformers_in_both_modes() {
    let teacher = teacher();
    let expected = expected();
    for (mode, key) in [
        (PreprocessMode::Clip, "clip_embedding"),
        (PreprocessMode::Vl2v, "vl2v_embedding"),
    ] {
        let preprocess = Preprocess::new(mode, teacher.image_size() as u32);
        for image in expected["images"].as_array().unwrap() {
            let file = image["file"].as_str().unwrap();
            let rgb = load_rgb(&fixtures().join(file)).unwrap();
            let pixels = preprocess.apply(&rgb, &ViewParams::identity());
            let embedding = teacher.embed_images(&pixels, 1).unwrap().remove(0);
            let cos = cosine(&embedding, &floats(&image[key]));
            eprintln!("{mode:?} {file}: cosine {cos:.6}");
            assert!(cos >= 0.999, "{mode:?} {file}: cosine {cos}");
        }
    }
}
