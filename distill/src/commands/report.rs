//! `distill report`: DomainBed's `collect_results` for the runs written by `distill run`.
//!
//! Every finished run (`<runs>/<dataset>/<algorithm>/<test-domain>/seed<k>[-trial<t>]/` with `done`) is
//! reduced to its selected evaluation (first maximum of `train_out`, training-domain validation): its
//! `test_in` is the OOD figure for the held-out domain, its `train_out` the ID figure. Per dataset, one
//! row per algorithm, one column per held-out domain (in the order of `args.test_envs`), then `Avg-ID` and
//! `Avg-OOD`. Each cell is `100·mean ± 100·std/sqrt(n)` (population std, as numpy's) over the replicates
//! (trial seed × seed); the averages first average the held-out domains within each replicate.
//!
//! A `distill run --swad` run has a last line with `"swad": true` (the SWAD-averaged model): it takes no part
//! in selection, and its `test_in` is the run's OOD figure instead (the paper's headline numbers are SWAD's),
//! its `train_out` the ID figure (the official code's "SWAD (inD)").
//!
//! Beside each `report.md`, `report.png` charts the same cells (mean ± SE in percent) as grouped bars: one
//! group per column, one series per algorithm (see `chart`); `report.json` lists every run's selection
//! exactly; `domainbed/` is the flat folder DomainBed's own `collect_results.py` reads (see `domainbed`).

mod chart;
mod domainbed;
pub mod line_chart;
mod paper;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use vl2v::cache::write_bytes_atomic;

use crate::training::run_dir;
use crate::training::trainer::{self, Selected};

const AFTER_HELP: &str = "\
Reads <runs>/<dataset>/<algorithm>/<test-domain>/seed<k>[-trial<t>]/results.jsonl of every finished run
(with `done`; unfinished runs are listed on stderr and skipped). Per run: the evaluation with the first
maximum of train_out (training-domain validation); its test_in is the OOD accuracy for the held-out domain,
its train_out the ID accuracy. Runs with SWAD (distill run --swad) report the test_in and train_out of their
\"swad\": true line (the averaged model, as the official code does: \"SWAD\" and \"SWAD (inD)\") as OOD and
ID instead; that line is never selected. Per dataset, a markdown table (algorithm × held-out domain, then Avg-ID and
Avg-OOD) of mean ± standard error (population std / sqrt(n)) in percent over replicates (trial seed ×
seed) goes to stdout and to <runs>/<dataset>/report.md. On the paper's datasets (officehome, terraincognita,
vlcs, pacs, domainnet) a last column, paper Avg-OOD, gives the published OOD accuracy of the row's method
(distill/paper/tables.json, from the paper's Tables 1-2: Table 2's ImageNet ViT-B/16 student for erm-lp,
erm-ft, lp-ft, kd, rise and adip-distill; Table 1's white box for zeroshot, wise-ft and sd; – for rows the
paper lacks). The averages average the held-out domains within
each replicate first (replicates with every domain only); a domain without runs prints – (and so do the
averages). The same numbers go to <runs>/<dataset>/report.png as a bar chart (one group per column, one
bar per algorithm, error bars ±SE; a cell without runs has no bar). <runs>/<dataset>/report.json lists every
run's selection (folder, algorithm, held-out domain and index, trial seed, seed, selected step, its train_out
and test_in, the SWAD line's, the ID and OOD figures, and its DomainBed entries).

<runs>/<dataset>/domainbed/ is a flat folder of the same finished runs that DomainBed's own tools read
unchanged (python -m domainbed.scripts.collect_results --input_dir <runs>/<dataset>/domainbed): one
<algorithm>-<test-domain>-<seed…>/results.jsonl per run, its records byte for byte except args (algorithm:
the report's row; dataset: DomainBed's name, e.g. OfficeHome; output_dir: the run folder). A SWAD run is two
entries: <row> (the averaged model's line, the number this report prints) and <row>-noswad (its per-step
evaluations). Entries of runs no longer reported are removed.";

/// Tabulate finished runs (DomainBed's collect_results): mean ± SE per algorithm and held-out domain.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Root of the run directories (`distill run --out`).
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,

    /// Report this dataset only (a folder name under --runs).
    #[arg(long)]
    pub dataset: Option<String>,
}

/// One finished run, reduced to what the report needs.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The run's folder under the dataset: `<algorithm>[@<tag>]`.
    pub algorithm: String,
    /// `args.test_envs[0]`: the held-out domain's index (column order).
    pub env: u64,
    pub domain: String,
    /// The replicate: (trial seed, seed).
    pub replicate: (i64, u64),
    pub selected: Selected,
}

