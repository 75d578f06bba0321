//! `distill`: everything after the teacher has run once — analysis, training and evaluation of students
//! from the Parquet caches written by `embed`.

#[global_allocator]
static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;

mod algorithms;
mod commands;
mod data;
mod objectives;
mod prompt_styles;
mod training;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{analyze, report, run, splits, study, sweep};

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
    Splits(splits::Args),
    /// The paper's CLIP-embedding robustness table (E1–E6) from a teacher cache alone, as markdown.
    Analyze(analyze::Args),
    /// Train and evaluate an algorithm (zeroshot, erm-lp, erm-ft, lp-ft, kd, rise, scmd, adip-align, adip-distill, sd,
    /// wise-ft)
    /// leave-one-domain-out.
    Run(Box<run::Args>),
    /// A grid of `run`s (λ × trial seed × seed) from the same caches, several at once.
    Sweep(sweep::Args),
    /// Tabulate finished runs per dataset: mean ± SE over seeds per algorithm and held-out domain.
    Report(report::Args),
    /// Studies made of many runs: `study views`, accuracy against the number of cached views and the online
    /// teacher.
    Study(study::Args),
}

fn main() -> ExitCode {
    vl2v::train::limit_candle_pool_spinning();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Splits(args) => splits::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Study(args) => study::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
