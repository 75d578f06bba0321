//! `distill study views`: does caching cost accuracy? The same algorithms trained on the first K cached
//! views of one cache (K = 0: the evaluation view alone) for several K, and with the online teacher (a fresh
//! augmentation of every sample at every step, as the official pipeline), three trial seeds each; then one
//! table and one chart of accuracy against K, with the online result as a line, and what each cost: wall
//! time and teacher forwards. Every run is an ordinary tagged `distill run` (`<algorithm>@views<K>`,
//! `<algorithm>@online`), so the study resumes as runs do and `distill report` shows its rows too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use crate::commands::report::{self, Table};
use crate::commands::run;
use crate::data::cache_tables::open_manifest;
use crate::training::run_dir::{self, DONE};

const AFTER_HELP: &str = "\
Example: adip-align, adip-distill and kd from the first 0, 1, 2, 4 and 8 views of a cache of 8, and with the
online teacher, three trial seeds:

  distill study views --cache T --student-cache S --views 0,1,2,4,8 -- --steps 2001

Runs go to <out>/<dataset>/<algorithm>@views<K>/… and <algorithm>@online/… (adip-align online: the frozen
student encodes the same fresh views as the teacher; adip-distill's arms distil from adip-align's run of the
same arm). Logs: <out>/<dataset>/study-logs/. The table and chart: study-views.md and
study-views.png beside report.md; each run's wall time is kept in study-views.json.";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub study: Study,
}

#[derive(Debug, clap::Subcommand)]
pub enum Study {
    /// Accuracy against the number of cached views K, and with the online teacher.
    #[command(after_help = AFTER_HELP)]
    Views(ViewsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ViewsArgs {
    /// The teacher cache (as `distill run --cache`).
    #[arg(long)]
    pub cache: PathBuf,
    /// The student cache of the same images and views.
    #[arg(long)]
    pub student_cache: PathBuf,
    /// Comma-separated K: train on the first K augmented views (at most the cache's) [default: 0, 1, 2, 4,
    /// … and the cache's K].
    #[arg(long, value_delimiter = ',')]
    pub views: Vec<usize>,
    /// Leave out the online-teacher arm.
    #[arg(long)]
    pub no_online: bool,
    /// Comma-separated algorithms (adip-align, adip-distill, kd, and the others that train on the images).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "adip-align,adip-distill,kd"
    )]
    pub algorithms: Vec<String>,
    /// Comma-separated DomainBed trial seeds.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,2",
        allow_negative_numbers = true
    )]
    pub trial_seeds: Vec<i64>,
    /// Root of the run directories.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// More `distill run` arguments for every run.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.study {
        Study::Views(a) => views(a),
    }
}

/// One arm of the study: the first K views, or the online teacher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Arm {
    Views(usize),
    Online,
}

impl Arm {
    fn tag(self) -> String {
        match self {
            Arm::Views(k) => format!("views{k}"),
            Arm::Online => "online".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Arm::Views(k) => k.to_string(),
            Arm::Online => "online".into(),
        }
    }
}

/// 0, 1, 2, 4, … below `max`, then `max`.
fn default_views(max: usize) -> Vec<usize> {
    let mut v = vec![0];
    let mut k = 1;
    while k < max {
        v.push(k);
        k *= 2;
    }
    if max > 0 {
        v.push(max);
    }
    v
}

