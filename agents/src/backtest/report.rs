//! The result of a backtest: what `--output json` prints and what a Backtest's status reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use kuant_crds::{StrategyName, Timeframe};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::Prepared;
use super::engine::{Counters, SymbolRun};
use super::metrics::{self, EquityStats, Metrics, MetricsInput};
use crate::events::SymbolEvent;
use crate::portfolio::Trade;

/// Wall time of the two phases of a run. The only part of a result that differs between runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Reading and checking the candles.
    pub load_seconds: f64,
    /// The simulation alone.
    pub simulate_seconds: f64,
}

/// The strategy that ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyUsed {
    /// Built-in name.
    pub name: StrategyName,
    /// Parameters as given (absent ones took defaults).
    pub params: BTreeMap<String, f64>,
}

/// A round trip with the symbol it traded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymbolTrade {
    /// Symbol traded.
    pub symbol: Arc<str>,
    /// The round trip.
    #[serde(flatten)]
    pub trade: Trade,
}

/// Everything a backtest produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BacktestResult {
    /// The Backtest's name.
    pub name: String,
    /// Run id the events carry.
    pub run_id: String,
    /// Strategy and parameters.
    pub strategy: StrategyUsed,
    /// Symbols traded.
    pub symbols: Vec<String>,
    /// Candle length.
    pub timeframe: Timeframe,
    /// Candles simulated, all symbols.
    pub candles: u64,
    /// Open time of the first candle (Unix ms).
    pub start_time: Option<i64>,
    /// Open time of the last candle (Unix ms).
    pub end_time: Option<i64>,
    /// Quote asset of cash and equity.
    pub quote_asset: String,
    /// Cash at the start.
    pub initial_cash: Decimal,
    /// Cash plus positions at the last close, exactly.
    pub final_equity: Decimal,
    /// Performance figures.
    pub metrics: Metrics,
    /// Event counts.
    pub counters: Counters,
    /// Round trips, by symbol then time; an open one has null exit and pnl.
    pub trades: Vec<SymbolTrade>,
    /// The event chain, by symbol then time.
    pub events: Vec<SymbolEvent>,
    /// Wall times.
    pub timings: Timings,
    /// Equity at each close, all symbols summed; filled only when asked for (`--equity-csv`, the
    /// store), never printed in JSON.
    #[serde(skip)]
    pub equity: Vec<(i64, f64)>,
}

/// A result without its trades and events: what the store keeps as a run's results (the trades
/// and events are stored apart). The same field names and encodings as the full JSON.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ResultSummary<'a> {
    name: &'a str,
    run_id: &'a str,
    strategy: &'a StrategyUsed,
    symbols: &'a [String],
    timeframe: &'a Timeframe,
    candles: u64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    quote_asset: &'a str,
    initial_cash: &'a Decimal,
    final_equity: &'a Decimal,
    metrics: &'a Metrics,
    counters: &'a Counters,
    timings: &'a Timings,
}

impl BacktestResult {
    /// This result without its trades and events.
    pub fn summary(&self) -> ResultSummary<'_> {
        ResultSummary {
            name: &self.name,
            run_id: &self.run_id,
            strategy: &self.strategy,
            symbols: &self.symbols,
            timeframe: &self.timeframe,
            candles: self.candles,
            start_time: self.start_time,
            end_time: self.end_time,
            quote_asset: &self.quote_asset,
            initial_cash: &self.initial_cash,
            final_equity: &self.final_equity,
            metrics: &self.metrics,
            counters: &self.counters,
            timings: &self.timings,
        }
    }

    /// The figures a Backtest's status carries (what `kubectl get bt` and the operator show).
    /// A figure that is not finite becomes 0, or absent where the field is optional: status is
    /// JSON, which has no infinity. The final equity is rounded to 8 decimal places (status
    /// amounts carry at most 12, and 15 integer digits); an equity beyond that is an error.
    pub fn status_results(&self) -> Result<kuant_crds::backtest::BacktestResults, String> {
        let equity = self.final_equity.max(Decimal::ZERO).round_dp(8).normalize();
        if equity >= Decimal::from(1_000_000_000_000_000_i64) {
            return Err(format!(
                "the final equity {equity} has more than 15 integer digits, more than a Backtest's status can hold"
            ));
        }
        let m = &self.metrics;
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let optional = |x: Option<f64>| x.filter(|v| v.is_finite());
        Ok(kuant_crds::backtest::BacktestResults {
            final_equity: equity.into(),
            total_return_pct: finite(m.total_return_pct),
            cagr_pct: finite(m.cagr_pct),
            sharpe: optional(m.sharpe),
            sortino: optional(m.sortino),
            max_drawdown_pct: finite(m.max_drawdown_pct),
            win_rate_pct: finite(m.win_rate_pct),
            profit_factor: optional(m.profit_factor),
            trades: m.trades,
            exposure_pct: finite(m.exposure_pct),
        })
    }
}

