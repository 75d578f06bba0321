//! The layout on disk: `root/<style>/<class>/<index>.png` (plus `captions.jsonl` for the corpus), written
//! into a temporary folder beside the target and renamed into place once complete, with the settings in a
//! marker file, so a folder that exists is always whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::captions::caption;
use super::rng::{image_seed, Rng};
use super::shapes::{BENCHMARK_CLASSES, CLASSES};
use super::styles::{self, Style};

/// The marker that records what a complete output holds; hidden, so dataset discovery skips it.
pub const MARKER: &str = ".synthdg.json";
pub const CAPTIONS: &str = "captions.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown class '{name}'; known classes: {known}")]
    UnknownClass { name: String, known: String },
    #[error("unknown style '{name}'; known styles: {known}")]
    UnknownStyle { name: String, known: String },
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error("{dir} was generated with {field} = {found}, not {wanted}; delete it or pass the same settings")]
    Mismatch {
        dir: PathBuf,
        field: String,
        found: String,
        wanted: String,
    },
    #[error("{0} exists but is not a complete synthdg output (no {MARKER}); delete it or choose another --out")]
    NotOurs(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Png {
        path: PathBuf,
        source: image::ImageError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// DomainBed layout, the styles as domains; no captions.
    Benchmark,
    /// Every requested style and class, with `captions.jsonl`.
    Corpus,
}

/// The image sizes (side in pixels) the drawings are made for.
pub const SIZES: std::ops::RangeInclusive<usize> = 16..=1024;

/// Everything that determines the output; recorded in the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub product: Product,
    pub seed: u64,
    pub per_class: usize,
    pub size: usize,
    pub styles: Vec<String>,
    pub classes: Vec<String>,
    /// Half the corpus's captions leave the style unnamed (`synthdg corpus --plain-captions`). Recorded
    /// only when set, so a marker written before the option still matches.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plain_captions: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl Settings {
    /// The benchmark: the eight benchmark classes in the four benchmark domains.
    pub fn benchmark(seed: u64, per_class: usize, size: usize) -> Settings {
        Settings {
            product: Product::Benchmark,
            seed,
            per_class,
            size,
            styles: Style::BENCHMARK
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            classes: BENCHMARK_CLASSES.iter().map(|c| c.to_string()).collect(),
            plain_captions: false,
        }
    }

    /// The captioned corpus; empty `styles` or `classes` mean all of them.
    pub fn corpus(
        seed: u64,
        per_class: usize,
        size: usize,
        styles: &[String],
        classes: &[String],
    ) -> Settings {
        let all = |given: &[String], every: Vec<String>| {
            let mut list = if given.is_empty() {
                every
            } else {
                given.to_vec()
            };
            list.sort();
            list.dedup();
            list
        };
        Settings {
            product: Product::Corpus,
            seed,
            per_class,
            size,
            styles: all(
                styles,
                Style::ALL.iter().map(|s| s.name().to_string()).collect(),
            ),
            classes: all(classes, CLASSES.iter().map(|c| c.to_string()).collect()),
            plain_captions: false,
        }
    }

    /// The corpus with half its captions plain (not naming the style; see [`super::captions::caption`]).
    pub fn with_plain_captions(mut self, plain: bool) -> Settings {
        self.plain_captions = plain;
        self
    }

    fn validate(&self) -> Result<Vec<Style>, SynthError> {
        if !SIZES.contains(&self.size) {
            return Err(SynthError::Invalid(format!(
                "size {} is outside {}..={}",
                self.size,
                SIZES.start(),
                SIZES.end()
            )));
        }
        if self.per_class == 0 {
            return Err(SynthError::Invalid(
                "per-class count must be at least 1".into(),
            ));
        }
        if self.styles.is_empty() || self.classes.is_empty() {
            return Err(SynthError::Invalid("no styles or no classes".into()));
        }
        for class in &self.classes {
            if !CLASSES.contains(&class.as_str()) {
                return Err(SynthError::UnknownClass {
                    name: class.clone(),
                    known: CLASSES.join(", "),
                });
            }
        }
        self.styles
            .iter()
            .map(|name| {
                Style::parse(name).ok_or_else(|| SynthError::UnknownStyle {
                    name: name.clone(),
                    known: Style::ALL.map(|s| s.name()).join(", "),
                })
            })
            .collect()
    }

    fn marker(&self) -> serde_json::Value {
        let mut value = serde_json::json!({ "tool": "synthdg", "format": 1 });
        if let (Some(map), Ok(serde_json::Value::Object(fields))) =
            (value.as_object_mut(), serde_json::to_value(self))
        {
            map.extend(fields);
        }
        value
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Generated { images: usize },
    AlreadyGenerated,
}

/// One line of `captions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptionRecord {
    pub path: String,
    pub caption: String,
    pub class: String,
    pub style: String,
}

