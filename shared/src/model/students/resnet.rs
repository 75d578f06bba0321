//! torchvision's ResNet (v1.5: a Bottleneck's stride sits on its 3×3 convolution) without `fc`, with
//! frozen BatchNorm, under torchvision's weight names (`conv1`, `bn1`, `layer1.0.conv1`, …,
//! `layer2.0.downsample.0/1`), so its ImageNet checkpoints load as they are.
//!
//! Two paths: `train` builds the function from differentiable ops (on CPU, fused ones with their own
//! backward pass: the stem's 3×3/2 max-pool, `model::pool`, since candle 0.11's `max_pool2d` has no backward
//! unless kernel == stride, upstream #1593). Inference folds each BatchNorm into the preceding convolution
//! when the model is loaded frozen.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::batch_norm::{FrozenBatchNorm, BN_EPS};
use crate::model::add_relu::add_relu;
use crate::model::conv::{conv2d_bias_act, Activation};
use crate::model::kernel_path::product;
pub use crate::model::pool::max_pool_3x3_s2_p1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1, 3×3 (strided), 1×1 ×4 (ResNet-50/101/152), expansion 4.
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Stem channels and the first stage's planes (64 in torchvision; stages use 1, 2, 4, 8 times it).
    pub width: usize,
}

impl ResNetConfig {
    pub const RESNET18: Self = Self {
        block: BlockKind::Basic,
        layers: [2, 2, 2, 2],
        width: 64,
    };
    pub const RESNET50: Self = Self {
        block: BlockKind::Bottleneck,
        layers: [3, 4, 6, 3],
        width: 64,
    };

    /// Feature size: the last stage's output channels.
    pub fn dim(&self) -> usize {
        self.width * 8 * self.block.expansion()
    }
}

/// A bias-free convolution followed by frozen BatchNorm.
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor,
    bn: FrozenBatchNorm,
    stride: usize,
    padding: usize,
    /// BatchNorm folded into the convolution (weight·scale, shift): only for frozen weights.
    fused: Option<(Tensor, Tensor)>,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn load(
        conv: VarBuilder,
        bn: VarBuilder,
        stats: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        frozen: bool,
    ) -> Result<Self> {
        let weight = conv.get((c_out, c_in, kernel, kernel), "weight")?;
        let bn = FrozenBatchNorm::load(bn, stats, c_out, BN_EPS)?;
        let fused = if frozen {
            let (scale, shift) = bn.scale_shift()?;
            let w = weight.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
            Some((w.detach(), shift.reshape((1, c_out, 1, 1))?.detach()))
        } else {
            None
        };
        Ok(Self {
            weight,
            bn,
            stride,
            padding: kernel / 2,
            fused,
        })
    }

    /// `act(bn(conv(x)))`.
    fn forward(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        let y = match (&self.fused, train) {
            // Inference with BatchNorm folded: the training path's fused conv + bias + activation op
            // (one GEMM with its output pass; nothing is differentiated through detached weights), which
            // took an erm-ft evaluation of 224 images from ~41 s to ~18 s against candle's conv2d and two
            // more passes over the output.
            (Some((w, b)), false) => {
                let c = w.dim(0)?;
                return conv2d_bias_act(x, w, &b.reshape(c)?, self.stride, self.padding, act);
            }
            // Frozen BatchNorm is an affine map: folded into the weights here too (differentiably), and
            // its shift is the convolution's bias, added with the activation in the GEMM's output pass.
            (_, true) => {
                let (scale, shift) = self.bn.scale_shift()?;
                let c = scale.dim(0)?;
                let w = self.weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
                return conv2d_bias_act(x, &w, &shift, self.stride, self.padding, act);
            }
            (None, false) => {
                let y = product(x, &self.weight, |x, w| {
                    x.conv2d(w, self.padding, self.stride, 1, 1)
                })?;
                self.bn.forward(&y)?
            }
        };
        match act {
            Activation::Identity => Ok(y),
            Activation::Relu => y.relu(),
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    /// conv1/bn1, conv2/bn2 (, conv3/bn3): ReLU between them.
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn load(
        vb: VarBuilder,
        stats: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        stride: usize,
        frozen: bool,
    ) -> Result<Self> {
        let c_out = planes * kind.expansion();
        // (c_in, c_out, kernel, stride) of conv1, conv2, …
        let shapes: Vec<(usize, usize, usize, usize)> = match kind {
            BlockKind::Basic => vec![(c_in, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                (c_in, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, c_out, 1, 1),
            ],
        };
        let convs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(ci, co, k, s))| {
                let (conv, bn) = (format!("conv{}", i + 1), format!("bn{}", i + 1));
                ConvBn::load(
                    vb.pp(&conv),
                    vb.pp(&bn),
                    stats.pp(&bn),
                    ci,
                    co,
                    k,
                    s,
                    frozen,
                )
            })
            .collect::<Result<_>>()?;
        let downsample = if stride != 1 || c_in != c_out {
            let (ds, ds_stats) = (vb.pp("downsample"), stats.pp("downsample"));
            Some(ConvBn::load(
                ds.pp("0"),
                ds.pp("1"),
                ds_stats.pp("1"),
                c_in,
                c_out,
                1,
                stride,
                frozen,
            )?)
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            let act = if i + 1 < self.convs.len() {
                Activation::Relu
            } else {
                Activation::Identity
            };
            y = conv.forward(&y, train, act)?;
        }
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x, train, Activation::Identity)?,
            None => x.clone(),
        };
        add_relu(&y, &identity)
    }
}

