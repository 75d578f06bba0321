//! torchvision's `MaxPool2d(kernel_size=3, stride=2, padding=1)` (the ResNet stem's) as one CPU op with a
//! backward pass.
//!
//! candle 0.11's `max_pool2d` has no backward unless kernel == stride (upstream #1593); the composition of
//! nine shifted strided maxima that replaced it (`max_pool_3x3_s2_p1_composed`, still the path on other
//! devices and the tests' reference) costs nine maxima forward and eighteen masks backward. Here the
//! forward pass saves each output's winning tap (one byte) and the backward pass scatters the gradient to
//! it: PyTorch's own scheme, with its tie rule (the first maximum in window order wins).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_kernels::{contiguous_f32, tensor_f32};
use super::scratch::zeros;

/// Output side of a 3×3/2 pool with padding 1.
fn out_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// A pooling candidate against the best so far under PyTorch's rule: a later tap wins
/// when greater, or NaN (so the first maximum wins ties, and NaN propagates).
#[inline]
fn better(best: (f32, u8), v: f32, tap: u8) -> (f32, u8) {
    if v > best.0 || v.is_nan() {
        (v, tap)
    } else {
        best
    }
}

/// One (image, channel) plane: `out[oy·wo + ox]` = the window's maximum, `arg` (when given) its tap
/// `3·dy + dx` (the first in row-major window order on ties). Separable: each row's maximum over its
/// column taps first (the first maximum of the row), then over the rows (the first row that holds the
/// window's maximum), which picks the same tap as a row-major scan of the window, with a third of its
/// comparisons and loops the compiler vectorises.
fn pool_plane(x: &[f32], h: usize, w: usize, out: &mut [f32], mut arg: Option<&mut [u8]>) {
    let (ho, wo) = (out_len(h), out_len(w));
    // Per input row: each output column's best value and its column tap.
    let mut row_best = vec![0f32; h * wo];
    let mut row_tap = vec![0u8; h * wo];
    for y in 0..h {
        let row = &x[y * w..][..w];
        let (best, tap) = (&mut row_best[y * wo..][..wo], &mut row_tap[y * wo..][..wo]);
        // Column 0's window is input columns 0 and 1 (taps 1 and 2): padding never wins.
        let mut b = (row[0], 1u8);
        if w > 1 {
            b = better(b, row[1], 2);
        }
        (best[0], tap[0]) = b;
        for ox in 1..wo {
            let c = 2 * ox - 1;
            let mut b = (row[c], 0u8);
            b = better(b, row[c + 1], 1);
            if c + 2 < w {
                b = better(b, row[c + 2], 2);
            }
            (best[ox], tap[ox]) = b;
        }
    }
    let mut scratch_taps = vec![0u8; if arg.is_some() { 0 } else { wo }];
    for oy in 0..ho {
        // Rows 2·oy − 1 ..= 2·oy + 1, clipped: dy = y + 1 − 2·oy.
        let y0 = (2 * oy).saturating_sub(1);
        let y1 = (2 * oy + 1).min(h - 1);
        let o = &mut out[oy * wo..][..wo];
        // Inference keeps no taps: a row's worth of space to compute them in.
        let taps: &mut [u8] = match arg.as_deref_mut() {
            Some(arg) => &mut arg[oy * wo..][..wo],
            None => &mut scratch_taps,
        };
        let dy0 = (y0 + 1 - 2 * oy) as u8;
        for ((o, t), (&v, &dx)) in o.iter_mut().zip(taps.iter_mut()).zip(
            row_best[y0 * wo..][..wo]
                .iter()
                .zip(&row_tap[y0 * wo..][..wo]),
        ) {
            (*o, *t) = (v, 3 * dy0 + dx);
        }
        for y in y0 + 1..=y1 {
            let dy = (y + 1 - 2 * oy) as u8;
            for ((o, t), (&v, &dx)) in o.iter_mut().zip(taps.iter_mut()).zip(
                row_best[y * wo..][..wo]
                    .iter()
                    .zip(&row_tap[y * wo..][..wo]),
            ) {
                (*o, *t) = better((*o, *t), v, 3 * dy + dx);
            }
        }
    }
}

