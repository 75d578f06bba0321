//! CPU kernels where candle's generic ops cost extra passes over memory: a linear layer with its bias (and,
//! for inference, QuickGELU) fused into the GEMM, and softmax, QuickGELU and exact (erf) GELU on a
//! vectorised `exp`. Each has a hand-written backward pass for training (`layers.rs` picks them on the CPU):
//! candle's composite versions cost one graph node per elementary op, and every node's backward allocates
//! and zero-fills a gradient of the full activation before adding to it.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, gemm_new, Operand};
use super::scratch::written;

pub(crate) const CHUNK: usize = 1 << 14;

/// `e^x` in f32, branch-free so loops over it vectorise: range reduction x = n·ln2 + r, a degree-6
/// polynomial for e^r on |r| ≤ ln2/2 (relative error ≈ 2e-7), 2^n through the exponent bits.
///
/// Below −87.3 (e^x under f32's smallest normal, and e^−∞ of a masked score) it is exactly 0, as `exp`
/// is at −∞: a tiny normal there made every masked attention probability ~1e-38, whose gradients are
/// subnormal, and x86 multiplies subnormals ~20× slower (the text tower's backward GEMMs ran 15× slower).
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.7);
    // floor(y + 0.5), not round(): round has no vector instruction and becomes a library call.
    let n = x.mul_add(std::f32::consts::LOG2_E, 0.5).floor();
    let r = n.mul_add(-0.693_145_75, x);
    let r = n.mul_add(-1.428_606_8e-6, r);
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from n's bits: adding 1.5·2²³ puts the integer n in the low mantissa bits (|n| < 2²²), and
    // integer adds and shifts vectorise where `n as i32` (a saturating cast) becomes a scalar loop.
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let y = p * f32::from_bits(n_bits.wrapping_add(127) << 23);
    if underflow {
        0.0
    } else {
        y
    }
}

/// Defines `fn $name(args) body` compiled three times, for AVX-512 and for AVX2 + FMA (the widest the CPU
/// has, picked at run time) and for the baseline, so the element loops vectorise without making the binary
/// x86-64-v3 only. The three are the same source: reductions keep their order in the code (explicit
/// partial sums), so every width gives the same bits. AVX-512 over AVX2: ViT-S/16's training step 1.86 →
/// 1.83 s (four alternating pairs; GELU, LayerNorm, softmax and the sums).
macro_rules! with_simd {
    ($(#[$meta:meta])* $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $body
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $body
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `fast` is compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body
        }
    };
}

pub(crate) use with_simd;

with_simd!(quick_gelu_in_place(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v /= 1.0 + exp_fast(-1.702 * *v);
    }
});

with_simd!(
/// `dx = g · d/dx[x·σ(1.702x)] = g · σ · (1 + 1.702·x·(1 − σ))`, σ recomputed from x.
quick_gelu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        let s = 1.0 / (1.0 + exp_fast(-1.702 * x));
        *d = g * s * (1.0 + 1.702 * x * (1.0 - s));
    }
});

/// erf in f32 without branches (so the loops over it vectorise): Eigen's rational approximation
/// (`generic_fast_erf_float`) on x clamped to [−4, 4], where erf is ±1 to f32 precision beyond.
#[inline(always)]
pub(crate) fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    let p = x2.mul_add(p, -2.101_024e-6);
    let p = x2.mul_add(p, -5.692_506_4e-5);
    let p = x2.mul_add(p, -7.349_906_3e-4);
    let p = x2.mul_add(p, -2.954_6e-3);
    let p = x2.mul_add(p, -1.609_603_3e-2);
    let q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    let q = x2.mul_add(q, -1.682_827e-3);
    let q = x2.mul_add(q, -7.373_329e-3);
    let q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the standard normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

with_simd!(
/// The exact GELU of timm's `nn.GELU()`: x·Φ(x) = x·(1 + erf(x/√2))/2.
gelu_erf_forward(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * x * (1.0 + erf_fast(x * FRAC_1_SQRT_2));
    }
});

with_simd!(
/// `dx = g · (Φ(x) + x·φ(x))`.
gelu_erf_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        let cdf = 0.5 * (1.0 + erf_fast(x * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp_fast(-0.5 * x * x);
        *d = g * x.mul_add(pdf, cdf);
    }
});

with_simd!(softmax_row(row: &mut [f32]) {
    softmax_scaled(row, 1.0);
});

