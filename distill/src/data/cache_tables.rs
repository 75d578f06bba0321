//! A cache written by `embed`, loaded into memory for analysis and training.
//!
//! - [`ImageIndex`]: every image of a cache (its view-0 row) in cache order: domain index (into the
//!   manifest's domain list), label and path, read from the parts' key columns alone (no embedding is read:
//!   `distill run` reads them from the view files, see [`super::ViewTable`]).
//! - [`ImageTable`]: the index with the evaluation view (view 0) of every image as one contiguous row-major
//!   `[N, D]` f32 matrix (what `distill analyze` computes on). Parts are streamed one record batch at a
//!   time, so the peak memory is the `N × D` matrix plus one batch.
//! - [`ClassTexts`]: a teacher's class-text embeddings, one `[C, D]` matrix (row = label) per template and,
//!   for `{domain}` templates, per domain.
//! - [`TeacherCache`]: the index and the texts, with the manifest, after checking that the directory is a
//!   complete teacher cache.
//!
//! Every embedding dimension is checked against the manifest's `encoder.embedding_dim`; a mismatch, an
//! unknown domain or an out-of-range label is an error that names the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use vl2v::cache::{
    image_rows_from_batch, read_texts, EncoderRole, ImageBatches, ImageKeys, ImageRow, Manifest,
    TextRow, TEXTS_FILE,
};

/// Every image of a cache (its view-0 row), in cache order (part order, then row order).
#[derive(Clone, Debug)]
pub struct ImageIndex {
    domains: Vec<usize>,
    labels: Vec<usize>,
    paths: Vec<String>,
}

impl ImageIndex {
    /// An index from its columns, one entry per image.
    pub fn new(domains: Vec<usize>, labels: Vec<usize>, paths: Vec<String>) -> Result<Self> {
        ensure!(
            domains.len() == labels.len() && paths.len() == labels.len(),
            "image index columns disagree: {} labels, {} domains, {} paths",
            labels.len(),
            domains.len(),
            paths.len()
        );
        Ok(ImageIndex {
            domains,
            labels,
            paths,
        })
    }

    /// Reads the key columns of every part listed in `manifest` (parts relative to `dir`) and keeps the
    /// view-0 rows: the embeddings are neither read nor decoded.
    pub fn load(dir: &Path, manifest: &Manifest) -> Result<Self> {
        let keys = KeyCheck::new(manifest);
        let dim = manifest.encoder.embedding_dim;
        let mut index = ImageIndex::with_capacity(manifest);
        for part in &manifest.parts {
            let path = dir.join(part);
            let mut batches = ImageBatches::new([&path]).keys_only();
            while let Some(batch) = batches.next() {
                let batch = batch?;
                check_dim(&path, &batches, dim)?;
                let rows = ImageKeys::new(&batch)?;
                for i in (0..rows.len()).filter(|&i| rows.view(i) == 0) {
                    let (domain, label) =
                        keys.check(&path, rows.path(i), rows.domain(i), rows.label(i))?;
                    index.push(domain, label, rows.path(i).to_string());
                }
            }
        }
        index.check_count(dir, manifest)?;
        Ok(index)
    }

    fn with_capacity(manifest: &Manifest) -> Self {
        let n = usize::try_from(manifest.counts.images).unwrap_or(0);
        ImageIndex {
            domains: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            paths: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, domain: usize, label: usize, path: String) {
        self.domains.push(domain);
        self.labels.push(label);
        self.paths.push(path);
    }

    fn check_count(&self, dir: &Path, manifest: &Manifest) -> Result<()> {
        let expected = usize::try_from(manifest.counts.images).unwrap_or(usize::MAX);
        ensure!(
            self.len() == expected,
            "{}: manifest.json counts {expected} images but its parts hold {} evaluation-view rows \
             (rerun embed with --force to rebuild the cache)",
            dir.display(),
            self.len()
        );
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Domain index of every image (into the manifest's domain list).
    pub fn domains(&self) -> &[usize] {
        &self.domains
    }

    /// Label of every image.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Path of every image, relative to the dataset root (the join key with other caches, with the view).
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Indices of the images whose domain satisfies `keep`, in index order.
    pub fn rows_where(&self, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.len()).filter(|&i| keep(self.domains[i])).collect()
    }
}

/// The checks of an image row's keys against the manifest.
struct KeyCheck<'m> {
    domain_index: HashMap<&'m str, usize>,
    classes: usize,
}

impl<'m> KeyCheck<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        KeyCheck {
            domain_index: manifest
                .dataset
                .domains
                .iter()
                .enumerate()
                .map(|(i, d)| (d.as_str(), i))
                .collect(),
            classes: manifest.dataset.classes.len(),
        }
    }

    /// The domain index and label of the row of image `image` read from `part`.
    fn check(&self, part: &Path, image: &str, domain: &str, label: i32) -> Result<(usize, usize)> {
        let Some(&domain_index) = self.domain_index.get(domain) else {
            bail!(
                "{}: image {image} has domain '{domain}', which is not in manifest.json's domains",
                part.display()
            );
        };
        let classes = self.classes;
        let Some(label) = usize::try_from(label).ok().filter(|&l| l < classes) else {
            bail!(
                "{}: image {image} has label {label}, but manifest.json lists {classes} classes",
                part.display()
            );
        };
        Ok((domain_index, label))
    }
}

