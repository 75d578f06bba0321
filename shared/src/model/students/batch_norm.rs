//! Frozen BatchNorm (VL2V's `freeze_bn`): always the eval-mode affine map with the running statistics as
//! constants, y = (x − running_mean) / sqrt(running_var + eps) · weight + bias, while `weight` and `bias`
//! still train. Built from differentiable ops only, so gradients reach both.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// torchvision's `BatchNorm2d` default.
pub const BN_EPS: f64 = 1e-5;

#[derive(Clone, Debug)]
pub struct FrozenBatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
}

impl FrozenBatchNorm {
    /// `weight`/`bias` come from `vb` (variables when it is backed by a `VarMap`), the running statistics
    /// from `stats` (a file-backed builder: they must never become variables), detached.
    pub fn load(vb: VarBuilder, stats: VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            running_mean: stats.get(channels, "running_mean")?.detach(),
            running_var: stats.get(channels, "running_var")?.detach(),
            eps,
        })
    }

    /// Per-channel (scale, shift) with y = x·scale + shift; differentiable in `weight` and `bias`.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.weight.div(&(&self.running_var + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - self.running_mean.mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// x: (batch, channels, h, w).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let (scale, shift) = self.scale_shift()?;
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}
