//! `distill run`: train and evaluate an algorithm leave-one-domain-out with DomainBed's protocol, from a
//! teacher cache (and a student cache for algorithms that train on student features).

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use serde_json::json;
use vl2v::model::students::name_from_architecture;

use crate::algorithms::{self, official_scripts, BackboneSetup, Input, Overrides, Setup};
use crate::data::cache_tables::{open_manifest, TeacherCache};
use crate::data::cutmix::Settings as CutMixSettings;
use crate::data::online::{Online, OnlineEncoder};
use crate::data::{DomainSplits, Reads, ViewTable};
use crate::prompt_styles;
use crate::training::backbone_from_caches::{backbone_setup, first_stage};
use crate::training::evaluate::EvalSet;
use crate::training::swad::SwadVariant;
use crate::training::trainer::{self, RunConfig, RunData, Selected};

const AFTER_HELP: &str = "\
Algorithms (cache only):
  zeroshot      the teacher's zero-shot head (the prompts of --prompt-style) on teacher image embeddings; no
                training
  erm-lp        linear probe Linear(d_student → classes) on cached student features, cross-entropy
  adip-align    ADiP Align: projection Linear(d_student → d_teacher) on cached student features, trained
                with λ·(−cos(p, I)) + (1−λ)·(−cos(p, T_y)); predicts with the zero-shot head
Algorithms that train the backbone on the dataset's images (each cached view replayed):
  erm-ft        the student plus a new linear classifier, cross-entropy
  lp-ft         LP-FT (Kumar et al. 2022): erm-ft whose classifier starts as the linear probe of the
                finished erm-lp run of the same held-out domain, seed and trial seed (under --out)
  kd            the student plus a new linear classifier, CE(z/τ, y) + λ·KL(softmax(z_T/τ) ‖ softmax(z/τ)),
                z_T = the teacher's zero-shot logits of the same view (τ 0.1, λ 0.5)
  adip-distill  ADiP Distill: the student trains, the projection of the finished adip-align run of the
                same held-out domain, seed and trial seed (under --out) and the zero-shot head are frozen;
                loss and prediction as adip-align
  sd            VL2V-SD: the teacher's own CLIP image tower trains on the same loss, no projection
  wise-ft       WiSE-FT (Wortsman et al. 2022): (1 − α)·zero-shot tower + α·the tower of the finished
                (untagged) sd run, α = --lambda (0.5); nothing trains, one evaluation; a sweep over
                --lambda picks α by training-domain validation
The student (architecture, weights, preprocessing) is the one --student-cache was embedded with; sd uses the
teacher of --cache. Weights are found where embed found them (--model overrides) and must match the sha256
in the manifest; images are read from the dataset folder the cache records (--data-root overrides).
Everything but zeroshot and sd needs --student-cache. All defaults are the official code's: Adam, lr 5e-5,
no weight decay, 32 images per training domain, BatchNorm statistics frozen.

