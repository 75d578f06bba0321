//! `distill run` end to end: `embed` a generated dataset twice with the committed tiny CLIP (the CLIP
//! preprocessing as the teacher, the VL2V preprocessing as a stand-in "student" with the same images and
//! views), then train, skip, resume, and check the errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vl2v::cache::read_texts;
use vl2v_tests::{bin, cache_dir_of, embed_tiny_clip, records, run, write_dataset};

const DOMAINS: [&str; 3] = ["art", "photo", "sketch"];
const CLASSES: [&str; 2] = ["cat", "dog"];

struct Caches {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    teacher: PathBuf,
    student: PathBuf,
}

fn caches() -> Caches {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("toy");
    write_dataset(&root, &DOMAINS, &CLASSES, 5, (40, 32));
    let teacher = cache_dir_of(&mut embed_tiny_clip(
        &root,
        &tmp.path().join("teacher"),
        &["--preprocess", "clip", "--views", "2"],
    ));
    let student = cache_dir_of(&mut embed_tiny_clip(
        &root,
        &tmp.path().join("student"),
        &["--preprocess", "vl2v", "--views", "2"],
    ));
    Caches {
        root,
        teacher,
        student,
        _tmp: tmp,
    }
}

fn distill_run(args: &[&str], teacher: &Path, out: &Path) -> (bool, String, String) {
    let (o, stdout, stderr) = run(Command::new(bin("distill"))
        .arg("run")
        .arg("--cache")
        .arg(teacher)
        .arg("--out")
        .arg(out)
        .args(args));
    (o.status.success(), stdout, stderr)
}

#[test]
fn adip_align_trains_skips_and_resumes_identically() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let student = c.student.to_str().unwrap();
    let train = [
        "--algorithm",
        "adip-align",
        "--student-cache",
        student,
        "--steps",
        "7",
        "--checkpoint-freq",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
    ];
    let whole = work.path().join("whole");
    let (ok, stdout, stderr) = distill_run(&train, &c.teacher, &whole);
    assert!(ok, "{stderr}");
    for (env, domain) in DOMAINS.iter().enumerate() {
        let dir = whole.join("toy/adip-align").join(domain).join("seed0");
        for file in [
            "results.jsonl",
            "model.safetensors",
            "checkpoint.safetensors",
            "done",
        ] {
            assert!(dir.join(file).is_file(), "{} has {file}", dir.display());
        }
        let recs = records(&dir);
        let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, [0, 3, 6]);
        for r in &recs {
            for key in [
                "loss",
                "train_out",
                "test_in",
                "test_out",
                "hparams",
                "args",
                "epoch",
                "tr_outloss",
            ] {
                assert!(r.get(key).is_some(), "record has {key}: {r}");
            }
            assert_eq!(r["args"]["test_envs"], serde_json::json!([env]));
            assert_eq!(r["args"]["algorithm"], "adip-align");
            assert_eq!(r["hparams"]["lambda"], 0.5);
            assert!(r.get(format!("env{env}_in_acc").as_str()).is_some());
            assert!(r.get(format!("env{env}_out_acc").as_str()).is_some());
            for other in (0..DOMAINS.len()).filter(|&o| o != env) {
                assert!(r.get(format!("env{other}_out_acc").as_str()).is_some());
                assert!(r.get(format!("env{other}_in_acc").as_str()).is_none());
            }
        }
        assert!(
            stdout.contains(&format!("| {domain} | {env} |")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("| **Avg** (OOD / ID) |"), "{stdout}");

    // A second run skips every finished run and prints the same table.
    let before = fs::read(whole.join("toy/adip-align/art/seed0/results.jsonl")).unwrap();
    let (ok, again, stderr) = distill_run(&train, &c.teacher, &whole);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("done, skipped").count(), 3, "{stderr}");
    assert_eq!(again, stdout);
    assert_eq!(
        fs::read(whole.join("toy/adip-align/art/seed0/results.jsonl")).unwrap(),
        before
    );

    // Interrupted right after step 3's checkpoint, then resumed: byte-identical outputs.
    let cut = work.path().join("cut");
    let mut interrupted = train.to_vec();
    interrupted.extend(["--test-domain", "photo", "--stop-after", "3"]);
    let (ok, _, stderr) = distill_run(&interrupted, &c.teacher, &cut);
    assert!(!ok && stderr.contains("stopped after step 3"), "{stderr}");
    let cut_dir = cut.join("toy/adip-align/photo/seed0");
    assert!(!cut_dir.join("done").exists());
    assert_eq!(records(&cut_dir).len(), 2);
    let mut resume = train.to_vec();
    resume.extend(["--test-domain", "photo"]);
    let (ok, _, stderr) = distill_run(&resume, &c.teacher, &cut);
    assert!(ok && stderr.contains("resuming after step 3"), "{stderr}");
    let whole_dir = whole.join("toy/adip-align/photo/seed0");
    for file in [
        "results.jsonl",
        "model.safetensors",
        "checkpoint.safetensors",
    ] {
        assert_eq!(
            fs::read(cut_dir.join(file)).unwrap(),
            fs::read(whole_dir.join(file)).unwrap(),
            "{file} after resuming"
        );
    }
}

