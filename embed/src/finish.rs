//! The manifest, written last and only when every part of every shard is present, and the summary.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use vl2v::cache::{
    now_rfc3339, read_part_footer, rfc3339_utc, ClassInfo, Counts, DatasetInfo, EncoderInfo,
    Manifest, ViewSet,
};

use crate::job::{Job, RECIPE};
use crate::pipeline::{all_parts, part_path, RunStats};

pub fn write_manifest_if_complete(job: &Job) -> Result<Option<Manifest>> {
    let parts = all_parts(job.dataset.images.len());
    if parts.iter().any(|p| !part_path(job, p.index).exists())
        || (job.encoder.teacher().is_some() && !job.dir.join(vl2v::cache::TEXTS_FILE).exists())
    {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    let mut rows = 0u64;
    let mut part_names = Vec::new();
    let mut computed_on: Vec<String> = Vec::new();
    for part in &parts {
        let path = part_path(job, part.index);
        let info =
            read_part_footer(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(on) = info.computed_on {
            if !computed_on.contains(&on) {
                computed_on.push(on);
            }
        }
        rows += info.rows;
        skipped.extend(info.skipped);
        part_names.push(format!(
            "images/{}",
            path.file_name().expect("part file").to_string_lossy()
        ));
    }
    let skipped_paths: HashSet<&str> = skipped.iter().map(|s| s.path.as_str()).collect();
    let ds = &job.dataset;
    let mut per_domain = BTreeMap::new();
    let mut per_class = BTreeMap::new();
    let mut images = 0u64;
    for entry in ds
        .images
        .iter()
        .filter(|e| !skipped_paths.contains(e.path.as_str()))
    {
        images += 1;
        *per_domain
            .entry(ds.domains[entry.domain].clone())
            .or_insert(0) += 1;
        *per_class
            .entry(ds.classes[entry.label].folder.clone())
            .or_insert(0) += 1;
    }
    let s = &job.settings;
    let manifest = Manifest {
        format_version: vl2v::cache::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: DatasetInfo {
            name: ds.name.clone(),
            root: s.root.clone().into(),
            domains: ds.domains.clone(),
            classes: ds
                .classes
                .iter()
                .map(|c| ClassInfo {
                    folder: c.folder.clone(),
                    name: c.name.clone(),
                })
                .collect(),
        },
        encoder: EncoderInfo {
            model: s.model.clone(),
            revision: s.revision.clone(),
            commit: s.commit.clone(),
            weights_sha256: s.weights_sha256.clone(),
            role: job.encoder.role(),
            architecture: job.encoder.architecture(),
            embedding_dim: job.encoder.embedding_dim(),
            normalized: job.encoder.normalized(),
        },
        preprocess: serde_json::to_value(&s.preprocess)?,
        views: ViewSet {
            count: s.views as u32,
            seed: s.seed,
            recipe: RECIPE.into(),
        },
        embedding_dtype: s.dtype,
        logit_scale: job.encoder.teacher().map(|t| t.logit_scale()),
        templates: if job.encoder.teacher().is_some() {
            // job.json's: another shard may have added templates since this one started.
            cached_templates(&job.dir).unwrap_or_else(|| s.templates.clone())
        } else {
            Vec::new()
        },
        counts: Counts {
            images,
            rows,
            per_domain,
            per_class,
        },
        skipped,
        parts: part_names,
        shards: job.shard.1,
        computed_on,
        created: created_time(&job.dir),
        finished: now_rfc3339(),
    };
    // A rerun that changed nothing keeps the manifest as it was: `distill` names its view files by the
    // manifest's digest, so a new `finished` time alone would make every later run rebuild them. Compared
    // as written (the bytes), since a float read back from JSON may differ from the one written in its
    // last bit.
    if let Ok(old) = Manifest::read(&job.dir) {
        let unchanged = Manifest {
            finished: old.finished.clone(),
            ..manifest.clone()
        };
        let mut bytes = serde_json::to_vec_pretty(&unchanged)?;
        bytes.push(b'\n');
        if std::fs::read(job.dir.join(vl2v::cache::MANIFEST_FILE)).ok() == Some(bytes) {
            return Ok(Some(old));
        }
    }
    manifest.write(&job.dir)?;
    Ok(Some(manifest))
}

/// The templates of job.json, which `embed --templates` may extend while other shards run.
fn cached_templates(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(crate::job::JOB_FILE)).ok()?;
    let job: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(job.get("templates")?.clone()).ok()
}

/// The job file is written when the cache is first claimed.
fn created_time(dir: &Path) -> String {
    std::fs::metadata(dir.join(crate::job::JOB_FILE))
        .and_then(|m| m.modified())
        .map(rfc3339_utc)
        .unwrap_or_else(|_| now_rfc3339())
}

pub fn cache_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir)
}

pub fn print_summary(
    job: &Job,
    stats: &RunStats,
    started: Instant,
    bytes_before: u64,
    complete: bool,
) {
    let seconds = started.elapsed().as_secs_f64();
    let bytes = cache_bytes(&job.dir);
    eprintln!(
        "embedded {} images ({} rows, {} per image), skipped {}, in {:.1} s: {:.1} images/s ({:.1} in the model); \
         wrote {:.1} MB, cache {:.1} MB",
        stats.images,
        stats.rows,
        1 + job.settings.views,
        stats.skipped,
        seconds,
        stats.images as f64 / seconds.max(1e-9),
        stats.images as f64 / stats.model_seconds.max(1e-9),
        bytes.saturating_sub(bytes_before) as f64 / 1e6,
        bytes as f64 / 1e6,
    );
    if complete {
        eprintln!(
            "cache complete: {}",
            job.dir.join("manifest.json").display()
        );
    } else {
        eprintln!("cache incomplete: other shards' parts are still missing; the last shard to finish writes the manifest");
    }
}