Protocol: each domain in turn is held out; DomainBed's in/out split per domain (seed_hash(trial_seed, env));
each step draws --batch-size images per training domain with replacement from its in split, each with a
random augmented view (view 0 when the cache has none). Steps are rounded as the official code rounds them,
(steps // checkpoint_freq) * checkpoint_freq + 1; evaluation (view 0) at step 0 and every --checkpoint-freq
steps, the last one included; selection = training-domain validation (first maximum of the mean out-split
accuracy of the training domains); reported = the held-out domain's in-split accuracy.

Runs go to <out>/<dataset>/<algorithm>/<test-domain>/seed<k>/ (seed<k>-trial<t> when --trial-seed is not 0):
results.jsonl, model.safetensors (the official TE<k>_best.pth: the latest evaluation at a step ≥ --model-save
whose train_out ties the best so far), checkpoint.safetensors (to resume), done. Runs with
`done` are skipped; unfinished runs resume from their checkpoint. A markdown table goes to stdout.

SWAD (--swad): the parameters after every step are averaged into segments; each evaluation hands the segment
with train_out and tr_outloss (mean cross-entropy of the predict logits on the training domains' out splits)
to the loss valley, which may stop training early (swad_stop on that line). At the end the averaged model is
evaluated on every split: one more results.jsonl line with \"swad\": true, model_swad.safetensors, and a SWAD
column in the table. SWAD state is not checkpointed: an interrupted --swad run restarts from step 0.";

/// Train and evaluate an algorithm leave-one-domain-out (DomainBed protocol) from cached embeddings.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A teacher cache directory written by `embed` (holds manifest.json and texts.parquet).
    #[arg(long)]
    pub cache: PathBuf,

    /// A cache of student features with the same images and views as the teacher's (joined on path and
    /// view); required by every algorithm but zeroshot and sd.
    #[arg(long)]
    pub student_cache: Option<PathBuf>,

    /// zeroshot, erm-lp, erm-ft, lp-ft, kd, adip-align, adip-distill, sd or wise-ft.
    #[arg(long)]
    pub algorithm: String,

    /// The held-out domain (a domain folder name), or `all` for every domain in turn.
    #[arg(long, default_value = "all")]
    pub test_domain: String,

    /// Training steps, at least 1 [default: 5001; 15001 for domainnet].
    #[arg(long, value_parser = super::at_least(1))]
    pub steps: Option<usize>,

    /// Evaluate every N steps, N at least 1 [default: 200; 1000 for domainnet].
    #[arg(long, value_parser = super::at_least(1))]
    pub checkpoint_freq: Option<usize>,

    /// Images per training domain per step, at least 1 [default: 32].
    #[arg(long, value_parser = super::at_least(1))]
    pub batch_size: Option<usize>,

    /// Adam learning rate, finite and > 0 [default: 5e-5].
    #[arg(long, value_parser = vl2v::ranges::positive, allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// Adam weight decay (L2, torch's Adam), finite and >= 0 [default: 0].
    #[arg(long, value_parser = vl2v::ranges::non_negative, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,

    /// adip-align, adip-distill, sd: weight λ of the image term, in [0, 1]; kd: weight of the KL term,
    /// finite and >= 0; rise: weight of the two distance terms (w3), finite and >= 0; wise-ft: the
    /// fine-tuned tower's weight α, in [0, 1] [default: 0.5].
    #[arg(long, value_parser = vl2v::ranges::non_negative, allow_negative_numbers = true)]
    pub lambda: Option<f64>,

    /// kd, rise: softmax temperature τ, finite and > 0 [default: kd 0.1, rise 3].
    #[arg(long, value_parser = vl2v::ranges::positive, allow_negative_numbers = true)]
    pub temperature: Option<f64>,

    /// rise: weight of the KL term (w1), in [0, 1]; the cross-entropy's is 1 − w1 (w2) [default: 0.2 for
    /// officehome and terraincognita, else 0.9: the first line of RISE's grid for the dataset].
    #[arg(long, value_parser = vl2v::ranges::unit_interval, allow_negative_numbers = true)]
    pub kd_weight: Option<f64>,

    /// Backbone algorithms: the model to train, if not where the cache's manifest says (hub id, directory
    /// or safetensors file; its sha256 must match the manifest's).
    #[arg(long)]
    pub model: Option<String>,

    /// Backbone algorithms: the dataset folder, if not where the cache's manifest says.
    #[arg(long)]
    pub data_root: Option<PathBuf>,

    /// Backbone algorithms: auto (CUDA device 0 when the build has CUDA and a device answers, else the
    /// CPU), cpu, cuda or cuda:N (CUDA needs a build with the `cuda` feature: `make build` enables it where
    /// a toolkit is found). The device used is printed and recorded in every results.jsonl line.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Backbone algorithms: the backbone's products (matrix products, convolutions): fp32 (the official
    /// code's); tf32 (a GPU's TensorFloat-32 tensor cores: inputs rounded to a 10-bit mantissa, f32
    /// accumulation; no effect on the CPU); bf16 (bf16 operands and results, f32 sums; parameters, Adam,
    /// norms, softmax and losses stay f32: PyTorch's bf16 autocast for products; fast on a GPU's tensor
    /// cores; on the CPU the same roundings, several times slower than fp32). Recorded with the device in
    /// every results.jsonl line.
    #[arg(long, default_value = "fp32", value_parser = |s: &str| s.parse::<vl2v::model::Precision>())]
    pub precision: vl2v::model::Precision,

    /// Algorithms that train: where the teacher's image embeddings come from: `cache` (one of the K views
    /// `embed` cached, replayed for the student) or `online` (the official pipeline: the cache's CLIP image
    /// tower, found as `sd` finds it, embeds a freshly drawn augmentation of every sampled image at every
    /// step, and for adip-align and erm-lp the frozen student encodes the same view; slower, and it needs
    /// the models' weights). Recorded as `args.teacher` when online.
    #[arg(long, value_enum, default_value_t = TeacherMode::Cache)]
    pub teacher: TeacherMode,

    /// adip-distill, sd with `--teacher online`: CutMix as the official code applies it (its `beta`): at a
    /// step drawn with probability `--cutmix-prob`, λ ~ Beta(β, β), every image's box is replaced by
    /// another's and the loss mixes the two labels' text targets by the box's area; the teacher embeds the
    /// mixed image. β > 0, finite; 0: off [default: off, as officially].
    #[arg(long, value_parser = vl2v::ranges::non_negative, allow_negative_numbers = true)]
    pub cutmix_beta: Option<f64>,

    /// With `--cutmix-beta`: the probability that a step mixes (the official `cutmix_prob`), in [0, 1]
    /// [default: 1, the official CutMix entry's].
    #[arg(long, value_parser = vl2v::ranges::unit_interval, allow_negative_numbers = true)]
    pub cutmix_prob: Option<f64>,

    /// Backbone algorithms: image loader threads, which decode, replay and preprocess the next batch while
    /// the current one computes (results do not depend on their number) [default: 0 on the CPU, where the
    /// compute uses every core; every core beside a GPU]. At most 1024.
    #[arg(long, value_parser = super::threads())]
    pub workers: Option<usize>,

    /// Seeds parameter initialisation and minibatch sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// DomainBed's trial seed (the in/out split).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub trial_seed: i64,

    /// Fraction of each domain held out as its out split (DomainBed's holdout_fraction), in (0, 1): the
    /// out splits select the model and the in splits train it.
    #[arg(
        long,
        default_value_t = 0.2,
        value_parser = vl2v::ranges::open_unit,
        allow_negative_numbers = true
    )]
    pub holdout_fraction: f64,

    /// Root of the run directories.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,

    /// A name for this configuration (letters, digits, `.`, `_`, `-`): runs go to `<algorithm>@<TAG>/`, a row
    /// of its own in the report (hyper-parameter sweeps: `distill sweep` sets it); adip-distill then reads
    /// the Align run `adip-align@<TAG>`.
    #[arg(long)]
    pub tag: Option<String>,

    /// SWAD (dense weight averaging over the loss valley; every algorithm that trains): evaluate the averaged
    /// model at the end (a last results.jsonl line with "swad": true, model_swad.safetensors) and stop early
    /// on a dead valley. A --swad run keeps no resume checkpoint: interrupted, it restarts from step 0.
    #[arg(long)]
    pub swad: bool,

    /// When SWAD's segment average restarts: vl2v (VL2V-ADiP's default swad_fix: only at checkpoints with
    /// step % 1000 == 0 and step > 2500) or upstream (after every checkpoint, khanrc/swad) [default: the
    /// official script's for the student (upstream for adip-distill of vit-base), else vl2v].
    #[arg(long, value_enum, requires = "swad")]
    pub swad_variant: Option<SwadVariantArg>,

    /// The official --model_save: model.safetensors holds the latest evaluation at a step ≥ STEP whose
    /// train_out equals the best so far (adip-distill starts from the Align run's) [default: the official
    /// script's for adip-align / adip-distill of resnet50, vit-small, vit-base, deit-small (100, or 1000 for
    /// vit-base Align and resnet50 Distill); 0 otherwise].
    #[arg(long, value_name = "STEP")]
    pub model_save: Option<u64>,

    /// adip-distill: which projection of the Align run to start from: official (its model.safetensors, the
    /// ordinary projection, as the official code loads TE<k>_best.pth) or swad (its SWAD-averaged
    /// projection, model_swad.safetensors).
    #[arg(long, value_enum, default_value_t = AlignModel::Official)]
    pub align_model: AlignModel,

    /// DomainBed's hparams_seed, recorded in args (it names a hyper-parameter configuration to DomainBed's
    /// model selection; `distill sweep` gives each λ its own).
    #[arg(long, default_value_t = 0)]
    pub hparams_seed: u64,

    /// Train on the first K augmented views of each image only (views 1..=K; 0: the evaluation view alone),
    /// from a cache that holds more: what fewer cached views would have given, without a new cache
    /// [default: every view the cache holds].
    #[arg(long, value_name = "K")]
    pub views: Option<usize>,

    /// The official code's prompt style of the class texts that zeroshot, adip-align, adip-distill, kd's
    /// teacher and sd predict or train with (distill_clip.py): 1 "{class}"; 2 "a photo of a {class}"; 3
    /// OfficeHome's four domain templates averaged ("an art of a {class}", "a clipart of a {class}", "a
    /// photo of a {class} product", "a photo of a {class}"); 5 the same without the held-out domain's
    /// (OfficeHome only); 6 "a photo of a {label number}". Style 4 raises KeyError in the official code and
    /// is refused. The cache needs the style's prompts: `embed --templates distill/prompt_styles/style-N.txt`
    /// adds them to an existing cache.
    #[arg(long, value_name = "N", default_value_t = prompt_styles::DEFAULT, value_parser = prompt_styles::parse)]
    pub prompt_style: u8,

    /// Testing aid: fail right after the evaluation of this step, as if the run had been killed.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// `--teacher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TeacherMode {
    Cache,
    Online,
}

