//! The subcommands: each owns its command-line arguments and drives the library modules beside it.

pub mod analyze;
pub mod report;
pub mod run;
pub mod splits;
pub mod sweep;
