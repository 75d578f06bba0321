//! Parquet plumbing shared by image parts and texts: writer settings, atomic writing, opening with a schema check.

use std::fs::File;
use std::path::Path;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::atomic::write_atomic;
use super::error::CacheError;
use super::schema::{
    check_schema, embedding_column_path, embedding_layout, EmbeddingDtype, COL_DOMAIN, COL_PATH,
};

/// Rows per row group: ~16 MiB of 512-d f32 embeddings before compression. Bounded memory for writers
/// and readers, large enough for efficient scans.
pub const ROW_GROUP_ROWS: usize = 8192;

/// Rows per record batch when reading or writing.
pub const BATCH_ROWS: usize = 1024;

/// zstd level 3, dictionary on the string columns, and the embedding values without dictionary or
/// statistics (random floats: dictionaries and min/max are waste). f32 values are BYTE_STREAM_SPLIT, which
/// every Parquet reader decodes on FLOAT (7.5% smaller parts, faster reads); f16 values are PLAIN: DuckDB
/// rejects BYTE_STREAM_SPLIT on f16's FIXED_LEN_BYTE_ARRAY (a Parquet 2.11 addition), which would save 7.5%
/// (docs/ARCHITECTURE.md, "The cache is the contract").
pub fn writer_properties(dtype: EmbeddingDtype) -> WriterProperties {
    let zstd = ZstdLevel::try_new(3).unwrap_or_default();
    let embedding_encoding = match dtype {
        EmbeddingDtype::F32 => Encoding::BYTE_STREAM_SPLIT,
        EmbeddingDtype::F16 => Encoding::PLAIN,
    };
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_dictionary_enabled(ColumnPath::from(COL_PATH), true)
        .set_column_dictionary_enabled(ColumnPath::from(COL_DOMAIN), true)
        .set_column_dictionary_enabled(embedding_column_path(), false)
        .set_column_encoding(embedding_column_path(), embedding_encoding)
        .set_column_statistics_enabled(embedding_column_path(), EnabledStatistics::None)
        .build()
}

/// Writes `batches` (all of `schema`, whose embeddings are `dtype`) and the footer key-value pairs to `path`
/// atomically.
pub(crate) fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    dtype: EmbeddingDtype,
    batches: impl IntoIterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
    metadata: Vec<KeyValue>,
) -> Result<u64, CacheError> {
    write_atomic(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties(dtype)))
            .map_err(|e| CacheError::parquet(path, e))?;
        for batch in batches {
            let batch = batch.map_err(|e| CacheError::arrow(path, e))?;
            writer
                .write(&batch)
                .map_err(|e| CacheError::parquet(path, e))?;
        }
        for kv in metadata {
            writer.append_key_value_metadata(kv);
        }
        writer.close().map_err(|e| CacheError::parquet(path, e))?;
        Ok(())
    })
}

/// Opens `path` (reading only its footer) and checks its columns against `expected(dim, dtype)`, where the
/// embedding layout is taken from the file itself.
pub(crate) fn open_checked(
    path: &Path,
    what: &'static str,
    expected: fn(usize, EmbeddingDtype) -> SchemaRef,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, usize, EmbeddingDtype), CacheError> {
    let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| CacheError::parquet(path, e))?;
    let schema_error = |reason: String| CacheError::Schema {
        path: path.to_path_buf(),
        what,
        reason,
    };
    let (dim, dtype) = embedding_layout(builder.schema()).map_err(schema_error)?;
    check_schema(builder.schema(), &expected(dim, dtype)).map_err(schema_error)?;
    Ok((builder, dim, dtype))
}

/// The value of a footer key-value pair, if present.
pub(crate) fn footer_value<'a>(
    builder: &'a ParquetRecordBatchReaderBuilder<File>,
    key: &str,
) -> Option<&'a str> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_deref()
}
