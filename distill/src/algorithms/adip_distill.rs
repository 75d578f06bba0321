//! `adip-distill`: the Distill stage of VL2V-ADiP (`DFC_STAGE2`). The backbone starts from the pretrained
//! student and trains (BatchNorm statistics frozen); the projection selected by the Align run of the same
//! held-out domain and the zero-shot head are frozen. Loss: the official `dfc_loss`
//! `λ·(−mean cos(p, I)) + (1−λ)·(−mean cos(p, T_y))` on `p = proj(f(x))`, where `x` is the cached view the
//! teacher embedded as `I`. Prediction: `logit_scale · cos(p, T_c)`.
//!
//! [`AdipTarget`] is the objective, shared with `sd` (no projection).

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::finetune::{rows_of, FineTune, Objective};
use super::{Algorithm, Batch, Metrics, NamedTensor, Overrides, Setup};
use crate::objectives::graph_losses::{adip, normalize_rows};
use vl2v::zeroshot::{normalise_rows, ZeroShotHead};

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

impl Hparams {
    pub fn from(overrides: &Overrides, setup: &Setup) -> Result<Self> {
        let h = Hparams {
            lr: overrides.lr.unwrap_or(5e-5),
            weight_decay: overrides.weight_decay.unwrap_or(0.0),
            batch_size: overrides.batch_size.unwrap_or(32),
            lambda: overrides.lambda.unwrap_or(0.5),
            template: crate::prompt_styles::hparam(setup.templates),
        };
        ensure!(
            (0.0..=1.0).contains(&h.lambda),
            "--lambda must be in [0, 1], got {}",
            h.lambda
        );
        Ok(h)
    }
}

/// A frozen `Linear(d_student → d_teacher)`.
pub struct Projection {
    weight: Tensor,
    bias: Tensor,
    values: Vec<NamedTensor>,
}

