//! `make demo` reduced to a few steps (data/demo.sh with small settings, the debug binaries, temporary
//! folders): every stage runs on the committed mini models and the report lists every algorithm; a second
//! run reuses the caches and skips the finished runs.

use std::path::Path;
use std::process::Command;

use vl2v_tests::run;

const ALGORITHMS: [&str; 11] = [
    "zeroshot",
    "erm-lp",
    "adip-align",
    "erm-ft",
    "lp-ft",
    "kd",
    "rise",
    "scmd",
    "adip-distill",
    "sd",
    "wise-ft",
];

fn demo(work: &Path) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/debug");
    let (o, stdout, stderr) = run(Command::new("bash")
        .arg(root.join("data/demo.sh"))
        .env("DEMO_BIN", &bin)
        .env("DEMO_DATA", work.join("synthdg"))
        .env("DEMO_CACHE", work.join("cache"))
        .env("DEMO_OUT", work.join("runs"))
        .env("DEMO_PER_CLASS", "5")
        .env("DEMO_VIEWS", "1")
        .env("DEMO_STEPS", "2")
        .env("DEMO_FREQ", "1")
        .env("HF_HUB_OFFLINE", "1"));
    (o.status.success(), stdout, stderr)
}

#[test]
fn reduced_demo_runs_every_stage_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = demo(work.path());
    assert!(ok, "{stderr}");
    for algorithm in ALGORITHMS {
        assert!(
            stdout.contains(&format!("| {algorithm} |")),
            "{algorithm} in the table:\n{stdout}"
        );
        for domain in ["clipart", "painting", "photo", "sketch"] {
            let done = work
                .path()
                .join("runs/synthdg")
                .join(algorithm)
                .join(domain)
                .join("seed0/done");
            assert!(done.is_file(), "{}", done.display());
        }
    }
    let report = work.path().join("runs/synthdg");
    assert!(report.join("report.md").is_file() && report.join("report.png").is_file());
    assert_eq!(
        std::fs::read_dir(work.path().join("synthdg"))
            .unwrap()
            .count(),
        4 + 1,
        "four domains and the generator's marker"
    );

    let (ok, again, stderr) = demo(work.path());
    assert!(ok, "{stderr}");
    assert_eq!(again, stdout, "the second run prints the same table");
    assert!(stderr.contains("already generated"), "{stderr}");
    assert_eq!(
        stderr.matches("done, skipped").count(),
        ALGORITHMS.len() * 4,
        "{stderr}"
    );
}
