//! Multi-head self-attention `softmax(s·QKᵀ)·V` as one CPU op with a backward pass, for training.
//!
//! The op reads the fused q/k/v projection `(batch, tokens, 3·dim)` in place (each head's Q, K and V are
//! strided views of it, so no permute or copy) and writes `(batch, tokens, dim)` with the heads already
//! interleaved, as the output projection wants them. candle's composition (permute, three copies, batched
//! matmul, the softmax's five ops, batched matmul, transpose, copy) is a dozen graph nodes, each with a
//! zero-filled gradient in the backward pass.
//!
//! The attention probabilities are not saved: the backward pass recomputes `P = softmax(s·QKᵀ)` per head
//! (one small GEMM and a softmax) and then, with `dO` the output gradient,
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`,
//! so the memory kept per block is the q/k/v projection and the output, as in PyTorch's fused attention.
//! Work runs in parallel over the batch's images, one thread per image and the heads in turn, each
//! product single-threaded.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::cpu_kernels::{contiguous_f32, dot, softmax_scaled, tensor_f32, with_simd};
use super::gemm::{gemm, Operand};
use super::scratch::{with_scratch, written};

/// Attention over `(batch, tokens, 3·dim)` = `[q | k | v]` (heads `dim/heads` wide, in order within each),
/// scores scaled by `scale`.
pub struct Attention {
    pub heads: usize,
    pub scale: f32,
}

/// The geometry of one image's `[q | k | v]` rows.
#[derive(Clone, Copy)]
struct Heads {
    tokens: usize,
    dim: usize,
    head: usize,
    scale: f32,
}

impl Heads {
    /// Head `h` of part `part` (0 = q, 1 = k, 2 = v) as a `[tokens, head]` operand of one image's rows.
    fn part<'a>(&self, qkv: &'a [f32], part: usize, h: usize) -> Operand<'a> {
        Operand::rows(&qkv[part * self.dim + h * self.head..], 3 * self.dim)
    }

    /// The same part transposed, `[head, tokens]`.
    fn part_t<'a>(&self, qkv: &'a [f32], part: usize, h: usize) -> Operand<'a> {
        let m = self.part(qkv, part, h);
        Operand {
            data: m.data,
            row_stride: m.col_stride,
            col_stride: m.row_stride,
        }
    }

    /// `p = softmax(s·Q_h·K_hᵀ)` row by row, `p` being `[tokens, tokens]`.
    fn probabilities(&self, qkv: &[f32], h: usize, p: &mut [f32]) {
        let t = self.tokens;
        gemm(
            p,
            t,
            false,
            (t, t, self.head),
            self.part(qkv, 0, h),
            self.part_t(qkv, 1, h),
            1,
        );
        scaled_softmax_rows(p, t, self.scale);
    }
}

with_simd!(
/// Each row of `rows` (`cols` long) becomes `softmax(scale · row)`.
scaled_softmax_rows(rows: &mut [f32], cols: usize, scale: f32) {
    for row in rows.chunks_exact_mut(cols) {
        softmax_scaled(row, scale);
    }
});

with_simd!(
/// `dp ← scale · p ⊙ (dp − rowsum(dp ⊙ p))` for rows `cols` long: the scores' gradient from the
/// probabilities' (the scale is the one the scores were multiplied by).
softmax_grad_rows(p: &[f32], dp: &mut [f32], cols: usize, scale: f32) {
    for (p, dp) in p.chunks_exact(cols).zip(dp.chunks_exact_mut(cols)) {
        let delta = dot(p, dp);
        for (d, &p) in dp.iter_mut().zip(p) {
            *d = scale * p * (*d - delta);
        }
    }
});

impl Attention {
    fn heads_of(&self, shape: &Shape) -> Result<(usize, Heads)> {
        let (b, t, three_d) = shape.dims3()?;
        let dim = three_d / 3;
        if three_d % 3 != 0 || self.heads == 0 || dim % self.heads != 0 {
            candle_core::bail!("attention: {shape:?} is not (batch, tokens, 3·heads·head_dim)");
        }
        Ok((
            b,
            Heads {
                tokens: t,
                dim,
                head: dim / self.heads,
                scale: self.scale,
            },
        ))
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "vl2v-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, self.name())?;
        let (b, g) = self.heads_of(layout.shape())?;
        let (t, d) = (g.tokens, g.dim);
        // Per image, with this thread's scratch for the probabilities.
        let out = written(b * t * d, t * d, |at, out| {
            // The image's q/k/v rows: three times as wide as its output rows.
            let qkv = &qkv[3 * at.start..3 * at.end];
            with_scratch(t * t, |p| {
                for h in 0..self.heads {
                    g.probabilities(qkv, h, p);
                    // O_h = P·V_h, written into the head's columns of the image's rows.
                    gemm(
                        &mut out[h * g.head..],
                        d,
                        false,
                        (t, g.head, t),
                        Operand::rows(p, t),
                        g.part(qkv, 2, h),
                        1,
                    );
                }
            })
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, g) = self.heads_of(arg.shape())?;
        let (t, d) = (g.tokens, g.dim);
        let grad = grad_res.contiguous()?;
        let dqkv = tensor_f32(arg, |qkv| {
            tensor_f32(&grad, |dout| {
                // Per image, with this thread's scratch for the probabilities and their gradient.
                Ok(written(qkv.len(), t * 3 * d, |at, dqkv| {
                    // The image's output-gradient rows: a third as wide as its q/k/v rows.
                    let dout = &dout[at.start / 3..at.end / 3];
                    let qkv = &qkv[at];
                    with_scratch(2 * t * t, |scratch| {
                        let (p, dp) = scratch.split_at_mut(t * t);
                        for h in 0..self.heads {
                            g.probabilities(qkv, h, p);
                            let p_op = Operand::rows(p, t);
                            let p_t = Operand::transposed(p, t);
                            let dout_h = Operand::rows(&dout[h * g.head..], d);
                            let at = |part: usize| part * d + h * g.head;
                            // dV = Pᵀ·dO.
                            let one = (t, g.head, t);
                            gemm(&mut dqkv[at(2)..], 3 * d, false, one, p_t, dout_h, 1);
                            // dP = dO·Vᵀ, then the scores' gradient in place.
                            let dout_h = Operand::rows(&dout[h * g.head..], d);
                            gemm(dp, t, false, (t, t, g.head), dout_h, g.part_t(qkv, 2, h), 1);
                            softmax_grad_rows(p_op.data, dp, t, g.scale);
                            let ds = Operand::rows(dp, t);
                            let ds_t = Operand::transposed(dp, t);
                            // dQ = dS·K, dK = dSᵀ·Q (the scale is already in dS).
                            gemm(
                                &mut dqkv[at(0)..],
                                3 * d,
                                false,
                                one,
                                ds,
                                g.part(qkv, 1, h),
                                1,
                            );
                            gemm(
                                &mut dqkv[at(1)..],
                                3 * d,
                                false,
                                one,
                                ds_t,
                                g.part(qkv, 0, h),
                                1,
                            );
                        }
                    })
                }))
            })
        })?;
        Ok(Some(Tensor::from_vec(dqkv, arg.shape(), arg.device())?))
    }
}

/// Self-attention of a fused q/k/v projection `(batch, tokens, 3·dim)` → `(batch, tokens, dim)`, with a
/// backward pass (f32 on the CPU).
pub fn attention(qkv: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(Attention { heads, scale })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    use crate::model::test_tensors::{max_abs, max_diff};

    /// The composition the models use on other devices: split, heads to the batch, softmax(s·QKᵀ)·V.
    fn composite(qkv: &Tensor, heads: usize, scale: f64) -> Tensor {
        let (b, t, three_d) = qkv.dims3().unwrap();
        let d = three_d / 3;
        let hd = d / heads;
        let qkv = qkv
            .reshape((b, t, 3, heads, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let part = |i: usize| {
            qkv.get(i)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b * heads, t, hd))
                .unwrap()
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let max = scores.max_keepdim(2).unwrap();
        let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(2).unwrap()).unwrap();
        p.matmul(&v)
            .unwrap()
            .reshape((b, heads, t, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, t, d))
            .unwrap()
    }

    /// Values and the q/k/v gradient against the composition, for several head counts and token counts
    /// (ViT's 197 and odd small ones).
    #[test]
    fn matches_the_composite_attention() {
        let dev = Device::Cpu;
        for (b, t, heads, hd) in [(2, 197, 3, 64), (3, 5, 2, 3), (1, 1, 1, 4)] {
            let d = heads * hd;
            let scale = (hd as f64).powf(-0.5);
            let qkv =
                Var::from_tensor(&Tensor::randn(0f32, 1.5, (b, t, 3 * d), &dev).unwrap()).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
            let ours = attention(qkv.as_tensor(), heads, scale as f32).unwrap();
            let theirs = composite(qkv.as_tensor(), heads, scale);
            assert!(
                max_diff(&ours, &theirs) < 1e-5,
                "values {:?}",
                (b, t, heads)
            );
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
            let (a, e) = (g1.get(&qkv).unwrap(), g2.get(&qkv).unwrap());
            let scale = max_abs(e);
            assert!(
                max_diff(a, e) <= 1e-5 * scale.max(1.0),
                "gradient {:?}: {}",
                (b, t, heads),
                max_diff(a, e)
            );
        }
    }

    /// The q/k/v gradient against central differences of Σ probe·attention, computed in f64 by hand.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let (t, heads, hd) = (4, 2, 3);
        let d = heads * hd;
        let scale = 0.7f32;
        let xv: Vec<f32> = (0..t * 3 * d)
            .map(|i| ((i * 5 % 13) as f32 * 0.41).sin())
            .collect();
        let pv: Vec<f32> = (0..t * d).map(|i| ((i as f32) * 0.618).cos()).collect();
        let loss = |x: &[f32]| -> f64 {
            let at = |tok: usize, part: usize, h: usize, j: usize| {
                x[tok * 3 * d + part * d + h * hd + j] as f64
            };
            let mut total = 0f64;
            for h in 0..heads {
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd)
                                .map(|c| at(i, 0, h, c) * at(j, 1, h, c))
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let o: f64 = (0..t).map(|j| e[j] / z * at(j, 2, h, c)).sum();
                        total += o * pv[i * d + h * hd + c] as f64;
                    }
                }
            }
            total
        };
        let x = Var::from_vec(xv.clone(), (1, t, 3 * d), &dev).unwrap();
        let probe = Tensor::from_vec(pv.clone(), (1, t, d), &dev).unwrap();
        let y = attention(x.as_tensor(), heads, scale).unwrap();
        let dx = crate::model::test_tensors::probe_gradient(&y, &probe, x.as_tensor());
        let eps = 1e-3f32;
        for i in 0..xv.len() {
            let (mut up, mut down) = (xv.clone(), xv.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (loss(&up) - loss(&down)) / (2.0 * eps as f64);
            assert!(
                (dx[i] as f64 - fd).abs() < 1e-3,
                "dqkv[{i}] = {}, fd {fd}",
                dx[i]
            );
        }
    }
}
