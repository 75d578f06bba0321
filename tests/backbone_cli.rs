//! The algorithms that train a backbone on images, end to end: `embed` a generated dataset with the
//! committed tiny CLIP (teacher) and a tiny ResNet (student cache), Align, then Distill, KD, ERM
//! fine-tuning and VL2V-SD through `distill run`; resume, report, and the errors users meet.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vl2v_tests::{bin, cache_dir_of, embed, fixtures, records, run, tiny_clip, write_dataset};

const DOMAINS: [&str; 3] = ["art", "photo", "sketch"];
const CLASSES: [&str; 2] = ["cat", "dog"];

fn distill(args: &[&str]) -> (bool, String, String) {
    let (o, stdout, stderr) = run(Command::new(bin("distill")).args(args));
    (o.status.success(), stdout, stderr)
}

fn tensor_names(path: &Path) -> Vec<String> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<String> = tensors.into_keys().collect();
    names.sort();
    names
}

/// A toy dataset of `per_class` images per (domain, class) under `tmp`, its tiny-CLIP teacher cache and
/// the cache of student `arch` (weights `weights` from the fixtures) on the same `views` views.
fn teacher_and_student(
    tmp: &Path,
    per_class: usize,
    views: &str,
    arch: &str,
    weights: &Path,
) -> (PathBuf, PathBuf) {
    let root = tmp.join("toy");
    write_dataset(&root, &DOMAINS, &CLASSES, per_class, (40, 32));
    let clip = tiny_clip();
    let teacher = cache_dir_of(&mut embed(
        &root,
        &tmp.join("teacher"),
        &["--views", views, "--model", clip.to_str().unwrap()],
    ));
    let student = cache_dir_of(&mut embed(
        &root,
        &tmp.join("student"),
        &[
            "--views",
            views,
            "--encoder",
            "student",
            "--student",
            arch,
            "--model",
            weights.to_str().unwrap(),
        ],
    ));
    (teacher, student)
}

