//! Round trips of every cache file through a temporary directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::views::{JitterOp, ViewParams};

/// Deterministic xorshift generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A random unit vector (Gaussian direction, Box–Muller).
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                let (u1, u2) = (self.next_f32().max(1e-7), self.next_f32());
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

fn params(rng: &mut Rng, view: i16) -> ViewParams {
    use JitterOp::*;
    let orders = [
        [Brightness, Contrast, Saturation, Hue],
        [Hue, Saturation, Contrast, Brightness],
        [Brightness, Saturation, Contrast, Hue],
    ];
    ViewParams {
        crop: [
            rng.next_f32(),
            rng.next_f32(),
            rng.next_f32(),
            rng.next_f32(),
        ],
        flip: view % 2 == 1,
        brightness: 0.7 + rng.next_f32(),
        contrast: 0.7 + rng.next_f32(),
        saturation: 0.7 + rng.next_f32(),
        hue: rng.next_f32() - 0.5,
        jitter_order: orders[view as usize % orders.len()],
        grayscale: view % 3 == 2,
    }
}

/// `images` images × `views` views each, paths `d<k>/class_<i>/img<i>.jpg`.
fn image_rows(seed: u64, images: usize, views: i16, dim: usize) -> Vec<ImageRow> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for i in 0..images {
        for view in 0..views {
            rows.push(ImageRow {
                path: format!("d{}/class_{}/img{i}.jpg", seed, i % 3),
                domain: format!("d{seed}"),
                label: (i % 3) as i32,
                view,
                params: params(&mut rng, view),
                embedding: rng.unit(dim),
            });
        }
    }
    rows
}

fn skipped() -> Vec<Skipped> {
    vec![Skipped {
        path: "d1/class_0/broken.jpg".into(),
        error: "truncated JPEG: no end-of-image marker".into(),
    }]
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn image_part_round_trips_f32_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part-00000.parquet");
    let rows = image_rows(1, 7, 3, 16);
    let size = write_image_part(&path, 16, EmbeddingDtype::F32, &rows, &skipped()).unwrap();
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(read_image_rows(&path).unwrap(), rows);
    assert_eq!(
        entries(dir.path()),
        ["part-00000.parquet"],
        "no temporary file left"
    );
}

#[test]
fn image_part_round_trips_f16_within_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part.parquet");
    let rows = image_rows(2, 5, 2, 32);
    write_image_part(&path, 32, EmbeddingDtype::F16, &rows, &[]).unwrap();
    let back = read_image_rows(&path).unwrap();
    assert_eq!(back.len(), rows.len());
    for (a, b) in rows.iter().zip(&back) {
        assert_eq!(
            (&a.path, &a.domain, a.label, a.view),
            (&b.path, &b.domain, b.label, b.view)
        );
        assert_eq!(a.params, b.params, "view parameters are stored as f32");
        for (x, y) in a.embedding.iter().zip(&b.embedding) {
            assert!((x - y).abs() <= x.abs() / 1024.0 + 1e-7, "{x} vs {y}");
        }
    }
    let info = read_part_footer(&path).unwrap();
    assert_eq!((info.dim, info.dtype), (32, EmbeddingDtype::F16));
}

#[test]
fn footer_holds_counts_and_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part.parquet");
    let rows = image_rows(1, 4, 3, 8);
    write_image_part(&path, 8, EmbeddingDtype::F32, &rows, &skipped()).unwrap();
    let info = read_part_footer(&path).unwrap();
    assert_eq!(
        info,
        PartInfo {
            rows: 12,
            images: 4,
            skipped: skipped(),
            dim: 8,
            dtype: EmbeddingDtype::F32,
            computed_on: None,
        }
    );
    // The device that computed a part is read back from its footer.
    write_image_part_on(
        &path,
        8,
        EmbeddingDtype::F32,
        &rows,
        &[],
        Some("cuda:1 tf32"),
    )
    .unwrap();
    let on = read_part_footer(&path).unwrap().computed_on;
    assert_eq!(on.as_deref(), Some("cuda:1 tf32"));

    // A part may hold nothing but skipped files.
    let empty = dir.path().join("empty.parquet");
    write_image_part(&empty, 8, EmbeddingDtype::F32, &[], &skipped()).unwrap();
    let info = read_part_footer(&empty).unwrap();
    assert_eq!((info.rows, info.images, info.skipped), (0, 0, skipped()));
    assert!(read_image_rows(&empty).unwrap().is_empty());
}

