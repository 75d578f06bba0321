//! What the algorithms that train the backbone on images share (erm-ft, lp-ft, kd, adip-distill, sd): each step
//! replays the sampled (image, view) pairs through the student's preprocessing, runs the differentiable
//! backbone, asks the algorithm's [`Objective`] for the loss, and takes one torch-Adam step over the
//! backbone's variables and the objective's own. Evaluation runs a frozen snapshot of the backbone over
//! view 0 of the evaluated images.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};

use super::{Algorithm, Batch, EvalRows, Metrics, NamedTensor};
use crate::data::loader::Loader;
use crate::data::view_replay::ImageSource;
use crate::training::trainable_backbone::{Arch, Backbone};
use vl2v::train::{Adam, DeviceMoments};

/// Images per forward pass when evaluating.
const EVAL_BATCH: usize = 64;

/// Where a backbone algorithm's model and images come from (built by `distill run`).
pub struct BackboneSetup {
    pub arch: Arch,
    /// The pretrained checkpoint.
    pub weights: PathBuf,
    /// The dataset's images, replayed with the backbone's preprocessing.
    pub images: Arc<ImageSource>,
    pub device: Device,
    /// Image loader threads (`--workers`; 0: none, batches are made on the compute's pool when asked).
    pub workers: usize,
    /// A second stage's start: the selected parameters of its first stage's run of the same held-out domain
    /// (adip-distill: adip-align's projection; lp-ft: erm-lp's probe; wise-ft: sd's tower).
    pub first_stage: Option<HashMap<String, Vec<f32>>>,
}

/// The algorithm-specific part: a loss on the backbone's features and a head that predicts from them.
pub trait Objective: Send {
    /// The loss of a minibatch from the backbone's features `[B, d]` (a graph to differentiate), and the
    /// values to log (the first being `loss`).
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)>;
    /// Logits `[n, C]` (row-major) from evaluation features `[n, d]`.
    fn logits(&self, features: &Tensor) -> Result<Vec<f32>>;
    /// Variables that train with the backbone (a new classifier), by name.
    fn vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
    /// Frozen tensors the prediction needs (Distill's projection), saved with the model.
    fn constants(&self) -> Vec<NamedTensor> {
        Vec::new()
    }
}

impl BackboneSetup {
    /// A loader of this setup's images with its workers.
    pub fn loader(&self) -> Result<Loader> {
        Loader::new(Arc::clone(&self.images), self.workers)
    }
}

pub struct FineTune {
    hparams: serde_json::Value,
    batch_size: usize,
    backbone: Backbone,
    objective: Box<dyn Objective>,
    loader: Loader,
    adam: Adam,
    /// Adam's moments on the device, where the backbone is not on the CPU (or the device-generic path is
    /// forced); `adam`'s host buffers are then read back only for checkpoints.
    moments: Option<DeviceMoments>,
    /// The backbone's variables, then the objective's: the optimiser's order.
    vars: Vec<(String, Var)>,
}

impl FineTune {
    pub fn new(
        hparams: serde_json::Value,
        batch_size: usize,
        lr: f64,
        weight_decay: f64,
        backbone: Backbone,
        objective: Box<dyn Objective>,
        loader: Loader,
    ) -> Self {
        let mut vars = backbone.vars().to_vec();
        vars.extend(objective.vars());
        let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
        FineTune {
            hparams,
            batch_size,
            backbone,
            objective,
            loader,
            adam: Adam::new(&sizes, lr, weight_decay),
            moments: None,
            vars,
        }
    }

    /// Loads the pretrained backbone described by `setup`.
    pub fn backbone(setup: &BackboneSetup) -> Result<Backbone> {
        Backbone::load(setup.arch.clone(), &setup.weights, &setup.device)
            .with_context(|| format!("loading the backbone {}", setup.weights.display()))
    }

    fn named(&self) -> Result<Vec<NamedTensor>> {
        self.vars
            .iter()
            .map(|(name, var)| {
                let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                Ok((name.clone(), var.dims().to_vec(), values))
            })
            .collect()
    }