fn views(args: &ViewsArgs) -> Result<()> {
    let manifest = open_manifest(&args.cache)?;
    let cached = manifest.views.count as usize;
    let ks = if args.views.is_empty() {
        default_views(cached)
    } else {
        args.views.clone()
    };
    if let Some(k) = ks.iter().find(|&&k| k > cached) {
        bail!(
            "--views {k}: {} holds {cached} augmented views per image",
            args.cache.display()
        );
    }
    let mut arms: Vec<Arm> = ks.iter().map(|&k| Arm::Views(k)).collect();
    arms.sort();
    arms.dedup();
    if !args.no_online {
        arms.push(Arm::Online);
    }
    for name in &args.algorithms {
        let entry = crate::algorithms::lookup(name)?;
        ensure!(
            entry.needs_student(),
            "study views compares students: {name} trains no student (adip-align, adip-distill, kd, …)"
        );
    }
    // Align before Distill, so that each adip-distill arm finds its adip-align run of the same tag.
    let mut algorithms = args.algorithms.clone();
    algorithms.sort_by_key(|a| usize::from(a != "adip-align"));

    let dataset = manifest.dataset.name.clone();
    let dataset_dir = args.out.join(&dataset);
    let logs = dataset_dir.join("study-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let times_path = dataset_dir.join("study-views.json");
    let mut times: BTreeMap<String, f64> = match std::fs::read_to_string(&times_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a study's times file", times_path.display()))?,
        Err(_) => BTreeMap::new(),
    };
    let exe = std::env::current_exe().context("cannot find the distill executable")?;
    let total = args.trial_seeds.len() * arms.len() * algorithms.len();
    let mut done = 0;
    for &trial in &args.trial_seeds {
        for &arm in &arms {
            for algorithm in &algorithms {
                done += 1;
                let folder = run::folder(algorithm, Some(&arm.tag()));
                let key = format!("{folder} trial{trial}");
                let mut a: Vec<String> = vec![
                    "run".into(),
                    "--cache".into(),
                    args.cache.display().to_string(),
                    "--student-cache".into(),
                    args.student_cache.display().to_string(),
                    "--algorithm".into(),
                    algorithm.clone(),
                    "--trial-seed".into(),
                    trial.to_string(),
                    "--out".into(),
                    args.out.display().to_string(),
                    "--tag".into(),
                    arm.tag(),
                ];
                match arm {
                    Arm::Views(k) => a.extend(["--views".into(), k.to_string()]),
                    Arm::Online => a.extend(["--teacher".into(), "online".into()]),
                }
                a.extend(args.run_args.iter().cloned());
                if finished(
                    &args.out,
                    &dataset,
                    &folder,
                    &manifest.dataset.domains,
                    trial,
                ) {
                    eprintln!("study [{done}/{total}] {key}: finished, skipped");
                    continue;
                }
                eprintln!("study [{done}/{total}] {key}");
                let log_path = logs.join(format!("{folder}-trial{trial}.log"));
                let log = std::fs::File::create(&log_path)
                    .with_context(|| format!("cannot create {}", log_path.display()))?;
                let started = std::time::Instant::now();
                let status = Command::new(&exe)
                    .args(&a)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .status()
                    .context("cannot start distill run")?;
                ensure!(
                    status.success(),
                    "{key} failed ({status}); see {}",
                    log_path.display()
                );
                times.insert(key, started.elapsed().as_secs_f64());
                vl2v::cache::write_bytes_atomic(
                    &times_path,
                    format!("{:#}\n", json!(times)).as_bytes(),
                )
                .with_context(|| format!("cannot write {}", times_path.display()))?;
            }
        }
    }
    let summary = Summary::new(&args.out, &dataset, &algorithms, &arms, &times, &manifest)?;
    let md = summary.markdown(&dataset);
    let md_path = dataset_dir.join("study-views.md");
    vl2v::cache::write_bytes_atomic(&md_path, md.as_bytes())
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let png = dataset_dir.join("study-views.png");
    summary.chart(&png, &dataset)?;
    print!("{md}");
    eprintln!(
        "study: table and chart in {} and {}",
        md_path.display(),
        png.display()
    );
    Ok(())
}

/// Whether every held-out domain's run of `folder` for `trial` has finished (seed 0, as the study runs).
fn finished(out: &Path, dataset: &str, folder: &str, domains: &[String], trial: i64) -> bool {
    domains.iter().all(|d| {
        run_dir::run_dir(out, dataset, folder, d, 0, trial)
            .join(DONE)
            .is_file()
    })
}

/// One row of the study: an algorithm's accuracy and cost at one arm.
struct Row {
    algorithm: String,
    arm: Arm,
    /// Per held-out domain, then Avg-OOD: the per-replicate accuracies (fractions).
    cells: Vec<Vec<f64>>,
    /// Mean wall seconds of a trial seed's runs (every held-out domain), where the study timed them.
    seconds: Option<f64>,
    /// Teacher image forwards per trial seed: (1 + K)·N for a cache of K views (what `embed --views K` would
    /// run), steps·batch·(domains − 1) per held-out domain online.
    forwards: Option<u64>,
}

struct Summary {
    domains: Vec<String>,
    rows: Vec<Row>,
}

impl Summary {
    fn new(
        out: &Path,
        dataset: &str,
        algorithms: &[String],
        arms: &[Arm],
        times: &BTreeMap<String, f64>,
        manifest: &vl2v::cache::Manifest,
    ) -> Result<Self> {
        let dataset_dir = out.join(dataset);
        let results = report::finished_runs(&dataset_dir)?;
        let table = Table::new(&results);
        let images = manifest.counts.images;
        let mut rows = Vec::new();
        for algorithm in algorithms {
            for &arm in arms {
                let folder = run::folder(algorithm, Some(&arm.tag()));
                let Some((_, cells)) = table.rows.iter().find(|(name, _)| *name == folder) else {
                    continue;
                };
                let mut cells = cells.clone();
                cells.remove(cells.len() - 2); // Avg-ID
                let secs: Vec<f64> = times
                    .iter()
                    .filter(|(k, _)| k.rsplit_once(' ').is_some_and(|(f, _)| f == folder))
                    .map(|(_, s)| *s)
                    .collect();
                let forwards = match arm {
                    Arm::Views(k) => Some((1 + k as u64) * images),
                    Arm::Online => online_forwards(out, dataset, &folder, manifest)?,
                };
                rows.push(Row {
                    algorithm: algorithm.clone(),
                    arm,
                    cells,
                    seconds: (!secs.is_empty())
                        .then(|| secs.iter().sum::<f64>() / secs.len() as f64),
                    forwards,
                });
            }
        }
        Ok(Summary {
            domains: table.domains.clone(),
            rows,
        })
    }

    fn markdown(&self, dataset: &str) -> String {
        let mut s = format!(
            "## {dataset}: accuracy against cached views\n\n\
             Held-out accuracy (%) of each algorithm trained on the first K cached augmented views per image \
             (K = 0: the evaluation view alone) and with the online teacher (a fresh augmentation of every \
             sample at every step), selected by training-domain validation; mean ± standard error over \
             replicates. Wall time: seconds per trial seed (every held-out domain) where this study ran it. \
             Teacher forwards per trial seed: (1 + K)·images for a cache of K views, steps × batch × \
             training domains per held-out domain online.\n\n| algorithm | views |"
        );
        for d in &self.domains {
            s.push_str(&format!(" {d} |"));
        }
        s.push_str(" Avg-OOD | wall s | teacher forwards |\n|---|---|");
        s.push_str(&"---|".repeat(self.domains.len() + 3));
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} | {} |", r.algorithm, r.arm.label()));
            for values in &r.cells {
                s.push_str(&format!(" {} |", report::format_cell(values)));
            }
            let secs = r.seconds.map_or("–".into(), |v| format!("{v:.0}"));
            let fw = r.forwards.map_or("–".into(), |v| v.to_string());
            s.push_str(&format!(" {secs} | {fw} |\n"));
        }
        s
    }

    fn chart(&self, path: &Path, dataset: &str) -> Result<()> {
        let mut lines = Vec::new();
        for algorithm in self
            .rows
            .iter()
            .map(|r| &r.algorithm)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let ood =
                |r: &Row| report::cell_percent(r.cells.last().map_or(&[][..], |v| v.as_slice()));
            let points: Vec<(usize, Option<(f64, f64)>)> = self
                .rows
                .iter()
                .filter(|r| &r.algorithm == algorithm)
                .filter_map(|r| match r.arm {
                    Arm::Views(k) => Some((k, ood(r))),
                    Arm::Online => None,
                })
                .collect();
            let online = self
                .rows
                .iter()
                .find(|r| &r.algorithm == algorithm && r.arm == Arm::Online)
                .and_then(ood);
            lines.push(report::line_chart::Line {
                name: algorithm.clone(),
                points,
                online,
            });
        }
        report::line_chart::views_chart_png(
            path,
            &format!(
                "{dataset}: Avg-OOD accuracy (%) against cached views K (dashed: online teacher)"
            ),
            &lines,
        )
    }
}

/// Teacher forwards of an online run, per trial seed: steps × batch × training domains, summed over
/// held-out domains (from the runs' records).
fn online_forwards(
    out: &Path,
    dataset: &str,
    folder: &str,
    manifest: &vl2v::cache::Manifest,
) -> Result<Option<u64>> {
    let domains = &manifest.dataset.domains;
    let mut total = 0u64;
    for d in domains {
        let dir = run_dir::run_dir(out, dataset, folder, d, 0, 0);
        let Ok(records) = run_dir::read_results(&dir) else {
            return Ok(None);
        };
        let Some((_, first)) = records.first() else {
            return Ok(None);
        };
        let steps = first["args"]["steps"].as_u64();
        let batch = first["hparams"]["batch_size"].as_u64();
        let (Some(steps), Some(batch)) = (steps, batch) else {
            return Ok(None);
        };
        total += steps * batch * (domains.len() as u64 - 1);
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_views_double_up_to_the_cache() {
        assert_eq!(default_views(8), [0, 1, 2, 4, 8]);
        assert_eq!(default_views(6), [0, 1, 2, 4, 6]);
        assert_eq!(default_views(1), [0, 1]);
        assert_eq!(default_views(0), [0]);
    }
}
