//! `distill run`: train and evaluate an algorithm leave-one-domain-out with DomainBed's protocol, from a
//! teacher cache (and a student cache for algorithms that train on student features).

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use crate::algorithms::{self, Overrides, Setup};
use crate::analyze::PHOTO_TEMPLATE;
use crate::data::{DomainSplits, ViewTable};
use crate::evaluate::EvalSet;
use crate::teacher_cache::{open_manifest, TeacherCache};
use crate::trainer::{self, RunConfig, RunData, Selected};

const AFTER_HELP: &str = "\
Algorithms:
  zeroshot     the teacher's zero-shot head (\"a photo of a {}\") on teacher image embeddings; no training
  erm-lp       linear probe Linear(d_student → classes), cross-entropy, Adam (needs --student-cache)
  adip-align   ADiP Align: projection Linear(d_student → d_teacher) trained with
               λ·(−cos(p, I)) + (1−λ)·(−cos(p, T_y)); predicts with the zero-shot head (needs --student-cache)

Protocol: each domain in turn is held out; DomainBed's in/out split per domain (seed_hash(trial_seed, env));
each step draws --batch-size images per training domain with replacement from its in split, each with a
random augmented view (view 0 when the cache has none). Evaluation (view 0) at step 0, every
--checkpoint-freq steps and at the last step; selection = training-domain validation (first maximum of the
mean out-split accuracy of the training domains); reported = the held-out domain's in-split accuracy.

Runs go to <out>/<dataset>/<algorithm>/<test-domain>/seed<k>/ (seed<k>-trial<t> when --trial-seed is not 0):
results.jsonl, model.safetensors (selected parameters), checkpoint.safetensors (to resume), done. Runs with
`done` are skipped; unfinished runs resume from their checkpoint. A markdown table goes to stdout.";

/// Train and evaluate an algorithm leave-one-domain-out (DomainBed protocol) from cached embeddings.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A teacher cache directory written by `embed` (holds manifest.json and texts.parquet).
    #[arg(long)]
    pub cache: PathBuf,

    /// A cache of student features with the same images and views as the teacher's (joined on path and
    /// view); required by erm-lp and adip-align.
    #[arg(long)]
    pub student_cache: Option<PathBuf>,

    /// zeroshot, erm-lp or adip-align.
    #[arg(long)]
    pub algorithm: String,

    /// The held-out domain (a domain folder name), or `all` for every domain in turn.
    #[arg(long, default_value = "all")]
    pub test_domain: String,

    /// Training steps [default: 5001; 15001 for domainnet].
    #[arg(long)]
    pub steps: Option<usize>,

    /// Evaluate every N steps [default: 200; 1000 for domainnet].
    #[arg(long)]
    pub checkpoint_freq: Option<usize>,

    /// Images per training domain per step [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,

    /// Adam learning rate [default: 5e-5].
    #[arg(long)]
    pub lr: Option<f64>,

    /// Adam weight decay (L2, torch's Adam) [default: 0].
    #[arg(long)]
    pub weight_decay: Option<f64>,

    /// adip-align: weight λ of the image term [default: 0.5].
    #[arg(long)]
    pub lambda: Option<f64>,

    /// Seeds parameter initialisation and minibatch sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// DomainBed's trial seed (the in/out split).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub trial_seed: i64,

    /// Fraction of each domain held out as its out split.
    #[arg(long, default_value_t = 0.2)]
    pub holdout_fraction: f64,

    /// Root of the run directories.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,

    /// Testing aid: fail right after the evaluation of this step, as if the run had been killed.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

