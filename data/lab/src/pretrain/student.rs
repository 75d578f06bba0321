//! `distill pretrain student`: a student backbone trained from scratch, supervised (cross-entropy through a
//! linear classifier), on one style of the generated corpus only — the offline demo's stand-in for an
//! ImageNet-pretrained backbone, which has seen photos and little else. Saved as a directory with
//! `model.safetensors` under timm's names (the classifier as `head.*`, which students ignore).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::synth::{Style, CLASSES};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;
use vl2v::image::Preprocess;
use vl2v::model::students::{Student, StudentConfig};

use super::clip::{eval_sample, EVAL_PER_CLASS, EVAL_SEED};
use super::corpus::Corpus;
use super::{init_vars, write_model_dir, Schedule};
use vl2v::rng::SplitMix64;
use vl2v::train::graph::cross_entropy;
use vl2v::train::Adam;

/// Train a student backbone on one style of a corpus (the offline demo's student; make lab-models).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A corpus written by `synthdg corpus` (e.g. `--styles photo`).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Student architecture.
    #[arg(long, default_value = "mini-vit")]
    pub student: String,
    /// Training steps, at least 1.
    #[arg(long, default_value_t = 1000, value_parser = crate::at_least(1))]
    pub steps: usize,
    /// Images per step, at least 1.
    #[arg(long, default_value_t = 128, value_parser = crate::at_least(1))]
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

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let config = StudentConfig::by_name(&args.student)
        .with_context(|| format!("unknown student '{}'", args.student))?;
    let corpus = Corpus::load(&args.corpus)?;
    let classes = CLASSES.len();
    // Labels over the whole class universe (the evaluation's), whatever subset the corpus holds.
    let labels: Vec<usize> = corpus
        .labels
        .iter()
        .map(|&l| {
            CLASSES
                .iter()
                .position(|c| *c == corpus.class_names[l])
                .context("a corpus class outside the generator's")
        })
        .collect::<Result<_>>()?;
    let mut styles: Vec<&str> = corpus.styles.iter().map(String::as_str).collect();
    styles.sort_unstable();
    styles.dedup();
    eprintln!(
        "pretrain student: {} {} images ({}) from {}",
        corpus.len(),
        styles.join("+"),
        args.student,
        args.corpus.display()
    );
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let student = Student::load(vb.clone(), &config, true)?;
    let head_w = vb.get((classes, config.dim()), "head.weight")?;
    let head_b = vb.get(classes, "head.bias")?;
    let vars = init_vars(&varmap, args.seed)?;
    let var_refs: Vec<&Var> = vars.iter().map(|(_, v)| v).collect();
    let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
    let mut adam = Adam::new(&sizes, args.lr, 0.0);
    let schedule = Schedule::new(args.lr, args.steps);
    let size = config.image_size();
    let preprocess = Preprocess::vl2v(size as u32);
    let mut rng = SplitMix64::new(args.seed ^ 0x7374_7564);

    let bar = super::progress(args.steps as u64, "pretrain student");
    let mut recent = Vec::new();
    for step in 0..args.steps {
        let items: Vec<usize> = (0..args.batch_size)
            .map(|_| rng.below(corpus.len()))
            .collect();
        let pixels = corpus.pixels(&items, &preprocess, Some(&mut rng));
        let x = Tensor::from_vec(pixels, (items.len(), 3, size, size), &device)?;
        let f = student.forward(&x, true)?;
        let logits = f.matmul(&head_w.t()?)?.broadcast_add(&head_b)?;
        let y: Vec<usize> = items.iter().map(|&i| labels[i]).collect();
        let loss = cross_entropy(&logits, &y)?;
        let value = loss.to_scalar::<f32>()?;
        anyhow::ensure!(value.is_finite(), "the loss is {value} at step {step}");
        let grads = loss.backward()?;
        adam.lr = schedule.lr(step);
        adam.step_vars(&var_refs, &grads)?;
        recent.push(value);
        bar.inc(1);
        if (step + 1) % 100 == 0 || step + 1 == args.steps {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            bar.suspend(|| eprintln!("pretrain student step {}: loss {mean:.4}", step + 1));
            recent.clear();
        }
    }
    bar.finish_and_clear();

    let tensors: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
        .collect();
    let provenance = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "student": args.student,
        "corpus": args.corpus,
        "corpus_images": corpus.len(),
        "corpus_styles": styles,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    let name = args.student.clone();
    let dir = write_model_dir(
        &args.out,
        &serde_json::Value::Null,
        &tensors,
        None,
        provenance,
        |dir| accuracy_by_style(&dir.join("model.safetensors"), &name),
    )?;
    eprintln!("pretrain student: wrote {}", dir.display());
    println!("{}", dir.display());
    Ok(())
}

/// Accuracy of the saved backbone + `head.*` classifier on the fixed evaluation sample (as the CLIP's),
/// per style: high on the style it was trained on, lower elsewhere — the gap the demo's students close.
pub fn accuracy_by_style(weights: &Path, name: &str) -> Result<serde_json::Value> {
    let config = StudentConfig::by_name(name).context("unknown student")?;
    let device = Device::Cpu;
    let student = Student::load_frozen(weights, &config, &device)?;
    let tensors = candle_core::safetensors::load(weights, &device)?;
    let head_w = tensors.get("head.weight").context("no head.weight")?;
    let head_b = tensors.get("head.bias").context("no head.bias")?;
    let size = config.image_size();
    let preprocess = Preprocess::vl2v(size as u32);
    let mut by_style = serde_json::Map::new();
    for style in Style::ALL {
        let (pixels, labels) = eval_sample(EVAL_SEED, style, size, &preprocess)?;
        let x = Tensor::from_vec(pixels, (labels.len(), 3, size, size), &device)?;
        let logits = student
            .forward(&x, false)?
            .matmul(&head_w.t()?)?
            .broadcast_add(head_b)?;
        let rows = logits.to_vec2::<f32>()?;
        let predicted: Vec<Option<usize>> =
            rows.iter().map(|r| vl2v::zeroshot::argmax(r)).collect();
        let acc = vl2v::train::accuracy_of(&predicted, &labels);
        by_style.insert(
            style.name().to_string(),
            json!((acc * 1000.0).round() / 1000.0),
        );
    }
    Ok(json!({
        "accuracy_by_style": by_style,
        "eval_sample": format!("synthdg render seed {EVAL_SEED}, {EVAL_PER_CLASS} per (style, class), all classes"),
    }))
}
