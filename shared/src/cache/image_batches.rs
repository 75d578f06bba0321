//! Streaming reads of image parts: record batches from one or many parts, with bounded memory, and their
//! conversion back to [`ImageRow`]s.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Int16Array, Int32Array, StringArray};
use arrow::datatypes::{Float32Type, Int16Type, Int32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use parquet::arrow::ProjectionMask;

use super::columns::Columns;
use super::embedding::list_values_f32;
use super::error::CacheError;
use super::image_part::ImageRow;
use super::parquet_file::{open_checked, BATCH_ROWS};
use super::schema::*;
use crate::views::ViewParams;

/// Record batches of image rows from a sequence of parts, in order, one part open at a time. Every part must
/// have the same embedding dimension and dtype. Parts are opened lazily; the first error ends the iteration.
pub struct ImageBatches {
    pending: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    layout: Option<(usize, EmbeddingDtype)>,
    batch_size: usize,
    keys_only: bool,
    failed: bool,
}

impl ImageBatches {
    pub fn new<P: Into<PathBuf>>(parts: impl IntoIterator<Item = P>) -> Self {
        let parts: Vec<PathBuf> = parts.into_iter().map(Into::into).collect();
        ImageBatches {
            pending: parts.into_iter(),
            current: None,
            layout: None,
            batch_size: BATCH_ROWS,
            keys_only: false,
            failed: false,
        }
    }

    /// Reads only the key columns (`path`, `domain`, `label`, `view`: see [`ImageKeys`]): the embeddings and
    /// view parameters are neither decoded nor read from disk. Every part's schema is still checked whole.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Rows per batch (default 1024).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Embedding dimension and dtype, known once the first part is open.
    pub fn layout(&self) -> Option<(usize, EmbeddingDtype)> {
        self.layout
    }

    fn open(&mut self, path: PathBuf) -> Result<(), CacheError> {
        let (builder, dim, dtype) = open_checked(&path, "image part", image_schema)?;
        match self.layout {
            Some(first) if first != (dim, dtype) => {
                return Err(CacheError::Schema {
                    path,
                    what: "image part of this cache",
                    reason: format!(
                        "embeddings are {dim}-d {dtype}, earlier parts are {}-d {}",
                        first.0, first.1
                    ),
                })
            }
            _ => self.layout = Some((dim, dtype)),
        }
        let builder = if self.keys_only {
            let mask = ProjectionMask::columns(
                builder.parquet_schema(),
                [COL_PATH, COL_DOMAIN, COL_LABEL, COL_VIEW],
            );
            builder.with_projection(mask)
        } else {
            builder
        };
        let reader = builder
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|e| CacheError::parquet(&path, e))?;
        self.current = Some((path, reader));
        Ok(())
    }
}

impl Iterator for ImageBatches {
    type Item = Result<RecordBatch, CacheError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => return Some(Ok(batch)),
                    Some(Err(e)) => {
                        let err = CacheError::arrow(path.as_path(), e);
                        self.failed = true;
                        self.current = None;
                        return Some(Err(err));
                    }
                    None => self.current = None,
                }
            }
            let path = self.pending.next()?;
            if let Err(e) = self.open(path) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

/// The key columns of a batch of image rows (read whole or with [`ImageBatches::keys_only`]): which image,
/// domain, label and view each row holds, without its embedding.
pub struct ImageKeys<'a> {
    path: &'a StringArray,
    domain: &'a StringArray,
    label: &'a Int32Array,
    view: &'a Int16Array,
}

impl<'a> ImageKeys<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Self, CacheError> {
        let bad = |reason: String| CacheError::Batch {
            what: "image batch",
            reason,
        };
        let cols = Columns { batch };
        Ok(ImageKeys {
            path: cols.strings(COL_PATH).map_err(bad)?,
            domain: cols.strings(COL_DOMAIN).map_err(bad)?,
            label: cols.primitive::<Int32Type>(COL_LABEL).map_err(bad)?,
            view: cols.primitive::<Int16Type>(COL_VIEW).map_err(bad)?,
        })
    }

    pub fn len(&self) -> usize {
        self.path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.path.is_empty()
    }

    pub fn path(&self, row: usize) -> &'a str {
        self.path.value(row)
    }

    pub fn domain(&self, row: usize) -> &'a str {
        self.domain.value(row)
    }

    pub fn label(&self, row: usize) -> i32 {
        self.label.value(row)
    }

    pub fn view(&self, row: usize) -> i16 {
        self.view.value(row)
    }
}

