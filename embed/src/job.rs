//! One `embed` job: resolve inputs, claim the cache directory, run the missing parts, finish.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vl2v::cache::EmbeddingDtype;
use vl2v::dataset::{discover, lookup, Dataset};
use vl2v::image::Preprocess;
use vl2v::model::{device, device_name, resolve, weights_sha256, ClipTeacher, ModelFiles, Needs};
use vl2v::prompts::{read_templates, template_set};

use crate::args::{Args, EncoderKind};
use crate::encoder::Encoder;
use crate::{finish, pipeline, texts};

/// Images per part file: the most an interruption can lose.
pub const PART_IMAGES: usize = 256;
pub const JOB_FILE: &str = "job.json";
pub const RECIPE: &str =
    "domainbed: RandomResizedCrop(scale 0.7-1.0, ratio 3/4-4/3), HorizontalFlip(0.5), \
ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale(0.1)";

/// Everything that determines a cache's content. A rerun must match it exactly to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSettings {
    pub dataset: String,
    pub root: String,
    pub images: usize,
    /// sha256 over the sorted relative paths: a changed dataset is a different cache.
    pub image_list_sha256: String,
    pub model: String,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub weights_sha256: String,
    /// Teacher, or the student architecture.
    pub encoder: String,
    pub preprocess: Preprocess,
    pub views: u16,
    pub seed: u64,
    pub templates: Vec<String>,
    pub dtype: EmbeddingDtype,
    pub part_images: usize,
}

/// What a job works with once its inputs are resolved.
pub struct Job {
    pub dir: PathBuf,
    pub dataset: Dataset,
    pub encoder: Encoder,
    pub settings: JobSettings,
    pub shard: (u32, u32),
    /// The device and precision that compute this run's parts (`cuda:0 fp32`): each part's footer.
    pub computed_on: String,
}

pub fn run(args: &Args) -> Result<PathBuf> {
    let started = Instant::now();
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let job = prepare(args)?;
    let _lock = lock_shard(&job)?;
    let before = finish::cache_bytes(&job.dir);
    texts::ensure(&job)?;
    let parts = pipeline::pending_parts(&job);
    let stats = pipeline::run(&job, &parts, args.batch_size, args.strict)?;
    let manifest = finish::write_manifest_if_complete(&job)?;
    finish::print_summary(&job, &stats, started, before, manifest.is_some());
    Ok(job.dir)
}

/// One writer per shard of a cache: a second `embed` on the same shard would redo the same parts. The
/// OS releases the lock when the process ends, however it ends, so a killed run never blocks a rerun.
fn lock_shard(job: &Job) -> Result<fs::File> {
    let (shard, shards) = job.shard;
    let path = job.dir.join(format!(".lock-shard-{shard}-of-{shards}"));
    let file =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            bail!(
                "another embed is writing shard {shard}/{shards} of {}; wait for it to finish",
                job.dir.display()
            )
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The lock of a cache's templates (job.json's list and texts.parquet), held while they change: blocks
/// until another run's change is written.
pub fn lock_texts(dir: &Path) -> Result<fs::File> {
    let path = dir.join(".lock-texts");
    let file =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

fn prepare(args: &Args) -> Result<Job> {
    let spec = match &args.root {
        Some(_) => lookup(&args.dataset).ok(),
        None => Some(lookup(&args.dataset)?),
    };
    let root = match (&args.root, spec) {
        (Some(root), _) => root.clone(),
        (None, Some(spec)) => Path::new("data").join(spec.folder),
        (None, None) => unreachable!("lookup failed above"),
    };
    let dataset = discover(&args.dataset, &root, spec)?;
    eprintln!(
        "dataset {}: {} images, {} domains, {} classes in {}",
        dataset.name,
        dataset.images.len(),
        dataset.domains.len(),
        dataset.classes.len(),
        root.display()
    );
    let needs = match args.encoder {
        EncoderKind::Teacher => Needs::Clip,
        EncoderKind::Student => Needs::Weights,
    };
    let files = resolve(&args.model, args.revision.as_deref(), needs)?;
    let weights_sha256 = weights_sha256(&files.weights)?;
    let device = device(&args.device)?;
    args.precision.apply();
    eprintln!(
        "device: {} (--device {}), precision {}",
        device_name(&device),
        args.device,
        args.precision.on(&device)
    );
    let encoder = match args.encoder {
        EncoderKind::Teacher => Encoder::Teacher(Box::new(ClipTeacher::load(&files, &device)?)),
        EncoderKind::Student => {
            let name = args
                .student
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("--encoder student needs --student ARCH"))?;
            Encoder::load_student(name, &files, &device)?
        }
    };
    let extra = match &args.templates {
        Some(path) => read_templates(path)?,
        None => Vec::new(),
    };
    let mut settings = JobSettings {
        dataset: dataset.name.clone(),
        root: fs::canonicalize(&root)
            .unwrap_or(root.clone())
            .display()
            .to_string(),
        images: dataset.images.len(),
        image_list_sha256: image_list_hash(&dataset),
        model: files.source.clone(),
        revision: files.revision.clone(),
        commit: files.commit.clone(),
        weights_sha256,
        preprocess: Preprocess::new(args.preprocess_mode(), encoder.image_size() as u32),
        encoder: encoder.architecture(),
        views: args.views,
        seed: args.seed,
        templates: template_set(&extra),
        dtype: args.dtype.into(),
        part_images: PART_IMAGES,
    };
    let dir = args
        .cache_dir
        .join(&dataset.name)
        .join(cache_slug(args, &files));
    claim(&dir, &mut settings, args.force)?;
    Ok(Job {
        dir,
        dataset,
        encoder,
        settings,
        shard: args.shard.unwrap_or((0, 1)),
        computed_on: format!("{} {}", device_name(&device), args.precision.name()),
    })
}

