//! `sd`: VL2V-SD, the white-box variant (`DFC_CLIP_INIT`): the student is the teacher's own CLIP image
//! tower (with its projection), fine-tuned on `dfc_loss` of its normalised output against the cached
//! teacher embedding of the same view and the label's text embedding; no projection. Prediction: the
//! zero-shot head on the student's output.

use anyhow::{ensure, Context, Result};

use super::adip_distill::{AdipTarget, Hparams};
use super::finetune::FineTune;
use super::{Algorithm, Overrides, Setup};

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let hparams = Hparams::from(overrides, setup)?;
    let spec = setup
        .backbone
        .context("sd needs the teacher's image tower")?;
    let backbone = FineTune::backbone(spec)?;
    ensure!(
        backbone.dim() == setup.teacher_dim,
        "the CLIP image tower outputs {}-d features but the teacher cache holds {}-d embeddings",
        backbone.dim(),
        setup.teacher_dim
    );
    let objective = AdipTarget::new(setup, None, hparams.lambda)?;
    Ok(Box::new(FineTune::new(
        serde_json::to_value(&hparams)?,
        hparams.batch_size,
        hparams.lr,
        hparams.weight_decay,
        backbone,
        Box::new(objective),
        spec.loader()?,
    )))
}
