//! The losses of the algorithms that train a backbone, as candle graphs (autograd gives the gradient all
//! the way into the backbone), on the elementary pieces of [`vl2v::train::graph`]. The slice versions in
//! `analytic_losses` (analytic gradients, for the cached-feature algorithms) compute the same values; tests
//! compare the two.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
pub use vl2v::train::graph::{cross_entropy, log_softmax, normalize_rows};

/// The official `dfc_loss` (`domainbed/algorithms/distill_clip.py`) of raw student outputs `p: [B, D]` against unit teacher image
/// embeddings `images: [B, D]` and the unit text embedding of each row's label `texts: [B, D]`:
/// `λ·(−mean cos(p, I)) + (1−λ)·(−mean cos(p, T_y))`. Also returns the two mean cosines.
pub fn adip(
    p: &Tensor,
    images: &Tensor,
    texts: &Tensor,
    lambda: f64,
) -> Result<(Tensor, f64, f64)> {
    let p = normalize_rows(p)?;
    let cos_image = (&p * images)?.sum(D::Minus1)?.mean_all()?;
    let cos_text = (&p * texts)?.sum(D::Minus1)?.mean_all()?;
    let loss = ((&cos_image * -lambda)? + (&cos_text * -(1.0 - lambda))?)?;
    Ok((
        loss,
        f64::from(cos_image.to_scalar::<f32>()?),
        f64::from(cos_text.to_scalar::<f32>()?),
    ))
}

/// KL(p_T ‖ p_S) per row, averaged over rows ("batchmean"): `teacher` holds probabilities `[B, C]`
/// (constants), `student_log` the student's log-probabilities. A proper KL divergence, unlike the official
/// baseline's `F.kl_div(probabilities, …)` call (`DFC_PLAIN_5`, `domainbed/algorithms/baselines.py`).
pub fn kl_divergence(teacher: &Tensor, student_log: &Tensor) -> Result<Tensor> {
    // 0·log 0 = 0: clamp before the log; the clamped entries are multiplied by their zero probability.
    let teacher_log = teacher.maximum(1e-30)?.log()?;
    let kl = (teacher * (teacher_log - student_log)?)?.sum(D::Minus1)?;
    Ok(kl.mean_all()?)
}

/// The teacher's probabilities `softmax(z_T / T)` of row-major `[B, C]` logits (constants).
pub fn teacher_probabilities(
    logits: &[f32],
    classes: usize,
    t: f64,
    device: &Device,
) -> Result<Tensor> {
    let scaled: Vec<f32> = logits.iter().map(|v| (f64::from(*v) / t) as f32).collect();
    softmax_rows(&scaled, classes, device)
}

/// Hinton's distillation term `KL(p_T ‖ softmax(z/T))·T²`, batch-mean, of the teacher's probabilities
/// `teacher` (from [`teacher_probabilities`]) and the student's logits `z`.
pub fn soft_kl(teacher: &Tensor, z: &Tensor, t: f64) -> Result<Tensor> {
    Ok((kl_divergence(teacher, &log_softmax(&(z / t)?)?)? * (t * t))?)
}

/// The value of a scalar tensor, for the logs.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_scalar::<f32>()?))
}

/// Row-wise softmax of `[B, C]` values computed in f64 (teacher targets; no gradient).
pub fn softmax_rows(values: &[f32], classes: usize, device: &Device) -> Result<Tensor> {
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(classes) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| (e / sum) as f32));
    }
    Ok(Tensor::from_vec(out, (values.len() / classes, classes), device)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    #[test]
    fn adip_matches_the_slice_loss_and_its_gradient() {
        let dev = Device::Cpu;
        let (b, d) = (3, 4);
        let p: Vec<f32> = (0..b * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut images: Vec<f32> = (0..b * d)
            .map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let mut texts: Vec<f32> = (0..2 * d)
            .map(|i| ((i * 3 % 5) as f32 - 2.0) / 2.0)
            .collect();
        vl2v::zeroshot::normalise_rows(&mut images, d);
        vl2v::zeroshot::normalise_rows(&mut texts, d);
        let labels = [1usize, 0, 1];
        let (want, grad) =
            crate::objectives::analytic_losses::adip_loss(&p, &images, &texts, &labels, 0.3, d)
                .unwrap();

        let pv = Var::from_tensor(&Tensor::from_slice(&p, (b, d), &dev).unwrap()).unwrap();
        let rows: Vec<f32> = labels
            .iter()
            .flat_map(|&y| texts[y * d..(y + 1) * d].to_vec())
            .collect();
        let (loss, ci, ct) = adip(
            pv.as_tensor(),
            &Tensor::from_slice(&images, (b, d), &dev).unwrap(),
            &Tensor::from_slice(&rows, (b, d), &dev).unwrap(),
            0.3,
        )
        .unwrap();
        assert!((scalar(&loss) - f64::from(want.loss)).abs() < 1e-6);
        assert!((ci - f64::from(want.cos_image)).abs() < 1e-6);
        assert!((ct - f64::from(want.cos_text)).abs() < 1e-6);
        let g = loss.backward().unwrap();
        let g = g.get(pv.as_tensor()).unwrap().flatten_all().unwrap();
        for (a, b) in g.to_vec1::<f32>().unwrap().iter().zip(&grad) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn cross_entropy_and_kl_by_hand() {
        let dev = Device::Cpu;
        let z = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], (2, 3), &dev).unwrap();
        // Row 0, label 2: −log(e³/(e+e²+e³)); row 1, label 0: log 3.
        let want = ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0 + 3f64.ln()) / 2.0;
        let ce = cross_entropy(&z, &[2, 0]).unwrap();
        assert!((scalar(&ce) - want).abs() < 1e-6, "{}", scalar(&ce));
        let slice = crate::objectives::analytic_losses::cross_entropy(
            &z.flatten_all().unwrap().to_vec1().unwrap(),
            &[2, 0],
            3,
        )
        .unwrap()
        .0;
        assert!((scalar(&ce) - f64::from(slice)).abs() < 1e-6);

        // KL(t ‖ s) with t = (0.5, 0.5, 0) and s uniform: 0.5·ln(1.5)·2 = ln 1.5.
        let t = Tensor::from_slice(&[0.5f32, 0.5, 0.0], (1, 3), &dev).unwrap();
        let s = log_softmax(&Tensor::zeros((1, 3), DType::F32, &dev).unwrap()).unwrap();
        let kl = kl_divergence(&t, &s).unwrap();
        assert!((scalar(&kl) - 1.5f64.ln()).abs() < 1e-6, "{}", scalar(&kl));
        // Identical distributions: 0.
        let p = softmax_rows(&[0.3, -1.0, 2.0], 3, &dev).unwrap();
        let kl = kl_divergence(&p, &p.log().unwrap()).unwrap();
        assert!(scalar(&kl).abs() < 1e-6);
    }
}
