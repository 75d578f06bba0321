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
    /// A variable's own learning rate (a torch parameter group), if not the algorithm's.
    fn lr(&self, _name: &str) -> Option<f64> {
        None
    }
    /// Runs after every optimiser step (scmd clamps its logit scale).
    fn after_step(&self) -> Result<()> {
        Ok(())
    }
    /// At step `step` (0-based), train on only this fraction of the minibatch: its rows of largest
    /// cross-entropy under the current model (scmd's hard-sample selection); `None`: every row.
    fn hard_fraction(&self, _step: u64) -> Option<f64> {
        None
    }
}

/// The simple moving average of the model's parameters that predicts (`MovingAvg` of SCMD's DomainBed fork,
/// Arpit et al.'s SMA): from the `start`-th update on, the uniform average of the parameters after updates
/// `start − 1`, `start`, …; before it, the current parameters.
struct Sma {
    start: u64,
    /// The average, in the optimiser's variable order, once it differs from the current parameters (or is
    /// about to: the copy after update `start − 1`).
    values: Option<Vec<Tensor>>,
}

impl Sma {
    /// Folds in the parameters after update `t` (1-based, as MovingAvg's `global_iter`).
    fn update(&mut self, t: u64, vars: &[(String, Var)]) -> Result<()> {
        let current = || -> Result<Vec<Tensor>> {
            vars.iter()
                .map(|(_, v)| Ok(v.as_tensor().copy()?))
                .collect()
        };
        if t + 1 < self.start {
            self.values = None;
        } else if t + 1 == self.start {
            self.values = Some(current()?);
        } else {
            // MovingAvg: sma_count += 1; sma = (sma · count + θ) / (1 + count).
            let count = (t + 1 - self.start) as f64;
            let values = self
                .values
                .as_mut()
                .context("the moving average lost its start")?;
            for (avg, (_, var)) in values.iter_mut().zip(vars) {
                *avg = ((&*avg * count)? + var.as_tensor())?.affine(1.0 / (1.0 + count), 0.0)?;
            }
        }
        Ok(())
    }

    /// The average's tensors for a checkpoint (`sma.<name>`), if it has started.
    fn state(&self, vars: &[(String, Var)]) -> Result<Vec<NamedTensor>> {
        let Some(values) = &self.values else {
            return Ok(Vec::new());
        };
        vars.iter()
            .zip(values)
            .map(|((name, var), avg)| {
                let v = avg.flatten_all()?.to_vec1::<f32>()?;
                Ok((format!("sma.{name}"), var.dims().to_vec(), v))
            })
            .collect()
    }

    /// Restores [`Sma::state`] of a checkpoint taken after `steps` updates.
    fn restore(
        &mut self,
        tensors: &HashMap<String, Vec<f32>>,
        steps: u64,
        vars: &[(String, Var)],
    ) -> Result<()> {
        self.values = if steps + 1 >= self.start || self.start <= 1 {
            let values = vars
                .iter()
                .map(|(name, var)| {
                    let key = format!("sma.{name}");
                    let v = tensors
                        .get(&key)
                        .with_context(|| format!("the checkpoint has no tensor {key}"))?;
                    Ok(Tensor::from_slice(v, var.shape(), var.device())?)
                })
                .collect::<Result<_>>()?;
            Some(values)
        } else {
            None
        };
        Ok(())
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
    /// The moving average that predicts, for the algorithms that use one (scmd).
    sma: Option<Sma>,
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
        let mut adam = Adam::new(&sizes, lr, weight_decay);
        adam.group_lr = vars.iter().map(|(name, _)| objective.lr(name)).collect();
        FineTune {
            hparams,
            batch_size,
            backbone,
            objective,
            loader,
            adam,
            moments: None,
            vars,
            sma: None,
        }
    }

    /// Predicts (and saves) with the simple moving average of the parameters from update `start` on.
    pub fn with_sma(mut self, start: u64) -> Result<Self> {
        let values = if start <= 1 {
            Some(
                self.vars
                    .iter()
                    .map(|(_, v)| Ok(v.as_tensor().copy()?))
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        self.sma = Some(Sma { start, values });
        Ok(self)
    }

    /// Runs `f` with the moving average in the variables (if there is one), restoring them afterwards.
    fn with_averaged<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(values) = self.sma.as_ref().and_then(|s| s.values.as_ref()) else {
            return f();
        };
        let saved: Vec<Tensor> = self
            .vars
            .iter()
            .map(|(_, v)| Ok(v.as_tensor().copy()?))
            .collect::<Result<_>>()?;
        for ((_, var), avg) in self.vars.iter().zip(values) {
            var.set(avg)?;
        }
        let out = f();
        for ((_, var), v) in self.vars.iter().zip(&saved) {
            var.set(v)?;
        }
        out
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
        let mut pixels = self.loader.batch(batch.picks)?;
        let size = self.loader.images().size();
        if let Some(mix) = batch.mix {
            mix.apply(&mut pixels, size);
        }
        let hard;
        let (pixels, batch) = match self.objective.hard_fraction(self.adam.t) {
            None => (pixels, batch),
            Some(p) => {
                hard = self.hardest(&pixels, batch, p)?;
                (hard.0, &hard.1.batch())
            }
        };
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
            self.objective.after_step()?;
            if let Some(sma) = &mut self.sma {
                sma.update(self.adam.t, &self.vars)?;
            }
        }
        Ok(metrics)
    }

    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>> {
        self.with_averaged(|| self.predict_current(rows))
    }

