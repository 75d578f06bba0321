//! `wise-ft` (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"): the weight-space
//! ensemble θ = (1 − α)·θ_zero-shot + α·θ_fine-tuned of the teacher's CLIP image tower and the one the
//! finished `sd` run of the same held-out domain, seed, trial seed and tag fine-tuned (its
//! model.safetensors), predicting with the zero-shot head. Nothing trains: one evaluation. α is `--lambda`
//! (default 0.5); `distill sweep --algorithm wise-ft --lambda 0,0.1,…,1` evaluates a grid of α from the
//! one fine-tuned model and picks α by training-domain validation, as DomainBed picks any hyper-parameter.

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use serde::Serialize;

use super::adip_distill::AdipTarget;
use super::finetune::FineTune;
use super::{Algorithm, Overrides, Setup};

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    /// The fine-tuned model's weight in the ensemble.
    pub alpha: f64,
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let hparams = Hparams {
        alpha: overrides.lambda.unwrap_or(0.5),
    };
    let alpha = hparams.alpha;
    ensure!(
        (0.0..=1.0).contains(&alpha),
        "wise-ft: α (--lambda) must be in [0, 1], got {alpha}"
    );
    let spec = setup
        .backbone
        .context("wise-ft needs the teacher's image tower")?;
    let tuned = spec
        .first_stage
        .as_ref()
        .context("wise-ft needs the fine-tuned tower of the sd run")?;
    let backbone = FineTune::backbone(spec)?;
    for (name, var) in backbone.vars() {
        let zero_shot = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let fine_tuned = tuned
            .get(name)
            .with_context(|| format!("the sd run's model has no tensor {name}"))?;
        ensure!(
            fine_tuned.len() == zero_shot.len(),
            "the sd run's {name} has {} values, the teacher's {}",
            fine_tuned.len(),
            zero_shot.len()
        );
        let mixed: Vec<f32> = zero_shot
            .iter()
            .zip(fine_tuned)
            .map(|(&z, &f)| ((1.0 - alpha) * f64::from(z) + alpha * f64::from(f)) as f32)
            .collect();
        var.set(&Tensor::from_vec(mixed, var.shape(), var.device())?)?;
    }
    // The zero-shot head on the normalised output (the loss weight is unused: nothing trains).
    let objective = AdipTarget::new(setup, None, 0.5)?;
    Ok(Box::new(FineTune::new(
        serde_json::to_value(&hparams)?,
        0,
        0.0,
        0.0,
        backbone,
        Box::new(objective),
        spec.loader()?,
    )))
}
