//! `texts.parquet` (teachers only): one row per (class, template[, domain]) with the prompt's embedding.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, StringArray};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

use super::columns::Columns;
use super::embedding::{check_dims, embedding_array, list_values_f32};
use super::error::CacheError;
use super::parquet_file::{open_checked, write_parquet, BATCH_ROWS};
use super::schema::*;

/// One prompt and its embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct TextRow {
    pub label: i32,
    pub class_name: String,
    /// The template before substitution, e.g. `a photo of a {class}.`.
    pub template: String,
    /// Set for templates that name the domain (`a {domain} of a {class}`).
    pub domain: Option<String>,
    pub prompt: String,
    pub embedding: Vec<f32>,
}

/// Writes `texts.parquet` atomically and returns its size in bytes. Fails without touching `path` if any
/// embedding does not have `dim` values.
pub fn write_texts(
    path: &Path,
    dim: usize,
    dtype: EmbeddingDtype,
    rows: &[TextRow],
) -> Result<u64, CacheError> {
    check_dims(dim, rows.iter().map(|r| r.embedding.as_slice())).map_err(|reason| {
        CacheError::InvalidRows {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    let batches = rows.chunks(BATCH_ROWS).map(|chunk| {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from_iter_values(chunk.iter().map(|r| r.label))),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| &r.class_name),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| &r.template),
            )),
            Arc::new(StringArray::from_iter(
                chunk.iter().map(|r| r.domain.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| &r.prompt),
            )),
            embedding_array(dim, dtype, chunk.iter().map(|r| r.embedding.as_slice()))?,
        ];
        RecordBatch::try_new(text_schema(dim, dtype), columns)
    });
    write_parquet(path, text_schema(dim, dtype), dtype, batches, Vec::new())
}

/// Reads every row of `texts.parquet`; f16 embeddings are widened to f32.
pub fn read_texts(path: &Path) -> Result<Vec<TextRow>, CacheError> {
    let (builder, dim, _) = open_checked(path, "texts file", text_schema)?;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| CacheError::parquet(path, e))?;
    let bad = |reason: String| CacheError::Schema {
        path: path.to_path_buf(),
        what: "texts file",
        reason,
    };
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| CacheError::arrow(path, e))?;
        let cols = Columns { batch: &batch };
        let label = cols.primitive::<Int32Type>(COL_LABEL).map_err(bad)?;
        let class_name = cols.strings(COL_CLASS_NAME).map_err(bad)?;
        let template = cols.strings(COL_TEMPLATE).map_err(bad)?;
        let domain = cols.nullable_strings(COL_DOMAIN).map_err(bad)?;
        let prompt = cols.strings(COL_PROMPT).map_err(bad)?;
        let embedding = list_values_f32(cols.get(COL_EMBEDDING).map_err(bad)?.as_ref())
            .map_err(|e| bad(format!("`{COL_EMBEDDING}`: {e}")))?;
        rows.extend((0..batch.num_rows()).map(|i| TextRow {
            label: label.value(i),
            class_name: class_name.value(i).to_string(),
            template: template.value(i).to_string(),
            domain: (!domain.is_null(i)).then(|| domain.value(i).to_string()),
            prompt: prompt.value(i).to_string(),
            embedding: embedding[dim * i..dim * (i + 1)].to_vec(),
        }));
    }
    Ok(rows)
}
