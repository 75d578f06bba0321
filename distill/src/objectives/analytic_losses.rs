//! Losses with their analytic gradients, and the two matrix products training needs.
//!
//! - [`cross_entropy`]: mean softmax cross-entropy over a batch of logits;
//! - [`adip_loss`]: the official `dfc_loss` (`domainbed/algorithms/distill_clip.py`):
//!   `L = λ·(−mean_i cos(p_i, I_i)) + (1−λ)·(−mean_i cos(p_i, T_{y_i}))`.
//!
//! Both return the gradient with respect to their input rows, so a linear layer's backward is one more
//! matrix product ([`matmul_tn`]).

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// `a · bᵀ` for row-major `a: [m, k]`, `b: [n, k]`, as row-major `[m, n]`.
///
/// Computed as `(b · aᵀ)ᵀ`: with a small `m` (a minibatch) candle's gemm is markedly faster with the
/// large operand on the left; the transpose back is cheap.
pub fn matmul_nt(a: &[f32], b: &[f32], k: usize) -> Result<Vec<f32>> {
    let (m, n) = (a.len() / k, b.len() / k);
    let a = Tensor::from_slice(a, (m, k), &Device::Cpu)?;
    let b = Tensor::from_slice(b, (n, k), &Device::Cpu)?;
    let ct = b.matmul(&a.t()?)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(transpose(&ct, n, m))
}

