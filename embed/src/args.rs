//! Command line of `embed`.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};
use vl2v::cache::EmbeddingDtype;
use vl2v::image::PreprocessMode;

/// Run a CLIP teacher once over a DomainBed-layout dataset (root/<domain>/<class>/<image>) and cache its
/// image embeddings (one row per image and view) and class-text embeddings as Parquet.
///
/// The cache goes to <cache-dir>/<dataset>/<model>[-vl2v][-views<K>-seed<S>][-f16]/ and is complete when
/// its manifest.json exists. A rerun resumes: finished parts are kept and only the rest is computed.
/// The last line printed on stdout is the cache directory.
#[derive(Debug, Parser)]
#[command(name = "embed", version)]
pub struct Args {
    /// Dataset name: officehome, pacs, vlcs, terraincognita, domainnet (found under data/), or any
    /// name for the folder given with --root.
    #[arg(long)]
    pub dataset: String,

    /// Dataset folder in root/<domain>/<class>/<image> layout [default: data/<folder of the dataset>].
    #[arg(long)]
    pub root: Option<PathBuf>,

    /// Hugging Face hub id, or a local directory with config.json, model.safetensors, tokenizer.json.
    /// Hub files come from the Hugging Face cache (HF_HOME, HF_HUB_CACHE); with HF_HUB_OFFLINE=1 nothing
    /// is downloaded.
    #[arg(long, default_value = "openai/clip-vit-base-patch16")]
    pub model: String,

    /// Hub revision (branch, tag or commit) [default: main].
    #[arg(long)]
    pub revision: Option<String>,

    /// Where caches are written.
    #[arg(long, default_value = "data/cache")]
    pub cache_dir: PathBuf,

    /// clip: exactly Hugging Face's CLIPImageProcessor (shortest side, bicubic, centre crop, CLIP
    /// mean/std). vl2v: what the official VL2V-ADiP code feeds its models (squash to a square, bilinear,
    /// ImageNet mean/std) [default: clip for the teacher, vl2v for a student].
    #[arg(long, value_enum)]
    pub preprocess: Option<Preprocess>,

    /// teacher: the CLIP model (image and text embeddings). student: a frozen student backbone (--student)
    /// whose raw features `distill` aligns and probes; run it with the teacher cache's --views and --seed
    /// so rows join on (path, view).
    #[arg(long, value_enum, default_value_t = EncoderKind::Teacher)]
    pub encoder: EncoderKind,

    /// Student architecture for --encoder student: resnet18, resnet50, vit-small, vit-base, deit-small
    /// (timm's deit_small_distilled_patch16_224: the mean of its class and distillation tokens), mini-vit
    /// (the demo's); weights from --model: a directory or hub id with model.safetensors, or a
    /// .safetensors file, under the torchvision/timm names.
    #[arg(long)]
    pub student: Option<String>,

    /// Augmented training views per image (DomainBed recipe: random resized crop 0.7-1, flip, colour
    /// jitter 0.3, grayscale p 0.1), in addition to the evaluation view 0; 0 to 32767 (the cache's view
    /// column is an int16).
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u16).range(..=MAX_VIEWS),
        allow_negative_numbers = true
    )]
    pub views: u16,

    /// Seed of the augmented views; each view's parameters depend only on (seed, path, view).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Extra prompt templates, one per line with {} for the class name (or {label} for its label
    /// number) and optionally {domain}; added to "a photo of a {}" and "a {domain} of a {}". On an
    /// existing cache, new templates are added to it: only their prompts are embedded, the images are
    /// not (distill/prompt_styles/ holds the templates of `distill run --prompt-style` and of rise).
    #[arg(long)]
    pub templates: Option<PathBuf>,

    /// Storage type of the embeddings.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,

    /// Images per model batch (at least 1).
    #[arg(
        long,
        default_value_t = 32,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub batch_size: usize,

    /// auto (CUDA device 0 when the build has CUDA and a device answers, else the CPU), cpu, cuda or
    /// cuda:N (CUDA needs a build with the `cuda` feature: `make build` enables it where a toolkit is found).
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// The models' products (matrix products, convolutions): fp32 (the official code's); tf32 (a GPU's
    /// TensorFloat-32 tensor cores: inputs rounded to a 10-bit mantissa, f32 accumulation; no effect on the
    /// CPU); bf16 (bf16 operands and results, f32 sums, everything else f32: PyTorch's bf16 autocast for
    /// products; fast on a GPU's tensor cores; on the CPU the same roundings, several times slower).
    /// Recorded in the manifest's computed_on.
    #[arg(long, default_value = "fp32", value_parser = |s: &str| s.parse::<vl2v::model::Precision>())]
    pub precision: vl2v::model::Precision,

    /// Embed only shard I of N (0-based, 0 <= I < N, e.g. 2/8): a deterministic 1/N of the parts, so
    /// shards can run on separate machines into one cache directory. The manifest is written by the shard
    /// that finds all parts present.
    #[arg(long, value_parser = vl2v::ranges::shard)]
    pub shard: Option<(u32, u32)>,

    /// Fail on the first unreadable image instead of skipping it (skipped images are listed in the
    /// manifest).
    #[arg(long)]
    pub strict: bool,

    /// Delete an existing cache for these settings and start again.
    #[arg(long)]
    pub force: bool,
}

/// The most augmented views: the cache stores the view number as an int16.
const MAX_VIEWS: i64 = i16::MAX as i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncoderKind {
    Teacher,
    Student,
}

impl EncoderKind {
    pub fn default_preprocess(self) -> PreprocessMode {
        match self {
            EncoderKind::Teacher => PreprocessMode::Clip,
            EncoderKind::Student => PreprocessMode::Vl2v,
        }
    }
}

impl Args {
    pub fn preprocess_mode(&self) -> PreprocessMode {
        self.preprocess
            .map(Into::into)
            .unwrap_or(self.encoder.default_preprocess())
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preprocess {
    Clip,
    Vl2v,
}

impl From<Preprocess> for PreprocessMode {
    fn from(p: Preprocess) -> Self {
        match p {
            Preprocess::Clip => PreprocessMode::Clip,
            Preprocess::Vl2v => PreprocessMode::Vl2v,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dtype {
    F32,
    F16,
}

impl From<Dtype> for EmbeddingDtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => EmbeddingDtype::F32,
            Dtype::F16 => EmbeddingDtype::F16,
        }
    }
}