/// Every column chunk of `path`: (leaf path, physical type, encodings listed in the footer).
fn column_encodings(path: &Path) -> Vec<(String, PhysicalType, Vec<Encoding>)> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let metadata = reader.metadata();
    assert!(metadata.num_row_groups() > 0, "{}", path.display());
    metadata
        .row_groups()
        .iter()
        .flat_map(|group| group.columns())
        .map(|c| {
            let encodings = c.encodings().collect();
            (c.column_path().string(), c.column_type(), encodings)
        })
        .collect()
}

/// Whether every reader the README lists (pyarrow, polars, DuckDB) decodes `encoding` on a column of
/// physical type `physical`, from their documented support rather than from our writer: PLAIN, the
/// dictionary encodings (PLAIN_DICTIONARY, RLE_DICTIONARY) and RLE (levels, booleans) are read by all;
/// BYTE_STREAM_SPLIT only on FLOAT and DOUBLE, the types it was defined for before Parquet 2.11 extended it
/// to INT32, INT64 and FIXED_LEN_BYTE_ARRAY: DuckDB (2.0 too) rejects it on FIXED_LEN_BYTE_ARRAY, and an
/// f16 is a 2-byte one; polars added FLOAT and DOUBLE first (pola-rs/polars#17099, #21803). Anything else
/// is refused: the cache needs nothing more, and the rarer encodings are where readers differ.
fn readable_everywhere(physical: PhysicalType, encoding: Encoding) -> bool {
    match encoding {
        Encoding::PLAIN | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY | Encoding::RLE => {
            true
        }
        Encoding::BYTE_STREAM_SPLIT => {
            matches!(physical, PhysicalType::FLOAT | PhysicalType::DOUBLE)
        }
        _ => false,
    }
}

