//! Every numeric option of every command is checked before any work: the first invalid value on each side
//! of its range is refused with exit code ≠ 0 and a first line naming the flag and the range, before
//! anything is read or written; for a few, the smallest valid value is accepted. Most refusals need no cache
//! (they come before it is opened); the `distill run` and `sweep` ones get a real one, so that a value that
//! slipped through would leave a run folder behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use vl2v_tests::{bin, cache_dir_of, embed_tiny_clip, records, run, write_dataset};

/// clap's message for an integer option below its minimum: `0 is not in 1..18446744073709551615`.
const AT_LEAST_1: &str = "is not in 1..";
const POSITIVE: &str = "must be a finite number > 0";
const NON_NEGATIVE: &str = "must be a finite number >= 0";
const OPEN_UNIT: &str = "must be in (0, 1), 0 and 1 excluded";

/// Runs `program args` and asserts it fails with a first stderr line naming `flag` and `range`, and
/// nothing on stdout.
fn refused(program: &str, args: &[&str], flag: &str, range: &str) {
    let (out, stdout, stderr) = run(Command::new(bin(program)).args(args));
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        !out.status.success() && first.contains(flag) && first.contains(range),
        "{program} {args:?} should be refused naming {flag} and '{range}':\n{stderr}"
    );
    assert!(stdout.is_empty(), "{program} {args:?}: {stdout}");
}

/// Runs `program args`, which must get past every check of the values and fail only at `missing`, an input
/// it then cannot find.
fn passes_the_checks(program: &str, args: &[&str], missing: &str) {
    let (out, _, stderr) = run(Command::new(bin(program)).args(args));
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        !out.status.success()
            && first.contains(missing)
            && !first.contains("invalid value")
            && !first.contains("must be"),
        "{program} {args:?} should fail only at {missing}: {stderr}"
    );
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn embed_refuses_out_of_range_values_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("missing-root");
    let cache = tmp.path().join("cache");
    let base = [
        "--dataset",
        "toy",
        "--root",
        s(&root),
        "--cache-dir",
        s(&cache),
    ];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    refused(
        "embed",
        &with(&["--batch-size", "0"]),
        "--batch-size",
        AT_LEAST_1,
    );
    refused(
        "embed",
        &with(&["--views", "32768"]),
        "--views",
        "0..=32767",
    );
    refused("embed", &with(&["--views", "-1"]), "--views", "0..=32767");
    for shard in ["2/2", "0/0", "1"] {
        refused("embed", &with(&["--shard", shard]), "--shard", "0 <= I < N");
    }
    // The extremes of the ranges pass (the run then stops at the missing dataset folder).
    passes_the_checks(
        "embed",
        &with(&["--batch-size", "1", "--views", "32767", "--shard", "1/2"]),
        "missing-root",
    );
    assert!(!cache.exists());
}

