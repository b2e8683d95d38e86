//! `kuant backtest -f FILE`: run a Backtest manifest locally and print its results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use kuant_agents::backtest::sweep::{self, Axis, RankBy, SweepResult};
use kuant_agents::backtest::{self, Keep, Options};
use kuant_crds::Backtest;

use super::progress::ProgressBar;
use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

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
    /// Sweep a strategy parameter: `name=FROM..TO[:STEP]` or `name=A,B,C`; repeat for a grid.
    #[arg(long, value_name = "AXIS")]
    pub sweep: Vec<Axis>,
    /// With --sweep: the metric to rank by: sharpe, sortino, return, cagr, drawdown (smallest
    /// first), profit-factor or win-rate.
    #[arg(long, default_value = "sharpe")]
    pub by: RankBy,
    /// With --sweep: how many of the best combinations to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// With --sweep: worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Save the run (results, events, equity curve, trades) to this store: postgres://… or a SQLite file.
    /// Default: `KUANT_DATABASE_URL`, else `~/.local/share/kuant/kuant.db`.
    #[arg(long, value_name = "URL", conflicts_with = "no_store")]
    pub store: Option<String>,
    /// Do not save the run.
    #[arg(long)]
    pub no_store: bool,
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
    // Loading can take long too (a big file, a download, millions of synthetic candles).
    let mut loading = ProgressBar::new(u64::MAX, 0);
    loading.status(&format!("loading {} candles…", manifest.spec.market.symbols.join(", ")));
    let prepared = backtest::prepare(&manifest, &options);
    loading.finish();
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return fail(EXIT_BAD_INPUT, e.to_string()),
    };
    if !args.sweep.is_empty() {
        return run_sweep(args, &prepared);
    }
    let total: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();
    let mut bar = ProgressBar::new(total, 2_000_000);
    let keep = Keep { equity_curve: args.equity_csv.is_some() || !args.no_store, events: true };
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
    let printed = write_stdout(&out);
    if args.no_store || printed != ExitCode::SUCCESS {
        return printed;
    }
    let url = match super::store::location(args.store.as_deref()) {
        Ok(url) => url,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let spec = serde_json::to_value(&manifest.spec).unwrap_or(serde_json::Value::Null);
    let target = kuant_agents::backtest::persist::Target { url: &url, namespace: None, spec: &spec };
    match kuant_agents::backtest::persist::save(&target, &result) {
        Ok(saved) => {
            eprintln!(
                "saved to {}: {} events, {} equity points, {} trades in {:.2} s{}",
                kuant_store::redact(&url),
                saved.events,
                saved.equity_points,
                saved.trades,
                saved.seconds,
                if saved.pruned_events > 0 {
                    format!(" ({} events past retention deleted)", saved.pruned_events)
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_INTERNAL, format!("the run is not saved: {e} (--no-store skips saving)")),
    }
}

fn run_sweep(args: &BacktestArgs, prepared: &backtest::Prepared) -> ExitCode {
    let result = match sweep::sweep(prepared, &args.sweep, args.by, args.threads) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_BAD_INPUT, e.to_string()),
    };
    if result.points.is_empty() {
        let why = result.skip_reason.as_deref().unwrap_or("no combination");
        return fail(EXIT_BAD_INPUT, format!("every combination of the sweep was refused: {why}"));
    }
    let out = match args.output {
        OutputFormat::Table => sweep_table(&result, args.top),
        OutputFormat::Json => {
            let mut best = result.clone();
            best.points.truncate(args.top);
            match serde_json::to_string_pretty(&best) {
                Ok(json) => json + "\n",
                Err(e) => return fail(EXIT_INTERNAL, format!("cannot encode the sweep as JSON: {e}")),
            }
        }
    };
    write_stdout(&out)
}

fn sweep_table(r: &SweepResult, top: usize) -> String {
    use std::fmt::Write as _;
    let ran = r.combinations - r.skipped;
    let mut out = format!(
        "Sweep: {} combinations ({ran} ran, {} refused) in {:.2} s on {} threads, ranked by {}\n",
        r.combinations,
        r.skipped,
        r.seconds,
        r.threads,
        serde_json::to_value(r.ranked_by)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    if let Some(why) = &r.skip_reason {
        let _ = writeln!(out, "  refused, e.g.: {why}");
    }
    let _ = writeln!(
        out,
        "  {:>4}  {:<28} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "rank", "params", "return%", "sharpe", "sortino", "maxdd%", "trades"
    );
    let ratio = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
    for (i, p) in r.points.iter().take(top).enumerate() {
        let params: Vec<String> = p.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let m = &p.metrics;
        let _ = writeln!(
            out,
            "  {:>4}  {:<28} {:>10.2} {:>8} {:>8} {:>8.2} {:>7}",
            i + 1,
            params.join(" "),
            m.total_return_pct,
            ratio(m.sharpe),
            ratio(m.sortino),
            m.max_drawdown_pct,
            m.trades
        );
    }
    out
}

/// Prints the output; a reader that went away (`| head`) is not an error.
fn write_stdout(out: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_INTERNAL, format!("cannot write the output: {e}")),
    }
}