#[test]
fn zeroshot_erm_lp_and_errors() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("runs");
    let student = c.student.to_str().unwrap();

    let (ok, stdout, stderr) = distill_run(
        &["--algorithm", "zeroshot", "--test-domain", "sketch"],
        &c.teacher,
        &out,
    );
    assert!(ok, "{stderr}");
    let dir = out.join("toy/zeroshot/sketch/seed0");
    let recs = records(&dir);
    assert_eq!(recs.len(), 1, "one evaluation at step 0");
    assert_eq!(recs[0]["step"], 0);
    assert!(recs[0].get("loss").is_none() && recs[0].get("test_in").is_some());
    assert!(dir.join("model.safetensors").is_file() && dir.join("done").is_file());
    assert_eq!(stdout.matches("| sketch | 2 | 0 |").count(), 1, "{stdout}");

    let (ok, _, stderr) = distill_run(
        &[
            "--algorithm",
            "erm-lp",
            "--student-cache",
            student,
            "--test-domain",
            "art",
            "--steps",
            "4",
            "--checkpoint-freq",
            "2",
            "--seed",
            "3",
            "--trial-seed",
            "1",
        ],
        &c.teacher,
        &out,
    );
    assert!(ok, "{stderr}");
    let recs = records(&out.join("toy/erm-lp/art/seed3-trial1"));
    // --steps 4 --checkpoint-freq 2 is the official n_steps (4 // 2) * 2 + 1 = 5: steps 0..=4.
    let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 2, 4]);
    assert_eq!(recs[0]["args"]["steps"], 5);
    assert_eq!(recs[0]["args"]["trial_seed"], 1);
    assert_eq!(recs[0]["args"]["views"], 2, "every cached view by default");
    assert_eq!(recs[0]["hparams"]["lr"], 5e-5);

    let fail = |args: &[&str], teacher: &Path| {
        let (ok, _, stderr) = distill_run(args, teacher, &out);
        assert!(!ok);
        stderr
    };
    let err = fail(&["--algorithm", "erm"], &c.teacher);
    assert!(
        err.contains("unknown algorithm 'erm'; valid: zeroshot, erm-lp, erm-ft, lp-ft, kd, rise, scmd, adip-align, adip-distill, sd, wise-ft"),
        "{err}"
    );
    let err = fail(
        &["--algorithm", "zeroshot", "--test-domain", "clipart"],
        &c.teacher,
    );
    assert!(
        err.contains("unknown domain 'clipart'; valid: all, art, photo, sketch"),
        "{err}"
    );
    let err = fail(&["--algorithm", "adip-align"], &c.teacher);
    assert!(err.contains("--student-cache"), "{err}");
    let err = fail(&["--algorithm", "zeroshot", "--views", "3"], &c.teacher);
    assert!(
        err.contains("--views 3") && err.contains("holds 2 augmented views"),
        "{err}"
    );

    // A "student" cache of a dataset that lacks one image, and one with another view count.
    let partial_root = work.path().join("partial");
    write_dataset(&partial_root, &DOMAINS, &CLASSES, 5, (40, 32));
    fs::remove_file(partial_root.join("photo/dog/img_004.JPG")).unwrap();
    let partial = cache_dir_of(&mut embed_tiny_clip(
        &partial_root,
        &work.path().join("partial-cache"),
        &["--preprocess", "vl2v", "--views", "2"],
    ));
    let err = fail(
        &[
            "--algorithm",
            "erm-lp",
            "--student-cache",
            partial.to_str().unwrap(),
        ],
        &c.teacher,
    );
    assert!(err.contains("lacks image photo/dog/img_004.JPG"), "{err}");
    let one_view = cache_dir_of(&mut embed_tiny_clip(
        &c.root,
        &work.path().join("one-view"),
        &["--preprocess", "vl2v", "--views", "1"],
    ));
    let err = fail(
        &[
            "--algorithm",
            "erm-lp",
            "--student-cache",
            one_view.to_str().unwrap(),
        ],
        &c.teacher,
    );
    assert!(
        err.contains("1 augmented views per image but the teacher cache has 2"),
        "{err}"
    );
}

