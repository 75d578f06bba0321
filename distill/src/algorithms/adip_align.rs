//! `adip-align`: the Align stage of VL2V-ADiP (`DFC_STAGE1`). Only the projection
//! `Linear(d_student → d_teacher)` (with bias) trains, with Adam, on
//! `λ·(−mean cos(p, I)) + (1−λ)·(−mean cos(p, T_y))` where `p` is the projected student feature, `I` the
//! teacher's embedding of the same (image, view) and `T_y` the text embedding of the class's prompts
//! (`--prompt-style`; "a photo of a {class}" by default).
//! Prediction is the zero-shot head on `p`: `logit_scale · cos(p, T_c)`.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::{
    Algorithm, Batch, EvalRows, Linear, Metrics, NamedTensor, Overrides, PredictsFrom, Setup,
};
use crate::objectives::analytic_losses::{adip_loss, matmul_nt, matmul_tn, transpose};
use vl2v::zeroshot::{argmax, normalise_rows, ZeroShotHead};

#[derive(Clone, Debug, Serialize)]
pub struct Hparams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// `lmd`: weight of the image term.
    pub lambda: f64,
    /// The template, or the list of them (`--prompt-style`, see [`crate::prompt_styles::hparam`]).
    pub template: serde_json::Value,
}

impl Default for Hparams {
    fn default() -> Self {
        Hparams {
            lr: 5e-5,
            weight_decay: 0.0,
            batch_size: 32,
            lambda: 0.5,
            template: serde_json::Value::Null,
        }
    }
}

pub struct AdipAlign {
    hparams: Hparams,
    proj: Linear,
    /// Unit text embeddings `[C, d_teacher]`.
    texts: Vec<f32>,
    head: ZeroShotHead,
    /// The projected minibatch, reused across steps.
    projected: Vec<f32>,
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let d = Hparams::default();
    let hparams = Hparams {
        lr: overrides.lr.unwrap_or(d.lr),
        weight_decay: overrides.weight_decay.unwrap_or(d.weight_decay),
        batch_size: overrides.batch_size.unwrap_or(d.batch_size),
        lambda: overrides.lambda.unwrap_or(d.lambda),
        template: crate::prompt_styles::hparam(setup.templates),
    };
    ensure!(
        (0.0..=1.0).contains(&hparams.lambda),
        "--lambda must be in [0, 1], got {}",
        hparams.lambda
    );
    let inputs = setup
        .student_dim
        .context("adip-align needs student features (--student-cache)")?;
    let proj = Linear::new(
        inputs,
        setup.teacher_dim,
        setup.seed,
        hparams.lr,
        hparams.weight_decay,
    );
    let mut texts = setup.texts.to_vec();
    normalise_rows(&mut texts, setup.teacher_dim);
    let head = ZeroShotHead::from_prototypes(texts.clone(), setup.teacher_dim, setup.logit_scale)?;
    Ok(Box::new(AdipAlign {
        hparams,
        proj,
        texts,
        head,
        projected: Vec::new(),
    }))
}

impl Algorithm for AdipAlign {
    fn hparams(&self) -> serde_json::Value {
        serde_json::to_value(&self.hparams).unwrap_or_default()
    }

    fn batch_size(&self) -> usize {
        self.hparams.batch_size
    }

    fn update(&mut self, batch: &Batch) -> Result<Metrics> {
        self.proj.forward_into(batch.student, &mut self.projected)?;
        let (loss, grad) = adip_loss(
            &self.projected,
            batch.teacher,
            &self.texts,
            batch.labels,
            self.hparams.lambda as f32,
            self.proj.outputs,
        )?;
        self.proj.train_step(batch.student, &grad)?;
        Ok(vec![
            ("loss", f64::from(loss.loss)),
            ("cos_image", f64::from(loss.cos_image)),
            ("cos_text", f64::from(loss.cos_text)),
        ])
    }

    fn predicts_from(&self) -> PredictsFrom {
        PredictsFrom::StudentFeatures
    }

    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>> {
        self.head.logits(&self.proj.forward(rows.student)?)
    }