/// Reads every row of one part; f16 embeddings are widened to f32.
pub fn read_image_rows(path: &Path) -> Result<Vec<ImageRow>, CacheError> {
    let mut rows = Vec::new();
    for batch in ImageBatches::new([path]) {
        rows.extend(image_rows_from_batch(&batch?)?);
    }
    Ok(rows)
}

/// The embeddings of a batch of image or text rows, flattened row-major as f32 (`num_rows × dim` values).
pub fn batch_embeddings(batch: &RecordBatch) -> Result<Vec<f32>, CacheError> {
    let bad = |reason: String| CacheError::Batch {
        what: "batch with embeddings",
        reason,
    };
    embedding_layout(&batch.schema()).map_err(bad)?;
    let column = batch
        .column_by_name(COL_EMBEDDING)
        .ok_or_else(|| bad(format!("no `{COL_EMBEDDING}` column")))?;
    list_values_f32(column.as_ref()).map_err(|e| bad(format!("`{COL_EMBEDDING}`: {e}")))
}

/// Converts a batch read from an image part back to rows.
pub fn image_rows_from_batch(batch: &RecordBatch) -> Result<Vec<ImageRow>, CacheError> {
    let bad = |reason: String| CacheError::Batch {
        what: "image batch",
        reason,
    };
    let schema = batch.schema();
    let (dim, dtype) = embedding_layout(&schema).map_err(bad)?;
    check_schema(&schema, &image_schema(dim, dtype)).map_err(bad)?;
    let cols = Columns { batch };
    let path = cols.strings(COL_PATH).map_err(bad)?;
    let domain = cols.strings(COL_DOMAIN).map_err(bad)?;
    let label = cols.primitive::<Int32Type>(COL_LABEL).map_err(bad)?;
    let view = cols.primitive::<Int16Type>(COL_VIEW).map_err(bad)?;
    let crop = list_values_f32(cols.get(COL_CROP).map_err(bad)?.as_ref())
        .map_err(|e| bad(format!("`{COL_CROP}`: {e}")))?;
    let flip = cols.bools(COL_FLIP).map_err(bad)?;
    let brightness = cols.primitive::<Float32Type>(COL_BRIGHTNESS).map_err(bad)?;
    let contrast = cols.primitive::<Float32Type>(COL_CONTRAST).map_err(bad)?;
    let saturation = cols.primitive::<Float32Type>(COL_SATURATION).map_err(bad)?;
    let hue = cols.primitive::<Float32Type>(COL_HUE).map_err(bad)?;
    let jitter = cols.strings(COL_JITTER_ORDER).map_err(bad)?;
    let grayscale = cols.bools(COL_GRAYSCALE).map_err(bad)?;
    let embedding = batch_embeddings(batch)?;

    (0..batch.num_rows())
        .map(|i| {
            let c = &crop[4 * i..4 * i + 4];
            Ok(ImageRow {
                path: path.value(i).to_string(),
                domain: domain.value(i).to_string(),
                label: label.value(i),
                view: view.value(i),
                params: ViewParams {
                    crop: [c[0], c[1], c[2], c[3]],
                    flip: flip.value(i),
                    brightness: brightness.value(i),
                    contrast: contrast.value(i),
                    saturation: saturation.value(i),
                    hue: hue.value(i),
                    jitter_order: parse_jitter_order(jitter.value(i)).map_err(bad)?,
                    grayscale: grayscale.value(i),
                },
                embedding: embedding[dim * i..dim * (i + 1)].to_vec(),
            })
        })
        .collect()
}