/// Writes the product to `out`, calling `progress(done, total)` as images finish. An `out` that already
/// holds the same settings is left alone.
pub fn generate(
    out: &Path,
    settings: &Settings,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Outcome, SynthError> {
    let styles = settings.validate()?;
    let wanted = settings.marker();
    if out.exists() {
        return check_existing(out, &wanted).map(|()| Outcome::AlreadyGenerated);
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("synthdg");
    let tmp = parent.join(format!(".{name}.synthdg-{}.tmp", std::process::id()));
    let result = write_all(&tmp, settings, &styles, &wanted, progress).and_then(|images| {
        fs::rename(&tmp, out).map_err(|source| SynthError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        Ok(images)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|images| Outcome::Generated { images })
}

fn check_existing(out: &Path, wanted: &serde_json::Value) -> Result<(), SynthError> {
    let path = out.join(MARKER);
    let Ok(text) = fs::read_to_string(&path) else {
        return Err(SynthError::NotOurs(out.to_path_buf()));
    };
    let found: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| SynthError::NotOurs(out.to_path_buf()))?;
    let (Some(found), Some(wanted)) = (found.as_object(), wanted.as_object()) else {
        return Err(SynthError::NotOurs(out.to_path_buf()));
    };
    // Every field of either marker: one recorded only when set (plain_captions) is absent from the other.
    let fields = wanted
        .keys()
        .chain(found.keys().filter(|k| !wanted.contains_key(*k)));
    for field in fields {
        let have = found.get(field).cloned().unwrap_or(serde_json::Value::Null);
        let want = wanted
            .get(field)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if have != want {
            return Err(SynthError::Mismatch {
                dir: out.to_path_buf(),
                field: field.clone(),
                found: have.to_string(),
                wanted: want.to_string(),
            });
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_all(
    tmp: &Path,
    settings: &Settings,
    styles: &[Style],
    marker: &serde_json::Value,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<usize, SynthError> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(io(tmp))?;
    }
    let mut jobs = Vec::new();
    for &style in styles {
        for class in &settings.classes {
            let dir = tmp.join(style.name()).join(class);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            jobs.extend((0..settings.per_class).map(|i| (style, class.as_str(), i)));
        }
    }
    let total = jobs.len();
    let done = AtomicUsize::new(0);
    let digits = (settings.per_class.saturating_sub(1))
        .to_string()
        .len()
        .max(4);
    let records = jobs
        .par_iter()
        .map(|&(style, class, i)| {
            let rel = format!("{}/{class}/{i:0digits$}.png", style.name());
            let mut rng = Rng::new(image_seed(settings.seed, style.name(), class, i));
            let mut caption_rng = rng.fork(0xc0de);
            let (image, colour) =
                styles::render(style, class, &mut rng, settings.size).expect("validated class");
            let path = tmp.join(&rel);
            image
                .save_with_format(&path, image::ImageFormat::Png)
                .map_err(|source| SynthError::Png { path, source })?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok(CaptionRecord {
                caption: caption(
                    style,
                    class,
                    colour,
                    settings.plain_captions,
                    &mut caption_rng,
                ),
                path: rel,
                class: class.to_string(),
                style: style.name().to_string(),
            })
        })
        .collect::<Result<Vec<_>, SynthError>>()?;
    if settings.product == Product::Corpus {
        let path = tmp.join(CAPTIONS);
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).expect("plain strings serialise"));
            text.push('\n');
        }
        fs::write(&path, text).map_err(io(&path))?;
    }
    // The marker last: its presence is what says the folder is complete.
    let path = tmp.join(MARKER);
    let mut file = fs::File::create(&path).map_err(io(&path))?;
    writeln!(
        file,
        "{}",
        serde_json::to_string_pretty(marker).expect("json value")
    )
    .map_err(io(&path))?;
    Ok(total)
}
