//! Training-loop tests on synthetic features: resume, learning, NaN, and the benchmark timing.

use super::*;
use crate::algorithms::{lookup, Overrides, Setup};

/// Random unit-ish features for `n` images in `domains` domains, `views` views, `classes` classes.
struct Synthetic {
    labels: Vec<usize>,
    student: ViewTable,
    teacher: ViewTable,
    texts: Vec<f32>,
    domains: Vec<usize>,
}

fn synthetic(
    n: usize,
    n_domains: usize,
    views: usize,
    classes: usize,
    ds: usize,
    dt: usize,
) -> Synthetic {
    let mut rng = SplitMix64::new(42);
    let mut fill = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.unit_f32() - 0.5).collect() };
    let texts = fill(classes * dt);
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    // Teacher features lean towards their class text so that the task is learnable.
    let mut teacher = fill(n * views * dt);
    for (row, t) in teacher.chunks_exact_mut(dt).enumerate() {
        let y = labels[row / views];
        t.iter_mut()
            .zip(&texts[y * dt..(y + 1) * dt])
            .for_each(|(v, c)| *v += 2.0 * c);
    }
    // Student features carry their class too (a random code per class), as a pretrained backbone's would,
    // so that a projection trained on some domains classifies the held-out one.
    let codes = fill(classes * ds);
    let mut student = fill(n * views * ds);
    for (row, f) in student.chunks_exact_mut(ds).enumerate() {
        let y = labels[row / views];
        f.iter_mut()
            .zip(&codes[y * ds..(y + 1) * ds])
            .for_each(|(v, c)| *v += 2.0 * c);
    }
    Synthetic {
        labels,
        student: ViewTable::from_values(ds, views, student),
        teacher: ViewTable::from_values(dt, views, teacher),
        texts,
        domains: (0..n).map(|i| i * n_domains / n).collect(),
    }
}

fn run_data<'a>(s: &'a Synthetic, n_domains: usize, classes: usize) -> RunData<'a> {
    let splits = crate::data::DomainSplits::new(&s.domains, n_domains, 0.2, 0);
    let test = 0;
    let mut eval = Vec::new();
    let mut add = |key: String, images: &[usize], test_split| {
        eval.push(EvalSet {
            key,
            test_split,
            images: images.to_vec(),
            labels: images.iter().map(|&i| s.labels[i]).collect(),
        })
    };
    add("env0_in_acc".into(), &splits.in_[test], Some("in"));
    add("env0_out_acc".into(), &splits.out[test], Some("out"));
    for d in 1..n_domains {
        add(format!("env{d}_out_acc"), &splits.out[d], None);
    }
    RunData {
        labels: &s.labels,
        student: Some(&s.student),
        teacher: &s.teacher,
        online: None,
        pools: (1..n_domains).map(|d| splits.in_[d].clone()).collect(),
        eval,
        classes,
    }
}

fn build(name: &str, s: &Synthetic, classes: usize, lr: f64) -> Box<dyn Algorithm> {
    let setup = Setup {
        student_dim: Some(s.student.dim()),
        teacher_dim: s.teacher.dim(),
        classes,
        texts: &s.texts,
        templates: &[crate::prompt_styles::PHOTO],
        logit_scale: 100.0,
        seed: 0,
        backbone: None,
        prompts: None,
        test_domain: 0,
    };
    let overrides = Overrides {
        lr: Some(lr),
        batch_size: Some(8),
        ..Overrides::default()
    };
    (lookup(name).unwrap().build)(&setup, &overrides).unwrap()
}

fn config(steps: usize) -> RunConfig {
    RunConfig {
        steps,
        checkpoint_freq: 4,
        seed: 1,
        args: json!({"test": true}),
        label: "test".into(),
        stop_after: None,
        swad: None,
        model_save: 0,
        views: None,
        cutmix: None,
        device: None,
    }
}

