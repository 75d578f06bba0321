//! Algorithms in DomainBed's style: each is a small unit with `update(batch) -> metrics` and
//! `predict(features) -> logits`, built by name from [`REGISTRY`] with its own hparams struct (defaults from
//! the official VL2V-ADiP code, overridable from the command line).

mod adip_align;
mod adip_distill;
mod erm_ft;
mod erm_lp;
mod finetune;
mod kd;
pub mod official_scripts;
mod rise;
mod scmd;
mod sd;
mod wise_ft;
mod zeroshot;

use std::collections::HashMap;

use anyhow::{bail, Result};

pub use crate::objectives::linear_head::Linear;
pub use finetune::BackboneSetup;

/// One training step's rows, gathered contiguously: `student: [B, d_student]` (empty when the algorithm
/// trains on no student features), `teacher: [B, d_teacher]` (the teacher's embedding of the same (image,
/// view)); `picks` are the (image, view) pairs themselves, for the algorithms that load the images.
pub struct Batch<'a> {
    pub picks: &'a [(usize, usize)],
    pub student: &'a [f32],
    pub teacher: &'a [f32],
    pub labels: &'a [usize],
    /// CutMix of this step (`--cutmix-beta`): the images were mixed before the teacher embedded them; the
    /// algorithm mixes the student's the same way and its loss the labels (see [`CUTMIX`]).
    pub mix: Option<&'a crate::data::cutmix::CutMix>,
}

/// The algorithms whose loss takes CutMix's mixed labels (the official code's Align and Distill; vl2v's
/// Align trains on cached features, so Distill and SD, which share its loss).
pub const CUTMIX: &[&str] = &["adip-distill", "sd"];

/// Evaluation rows (view 0): the images (numbers), and the student's and the teacher's cached features of
/// them.
pub struct EvalRows<'a> {
    pub images: &'a [usize],
    pub student: &'a [f32],
    pub teacher: &'a [f32],
}

/// What an algorithm's `predict` reads of an evaluated image besides its number: the student's cached
/// view-0 features, the teacher's, or neither (the algorithms that load the images). Evaluation gathers only
/// those (see [`EvalRows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictsFrom {
    StudentFeatures,
    TeacherFeatures,
    Images,
}

/// Named values returned by `update`; the first is always `loss`.
pub type Metrics = Vec<(&'static str, f64)>;

/// A named tensor: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// What every algorithm is built from.
pub struct Setup<'a> {
    /// Student feature dimension (`None` without a student cache).
    pub student_dim: Option<usize>,
    pub teacher_dim: usize,
    pub classes: usize,
    /// The teacher's class-text embeddings of the run's prompt style (`--prompt-style`; "a photo of a
    /// {class}" by default), `[C, d_teacher]`, row = label.
    pub texts: &'a [f32],
    /// The templates `texts` come from (recorded in the algorithms' hparams).
    pub templates: &'a [&'a str],
    /// CLIP's logit scale (100 for OpenAI CLIP).
    pub logit_scale: f32,
    /// Seeds parameter initialisation.
    pub seed: u64,
    /// The backbone and images, for the algorithms that train on images.
    pub backbone: Option<&'a BackboneSetup>,
    /// The teacher cache's prompts, for the algorithms with prompts of their own (rise).
    pub prompts: Option<crate::prompt_styles::PromptBank<'a>>,
    /// The held-out domain (its number in the manifest's domains).
    pub test_domain: usize,
}

/// Hyper-parameters given on the command line; `None` keeps the algorithm's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub batch_size: Option<usize>,
    pub lambda: Option<f64>,
    pub temperature: Option<f64>,
    pub kd_weight: Option<f64>,
}

