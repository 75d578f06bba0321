//! The DomainBed view of a dataset's runs: `<runs>/<dataset>/domainbed/<entry>/results.jsonl`, the flat
//! folder that DomainBed's own tools (`collect_results.py`, `list_top_hparams.py`, `model_selection`) read
//! one level deep, written by `distill report` from the finished runs it tabulates.
//!
//! Each entry's records are the run's own `results.jsonl` lines, byte for byte except `args` (so no number
//! is re-printed): `args.algorithm` becomes the report's row (`<algorithm>[@<tag>]`), `args.dataset`
//! DomainBed's name of the benchmark (`OfficeHome`, …; a benchmark DomainBed lacks keeps its name),
//! `args.output_dir` the run's folder, and `args.hparams_seed` is 0 where an older record lacks it. A run
//! trained with SWAD gives two entries: `<row>-…` holds its `"swad": true` line alone (so DomainBed reports
//! the averaged model, the number `distill report` prints in row `<row>`), `<row>-noswad-…` its per-step
//! evaluations (DomainBed selects among them). Entries are named `<algorithm>-<test-domain>-<run leaf>`;
//! entries of runs no longer reported are removed, other files (DomainBed's `results.txt`) are kept.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vl2v::cache::write_bytes_atomic;

use super::RunResult;
use crate::training::run_dir;
use crate::training::trainer::is_swad_record;

/// The view's folder under `<runs>/<dataset>/`.
pub const FOLDER: &str = "domainbed";

/// The suffix of the algorithm whose records are a SWAD run's per-step evaluations.
pub const NO_SWAD: &str = "-noswad";