pub(super) fn assemble(
    prepared: &Prepared,
    name: &str,
    run_id: &Arc<str>,
    initial_cash: Decimal,
    runs: Vec<SymbolRun>,
    timings: Timings,
    keep: super::Keep,
) -> BacktestResult {
    let with_curve = keep.equity_curve;
    let spec = &prepared.backtest.spec;
    let initial_f = initial_cash.to_f64().unwrap_or(0.0);
    // One symbol: the loop's own statistics; several: those of the summed curve.
    let (stats, equity) = match runs.as_slice() {
        [run] if !with_curve => (run.stats.clone(), Vec::new()),
        [run] => {
            let series = &prepared.series[0].1;
            (run.stats.clone(), series.times().iter().copied().zip(run.equity_curve(series)).collect())
        }
        _ => {
            let merged = merge_equity(prepared, &runs, initial_cash);
            let values: Vec<f64> = merged.iter().map(|&(_, e)| e).collect();
            (EquityStats::of(initial_f, &values), if with_curve { merged } else { Vec::new() })
        }
    };
    let candles: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();
    let exposed: u64 = runs.iter().map(|r| r.exposed_bars).sum();
    let final_equity: Decimal = runs.iter().map(|r| r.final_equity).sum();
    let per_symbol: Vec<Vec<Trade>> = runs.iter().map(|r| r.book.trades()).collect();
    let trades: Vec<Trade> = per_symbol.iter().flatten().cloned().collect();
    let symbol_trades: Vec<SymbolTrade> = per_symbol
        .into_iter()
        .zip(&prepared.series)
        .flat_map(|(trades, (symbol, _))| {
            trades.into_iter().map(|trade| SymbolTrade { symbol: symbol.clone(), trade })
        })
        .collect();
    let metrics = metrics::compute(&MetricsInput {
        initial_cash,
        final_equity,
        stats: &stats,
        bar_seconds: spec.market.timeframe.seconds(),
        trades: &trades,
        exposure: if candles == 0 { 0.0 } else { exposed as f64 / candles as f64 },
    });
    let mut counters = Counters::default();
    for r in &runs {
        counters += r.counters;
    }
    let times = prepared.series.iter().map(|(_, s)| s.times());
    BacktestResult {
        name: name.to_owned(),
        run_id: run_id.to_string(),
        strategy: StrategyUsed { name: spec.strategy.name, params: spec.strategy.params.clone() },
        symbols: spec.market.symbols.clone(),
        timeframe: spec.market.timeframe,
        candles,
        start_time: times.clone().filter_map(|t| t.first().copied()).min(),
        end_time: times.filter_map(|t| t.last().copied()).max(),
        quote_asset: spec.portfolio.quote_asset.clone(),
        initial_cash,
        final_equity,
        metrics,
        counters,
        trades: symbol_trades,
        events: if !keep.events {
            Vec::new()
        } else {
            runs.into_iter()
                .zip(&prepared.series)
                .flat_map(|(r, (symbol, _))| {
                    let ids = r.ids;
                    r.events().into_iter().map(move |event| SymbolEvent {
                        symbol: symbol.clone(),
                        ids,
                        event,
                    })
                })
                .collect()
        },
        timings,
        equity,
    }
}

/// Sums the symbols' equity curves on the union of their times; a symbol counts its last known
/// equity (its starting cash before its first bar).
fn merge_equity(prepared: &Prepared, runs: &[SymbolRun], initial_cash: Decimal) -> Vec<(i64, f64)> {
    let curves: Vec<Vec<f64>> =
        runs.iter().zip(&prepared.series).map(|(r, (_, s))| r.equity_curve(s)).collect();
    let start_each = (initial_cash / Decimal::from(runs.len().max(1))).to_f64().unwrap_or(0.0);
    let mut times: Vec<i64> = prepared.series.iter().flat_map(|(_, s)| s.times().iter().copied()).collect();
    times.sort_unstable();
    times.dedup();
    let mut cursor = vec![0usize; runs.len()];
    let mut last = vec![start_each; runs.len()];
    times
        .into_iter()
        .map(|t| {
            for (k, ((_, series), curve)) in prepared.series.iter().zip(&curves).enumerate() {
                let ts = series.times();
                while cursor[k] < ts.len() && ts[cursor[k]] <= t {
                    last[k] = curve[cursor[k]];
                    cursor[k] += 1;
                }
            }
            (t, last.iter().sum())
        })
        .collect()
}

