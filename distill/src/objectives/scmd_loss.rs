//! SCMD's loss and sample selection (Leng et al., TMLR 2024, "Selective Cross-Modality Distillation via CLIP
//! for Domain Generalization"; SeanLeng1/SCMD, `DomainBed/domainbed/algorithms.py`, `SCMD.update`):
//!
//! `CE(z, y) + λ1·KL(p_T ‖ softmax(z/T))·T² + λ2·KL(p_T ‖ softmax(s·cos(P f, t_c)/T))·T²`, with the teacher's
//! probabilities `p_T = softmax(z_T/T)` of its zero-shot logits ("this is a photo of a {c}"), the student's
//! feature projected by `P` (no bias) into the teacher's space and compared with the class texts at a
//! learnable scale `s = exp(log_scale)`. Early in training ([`hardest`]) only the hardest samples of the
//! minibatch, by the student's own cross-entropy, train.

use anyhow::Result;
use candle_core::Tensor;

use super::graph_losses::{cross_entropy, normalize_rows, scalar, soft_kl, teacher_probabilities};

#[derive(Clone, Copy, Debug)]
pub struct Weights {
    pub temperature: f64,
    pub lambda1: f64,
    pub lambda2: f64,
}

/// The loss's parts, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub ce: f64,
    pub kd: f64,
    pub cross_modal: f64,
}

/// The rows SCMD trains on: the `⌊n·p⌋` (at least one) rows of largest cross-entropy of `logits: [n, C]`
/// against `labels`, hardest first (`torch.sort(…, descending=True)`; equal losses keep row order).
pub fn hardest(logits: &[f32], labels: &[usize], p: f64) -> Vec<usize> {
    let classes = logits.len() / labels.len().max(1);
    let losses: Vec<f64> =
        crate::training::evaluate::row_cross_entropies(logits, labels, classes).collect();
    let mut order: Vec<usize> = (0..losses.len()).collect();
    order.sort_by(|&a, &b| losses[b].total_cmp(&losses[a]));
    let keep = ((losses.len() as f64 * p) as usize).max(1);
    order.truncate(keep);
    order
}

