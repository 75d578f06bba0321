//! The CLIP teacher: image and text towers with projection, outputs L2-normalised.

use candle_core::{DType, Device, Tensor, D};
use tokenizers::Tokenizer;

use super::clip::{load_clip_config, Clip, ClipConfig};
use super::{mmap_weights, weights_error, ModelError, ModelFiles};

pub struct ClipTeacher {
    model: Clip,
    config: ClipConfig,
    tokenizer: Tokenizer,
    end_of_text: u32,
    logit_scale: f32,
    device: Device,
}

fn candle_err(e: candle_core::Error) -> ModelError {
    ModelError::Compute(e.to_string())
}

impl ClipTeacher {
    /// Loads weights memory-mapped (plain tensors, no autograd) for inference.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, ModelError> {
        let config_path = files.config.as_ref().ok_or_else(|| ModelError::Config {
            path: files.weights.clone(),
            reason: "a CLIP teacher needs config.json next to it".into(),
        })?;
        let config = load_clip_config(config_path)?;
        let tokenizer_path = files.tokenizer.as_ref().ok_or_else(|| ModelError::Config {
            path: config_path.clone(),
            reason: "a CLIP teacher needs tokenizer.json next to it".into(),
        })?;
        let tokenizer = Tokenizer::from_file(tokenizer_path).map_err(|e| ModelError::Config {
            path: tokenizer_path.clone(),
            reason: e.to_string(),
        })?;
        let end_of_text =
            tokenizer
                .token_to_id("<|endoftext|>")
                .ok_or_else(|| ModelError::Config {
                    path: tokenizer_path.clone(),
                    reason: "no <|endoftext|> token: not a CLIP tokenizer".into(),
                })?;
        let weights_err = |e| weights_error(&files.weights, e);
        let vb = mmap_weights(&files.weights, device)?;
        let model = Clip::load(vb, &config, true).map_err(weights_err)?;
        let logit_scale = model
            .logit_scale()
            .to_scalar::<f32>()
            .map_err(weights_err)?
            .exp();
        Ok(Self {
            model,
            config,
            tokenizer,
            end_of_text,
            logit_scale,
            device: device.clone(),
        })
    }

    pub fn image_size(&self) -> usize {
        self.config.vision.image_size
    }

    pub fn embedding_dim(&self) -> usize {
        self.config.projection_dim
    }

    /// exp(logit_scale): 100 for OpenAI CLIP.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    pub fn architecture(&self) -> String {
        let (v, t) = (&self.config.vision, &self.config.text);
        format!(
            "CLIP vision width {} × {} layers, patch {}, image {}; text width {} × {} layers; projection {}",
            v.encoder.hidden, v.encoder.layers, v.patch_size, v.image_size, t.encoder.hidden, t.encoder.layers,
            self.config.projection_dim
        )
    }

    /// Embeds `n` preprocessed images given as one CHW f32 buffer of `n * 3 * size * size` values.
    pub fn embed_images(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let size = self.image_size();
        let x = Tensor::from_slice(pixels, (n, 3, size, size), &self.device).map_err(candle_err)?;
        let features = self.model.image_features(&x, false).map_err(candle_err)?;
        normalised_rows(&features)
    }

    /// Token ids of each prompt, with start and end of text, as Hugging Face's CLIP tokenizer gives them.
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| ModelError::Compute(format!("cannot tokenize '{prompt}': {e}")))?;
        let ids = encoding.get_ids().to_vec();
        let max = self.config.text.max_positions;
        if ids.len() > max {
            return Err(ModelError::PromptTooLong {
                prompt: prompt.to_string(),
                tokens: ids.len(),
                max,
            });
        }
        Ok(ids)
    }

    /// Embeds prompts in batches padded with end-of-text to the longest prompt of the batch: pooling takes
    /// the end-of-text token and the causal mask hides the padding, so this is exact.
    pub fn embed_texts(
        &self,
        prompts: &[String],
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|p| self.tokenize(p))
                .collect::<Result<Vec<_>, _>>()?;
            let features = self
                .model
                .text_features(&ids, self.end_of_text, false)
                .map_err(candle_err)?;
            out.extend(normalised_rows(&features)?);
        }
        Ok(out)
    }
}

fn normalised_rows(features: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
    let norm = features
        .sqr()
        .and_then(|s| s.sum_keepdim(D::Minus1))
        .and_then(|s| s.sqrt())
        .map_err(candle_err)?;
    features
        .broadcast_div(&norm)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(candle_err)
}
