//! The official scripts' per-student settings (`distill/official_scripts/*.json`, one file per
//! `scripts/<student>_student/run_stage{1,2}.sh` of val-iisc/VL2V-ADiP): the defaults `distill run` takes
//! for `--model-save` and `--swad-variant` when the student is one the official code ships a script for.

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::training::swad::SwadVariant;

const FILES: [(&str, &str); 4] = [
    (
        "resnet50",
        include_str!("../../official_scripts/resnet50.json"),
    ),
    (
        "vit-small",
        include_str!("../../official_scripts/vit-small.json"),
    ),
    (
        "vit-base",
        include_str!("../../official_scripts/vit-base.json"),
    ),
    (
        "deit-small",
        include_str!("../../official_scripts/deit-small.json"),
    ),
];

/// What one stage's script passes where it differs from `distill run`'s shared defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct StageSettings {
    /// `--model_save`.
    pub model_save: u64,
    /// `--swad_fix` left out (`vl2v`) or passed (`upstream`).
    #[serde(with = "swad_variant_name")]
    pub swad_variant: SwadVariant,
}

#[derive(Debug, Deserialize)]
struct ScriptFile {
    student: String,
    #[serde(rename = "adip-align")]
    align: StageSettings,
    #[serde(rename = "adip-distill")]
    distill: StageSettings,
}

/// The settings of `algorithm`'s stage in the script of `student`, if the official code has one.
pub fn stage_settings(algorithm: &str, student: &str) -> Result<Option<StageSettings>> {
    let Some((_, text)) = FILES.iter().find(|(name, _)| *name == student) else {
        return Ok(None);
    };
    let file: ScriptFile =
        serde_json::from_str(text).with_context(|| format!("official_scripts/{student}.json"))?;
    debug_assert_eq!(file.student, student);
    Ok(match algorithm {
        "adip-align" => Some(file.align),
        "adip-distill" => Some(file.distill),
        _ => None,
    })
}

mod swad_variant_name {
    use serde::{de::Error, Deserialize, Deserializer};

    use crate::training::swad::SwadVariant;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SwadVariant, D::Error> {
        match String::deserialize(d)?.as_str() {
            "vl2v" => Ok(SwadVariant::Vl2vFix),
            "upstream" => Ok(SwadVariant::Upstream),
            other => Err(D::Error::custom(format!(
                "swad_variant '{other}': expected vl2v or upstream"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-read from the eight official scripts: `--model_save` 100 everywhere but ViT-B stage 1 and
    /// RN50 stage 2 (1000); `--swad_fix` passed only by the ViT-B stage-2 script.
    #[test]
    fn every_script_as_the_official_code_has_it() {
        let s = |alg, student| stage_settings(alg, student).unwrap().unwrap();
        let (fix, upstream) = (SwadVariant::Vl2vFix, SwadVariant::Upstream);
        for (student, align_save, distill_save, distill_swad) in [
            ("resnet50", 100, 1000, fix),
            ("vit-small", 100, 100, fix),
            ("vit-base", 1000, 100, upstream),
            ("deit-small", 100, 100, fix),
        ] {
            assert_eq!(
                s("adip-align", student),
                StageSettings {
                    model_save: align_save,
                    swad_variant: fix
                },
                "{student} stage 1"
            );
            assert_eq!(
                s("adip-distill", student),
                StageSettings {
                    model_save: distill_save,
                    swad_variant: distill_swad
                },
                "{student} stage 2"
            );
        }
        assert_eq!(stage_settings("adip-align", "resnet18").unwrap(), None);
        assert_eq!(stage_settings("kd", "vit-base").unwrap(), None);
    }
}
