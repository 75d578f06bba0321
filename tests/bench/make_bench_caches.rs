//! Writes a synthetic teacher + student cache pair of OfficeHome's shape at any scale, with the cache's own
//! writers (`vl2v::cache`), for `tests/bench/run_cache_scale_bench.sh`:
//!
//! ```sh
//! make_bench_caches --out data/bench/caches/x10-views1 --scale 10 --views 1 --dtype f16
//! ```
//!
//! `--scale S` gives S × OfficeHome's 15,588 images (each of its four domains S times its size: 2,427 Art,
//! 4,365 Clipart, 4,439 Product, 4,357 Real World), 65 classes, a 512-d CLIP-like teacher (unit embeddings
//! near its class's text embedding, with `texts.parquet` for "a photo of a {}") and a 768-d student (raw
//! features near a class code), `--views K` augmented views per image, parts of 256 images as `embed` writes
//! them. Values follow from (seed, image, view) alone, so any run writes the same caches.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use vl2v::cache::{
    write_image_part, write_texts, ClassInfo, Counts, DatasetInfo, EmbeddingDtype, EncoderInfo,
    EncoderRole, ImageRow, Manifest, TextRow, ViewSet, FORMAT_VERSION, IMAGES_DIR, TEXTS_FILE,
};
use vl2v::rng::SplitMix64;
use vl2v::views::ViewParams;

/// OfficeHome's domains and their sizes (15,588 images).
const DOMAINS: [(&str, usize); 4] = [
    ("art", 2427),
    ("clipart", 4365),
    ("product", 4439),
    ("real_world", 4357),
];
const CLASSES: usize = 65;
const TEACHER_DIM: usize = 512;
const STUDENT_DIM: usize = 768;
/// Images per part, as `embed` writes them.
const PART_IMAGES: usize = 256;
const TEMPLATE: &str = "a photo of a {}";

struct Args {
    out: PathBuf,
    scale: usize,
    views: u32,
    dtype: EmbeddingDtype,
}

fn parse_args() -> Result<Args> {
    let mut out = None;
    let (mut scale, mut views, mut dtype) = (1usize, 1u32, EmbeddingDtype::F16);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--scale" => scale = value()?.parse().context("--scale: a positive integer")?,
            "--views" => views = value()?.parse().context("--views: an integer")?,
            "--dtype" => {
                dtype = match value()?.as_str() {
                    "f16" => EmbeddingDtype::F16,
                    "f32" => EmbeddingDtype::F32,
                    other => bail!("--dtype {other}: f16 or f32"),
                }
            }
            other => {
                bail!("unknown argument {other} (--out DIR --scale S --views K --dtype f16|f32)")
            }
        }
    }
    let out = out.context("--out DIR is required")?;
    if scale == 0 {
        bail!("--scale must be at least 1");
    }
    Ok(Args {
        out,
        scale,
        views,
        dtype,
    })
}

/// A vector of `dim` values uniform in [-1, 1) drawn from `seed`.
fn noise(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..dim).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// One image of the dataset: path, domain, label.
struct Image {
    path: String,
    domain: &'static str,
    label: usize,
}

fn images(scale: usize) -> Vec<Image> {
    let mut out = Vec::new();
    for (domain, size) in DOMAINS {
        let n = size * scale;
        // Classes in folder order, each with its share of the domain's images.
        for label in 0..CLASSES {
            let count = n / CLASSES + usize::from(label < n % CLASSES);
            for i in 0..count {
                out.push(Image {
                    path: format!("{domain}/{}/{i:07}.jpg", class_folder(label)),
                    domain,
                    label,
                });
            }
        }
    }
    out
}

fn class_folder(label: usize) -> String {
    format!("class_{label:02}")
}

struct Role {
    name: &'static str,
    role: EncoderRole,
    dim: usize,
    /// Seeds the class codes and the noise.
    salt: u64,
    /// Noise scale of a view.
    spread: f32,
    normalized: bool,
}

const TEACHER: Role = Role {
    name: "teacher",
    role: EncoderRole::Teacher,
    dim: TEACHER_DIM,
    salt: 0x7ea,
    spread: 0.25,
    normalized: true,
};
const STUDENT: Role = Role {
    name: "student",
    role: EncoderRole::Student,
    dim: STUDENT_DIM,
    salt: 0x57d,
    spread: 0.25,
    normalized: false,
};

/// The class codes of a role: for the teacher, its class-text embeddings.
fn class_codes(role: &Role) -> Vec<Vec<f32>> {
    (0..CLASSES)
        .map(|c| unit(noise(role.salt * 1_000_003 + c as u64, role.dim)))
        .collect()
}