#[test]
fn synthdg_refuses_out_of_range_values_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let corpus = tmp.path().join("missing-corpus");
    for product in ["benchmark", "corpus"] {
        let base = [product, "--out", s(&out)];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        refused(
            "synthdg",
            &with(&["--per-class", "0"]),
            "--per-class",
            AT_LEAST_1,
        );
        for size in ["15", "1025"] {
            refused("synthdg", &with(&["--size", size]), "--size", "16..=1024");
        }
    }
    let sheet = tmp.path().join("sheet.png");
    for size in ["15", "1025"] {
        refused(
            "synthdg",
            &["sheet", "--out", s(&sheet), "--size", size],
            "--size",
            "16..=1024",
        );
    }

    let clip = ["pretrain", "clip", "--corpus", s(&corpus), "--out", s(&out)];
    let clip_with = |extra: &[&'static str]| [&clip[..], extra].concat();
    for flag in [
        "--image-size",
        "--patch-size",
        "--width",
        "--vision-layers",
        "--text-layers",
        "--heads",
        "--projection-dim",
        "--steps",
    ] {
        refused("synthdg", &clip_with(&[flag, "0"]), flag, AT_LEAST_1);
    }
    refused(
        "synthdg",
        &clip_with(&["--context", "2"]),
        "--context",
        "is not in 3..",
    );
    refused(
        "synthdg",
        &clip_with(&["--batch-size", "1"]),
        "--batch-size",
        "is not in 2..",
    );
    for lr in ["0", "-1", "inf", "nan"] {
        refused("synthdg", &clip_with(&["--lr", lr]), "--lr", POSITIVE);
    }
    refused(
        "synthdg",
        &clip_with(&["--image-size", "60"]),
        "--image-size 60 must be a multiple of --patch-size 16",
        "",
    );
    refused(
        "synthdg",
        &clip_with(&["--width", "130"]),
        "--width 130 must be a multiple of --heads 4",
        "",
    );
    passes_the_checks(
        "synthdg",
        &clip_with(&[
            "--image-size",
            "1",
            "--patch-size",
            "1",
            "--width",
            "1",
            "--heads",
            "1",
            "--vision-layers",
            "1",
            "--text-layers",
            "1",
            "--projection-dim",
            "1",
            "--context",
            "3",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--lr",
            "1e-300",
        ]),
        "missing-corpus",
    );

    let student = [
        "pretrain",
        "student",
        "--corpus",
        s(&corpus),
        "--out",
        s(&out),
    ];
    let student_with = |extra: &[&'static str]| [&student[..], extra].concat();
    refused(
        "synthdg",
        &student_with(&["--steps", "0"]),
        "--steps",
        AT_LEAST_1,
    );
    refused(
        "synthdg",
        &student_with(&["--batch-size", "0"]),
        "--batch-size",
        AT_LEAST_1,
    );
    for lr in ["0", "-0.001", "inf"] {
        refused("synthdg", &student_with(&["--lr", lr]), "--lr", POSITIVE);
    }
    passes_the_checks(
        "synthdg",
        &student_with(&["--steps", "1", "--batch-size", "1", "--lr", "1e-300"]),
        "missing-corpus",
    );
    assert!(!out.exists() && !sheet.exists());

    // The smallest drawings and sets are made.
    let (o, _, stderr) = run(Command::new(bin("synthdg")).args([
        "benchmark",
        "--out",
        s(&out),
        "--per-class",
        "1",
        "--size",
        "16",
    ]));
    assert!(o.status.success(), "{stderr}");
    assert!(out.join("photo/car/0000.png").is_file());
    let (o, _, stderr) = run(Command::new(bin("synthdg")).args([
        "sheet",
        "--out",
        s(&sheet),
        "--size",
        "16",
        "--benchmark",
    ]));
    assert!(o.status.success() && sheet.is_file(), "{stderr}");
}

#[test]
fn distill_refuses_out_of_range_values_without_a_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("missing-cache");
    let out = tmp.path().join("runs");
    refused(
        "distill",
        &["analyze", "--cache", s(&cache), "--k", "0"],
        "--k",
        AT_LEAST_1,
    );
    for f in ["0", "1", "-0.1", "nan"] {
        refused(
            "distill",
            &["splits", "--cache", s(&cache), "--holdout-fraction", f],
            "--holdout-fraction",
            OPEN_UNIT,
        );
    }
    // kd weighs its KL term alone: any λ >= 0 (and any temperature > 0) passes the checks.
    passes_the_checks(
        "distill",
        &[
            "run",
            "--cache",
            s(&cache),
            "--student-cache",
            s(&cache),
            "--out",
            s(&out),
            "--algorithm",
            "kd",
            "--lambda",
            "1.5",
            "--temperature",
            "1e-300",
            "--holdout-fraction",
            "1e-9",
            "--workers",
            "1024",
        ],
        "missing-cache",
    );
    refused(
        "distill",
        &[
            "run",
            "--cache",
            s(&cache),
            "--algorithm",
            "kd",
            "--workers",
            "1025",
        ],
        "--workers",
        "is not in 0..=1024",
    );
    refused(
        "distill",
        &[
            "sweep",
            "--cache",
            s(&cache),
            "--algorithm",
            "adip-align",
            "--jobs",
            "0",
        ],
        "--jobs",
        AT_LEAST_1,
    );
    assert!(!out.exists());
}

/// A tiny teacher cache (two domains, the committed tiny CLIP), embedded with the smallest batch.
fn tiny_cache(tmp: &Path) -> PathBuf {
    let root = tmp.join("toy");
    write_dataset(&root, &["a", "b"], &["cat", "dog"], 3, (32, 32));
    cache_dir_of(&mut embed_tiny_clip(
        &root,
        &tmp.join("cache"),
        &["--batch-size", "1"],
    ))
}

