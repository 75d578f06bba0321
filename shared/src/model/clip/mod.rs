//! CLIP in the layout of Hugging Face transformers' `CLIPModel`, so hub checkpoints load by name.
//!
//! Our own implementation rather than candle-transformers': its fused ops have no backward pass (the
//! vision tower must train for VL2V-SD and the demo's teacher), and its layout costs speed on CPU.

mod config;
mod encoder;
mod text;
mod vision;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::{load_clip_config, ClipConfig, Pooling, TextConfig, VisionConfig};
pub use text::TextTower;
pub use vision::VisionTower;

use super::ops::Linear;

#[derive(Clone, Debug)]
pub struct Clip {
    pub config: ClipConfig,
    pub vision: VisionTower,
    pub text: TextTower,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
}

impl Clip {
    /// `frozen`: weights will never train (enables inference-only fusions).
    pub fn load(vb: VarBuilder, config: &ClipConfig, frozen: bool) -> Result<Self> {
        let (v, t) = (&config.vision, &config.text);
        Ok(Self {
            config: config.clone(),
            vision: VisionTower::load(vb.pp("vision_model"), v, frozen)?,
            text: TextTower::load(vb.pp("text_model"), t, frozen)?,
            visual_projection: Linear::load(
                vb.pp("visual_projection"),
                v.encoder.hidden,
                config.projection_dim,
                false,
            )?,
            text_projection: Linear::load(
                vb.pp("text_projection"),
                t.encoder.hidden,
                config.projection_dim,
                false,
            )?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                candle_nn::Init::Const(config.logit_scale_init as f64),
            )?,
        })
    }

    /// Projected, un-normalised image features (batch, projection_dim).
    pub fn image_features(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        self.visual_projection
            .forward(&self.vision.forward(pixels, train)?)
    }

    /// Projected, un-normalised text features (batch, projection_dim) of end-of-text-padded ids.
    /// Rows are padded with `pad` (the end-of-text id): the causal mask hides padding from the pooled
    /// token, so padding to the batch's longest prompt is exact.
    pub fn text_features(&self, ids: &[Vec<u32>], pad: u32, train: bool) -> Result<Tensor> {
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let flat: Vec<u32> = ids
            .iter()
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat(pad)).take(len))
            .collect();
        let pool: Vec<usize> = ids
            .iter()
            .map(|row| self.config.text.pooling.position(row))
            .collect();
        let x = Tensor::from_vec(flat, (ids.len(), len), self.logit_scale.device())?;
        self.text_projection
            .forward(&self.text.forward(&x, &pool, train)?)
    }

    /// The learned temperature, before `exp`.
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }
}
