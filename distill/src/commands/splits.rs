//! `distill splits`: DomainBed's in/out assignment of every image, for auditing.
//!
//! The split of each domain is [`vl2v::splits::domainbed_split`] over the domain's images in cache order,
//! which is DomainBed's order (`ImageFolder`: sorted class folder, then sorted path; `embed` writes parts as
//! contiguous ranges of that list, in order). The environment index is the domain's position in the
//! manifest's sorted domain list, as DomainBed's `env_i`.
//!
//! Caveat: DomainBed splits the full `ImageFolder` list of an environment. An image `embed` skipped as
//! unreadable is absent from the cache (listed in the manifest's `skipped`); DomainBed would have crashed
//! on it rather than left it out. The split here is computed over the images present in the cache, so in a
//! domain with skipped images the indices (and therefore the split) differ from what DomainBed would give
//! for the same folder once the bad files are fixed or removed.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vl2v::cache::{image_rows_from_batch, ImageBatches, Manifest};
use vl2v::splits::{domainbed_split, holdout_count, seed_hash_pair};

const AFTER_HELP: &str = "\
Output: CSV with header `path,domain,split` (split = in or out), one row per image in cache order; \
fields are quoted per RFC 4180 when needed. Per-domain counts and seeds go to stderr.

The split is computed over the images present in the cache. DomainBed splits each domain's full \
ImageFolder list; an image that embed skipped as unreadable (manifest `skipped`) is missing from the cache, \
where DomainBed would have crashed on it, so a domain with skipped images gets a different split than \
DomainBed would give once those files are fixed or removed.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A cache directory written by `embed` (holds manifest.json).
    #[arg(long)]
    pub cache: PathBuf,

    /// DomainBed's trial seed: domain i is shuffled with seed_hash(trial_seed, i).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub trial_seed: i64,

    /// Fraction of each domain held out as `out` (DomainBed's holdout_fraction): int(N * F) images; in
    /// (0, 1), as `distill run` takes it.
    #[arg(
        long,
        default_value_t = 0.2,
        value_parser = vl2v::ranges::open_unit,
        allow_negative_numbers = true
    )]
    pub holdout_fraction: f64,

    /// Write the CSV to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let manifest = Manifest::read(&args.cache)?;
    let images = view0_images(args, &manifest)?;

    let domains = &manifest.dataset.domains;
    let mut per_domain: Vec<Vec<usize>> = vec![Vec::new(); domains.len()];
    for (row, image) in images.iter().enumerate() {
        per_domain[image.env].push(row);
    }
    let mut split_of_row = vec![""; images.len()];
    for (env, rows) in per_domain.iter().enumerate() {
        let split = domainbed_split(rows.len(), args.holdout_fraction, args.trial_seed, env);
        for (index, is_out) in split.out_mask().into_iter().enumerate() {
            split_of_row[rows[index]] = if is_out { "out" } else { "in" };
        }
        let skipped = manifest
            .skipped
            .iter()
            .filter(|s| s.path.split('/').next() == Some(domains[env].as_str()))
            .count();
        let n_out = holdout_count(rows.len(), args.holdout_fraction);
        eprintln!(
            "{}: env {env}, {} images, out {n_out}, in {}, seed_hash({}, {env}) = {}{}",
            domains[env],
            rows.len(),
            rows.len() - n_out,
            args.trial_seed,
            seed_hash_pair(args.trial_seed, env as i64),
            if skipped > 0 {
                format!(" ({skipped} skipped by embed: split over the images present)")
            } else {
                String::new()
            }
        );
    }

    let mut csv = String::from("path,domain,split\n");
    for (image, split) in images.iter().zip(&split_of_row) {
        csv.push_str(&csv_field(&image.path));
        csv.push(',');
        csv.push_str(&csv_field(&domains[image.env]));
        csv.push(',');
        csv.push_str(split);
        csv.push('\n');
    }
    match &args.out {
        Some(path) => {
            vl2v::cache::write_bytes_atomic(path, csv.as_bytes())?;
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(csv.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("cannot write to stdout")?,
            }
        }
    }
    Ok(())
}

struct Image {
    path: String,
    env: usize,
}

/// The cache's images (view 0 rows), in cache order, checked to be grouped by domain in manifest order and
/// sorted by label within a domain, as `embed` writes them: the split indices rely on that order.
fn view0_images(args: &Args, manifest: &Manifest) -> Result<Vec<Image>> {
    let domains = &manifest.dataset.domains;
    let parts: Vec<PathBuf> = manifest.parts.iter().map(|p| args.cache.join(p)).collect();
    let mut images: Vec<Image> = Vec::new();
    let mut seen = HashSet::new();
    let mut last: Option<(usize, i32)> = None;
    for batch in ImageBatches::new(parts) {
        for row in image_rows_from_batch(&batch?)? {
            if row.view != 0 {
                continue;
            }
            let Some(env) = domains.iter().position(|d| *d == row.domain) else {
                bail!(
                    "{}: image {} has domain {:?}, which the manifest does not list",
                    args.cache.display(),
                    row.path,
                    row.domain
                );
            };
            if last.is_some_and(|prev| prev > (env, row.label)) {
                bail!(
                    "{}: image {} is out of order (images must be grouped by domain in manifest order, \
                     then by class): not a cache written by embed",
                    args.cache.display(),
                    row.path
                );
            }
            last = Some((env, row.label));
            if !seen.insert(row.path.clone()) {
                bail!(
                    "{}: image {} appears twice with view 0",
                    args.cache.display(),
                    row.path
                );
            }
            images.push(Image {
                path: row.path,
                env,
            });
        }
    }
    if images.len() as u64 != manifest.counts.images {
        bail!(
            "{}: the parts hold {} images but the manifest counts {}",
            args.cache.display(),
            images.len(),
            manifest.counts.images
        );
    }
    Ok(images)
}

/// One CSV field, quoted per RFC 4180 when it contains a comma, a double quote or a line break.
fn csv_field(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\"")).into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("Real World/dog/a.png"), "Real World/dog/a.png");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
