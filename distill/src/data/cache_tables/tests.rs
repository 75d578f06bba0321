//! Loading synthetic caches written with the shared cache writers.

use std::path::Path;
use std::time::Instant;

use vl2v::cache::{
    write_image_part, write_texts, EmbeddingDtype, EncoderRole, ImageRow, Manifest, TextRow,
    TEXTS_FILE,
};
use vl2v::views::ViewParams;

use super::*;
use crate::data::toy_manifest::ToyCache;

const DOMAINS: [&str; 2] = ["art", "photo"];
const CLASSES: [&str; 3] = ["cat", "dog", "fox"];
const TEMPLATES: [&str; 2] = ["a photo of a {}", "a {domain} of a {}"];

/// A deterministic embedding (not normalised; the loader does not care).
fn vector(seed: usize, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|j| ((seed * 31 + j * 7) % 13) as f32 - 6.0)
        .collect()
}

fn manifest(dim: usize, images: u64, parts: Vec<String>, views: u32) -> Manifest {
    let mut m = ToyCache {
        role: EncoderRole::Teacher,
        domains: &DOMAINS,
        classes: CLASSES.map(String::from).to_vec(),
        dim,
        dtype: EmbeddingDtype::F32,
        views,
        images,
        parts,
    }
    .manifest();
    m.templates = TEMPLATES.map(String::from).to_vec();
    m
}

fn text_rows(dim: usize) -> Vec<TextRow> {
    let mut rows = Vec::new();
    for (label, class) in CLASSES.iter().enumerate() {
        let mut push = |template: &str, domain: Option<&str>| {
            rows.push(TextRow {
                label: label as i32,
                class_name: class.to_string(),
                template: template.into(),
                domain: domain.map(String::from),
                prompt: format!("{template} / {class} / {domain:?}"),
                embedding: vector(100 + rows.len(), dim),
            })
        };
        push(TEMPLATES[0], None);
        for d in DOMAINS {
            push(TEMPLATES[1], Some(d));
        }
    }
    rows
}

/// `per_class` images per (domain, class) with `views` augmented views each, `parts` part files; returns
/// the view-0 rows in cache order.
fn write_cache(
    dir: &Path,
    dim: usize,
    per_class: usize,
    views: u32,
    parts: usize,
) -> Vec<ImageRow> {
    let mut rows = Vec::new();
    for domain in DOMAINS {
        for (label, class) in CLASSES.iter().enumerate() {
            for i in 0..per_class {
                let path = format!("{domain}/{class}/{i}.png");
                for view in 0..=views {
                    rows.push(ImageRow {
                        path: path.clone(),
                        domain: domain.into(),
                        label: label as i32,
                        view: view as i16,
                        params: ViewParams::identity(),
                        embedding: vector(rows.len(), dim),
                    });
                }
            }
        }
    }
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let images = rows.len() / (views as usize + 1);
    let per_part = rows.len().div_ceil(parts);
    let mut names = Vec::new();
    for (p, chunk) in rows.chunks(per_part).enumerate() {
        let name = format!("images/part-{p:05}.parquet");
        write_image_part(&dir.join(&name), dim, EmbeddingDtype::F32, chunk, &[]).unwrap();
        names.push(name);
    }
    write_texts(
        &dir.join(TEXTS_FILE),
        dim,
        EmbeddingDtype::F32,
        &text_rows(dim),
    )
    .unwrap();
    manifest(dim, images as u64, names, views)
        .write(dir)
        .unwrap();
    rows.into_iter().filter(|r| r.view == 0).collect()
}

#[test]
fn loads_view_zero_rows_and_text_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = write_cache(tmp.path(), 5, 4, 2, 3);
    let cache = TeacherCache::open(tmp.path()).unwrap();
    let index = &cache.images;
    assert_eq!(index.len(), 24);
    for (i, row) in expected.iter().enumerate() {
        assert_eq!(index.paths()[i], row.path);
        assert_eq!(index.labels()[i] as i32, row.label);
        assert_eq!(DOMAINS[index.domains()[i]], row.domain);
    }
    assert_eq!(index.rows_where(|d| d == 1), (12..24).collect::<Vec<_>>());

    // With the embeddings: the same images in the same order.
    let images = ImageTable::load(tmp.path(), &cache.manifest).unwrap();
    assert_eq!((images.len(), images.dim()), (24, 5));
    for (i, row) in expected.iter().enumerate() {
        assert_eq!(images.row(i), row.embedding.as_slice());
    }
    assert_eq!(images.paths(), index.paths());
    assert_eq!(images.labels(), index.labels());
    assert_eq!(images.domains(), index.domains());
    assert_eq!(images.embeddings().len(), 24 * 5);
    assert_eq!(images.rows_where(|d| d == 1), (12..24).collect::<Vec<_>>());
    assert_eq!(images.gather(&[3, 0])[..5], *images.row(3));

    let texts = &cache.texts;
    assert_eq!(texts.classes(), 3);
    let rows = text_rows(5);
    let photo = texts.get(TEMPLATES[0], None).unwrap();
    assert_eq!(&photo[5..10], rows[3].embedding.as_slice(), "row = label 1");
    let art = texts.get(TEMPLATES[1], Some(0)).unwrap();
    assert_eq!(&art[10..15], rows[7].embedding.as_slice());
    assert!(texts.get(TEMPLATES[1], None).is_none());
    assert!(texts.get("itap of a {}", None).is_none());
}

