//! CLIP's pre-LayerNorm transformer encoder (Hugging Face weight names), shared by both towers.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::kernel_path::{fused_cpu_products, product};
use crate::model::layers::{self_attention, softmax, LayerNorm, Linear};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub eps: f32,
}

#[derive(Clone, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    /// q, k, v in one matrix with q pre-scaled by 1/sqrt(head_dim): one GEMM instead of three plus a
    /// scaling pass. Built only for frozen weights (inference); training uses the separate projections.
    fused_qkv: Option<Linear>,
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder, c: &EncoderConfig, frozen: bool) -> Result<Self> {
        let q = Linear::load(vb.pp("q_proj"), c.hidden, c.hidden, true)?;
        let k = Linear::load(vb.pp("k_proj"), c.hidden, c.hidden, true)?;
        let v = Linear::load(vb.pp("v_proj"), c.hidden, c.hidden, true)?;
        let out = Linear::load(vb.pp("out_proj"), c.hidden, c.hidden, true)?;
        let scale = ((c.hidden / c.heads) as f64).powf(-0.5);
        let fused_qkv = if frozen {
            let cat = |f: &dyn Fn(&Linear) -> Result<Tensor>| -> Result<Tensor> {
                Tensor::cat(&[(f(&q)? * scale)?, f(&k)?, f(&v)?], 0)
            };
            let weight = cat(&|l| Ok(l.weight().clone()))?;
            let bias = cat(&|l| Ok(l.bias().expect("q/k/v have biases").clone()))?;
            Some(Linear::new(weight.detach(), Some(bias.detach())))
        } else {
            None
        };
        Ok(Self {
            q,
            k,
            v,
            out,
            fused_qkv,
            heads: c.heads,
        })
    }

    /// `mask`: additive, broadcastable to (batch, heads, tokens, tokens).
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        if train && mask.is_none() && fused_cpu_products(&[x]) {
            // The fused CPU attention reads one q/k/v projection: the three trainable weights are
            // concatenated in the graph (a copy of 3·d² weights, small beside the activations) so that
            // their gradients flow back to each.
            let cat = |f: &dyn Fn(&Linear) -> Result<Tensor>| -> Result<Tensor> {
                Tensor::cat(&[f(&self.q)?, f(&self.k)?, f(&self.v)?], 0)
            };
            let qkv = Linear::new(
                cat(&|l| Ok(l.weight().clone()))?,
                Some(cat(&|l| Ok(l.bias().expect("q/k/v have biases").clone()))?),
            );
            let attn = self_attention(
                &qkv.forward_t(x, true, false)?,
                h,
                (hd as f64).powf(-0.5),
                true,
            )?;
            return self.out.forward_t(&attn, true, false);
        }
        let (q, k, v) = match (&self.fused_qkv, train) {
            (Some(qkv), false) => {
                // (b, t, 3, h, hd) → (3, b, h, t, hd)
                let qkv = qkv
                    .forward_t(x, false, false)?
                    .reshape((b, t, 3, h, hd))?
                    .permute((2, 0, 3, 1, 4))?;
                (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?)
            }
            _ => {
                let scale = (hd as f64).powf(-0.5);
                let split = |l: &Linear| {
                    l.forward_t(x, train, false)?
                        .reshape((b, t, h, hd))?
                        .transpose(1, 2)
                };
                ((split(&self.q)? * scale)?, split(&self.k)?, split(&self.v)?)
            }
        };
        let q = q.contiguous()?.reshape((b * h, t, hd))?;
        let k = k.contiguous()?.reshape((b * h, t, hd))?;
        let v = v.contiguous()?.reshape((b * h, t, hd))?;
        let mut scores = product(&q, &k.t()?, |a, b| a.matmul(b))?;
        if let Some(mask) = mask {
            scores = scores
                .reshape((b, h, t, t))?
                .broadcast_add(mask)?
                .reshape((b * h, t, t))?;
        }
        let attn = product(&softmax(&scores, train)?, &v, |a, b| a.matmul(b))?;
        let attn = attn
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        self.out.forward_t(&attn, train, false)
    }
}

#[derive(Clone, Debug)]
struct Layer {
    attention: Attention,
    norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    norm2: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &EncoderConfig, frozen: bool) -> Result<Self> {
        Ok(Self {
            attention: Attention::load(vb.pp("self_attn"), c, frozen)?,
            norm1: LayerNorm::load(vb.pp("layer_norm1"), c.hidden, c.eps)?,
            fc1: Linear::load(vb.pp("mlp.fc1"), c.hidden, c.intermediate, true)?,
            fc2: Linear::load(vb.pp("mlp.fc2"), c.intermediate, c.hidden, true)?,
            norm2: LayerNorm::load(vb.pp("layer_norm2"), c.hidden, c.eps)?,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let x = (x + self
            .attention
            .forward(&self.norm1.forward(x, train)?, mask, train)?)?;
        let hidden = self
            .fc1
            .forward_t(&self.norm2.forward(&x, train)?, train, true)?;
        x + self.fc2.forward_t(&hidden, train, false)?
    }
}

#[derive(Clone, Debug)]
pub struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    /// `frozen`: the weights will never train, so inference-only fusions may be precomputed.
    pub fn load(vb: VarBuilder, c: &EncoderConfig, frozen: bool) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..c.layers)
            .map(|i| Layer::load(vb.pp(i), c, frozen))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask, train)?;
        }
        Ok(x)
    }
}
