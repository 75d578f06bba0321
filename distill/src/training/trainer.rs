//! One leave-one-domain-out run: train on the in splits of the training domains, evaluate at step 0, every
//! `checkpoint_freq` steps and at the last step, keep the selected model, checkpoint for resuming.
//!
//! Like DomainBed's `train.py`, step `s` first updates and then (if `s % checkpoint_freq == 0` or it is
//! the last step) evaluates, so the record of step `s` is the model after `s + 1` updates and its `loss`
//! is the mean of the updates since the previous record.
//!
//! With SWAD (`RunConfig::swad`) the parameters after every step go to [`Swad::after_step`] and every
//! evaluation to [`Swad::at_checkpoint`] (`train_out`, `tr_outloss`); a dead loss valley stops training
//! (`swad_stop` on that record). At the end the averaged parameters are evaluated on every split (a last
//! results.jsonl line with `"swad": true`) and saved to model_swad.safetensors. SWAD state is not
//! checkpointed: a `--swad` run writes no checkpoint.safetensors, so an interrupted one restarts from step 0
//! (the segment and loss-valley history would otherwise have to be saved as several parameter sets).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::algorithms::NamedTensor;
use crate::algorithms::{Algorithm, Batch};
use crate::data::cutmix::{CutMix, Settings as CutMixSettings};
use crate::data::online::{fresh_views, Online};
use crate::data::{Sampler, ViewTable};
use crate::training::evaluate::{evaluate, select, EvalSet, EvalTables};
use crate::training::run_dir::{
    self, load_tensors, save_tensors, CHECKPOINT, DONE, MODEL, MODEL_SWAD,
};
use crate::training::swad::{Decision, Swad, SwadConfig, SwadVariant};
use vl2v::rng::SplitMix64;

/// Everything one run reads.
pub struct RunData<'a> {
    /// Label of every image.
    pub labels: &'a [usize],
    /// Every view of the student (`None` for algorithms that need no student).
    pub student: Option<&'a ViewTable>,
    /// Every view of the teacher.
    pub teacher: &'a ViewTable,
    /// `--teacher online`: the teacher (and the student, for cached-feature algorithms) encodes a fresh view
    /// of every pick instead (the cached views are not read while training).
    pub online: Option<&'a Online>,
    /// The in split of each training domain (what is sampled from), in domain order.
    pub pools: Vec<Vec<usize>>,
    /// The evaluated splits (their view-0 features are read from `student` and `teacher` at each
    /// evaluation).
    pub eval: Vec<EvalSet>,
    pub classes: usize,
}

/// Schedule and identity of a run.
pub struct RunConfig {
    pub steps: usize,
    pub checkpoint_freq: usize,
    pub seed: u64,
    /// `args` of every record (must match on resume).
    pub args: Value,
    /// A label for progress lines.
    pub label: String,
    /// Stop with an error right after the evaluation of this step (simulates an interrupted run).
    pub stop_after: Option<usize>,
    /// Run SWAD with this variant (trainable algorithms only).
    pub swad: Option<SwadVariant>,
    /// The official `--model_save`: model.safetensors holds the latest evaluation at a step ≥ this whose
    /// `train_out` equals the best so far (what the official `TE<k>_best.pth` holds).
    pub model_save: u64,
    /// Draw from the first `views` views of each image (view 0 included) instead of all the cache holds.
    pub views: Option<usize>,
    /// `--cutmix-beta`/`--cutmix-prob` (needs `data.online`: the teacher embeds the mixed images).
    pub cutmix: Option<CutMixSettings>,
    /// The device a backbone trains on and its `--precision`, recorded in every record (not in `args`: a
    /// run may resume on another device).
    pub device: Option<(String, &'static str)>,
}

/// The selected evaluation of a finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct Selected {
    pub step: u64,
    pub train_out: f64,
    pub test_in: f64,
    /// `test_in` of the SWAD-averaged model (the `"swad": true` line), if the run used SWAD.
    pub swad_test_in: Option<f64>,
    /// `train_out` of the SWAD-averaged model: the official "SWAD (inD)".
    pub swad_train_out: Option<f64>,
}

impl Selected {
    /// The run's OOD figure: the SWAD model's `test_in` if there is one, else the selected `test_in`.
    pub fn ood(&self) -> f64 {
        self.swad_test_in.unwrap_or(self.test_in)
    }