/// `--align-model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AlignModel {
    Official,
    Swad,
}

/// `--swad-variant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwadVariantArg {
    Vl2v,
    Upstream,
}

impl SwadVariantArg {
    fn variant(self) -> SwadVariant {
        match self {
            Self::Vl2v => SwadVariant::Vl2vFix,
            Self::Upstream => SwadVariant::Upstream,
        }
    }
}

/// The name `--swad-variant` gives `variant`.
fn swad_variant_name(variant: SwadVariant) -> &'static str {
    match variant {
        SwadVariant::Vl2vFix => "vl2v",
        SwadVariant::Upstream => "upstream",
    }
}

/// The official `n_steps` (train_all.py): rounded to a multiple of the evaluation interval, plus one, so
/// that the last step is evaluated like every other (`(steps // freq) * freq + 1`).
pub fn official_steps(steps: usize, checkpoint_freq: usize) -> usize {
    (steps / checkpoint_freq) * checkpoint_freq + 1
}

/// The folder of an algorithm's runs: its name, or `<name>@<tag>`.
pub fn folder(algorithm: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{algorithm}@{t}"),
        None => algorithm.to_string(),
    }
}

pub fn run(args: &Args) -> Result<()> {
    let entry = algorithms::lookup(&args.algorithm)?;
    check_args(args, entry)?;
    let mut experiment = Experiment::open(args, entry)?;
    let mut summaries: Vec<(usize, Selected)> = Vec::new();
    for test in experiment.test_domains.clone() {
        summaries.push((test, experiment.run_held_out(test)?));
    }
    let m = &experiment.teacher.manifest;
    print!(
        "{}",
        table(
            &m.dataset.name,
            entry.name,
            &m.dataset.domains,
            &summaries,
            args.swad
        )
    );
    Ok(())
}

