//! A run directory, `<out>/<dataset>/<algorithm>/<test-domain>/seed<k>[-trial<t>]/`:
//!
//! - `results.jsonl`: one JSON object per evaluation (keys sorted, DomainBed-compatible);
//! - `model.safetensors`: the parameters the official code keeps as `TE<k>_best.pth` (the latest evaluation
//!   at a step ≥ `model_save` whose `train_out` ties the best so far), its step in the metadata;
//! - `checkpoint.safetensors`: parameters, Adam moments and a `meta` tensor (UTF-8 JSON: step, Adam step
//!   count, sampler state, run arguments) written at every evaluation, to resume from;
//! - `done`: written last; a run with it is skipped.
//!
//! Every file is replaced atomically (write to a temporary file, fsync, rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;
use vl2v::cache::write_bytes_atomic;

use crate::algorithms::NamedTensor;

pub const RESULTS: &str = "results.jsonl";
pub const MODEL: &str = "model.safetensors";
/// The SWAD-averaged parameters (`distill run --swad`).
pub const MODEL_SWAD: &str = "model_swad.safetensors";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const DONE: &str = "done";
const META: &str = "meta";

/// f32 tensors by name, flattened.
pub type Tensors = HashMap<String, Vec<f32>>;

/// The run directory for one (dataset, algorithm, test domain, seed, trial seed). The trial seed (which
/// changes the split) is part of the name only when it is not 0.
pub fn run_dir(
    out: &Path,
    dataset: &str,
    algorithm: &str,
    test_domain: &str,
    seed: u64,
    trial_seed: i64,
) -> PathBuf {
    let leaf = if trial_seed == 0 {
        format!("seed{seed}")
    } else {
        format!("seed{seed}-trial{trial_seed}")
    };
    out.join(dataset)
        .join(algorithm)
        .join(test_domain)
        .join(leaf)
}

/// Writes named f32 tensors (plus, if given, a `meta` u8 tensor holding JSON) as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &[NamedTensor], meta: Option<&Value>) -> Result<()> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (name, shape, values) in tensors {
        map.insert(
            name.clone(),
            Tensor::from_slice(values, shape.as_slice(), &Device::Cpu)?,
        );
    }
    if let Some(meta) = meta {
        let bytes = serde_json::to_vec(meta)?;
        let n = bytes.len();
        map.insert(META.into(), Tensor::from_vec(bytes, n, &Device::Cpu)?);
    }
    // candle writes straight to a path: serialise next to the target, then copy atomically into place.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let written = candle_core::safetensors::save(&map, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| Ok(std::fs::read(&tmp)?));
    let _ = std::fs::remove_file(&tmp);
    write_bytes_atomic(path, &written?)?;
    Ok(())
}

/// Reads a file written by [`save_tensors`]: the f32 tensors by name, and the meta JSON if present.
pub fn load_tensors(path: &Path) -> Result<(Tensors, Option<Value>)> {
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut tensors = HashMap::new();
    let mut meta = None;
    for (name, t) in map {
        if name == META {
            let bytes = t.to_vec1::<u8>()?;
            meta = Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: bad meta", path.display()))?,
            );
        } else {
            tensors.insert(name, t.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok((tensors, meta))
}

/// The lines of `results.jsonl` with their records (empty if it does not exist). Lines are kept as text
/// so that rewriting them is byte-exact (parsing a float and printing it again may change its last digit).
pub fn read_results(dir: &Path) -> Result<Vec<(String, Value)>> {
    let path = dir.join(RESULTS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let record = serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
            Ok((l.to_string(), record))
        })
        .collect()
}

/// Replaces `results.jsonl` with `lines` (compact JSON objects), one per line.
pub fn write_results(dir: &Path, lines: &[(String, Value)]) -> Result<()> {
    let mut text = String::new();
    for (line, _) in lines {
        text.push_str(line);
        text.push('\n');
    }
    write_bytes_atomic(&dir.join(RESULTS), text.as_bytes())?;
    Ok(())
}

/// The `step` of a record.
pub fn record_step(record: &Value) -> Result<u64> {
    match record.get("step").and_then(Value::as_u64) {
        Some(s) => Ok(s),
        None => bail!("a results.jsonl record has no integer `step`"),
    }
}

/// A number field of a record (`train_out`, `test_in`, ...).
pub fn record_f64(record: &Value, key: &str) -> Result<f64> {
    record
        .get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("a results.jsonl record has no number `{key}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let t: Vec<NamedTensor> = vec![("w".into(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.5])];
        let meta = serde_json::json!({"step": 3, "rng": u64::MAX});
        save_tensors(&path, &t, Some(&meta)).unwrap();
        let (back, m) = load_tensors(&path).unwrap();
        assert_eq!(back["w"], [1.0, 2.0, 3.0, 4.5]);
        assert_eq!(m.unwrap(), meta);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporaries left"
        );
    }

    #[test]
    fn run_dirs_name_the_trial_seed_only_when_set() {
        let d = run_dir(Path::new("runs"), "pacs", "erm-lp", "sketch", 2, 0);
        assert_eq!(d, Path::new("runs/pacs/erm-lp/sketch/seed2"));
        let d = run_dir(Path::new("runs"), "pacs", "erm-lp", "sketch", 2, 1);
        assert_eq!(d, Path::new("runs/pacs/erm-lp/sketch/seed2-trial1"));
    }
}
