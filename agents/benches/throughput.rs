//! Backtest throughput: the canonical strategy (long-only SMA 10/30 crossover, next-open fills,
//! 10 bps fee) on 1,000,000 hourly bars built from `../shared/data/coinbase_btcusd_1h.csv` by
//! mirror tiling (forward, time-reversed, forward, …; continuous at every seam). It measures the
//! simulation alone — loading and tiling are reported apart — over several runs and prints the
//! median bars per second and the process's peak memory. A program that prints figures, not a
//! timed test: `cargo bench -p kuant-agents --bench throughput`
//! (`KUANT_BENCH_CANONICAL_ONLY=1` skips the other strategies, e.g. under a profiler).

use std::path::PathBuf;
use std::time::Instant;

use kuant_agents::backtest::{SymbolConfig, simulate};
use kuant_agents::candles::{Bar, Series};
use kuant_agents::data::csv::CsvSource;
use kuant_agents::data::{DataSource, Span};
use kuant_agents::execution::{Costs, SymbolRules};
use kuant_agents::strategy::{self, Strategy};
use kuant_crds::backtest::FillModel;
use kuant_crds::{StrategyName, Timeframe};
use rust_decimal::Decimal;

const BARS: usize = 1_000_000;
const RUNS: usize = 21;
fn main() {
    let dir = std::env::var_os("KUANT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let path = dir.join("coinbase_btcusd_1h.csv");
    let started = Instant::now();
    let source = match CsvSource::new(&path).load("BTC-USD", Timeframe::H1, Span::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot load the benchmark data: {e} (set KUANT_SHARED_DATA to the folder holding it)");
            std::process::exit(1);
        }
    };
    let load = started.elapsed();
    let started = Instant::now();
    let series = mirror_tile(&source, BARS);
    let tile = started.elapsed();
    println!(
        "kuant backtest throughput: canonical sma-crossover 10/30, long-only, next-open fills, 10 bps fee"
    );
    println!(
        "series: {} bars, mirror-tiled from {} ({} rows; load {:.3} s, tile {:.3} s)",
        series.len(),
        path.display(),
        source.len(),
        load.as_secs_f64(),
        tile.as_secs_f64()
    );

    let cfg = SymbolConfig {
        run_id: "bench".into(),
        symbol: "BTC-USD".into(),
        initial_cash: Decimal::from(10_000),
        costs: Costs::from_bps(10.0, 0.0).expect("valid costs"),
        rules: SymbolRules::unrestricted(),
        fill: FillModel::NextOpen,
        position_fraction: Decimal::ONE,
    };
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let strategy = strategy::SmaCrossover::new(10, 30);
        let started = Instant::now();
        let run = simulate(&series, strategy, &cfg, &mut |_| {});
        times.push(started.elapsed().as_secs_f64());
        last = Some(run);
    }
    times.sort_by(f64::total_cmp);
    let median = times[RUNS / 2];
    let run = last.expect("at least one run");
    println!(
        "simulate: {RUNS} runs, median {:.2} ms -> {:.1} M bars/s (fastest {:.2} ms, slowest {:.2} ms)",
        median * 1e3,
        series.len() as f64 / median / 1e6,
        times[0] * 1e3,
        times[RUNS - 1] * 1e3
    );
    println!(
        "work per run: {} trades, {} signal chains recorded ({} events), final equity {}",
        run.book.trade_count(),
        run.chains.len(),
        run.events().len(),
        run.final_equity.round_dp(2)
    );
    drop(run);

    if std::env::var_os("KUANT_BENCH_CANONICAL_ONLY").is_some() {
        return;
    }
    for name in [StrategyName::EmaCrossover, StrategyName::RsiMeanReversion, StrategyName::DonchianBreakout] {
        let built = strategy::build(name, &Default::default()).expect("default parameters");
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            let r = built.clone().with(Once { series: &series, cfg: &cfg });
            best = best.min(started.elapsed().as_secs_f64());
            std::hint::black_box(r);
        }
        println!(
            "other strategies: {name} (defaults) fastest of 5: {:.1} M bars/s",
            series.len() as f64 / best / 1e6
        );
    }
    match peak_memory_kib() {
        Some(kib) => println!("peak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak memory: not available on this platform"),
    }
}

struct Once<'a> {
    series: &'a Series,
    cfg: &'a SymbolConfig,
}

impl strategy::WithStrategy for Once<'_> {
    type Output = usize;
    fn run<S: Strategy>(self, s: S) -> usize {
        simulate(self.series, s, self.cfg, &mut |_| {}).chains.len()
    }
}

/// Forward, time-reversed, forward, … until `n` bars, renumbered hourly. A reversed bar swaps open
/// and close, so each segment starts where the previous one ended.
fn mirror_tile(source: &Series, n: usize) -> Series {
    let mut out = Series::with_capacity(n);
    let start = source.bar(0).time_ms;
    let len = source.len();
    let mut forward = true;
    while out.len() < n {
        for k in 0..len {
            if out.len() == n {
                break;
            }
            let b = if forward { source.bar(k) } else { reversed(source.bar(len - 1 - k)) };
            out.push(Bar { time_ms: start + out.len() as i64 * 3_600_000, ..b });
        }
        forward = !forward;
    }
    out
}

fn reversed(b: Bar) -> Bar {
    Bar { open: b.close, close: b.open, ..b }
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