/// What can be rejected before anything is read, beyond each value's own range (checked as it is parsed,
/// see [`super::at_least`] and [`vl2v::ranges`]). `distill sweep` checks every run it will start with it.
pub(crate) fn check_args(args: &Args, entry: &algorithms::Entry) -> Result<()> {
    if let Some(tag) = &args.tag {
        ensure!(
            !tag.is_empty()
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "--tag '{tag}': use letters, digits, '.', '_' and '-' only"
        );
    }
    if let Some(lambda) = args.lambda {
        // The ADiP loss mixes its two terms as λ and 1 − λ (kd's λ weighs KL alone: any λ ≥ 0, as parsed).
        ensure!(
            lambda <= 1.0
                || !matches!(entry.name, "adip-align" | "adip-distill" | "sd" | "wise-ft"),
            "--lambda must be in [0, 1] for {}, got {lambda}",
            entry.name
        );
    }
    if entry.needs_student() && args.student_cache.is_none() {
        bail!(
            "{} trains a student: pass --student-cache DIR (a cache of the same images and views as \
             --cache, embedded with --encoder student)",
            entry.name
        );
    }
    if args.swad && entry.name == "zeroshot" {
        bail!("--swad averages trained parameters; zeroshot trains nothing");
    }
    Ok(())
}

/// Everything the held-out runs of one `distill run` share, read once: the caches, DomainBed's split,
/// and the model a backbone algorithm trains.
struct Experiment<'a> {
    args: &'a Args,
    entry: &'a algorithms::Entry,
    teacher: TeacherCache,
    /// The held-out domains to run, in order.
    test_domains: Vec<usize>,
    teacher_views: ViewTable,
    student: Option<ViewTable>,
    backbone: Option<BackboneSetup>,
    /// `--teacher online`.
    online: Option<Online>,
    splits: DomainSplits,
    /// The official n_steps (rounded, see [`official_steps`]).
    steps: usize,
    checkpoint_freq: usize,
    model_save: u64,
    swad: Option<SwadVariant>,
}

