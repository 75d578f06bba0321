//! LayerNorm over the last dimension as one CPU op with a backward pass, for training.
//!
//! candle's differentiable LayerNorm (`layer_norm_slow`) is a chain of ~10 elementary ops (mean, centre,
//! square, mean, add ε, sqrt, divide, scale, shift), each a graph node whose backward allocates a
//! zero-filled full-size gradient and adds to it, and two reductions whose backward broadcasts. Here the
//! forward is one pass per row and the backward one more: the mean and 1/σ of each row are recomputed from
//! the input (the op's argument, alive anyway) rather than saved.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_kernels::{contiguous_f32, dot, sum, tensor_f32, with_simd};
use super::scratch::{written, zeros};

/// Rows per parallel task: enough work per task, several tasks per thread for balance.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(8 * rayon::current_num_threads()).max(1)
}

/// Mean and 1/√(var + ε) of one row (biased variance from the centred values, as PyTorch computes it).
#[inline(always)]
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for i in 0..16 {
            let d = c[i] - mean;
            acc[i] = d.mul_add(d, acc[i]);
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

with_simd!(
/// `y = (x − μ)/σ · w + b` for the rows of `x` (each `w.len()` long).
forward_rows(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], eps: f32) {
    let d = w.len();
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, rstd) = stats(x, eps);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = ((x - mean) * rstd).mul_add(w, b);
        }
    }
});

with_simd!(
/// For the rows of `x` and their output gradient `g`: `dx` (written when given) and the rows'
/// contributions to `dw`, `db` (added). With x̂ = (x − μ)/σ and ĝ = g·w:
/// `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ`, `dw = Σ g·x̂`, `db = Σ g`.
backward_rows(
    x: &[f32],
    g: &[f32],
    w: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    eps: f32
) {
    let d = w.len();
    let mut xhat = vec![0f32; d];
    let n = d as f32;
    let mut dx = dx;
    for (r, (x, g)) in x.chunks_exact(d).zip(g.chunks_exact(d)).enumerate() {
        let (mean, rstd) = stats(x, eps);
        for ((h, &x), (dw, (db, &g))) in xhat
            .iter_mut()
            .zip(x)
            .zip(dw.iter_mut().zip(db.iter_mut().zip(g)))
        {
            *h = (x - mean) * rstd;
            *dw = g.mul_add(*h, *dw);
            *db += g;
        }
        let Some(dx) = dx.as_deref_mut() else {
            continue;
        };
        // mean(ĝ) and mean(ĝ·x̂) without materialising ĝ.
        let gw_mean = dot(g, w) / n;
        let mut acc = [0f32; 16];
        let (gc, wc, hc) = (g.chunks_exact(16), w.chunks_exact(16), xhat.chunks_exact(16));
        let tail: f32 = gc
            .remainder()
            .iter()
            .zip(wc.remainder())
            .zip(hc.remainder())
            .map(|((g, w), h)| g * w * h)
            .sum();
        for ((g, w), h) in gc.zip(wc).zip(hc) {
            for i in 0..16 {
                acc[i] = (g[i] * w[i]).mul_add(h[i], acc[i]);
            }
        }
        let gwh_mean = (acc.iter().sum::<f32>() + tail) / n;
        let row = &mut dx[r * d..][..d];
        for (((dx, &g), &w), &h) in row.iter_mut().zip(g).zip(w).zip(xhat.iter()) {
            *dx = rstd * (g.mul_add(w, -gw_mean) - h * gwh_mean);
        }
    }
});