impl Projection {
    /// `proj.weight` `[d_teacher, d_student]` and `proj.bias` of an Align run's model.
    pub fn from_align(
        tensors: &std::collections::HashMap<String, Vec<f32>>,
        d_student: usize,
        d_teacher: usize,
        device: &Device,
    ) -> Result<Self> {
        let get = |name: &str, len: usize| -> Result<&Vec<f32>> {
            let v = tensors
                .get(name)
                .with_context(|| format!("the Align model has no tensor {name}"))?;
            ensure!(
                v.len() == len,
                "the Align model's {name} has {} values; this student and teacher need {len} \
                 ({d_student} → {d_teacher}): was it aligned from another student cache?",
                v.len()
            );
            Ok(v)
        };
        let w = get("proj.weight", d_teacher * d_student)?;
        let b = get("proj.bias", d_teacher)?;
        Ok(Projection {
            weight: Tensor::from_slice(w, (d_teacher, d_student), device)?,
            bias: Tensor::from_slice(b, d_teacher, device)?,
            values: vec![
                ("proj.weight".into(), vec![d_teacher, d_student], w.clone()),
                ("proj.bias".into(), vec![d_teacher], b.clone()),
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

/// The ADiP/SD objective: `dfc_loss` on the (projected) features, zero-shot prediction.
pub struct AdipTarget {
    projection: Option<Projection>,
    /// Unit text embeddings `[C, d_teacher]`, row = label.
    texts: Vec<f32>,
    dim: usize,
    head: ZeroShotHead,
    lambda: f64,
}

impl AdipTarget {
    pub fn new(setup: &Setup, projection: Option<Projection>, lambda: f64) -> Result<Self> {
        let mut texts = setup.texts.to_vec();
        normalise_rows(&mut texts, setup.teacher_dim);
        let head =
            ZeroShotHead::from_prototypes(texts.clone(), setup.teacher_dim, setup.logit_scale)?;
        Ok(AdipTarget {
            projection,
            texts,
            dim: setup.teacher_dim,
            head,
            lambda,
        })
    }

    fn project(&self, features: &Tensor) -> Result<Tensor> {
        match &self.projection {
            Some(p) => p.forward(features),
            None => Ok(features.clone()),
        }
    }
}

impl Objective for AdipTarget {
    fn loss(&self, features: &Tensor, batch: &Batch) -> Result<(Tensor, Metrics)> {
        let device = features.device();
        let p = self.project(features)?;
        let n = batch.labels.len();
        ensure!(
            p.dims2()? == (n, self.dim),
            "the student's outputs have shape {:?}, the teacher's embeddings are {}-d",
            p.dims(),
            self.dim
        );
        let images = normalize_rows(&Tensor::from_slice(batch.teacher, (n, self.dim), device)?)?;
        let text = |y: usize| &self.texts[y * self.dim..(y + 1) * self.dim];
        let rows: Vec<f32> = match batch.mix {
            None => batch
                .labels
                .iter()
                .flat_map(|&y| text(y).iter().copied())
                .collect(),
            // λ·dfc(I, T_a) + (1 − λ)·dfc(I, T_b): the text term is linear in the unit text embedding.
            Some(mix) => batch
                .labels
                .iter()
                .zip(&mix.partner)
                .flat_map(|(&y, &p)| {
                    let (a, b) = (text(y), text(batch.labels[p]));
                    a.iter()
                        .zip(b)
                        .map(|(a, b)| {
                            (mix.lam * f64::from(*a) + (1.0 - mix.lam) * f64::from(*b)) as f32
                        })
                        .collect::<Vec<f32>>()
                })
                .collect(),
        };
        let texts = Tensor::from_vec(rows, (n, self.dim), device)?;
        let (loss, cos_image, cos_text) = adip(&p, &images, &texts, self.lambda)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((
            loss,
            vec![
                ("loss", value),
                ("cos_image", cos_image),
                ("cos_text", cos_text),
            ],
        ))
    }

    fn logits(&self, features: &Tensor) -> Result<Vec<f32>> {
        self.head.logits(&rows_of(&self.project(features)?)?)
    }

    fn constants(&self) -> Vec<NamedTensor> {
        self.projection
            .as_ref()
            .map_or_else(Vec::new, |p| p.values.clone())
    }
}

pub fn build(setup: &Setup, overrides: &Overrides) -> Result<Box<dyn Algorithm>> {
    let hparams = Hparams::from(overrides, setup)?;
    let spec = setup.backbone.context("adip-distill needs a backbone")?;
    let align = spec
        .first_stage
        .as_ref()
        .context("adip-distill needs the Align run's projection")?;
    let backbone = FineTune::backbone(spec)?;
    let projection =
        Projection::from_align(align, backbone.dim(), setup.teacher_dim, &spec.device)?;
    let objective = AdipTarget::new(setup, Some(projection), hparams.lambda)?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use candle_core::{Tensor, Var};
    use vl2v::model::students::StudentConfig;

    use super::*;
    use crate::training::trainable_backbone::{Arch, Backbone};
    use vl2v::train::Adam;

    /// The official CutMix loss, λ·dfc(I, T_a, p) + (1 − λ)·dfc(I, T_b, p), computed as two losses.
    #[test]
    fn cutmix_mixes_the_text_targets_as_two_losses() {
        let (n, d, classes) = (4usize, 3usize, 3usize);
        let wave = |k: usize, s: f32| (0..k).map(|i| ((i as f32) * s).sin()).collect::<Vec<f32>>();
        let texts = wave(classes * d, 0.9);
        let setup = Setup {
            student_dim: Some(d),
            teacher_dim: d,
            classes,
            texts: &texts,
            templates: &[crate::prompt_styles::PHOTO],
            logit_scale: 100.0,
            seed: 0,
            backbone: None,
            prompts: None,
            test_domain: 0,
        };
        let objective = AdipTarget::new(&setup, None, 0.3).unwrap();
        let features = Tensor::from_vec(wave(n * d, 0.37), (n, d), &Device::Cpu).unwrap();
        let teacher = wave(n * d, 1.3);
        let labels = [0usize, 2, 1, 2];
        let mix = crate::data::cutmix::CutMix {
            lam: 0.7,
            partner: vec![2, 0, 3, 1],
            rows: (0, 1),
            cols: (0, 1),
        };
        let loss = |labels: &[usize], mix: Option<&crate::data::cutmix::CutMix>| {
            let b = Batch {
                picks: &[],
                student: &[],
                teacher: &teacher,
                labels,
                mix,
            };
            let (l, _) = objective.loss(&features, &b).unwrap();
            f64::from(l.to_scalar::<f32>().unwrap())
        };
        let partner_labels: Vec<usize> = mix.partner.iter().map(|&p| labels[p]).collect();
        let want = 0.7 * loss(&labels, None) + 0.3 * loss(&partner_labels, None);
        let got = loss(&labels, Some(&mix));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(
            (got - loss(&labels, None)).abs() > 1e-3,
            "the mix changes the loss"
        );
    }

    /// One Distill step (forward, loss, backward, Adam) of a student at 224×224, batch 16, timed as
    /// `tests/bench/student_step_torch.py` times PyTorch's: run by tests/bench/run_step_bench.sh with
    /// `VL2V_STEP_WEIGHTS` = the directory of `<student>.safetensors` that script wrote;
    /// `VL2V_STEP_DEVICE` (default `cpu`) and `VL2V_STEP_BATCH` (default 16) as that script's `--device` and
    /// `--batch`, `VL2V_STEP_PRECISION` (default `fp32`) as `--precision`. The batch is uploaded inside the timed step, and a GPU is synchronised before the clock stops.
    #[test]
    #[ignore = "benchmark: tests/bench/run_step_bench.sh"]
    fn student_step_timing() {
        // On one of rayon's workers, as `training::trainer::run` runs every training loop: forked from a
        // worker, each parallel op is a join the worker takes part in, not a hand-off that puts the caller
        // to sleep and wakes it (measured here: ViT-S/16, batch 16, 2 threads, 8 alternating pairs of runs:
        // faster on the pool in 7, by 0.22 s a step at the median, of 2.3-2.9 s from the main thread).
        rayon::scope(|_| student_step_timing_on_pool())
    }

    fn student_step_timing_on_pool() {
        let dir = std::env::var("VL2V_STEP_WEIGHTS").expect("VL2V_STEP_WEIGHTS");
        let batch: usize = std::env::var("VL2V_STEP_BATCH").map_or(16, |b| b.parse().unwrap());
        let dev = vl2v::model::device(
            &std::env::var("VL2V_STEP_DEVICE").unwrap_or_else(|_| "cpu".into()),
        )
        .unwrap();
        let precision: vl2v::model::Precision = std::env::var("VL2V_STEP_PRECISION")
            .map_or(Ok(vl2v::model::Precision::Fp32), |p| p.parse())
            .unwrap();
        precision.apply();
        let mut results = serde_json::Map::new();
        for name in ["resnet18", "resnet50", "vit-small", "vit-base"] {
            let path = Path::new(&dir).join(format!("{name}.safetensors"));
            if !path.is_file() {
                continue;
            }
            let config = StudentConfig::by_name(name).unwrap();
            let backbone = Backbone::load(Arch::Student(config), &path, &dev).unwrap();
            let d = backbone.dim();
            let mut align = HashMap::new();
            let wave = |n: usize, s: f32| (0..n).map(|k| ((k as f32) * s).sin() * 0.05).collect();
            align.insert("proj.weight".to_string(), wave(512 * d, 0.37));
            align.insert("proj.bias".to_string(), wave(512, 0.11));
            let texts: Vec<f32> = wave(65 * 512, 0.71);
            let setup = Setup {
                student_dim: Some(d),
                teacher_dim: 512,
                classes: 65,
                texts: &texts,
                templates: &[crate::prompt_styles::PHOTO],
                logit_scale: 100.0,
                seed: 0,
                backbone: None,
                prompts: None,
                test_domain: 0,
            };
            let proj = Projection::from_align(&align, d, 512, &dev).unwrap();
            let objective = AdipTarget::new(&setup, Some(proj), 0.5).unwrap();
            let vars: Vec<Var> = backbone.vars().iter().map(|(_, v)| v.clone()).collect();
            let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
            let mut adam = Adam::new(&sizes, 5e-5, 0.0);
            let mut moments = None;
            let teacher: Vec<f32> = wave(batch * 512, 0.53);
            let labels: Vec<usize> = (0..batch).map(|i| i * 7 % 65).collect();
            let mut times = Vec::new();
            // Seconds of forward, loss + backward, Adam (each ended by a device synchronisation when
            // VL2V_STEP_PHASES=1, which a GPU's asynchronous queue otherwise hides), per timed step.
            let phases_wanted = std::env::var("VL2V_STEP_PHASES").is_ok_and(|v| v == "1");
            // Steps in all, the first a warm-up (more for a profiler to see the steady state).
            let steps: usize = std::env::var("VL2V_STEP_COUNT").map_or(4, |n| n.parse().unwrap());
            let mut phases: Vec<[f64; 3]> = Vec::new();
            for step in 0..steps {
                let pixels = Tensor::randn(0f32, 1.0, batch * 3 * 224 * 224, &Device::Cpu)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let started = std::time::Instant::now();
                let lap = |from: std::time::Instant| {
                    if phases_wanted {
                        dev.synchronize().unwrap();
                    }
                    from.elapsed().as_secs_f64()
                };
                let f = backbone.forward_train(&pixels, batch, 224).unwrap();
                let forward = lap(started);
                let b = Batch {
                    picks: &[],
                    student: &[],
                    teacher: &teacher,
                    labels: &labels,
                    mix: None,
                };
                let (loss, _) = objective.loss(&f, &b).unwrap();
                let grads = loss.backward().unwrap();
                let backward = lap(started) - forward;
                let refs: Vec<&Var> = vars.iter().collect();
                adam.step_where_they_live(&refs, &grads, &mut moments)
                    .unwrap();
                dev.synchronize().unwrap();
                if step > 0 {
                    let total = started.elapsed().as_secs_f64();
                    times.push(total);
                    phases.push([forward, backward, total - forward - backward]);
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            eprintln!("{name}: step {median:.3}s ({times:?})");
            if phases_wanted {
                for [f, b, a] in &phases {
                    eprintln!("{name}: forward {f:.3}s, loss + backward {b:.3}s, Adam {a:.3}s");
                }
            }
            results.insert(
                name.to_string(),
                serde_json::json!({"seconds": median, "steps": times.len()}),
            );
        }
        println!(
            "step-bench {}",
            serde_json::json!({"batch": batch, "device": vl2v::model::device_name(&dev),
                "precision": precision.name(),
                "students": results})
        );
    }
}
