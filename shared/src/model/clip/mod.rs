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

use super::layers::Linear;

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

/// CLIP's image tower with its projection alone: VL2V-SD's student (the text tower never trains and is
/// not loaded), under the same weight names as [`Clip`] so a CLIP checkpoint loads as it is.
#[derive(Clone, Debug)]
pub struct ClipImageEncoder {
    pub vision: VisionTower,
    visual_projection: Linear,
    image_size: usize,
    projection_dim: usize,
}

impl ClipImageEncoder {
    /// `frozen`: weights will never train (enables inference-only fusions).
    pub fn load(vb: VarBuilder, config: &ClipConfig, frozen: bool) -> Result<Self> {
        let v = &config.vision;
        Ok(Self {
            vision: VisionTower::load(vb.pp("vision_model"), v, frozen)?,
            visual_projection: Linear::load(
                vb.pp("visual_projection"),
                v.encoder.hidden,
                config.projection_dim,
                false,
            )?,
            image_size: v.image_size,
            projection_dim: config.projection_dim,
        })
    }

    /// Projected, un-normalised image features (batch, projection_dim), as [`Clip::image_features`].
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        self.visual_projection
            .forward(&self.vision.forward(pixels, train)?)
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    pub fn dim(&self) -> usize {
        self.projection_dim
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::model::load_into_varmap;

    fn tiny() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_clip")
    }

    /// The training path must pass a gradient to every parameter (candle's fused kernels silently pass
    /// none), and compute the same function as the inference path.
    #[test]
    fn every_parameter_gets_a_gradient_and_paths_agree() {
        let dev = Device::Cpu;
        let config = load_clip_config(&tiny().join("config.json")).unwrap();
        let varmap = VarMap::new();
        let model = Clip::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
            &config,
            false,
        )
        .unwrap();
        load_into_varmap(&varmap, &tiny().join("model.safetensors")).unwrap();
        let frozen = {
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(
                    &[tiny().join("model.safetensors")],
                    DType::F32,
                    &dev,
                )
                .unwrap()
            };
            Clip::load(vb, &config, true).unwrap()
        };

        let pixels = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &dev).unwrap();
        let ids = vec![
            vec![49406, 320, 1125, 539, 320, 2368, 49407],
            vec![49406, 2368, 49407],
        ];
        let img = model.image_features(&pixels, true).unwrap();
        let txt = model.text_features(&ids, 49407, true).unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(&img, &frozen.image_features(&pixels, false).unwrap()) < 1e-3);
        assert!(diff(&txt, &frozen.text_features(&ids, 49407, false).unwrap()) < 1e-3);

        let logits = img
            .matmul(&txt.t().unwrap())
            .unwrap()
            .broadcast_mul(&model.logit_scale().exp().unwrap())
            .unwrap();
        let weights = Tensor::randn(0f32, 1.0, logits.dims(), &dev).unwrap();
        let loss = (logits * weights).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        let mut missing = Vec::new();
        for (name, var) in vars.iter() {
            let nonzero = grads
                .get(var.as_tensor())
                .map(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        > 0.0
                })
                .unwrap_or(false);
            if !nonzero {
                missing.push(name.clone());
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "{} of {} parameters get no gradient: {missing:?}",
            missing.len(),
            vars.len()
        );
    }
}