/// `row ← softmax(scale · row)` (scale > 0). The maximum, the exponentials and their sum are separate
/// loops so that each vectorises (a running sum beside the `exp` keeps it scalar).
#[inline(always)]
pub(crate) fn softmax_scaled(row: &mut [f32], scale: f32) {
    let max = max(row);
    for v in row.iter_mut() {
        *v = exp_fast(scale * (*v - max));
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The largest element (−∞ for none; a NaN may or may not win), vectorised as [`dot`].
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let ac = a.chunks_exact(16);
    let tail = ac
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for a in ac {
        for i in 0..16 {
            // A compare and select, which vectorises, where f32::max's NaN rule does not.
            acc[i] = if a[i] > acc[i] { a[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

with_simd!(
/// Softmax's backward for rows of `cols`: `dx = y ⊙ (g − Σ g·y)` per row, from the output `y`.
softmax_backward(y: &[f32], g: &[f32], dx: &mut [f32], cols: usize) {
    for ((y, g), dx) in y.chunks(cols).zip(g.chunks(cols)).zip(dx.chunks_mut(cols)) {
        let dot = dot(y, g);
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
            *d = y * (g - dot);
        }
    }
});

/// Σ a·b with 16 independent partial sums, so that the loop vectorises (an f32 sum in one accumulator
/// may not be reordered by the compiler).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] = a[i].mul_add(b[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a, vectorised as [`dot`].
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ac = a.chunks_exact(16);
    let tail: f32 = ac.remainder().iter().sum();
    for a in ac {
        for i in 0..16 {
            acc[i] += a[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `f(x, g, dx)` over matching chunks of an elementwise op's input, output gradient and input gradient,
/// in parallel: the backward pass of the activations.
pub(crate) fn elementwise_backward(
    x: &Tensor,
    grad: &Tensor,
    f: fn(&[f32], &[f32], &mut [f32]),
) -> Result<Tensor> {
    let grad = grad.contiguous()?;
    let dx = tensor_f32(x, |x| {
        tensor_f32(&grad, |g| {
            Ok(written(x.len(), CHUNK, |at, dx| {
                f(&x[at.clone()], &g[at], dx)
            }))
        })
    })?;
    Tensor::from_vec(dx, x.shape(), x.device())
}

/// The f32 elements of a contiguous CPU storage.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: contiguous input only"),
    }
}

/// Calls `f` with the elements of a contiguous f32 CPU tensor (what a custom op's backward pass reads).
pub(crate) fn tensor_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("a CPU tensor was expected");
    };
    f(contiguous_f32(cpu, layout, "tensor")?)
}

/// QuickGELU, x·σ(1.702x).
pub struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut out = contiguous_f32(storage, layout, self.name())?.to_vec();
        out.par_chunks_mut(CHUNK).for_each(quick_gelu_in_place);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// The input, `x`, is the op's argument and so alive for the backward pass; σ is recomputed from it.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        elementwise_backward(arg, grad_res, quick_gelu_backward).map(Some)
    }
}

/// timm's exact GELU, x·Φ(x).
pub struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let out = written(x.len(), CHUNK, |at, y| gelu_erf_forward(&x[at], y));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        elementwise_backward(arg, grad_res, gelu_erf_backward).map(Some)
    }
}

/// Softmax over the last dimension.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut out = contiguous_f32(storage, layout, self.name())?.to_vec();
        let cols = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let rows_per_chunk = (CHUNK / cols).max(1);
        out.par_chunks_mut(rows_per_chunk * cols)
            .for_each(|chunk| chunk.chunks_mut(cols).for_each(softmax_row));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let cols = res.dims().last().copied().unwrap_or(1).max(1);
        let rows_per_chunk = (CHUNK / cols).max(1);
        let piece = rows_per_chunk * cols;
        let dx = tensor_f32(res, |y| {
            tensor_f32(&grad, |g| {
                Ok(written(y.len(), piece, |at, dx| {
                    softmax_backward(&y[at.clone()], &g[at], dx, cols)
                }))
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, res.shape(), res.device())?))
    }
}

