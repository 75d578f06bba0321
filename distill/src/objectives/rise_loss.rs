//! RISE's loss (Huang et al., ICCV 2023, "A Sentence Speaks a Thousand Images"; WisconsinAIVision/RISE,
//! `train_rise.py`, `Trainer._do_epoch`) as a candle graph of the student's logits `z: [B, C]` and its
//! text-space embedding `e: [B, D]` (the output of the projector the classifier reads):
//!
//! `w_kd·KL(softmax(z_T/T) ‖ softmax(z/T))·T² + w_ce·CE(z, y) + w_d·AD + w_d·RD`, with the teacher's
//! logits `z_T = 100·cos(I, E_c)` against the prompt ensemble `E`, the absolute distance
//! `AD = mean(1 − cos(e, E_y))` (torch's `CosineEmbeddingLoss` with target 1) and the relative distance
//! `RD = 10·mean((softmax_a cos(e, A_ya) − softmax_a cos(E_y, A_ya))²)` over the anchors `A` ("a {domain}
//! of a {class}" of the training domains, or RISE's four photo-quality anchors for VLCS and
//! TerraIncognita).

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, D};

use super::graph_losses::{
    cross_entropy, log_softmax, normalize_rows, scalar, soft_kl, softmax_rows,
    teacher_probabilities,
};

/// RISE's hard-coded scale of the teacher's logits (`100.0 * CLIP_image_features @ text_features_ems.T`).
pub const TEACHER_SCALE: f32 = 100.0;

/// The loss weights and temperature (one line of RISE's `data/hp_search/<dataset>.txt`: T w1 w2 w3).
#[derive(Clone, Copy, Debug)]
pub struct Weights {
    pub temperature: f64,
    pub kd: f64,
    pub ce: f64,
    pub distance: f64,
}

/// Per-class constants of the loss, from the teacher's text embeddings.
pub struct Targets {
    classes: usize,
    anchors: usize,
    dim: usize,
    /// `[C, D]` unit prompt-ensemble embedding of each class: the classifier's start, AD's target and the
    /// teacher's zero-shot head.
    pub ensemble: Vec<f32>,
    /// `[C, A, D]` unit anchor embeddings.
    anchor_texts: Vec<f32>,
    /// `[C, A]` the teacher's relation: softmax over the anchors of cos(E_c, A_ca).
    relation: Vec<f32>,
}

impl Targets {
    /// From each template's `[C, D]` class embeddings (averaged into the ensemble: the mean of unit
    /// embeddings, renormalised) and each anchor's `[C, D]`.
    pub fn new(templates: &[&[f32]], anchors: &[&[f32]], dim: usize) -> Result<Self> {
        ensure!(
            !templates.is_empty() && !anchors.is_empty(),
            "rise needs its prompt ensemble and at least one anchor"
        );
        let classes = templates[0].len() / dim;
        let ensemble = crate::prompt_styles::class_embeddings(templates, dim).into_owned();
        let ensemble = {
            // One template is taken as it is by class_embeddings; make it unit too.
            let mut e = ensemble;
            vl2v::zeroshot::normalise_rows(&mut e, dim);
            e
        };
        let mut anchor_texts = Vec::with_capacity(classes * anchors.len() * dim);
        let mut cosines = Vec::with_capacity(classes * anchors.len());
        for c in 0..classes {
            let e = &ensemble[c * dim..(c + 1) * dim];
            for a in anchors {
                let mut v = a[c * dim..(c + 1) * dim].to_vec();
                vl2v::zeroshot::normalise_rows(&mut v, dim);
                cosines.push(e.iter().zip(&v).map(|(x, y)| x * y).sum::<f32>());
                anchor_texts.extend(v);
            }
        }
        let relation = softmax_rows(&cosines, anchors.len(), &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Targets {
            classes,
            anchors: anchors.len(),
            dim,
            ensemble,
            anchor_texts,
            relation,
        })
    }

