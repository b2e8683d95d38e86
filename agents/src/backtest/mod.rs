//! Running a Backtest manifest: load the candles, build the strategy, simulate each symbol and
//! compute the results. The same code runs for `kuant backtest -f` and in the Backtest Job.

pub mod engine;
pub mod metrics;
#[cfg(feature = "store")]
pub mod persist;
pub mod report;
pub mod sweep;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kuant_crds::Backtest;
use kuant_crds::backtest::DataSource as SourceKind;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

pub use engine::{Counters, Mark, SymbolConfig, SymbolRun, simulate};
pub use metrics::Metrics;
pub use report::{BacktestResult, Timings};

use crate::candles::Series;
use crate::data::binance::BinanceSource;
use crate::data::csv::CsvSource;
use crate::data::synthetic::SyntheticSource;
use crate::data::{DataError, DataSource, Span};
use crate::execution::{Costs, SymbolRules};
use crate::strategy::{self, AnyStrategy, StrategyError, WithStrategy};

/// Why a backtest could not run. Every variant is a problem with the input.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The candles could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The strategy parameters are wrong.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// The manifest asks for something this engine cannot do.
    #[error("{0}")]
    Unsupported(String),
}

/// Choices a caller makes beyond the manifest.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Read candles from this CSV file instead of the manifest's data source.
    pub data_override: Option<PathBuf>,
}

/// A backtest with its candles loaded, ready to simulate (possibly many times, e.g. in a sweep).
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The manifest.
    pub backtest: Backtest,
    /// Candles per symbol, in the manifest's order.
    pub series: Vec<(Arc<str>, Series)>,
    /// Seconds spent reading the data.
    pub load_seconds: f64,
}

/// Loads the candles the manifest names.
pub fn prepare(backtest: &Backtest, options: &Options) -> Result<Prepared, BacktestError> {
    let started = Instant::now();
    let spec = &backtest.spec;
    let span = Span {
        start_ms: spec.market.start.as_ref().map(|t| t.0.as_millisecond()),
        end_ms: spec.market.end.as_ref().map(|t| t.0.as_millisecond()),
    };
    let source: Box<dyn DataSource> = match (&options.data_override, spec.data.source, &spec.data.csv) {
        (Some(path), _, _) => Box::new(CsvSource::new(path)),
        (None, SourceKind::Csv, Some(csv)) => Box::new(CsvSource::new(&csv.path)),
        (None, SourceKind::Csv, None) => {
            return Err(BacktestError::Unsupported("data.source is csv but data.csv.path is missing".into()));
        }
        (None, SourceKind::Synthetic, _) => {
            Box::new(SyntheticSource::new(spec.data.synthetic.clone().unwrap_or_default()))
        }
        (None, SourceKind::Exchange, _) => {
            let exchange = spec.data.exchange.as_ref();
            let name = exchange.map_or("binance", |e| e.name.as_str());
            if name != "binance" {
                return Err(BacktestError::Unsupported(format!(
                    "data.exchange.name {name:?}: kuant downloads candles from binance (or a service speaking its API via baseUrl)"
                )));
            }
            let base_url = exchange.and_then(|e| e.base_url.as_deref());
            Box::new(BinanceSource::new(base_url, BinanceSource::default_cache_dir()))
        }
    };
    let file_backed = options.data_override.is_some() || spec.data.source == SourceKind::Csv;
    if file_backed && spec.market.symbols.len() > 1 {
        return Err(BacktestError::Unsupported(format!(
            "a CSV file holds one symbol, but market.symbols lists {}: run one backtest per symbol",
            spec.market.symbols.len()
        )));
    }
    let mut series = Vec::with_capacity(spec.market.symbols.len());
    for symbol in &spec.market.symbols {
        series.push((Arc::from(symbol.as_str()), source.load(symbol, spec.market.timeframe, span)?));
    }
    Ok(Prepared { backtest: backtest.clone(), series, load_seconds: started.elapsed().as_secs_f64() })
}

/// What a run keeps beyond metrics, trades and events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// Rebuild the equity curve into [`BacktestResult::equity`].
    pub equity_curve: bool,
    /// Report the event chain in [`BacktestResult::events`] (a sweep needs only the figures).
    pub events: bool,
}

/// Runs a prepared backtest. `progress` gets (bars done, bars in all).
pub fn run(
    prepared: &Prepared,
    keep: Keep,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BacktestResult, BacktestError> {
    let spec = &prepared.backtest.spec;
    let strategy = strategy::build(spec.strategy.name, &spec.strategy.params)?;
    run_with(prepared, &strategy, keep, progress)
}

/// Runs a prepared backtest with an already-built strategy (sweeps build many).
pub fn run_with(
    prepared: &Prepared,
    strategy: &AnyStrategy,
    keep: Keep,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BacktestResult, BacktestError> {
    let spec = &prepared.backtest.spec;
    let name = prepared.backtest.metadata.name.clone().unwrap_or_else(|| "backtest".into());
    let run_id: Arc<str> =
        Arc::from(format!("{}/{}", prepared.backtest.metadata.namespace.as_deref().unwrap_or("local"), name));
    let costs = Costs::from_bps(spec.execution.fee_bps, spec.execution.slippage_bps).ok_or_else(|| {
        BacktestError::Unsupported("execution.feeBps and slippageBps must be non-negative".into())
    })?;
    let position_pct = spec.risk.as_ref().map_or(100.0, |r| r.max_position_pct);
    let position_fraction = Decimal::from_f64(position_pct / 100.0)
        .filter(|f| *f > Decimal::ZERO && *f <= Decimal::ONE)
        .ok_or_else(|| {
            BacktestError::Unsupported(format!("risk.maxPositionPct {position_pct} must be in (0, 100]"))
        })?;
    let initial_cash = spec.portfolio.initial_cash.value();
    let per_symbol_cash = initial_cash / Decimal::from(prepared.series.len().max(1));
    let total: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();

    let started = Instant::now();
    let mut runs = Vec::with_capacity(prepared.series.len());
    let mut done_before = 0u64;
    for (symbol, series) in &prepared.series {
        let cfg = SymbolConfig {
            run_id: run_id.clone(),
            symbol: symbol.clone(),
            initial_cash: per_symbol_cash,
            costs,
            rules: SymbolRules::known(&spec.market.exchange, symbol),
            fill: spec.execution.fill,
            position_fraction,
        };
        let mut report = |done: usize| progress(done_before + done as u64, total);
        runs.push(strategy.clone().with(Simulate { series, cfg: &cfg, progress: &mut report }));
        done_before += series.len() as u64;
    }
    let simulate_seconds = started.elapsed().as_secs_f64();
    if let Some((symbol, _)) = runs.iter().zip(&prepared.series).find(|(r, _)| r.out_of_range).map(|(_, s)| s)
    {
        return Err(BacktestError::Unsupported(format!(
            "{symbol}: the final equity exceeds the exact decimal range (about 7.9e28); lower portfolio.initialCash or check the prices"
        )));
    }
    let timings = Timings { load_seconds: prepared.load_seconds, simulate_seconds };
    Ok(report::assemble(prepared, &name, &run_id, initial_cash, runs, timings, keep))
}

struct Simulate<'a> {
    series: &'a Series,
    cfg: &'a SymbolConfig,
    progress: &'a mut dyn FnMut(usize),
}

impl WithStrategy for Simulate<'_> {
    type Output = SymbolRun;

    fn run<S: strategy::Strategy>(self, strategy: S) -> SymbolRun {
        simulate(self.series, strategy, self.cfg, self.progress)
    }
}
