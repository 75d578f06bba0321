//! `erm-ft`: DomainBed's ERM with a pretrained student, fine-tuned end to end: backbone plus a new linear
//! classifier `Linear(d → C)`, cross-entropy, Adam (the official defaults: lr 5e-5, no weight decay, 32
//! images per training domain). BatchNorm statistics stay frozen.

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};
use serde::Serialize;

use super::finetune::{rows_of, FineTune, LinearHead, Objective};
use super::{Algorithm, Batch, Metrics, Overrides, Setup};
use crate::objectives::graph_losses::cross_entropy;

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
}

struct Erm {
    head: LinearHead,
}

impl Objective for Erm {
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)> {
        let loss = cross_entropy(&self.head.forward(features)?, batch.labels)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((loss, vec![("loss", value)]))
    }

    fn logits(&self, features: &Tensor) -> Result<Vec<f32>> {
        rows_of(&self.head.forward(features)?)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.head.vars()
    }
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    build_with_head(setup, overrides, false)
}

/// `lp-ft` (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features"): erm-ft whose new
/// classifier starts as the finished linear probe (`erm-lp`) of the same held-out domain, seed, trial seed
/// and tag, as adip-distill starts from its Align run; the same loss, optimiser and defaults as erm-ft.
pub fn build_lp_ft(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    build_with_head(setup, overrides, true)
}

fn build_with_head(
    setup: &Setup,
    overrides: &Overrides,
    from_probe: bool,
) -> Result<Box<dyn Algorithm>> {
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(5e-5),
        weight_decay: overrides.weight_decay.unwrap_or(0.0),
        batch_size: overrides.batch_size.unwrap_or(32),
    };
    let spec = setup.backbone.context("erm-ft needs a backbone")?;
    let backbone = FineTune::backbone(spec)?;
    let head = if from_probe {
        let probe = spec
            .first_stage
            .as_ref()
            .context("lp-ft needs the linear probe of the erm-lp run")?;
        LinearHead::from_probe(probe, backbone.dim(), setup.classes, &spec.device)?
    } else {
        LinearHead::new(backbone.dim(), setup.classes, setup.seed, &spec.device)?
    };
    Ok(Box::new(FineTune::new(
        serde_json::to_value(&hparams)?,
        hparams.batch_size,
        hparams.lr,
        hparams.weight_decay,
        backbone,
        Box::new(Erm { head }),
        spec.loader()?,
    )))
}
