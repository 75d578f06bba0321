//! `distill analyze`: the paper's CLIP-embedding robustness table (rows E1–E6; the published values are
//! in docs/PAPER.md) from a teacher cache alone, as markdown on stdout.
//!
//! Each domain in turn is the target (held out) and the others are the sources. Every row classifies all
//! evaluation-view (view 0) images of the target by cosine similarity to class prototypes:
//!
//! - E1: text embedding of "a photo of a {class}" (the official zero-shot head);
//! - E2: text embeddings of "a {domain} of a {class}" averaged over the source domains (normalise, mean,
//!   normalise);
//! - E3 / E4: per-class mean image embedding (normalised) of the source / target images;
//! - E5 / E6: per test image, per class, the mean of the `k` source / target images of that class nearest
//!   to it (E6 never counts the test image as its own neighbour).

mod knn;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};

use crate::data::cache_tables::{ClassTexts, ImageTable, TeacherCache};
use knn::Gallery;
use vl2v::zeroshot::{argmax, mean_direction, ZeroShotHead};

/// The template of E1 (the paper's T_y) and of the official zero-shot head.
pub const PHOTO_TEMPLATE: &str = "a photo of a {}";
/// The template of E2, embedded once per domain.
pub const DOMAIN_TEMPLATE: &str = "a {domain} of a {}";

/// Row id and the prototype it uses.
const ROWS: [(&str, &str); 6] = [
    ("E1", "text \"a photo of a {class}\""),
    (
        "E2",
        "text \"a {domain} of a {class}\", averaged over source domains",
    ),
    ("E3", "mean image embedding per class, source domains"),
    ("E4", "mean image embedding per class, target domain †"),
    (
        "E5",
        "mean of the k source images per class nearest to the test image",
    ),
    (
        "E6",
        "mean of the k target images per class nearest to the test image † ‡",
    ),
];

/// The paper's CLIP-embedding robustness table (E1–E6): zero-shot accuracy with text, class-mean and
/// nearest-neighbour prototypes, each domain held out in turn.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A teacher cache directory written by `embed` (holds manifest.json and texts.parquet).
    #[arg(long)]
    pub cache: PathBuf,

    /// Nearest images per class averaged into the prototypes of E5 and E6 (at least 1).
    #[arg(long, default_value_t = 10, value_parser = super::at_least(1))]
    pub k: usize,
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let cache = TeacherCache::open(&args.cache)?;
    // Every image's view-0 embedding, on the heap: the table's prototypes and neighbours need all of them.
    let images = ImageTable::load(&cache.dir, &cache.manifest)?;
    let loaded = started.elapsed();
    let m = &cache.manifest;
    let logit_scale = m.logit_scale.unwrap_or(1.0);
    let table = robustness_table(
        &images,
        &cache.texts,
        m.dataset.domains.len(),
        logit_scale,
        args.k,
    )?;
    print!(
        "{}",
        render(
            &table,
            &m.dataset.domains,
            args.k,
            &format!(
                "{} ({}), {} images, {} classes, {}-d embeddings: {}",
                m.dataset.name,
                m.encoder.model,
                images.len(),
                m.dataset.classes.len(),
                images.dim(),
                cache.dir.display()
            ),
        )
    );
    eprintln!(
        "analyze: loaded the cache in {:.2}s, computed the table in {:.2}s",
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    Ok(())
}

/// Accuracy (%) per row (E1..E6) and target domain; `None` where the cache lacks what the row needs or
/// the target domain has no images.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub cells: [Vec<Option<f64>>; 6],
}