    /// What predicts: the moving average where there is one.
    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        let mut out = self.with_averaged(|| self.named())?;
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
        if let Some(sma) = &self.sma {
            out.extend(sma.state(&self.vars)?);
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
        if let Some(sma) = &mut self.sma {
            sma.restore(tensors, steps, &self.vars)?;
        }
        Ok(())
    }

    /// Copies (the variables are updated in place by the next step).
    fn params(&self) -> Result<Vec<(String, Tensor)>> {
        self.vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
            .collect()
    }

    /// The parameters to evaluate from now on (SWAD's average): a moving average stops predicting.
    fn load_parameters(&mut self, tensors: &HashMap<String, Vec<f32>>) -> Result<()> {
        self.sma = None;
        self.set_vars(tensors, "the averaged model")
    }
}

/// The rows of a minibatch kept by a hard-sample selection, owned.
struct Subset {
    picks: Vec<(usize, usize)>,
    student: Vec<f32>,
    teacher: Vec<f32>,
    labels: Vec<usize>,
}

impl Subset {
    fn batch(&self) -> Batch<'_> {
        Batch {
            picks: &self.picks,
            student: &self.student,
            teacher: &self.teacher,
            labels: &self.labels,
            mix: None,
        }
    }
}

impl FineTune {
    /// The pixels and rows of the `⌊n·p⌋` (at least one) rows of `batch` whose cross-entropy under the
    /// current model (no graph) is largest.
    fn hardest(&self, pixels: &[f32], batch: &Batch, p: f64) -> Result<(Vec<f32>, Subset)> {
        let n = batch.picks.len();
        let size = self.loader.images().size();
        let snapshot = self.backbone.snapshot()?;
        let logits = self
            .objective
            .logits(&snapshot.features(pixels, n, size)?)?;
        let keep = crate::objectives::scmd_loss::hardest(&logits, batch.labels, p);
        let rows = |values: &[f32]| -> Vec<f32> {
            if values.is_empty() {
                return Vec::new();
            }
            let width = values.len() / n;
            keep.iter()
                .flat_map(|&r| values[r * width..(r + 1) * width].iter().copied())
                .collect()
        };
        Ok((
            rows(pixels),
            Subset {
                picks: keep.iter().map(|&r| batch.picks[r]).collect(),
                student: rows(batch.student),
                teacher: rows(batch.teacher),
                labels: keep.iter().map(|&r| batch.labels[r]).collect(),
            },
        ))
    }

    fn predict_current(&self, rows: &EvalRows) -> Result<Vec<f32>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// MovingAvg by hand (start 3): after updates 1 the current parameters (no average); after 2 a copy;
    /// after t ≥ 3 the mean of the parameters after updates 2..=t.
    #[test]
    fn the_moving_average_is_the_mean_from_the_update_before_its_start() {
        let var = Var::from_tensor(&Tensor::new(&[0.0f32], &Device::Cpu).unwrap()).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let mut sma = Sma {
            start: 3,
            values: None,
        };
        let thetas = [5.0f32, 1.0, 2.0, 6.0, -3.0];
        for (i, &theta) in thetas.iter().enumerate() {
            let t = i as u64 + 1;
            var.set(&Tensor::new(&[theta], &Device::Cpu).unwrap())
                .unwrap();
            sma.update(t, &vars).unwrap();
            let got = sma
                .values
                .as_ref()
                .map(|v| v[0].to_vec1::<f32>().unwrap()[0]);
            let want = match t {
                1 => None,
                _ => {
                    let seen = &thetas[1..=i];
                    Some(seen.iter().sum::<f32>() / seen.len() as f32)
                }
            };
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "t {t}: {g} vs {w}"),
                _ => panic!("t {t}: {got:?} vs {want:?}"),
            }
        }
    }

    /// A run resumed from the checkpoint after any update continues the same average.
    #[test]
    fn the_moving_average_resumes_from_its_checkpoint() {
        let thetas = [5.0f32, 1.0, 2.0, 6.0, -3.0, 0.5];
        let set = |var: &Var, v: f32| var.set(&Tensor::new(&[v], &Device::Cpu).unwrap()).unwrap();
        for stop in 1..thetas.len() {
            let var = Var::from_tensor(&Tensor::new(&[0.0f32], &Device::Cpu).unwrap()).unwrap();
            let vars = vec![("w".to_string(), var.clone())];
            let (mut whole, mut resumed) = (
                Sma {
                    start: 3,
                    values: None,
                },
                Sma {
                    start: 3,
                    values: None,
                },
            );
            for (i, &theta) in thetas.iter().enumerate() {
                let t = i as u64 + 1;
                set(&var, theta);
                whole.update(t, &vars).unwrap();
                if t as usize == stop {
                    resumed.update(t, &vars).unwrap();
                    let saved: HashMap<String, Vec<f32>> = resumed
                        .state(&vars)
                        .unwrap()
                        .into_iter()
                        .map(|(name, _, v)| (name, v))
                        .collect();
                    resumed = Sma {
                        start: 3,
                        values: None,
                    };
                    resumed.restore(&saved, t, &vars).unwrap();
                } else {
                    resumed.update(t, &vars).unwrap();
                }
            }
            let value = |s: &Sma| s.values.as_ref().unwrap()[0].to_vec1::<f32>().unwrap()[0];
            assert_eq!(
                value(&whole),
                value(&resumed),
                "stopped after update {stop}"
            );
        }
    }
}