#[test]
fn align_then_distill_kd_erm_ft_and_sd_train_resume_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 5, "2", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let (t, s, o) = (
        teacher.to_str().unwrap(),
        student.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let common = |algorithm: &'static str, steps: &'static str| {
        vec![
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            o,
            "--algorithm",
            algorithm,
            "--test-domain",
            "art",
            "--steps",
            steps,
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
        ]
    };

    // Distill before Align: the error names the missing run and what to do.
    let (ok, _, stderr) = distill(&common("adip-distill", "5"));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("adip-align/art/seed0") && stderr.contains("--algorithm adip-align"),
        "{stderr}"
    );

    let (ok, _, stderr) = distill(&common("adip-align", "3"));
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = distill(&common("adip-distill", "5"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| art | 0 |"), "{stdout}");
    let dir = out.join("toy/adip-distill/art/seed0");
    for file in [
        "results.jsonl",
        "model.safetensors",
        "checkpoint.safetensors",
        "done",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let recs = records(&dir);
    let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 2, 4]);
    for r in &recs {
        for key in [
            "loss",
            "cos_image",
            "cos_text",
            "train_out",
            "test_in",
            "tr_outloss",
        ] {
            assert!(r[key].as_f64().is_some_and(f64::is_finite), "{key}: {r}");
        }
        // --device auto: a build without CUDA trains on the CPU, and says so in every record.
        assert_eq!(r["device"], "cpu", "{r}");
        assert_eq!(r["precision"], "fp32", "{r}");
        assert!(r["args"]["align_model"]
            .as_str()
            .unwrap()
            .ends_with("adip-align/art/seed0/model.safetensors"));
    }
    // The Align step Distill starts from, by the official rule (trainer.py: the latest evaluation whose
    // train_out equals the best; a test student has no official script, so --model-save defaults to 0).
    let align = records(&out.join("toy/adip-align/art/seed0"));
    let best = align
        .iter()
        .map(|r| r["train_out"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    let want = align
        .iter()
        .filter(|r| r["train_out"].as_f64() == Some(best))
        .map(|r| r["step"].as_u64().unwrap())
        .max();
    assert_eq!(recs[0]["args"]["align_step"].as_u64(), want, "{align:?}");
    assert_eq!(align[0]["args"]["model_save"], 0);
    // The saved model holds the trained backbone under its checkpoint names and the frozen projection,
    // and the projection is the Align run's, unchanged.
    let names = tensor_names(&dir.join("model.safetensors"));
    for name in [
        "conv1.weight",
        "layer4.0.conv2.weight",
        "proj.weight",
        "proj.bias",
    ] {
        assert!(names.contains(&name.to_string()), "{names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("running_mean")),
        "{names:?}"
    );
    let load = |p: PathBuf| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let distilled = load(dir.join("model.safetensors"));
    let aligned = load(out.join("toy/adip-align/art/seed0/model.safetensors"));
    let pretrained = load(weights.clone());
    let same = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
        let v = |t: &candle_core::Tensor| {
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        v(a) == v(b)
    };
    assert!(same(&distilled["proj.weight"], &aligned["proj.weight"]));
    // Every record follows at least one update (DomainBed's step s = after s + 1 updates): the backbone
    // trained, the BatchNorm statistics did not (they are not parameters).
    assert!(!same(
        &distilled["conv1.weight"],
        &pretrained["conv1.weight"]
    ));
    let checkpoint = load(dir.join("checkpoint.safetensors"));
    assert!(!same(
        &checkpoint["conv1.weight"],
        &pretrained["conv1.weight"]
    ));
    assert!(checkpoint.contains_key("adam.m.layer1.0.conv1.weight"));

    // Interrupted after step 2, resumed: the same results and checkpoint as the uninterrupted run.
    let cut = tmp.path().join("cut");
    let mut args = common("adip-distill", "5");
    let pos = args.iter().position(|a| *a == o).unwrap();
    let cut_s = cut.to_str().unwrap().to_string();
    args[pos] = &cut_s;
    // Distill reads the Align run under its own --out: copy the finished one.
    let align_src = out.join("toy/adip-align/art/seed0");
    let align_dst = cut.join("toy/adip-align/art/seed0");
    fs::create_dir_all(&align_dst).unwrap();
    for entry in fs::read_dir(&align_src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), align_dst.join(entry.file_name())).unwrap();
    }
    let mut stop = args.clone();
    stop.extend(["--stop-after", "2"]);
    let (ok, _, stderr) = distill(&stop);
    assert!(!ok && stderr.contains("stopped after step 2"), "{stderr}");
    let (ok, _, stderr) = distill(&args);
    assert!(ok && stderr.contains("resuming after step 2"), "{stderr}");
    let cut_dir = cut.join("toy/adip-distill/art/seed0");
    let strip = |mut r: Value| {
        r["args"]["align_model"] = Value::Null;
        r
    };
    let a: Vec<Value> = records(&cut_dir).into_iter().map(strip).collect();
    let b: Vec<Value> = records(&dir).into_iter().map(strip).collect();
    assert_eq!(a, b, "results after resuming");
    assert_eq!(
        fs::read(cut_dir.join("model.safetensors")).unwrap(),
        fs::read(dir.join("model.safetensors")).unwrap()
    );

    // KD, ERM fine-tuning and SD (the teacher's own image tower) run and record their own metrics.
    for (algorithm, keys) in [
        ("kd", &["loss", "ce", "kl"][..]),
        ("erm-ft", &["loss"][..]),
        ("sd", &["loss", "cos_image", "cos_text"][..]),
    ] {
        let (ok, _, stderr) = distill(&common(algorithm, "3"));
        assert!(ok, "{algorithm}: {stderr}");
        let dir = out.join("toy").join(algorithm).join("art/seed0");
        assert!(dir.join("done").is_file());
        let recs = records(&dir);
        assert_eq!(recs.len(), 2, "{algorithm}: steps 0 and 2");
        for key in keys {
            assert!(
                recs[1][*key].as_f64().is_some_and(f64::is_finite),
                "{algorithm} {key}"
            );
        }
    }
    let sd = tensor_names(&out.join("toy/sd/art/seed0/model.safetensors"));
    assert!(
        sd.contains(&"visual_projection.weight".to_string()),
        "{sd:?}"
    );
    let kd = tensor_names(&out.join("toy/kd/art/seed0/model.safetensors"));
    assert!(kd.contains(&"head.weight".to_string()), "{kd:?}");

    let (ok, table, stderr) = distill(&["report", "--runs", o, "--dataset", "toy"]);
    assert!(ok, "{stderr}");
    for algorithm in ["adip-align", "adip-distill", "kd", "erm-ft", "sd"] {
        assert!(table.contains(algorithm), "{algorithm} in {table}");
    }

    // Another model than the one the student cache was embedded with is refused, naming both.
    let other = fixtures().join("students/resnet_bottleneck.safetensors");
    let mut wrong = common("erm-ft", "3");
    wrong.extend(["--model", other.to_str().unwrap()]);
    let (ok, _, stderr) = distill(&wrong);
    assert!(
        !ok && stderr.contains("is not the model the cache was embedded with"),
        "{stderr}"
    );
    // Images that moved: the error names the folder and the flag.
    let mut moved = common("kd", "3");
    moved.extend(["--data-root", "/nonexistent/toy", "--seed", "1"]);
    let (ok, _, stderr) = distill(&moved);
    assert!(
        !ok && stderr.contains("/nonexistent/toy") && stderr.contains("--data-root"),
        "{stderr}"
    );
}

/// A DeiT student (class and distillation tokens) needs nothing of its own downstream: `distill` rebuilds
/// it from the student cache's manifest, Align then Distill train it, and its checkpoint keeps timm's names.
#[test]
fn a_deit_student_cache_aligns_and_distills() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/deit.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 3, "1", "test-deit", &weights);
    let manifest = vl2v::cache::Manifest::read(&student).unwrap();
    assert_eq!(
        manifest.encoder.architecture,
        "student test-deit, 48 features"
    );
    let out = tmp.path().join("runs");
    let (t, s, o) = (
        teacher.to_str().unwrap(),
        student.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    for algorithm in ["adip-align", "adip-distill"] {
        let (ok, _, stderr) = distill(&[
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            o,
            "--algorithm",
            algorithm,
            "--test-domain",
            "art",
            "--steps",
            "3",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
        ]);
        assert!(ok, "{algorithm}: {stderr}");
    }
    let dir = out.join("toy/adip-distill/art/seed0");
    let recs = records(&dir);
    assert_eq!(recs.len(), 2, "steps 0 and 2");
    assert!(recs[1]["loss"].as_f64().is_some_and(f64::is_finite));
    let load = |p: &Path| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let distilled = load(&dir.join("model.safetensors"));
    let pretrained = load(&weights);
    for name in [
        "cls_token",
        "dist_token",
        "pos_embed",
        "norm.weight",
        "proj.weight",
    ] {
        assert!(distilled.contains_key(name), "{name}");
    }
    // The distillation token is a parameter that trained.
    let values = |t: &candle_core::Tensor| {
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_ne!(
        values(&distilled["dist_token"]),
        values(&pretrained["dist_token"])
    );
}

/// The prefetching loader changes nothing but speed: the same records and the same model with 0, 1 and 3
/// loader threads, and `--workers` stays out of the recorded arguments (a run may resume with another
/// number).
/// `distill run --algorithm erm-ft` held out on photo, batch 3, evaluated every 2 steps, from teacher cache
/// `t` and student cache `s` into `out`, with (steps, learning rate) and `extra` flags.
fn erm_ft_on_photo(
    t: &str,
    s: &str,
    out: &Path,
    (steps, lr): (&str, &str),
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "run",
        "--cache",
        t,
        "--student-cache",
        s,
        "--out",
        out.to_str().unwrap(),
        "--algorithm",
        "erm-ft",
        "--test-domain",
        "photo",
        "--steps",
        steps,
        "--checkpoint-freq",
        "2",
        "--batch-size",
        "3",
        "--lr",
        lr,
    ];
    args.extend_from_slice(extra);
    distill(&args)
}

