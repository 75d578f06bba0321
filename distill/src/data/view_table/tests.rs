//! View tables built from small Parquet caches: values, the join on (path, view), reuse and rebuilds of the
//! view file, and the checks of a load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use vl2v::cache::{
    read_image_rows, write_image_part, EmbeddingDtype, EncoderRole, ImageRow, Manifest,
};
use vl2v::views::ViewParams;

use super::*;
use crate::data::toy_manifest::ToyCache;

const DIM: usize = 5;

fn paths(images: usize) -> Vec<String> {
    (0..images).map(|i| format!("d/c/{i:03}.png")).collect()
}

fn manifest(dtype: EmbeddingDtype, images: usize, views: u32, parts: Vec<String>) -> Manifest {
    ToyCache {
        role: EncoderRole::Student,
        domains: &["d"],
        classes: vec!["c".into()],
        dim: DIM,
        dtype,
        views,
        images: images as u64,
        parts,
    }
    .manifest()
}

fn row(path: &str, view: usize) -> ImageRow {
    let seed = path.len() * 7 + path.bytes().map(usize::from).sum::<usize>() * 3 + view * 11;
    ImageRow {
        path: path.into(),
        domain: "d".into(),
        label: 0,
        view: view as i16,
        params: ViewParams::identity(),
        embedding: (0..DIM)
            .map(|j| ((seed + j * 5) % 17) as f32 / 7.0 - 1.1)
            .collect(),
    }
}

/// Writes `rows` as a cache of `images` images with `views` augmented views, in two parts.
fn write_cache(
    dir: &Path,
    dtype: EmbeddingDtype,
    images: usize,
    views: u32,
    rows: &[ImageRow],
) -> Manifest {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut names = Vec::new();
    for (p, chunk) in rows.chunks(rows.len().div_ceil(2)).enumerate() {
        let name = format!("images/part-{p:05}.parquet");
        write_image_part(&dir.join(&name), DIM, dtype, chunk, &[]).unwrap();
        names.push(name);
    }
    let m = manifest(dtype, images, views, names);
    m.write(dir).unwrap();
    m
}

/// Every (image, view) row, images in reverse order and views descending: the table must reorder them.
fn all_rows(images: usize, views: usize) -> Vec<ImageRow> {
    let paths = paths(images);
    let mut rows = Vec::new();
    for p in paths.iter().rev() {
        for v in (0..views).rev() {
            rows.push(row(p, v));
        }
    }
    rows
}

/// The embeddings as stored in the Parquet parts, by (path, view).
fn parquet_values(dir: &Path, m: &Manifest) -> HashMap<(String, usize), Vec<f32>> {
    let mut out = HashMap::new();
    for part in &m.parts {
        for r in read_image_rows(&dir.join(part)).unwrap() {
            out.insert((r.path, r.view as usize), r.embedding);
        }
    }
    out
}

fn assert_matches(
    table: &ViewTable,
    paths: &[String],
    parquet: &HashMap<(String, usize), Vec<f32>>,
) {
    let views = table.views();
    let picks: Vec<(usize, usize)> = (0..paths.len())
        .flat_map(|i| (0..views).map(move |v| (i, v)))
        .rev()
        .collect();
    let mut out = vec![1.0; 3];
    table.gather_into(&picks, &mut out);
    assert_eq!(out.len(), picks.len() * DIM);
    for (k, &(i, v)) in picks.iter().enumerate() {
        let want = &parquet[&(paths[i].clone(), v)];
        assert_eq!(
            &out[k * DIM..(k + 1) * DIM],
            want.as_slice(),
            "image {i} view {v}"
        );
    }
    let images: Vec<usize> = (0..paths.len()).rev().collect();
    let view0 = table.gather_view0(&images);
    for (k, &i) in images.iter().enumerate() {
        assert_eq!(
            &view0[k * DIM..(k + 1) * DIM],
            parquet[&(paths[i].clone(), 0)].as_slice()
        );
    }
}