/// `x @ w.T + b`, optionally followed by QuickGELU: x (…, k) (leading dimensions flattened into the
/// product's rows), w (n, k), b (n); the output is (…, n). The output starts as the broadcast bias and the
/// GEMM accumulates into it, saving candle's separate bias pass. Training uses it without QuickGELU
/// (whose backward would need the pre-activation): its backward pass is two GEMMs and one column sum,
/// where candle's matmul + transpose + broadcast-add + reshapes cost a graph node (and a zero-filled
/// gradient) each and reduce the bias gradient over a strided dimension.
pub struct LinearBias {
    pub quick_gelu: bool,
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        let (mut out, shape) = linear_bias_forward(xs, xl, ws, wl, bs, bl)?;
        if self.quick_gelu {
            out.par_chunks_mut(CHUNK).for_each(quick_gelu_in_place);
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.quick_gelu {
            candle_core::bail!("linear-bias: no backward pass through the fused QuickGELU");
        }
        let grad = grad_res.contiguous()?;
        tensor_f32(&grad, |g| linear_bias_backward(x, w, b, g))
    }
}

/// `x @ w.T + b` for x (…, k), w (n, k), b (n): the output (…, n) and its shape.
fn linear_bias_forward(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    bs: &CpuStorage,
    bl: &Layout,
) -> Result<(Vec<f32>, Shape)> {
    let (x, w, b) = (
        contiguous_f32(xs, xl, "linear")?,
        contiguous_f32(ws, wl, "linear")?,
        contiguous_f32(bs, bl, "linear")?,
    );
    let k = xl.shape().dims().last().copied().unwrap_or(0);
    let m = x.len().checked_div(k).unwrap_or(0);
    let (n, k2) = wl.shape().dims2()?;
    if k != k2 || b.len() != n {
        candle_core::bail!(
            "linear: x {:?}, w {:?}, b {:?} do not fit",
            xl.shape(),
            wl.shape(),
            bl.shape()
        );
    }
    let mut out = written(m * n, n.max(1) * (CHUNK / n.max(1)).max(1), |_, rows| {
        rows.chunks_mut(n).for_each(|row| row.copy_from_slice(b))
    });
    // rhs = w.T: element (kk, nn) is w[nn * k + kk].
    gemm(
        &mut out,
        n,
        true,
        (m, n, k),
        Operand::rows(x, k),
        Operand::transposed(w, k),
        candle_core::utils::get_num_threads(),
    );
    let mut dims = xl.shape().dims().to_vec();
    *dims.last_mut().expect("k was read from the last dimension") = n;
    Ok((out, Shape::from(dims)))
}

/// The activations a training linear layer may end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// OpenAI CLIP's x·σ(1.702x).
    QuickGelu,
    /// timm's exact x·Φ(x).
    GeluErf,
}

impl Activation {
    fn forward(self, z: &[f32], y: &mut [f32]) {
        match self {
            Activation::QuickGelu => {
                y.copy_from_slice(z);
                quick_gelu_in_place(y);
            }
            Activation::GeluErf => gelu_erf_forward(z, y),
        }
    }

    fn backward(self) -> fn(&[f32], &[f32], &mut [f32]) {
        match self {
            Activation::QuickGelu => quick_gelu_backward,
            Activation::GeluErf => gelu_erf_backward,
        }
    }
}

/// `act(x @ w.T + b)` for training, shapes as [`LinearBias`]. The pre-activation is kept inside the op for
/// the backward pass rather than being a tensor of the graph: the MLP's widest activation then costs one
/// graph node, not two (each node's backward zero-fills and adds a gradient of its full size), and no
/// separate activation pass reads it back.
pub struct LinearBiasAct {
    act: Activation,
    pre: Mutex<Vec<f32>>,
}

impl LinearBiasAct {
    pub fn new(act: Activation) -> Self {
        Self {
            act,
            pre: Mutex::default(),
        }
    }
}

impl CustomOp3 for LinearBiasAct {
    fn name(&self) -> &'static str {
        "vl2v-linear-bias-act"
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
        let (z, shape) = linear_bias_forward(xs, xl, ws, wl, bs, bl)?;
        let y = written(z.len(), CHUNK, |at, y| self.act.forward(&z[at], y));
        *self.pre.lock().expect("pre-activation") = z;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let z = std::mem::take(&mut *self.pre.lock().expect("pre-activation"));
        if z.len() != res.elem_count() {
            candle_core::bail!("linear-bias-act backward without its forward's pre-activation");
        }
        let grad = grad_res.contiguous()?;
        let backward = self.act.backward();
        let dz = tensor_f32(&grad, |g| {
            Ok(written(z.len(), CHUNK, |at, dz| {
                backward(&z[at.clone()], &g[at], dz)
            }))
        })?;
        drop(z);
        linear_bias_backward(x, w, b, &dz)
    }
}