#[test]
fn loader_workers_do_not_change_results() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 4, "2", "test-resnet-basic", &weights);
    let (t, s) = (teacher.to_str().unwrap(), student.to_str().unwrap());
    let mut outputs = Vec::new();
    for workers in ["0", "1", "3"] {
        let out = tmp.path().join(format!("runs{workers}"));
        let (ok, _, stderr) = erm_ft_on_photo(t, s, &out, ("4", "1e-3"), &["--workers", workers]);
        assert!(ok, "--workers {workers}: {stderr}");
        let dir = out.join("toy/erm-ft/photo/seed0");
        let mut recs = records(&dir);
        for r in &mut recs {
            assert!(r["args"].get("workers").is_none(), "{r}");
            // Paths differ by the output folder only.
            r["args"]["cache"] = Value::Null;
        }
        outputs.push((recs, fs::read(dir.join("model.safetensors")).unwrap()));
    }
    assert_eq!(outputs[0].0.len(), 3, "steps 0, 2 and 3");
    for (i, other) in outputs.iter().enumerate().skip(1) {
        assert_eq!(other.0, outputs[0].0, "records with workers #{i}");
        assert!(other.1 == outputs[0].1, "model with workers #{i}");
    }
}

/// `--precision bf16` trains with bf16 products: every record says so, the losses stay within bf16's reach
/// of the fp32 run's (2% relative; the first step's loss, before any update, is the bf16 forward's alone)
/// without equalling them.
#[test]
fn bf16_products_train_close_to_fp32_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 4, "2", "test-resnet-basic", &weights);
    let (t, s) = (teacher.to_str().unwrap(), student.to_str().unwrap());
    let train = |precision: &str| {
        let out = tmp.path().join(precision);
        let (ok, _, stderr) =
            erm_ft_on_photo(t, s, &out, ("3", "1e-4"), &["--precision", precision]);
        assert!(ok, "--precision {precision}: {stderr}");
        assert!(
            stderr.contains(&format!("precision {precision}")),
            "{stderr}"
        );
        records(&out.join("toy/erm-ft/photo/seed0"))
    };
    let (fp32, bf16) = (train("fp32"), train("bf16"));
    assert_eq!(fp32.len(), bf16.len());
    for (a, b) in fp32.iter().zip(&bf16) {
        assert_eq!(b["precision"], "bf16", "{b}");
        assert_eq!(a["step"], b["step"]);
        let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(
            la != lb && (la - lb).abs() <= 0.02 * la.abs(),
            "step {}: loss {lb} with bf16 products, {la} in fp32",
            a["step"]
        );
    }
}