#[test]
fn swad_runs_end_with_the_averaged_model() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let student = c.student.to_str().unwrap();
    let out = work.path().join("runs");
    let (ok, stdout, stderr) = distill_run(
        &[
            "--algorithm",
            "adip-align",
            "--student-cache",
            student,
            "--test-domain",
            "art",
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
        ],
        &c.teacher,
        &out,
    );
    assert!(ok, "{stderr}");
    let dir = out.join("toy/adip-align/art/seed0");
    for file in [
        "results.jsonl",
        "model.safetensors",
        "model_swad.safetensors",
        "done",
    ] {
        assert!(dir.join(file).is_file(), "{} has {file}", dir.display());
    }
    // No resume checkpoint: an interrupted --swad run restarts from step 0.
    assert!(!dir.join("checkpoint.safetensors").exists());
    let recs = records(&dir);
    let (last, rest) = recs.split_last().unwrap();
    assert_eq!(last["swad"], true, "{last}");
    assert!(rest.iter().all(|r| r.get("swad").is_none()));
    let steps: Vec<u64> = rest.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 3, 6]);
    for r in &recs {
        for key in [
            "train_out",
            "tr_outloss",
            "test_in",
            "test_out",
            "env0_in_acc",
            "args",
        ] {
            assert!(r.get(key).is_some(), "record has {key}: {r}");
        }
        assert_eq!(r["args"]["swad"], "upstream");
        assert!(r["tr_outloss"].as_f64().unwrap() > 0.0);
    }
    assert!(stdout.contains("SWAD test acc (in) %"), "{stdout}");

    // SWAD needs training.
    let (ok, _, stderr) = distill_run(&["--algorithm", "zeroshot", "--swad"], &c.teacher, &out);
    assert!(!ok);
    assert!(stderr.contains("zeroshot trains nothing"), "{stderr}");
}

