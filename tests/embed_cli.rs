//! `embed` end to end on a generated dataset and the committed tiny CLIP: outputs, resume, sharding,
//! bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vl2v::cache::{read_image_rows, read_texts, ImageRow, Manifest};
use vl2v_tests::{bin, embed_tiny_clip, run, tiny_clip, write_dataset};

fn rows_of(dir: &Path) -> Vec<ImageRow> {
    let mut parts: Vec<PathBuf> = fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| read_image_rows(p).unwrap())
        .collect()
}

fn last_line(stdout: &str) -> PathBuf {
    PathBuf::from(stdout.lines().last().expect("stdout has a line"))
}

#[test]
fn embeds_views_texts_and_manifest_and_skips_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    let n = write_dataset(
        &data,
        &["Real World", "art_painting"],
        &["Alarm_Clock", "dog"],
        3,
        (40, 30),
    );
    fs::write(data.join("Real World/dog/empty.jpg"), b"").unwrap();
    fs::write(data.join("Real World/dog/garbage.png"), b"not a png at all").unwrap();
    fs::write(data.join("Real World/dog/notes.txt"), b"ignored").unwrap();
    let cache = tmp.path().join("cache");

    let (out, stdout, stderr) = run(&mut embed_tiny_clip(
        &data,
        &cache,
        &["--views", "2", "--seed", "7"],
    ));
    assert!(out.status.success(), "{stderr}");
    let dir = last_line(&stdout);
    assert_eq!(dir, cache.join("toy").join("tiny_clip-views2-seed7"));

    let manifest = Manifest::read(&dir).unwrap();
    assert_eq!(manifest.counts.images as usize, n);
    assert_eq!(manifest.counts.rows as usize, n * 3);
    // --device auto in a build without CUDA, default precision; recorded by every part.
    assert_eq!(manifest.computed_on, ["cpu fp32"]);
    assert_eq!(manifest.skipped.len(), 2, "{:?}", manifest.skipped);
    assert!(manifest
        .skipped
        .iter()
        .any(|s| s.path == "Real World/dog/empty.jpg"));
    assert_eq!(manifest.dataset.domains, ["Real World", "art_painting"]);
    assert_eq!(manifest.dataset.classes[0].name, "Alarm Clock");
    assert_eq!(manifest.encoder.embedding_dim, 24);
    assert_eq!(manifest.views.count, 2);
    assert!(manifest.logit_scale.unwrap() > 1.0);
    assert!(stderr.contains("skipped 2"), "{stderr}");

    let rows = rows_of(&dir);
    assert_eq!(rows.len(), n * 3);
    for row in &rows {
        let norm: f32 = row.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "{} view {} norm {norm}",
            row.path,
            row.view
        );
        assert_eq!(row.embedding.len(), 24);
    }
    // View 0 is the identity view; augmented views differ from it and from each other.
    let first: Vec<_> = rows.iter().filter(|r| r.path == rows[0].path).collect();
    assert_eq!(first.iter().map(|r| r.view).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(first[0].params.crop, [0.0, 0.0, 1.0, 1.0]);
    assert_ne!(first[1].params, first[2].params);
    assert_ne!(first[0].embedding, first[1].embedding);
    assert_eq!(first[0].domain, "Real World");

    let texts = read_texts(&dir.join("texts.parquet")).unwrap();
    // 2 classes × ("a photo of a {}" + "a {domain} of a {}" × 2 domains)
    assert_eq!(texts.len(), 6);
    assert_eq!(texts[0].prompt, "a photo of a Alarm Clock");
    assert_eq!(texts[1].prompt, "a Real World of a Alarm Clock");
    assert_eq!(texts[2].domain.as_deref(), Some("art_painting"));

    // A rerun with the same settings recomputes nothing and changes nothing, the manifest included (its
    // `finished` time too, a second later: distill names its view files by the manifest's digest).
    let manifest_bytes = fs::read(dir.join("manifest.json")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (out, stdout2, stderr) = run(&mut embed_tiny_clip(
        &data,
        &cache,
        &["--views", "2", "--seed", "7"],
    ));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(last_line(&stdout2), dir);
    assert!(stderr.contains("embedded 0 images"), "{stderr}");
    assert_eq!(rows_of(&dir), rows);
    assert!(fs::read(dir.join("manifest.json")).unwrap() == manifest_bytes);

    // One writer per shard: while another process holds the lock, a second run refuses.
    let lock = fs::File::open(dir.join(".lock-shard-0-of-1")).unwrap();
    lock.lock().unwrap();
    let (out, _, stderr) = run(&mut embed_tiny_clip(
        &data,
        &cache,
        &["--views", "2", "--seed", "7"],
    ));
    assert!(!out.status.success());
    assert!(
        stderr.contains("another embed is writing shard 0/1"),
        "{stderr}"
    );
    drop(lock);

    // Other settings never mix into this directory: another image list is refused.
    let extra = data.join("art_painting/dog/extra.png");
    fs::copy(data.join("art_painting/dog/img_000.png"), &extra).unwrap();
    let (out, _, stderr) = run(&mut embed_tiny_clip(
        &data,
        &cache,
        &["--views", "2", "--seed", "7"],
    ));
    assert!(!out.status.success());
    assert!(
        stderr.contains("different settings (image_list_sha256"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    fs::remove_file(&extra).unwrap();
    adds_templates_without_touching_the_images(&data, &cache, &dir, &tmp.path().join("fresh"));

    // --strict makes an unreadable image fatal and names it.
    let (out, _, stderr) = run(&mut embed_tiny_clip(
        &data,
        &tmp.path().join("strict"),
        &["--strict"],
    ));
    assert!(!out.status.success());
    assert!(stderr.contains("Real World/dog/empty.jpg"), "{stderr}");
    assert_eq!(
        stderr
            .trim()
            .lines()
            .last()
            .unwrap()
            .matches("error")
            .count(),
        1,
        "{stderr}"
    );
}

/// `--templates` on the complete cache `dir` (under `cache`, of `data`): only the new prompts are embedded,
/// the image parts are not rewritten, the manifest lists the new templates, and the texts equal those of a
/// cache embedded with the templates from the start (under `fresh`).
fn adds_templates_without_touching_the_images(data: &Path, cache: &Path, dir: &Path, fresh: &Path) {
    let part = dir.join("images/part-00000.parquet");
    let part_before = (
        fs::read(&part).unwrap(),
        fs::metadata(&part).unwrap().modified().unwrap(),
    );
    let texts_before = read_texts(&dir.join("texts.parquet")).unwrap();
    let templates = data.parent().unwrap().join("t.txt");
    fs::write(&templates, "itap of a {}\na photo of a {label}\n").unwrap();
    let args = [
        "--views",
        "2",
        "--seed",
        "7",
        "--templates",
        templates.to_str().unwrap(),
    ];
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(data, cache, &args));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(last_line(&stdout), dir);
    assert!(stderr.contains("embedded 0 images"), "{stderr}");
    // 2 classes × 2 new templates.
    assert!(
        stderr.contains(&format!(
            "embedded 4 new prompts ({} in texts.parquet)",
            texts_before.len() + 4
        )),
        "{stderr}"
    );
    assert_eq!(
        (
            fs::read(&part).unwrap(),
            fs::metadata(&part).unwrap().modified().unwrap()
        ),
        part_before
    );
    let texts = read_texts(&dir.join("texts.parquet")).unwrap();
    assert_eq!(texts[..texts_before.len()], texts_before[..]);
    let added: Vec<(&str, &str)> = texts[texts_before.len()..]
        .iter()
        .map(|r| (r.template.as_str(), r.prompt.as_str()))
        .collect();
    assert_eq!(
        added,
        [
            ("itap of a {}", "itap of a Alarm Clock"),
            ("a photo of a {label}", "a photo of a 0"),
            ("itap of a {}", "itap of a dog"),
            ("a photo of a {label}", "a photo of a 1"),
        ]
    );
    let manifest = Manifest::read(dir).unwrap();
    assert_eq!(
        manifest.templates,
        [
            "a photo of a {}",
            "a {domain} of a {}",
            "itap of a {}",
            "a photo of a {label}"
        ]
    );
    // A rerun without --templates keeps them and embeds nothing.
    let (out, _, stderr) = run(&mut embed_tiny_clip(data, cache, &args[..4]));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("prompts"), "{stderr}");
    assert_eq!(read_texts(&dir.join("texts.parquet")).unwrap(), texts);

    // The same texts as a cache that had the templates from the start.
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(data, fresh, &args));
    assert!(out.status.success(), "{stderr}");
    let mut want = read_texts(&last_line(&stdout).join("texts.parquet")).unwrap();
    let key = |r: &vl2v::cache::TextRow| (r.label, r.template.clone(), r.domain.clone());
    want.sort_by_key(key);
    let mut got = texts;
    got.sort_by_key(key);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(key(g), key(w));
        assert_eq!(g.prompt, w.prompt);
        let diff = g
            .embedding
            .iter()
            .zip(&w.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{}: {diff}", g.prompt);
    }
}