/// lp-ft starts from the finished erm-lp run's probe: without it, one line naming the run and the command;
/// with it, the recorded probe path, and a first evaluation (step 0, after one update at a learning rate
/// too small to move anything: the pretrained student with the probe as its classifier) that agrees with
/// the probe's own evaluation at its saved step, split by split (the probe was evaluated on the cached
/// view-0 features of the same student, lp-ft recomputes them from the images).
#[test]
fn lp_ft_starts_from_the_linear_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 4, "2", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let (t, s, o) = (
        teacher.to_str().unwrap(),
        student.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let run_algorithm = |algorithm: &str, steps: &str, lr: &str| {
        distill(&[
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            o,
            "--algorithm",
            algorithm,
            "--test-domain",
            "sketch",
            "--steps",
            steps,
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "3",
            "--lr",
            lr,
        ])
    };
    let (ok, _, stderr) = run_algorithm("lp-ft", "3", "1e-12");
    assert!(!ok);
    assert!(
        stderr.contains("lp-ft needs the finished erm-lp run")
            && stderr.contains("erm-lp/sketch/seed0")
            && stderr.contains("--algorithm erm-lp"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_algorithm("erm-lp", "5", "1e-2");
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_algorithm("lp-ft", "3", "1e-12");
    assert!(ok, "{stderr}");

    let recs = records(&out.join("toy/lp-ft/sketch/seed0"));
    assert!(recs[0]["args"]["align_model"]
        .as_str()
        .unwrap()
        .ends_with("erm-lp/sketch/seed0/model.safetensors"));
    // The probe's saved step, as the record names it; that step's evaluation of the probe.
    let saved_step = recs[0]["args"]["align_step"].as_u64().unwrap();
    let probe = records(&out.join("toy/erm-lp/sketch/seed0"))
        .into_iter()
        .find(|r| r["step"].as_u64() == Some(saved_step))
        .unwrap();
    assert_eq!(recs[0]["step"], 0);
    for key in [
        "env0_out_acc",
        "env1_out_acc",
        "env2_in_acc",
        "env2_out_acc",
    ] {
        assert_eq!(recs[0][key], probe[key], "{key}: {} vs {}", recs[0], probe);
    }
    // The same logits up to the cache's f16 rounding of the features.
    let (a, b) = (
        recs[0]["tr_outloss"].as_f64().unwrap(),
        probe["tr_outloss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-2 * b.abs().max(1.0),
        "tr_outloss {a} vs {b}"
    );
}

/// wise-ft mixes the teacher's tower with the finished sd run's: α = 0 evaluates as the zero-shot head on
/// the cached teacher embeddings, α = 1 as the sd model at its saved step (accuracies split by split, and
/// the same loss of the training domains' out splits up to the cache's rounding), and a missing sd run gets
/// one line.
#[test]
fn wise_ft_spans_the_zero_shot_and_the_fine_tuned_tower() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, _) = teacher_and_student(tmp.path(), 4, "2", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let (t, o) = (teacher.to_str().unwrap(), out.to_str().unwrap());
    let run_algorithm = |algorithm: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--cache",
            t,
            "--out",
            o,
            "--algorithm",
            algorithm,
            "--test-domain",
            "art",
        ];
        args.extend_from_slice(extra);
        distill(&args)
    };
    let (ok, _, stderr) = run_algorithm("wise-ft", &[]);
    assert!(!ok);
    assert!(
        stderr.contains("wise-ft needs the finished sd run") && stderr.contains("--algorithm sd"),
        "{stderr}"
    );
    let train = [
        "--steps",
        "5",
        "--checkpoint-freq",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
    ];
    let (ok, _, stderr) = run_algorithm("sd", &train);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_algorithm("zeroshot", &[]);
    assert!(ok, "{stderr}");
    for (alpha, tag) in [("0", "a0"), ("1", "a1")] {
        let (ok, _, stderr) = run_algorithm("wise-ft", &["--lambda", alpha, "--tag", tag]);
        assert!(ok, "α {alpha}: {stderr}");
    }
    let first = |dir: &str| records(&out.join(format!("toy/{dir}/art/seed0")));
    let (a0, a1) = (first("wise-ft@a0"), first("wise-ft@a1"));
    assert_eq!(a0.len(), 1, "one evaluation, nothing trains");
    assert_eq!(a0[0]["hparams"]["alpha"], 0.0);
    assert!(a1[0]["args"]["align_model"]
        .as_str()
        .unwrap()
        .ends_with("sd/art/seed0/model.safetensors"));
    let zero_shot = &first("zeroshot")[0];
    let saved_step = a1[0]["args"]["align_step"].as_u64().unwrap();
    let sd = first("sd")
        .into_iter()
        .find(|r| r["step"].as_u64() == Some(saved_step))
        .unwrap();
    for (got, want) in [(&a0[0], zero_shot), (&a1[0], &sd)] {
        for key in [
            "env1_out_acc",
            "env2_out_acc",
            "env0_in_acc",
            "env0_out_acc",
        ] {
            assert_eq!(got[key], want[key], "{key}: {got} vs {want}");
        }
        let (a, b) = (
            got["tr_outloss"].as_f64().unwrap(),
            want["tr_outloss"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-2 * b.abs().max(1.0),
            "tr_outloss {a} vs {b}"
        );
    }
}

/// rise: a cache without RISE's prompts gets one line naming the embed command that adds them; once added
/// (the images are not embedded again), rise trains the student with a projector into the teacher's text
/// space and a classifier that starts at the unit prompt-ensemble embeddings, and records its four losses
/// and its anchors (the training domains' "a {domain} of a {}").
#[test]
fn rise_needs_its_prompts_then_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 4, "2", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let (t, s, o) = (
        teacher.to_str().unwrap(),
        student.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let rise = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            o,
            "--algorithm",
            "rise",
            "--test-domain",
            "sketch",
            "--steps",
            "3",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "3",
        ];
        args.extend_from_slice(extra);
        distill(&args)
    };
    let (ok, _, stderr) = rise(&[]);
    assert!(!ok);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        stderr.contains("texts.parquet lacks the prompts of rise")
            && stderr.contains("\"itap of a {}.\"")
            && stderr.contains("--templates distill/prompt_styles/rise.txt"),
        "{stderr}"
    );
    let parts = |dir: &Path| {
        let mut p: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("part"))
            .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
            .collect();
        p.sort();
        p
    };
    let before = parts(&teacher);
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../distill/prompt_styles/rise.txt");
    let clip = vl2v_tests::tiny_clip();
    let root = tmp.path().join("toy");
    let again = cache_dir_of(&mut embed(
        &root,
        &tmp.path().join("teacher"),
        &[
            "--views",
            "2",
            "--model",
            clip.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
        ],
    ));
    assert_eq!(again, teacher);
    assert_eq!(parts(&teacher), before, "the images are not embedded again");

    let (ok, _, stderr) = rise(&["--lr", "1e-12"]);
    assert!(ok, "{stderr}");
    let dir = out.join("toy/rise/sketch/seed0");
    let recs = records(&dir);
    assert_eq!(recs.len(), 2, "steps 0 and 2");
    for key in ["loss", "kl", "ce", "absolute", "relative"] {
        assert!(recs[1][key].as_f64().is_some_and(f64::is_finite), "{key}");
    }
    let h = &recs[0]["hparams"];
    assert_eq!(h["temperature"], 3.0);
    assert_eq!(h["w_kd"], 0.9);
    assert_eq!(h["w_distance"], 0.5);
    assert_eq!(
        h["anchors"],
        serde_json::json!(["a {domain} of a {} @ art", "a {domain} of a {} @ photo"])
    );
    let model =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let head = model["head.weight"].to_vec2::<f32>().unwrap();
    assert_eq!(head.len(), CLASSES.len());
    for row in &head {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "a unit ensemble row: {norm}");
    }
    assert_eq!(
        model["projector.weight"].dims()[0],
        head[0].len(),
        "the projector maps into the teacher's space"
    );
    // RISE's own weight grid is checked as it is parsed.
    let (ok, _, stderr) = rise(&["--kd-weight", "1.5", "--seed", "1"]);
    assert!(!ok && stderr.contains("--kd-weight"), "{stderr}");
}