    /// The run's ID figure, as the official code reports it: the SWAD model's `train_out` ("SWAD (inD)")
    /// if there is one, else the selected `train_out`.
    pub fn id(&self) -> f64 {
        self.swad_train_out.unwrap_or(self.train_out)
    }
}

/// Whether a results.jsonl record is the evaluation of the SWAD-averaged model.
pub fn is_swad_record(record: &Value) -> bool {
    record.get("swad").and_then(Value::as_bool) == Some(true)
}

/// The selected record of `records` (first maximum of `train_out` among the non-SWAD records), plus the
/// SWAD line's `test_in` and `train_out` if there is one.
pub fn selected(records: &[(String, Value)]) -> Result<Selected> {
    let swad = records.iter().rev().find(|(_, r)| is_swad_record(r));
    let swad_test_in = swad
        .map(|(_, r)| run_dir::record_f64(r, "test_in"))
        .transpose()?;
    let swad_train_out = swad
        .map(|(_, r)| run_dir::record_f64(r, "train_out"))
        .transpose()?;
    let records: Vec<&(String, Value)> =
        records.iter().filter(|(_, r)| !is_swad_record(r)).collect();
    let train_out = records
        .iter()
        .map(|(_, r)| run_dir::record_f64(r, "train_out"))
        .collect::<Result<Vec<_>>>()?;
    let Some(i) = select(&train_out) else {
        bail!("results.jsonl has no evaluations")
    };
    Ok(Selected {
        step: run_dir::record_step(&records[i].1)?,
        train_out: train_out[i],
        test_in: run_dir::record_f64(&records[i].1, "test_in")?,
        swad_test_in,
        swad_train_out,
    })
}

/// Runs (or resumes, or skips when `done` exists) the run in `dir`.
pub fn run(
    dir: &Path,
    algorithm: &mut dyn Algorithm,
    data: &RunData,
    config: &RunConfig,
) -> Result<Selected> {
    // The loop runs on one of rayon's workers (`scope` moves a closure called from outside the pool onto
    // it). Every step forks small parallel products; forked from a worker they are a `join` that the
    // worker takes part in, while from an outside thread each fork is a hand-off that puts the caller to
    // sleep and wakes it again (about 5% of the OfficeHome-sized adip-align benchmark, 2 threads).
    rayon::scope(|_| run_on_pool(dir, algorithm, data, config))
}

