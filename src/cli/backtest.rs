//! `kuant backtest -f FILE`: run a Backtest manifest locally and print its results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use kuant_agents::backtest::{self, Keep, Options};
use kuant_crds::Backtest;

use super::progress::ProgressBar;
use super::{EXIT_BAD_INPUT, EXIT_INTERNAL};

/// Flags of `kuant backtest`.
#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// The Backtest manifest (YAML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// table (readable) or json (the full result: metrics, trades, events, timings).
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Write the equity curve (`timestamp_ms,equity`) to this CSV file.
    #[arg(long, value_name = "PATH")]
    pub equity_csv: Option<PathBuf>,
    /// Read candles from this CSV file instead of the manifest's data source.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
}

/// How results are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    /// The full result as JSON.
    Json,
}

/// Runs the command; exit codes: 0 ok, 2 bad input, 1 internal error.
pub fn run(args: &BacktestArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("cannot read {}: {e}", args.file.display())),
    };
    let manifest = match kuant_crds::manifest::parse::<Backtest>(&text, &args.file.display().to_string()) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_BAD_INPUT, e.to_string()),
    };
    let options = Options { data_override: args.data.clone() };
    let prepared = match backtest::prepare(&manifest, &options) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_BAD_INPUT, e.to_string()),
    };
    let total: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();
    let mut bar = ProgressBar::new(total, 2_000_000);
    let keep = Keep { equity_curve: args.equity_csv.is_some() };
    let result = backtest::run(&prepared, keep, &mut |done, total| bar.update(done, total));
    bar.finish();
    let result = match result {
        Ok(r) => r,
        Err(e) => return fail(EXIT_BAD_INPUT, e.to_string()),
    };
    if let Some(path) = &args.equity_csv
        && let Err(e) = std::fs::write(path, result.equity_csv())
    {
        return fail(EXIT_BAD_INPUT, format!("cannot write the equity curve to {}: {e}", path.display()));
    }
    let out = match args.output {
        OutputFormat::Table => result.table(),
        OutputFormat::Json => match serde_json::to_string_pretty(&result) {
            Ok(json) => json + "\n",
            Err(e) => return fail(EXIT_INTERNAL, format!("cannot encode the result as JSON: {e}")),
        },
    };
    print!("{out}");
    ExitCode::SUCCESS
}

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