pub fn run(args: &Args) -> Result<()> {
    let entry = algorithms::lookup(&args.algorithm)?;
    ensure!(
        (0.0..1.0).contains(&args.holdout_fraction),
        "--holdout-fraction must be in [0, 1), got {}",
        args.holdout_fraction
    );
    if entry.needs_student && args.student_cache.is_none() {
        bail!(
            "{} trains on student features: pass --student-cache DIR (a cache of the same images and \
             views as --cache)",
            entry.name
        );
    }
    let teacher = TeacherCache::open(&args.cache)?;
    let m = &teacher.manifest;
    let domains = &m.dataset.domains;
    let test_domains: Vec<usize> = if args.test_domain == "all" {
        (0..domains.len()).collect()
    } else {
        match domains.iter().position(|d| *d == args.test_domain) {
            Some(i) => vec![i],
            None => bail!(
                "unknown domain '{}'; valid: all, {}",
                args.test_domain,
                domains.join(", ")
            ),
        }
    };
    ensure!(
        domains.len() >= 2,
        "leave-one-domain-out needs at least two domains; {} has {}",
        args.cache.display(),
        domains.len()
    );
    let domainnet = m.dataset.name.eq_ignore_ascii_case("domainnet");
    let steps = args.steps.unwrap_or(if domainnet { 15001 } else { 5001 });
    let checkpoint_freq = args
        .checkpoint_freq
        .unwrap_or(if domainnet { 1000 } else { 200 });
    let texts = teacher.texts.get(PHOTO_TEMPLATE, None).with_context(|| {
        format!(
            "{}: texts.parquet has no template \"{PHOTO_TEMPLATE}\" (embed writes it by default)",
            args.cache.display()
        )
    })?;

    let views = m.views.count as usize + 1;
    let paths = teacher.images.paths();
    let teacher_views = ViewTable::load(&args.cache, m, paths, views, "teacher")?;
    let student = match (&args.student_cache, entry.needs_student) {
        (Some(dir), true) => {
            let sm = open_manifest(dir)?;
            Some(ViewTable::load(dir, &sm, paths, views, "student")?)
        }
        _ => None,
    };
    let labels = teacher.images.labels();
    let splits = DomainSplits::new(
        teacher.images.domains(),
        domains.len(),
        args.holdout_fraction,
        args.trial_seed,
    );
    let classes = m.dataset.classes.len();
    let overrides = Overrides {
        lr: args.lr,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size,
        lambda: args.lambda,
    };

    let mut summaries: Vec<(usize, Selected)> = Vec::new();
    for &test in &test_domains {
        let setup = Setup {
            student_dim: student.as_ref().map(ViewTable::dim),
            teacher_dim: teacher_views.dim(),
            classes,
            texts,
            logit_scale: m.logit_scale.unwrap_or(100.0),
            seed: args.seed,
        };
        let mut algorithm = (entry.build)(&setup, &overrides)?;
        let gather = |images: &[usize]| {
            (
                student
                    .as_ref()
                    .map_or_else(Vec::new, |s| s.gather_view0(images)),
                teacher_views.gather_view0(images),
                images.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
            )
        };
        let mut eval = Vec::new();
        for d in 0..domains.len() {
            let sets: &[(&str, &[usize], Option<&'static str>)] = if d == test {
                &[
                    ("in", &splits.in_[d], Some("in")),
                    ("out", &splits.out[d], Some("out")),
                ]
            } else {
                &[("out", &splits.out[d], None)]
            };
            for &(split, images, test_split) in sets {
                let (student, teacher, labels) = gather(images);
                eval.push(EvalSet {
                    key: format!("env{d}_{split}_acc"),
                    test_split,
                    student,
                    teacher,
                    labels,
                });
            }
        }
        let pools: Vec<Vec<usize>> = (0..domains.len())
            .filter(|&d| d != test)
            .map(|d| splits.in_[d].clone())
            .collect();
        let hparams = algorithm.hparams();
        let config = RunConfig {
            steps,
            checkpoint_freq,
            seed: args.seed,
            args: json!({
                "dataset": m.dataset.name,
                "algorithm": entry.name,
                "test_envs": [test],
                "test_domain": domains[test],
                "trial_seed": args.trial_seed,
                "seed": args.seed,
                "hparams": hparams,
                "steps": steps,
                "checkpoint_freq": checkpoint_freq,
                "holdout_fraction": args.holdout_fraction,
                "cache": args.cache,
                "student_cache": args.student_cache,
            }),
            label: format!("{} {} (test {})", m.dataset.name, entry.name, domains[test]),
            stop_after: args.stop_after,
        };
        let dir = crate::runs::run_dir(
            &args.out,
            &m.dataset.name,
            entry.name,
            &domains[test],
            args.seed,
            args.trial_seed,
        );
        let data = RunData {
            labels,
            student: student.as_ref(),
            teacher: &teacher_views,
            pools,
            eval,
            classes,
        };
        let chosen = trainer::run(&dir, algorithm.as_mut(), &data, &config)?;
        summaries.push((test, chosen));
    }
    print!(
        "{}",
        table(&m.dataset.name, entry.name, domains, &summaries)
    );
    Ok(())
}

/// One row per held-out domain (selected step, its test-domain in accuracy and training-domain
/// validation accuracy), then the averages: OOD (test accuracy) and ID (validation).
fn table(dataset: &str, algorithm: &str, domains: &[String], rows: &[(usize, Selected)]) -> String {
    let mut s = format!(
        "## {dataset} — {algorithm} (training-domain validation)\n\n\
         | test domain | env | selected step | test acc (in) % | train-domain val % |\n\
         |---|---|---|---|---|\n"
    );
    for (env, sel) in rows {
        s.push_str(&format!(
            "| {} | {env} | {} | {:.1} | {:.1} |\n",
            domains[*env],
            sel.step,
            100.0 * sel.test_in,
            100.0 * sel.train_out
        ));
    }
    if !rows.is_empty() {
        let n = rows.len() as f64;
        let ood = rows.iter().map(|(_, r)| r.test_in).sum::<f64>() / n;
        let id = rows.iter().map(|(_, r)| r.train_out).sum::<f64>() / n;
        s.push_str(&format!(
            "| **Avg** (OOD / ID) | | | {:.1} | {:.1} |\n",
            100.0 * ood,
            100.0 * id
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_domain_and_averages() {
        let sel = |step, train_out, test_in| Selected {
            step,
            train_out,
            test_in,
        };
        let t = table(
            "toy",
            "erm-lp",
            &["a".into(), "b".into()],
            &[(0, sel(3, 0.5, 0.25)), (1, sel(0, 1.0, 0.75))],
        );
        assert!(t.contains("| a | 0 | 3 | 25.0 | 50.0 |"), "{t}");
        assert!(t.contains("| b | 1 | 0 | 75.0 | 100.0 |"), "{t}");
        assert!(
            t.contains("| **Avg** (OOD / ID) | | | 50.0 | 75.0 |"),
            "{t}"
        );
    }
}