#[test]
fn resumes_after_kill_and_shards_agree_with_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    // > 2 parts of 256 images.
    let n = write_dataset(&data, &["a", "b", "c"], &["x", "y"], 100, (24, 20));
    assert_eq!(n, 600);

    let whole = tmp.path().join("whole");
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(&data, &whole, &[]));
    assert!(out.status.success(), "{stderr}");
    let reference = rows_of(&last_line(&stdout));
    assert_eq!(reference.len(), 600);

    // Kill -9 once the first part is on disk, then resume.
    let killed = tmp.path().join("killed");
    let mut child = embed_tiny_clip(&data, &killed, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first_part = killed.join("toy/tiny_clip/images/part-00000.parquet");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !first_part.exists() && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().ok();
    child.wait().unwrap();
    // Each part takes a while; a kill right after the first one lands mid-run.
    assert!(first_part.exists(), "the first part never appeared");
    assert!(
        !killed.join("toy/tiny_clip/manifest.json").exists(),
        "the run finished before the kill"
    );
    // As if the kill had landed while a part was being written.
    let stale = killed.join("toy/tiny_clip/images/.part-00002.parquet.AbC123.tmp");
    fs::write(&stale, b"half a part").unwrap();
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(&data, &killed, &[]));
    assert!(out.status.success(), "{stderr}");
    let resumed_dir = last_line(&stdout);
    assert_eq!(rows_of(&resumed_dir), reference);
    let leftovers: Vec<_> = fs::read_dir(resumed_dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".parquet"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Two shards into one directory: the manifest appears only with the second.
    let sharded = tmp.path().join("sharded");
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(&data, &sharded, &["--shard", "1/2"]));
    assert!(out.status.success(), "{stderr}");
    let dir = last_line(&stdout);
    assert!(!dir.join("manifest.json").exists());
    assert!(Manifest::read(&dir)
        .unwrap_err()
        .to_string()
        .contains("incomplete"));
    let (out, _, stderr) = run(&mut embed_tiny_clip(&data, &sharded, &["--shard", "0/2"]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(Manifest::read(&dir).unwrap().counts.rows, 600);
    assert_eq!(rows_of(&dir), reference);
}

#[test]
fn bad_input_gets_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--dataset", "imagenet"],
            "unknown dataset 'imagenet'; known datasets: officehome, pacs",
        ),
        (
            vec!["--dataset", "pacs", "--root", "/no/such/dir"],
            "/no/such/dir does not exist",
        ),
        (
            vec!["--dataset", "x", "--root", ".", "--shard", "3/2"],
            "not a shard I/N",
        ),
    ];
    for (args, expected) in cases {
        let (out, _, stderr) = run(Command::new(bin("embed"))
            .args(&args)
            .current_dir(tmp.path()));
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A model directory without weights.
    let data = tmp.path().join("toy");
    write_dataset(&data, &["a"], &["x"], 1, (8, 8));
    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    fs::copy(tiny_clip().join("config.json"), model.join("config.json")).unwrap();
    let mut cmd = Command::new(bin("embed"));
    cmd.args(["--dataset", "toy", "--root"])
        .arg(&data)
        .arg("--model")
        .arg(&model);
    let (out, _, stderr) = run(cmd.current_dir(tmp.path()));
    assert!(!out.status.success());
    assert!(stderr.contains("has no model.safetensors"), "{stderr}");
}

