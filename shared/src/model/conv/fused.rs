//! The fused training convolution: `act(conv(x, w) + bias)` as one CPU op with its own backward pass.
//!
//! Forward, per chunk of images: `im2col` into the K-major column matrix (`columns.rs`), one GEMM
//! `W · colsᵀ`, and one output pass that adds the bias, applies the activation and writes NCHW. Nothing but
//! the output is kept: the ReLU's mask is the output's sign, and the columns are recomputed from the input
//! in the backward pass (the input is alive anyway as the previous layer's output), so the saved activations
//! are PyTorch's, not `k²` times them.
//!
//! Backward, per chunk: one pass masks the output gradient and sums the bias gradient, `dW += g · cols`,
//! and (when the input needs a gradient: not for the stem's pixels) `dcolsᵀ = Wᵀ · g` scattered back by
//! `col2im`.
//!
//! Chunks hold at least [`CHUNK_POSITIONS`] output positions. With at least as many chunks as threads, each
//! thread takes whole chunks with single-threaded GEMMs (each weight gradient a partial sum of its own,
//! added at the end): the long thin products of the early layers run ~1.5-3× faster so than split across
//! threads, and every pass stays in the thread's cache. Fewer chunks (the late layers' small maps: one
//! chunk for the batch) run one after another with the GEMM and the passes split across threads.
//! Per-thread scratch (columns, product, masked gradient) is reused from call to call.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::columns::{col2im_t, for_each_chunk, im2col_t};
use super::Geometry;
use crate::model::cpu_kernels::{contiguous_f32, tensor_f32};
use crate::model::gemm::{gemm, Operand};

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

/// Partial sums a reduction keeps, so that its loop vectorises.
const LANES: usize = 16;

/// `dst = g` where `y > 0` (ReLU's mask; `y = None`: everywhere), returning `Σ dst` (in [`LANES`]
/// partial sums: one running f32 sum cannot be reordered into vector adds).
fn mask_and_sum(dst: &mut [f32], g: &[f32], y: Option<&[f32]>) -> f32 {
    let Some(y) = y else {
        dst.copy_from_slice(g);
        return sum(g);
    };
    let mut acc = [0f32; LANES];
    let n = dst.len() / LANES * LANES;
    for ((d, g), y) in dst[..n]
        .chunks_exact_mut(LANES)
        .zip(g.chunks_exact(LANES))
        .zip(y.chunks_exact(LANES))
    {
        for i in 0..LANES {
            d[i] = if y[i] > 0.0 { g[i] } else { 0.0 };
            acc[i] += d[i];
        }
    }
    for i in n..dst.len() {
        dst[i] = if y[i] > 0.0 { g[i] } else { 0.0 };
        acc[0] += dst[i];
    }
    acc.iter().sum()
}

