//! Performance figures of a run. Every formula is stated where it is computed; percentages are in
//! percent (12.5 means 12.5 %). Crypto trades around the clock, so a year is 365.25 days of bars.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use crate::portfolio::Trade;

/// Seconds in a year of 365.25 days.
pub const YEAR_SECONDS: f64 = 365.25 * 86_400.0;

/// The figures of a finished run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// (final equity / initial cash − 1) × 100.
    pub total_return_pct: f64,
    /// ((final / initial)^(1 / years) − 1) × 100, years = bars × timeframe / 365.25 days (at most
    /// the largest float: annualising a few hours can be astronomically large).
    pub cagr_pct: f64,
    /// mean(r) / stdev(r) × √(bars per year), r the per-bar returns of equity (sample stdev),
    /// the first from the initial cash to the first close.
    pub sharpe: Option<f64>,
    /// mean(r) / √(mean(min(r, 0)²)) × √(bars per year).
    pub sortino: Option<f64>,
    /// max over t of (peak before t − equity at t) / peak × 100.
    pub max_drawdown_pct: f64,
    /// Closed trades with pnl > 0 / closed trades × 100 (0 with no closed trade).
    pub win_rate_pct: f64,
    /// Sum of winning pnl / |sum of losing pnl| over closed trades; absent with no loss.
    pub profit_factor: Option<f64>,
    /// Trades entered (an open one included).
    pub trades: u64,
    /// Bars that closed with a position / all bars × 100.
    pub exposure_pct: f64,
}

/// Running statistics of an equity curve, fed one close at a time: what the metrics need,
/// in O(1) memory, so the backtest loop need not keep the curve.
#[derive(Clone, Debug, PartialEq)]
pub struct EquityStats {
    bars: u64,
    previous: f64,
    sum: f64,
    sum_sq: f64,
    down_sq: f64,
    peak: f64,
    max_drawdown: f64,
}

impl EquityStats {
    /// Statistics of a curve that starts from `initial` equity.
    pub fn new(initial: f64) -> Self {
        Self {
            bars: 0,
            previous: initial,
            sum: 0.0,
            sum_sq: 0.0,
            down_sq: 0.0,
            peak: initial,
            max_drawdown: 0.0,
        }
    }

    /// Adds the equity at the next bar's close.
    #[inline(always)]
    pub fn push(&mut self, equity: f64) {
        self.bars += 1;
        // An unchanged equity is a zero return: it adds nothing to the sums or the drawdown.
        if equity == self.previous {
            return;
        }
        let r = if self.previous == 0.0 { 0.0 } else { equity / self.previous - 1.0 };
        self.sum += r;
        self.sum_sq += r * r;
        if r < 0.0 {
            self.down_sq += r * r;
        }
        self.previous = equity;
        if equity > self.peak {
            self.peak = equity;
        } else if equity < self.peak * (1.0 - self.max_drawdown) {
            self.max_drawdown = (self.peak - equity) / self.peak;
        }
    }

    /// Statistics of a whole curve.
    pub fn of(initial: f64, curve: &[f64]) -> Self {
        let mut stats = Self::new(initial);
        for &e in curve {
            stats.push(e);
        }
        stats
    }

    /// Bars seen.
    pub fn bars(&self) -> u64 {
        self.bars
    }
}

/// What the metrics are computed from.
pub struct MetricsInput<'a> {
    /// Cash at the start.
    pub initial_cash: Decimal,
    /// Exact equity at the end.
    pub final_equity: Decimal,
    /// Statistics of the equity at each bar's close.
    pub stats: &'a EquityStats,
    /// Seconds per bar.
    pub bar_seconds: u64,
    /// Round trips.
    pub trades: &'a [Trade],
    /// Share of bars exposed, 0–1.
    pub exposure: f64,
}

/// Computes every figure.
pub fn compute(input: &MetricsInput<'_>) -> Metrics {
    let stats = input.stats;
    let ratio = if input.initial_cash.is_zero() {
        1.0
    } else {
        (input.final_equity / input.initial_cash).to_f64().unwrap_or(1.0)
    };
    let years = stats.bars as f64 * input.bar_seconds as f64 / YEAR_SECONDS;
    let cagr_pct = if years <= 0.0 {
        0.0
    } else if ratio <= 0.0 {
        -100.0
    } else {
        // Annualising a span of hours can overflow; the figure stays a (huge) finite number so
        // that JSON and the resource status can carry it.
        ((ratio.powf(1.0 / years) - 1.0) * 100.0).min(f64::MAX)
    };
    let bars_per_year = YEAR_SECONDS / input.bar_seconds.max(1) as f64;
    let (sharpe, sortino) = risk_ratios(stats, bars_per_year);
    let closed: Vec<f64> = input.trades.iter().filter_map(|t| t.pnl.and_then(|p| p.to_f64())).collect();
    let wins = closed.iter().filter(|&&p| p > 0.0).count();
    let gross_profit: f64 = closed.iter().filter(|&&p| p > 0.0).sum();
    let gross_loss: f64 = -closed.iter().filter(|&&p| p < 0.0).sum::<f64>();
    Metrics {
        total_return_pct: (ratio - 1.0) * 100.0,
        cagr_pct,
        sharpe,
        sortino,
        max_drawdown_pct: stats.max_drawdown * 100.0,
        win_rate_pct: if closed.is_empty() { 0.0 } else { wins as f64 / closed.len() as f64 * 100.0 },
        profit_factor: (gross_loss > 0.0).then(|| gross_profit / gross_loss),
        trades: input.trades.len() as u64,
        exposure_pct: input.exposure * 100.0,
    }
}