    /// The teacher's logits `100·cos(I, E_c)` of unit image embeddings `images: [B, D]`.
    pub fn teacher_logits(&self, images: &[f32]) -> Vec<f32> {
        let d = self.dim;
        images
            .chunks_exact(d)
            .flat_map(|i| {
                self.ensemble
                    .chunks_exact(d)
                    .map(move |e| TEACHER_SCALE * i.iter().zip(e).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect()
    }

    fn rows(&self, labels: &[usize], of: &[f32], width: usize, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = labels
            .iter()
            .flat_map(|&y| of[y * width..(y + 1) * width].iter().copied())
            .collect();
        Ok(Tensor::from_vec(v, (labels.len(), width), device)?)
    }
}

/// The loss's parts, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub kl: f64,
    pub ce: f64,
    pub absolute: f64,
    pub relative: f64,
}

/// RISE's loss of logits `z: [B, C]` and embeddings `e: [B, D]` for rows labelled `labels`, with the
/// teacher's logits `teacher: [B, C]` (row-major, no gradient).
pub fn loss(
    z: &Tensor,
    e: &Tensor,
    teacher: &[f32],
    labels: &[usize],
    targets: &Targets,
    w: &Weights,
) -> Result<(Tensor, Parts)> {
    let device = z.device();
    let b = labels.len();
    let t = w.temperature;
    let teacher_p = teacher_probabilities(teacher, targets.classes, t, device)?;
    let kl = soft_kl(&teacher_p, z, t)?;
    let ce = cross_entropy(z, labels)?;

    let e = normalize_rows(e)?;
    let ensemble = targets.rows(labels, &targets.ensemble, targets.dim, device)?;
    let absolute = ((e.mul(&ensemble)?.sum(D::Minus1)? * -1.0)? + 1.0)?.mean_all()?;

    let (a, d) = (targets.anchors, targets.dim);
    let anchors = targets
        .rows(labels, &targets.anchor_texts, a * d, device)?
        .reshape((b, a, d))?;
    let student = e.unsqueeze(1)?.broadcast_mul(&anchors)?.sum(D::Minus1)?;
    let student = log_softmax(&student)?.exp()?;
    let teacher_rel = targets.rows(labels, &targets.relation, a, device)?;
    let relative = ((student - teacher_rel)?.sqr()?.mean_all()? * 10.0)?;

    let total = ((&kl * w.kd)? + (&ce * w.ce)?)?;
    let total = (total + ((&absolute + &relative)? * w.distance)?)?;
    Ok((
        total,
        Parts {
            kl: scalar(&kl)?,
            ce: scalar(&ce)?,
            absolute: scalar(&absolute)?,
            relative: scalar(&relative)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{close, floats, load};
    use super::*;
    use candle_core::Var;
    use serde_json::Value;

    fn fixture() -> Value {
        load("rise_loss.json")
    }

    fn usize_of(v: &Value, key: &str) -> usize {
        v[key].as_u64().unwrap() as usize
    }

    struct Case {
        targets: Targets,
        weights: Weights,
        teacher: Vec<f32>,
        labels: Vec<usize>,
        z: Vec<f32>,
        e: Vec<f32>,
        b: usize,
        c: usize,
        d: usize,
    }

    fn case(f: &Value) -> Case {
        let (b, c, d) = (
            usize_of(f, "batch"),
            usize_of(f, "classes"),
            usize_of(f, "dim"),
        );
        let templates = floats(f, "template_texts");
        let anchors = floats(f, "anchor_texts");
        let per_t: Vec<&[f32]> = templates.chunks_exact(c * d).collect();
        let per_a: Vec<&[f32]> = anchors.chunks_exact(c * d).collect();
        let targets = Targets::new(&per_t, &per_a, d).unwrap();
        let teacher = targets.teacher_logits(&floats(f, "image_features"));
        Case {
            targets,
            weights: Weights {
                temperature: f["temperature"].as_f64().unwrap(),
                kd: f["w_kd"].as_f64().unwrap(),
                ce: f["w_ce"].as_f64().unwrap(),
                distance: f["w_distance"].as_f64().unwrap(),
            },
            teacher,
            labels: f["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            z: floats(f, "class_logit"),
            e: floats(f, "student_embedding"),
            b,
            c,
            d,
        }
    }

    fn eval(k: &Case, z: &[f32], e: &[f32]) -> (f64, Parts, Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let zv = Var::from_tensor(&Tensor::from_slice(z, (k.b, k.c), &dev).unwrap()).unwrap();
        let ev = Var::from_tensor(&Tensor::from_slice(e, (k.b, k.d), &dev).unwrap()).unwrap();
        let (l, parts) = loss(
            zv.as_tensor(),
            ev.as_tensor(),
            &k.teacher,
            &k.labels,
            &k.targets,
            &k.weights,
        )
        .unwrap();
        let g = l.backward().unwrap();
        let grad = |v: &Var| {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        (
            f64::from(l.to_scalar::<f32>().unwrap()),
            parts,
            grad(&zv),
            grad(&ev),
        )
    }

    /// Values and gradients against RISE's own lines run by torch (tests/fixtures/family/make_rise_loss.py).
    #[test]
    fn loss_and_gradients_match_rise_training_step() {
        let f = fixture();
        let k = case(&f);
        let (l, parts, gz, ge) = eval(&k, &k.z, &k.e);
        close(l, f["loss"].as_f64().unwrap(), 1e-5, "loss");
        close(parts.kl, f["kl"].as_f64().unwrap(), 1e-5, "kl");
        close(parts.ce, f["ce"].as_f64().unwrap(), 1e-5, "ce");
        close(parts.absolute, f["absolute"].as_f64().unwrap(), 1e-5, "AD");
        close(parts.relative, f["relative"].as_f64().unwrap(), 1e-4, "RD");
        for (i, (a, b)) in gz.iter().zip(floats(&f, "grad_logit")).enumerate() {
            close(f64::from(*a), f64::from(b), 1e-4, &format!("dL/dz[{i}]"));
        }
        for (i, (a, b)) in ge.iter().zip(floats(&f, "grad_embedding")).enumerate() {
            close(f64::from(*a), f64::from(b), 1e-4, &format!("dL/de[{i}]"));
        }
    }

    /// Central differences of the loss (f32 graph, so a coarse step) against autograd.
    #[test]
    fn gradient_matches_finite_differences() {
        let k = case(&fixture());
        let (_, _, gz, ge) = eval(&k, &k.z, &k.e);
        let h = 1e-2f32;
        for (which, grad) in [(0, &gz), (1, &ge)] {
            let base = if which == 0 { &k.z } else { &k.e };
            for (i, want) in grad.iter().enumerate() {
                let at = |delta: f32| {
                    let mut x = base.clone();
                    x[i] += delta;
                    let (l, ..) = if which == 0 {
                        eval(&k, &x, &k.e)
                    } else {
                        eval(&k, &k.z, &x)
                    };
                    l
                };
                let fd = (at(h) - at(-h)) / (2.0 * f64::from(h));
                assert!(
                    (fd - f64::from(*want)).abs() < 2e-3 + 1e-2 * fd.abs(),
                    "input {which} [{i}]: finite difference {fd} vs autograd {want}"
                );
            }
        }
    }

    /// By hand: a student that points exactly at its class's ensemble has AD = 0, and one whose relation
    /// to the anchors equals the teacher's has RD = 0; a student at right angles has AD = 1.
    #[test]
    fn distances_by_hand() {
        // Two classes in 2-d; one template (the ensemble), two anchors.
        let ens = [1.0f32, 0.0, 0.0, 1.0];
        let a1 = [0.6f32, 0.8, 0.8, 0.6];
        let a2 = [1.0f32, 0.0, 0.0, 1.0];
        let t = Targets::new(&[&ens], &[&a1, &a2], 2).unwrap();
        let w = Weights {
            temperature: 1.0,
            kd: 0.0,
            ce: 0.0,
            distance: 1.0,
        };
        let dev = Device::Cpu;
        let z = Tensor::zeros((1, 2), candle_core::DType::F32, &dev).unwrap();
        let teacher = [0.0f32, 0.0];
        let at = |e: [f32; 2], y: usize| {
            let e = Tensor::from_slice(&e, (1, 2), &dev).unwrap();
            loss(&z, &e, &teacher, &[y], &t, &w).unwrap().1
        };
        let p = at([3.0, 0.0], 0);
        assert!(p.absolute.abs() < 1e-6 && p.relative.abs() < 1e-9, "{p:?}");
        let p = at([0.0, 2.0], 0);
        assert!((p.absolute - 1.0).abs() < 1e-6, "{p:?}");
        // e = (0, 1) for class 0: cosines to the anchors (0.8, 0) vs the teacher's (0.6, 1):
        // softmax(0.8, 0) = (0.68997, 0.31003), softmax(0.6, 1) = (0.40131, 0.59869);
        // RD = 10·mean of the squared differences = 10·0.28866² = 0.833254.
        let s = 1.0 / (1.0 + (-0.8f64).exp());
        let tt = 1.0 / (1.0 + (0.4f64).exp());
        let want = 10.0 * (s - tt).powi(2);
        assert!((p.relative - want).abs() < 1e-5, "{} vs {want}", p.relative);
    }
}