/// The backward pass of `x @ w.T + b` from the output gradient `g` (…, n): each of dx = g·w, dw = gᵀ·x
/// and db = Σ rows of g where its tensor needs a gradient.
#[allow(clippy::type_complexity)]
fn linear_bias_backward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    g: &[f32],
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k.max(1);
    let threads = candle_core::utils::get_num_threads();
    let dev = x.device();
    // dx = g · w  ([m, n] · [n, k]).
    let dx = x
        .track_op()
        .then(|| {
            let dx = tensor_f32(w, |w| {
                Ok(gemm_new(
                    (m, k, n),
                    Operand::rows(g, n),
                    Operand::rows(w, k),
                    threads,
                ))
            })?;
            Tensor::from_vec(dx, x.shape(), dev)
        })
        .transpose()?;
    // dw = gᵀ · x  ([n, m] · [m, k]).
    let dw = w
        .track_op()
        .then(|| {
            let dw = tensor_f32(&x.contiguous()?, |x| {
                Ok(weight_gradient(g, x, (n, k, m), threads))
            })?;
            Tensor::from_vec(dw, w.shape(), dev)
        })
        .transpose()?;
    let db = b
        .track_op()
        .then(|| Tensor::from_vec(column_sums(g, n), b.shape(), dev))
        .transpose()?;
    Ok((dx, dw, db))
}

/// Rows of the product below which [`weight_gradient`] leaves the split to the GEMM.
const SPLIT_ROWS: usize = 256;

/// `dw = gᵀ · x` for `g: [m, n]`, `x: [m, k]`: with several threads in rayon's pool and many rows (a
/// transformer's tokens), the sum of one-threaded products over one run of rows per thread, in run order.
/// The `gemm` crate's own split of this long, thin product ran at 230–270 GFLOP/s on this machine's two
/// cores for ViT-S/16's four weight shapes over a batch's 3152 tokens, the runs at 270–300 (interleaved
/// measurements of both).
fn weight_gradient(
    g: &[f32],
    x: &[f32],
    (n, k, m): (usize, usize, usize),
    threads: usize,
) -> Vec<f32> {
    let product = |rows: std::ops::Range<usize>, threads: usize| {
        gemm_new(
            (n, k, rows.len()),
            Operand::transposed(&g[rows.start * n..rows.end * n], n),
            Operand::rows(&x[rows.start * k..rows.end * k], k),
            threads,
        )
    };
    let runs = rayon::current_num_threads();
    if runs < 2 || m < runs * SPLIT_ROWS {
        return product(0..m, threads);
    }
    let run = m.div_ceil(runs);
    let mut parts: Vec<Vec<f32>> = (0..runs)
        .into_par_iter()
        .map(|t| product(t * run..((t + 1) * run).min(m), 1))
        .collect();
    let mut dw = parts.remove(0);
    dw.par_chunks_mut(CHUNK).enumerate().for_each(|(i, sum)| {
        for part in &parts {
            add_assign(sum, &part[i * CHUNK..i * CHUNK + sum.len()]);
        }
    });
    dw
}

/// The sums of the columns of a row-major matrix with `cols` columns: per-thread partial sums over
/// blocks of rows (contiguous, vectorised adds), then their total.
pub(crate) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let rows = m.len() / cols.max(1);
    let block = rows.div_ceil(4 * rayon::current_num_threads()).max(1) * cols;
    m.par_chunks(block)
        .map(|rows| {
            let mut acc = vec![0f32; cols];
            for row in rows.chunks_exact(cols) {
                add_assign(&mut acc, row);
            }
            acc
        })
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                add_assign(&mut a, &b);
                a
            },
        )
}

