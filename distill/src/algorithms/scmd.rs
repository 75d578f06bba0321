//! `scmd`: SCMD (Leng et al., TMLR 2024, "Choosing Wisely and Learning Deeply: Selective Cross-Modality
//! Distillation via CLIP for Domain Generalization"; SeanLeng1/SCMD, `DomainBed/domainbed/algorithms.py`,
//! class `SCMD`, and its `hparams_registry.py`). The student with a new linear classifier trains on
//! [`crate::objectives::scmd_loss`]: cross-entropy, logit distillation from the teacher's zero-shot
//! logits ("this is a photo of a {c}", from the cached image embedding of the same (image, view)) and
//! cross-modal distillation through a projector `Linear(d → D, no bias)` at a learnable logit scale
//! (starting at ln(1/0.07), its own learning rate 1e-4, clamped to [0, ln 100] after every step). Until
//! step ⌊5000·(1 − k)⌋ only the hardest ⌊p·B⌋ rows of each minibatch train. Prediction: the simple moving
//! average of the student and classifier from update 300 on (the fork's `MovingAvg`, `SMA` on by default).
//!
//! Not reproduced: the fork's mixed precision (`autocast` + `GradScaler`; vl2v trains in f32, `--precision`
//! aside); its teacher is CLIP ViT-B/32 by default, vl2v's whichever the cache holds.

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, Var};
use serde::Serialize;

use super::finetune::{rows_of, FineTune, LinearHead, Objective};
use super::{Algorithm, Batch, Metrics, Overrides, Setup};
use crate::objectives::scmd_loss::{self, Weights};

/// SCMD's class prompt.
pub const TEMPLATE: &str = "this is a photo of a {}";

/// The repository's file of SCMD's template, for `embed --templates`.
pub const TEMPLATES_FILE: &str = "distill/prompt_styles/scmd.txt";

/// The learnable logit scale's start, ln(1/0.07) (CLIP's initial temperature), its learning rate and bound.
const LOG_SCALE_START: f64 = 2.659_260_036_932_778_4;
const LOG_SCALE_LR: f64 = 1e-4;
const LOG_SCALE_MAX: f64 = 4.605_170_185_988_091; // ln 100

/// The moving average starts at the 300th update (`MovingAvg.__init__(self, self.student_network, 300)`).
const SMA_START: u64 = 300;

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Temperature T of both KL terms.
    pub temperature: f64,
    /// Weight of the logit distillation (`lambda1`; `--kd-weight`).
    pub lambda1: f64,
    /// Weight of the cross-modal distillation (`lambda2`; `--lambda`).
    pub lambda2: f64,
    /// `last_k_epoch`: hard samples are selected until step ⌊5000·(1 − k)⌋.
    pub last_k_epoch: f64,
    /// `worst_case_p`: the fraction of each minibatch kept while selecting.
    pub worst_case_p: f64,
    /// The last step (0-based) that trains on the selected rows alone.
    pub select_until: u64,
    /// The update from which the moving average predicts.
    pub sma_start: u64,
    pub template: &'static str,
}

struct Scmd {
    head: LinearHead,
    projector: Var,
    log_scale: Var,
    /// Unit class texts `[C, D]`, for the cross-modal logits.
    texts: Tensor,
    /// The same on the host, for the teacher's logits.
    host_texts: Vec<f32>,
    teacher_scale: f32,
    weights: Weights,
    p: f64,
    select_until: u64,
}

impl Scmd {
    /// The teacher's zero-shot logits `scale·cos(I, t_c)` of unit image embeddings `images: [B, D]`.
    fn teacher_logits(&self, images: &[f32]) -> Vec<f32> {
        let d = self.texts.dims()[1];
        images
            .chunks_exact(d)
            .flat_map(|i| {
                self.host_texts.chunks_exact(d).map(move |t| {
                    self.teacher_scale * i.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()
                })
            })
            .collect()
    }
}