    fn set_vars(&self, tensors: &HashMap<String, Vec<f32>>, what: &str) -> Result<()> {
        for (name, var) in &self.vars {
            let v = tensors
                .get(name)
                .with_context(|| format!("{what} has no tensor {name}"))?;
            anyhow::ensure!(
                v.len() == var.elem_count(),
                "{what} tensor {name} has {} values, the model {}",
                v.len(),
                var.elem_count()
            );
            var.set(&Tensor::from_slice(v, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

impl Algorithm for FineTune {
    fn hparams(&self) -> serde_json::Value {
        self.hparams.clone()
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn prefetch(&mut self, next: &[(usize, usize)]) {
        self.loader.prefetch(next);
    }

    fn update(&mut self, batch: &Batch) -> Result<Metrics> {
        let pixels = self.loader.batch(batch.picks)?;
        let size = self.loader.images().size();
        let features = self
            .backbone
            .forward_train(&pixels, batch.picks.len(), size)?;
        let (loss, metrics) = self.objective.loss(&features, batch)?;
        // A non-finite loss is reported (the trainer stops with an error) and never applied.
        if metrics.first().is_some_and(|(_, l)| l.is_finite()) {
            let grads = loss.backward()?;
            let vars: Vec<&Var> = self.vars.iter().map(|(_, v)| v).collect();
            self.adam
                .step_where_they_live(&vars, &grads, &mut self.moments)?;
        }
        Ok(metrics)
    }

    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>> {
        let snapshot = self.backbone.snapshot()?;
        let size = self.loader.images().size();
        let chunks: Vec<Vec<(usize, usize)>> = rows
            .images
            .chunks(EVAL_BATCH)
            .map(|chunk| chunk.iter().map(|&i| (i, 0)).collect())
            .collect();
        let mut logits = Vec::new();
        self.loader.pipelined(&chunks, |i, pixels| {
            let features = snapshot.features(&pixels, chunks[i].len(), size)?;
            logits.extend(self.objective.logits(&features)?);
            Ok(())
        })?;
        Ok(logits)
    }

    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        let mut out = self.named()?;
        out.extend(self.objective.constants());
        Ok(out)
    }

    fn state(&self) -> Result<(Vec<NamedTensor>, u64)> {
        let mut out = self.named()?;
        let on_device = self
            .moments
            .as_ref()
            .map(DeviceMoments::download)
            .transpose()?;
        let (m, v) = match &on_device {
            Some((m, v)) => (m, v),
            None => (&self.adam.m, &self.adam.v),
        };
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, buf) in [("m", &m[i]), ("v", &v[i])] {
                out.push((
                    format!("adam.{kind}.{name}"),
                    var.dims().to_vec(),
                    buf.clone(),
                ));
            }
        }
        Ok((out, self.adam.t))
    }

    fn load_state(&mut self, tensors: &HashMap<String, Vec<f32>>, steps: u64) -> Result<()> {
        self.set_vars(tensors, "the checkpoint")?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, buf) in [("m", &mut self.adam.m[i]), ("v", &mut self.adam.v[i])] {
                let key = format!("adam.{kind}.{name}");
                let v = tensors
                    .get(&key)
                    .with_context(|| format!("the checkpoint has no tensor {key}"))?;
                anyhow::ensure!(
                    v.len() == var.elem_count(),
                    "checkpoint tensor {key} misshapen"
                );
                buf.clone_from(v);
            }
        }
        self.adam.t = steps;
        // Uploaded afresh from the restored host buffers at the next step.
        self.moments = None;
        Ok(())
    }

    /// Copies (the variables are updated in place by the next step).
    fn params(&self) -> Result<Vec<(String, Tensor)>> {
        self.vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
            .collect()
    }

    fn load_parameters(&mut self, tensors: &HashMap<String, Vec<f32>>) -> Result<()> {
        self.set_vars(tensors, "the averaged model")
    }
}

/// A new linear classifier `Linear(d → C)` as variables `head.weight`, `head.bias`, initialised as torch's
/// `nn.Linear` (the same seeded draws as the cached-feature probe's).
pub struct LinearHead {
    pub weight: Var,
    pub bias: Var,
}

impl LinearHead {
    pub fn new(inputs: usize, classes: usize, seed: u64, device: &Device) -> Result<Self> {
        let init = super::Linear::new(inputs, classes, seed, 0.0, 0.0);
        let p = init.parameters("");
        Ok(LinearHead {
            weight: Var::from_tensor(&Tensor::from_slice(&p[0].2, (classes, inputs), device)?)?,
            bias: Var::from_tensor(&Tensor::from_slice(&p[1].2, classes, device)?)?,
        })
    }

    /// The head of a finished linear probe (`classifier.weight`, `classifier.bias` of an erm-lp run).
    pub fn from_probe(
        probe: &HashMap<String, Vec<f32>>,
        inputs: usize,
        classes: usize,
        device: &Device,
    ) -> Result<Self> {
        let get = |name: &str, len: usize| -> Result<&Vec<f32>> {
            let v = probe
                .get(name)
                .with_context(|| format!("the linear probe has no tensor {name}"))?;
            anyhow::ensure!(
                v.len() == len,
                "the linear probe's {name} has {} values, this student and dataset need {len}",
                v.len()
            );
            Ok(v)
        };
        let weight = get("classifier.weight", classes * inputs)?;
        let bias = get("classifier.bias", classes)?;
        Ok(LinearHead {
            weight: Var::from_tensor(&Tensor::from_slice(weight, (classes, inputs), device)?)?,
            bias: Var::from_tensor(&Tensor::from_slice(bias, classes, device)?)?,
        })
    }

    /// `x · Wᵀ + b`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![
            ("head.weight".into(), self.weight.clone()),
            ("head.bias".into(), self.bias.clone()),
        ]
    }
}

/// Row-major values of a 2-d tensor.
pub fn rows_of(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}