/// Formats Unix milliseconds as `2024-01-31 13:00 UTC`.
pub fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

impl BacktestResult {
    /// A readable summary table.
    pub fn table(&self) -> String {
        let m = &self.metrics;
        let q = &self.quote_asset;
        let params: Vec<String> = self.strategy.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let open = self.trades.iter().filter(|t| t.trade.exit_time.is_none()).count();
        let ratio = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let span = match (self.start_time, self.end_time) {
            (Some(a), Some(b)) => format!(" ({} → {})", utc(a), utc(b)),
            _ => String::new(),
        };
        let rows: Vec<(&str, String)> = vec![
            ("strategy", format!("{} {}", self.strategy.name, params.join(" "))),
            ("market", format!("{} {}", self.symbols.join(", "), self.timeframe)),
            ("candles", format!("{}{span}", self.candles)),
            ("initial cash", format!("{} {q}", self.initial_cash.normalize())),
            ("final equity", format!("{} {q}", self.final_equity.round_dp(2))),
            ("total return", format!("{:.2} %", m.total_return_pct)),
            ("CAGR", format!("{:.2} %", m.cagr_pct)),
            ("Sharpe", ratio(m.sharpe)),
            ("Sortino", ratio(m.sortino)),
            ("max drawdown", format!("{:.2} %", m.max_drawdown_pct)),
            ("win rate", format!("{:.2} %", m.win_rate_pct)),
            ("profit factor", ratio(m.profit_factor)),
            ("trades", if open > 0 { format!("{} ({open} open)", m.trades) } else { m.trades.to_string() }),
            ("exposure", format!("{:.2} %", m.exposure_pct)),
            (
                "events",
                format!(
                    "{} signals, {} orders, {} fills, {} blocked",
                    self.counters.signals, self.counters.orders, self.counters.fills, self.counters.blocked
                ),
            ),
            (
                "time",
                format!(
                    "load {:.3} s, simulate {:.3} s",
                    self.timings.load_seconds, self.timings.simulate_seconds
                ),
            ),
        ];
        let mut out = format!("Backtest {}\n", self.name);
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<14} {v}");
        }
        out
    }

    /// The equity curve as CSV: `timestamp_ms,equity`.
    pub fn equity_csv(&self) -> String {
        let mut out = String::with_capacity(self.equity.len() * 24 + 20);
        out.push_str("timestamp_ms,equity\n");
        for (t, e) in &self.equity {
            let _ = writeln!(out, "{t},{e:.8}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kuant_crds::Backtest;

    use crate::backtest::{Keep, Options, prepare, run};

    #[test]
    fn status_results_fit_the_status_schema_even_without_lot_rounding() {
        // An exchange kuant knows no rules for: quantities keep 18 decimals, and so would equity.
        let text = include_str!("../../../examples/backtests/btc-sma-crossover.yaml");
        let mut bt: Backtest = kuant_crds::manifest::parse(text, "example").expect("example");
        bt.spec.market.exchange = "elsewhere".into();
        if let Some(s) = bt.spec.data.synthetic.as_mut() {
            s.bars = 3000;
        }
        let prepared = prepare(&bt, &Options::default()).expect("data");
        let result = run(&prepared, Keep::default(), &mut |_, _| {}).expect("run");
        assert!(result.final_equity.scale() > 8, "the test needs a long fraction: {}", result.final_equity);
        let results = result.status_results().expect("fits");
        // Through JSON and back with the status type's own checks (at most 12 decimals).
        let json = serde_json::to_string(&results).expect("json");
        let back: kuant_crds::backtest::BacktestResults = serde_json::from_str(&json).expect("valid status");
        assert_eq!(back.final_equity.value(), result.final_equity.round_dp(8).normalize());
    }

    #[test]
    fn the_summary_is_the_full_json_but_trades_and_events() {
        let text = include_str!("../../../examples/backtests/btc-sma-crossover.yaml");
        let bt: Backtest = kuant_crds::manifest::parse(text, "example").expect("example");
        let prepared = prepare(&bt, &Options::default()).expect("data");
        let result = run(&prepared, Keep { equity_curve: false, events: true }, &mut |_, _| {}).expect("run");
        let mut full = serde_json::to_value(&result).expect("json");
        let fields = full.as_object_mut().expect("object");
        assert!(fields.remove("trades").is_some() && fields.remove("events").is_some());
        assert_eq!(serde_json::to_value(result.summary()).expect("json"), full, "every other field, alike");
    }
}