impl<'a> Experiment<'a> {
    fn open(args: &'a Args, entry: &'a algorithms::Entry) -> Result<Self> {
        let started = std::time::Instant::now();
        let teacher = TeacherCache::open(&args.cache)?;
        let m = &teacher.manifest;
        ensure!(
            m.dataset.domains.len() >= 2,
            "leave-one-domain-out needs at least two domains; {} has {}",
            args.cache.display(),
            m.dataset.domains.len()
        );
        let test_domains = test_domains(&m.dataset.domains, &args.test_domain)?;
        for &test in &test_domains {
            prompt_styles::texts(args.prompt_style, &teacher.texts, m, &args.cache, test)?;
        }
        let domainnet = m.dataset.name.eq_ignore_ascii_case("domainnet");
        let checkpoint_freq = args
            .checkpoint_freq
            .unwrap_or(if domainnet { 1000 } else { 200 });
        let steps = official_steps(
            args.steps.unwrap_or(if domainnet { 15001 } else { 5001 }),
            checkpoint_freq,
        );
        let views = m.views.count as usize + 1;
        if let Some(k) = args.views {
            ensure!(
                k < views,
                "--views {k}: {} holds {} augmented views per image",
                args.cache.display(),
                views - 1
            );
        }
        let paths = teacher.images.paths();
        // Training from the cache samples every view; otherwise only evaluation reads them (view 0).
        let reads = if args.teacher == TeacherMode::Cache && entry.trains() {
            Reads::Sampled
        } else {
            Reads::View0
        };
        let teacher_views = ViewTable::load(&args.cache, m, paths, views, "teacher", reads)?;
        let student_manifest = match (&args.student_cache, entry.needs_student()) {
            (Some(dir), true) => Some(open_manifest(dir)?),
            _ => None,
        };
        let student = match (&args.student_cache, &student_manifest, entry.input) {
            (Some(dir), Some(sm), Input::StudentFeatures) => {
                Some(ViewTable::load(dir, sm, paths, views, "student", reads)?)
            }
            _ => None,
        };
        eprintln!("caches opened in {:.2} s", started.elapsed().as_secs_f64());
        // The official script's settings for this student and stage, where the official code has one.
        let student_name = student_manifest
            .as_ref()
            .and_then(|sm| name_from_architecture(&sm.encoder.architecture));
        let script = match student_name {
            Some(name) => official_scripts::stage_settings(entry.name, name)?,
            None => None,
        };
        let model_save = args
            .model_save
            .or(script.map(|s| s.model_save))
            .unwrap_or(0);
        let swad = args.swad.then(|| {
            args.swad_variant
                .map(SwadVariantArg::variant)
                .or(script.map(|s| s.swad_variant))
                .unwrap_or(SwadVariant::Vl2vFix)
        });
        let backbone = if entry.trains_backbone() {
            let device = vl2v::model::device(&args.device)?;
            args.precision.apply();
            eprintln!(
                "device: {} (--device {}), precision {}",
                vl2v::model::device_name(&device),
                args.device,
                args.precision.on(&device)
            );
            let mut setup = backbone_setup(
                entry.input,
                m,
                student_manifest.as_ref(),
                args.model.as_deref(),
                args.data_root.as_deref(),
                paths,
                &device,
            )?;
            setup.workers = args.workers.unwrap_or(if device.is_cpu() {
                0
            } else {
                std::thread::available_parallelism().map_or(1, usize::from)
            });
            Some(setup)
        } else {
            None
        };
        let online = match args.teacher {
            TeacherMode::Cache => None,
            TeacherMode::Online => {
                ensure!(
                    matches!(
                        entry.input,
                        Input::StudentFeatures | Input::StudentImages | Input::TeacherImages
                    ),
                    "--teacher online needs an algorithm that trains; {} only evaluates the cache",
                    entry.name
                );
                let device = match &backbone {
                    Some(b) => b.device.clone(),
                    None => {
                        let device = vl2v::model::device(&args.device)?;
                        args.precision.apply();
                        eprintln!(
                            "device: {} (--device {}), precision {}",
                            vl2v::model::device_name(&device),
                            args.device,
                            args.precision.on(&device)
                        );
                        device
                    }
                };
                let encoder = |input: Input, normalize: bool| -> Result<OnlineEncoder> {
                    let setup = backbone_setup(
                        input,
                        m,
                        student_manifest.as_ref(),
                        // --model names the student's weights (as for the backbone algorithms).
                        (input == Input::StudentImages)
                            .then_some(args.model.as_deref())
                            .flatten(),
                        args.data_root.as_deref(),
                        paths,
                        &device,
                    )?;
                    OnlineEncoder::new(&setup, normalize)
                };
                let teacher = encoder(Input::TeacherImages, true)?;
                // The cached-feature algorithms' student encodes the fresh views too.
                let student = match (entry.input, &student_manifest) {
                    (Input::StudentFeatures, Some(sm)) => {
                        Some(encoder(Input::StudentImages, sm.encoder.normalized)?)
                    }
                    _ => None,
                };
                Some(Online { teacher, student })
            }
        };
        ensure!(
            args.cutmix_prob.is_none() || args.cutmix_beta.is_some_and(|b| b > 0.0),
            "--cutmix-prob needs --cutmix-beta β > 0: without it CutMix is off, as in the official code"
        );
        if args.cutmix_beta.is_some_and(|b| b > 0.0) {
            ensure!(
                algorithms::CUTMIX.contains(&entry.name),
                "--cutmix-beta: CutMix mixes the labels of the loss of {} only (the official Distill's), \
                 not {}",
                algorithms::CUTMIX.join(" and "),
                entry.name
            );
            let (Some(online), Some(b)) = (&online, &backbone) else {
                bail!(
                    "--cutmix-beta needs --teacher online: the teacher must embed the mixed images, which \
                     no cache holds"
                );
            };
            ensure!(
                online.teacher.size() == b.images.size(),
                "--cutmix-beta mixes one box in the teacher's and the student's images, as the official \
                 code mixes one tensor; they are {}² and {}² here: embed the teacher with the student's \
                 input (--preprocess vl2v, the official one)",
                online.teacher.size(),
                b.images.size()
            );
        }
        if let Some(online) = &online {
            // The same encoders and preprocessing as the caches, or the comparison with cached runs is void.
            let images = teacher.images.labels().len();
            let mut checks = vec![("teacher", &online.teacher, &teacher_views, &args.cache)];
            if let (Some(s), Some(table), Some(dir)) =
                (&online.student, &student, &args.student_cache)
            {
                checks.push(("student", s, table, dir));
            }
            for (role, encoder, table, cache) in checks {
                let (agreement, lengths) = encoder.agreement(table, images)?;
                eprintln!(
                    "{role}: online, on a fresh augmentation of every sampled image (against {}'s views: \
                     min cosine {agreement:.6}, lengths within {lengths:.1e})",
                    cache.display()
                );
                ensure!(
                    agreement >= 0.999 && lengths <= 1e-2,
                    "the online {role} does not reproduce the cache's embeddings (min cosine {agreement:.4}, \
                     lengths within {lengths:.1e} over cached views): it is not the model and preprocessing \
                     {} was embedded with",
                    cache.display()
                );
            }
        }
        let splits = DomainSplits::new(
            teacher.images.domains(),
            m.dataset.domains.len(),
            args.holdout_fraction,
            args.trial_seed,
        );
        Ok(Experiment {
            args,
            entry,
            teacher,
            test_domains,
            teacher_views,
            student,
            backbone,
            online,
            splits,
            steps,
            checkpoint_freq,
            model_save,
            swad,
        })
    }

