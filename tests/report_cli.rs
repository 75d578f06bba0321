//! `distill report` end to end on a hand-made runs tree: selection (first maximum of train_out), mean ±
//! standard error over trial seeds, domain order, incomplete replicates, unfinished runs, errors; the
//! bar chart report.png beside report.md.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use vl2v_tests::{bin, run};

const DOMAINS: [&str; 2] = ["photo", "art"];

/// A run of `toy` with test domain `env` whose selected evaluation (step 200, the first of two tied
/// maxima of train_out) has `train_out` and `test_in`; `done` only when `finished`.
fn write_run(
    runs: &Path,
    algorithm: &str,
    env: usize,
    trial_seed: i64,
    accuracies: (f64, f64),
    finished: bool,
) {
    write_run_in(
        runs, "toy", algorithm, env, trial_seed, accuracies, finished,
    );
}

/// [`write_run`] under the dataset folder `dataset`.
fn write_run_in(
    runs: &Path,
    dataset: &str,
    algorithm: &str,
    env: usize,
    trial_seed: i64,
    (train_out, test_in): (f64, f64),
    finished: bool,
) {
    let leaf = if trial_seed == 0 {
        "seed0".to_string()
    } else {
        format!("seed0-trial{trial_seed}")
    };
    let dir = runs
        .join(dataset)
        .join(algorithm)
        .join(DOMAINS[env])
        .join(leaf);
    fs::create_dir_all(&dir).unwrap();
    let args = json!({
        "dataset": dataset, "algorithm": algorithm, "test_envs": [env], "test_domain": DOMAINS[env],
        "trial_seed": trial_seed, "seed": 0, "hparams": {"lr": 5e-5}, "steps": 401,
        "checkpoint_freq": 200, "holdout_fraction": 0.2,
    });
    let other = 1 - env;
    let mut text = String::new();
    for (step, tr, te) in [
        (0, 0.5, 0.1),
        (200, train_out, test_in),
        (400, train_out, 0.99),
    ] {
        let record = json!({
            "args": args, "hparams": {"lr": 5e-5}, "step": step, "loss": 0.5,
            format!("env{env}_in_acc"): te, format!("env{env}_out_acc"): 0.42,
            format!("env{other}_out_acc"): tr,
            "train_out": tr, "test_in": te, "test_out": 0.42,
        });
        text.push_str(&serde_json::to_string(&record).unwrap());
        text.push('\n');
    }
    fs::write(dir.join("results.jsonl"), text).unwrap();
    if finished {
        fs::write(dir.join("done"), "").unwrap();
    }
}

fn report(args: &[&str]) -> (bool, String, String) {
    let (o, stdout, stderr) = run(Command::new(bin("distill")).arg("report").args(args));
    (o.status.success(), stdout, stderr)
}