fn embedding(role: &Role, codes: &[Vec<f32>], image: usize, label: usize, view: u32) -> Vec<f32> {
    let seed = vl2v::rng::mix64(role.salt ^ ((image as u64) << 8) ^ u64::from(view));
    let e: Vec<f32> = codes[label]
        .iter()
        .zip(noise(seed, role.dim))
        .map(|(c, n)| c + role.spread * n)
        .collect();
    if role.normalized {
        unit(e)
    } else {
        e
    }
}

fn write_cache(dir: &Path, role: &Role, images: &[Image], args: &Args) -> Result<()> {
    std::fs::create_dir_all(dir.join(IMAGES_DIR))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let codes = class_codes(role);
    let parts: Vec<String> = (0..images.len().div_ceil(PART_IMAGES))
        .map(|p| format!("{IMAGES_DIR}/part-{p:05}.parquet"))
        .collect();
    parts.par_iter().enumerate().try_for_each(|(p, name)| {
        let first = p * PART_IMAGES;
        let rows: Vec<ImageRow> = images[first..(first + PART_IMAGES).min(images.len())]
            .iter()
            .enumerate()
            .flat_map(|(k, image)| {
                let codes = &codes;
                (0..=args.views).map(move |view| ImageRow {
                    path: image.path.clone(),
                    domain: image.domain.into(),
                    label: image.label as i32,
                    view: view as i16,
                    params: ViewParams::identity(),
                    embedding: embedding(role, codes, first + k, image.label, view),
                })
            })
            .collect();
        write_image_part(&dir.join(name), role.dim, args.dtype, &rows, &[])
            .map(|_| ())
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    })?;
    if role.role == EncoderRole::Teacher {
        let texts: Vec<TextRow> = codes
            .iter()
            .enumerate()
            .map(|(label, code)| TextRow {
                label: label as i32,
                class_name: class_folder(label).replace('_', " "),
                template: TEMPLATE.into(),
                domain: None,
                prompt: TEMPLATE.replace("{}", &class_folder(label).replace('_', " ")),
                embedding: code.clone(),
            })
            .collect();
        write_texts(&dir.join(TEXTS_FILE), role.dim, args.dtype, &texts)?;
    }
    let mut counts = Counts {
        images: images.len() as u64,
        rows: (images.len() * (args.views as usize + 1)) as u64,
        ..Counts::default()
    };
    for image in images {
        *counts.per_domain.entry(image.domain.into()).or_default() += 1;
        *counts
            .per_class
            .entry(class_folder(image.label))
            .or_default() += 1;
    }
    let now = vl2v::cache::now_rfc3339();
    Manifest {
        format_version: FORMAT_VERSION,
        tool_version: "make_bench_caches".into(),
        dataset: DatasetInfo {
            name: format!("bench-officehome-x{}", args.scale),
            root: "/nonexistent/bench-officehome".into(),
            domains: DOMAINS.iter().map(|(d, _)| d.to_string()).collect(),
            classes: (0..CLASSES)
                .map(|c| ClassInfo {
                    folder: class_folder(c),
                    name: class_folder(c).replace('_', " "),
                })
                .collect(),
        },
        encoder: EncoderInfo {
            model: format!("synthetic-{}", role.name),
            revision: None,
            commit: None,
            weights_sha256: "00".repeat(32),
            role: role.role,
            architecture: format!("synthetic {}", role.name),
            embedding_dim: role.dim,
            normalized: role.normalized,
        },
        preprocess: serde_json::json!({}),
        views: ViewSet {
            count: args.views,
            seed: 0,
            recipe: "synthetic".into(),
        },
        embedding_dtype: args.dtype,
        logit_scale: (role.role == EncoderRole::Teacher).then_some(100.0),
        templates: if role.role == EncoderRole::Teacher {
            vec![TEMPLATE.into()]
        } else {
            vec![]
        },
        counts,
        skipped: vec![],
        parts,
        shards: 1,
        computed_on: vec!["synthetic".into()],
        created: now.clone(),
        finished: now,
    }
    .write(dir)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let images = images(args.scale);
    for role in [&TEACHER, &STUDENT] {
        let dir = args.out.join(role.name);
        let started = std::time::Instant::now();
        write_cache(&dir, role, &images, &args)?;
        eprintln!(
            "{}: {} images × {} views, {}-d, in {:.1} s",
            dir.display(),
            images.len(),
            args.views + 1,
            role.dim,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
