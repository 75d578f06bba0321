//! `distill analyze` end to end: `embed` a generated dataset with the committed tiny CLIP, then check the
//! robustness table's shape, the values that are fully determined, and the errors for bad caches.

use std::fs;
use std::path::Path;
use std::process::Command;

use vl2v::cache::{read_image_rows, read_texts, Manifest, TEXTS_FILE};
use vl2v_tests::{bin, cache_dir_of, embed_tiny_clip, picture, run};

const DOMAINS: [&str; 3] = ["art", "photo", "sketch"];
const CLASSES: [&str; 3] = ["cat", "dog", "fox"];
const COPIES: usize = 3;

/// Every (domain, class) folder holds `COPIES` identical pictures, so each image's class-mean prototype
/// and nearest same-class target neighbours are the image itself: E4 and E6 must be 100%.
fn write_identical_copies(root: &Path) {
    for (d, domain) in DOMAINS.iter().enumerate() {
        for (c, class) in CLASSES.iter().enumerate() {
            let dir = root.join(domain).join(class);
            fs::create_dir_all(&dir).unwrap();
            for i in 0..COPIES {
                picture(d, c, 0, 40, 32)
                    .save(dir.join(format!("copy_{i}.png")))
                    .unwrap();
            }
        }
    }
}

fn analyze(args: &[&str], cache: &Path) -> (bool, String, String) {
    let (out, stdout, stderr) = run(Command::new(bin("distill"))
        .arg("analyze")
        .arg("--cache")
        .arg(cache)
        .args(args));
    (out.status.success(), stdout, stderr)
}

/// The table's header cells and its rows (id, description, values), from the markdown.
fn parse_table(markdown: &str) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = markdown
        .lines()
        .find(|l| l.starts_with("| row |"))
        .map(cells)
        .expect("a header row");
    let rows = markdown
        .lines()
        .filter(|l| l.starts_with("| E"))
        .map(|l| {
            let c = cells(l);
            (c[0].clone(), c[2..].to_vec())
        })
        .collect();
    (header, rows)
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// E1 for one target domain, straight from the cache files: cosine to the unit text embedding of
/// "a photo of a {class}", argmax, percentage correct over the domain's view-0 images.
fn e1_from_files(dir: &Path, domain: &str) -> f64 {
    let manifest = Manifest::read(dir).unwrap();
    let mut prototypes = vec![Vec::new(); manifest.dataset.classes.len()];
    for row in read_texts(&dir.join(TEXTS_FILE)).unwrap() {
        if row.template == "a photo of a {}" {
            prototypes[row.label as usize] = unit(&row.embedding);
        }
    }
    let (mut correct, mut total) = (0, 0);
    for part in &manifest.parts {
        for row in read_image_rows(&dir.join(part)).unwrap() {
            if row.view != 0 || row.domain != domain {
                continue;
            }
            let x = unit(&row.embedding);
            let scores: Vec<f32> = prototypes
                .iter()
                .map(|p| p.iter().zip(&x).map(|(a, b)| a * b).sum())
                .collect();
            let best = (0..scores.len())
                .reduce(|a, b| if scores[b] > scores[a] { b } else { a })
                .unwrap();
            correct += usize::from(best as i32 == row.label);
            total += 1;
        }
    }
    100.0 * correct as f64 / total as f64
}

/// The largest cosine between view-0 embeddings of different classes in the same domain.
fn max_cosine_between_classes(dir: &Path) -> f32 {
    let manifest = Manifest::read(dir).unwrap();
    let rows: Vec<_> = manifest
        .parts
        .iter()
        .flat_map(|p| read_image_rows(&dir.join(p)).unwrap())
        .filter(|r| r.view == 0)
        .collect();
    let mut max = f32::NEG_INFINITY;
    for a in &rows {
        for b in rows
            .iter()
            .filter(|b| b.domain == a.domain && b.label != a.label)
        {
            let cos: f32 = unit(&a.embedding)
                .iter()
                .zip(unit(&b.embedding))
                .map(|(x, y)| x * y)
                .sum();
            max = max.max(cos);
        }
    }
    eprintln!("largest cosine between classes: {max}");
    max
}

