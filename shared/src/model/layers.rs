//! Building blocks with up to three paths: fused kernels for inference (candle's own fused ops give no
//! backward pass: upstream candle issues #2168, #2977, #3011 for the silent loss of gradients through
//! them), our fused CPU ops with hand-written backward passes for training (`cpu_kernels.rs`,
//! `layer_norm.rs`, `attention.rs`), and compositions of candle's differentiable ops, which is what
//! other devices (and the CPU with the generic path forced, `kernel_path`) run. `train` says whether
//! gradients may be needed.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::kernel_path::{fused_cpu_products, product};
use super::{attention, cpu_kernels, layer_norm};

/// `x @ w.T + b` with any leading dimensions flattened into one matrix product (one large GEMM is much
/// faster on CPU than candle's batched product against a broadcast weight).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((d_out, d_in), "weight")?;
        let bias = if bias {
            Some(vb.get(d_out, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Linear {
    /// With `train` false the CPU path fuses the bias (and `quick_gelu`) into the GEMM; it passes no
    /// gradient, so training must say `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool, quick_gelu: bool) -> Result<Tensor> {
        if let Some(b) = &self.bias {
            if train && fused_cpu_products(&[x, &self.weight, b]) {
                let x = x.contiguous()?;
                return if quick_gelu {
                    let op = cpu_kernels::LinearBiasAct::new(cpu_kernels::Activation::QuickGelu);
                    x.apply_op3(&self.weight, b, op)
                } else {
                    let op = cpu_kernels::LinearBias { quick_gelu: false };
                    x.apply_op3(&self.weight, b, op)
                };
            }
        }
        let dims = x.dims().to_vec();
        let d_in = *dims.last().expect("at least one dimension");
        let rows = x.elem_count() / d_in.max(1);
        let x2 = x.reshape((rows, d_in))?;
        let y = match &self.bias {
            Some(b) if !train && fused_cpu_products(&[x]) => {
                let op = cpu_kernels::LinearBias { quick_gelu };
                x2.contiguous()?.apply_op3_no_bwd(&self.weight, b, &op)?
            }
            bias => {
                let y = product(&x2, &self.weight.t()?, |a, b| a.matmul(b))?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                if quick_gelu {
                    self::quick_gelu(&y, train)?
                } else {
                    y
                }
            }
        };
        let mut out = dims;
        *out.last_mut().expect("at least one dimension") = self.weight.dim(0)?;
        y.reshape(out)
    }
}

impl Linear {
    /// `gelu_erf(x @ w.T + b)` (timm's MLP), the activation fused into the layer on the CPU's training
    /// path.
    pub fn forward_gelu_erf(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(b) = &self.bias {
            if train && fused_cpu_products(&[x, &self.weight, b]) {
                let op = cpu_kernels::LinearBiasAct::new(cpu_kernels::Activation::GeluErf);
                return x.contiguous()?.apply_op3(&self.weight, b, op);
            }
        }
        gelu_erf(&self.forward_t(x, train, false)?, train)
    }
}

/// The differentiable path: safe wherever gradients may be needed.
impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, true, false)
    }
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && cpu_f32(x) {
            layer_norm::layer_norm(x, &self.weight, &self.bias, self.eps)
        } else if train {
            candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor, train: bool) -> Result<Tensor> {
    if train && cpu_f32(x) {
        x.contiguous()?.apply_op1(cpu_kernels::Softmax)
    } else if train {
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    } else if cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&cpu_kernels::Softmax)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// OpenAI CLIP's activation, x·σ(1.702x). On the CPU one op serves inference and training (it records
/// its backward pass only where `x` needs a gradient).
pub fn quick_gelu(x: &Tensor, _train: bool) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(cpu_kernels::QuickGelu)
    } else {
        x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
    }
}

/// The exact GELU, x·Φ(x) (timm's `nn.GELU()`).
pub fn gelu_erf(x: &Tensor, train: bool) -> Result<Tensor> {
    if train && cpu_f32(x) {
        x.contiguous()?.apply_op1(cpu_kernels::GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// Multi-head self-attention `softmax(scale·QKᵀ)·V` of a fused q/k/v projection `(batch, tokens,
/// 3·dim)` (q, k, v each `heads` heads wide, in order) → `(batch, tokens, dim)`, heads interleaved as
/// the output projection reads them.
pub fn self_attention(qkv: &Tensor, heads: usize, scale: f64, train: bool) -> Result<Tensor> {
    if train && fused_cpu_products(&[qkv]) {
        return attention::attention(qkv, heads, scale as f32);
    }
    let (b, t, three_d) = qkv.dims3()?;
    let d = three_d / 3;
    let hd = d / heads;
    // (b, t, 3, h, hd) → (3, b, h, t, hd)
    let qkv = qkv
        .reshape((b, t, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let part = |i: usize| qkv.get(i)?.contiguous()?.reshape((b * heads, t, hd));
    let (mut q, k, v) = (part(0)?, part(1)?, part(2)?);
    if scale != 1.0 {
        q = (q * scale)?;
    }
    let scores = product(&q, &k.t()?, |a, b| a.matmul(b))?;
    product(&softmax(&scores, train)?, &v, |a, b| a.matmul(b))?
        .reshape((b, heads, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, t, d))
}

fn cpu_f32(x: &Tensor) -> bool {
    super::kernel_path::fused_cpu(&[x])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    use crate::model::test_tensors::max_diff;

    #[test]
    fn fused_and_differentiable_paths_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        assert!(max_diff(&softmax(&x, true).unwrap(), &softmax(&x, false).unwrap()) < 1e-6);
        assert!(
            max_diff(
                &quick_gelu(&x, true).unwrap(),
                &quick_gelu(&x, false).unwrap()
            ) < 1e-5
        );
        let vb = candle_nn::VarBuilder::from_tensors(
            [
                (
                    "weight".to_string(),
                    Tensor::randn(1f32, 0.1, 16, &dev).unwrap(),
                ),
                (
                    "bias".to_string(),
                    Tensor::randn(0f32, 0.1, 16, &dev).unwrap(),
                ),
            ]
            .into(),
            candle_core::DType::F32,
            &dev,
        );
        let ln = LayerNorm::load(vb, 16, 1e-5).unwrap();
        assert!(
            max_diff(
                &ln.forward(&x, true).unwrap(),
                &ln.forward(&x, false).unwrap()
            ) < 1e-5
        );
    }

    #[test]
    fn linear_flattens_leading_dimensions() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 3), &dev).unwrap();
        let y = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
        assert_eq!(y.dims(), [2, 5, 4]);
        let expected = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&y, &expected) < 1e-5);
    }
}