#[test]
fn sweep_runs_a_tagged_grid_and_reports_each_configuration() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("sweep");
    let (o, stdout, stderr) = run(Command::new(bin("distill"))
        .arg("sweep")
        .arg("--cache")
        .arg(&c.teacher)
        .arg("--student-cache")
        .arg(&c.student)
        .args(["--algorithm", "adip-align", "--lambda", "0.2,0.8"])
        .args(["--trial-seeds", "0,1", "--jobs", "2", "--out"])
        .arg(&out)
        .args([
            "--",
            "--steps",
            "3",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "2",
        ]));
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("4 of 4 runs finished"), "{stderr}");
    for lambda in ["0.2", "0.8"] {
        for (trial, leaf) in [(0, "seed0"), (1, "seed0-trial1")] {
            let dir = out
                .join(format!("toy/adip-align@lambda{lambda}"))
                .join("sketch")
                .join(leaf);
            assert!(dir.join("done").is_file(), "{}", dir.display());
            let r = &records(&dir)[0];
            assert_eq!(r["hparams"]["lambda"].to_string(), lambda);
            assert_eq!(r["args"]["trial_seed"], trial);
            assert_eq!(r["args"]["tag"], format!("lambda{lambda}"));
            // Each λ its own DomainBed hparams_seed: its index in --lambda.
            assert_eq!(r["args"]["hparams_seed"], u64::from(lambda == "0.8"));
        }
    }
    // DomainBed's hyper-parameter selection, recomputed here from the records: per held-out domain and
    // trial seed, the λ whose best train_out is higher (0.2 on a tie, listed first).
    let best_train_out = |lambda: &str, domain: &str, leaf: &str| {
        let dir = out.join(format!("toy/adip-align@lambda{lambda}/{domain}/{leaf}"));
        records(&dir)
            .iter()
            .map(|r| r["train_out"].as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    for domain in ["art", "photo", "sketch"] {
        for (trial, leaf) in [(0, "seed0"), (1, "seed0-trial1")] {
            let low = best_train_out("0.2", domain, leaf);
            let high = best_train_out("0.8", domain, leaf);
            let winner = if high > low { "0.8" } else { "0.2" };
            let line = format!("| {domain} | {trial} | 0 | adip-align@lambda{winner} |");
            assert!(stdout.contains(&line), "{line} in\n{stdout}");
        }
    }
    assert!(stdout.contains("Avg-OOD"), "{stdout}");
    let report = fs::read_to_string(out.join("toy/report.md")).unwrap();
    assert!(report.contains("| adip-align@lambda0.2 |"), "{report}");
    assert!(report.contains("| adip-align@lambda0.8 |"), "{report}");

    // A bad value is refused before anything runs.
    let (o, _, stderr) = run(Command::new(bin("distill"))
        .arg("sweep")
        .arg("--cache")
        .arg(&c.teacher)
        .args(["--algorithm", "adip-align", "--lambda", "0.2,x"]));
    assert!(
        !o.status.success() && stderr.contains("invalid value 'x' for '--lambda <LAMBDA>'"),
        "{stderr}"
    );
}

/// `--shard I/N` runs the grid's runs I, I+N, …: two shards together run each run once, neither reports,
/// and the same sweep without --shard then only reports (every run is done).
#[test]
fn sweep_shards_split_the_grid_and_the_unsharded_sweep_reports() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("sweep");
    let sweep = |shard: Option<&str>| {
        let mut cmd = Command::new(bin("distill"));
        cmd.arg("sweep")
            .arg("--cache")
            .arg(&c.teacher)
            .arg("--student-cache")
            .arg(&c.student)
            .args(["--algorithm", "adip-align", "--lambda", "0.2,0.5,0.8"])
            .args(["--trial-seeds", "0,1", "--jobs", "1", "--out"])
            .arg(&out);
        if let Some(shard) = shard {
            cmd.args(["--shard", shard]);
        }
        cmd.args([
            "--",
            "--steps",
            "3",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "2",
        ]);
        run(&mut cmd)
    };
    // Grid order: λ, then trial seed. Shard 1/2 takes runs 1, 3, 5.
    let expected_1: [(&str, &str); 3] = [
        ("0.2", "seed0-trial1"),
        ("0.5", "seed0-trial1"),
        ("0.8", "seed0-trial1"),
    ];
    let (o, stdout, stderr) = sweep(Some("1/2"));
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("shard 1/2: 3 of the grid's 6 runs"),
        "{stderr}"
    );
    assert!(stderr.contains("without --shard"), "{stderr}");
    assert!(!stdout.contains("Avg-OOD") && !out.join("toy/report.md").exists());
    let done = |lambda: &str, leaf: &str| {
        out.join(format!("toy/adip-align@lambda{lambda}/art/{leaf}/done"))
            .is_file()
    };
    for lambda in ["0.2", "0.5", "0.8"] {
        for leaf in ["seed0", "seed0-trial1"] {
            let in_shard = expected_1.contains(&(lambda, leaf));
            assert_eq!(done(lambda, leaf), in_shard, "λ {lambda} {leaf}");
        }
    }
    let (o, _, stderr) = sweep(Some("0/2"));
    assert!(o.status.success(), "{stderr}");
    for lambda in ["0.2", "0.5", "0.8"] {
        assert!(done(lambda, "seed0") && done(lambda, "seed0-trial1"));
    }
    let before = fs::read(out.join("toy/adip-align@lambda0.5/art/seed0/results.jsonl")).unwrap();
    let (o, stdout, stderr) = sweep(None);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("Avg-OOD"), "{stdout}");
    assert!(out.join("toy/report.md").is_file());
    let after = fs::read(out.join("toy/adip-align@lambda0.5/art/seed0/results.jsonl")).unwrap();
    assert_eq!(before, after, "finished runs are not run again");

    let (o, _, stderr) = sweep(Some("2/2"));
    assert!(!o.status.success());
    assert!(stderr.contains("not a shard I/N"), "{stderr}");
}

/// The zero-shot head of a run folder's model.safetensors, `[C, D]` row-major.
fn head_weight(dir: &Path) -> Vec<f32> {
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    tensors["head.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The only line of stderr, which must be an error.
fn one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0]
}

