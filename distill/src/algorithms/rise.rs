//! `rise`: RISE (Huang et al., ICCV 2023, "A Sentence Speaks a Thousand Images: Domain Generalization
//! through Distilling CLIP with Language Guidance"; WisconsinAIVision/RISE, `train_rise.py` and its
//! modified `timm/models/resnetv2.py`). The student's pooled feature goes through a new projector
//! `Linear(d → D)` into CLIP's text space (D = the teacher's embedding size, 512 for ViT-B/16 as RISE's
//! `nn.Linear(self.num_features, 512)`) and a classifier `Linear(D → C)` whose weight starts as the
//! normalised class embeddings of RISE's seven-prompt ensemble; everything trains on the loss of
//! [`crate::objectives::rise_loss`], with the teacher's logits from the cached image embedding of the same
//! (image, view). Prediction: the classifier's logits.
//!
//! RISE's protocol is not DomainBed's (SGD with momentum 0.9, weight decay 5e-4, lr 1e-3, StepLR over 20
//! epochs of mixed batches of 128, a 10% validation split); vl2v runs it under DomainBed's (Adam 5e-5, 32
//! images per training domain, 5001 steps, its split and selection), as every other algorithm here, so the
//! comparison is of losses, not of training schedules.

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use super::finetune::{rows_of, FineTune, LinearHead, Objective};
use super::{Algorithm, Batch, Metrics, Overrides, Setup};
use crate::commands::analyze::DOMAIN_TEMPLATE;
use crate::objectives::rise_loss::{self, Targets, Weights};

/// RISE's prompt ensemble (`train_rise.py`, t1–t7), `{}` for the class name.
pub const ENSEMBLE: [&str; 7] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
];

/// The anchors RISE uses for VLCS and TerraIncognita (`self.text_anchor`), as "a {anchor} of a {c}".
pub const QUALITY_ANCHORS: [&str; 4] = [
    "a bright photo of a {}",
    "a corrupted photo of a {}",
    "a dark photo of a {}",
    "a good photo of a {}",
];

/// The repository's file of RISE's templates, for `embed --templates`.
pub const TEMPLATES_FILE: &str = "distill/prompt_styles/rise.txt";

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// T of the KL term (`tt`).
    pub temperature: f64,
    /// Weight of the KL term (`w1`); the cross-entropy's is `1 − w_kd` (`w2`: every line of RISE's
    /// hyper-parameter grids has w1 + w2 = 1).
    pub w_kd: f64,
    pub w_ce: f64,
    /// Weight of both distance terms (`w3`; `--lambda`).
    pub w_distance: f64,
    /// The classifier's prompt ensemble.
    pub template: Vec<&'static str>,
    /// The relative distance's anchors (template @ domain).
    pub anchors: Vec<String>,
}

/// The first line of RISE's `data/hp_search/<dataset>.txt` (T, w1, w2, w3): PACS and VLCS weight the
/// teacher, OfficeHome and TerraIncognita the labels; datasets RISE did not run take PACS's, its script's
/// default dataset.
fn defaults(dataset: &str) -> (f64, f64, f64) {
    match dataset {
        "officehome" | "terraincognita" => (3.0, 0.2, 0.5),
        _ => (3.0, 0.9, 0.5),
    }
}

struct Rise {
    projector: LinearHead,
    head: LinearHead,
    targets: Targets,
    weights: Weights,
}

impl Rise {
    /// (embedding `[B, D]`, logits `[B, C]`), as RISE's `forward_head`.
    fn forward(&self, features: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = self.projector.forward(features)?;
        let z = self.head.forward(&e)?;
        Ok((e, z))
    }
}

impl Objective for Rise {
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)> {
        let (e, z) = self.forward(features)?;
        let teacher = self.targets.teacher_logits(batch.teacher);
        let (loss, p) =
            rise_loss::loss(&z, &e, &teacher, batch.labels, &self.targets, &self.weights)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((
            loss,
            vec![
                ("loss", value),
                ("kl", p.kl),
                ("ce", p.ce),
                ("absolute", p.absolute),
                ("relative", p.relative),
            ],
        ))
    }

    fn logits(&self, features: &Tensor) -> Result<Vec<f32>> {
        rows_of(&self.forward(features)?.1)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = vec![
            ("projector.weight".into(), self.projector.weight.clone()),
            ("projector.bias".into(), self.projector.bias.clone()),
        ];
        v.extend(self.head.vars());
        v
    }
}