#[test]
fn prints_the_robustness_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    write_identical_copies(&data);
    let cache = cache_dir_of(&mut embed_tiny_clip(
        &data,
        &tmp.path().join("cache"),
        &["--views", "1"],
    ));

    let (ok, stdout, stderr) = analyze(&[], &cache);
    assert!(ok, "{stderr}");
    let (header, rows) = parse_table(&stdout);
    let mut want_header = vec!["row".to_string(), "class prototype".to_string()];
    want_header.extend(DOMAINS.iter().map(|d| d.to_string()));
    want_header.push("Avg".into());
    assert_eq!(header, want_header, "{stdout}");
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5", "E6"], "{stdout}");

    let mut values = Vec::new();
    for (id, cells) in &rows {
        assert_eq!(cells.len(), DOMAINS.len() + 1, "{id}: {stdout}");
        let v: Vec<f64> = cells
            .iter()
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("{id}: '{c}' in {stdout}"))
            })
            .collect();
        assert!(v.iter().all(|x| (0.0..=100.0).contains(x)), "{id}: {v:?}");
        let mean = v[..DOMAINS.len()].iter().sum::<f64>() / DOMAINS.len() as f64;
        assert!(
            (v[DOMAINS.len()] - mean).abs() <= 0.01,
            "{id}: Avg of {v:?}"
        );
        values.push(v);
    }
    // Identical copies: the target class mean and the nearest target images are the image itself, and
    // other classes' pictures embed clearly apart, so E4 and E6 are 100% without any near tie.
    let max_cos = max_cosine_between_classes(&cache);
    assert!(
        max_cos < 0.9999,
        "pictures of two classes embed alike: {max_cos}"
    );
    assert!(values[3].iter().all(|&v| v == 100.0), "E4: {stdout}");
    assert!(values[5].iter().all(|&v| v == 100.0), "E6: {stdout}");
    // E1 recomputed from the files for every domain.
    for (d, domain) in DOMAINS.iter().enumerate() {
        assert_eq!(
            rows[0].1[d],
            format!("{:.2}", e1_from_files(&cache, domain)),
            "E1 {domain}: {stdout}"
        );
    }
    assert!(stdout.contains("excluded from its neighbours"), "{stdout}");
    assert!(stderr.contains("analyze: loaded the cache"), "{stderr}");

    // k only changes E5/E6; with k = 1 E6 is still the image's own copy.
    let (ok, stdout_k1, stderr) = analyze(&["--k", "1"], &cache);
    assert!(ok, "{stderr}");
    let (_, rows_k1) = parse_table(&stdout_k1);
    assert_eq!(rows_k1[..4], rows[..4]);
    assert!(rows_k1[5].1.iter().all(|v| v == "100.00"), "{stdout_k1}");
    let (ok, _, stderr) = analyze(&["--k", "0"], &cache);
    assert!(
        !ok && stderr.contains("invalid value '0' for '--k <K>': 0 is not in 1.."),
        "{stderr}"
    );

    // A student cache (no texts, role "student") is refused with one line.
    let student = tmp.path().join("student");
    fs::create_dir_all(student.join("images")).unwrap();
    for entry in fs::read_dir(cache.join("images")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(
            &path,
            student.join("images").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cache.join("manifest.json")).unwrap()).unwrap();
    manifest["encoder"]["role"] = "student".into();
    manifest["templates"] = serde_json::json!([]);
    manifest["logit_scale"] = serde_json::Value::Null;
    fs::write(student.join("manifest.json"), manifest.to_string()).unwrap();
    let (ok, stdout, stderr) = analyze(&[], &student);
    assert!(!ok && stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a student cache"), "{stderr}");
}

#[test]
fn missing_and_incomplete_caches_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-cache");
    let (ok, stdout, stderr) = analyze(&[], &missing);
    assert!(!ok && stdout.is_empty());
    assert_eq!(
        stderr.trim(),
        format!(
            "error: cache directory {} does not exist (pass the directory that embed printed last)",
            missing.display()
        )
    );

    let (ok, _, stderr) = analyze(&[], tmp.path());
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("has no manifest.json: the cache is incomplete"),
        "{stderr}"
    );
}
