//! The one error type of the cache module. Every message is a single line that names the file involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{}: parquet: {err}", path.display())]
    Parquet {
        path: PathBuf,
        err: parquet::errors::ParquetError,
    },

    #[error("{}: arrow: {err}", path.display())]
    Arrow {
        path: PathBuf,
        err: arrow::error::ArrowError,
    },

    /// The rows handed to a writer do not fit the declared layout (embedding length, dimension, ...).
    #[error("{}: {reason}", path.display())]
    InvalidRows { path: PathBuf, reason: String },

    /// A Parquet file that does not have the layout vl2v writes.
    #[error("{} is not a vl2v {what}: {reason}", path.display())]
    Schema {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    /// A `vl2v.*` key in a Parquet footer is missing or unreadable.
    #[error("{}: footer metadata `{key}`: {reason}", path.display())]
    Footer {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },

    /// A record batch handed to a conversion function does not have the image-row layout.
    #[error("record batch is not a vl2v {what}: {reason}")]
    Batch { what: &'static str, reason: String },

    #[error("{} has no manifest.json: the cache is incomplete (rerun embed to finish it)", dir.display())]
    NoManifest { dir: PathBuf },

    #[error(
        "{} has format_version {found}, but this vl2v reads version {expected} (rerun embed to rebuild the cache)",
        path.display()
    )]
    ManifestVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("{} is not a valid vl2v manifest: {err}", path.display())]
    ManifestJson {
        path: PathBuf,
        err: serde_json::Error,
    },
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, err: parquet::errors::ParquetError) -> Self {
        CacheError::Parquet {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn arrow(path: impl Into<PathBuf>, err: arrow::error::ArrowError) -> Self {
        CacheError::Arrow {
            path: path.into(),
            err,
        }
    }
}
