//! CLIP's configuration from a Hugging Face `config.json`, so every OpenAI CLIP size loads (candle ships
//! only a ViT-B/32 preset and cannot deserialise the file).

use std::path::Path;

use serde::Deserialize;

use super::encoder::EncoderConfig;
use crate::model::ModelError;

/// Fields of transformers' `CLIPTextConfig`, with transformers' defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    eos_token_id: u32,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }
}

/// Fields of transformers' `CLIPVisionConfig`, with transformers' defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfVisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for HfVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Deserialize)]
struct HfClipConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    text_config: HfTextConfig,
    #[serde(default)]
    vision_config: HfVisionConfig,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    logit_scale_init_value: f32,
}

fn default_projection_dim() -> usize {
    512
}

fn default_logit_scale() -> f32 {
    2.6592
}

/// Where the text tower pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// transformers' legacy rule for configs with `eos_token_id == 2` (OpenAI's): the highest token id,
    /// which is end-of-text in CLIP's vocabulary.
    ArgmaxId,
    /// The first occurrence of this end-of-text id.
    FirstId(u32),
}

impl Pooling {
    pub fn position(&self, ids: &[u32]) -> usize {
        match *self {
            // First maximum, as torch's and candle's argmax on CPU.
            Pooling::ArgmaxId => {
                ids.iter()
                    .enumerate()
                    .fold(0, |best, (i, &v)| if v > ids[best] { i } else { best })
            }
            Pooling::FirstId(eos) => ids
                .iter()
                .position(|&v| v == eos)
                .unwrap_or(ids.len().saturating_sub(1)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub encoder: EncoderConfig,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub pooling: Pooling,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub encoder: EncoderConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub channels: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init: f32,
}

/// Reads a Hugging Face CLIP `config.json`.
pub fn load_clip_config(path: &Path) -> Result<ClipConfig, ModelError> {
    let err = |reason: String| ModelError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let hf: HfClipConfig =
        serde_json::from_str(&text).map_err(|e| err(format!("not a CLIP config: {e}")))?;
    if let Some(kind) = hf.model_type.as_deref().filter(|k| *k != "clip") {
        return Err(err(format!("model_type is '{kind}', expected 'clip'")));
    }
    for (tower, act) in [
        ("text", &hf.text_config.hidden_act),
        ("vision", &hf.vision_config.hidden_act),
    ] {
        if act != "quick_gelu" {
            return Err(err(format!(
                "{tower} activation '{act}' is not supported (only quick_gelu, as in OpenAI CLIP)"
            )));
        }
    }
    let t = &hf.text_config;
    let v = &hf.vision_config;
    if t.num_attention_heads == 0
        || v.num_attention_heads == 0
        || !t.hidden_size.is_multiple_of(t.num_attention_heads)
        || !v.hidden_size.is_multiple_of(v.num_attention_heads)
    {
        return Err(err(
            "hidden_size is not a multiple of num_attention_heads".into()
        ));
    }
    if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
        return Err(err(format!(
            "image_size {} is not a multiple of patch_size {}",
            v.image_size, v.patch_size
        )));
    }
    let encoder = |hidden, intermediate, layers, heads, eps: f64| EncoderConfig {
        hidden,
        intermediate,
        layers,
        heads,
        eps: eps as f32,
    };
    Ok(ClipConfig {
        text: TextConfig {
            encoder: encoder(
                t.hidden_size,
                t.intermediate_size,
                t.num_hidden_layers,
                t.num_attention_heads,
                t.layer_norm_eps,
            ),
            vocab_size: t.vocab_size,
            max_positions: t.max_position_embeddings,
            pooling: match t.eos_token_id {
                2 => Pooling::ArgmaxId,
                id => Pooling::FirstId(id),
            },
        },
        vision: VisionConfig {
            encoder: encoder(
                v.hidden_size,
                v.intermediate_size,
                v.num_hidden_layers,
                v.num_attention_heads,
                v.layer_norm_eps,
            ),
            image_size: v.image_size,
            patch_size: v.patch_size,
            channels: v.num_channels,
        },
        projection_dim: hf.projection_dim,
        logit_scale_init: hf.logit_scale_init_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<ClipConfig, ModelError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        load_clip_config(&path)
    }

    #[test]
    fn vit_l14_336_from_its_config() {
        let c = load(
            r#"{"model_type":"clip","projection_dim":768,
                "text_config":{"hidden_size":768,"intermediate_size":3072,"num_attention_heads":12,"num_hidden_layers":12},
                "vision_config":{"hidden_size":1024,"intermediate_size":4096,"num_attention_heads":16,
                                 "num_hidden_layers":24,"patch_size":14,"image_size":336}}"#,
        )
        .unwrap();
        assert_eq!(c.vision.image_size, 336);
        assert_eq!(c.vision.patch_size, 14);
        assert_eq!(c.vision.encoder.hidden, 1024);
        assert_eq!(c.vision.encoder.layers, 24);
        assert_eq!(c.projection_dim, 768);
        assert_eq!(c.text.vocab_size, 49408);
        assert_eq!(c.text.pooling, Pooling::ArgmaxId);
    }

    #[test]
    fn unsupported_activation_fails_clearly() {
        let err = load(r#"{"vision_config":{"hidden_act":"gelu"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vision activation 'gelu' is not supported"),
            "{err}"
        );
        let err = load(r#"{"model_type":"siglip"}"#).unwrap_err().to_string();
        assert!(err.contains("model_type is 'siglip'"), "{err}");
        assert!(load("not json")
            .unwrap_err()
            .to_string()
            .contains("not a CLIP config"));
    }
}