/// Sharpe: mean / sample stdev of the per-bar returns; Sortino: mean / downside deviation
/// √(Σ min(r, 0)² / n); both × √(bars per year). The variance is Σr²/n − mean², scaled by
/// n / (n − 1).
fn risk_ratios(stats: &EquityStats, bars_per_year: f64) -> (Option<f64>, Option<f64>) {
    let n = stats.bars as f64;
    if stats.bars < 2 {
        return (None, None);
    }
    let mean = stats.sum / n;
    let variance = (stats.sum_sq / n - mean * mean) * n / (n - 1.0);
    let sd = variance.max(0.0).sqrt();
    let dd = (stats.down_sq / n).sqrt();
    let annual = bars_per_year.sqrt();
    let ratio = |x: f64| (x > 1e-300 && x.is_finite()).then(|| mean / x * annual).filter(|v| v.is_finite());
    (ratio(sd), ratio(dd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(pnl: Option<i64>) -> Trade {
        Trade {
            entry_time: 0,
            exit_time: pnl.map(|_| 1),
            entry_price: Decimal::ONE,
            exit_price: pnl.map(|_| Decimal::ONE),
            quantity: Decimal::ONE,
            pnl: pnl.map(Decimal::from),
            fees: Decimal::ZERO,
        }
    }

    fn compute_for(equity: &[f64], trades: &[Trade], bar_seconds: u64) -> Metrics {
        compute_with(
            equity,
            trades,
            bar_seconds,
            Decimal::try_from(*equity.last().unwrap_or(&100.0)).unwrap_or_default(),
        )
    }

    fn compute_with(equity: &[f64], trades: &[Trade], bar_seconds: u64, final_equity: Decimal) -> Metrics {
        let stats = EquityStats::of(100.0, equity);
        compute(&MetricsInput {
            initial_cash: Decimal::from(100),
            final_equity,
            stats: &stats,
            bar_seconds,
            trades,
            exposure: 0.5,
        })
    }

    #[test]
    fn drawdown_is_measured_from_the_running_peak() {
        // 100 → 120 → 90 → 130 → 117: worst fall 120→90 = 25 %.
        let m = compute_for(&[120.0, 90.0, 130.0, 117.0], &[], 3600);
        assert!((m.max_drawdown_pct - 25.0).abs() < 1e-12);
        assert!((m.total_return_pct - 17.0).abs() < 1e-9);
        assert_eq!(m.exposure_pct, 50.0);
    }

    #[test]
    fn sharpe_and_sortino_match_a_hand_computation() {
        // Equity 100 → 110 → 99 → 108.9: returns +0.1, −0.1, +0.1.
        // mean = 0.1/3; sample sd = sqrt(((2/15)^2*2 + (4/15)^2... computed below); one bar = one day.
        let equity = [110.0, 99.0, 108.9];
        let m = compute_for(&equity, &[], 86_400);
        let r = [0.1, -0.1, 0.1];
        let mean: f64 = r.iter().sum::<f64>() / 3.0;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let dd = (0.01f64 / 3.0).sqrt();
        let annual = 365.25f64.sqrt();
        assert!((m.sharpe.expect("defined") - mean / sd * annual).abs() < 1e-9);
        assert!((m.sortino.expect("defined") - mean / dd * annual).abs() < 1e-9);
        // Hand values: mean 0.0333…, sd 0.11547, Sharpe = 0.288675 × 19.1116 = 5.5171
        assert!((m.sharpe.expect("defined") - 5.517_1).abs() < 1e-3);
    }

    #[test]
    fn flat_equity_has_no_sharpe_and_no_drawdown() {
        let m = compute_for(&[100.0; 10], &[], 3600);
        assert_eq!((m.sharpe, m.sortino), (None, None));
        assert_eq!(m.max_drawdown_pct, 0.0);
        assert_eq!(m.cagr_pct, 0.0);
    }

    #[test]
    fn cagr_compounds_over_the_span_of_the_bars() {
        // 730.5 daily bars = two years; ×1.21 → 10 % a year.
        let mut equity = vec![100.0; 730];
        equity.push(121.0);
        let m = compute_with(&equity, &[], 86_400, Decimal::from(121));
        let years = 731.0 / 365.25;
        assert!((m.cagr_pct - (1.21f64.powf(1.0 / years) - 1.0) * 100.0).abs() < 1e-9);
    }

    #[test]
    fn cagr_of_a_tiny_span_stays_finite() {
        let m = compute_with(&[100.0, 1e6], &[], 60, Decimal::from(1_000_000));
        assert!(m.cagr_pct.is_finite() && m.cagr_pct > 1e300, "{}", m.cagr_pct);
    }

    #[test]
    fn win_rate_and_profit_factor_count_closed_trades_only() {
        let trades = [trade(Some(30)), trade(Some(-10)), trade(Some(-5)), trade(Some(15)), trade(None)];
        let m = compute_for(&[100.0, 130.0], &trades, 3600);
        assert_eq!(m.trades, 5);
        assert_eq!(m.win_rate_pct, 50.0);
        assert_eq!(m.profit_factor, Some(3.0));
        let no_loss = compute_for(&[100.0, 130.0], &[trade(Some(30))], 3600);
        assert_eq!((no_loss.profit_factor, no_loss.win_rate_pct), (None, 100.0));
        let none = compute_for(&[100.0, 100.0], &[], 3600);
        assert_eq!((none.win_rate_pct, none.trades), (0.0, 0));
    }
}