/// The pooling op; with `save` its winning taps are kept for the backward pass.
struct MaxPool3x3S2 {
    save: bool,
    taps: Mutex<Vec<u8>>,
}

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "vl2v-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        if h == 0 || w == 0 {
            candle_core::bail!("max-pool: empty plane {:?}", layout.shape());
        }
        let (ho, wo) = (out_len(h), out_len(w));
        let mut out = zeros(b * c * ho * wo);
        if self.save {
            let mut taps = vec![0u8; out.len()];
            x.par_chunks(h * w)
                .zip(out.par_chunks_mut(ho * wo))
                .zip(taps.par_chunks_mut(ho * wo))
                .for_each(|((x, out), arg)| pool_plane(x, h, w, out, Some(arg)));
            *self.taps.lock().expect("max-pool taps") = taps;
        } else {
            x.par_chunks(h * w)
                .zip(out.par_chunks_mut(ho * wo))
                .for_each(|(x, out)| pool_plane(x, h, w, out, None));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let (ho, wo) = (out_len(h), out_len(w));
        let taps = self.taps.lock().expect("max-pool taps");
        if taps.len() != b * c * ho * wo {
            candle_core::bail!("max-pool backward without its forward's taps");
        }
        let grad = grad_res.contiguous()?;
        let mut dx = zeros(b * c * h * w);
        tensor_f32(&grad, |g| {
            dx.par_chunks_mut(h * w)
                .zip(g.par_chunks(ho * wo))
                .zip(taps.par_chunks(ho * wo))
                .for_each(|((dx, g), taps)| {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let t = taps[oy * wo + ox] as usize;
                            // The tap's input position; padding never wins, so it is inside.
                            let y = 2 * oy + t / 3 - 1;
                            let x = 2 * ox + t % 3 - 1;
                            dx[y * w + x] += g[oy * wo + ox];
                        }
                    }
                });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), arg.device())?))
    }
}

/// torchvision's `MaxPool2d(kernel_size=3, stride=2, padding=1)` on (batch, channels, h, w). `train`:
/// differentiable (on CPU by the saved taps, elsewhere by the composition of maxima).
pub fn max_pool_3x3_s2_p1(x: &Tensor, train: bool) -> Result<Tensor> {
    if !super::kernel_path::fused_cpu(&[x]) {
        return max_pool_3x3_s2_p1_composed(x, train);
    }
    let op = MaxPool3x3S2 {
        save: train,
        taps: Mutex::new(Vec::new()),
    };
    let x = x.contiguous()?;
    if train {
        x.apply_op1(op)
    } else {
        x.apply_op1_no_bwd(&op)
    }
}

