//! CLIP's image tower: patch embedding, class token, positions, encoder, pooled CLS token.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::encoder::Encoder;
use super::VisionConfig;
use crate::model::layers::{LayerNorm, Linear};

#[derive(Clone, Debug)]
pub struct VisionTower {
    /// The patch convolution (stride = kernel = patch) as a matrix over flattened patches.
    patch: Linear,
    class_embedding: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    post_norm: LayerNorm,
    patch_size: usize,
    channels: usize,
}

impl VisionTower {
    pub fn load(vb: VarBuilder, c: &VisionConfig, frozen: bool) -> Result<Self> {
        let e = &c.encoder;
        let emb = vb.pp("embeddings");
        let conv = emb.get(
            (e.hidden, c.channels, c.patch_size, c.patch_size),
            "patch_embedding.weight",
        )?;
        let patch = Linear::new(
            conv.reshape((e.hidden, c.channels * c.patch_size * c.patch_size))?,
            None,
        );
        let tokens = (c.image_size / c.patch_size).pow(2) + 1;
        Ok(Self {
            patch,
            class_embedding: emb.get(e.hidden, "class_embedding")?,
            positions: emb.get((tokens, e.hidden), "position_embedding.weight")?,
            pre_norm: LayerNorm::load(vb.pp("pre_layrnorm"), e.hidden, e.eps)?,
            encoder: Encoder::load(vb.pp("encoder"), e, frozen)?,
            post_norm: LayerNorm::load(vb.pp("post_layernorm"), e.hidden, e.eps)?,
            patch_size: c.patch_size,
            channels: c.channels,
        })
    }

    /// (batch, channels, size, size) → pooled (batch, hidden), before the projection.
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        if c != self.channels {
            candle_core::bail!("expected {} channels, got {c}", self.channels);
        }
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        // (b, c, gh, p, gw, p) → (b, gh, gw, c, p, p): each row one patch in the conv weight's order.
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * p * p))?;
        let patches = self.patch.forward(&patches)?;
        let hidden = self.class_embedding.dim(0)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((b, 1, hidden))?;
        let x = Tensor::cat(&[&cls.contiguous()?, &patches], 1)?.broadcast_add(&self.positions)?;
        let x = self.pre_norm.forward(&x, train)?;
        let x = self.encoder.forward(&x, None, train)?;
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.post_norm.forward(&cls, train)
    }
}
