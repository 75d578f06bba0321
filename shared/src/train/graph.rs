//! Differentiable pieces of classification losses as candle graphs of elementary ops (autograd carries the
//! gradient into whatever produced the input): candle's fused softmax has no backward pass.

use anyhow::Result;
use candle_core::{Device, Tensor, D};

/// Rows scaled to unit length, as torch's `F.normalize` (norm clamped below at 1e-12).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// `log softmax` over the last dimension; the row maximum is subtracted as a constant (it cancels in
/// the gradient).
pub fn log_softmax(z: &Tensor) -> Result<Tensor> {
    let max = z.max_keepdim(D::Minus1)?.detach();
    let shifted = z.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// `[B, C]` one-hot rows of `labels`.
pub fn one_hot(labels: &[usize], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0.0f32; labels.len() * classes];
    for (row, &y) in labels.iter().enumerate() {
        v[row * classes + y] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

/// Mean cross-entropy of logits `z: [B, C]` against `labels`.
pub fn cross_entropy(z: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let (_, classes) = z.dims2()?;
    let target = one_hot(labels, classes, z.device())?;
    Ok(((log_softmax(z)? * target)?.sum(D::Minus1)?.mean_all()? * -1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    #[test]
    fn cross_entropy_by_hand() {
        let dev = Device::Cpu;
        let z = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], (2, 3), &dev).unwrap();
        // Row 0, label 2: −log(e³/(e+e²+e³)); row 1, label 0: log 3.
        let want = ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0 + 3f64.ln()) / 2.0;
        let ce = cross_entropy(&z, &[2, 0]).unwrap();
        assert!((scalar(&ce) - want).abs() < 1e-6, "{}", scalar(&ce));
    }

    #[test]
    fn normalize_rows_by_hand() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        let n = normalize_rows(&x).unwrap().flatten_all().unwrap();
        assert_eq!(n.to_vec1::<f32>().unwrap(), [0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn log_softmax_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let z0 = [0.2f32, -0.7, 1.3, 0.4];
        let loss_at = |z: &[f32]| -> (f64, Vec<f32>) {
            let v = Var::from_tensor(&Tensor::from_slice(z, (1, 4), &dev).unwrap()).unwrap();
            let l = cross_entropy(v.as_tensor(), &[2]).unwrap();
            let g = l.backward().unwrap();
            let g = g.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            (scalar(&l), g.to_vec1().unwrap())
        };
        let (_, g) = loss_at(&z0);
        for i in 0..4 {
            let h = 1e-2f32;
            let (mut up, mut down) = (z0, z0);
            up[i] += h;
            down[i] -= h;
            let fd = (loss_at(&up).0 - loss_at(&down).0) / (2.0 * f64::from(h));
            assert!((fd - f64::from(g[i])).abs() < 1e-3, "{i}: {fd} vs {}", g[i]);
        }
    }
}