#[test]
fn every_column_uses_encodings_every_reader_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = image_rows(1, 200, 3, 64);
    rows.extend(image_rows(2, 200, 3, 64));
    let texts = [text_row(0, None, 64), text_row(1, Some("sketch"), 64)];
    let mut checked = 0;
    for dtype in [EmbeddingDtype::F32, EmbeddingDtype::F16] {
        let part = dir.path().join(format!("part-{dtype}.parquet"));
        write_image_part(&part, 64, dtype, &rows, &skipped()).unwrap();
        let texts_path = dir.path().join(format!("texts-{dtype}.parquet"));
        write_texts(&texts_path, 64, dtype, &texts).unwrap();
        for path in [&part, &texts_path] {
            let columns = column_encodings(path);
            assert!(columns
                .iter()
                .any(|(leaf, ..)| leaf == "embedding.list.item"));
            for (leaf, physical, encodings) in columns {
                for encoding in encodings {
                    assert!(
                        readable_everywhere(physical, encoding),
                        "{}: column `{leaf}` ({physical}) uses {encoding}, which not every reader decodes",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn embedding_values_have_no_dictionary_and_byte_split_only_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, physical, encoding) in [
        (
            EmbeddingDtype::F32,
            PhysicalType::FLOAT,
            Encoding::BYTE_STREAM_SPLIT,
        ),
        (
            EmbeddingDtype::F16,
            PhysicalType::FIXED_LEN_BYTE_ARRAY,
            Encoding::PLAIN,
        ),
    ] {
        let path = dir.path().join(format!("part-{dtype}.parquet"));
        write_image_part(&path, 8, dtype, &image_rows(1, 3, 1, 8), &[]).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        let column = |name: &str| {
            row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no leaf `{name}`"))
        };
        let embedding = column("embedding.list.item");
        assert_eq!(embedding.column_path(), &schema::embedding_column_path());
        assert_eq!(embedding.column_type(), physical);
        let encodings: Vec<Encoding> = embedding.encodings().collect();
        assert!(encodings.contains(&encoding), "{dtype}: {encodings:?}");
        if dtype == EmbeddingDtype::F16 {
            assert!(
                !encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
                "{encodings:?}"
            );
        }
        assert!(embedding.dictionary_page_offset().is_none());
        assert!(column("path").dictionary_page_offset().is_some());
        assert!(column("domain").dictionary_page_offset().is_some());
    }
}

#[test]
fn failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part.parquet");
    let mut rows = image_rows(1, 3, 2, 8);
    rows[4].embedding.pop();
    let err = write_image_part(&path, 8, EmbeddingDtype::F32, &rows, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("part.parquet") && msg.contains("row 4 has a 7-d embedding, expected 8"),
        "{msg}"
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // An existing part is left untouched by a failed rewrite.
    let good = image_rows(1, 3, 2, 8);
    write_image_part(&path, 8, EmbeddingDtype::F32, &good, &[]).unwrap();
    assert!(write_image_part(&path, 8, EmbeddingDtype::F32, &rows, &[]).is_err());
    assert_eq!(read_image_rows(&path).unwrap(), good);
    assert_eq!(entries(dir.path()), ["part.parquet"]);

    let texts = dir.path().join(TEXTS_FILE);
    assert!(write_texts(&texts, 8, EmbeddingDtype::F32, &[text_row(0, None, 7)]).is_err());
    assert!(!texts.exists());
}

#[test]
fn streaming_reads_parts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("part-{i:05}.parquet")))
        .collect();
    let first = image_rows(1, 5, 2, 8);
    let second = image_rows(2, 4, 2, 8);
    write_image_part(&parts[0], 8, EmbeddingDtype::F32, &first, &[]).unwrap();
    write_image_part(&parts[1], 8, EmbeddingDtype::F32, &second, &[]).unwrap();

    let mut batches = ImageBatches::new(parts.clone()).with_batch_size(3);
    let mut rows = Vec::new();
    let mut flat = Vec::new();
    for batch in &mut batches {
        let batch = batch.unwrap();
        assert!(batch.num_rows() <= 3);
        flat.extend(batch_embeddings(&batch).unwrap());
        rows.extend(image_rows_from_batch(&batch).unwrap());
    }
    assert_eq!(batches.layout(), Some((8, EmbeddingDtype::F32)));
    let expected: Vec<ImageRow> = first.into_iter().chain(second).collect();
    assert_eq!(
        flat,
        expected
            .iter()
            .flat_map(|r| r.embedding.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(rows, expected);

    // Parts with another layout, or unreadable ones, end the stream with an error naming the file.
    let other = dir.path().join("other.parquet");
    write_image_part(&other, 4, EmbeddingDtype::F32, &image_rows(3, 1, 1, 4), &[]).unwrap();
    let results: Vec<_> =
        ImageBatches::new([parts[0].clone(), other.clone(), parts[1].clone()]).collect();
    let err = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(
        err.contains("other.parquet") && err.contains("4-d f32"),
        "{err}"
    );
}

#[test]
fn key_reads_hold_the_key_columns_alone() {
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("part-{i:05}.parquet")))
        .collect();
    let first = image_rows(4, 5, 3, 8);
    let second = image_rows(5, 3, 3, 8);
    write_image_part(&parts[0], 8, EmbeddingDtype::F16, &first, &[]).unwrap();
    write_image_part(&parts[1], 8, EmbeddingDtype::F16, &second, &[]).unwrap();

    let mut batches = ImageBatches::new(parts.clone())
        .with_batch_size(4)
        .keys_only();
    let mut keys = Vec::new();
    for batch in &mut batches {
        let batch = batch.unwrap();
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["path", "domain", "label", "view"]);
        let k = ImageKeys::new(&batch).unwrap();
        assert_eq!(k.len(), batch.num_rows());
        for i in 0..k.len() {
            keys.push((
                k.path(i).to_string(),
                k.domain(i).to_string(),
                k.label(i),
                k.view(i),
            ));
        }
    }
    // The layout is the parts' own, from their schema.
    assert_eq!(batches.layout(), Some((8, EmbeddingDtype::F16)));
    let expected: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|r| (r.path.clone(), r.domain.clone(), r.label, r.view))
        .collect();
    assert_eq!(keys, expected);

    // A whole batch gives the same keys.
    let whole = ImageBatches::new([&parts[0]]).next().unwrap().unwrap();
    let k = ImageKeys::new(&whole).unwrap();
    assert_eq!(
        (k.path(2), k.view(2)),
        (first[2].path.as_str(), first[2].view)
    );

    // A part of another layout is still refused, naming the file.
    let other = dir.path().join("other.parquet");
    write_image_part(&other, 4, EmbeddingDtype::F32, &image_rows(3, 1, 1, 4), &[]).unwrap();
    let results: Vec<_> = ImageBatches::new([parts[0].clone(), other.clone()])
        .keys_only()
        .collect();
    let err = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(
        err.contains("other.parquet") && err.contains("4-d f32"),
        "{err}"
    );
}

