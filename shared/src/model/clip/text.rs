//! CLIP's text tower: token and position embeddings, causal encoder, pooled at the end-of-text token.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::encoder::Encoder;
use super::TextConfig;
use crate::model::layers::LayerNorm;

#[derive(Clone, Debug)]
pub struct TextTower {
    tokens: Tensor,
    positions: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
}

impl TextTower {
    pub fn load(vb: VarBuilder, c: &TextConfig, frozen: bool) -> Result<Self> {
        let e = &c.encoder;
        let emb = vb.pp("embeddings");
        Ok(Self {
            tokens: emb.get((c.vocab_size, e.hidden), "token_embedding.weight")?,
            positions: emb.get((c.max_positions, e.hidden), "position_embedding.weight")?,
            encoder: Encoder::load(vb.pp("encoder"), e, frozen)?,
            final_norm: LayerNorm::load(vb.pp("final_layer_norm"), e.hidden, e.eps)?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
    }

    /// `ids`: (batch, tokens) u32; `pool`: for each row, the position of its end-of-text token.
    /// Returns pooled (batch, hidden), before the projection.
    pub fn forward(&self, ids: &Tensor, pool: &[usize], train: bool) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let hidden = self.tokens.dim(1)?;
        let x = self
            .tokens
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, hidden))?;
        let x = x.broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        let mask = causal_mask(t, x.device())?;
        let x = self.encoder.forward(&x, Some(&mask), train)?;
        let x = self.final_norm.forward(&x, train)?;
        let rows = pool
            .iter()
            .enumerate()
            .map(|(i, &p)| x.get(i)?.narrow(0, p, 1))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0)
    }
}

fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, t, t), device)
}