/// Checks the embedding size of the part being read against the manifest's.
fn check_dim(path: &Path, batches: &ImageBatches, dim: usize) -> Result<()> {
    if let Some((found, _)) = batches.layout() {
        ensure!(
            found == dim,
            "{}: embeddings are {found}-d but manifest.json says {dim}-d",
            path.display()
        );
    }
    Ok(())
}

/// The evaluation view of every image of a cache, rows in cache order (part order, then row order).
#[derive(Clone, Debug)]
pub struct ImageTable {
    index: ImageIndex,
    dim: usize,
    embeddings: Vec<f32>,
}

impl ImageTable {
    /// A table from its columns; `embeddings` is row-major `[labels.len(), dim]`.
    pub fn new(
        dim: usize,
        embeddings: Vec<f32>,
        domains: Vec<usize>,
        labels: Vec<usize>,
        paths: Vec<String>,
    ) -> Result<Self> {
        let n = labels.len();
        ensure!(dim > 0, "embedding dimension must be positive");
        ensure!(
            embeddings.len() == n * dim,
            "image table columns disagree: {} embedding values for {n} rows of {dim}",
            embeddings.len(),
        );
        Ok(ImageTable {
            index: ImageIndex::new(domains, labels, paths)?,
            dim,
            embeddings,
        })
    }

    /// Reads the view-0 rows of every part listed in `manifest` (parts relative to `dir`), embeddings
    /// included.
    pub fn load(dir: &Path, manifest: &Manifest) -> Result<Self> {
        let keys = KeyCheck::new(manifest);
        let dim = manifest.encoder.embedding_dim;
        let mut index = ImageIndex::with_capacity(manifest);
        let mut embeddings = Vec::with_capacity(index.labels.capacity().saturating_mul(dim));
        for_each_row(dir, manifest, |path, row| {
            if row.view != 0 {
                return Ok(());
            }
            let (domain, label) = keys.check(path, &row.path, &row.domain, row.label)?;
            embeddings.extend_from_slice(&row.embedding);
            index.push(domain, label, row.path);
            Ok(())
        })?;
        index.check_count(dir, manifest)?;
        let ImageIndex {
            domains,
            labels,
            paths,
        } = index;
        ImageTable::new(dim, embeddings, domains, labels, paths)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The whole `[N, D]` matrix, row-major.
    #[allow(dead_code)] // API for tests and analyses
    pub fn embeddings(&self) -> &[f32] {
        &self.embeddings
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.embeddings[i * self.dim..(i + 1) * self.dim]
    }

    /// Domain index of every row (into the manifest's domain list).
    #[allow(dead_code)] // API for tests and analyses
    pub fn domains(&self) -> &[usize] {
        self.index.domains()
    }

    /// Label of every row.
    pub fn labels(&self) -> &[usize] {
        self.index.labels()
    }

    /// Path of every row, relative to the dataset root.
    #[allow(dead_code)] // API for tests and analyses
    pub fn paths(&self) -> &[String] {
        self.index.paths()
    }

    /// Indices of the rows whose domain satisfies `keep`, in table order.
    pub fn rows_where(&self, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        self.index.rows_where(keep)
    }

    /// The embeddings of `rows`, in that order, as a new row-major `[rows.len(), D]` matrix.
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for &i in rows {
            out.extend_from_slice(self.row(i));
        }
        out
    }
}

/// The class-text embeddings of one template (and domain, for `{domain}` templates).
#[derive(Clone, Debug)]
pub struct TextSet {
    pub template: String,
    /// Index into the manifest's domain list.
    pub domain: Option<usize>,
    /// Row-major `[C, D]`, row = label.
    pub embeddings: Vec<f32>,
}

/// A teacher's class-text embeddings, complete for every class of every (template, domain) present.
#[derive(Clone, Debug)]
pub struct ClassTexts {
    classes: usize,
    sets: Vec<TextSet>,
}