#[test]
fn report_tabulates_mean_and_standard_error_over_trial_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // adip-align: photo 0.6 / 0.7, art 0.4 / 0.5; ID per trial seed (0.8+0.7)/2, (0.9+0.6)/2.
    write_run(&runs, "adip-align", 0, 0, (0.8, 0.6), true);
    write_run(&runs, "adip-align", 0, 1, (0.9, 0.7), true);
    write_run(&runs, "adip-align", 1, 0, (0.7, 0.4), true);
    write_run(&runs, "adip-align", 1, 1, (0.6, 0.5), true);
    // erm-lp: trial seed 1 of art is unfinished, so only trial seed 0 enters the averages.
    write_run(&runs, "erm-lp", 0, 0, (0.6, 0.3), true);
    write_run(&runs, "erm-lp", 0, 1, (0.9, 0.5), true);
    write_run(&runs, "erm-lp", 1, 0, (0.8, 0.5), true);
    write_run(&runs, "erm-lp", 1, 1, (0.95, 0.95), false);

    let (ok, stdout, stderr) = report(&["--runs", runs.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("## toy\n"), "{stdout}");
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(
        table,
        [
            "| algorithm | photo | art | Avg-ID | Avg-OOD |",
            "|---|---|---|---|---|",
            "| erm-lp | 40.0 ± 7.1 | 50.0 | 70.0 | 40.0 |",
            "| adip-align | 65.0 ± 3.5 | 45.0 ± 3.5 | 75.0 ± 0.0 | 55.0 ± 3.5 |",
        ],
        "rows in the registry's order: {stdout}"
    );
    let unfinished = Path::new("erm-lp").join("art").join("seed0-trial1");
    assert!(
        stderr.contains("skipped (unfinished)") && stderr.contains(unfinished.to_str().unwrap()),
        "{stderr}"
    );
    let written = fs::read_to_string(runs.join("toy").join("report.md")).unwrap();
    assert_eq!(written, stdout);

    // report.png: 500 px high, at least 1000 wide, with bars of the first series (adip-align) in the
    // chart's first colour (Tableau blue) and of the second (erm-lp) in orange; no temporary files left.
    let img = image::open(runs.join("toy").join("report.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(img.height(), 500);
    assert!(img.width() >= 1000, "width {}", img.width());
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    // More than the 14×14 legend swatch: the bars are drawn too.
    assert!(count([31, 119, 180]) > 1000, "{}", count([31, 119, 180]));
    assert!(count([255, 127, 14]) > 1000, "{}", count([255, 127, 14]));
    let mut names: Vec<String> = fs::read_dir(runs.join("toy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !fs::metadata(runs.join("toy").join(n)).unwrap().is_dir())
        .collect();
    names.sort();
    assert_eq!(names, ["report.json", "report.md", "report.png"]);

    // --dataset filters; an unknown one is an error.
    let (ok, again, _) = report(&["--runs", runs.to_str().unwrap(), "--dataset", "toy"]);
    assert!(ok);
    assert_eq!(again, stdout);
    let (ok, _, stderr) = report(&["--runs", runs.to_str().unwrap(), "--dataset", "pacs"]);
    assert!(!ok);
    assert!(
        stderr.contains("no finished runs of dataset 'pacs'"),
        "{stderr}"
    );
}

#[test]
fn the_papers_numbers_stand_beside_ours_on_its_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for (algorithm, env, acc) in [
        ("adip-distill@lambda0.5", 0, (0.9, 0.8)),
        ("adip-distill@lambda0.5", 1, (0.8, 0.6)),
        ("adip-align", 0, (0.7, 0.5)),
        ("adip-align", 1, (0.7, 0.5)),
        ("zeroshot", 0, (0.6, 0.4)),
        ("zeroshot", 1, (0.6, 0.4)),
    ] {
        write_run_in(&runs, "pacs", algorithm, env, 0, acc, true);
    }
    let (ok, stdout, stderr) = report(&["--runs", runs.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    // docs/PAPER.md: PACS, Table 1 zero-shot 96.50, Table 2 VL2V-ADiP 94.94; no published Align row.
    assert_eq!(
        table,
        [
            "| algorithm | photo | art | Avg-ID | Avg-OOD | paper Avg-OOD |",
            "|---|---|---|---|---|---|",
            "| zeroshot | 40.0 | 40.0 | 60.0 | 40.0 | 96.50 (Table 1) |",
            "| adip-align | 50.0 | 50.0 | 70.0 | 50.0 | – |",
            "| adip-distill@lambda0.5 | 80.0 | 60.0 | 85.0 | 70.0 | 94.94 (Table 2) |",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("docs/PAPER.md"), "{stdout}");
    // Not on datasets the paper lacks (the toy runs of the other tests have no such column).
    write_run(&runs, "zeroshot", 0, 0, (0.6, 0.4), true);
    let (ok, stdout, _) = report(&["--runs", runs.to_str().unwrap(), "--dataset", "toy"]);
    assert!(ok && !stdout.contains("paper"), "{stdout}");
}

#[test]
fn report_fails_clearly_without_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let (ok, stdout, stderr) = report(&["--runs", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("no runs directory") && stderr.contains("nowhere"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A runs tree with only unfinished runs.
    let runs = tmp.path().join("runs");
    write_run(&runs, "erm-lp", 0, 0, (0.5, 0.5), false);
    let (ok, _, stderr) = report(&["--runs", runs.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no finished runs under"), "{stderr}");
}
