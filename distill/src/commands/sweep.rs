//! `distill sweep`: a grid of `distill run`s over λ, trial seeds and seeds from the same caches, several
//! at a time. Each run is its own `distill run` process with its share of the cores (a small training
//! step parallelises poorly; independent runs use every core fully), its stderr kept in a log; the caches'
//! view files are memory-mapped, so concurrent runs share one copy of the features in the page cache.
//! Finished runs are skipped as `distill run` skips them, so an interrupted sweep resumes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::{hparam_selection, report, run};
use crate::data::cache_tables::open_manifest;

const AFTER_HELP: &str = "\
Example: the paper's λ sweep of ADiP Align, 9 values × 3 trial seeds × every held-out domain, two runs at a
time:

  distill sweep --cache T --student-cache S --algorithm adip-align --lambda 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9 \\
      --trial-seeds 0,1,2 --jobs 2

Each (λ, trial seed, seed) is one `distill run --test-domain all` with `--tag lambda<λ>` (its runs go to
<out>/<dataset>/<algorithm>@lambda<λ>/…, one row per λ in the report) and RAYON_NUM_THREADS =
CANDLE_NUM_THREADS = cores / jobs. Its stderr goes to <out>/<dataset>/sweep-logs/. Arguments after `--` are
passed to every run (e.g. -- --steps 2000 --swad). When all are done the report of the dataset is printed,
then, for several λ, DomainBed's hyper-parameter selection: per held-out domain and replicate the λ whose
selected evaluation has the best training-domain validation accuracy, and the held-out accuracy it gives.
Each λ runs with its own --hparams-seed (its index), so DomainBed's own tools tell them apart too.";

/// Run a grid of `distill run`s (λ × trial seed × seed) from the same caches, several at once.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The teacher cache (as `distill run --cache`).
    #[arg(long)]
    pub cache: PathBuf,
    /// The student cache (as `distill run --student-cache`).
    #[arg(long)]
    pub student_cache: Option<PathBuf>,
    /// The algorithm every run trains.
    #[arg(long)]
    pub algorithm: String,
    /// Comma-separated values of λ, as `distill run --lambda` takes them (in [0, 1] for adip-align,
    /// adip-distill and sd; finite and >= 0 for kd); each becomes a tagged configuration
    /// (`<algorithm>@lambda<λ>`).
    #[arg(long, value_delimiter = ',', value_parser = lambda_value, allow_negative_numbers = true)]
    pub lambda: Vec<String>,
    /// Comma-separated DomainBed trial seeds (the in/out split).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0",
        allow_negative_numbers = true
    )]
    pub trial_seeds: Vec<i64>,
    /// Comma-separated seeds (initialisation and sampling).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Runs at a time, at least 1 [default: the number of cores]. With several GPUs and no --device among
    /// the run arguments, the k-th concurrent job trains on cuda:(k mod GPUs).
    #[arg(long, value_parser = super::at_least(1))]
    pub jobs: Option<usize>,
    /// Run only shard I of N (0-based, e.g. 2/8): runs I, I+N, I+2N, … of the grid, so that a Slurm job
    /// array spreads one sweep over GPUs and machines sharing --out. Finished runs are skipped and an
    /// interrupted one resumes; the report is left to a run of the same sweep without --shard once every
    /// shard has finished (it only reports, the runs being done).
    #[arg(long, value_parser = vl2v::ranges::shard)]
    pub shard: Option<(u32, u32)>,
    /// Root of the run directories.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// More `distill run` arguments for every run (checked as `distill run` checks them before any run
    /// starts).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// A value of `--lambda`, kept as written (it names the configuration's tag) once it reads as a λ
/// `distill run` could take; the bound that depends on the algorithm is `run::check_args`'s.
fn lambda_value(text: &str) -> Result<String, String> {
    vl2v::ranges::non_negative(text).map(|_| text.to_string())
}