/// `<model>[-vl2v][-views<K>-seed<S>][-f16]`: settings a user varies on purpose get their own directory.
fn cache_slug(args: &Args, files: &ModelFiles) -> String {
    let model = Path::new(&files.source);
    let mut slug = if model.exists() {
        fs::canonicalize(model)
            .ok()
            .and_then(|p| p.file_stem().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    } else {
        files.source.replace('/', "--")
    };
    if let (EncoderKind::Student, Some(arch)) = (args.encoder, &args.student) {
        slug = format!("{arch}--{slug}");
    }
    if let Some(rev) = args.revision.as_deref().filter(|r| *r != "main") {
        slug.push('@');
        slug.push_str(&rev.replace('/', "--"));
    }
    // Only a preprocessing other than the encoder's default shows in the name.
    let default = args.encoder.default_preprocess();
    if args.preprocess_mode() != default {
        slug.push('-');
        slug.push_str(&args.preprocess_mode().to_string());
    }
    if args.views > 0 {
        slug.push_str(&format!("-views{}-seed{}", args.views, args.seed));
    }
    if matches!(args.dtype, crate::args::Dtype::F16) {
        slug.push_str("-f16");
    }
    slug
}

fn image_list_hash(dataset: &Dataset) -> String {
    let mut hasher = Sha256::new();
    for image in &dataset.images {
        hasher.update(image.path.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes `dir` this job's: new directories get `job.json`; an existing one must hold the same settings,
/// so a run never mixes into a cache made differently. Templates are the exception, as the image
/// embeddings do not depend on them: the cache's templates become job.json's followed by this run's new
/// ones (`settings.templates` is set to them), and [`texts::ensure`] embeds the prompts texts.parquet
/// lacks.
fn claim(dir: &Path, settings: &mut JobSettings, force: bool) -> Result<()> {
    let job_file = dir.join(JOB_FILE);
    if force && dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove {} for --force", dir.display()))?;
    }
    if job_file.exists() {
        // Two runs adding templates at once must not lose either's.
        let _lock = lock_texts(dir)?;
        let text = fs::read_to_string(&job_file)
            .with_context(|| format!("cannot read {}", job_file.display()))?;
        let mut existing: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", job_file.display()))?;
        // Through text, as on disk: f32 fields must compare in their written form.
        let mut wanted: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(settings)?)?;
        let cached_templates = existing.as_object_mut().and_then(|o| o.remove("templates"));
        wanted.as_object_mut().map(|o| o.remove("templates"));
        if existing != wanted {
            let field = first_difference(&existing, &wanted);
            bail!(
                "{} holds a cache made with different settings ({field}); pass --force to rebuild it or \
                 --cache-dir to write elsewhere",
                dir.display()
            );
        }
        let cached: Vec<String> = cached_templates
            .and_then(|t| serde_json::from_value(t).ok())
            .with_context(|| format!("{} has no list of templates", job_file.display()))?;
        let mut all = cached.clone();
        all.extend(
            settings
                .templates
                .iter()
                .filter(|t| !cached.contains(t))
                .cloned(),
        );
        settings.templates = all;
        if settings.templates != cached {
            eprintln!(
                "adding {} templates to {}: {}",
                settings.templates.len() - cached.len(),
                dir.display(),
                settings.templates[cached.len()..].join(" | ")
            );
            vl2v::cache::write_bytes_atomic(
                &job_file,
                serde_json::to_string_pretty(settings)?.as_bytes(),
            )?;
        }
        return Ok(());
    }
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists but has no {JOB_FILE}: not a vl2v cache; remove it or choose another --cache-dir", dir.display());
    }
    fs::create_dir_all(dir.join("images"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    vl2v::cache::write_bytes_atomic(
        &job_file,
        serde_json::to_string_pretty(settings)?.as_bytes(),
    )?;
    Ok(())
}

fn first_difference(existing: &serde_json::Value, wanted: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (existing.as_object(), wanted.as_object()) else {
        return "unreadable job.json".into();
    };
    for (key, value) in b {
        let old = a.get(key).unwrap_or(&serde_json::Value::Null);
        if old != value {
            return format!("{key}: cached {old}, now {value}");
        }
    }
    "unknown fields in job.json".into()
}
