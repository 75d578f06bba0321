//! `embed`: runs a CLIP teacher (or a frozen student) once over a DomainBed-layout dataset and writes a
//! resumable Parquet cache of image embeddings (per view) and class-text embeddings, with a manifest
//! written last.

#[global_allocator]
static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;

mod args;
mod encoder;
mod finish;
mod job;
mod pipeline;
mod texts;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    match job::run(&args) {
        Ok(cache_dir) => {
            // The last stdout line is the cache directory, for scripts.
            println!("{}", cache_dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