/// `aᵀ · b` for row-major `a: [k, m]`, `b: [k, n]` (k = batch rows), as row-major `[m, n]`.
pub fn matmul_tn(a: &[f32], m: usize, b: &[f32], n: usize) -> Result<Vec<f32>> {
    let k = a.len() / m;
    let at = Tensor::from_vec(transpose(a, k, m), (m, k), &Device::Cpu)?;
    let b = Tensor::from_slice(b, (k, n), &Device::Cpu)?;
    Ok(at.matmul(&b)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The transpose of row-major `x: [rows, cols]`, as row-major `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

/// Sixteen partial sums: a single running sum in strict order cannot be vectorised (f32 addition is not
/// associative), and this dot product is the loss's hot loop.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Mean cross-entropy of row-major `logits: [B, C]` against `labels`, and its gradient
/// `(softmax − onehot) / B`.
pub fn cross_entropy(logits: &[f32], labels: &[usize], classes: usize) -> Result<(f32, Vec<f32>)> {
    ensure!(
        logits.len() == labels.len() * classes && !labels.is_empty(),
        "cross_entropy: {} logits for {} labels × {classes} classes",
        logits.len(),
        labels.len()
    );
    let b = labels.len() as f32;
    let mut grad = vec![0.0f32; logits.len()];
    let mut total = 0.0f64;
    for ((row, g), &y) in logits
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (gi, &z) in g.iter_mut().zip(row) {
            *gi = (z - max).exp();
            sum += *gi;
        }
        total += f64::from(sum.ln() + max - row[y]);
        for gi in g.iter_mut() {
            *gi /= sum * b;
        }
        g[y] -= 1.0 / b;
    }
    Ok(((total / f64::from(b)) as f32, grad))
}

/// The value of [`adip_loss`] and the mean cosines it is made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdipLoss {
    pub loss: f32,
    pub cos_image: f32,
    pub cos_text: f32,
}

/// `dfc_loss` of projected student rows `p: [B, D]` against the teacher's image embeddings
/// `image: [B, D]` of the same (image, view) and the class texts `texts: [C, D]` (row `labels[i]` is
/// T_y), weighted by `lambda`; and the gradient with respect to `p`. Zero rows give cosine 0.
pub fn adip_loss(
    p: &[f32],
    image: &[f32],
    texts: &[f32],
    labels: &[usize],
    lambda: f32,
    dim: usize,
) -> Result<(AdipLoss, Vec<f32>)> {
    let n = labels.len();
    ensure!(
        n > 0 && p.len() == n * dim && image.len() == n * dim && texts.len().is_multiple_of(dim),
        "adip_loss: shapes disagree ({} projected values, {} image values, {n} labels, dim {dim})",
        p.len(),
        image.len()
    );
    let classes = texts.len() / dim;
    let norm = |v: &[f32]| dot(v, v).sqrt();
    let b = n as f32;
    let mut grad = vec![0.0f32; p.len()];
    let (mut cos_i, mut cos_t) = (0.0f64, 0.0f64);
    let mut target = vec![0.0f32; dim];
    for i in 0..n {
        let y = labels[i];
        ensure!(y < classes, "adip_loss: label {y} with {classes} classes");
        let pi = &p[i * dim..(i + 1) * dim];
        let ii = &image[i * dim..(i + 1) * dim];
        let ti = &texts[y * dim..(y + 1) * dim];
        let (np, ni, nt) = (norm(pi), norm(ii), norm(ti));
        let inv = |x: f32| if x > 0.0 { 1.0 / x } else { 0.0 };
        let (ip, ii_, it) = (inv(np), inv(ni), inv(nt));
        // target t = λ·Î + (1−λ)·T̂;  L_i = −u·t / B with u = p/|p|.
        for k in 0..dim {
            target[k] = lambda * ii[k] * ii_ + (1.0 - lambda) * ti[k] * it;
        }
        let ci = dot(pi, ii) * ip * ii_;
        let ct = dot(pi, ti) * ip * it;
        cos_i += f64::from(ci);
        cos_t += f64::from(ct);
        // dL/dp = −(t − (u·t)·u) / (|p|·B)
        let ut = dot(pi, &target) * ip;
        let g = &mut grad[i * dim..(i + 1) * dim];
        for k in 0..dim {
            g[k] = -(target[k] - ut * pi[k] * ip) * ip / b;
        }
    }
    let (cos_image, cos_text) = ((cos_i / n as f64) as f32, (cos_t / n as f64) as f32);
    let loss = lambda * -cos_image + (1.0 - lambda) * -cos_text;
    Ok((
        AdipLoss {
            loss,
            cos_image,
            cos_text,
        },
        grad,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        // logits (1, 2, 3), label 2: ln(1 + e^-1 + e^-2); label 0 for (0, 0, 0): ln 3.
        let (loss, grad) = cross_entropy(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 0], 3).unwrap();
        let want = ((1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln() + 3f64.ln()) / 2.0;
        assert!((f64::from(loss) - want).abs() < 1e-6, "{loss} vs {want}");
        let s = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let want_g = [
            1f64.exp() / s / 2.0,
            2f64.exp() / s / 2.0,
            (3f64.exp() / s - 1.0) / 2.0,
            (1.0 / 3.0 - 1.0) / 2.0,
            1.0 / 6.0,
            1.0 / 6.0,
        ];
        for (g, w) in grad.iter().zip(want_g) {
            assert!((f64::from(*g) - w).abs() < 1e-6);
        }
    }

    #[test]
    fn adip_loss_matches_hand_computed_values() {
        // Row 0: p = (3, 4) → u = (0.6, 0.8); I = (1, 0); T_1 = (0, 2) → (0, 1): cos 0.6 and 0.8.
        // Row 1: p = (0, -1); I = (0, 1) → cos −1; T_0 = (1, 0) → cos 0.
        let p = [3.0, 4.0, 0.0, -1.0];
        let image = [1.0, 0.0, 0.0, 1.0];
        let texts = [1.0, 0.0, 0.0, 2.0];
        let (l, grad) = adip_loss(&p, &image, &texts, &[1, 0], 0.5, 2).unwrap();
        assert!((l.cos_image - (-0.2)).abs() < 1e-6);
        assert!((l.cos_text - 0.4).abs() < 1e-6);
        assert!((l.loss - (-0.1)).abs() < 1e-6, "{l:?}");
        // λ = 0.25: 0.25·0.2 + 0.75·(−0.4) = −0.25.
        let (l, _) = adip_loss(&p, &image, &texts, &[1, 0], 0.25, 2).unwrap();
        assert!((l.loss - (-0.25)).abs() < 1e-6);
        // Row 0 gradient: t = (0.5, 0.5), u·t = 0.7, −(t − 0.7u)/(5·2) = −((0.08, −0.06))/10.
        assert!((grad[0] + 0.008).abs() < 1e-6 && (grad[1] - 0.006).abs() < 1e-6);
    }

    #[test]
    fn matmuls_match_loops() {
        let a: Vec<f32> = (0..6).map(|i| i as f32).collect(); // [2, 3]
        let b: Vec<f32> = (0..12).map(|i| (i as f32) * 0.5).collect(); // [4, 3]
        let ab = matmul_nt(&a, &b, 3).unwrap();
        for i in 0..2 {
            for j in 0..4 {
                assert_eq!(
                    ab[i * 4 + j],
                    dot(&a[i * 3..i * 3 + 3], &b[j * 3..j * 3 + 3])
                );
            }
        }
        // aᵀ·c with a [2, 3], c [2, 4] → [3, 4]
        let c: Vec<f32> = (0..8).map(|i| i as f32 - 3.0).collect();
        let atc = matmul_tn(&a, 3, &c, 4).unwrap();
        for i in 0..3 {
            for j in 0..4 {
                let want = a[i] * c[j] + a[3 + i] * c[4 + j];
                assert_eq!(atc[i * 4 + j], want);
            }
        }
    }
}