impl Objective for Scmd {
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)> {
        let z = self.head.forward(features)?;
        let projected = features.matmul(&self.projector.as_tensor().t()?)?;
        let (loss, p) = scmd_loss::loss(
            &z,
            &projected,
            self.log_scale.as_tensor(),
            &self.teacher_logits(batch.teacher),
            &self.texts,
            batch.labels,
            &self.weights,
        )?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((
            loss,
            vec![
                ("loss", value),
                ("ce", p.ce),
                ("kd", p.kd),
                ("cross_modal", p.cross_modal),
            ],
        ))
    }

    fn logits(&self, features: &Tensor) -> Result<Vec<f32>> {
        rows_of(&self.head.forward(features)?)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.head.vars();
        v.push(("projector.weight".into(), self.projector.clone()));
        v.push(("logit_scale".into(), self.log_scale.clone()));
        v
    }

    fn lr(&self, name: &str) -> Option<f64> {
        (name == "logit_scale").then_some(LOG_SCALE_LR)
    }

    /// `torch.clamp(self.logits_scale.data, 0, np.log(100))`.
    fn after_step(&self) -> Result<()> {
        let clamped = self.log_scale.as_tensor().clamp(0.0, LOG_SCALE_MAX)?;
        self.log_scale.set(&clamped)?;
        Ok(())
    }

    /// `if step <= int(5000 * (1 - self.k))`: the hardest `worst_case_p` of the minibatch.
    fn hard_fraction(&self, step: u64) -> Option<f64> {
        (step <= self.select_until).then_some(self.p)
    }
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let bank = setup
        .prompts
        .context("scmd needs the teacher cache's prompts")?;
    // hparams_registry.py: lambda1 0.5, lambda2 0.5, last_k_epoch 0.25, worst_case_p 0.2, temperature 3.
    let last_k_epoch = 0.25;
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(5e-5),
        weight_decay: overrides.weight_decay.unwrap_or(0.0),
        batch_size: overrides.batch_size.unwrap_or(32),
        temperature: overrides.temperature.unwrap_or(3.0),
        lambda1: overrides.kd_weight.unwrap_or(0.5),
        lambda2: overrides.lambda.unwrap_or(0.5),
        last_k_epoch,
        worst_case_p: 0.2,
        select_until: (5000.0 * (1.0 - last_k_epoch)) as u64,
        sma_start: SMA_START,
        template: TEMPLATE,
    };
    ensure!(
        hparams.temperature > 0.0 && hparams.temperature.is_finite(),
        "--temperature must be positive, got {}",
        hparams.temperature
    );
    ensure!(
        hparams.lambda2 >= 0.0 && hparams.lambda2.is_finite(),
        "--lambda (scmd's cross-modal weight) must be non-negative, got {}",
        hparams.lambda2
    );
    let texts = bank.get(&[(TEMPLATE, None)], "scmd", Some(TEMPLATES_FILE))?[0].to_vec();
    let mut texts_unit = texts;
    vl2v::zeroshot::normalise_rows(&mut texts_unit, setup.teacher_dim);

    let spec = setup.backbone.context("scmd needs a backbone")?;
    let backbone = FineTune::backbone(spec)?;
    let d = backbone.dim();
    let head = LinearHead::new(d, setup.classes, setup.seed, &spec.device)?;
    // nn.Linear(bias=False)'s weight: torch's default initialisation, drawn from another stream.
    let projector = LinearHead::new(d, setup.teacher_dim, setup.seed ^ 0x5343_4d44, &spec.device)?;
    let log_scale = Var::from_tensor(&Tensor::new(&[LOG_SCALE_START as f32], &spec.device)?)?;
    let objective = Scmd {
        head,
        projector: projector.weight,
        log_scale,
        texts: Tensor::from_slice(
            &texts_unit,
            (setup.classes, setup.teacher_dim),
            &spec.device,
        )?,
        host_texts: texts_unit,
        teacher_scale: setup.logit_scale,
        weights: Weights {
            temperature: hparams.temperature,
            lambda1: hparams.lambda1,
            lambda2: hparams.lambda2,
        },
        p: hparams.worst_case_p,
        select_until: hparams.select_until,
    };
    Ok(Box::new(
        FineTune::new(
            serde_json::to_value(&hparams)?,
            hparams.batch_size,
            hparams.lr,
            hparams.weight_decay,
            backbone,
            Box::new(objective),
            spec.loader()?,
        )
        .with_sma(SMA_START)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_scmds() {
        assert!((LOG_SCALE_START - (1.0f64 / 0.07).ln()).abs() < 1e-12);
        assert!((LOG_SCALE_MAX - 100f64.ln()).abs() < 1e-12);
        let file = vl2v::prompts::read_templates(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/prompt_styles/scmd.txt"
        )))
        .unwrap();
        assert_eq!(file, [TEMPLATE]);
        // algorithms.py: f'this is a photo of a {ppt}'.
        assert_eq!(TEMPLATE.replace("{}", "dog"), "this is a photo of a dog");
    }
}