fn run_on_pool(
    dir: &Path,
    algorithm: &mut dyn Algorithm,
    data: &RunData,
    config: &RunConfig,
) -> Result<Selected> {
    if dir.join(DONE).is_file() {
        eprintln!("{}: done, skipped ({})", config.label, dir.display());
        return selected(&run_dir::read_results(dir)?);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let trains = algorithm.batch_size() > 0;
    let steps = if trains { config.steps } else { 1 };
    ensure!(steps > 0, "--steps must be at least 1");
    ensure!(
        config.checkpoint_freq > 0,
        "--checkpoint-freq must be at least 1"
    );
    let mut sampler = if trains {
        Some(Sampler::new(
            data.pools.clone(),
            algorithm.batch_size(),
            config.views.unwrap_or(data.teacher.views()),
            config.seed,
        )?)
    } else {
        None
    };
    let mut swad = match config.swad {
        Some(variant) => {
            ensure!(trains, "--swad needs an algorithm that trains");
            Some(Swad::new(SwadConfig::new(variant))?)
        }
        None => None,
    };
    let mut run = Run::resume_or_start(dir, algorithm, data, config, sampler.as_mut(), steps)?;
    let start = run.start;
    let mut last_step = start.saturating_sub(1);
    let mut batch = BatchBuffers::default();
    for step in start..steps {
        if let Some(sampler) = sampler.as_mut() {
            run.train_step(step, sampler, &mut batch, step + 1 < steps)?;
            if let Some(swad) = swad.as_mut() {
                swad.after_step(step as u64, &run.algorithm.params()?)?;
            }
        }
        if step % config.checkpoint_freq != 0 && step + 1 != steps {
            continue;
        }
        let stop = run.evaluate(step, swad.as_mut(), sampler.as_ref())?;
        last_step = step;
        if stop {
            break;
        }
    }
    run.bar.finish_and_clear();
    if !dir.join(MODEL).is_file() {
        eprintln!(
            "{}: no evaluation at a step ≥ --model-save {} tied the best train_out, so no {MODEL} \
             (as the official code would save no TE<k>_best.pth)",
            config.label, config.model_save
        );
    }
    if let Some(swad) = swad {
        run.evaluate_swad(swad, last_step)?;
    }
    vl2v::cache::write_bytes_atomic(&dir.join(DONE), b"done\n")?;
    selected(&run.records)
}

/// The minibatch of a step, reused across steps.
#[derive(Default)]
struct BatchBuffers {
    picks: Vec<(usize, usize)>,
    /// The next step's picks, for the algorithm's prefetch.
    next: Vec<(usize, usize)>,
    student: Vec<f32>,
    teacher: Vec<f32>,
    labels: Vec<usize>,
}

/// A run in progress: its records so far and what the next evaluation needs.
struct Run<'r, 'd> {
    dir: &'r Path,
    algorithm: &'r mut dyn Algorithm,
    data: &'r RunData<'d>,
    config: &'r RunConfig,
    records: Vec<(String, Value)>,
    /// The best `train_out` so far.
    best: Option<f64>,
    /// The first step still to run.
    start: usize,
    /// `config.args` as written in checkpoints (compared as text on resume).
    args_text: String,
    steps_per_epoch: f64,
    /// Metric sums since the last evaluation, and how many steps they cover.
    sums: BTreeMap<&'static str, f64>,
    count: usize,
    bar: ProgressBar,
}

impl<'r, 'd> Run<'r, 'd> {
    /// Continues from checkpoint.safetensors when there is one (its records up to its step kept, the
    /// algorithm and sampler restored), else starts afresh with whatever else the folder holds deleted.
    fn resume_or_start(
        dir: &'r Path,
        algorithm: &'r mut dyn Algorithm,
        data: &'r RunData<'d>,
        config: &'r RunConfig,
        sampler: Option<&mut Sampler>,
        steps: usize,
    ) -> Result<Self> {
        let args_text = serde_json::to_string(&config.args)?;
        let checkpoint = dir.join(CHECKPOINT);
        let mut records = Vec::new();
        let mut start = 0usize;
        if let (Some(sampler), true) = (sampler, checkpoint.is_file()) {
            let (tensors, meta) = load_tensors(&checkpoint)?;
            let meta = meta.context("checkpoint.safetensors has no meta")?;
            // Compared as text: parsing a float back may change its last bit.
            if meta.get("args").and_then(Value::as_str) != Some(args_text.as_str()) {
                bail!(
                    "{} holds a run with other settings (its checkpoint's args differ); pass another \
                     --out or delete that directory",
                    dir.display()
                );
            }
            let field = |key: &str| {
                meta[key]
                    .as_u64()
                    .with_context(|| format!("checkpoint meta has no {key}"))
            };
            let step = field("step")?;
            algorithm.load_state(&tensors, field("adam_t")?)?;
            sampler.rng = SplitMix64 {
                state: field("rng")?,
            };
            for r in run_dir::read_results(dir)? {
                if run_dir::record_step(&r.1)? <= step {
                    records.push(r);
                }
            }
            run_dir::write_results(dir, &records)?;
            start = step as usize + 1;
            eprintln!("{}: resuming after step {step}", config.label);
        } else {
            // No checkpoint: nothing earlier in the directory can be trusted.
            for stale in [run_dir::RESULTS, MODEL, MODEL_SWAD, CHECKPOINT] {
                let _ = std::fs::remove_file(dir.join(stale));
            }
        }
        let best = records
            .iter()
            .map(|(_, r)| run_dir::record_f64(r, "train_out"))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))));
        let bar = ProgressBar::new(steps as u64).with_position(start as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(config.label.clone());
        let steps_per_epoch = data
            .pools
            .iter()
            .map(|p| p.len() as f64 / algorithm.batch_size().max(1) as f64)
            .fold(f64::INFINITY, f64::min);
        Ok(Run {
            dir,
            algorithm,
            data,
            config,
            records,
            best,
            start,
            args_text,
            steps_per_epoch,
            sums: BTreeMap::new(),
            count: 0,
            bar,
        })
    }

    /// One update on a freshly sampled minibatch; its metrics join the sums of the next record.
    fn train_step(
        &mut self,
        step: usize,
        sampler: &mut Sampler,
        batch: &mut BatchBuffers,
        another_follows: bool,
    ) -> Result<()> {
        let data = self.data;
        let seed = self.config.seed;
        sampler.next_batch(&mut batch.picks);
        if data.online.is_some() {
            fresh_views(seed, step, &mut batch.picks);
        }
        if another_follows {
            // Drawn again by the next step's `next_batch`, so checkpoints keep the sampler as it was.
            sampler.peek_batch(&mut batch.next);
            if data.online.is_some() {
                fresh_views(seed, step + 1, &mut batch.next);
            }
            self.algorithm.prefetch(&batch.next);
        }
        // Rows picked at random from tables far larger than the caches: the two copies wait on memory
        // and overlap well.
        let BatchBuffers {
            picks,
            student,
            teacher,
            labels,
            ..
        } = batch;
        let mix = match (self.config.cutmix, data.online) {
            (Some(settings), Some(online)) => {
                CutMix::draw(settings, seed, step, picks.len(), online.teacher.size())
            }
            _ => None,
        };
        match data.online {
            Some(online) => {
                online.teacher.embed_into(picks, mix.as_ref(), teacher)?;
                match &online.student {
                    Some(s) => s.embed_into(picks, mix.as_ref(), student)?,
                    None => student.clear(),
                }
            }
            None => {
                rayon::join(
                    || {
                        if let Some(table) = data.student {
                            table.gather_into(picks, student);
                        }
                    },
                    || data.teacher.gather_into(picks, teacher),
                );
            }
        }
        labels.clear();
        labels.extend(picks.iter().map(|&(i, _)| data.labels[i]));
        let metrics = self.algorithm.update(&Batch {
            picks,
            student,
            teacher,
            labels,
            mix: mix.as_ref(),
        })?;
        for (name, value) in metrics {
            if !value.is_finite() {
                bail!(
                    "{}: {name} is {value} at step {step}; training diverged (try a smaller --lr)",
                    self.config.label
                );
            }
            *self.sums.entry(name).or_default() += value;
        }
        self.count += 1;
        self.bar.inc(1);
        Ok(())
    }

    /// The evaluation after `step`: a results.jsonl record, model.safetensors when `train_out` improves,
    /// the resume checkpoint. Returns whether training stops here (SWAD's loss valley is dead).
    fn evaluate(
        &mut self,
        step: usize,
        swad: Option<&mut Swad>,
        sampler: Option<&Sampler>,
    ) -> Result<bool> {
        let config = self.config;
        let (mut record, train_out, tr_outloss) =
            eval_record(&*self.algorithm, self.data, config, step)?;
        let trains = sampler.is_some();
        if trains {
            record.insert("epoch".into(), json!(step as f64 / self.steps_per_epoch));
            for (name, sum) in &self.sums {
                record.insert((*name).into(), json!(sum / self.count as f64));
            }
        }
        let swad_running = swad.is_some();
        let mut stop = false;
        if let Some(swad) = swad {
            if swad.at_checkpoint(step as u64, train_out, tr_outloss)? == Decision::Stop {
                record.insert("swad_stop".into(), json!(true));
                stop = true;
            }
        }
        self.bar.suspend(|| {
            eprintln!(
                "{} step {step}: loss {} train_out {:.4} tr_outloss {:.4} test_in {:.4}",
                config.label,
                record
                    .get("loss")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |l| format!("{l:.4}")),
                train_out,
                tr_outloss,
                record.get("test_in").and_then(Value::as_f64).unwrap_or(0.0)
            );
            if stop {
                eprintln!(
                    "{} step {step}: SWAD's loss valley is dead, training stops early",
                    config.label
                );
            }
        });
        let record = Value::Object(record);
        self.records.push((serde_json::to_string(&record)?, record));
        run_dir::write_results(self.dir, &self.records)?;
        if saved_by_official_rule(&mut self.best, train_out, step as u64, config.model_save) {
            let meta = json!({"step": step});
            save_tensors(
                &self.dir.join(MODEL),
                &self.algorithm.parameters()?,
                Some(&meta),
            )?;
        }
        if let (Some(sampler), false) = (sampler, swad_running) {
            let (tensors, adam_t) = self.algorithm.state()?;
            let meta = json!({"args": self.args_text, "step": step, "adam_t": adam_t, "rng": sampler.rng.state});
            save_tensors(&self.dir.join(CHECKPOINT), &tensors, Some(&meta))?;
        }
        self.sums.clear();
        self.count = 0;
        if config.stop_after == Some(step) {
            self.bar.finish_and_clear();
            bail!("{}: stopped after step {step} as asked", config.label);
        }
        Ok(stop)
    }

    /// Loads SWAD's averaged parameters into the algorithm, evaluates them on every split (a last record
    /// with `"swad": true`, dated `last_step`) and saves them as model_swad.safetensors.
    fn evaluate_swad(&mut self, swad: Swad, last_step: usize) -> Result<()> {
        let label = &self.config.label;
        let valley = swad.loss_valley();
        eprintln!(
            "{label}: SWAD ({:?}) loss valley: converged at step {}, threshold {}",
            swad.variant(),
            valley
                .converge_step()
                .map_or("- (never; the last segment is used)".into(), |s| s
                    .to_string()),
            valley.threshold().map_or("-".into(), |t| format!("{t:.4}"))
        );
        let model = swad
            .finish_model()?
            .context("SWAD has no averaged model (no evaluation happened)")?;
        let params = model.params();
        let mut named: Vec<NamedTensor> = Vec::with_capacity(params.len());
        let mut map = HashMap::new();
        for (name, t) in &params {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            named.push((name.clone(), t.dims().to_vec(), values.clone()));
            map.insert(name.clone(), values);
        }
        self.algorithm.load_parameters(&map)?;
        let (mut record, train_out, _) =
            eval_record(&*self.algorithm, self.data, self.config, last_step)?;
        record.insert("swad".into(), json!(true));
        record.insert("swad_start_step".into(), json!(model.start_step()));
        record.insert("swad_end_step".into(), json!(model.end_step()));
        record.insert("swad_n_averaged".into(), json!(model.n_averaged()));
        eprintln!(
            "{label}: SWAD [{}-{}] (N={}): train_out {:.4} test_in {:.4}",
            model.start_step().map_or("-".into(), |s| s.to_string()),
            model.end_step().map_or("-".into(), |s| s.to_string()),
            model.n_averaged(),
            train_out,
            record.get("test_in").and_then(Value::as_f64).unwrap_or(0.0)
        );
        let record = Value::Object(record);
        self.records.push((serde_json::to_string(&record)?, record));
        run_dir::write_results(self.dir, &self.records)?;
        save_tensors(&self.dir.join(MODEL_SWAD), &named, None)
    }
}

