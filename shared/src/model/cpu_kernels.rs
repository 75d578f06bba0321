//! Inference kernels for the CPU where candle's generic ops cost extra passes over memory: a linear layer
//! with its bias (and optionally QuickGELU) fused into the GEMM, and softmax/QuickGELU on a vectorised
//! `exp`. Forward only: the training path composes differentiable candle ops instead (see `layers.rs`).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, Operand};

const CHUNK: usize = 1 << 14;

/// `e^x` in f32, branch-free so loops over it vectorise: range reduction x = n·ln2 + r, a degree-6
/// polynomial for e^r on |r| ≤ ln2/2 (relative error ≈ 2e-7), 2^n through the exponent bits.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
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
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

macro_rules! with_avx2 {
    ($name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
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

with_avx2!(quick_gelu_in_place(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v /= 1.0 + exp_fast(-1.702 * *v);
    }
});

with_avx2!(softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp_fast(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
});

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
}

/// `x @ w.T + b`, optionally followed by QuickGELU: x (m, k), w (n, k), b (n). The output starts as the
/// broadcast bias and the GEMM accumulates into it, saving candle's separate bias pass.
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
        let (x, w, b) = (
            contiguous_f32(xs, xl, "linear")?,
            contiguous_f32(ws, wl, "linear")?,
            contiguous_f32(bs, bl, "linear")?,
        );
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 || b.len() != n {
            candle_core::bail!(
                "linear: x {:?}, w {:?}, b {:?} do not fit",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let mut out = Vec::with_capacity(m * n);
        for _ in 0..m {
            out.extend_from_slice(b);
        }
        // rhs = w.T: element (kk, nn) is w[nn * k + kk].
        gemm(
            &mut out,
            n,
            true,
            (m, n, k),
            Operand {
                data: x,
                row_stride: k,
                col_stride: 1,
            },
            Operand {
                data: w,
                row_stride: 1,
                col_stride: k,
            },
            candle_core::utils::get_num_threads(),
        );
        if self.quick_gelu {
            out.par_chunks_mut(CHUNK).for_each(quick_gelu_in_place);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

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
        assert_eq!(exp_fast(f32::NEG_INFINITY), exp_fast(-87.3));
    }
}
