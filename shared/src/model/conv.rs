//! A differentiable 2-d convolution whose backward pass is two matrix products, for training on CPU.
//!
//! candle 0.11 differentiates `conv2d` with `conv_transpose2d` (input gradient) and a `conv2d` whose kernel
//! is the output gradient (weight gradient); on CPU both run as direct loops of dot products, which made a
//! tiny ResNet's training step ~30× slower than its forward pass. Here the convolution is an explicit
//! `im2col` (a custom op whose backward is `col2im`) followed by a matrix product, which candle
//! differentiates with its GEMM: `y = cols · Wᵀ`, `dW = dYᵀ · cols`, `dcols = dY · W`, `dx = col2im(dcols)`.
//! This is how PyTorch's CPU convolution backward works too. On other devices candle's own op is used.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of one convolution (square kernel, same stride and padding on both axes, no dilation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
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
    if !x.device().is_cpu() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let (batch, channels, h, w) = x.dims4()?;
    let (c_out, c_in, k, k2) = weight.dims4()?;
    if c_in != channels || k != k2 {
        candle_core::bail!(
            "conv2d: input has {channels} channels, weight {:?}",
            weight.dims()
        );
    }
    let g = Geometry {
        batch,
        channels,
        h,
        w,
        k,
        stride,
        padding,
    };
    let (ho, wo) = g.out();
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = cols
        .reshape((batch * ho * wo, g.row_len()))?
        .matmul(&weight.reshape((c_out, g.row_len()))?.t()?)?;
    y.reshape((batch, ho * wo, c_out))?
        .transpose(1, 2)?
        .reshape((batch, c_out, ho, wo))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Same values and gradients as candle's own conv2d (whose backward is correct, only slow).
    #[test]
    fn matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        for (c, h, w, cout, k, stride, padding) in [
            (3, 9, 7, 4, 3, 1, 1),
            (3, 11, 10, 5, 7, 2, 3),
            (4, 8, 8, 6, 1, 2, 0),
            (2, 6, 5, 3, 3, 2, 1),
        ] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1.0, (cout, c, k, k), &dev).unwrap())
                .unwrap();
            let ours = conv2d(x.as_tensor(), wt.as_tensor(), stride, padding).unwrap();
            let theirs = x
                .as_tensor()
                .conv2d(wt.as_tensor(), padding, stride, 1, 1)
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs) < 1e-4);
            let r = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();

            // The input gradient is col2im, the adjoint of im2col: <im2col(x), C> = <x, col2im(C)>.
            let g = Geometry {
                batch: 2,
                channels: c,
                h,
                w,
                k,
                stride,
                padding,
            };
            let cols = x.as_tensor().apply_op1_no_bwd(&Im2Col(g)).unwrap();
            let probe = Tensor::randn(0f32, 1.0, cols.dims(), &dev).unwrap();
            let back = probe.apply_op1_no_bwd(&Col2Im(g)).unwrap();
            let lhs = (&cols * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rhs = (x.as_tensor() * &back)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );

            // candle's own backward fails when the window does not end on the last row or column
            // (conv_transpose2d without output padding); compare where it works.
            let Ok(g2) = (&theirs * &r).unwrap().sum_all().unwrap().backward() else {
                assert!((h + 2 * padding - k) % stride != 0 || (w + 2 * padding - k) % stride != 0);
                continue;
            };
            for v in [&x, &wt] {
                let (a, b) = (
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                assert!(max_diff(a, b) < 1e-3, "{:?}", (c, h, w, k, stride));
            }
        }
    }
}