#[test]
fn prompt_styles_change_the_zero_shot_head_and_need_their_prompts() {
    let c = caches();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("runs");
    let zeroshot = |extra: &[&str]| {
        let mut args = vec!["--algorithm", "zeroshot", "--test-domain", "photo"];
        args.extend(extra);
        distill_run(&args, &c.teacher, &out)
    };

    // The cache lacks style 3's prompts: one line naming the embed command that adds them.
    let (ok, _, stderr) = zeroshot(&["--prompt-style", "3", "--tag", "style3"]);
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(
        line.contains(
            "texts.parquet lacks the prompts of --prompt-style 3 (templates \"an art of a {}\", \
             \"a clipart of a {}\", \"a photo of a {} product\")"
        ),
        "{line}"
    );
    let command = &line[line.find("embed --dataset").expect("an embed command")..];
    assert!(
        command.ends_with("--templates distill/prompt_styles/style-3.txt"),
        "{command}"
    );
    assert!(!out.join("toy/zeroshot@style3").exists());

    // That command, run from the repository root, adds them without embedding any image.
    let words: Vec<&str> = command.split_whitespace().collect();
    let (o, _, stderr) = run(Command::new(bin("embed"))
        .args(&words[1..])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("HF_HUB_OFFLINE", "1"));
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("embedded 0 images"), "{stderr}");
    // 2 classes × 3 templates the cache lacked.
    assert!(stderr.contains("embedded 6 new prompts"), "{stderr}");

    let (ok, _, stderr) = zeroshot(&[]);
    assert!(ok, "{stderr}");
    let default_dir = out.join("toy/zeroshot/photo/seed0");
    let (ok, _, stderr) = zeroshot(&["--prompt-style", "3", "--tag", "style3"]);
    assert!(ok, "{stderr}");
    let style3_dir = out.join("toy/zeroshot@style3/photo/seed0");
    let (default_rec, style3_rec) = (&records(&default_dir)[0], &records(&style3_dir)[0]);
    assert_eq!(default_rec["args"]["prompt_style"], 2);
    assert_eq!(default_rec["hparams"]["template"], "a photo of a {}");
    assert_eq!(style3_rec["args"]["prompt_style"], 3);
    assert_eq!(
        style3_rec["hparams"]["template"],
        serde_json::json!([
            "an art of a {}",
            "a clipart of a {}",
            "a photo of a {} product",
            "a photo of a {}"
        ])
    );

    // The style-3 head, computed here from texts.parquet: per class the four prompts' embeddings, each
    // normalised, averaged, renormalised, × logit_scale.
    let texts = read_texts(&c.teacher.join("texts.parquet")).unwrap();
    let scale = vl2v::cache::Manifest::read(&c.teacher)
        .unwrap()
        .logit_scale
        .unwrap();
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let mut want = Vec::new();
    for (label, class) in CLASSES.iter().enumerate() {
        let prompts = [
            format!("an art of a {class}"),
            format!("a clipart of a {class}"),
            format!("a photo of a {class} product"),
            format!("a photo of a {class}"),
        ];
        let mut sum = Vec::new();
        for p in &prompts {
            let row = texts
                .iter()
                .find(|r| &r.prompt == p && r.domain.is_none())
                .unwrap_or_else(|| panic!("texts.parquet has '{p}'"));
            assert_eq!(row.label, label as i32);
            let u = unit(&row.embedding);
            sum.resize(u.len(), 0.0f32);
            sum.iter_mut().zip(&u).for_each(|(s, x)| *s += x / 4.0);
        }
        want.extend(unit(&sum).iter().map(|x| x * scale));
    }
    let got = head_weight(&style3_dir);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4 * scale, "{g} vs {w}");
    }
    let photo = head_weight(&default_dir);
    let max_diff = photo
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff > 1e-2 * scale,
        "style 3 changes the head ({max_diff})"
    );

    // Style 5 needs OfficeHome's domains; style 4 cannot run in the official code; both one line.
    let (ok, _, stderr) = zeroshot(&["--prompt-style", "5"]);
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(
        line.contains("--prompt-style 5") && line.contains("(art, photo, sketch)"),
        "{line}"
    );
    let (ok, _, stderr) = zeroshot(&["--prompt-style", "4"]);
    assert!(!ok);
    assert!(stderr.contains("KeyError: 'size'"), "{stderr}");
    assert_eq!(stderr.matches("error").count(), 1, "{stderr}");

    // Style 6 ("a photo of a {label}") is missing too, and trains adip-align once added.
    let student = c.student.to_str().unwrap();
    let align = [
        "--algorithm",
        "adip-align",
        "--student-cache",
        student,
        "--test-domain",
        "art",
        "--steps",
        "2",
        "--checkpoint-freq",
        "1",
        "--prompt-style",
        "6",
        "--tag",
        "style6",
    ];
    let (ok, _, stderr) = distill_run(&align, &c.teacher, &out);
    assert!(!ok);
    assert!(
        one_error_line(&stderr).ends_with("--templates distill/prompt_styles/style-6.txt"),
        "{stderr}"
    );
    let command = &stderr[stderr.find("embed --dataset").unwrap()..];
    let words: Vec<&str> = command.split_whitespace().collect();
    let (o, _, stderr) = run(Command::new(bin("embed"))
        .args(&words[1..])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("HF_HUB_OFFLINE", "1"));
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("embedded 2 new prompts"), "{stderr}");
    let (ok, _, stderr) = distill_run(&align, &c.teacher, &out);
    assert!(ok, "{stderr}");
    let recs = records(&out.join("toy/adip-align@style6/art/seed0"));
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["args"]["prompt_style"], 6);
    assert_eq!(recs[0]["hparams"]["template"], "a photo of a {label}");
}