    /// argmax_c cos(p, T̂_c) = argmax_c p·T̂_c (|p| > 0 is common to a row), and
    /// p·T̂_c = x·(Wᵀ T̂_c) + b·T̂_c: one `[n, d_student] × [d_student, C]` product instead of projecting
    /// every row to `d_teacher` (8× fewer operations for 768 → 512 and 65 classes).
    fn predict_labels(&self, rows: &EvalRows, classes: usize) -> Result<Vec<Option<usize>>> {
        let (dt, ds) = (self.proj.outputs, self.proj.inputs);
        // M = T̂·W: [C, d_student]
        let m = matmul_tn(
            &transpose(&self.texts, classes, dt),
            classes,
            &self.proj.weight,
            ds,
        )?;
        let offset: Vec<f32> = self
            .texts
            .chunks_exact(dt)
            .map(|t| t.iter().zip(&self.proj.bias).map(|(a, b)| a * b).sum())
            .collect();
        let mut scores = matmul_nt(rows.student, &m, ds)?;
        for row in scores.chunks_exact_mut(classes) {
            row.iter_mut().zip(&offset).for_each(|(s, o)| *s += o);
        }
        Ok(scores.chunks_exact(classes).map(argmax).collect())
    }

    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        Ok(self.proj.parameters("proj."))
    }

    fn state(&self) -> Result<(Vec<NamedTensor>, u64)> {
        Ok(self.proj.state("proj."))
    }

    fn load_state(&mut self, tensors: &HashMap<String, Vec<f32>>, steps: u64) -> Result<()> {
        self.proj.load_state("proj.", tensors, steps)
    }

    fn load_parameters(&mut self, tensors: &HashMap<String, Vec<f32>>) -> Result<()> {
        self.proj.load_parameters("proj.", tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss of projecting `x` with (w, b), in f64 from the f32 pieces.
    fn loss_at(proj: &Linear, x: &[f32], image: &[f32], texts: &[f32], labels: &[usize]) -> f64 {
        let p = proj.forward(x).unwrap();
        let (l, _) = adip_loss(&p, image, texts, labels, 0.5, proj.outputs).unwrap();
        f64::from(l.loss)
    }

    #[test]
    fn fast_labels_match_the_argmax_of_the_logits() {
        let (ds, dt, classes, n) = (7, 5, 4, 50);
        let wave = |k: usize, s: f32| ((k as f32) * s).sin();
        let texts: Vec<f32> = (0..classes * dt).map(|k| wave(k, 0.9)).collect();
        let setup = Setup {
            student_dim: Some(ds),
            teacher_dim: dt,
            classes,
            texts: &texts,
            templates: &[crate::prompt_styles::PHOTO],
            logit_scale: 100.0,
            seed: 5,
            backbone: None,
            prompts: None,
            test_domain: 0,
        };
        let algo = build(&setup, &Overrides::default()).unwrap();
        let student: Vec<f32> = (0..n * ds).map(|k| wave(k, 0.37)).collect();
        let rows = EvalRows {
            images: &[],
            student: &student,
            teacher: &[],
        };
        let logits = algo.predict(&rows).unwrap();
        let slow: Vec<_> = logits.chunks_exact(classes).map(argmax).collect();
        assert_eq!(algo.predict_labels(&rows, classes).unwrap(), slow);
        assert!(slow.iter().collect::<std::collections::HashSet<_>>().len() > 1);
    }

    #[test]
    fn projection_gradient_matches_finite_differences() {
        let (din, dout, n, classes) = (5, 3, 4, 2);
        let wave = |k: usize, s: f32| ((k as f32) * s).sin();
        let x: Vec<f32> = (0..n * din).map(|k| wave(k, 0.7) + 0.3).collect();
        let image: Vec<f32> = (0..n * dout).map(|k| wave(k, 1.3)).collect();
        let texts: Vec<f32> = (0..classes * dout).map(|k| wave(k, 2.1) + 0.1).collect();
        let labels = [0, 1, 1, 0];
        let proj = Linear::new(din, dout, 3, 1e-3, 0.0);
        let p = proj.forward(&x).unwrap();
        let (_, g) = adip_loss(&p, &image, &texts, &labels, 0.5, dout).unwrap();
        let (dw, db) = proj.backward(&x, &g).unwrap();

        let eps = 1e-3f32;
        let mut worst = 0.0f64;
        let analytic: Vec<f32> = dw.iter().chain(&db).copied().collect();
        for (k, &analytic) in analytic.iter().enumerate() {
            let mut plus = proj.clone();
            let mut minus = proj.clone();
            let (slot_p, slot_m) = if k < proj.weight.len() {
                (&mut plus.weight[k], &mut minus.weight[k])
            } else {
                let j = k - proj.weight.len();
                (&mut plus.bias[j], &mut minus.bias[j])
            };
            *slot_p += eps;
            *slot_m -= eps;
            let numeric = (loss_at(&plus, &x, &image, &texts, &labels)
                - loss_at(&minus, &x, &image, &texts, &labels))
                / (2.0 * f64::from(eps));
            worst = worst.max((numeric - f64::from(analytic)).abs());
        }
        assert!(worst < 2e-3, "largest gradient error {worst}");
        assert!(dw.iter().any(|g| g.abs() > 1e-2), "a non-trivial gradient");
    }
}
