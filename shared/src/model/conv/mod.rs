//! Differentiable 2-d convolutions for training on CPU, as im2col and matrix products.
//!
//! candle 0.11 differentiates `conv2d` with `conv_transpose2d` (input gradient) and a `conv2d` whose kernel
//! is the output gradient (weight gradient); on CPU both run as direct loops of dot products, which made a
//! tiny ResNet's training step ~30× slower than its forward pass. Two paths here, both PyTorch's scheme of
//! an explicit `im2col` and GEMMs (`y = W · cols`, `dW = dY · colsᵀ`, `dcols = Wᵀ · dY`, `dx = col2im(dcols)`):
//!
//! - [`conv2d_bias_act`], what ResNet trains with: `act(conv(x, w) + bias)` as one op (`fused.rs`) that
//!   keeps nothing but its output, recomputing the columns in the backward pass.
//! - [`conv2d`]: an `im2col` custom op (whose backward is `col2im`) followed by candle's differentiable
//!   matmul; the fused op's reference in the tests.
//!
//! On other devices (or with the generic path forced: `kernel_path`) candle's own ops are used, through
//! `generic_conv2d`, which routes around a shape bug in candle's conv2d backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel_path::{fused_cpu_products, product};

mod fused;
#[cfg(test)]
mod tests;

pub use fused::Activation;

/// Geometry of one convolution (square kernel, same stride and padding on both axes, no dilation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.padding - self.k) / self.stride + 1,
            (self.w + 2 * self.padding - self.k) / self.stride + 1,
        )
    }

    /// Columns per output position: `channels · k · k`, in the weight's `(c, i, j)` order.
    fn row_len(&self) -> usize {
        self.channels * self.k * self.k
    }

    /// Calls `f(input index within the plane, column index)` for every in-bounds tap of channel plane
    /// `c` of one image; column indices are relative to the image's `[L, K]` block.
    #[inline]
    fn for_each_tap(&self, c: usize, mut f: impl FnMut(usize, usize)) {
        let (ho, wo) = self.out();
        let (k, s, p) = (self.k, self.stride, self.padding);
        let row = self.row_len();
        for i in 0..k {
            for j in 0..k {
                let col = c * k * k + i * k + j;
                for oy in 0..ho {
                    let y = (oy * s + i) as isize - p as isize;
                    if y < 0 || y >= self.h as isize {
                        continue;
                    }
                    for ox in 0..wo {
                        let x = (ox * s + j) as isize - p as isize;
                        if x < 0 || x >= self.w as isize {
                            continue;
                        }
                        f(y as usize * self.w + x as usize, (oy * wo + ox) * row + col);
                    }
                }
            }
        }
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("im2col/col2im need a contiguous input"),
    }
}

/// `[B, C, H, W]` → `[B, L, C·k·k]` (L = output positions), zeros where the window leaves the image.
struct Im2Col(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "vl2v-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout)?;
        let (ho, wo) = g.out();
        let per_image = ho * wo * g.row_len();
        let plane = g.h * g.w;
        let mut cols = vec![0.0f32; g.batch * per_image];
        cols.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(b, out)| {
                for c in 0..g.channels {
                    let src = &x[(b * g.channels + c) * plane..][..plane];
                    g.for_each_tap(c, |at, col| out[col] = src[at]);
                }
            });
        Ok((
            CpuStorage::F32(cols),
            Shape::from((g.batch, ho * wo, g.row_len())),
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?,
        ))
    }
}