#[test]
fn dimension_mismatches_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_cache(tmp.path(), 5, 2, 0, 1);
    let mut m = Manifest::read(tmp.path()).unwrap();

    m.encoder.embedding_dim = 6;
    let part = tmp.path().join("images/part-00000.parquet");
    let expected = format!(
        "{}: embeddings are 5-d but manifest.json says 6-d",
        part.display()
    );
    let err = ImageTable::load(tmp.path(), &m).unwrap_err().to_string();
    assert_eq!(err, expected);
    // Reading the key columns alone still checks the embeddings' size, from the part's schema.
    let err = ImageIndex::load(tmp.path(), &m).unwrap_err().to_string();
    assert_eq!(err, expected);
    let texts = tmp.path().join(TEXTS_FILE);
    let err = ClassTexts::from_rows(&texts, &text_rows(5), &m)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: embeddings are 5-d", texts.display())),
        "{err}"
    );
}

#[test]
fn inconsistent_caches_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_cache(tmp.path(), 4, 2, 1, 2);
    let mut m = Manifest::read(tmp.path()).unwrap();

    let part1 = tmp.path().join("images/part-00001.parquet");
    let errors = |m: &Manifest| {
        let table = ImageTable::load(tmp.path(), m).unwrap_err().to_string();
        let index = ImageIndex::load(tmp.path(), m).unwrap_err().to_string();
        assert_eq!(table, index, "both loaders check the same");
        table
    };
    m.counts.images += 1;
    let err = errors(&m);
    assert!(
        err.contains("counts 13 images but its parts hold 12"),
        "{err}"
    );
    m.counts.images -= 1;

    m.dataset.domains = vec!["art".into()];
    assert_eq!(
        errors(&m),
        format!(
            "{}: image photo/cat/0.png has domain 'photo', which is not in manifest.json's domains",
            part1.display()
        )
    );
    m.dataset.domains = DOMAINS.map(String::from).to_vec();

    m.dataset.classes.pop();
    let err = errors(&m);
    assert!(
        err.starts_with(&format!(
            "{}: image ",
            tmp.path().join("images/part-00000.parquet").display()
        )) && err.ends_with("has label 2, but manifest.json lists 2 classes"),
        "{err}"
    );

    let m = Manifest::read(tmp.path()).unwrap();
    let texts = tmp.path().join(TEXTS_FILE);
    let mut rows = text_rows(4);
    rows.remove(3);
    let err = ClassTexts::from_rows(&texts, &rows, &m)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("template 'a photo of a {}' has no prompt for class 'dog'"),
        "{err}"
    );
    let mut rows = text_rows(4);
    rows[1].label = 0;
    rows[1].domain = None;
    rows[1].template = TEMPLATES[0].into();
    let err = ClassTexts::from_rows(&texts, &rows, &m)
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("has two prompts for class 'cat'"), "{err}");
}

#[test]
fn missing_incomplete_and_student_caches_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = TeacherCache::open(&missing).unwrap_err().to_string();
    assert!(
        err.starts_with("cache directory") && err.contains("does not exist"),
        "{err}"
    );

    let err = TeacherCache::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("has no manifest.json"), "{err}");

    write_cache(tmp.path(), 4, 1, 0, 1);
    let mut m = Manifest::read(tmp.path()).unwrap();
    m.encoder.role = EncoderRole::Student;
    m.write(tmp.path()).unwrap();
    let err = TeacherCache::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("is a student cache"), "{err}");

    m.encoder.role = EncoderRole::Teacher;
    m.write(tmp.path()).unwrap();
    std::fs::remove_file(tmp.path().join(TEXTS_FILE)).unwrap();
    let err = TeacherCache::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("texts.parquet is missing"), "{err}");
}

/// An OfficeHome-sized teacher cache (15,588 images in 6 parts, 512-d, 4 augmented views each).
/// `cargo test -p distill officehome_sized -- --ignored --nocapture`.
#[test]
#[ignore = "timing check, prints seconds"]
fn officehome_sized_cache_loads_in_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let per_class = 15588 / (DOMAINS.len() * CLASSES.len());
    write_cache(tmp.path(), 512, per_class, 4, 6);
    let started = Instant::now();
    let cache = TeacherCache::open(tmp.path()).unwrap();
    eprintln!(
        "loaded {} images × 5 views, 512-d: {:.2}s",
        cache.images.len(),
        started.elapsed().as_secs_f64()
    );
}