    /// The run folder of held-out domain `test` for `algorithm`.
    fn run_dir(&self, algorithm: &str, test: usize) -> PathBuf {
        self.run_dir_tagged(algorithm, self.args.tag.as_deref(), test)
    }

    fn run_dir_tagged(&self, algorithm: &str, tag: Option<&str>, test: usize) -> PathBuf {
        let m = &self.teacher.manifest;
        crate::training::run_dir::run_dir(
            &self.args.out,
            &m.dataset.name,
            &folder(algorithm, tag),
            &m.dataset.domains[test],
            self.args.seed,
            self.args.trial_seed,
        )
    }

    /// Trains and evaluates with `test` held out; returns the selected evaluation.
    fn run_held_out(&mut self, test: usize) -> Result<Selected> {
        let args = self.args;
        let align_model = self.load_first_stage(test)?;
        let align_model = align_model.as_ref().map(|(p, s)| (p.as_path(), *s));
        let m = &self.teacher.manifest;
        let style = args.prompt_style;
        let texts = prompt_styles::texts(style, &self.teacher.texts, m, &args.cache, test)?;
        let templates = prompt_styles::templates(style, &m.dataset.domains, test)?;
        let setup = Setup {
            student_dim: self.student.as_ref().map(ViewTable::dim),
            teacher_dim: self.teacher_views.dim(),
            classes: m.dataset.classes.len(),
            texts: &texts,
            templates: &templates,
            logit_scale: m.logit_scale.unwrap_or(100.0),
            seed: args.seed,
            backbone: self.backbone.as_ref(),
            prompts: Some(prompt_styles::PromptBank {
                texts: &self.teacher.texts,
                manifest: m,
                cache: &args.cache,
            }),
            test_domain: test,
        };
        let overrides = Overrides {
            lr: args.lr,
            weight_decay: args.weight_decay,
            batch_size: args.batch_size,
            lambda: args.lambda,
            temperature: args.temperature,
            kd_weight: args.kd_weight,
        };
        let mut algorithm = (self.entry.build)(&setup, &overrides)?;
        let config = RunConfig {
            steps: self.steps,
            checkpoint_freq: self.checkpoint_freq,
            seed: args.seed,
            args: self.record_args(test, algorithm.hparams(), align_model),
            label: format!(
                "{} {} (test {})",
                m.dataset.name,
                folder(self.entry.name, args.tag.as_deref()),
                m.dataset.domains[test]
            ),
            stop_after: args.stop_after,
            swad: self.swad,
            model_save: self.model_save,
            views: args.views.map(|k| k + 1),
            cutmix: self.cutmix(),
            device: self
                .backbone
                .as_ref()
                .map(|b| (vl2v::model::device_name(&b.device), args.precision.name())),
        };
        let data = RunData {
            labels: self.teacher.images.labels(),
            student: self.student.as_ref(),
            teacher: &self.teacher_views,
            online: self.online.as_ref(),
            pools: (0..m.dataset.domains.len())
                .filter(|&d| d != test)
                .map(|d| self.splits.in_[d].clone())
                .collect(),
            eval: self.eval_sets(test),
            classes: m.dataset.classes.len(),
        };
        let dir = self.run_dir(self.entry.name, test);
        trainer::run(&dir, algorithm.as_mut(), &data, &config)
    }

