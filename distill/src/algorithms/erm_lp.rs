//! `erm-lp`: a linear probe on frozen student features — `Linear(d_student → classes)` with bias,
//! cross-entropy, Adam (DomainBed's ERM with the featurizer frozen; the official registry's defaults).

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    Algorithm, Batch, EvalRows, Linear, Metrics, NamedTensor, Overrides, PredictsFrom, Setup,
};
use crate::objectives::analytic_losses::cross_entropy;

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
}

impl Default for Hparams {
    fn default() -> Self {
        Hparams {
            lr: 5e-5,
            weight_decay: 0.0,
            batch_size: 32,
        }
    }
}

pub struct LinearProbe {
    hparams: Hparams,
    classifier: Linear,
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let d = Hparams::default();
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(d.lr),
        weight_decay: overrides.weight_decay.unwrap_or(d.weight_decay),
        batch_size: overrides.batch_size.unwrap_or(d.batch_size),
    };
    let inputs = setup
        .student_dim
        .context("erm-lp needs student features (--student-cache)")?;
    let classifier = Linear::new(
        inputs,
        setup.classes,
        setup.seed,
        hparams.lr,
        hparams.weight_decay,
    );
    Ok(Box::new(LinearProbe {
        hparams,
        classifier,
    }))
}

impl Algorithm for LinearProbe {
    fn hparams(&self) -> serde_json::Value {
        serde_json::to_value(&self.hparams).unwrap_or_default()
    }

    fn batch_size(&self) -> usize {
        self.hparams.batch_size
    }

    fn update(&mut self, batch: &Batch) -> Result<Metrics> {
        let logits = self.classifier.forward(batch.student)?;
        let (loss, grad) = cross_entropy(&logits, batch.labels, self.classifier.outputs)?;
        self.classifier.train_step(batch.student, &grad)?;
        Ok(vec![("loss", f64::from(loss))])
    }

    fn predicts_from(&self) -> PredictsFrom {
        PredictsFrom::StudentFeatures
    }

    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>> {
        self.classifier.forward(rows.student)
    }

    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        Ok(self.classifier.parameters("classifier."))
    }

    fn state(&self) -> Result<(Vec<NamedTensor>, u64)> {
        Ok(self.classifier.state("classifier."))
    }

    fn load_state(&mut self, tensors: &HashMap<String, Vec<f32>>, steps: u64) -> Result<()> {
        self.classifier.load_state("classifier.", tensors, steps)
    }

    fn load_parameters(&mut self, tensors: &HashMap<String, Vec<f32>>) -> Result<()> {
        self.classifier.load_parameters("classifier.", tensors)
    }
}
