//! `distill report`'s DomainBed view (`<runs>/<dataset>/domainbed/`) on real runs: a PACS-layout dataset
//! embedded with the committed tiny CLIP, zeroshot and a tagged adip-align with SWAD for every held-out
//! domain. Each entry must hold its run's own records byte for byte but `args`, with every key DomainBed's
//! collect_results and model_selection read; a SWAD run is split into its averaged model and its steps;
//! report.json must name the step DomainBed's training-domain validation picks; entries of runs no longer
//! reported go. (`make domainbed-check` runs DomainBed's own code over such a folder.)

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vl2v_tests::{bin, cache_dir_of, records, run, tiny_clip, write_dataset};

const DOMAINS: [&str; 4] = ["art_painting", "cartoon", "photo", "sketch"];

fn distill(args: &[&str]) -> String {
    let (o, stdout, stderr) = run(Command::new(bin("distill")).args(args));
    assert!(o.status.success(), "distill {args:?}: {stderr}");
    stdout
}

/// The run's lines of results.jsonl, raw.
fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// What follows the `args` member of a record line as the run wrote it (`args` is its first key).
fn after_args(line: &str, args: &Value) -> String {
    let head = format!("{{\"args\":{}", serde_json::to_string(args).unwrap());
    line.strip_prefix(&head)
        .unwrap_or_else(|| panic!("{line} starts with {head}"))
        .to_string()
}

/// The index of the first maximum of the mean of the training domains' out accuracies (DomainBed's
/// IIDAccuracySelectionMethod, written out from its definition).
fn domainbed_choice(records: &[Value]) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, r) in records.iter().enumerate() {
        let test = r["args"]["test_envs"][0].as_u64().unwrap() as usize;
        let val: Vec<f64> = (0..DOMAINS.len())
            .filter(|&e| e != test)
            .map(|e| r[format!("env{e}_out_acc")].as_f64().unwrap())
            .collect();
        let mean = val.iter().sum::<f64>() / val.len() as f64;
        if mean > best.1 {
            best = (i, mean);
        }
    }
    best.0
}