impl Table {
    /// Mean over target domains of a row; `None` if any domain is missing.
    pub fn average(&self, row: usize) -> Option<f64> {
        let values: Option<Vec<f64>> = self.cells[row].iter().copied().collect();
        values
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Computes every cell of the table; `domains` is the number of domains (indices in `images`).
pub fn robustness_table(
    images: &ImageTable,
    texts: &ClassTexts,
    domains: usize,
    logit_scale: f32,
    k: usize,
) -> Result<Table> {
    ensure!(
        domains >= 2,
        "the robustness table holds out one domain at a time and needs at least 2 domains"
    );
    ensure!(!images.is_empty(), "the cache holds no images");
    let (dim, classes) = (images.dim(), texts.classes());
    let mut cells: [Vec<Option<f64>>; 6] = Default::default();
    for target in 0..domains {
        let target_rows = images.rows_where(|d| d == target);
        if target_rows.is_empty() {
            cells.iter_mut().for_each(|c| c.push(None));
            continue;
        }
        let source_rows = images.rows_where(|d| d != target);
        let labels_of =
            |rows: &[usize]| -> Vec<usize> { rows.iter().map(|&i| images.labels()[i]).collect() };
        let (queries, truth) = (images.gather(&target_rows), labels_of(&target_rows));
        let (sources, source_labels) = (images.gather(&source_rows), labels_of(&source_rows));

        let text_head = |sets: Option<Vec<&[f32]>>| -> Result<Option<f64>> {
            let Some(sets) = sets else { return Ok(None) };
            let head = ZeroShotHead::from_templates(&sets, dim, logit_scale)?;
            Ok(Some(accuracy(&head.predict(&queries)?, &truth)))
        };
        let e1 = text_head(texts.get(PHOTO_TEMPLATE, None).map(|m| vec![m]))?;
        let e2 = text_head(
            (0..domains)
                .filter(|&d| d != target)
                .map(|d| texts.get(DOMAIN_TEMPLATE, Some(d)))
                .collect(),
        )?;
        let class_means = |embeddings: &[f32], labels: &[usize]| -> Result<f64> {
            let predictions =
                class_mean_predictions(embeddings, labels, &queries, classes, dim, logit_scale)?;
            Ok(accuracy(&predictions, &truth))
        };
        let e3 = class_means(&sources, &source_labels)?;
        let e4 = class_means(&queries, &truth)?;
        let e5 =
            Gallery::new(&sources, &source_labels, classes, dim)?.predict(&queries, k, false)?;
        let e6 = Gallery::new(&queries, &truth, classes, dim)?.predict(&queries, k, true)?;
        let row = [
            e1,
            e2,
            Some(e3),
            Some(e4),
            Some(accuracy(&e5, &truth)),
            Some(accuracy(&e6, &truth)),
        ];
        for (cell, value) in cells.iter_mut().zip(row) {
            cell.push(value);
        }
    }
    Ok(Table { cells })
}

/// Predictions with prototypes = normalised mean of the (normalised) images of each class; a class
/// without images is never predicted.
fn class_mean_predictions(
    embeddings: &[f32],
    labels: &[usize],
    queries: &[f32],
    classes: usize,
    dim: usize,
    logit_scale: f32,
) -> Result<Vec<Option<usize>>> {
    let mut present = vec![false; classes];
    let mut prototypes = Vec::with_capacity(classes * dim);
    for (c, present) in present.iter_mut().enumerate() {
        let rows = labels
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l == c)
            .map(|(i, _)| &embeddings[i * dim..(i + 1) * dim]);
        let prototype = mean_direction(rows, dim);
        *present = labels.contains(&c);
        prototypes.extend(prototype);
    }
    let head = ZeroShotHead::from_prototypes(prototypes, dim, logit_scale)?;
    let mut logits = head.logits(queries)?;
    Ok(logits
        .chunks_exact_mut(classes)
        .map(|row| {
            row.iter_mut()
                .zip(&present)
                .filter(|(_, &p)| !p)
                .for_each(|(v, _)| *v = f32::NEG_INFINITY);
            argmax(row)
        })
        .collect())
}

/// Percentage of predictions equal to the truth (`None` counts as wrong).
fn accuracy(predictions: &[Option<usize>], truth: &[usize]) -> f64 {
    let correct = predictions
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p == Some(**t))
        .count();
    100.0 * correct as f64 / truth.len().max(1) as f64
}