/// The names in `<dir>/distill` but the build lock, sorted.
fn distill_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(view_file::DIR))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != view_file::LOCK_FILE)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn identity(path: &PathBuf) -> (std::time::SystemTime, u64) {
    let meta = std::fs::metadata(path).unwrap();
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = meta.len();
    (meta.modified().unwrap(), ino)
}

#[test]
fn tables_are_built_once_reused_and_rebuilt_when_the_cache_changes() {
    for dtype in [EmbeddingDtype::F32, EmbeddingDtype::F16] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (images, views) = (7, 3);
        let mut m = write_cache(dir, dtype, images, 2, &all_rows(images, views));
        let parquet = parquet_values(dir, &m);
        if dtype == EmbeddingDtype::F16 {
            let exact = row(&paths(images)[2], 1).embedding;
            let stored = &parquet[&(paths(images)[2].clone(), 1)];
            assert_ne!(*stored, exact, "the test values are not all f16-exact");
            let rounded: Vec<f32> = exact.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            assert_eq!(*stored, rounded);
        }
        let order = paths(images);

        let table = ViewTable::load(dir, &m, &order, views, "student", Reads::Sampled).unwrap();
        assert_eq!((table.dim(), table.views()), (DIM, views));
        assert_matches(&table, &order, &parquet);
        let files = distill_files(dir);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("views-") && files[0].ends_with(".bin"));
        let file = dir.join(view_file::DIR).join(&files[0]);
        let size = std::fs::metadata(&file).unwrap().len() as usize;
        assert_eq!(
            size,
            view_file::HEADER_BYTES + images * views * DIM * dtype.size()
        );
        let built = identity(&file);

        // A second load maps the same file: not rewritten.
        let again = ViewTable::load(dir, &m, &order, views, "student", Reads::Sampled).unwrap();
        assert_matches(&again, &order, &parquet);
        assert_eq!(distill_files(dir), files);
        assert_eq!(identity(&file), built, "{dtype:?}: the file was rebuilt");

        // Another image order is another file; the first stays.
        let reversed: Vec<String> = order.iter().rev().cloned().collect();
        let other = ViewTable::load(dir, &m, &reversed, views, "student", Reads::Sampled).unwrap();
        assert_matches(&other, &reversed, &parquet);
        assert_eq!(distill_files(dir).len(), 2);

        // A re-embedded cache (another `finished`) gets a new file; the old ones go.
        m.finished = "2025-01-02T00:00:00Z".into();
        m.write(dir).unwrap();
        let rebuilt = ViewTable::load(dir, &m, &order, views, "student", Reads::Sampled).unwrap();
        assert_matches(&rebuilt, &order, &parquet);
        let now = distill_files(dir);
        assert_eq!(now.len(), 1, "{now:?}");
        assert_ne!(now, files);
        // The tables mapped before keep their values.
        assert_matches(&table, &order, &parquet);
    }
}

#[test]
fn a_rewritten_part_is_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = write_cache(dir, EmbeddingDtype::F32, 4, 1, &all_rows(4, 2));
    ViewTable::load(dir, &m, &paths(4), 2, "teacher", Reads::View0).unwrap();
    // Same manifest, but part 0 now lacks a row (its size changes).
    let mut rows = all_rows(4, 2);
    rows.remove(1);
    write_image_part(
        &dir.join(&m.parts[0]),
        DIM,
        EmbeddingDtype::F32,
        &rows[..3],
        &[],
    )
    .unwrap();
    let err = ViewTable::load(dir, &m, &paths(4), 2, "teacher", Reads::View0).unwrap_err();
    assert!(err.to_string().contains("lacks image"), "{err}");
}