#[test]
fn reading_a_non_parquet_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.parquet");
    std::fs::write(&bogus, b"not parquet at all").unwrap();
    let err = read_part_footer(&bogus).unwrap_err().to_string();
    assert!(
        err.contains("bogus.parquet") && !err.contains('\n'),
        "{err}"
    );
    let missing = dir.path().join("missing.parquet");
    let err = read_image_rows(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.parquet"), "{err}");

    // A texts file is not an image part.
    let texts = dir.path().join(TEXTS_FILE);
    write_texts(&texts, 4, EmbeddingDtype::F32, &[text_row(0, None, 4)]).unwrap();
    let err = read_part_footer(&texts).unwrap_err().to_string();
    assert!(
        err.contains("texts.parquet is not a vl2v image part"),
        "{err}"
    );
}

fn text_row(label: i32, domain: Option<&str>, dim: usize) -> TextRow {
    let class_name = format!("class {label}");
    let template = match domain {
        Some(_) => "a {domain} of a {class}.",
        None => "a photo of a {class}.",
    };
    TextRow {
        label,
        prompt: template
            .replace("{class}", &class_name)
            .replace("{domain}", domain.unwrap_or_default()),
        class_name,
        template: template.into(),
        domain: domain.map(String::from),
        embedding: Rng(label as u64 + 11).unit(dim),
    }
}

#[test]
fn texts_round_trip_with_and_without_domain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TEXTS_FILE);
    let rows = vec![
        text_row(0, None, 16),
        text_row(0, Some("sketch"), 16),
        text_row(1, None, 16),
        text_row(1, Some("clipart"), 16),
    ];
    write_texts(&path, 16, EmbeddingDtype::F32, &rows).unwrap();
    assert_eq!(read_texts(&path).unwrap(), rows);
    assert_eq!(entries(dir.path()), [TEXTS_FILE]);

    write_texts(&path, 16, EmbeddingDtype::F16, &rows).unwrap();
    let back = read_texts(&path).unwrap();
    for (a, b) in rows.iter().zip(&back) {
        assert_eq!((&a.domain, &a.prompt), (&b.domain, &b.prompt));
        for (x, y) in a.embedding.iter().zip(&b.embedding) {
            assert!((x - y).abs() <= x.abs() / 1024.0 + 1e-7);
        }
    }
}

/// Manual check, not a test: `cargo test -p vl2v-shared cache::tests::part_sizes -- --ignored --nocapture`.
/// Writes 1000 rows of 512-d random unit vectors as f32 and f16 (to $VL2V_SIZE_DIR if set, for pyarrow).
#[test]
#[ignore]
fn part_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("VL2V_SIZE_DIR").map_or(tmp.path().to_path_buf(), PathBuf::from);
    let rows = image_rows(5, 200, 5, 512);
    for dtype in [EmbeddingDtype::F32, EmbeddingDtype::F16] {
        let path = dir.join(format!("part-{dtype}.parquet"));
        let size = write_image_part(&path, 512, dtype, &rows, &skipped()).unwrap();
        println!(
            "{dtype}: {size} bytes per 1000 rows ({:.0} bytes/row, raw embedding {} bytes/row)",
            size as f64 / 1000.0,
            512 * dtype.size()
        );
    }
    write_texts(
        &dir.join(TEXTS_FILE),
        512,
        EmbeddingDtype::F16,
        &[text_row(0, None, 512), text_row(1, Some("art"), 512)],
    )
    .unwrap();
}