#[test]
fn distill_refuses_before_writing_and_takes_the_smallest_values() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tiny_cache(tmp.path());
    let out = tmp.path().join("runs");
    let base = [
        "run",
        "--cache",
        s(&cache),
        "--student-cache",
        s(&cache),
        "--algorithm",
        "adip-align",
        "--test-domain",
        "b",
        "--out",
        s(&out),
    ];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--steps", "0"], "--steps", AT_LEAST_1),
        (&["--checkpoint-freq", "0"], "--checkpoint-freq", AT_LEAST_1),
        (&["--batch-size", "0"], "--batch-size", AT_LEAST_1),
        (&["--lr", "0"], "--lr", POSITIVE),
        (&["--lr", "-0.001"], "--lr", POSITIVE),
        (&["--lr", "inf"], "--lr", POSITIVE),
        (&["--lr", "NaN"], "--lr", POSITIVE),
        (
            &["--weight-decay", "-0.001"],
            "--weight-decay",
            NON_NEGATIVE,
        ),
        (&["--weight-decay", "inf"], "--weight-decay", NON_NEGATIVE),
        (&["--lambda", "-0.01"], "--lambda", NON_NEGATIVE),
        (&["--lambda", "1.01"], "--lambda", "[0, 1] for adip-align"),
        (&["--temperature", "0"], "--temperature", POSITIVE),
        (
            &["--holdout-fraction", "0"],
            "--holdout-fraction",
            OPEN_UNIT,
        ),
        (
            &["--holdout-fraction", "1"],
            "--holdout-fraction",
            OPEN_UNIT,
        ),
    ];
    for (extra, flag, range) in cases {
        refused("distill", &with(extra), flag, range);
        assert!(!out.exists(), "{extra:?} left {} behind", out.display());
    }

    let sweep = [
        "sweep",
        "--cache",
        s(&cache),
        "--student-cache",
        s(&cache),
        "--algorithm",
        "adip-align",
        "--out",
        s(&out),
    ];
    let sweep_with = |extra: &[&'static str]| [&sweep[..], extra].concat();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--lambda", "0.5,-0.1"], "--lambda", NON_NEGATIVE),
        (
            &["--lambda", "0.5,1.5"],
            "--lambda",
            "[0, 1] for adip-align",
        ),
        (&["--jobs", "0"], "--jobs", AT_LEAST_1),
        (
            &["--", "--batch-size", "0"],
            "distill run: invalid value '0' for '--batch-size",
            AT_LEAST_1,
        ),
        (
            &["--", "--holdout-fraction", "1"],
            "distill run: invalid value '1' for '--holdout-fraction",
            OPEN_UNIT,
        ),
    ];
    for (extra, flag, range) in cases {
        refused("distill", &sweep_with(extra), flag, range);
        assert!(!out.exists(), "{extra:?} left {} behind", out.display());
    }

    // The smallest counts and the ends of the closed ranges train.
    let (o, _, stderr) = run(Command::new(bin("distill")).args(with(&[
        "--steps",
        "1",
        "--checkpoint-freq",
        "1",
        "--batch-size",
        "1",
        "--lambda",
        "1",
        "--weight-decay",
        "0",
        "--holdout-fraction",
        "0.5",
    ])));
    assert!(o.status.success(), "{stderr}");
    let dir = out.join("toy/adip-align/b/seed0");
    assert!(dir.join("done").is_file());
    let r = &records(&dir)[0];
    assert_eq!(r["hparams"]["batch_size"], 1, "{r}");
    assert_eq!(r["hparams"]["lambda"], 1.0, "{r}");
    let (o, _, stderr) = run(Command::new(bin("distill")).args(sweep_with(&[
        "--lambda",
        "0",
        "--jobs",
        "1",
        "--",
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--test-domain",
        "a",
    ])));
    assert!(o.status.success(), "{stderr}");
    assert!(out.join("toy/adip-align@lambda0/a/seed0/done").is_file());

    let (o, _, stderr) =
        run(Command::new(bin("distill")).args(["analyze", "--cache", s(&cache), "--k", "1"]));
    assert!(o.status.success(), "{stderr}");
    let (o, stdout, stderr) = run(Command::new(bin("distill")).args([
        "splits",
        "--cache",
        s(&cache),
        "--holdout-fraction",
        "0.01",
    ]));
    assert!(o.status.success(), "{stderr}");
    assert!(
        !stdout.contains(",out\n"),
        "int(6 * 0.01) = 0 out: {stdout}"
    );
}