/// scmd: a cache without SCMD's prompt gets the embed command; with it, scmd trains on the hardest rows,
/// records its three losses and keeps its logit scale within [0, ln 100]. (Its moving average, which starts
/// at update 300, and that average's checkpoint are unit-tested in algorithms/finetune.rs.)
#[test]
fn scmd_needs_its_prompt_then_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 2, "1", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let (t, s, o) = (
        teacher.to_str().unwrap(),
        student.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let scmd = || {
        distill(&[
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            o,
            "--algorithm",
            "scmd",
            "--test-domain",
            "photo",
            "--steps",
            "3",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "3",
            "--lr",
            "1e-2",
        ])
    };
    let (ok, _, stderr) = scmd();
    assert!(
        !ok && stderr.contains("texts.parquet lacks the prompts of scmd")
            && stderr.contains("--templates distill/prompt_styles/scmd.txt"),
        "{stderr}"
    );
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../distill/prompt_styles/scmd.txt");
    let clip = vl2v_tests::tiny_clip();
    cache_dir_of(&mut embed(
        &tmp.path().join("toy"),
        &tmp.path().join("teacher"),
        &[
            "--views",
            "1",
            "--model",
            clip.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
        ],
    ));
    let (ok, _, stderr) = scmd();
    assert!(ok, "{stderr}");
    let dir = out.join("toy/scmd/photo/seed0");
    let recs = records(&dir);
    assert_eq!(recs.len(), 2, "steps 0 and 2");
    for key in ["loss", "ce", "kd", "cross_modal"] {
        assert!(recs[1][key].as_f64().is_some_and(f64::is_finite), "{key}");
    }
    assert_eq!(recs[0]["hparams"]["select_until"], 3750);
    assert_eq!(recs[0]["hparams"]["sma_start"], 300);
    let model =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let scale = model["logit_scale"].to_vec1::<f32>().unwrap()[0];
    assert!((0.0..=100f32.ln()).contains(&scale), "{scale}");
    assert!(model.contains_key("projector.weight") && model.contains_key("head.weight"));
}