/// The official model-saving rule (trainer.py, "Model saving"): the evaluation at `step` is saved when its
/// `train_out` equals the best of every evaluation so far, itself included, and `step ≥ model_save`, so the
/// file ends up holding the latest such evaluation. `best` (the best before this one) is updated.
fn saved_by_official_rule(
    best: &mut Option<f64>,
    train_out: f64,
    step: u64,
    model_save: u64,
) -> bool {
    let new_best = best.map_or(train_out, |b| b.max(train_out));
    *best = Some(new_best);
    train_out == new_best && step >= model_save
}

/// The evaluation part of a results.jsonl record at `step` (args, hparams, step, per-split accuracies,
/// `test_in` / `test_out`, `train_out`, `tr_outloss`), with `train_out` and `tr_outloss`.
fn eval_record(
    algorithm: &dyn Algorithm,
    data: &RunData,
    config: &RunConfig,
    step: usize,
) -> Result<(Map<String, Value>, f64, f64)> {
    let tables = EvalTables {
        student: data.student,
        teacher: data.teacher,
    };
    let results = evaluate(algorithm, &data.eval, tables, data.classes)?;
    let mut record = Map::new();
    record.insert("args".into(), config.args.clone());
    record.insert("hparams".into(), algorithm.hparams());
    record.insert("step".into(), json!(step));
    if let Some((device, precision)) = &config.device {
        record.insert("device".into(), json!(device));
        record.insert("precision".into(), json!(precision));
    }
    let (mut train_out, mut loss, mut n_train) = (0.0, 0.0, 0usize);
    for (set, r) in data.eval.iter().zip(&results) {
        record.insert(set.key.clone(), json!(r.acc));
        match set.test_split {
            Some(split) => {
                record.insert(format!("test_{split}"), json!(r.acc));
            }
            None => {
                train_out += r.acc;
                loss += r.loss.unwrap_or(0.0);
                n_train += 1;
            }
        }
    }
    let n = n_train.max(1) as f64;
    let (train_out, loss) = (train_out / n, loss / n);
    record.insert("train_out".into(), json!(train_out));
    record.insert("tr_outloss".into(), json!(loss));
    Ok((record, train_out, loss))
}

#[cfg(test)]
mod tests;
