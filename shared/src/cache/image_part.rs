//! Image parts (`images/part-*.parquet`): one row per (image, view), written whole and atomically by one
//! embed worker. The footer records which images the part covers and which files could not be read.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::file::metadata::KeyValue;
use serde::{Deserialize, Serialize};

use super::embedding::{check_dims, embedding_array};
use super::error::CacheError;
use super::parquet_file::{footer_value, open_checked, write_parquet, BATCH_ROWS};
use super::schema::{image_schema, jitter_order_to_string, EmbeddingDtype};
use crate::views::ViewParams;

/// Footer key: JSON list of [`Skipped`] files.
pub const META_SKIPPED: &str = "vl2v.skipped";
/// Footer key: number of distinct images embedded in the part (decimal).
pub const META_IMAGES: &str = "vl2v.images";
/// The device and precision that computed a part's embeddings (`cuda:0 fp32`, `cpu fp32`).
pub const META_COMPUTED_ON: &str = "vl2v.computed_on";

/// One cached (image, view).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    /// Relative to the dataset root, `/` separators.
    pub path: String,
    pub domain: String,
    pub label: i32,
    /// 0 = the deterministic evaluation view.
    pub view: i16,
    pub params: ViewParams,
    pub embedding: Vec<f32>,
}

/// A file that could not be decoded, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub error: String,
}

/// What a part's footer says about it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartInfo {
    pub rows: u64,
    /// Distinct images embedded in this part.
    pub images: u64,
    pub skipped: Vec<Skipped>,
    pub dim: usize,
    pub dtype: EmbeddingDtype,
    /// [`META_COMPUTED_ON`]; `None` for parts written before it was recorded.
    pub computed_on: Option<String>,
}

/// Writes one image part atomically (temporary file in the same directory, fsync, rename) and returns the
/// file's size in bytes. Embeddings are stored as given, converted to `dtype`. Fails without touching `path`
/// if any embedding does not have `dim` values.
pub fn write_image_part(
    path: &Path,
    dim: usize,
    dtype: EmbeddingDtype,
    rows: &[ImageRow],
    skipped: &[Skipped],
) -> Result<u64, CacheError> {
    write_image_part_on(path, dim, dtype, rows, skipped, None)
}

/// [`write_image_part`], recording in the footer the device and precision that computed the rows.
pub fn write_image_part_on(
    path: &Path,
    dim: usize,
    dtype: EmbeddingDtype,
    rows: &[ImageRow],
    skipped: &[Skipped],
    computed_on: Option<&str>,
) -> Result<u64, CacheError> {
    check_dims(dim, rows.iter().map(|r| r.embedding.as_slice())).map_err(|reason| {
        CacheError::InvalidRows {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    let images = rows
        .iter()
        .map(|r| r.path.as_str())
        .collect::<HashSet<_>>()
        .len();
    let skipped_json = serde_json::to_string(skipped).map_err(|e| CacheError::InvalidRows {
        path: path.to_path_buf(),
        reason: format!("cannot serialise the skipped list: {e}"),
    })?;
    let mut metadata = vec![
        KeyValue::new(META_IMAGES.to_string(), images.to_string()),
        KeyValue::new(META_SKIPPED.to_string(), skipped_json),
    ];
    if let Some(on) = computed_on {
        metadata.push(KeyValue::new(META_COMPUTED_ON.to_string(), on.to_string()));
    }
    let schema = image_schema(dim, dtype);
    let batches = rows
        .chunks(BATCH_ROWS)
        .map(|chunk| image_batch(dim, dtype, chunk));
    write_parquet(path, schema, dtype, batches, metadata)
}

fn image_batch(
    dim: usize,
    dtype: EmbeddingDtype,
    rows: &[ImageRow],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let f32_col = |get: fn(&ViewParams) -> f32| -> ArrayRef {
        Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| get(&r.params)),
        ))
    };
    let crops = rows.iter().map(|r| r.params.crop.as_slice());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.path))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.domain),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.label))),
        Arc::new(Int16Array::from_iter_values(rows.iter().map(|r| r.view))),
        embedding_array(4, EmbeddingDtype::F32, crops)?,
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.params.flip)),
        )),
        f32_col(|p| p.brightness),
        f32_col(|p| p.contrast),
        f32_col(|p| p.saturation),
        f32_col(|p| p.hue),
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|r| jitter_order_to_string(&r.params.jitter_order)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.params.grayscale)),
        )),
        embedding_array(dim, dtype, rows.iter().map(|r| r.embedding.as_slice()))?,
    ];
    RecordBatch::try_new(image_schema(dim, dtype), columns)
}

/// Reads a part's footer only (no data pages): row count, images covered, skipped files, embedding layout.
pub fn read_part_footer(path: &Path) -> Result<PartInfo, CacheError> {
    let (builder, dim, dtype) = open_checked(path, "image part", image_schema)?;
    let footer_error = |key, reason: String| CacheError::Footer {
        path: path.to_path_buf(),
        key,
        reason,
    };
    let images = footer_value(&builder, META_IMAGES)
        .ok_or_else(|| footer_error(META_IMAGES, "missing".into()))?
        .parse::<u64>()
        .map_err(|e| footer_error(META_IMAGES, e.to_string()))?;
    let skipped = serde_json::from_str(
        footer_value(&builder, META_SKIPPED)
            .ok_or_else(|| footer_error(META_SKIPPED, "missing".into()))?,
    )
    .map_err(|e| footer_error(META_SKIPPED, e.to_string()))?;
    Ok(PartInfo {
        rows: builder.metadata().file_metadata().num_rows() as u64,
        images,
        skipped,
        dim,
        dtype,
        computed_on: footer_value(&builder, META_COMPUTED_ON).map(str::to_string),
    })
}
