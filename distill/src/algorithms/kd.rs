//! `kd`: logit distillation from the cached teacher (the official `DFC_PLAIN_5` baseline): backbone plus a
//! new linear classifier, `CE(z/τ, y) + λ·KL(softmax(z_T/τ) ‖ softmax(z/τ))` with the teacher's zero-shot
//! logits `z_T = logit_scale · cos(I, T_c)` of the same (image, view) from the cache. τ = 0.1 and λ = 0.5
//! as the official defaults. The KL term is a proper KL divergence averaged over rows; the official code
//! passes probabilities where `F.kl_div` expects log-probabilities (`domainbed/algorithms/baselines.py`), which we do not copy.

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, Var};
use serde::Serialize;

use super::finetune::{rows_of, FineTune, LinearHead, Objective};
use super::{Algorithm, Batch, Metrics, Overrides, Setup};
use crate::objectives::graph_losses::{cross_entropy, kl_divergence, log_softmax, softmax_rows};
use vl2v::zeroshot::ZeroShotHead;

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Weight of the KL term (`lmd`).
    pub lambda: f64,
    /// Softmax temperature τ (`tmp`).
    pub temperature: f64,
    /// The template, or the list of them (`--prompt-style`, see [`crate::prompt_styles::hparam`]).
    pub template: serde_json::Value,
}

struct Kd {
    head: LinearHead,
    teacher: ZeroShotHead,
    classes: usize,
    lambda: f64,
    temperature: f64,
}

impl Objective for Kd {
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)> {
        let z = (self.head.forward(features)? / self.temperature)?;
        let ce = cross_entropy(&z, batch.labels)?;
        let mut teacher = self.teacher.logits(batch.teacher)?;
        let inv_t = (1.0 / self.temperature) as f32;
        teacher.iter_mut().for_each(|v| *v *= inv_t);
        let teacher = softmax_rows(&teacher, self.classes, z.device())?;
        let kl = kl_divergence(&teacher, &log_softmax(&z)?)?;
        let loss = (&ce + (&kl * self.lambda)?)?;
        let value = |t: &Tensor| -> Result<f64> { Ok(f64::from(t.to_scalar::<f32>()?)) };
        Ok((
            loss.clone(),
            vec![
                ("loss", value(&loss)?),
                ("ce", value(&ce)?),
                ("kl", value(&kl)?),
            ],
        ))
    }

    fn logits(&self, features: &Tensor) -> Result<Vec<f32>> {
        rows_of(&self.head.forward(features)?)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.head.vars()
    }
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(5e-5),
        weight_decay: overrides.weight_decay.unwrap_or(0.0),
        batch_size: overrides.batch_size.unwrap_or(32),
        lambda: overrides.lambda.unwrap_or(0.5),
        temperature: overrides.temperature.unwrap_or(0.1),
        template: crate::prompt_styles::hparam(setup.templates),
    };
    ensure!(
        hparams.temperature > 0.0 && hparams.temperature.is_finite(),
        "--temperature must be positive, got {}",
        hparams.temperature
    );
    ensure!(
        hparams.lambda >= 0.0 && hparams.lambda.is_finite(),
        "--lambda must be non-negative for kd, got {}",
        hparams.lambda
    );
    let spec = setup.backbone.context("kd needs a backbone")?;
    let backbone = FineTune::backbone(spec)?;
    let head = LinearHead::new(backbone.dim(), setup.classes, setup.seed, &spec.device)?;
    let teacher =
        ZeroShotHead::from_prototypes(setup.texts.to_vec(), setup.teacher_dim, setup.logit_scale)?;
    Ok(Box::new(FineTune::new(
        serde_json::to_value(&hparams)?,
        hparams.batch_size,
        hparams.lr,
        hparams.weight_decay,
        backbone,
        Box::new(Kd {
            head,
            teacher,
            classes: setup.classes,
            lambda: hparams.lambda,
            temperature: hparams.temperature,
        }),
        spec.loader()?,
    )))
}