#[test]
fn inconsistent_caches_keep_their_errors_and_leave_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let order = paths(5);
    let load = |m: &Manifest, order: &[String], views: usize| {
        ViewTable::load(dir, m, order, views, "student", Reads::Sampled)
            .unwrap_err()
            .to_string()
    };

    let m = write_cache(dir, EmbeddingDtype::F32, 5, 1, &all_rows(5, 2));
    assert_eq!(
        load(&m, &order, 3),
        format!(
            "the student cache {} has 1 augmented views per image but the teacher cache has 2: both \
             caches must be embedded with the same --views and --seed",
            dir.display()
        )
    );
    let mut more = order.clone();
    more.push("d/c/999.png".into());
    assert_eq!(
        load(&m, &more, 2),
        format!(
            "the student cache {} lacks image d/c/999.png view 0 (the image lists or view sets of the \
             caches differ: embed both from the same dataset with the same --views and --seed)",
            dir.display()
        )
    );
    let part0 = dir.join(&m.parts[0]);
    assert_eq!(
        load(&m, &order[..4], 2),
        format!(
            "{}: the student cache holds image d/c/004.png, which the teacher cache does not: the \
             caches must be embedded from the same dataset",
            part0.display()
        )
    );

    let mut twice = all_rows(5, 2);
    twice[1] = row(&order[4], 1);
    let m = write_cache(dir, EmbeddingDtype::F32, 5, 1, &twice);
    assert_eq!(
        load(&m, &order, 2),
        format!(
            "{}: image d/c/004.png view 1 appears twice",
            part0.display()
        )
    );
    let mut beyond = all_rows(5, 2);
    beyond[0] = row(&order[4], 2);
    let m = write_cache(dir, EmbeddingDtype::F32, 5, 1, &beyond);
    assert_eq!(
        load(&m, &order, 2),
        format!(
            "{}: image d/c/004.png has view 2, but the caches have views 0..=1",
            part0.display()
        )
    );
    assert_eq!(
        distill_files(dir),
        Vec::<String>::new(),
        "failed builds leave nothing"
    );
}

#[test]
fn an_unwritable_cache_directory_builds_in_a_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = write_cache(dir, EmbeddingDtype::F16, 3, 1, &all_rows(3, 2));
    // `<cache>/distill` is a file: the directory cannot be made, whoever runs the test.
    std::fs::write(dir.join(view_file::DIR), b"in the way").unwrap();
    let table = ViewTable::load(dir, &m, &paths(3), 2, "teacher", Reads::View0).unwrap();
    assert_matches(&table, &paths(3), &parquet_values(dir, &m));
    assert_eq!(
        std::fs::read(dir.join(view_file::DIR)).unwrap(),
        b"in the way"
    );
}

#[test]
fn parallel_loads_build_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = write_cache(dir, EmbeddingDtype::F32, 6, 1, &all_rows(6, 2));
    let parquet = parquet_values(dir, &m);
    std::thread::scope(|s| {
        let loads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| ViewTable::load(dir, &m, &paths(6), 2, "teacher", Reads::View0).unwrap())
            })
            .collect();
        for load in loads {
            assert_matches(&load.join().unwrap(), &paths(6), &parquet);
        }
    });
    assert_eq!(distill_files(dir).len(), 1, "{:?}", distill_files(dir));
    let built = view_file::BUILT.lock().unwrap().clone();
    let here = built.iter().filter(|p| p.starts_with(dir)).count();
    assert_eq!(here, 1, "one load builds, the others wait and map its file");
}

#[test]
fn heap_tables_gather_rows() {
    let values: Vec<f32> = (0..2 * 3 * 2).map(|x| x as f32).collect();
    let table = ViewTable::from_values(2, 3, values);
    let mut out = Vec::new();
    table.gather_into(&[(1, 2), (0, 1)], &mut out);
    assert_eq!(out, [10.0, 11.0, 2.0, 3.0]);
    assert_eq!(table.gather_view0(&[1, 0]), [6.0, 7.0, 0.0, 1.0]);
}
