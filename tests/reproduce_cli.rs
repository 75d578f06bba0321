//! `make reproduce` reduced (data/reproduce.sh on a small generated benchmark with the demo's mini CLIP
//! teacher and mini ViT student, 2 trial seeds, 2 steps, the debug binaries): both caches with the official
//! input and the same views, Align then Distill and the KD and ERM-FT baselines, each with SWAD, for every
//! held-out domain and trial seed, then the report; a second run skips everything; bad arguments get one line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vl2v_tests::{bin, records, run};

const ALGORITHMS: [&str; 4] = ["adip-align", "adip-distill", "kd", "erm-ft"];
const DOMAINS: [&str; 4] = ["clipart", "painting", "photo", "sketch"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reproduce(work: &Path, args: &[&str], model: Option<&Path>) -> (bool, String, String) {
    let root = root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("data/reproduce.sh"))
        .args(args)
        .env("REPRO_BIN", root.join("target/debug"))
        .env("REPRO_DATA", work.join("synthdg"))
        .env("REPRO_CACHE", work.join("cache"))
        .env("REPRO_OUT", work.join("runs"))
        .env("REPRO_TRIALS", "0 1")
        .env("REPRO_VIEWS", "1")
        .env("REPRO_STEPS", "2")
        .env("REPRO_FREQ", "1")
        .env("REPRO_TEACHER", root.join("shared/models/mini-clip"))
        .env_remove("REPRO_MODEL")
        .env("HF_HUB_OFFLINE", "1");
    if let Some(model) = model {
        cmd.env("REPRO_MODEL", model);
    }
    let (o, stdout, stderr) = run(&mut cmd);
    (o.status.success(), stdout, stderr)
}

#[test]
fn reduced_recipe_runs_every_stage_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let (o, _, stderr) = run(Command::new(bin("synthdg"))
        .args(["benchmark", "--per-class", "3", "--out"])
        .arg(work.path().join("synthdg")));
    assert!(o.status.success(), "{stderr}");
    let student = root().join("shared/models/mini-vit");

    let (ok, stdout, stderr) = reproduce(work.path(), &["synthdg", "mini-vit"], Some(&student));
    assert!(ok, "{stderr}");
    for algorithm in ALGORITHMS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| {algorithm} |"))),
            "{algorithm} in {stdout}"
        );
    }
    // The teacher saw the official input, and both caches hold the same views.
    let cache = work.path().join("cache/synthdg");
    let manifests: Vec<Value> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path().join("manifest.json")).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    assert_eq!(manifests.len(), 2);
    for m in &manifests {
        assert_eq!(m["views"]["count"], 1, "{m}");
        if m["encoder"]["role"] == "teacher" {
            assert_eq!(m["preprocess"]["mode"], "vl2v", "{m}");
        }
    }
    // Every run, with SWAD; stage 2 started from stage 1.
    for trial in [0, 1] {
        let leaf = if trial == 0 {
            "seed0".to_string()
        } else {
            format!("seed0-trial{trial}")
        };
        for algorithm in ALGORITHMS {
            for domain in DOMAINS {
                let dir = work
                    .path()
                    .join("runs/synthdg")
                    .join(algorithm)
                    .join(domain)
                    .join(&leaf);
                assert!(dir.join("done").is_file(), "{}", dir.display());
                let recs = records(&dir);
                let last = recs.last().unwrap();
                assert_eq!(last["swad"], true, "{}", dir.display());
                assert_eq!(last["args"]["trial_seed"], trial);
                if algorithm == "adip-distill" {
                    assert!(last["args"]["align_step"].is_u64(), "{last}");
                }
            }
        }
    }

    // A finished recipe: nothing is computed again.
    let (ok, again, stderr) = reproduce(work.path(), &["synthdg", "mini-vit"], Some(&student));
    assert!(ok, "{stderr}");
    assert_eq!(again, stdout);
    assert_eq!(
        stderr.matches("done, skipped").count(),
        ALGORITHMS.len() * DOMAINS.len() * 2,
        "{stderr}"
    );

    // Arguments: two, and weights for a student without an official script or a known hub id.
    let one_line = |stderr: &str| {
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
    };
    let (ok, _, stderr) = reproduce(work.path(), &["synthdg"], None);
    assert!(
        !ok && stderr.starts_with("usage: data/reproduce.sh DATASET STUDENT"),
        "{stderr}"
    );
    let (ok, _, stderr) = reproduce(work.path(), &["synthdg", "mini-vit"], None);
    assert!(!ok, "{stderr}");
    one_line(&stderr);
    assert!(
        stderr.contains("no official script for student 'mini-vit'"),
        "{stderr}"
    );
    let (ok, _, stderr) = reproduce(work.path(), &["synthdg", "resnet50"], None);
    assert!(!ok, "{stderr}");
    one_line(&stderr);
    assert!(
        stderr.contains("distill/official_scripts/resnet50.json names no hub id"),
        "{stderr}"
    );
}
