//! The subcommands: each owns its command-line arguments and drives the library modules beside it.

pub mod analyze;
pub mod hparam_selection;
pub mod report;
pub mod run;
pub mod splits;
pub mod study;
pub mod sweep;

/// An integer option's range, checked as clap parses it: at least `min` (clap's message names the flag and
/// the range: `invalid value '0' for '--k <K>': 0 is not in 1..18446744073709551615`). Real-valued options
/// use [`vl2v::ranges`].
pub fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..)
}

/// A thread count: 0 to 1024 (more would only exhaust the machine's threads).
pub fn threads() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(0..=1024)
}