#[test]
fn resolves_a_hub_id_from_the_offline_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf");
    let repo = hf_home.join("hub/models--acme--tiny-clip");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    fs::create_dir_all(&snapshot).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), commit).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        fs::copy(tiny_clip().join(file), snapshot.join(file)).unwrap();
    }
    let data = tmp.path().join("toy");
    write_dataset(&data, &["a", "b"], &["x"], 2, (16, 16));
    let cache = tmp.path().join("cache");
    let mut cmd = Command::new(bin("embed"));
    cmd.args(["--dataset", "toy", "--model", "acme/tiny-clip", "--root"])
        .arg(&data)
        .arg("--cache-dir")
        .arg(&cache)
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1");
    let (out, stdout, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    let manifest = Manifest::read(&last_line(&stdout)).unwrap();
    assert_eq!(manifest.encoder.commit.as_deref(), Some(commit));
    assert_eq!(manifest.encoder.model, "acme/tiny-clip");
    assert_eq!(manifest.encoder.weights_sha256.len(), 64);

    // A file missing from the cache is named, and nothing is downloaded.
    fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    let (out, _, stderr) = run(cmd.arg("--force"));
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "tokenizer.json of 'acme/tiny-clip' (revision main) is not in the Hugging Face cache"
        ),
        "{stderr}"
    );
}

