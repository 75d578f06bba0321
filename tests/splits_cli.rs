//! `distill splits` end to end: embed a generated dataset with the tiny CLIP, then check the CSV against
//! DomainBed's split as numpy computes it.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vl2v::cache::Manifest;
use vl2v_tests::{bin, run, tiny_clip, write_dataset};

/// Sorts before `art_painting` (byte order: uppercase first), and needs quoting in CSV.
const DOMAIN_0: &str = "Real World, \"v2\"";
const DOMAIN_1: &str = "art_painting";
const CLASSES: [&str; 3] = ["Alarm_Clock", "dog", "zebra"];
const PER_CLASS: usize = 8;

/// DomainBed's `out` keys for an environment of 24 images with holdout 0.2 (int(24 * 0.2) = 4), from numpy
/// (`tests/fixtures/splits/make_splits.py`, entries n = 24 of `split` in expected.json):
/// `keys = list(range(24)); np.random.RandomState(seed_hash(trial_seed, env)).shuffle(keys); keys[:4]`.
const OUT_TRIAL0_ENV0: [usize; 4] = [20, 10, 6, 15];
const OUT_TRIAL0_ENV1: [usize; 4] = [21, 8, 12, 14];
const OUT_TRIAL1_ENV0: [usize; 4] = [21, 8, 18, 5];

/// Builds the dataset (24 images per domain, plus one unreadable file in domain 1) and embeds it with one
/// augmented view, so that the cache holds view 1 rows that `splits` must ignore. Returns the cache dir.
fn embedded_cache(tmp: &Path) -> PathBuf {
    let data = tmp.join("toy");
    let n = write_dataset(&data, &[DOMAIN_0, DOMAIN_1], &CLASSES, PER_CLASS, (40, 30));
    assert_eq!(n, 2 * CLASSES.len() * PER_CLASS);
    fs::write(data.join(DOMAIN_1).join("dog/garbage.png"), b"not a png").unwrap();
    let mut cmd = Command::new(bin("embed"));
    cmd.args(["--dataset", "toy", "--views", "1", "--root"])
        .arg(&data)
        .arg("--model")
        .arg(tiny_clip())
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .env("HF_HUB_OFFLINE", "1");
    let (out, stdout, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    PathBuf::from(stdout.lines().last().expect("embed prints the cache dir"))
}

/// A minimal RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && record.is_empty(),
        "CSV ends with a newline"
    );
    records
}

fn splits(cache: &Path, extra: &[&str]) -> (Vec<Vec<String>>, String) {
    let mut cmd = Command::new(bin("distill"));
    cmd.arg("splits").arg("--cache").arg(cache).args(extra);
    let (out, stdout, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    (parse_csv(&stdout), stderr)
}

/// The out indices of one domain: positions, within the domain's rows in CSV order, of the `out` rows.
fn out_indices(rows: &[Vec<String>], domain: &str) -> Vec<usize> {
    rows.iter()
        .filter(|r| r[1] == domain)
        .enumerate()
        .filter(|(_, r)| r[2] == "out")
        .map(|(i, _)| i)
        .collect()
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

#[test]
fn splits_match_domainbed_over_the_cached_images() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = embedded_cache(tmp.path());
    let manifest = Manifest::read(&cache).unwrap();
    assert_eq!(manifest.dataset.domains, [DOMAIN_0, DOMAIN_1]);
    assert_eq!(manifest.skipped.len(), 1);

    let (records, stderr) = splits(&cache, &[]);
    assert_eq!(records[0], ["path", "domain", "split"]);
    let rows = &records[1..];

    // Every cached image exactly once, in cache order (= discovery order: domain, class, path).
    assert_eq!(rows.len(), manifest.counts.images as usize);
    let paths: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(paths.iter().collect::<HashSet<_>>().len(), rows.len());
    let mut expected_paths = Vec::new();
    for domain in [DOMAIN_0, DOMAIN_1] {
        for class in CLASSES {
            for i in 0..PER_CLASS {
                let ext = ["png", "JPG", "jpeg"][i % 3];
                expected_paths.push(format!("{domain}/{class}/img_{i:03}.{ext}"));
            }
        }
    }
    assert_eq!(paths, expected_paths);
    assert!(!paths.iter().any(|p| p.ends_with("garbage.png")));
    for row in rows {
        assert_eq!(row.len(), 3, "{row:?}");
        assert!(row[0].starts_with(&format!("{}/", row[1])), "{row:?}");
        assert!(row[2] == "in" || row[2] == "out", "{row:?}");
    }

    // Per domain: int(N * 0.2) out, and exactly numpy's keys[:n_out].
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for row in rows {
        let entry = counts
            .entry(if row[1] == DOMAIN_0 {
                DOMAIN_0
            } else {
                DOMAIN_1
            })
            .or_default();
        entry.0 += 1;
        entry.1 += usize::from(row[2] == "out");
    }
    assert_eq!(counts[DOMAIN_0], (24, 4));
    assert_eq!(counts[DOMAIN_1], (24, 4));
    assert_eq!(
        out_indices(rows, DOMAIN_0),
        sorted(OUT_TRIAL0_ENV0.to_vec())
    );
    assert_eq!(
        out_indices(rows, DOMAIN_1),
        sorted(OUT_TRIAL0_ENV1.to_vec())
    );
    assert!(
        stderr.contains("art_painting: env 1, 24 images, out 4, in 20")
            && stderr.contains("1 skipped by embed"),
        "{stderr}"
    );
    // A raw line of the CSV: the domain with a comma and quotes is quoted, its quotes doubled.
    let out_path = tmp.path().join("splits.csv");
    let (stdout_records, _) = splits(
        &cache,
        &["--trial-seed", "1", "--out", out_path.to_str().unwrap()],
    );
    assert!(
        stdout_records.is_empty(),
        "--out writes nothing to stdout: {stdout_records:?}"
    );
    let text = fs::read_to_string(&out_path).unwrap();
    assert!(
        text.lines().nth(1).unwrap().starts_with(
            "\"Real World, \"\"v2\"\"/Alarm_Clock/img_000.png\",\"Real World, \"\"v2\"\"\","
        ),
        "{text}"
    );
    let seeded = parse_csv(&text);
    assert_eq!(seeded.len(), records.len());
    assert_eq!(
        out_indices(&seeded[1..], DOMAIN_0),
        sorted(OUT_TRIAL1_ENV0.to_vec())
    );

    // Another holdout fraction: int(24 * 0.5) = 12 out per domain.
    let (half, _) = splits(&cache, &["--holdout-fraction", "0.5"]);
    assert_eq!(half[1..].iter().filter(|r| r[2] == "out").count(), 24);
}

#[test]
fn missing_cache_or_manifest_fails_with_the_cache_error() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [tmp.path().to_path_buf(), tmp.path().join("nope")] {
        let mut cmd = Command::new(bin("distill"));
        cmd.arg("splits").arg("--cache").arg(&dir);
        let (out, stdout, stderr) = run(&mut cmd);
        assert!(!out.status.success());
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: {} has no manifest.json: the cache is incomplete (rerun embed to finish it)",
                dir.display()
            )
        );
    }

    let mut cmd = Command::new(bin("distill"));
    cmd.args(["splits", "--holdout-fraction", "1.5", "--cache"])
        .arg(tmp.path());
    let (out, _, stderr) = run(&mut cmd);
    assert!(!out.status.success());
    assert!(
        stderr.contains("'--holdout-fraction <HOLDOUT_FRACTION>': must be in (0, 1)"),
        "{stderr}"
    );
}