/// `Send`: training runs on a rayon worker thread (see `trainer::run`).
pub trait Algorithm: Send {
    /// The hyper-parameters in use (written to results.jsonl).
    fn hparams(&self) -> serde_json::Value;
    /// Images per training domain per step; 0 for algorithms that do not train.
    fn batch_size(&self) -> usize;
    /// The picks of the step after the next [`Algorithm::update`], drawn ahead: an algorithm that reads
    /// images may start loading them while that update computes.
    fn prefetch(&mut self, _next: &[(usize, usize)]) {}
    /// One optimisation step.
    fn update(&mut self, batch: &Batch) -> Result<Metrics>;
    /// What `predict` reads: the other fields of [`EvalRows`] are empty.
    fn predicts_from(&self) -> PredictsFrom {
        PredictsFrom::Images
    }
    /// Logits `[n, C]` of evaluation rows.
    fn predict(&self, rows: &EvalRows) -> Result<Vec<f32>>;
    /// The argmax of `predict` for each row (first on ties, `None` for NaN rows); an algorithm may
    /// override it with a cheaper computation of the same ranking.
    fn predict_labels(&self, rows: &EvalRows, classes: usize) -> Result<Vec<Option<usize>>> {
        let logits = self.predict(rows)?;
        Ok(logits
            .chunks_exact(classes)
            .map(vl2v::zeroshot::argmax)
            .collect())
    }
    /// The model's parameters (model.safetensors).
    fn parameters(&self) -> Result<Vec<NamedTensor>>;
    /// Parameters and optimiser moments (the resume checkpoint), and the optimiser's step count.
    fn state(&self) -> Result<(Vec<NamedTensor>, u64)>;
    /// Restores what [`Algorithm::state`] returned.
    fn load_state(&mut self, tensors: &HashMap<String, Vec<f32>>, steps: u64) -> Result<()>;
    /// The trainable parameters as named CPU tensors (what SWAD averages after every step): one copy of
    /// each parameter buffer, moved into its tensor.
    fn params(&self) -> Result<Vec<(String, candle_core::Tensor)>> {
        self.parameters()?
            .into_iter()
            .map(|(name, shape, values)| {
                Ok((
                    name,
                    candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?,
                ))
            })
            .collect()
    }
    /// Replaces the parameters by `tensors` (names as in [`Algorithm::parameters`]; e.g. the SWAD
    /// average), leaving the optimiser state alone.
    fn load_parameters(&mut self, tensors: &HashMap<String, Vec<f32>>) -> Result<()> {
        let _ = tensors;
        bail!("this algorithm has no trainable parameters")
    }
}

/// What an algorithm trains on, besides the teacher cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The teacher cache alone.
    Teacher,
    /// A student cache's features.
    StudentFeatures,
    /// The student of a student cache (its weights and preprocessing), trained on the dataset's images.
    StudentImages,
    /// The teacher's own image tower, trained on the dataset's images.
    TeacherImages,
}

/// A registered algorithm.
pub struct Entry {
    pub name: &'static str,
    pub input: Input,
    pub build: fn(&Setup, &Overrides) -> Result<Box<dyn Algorithm>>,
}

impl Entry {
    /// Whether `--student-cache` is required.
    pub fn needs_student(&self) -> bool {
        matches!(self.input, Input::StudentFeatures | Input::StudentImages)
    }

    /// Whether the algorithm trains, sampling minibatches of cached views (zeroshot and wise-ft only
    /// evaluate).
    pub fn trains(&self) -> bool {
        !matches!(self.name, "zeroshot" | "wise-ft")
    }

    /// Whether the algorithm trains a backbone on images.
    pub fn trains_backbone(&self) -> bool {
        matches!(self.input, Input::StudentImages | Input::TeacherImages)
    }
}

/// Every algorithm, in table order.
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: "zeroshot",
        input: Input::Teacher,
        build: zeroshot::build,
    },
    Entry {
        name: "erm-lp",
        input: Input::StudentFeatures,
        build: erm_lp::build,
    },
    Entry {
        name: "erm-ft",
        input: Input::StudentImages,
        build: erm_ft::build,
    },
    Entry {
        name: "lp-ft",
        input: Input::StudentImages,
        build: erm_ft::build_lp_ft,
    },
    Entry {
        name: "kd",
        input: Input::StudentImages,
        build: kd::build,
    },
    Entry {
        name: "rise",
        input: Input::StudentImages,
        build: rise::build,
    },
    Entry {
        name: "scmd",
        input: Input::StudentImages,
        build: scmd::build,
    },
    Entry {
        name: "adip-align",
        input: Input::StudentFeatures,
        build: adip_align::build,
    },
    Entry {
        name: "adip-distill",
        input: Input::StudentImages,
        build: adip_distill::build,
    },
    Entry {
        name: "sd",
        input: Input::TeacherImages,
        build: sd::build,
    },
    Entry {
        name: "wise-ft",
        input: Input::TeacherImages,
        build: wise_ft::build,
    },
];

/// The registry entry called `name`, or an error listing the valid names.
pub fn lookup(name: &str) -> Result<&'static Entry> {
    match REGISTRY.iter().find(|e| e.name == name) {
        Some(entry) => Ok(entry),
        None => bail!(
            "unknown algorithm '{name}'; valid: {}",
            REGISTRY
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_algorithms_list_the_valid_ones() {
        assert!(lookup("adip-align").is_ok());
        let err = lookup("erm").err().unwrap().to_string();
        assert_eq!(
            err,
            "unknown algorithm 'erm'; valid: zeroshot, erm-lp, erm-ft, lp-ft, kd, rise, scmd, adip-align, adip-distill, sd, wise-ft"
        );
    }
}