/// `--teacher online`: the cache's CLIP tower embeds a fresh augmentation of every sampled image. It
/// reproduces the cache's own embeddings of cached views (view 0 and an augmented one, cosine ≥ 0.9999 on
/// the tiny CLIP), records the mode, resumes to the same results (the fresh views are drawn per step), and
/// runs Align with the frozen student on the same fresh views (refused for zeroshot, which only evaluates); CutMix, which needs it, runs on sd and is
/// refused where the loss takes no mixed labels or the teacher is the cache.
#[test]
fn the_online_teacher_reproduces_the_cache_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 3, "2", "test-resnet-basic", &weights);
    let (t, s) = (teacher.to_str().unwrap(), student.to_str().unwrap());
    let kd = |out: &Path, algorithm: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--cache",
            t,
            "--student-cache",
            s,
            "--out",
            out.to_str().unwrap(),
            "--algorithm",
            algorithm,
            "--test-domain",
            "art",
            "--steps",
            "5",
            "--checkpoint-freq",
            "2",
            "--batch-size",
            "2",
            "--teacher",
            "online",
        ];
        args.extend_from_slice(extra);
        distill(&args)
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ok, _, stderr) = kd(&a, "kd", &[]);
    assert!(ok, "{stderr}");
    let cosine: f64 = stderr
        .split("min cosine ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no agreement line in {stderr}"));
    eprintln!("online vs cached embeddings: min cosine {cosine}");
    assert!(cosine >= 0.9999, "online vs cached embeddings: {cosine}");
    let dir = |root: &Path| root.join("toy/kd/art/seed0");
    let recs = records(&dir(&a));
    assert_eq!(recs[0]["args"]["teacher"], "online");

    let (ok, _, stderr) = kd(&b, "kd", &["--stop-after", "2"]);
    assert!(!ok && stderr.contains("stopped after step 2"), "{stderr}");
    let (ok, _, stderr) = kd(&b, "kd", &[]);
    assert!(ok && stderr.contains("resuming after step 2"), "{stderr}");
    assert_eq!(records(&dir(&b)), recs, "results after resuming");

    // Align trains on the student's features: the frozen student encodes the fresh views too, and both
    // encoders reproduce their caches.
    let (ok, _, stderr) = kd(&a, "adip-align", &[]);
    assert!(ok, "{stderr}");
    let cosines: Vec<f64> = stderr
        .split("min cosine ")
        .skip(1)
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(cosines.len(), 2, "teacher and student: {stderr}");
    assert!(cosines.iter().all(|&c| c >= 0.9999), "{cosines:?}");
    assert_eq!(
        records(&a.join("toy/adip-align/art/seed0"))[0]["args"]["teacher"],
        "online"
    );
    let (ok, _, stderr) = distill(&[
        "run",
        "--cache",
        t,
        "--out",
        a.to_str().unwrap(),
        "--algorithm",
        "zeroshot",
        "--teacher",
        "online",
    ]);
    assert!(
        !ok && stderr.contains("--teacher online needs an algorithm that trains"),
        "{stderr}"
    );

    // CutMix: sd (the teacher's tower, so one input size) mixes the teacher's and its own images.
    let (ok, _, stderr) = kd(&a, "sd", &["--cutmix-beta", "1"]);
    assert!(ok, "{stderr}");
    let recs = records(&a.join("toy/sd/art/seed0"));
    assert_eq!(
        recs[0]["args"]["cutmix"],
        serde_json::json!({"beta": 1.0, "prob": 1.0})
    );
    assert!(recs[1]["loss"].as_f64().is_some_and(f64::is_finite));
    let (ok, _, stderr) = kd(&a, "kd", &["--cutmix-beta", "1", "--seed", "1"]);
    assert!(
        !ok && stderr.contains("CutMix mixes the labels"),
        "{stderr}"
    );
    let mut cached = vec![
        "run",
        "--cache",
        t,
        "--out",
        a.to_str().unwrap(),
        "--algorithm",
        "sd",
        "--seed",
        "2",
        "--cutmix-beta",
        "1",
    ];
    let (ok, _, stderr) = distill(&cached);
    assert!(
        !ok && stderr.contains("--cutmix-beta needs --teacher online"),
        "{stderr}"
    );
    cached.extend(["--cutmix-prob", "1.5"]);
    let (ok, _, stderr) = distill(&cached);
    assert!(!ok && stderr.contains("--cutmix-prob"), "{stderr}");
    // A probability without β would silently leave CutMix off.
    let (ok, _, stderr) = kd(&a, "sd", &["--cutmix-prob", "0.5", "--seed", "3"]);
    assert!(
        !ok && stderr.contains("--cutmix-prob needs --cutmix-beta"),
        "{stderr}"
    );
}