with_simd!(add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a += x;
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate_over_the_range() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp_fast(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "exp({x}) = {got}, want {want}"
            );
        }
        // Exactly 0 where e^x is below f32's smallest normal, as std's exp is at −∞.
        for x in [-87.31, -88.0, -103.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(exp_fast(x), 0.0, "exp({x})");
        }
        assert!(exp_fast(-87.3) >= f32::MIN_POSITIVE);
        assert!(exp_fast(f32::NAN).is_nan());
    }

    /// A causally masked softmax (−∞ above the diagonal, as CLIP's text tower adds) gives exactly 0 where
    /// masked, as candle's composite op, and its backward no subnormal: the text tower's GEMMs multiply
    /// these gradients, and subnormals made them 15× slower.
    #[test]
    fn masked_softmax_is_exactly_zero_and_its_gradient_normal() {
        let dev = candle_core::Device::Cpu;
        let t = 7;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).unwrap();
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 3.0, (t, t), &dev).unwrap())
            .unwrap();
        let p = x
            .as_tensor()
            .broadcast_add(&mask)
            .unwrap()
            .apply_op1(Softmax)
            .unwrap();
        let theirs =
            candle_nn::ops::softmax_last_dim(&x.as_tensor().broadcast_add(&mask).unwrap()).unwrap();
        let (p_v, e_v) = (
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (i, (&a, &e)) in p_v.iter().zip(&e_v).enumerate() {
            if e == 0.0 {
                assert_eq!(a, 0.0, "masked probability {i}");
            } else {
                assert!(
                    (a - e).abs() <= 1e-6 * e.max(1e-3),
                    "probability {i}: {a} vs {e}"
                );
            }
        }
        let probe = Tensor::randn(0f32, 1.0, (t, t), &dev).unwrap();
        let g = crate::model::test_tensors::probe_gradient(&p, &probe, &x);
        assert!(
            g.iter().all(|v| *v == 0.0 || v.is_normal()),
            "subnormal gradient: {g:?}"
        );
    }

    /// erf in f64 from its definition, (2/√π)·∫₀ˣ e^(−t²) dt by Simpson's rule (error far below f32's
    /// resolution): an independent reference for the rational approximation.
    fn erf_reference(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let inner: f64 = (1..n)
            .map(|i| f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
            .sum();
        (f(0.0) + inner + f(x)) * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// erf against the f64 reference over [−6, 6], beyond the clamp included.
    #[test]
    fn erf_fast_is_accurate_over_the_range() {
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let want = erf_reference(x as f64);
            let got = erf_fast(x) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    use crate::model::test_tensors::{max_abs, max_diff, on_pools_of_1_2_3};

    /// Value and input gradient of `ours` against candle's composite op under Σ probe·f(x).
    fn assert_same_op(
        what: &str,
        ours: impl Fn(&Tensor) -> Tensor,
        theirs: impl Fn(&Tensor) -> Tensor,
    ) {
        let dev = candle_core::Device::Cpu;
        // Odd sizes: vector tails, and more than one parallel chunk.
        for dims in [(3, 5, 17), (2, 40, 411)] {
            let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 3.0, dims, &dev).unwrap())
                .unwrap();
            let probe = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
            let (a, e) = (ours(x.as_tensor()), theirs(x.as_tensor()));
            let scale = max_abs(&e);
            assert!(
                max_diff(&a, &e) <= 1e-6 * scale.max(1.0),
                "{what} values {dims:?}"
            );
            let ga = (&a * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let ge = (&e * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (ga, ge) = (ga.get(&x).unwrap(), ge.get(&x).unwrap());
            let scale = max_abs(ge);
            assert!(
                max_diff(ga, ge) <= 1e-5 * scale.max(1.0),
                "{what} gradient {dims:?}: {}",
                max_diff(ga, ge)
            );
        }
    }

    #[test]
    fn activations_and_softmax_match_the_composite_ops() {
        assert_same_op(
            "gelu-erf",
            |x| x.apply_op1(GeluErf).unwrap(),
            |x| x.gelu_erf().unwrap(),
        );
        assert_same_op(
            "quick-gelu",
            |x| x.apply_op1(QuickGelu).unwrap(),
            |x| (x * candle_nn::ops::sigmoid(&(x * 1.702).unwrap()).unwrap()).unwrap(),
        );
        assert_same_op(
            "softmax",
            |x| x.apply_op1(Softmax).unwrap(),
            |x| {
                let max = x.max_keepdim(candle_core::D::Minus1).unwrap();
                let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
                e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1).unwrap())
                    .unwrap()
            },
        );
    }

    /// The training linear layer, bare and with each activation fused, against candle's matmul +
    /// broadcast add (+ the composite activation): values and the gradients of x, w and b; on pools of
    /// one, two and three threads, with enough rows (801) for the weight gradient to be summed over runs
    /// of rows, one per thread (uneven on two).
    #[test]
    fn linear_ops_match_the_composite_layer() {
        on_pools_of_1_2_3(linear_ops_match_the_composite_layer_on_this_pool);
    }

    fn linear_ops_match_the_composite_layer_on_this_pool() {
        let dev = candle_core::Device::Cpu;
        let var = |dims: &[usize], std: f32| {
            candle_core::Var::from_tensor(&Tensor::randn(0f32, std, dims, &dev).unwrap()).unwrap()
        };
        for (lead, k, n) in [
            (vec![2, 7], 19, 33),
            (vec![40, 5], 64, 96),
            (vec![3, 267], 19, 33),
        ] {
            let x = var(&[lead.as_slice(), &[k]].concat(), 1.0);
            let w = var(&[n, k], 0.3);
            let b = var(&[n], 0.5);
            let out_dims = [lead.as_slice(), &[n]].concat();
            let probe = Tensor::randn(0f32, 1.0, out_dims.as_slice(), &dev).unwrap();
            let composite = || {
                x.as_tensor()
                    .broadcast_matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap()
            };
            let quick = |z: Tensor| {
                (&z * candle_nn::ops::sigmoid(&(&z * 1.702).unwrap()).unwrap()).unwrap()
            };
            let cases: [(&str, Tensor, Tensor); 3] = [
                (
                    "linear",
                    x.apply_op3(
                        w.as_tensor(),
                        b.as_tensor(),
                        LinearBias { quick_gelu: false },
                    )
                    .unwrap(),
                    composite(),
                ),
                (
                    "linear + gelu-erf",
                    x.apply_op3(
                        w.as_tensor(),
                        b.as_tensor(),
                        LinearBiasAct::new(Activation::GeluErf),
                    )
                    .unwrap(),
                    composite().gelu_erf().unwrap(),
                ),
                (
                    "linear + quick-gelu",
                    x.apply_op3(
                        w.as_tensor(),
                        b.as_tensor(),
                        LinearBiasAct::new(Activation::QuickGelu),
                    )
                    .unwrap(),
                    quick(composite()),
                ),
            ];
            for (what, ours, theirs) in cases {
                assert_eq!(ours.dims(), theirs.dims());
                let scale = max_abs(&theirs);
                assert!(
                    max_diff(&ours, &theirs) <= 1e-5 * scale.max(1.0),
                    "{what} values"
                );
                let ga = (&ours * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let ge = (&theirs * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                    let (a, e) = (ga.get(v).unwrap(), ge.get(v).unwrap());
                    let scale = max_abs(e);
                    assert!(
                        max_diff(a, e) <= 1e-5 * scale.max(1.0),
                        "{what}: gradient of {name} {:?}: {}",
                        lead,
                        max_diff(a, e)
                    );
                }
            }
        }
    }

    /// The derivatives against central differences of the exact functions in f64 (GELU through the
    /// reference erf), so that the backward formulas do not merely agree with candle's.
    #[test]
    fn activation_gradients_match_finite_differences() {
        let gelu = |x: f64| 0.5 * x * (1.0 + erf_reference(x / std::f64::consts::SQRT_2));
        let quick = |x: f64| x / (1.0 + (-1.702 * x).exp());
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 / 10.0).collect();
        let ones = vec![1f32; xs.len()];
        for (what, f, backward) in [
            (
                "gelu-erf",
                &gelu as &dyn Fn(f64) -> f64,
                gelu_erf_backward as fn(&[f32], &[f32], &mut [f32]),
            ),
            ("quick-gelu", &quick, quick_gelu_backward),
        ] {
            let mut dx = vec![0f32; xs.len()];
            backward(&xs, &ones, &mut dx);
            for (&x, &d) in xs.iter().zip(&dx) {
                let h = 1e-4;
                let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
                assert!((d as f64 - fd).abs() < 1e-5, "{what}'({x}) = {d}, fd {fd}");
            }
        }
        // Softmax: one row, loss Σ probe·softmax(x).
        let x = [0.3f64, -1.2, 2.0, 0.0, 0.7];
        let probe = [0.5f64, -0.25, 1.0, 2.0, -1.0];
        let loss = |x: &[f64]| {
            let z: f64 = x.iter().map(|v| v.exp()).sum();
            x.iter()
                .zip(&probe)
                .map(|(v, p)| v.exp() / z * p)
                .sum::<f64>()
        };
        let mut y: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        softmax_row(&mut y);
        let g: Vec<f32> = probe.iter().map(|&v| v as f32).collect();
        let mut dx = vec![0f32; x.len()];
        softmax_backward(&y, &g, &mut dx, x.len());
        for i in 0..x.len() {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += 1e-5;
            down[i] -= 1e-5;
            let fd = (loss(&up) - loss(&down)) / 2e-5;
            assert!(
                (dx[i] as f64 - fd).abs() < 1e-5,
                "softmax dx[{i}] = {}, fd {fd}",
                dx[i]
            );
        }
    }
}