#[test]
fn report_writes_a_flat_folder_domainbed_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("PACS");
    write_dataset(&root, &DOMAINS, &["dog", "horse"], 4, (40, 32));
    let mut embed = Command::new(bin("embed"));
    embed
        .args(["--dataset", "pacs", "--root"])
        .arg(&root)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--model")
        .arg(tiny_clip())
        .args(["--views", "2"])
        .env("HF_HUB_OFFLINE", "1");
    let cache = cache_dir_of(&mut embed);
    let cache = cache.to_str().unwrap();
    let runs = tmp.path().join("runs");
    let out = runs.to_str().unwrap();
    distill(&[
        "run",
        "--cache",
        cache,
        "--algorithm",
        "zeroshot",
        "--out",
        out,
    ]);
    distill(&[
        "run",
        "--cache",
        cache,
        "--student-cache",
        cache,
        "--algorithm",
        "adip-align",
        "--tag",
        "s",
        "--steps",
        "7",
        "--checkpoint-freq",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--swad",
        "--swad-variant",
        "upstream",
        "--out",
        out,
    ]);
    distill(&["report", "--runs", out]);

    let dataset = runs.join("pacs");
    let view = dataset.join("domainbed");
    let mut entries: Vec<String> = fs::read_dir(&view)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let mut expected = Vec::new();
    for d in DOMAINS {
        expected.push(format!("adip-align@s-noswad-{d}-seed0"));
        expected.push(format!("adip-align@s-{d}-seed0"));
        expected.push(format!("zeroshot-{d}-seed0"));
    }
    expected.sort();
    assert_eq!(entries, expected);

    let report: Value =
        serde_json::from_str(&fs::read_to_string(dataset.join("report.json")).unwrap()).unwrap();
    for (env, domain) in DOMAINS.iter().enumerate() {
        for (folder, row) in [("zeroshot", "zeroshot"), ("adip-align@s", "adip-align@s")] {
            let run_dir = dataset.join(folder).join(domain).join("seed0");
            let (run_lines, run_records) = (lines(&run_dir), records(&run_dir));
            let swad = run_records.last().unwrap().get("swad") == Some(&Value::Bool(true));
            assert_eq!(swad, row == "adip-align@s", "{}", run_dir.display());
            // (entry, its algorithm, the run's records it holds)
            let parts: Vec<(String, String, std::ops::Range<usize>)> = if swad {
                let n = run_records.len();
                vec![
                    (format!("{row}-{domain}-seed0"), row.to_string(), n - 1..n),
                    (
                        format!("{row}-noswad-{domain}-seed0"),
                        format!("{row}-noswad"),
                        0..n - 1,
                    ),
                ]
            } else {
                vec![(
                    format!("{row}-{domain}-seed0"),
                    row.to_string(),
                    0..run_records.len(),
                )]
            };
            for (entry, algorithm, range) in &parts {
                let entry_dir = view.join(entry);
                let (view_lines, view_records) = (lines(&entry_dir), records(&entry_dir));
                assert_eq!(view_lines.len(), range.len(), "{entry}");
                for (i, k) in range.clone().enumerate() {
                    let (r, orig) = (&view_records[i], &run_records[k]);
                    // Every number as the run wrote it: the line after `args` is the run's, byte for byte.
                    assert_eq!(
                        after_args(&view_lines[i], &r["args"]),
                        after_args(&run_lines[k], &orig["args"])
                    );
                    // args: the run's, with DomainBed's names and the run folder.
                    let mut args = orig["args"].clone();
                    args["algorithm"] = algorithm.as_str().into();
                    args["dataset"] = "PACS".into();
                    args["output_dir"] = run_dir.to_str().unwrap().into();
                    assert_eq!(r["args"], args, "{entry}");
                    // What DomainBed's reporting and model_selection read.
                    assert_eq!(r["args"]["test_envs"], serde_json::json!([env]));
                    assert_eq!(r["args"]["trial_seed"], 0);
                    assert_eq!(r["args"]["hparams_seed"], 0);
                    assert_eq!(r["args"]["holdout_fraction"], 0.2);
                    assert!(r["hparams"].is_object() && r["step"].is_u64(), "{r}");
                    assert!(r[format!("env{env}_in_acc")].is_f64(), "{r}");
                    for e in 0..DOMAINS.len() {
                        assert!(r[format!("env{e}_out_acc")].is_f64(), "{r}");
                    }
                    assert!(r.get(format!("env{}_out_acc", DOMAINS.len())).is_none());
                }
            }
            // report.json: the run, its step and figures, and its entries.
            let listed = report["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["run"] == format!("{folder}/{domain}/seed0"))
                .unwrap_or_else(|| panic!("report.json lists {folder}/{domain}: {report}"));
            let steps: Vec<Value> = run_records
                .iter()
                .filter(|r| r.get("swad").is_none())
                .cloned()
                .collect();
            let chosen = &steps[domainbed_choice(&steps)];
            assert_eq!(listed["step"], chosen["step"]);
            assert_eq!(listed["test_in"], chosen["test_in"]);
            assert_eq!(listed["test_env"], env);
            let ood = if swad {
                &run_records.last().unwrap()["test_in"]
            } else {
                &chosen["test_in"]
            };
            assert_eq!(&listed["ood"], ood);
            let mut names: Vec<&str> = parts.iter().map(|(e, _, _)| e.as_str()).collect();
            names.sort();
            let mut listed_names: Vec<&str> = listed["domainbed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            listed_names.sort();
            assert_eq!(listed_names, names);
        }
    }

    // A run no longer reported loses its entry; DomainBed's own output in the folder stays.
    fs::write(view.join("results.txt"), "Total records: 1\n").unwrap();
    fs::remove_file(dataset.join("zeroshot/photo/seed0/done")).unwrap();
    distill(&["report", "--runs", out]);
    assert!(!view.join("zeroshot-photo-seed0").exists());
    assert!(view.join("zeroshot-sketch-seed0/results.jsonl").is_file());
    assert!(view.join("results.txt").is_file());
    // The view is not a run folder of the report's.
    assert!(!distill(&["report", "--runs", out]).contains("domainbed"));
}