/// The table as markdown, with the notes that say how to read it.
pub fn render(table: &Table, domains: &[String], k: usize, about: &str) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
    let mut out = String::from("## CLIP embedding robustness (zero-shot accuracy %, E1–E6)\n\n");
    out += &format!("Cache: {about}\n\n");
    out += &format!(
        "| row | class prototype | {} | Avg |\n",
        domains.join(" | ")
    );
    out += &format!("|---|---|{}---:|\n", "---:|".repeat(domains.len()));
    for (r, (id, what)) in ROWS.iter().enumerate() {
        let what = what.replace("the k ", &format!("the {k} "));
        let values: Vec<String> = table.cells[r].iter().map(|&v| cell(v)).collect();
        out += &format!(
            "| {id} | {what} | {} | {} |\n",
            values.join(" | "),
            cell(table.average(r))
        );
    }
    out += "\nEach column holds out that domain: accuracy on all its evaluation-view (view 0) images, with \
            the other domains as sources. Avg is the mean over columns.\n\n";
    out += "- † Transductive oracle: uses the target domain's images and labels.\n";
    out += "- ‡ The test image itself is excluded from its neighbours (the paper does not say whether it is).\n";
    out += &format!(
        "- E5/E6 use the {k} nearest images (cosine) of each class, all of them when a class has fewer; in \
         E3–E6 a class without images is never predicted.\n"
    );
    if table.cells[..2].iter().flatten().any(Option::is_none) {
        out += &format!(
            "- n/a: the cache lacks the texts of \"{PHOTO_TEMPLATE}\" (E1) or \"{DOMAIN_TEMPLATE}\" (E2), \
             or the domain has no images.\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache_tables::TextSet;

    #[test]
    fn templates_are_embeds_defaults() {
        assert_eq!(
            vl2v::prompts::DEFAULT_TEMPLATES,
            [PHOTO_TEMPLATE, DOMAIN_TEMPLATE]
        );
    }

    /// Random unit vectors at OfficeHome size; prints the time of the whole table. Run with
    /// `cargo test -p distill officehome_sized -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing check, prints seconds"]
    fn officehome_sized_table_runs_in_seconds() {
        let (dim, classes) = (512, 65);
        let per_domain = [2427, 4365, 4439, 4357];
        let n: usize = per_domain.iter().sum();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut embeddings: Vec<f32> = (0..n * dim).map(|_| next()).collect();
        vl2v::zeroshot::normalise_rows(&mut embeddings, dim);
        let domains: Vec<usize> = per_domain
            .iter()
            .enumerate()
            .flat_map(|(d, &count)| std::iter::repeat_n(d, count))
            .collect();
        let labels: Vec<usize> = (0..n).map(|i| (i * 31) % classes).collect();
        let paths = (0..n).map(|i| format!("img_{i}")).collect();
        let images = ImageTable::new(dim, embeddings, domains, labels, paths).unwrap();
        let mut set = |template: &str, domain| TextSet {
            template: template.into(),
            domain,
            embeddings: (0..classes * dim).map(|_| next()).collect(),
        };
        let mut sets = vec![set(PHOTO_TEMPLATE, None)];
        sets.extend((0..4).map(|d| set(DOMAIN_TEMPLATE, Some(d))));
        let texts = ClassTexts::new(classes, dim, sets).unwrap();

        let started = Instant::now();
        let table = robustness_table(&images, &texts, 4, 100.0, 10).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "OfficeHome-sized table ({n} images, {classes} classes, {dim}-d, {} threads): {seconds:.2}s",
            rayon::current_num_threads()
        );
        assert!(table
            .cells
            .iter()
            .all(|row| row.iter().all(Option::is_some)));
    }
}