impl ClassTexts {
    /// Groups `rows` (read from `path`) by (template, domain), checking dimensions, domains and that every
    /// group has exactly one row per class.
    pub fn from_rows(path: &Path, rows: &[TextRow], manifest: &Manifest) -> Result<Self> {
        let dim = manifest.encoder.embedding_dim;
        let classes = &manifest.dataset.classes;
        let domains = &manifest.dataset.domains;
        let mut sets: Vec<(TextSet, Vec<bool>)> = Vec::new();
        for row in rows {
            ensure!(
                row.embedding.len() == dim,
                "{}: embeddings are {}-d but manifest.json says {dim}-d",
                path.display(),
                row.embedding.len()
            );
            let domain = match &row.domain {
                None => None,
                Some(name) => match domains.iter().position(|d| d == name) {
                    Some(d) => Some(d),
                    None => bail!(
                        "{}: prompt '{}' has domain '{name}', which is not in manifest.json's domains",
                        path.display(),
                        row.prompt
                    ),
                },
            };
            let label = usize::try_from(row.label)
                .ok()
                .filter(|&l| l < classes.len());
            let Some(label) = label else {
                bail!(
                    "{}: prompt '{}' has label {}, but manifest.json lists {} classes",
                    path.display(),
                    row.prompt,
                    row.label,
                    classes.len()
                );
            };
            let at = sets
                .iter()
                .position(|(s, _)| s.template == row.template && s.domain == domain)
                .unwrap_or_else(|| {
                    sets.push((
                        TextSet {
                            template: row.template.clone(),
                            domain,
                            embeddings: vec![0.0; classes.len() * dim],
                        },
                        vec![false; classes.len()],
                    ));
                    sets.len() - 1
                });
            let (set, seen) = &mut sets[at];
            ensure!(
                !seen[label],
                "{}: template '{}' has two prompts for class '{}'",
                path.display(),
                row.template,
                classes[label].name
            );
            seen[label] = true;
            set.embeddings[label * dim..(label + 1) * dim].copy_from_slice(&row.embedding);
        }
        for (set, seen) in &sets {
            if let Some(missing) = seen.iter().position(|&s| !s) {
                let within = set
                    .domain
                    .map(|d| format!(" (domain '{}')", domains[d]))
                    .unwrap_or_default();
                bail!(
                    "{}: template '{}'{within} has no prompt for class '{}'",
                    path.display(),
                    set.template,
                    classes[missing].name
                );
            }
        }
        let sets = sets.into_iter().map(|(set, _)| set).collect();
        ClassTexts::new(classes.len(), dim, sets)
    }

    /// Text sets from their parts; every set must hold `classes × dim` values.
    pub fn new(classes: usize, dim: usize, sets: Vec<TextSet>) -> Result<Self> {
        for set in &sets {
            ensure!(
                set.embeddings.len() == classes * dim,
                "template '{}' has {} values, not {classes} classes × {dim}",
                set.template,
                set.embeddings.len()
            );
        }
        Ok(ClassTexts { classes, sets })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The `[C, D]` embeddings of `template` (for `domain`, if it is a `{domain}` template).
    pub fn get(&self, template: &str, domain: Option<usize>) -> Option<&[f32]> {
        self.sets
            .iter()
            .find(|s| s.template == template && s.domain == domain)
            .map(|s| s.embeddings.as_slice())
    }
}

/// A complete teacher cache: its manifest, images (without embeddings: [`ImageTable::load`] or the view
/// files read those) and class texts.
#[derive(Clone, Debug)]
pub struct TeacherCache {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub images: ImageIndex,
    pub texts: ClassTexts,
}

impl TeacherCache {
    /// Opens `dir`, refusing a missing directory, an incomplete cache (no manifest) and student caches.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = open_manifest(dir)?;
        if manifest.encoder.role == EncoderRole::Student {
            bail!(
                "{} is a student cache (encoder role \"student\" in manifest.json); this needs a teacher \
                 cache, which holds {TEXTS_FILE}",
                dir.display()
            );
        }
        let texts_path = dir.join(TEXTS_FILE);
        if !texts_path.is_file() {
            bail!(
                "{} is missing: a teacher cache needs its class-text embeddings (rerun embed with --force)",
                texts_path.display()
            );
        }
        let rows = read_texts(&texts_path)?;
        let texts = ClassTexts::from_rows(&texts_path, &rows, &manifest)?;
        let images = ImageIndex::load(dir, &manifest)?;
        Ok(TeacherCache {
            dir: dir.to_path_buf(),
            manifest,
            images,
            texts,
        })
    }
}

/// Reads the manifest of the cache in `dir` (teacher or student), with a clear error for a missing
/// directory or an incomplete cache.
pub fn open_manifest(dir: &Path) -> Result<Manifest> {
    if !dir.exists() {
        bail!(
            "cache directory {} does not exist (pass the directory that embed printed last)",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: pass a cache directory written by embed",
            dir.display()
        );
    }
    Ok(Manifest::read(dir)?)
}

/// Streams every row of every part listed in `manifest` (parts relative to `dir`), one record batch at a
/// time, after checking each part's embedding size against the manifest. `f` gets the part's path too,
/// for error messages.
pub fn for_each_row(
    dir: &Path,
    manifest: &Manifest,
    mut f: impl FnMut(&Path, ImageRow) -> Result<()>,
) -> Result<()> {
    let dim = manifest.encoder.embedding_dim;
    for part in &manifest.parts {
        let path = dir.join(part);
        let mut batches = ImageBatches::new([&path]);
        while let Some(batch) = batches.next() {
            let batch = batch?;
            check_dim(&path, &batches, dim)?;
            for row in image_rows_from_batch(&batch)? {
                f(&path, row)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