/// Writes the view of `runs` (each with its folder) into `<dataset_dir>/domainbed/`, removes the entries
/// of runs it no longer holds, and returns each run's entry names (in `runs`' order).
pub fn write_view(dataset_dir: &Path, runs: &[(PathBuf, RunResult)]) -> Result<Vec<Vec<String>>> {
    let view = dataset_dir.join(FOLDER);
    let mut entries: BTreeMap<String, (&Path, String)> = BTreeMap::new();
    let mut names = Vec::new();
    for (dir, result) in runs {
        let mut run_names = Vec::new();
        for (name, text) in
            run_entries(dir, result).with_context(|| format!("run {}", dir.display()))?
        {
            if let Some((other, _)) = entries.get(&name) {
                bail!(
                    "runs {} and {} would share the DomainBed entry {FOLDER}/{name}; rename a tag",
                    other.display(),
                    dir.display()
                );
            }
            run_names.push(name.clone());
            entries.insert(name, (dir, text));
        }
        names.push(run_names);
    }
    for (name, (_, text)) in &entries {
        let entry = view.join(name);
        std::fs::create_dir_all(&entry)
            .with_context(|| format!("cannot create {}", entry.display()))?;
        let file = entry.join(run_dir::RESULTS);
        write_bytes_atomic(&file, text.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    remove_stale(&view, |name| entries.contains_key(name))?;
    Ok(names)
}

/// The entries of one run: (name, results.jsonl text).
fn run_entries(dir: &Path, result: &RunResult) -> Result<Vec<(String, String)>> {
    let records = run_dir::read_results(dir)?;
    let Some((_, first)) = records.first() else {
        bail!("{} is missing or empty", run_dir::RESULTS);
    };
    let args = first
        .get("args")
        .context("a results.jsonl record has no `args`")?;
    let leaf = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let row = &result.algorithm;
    let entry = |algorithm: &str| format!("{algorithm}-{}-{leaf}", result.domain);
    let (swad, steps): (Vec<_>, Vec<_>) = records.iter().partition(|(_, r)| is_swad_record(r));
    let mut out = Vec::new();
    let mut push = |algorithm: String, lines: &[&(String, Value)]| -> Result<()> {
        let args = view_args(args, &algorithm, result, dir);
        let mut text = String::new();
        for (line, record) in lines {
            text.push_str(&with_args(line, record, &args)?);
            text.push('\n');
        }
        out.push((entry(&algorithm), text));
        Ok(())
    };
    if swad.is_empty() {
        push(row.clone(), &steps)?;
    } else {
        push(row.clone(), &swad[swad.len() - 1..])?;
        push(format!("{row}{NO_SWAD}"), &steps)?;
    }
    Ok(out)
}

/// The run's `args` as DomainBed reads them (see the module's documentation).
fn view_args(args: &Value, algorithm: &str, result: &RunResult, dir: &Path) -> Value {
    let mut args = args.clone();
    let dataset = args.get("dataset").and_then(Value::as_str).unwrap_or("");
    let name = domainbed_dataset(dataset, result.env, &result.domain).unwrap_or(dataset);
    args["dataset"] = json!(name);
    args["algorithm"] = json!(algorithm);
    args["output_dir"] = json!(dir);
    if args.get("hparams_seed").is_none() {
        args["hparams_seed"] = json!(0);
    }
    args
}

/// DomainBed's name of the vl2v benchmark `dataset`, if DomainBed has it and its environment `env` is the
/// held-out domain `domain` (a cache of some of the domains only keeps the vl2v name: its indices differ).
pub fn domainbed_dataset(dataset: &str, env: u64, domain: &str) -> Option<&'static str> {
    let spec = vl2v::dataset::lookup(dataset).ok()?;
    let same = usize::try_from(env)
        .ok()
        .and_then(|e| spec.domains.get(e))
        .is_some_and(|d| *d == domain);
    spec.domainbed.filter(|_| same)
}

/// `line` (one compact JSON record) with the value of its `args` member replaced by `args`, every other
/// byte kept; checked against `record` (the line parsed) with the same replacement.
fn with_args(line: &str, record: &Value, args: &Value) -> Result<String> {
    let range = member_value(line, "args").context("a results.jsonl record has no `args`")?;
    let new = format!(
        "{}{}{}",
        &line[..range.start],
        serde_json::to_string(args)?,
        &line[range.end..]
    );
    let mut expected = record.clone();
    expected["args"] = args.clone();
    let parsed: Value = serde_json::from_str(&new).context("rewritten record is not JSON")?;
    if parsed != expected {
        bail!("cannot rewrite the `args` of a results.jsonl record");
    }
    Ok(new)
}

/// The byte range of the value of the top-level member `key` of the JSON object `text`.
fn member_value(text: &str, key: &str) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        let key_end = string_end(b, i)?;
        let name: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        if name == key {
            return Some(start..end);
        }
        i = skip_ws(b, end);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the string that starts at `b[i]` (a `"`).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The index after the JSON value that starts at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Removes the entries of `view` that `keep` rejects: their results.jsonl, then the folder if that
/// emptied it (anything else in it stays).
fn remove_stale(view: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    if !view.is_dir() {
        return Ok(());
    }
    for entry in
        std::fs::read_dir(view).with_context(|| format!("cannot read {}", view.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !path.is_dir() || keep(&name) {
            continue;
        }
        let file = path.join(run_dir::RESULTS);
        if file.exists() {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_args_member_is_found_whatever_its_place_and_contents() {
        let line = r#"{"a":[1,{"x":"}"}],"args":{"s":"a\"}b","n":[1,2]},"z":0.14583333333333334}"#;
        let r = member_value(line, "args").unwrap();
        assert_eq!(&line[r], r#"{"s":"a\"}b","n":[1,2]}"#);
        let r = member_value(line, "z").unwrap();
        assert_eq!(&line[r], "0.14583333333333334");
        let spaced = r#"{ "k" : true , "args" : { } }"#;
        assert_eq!(&spaced[member_value(spaced, "args").unwrap()], "{ }");
        assert_eq!(member_value(line, "missing"), None);
        assert_eq!(member_value("[1]", "args"), None);
    }

    #[test]
    fn rewriting_args_keeps_every_other_byte() {
        // 17 significant digits: printed back from a parsed f64, such a number may change.
        let line = r#"{"args":{"algorithm":"erm-lp","dataset":"pacs"},"env0_out_acc":0.14583333333333334,"step":50}"#;
        let record: Value = serde_json::from_str(line).unwrap();
        let args = json!({"algorithm": "erm-lp@x", "dataset": "PACS"});
        let new = with_args(line, &record, &args).unwrap();
        assert_eq!(
            new,
            r#"{"args":{"algorithm":"erm-lp@x","dataset":"PACS"},"env0_out_acc":0.14583333333333334,"step":50}"#
        );
    }

    #[test]
    fn domainbed_names_need_the_same_environment_order() {
        assert_eq!(
            domainbed_dataset("officehome", 3, "Real World"),
            Some("OfficeHome")
        );
        assert_eq!(
            domainbed_dataset("terraincognita", 1, "location_38"),
            Some("TerraIncognita")
        );
        // A cache of some domains only: index 0 is not DomainBed's environment 0.
        assert_eq!(domainbed_dataset("pacs", 0, "cartoon"), None);
        assert_eq!(domainbed_dataset("synthdg", 0, "clipart"), None);
        assert_eq!(domainbed_dataset("toy", 0, "art"), None);
    }
}