/// SCMD's loss of logits `z: [B, C]`, projected features `projected: [B, D]` and the scalar `log_scale`
/// (`[1]`), with the teacher's logits `teacher: [B, C]` (row-major, no gradient) and unit class texts
/// `texts: [C, D]`.
pub fn loss(
    z: &Tensor,
    projected: &Tensor,
    log_scale: &Tensor,
    teacher: &[f32],
    texts: &Tensor,
    labels: &[usize],
    w: &Weights,
) -> Result<(Tensor, Parts)> {
    let t = w.temperature;
    let classes = z.dims2()?.1;
    let teacher_p = teacher_probabilities(teacher, classes, t, z.device())?;
    let ce = cross_entropy(z, labels)?;
    let kd = soft_kl(&teacher_p, z, t)?;
    let cosines = normalize_rows(projected)?.matmul(&texts.t()?)?;
    let scale = log_scale.exp()?.reshape(())?;
    let logits = cosines.broadcast_mul(&scale)?;
    let cross_modal = soft_kl(&teacher_p, &logits, t)?;
    let total = ((&ce + (&kd * w.lambda1)?)? + (&cross_modal * w.lambda2)?)?;
    Ok((
        total,
        Parts {
            ce: scalar(&ce)?,
            kd: scalar(&kd)?,
            cross_modal: scalar(&cross_modal)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{close, floats, load, usizes};
    use super::*;
    use candle_core::{Device, Var};
    use serde_json::Value;

    fn fixture() -> Value {
        load("scmd_loss.json")
    }

    struct Case {
        teacher: Vec<f32>,
        texts: Tensor,
        labels: Vec<usize>,
        w: Weights,
        c: usize,
        d: usize,
    }

    fn case(f: &Value) -> Case {
        let (c, d) = (
            f["classes"].as_u64().unwrap() as usize,
            f["dim"].as_u64().unwrap() as usize,
        );
        let texts = floats(f, "text_feature");
        let images = floats(f, "image_feature");
        let all = usizes(f, "labels");
        let kept = usizes(f, "kept");
        // The teacher's logits of the kept rows: 100·cos (CLIP's scale), as the official teacher gives them.
        let teacher: Vec<f32> = kept
            .iter()
            .flat_map(|&r| {
                let i = &images[r * d..(r + 1) * d];
                texts
                    .chunks_exact(d)
                    .map(|t| 100.0 * i.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
                    .collect::<Vec<_>>()
            })
            .collect();
        Case {
            teacher,
            texts: Tensor::from_vec(texts, (c, d), &Device::Cpu).unwrap(),
            labels: kept.iter().map(|&r| all[r]).collect(),
            w: Weights {
                temperature: f["temperature"].as_f64().unwrap(),
                lambda1: f["lambda1"].as_f64().unwrap(),
                lambda2: f["lambda2"].as_f64().unwrap(),
            },
            c,
            d,
        }
    }

    fn eval(k: &Case, z: &[f32], proj: &[f32], log_scale: f32) -> (f64, Parts, [Vec<f32>; 3]) {
        let dev = Device::Cpu;
        let b = k.labels.len();
        let zv = Var::from_tensor(&Tensor::from_slice(z, (b, k.c), &dev).unwrap()).unwrap();
        let pv = Var::from_tensor(&Tensor::from_slice(proj, (b, k.d), &dev).unwrap()).unwrap();
        let sv = Var::from_tensor(&Tensor::from_slice(&[log_scale], 1, &dev).unwrap()).unwrap();
        let (l, parts) = loss(
            zv.as_tensor(),
            pv.as_tensor(),
            sv.as_tensor(),
            &k.teacher,
            &k.texts,
            &k.labels,
            &k.w,
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
            [grad(&zv), grad(&pv), grad(&sv)],
        )
    }

    /// Selection, values and gradients against SCMD's own lines run by torch
    /// (tests/fixtures/family/make_scmd_loss.py).
    #[test]
    fn selection_loss_and_gradients_match_scmd_update() {
        let f = fixture();
        let kept = hardest(
            &floats(&f, "pre_logits"),
            &usizes(&f, "labels"),
            f["worst_case_p"].as_f64().unwrap(),
        );
        assert_eq!(kept, usizes(&f, "kept"));
        let k = case(&f);
        let log_scale = f["log_scale"].as_f64().unwrap() as f32;
        let (l, parts, [gz, gp, gs]) = eval(
            &k,
            &floats(&f, "student_pred"),
            &floats(&f, "projected"),
            log_scale,
        );
        close(l, f["loss"].as_f64().unwrap(), 1e-5, "loss");
        close(parts.ce, f["ce"].as_f64().unwrap(), 1e-5, "ce");
        close(parts.kd, f["kd"].as_f64().unwrap(), 1e-5, "kd");
        close(
            parts.cross_modal,
            f["cross_modal"].as_f64().unwrap(),
            1e-5,
            "cross-modal",
        );
        for (got, key) in [(&gz, "grad_pred"), (&gp, "grad_projected")] {
            for (i, (a, b)) in got.iter().zip(floats(&f, key)).enumerate() {
                close(f64::from(*a), f64::from(b), 1e-4, &format!("{key}[{i}]"));
            }
        }
        close(
            f64::from(gs[0]),
            f["grad_log_scale"].as_f64().unwrap(),
            1e-4,
            "d/d log_scale",
        );
    }

    /// Central differences (f64 accumulations of an f32 graph: a coarse step) against autograd.
    #[test]
    fn gradient_matches_finite_differences() {
        let f = fixture();
        let k = case(&f);
        let z = floats(&f, "student_pred");
        let p = floats(&f, "projected");
        let s = f["log_scale"].as_f64().unwrap() as f32;
        let (_, _, grads) = eval(&k, &z, &p, s);
        let h = 1e-2f32;
        for (which, grad) in grads.iter().enumerate() {
            for (i, want) in grad.iter().enumerate() {
                let at = |delta: f32| {
                    let (mut z, mut p, mut s) = (z.clone(), p.clone(), s);
                    match which {
                        0 => z[i] += delta,
                        1 => p[i] += delta,
                        _ => s += delta,
                    }
                    eval(&k, &z, &p, s).0
                };
                let fd = (at(h) - at(-h)) / (2.0 * f64::from(h));
                assert!(
                    (fd - f64::from(*want)).abs() < 3e-3 + 1e-2 * fd.abs(),
                    "input {which} [{i}]: finite difference {fd} vs autograd {want}"
                );
            }
        }
    }

    /// By hand: losses 2.0, 0.5, 3.0, 0.1 (logits built so) keep rows 2 then 0 at p = 0.5; one row at
    /// p = 0.1 (never an empty batch).
    #[test]
    fn hardest_rows_by_hand() {
        // Two classes, label 0; CE = ln(1 + e^(z1 − z0)): pick z1 − z0 = ln(e^L − 1).
        let margin = |l: f64| (l.exp() - 1.0).ln() as f32;
        let logits: Vec<f32> = [2.0, 0.5, 3.0, 0.1]
            .iter()
            .flat_map(|&l| [0.0, margin(l)])
            .collect();
        assert_eq!(hardest(&logits, &[0, 0, 0, 0], 0.5), [2, 0]);
        assert_eq!(hardest(&logits, &[0, 0, 0, 0], 0.1), [2]);
    }
}
