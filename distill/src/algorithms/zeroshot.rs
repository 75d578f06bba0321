//! `zeroshot`: the teacher's own zero-shot classifier (the prompts of `--prompt-style`; "a photo of a {}",
//! the official default) applied to teacher image embeddings. Nothing trains.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde::Serialize;

use super::{Algorithm, Batch, EvalRows, Metrics, NamedTensor, Overrides, PredictsFrom, Setup};
use vl2v::zeroshot::ZeroShotHead;

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    /// The template, or the list of them (see [`crate::prompt_styles::hparam`]).
    pub template: serde_json::Value,
}

pub struct ZeroShot {
    hparams: Hparams,
    head: ZeroShotHead,
    classes: usize,
    dim: usize,
}

pub fn build(setup: &Setup, _overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let head = ZeroShotHead::from_templates(&[setup.texts], setup.teacher_dim, setup.logit_scale)?;
    Ok(Box::new(ZeroShot {
        hparams: Hparams {
            template: crate::prompt_styles::hparam(setup.templates),
        },
        head,
        classes: setup.classes,
        dim: setup.teacher_dim,
    }))
}

impl Algorithm for ZeroShot {
    fn hparams(&self) -> serde_json::Value {
        serde_json::to_value(&self.hparams).unwrap_or_default()
    }

    fn batch_size(&self) -> usize {
        0
    }

    fn update(&mut self, _batch: &Batch) -> Result<Metrics> {
        bail!("zeroshot does not train")
    }

    fn predicts_from(&self) -> PredictsFrom {
        PredictsFrom::TeacherFeatures
    }

    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>> {
        self.head.logits(rows.teacher)
    }

    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        Ok(vec![(
            "head.weight".into(),
            vec![self.classes, self.dim],
            self.head.weight().to_vec(),
        )])
    }

    fn state(&self) -> Result<(Vec<NamedTensor>, u64)> {
        Ok((Vec::new(), 0))
    }

    fn load_state(&mut self, _tensors: &HashMap<String, Vec<f32>>, _steps: u64) -> Result<()> {
        Ok(())
    }
}