const MISSING: &str = "–";

pub fn run(args: &Args) -> Result<()> {
    if !args.runs.is_dir() {
        bail!(
            "no runs directory {} (write runs with `distill run --out DIR`, or pass --runs DIR)",
            args.runs.display()
        );
    }
    let mut datasets = Vec::new();
    for dataset_dir in subdirs(&args.runs)? {
        let name = file_name(&dataset_dir);
        if args.dataset.as_ref().is_some_and(|d| *d != name) {
            continue;
        }
        let runs = finished_run_dirs(&dataset_dir)?;
        if !runs.is_empty() {
            datasets.push((name, dataset_dir, runs));
        }
    }
    if datasets.is_empty() {
        match &args.dataset {
            Some(d) => bail!(
                "no finished runs of dataset '{d}' under {}",
                args.runs.display()
            ),
            None => bail!("no finished runs under {}", args.runs.display()),
        }
    }
    let mut out = String::new();
    for (i, (name, dir, runs)) in datasets.iter().enumerate() {
        let results: Vec<RunResult> = runs.iter().map(|(_, r)| r.clone()).collect();
        let table = Table::new(&results);
        let md = table.markdown(name);
        write_bytes_atomic(&dir.join("report.md"), md.as_bytes())
            .with_context(|| format!("cannot write {}", dir.join("report.md").display()))?;
        let png = dir.join("report.png");
        let (groups, series) = table.chart_series();
        chart::bar_chart_png(&png, &table.chart_title(name), &groups, &series)
            .with_context(|| format!("cannot write {}", png.display()))?;
        let entries = domainbed::write_view(dir, runs)?;
        let json = selections_json(name, dir, runs, &entries);
        let path = dir.join("report.json");
        write_bytes_atomic(&path, format!("{json:#}\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&md);
    }
    print!("{out}");
    Ok(())
}

/// Every finished run of a dataset's folder (`<runs>/<dataset>`); unfinished ones are named on stderr.
pub fn finished_runs(dataset_dir: &Path) -> Result<Vec<RunResult>> {
    Ok(finished_run_dirs(dataset_dir)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// [`finished_runs`] with each run's folder.
fn finished_run_dirs(dataset_dir: &Path) -> Result<Vec<(PathBuf, RunResult)>> {
    let mut results = Vec::new();
    for run_dir in run_dirs(dataset_dir)? {
        if !run_dir.join(run_dir::DONE).exists() {
            eprintln!("skipped (unfinished): {}", run_dir.display());
            continue;
        }
        let result = read_run(&run_dir).with_context(|| format!("run {}", run_dir.display()))?;
        results.push((run_dir, result));
    }
    Ok(results)
}

/// `report.json`: every run's selection and figures.
fn selections_json(
    dataset: &str,
    dataset_dir: &Path,
    runs: &[(PathBuf, RunResult)],
    entries: &[Vec<String>],
) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .zip(entries)
        .map(|((dir, r), entries)| {
            let s = &r.selected;
            serde_json::json!({
                "run": dir.strip_prefix(dataset_dir).unwrap_or(dir),
                "algorithm": r.algorithm,
                "test_env": r.env,
                "test_domain": r.domain,
                "trial_seed": r.replicate.0,
                "seed": r.replicate.1,
                "step": s.step,
                "train_out": s.train_out,
                "test_in": s.test_in,
                "swad_train_out": s.swad_train_out,
                "swad_test_in": s.swad_test_in,
                "id": s.id(),
                "ood": s.ood(),
                "domainbed": entries,
            })
        })
        .collect();
    serde_json::json!({"dataset": dataset, "runs": runs})
}

/// The subdirectories of `dir`, sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The run directories of a dataset: `<algorithm>/<test-domain>/<leaf>/` holding `results.jsonl` or `done`.
fn run_dirs(dataset_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for algorithm in subdirs(dataset_dir)? {
        if file_name(&algorithm) == domainbed::FOLDER {
            continue;
        }
        for domain in subdirs(&algorithm)? {
            for leaf in subdirs(&domain)? {
                if leaf.join(run_dir::RESULTS).exists() || leaf.join(run_dir::DONE).exists() {
                    found.push(leaf);
                }
            }
        }
    }
    Ok(found)
}

/// A finished run: the selected evaluation of its results.jsonl, and the identity from its `args` (the
/// algorithm and domain names are those of its folders).
fn read_run(dir: &Path) -> Result<RunResult> {
    let records = run_dir::read_results(dir)?;
    let Some((_, first)) = records.first() else {
        bail!("{} is missing or empty", run_dir::RESULTS);
    };
    let args = first
        .get("args")
        .context("a results.jsonl record has no `args`")?;
    let env = args
        .get("test_envs")
        .and_then(|t| t.get(0))
        .and_then(Value::as_u64)
        .context("`args.test_envs` is not a list of domain indices")?;
    let trial_seed = args.get("trial_seed").and_then(Value::as_i64).unwrap_or(0);
    let seed = args.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let domain_dir = dir.parent().context("run directory has no parent")?;
    let algorithm_dir = domain_dir.parent().context("run directory has no parent")?;
    Ok(RunResult {
        algorithm: file_name(algorithm_dir),
        env,
        domain: file_name(domain_dir),
        replicate: (trial_seed, seed),
        selected: trainer::selected(&records)?,
    })
}

/// Mean, population standard deviation (numpy's `np.std`) / sqrt(n), of `values` (not empty).
fn mean_se(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() / n.sqrt())
}

/// `100·mean ± 100·SE` with one decimal; the mean alone for one value; `–` for none.
pub(crate) fn format_cell(values: &[f64]) -> String {
    match values.len() {
        0 => MISSING.into(),
        1 => format!("{:.1}", 100.0 * values[0]),
        _ => {
            let (mean, se) = mean_se(values);
            format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * se)
        }
    }
}

/// `100·mean` and `100·SE` of `values` (SE 0 for one value); `None` for none: a chart bar.
pub(crate) fn cell_percent(values: &[f64]) -> Option<(f64, f64)> {
    (!values.is_empty()).then(|| {
        let (mean, se) = mean_se(values);
        (100.0 * mean, 100.0 * se)
    })
}

/// One dataset's cells before formatting, shared by `report.md` and `report.png`.
#[derive(Debug, PartialEq)]
pub(crate) struct Table {
    /// The held-out domains, by index (the column order).
    pub(crate) domains: Vec<String>,
    /// Per algorithm (in the registry's order, then by name): its name and, per column (the domains, then Avg-ID and Avg-OOD),
    /// the per-replicate accuracies (fractions) the cell summarises.
    pub(crate) rows: Vec<(String, Vec<Vec<f64>>)>,
}

impl Table {
    pub(crate) fn new(results: &[RunResult]) -> Table {
        // Columns: every held-out domain seen in the dataset, by index.
        let domains: BTreeMap<u64, &str> =
            results.iter().map(|r| (r.env, r.domain.as_str())).collect();
        let mut algorithms: Vec<&str> = results
            .iter()
            .map(|r| r.algorithm.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The paper's order (the registry's: baselines, then ADiP, then SD), tagged variants after their
        // algorithm, unknown folder names last.
        algorithms.sort_by_key(|name| {
            let base = name.split('@').next().unwrap_or(name);
            let rank = crate::algorithms::REGISTRY
                .iter()
                .position(|e| e.name == base)
                .unwrap_or(usize::MAX);
            (rank, name.to_string())
        });
        let replicates: BTreeSet<(i64, u64)> = results.iter().map(|r| r.replicate).collect();
        let mut rows = Vec::new();
        for algorithm in algorithms {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.algorithm == algorithm)
                .collect();
            let mut cells: Vec<Vec<f64>> = domains
                .keys()
                .map(|&env| {
                    runs.iter()
                        .filter(|r| r.env == env)
                        .map(|r| r.selected.ood())
                        .collect()
                })
                .collect();
            let complete = cells.iter().all(|c| !c.is_empty());
            // Per replicate with a run for every domain: the mean over domains, then mean ± SE of those.
            let (mut id, mut ood) = (Vec::new(), Vec::new());
            if complete {
                for &rep in &replicates {
                    let per_domain: Vec<&Selected> = domains
                        .keys()
                        .filter_map(|&env| {
                            runs.iter()
                                .find(|r| r.replicate == rep && r.env == env)
                                .map(|r| &r.selected)
                        })
                        .collect();
                    if per_domain.len() == domains.len() {
                        let n = per_domain.len() as f64;
                        id.push(per_domain.iter().map(|r| r.id()).sum::<f64>() / n);
                        ood.push(per_domain.iter().map(|r| r.ood()).sum::<f64>() / n);
                    }
                }
            }
            cells.push(id);
            cells.push(ood);
            rows.push((algorithm.to_string(), cells));
        }
        Table {
            domains: domains.values().map(|d| d.to_string()).collect(),
            rows,
        }
    }

    /// The markdown table.
    fn markdown(&self, dataset: &str) -> String {
        let mut s = format!(
            "## {dataset}\n\n\
             Accuracy (%) at the evaluation with the best training-domain validation accuracy: per held-out \
             domain its in split (OOD); Avg-ID = training-domain validation, Avg-OOD = held-out domains, \
             averaged per replicate; runs trained with SWAD report the SWAD-averaged model's held-out in-split \
             accuracy as OOD and its training-domain validation accuracy as ID instead (as the official code \
             does). Mean ± standard error over replicates (trial seed × seed).\n\n\
             | algorithm |"
        );
        for name in &self.domains {
            s.push_str(&format!(" {name} |"));
        }
        // The paper's number for the rows it has, on the datasets it has (docs/PAPER.md, Tables 1–2).
        let published: Vec<Option<paper::Published>> = self
            .rows
            .iter()
            .map(|(algorithm, _)| paper::published(dataset, algorithm))
            .collect();
        let with_paper = published.iter().any(Option::is_some);
        s.push_str(" Avg-ID | Avg-OOD |");
        if with_paper {
            s.push_str(" paper Avg-OOD |");
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(self.domains.len() + 2 + usize::from(with_paper)));
        s.push('\n');
        for ((algorithm, cells), published) in self.rows.iter().zip(&published) {
            s.push_str(&format!("| {algorithm} |"));
            for values in cells {
                s.push_str(&format!(" {} |", format_cell(values)));
            }
            if with_paper {
                match published {
                    Some(p) => s.push_str(&format!(" {:.2} ({}) |", p.ood, p.table)),
                    None => s.push_str(&format!(" {MISSING} |")),
                }
            }
            s.push('\n');
        }
        if with_paper {
            s.push_str(
                "\npaper Avg-OOD: the published OOD accuracy of the row's method on this dataset (VL2V-ADiP, \
                 CVPR 2024; docs/PAPER.md): Table 2 with an ImageNet ViT-B/16 student and the CLIP ViT-B/16 \
                 teacher, SWAD; Table 1 with CLIP ViT-B/16 itself trained (white box).\n",
            );
        }
        s
    }

    /// The chart's groups (the columns) and one series per algorithm (row), in percent.
    fn chart_series(&self) -> (Vec<String>, Vec<chart::Series>) {
        let groups = self
            .domains
            .iter()
            .cloned()
            .chain(["Avg-ID".to_string(), "Avg-OOD".to_string()])
            .collect();
        let series = self
            .rows
            .iter()
            .map(|(algorithm, cells)| chart::Series {
                name: algorithm.clone(),
                values: cells.iter().map(|v| cell_percent(v)).collect(),
            })
            .collect();
        (groups, series)
    }

    /// The chart's title; it names the number of replicates when every per-domain cell has the same.
    fn chart_title(&self, dataset: &str) -> String {
        let counts: BTreeSet<usize> = self
            .rows
            .iter()
            .flat_map(|(_, cells)| cells[..self.domains.len()].iter().map(Vec::len))
            .filter(|&n| n > 0)
            .collect();
        let over = match counts.iter().collect::<Vec<_>>()[..] {
            [1] => "1 replicate".to_string(),
            [&n] => format!("mean ± SE over {n} replicates"),
            _ => "mean ± SE over replicates".to_string(),
        };
        format!("{dataset}: accuracy (%) by held-out domain ({over})")
    }
}

