//! Builds candle's CLIP configuration from a Hugging Face `config.json`, so every OpenAI CLIP size loads
//! (candle itself only ships a ViT-B/32 preset and cannot deserialise the file).

use std::path::Path;

use candle_transformers::models::clip::{
    text_model::{Activation, ClipTextConfig},
    vision_model::ClipVisionConfig,
    ClipConfig,
};
use serde::Deserialize;

use super::ModelError;

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

/// Reads `config.json` into candle's `ClipConfig`.
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
    let activation = |act: &str, tower: &str| match act {
        "quick_gelu" => Ok(Activation::QuickGelu),
        other => Err(err(format!(
            "{tower} activation '{other}' is not supported (only quick_gelu, as in OpenAI CLIP)"
        ))),
    };
    for (tower, eps) in [
        ("text", hf.text_config.layer_norm_eps),
        ("vision", hf.vision_config.layer_norm_eps),
    ] {
        if (eps - 1e-5).abs() > 1e-12 {
            return Err(err(format!(
                "{tower} layer_norm_eps {eps} is not supported (only 1e-5, as in OpenAI CLIP)"
            )));
        }
    }
    let t = &hf.text_config;
    let v = &hf.vision_config;
    if t.hidden_size % t.num_attention_heads != 0 || v.hidden_size % v.num_attention_heads != 0 {
        return Err(err(
            "hidden_size is not a multiple of num_attention_heads".into()
        ));
    }
    if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
        return Err(err(format!(
            "image_size {} is not a multiple of patch_size {}",
            v.image_size, v.patch_size
        )));
    }
    let text_config = ClipTextConfig {
        vocab_size: t.vocab_size,
        embed_dim: t.hidden_size,
        activation: activation(&t.hidden_act, "text")?,
        intermediate_size: t.intermediate_size,
        max_position_embeddings: t.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: t.num_hidden_layers,
        num_attention_heads: t.num_attention_heads,
        projection_dim: hf.projection_dim,
    };
    let vision_config = ClipVisionConfig {
        embed_dim: v.hidden_size,
        activation: activation(&v.hidden_act, "vision")?,
        intermediate_size: v.intermediate_size,
        num_hidden_layers: v.num_hidden_layers,
        num_attention_heads: v.num_attention_heads,
        projection_dim: hf.projection_dim,
        num_channels: v.num_channels,
        image_size: v.image_size,
        patch_size: v.patch_size,
    };
    Ok(ClipConfig {
        text_config,
        vision_config,
        logit_scale_init_value: hf.logit_scale_init_value,
        image_size: v.image_size,
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
        assert_eq!(c.image_size, 336);
        assert_eq!(c.vision_config.patch_size, 14);
        assert_eq!(c.vision_config.embed_dim, 1024);
        assert_eq!(c.vision_config.projection_dim, 768);
        assert_eq!(c.text_config.projection_dim, 768);
        assert_eq!(c.text_config.vocab_size, 49408);
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
