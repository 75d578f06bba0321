//! The fused training convolution: `act(conv(x, w) + bias)` as one CPU op with its own backward pass.
//!
//! Forward, per chunk of images: `im2col` into a K-major column matrix `colsᵀ [C·k·k, G·L]` (Caffe's and
//! PyTorch's layout: each row is a contiguous run of output positions, so the copy is a run of row copies),
//! one GEMM `W · colsᵀ`, and one output pass that adds the bias, applies the activation and writes NCHW.
//! Nothing but the output is kept: the ReLU's mask is the output's sign, and the columns are recomputed
//! from the input in the backward pass (the input is alive anyway as the previous layer's output), so the
//! saved activations are PyTorch's, not `k²` times them.
//!
//! Backward, per chunk: one pass masks the output gradient and sums the bias gradient, `dW += g · cols`,
//! and (when the input needs a gradient: not for the stem's pixels) `dcolsᵀ = Wᵀ · g` scattered back by
//! `col2im`.
//!
//! Threads split the batch ([`split`]): each takes a run of images through all of the above with its own
//! one-threaded GEMMs and scratch buffers (`model::scratch`), and only the weight and bias gradients are
//! summed at the end.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::Geometry;
use crate::model::cpu_kernels::{contiguous_f32, sum as sum_f32, tensor_f32};
use crate::model::gemm::{gemm, Operand};
use crate::model::scratch::{with_scratch, zeros};

/// What follows the bias add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
}

/// Output positions a chunk's GEMM should cover at least: below this the products get thin and slow.
const CHUNK_POSITIONS: usize = 3136;

/// Images per chunk: balanced chunks of at least [`CHUNK_POSITIONS`] output positions each.
fn chunk_images(batch: usize, positions: usize) -> usize {
    let chunks = (batch * positions)
        .div_ceil(CHUNK_POSITIONS)
        .clamp(1, batch.max(1));
    batch.div_ceil(chunks).max(1)
}

/// A 1×1 convolution with stride 1 and no padding: its columns are the input itself.
fn is_pointwise(g: &Geometry) -> bool {
    g.k == 1 && g.stride == 1 && g.padding == 0
}

