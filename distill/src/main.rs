//! `distill`: everything after the teacher has run once — analysis, training and evaluation of students
//! from the Parquet caches written by `embed`.

#[global_allocator]
static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;

mod adam;
mod algorithms;
mod analyze;
mod backbone;
mod backbone_source;
mod data;
mod evaluate;
mod graph_losses;
mod images;
mod losses;
mod pretrain;
mod report;
mod run_cmd;
mod runs;
mod splits_cmd;
mod swad;
mod sweep;
mod teacher_cache;
mod trainer;
mod zeroshot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Align, distil and evaluate students from cached CLIP embeddings (VL2V-ADiP), leave-one-domain-out.
#[derive(Debug, Parser)]
#[command(name = "distill", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write DomainBed's in/out split of every image (path, domain, split) as CSV.
    Splits(splits_cmd::Args),
    /// The paper's CLIP-embedding robustness table (E1–E6) from a teacher cache alone, as markdown.
    Analyze(analyze::Args),
    /// Train and evaluate an algorithm (zeroshot, erm-lp, erm-ft, kd, adip-align, adip-distill, sd)
    /// leave-one-domain-out.
    Run(Box<run_cmd::Args>),
    /// A grid of `run`s (λ × trial seed × seed) from the same caches, several at once.
    Sweep(sweep::Args),
    /// Train the offline demo's models from generated data: a miniature CLIP teacher and a student
    /// pretrained on one style (make lab-models).
    Pretrain(pretrain::Args),
    /// Tabulate finished runs per dataset: mean ± SE over seeds per algorithm and held-out domain.
    Report(report::Args),
}

fn main() -> ExitCode {
    // candle's pool for elementwise ops spins 25,000 times after each op before its workers sleep; while
    // a backbone trains, the spinning takes the cores the next op needs (a third of a tiny ResNet's step
    // on 2 cores). Set before candle's first op reads it; a user's own setting wins.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Splits(args) => splits_cmd::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Report(args) => report::run(args),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Sweep(args) => sweep::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