/// LayerNorm over the last dimension: x (…, d), weight and bias (d).
pub struct LayerNormOp {
    pub eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "vl2v-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            contiguous_f32(xs, xl, self.name())?,
            contiguous_f32(ws, wl, self.name())?,
            contiguous_f32(bs, bl, self.name())?,
        );
        let d = w.len();
        if d == 0 || b.len() != d || xl.shape().dims().last() != Some(&d) {
            candle_core::bail!(
                "layer norm: x {:?}, weight {:?}, bias {:?}",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let task = rows_per_task(x.len() / d) * d;
        let y = written(x.len(), task, |at, y| {
            forward_rows(&x[at], w, b, y, self.eps)
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let grad = grad_res.contiguous()?;
        let want_dx = x.track_op();
        let mut dx = zeros(if want_dx { x.elem_count() } else { 0 });
        let task = rows_per_task(x.elem_count() / d) * d;
        let eps = self.eps;
        // Per task: its rows' dx, and its partial dw and db, summed after.
        let (dw, db) = tensor_f32(x, |xs| {
            tensor_f32(w, |ws| {
                tensor_f32(&grad, |gs| {
                    let partial = |(i, dx): (usize, Option<&mut [f32]>)| {
                        let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
                        let rows = (i * task)..((i + 1) * task).min(xs.len());
                        backward_rows(&xs[rows.clone()], &gs[rows], ws, dx, &mut dw, &mut db, eps);
                        (dw, db)
                    };
                    let sum_pair =
                        |(mut aw, mut ab): (Vec<f32>, Vec<f32>), (bw, bb): (Vec<f32>, Vec<f32>)| {
                            aw.iter_mut().zip(bw).for_each(|(a, b)| *a += b);
                            ab.iter_mut().zip(bb).for_each(|(a, b)| *a += b);
                            (aw, ab)
                        };
                    let zero = || (vec![0f32; d], vec![0f32; d]);
                    Ok(if want_dx {
                        dx.par_chunks_mut(task)
                            .enumerate()
                            .map(|(i, dx)| partial((i, Some(dx))))
                            .reduce(zero, sum_pair)
                    } else {
                        (0..xs.len().div_ceil(task))
                            .into_par_iter()
                            .map(|i| partial((i, None)))
                            .reduce(zero, sum_pair)
                    })
                })
            })
        })?;
        let dev = x.device();
        let dx = want_dx
            .then(|| Tensor::from_vec(dx, x.shape(), dev))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| Tensor::from_vec(dw, w.shape(), dev))
            .transpose()?;
        let db = b
            .track_op()
            .then(|| Tensor::from_vec(db, b.shape(), dev))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

/// LayerNorm of `x` over its last dimension with a backward pass (f32 on the CPU).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(weight, bias, LayerNormOp { eps })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    use crate::model::test_tensors::{max_abs, max_diff};

    /// Values and the three gradients against candle's composite LayerNorm (the generic path), on rows
    /// whose length is and is not a multiple of the vector width, with an offset mean.
    #[test]
    fn matches_the_composite_layer_norm() {
        let dev = Device::Cpu;
        for (rows, d) in [(7, 384), (33, 19), (1, 5)] {
            let x = Var::from_tensor(
                &(Tensor::randn(0f32, 2.0, (rows, d), &dev).unwrap() + 3.0).unwrap(),
            )
            .unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, d, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, d, &dev).unwrap()).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (rows, d), &dev).unwrap();
            let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6).unwrap();
            let theirs =
                candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)
                    .unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5, "values, d = {d}");
            let g1 = (&ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (&theirs * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (what, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                let scale = max_abs(e);
                assert!(
                    max_diff(a, e) <= 1e-5 * scale.max(1.0),
                    "{what} gradient, d = {d}: {}",
                    max_diff(a, e)
                );
            }
        }
    }

    /// The input gradient against central differences of the loss Σ probe·LayerNorm(x) in f64.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let (rows, d) = (3, 10);
        let xv: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7 % 11) as f32 * 0.37).sin())
            .collect();
        let wv: Vec<f32> = (0..d).map(|i| 1.0 + 0.1 * i as f32).collect();
        let bv: Vec<f32> = (0..d).map(|i| 0.05 * i as f32).collect();
        let pv: Vec<f32> = (0..rows * d).map(|i| ((i as f32) * 0.618).cos()).collect();
        let loss = |x: &[f32]| -> f64 {
            let mut total = 0f64;
            for r in 0..rows {
                let row = &x[r * d..][..d];
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                for j in 0..d {
                    let y =
                        (row[j] as f64 - mean) / (var + 1e-5).sqrt() * wv[j] as f64 + bv[j] as f64;
                    total += y * pv[r * d + j] as f64;
                }
            }
            total
        };
        let x = Var::from_vec(xv.clone(), (rows, d), &dev).unwrap();
        let w = Tensor::new(wv.as_slice(), &dev).unwrap();
        let b = Tensor::new(bv.as_slice(), &dev).unwrap();
        let probe = Tensor::from_vec(pv.clone(), (rows, d), &dev).unwrap();
        let y = layer_norm(x.as_tensor(), &w, &b, 1e-5).unwrap();
        let dx = crate::model::test_tensors::probe_gradient(&y, &probe, x.as_tensor());
        let eps = 1e-3f32;
        for i in 0..rows * d {
            let (mut up, mut down) = (xv.clone(), xv.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (loss(&up) - loss(&down)) / (2.0 * eps as f64);
            assert!(
                (dx[i] as f64 - fd).abs() < 2e-3,
                "dx[{i}] = {}, fd {fd}",
                dx[i]
            );
        }
    }
}