/// The markdown table of one dataset.
#[cfg(test)]
fn table(dataset: &str, results: &[RunResult]) -> String {
    Table::new(results).markdown(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(step: u64, train_out: f64, test_in: f64) -> (String, Value) {
        let v = json!({"step": step, "train_out": train_out, "test_in": test_in});
        (v.to_string(), v)
    }

    fn result(algorithm: &str, env: u64, rep: i64, train_out: f64, test_in: f64) -> RunResult {
        RunResult {
            algorithm: algorithm.into(),
            env,
            domain: ["art", "photo", "sketch"][env as usize].into(),
            replicate: (rep, 0),
            selected: Selected {
                step: 0,
                train_out,
                test_in,
                swad_test_in: None,
                swad_train_out: None,
            },
        }
    }

    #[test]
    fn selection_takes_test_in_at_the_first_maximum_of_train_out() {
        let records = [
            record(0, 0.5, 0.1),
            record(200, 0.8, 0.6),
            record(400, 0.7, 0.9),
            record(600, 0.8, 0.2),
        ];
        let sel = trainer::selected(&records).unwrap();
        assert_eq!(
            sel,
            Selected {
                step: 200,
                train_out: 0.8,
                test_in: 0.6,
                swad_test_in: None,
                swad_train_out: None,
            }
        );
    }

    #[test]
    fn the_swad_line_is_not_selected_and_is_the_ood_figure() {
        let mut records = vec![record(0, 0.5, 0.1), record(200, 0.8, 0.6)];
        let v = json!({"step": 200, "train_out": 0.95, "test_in": 0.7, "swad": true});
        records.push((v.to_string(), v));
        let sel = trainer::selected(&records).unwrap();
        assert_eq!(
            sel,
            Selected {
                step: 200,
                train_out: 0.8,
                test_in: 0.6,
                swad_test_in: Some(0.7),
                swad_train_out: Some(0.95),
            }
        );
        assert_eq!(sel.ood(), 0.7);
        assert_eq!(sel.id(), 0.95);
        let mut r = result("swad-alg", 0, 0, 0.8, 0.6);
        r.selected = sel;
        let t = table("toy", &[r]);
        assert!(t.contains("| swad-alg | 70.0 | 95.0 | 70.0 |"), "{t}");
        assert!(t.contains("SWAD"), "{t}");
    }

    #[test]
    fn cells_are_mean_and_population_standard_error_in_percent() {
        // mean 0.5, population std 0.1, SE 0.1/sqrt(2).
        assert_eq!(format_cell(&[0.4, 0.6]), "50.0 ± 7.1");
        let (m, se) = mean_se(&[0.2, 0.4, 0.9]);
        assert!((m - 0.5).abs() < 1e-12);
        let std = ((0.09 + 0.01 + 0.16) / 3.0f64).sqrt();
        assert!((se - std / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(format_cell(&[0.8124]), "81.2");
        assert_eq!(format_cell(&[0.7, 0.7]), "70.0 ± 0.0");
        assert_eq!(format_cell(&[]), "–");
    }

    #[test]
    fn table_orders_domains_by_index_and_averages_per_replicate() {
        let results = [
            result("b-alg", 2, 0, 0.9, 0.5),
            result("b-alg", 0, 0, 0.7, 0.3),
            result("b-alg", 2, 1, 0.8, 0.7),
            result("b-alg", 0, 1, 0.6, 0.5),
            result("a-alg", 0, 0, 0.5, 0.25),
        ];
        let t = table("toy", &results);
        assert!(t.starts_with("## toy\n"), "{t}");
        assert!(
            t.contains("| algorithm | art | sketch | Avg-ID | Avg-OOD |\n|---|---|---|---|---|\n"),
            "{t}"
        );
        // a-alg has no sketch run: – there and in the averages. Rows sorted by name.
        let a = t.find("| a-alg | 25.0 | – | – | – |").expect(&t);
        // b-alg: art 0.3/0.5 → 40 ± 10/√2; sketch 0.5/0.7 → 60 ± 10/√2; per replicate ID 0.8, 0.7 →
        // 75 ± 5/√2; OOD 0.4, 0.6 → 50 ± 10/√2.
        let b = t
            .find("| b-alg | 40.0 ± 7.1 | 60.0 ± 7.1 | 75.0 ± 3.5 | 50.0 ± 7.1 |")
            .expect(&t);
        assert!(a < b);
    }

    #[test]
    fn the_chart_has_the_table_columns_and_numbers() {
        let results = [
            result("b-alg", 2, 0, 0.9, 0.5),
            result("b-alg", 0, 0, 0.7, 0.3),
            result("b-alg", 2, 1, 0.8, 0.7),
            result("b-alg", 0, 1, 0.6, 0.5),
            result("a-alg", 0, 0, 0.5, 0.25),
        ];
        let t = Table::new(&results);
        let (groups, series) = t.chart_series();
        assert_eq!(groups, ["art", "sketch", "Avg-ID", "Avg-OOD"]);
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a-alg", "b-alg"]);
        assert_eq!(series[0].values, [Some((25.0, 0.0)), None, None, None]);
        let b: Vec<(f64, f64)> = series[1].values.iter().map(|v| v.unwrap()).collect();
        let se = 10.0 / 2f64.sqrt();
        for (got, want) in b
            .iter()
            .zip([(40.0, se), (60.0, se), (75.0, se / 2.0), (50.0, se)])
        {
            assert!(
                (got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9,
                "{b:?}"
            );
        }
        // a-alg has 1 replicate, b-alg 2: the title does not name a count.
        assert_eq!(
            t.chart_title("toy"),
            "toy: accuracy (%) by held-out domain (mean ± SE over replicates)"
        );
        let t = Table::new(&results[..4]);
        assert!(t
            .chart_title("toy")
            .ends_with("(mean ± SE over 2 replicates)"));
    }
}
