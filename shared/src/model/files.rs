//! Resolves `--model` to local files: a directory in Hugging Face layout, or a hub id through hf-hub's
//! cache (downloading only when allowed).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model directory {dir} has no {file}")]
    MissingLocalFile { dir: PathBuf, file: String },
    #[error("{file} of '{model}' (revision {revision}) is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set; download it once with network access")]
    NotCached {
        model: String,
        revision: String,
        file: String,
        cache: PathBuf,
    },
    #[error("cannot fetch {file} of '{model}' (revision {revision}) from the Hugging Face hub: {reason}")]
    Hub {
        model: String,
        revision: String,
        file: String,
        reason: String,
    },
    #[error("'{0}' is neither a local directory nor a Hugging Face hub id (owner/name)")]
    BadId(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("device '{name}': {reason}")]
    Device { name: String, reason: String },
    #[error("prompt '{prompt}' has {tokens} tokens, more than the model's {max}")]
    PromptTooLong {
        prompt: String,
        tokens: usize,
        max: usize,
    },
    #[error("model computation failed: {0}")]
    Compute(String),
}

/// The files a model needs, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user passed: hub id or directory.
    pub source: String,
    /// The revision asked for (hub only).
    pub revision: Option<String>,
    /// The commit the revision resolved to (hub only).
    pub commit: Option<String>,
    pub weights: PathBuf,
    /// `config.json` (CLIP models).
    pub config: Option<PathBuf>,
    /// `tokenizer.json` (CLIP models).
    pub tokenizer: Option<PathBuf>,
}

/// What a model must provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A CLIP teacher: `config.json`, `model.safetensors`, `tokenizer.json`.
    Clip,
    /// A student, whose architecture is named separately: `model.safetensors` alone (or a path to a
    /// `.safetensors` file).
    Weights,
}

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Resolves `model` (a directory, or a hub id at `revision`) to the files `needs` names.
pub fn resolve(
    model: &str,
    revision: Option<&str>,
    needs: Needs,
) -> Result<ModelFiles, ModelError> {
    let files = match needs {
        Needs::Clip => vec![WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE],
        Needs::Weights => vec![WEIGHTS_FILE],
    };
    let local = Path::new(model);
    if needs == Needs::Weights && local.is_file() {
        return Ok(ModelFiles {
            source: model.to_string(),
            revision: None,
            commit: None,
            weights: local.to_path_buf(),
            config: None,
            tokenizer: None,
        });
    }
    let paths: Vec<PathBuf> = if local.is_dir() {
        files
            .iter()
            .map(|file| {
                let path = local.join(file);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(ModelError::MissingLocalFile {
                        dir: local.to_path_buf(),
                        file: file.to_string(),
                    })
                }
            })
            .collect::<Result<_, _>>()?
    } else {
        if !is_hub_id(model) {
            return Err(ModelError::BadId(model.to_string()));
        }
        let revision = revision.unwrap_or("main");
        files
            .iter()
            .map(|file| fetch_from_hub(model, revision, file))
            .collect::<Result<_, _>>()?
    };
    let commit = if local.is_dir() {
        None
    } else {
        snapshot_commit(&paths[0])
    };
    Ok(ModelFiles {
        source: model.to_string(),
        revision: if local.is_dir() {
            None
        } else {
            Some(revision.unwrap_or("main").to_string())
        },
        commit,
        weights: paths[0].clone(),
        config: paths.get(1).cloned(),
        tokenizer: paths.get(2).cloned(),
    })
}

fn is_hub_id(model: &str) -> bool {
    let mut parts = model.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The hub cache as Hugging Face's own libraries find it: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(path) => Cache::new(PathBuf::from(path)),
        None => Cache::from_env(),
    }
}

fn fetch_from_hub(model: &str, revision: &str, file: &str) -> Result<PathBuf, ModelError> {
    let cache = hub_cache();
    let repo = Repo::with_revision(model.to_string(), RepoType::Model, revision.to_string());
    if let Some(path) = cached(&cache, model, revision, file) {
        return Ok(path);
    }
    if offline() {
        return Err(ModelError::NotCached {
            model: model.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            cache: cache.path().clone(),
        });
    }
    let hub = |reason: String| ModelError::Hub {
        model: model.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
        reason,
    };
    let api = ApiBuilder::from_cache(cache)
        .with_progress(true)
        .build()
        .map_err(|e| hub(e.to_string()))?;
    api.repo(repo).get(file).map_err(|e| hub(e.to_string()))
}

/// A file already in the cache: by ref (branch/tag), or directly by commit hash.
fn cached(cache: &Cache, model: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let repo = Repo::with_revision(model.to_string(), RepoType::Model, revision.to_string());
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Some(path);
    }
    let by_commit = cache
        .path()
        .join(repo.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file);
    by_commit.is_file().then_some(by_commit)
}

/// Hub files live at `<cache>/models--o--n/snapshots/<commit>/<file>`.
fn snapshot_commit(path: &Path) -> Option<String> {
    let commit = path.parent()?;
    (commit.parent()?.file_name()? == "snapshots")
        .then(|| commit.file_name()?.to_str().map(str::to_string))?
}

/// Hex sha256 of the weights. A hub file is a link to `blobs/<sha256>` (Git LFS names objects by their
/// sha256), so its name is the answer without reading gigabytes; anything else is hashed.
pub fn weights_sha256(path: &Path) -> Result<String, ModelError> {
    let blob = std::fs::canonicalize(path).ok().filter(|target| {
        target
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|dir| dir == "blobs")
            && target
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| {
                    n.len() == 64
                        && n.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
    });
    match blob
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
    {
        Some(name) => Ok(name.to_string()),
        None => sha256_file(path),
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let read_err = |e: std::io::Error| ModelError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_local_dirs() {
        assert!(is_hub_id("openai/clip-vit-base-patch16"));
        assert!(!is_hub_id("clip"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("./dir"));
        let err = resolve("no-such-dir", None, Needs::Clip)
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a local directory"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        let err = resolve(dir.path().to_str().unwrap(), None, Needs::Clip)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("has no model.safetensors"), "{err}");
    }

    #[test]
    fn commit_is_read_from_the_snapshot_path() {
        let p = Path::new("/c/models--openai--clip/snapshots/abc123/config.json");
        assert_eq!(snapshot_commit(p).as_deref(), Some("abc123"));
        assert_eq!(snapshot_commit(Path::new("/x/y/config.json")), None);
    }

    #[test]
    fn hub_blobs_are_named_by_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots/c")).unwrap();
        std::fs::write(dir.path().join("blobs").join(sha), b"abc").unwrap();
        let link = dir.path().join("snapshots/c/model.safetensors");
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &link).unwrap();
        assert_eq!(weights_sha256(&link).unwrap(), sha);
        // Not a blob: hashed.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"abc").unwrap();
        assert_eq!(weights_sha256(&plain).unwrap(), sha);
    }

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