/// The adjoint of [`Im2Col`]: `[B, L, C·k·k]` → `[B, C, H, W]`, summing every column that read a pixel.
struct Col2Im(Geometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "vl2v-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = contiguous_f32(storage, layout)?;
        let (ho, wo) = g.out();
        let per_image = ho * wo * g.row_len();
        let plane = g.h * g.w;
        let mut x = vec![0.0f32; g.batch * g.channels * plane];
        // Each (image, channel) plane is written only by its own columns: planes run in parallel.
        x.par_chunks_mut(plane).enumerate().for_each(|(bc, out)| {
            let (b, c) = (bc / g.channels, bc % g.channels);
            let src = &cols[b * per_image..][..per_image];
            g.for_each_tap(c, |at, col| out[at] += src[col]);
        });
        Ok((
            CpuStorage::F32(x),
            Shape::from((g.batch, g.channels, g.h, g.w)),
        ))
    }
}

/// `x: [B, C, H, W]` convolved with `weight: [C_out, C, k, k]` (no bias), as torch's `F.conv2d` with the
/// given stride and padding; differentiable in both arguments.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !super::kernel_path::fused_cpu(&[x, weight]) {
        return generic_conv2d(x, weight, stride, padding);
    }
    let g = geometry(x, weight, stride, padding)?;
    let (batch, c_out) = (g.batch, weight.dim(0)?);
    let (ho, wo) = g.out();
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = product(
        &cols.reshape((batch * ho * wo, g.row_len()))?,
        &weight.reshape((c_out, g.row_len()))?.t()?,
        |a, b| a.matmul(b),
    )?;
    y.reshape((batch, ho * wo, c_out))?
        .transpose(1, 2)?
        .reshape((batch, c_out, ho, wo))
}

/// candle's `conv2d`, made differentiable where its backward is not: candle 0.11 computes the input
/// gradient with `conv_transpose2d` and an output padding taken from the height alone, which fails (or
/// misshapes the gradient) whenever the last window does not end on the last row or column, as in every
/// stride-2 ResNet convolution on odd-sized maps. There the input is padded explicitly and cut to exactly the
/// rows and columns the windows read, so that candle's convolution (padding 0) ends on its last row and
/// column and its backward needs no output padding; `pad_with_zeros` and `narrow` carry their gradients.
fn generic_conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let g = geometry(x, weight, stride, padding)?;
    let (ho, wo) = g.out();
    let (used_h, used_w) = ((ho - 1) * stride + g.k, (wo - 1) * stride + g.k);
    if used_h == g.h + 2 * padding && used_w == g.w + 2 * padding {
        return product(x, weight, |x, w| x.conv2d(w, padding, stride, 1, 1));
    }
    let x = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?
        .narrow(2, 0, used_h)?
        .narrow(3, 0, used_w)?;
    product(&x, weight, |x, w| x.conv2d(w, 0, stride, 1, 1))
}

/// `act(conv(x, w) + bias)` for `x: [B, C, H, W]`, `weight: [C_out, C, k, k]`, `bias: [C_out]`, as torch's
/// `act(F.conv2d(x, weight, bias, stride, padding))`; differentiable in all three. One op on CPU (f32),
/// candle's ops elsewhere.
pub fn conv2d_bias_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> Result<Tensor> {
    let g = geometry(x, weight, stride, padding)?;
    let c_out = weight.dim(0)?;
    if bias.dims() != [c_out] {
        candle_core::bail!("conv2d: bias {:?} for {c_out} channels", bias.dims());
    }
    if !fused_cpu_products(&[x, weight, bias]) {
        let y =
            conv2d(x, weight, stride, padding)?.broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?;
        return match act {
            Activation::Identity => Ok(y),
            Activation::Relu => y.relu(),
        };
    }
    let op = fused::ConvBiasAct { geometry: g, act };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

fn geometry(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Geometry> {
    let (batch, channels, h, w) = x.dims4()?;
    let (_, c_in, k, k2) = weight.dims4()?;
    if c_in != channels || k != k2 || stride == 0 || h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!(
            "conv2d: input {:?}, weight {:?}, stride {stride}, padding {padding}",
            x.dims(),
            weight.dims()
        );
    }
    Ok(Geometry {
        batch,
        channels,
        h,
        w,
        k,
        stride,
        padding,
    })
}