#[test]
fn resumed_runs_write_identical_results() {
    let s = synthetic(200, 3, 3, 4, 12, 8);
    let data = run_data(&s, 3, 4);
    for name in ["adip-align", "erm-lp"] {
        let whole = tempfile::tempdir().unwrap();
        let mut a = build(name, &s, 4, 1e-2);
        let chosen = run(whole.path(), a.as_mut(), &data, &config(11)).unwrap();
        let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
        let want = String::from_utf8(read(whole.path(), run_dir::RESULTS)).unwrap();
        let steps: Vec<u64> = run_dir::read_results(whole.path())
            .unwrap()
            .iter()
            .map(|(_, r)| run_dir::record_step(r).unwrap())
            .collect();
        assert_eq!(steps, [0, 4, 8, 10], "{name}");
        assert!(want.contains("\"train_out\"") && want.contains("\"env0_in_acc\""));

        // Killed after step 4's checkpoint, with a step-8 record written but not checkpointed.
        let parts = tempfile::tempdir().unwrap();
        let mut b = build(name, &s, 4, 1e-2);
        let mut cfg = config(11);
        cfg.stop_after = Some(4);
        let err = run(parts.path(), b.as_mut(), &data, &cfg).unwrap_err();
        assert!(err.to_string().contains("stopped after step 4"), "{err}");
        assert!(!parts.path().join(DONE).exists());
        let mut records = run_dir::read_results(parts.path()).unwrap();
        assert_eq!(records.len(), 2);
        let bogus = json!({"step": 8, "train_out": 2.0, "test_in": 0.0});
        records.push((bogus.to_string(), bogus));
        run_dir::write_results(parts.path(), &records).unwrap();

        // Another configuration refuses to resume it.
        let mut c = build(name, &s, 4, 1e-2);
        let mut other = config(11);
        other.args = json!({"test": false});
        let err = run(parts.path(), c.as_mut(), &data, &other).unwrap_err();
        assert!(err.to_string().contains("other settings"), "{err}");

        // A fresh algorithm object resumes from the checkpoint to the same results.
        let mut d = build(name, &s, 4, 1e-2);
        let resumed = run(parts.path(), d.as_mut(), &data, &config(11)).unwrap();
        assert_eq!(resumed, chosen);
        assert_eq!(
            String::from_utf8(read(parts.path(), run_dir::RESULTS)).unwrap(),
            want
        );
        assert_eq!(read(parts.path(), MODEL), read(whole.path(), MODEL));
        assert_eq!(
            read(parts.path(), CHECKPOINT),
            read(whole.path(), CHECKPOINT)
        );

        // Done: skipped, same selection.
        let mut e = build(name, &s, 4, 1e-2);
        assert_eq!(
            run(parts.path(), e.as_mut(), &data, &config(11)).unwrap(),
            chosen
        );
    }
}

