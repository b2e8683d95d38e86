//! Subcommands that run in the foreground of a user's terminal.

pub mod backtest;
pub mod exchange_sim;
pub mod ops_api;
pub mod progress;
pub mod store;

/// Exit code for bad input: a broken manifest, bad data, a bad flag or output path.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for an internal error.
pub const EXIT_INTERNAL: u8 = 1;