    /// adip-distill and lp-ft: hands the backbone the model of the finished first stage (adip-align's
    /// projection, erm-lp's probe) of the same held-out domain, seed, trial seed and tag, and returns that
    /// model's path and step (recorded in `args`).
    fn load_first_stage(&mut self, test: usize) -> Result<Option<(PathBuf, Option<u64>)>> {
        let first = match self.entry.name {
            "adip-distill" => "adip-align",
            "lp-ft" => "erm-lp",
            "wise-ft" => "sd",
            _ => return Ok(None),
        };
        // A sweep's tags name wise-ft's α grid, all from the one untagged sd run.
        let dir = if self.entry.name == "wise-ft" {
            self.run_dir_tagged(first, None, test)
        } else {
            self.run_dir(first, test)
        };
        let student_cache = self.args.student_cache.as_deref();
        let swad = self.args.align_model == AlignModel::Swad;
        let chosen = first_stage(
            &dir,
            &self.args.cache,
            student_cache,
            swad,
            (first, self.entry.name),
        )?;
        if let Some(b) = self.backbone.as_mut() {
            b.first_stage = Some(chosen.tensors);
        }
        Ok(Some((chosen.path, chosen.step)))
    }

    /// The evaluated splits, in DomainBed's order: every domain's out split, and the held-out domain's
    /// in split (its reported accuracy) before its out split.
    fn eval_sets(&self, test: usize) -> Vec<EvalSet> {
        let labels = self.teacher.images.labels();
        let mut eval = Vec::new();
        for d in 0..self.teacher.manifest.dataset.domains.len() {
            let sets: &[(&str, &[usize], Option<&'static str>)] = if d == test {
                &[
                    ("in", &self.splits.in_[d], Some("in")),
                    ("out", &self.splits.out[d], Some("out")),
                ]
            } else {
                &[("out", &self.splits.out[d], None)]
            };
            for &(split, images, test_split) in sets {
                eval.push(EvalSet {
                    key: format!("env{d}_{split}_acc"),
                    test_split,
                    images: images.to_vec(),
                    labels: images.iter().map(|&i| labels[i]).collect(),
                });
            }
        }
        eval
    }

    /// The run's `args` record (DomainBed's keys, plus what reproduces it from the caches).
    fn record_args(
        &self,
        test: usize,
        hparams: serde_json::Value,
        align_model: Option<(&std::path::Path, Option<u64>)>,
    ) -> serde_json::Value {
        let (args, m) = (self.args, &self.teacher.manifest);
        let mut record = json!({
                "dataset": m.dataset.name,
                "algorithm": self.entry.name,
                "test_envs": [test],
                "test_domain": m.dataset.domains[test],
                "trial_seed": args.trial_seed,
                "seed": args.seed,
                "hparams_seed": args.hparams_seed,
                "hparams": hparams,
                "steps": self.steps,
                "checkpoint_freq": self.checkpoint_freq,
                "holdout_fraction": args.holdout_fraction,
                "model_save": self.model_save,
                "views": args.views.unwrap_or(m.views.count as usize),
                "prompt_style": args.prompt_style,
                "cache": args.cache,
                "student_cache": args.student_cache,
        });
        if let Some(variant) = self.swad {
            record["swad"] = json!(swad_variant_name(variant));
        }
        if let Some((path, step)) = align_model {
            record["align_model"] = json!(path);
            record["align_step"] = json!(step);
        }
        if let Some(model) = &args.model {
            record["model"] = json!(model);
        }
        if let Some(tag) = &args.tag {
            record["tag"] = json!(tag);
        }
        if args.teacher == TeacherMode::Online {
            record["teacher"] = json!("online");
        }
        if let Some(c) = self.cutmix() {
            record["cutmix"] = json!({"beta": c.beta, "prob": c.prob});
        }
        record
    }

    /// `--cutmix-beta`/`--cutmix-prob` when CutMix is on.
    fn cutmix(&self) -> Option<CutMixSettings> {
        let beta = self.args.cutmix_beta.filter(|&b| b > 0.0)?;
        Some(CutMixSettings {
            beta,
            prob: self.args.cutmix_prob.unwrap_or(1.0),
        })
    }
}

/// `--test-domain`: one domain's index, or every domain's for `all`.
fn test_domains(domains: &[String], name: &str) -> Result<Vec<usize>> {
    if name == "all" {
        return Ok((0..domains.len()).collect());
    }
    match domains.iter().position(|d| d == name) {
        Some(i) => Ok(vec![i]),
        None => bail!(
            "unknown domain '{name}'; valid: all, {}",
            domains.join(", ")
        ),
    }
}

/// One row per held-out domain (selected step, its test-domain in accuracy and training-domain
/// validation accuracy, and with `swad` the SWAD model's test-domain in accuracy), then the averages: OOD
/// (test accuracy) and ID (validation).
fn table(
    dataset: &str,
    algorithm: &str,
    domains: &[String],
    rows: &[(usize, Selected)],
    swad: bool,
) -> String {
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.1}", 100.0 * v));
    let mut s = format!(
        "## {dataset} — {algorithm} (training-domain validation)\n\n\
         | test domain | env | selected step | test acc (in) % | train-domain val % |{}\n\
         |---|---|---|---|---|{}\n",
        if swad {
            " SWAD test acc (in) % | SWAD train-domain val % |"
        } else {
            ""
        },
        if swad { "---|---|" } else { "" }
    );
    for (env, sel) in rows {
        s.push_str(&format!(
            "| {} | {env} | {} | {:.1} | {:.1} |",
            domains[*env],
            sel.step,
            100.0 * sel.test_in,
            100.0 * sel.train_out
        ));
        if swad {
            s.push_str(&format!(
                " {} | {} |",
                pct(sel.swad_test_in),
                pct(sel.swad_train_out)
            ));
        }
        s.push('\n');
    }
    if !rows.is_empty() {
        let n = rows.len() as f64;
        let ood = rows.iter().map(|(_, r)| r.test_in).sum::<f64>() / n;
        let id = rows.iter().map(|(_, r)| r.train_out).sum::<f64>() / n;
        s.push_str(&format!(
            "| **Avg** (OOD / ID) | | | {:.1} | {:.1} |",
            100.0 * ood,
            100.0 * id
        ));
        if swad {
            let mean = |values: Option<Vec<f64>>| pct(values.map(|v| v.iter().sum::<f64>() / n));
            let swad_ood = rows.iter().map(|(_, r)| r.swad_test_in).collect();
            let swad_id = rows.iter().map(|(_, r)| r.swad_train_out).collect();
            s.push_str(&format!(" {} | {} |", mean(swad_ood), mean(swad_id)));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// train_all.py: `n_steps = (n_steps // checkpoint_freq) * checkpoint_freq + 1`, by hand.
    #[test]
    fn steps_are_rounded_as_the_official_code_rounds_them() {
        assert_eq!(official_steps(5001, 200), 5001);
        assert_eq!(official_steps(5000, 200), 5001);
        assert_eq!(official_steps(15001, 1000), 15001);
        assert_eq!(official_steps(300, 50), 301);
        assert_eq!(official_steps(10, 4), 9);
        assert_eq!(official_steps(3, 5), 1);
    }

    #[test]
    fn table_has_a_row_per_domain_and_averages() {
        let sel = |step, train_out, test_in| Selected {
            step,
            train_out,
            test_in,
            swad_test_in: None,
            swad_train_out: None,
        };
        let t = table(
            "toy",
            "erm-lp",
            &["a".into(), "b".into()],
            &[(0, sel(3, 0.5, 0.25)), (1, sel(0, 1.0, 0.75))],
            false,
        );
        assert!(t.contains("| a | 0 | 3 | 25.0 | 50.0 |"), "{t}");
        assert!(t.contains("| b | 1 | 0 | 75.0 | 100.0 |"), "{t}");
        assert!(
            t.contains("| **Avg** (OOD / ID) | | | 50.0 | 75.0 |"),
            "{t}"
        );
        let swad = |s: Selected, v| Selected {
            swad_test_in: Some(v),
            swad_train_out: Some(0.9),
            ..s
        };
        let t = table(
            "toy",
            "adip-align",
            &["a".into(), "b".into()],
            &[
                (0, swad(sel(3, 0.5, 0.25), 0.5)),
                (1, swad(sel(0, 1.0, 0.75), 0.75)),
            ],
            true,
        );
        assert!(
            t.contains("| SWAD test acc (in) % | SWAD train-domain val % |\n|---|---|---|---|---|---|---|\n"),
            "{t}"
        );
        assert!(
            t.contains("| a | 0 | 3 | 25.0 | 50.0 | 50.0 | 90.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| **Avg** (OOD / ID) | | | 50.0 | 75.0 | 62.5 | 90.0 |"),
            "{t}"
        );
    }
}