#[test]
fn adip_align_learns_and_beats_chance() {
    let s = synthetic(300, 3, 2, 4, 16, 8);
    let data = run_data(&s, 3, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut a = build("adip-align", &s, 4, 1e-2);
    run(dir.path(), a.as_mut(), &data, &config(200)).unwrap();
    let records = run_dir::read_results(dir.path()).unwrap();
    let loss = |r: &(String, Value)| run_dir::record_f64(&r.1, "loss").unwrap();
    assert!(loss(records.last().unwrap()) < loss(&records[0]) - 0.05);
    // 4 classes: chance is 0.25 on the held-out domain.
    let test_in = run_dir::record_f64(&records.last().unwrap().1, "test_in").unwrap();
    assert!(
        test_in > 0.6,
        "held-out accuracy {test_in} is not well above chance (0.25)"
    );
}

#[test]
fn a_nan_loss_names_the_step() {
    let mut s = synthetic(60, 3, 1, 2, 4, 4);
    s.teacher = ViewTable::from_values(4, 1, vec![f32::NAN; 60 * 4]);
    let data = run_data(&s, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut a = build("adip-align", &s, 2, 1e-2);
    let err = run(dir.path(), a.as_mut(), &data, &config(5)).unwrap_err();
    assert!(err.to_string().contains("is NaN at step 0"), "{err}");
}

/// The benchmark configuration (OfficeHome-sized adip-align, 768-d student, 512-d teacher, 5001 steps,
/// 32 × 3 images per step, evaluation every 200 steps) on random features:
/// `cargo test -p distill --release -- --ignored --nocapture officehome_sized` (with `ALIGN_BENCH_SWAD=vl2v`
/// for a `--swad` run), or against PyTorch with
/// `bash tests/bench/run_align_bench.sh`.
#[test]
#[ignore]
fn officehome_sized_adip_align_timing() {
    let (n, domains, classes) = (15_588, 4, 65);
    let s = synthetic(n, domains, 2, classes, 768, 512);
    let data = run_data(&s, domains, classes);
    let dir = tempfile::tempdir().unwrap();
    // ALIGN_BENCH_SWAD=vl2v|upstream times the run with SWAD.
    let swad = std::env::var("ALIGN_BENCH_SWAD")
        .ok()
        .map(|v| match v.as_str() {
            "upstream" => SwadVariant::Upstream,
            _ => SwadVariant::Vl2vFix,
        });
    let cfg = RunConfig {
        steps: 5001,
        checkpoint_freq: 200,
        swad,
        ..config(0)
    };
    let setup = Setup {
        student_dim: Some(768),
        teacher_dim: 512,
        classes,
        texts: &s.texts,
        templates: &[crate::prompt_styles::PHOTO],
        logit_scale: 100.0,
        seed: 0,
        backbone: None,
        prompts: None,
        test_domain: 0,
    };
    // The official defaults: lr 5e-5, batch 32 per domain, λ 0.5.
    let mut a = (lookup("adip-align").unwrap().build)(&setup, &Overrides::default()).unwrap();
    let started = std::time::Instant::now();
    run(dir.path(), a.as_mut(), &data, &cfg).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("officehome-sized adip-align, 5001 steps: {seconds:.2}s");
    // For tests/bench/run_align_bench.sh (the features' generation above is not timed, as in
    // tests/bench/align_torch.py).
    println!(
        "align-bench {{\"seconds\": {seconds:.4}, \"steps\": {}}}",
        cfg.steps
    );
}

#[test]
fn swad_runs_evaluate_the_averaged_model_and_restart_when_interrupted() {
    // A learnable student: its features are the teacher's (view 0 only).
    let mut s = synthetic(200, 3, 1, 4, 8, 8);
    let all: Vec<usize> = (0..200).collect();
    s.student = ViewTable::from_values(8, 1, s.teacher.gather_view0(&all));
    let data = run_data(&s, 3, 4);
    for variant in [SwadVariant::Vl2vFix, SwadVariant::Upstream] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = build("adip-align", &s, 4, 1e-2);
        let cfg = RunConfig {
            swad: Some(variant),
            ..config(41)
        };
        let chosen = run(dir.path(), a.as_mut(), &data, &cfg).unwrap();
        let records = run_dir::read_results(dir.path()).unwrap();
        let (last, rest) = records.split_last().unwrap();
        assert!(is_swad_record(&last.1), "{variant:?}: {}", last.0);
        assert!(rest.iter().all(|(_, r)| !is_swad_record(r)));
        for (_, r) in &records {
            let loss = run_dir::record_f64(r, "tr_outloss").unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{variant:?}: {loss}");
        }
        for key in [
            "train_out",
            "test_in",
            "test_out",
            "env0_in_acc",
            "env1_out_acc",
        ] {
            let acc = run_dir::record_f64(&last.1, key).unwrap();
            assert!((0.0..=1.0).contains(&acc), "{variant:?} {key}: {acc}");
        }
        // The task is learnable: the averaged model is far above chance (0.25).
        assert!(
            run_dir::record_f64(&last.1, "test_in").unwrap() > 0.5,
            "{}",
            last.0
        );
        let swad_test_in = run_dir::record_f64(&last.1, "test_in").unwrap();
        assert!((chosen.swad_test_in.unwrap() - swad_test_in).abs() < 1e-12);
        let n = last.1["swad_n_averaged"].as_u64().unwrap();
        assert!(n >= 1, "{}", last.0);
        let (tensors, _) = load_tensors(&dir.path().join(MODEL_SWAD)).unwrap();
        assert_eq!(tensors["proj.weight"].len(), 8 * 8);
        assert!(!dir.path().join(CHECKPOINT).exists());
        assert!(dir.path().join(DONE).is_file());
        // Skipped when done, with the same selection (read back from JSON: equal up to the last bit).
        let mut b = build("adip-align", &s, 4, 1e-2);
        let skipped = run(dir.path(), b.as_mut(), &data, &cfg).unwrap();
        assert_eq!(skipped.step, chosen.step);
        assert!((skipped.test_in - chosen.test_in).abs() < 1e-12);
        assert!((skipped.ood() - chosen.ood()).abs() < 1e-12);
        assert!(skipped.swad_test_in.is_some());

        // Interrupted: no checkpoint, so the rerun starts from step 0 and ends identical.
        let parts = tempfile::tempdir().unwrap();
        let mut c = build("adip-align", &s, 4, 1e-2);
        let stopped = RunConfig {
            stop_after: Some(8),
            ..RunConfig {
                swad: Some(variant),
                ..config(41)
            }
        };
        assert!(run(parts.path(), c.as_mut(), &data, &stopped).is_err());
        assert!(!parts.path().join(CHECKPOINT).exists());
        let mut d = build("adip-align", &s, 4, 1e-2);
        run(parts.path(), d.as_mut(), &data, &cfg).unwrap();
        assert_eq!(
            std::fs::read(parts.path().join(run_dir::RESULTS)).unwrap(),
            std::fs::read(dir.path().join(run_dir::RESULTS)).unwrap()
        );
    }
}

#[test]
fn swad_stops_training_on_a_dead_valley() {
    // A learnable problem whose validation labels are shifted by one class: the better the probe fits the
    // training domains, the higher the validation loss, so the valley dies right after it starts.
    let mut s = synthetic(200, 3, 1, 4, 8, 8);
    let all: Vec<usize> = (0..200).collect();
    s.student = ViewTable::from_values(8, 1, s.teacher.gather_view0(&all));
    let mut data = run_data(&s, 3, 4);
    for set in data.eval.iter_mut().filter(|set| set.test_split.is_none()) {
        set.labels.iter_mut().for_each(|y| *y = (*y + 1) % 4);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut a = build("erm-lp", &s, 4, 1e-2);
    let cfg = RunConfig {
        swad: Some(SwadVariant::Upstream),
        checkpoint_freq: 4,
        ..config(400)
    };
    run(dir.path(), a.as_mut(), &data, &cfg).unwrap();
    let records = run_dir::read_results(dir.path()).unwrap();
    let last = &records.last().unwrap().1;
    assert!(is_swad_record(last));
    let stopped: Vec<_> = records
        .iter()
        .filter(|(_, r)| r.get("swad_stop").and_then(Value::as_bool) == Some(true))
        .collect();
    assert_eq!(stopped.len(), 1, "{records:?}");
    let step = run_dir::record_step(&stopped[0].1).unwrap();
    assert!(step < 399);
    // The stop is the last training record; the SWAD line follows it.
    assert_eq!(&records[records.len() - 2].1, &stopped[0].1);
    assert_eq!(run_dir::record_step(last).unwrap(), step);
}

/// The step whose model the official rule leaves in the file after evaluations `(step, train_out)`.
fn last_saved(evaluations: &[(u64, f64)], model_save: u64) -> Option<u64> {
    let mut best = None;
    let mut saved = None;
    for &(step, train_out) in evaluations {
        if saved_by_official_rule(&mut best, train_out, step, model_save) {
            saved = Some(step);
        }
    }
    saved
}

/// By hand from trainer.py: `argmax(train_out).train_out == records[-1].train_out and step >= model_save`.
#[test]
fn the_official_rule_keeps_the_latest_tie_of_the_best_from_model_save_on() {
    let evals = [
        (0, 0.5),
        (100, 0.7),
        (200, 0.7),
        (300, 0.6),
        (400, 0.7),
        (500, 0.65),
    ];
    // Every tie of the best 0.7 is saved in turn; the latest (400) stays, not the first (100).
    assert_eq!(last_saved(&evals, 0), Some(400));
    assert_eq!(last_saved(&evals, 300), Some(400));
    // Before model_save nothing is saved, even the best.
    assert_eq!(last_saved(&evals, 450), None);
    // A later, better evaluation replaces it; a worse one never does.
    assert_eq!(
        last_saved(&[(0, 0.5), (100, 0.8), (200, 0.9)], 100),
        Some(200)
    );
    assert_eq!(last_saved(&[(0, 0.9), (100, 0.5), (200, 0.6)], 100), None);
    assert_eq!(
        last_saved(&[(0, 0.9), (100, 0.5), (200, 0.9)], 100),
        Some(200)
    );
}
