//! `manifest.json`: what a cache holds and how it was made. Written last; a cache without one is incomplete.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::error::CacheError;
use super::image_part::Skipped;
use super::schema::EmbeddingDtype;

/// The manifest format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub dataset: DatasetInfo,
    pub encoder: EncoderInfo,
    /// The embed tool's preprocessing settings (size, resize mode, interpolation, mean, std), kept opaque here.
    pub preprocess: serde_json::Value,
    pub views: ViewSet,
    pub embedding_dtype: EmbeddingDtype,
    /// CLIP's learned logit scale (teachers only).
    pub logit_scale: Option<f32>,
    /// Prompt templates used for `texts.parquet` (empty for students).
    pub templates: Vec<String>,
    pub counts: Counts,
    pub skipped: Vec<Skipped>,
    /// Part files, relative to the cache directory (`images/part-00000.parquet`, ...).
    pub parts: Vec<String>,
    pub shards: u32,
    /// The devices and precisions that computed the image parts (`cuda:0 fp32`, `cpu fp32`; several when
    /// shards ran on different machines), distinct, in part order. Empty for caches from before it was
    /// recorded.
    #[serde(default)]
    pub computed_on: Vec<String>,
    /// RFC 3339 UTC, see [`super::rfc3339_utc`].
    pub created: String,
    pub finished: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub root: PathBuf,
    /// Sorted domain folder names.
    pub domains: Vec<String>,
    /// In label order (sorted class folder names).
    pub classes: Vec<ClassInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub folder: String,
    /// Display name: the folder name with `_` → space.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderRole {
    Teacher,
    Student,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderInfo {
    /// Hub id or local path.
    pub model: String,
    /// Requested revision (branch, tag or sha), if any.
    pub revision: Option<String>,
    /// Resolved commit sha, if the model came from the hub.
    pub commit: Option<String>,
    pub weights_sha256: String,
    pub role: EncoderRole,
    pub architecture: String,
    pub embedding_dim: usize,
    /// Whether embeddings are L2-normalised (teachers); student features are stored raw.
    #[serde(default = "normalized_default")]
    pub normalized: bool,
}

fn normalized_default() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSet {
    /// Augmented views per image, excluding view 0.
    pub count: u32,
    pub seed: u64,
    pub recipe: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Distinct images embedded.
    pub images: u64,
    /// Image rows (images × views).
    pub rows: u64,
    /// Images per domain.
    pub per_domain: BTreeMap<String, u64>,
    /// Images per class (folder name).
    pub per_class: BTreeMap<String, u64>,
}

impl Manifest {
    /// Writes `<dir>/manifest.json` (pretty JSON) atomically.
    pub fn write(&self, dir: &Path) -> Result<(), CacheError> {
        let path = dir.join(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(self).map_err(|err| CacheError::ManifestJson {
            path: path.clone(),
            err,
        })?;
        json.push(b'\n');
        write_atomic(&path, |file| {
            file.write_all(&json).map_err(|e| CacheError::io(&path, e))
        })?;
        Ok(())
    }

    /// Reads `<dir>/manifest.json`, refusing a missing manifest (incomplete cache) and other format versions.
    pub fn read(dir: &Path) -> Result<Manifest, CacheError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::NoManifest {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(CacheError::io(&path, e)),
        };
        let json_error = |err| CacheError::ManifestJson {
            path: path.clone(),
            err,
        };

        #[derive(Deserialize)]
        struct Version {
            format_version: Option<serde_json::Value>,
        }
        let version: Version = serde_json::from_str(&text).map_err(json_error)?;
        if let Some(found) = version.format_version {
            if found.as_u64() != Some(u64::from(FORMAT_VERSION)) {
                return Err(CacheError::ManifestVersion {
                    path,
                    found: found.to_string(),
                    expected: FORMAT_VERSION,
                });
            }
        }
        serde_json::from_str(&text).map_err(json_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: "0.1.0".into(),
            dataset: DatasetInfo {
                name: "pacs".into(),
                root: PathBuf::from("data/pacs"),
                domains: vec!["art_painting".into(), "sketch".into()],
                classes: vec![ClassInfo {
                    folder: "guitar_x".into(),
                    name: "guitar x".into(),
                }],
            },
            encoder: EncoderInfo {
                model: "openai/clip-vit-base-patch16".into(),
                revision: None,
                commit: Some("57c216476eefef5ab752ec549e440a49ae4ae5f3".into()),
                weights_sha256: "ab".repeat(32),
                role: EncoderRole::Teacher,
                architecture: "clip-vit-b16".into(),
                embedding_dim: 512,
                normalized: true,
            },
            preprocess: serde_json::json!({"size": 224, "mean": [0.48, 0.45, 0.40]}),
            views: ViewSet {
                count: 4,
                seed: 0,
                recipe: "domainbed".into(),
            },
            embedding_dtype: EmbeddingDtype::F16,
            logit_scale: Some(100.0),
            templates: vec!["a photo of a {class}.".into()],
            counts: Counts {
                images: 2,
                rows: 10,
                per_domain: [("sketch".to_string(), 2)].into(),
                per_class: [("guitar_x".to_string(), 2)].into(),
            },
            skipped: vec![Skipped {
                path: "sketch/guitar_x/bad.png".into(),
                error: "invalid PNG signature".into(),
            }],
            parts: vec!["images/part-00000.parquet".into()],
            shards: 1,
            computed_on: Vec::new(),
            created: "2025-01-01T00:00:00Z".into(),
            finished: "2025-01-01T00:10:00Z".into(),
        }
    }

    #[test]
    fn round_trips_as_pretty_json() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest();
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("\n  \"format_version\": 1,"), "{text}");
        assert!(
            text.contains("\"role\": \"teacher\"") && text.contains("\"embedding_dtype\": \"f16\"")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn missing_manifest_means_incomplete_cache() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} has no manifest.json: the cache is incomplete (rerun embed to finish it)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn other_format_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            r#"{"format_version": 2, "new": true}"#,
        )
        .unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json has format_version 2") && err.contains("reads version 1"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::write(&path, "{\"format_version\": 1,").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} is not a valid vl2v manifest: ",
                path.display()
            )),
            "{err}"
        );
        std::fs::write(&path, r#"{"format_version": 1}"#).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
    }
}