#[test]
fn caches_a_frozen_student_on_the_teachers_views() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    write_dataset(&data, &["a", "b"], &["x", "y"], 2, (40, 30));
    let cache = tmp.path().join("cache");
    let (out, stdout, stderr) = run(&mut embed_tiny_clip(&data, &cache, &["--views", "2"]));
    assert!(out.status.success(), "{stderr}");
    let teacher_rows = rows_of(&last_line(&stdout));

    let weights = vl2v_tests::fixtures().join("students/vit.safetensors");
    let mut cmd = Command::new(bin("embed"));
    cmd.args([
        "--dataset",
        "toy",
        "--views",
        "2",
        "--encoder",
        "student",
        "--student",
        "test-vit",
        "--root",
    ])
    .arg(&data)
    .arg("--model")
    .arg(&weights)
    .arg("--cache-dir")
    .arg(&cache);
    let (out, stdout, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    let dir = last_line(&stdout);
    assert_eq!(dir, cache.join("toy/test-vit--vit-views2-seed0"));
    let manifest = Manifest::read(&dir).unwrap();
    assert_eq!(manifest.encoder.role, vl2v::cache::EncoderRole::Student);
    assert!(!manifest.encoder.normalized);
    assert_eq!(manifest.encoder.embedding_dim, 48);
    assert!(manifest.logit_scale.is_none());
    assert!(!dir.join("texts.parquet").exists());

    // Same (path, view) rows with the same view parameters: distill joins them.
    let student_rows = rows_of(&dir);
    assert_eq!(student_rows.len(), teacher_rows.len());
    for (s, t) in student_rows.iter().zip(&teacher_rows) {
        assert_eq!((&s.path, s.view, &s.params), (&t.path, t.view, &t.params));
    }
    // View 0 holds the student's raw features of the vl2v-preprocessed image.
    let device = vl2v::model::Device::Cpu;
    let config = vl2v::model::students::StudentConfig::by_name("test-vit").unwrap();
    let student = vl2v::model::students::Student::load_frozen(&weights, &config, &device).unwrap();
    let image = vl2v::image::load_rgb(&data.join(&student_rows[0].path)).unwrap();
    let preprocess = vl2v::image::Preprocess::new(vl2v::image::PreprocessMode::Vl2v, 32);
    let pixels = preprocess.apply(&image, &vl2v::views::ViewParams::identity());
    let expected = student.features(&pixels, 1, &device).unwrap().remove(0);
    let max_diff = expected
        .iter()
        .zip(&student_rows[0].embedding)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "max diff {max_diff}");
    let norm: f32 = expected.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "student features are stored raw, not normalised"
    );
}

/// `--precision bf16` embeds with bf16 products: every embedding within bf16's reach of the fp32 cache's
/// (cosine ≥ 0.99) but not equal to it (the setting took effect), and the manifest says how it was computed.
#[test]
fn bf16_products_embed_close_to_fp32_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("toy");
    write_dataset(&data, &["art", "photo"], &["cat", "dog"], 3, (40, 30));
    let embed_with = |precision: &str| {
        let cache = tmp.path().join(precision);
        let (out, stdout, stderr) = run(&mut embed_tiny_clip(
            &data,
            &cache,
            &["--views", "1", "--precision", precision],
        ));
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("precision {precision}")),
            "{stderr}"
        );
        last_line(&stdout)
    };
    let (fp32, bf16) = (embed_with("fp32"), embed_with("bf16"));
    assert_eq!(Manifest::read(&bf16).unwrap().computed_on, ["cpu bf16"]);
    let (a, b) = (rows_of(&fp32), rows_of(&bf16));
    assert_eq!(a.len(), b.len());
    let mut min_cos = 1f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.path, x.view), (&y.path, y.view));
        let cos: f32 = x
            .embedding
            .iter()
            .zip(&y.embedding)
            .map(|(p, q)| p * q)
            .sum();
        min_cos = min_cos.min(cos);
    }
    assert!(
        (0.99..0.999_999).contains(&min_cos),
        "minimum cosine between the bf16 and fp32 caches: {min_cos}"
    );
}