/// Pads the last two dimensions of (batch, channels, h, w) with −∞: `before` rows/columns in front, `after`
/// behind.
fn pad_neg_inf(x: &Tensor, before: usize, after: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| {
        Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(
        &[fill((b, c, before, w))?, x.clone(), fill((b, c, after, w))?],
        2,
    )?;
    let hp = h + before + after;
    Tensor::cat(&[fill((b, c, hp, before))?, x, fill((b, c, hp, after))?], 3)
}

/// The same pool from candle's ops: its pooling kernel for inference, and for training the maximum over the
/// 9 shifted strided views of a −∞-padded input (differentiable, as candle's own pool is not).
pub fn max_pool_3x3_s2_p1_composed(x: &Tensor, train: bool) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if !train {
        return pad_neg_inf(x, 1, 1)?.max_pool2d_with_stride(3, 2);
    }
    let (ho, wo) = (out_len(h), out_len(w));
    // One extra −∞ row/column behind, so that every shifted view of length 2·out fits.
    let xp = pad_neg_inf(x, 1, 2)?;
    let wp = w + 3;
    let mut out: Option<Tensor> = None;
    for di in 0..3 {
        // Rows di, di+2, …: take every other row of a 2·ho window.
        let rows = xp
            .narrow(2, di, 2 * ho)?
            .reshape((b, c, ho, 2, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dj in 0..3 {
            let view = rows
                .narrow(3, dj, 2 * wo)?
                .reshape((b, c, ho, wo, 2))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                Some(m) => m.maximum(&view)?,
                None => view,
            });
        }
    }
    Ok(out.expect("nine views"))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    use crate::model::test_tensors::max_diff;

    /// Values (both paths) and gradients (training path) equal the composition of maxima's, on odd and
    /// even sides, and on a ReLU's output (ties at zero: the ReLU's mask removes the gradient either way).
    #[test]
    fn op_matches_the_composition_of_maxima() {
        let dev = Device::Cpu;
        for (size, relu) in [
            (7usize, false),
            (8, false),
            (13, true),
            (16, true),
            (1, false),
        ] {
            let x0 = Tensor::randn(0f32, 1.0, (2, 3, size, size + 1), &dev).unwrap();
            let x = Var::from_tensor(&x0).unwrap();
            let input = |x: &Tensor| if relu { x.relu().unwrap() } else { x.clone() };
            let r = Tensor::randn(
                0f32,
                1.0,
                (2, 3, size.div_ceil(2), (size + 1).div_ceil(2)),
                &dev,
            )
            .unwrap();
            let mut grads = Vec::new();
            for (ours, train) in [(true, true), (false, true), (true, false), (false, false)] {
                let y = if ours {
                    max_pool_3x3_s2_p1(&input(x.as_tensor()), train).unwrap()
                } else {
                    max_pool_3x3_s2_p1_composed(&input(x.as_tensor()), train).unwrap()
                };
                assert_eq!(y.dims(), r.dims());
                grads.push(y.clone());
                if train {
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    grads.push(g.get(x.as_tensor()).unwrap().clone());
                }
            }
            // [ours y, ours dx, composed y, composed dx, ours eval y, composed eval y]
            assert_eq!(max_diff(&grads[0], &grads[2]), 0.0, "size {size}");
            assert_eq!(max_diff(&grads[0], &grads[4]), 0.0, "size {size}");
            assert_eq!(max_diff(&grads[0], &grads[5]), 0.0, "size {size}");
            assert!(max_diff(&grads[1], &grads[3]) < 1e-6, "size {size}");
        }
    }

    /// Ties go to the first maximum in window order, as in PyTorch; NaN propagates.
    #[test]
    fn ties_go_to_the_first_maximum() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &dev).unwrap())
                .unwrap();
        let y = max_pool_3x3_s2_p1(x.as_tensor(), true).unwrap();
        // Each window's first in-bounds element wins; PyTorch's gradient, from
        // `F.max_pool2d(torch.ones(1, 1, 3, 3), 3, 2, 1).sum().backward()` and the same on 4×5.
        let g = y.sum_all().unwrap().backward().unwrap();
        let dx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(dx, [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let x =
            Var::from_tensor(&Tensor::ones((1, 1, 4, 5), candle_core::DType::F32, &dev).unwrap())
                .unwrap();
        let g = max_pool_3x3_s2_p1(x.as_tensor(), true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        assert_eq!(dx[..10], want);
        assert!(dx[10..].iter().all(|&v| v == 0.0));
        let mut v = vec![0f32; 9];
        v[4] = f32::NAN;
        let x = Tensor::from_vec(v, (1, 1, 3, 3), &dev).unwrap();
        let y = max_pool_3x3_s2_p1(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert!(y.to_vec1::<f32>().unwrap().iter().all(|v| v.is_nan()));
    }

    /// Finite differences of a smooth probe of the output.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let x0: Vec<f32> = (0..2 * 5 * 6)
            .map(|i| ((i * 37 % 29) as f32 * 0.37).sin())
            .collect();
        let r = Tensor::randn(0f32, 1.0, (1, 2, 3, 3), &dev).unwrap();
        let loss = |v: &[f32]| {
            let x = Tensor::from_vec(v.to_vec(), (1, 2, 5, 6), &dev).unwrap();
            (max_pool_3x3_s2_p1(&x, false).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let x =
            Var::from_tensor(&Tensor::from_vec(x0.clone(), (1, 2, 5, 6), &dev).unwrap()).unwrap();
        let y = max_pool_3x3_s2_p1(x.as_tensor(), true).unwrap();
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let eps = 1e-3;
        for i in 0..x0.len() {
            let (mut up, mut down) = (x0.clone(), x0.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (loss(&up) - loss(&down)) / (2.0 * eps);
            assert!((fd - dx[i]).abs() < 1e-2, "input {i}: {fd} vs {}", dx[i]);
        }
    }
}