/// `Σ g`, vectorised as [`mask_and_sum`].
fn sum(g: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let n = g.len() / LANES * LANES;
    for c in g[..n].chunks_exact(LANES) {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + g[n..].iter().sum::<f32>()
}

/// `act(conv(x, w) + bias)`: x `[B, C, H, W]`, w `[C_out, C, k, k]`, bias `[C_out]`.
pub(super) struct ConvBiasAct {
    pub geometry: Geometry,
    pub act: Activation,
}

/// One thread's scratch: a chunk's columns, its product (several images), its masked gradient.
#[derive(Default)]
struct Room {
    cols: Vec<f32>,
    tmp: Vec<f32>,
    gm: Vec<f32>,
}

thread_local! {
    static ROOM: RefCell<Room> = RefCell::default();
}

/// `f` with this thread's [`Room`] (a fresh one if a call further up the stack holds it: rayon may run
/// another convolution on a thread waiting inside one).
fn with_room<R>(f: impl FnOnce(&mut Room) -> R) -> R {
    ROOM.with(|room| match room.try_borrow_mut() {
        Ok(mut room) => f(&mut room),
        Err(_) => f(&mut Room::default()),
    })
}

/// `v[..len]`, grown (never shrunk) to fit.
fn fit(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// How one call walks the batch.
pub(super) struct Plan {
    g: Geometry,
    c_out: usize,
    /// `C·k·k`.
    kk: usize,
    /// Output positions per image.
    l: usize,
    /// Images per chunk.
    per: usize,
    threads: usize,
    /// Whole chunks per thread (see the module's notes).
    split: bool,
}

impl Plan {
    pub(super) fn new(g: Geometry, c_out: usize) -> Self {
        Self::with_threads(g, c_out, candle_core::utils::get_num_threads())
    }

    pub(super) fn with_threads(g: Geometry, c_out: usize, threads: usize) -> Self {
        let (ho, wo) = g.out();
        let l = ho * wo;
        let per = chunk_images(g.batch, l);
        let threads = threads.max(1);
        Self {
            g,
            c_out,
            kk: g.row_len(),
            l,
            per,
            threads,
            split: threads > 1 && g.batch.div_ceil(per) >= threads,
        }
    }

    #[cfg(test)]
    pub(super) fn split(&self) -> bool {
        self.split
    }

    fn in_image(&self) -> usize {
        self.g.channels * self.g.h * self.g.w
    }

    fn out_image(&self) -> usize {
        self.c_out * self.l
    }

    /// `(first image, images)` of each chunk.
    fn chunks(&self) -> Vec<(usize, usize)> {
        (0..self.g.batch)
            .step_by(self.per)
            .map(|b0| (b0, self.per.min(self.g.batch - b0)))
            .collect()
    }

    /// Threads for one chunk's GEMM and passes.
    fn chunk_threads(&self) -> usize {
        if self.split {
            1
        } else {
            self.threads
        }
    }

    /// Chunks per rayon task when split: one run of chunks per thread.
    fn min_len(&self) -> usize {
        self.chunks().len().div_ceil(self.threads)
    }

    /// The columns `[K, n·L]` of `n` images `x`: the input itself for a pointwise convolution of one
    /// image, else im2col'd into `cols`.
    fn columns<'a>(&self, x: &'a [f32], n: usize, cols: &'a mut Vec<f32>, par: bool) -> &'a [f32] {
        let g = &self.g;
        if n == 1 && g.k == 1 && g.stride == 1 && g.padding == 0 {
            return x;
        }
        let cols = fit(cols, self.kk * n * self.l);
        im2col_t(g, x, n, cols, par);
        cols
    }
}

/// Forward over one chunk: `x` its `n` input images, `out` their outputs.
fn forward_chunk(
    p: &Plan,
    act: Activation,
    (x, w, bias): (&[f32], &[f32], &[f32]),
    n: usize,
    out: &mut [f32],
    room: &mut Room,
) {
    let (c_out, kk, l, threads) = (p.c_out, p.kk, p.l, p.chunk_threads());
    let par = threads > 1;
    let rhs = p.columns(x, n, &mut room.cols, par);
    // One image: the product lands in the output itself; several: in `tmp`, `[C_out, n·L]`.
    let dst = if n == 1 {
        &mut *out
    } else {
        fit(&mut room.tmp, c_out * n * l)
    };
    let lhs = Operand {
        data: w,
        row_stride: kk,
        col_stride: 1,
    };
    let rhs = Operand {
        data: rhs,
        row_stride: n * l,
        col_stride: 1,
    };
    gemm(dst, n * l, false, (c_out, n * l, kk), lhs, rhs, threads);
    // One pass: bias, activation, and (for several images) the scatter to NCHW.
    let tmp = &room.tmp;
    for_each_chunk(out, l, par, |ic, row| {
        let (img, co) = (ic / c_out, ic % c_out);
        if n > 1 {
            row.copy_from_slice(&tmp[co * n * l + img * l..][..l]);
        }
        let b = bias[co];
        match act {
            Activation::Identity => row.iter_mut().for_each(|v| *v += b),
            Activation::Relu => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
        }
    });
}

/// The forward pass on slices: the output `[B, C_out, Ho, Wo]`.
pub(super) fn forward(p: &Plan, act: Activation, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let (in_image, out_image) = (p.in_image(), p.out_image());
    let mut out = vec![0f32; p.g.batch * out_image];
    let chunk = |(b0, n): (usize, usize), out: &mut [f32]| {
        let x = &x[b0 * in_image..][..n * in_image];
        with_room(|room| forward_chunk(p, act, (x, w, bias), n, out, room));
    };
    let chunks = p.chunks();
    let outs = out.chunks_mut(p.per * out_image);
    if p.split {
        let outs: Vec<&mut [f32]> = outs.collect();
        chunks
            .into_par_iter()
            .zip(outs)
            .with_min_len(p.min_len())
            .for_each(|(c, out)| chunk(c, out));
    } else {
        chunks
            .into_iter()
            .zip(outs)
            .for_each(|(c, out)| chunk(c, out));
    }
    out
}

/// Backward over one chunk of `n` images (`x`, `y`, `grad`: its inputs, outputs, output gradients):
/// adds to `dw` and `db`, writes `dx` (when wanted).
#[allow(clippy::too_many_arguments)]
fn backward_chunk(
    p: &Plan,
    act: Activation,
    (x, w, y, grad): (&[f32], &[f32], &[f32], &[f32]),
    n: usize,
    (dw, db): (&mut [f32], &mut [f32]),
    dx: Option<&mut [f32]>,
    room: &mut Room,
) {
    let (c_out, kk, l, threads) = (p.c_out, p.kk, p.l, p.chunk_threads());
    let (par, nl, out_image) = (threads > 1, n * l, p.out_image());
    // Mask, gather to [C_out, n·L] and sum the bias gradient: one pass. One image without a mask reads
    // the gradient as it is.
    let gmat: &[f32] = if n > 1 || act == Activation::Relu {
        let gm = fit(&mut room.gm, c_out * nl);
        let sums = |(co, row): (usize, &mut [f32])| -> f32 {
            (0..n)
                .map(|img| {
                    let at = img * out_image + co * l;
                    let mask = (act == Activation::Relu).then(|| &y[at..at + l]);
                    mask_and_sum(&mut row[img * l..][..l], &grad[at..at + l], mask)
                })
                .sum()
        };
        let sums: Vec<f32> = if par {
            gm.par_chunks_mut(nl).enumerate().map(sums).collect()
        } else {
            gm.chunks_mut(nl).enumerate().map(sums).collect()
        };
        db.iter_mut().zip(sums).for_each(|(d, s)| *d += s);
        &room.gm[..c_out * nl]
    } else {
        db.iter_mut()
            .zip(grad.chunks(l))
            .for_each(|(d, row)| *d += sum(row));
        grad
    };
    let g_op = Operand {
        data: gmat,
        row_stride: nl,
        col_stride: 1,
    };
    // dW += g · colsᵀ  ([C_out, n·L] · [n·L, K]).
    let cols = p.columns(x, n, &mut room.cols, par);
    let cols_t = Operand {
        data: cols,
        row_stride: 1,
        col_stride: nl,
    };
    gemm(dw, kk, true, (c_out, kk, nl), g_op, cols_t, threads);
    let Some(dx) = dx else {
        return;
    };
    // dcols = Wᵀ · g  ([K, C_out] · [C_out, n·L]), then back to the pixels.
    let w_t = Operand {
        data: w,
        row_stride: 1,
        col_stride: kk,
    };
    let g = &p.g;
    if n == 1 && g.k == 1 && g.stride == 1 && g.padding == 0 {
        gemm(dx, l, false, (kk, l, c_out), w_t, g_op, threads);
    } else {
        let dcols = fit(&mut room.cols, kk * nl);
        gemm(dcols, nl, false, (kk, nl, c_out), w_t, g_op, threads);
        col2im_t(g, dcols, n, dx, par);
    }
}

/// The backward pass on slices, from the input, weight, output and output gradient: `(dx, dW, db)`, `dx`
/// empty unless `want_dx`.
pub(super) fn backward(
    p: &Plan,
    act: Activation,
    (x, w, y, grad): (&[f32], &[f32], &[f32], &[f32]),
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c_out, kk) = (p.c_out, p.kk);
    let (in_image, out_image) = (p.in_image(), p.out_image());
    let mut dx = vec![0f32; if want_dx { p.g.batch * in_image } else { 0 }];
    let chunk =
        |(b0, n): (usize, usize), dx: Option<&mut [f32]>, dw: &mut [f32], db: &mut [f32]| {
            let x = &x[b0 * in_image..][..n * in_image];
            let (y, grad) = (
                &y[b0 * out_image..][..n * out_image],
                &grad[b0 * out_image..][..n * out_image],
            );
            with_room(|room| backward_chunk(p, act, (x, w, y, grad), n, (dw, db), dx, room));
        };
    let chunks = p.chunks();
    let dxs: Vec<Option<&mut [f32]>> = if want_dx {
        dx.chunks_mut(p.per * in_image).map(Some).collect()
    } else {
        chunks.iter().map(|_| None).collect()
    };
    let zeros = || (vec![0f32; c_out * kk], vec![0f32; c_out]);
    let (dw, db) = if p.split {
        // Each run of chunks sums its own weight and bias gradients; the runs' sums are added.
        chunks
            .into_par_iter()
            .zip(dxs)
            .with_min_len(p.min_len())
            .fold(zeros, |(mut dw, mut db), (c, dx)| {
                chunk(c, dx, &mut dw, &mut db);
                (dw, db)
            })
            .reduce(zeros, |(mut dw, mut db), (dw2, db2)| {
                dw.iter_mut().zip(&dw2).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(&db2).for_each(|(a, b)| *a += b);
                (dw, db)
            })
    } else {
        let (mut dw, mut db) = zeros();
        for (c, dx) in chunks.into_iter().zip(dxs) {
            chunk(c, dx, &mut dw, &mut db);
        }
        (dw, db)
    };
    (dx, dw, db)
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
        let p = Plan::new(g, bias.len());
        if w.len() != p.c_out * p.kk || x.len() != g.batch * p.in_image() {
            candle_core::bail!(
                "conv: x {:?}, w {:?}, bias {:?}",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let out = forward(&p, self.act, x, w, bias);
        let (ho, wo) = g.out();
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, p.c_out, ho, wo)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let p = Plan::new(self.geometry, bias.elem_count());
        let want_dx = x.track_op();
        let grad = grad_res.contiguous()?;
        let (dx, dw, db) = tensor_f32(x, |x| {
            tensor_f32(w, |w| {
                tensor_f32(res, |y| {
                    tensor_f32(&grad, |g| Ok(backward(&p, self.act, (x, w, y, g), want_dx)))
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
        let db = bias
            .track_op()
            .then(|| Tensor::from_vec(db, bias.shape(), dev))
            .transpose()?;
        Ok((dx, dw, db))
    }
}