/// For output column `ox` of tap column `j`: the input column is `ox·s + j − p`. The range of `ox` whose
/// input column lies inside `[0, w)`.
fn valid_range(out: usize, n: usize, s: usize, tap: usize, p: usize) -> (usize, usize) {
    // ox·s + tap ≥ p  ⇔  ox ≥ ceil((p − tap) / s)
    let lo = if tap >= p { 0 } else { (p - tap).div_ceil(s) };
    // ox·s + tap − p ≤ n − 1  ⇔  ox ≤ (n − 1 + p − tap) / s
    let hi = if n + p > tap {
        ((n - 1 + p - tap) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `f(index, row)` over the `row_len`-long rows of `data`, on rayon's threads when `parallel`.
fn for_rows(
    data: &mut [f32],
    row_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if parallel {
        data.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    } else {
        data.chunks_mut(row_len)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    }
}

/// `dst = src` for the short runs of im2col (a row of an output map, 7 to 112 floats), inline in blocks of
/// 16: `copy_from_slice` is a call to `memmove` per run, a million calls per ResNet-18 layer-1 convolution.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; 16] = d.try_into().expect("16");
        *d = s.try_into().expect("16");
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `colsᵀ` of images `x[0..images]` (each `[C, H, W]`): row `(c, i, j)`, column `img·L + oy·wo + ox`.
fn im2col_t(g: &Geometry, x: &[f32], images: usize, cols: &mut [f32], parallel: bool) {
    let (ho, wo) = g.out();
    let l = ho * wo;
    let (k, s, p) = (g.k, g.stride, g.padding);
    let plane = g.h * g.w;
    let (ox_lo_hi, oy_lo_hi): (Vec<_>, Vec<_>) = (0..k)
        .map(|t| (valid_range(wo, g.w, s, t, p), valid_range(ho, g.h, s, t, p)))
        .unzip();
    let rows = &mut cols[..g.row_len() * images * l];
    for_rows(rows, images * l, parallel, |r, row| {
        let (c, i, j) = (r / (k * k), r / k % k, r % k);
        let (ox_lo, ox_hi) = ox_lo_hi[j];
        let (oy_lo, oy_hi) = oy_lo_hi[i];
        for img in 0..images {
            let src = &x[(img * g.channels + c) * plane..][..plane];
            let dst = &mut row[img * l..][..l];
            dst[..oy_lo * wo].fill(0.0);
            dst[oy_hi * wo..].fill(0.0);
            for oy in oy_lo..oy_hi {
                let y = oy * s + i - p;
                let out = &mut dst[oy * wo..][..wo];
                out[..ox_lo].fill(0.0);
                out[ox_hi..].fill(0.0);
                if ox_lo >= ox_hi {
                    continue;
                }
                let x0 = ox_lo * s + j - p;
                let src_row = &src[y * g.w..][..g.w];
                if s == 1 {
                    copy_short(&mut out[ox_lo..ox_hi], &src_row[x0..x0 + ox_hi - ox_lo]);
                } else {
                    for (o, v) in out[ox_lo..ox_hi]
                        .iter_mut()
                        .zip(src_row[x0..].iter().step_by(s))
                    {
                        *o = *v;
                    }
                }
            }
        }
    });
}

/// The adjoint of [`im2col_t`]: adds `colsᵀ` back into `dx[0..images]` (zeroed by the caller).
fn col2im_t(g: &Geometry, cols: &[f32], images: usize, dx: &mut [f32], parallel: bool) {
    let (ho, wo) = g.out();
    let l = ho * wo;
    let (k, s, p) = (g.k, g.stride, g.padding);
    let plane = g.h * g.w;
    let (ox_lo_hi, oy_lo_hi): (Vec<_>, Vec<_>) = (0..k)
        .map(|t| (valid_range(wo, g.w, s, t, p), valid_range(ho, g.h, s, t, p)))
        .unzip();
    let row_len = images * l;
    // Plane (img, c) is written by rows (c, ·, ·) only: planes run in parallel.
    let planes = &mut dx[..images * g.channels * plane];
    for_rows(planes, plane, parallel, |ic, dst| {
        let (img, c) = (ic / g.channels, ic % g.channels);
        for (i, &(oy_lo, oy_hi)) in oy_lo_hi.iter().enumerate() {
            for (j, &(ox_lo, ox_hi)) in ox_lo_hi.iter().enumerate() {
                if ox_lo >= ox_hi {
                    continue;
                }
                let r = (c * k + i) * k + j;
                let src = &cols[r * row_len + img * l..][..l];
                for oy in oy_lo..oy_hi {
                    let y = oy * s + i - p;
                    let x0 = ox_lo * s + j - p;
                    let from = &src[oy * wo + ox_lo..oy * wo + ox_hi];
                    let to = &mut dst[y * g.w..][..g.w];
                    if s == 1 {
                        for (d, v) in to[x0..x0 + from.len()].iter_mut().zip(from) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in to[x0..].iter_mut().step_by(s).zip(from) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    });
}

/// How a convolution's batch is spread over `threads`: (images per part, threads per part). With two
/// images or more, each thread takes a run of images through its own im2col, one-threaded GEMMs and
/// output pass, meeting the others only at the end (where the weight gradients are summed), as oneDNN
/// splits over the batch; splitting each GEMM across the threads instead cost a synchronisation per
/// product, a packing pass on one thread while the other waited, and ~20% of a ResNet-18 step in idle
/// and spinning threads. One image spreads its GEMMs and passes over the threads.
fn split(batch: usize, threads: usize) -> (usize, usize) {
    if threads > 1 && batch > 1 {
        (batch.div_ceil(threads.min(batch)), 1)
    } else {
        (batch.max(1), threads)
    }
}

/// The shapes every part of one convolution shares.
#[derive(Clone, Copy)]
struct Plan {
    g: Geometry,
    act: Activation,
    c_out: usize,
    /// GEMM threads of each part (1 when the batch is split over the threads).
    threads: usize,
}

impl Plan {
    fn kk(&self) -> usize {
        self.g.row_len()
    }

    fn l(&self) -> usize {
        let (ho, wo) = self.g.out();
        ho * wo
    }

    fn in_image(&self) -> usize {
        self.g.channels * self.g.h * self.g.w
    }

    /// `act(conv + bias)` of the images in `x` (each `[C, H, W]`) into `out` (each `[C_out, Ho, Wo]`).
    fn forward(&self, x: &[f32], w: &[f32], bias: &[f32], out: &mut [f32]) {
        let (g, c_out, kk, l) = (&self.g, self.c_out, self.kk(), self.l());
        let images = x.len() / self.in_image();
        let per = chunk_images(images, l);
        let direct = per == 1 && is_pointwise(g);
        let cols_len = if direct { 0 } else { kk * per * l };
        let tmp_len = if per == 1 { 0 } else { c_out * per * l };
        let (act, parallel) = (self.act, self.threads > 1);
        // One pass: bias, activation, and (for several images) the scatter to NCHW.
        let epilogue = |co: usize, from: Option<&[f32]>, to: &mut [f32]| {
            let b = bias[co];
            match (act, from) {
                (Activation::Identity, None) => to.iter_mut().for_each(|v| *v += b),
                (Activation::Relu, None) => to.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
                (Activation::Identity, Some(from)) => {
                    to.iter_mut().zip(from).for_each(|(o, v)| *o = v + b)
                }
                (Activation::Relu, Some(from)) => to
                    .iter_mut()
                    .zip(from)
                    .for_each(|(o, v)| *o = (v + b).max(0.0)),
            }
        };
        with_scratch(cols_len + tmp_len, |space| {
            let (cols, tmp) = space.split_at_mut(cols_len);
            for b0 in (0..images).step_by(per) {
                let n = per.min(images - b0);
                let xb = &x[b0 * self.in_image()..][..n * self.in_image()];
                let rhs = if direct {
                    xb
                } else {
                    im2col_t(g, xb, n, cols, parallel);
                    &cols[..kk * n * l]
                };
                let out_chunk = &mut out[b0 * c_out * l..][..n * c_out * l];
                let dst = if per == 1 {
                    &mut *out_chunk
                } else {
                    &mut tmp[..c_out * n * l]
                };
                gemm(
                    dst,
                    n * l,
                    false,
                    (c_out, n * l, kk),
                    Operand::rows(w, kk),
                    Operand::rows(rhs, n * l),
                    self.threads,
                );
                if per == 1 {
                    for_rows(out_chunk, l, parallel, |co, row| epilogue(co, None, row));
                } else {
                    let tmp = &tmp[..c_out * n * l];
                    for_rows(out_chunk, l, parallel, |ic, to| {
                        let (img, co) = (ic / c_out, ic % c_out);
                        epilogue(co, Some(&tmp[co * n * l + img * l..][..l]), to);
                    });
                }
            }
        });
    }

    /// The gradients of the images in `x`, given their outputs `y` and output gradients `gr`: adds into
    /// `dwt` (the weight gradient transposed, `[K, C_out]`) and `db`, writes `dx` (zeroed by the caller)
    /// when it is wanted.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &[f32],
        w: &[f32],
        y: &[f32],
        gr: &[f32],
        mut dx: Option<&mut [f32]>,
        dwt: &mut [f32],
        db: &mut [f32],
    ) {
        let (g, c_out, kk, l) = (&self.g, self.c_out, self.kk(), self.l());
        let in_image = self.in_image();
        let out_image = c_out * l;
        let images = x.len() / in_image;
        let per = chunk_images(images, l);
        let direct = per == 1 && is_pointwise(g);
        // The masked gradient in chunk layout `[C_out, n·L]`; not needed for one image without a mask.
        let copy_grad = per > 1 || self.act == Activation::Relu;
        let cols_len = if direct { 0 } else { kk * per * l };
        let gm_len = if copy_grad { c_out * per * l } else { 0 };
        let (act, threads, parallel) = (self.act, self.threads, self.threads > 1);
        with_scratch(cols_len + gm_len, |space| {
            let (cols, gm) = space.split_at_mut(cols_len);
            for b0 in (0..images).step_by(per) {
                let n = per.min(images - b0);
                let y = &y[b0 * out_image..][..n * out_image];
                let gr = &gr[b0 * out_image..][..n * out_image];
                // Mask, gather to [C_out, n·L] and sum the bias gradient: one pass.
                let gather = |co: usize, row: &mut [f32], db: &mut f32| {
                    let mut sum = 0.0;
                    for img in 0..n {
                        let at = img * out_image + co * l;
                        let (src, ys) = (&gr[at..at + l], &y[at..at + l]);
                        let dst = &mut row[img * l..][..l];
                        if act == Activation::Relu {
                            for ((d, v), o) in dst.iter_mut().zip(src).zip(ys) {
                                *d = if *o > 0.0 { *v } else { 0.0 };
                            }
                        } else {
                            dst.copy_from_slice(src);
                        }
                        // A second, vectorised pass over the row while it is in cache: a running
                        // sum in the loop above is one serial chain of adds.
                        sum += sum_f32(dst);
                    }
                    *db += sum;
                };
                let gmat: &[f32] = if copy_grad {
                    let rows = &mut gm[..c_out * n * l];
                    if parallel {
                        rows.par_chunks_mut(n * l)
                            .zip(db.par_iter_mut())
                            .enumerate()
                            .for_each(|(co, (row, db))| gather(co, row, db));
                    } else {
                        rows.chunks_mut(n * l)
                            .zip(db.iter_mut())
                            .enumerate()
                            .for_each(|(co, (row, db))| gather(co, row, db));
                    }
                    &gm[..c_out * n * l]
                } else {
                    for (db, row) in db.iter_mut().zip(gr.chunks(l)) {
                        *db += sum_f32(row);
                    }
                    gr
                };
                let xb = &x[b0 * in_image..][..n * in_image];
                let colmat = if direct {
                    xb
                } else {
                    im2col_t(g, xb, n, cols, parallel);
                    &cols[..kk * n * l]
                };
                // dWᵀ += cols · gᵀ  ([K, n·L] · [n·L, C_out]). Transposed, because the GEMM then runs
                // with the small C_out as its rows (the `gemm` crate turns a row-major product into a
                // column-major one): single-threaded, layer 1's 576 × 64 × 3136 ran at 61 GFLOP/s as
                // `g · cols` and at 144 this way (128 × 1152 × 784: 131 → 151; the stem: 85 → 123).
                gemm(
                    dwt,
                    c_out,
                    true,
                    (kk, c_out, n * l),
                    Operand::rows(colmat, n * l),
                    Operand::transposed(gmat, n * l),
                    threads,
                );
                let Some(dx) = dx.as_deref_mut() else {
                    continue;
                };
                // dcolsᵀ = Wᵀ · g  ([K, C_out] · [C_out, n·L]), then back to the pixels.
                let dxb = &mut dx[b0 * in_image..][..n * in_image];
                let wt = Operand::transposed(w, kk);
                let gop = Operand::rows(gmat, n * l);
                if direct {
                    gemm(dxb, l, false, (kk, l, c_out), wt, gop, threads);
                } else {
                    let dcols = &mut cols[..kk * n * l];
                    gemm(dcols, n * l, false, (kk, n * l, c_out), wt, gop, threads);
                    col2im_t(g, dcols, n, dxb, parallel);
                }
            }
        });
    }
}

/// `act(conv(x, w) + bias)`: x `[B, C, H, W]`, w `[C_out, C, k, k]`, bias `[C_out]`.
pub(super) struct ConvBiasAct {
    pub geometry: Geometry,
    pub act: Activation,
}

impl CustomOp3 for ConvBiasAct {
    fn name(&self) -> &'static str {
        "vl2v-conv-bias-act"
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
        let g = self.geometry;
        let (x, w, bias) = (
            contiguous_f32(xs, xl, self.name())?,
            contiguous_f32(ws, wl, self.name())?,
            contiguous_f32(bs, bl, self.name())?,
        );
        let c_out = bias.len();
        if w.len() != c_out * g.row_len() || x.len() != g.batch * g.channels * g.h * g.w {
            candle_core::bail!(
                "conv: x {:?}, w {:?}, bias {:?}",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let (part, threads) = split(g.batch, rayon::current_num_threads());
        let plan = Plan {
            g,
            act: self.act,
            c_out,
            threads,
        };
        let (ho, wo) = g.out();
        let out_image = c_out * ho * wo;
        let mut out = zeros(g.batch * out_image);
        out.par_chunks_mut(part * out_image)
            .zip(x.par_chunks(part * plan.in_image()))
            .for_each(|(out, x)| plan.forward(x, w, bias, out));
        Ok((CpuStorage::F32(out), Shape::from((g.batch, c_out, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry;
        let grad = grad_res.contiguous()?;
        let c_out = bias.elem_count();
        let (part, threads) = split(g.batch, rayon::current_num_threads());
        let plan = Plan {
            g,
            act: self.act,
            c_out,
            threads,
        };
        let (in_image, out_image) = (plan.in_image(), c_out * plan.l());
        let want_dx = x.track_op();
        let mut dx = if want_dx {
            zeros(g.batch * in_image)
        } else {
            Vec::new()
        };
        let parts = g.batch.div_ceil(part);
        let dx_parts: Vec<Option<&mut [f32]>> = if want_dx {
            dx.chunks_mut(part * in_image).map(Some).collect()
        } else {
            (0..parts).map(|_| None).collect()
        };
        // Each part's own weight and bias gradients, summed below.
        let sums: Vec<(Vec<f32>, Vec<f32>)> = tensor_f32(x, |x| {
            tensor_f32(w, |w| {
                tensor_f32(res, |y| {
                    tensor_f32(&grad, |gr| {
                        Ok(dx_parts
                            .into_par_iter()
                            .enumerate()
                            .map(|(p, dx)| {
                                let (b0, n) = (p * part, part.min(g.batch - p * part));
                                let mut dwt = vec![0f32; plan.kk() * c_out];
                                let mut db = vec![0f32; c_out];
                                plan.backward(
                                    &x[b0 * in_image..][..n * in_image],
                                    w,
                                    &y[b0 * out_image..][..n * out_image],
                                    &gr[b0 * out_image..][..n * out_image],
                                    dx,
                                    &mut dwt,
                                    &mut db,
                                );
                                (dwt, db)
                            })
                            .collect())
                    })
                })
            })
        })?;
        // dW[co, r] = Σ over the parts of dWᵀ[r, co].
        let kk = plan.kk();
        let mut dw = zeros(c_out * kk);
        // Sixteen output channels at a time: each row of dWᵀ gives one cache line of them.
        const BLOCK: usize = 16;
        dw.par_chunks_mut(BLOCK * kk)
            .enumerate()
            .for_each(|(blk, rows)| {
                let co0 = blk * BLOCK;
                let width = rows.len() / kk;
                for (dwt, _) in &sums {
                    for r in 0..kk {
                        let from = &dwt[r * c_out + co0..][..width];
                        for (i, v) in from.iter().enumerate() {
                            rows[i * kk + r] += v;
                        }
                    }
                }
            });
        let mut db = vec![0f32; c_out];
        for (_, pb) in &sums {
            db.iter_mut().zip(pb).for_each(|(d, p)| *d += p);
        }
        let dev = x.device();
        let dx = if want_dx {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        let dw = w
            .track_op()
            .then(|| Tensor::from_vec(dw, w.shape(), dev))
            .transpose()?;
        let db = bias
            .track_op()
            .then(|| Tensor::from_vec(db, bias.shape(), dev))
            .transpose()?;
        Ok((dx, dw, db))
    }
}
