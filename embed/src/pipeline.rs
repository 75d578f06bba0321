//! decode + preprocess (rayon, in a producer thread) → encoder → one Parquet part per 256 images.
//!
//! The producer prepares the next batch while the model runs the current one; a bounded channel keeps
//! memory flat. Parts are written whole (temporary name, then rename), so an interruption loses at most
//! the parts in flight and a rerun finishes the rest.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use vl2v::cache::{write_image_part_on, ImageRow, Skipped};
use vl2v::image::load_rgb;
use vl2v::views::ViewParams;

use crate::job::{Job, PART_IMAGES};

/// A part: a contiguous range of the dataset's sorted image list.
#[derive(Debug, Clone)]
pub struct Part {
    pub index: usize,
    pub images: Range<usize>,
}

pub fn part_path(job: &Job, index: usize) -> PathBuf {
    job.dir
        .join("images")
        .join(format!("part-{index:05}.parquet"))
}

pub fn all_parts(images: usize) -> Vec<Part> {
    (0..images.div_ceil(PART_IMAGES))
        .map(|index| Part {
            index,
            images: index * PART_IMAGES..((index + 1) * PART_IMAGES).min(images),
        })
        .collect()
}

/// This shard's parts (part index mod N) that are not on disk yet. Temporary files an interrupted run
/// left for them are removed (only this shard's: other shards may be writing theirs right now).
pub fn pending_parts(job: &Job) -> Vec<Part> {
    let (shard, shards) = job.shard;
    let pending: Vec<Part> = all_parts(job.dataset.images.len())
        .into_iter()
        .filter(|p| {
            p.index % shards as usize == shard as usize && !part_path(job, p.index).exists()
        })
        .collect();
    let stale: Vec<String> = pending
        .iter()
        .map(|p| format!(".part-{:05}.parquet.", p.index))
        .collect();
    for entry in std::fs::read_dir(job.dir.join("images"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") && stale.iter().any(|prefix| name.starts_with(prefix)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    pending
}

#[derive(Debug, Default)]
pub struct RunStats {
    pub images: usize,
    pub rows: usize,
    pub skipped: usize,
    pub parts: usize,
    pub model_seconds: f64,
}

/// One decoded image's views, ready for the model.
struct Prepared {
    image: usize,
    views: Vec<(ViewParams, Vec<f32>)>,
}

enum Message {
    Batch(Vec<Prepared>),
    Skip(Skipped),
    PartDone(usize),
    Fatal(anyhow::Error),
}

pub fn run(job: &Job, parts: &[Part], batch_size: usize, strict: bool) -> Result<RunStats> {
    let mut stats = RunStats::default();
    let total: usize = parts.iter().map(|p| p.images.len()).sum();
    if total == 0 {
        return Ok(stats);
    }
    let bar = progress_bar(total as u64);
    let views_per_image = 1 + job.settings.views as usize;
    let images_per_batch = (batch_size / views_per_image).max(1);
    let (tx, rx) = sync_channel::<Message>(2);
    std::thread::scope(|scope| {
        scope.spawn(|| produce(job, parts, images_per_batch, strict, tx));
        consume(job, rx, batch_size, &bar, &mut stats)
    })?;
    bar.finish_and_clear();
    Ok(stats)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} embed {bar:40} {pos}/{len} images {per_sec} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar
}

fn produce(
    job: &Job,
    parts: &[Part],
    images_per_batch: usize,
    strict: bool,
    tx: SyncSender<Message>,
) {
    let seed = job.settings.seed;
    let views = job.settings.views;
    let preprocess = &job.settings.preprocess;
    for part in parts {
        let indices: Vec<usize> = part.images.clone().collect();
        for chunk in indices.chunks(images_per_batch) {
            let results: Vec<Result<Prepared, Skipped>> = chunk
                .par_iter()
                .map(|&i| {
                    let entry = &job.dataset.images[i];
                    let img =
                        load_rgb(&job.dataset.root.join(&entry.path)).map_err(|e| Skipped {
                            path: entry.path.clone(),
                            error: e.to_string(),
                        })?;
                    let views = (0..=views)
                        .map(|v| {
                            let params =
                                ViewParams::sample(seed, &entry.path, v, img.width(), img.height());
                            let pixels = preprocess.apply(&img, &params);
                            (params, pixels)
                        })
                        .collect();
                    Ok(Prepared { image: i, views })
                })
                .collect();
            let mut batch = Vec::with_capacity(results.len());
            for result in results {
                match result {
                    Ok(prepared) => batch.push(prepared),
                    Err(skip) if strict => {
                        let _ = tx.send(Message::Fatal(anyhow!(
                            "{}: {} (--strict)",
                            skip.path,
                            skip.error
                        )));
                        return;
                    }
                    Err(skip) => {
                        if tx.send(Message::Skip(skip)).is_err() {
                            return;
                        }
                    }
                }
            }
            if tx.send(Message::Batch(batch)).is_err() {
                return;
            }
        }
        if tx.send(Message::PartDone(part.index)).is_err() {
            return;
        }
    }
}

fn consume(
    job: &Job,
    rx: Receiver<Message>,
    batch_size: usize,
    bar: &ProgressBar,
    stats: &mut RunStats,
) -> Result<()> {
    let dim = job.encoder.embedding_dim();
    let mut rows: Vec<ImageRow> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut images_in_part = 0;
    for message in rx {
        match message {
            Message::Fatal(err) => return Err(err),
            Message::Skip(skip) => {
                bar.println(format!("skipped {}: {}", skip.path, skip.error));
                skipped.push(skip);
                bar.inc(1);
            }
            Message::Batch(batch) => {
                images_in_part += batch.len();
                bar.inc(batch.len() as u64);
                let started = Instant::now();
                rows.extend(embed_batch(job, batch, batch_size)?);
                stats.model_seconds += started.elapsed().as_secs_f64();
            }
            Message::PartDone(index) => {
                let path = part_path(job, index);
                let on = Some(job.computed_on.as_str());
                write_image_part_on(&path, dim, job.settings.dtype, &rows, &skipped, on)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                stats.images += images_in_part;
                stats.rows += rows.len();
                stats.skipped += skipped.len();
                stats.parts += 1;
                rows.clear();
                skipped.clear();
                images_in_part = 0;
            }
        }
    }
    Ok(())
}

fn embed_batch(job: &Job, batch: Vec<Prepared>, batch_size: usize) -> Result<Vec<ImageRow>> {
    let pixels_per_view = 3 * (job.settings.preprocess.size as usize).pow(2);
    let mut meta = Vec::new();
    let mut pixels = Vec::new();
    for prepared in batch {
        for (view, (params, values)) in prepared.views.into_iter().enumerate() {
            meta.push((prepared.image, view as i16, params));
            pixels.extend_from_slice(&values);
        }
    }
    let mut rows = Vec::with_capacity(meta.len());
    for (chunk_meta, chunk_pixels) in meta
        .chunks(batch_size)
        .zip(pixels.chunks(batch_size * pixels_per_view))
    {
        let embeddings = job.encoder.embed_images(chunk_pixels, chunk_meta.len())?;
        for ((image, view, params), embedding) in chunk_meta.iter().zip(embeddings) {
            let entry = &job.dataset.images[*image];
            rows.push(ImageRow {
                path: entry.path.clone(),
                domain: job.dataset.domains[entry.domain].clone(),
                label: entry.label as i32,
                view: *view,
                params: params.clone(),
                embedding,
            });
        }
    }
    Ok(rows)
}
