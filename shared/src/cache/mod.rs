//! The cache: the contract between `embed` (writer) and `distill` (reader).
//!
//! One directory per (dataset, encoder, view set), `data/cache/<dataset>/<encoder-slug>/`:
//!
//! - `images/part-*.parquet`: one row per (image, view) with the view's parameters and its embedding
//!   ([`schema::image_schema`], [`write_image_part`], [`ImageBatches`]);
//! - `texts.parquet` (teachers only): one row per (class, template[, domain]) ([`write_texts`], [`read_texts`]);
//! - `manifest.json`, written last: a cache without one is incomplete ([`Manifest`]).
//!
//! Every file is written to a temporary file in its directory and renamed into place once complete and
//! fsynced, so a crash never leaves a truncated file under a final name. Embeddings are stored as given
//! (callers L2-normalise them) as f32 or f16 and always read back as f32.

mod atomic;
mod columns;
mod embedding;
mod error;
mod image_batches;
mod image_part;
mod manifest;
mod parquet_file;
pub mod schema;
mod texts;
mod timestamp;

#[cfg(test)]
mod tests;

pub use atomic::write_bytes_atomic;
pub use error::CacheError;
pub use image_batches::{
    batch_embeddings, image_rows_from_batch, read_image_rows, ImageBatches, ImageKeys,
};
pub use image_part::{
    read_part_footer, write_image_part, write_image_part_on, ImageRow, PartInfo, Skipped,
    META_COMPUTED_ON, META_IMAGES, META_SKIPPED,
};
pub use manifest::{
    ClassInfo, Counts, DatasetInfo, EncoderInfo, EncoderRole, Manifest, ViewSet, FORMAT_VERSION,
    MANIFEST_FILE,
};
pub use parquet_file::writer_properties;
pub use schema::EmbeddingDtype;
pub use texts::{read_texts, write_texts, TextRow};
pub use timestamp::{now_rfc3339, rfc3339_utc};

/// Subdirectory of a cache holding the image parts.
pub const IMAGES_DIR: &str = "images";
/// File name of the text embeddings inside a cache directory.
pub const TEXTS_FILE: &str = "texts.parquet";
