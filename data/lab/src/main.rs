//! synthdg: the offline demo's lab. Writes the procedural benchmark or the captioned corpus ([`synth`]),
//! and trains the demo's models from them ([`pretrain`]): the stand-ins for OpenAI's CLIP and an
//! ImageNet-pretrained student that no one can download here.

#[global_allocator]
static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;

mod pretrain;
mod synth;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use synth::{Outcome, Settings, Style, BENCHMARK_CLASSES, CLASSES, SIZES};

/// Deterministic procedural images of simple objects in several drawing styles, for offline
/// domain-generalisation demos. The same settings always give byte-identical files.
///
/// Output is written to a temporary folder beside --out and renamed into place when complete. An --out
/// that already holds the same settings is left as it is; one with other settings is an error.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The DomainBed-layout benchmark: 8 classes × 4 domains (clipart, painting, photo, sketch),
    /// OUT/<domain>/<class>/<index>.png. `make data DATASET=synthdg` writes it to data/synthdg.
    Benchmark {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Every image is a function of (seed, style, class, index).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Images per (domain, class), at least 1.
        #[arg(long, default_value_t = 60, value_parser = at_least(1))]
        per_class: usize,
        /// Image width and height in pixels, 16 to 1024.
        #[arg(long, default_value_t = 64, value_parser = image_side())]
        size: usize,
    },
    /// The captioned corpus: every class in every style, OUT/<style>/<class>/<index>.png plus
    /// OUT/captions.jsonl ({"path", "caption", "class", "style"} per line). `--styles photo` gives the
    /// student pretraining set.
    Corpus {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Every image is a function of (seed, style, class, index); the corpus defaults to another seed
        /// than the benchmark so that their images differ.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Images per (style, class), at least 1.
        #[arg(long, default_value_t = 60, value_parser = at_least(1))]
        per_class: usize,
        /// Image width and height in pixels, 16 to 1024.
        #[arg(long, default_value_t = 64, value_parser = image_side())]
        size: usize,
        /// Comma-separated styles [default: all: clipart, infograph, neon, painting, photo, quickdraw, sketch].
        #[arg(long, value_delimiter = ',')]
        styles: Vec<String>,
        /// Comma-separated classes [default: all 16].
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// Half the captions name the class (and colour) but not the style ("an image of a red cup"), as
        /// most web captions do not name the medium; the other half as without it.
        #[arg(long)]
        plain_captions: bool,
    },
    /// A contact sheet PNG (one row per style, one column per class) for checking the drawings by eye.
    Sheet {
        /// Output PNG file.
        #[arg(long)]
        out: PathBuf,
        /// Every image is a function of (seed, style, class, index).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Cell size in pixels, 16 to 1024.
        #[arg(long, default_value_t = 64, value_parser = image_side())]
        size: usize,
        /// Which instance of each (style, class) to show.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Only the benchmark's classes and domains.
        #[arg(long)]
        benchmark: bool,
    },
    /// Train the offline demo's models from generated data (make lab-models): a miniature CLIP teacher
    /// and a student pretrained on one style.
    Pretrain(pretrain::Args),
}

/// An integer option's range, checked as clap parses it: at least `min` (clap's message names the flag and
/// the range). Real-valued options use [`vl2v::ranges`].
pub(crate) fn at_least(min: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..)
}

/// `--size`: the sides the drawings are made for ([`SIZES`]).
fn image_side() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(*SIZES.start() as u64..=*SIZES.end() as u64)
}

fn main() {
    vl2v::train::limit_candle_pool_spinning();
    // One line for a failure (a mismatched --out, an unknown class), whatever RUST_BACKTRACE says.
    if let Err(err) = run(Args::parse()) {
        eprintln!("synthdg: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let (out, settings) = match args.command {
        Command::Pretrain(args) => return pretrain::run(&args),
        Command::Benchmark {
            out,
            seed,
            per_class,
            size,
        } => (out, Settings::benchmark(seed, per_class, size)),
        Command::Corpus {
            out,
            seed,
            per_class,
            size,
            styles,
            classes,
            plain_captions,
        } => (
            out,
            Settings::corpus(seed, per_class, size, &styles, &classes)
                .with_plain_captions(plain_captions),
        ),
        Command::Sheet {
            out,
            seed,
            size,
            index,
            benchmark,
        } => {
            let (styles, classes): (&[Style], &[&str]) = if benchmark {
                (&Style::BENCHMARK, BENCHMARK_CLASSES)
            } else {
                (&Style::ALL, CLASSES)
            };
            synth::contact_sheet(seed, styles, classes, size, index)
                .save_with_format(&out, image::ImageFormat::Png)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", out.display());
            return Ok(());
        }
    };
    let start = Instant::now();
    // Progress on a terminal's stderr, in tenths; a log gets only the summary.
    let shown = AtomicUsize::new(0);
    let terminal = std::io::stderr().is_terminal();
    let progress = |done: usize, total: usize| {
        let tenth = done * 10 / total;
        if terminal && shown.fetch_max(tenth, Ordering::Relaxed) < tenth {
            eprint!("\rsynthdg: {done}/{total} images");
            let _ = std::io::stderr().flush();
        }
    };
    match synth::generate(&out, &settings, &progress)? {
        Outcome::AlreadyGenerated => eprintln!("synthdg: {} already generated", out.display()),
        Outcome::Generated { images } => {
            let back = if terminal { "\r" } else { "" };
            eprintln!(
                "{back}synthdg: wrote {images} images ({} styles × {} classes × {}, {} px, seed {}) in {:.1} s",
                settings.styles.len(),
                settings.classes.len(),
                settings.per_class,
                settings.size,
                settings.seed,
                start.elapsed().as_secs_f64(),
            )
        }
    }
    println!("{}", out.display());
    Ok(())
}