#[derive(Clone, Debug)]
pub struct ResNet {
    config: ResNetConfig,
    stem: ConvBn,
    blocks: Vec<Block>,
}

impl ResNet {
    /// Parameters from `vb`, BatchNorm running statistics from `stats` (they never train: pass a
    /// file-backed builder when `vb` is backed by a `VarMap`). `frozen`: the weights will never train, so
    /// BatchNorm is folded into the convolutions for the inference path.
    pub fn load(
        vb: VarBuilder,
        stats: VarBuilder,
        config: &ResNetConfig,
        frozen: bool,
    ) -> Result<Self> {
        let w = config.width;
        let stem = ConvBn::load(
            vb.pp("conv1"),
            vb.pp("bn1"),
            stats.pp("bn1"),
            3,
            w,
            7,
            2,
            frozen,
        )?;
        let mut blocks = Vec::new();
        let mut c_in = w;
        for (stage, &n) in config.layers.iter().enumerate() {
            let planes = w << stage;
            let name = format!("layer{}", stage + 1);
            let (vb, stats) = (vb.pp(&name), stats.pp(&name));
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(Block::load(
                    vb.pp(i),
                    stats.pp(i),
                    config.block,
                    c_in,
                    planes,
                    stride,
                    frozen,
                )?);
                c_in = planes * config.block.expansion();
            }
        }
        Ok(Self {
            config: *config,
            stem,
            blocks,
        })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// (batch, 3, h, w) → globally average-pooled features (batch, dim).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward(x, train, Activation::Relu)?;
        x = max_pool_3x3_s2_p1(&x, train)?;
        for block in &self.blocks {
            x = block.forward(&x, train)?;
        }
        x.mean((2, 3))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    #[test]
    fn differentiable_max_pool_matches_candle_and_passes_gradients() {
        let dev = Device::Cpu;
        for size in [7usize, 8, 13, 16] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, size, size), &dev).unwrap())
                .unwrap();
            let fast = max_pool_3x3_s2_p1(x.as_tensor(), false).unwrap();
            let slow = max_pool_3x3_s2_p1(x.as_tensor(), true).unwrap();
            let out = size.div_ceil(2);
            assert_eq!(slow.dims(), [2, 3, out, out]);
            assert_eq!(fast.dims(), slow.dims());
            let diff = (&fast - &slow)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "size {size}");
            // Each output's gradient lands on exactly one input (no ties in random data): the gradient
            // of the sum counts how many windows chose each input, and sums to the number of outputs.
            let grads = slow.sum_all().unwrap().backward().unwrap();
            let g = grads.get(x.as_tensor()).expect("a gradient for the input");
            let total = g.sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(total as usize, 2 * 3 * out * out);
        }
    }
}