/// `distill study views`: kd from the first 0 and 1 cached views and with the online teacher; one table
/// row per arm with its teacher forwards ((1 + K)·images cached; steps × batch × training domains per
/// held-out domain online), the chart, each run's wall time; a second call skips every finished run.
#[test]
fn the_views_study_runs_each_arm_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("students/resnet_basic.safetensors");
    let (teacher, student) = teacher_and_student(tmp.path(), 2, "2", "test-resnet-basic", &weights);
    let out = tmp.path().join("runs");
    let study = || {
        distill(&[
            "study",
            "views",
            "--cache",
            teacher.to_str().unwrap(),
            "--student-cache",
            student.to_str().unwrap(),
            "--views",
            "0,1",
            "--algorithms",
            "kd",
            "--trial-seeds",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--",
            "--steps",
            "2",
            "--checkpoint-freq",
            "1",
            "--batch-size",
            "2",
        ])
    };
    let (ok, table, stderr) = study();
    assert!(ok, "{stderr}");
    // 3 domains × 2 classes × 2 images = 12 images; online: 3 steps (2 rounded up to 2·1 + 1) × batch 2 ×
    // 2 training domains, for each of the 3 held-out domains.
    let row = |arm: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| kd | {arm} |")))
            .unwrap_or_else(|| panic!("no row for {arm} in {table}"))
            .to_string()
    };
    assert!(row("0").ends_with("| 12 |"), "{}", row("0"));
    assert!(row("1").ends_with("| 24 |"), "{}", row("1"));
    assert!(row("online").ends_with("| 36 |"), "{}", row("online"));
    let dir = out.join("toy");
    assert!(dir.join("study-views.png").is_file());
    assert!(fs::read_to_string(dir.join("study-views.md")).unwrap() == table);
    let times = fs::read_to_string(dir.join("study-views.json")).unwrap();
    for key in ["kd@views0 trial0", "kd@views1 trial0", "kd@online trial0"] {
        assert!(times.contains(key), "{key} in {times}");
    }
    let online = records(&dir.join("kd@online/art/seed0"));
    assert_eq!(online[0]["args"]["teacher"], "online");
    assert_eq!(
        records(&dir.join("kd@views1/art/seed0"))[0]["args"]["views"],
        1
    );

    let (ok, again, stderr) = study();
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("finished, skipped").count(), 3, "{stderr}");
    assert_eq!(
        fs::read_to_string(dir.join("study-views.json")).unwrap(),
        times
    );
    assert_eq!(again, table);
}
