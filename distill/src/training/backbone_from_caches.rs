//! Where a backbone algorithm's model comes from, read off the caches so that the user passes nothing new:
//! the student of a student cache (its architecture, weights and preprocessing as recorded in its
//! manifest), or the teacher's own CLIP image tower for VL2V-SD; and, for adip-distill, the projection of
//! the finished Align run of the same held-out domain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use vl2v::cache::Manifest;
use vl2v::image::Preprocess;
use vl2v::model::clip::load_clip_config;
use vl2v::model::students::{name_from_architecture, StudentConfig};
use vl2v::model::{resolve, weights_sha256, Device, Needs};

use crate::algorithms::{BackboneSetup, Input};
use crate::data::view_replay::ImageSource;
use crate::training::run_dir::{self, Tensors, DONE, MODEL, MODEL_SWAD};
use crate::training::trainable_backbone::Arch;

/// The model and images of a backbone algorithm (everything but the Align projection).
pub fn backbone_setup(
    input: Input,
    teacher: &Manifest,
    student: Option<&Manifest>,
    model_override: Option<&str>,
    data_root: Option<&Path>,
    paths: &[String],
    device: &Device,
) -> Result<BackboneSetup> {
    let (arch, weights, preprocess) = match input {
        Input::StudentImages => {
            let sm = student.context("this algorithm needs --student-cache")?;
            ensure!(
                sm.counts == teacher.counts && sm.dataset.domains == teacher.dataset.domains,
                "the student cache and the teacher cache hold different images (embed both from the \
                 same dataset)"
            );
            let name = name_from_architecture(&sm.encoder.architecture).with_context(|| {
                format!(
                    "the student cache's encoder '{}' is not a student vl2v can train",
                    sm.encoder.architecture
                )
            })?;
            let config = StudentConfig::by_name(name).context("unknown student")?;
            let weights = model_weights(sm, model_override, Needs::Weights)?.0;
            (Arch::Student(config), weights, preprocess_of(sm)?)
        }
        Input::TeacherImages => {
            let (weights, config) = model_weights(teacher, model_override, Needs::Clip)?;
            let config = config.context("the teacher has no config.json")?;
            let config = load_clip_config(&config)?;
            (
                Arch::Clip(Box::new(config)),
                weights,
                preprocess_of(teacher)?,
            )
        }
        _ => bail!("this algorithm trains no backbone"),
    };
    let root = data_root.unwrap_or(&teacher.dataset.root);
    let images = ImageSource::new(root, paths, teacher.views.seed, preprocess)?;
    Ok(BackboneSetup {
        arch,
        weights,
        images: Arc::new(images),
        device: device.clone(),
        // `--workers`: set by the caller.
        workers: 0,
        first_stage: None,
    })
}

/// The cache's preprocessing, as `embed` recorded it.
fn preprocess_of(m: &Manifest) -> Result<Preprocess> {
    serde_json::from_value(m.preprocess.clone())
        .context("the cache manifest's preprocessing cannot be read")
}

/// The weights the cache was embedded with (or `model_override`), checked against the manifest's sha256 so
/// that training starts from the very model whose features are cached.
fn model_weights(
    m: &Manifest,
    model_override: Option<&str>,
    needs: Needs,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let model = model_override.unwrap_or(&m.encoder.model);
    let revision = if model_override.is_some() {
        None
    } else {
        m.encoder
            .commit
            .as_deref()
            .or(m.encoder.revision.as_deref())
    };
    let files = resolve(model, revision, needs).with_context(|| {
        format!(
            "cannot find the model '{model}' the cache was embedded with (pass --model PATH if it moved)"
        )
    })?;
    let sha = weights_sha256(&files.weights)?;
    ensure!(
        sha == m.encoder.weights_sha256,
        "{} is not the model the cache was embedded with (sha256 {sha}, the manifest records {})",
        files.weights.display(),
        m.encoder.weights_sha256
    );
    Ok((files.weights, files.config))
}

/// The first-stage model a second stage starts from (adip-distill: the Align projection; lp-ft: the probe).
pub struct FirstStage {
    pub path: PathBuf,
    /// The Align step it was saved at (absent from files written before vl2v recorded it).
    pub step: Option<u64>,
    pub tensors: Tensors,
}

/// The model of the finished first-stage run (`first`: adip-align's projection for adip-distill, erm-lp's
/// probe for lp-ft) in `dir`, which must have been trained on the same caches:
/// its model.safetensors, as the official code loads `TE<k>_best.pth` (the latest evaluation at a step ≥
/// `model_save` that ties the best train_out), or with `swad` its SWAD-averaged model_swad.safetensors.
pub fn first_stage(
    dir: &Path,
    cache: &Path,
    student_cache: Option<&Path>,
    swad: bool,
    (first, then): (&str, &str),
) -> Result<FirstStage> {
    let hint = format!(
        "run `distill run --algorithm {first}` with the same --cache, --student-cache, --out, --seed \
         and --trial-seed first"
    );
    ensure!(
        dir.join(DONE).is_file(),
        "{then} needs the finished {first} run {}: {hint}",
        dir.display()
    );
    let records = run_dir::read_results(dir)?;
    let args = records
        .first()
        .and_then(|(_, r)| r.get("args"))
        .with_context(|| format!("the {first} run has no results"))?;
    // A cache given on both sides is the same folder; one given on neither (sd's student cache) matches.
    let same = |key: &str, ours: Option<&Path>| {
        let theirs = args.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
        match (theirs, ours) {
            (Some(t), Some(o)) => std::fs::canonicalize(&t).ok() == std::fs::canonicalize(o).ok(),
            (None, None) => true,
            _ => false,
        }
    };
    ensure!(
        same("cache", Some(cache)) && same("student_cache", student_cache),
        "the {first} run {} was trained on other caches than --cache/--student-cache: {hint}",
        dir.display()
    );
    let path = dir.join(if swad { MODEL_SWAD } else { MODEL });
    if !path.is_file() {
        if swad {
            bail!(
                "the {first} run {} has no SWAD model ({MODEL_SWAD}): run it with --swad, or pass \
                 --align-model official",
                dir.display()
            );
        }
        let model_save = args.get("model_save").and_then(|v| v.as_u64()).unwrap_or(0);
        bail!(
            "the {first} run {} saved no {MODEL}: no evaluation at a step ≥ its --model-save {model_save} \
             tied its best train_out (the official code would have no TE<k>_best.pth either); rerun \
             {first} with a smaller --model-save",
            dir.display()
        );
    }
    let (tensors, meta) = run_dir::load_tensors(&path)?;
    let step = meta
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.as_u64());
    Ok(FirstStage {
        path,
        step,
        tensors,
    })
}