struct Job {
    name: String,
    args: Vec<String>,
}

/// Parses every run's arguments as `distill run` will and checks them with its `check_args`, so that a
/// value it would refuse (a λ of the sweep's, or an argument after `--`) fails the sweep before anything
/// runs or is written.
fn check_runs(jobs: &[Job], entry: &crate::algorithms::Entry) -> Result<()> {
    use clap::{Args as _, FromArgMatches as _};
    let command = run::Args::augment_args(clap::Command::new("run"));
    for job in jobs {
        let parsed = command
            .clone()
            .try_get_matches_from(&job.args)
            .and_then(|matches| run::Args::from_arg_matches(&matches))
            .map_err(|e| {
                // clap's first line is the reason; the rest is usage for a command line typed by hand.
                let text = e.to_string();
                let line = text.lines().next().unwrap_or_default();
                anyhow::anyhow!("distill run: {}", line.trim_start_matches("error: "))
            })?;
        run::check_args(&parsed, entry)?;
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    let entry = crate::algorithms::lookup(&args.algorithm)?;
    let lambdas: Vec<Option<&str>> = if args.lambda.is_empty() {
        vec![None]
    } else {
        args.lambda.iter().map(|l| Some(l.as_str())).collect()
    };
    let mut jobs = Vec::new();
    for (hparams_seed, &lambda) in lambdas.iter().enumerate() {
        for &trial in &args.trial_seeds {
            for &seed in &args.seeds {
                let mut a: Vec<String> = vec![
                    "run".into(),
                    "--cache".into(),
                    args.cache.display().to_string(),
                    "--algorithm".into(),
                    args.algorithm.clone(),
                    "--trial-seed".into(),
                    trial.to_string(),
                    "--seed".into(),
                    seed.to_string(),
                    "--out".into(),
                    args.out.display().to_string(),
                    // Each configuration its own DomainBed hparams_seed, so that DomainBed's own
                    // hyper-parameter selection tells them apart.
                    "--hparams-seed".into(),
                    hparams_seed.to_string(),
                ];
                if let Some(s) = &args.student_cache {
                    a.extend(["--student-cache".into(), s.display().to_string()]);
                }
                let mut name = args.algorithm.clone();
                if let Some(l) = lambda {
                    let tag = format!("lambda{l}");
                    a.extend([
                        "--lambda".into(),
                        l.to_string(),
                        "--tag".into(),
                        tag.clone(),
                    ]);
                    name = format!("{name}@{tag}");
                }
                a.extend(args.run_args.iter().cloned());
                jobs.push(Job {
                    name: format!("{name}-trial{trial}-seed{seed}"),
                    args: a,
                });
            }
        }
    }
    check_runs(&jobs, entry)?;
    let manifest = open_manifest(&args.cache)?;
    let grid = jobs.len();
    if let Some((i, n)) = args.shard {
        jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k % n as usize == i as usize)
            .map(|(_, job)| job)
            .collect();
        eprintln!(
            "sweep: shard {i}/{n}: {} of the grid's {grid} runs",
            jobs.len()
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = args.jobs.unwrap_or(cores).clamp(1, jobs.len().max(1));
    let threads = (cores / parallel).max(1);
    // Several GPUs: one per concurrent job, unless the runs name their device.
    let gpus = if args
        .run_args
        .iter()
        .any(|a| a == "--device" || a.starts_with("--device="))
    {
        0
    } else {
        vl2v::model::cuda_device_count()
    };
    if gpus > 1 {
        eprintln!("sweep: {gpus} GPUs; concurrent job k trains on cuda:(k mod {gpus})");
    }
    let logs = args.out.join(&manifest.dataset.name).join("sweep-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let exe = std::env::current_exe().context("cannot find the distill executable")?;
    eprintln!(
        "sweep: {} runs of `distill run --algorithm {}`, {parallel} at a time with {threads} thread(s) \
         each; logs in {}",
        jobs.len(),
        args.algorithm,
        logs.display()
    );

    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "sweep [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let (next, failed, jobs, logs, exe, bar) = (&next, &failed, &jobs, &logs, &exe, &bar);
        for slot in 0..parallel {
            let device: Vec<String> = if gpus > 1 {
                vec!["--device".into(), format!("cuda:{}", slot % gpus)]
            } else {
                Vec::new()
            };
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let log_path = logs.join(format!("{}.log", job.name));
                let outcome = std::fs::File::create(&log_path)
                    .map_err(anyhow::Error::from)
                    .and_then(|log| {
                        Ok(Command::new(exe)
                            .args(&job.args)
                            .args(&device)
                            .env("RAYON_NUM_THREADS", threads.to_string())
                            .env("CANDLE_NUM_THREADS", threads.to_string())
                            .stdout(Stdio::null())
                            .stderr(log)
                            .status()?)
                    });
                match outcome {
                    Ok(status) if status.success() => {}
                    Ok(status) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!(
                            "{} ({status}; see {})",
                            job.name,
                            log_path.display()
                        )),
                    Err(e) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{}: {e:#}", job.name)),
                }
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "sweep: {} of {} runs finished in {:.1} s",
        jobs.len() - failed.len(),
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("{} run(s) failed: {}", failed.len(), failed.join("; "));
    }
    if let Some((i, n)) = args.shard {
        eprintln!(
            "sweep: shard {i}/{n} finished; once every shard has, the same command without --shard \
             reports (finished runs are skipped)"
        );
        return Ok(());
    }
    crate::commands::report::run(&crate::commands::report::Args {
        runs: args.out.clone(),
        dataset: Some(manifest.dataset.name.clone()),
    })?;
    if lambdas.len() > 1 {
        let configurations: Vec<String> = lambdas
            .iter()
            .flatten()
            .map(|l| run::folder(&args.algorithm, Some(&format!("lambda{l}"))))
            .collect();
        let runs = report::finished_runs(&args.out.join(&manifest.dataset.name))?;
        let choices = hparam_selection::select(&runs, &configurations);
        let title = format!("{} — {} λ", manifest.dataset.name, args.algorithm);
        print!("\n{}", hparam_selection::markdown(&title, &choices));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vl2v::cache::{
        write_image_part, write_texts, ClassInfo, Counts, DatasetInfo, EmbeddingDtype, EncoderInfo,
        EncoderRole, ImageRow, Manifest, TextRow, ViewSet, FORMAT_VERSION, TEXTS_FILE,
    };
    use vl2v::views::ViewParams;

    use vl2v::rng::SplitMix64;

    /// OfficeHome's domains and image counts.
    const DOMAINS: [(&str, usize); 4] = [
        ("Art", 2427),
        ("Clipart", 4365),
        ("Product", 4439),
        ("Real World", 4357),
    ];
    const CLASSES: usize = 65;

    fn unit(v: &mut [f32]) {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
    }

    fn write(
        dir: &Path,
        role: EncoderRole,
        rows: &[ImageRow],
        dim: usize,
        texts: Option<Vec<TextRow>>,
    ) {
        std::fs::create_dir_all(dir.join("images")).unwrap();
        let mut parts = Vec::new();
        for (p, chunk) in rows.chunks(256).enumerate() {
            let name = format!("images/part-{p:05}.parquet");
            write_image_part(&dir.join(&name), dim, EmbeddingDtype::F32, chunk, &[]).unwrap();
            parts.push(name);
        }
        if let Some(t) = &texts {
            write_texts(&dir.join(TEXTS_FILE), dim, EmbeddingDtype::F32, t).unwrap();
        }
        let student = role == EncoderRole::Student;
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: "sweep-bench".into(),
            dataset: DatasetInfo {
                name: "officehome".into(),
                root: "/nonexistent".into(),
                domains: DOMAINS.iter().map(|d| d.0.to_string()).collect(),
                classes: (0..CLASSES)
                    .map(|c| ClassInfo {
                        folder: format!("class_{c:02}"),
                        name: format!("class {c:02}"),
                    })
                    .collect(),
            },
            encoder: EncoderInfo {
                model: "random".into(),
                revision: None,
                commit: None,
                weights_sha256: "00".repeat(32),
                role,
                architecture: if student {
                    "student vit-base, 768 features".into()
                } else {
                    "clip".into()
                },
                embedding_dim: dim,
                normalized: !student,
            },
            preprocess: serde_json::json!({}),
            views: ViewSet {
                count: 0,
                seed: 0,
                recipe: "none".into(),
            },
            embedding_dtype: EmbeddingDtype::F32,
            logit_scale: (!student).then_some(100.0),
            templates: if student {
                vec![]
            } else {
                vec![crate::commands::analyze::PHOTO_TEMPLATE.into()]
            },
            counts: Counts {
                images: rows.len() as u64,
                rows: rows.len() as u64,
                ..Counts::default()
            },
            skipped: vec![],
            parts,
            shards: 1,
            computed_on: Vec::new(),
            created: "2026-01-01T00:00:00Z".into(),
            finished: "2026-01-01T00:00:00Z".into(),
        }
        .write(dir)
        .unwrap();
    }

    /// Writes an OfficeHome-sized teacher cache (512-d, unit, clustered by class) and student cache
    /// (768-d, a noisy random projection of the teacher's) under `$VL2V_SWEEP_CACHES/{teacher,student}`:
    /// the input of tests/bench/run_sweep_bench.sh.
    #[test]
    #[ignore = "benchmark input: tests/bench/run_sweep_bench.sh"]
    fn write_officehome_sized_caches() {
        let root = std::env::var("VL2V_SWEEP_CACHES").expect("VL2V_SWEEP_CACHES");
        let root = Path::new(&root);
        let (dt, ds) = (512, 768);
        let mut rng = SplitMix64::new(11);
        let mut gauss = || (rng.unit_f32() - 0.5) * 3.46;
        let centres: Vec<Vec<f32>> = (0..CLASSES)
            .map(|_| (0..dt).map(|_| gauss()).collect())
            .collect();
        let mixing: Vec<f32> = (0..dt * ds).map(|_| gauss() / (dt as f32).sqrt()).collect();
        let (mut teacher, mut student) = (Vec::new(), Vec::new());
        for (domain, count) in DOMAINS {
            for i in 0..count {
                let label = i % CLASSES;
                let mut t: Vec<f32> = centres[label].iter().map(|c| c + 1.5 * gauss()).collect();
                unit(&mut t);
                let s: Vec<f32> = (0..ds)
                    .map(|j| {
                        (0..dt).map(|k| t[k] * mixing[k * ds + j]).sum::<f32>() + 0.1 * gauss()
                    })
                    .collect();
                let row = |embedding| ImageRow {
                    path: format!("{domain}/class_{label:02}/{i:05}.jpg"),
                    domain: domain.into(),
                    label: label as i32,
                    view: 0,
                    params: ViewParams::identity(),
                    embedding,
                };
                teacher.push(row(t));
                student.push(row(s));
            }
        }
        let texts = (0..CLASSES)
            .map(|c| {
                let mut e = centres[c].clone();
                unit(&mut e);
                TextRow {
                    label: c as i32,
                    class_name: format!("class {c:02}"),
                    template: crate::commands::analyze::PHOTO_TEMPLATE.into(),
                    domain: None,
                    prompt: format!("a photo of a class {c:02}"),
                    embedding: e,
                }
            })
            .collect();
        write(
            &root.join("teacher"),
            EncoderRole::Teacher,
            &teacher,
            dt,
            Some(texts),
        );
        write(
            &root.join("student"),
            EncoderRole::Student,
            &student,
            ds,
            None,
        );
    }
}