/// `Linear(inputs → outputs)` as RISE's `_init_weights` makes it: weight ~ N(0, 0.01²), bias 0 (seeded
/// Box–Muller draws).
fn projector(inputs: usize, outputs: usize, seed: u64, device: &Device) -> Result<LinearHead> {
    let mut rng = vl2v::rng::SplitMix64::new(vl2v::rng::mix64(seed ^ 0x5249_5345)); // "RISE"
    let mut w = Vec::with_capacity(inputs * outputs);
    while w.len() < inputs * outputs {
        let u1 = 1.0 - rng.unit_f64(); // in (0, 1]
        let u2 = rng.unit_f64();
        let r = (-2.0 * u1.ln()).sqrt() * 0.01;
        let a = std::f64::consts::TAU * u2;
        w.push((r * a.cos()) as f32);
        w.push((r * a.sin()) as f32);
    }
    w.truncate(inputs * outputs);
    Ok(LinearHead {
        weight: Var::from_tensor(&Tensor::from_vec(w, (outputs, inputs), device)?)?,
        bias: Var::from_tensor(&Tensor::zeros(outputs, candle_core::DType::F32, device)?)?,
    })
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let bank = setup
        .prompts
        .context("rise needs the teacher cache's prompts")?;
    let m = bank.manifest;
    let (temperature, w_kd, w_distance) = defaults(&m.dataset.name);
    let w_kd = overrides.kd_weight.unwrap_or(w_kd);
    ensure!(
        (0.0..=1.0).contains(&w_kd),
        "--kd-weight must be in [0, 1], got {w_kd}"
    );
    let hparams_anchors: Vec<(&str, Option<usize>)> =
        if matches!(m.dataset.name.as_str(), "vlcs" | "terraincognita") {
            QUALITY_ANCHORS.iter().map(|t| (*t, None)).collect()
        } else {
            (0..m.dataset.domains.len())
                .filter(|&d| d != setup.test_domain)
                .map(|d| (DOMAIN_TEMPLATE, Some(d)))
                .collect()
        };
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(5e-5),
        weight_decay: overrides.weight_decay.unwrap_or(0.0),
        batch_size: overrides.batch_size.unwrap_or(32),
        temperature: overrides.temperature.unwrap_or(temperature),
        w_kd,
        w_ce: 1.0 - w_kd,
        w_distance: overrides.lambda.unwrap_or(w_distance),
        template: ENSEMBLE.to_vec(),
        anchors: hparams_anchors
            .iter()
            .map(|(t, d)| match d {
                Some(d) => format!("{t} @ {}", m.dataset.domains[*d]),
                None => t.to_string(),
            })
            .collect(),
    };
    ensure!(
        hparams.temperature > 0.0 && hparams.temperature.is_finite(),
        "--temperature must be positive, got {}",
        hparams.temperature
    );
    ensure!(
        hparams.w_distance >= 0.0 && hparams.w_distance.is_finite(),
        "--lambda (rise's distance weight) must be non-negative, got {}",
        hparams.w_distance
    );
    let ensemble: Vec<(&str, Option<usize>)> = ENSEMBLE.iter().map(|t| (*t, None)).collect();
    let templates = bank.get(&ensemble, "rise", Some(TEMPLATES_FILE))?;
    let anchors = bank.get(&hparams_anchors, "rise", Some(TEMPLATES_FILE))?;
    let targets = Targets::new(&templates, &anchors, setup.teacher_dim)?;

    let spec = setup.backbone.context("rise needs a backbone")?;
    let backbone = FineTune::backbone(spec)?;
    let projector = projector(backbone.dim(), setup.teacher_dim, setup.seed, &spec.device)?;
    let head = LinearHead {
        weight: Var::from_tensor(&Tensor::from_slice(
            &targets.ensemble,
            (setup.classes, setup.teacher_dim),
            &spec.device,
        )?)?,
        bias: Var::from_tensor(&Tensor::zeros(
            setup.classes,
            candle_core::DType::F32,
            &spec.device,
        )?)?,
    };
    let weights = Weights {
        temperature: hparams.temperature,
        kd: hparams.w_kd,
        ce: hparams.w_ce,
        distance: hparams.w_distance,
    };
    Ok(Box::new(FineTune::new(
        serde_json::to_value(&hparams)?,
        hparams.batch_size,
        hparams.lr,
        hparams.weight_decay,
        backbone,
        Box::new(Rise {
            projector,
            head,
            targets,
            weights,
        }),
        spec.loader()?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prompts of `train_rise.py` (t1–t7, the VLCS/Terra anchors) and the file embed reads agree.
    #[test]
    fn the_templates_file_holds_rises_prompts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/prompt_styles/rise.txt");
        let file = vl2v::prompts::read_templates(std::path::Path::new(path)).unwrap();
        let want: Vec<String> = ENSEMBLE
            .iter()
            .chain(&QUALITY_ANCHORS)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(file, want);
        // train_rise.py: f"itap of a {c}." … and f"a {source} of a {c}" with source = 'bright photo', ….
        assert_eq!(ENSEMBLE[0].replace("{}", "dog"), "itap of a dog.");
        assert_eq!(
            QUALITY_ANCHORS[1].replace("{}", "dog"),
            "a corrupted photo of a dog"
        );
    }

    #[test]
    fn projector_draws_have_rises_spread() {
        let p = projector(64, 32, 3, &Device::Cpu).unwrap();
        let w = p.weight.as_tensor().flatten_all().unwrap();
        let w = w.to_vec1::<f32>().unwrap();
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 1e-3 && (sd - 0.01).abs() < 1e-3, "{mean} {sd}");
        let b = p.bias.as_tensor().to_vec1::<f32>().unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
    }
}
