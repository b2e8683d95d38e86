//! Parameter sweeps: run one backtest over a grid of strategy parameters, on every core, and rank
//! the results by a metric.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::metrics::Metrics;
use super::{BacktestError, Keep, Prepared, run_with};
use crate::strategy;

/// One parameter's values: `name=a..b` (step 1), `name=a..b:step` or `name=a,b,c`.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Parameter name.
    pub name: String,
    /// Values, in order.
    pub values: Vec<f64>,
}

/// Most combinations one sweep may hold.
pub const MAX_COMBINATIONS: usize = 1_000_000;

impl std::str::FromStr for Axis {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("--sweep {text:?}: {why} (expected name=FROM..TO[:STEP] or name=A,B,C)");
        let (name, spec) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("no parameter name"));
        }
        let number = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(&format!("{s:?} is not a number")))
        };
        let values = if let Some((from, rest)) = spec.split_once("..") {
            let (to, step) = match rest.split_once(':') {
                Some((to, step)) => (number(to)?, number(step)?),
                None => (number(rest)?, 1.0),
            };
            let from = number(from)?;
            if step <= 0.0 {
                return Err(bad("the step must be positive"));
            }
            if to < from {
                return Err(bad("the range ends before it starts"));
            }
            let count = ((to - from) / step + 1e-9).floor() + 1.0;
            if count > MAX_COMBINATIONS as f64 {
                return Err(bad(&format!("{count} values are too many")));
            }
            (0..count as usize).map(|k| from + k as f64 * step).collect()
        } else {
            spec.split(',').map(number).collect::<Result<Vec<_>, _>>()?
        };
        if values.is_empty() {
            return Err(bad("no values"));
        }
        Ok(Self { name: name.to_owned(), values })
    }
}

/// The metric results are ranked by (higher is better, except drawdown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankBy {
    /// Sharpe ratio (default).
    #[default]
    Sharpe,
    /// Sortino ratio.
    Sortino,
    /// Total return.
    Return,
    /// CAGR.
    Cagr,
    /// Max drawdown (lower is better).
    Drawdown,
    /// Profit factor.
    ProfitFactor,
    /// Win rate.
    WinRate,
}

impl std::str::FromStr for RankBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "sharpe" => Self::Sharpe,
            "sortino" => Self::Sortino,
            "return" => Self::Return,
            "cagr" => Self::Cagr,
            "drawdown" => Self::Drawdown,
            "profit-factor" => Self::ProfitFactor,
            "win-rate" => Self::WinRate,
            other => {
                return Err(format!(
                    "unknown metric {other:?} (one of: sharpe, sortino, return, cagr, drawdown, profit-factor, win-rate)"
                ));
            }
        })
    }
}

impl RankBy {
    /// The value to sort by, higher is better; absent metrics rank last.
    fn score(self, m: &Metrics) -> f64 {
        let v = match self {
            Self::Sharpe => m.sharpe,
            Self::Sortino => m.sortino,
            Self::Return => Some(m.total_return_pct),
            Self::Cagr => Some(m.cagr_pct),
            Self::Drawdown => Some(-m.max_drawdown_pct),
            Self::ProfitFactor => m.profit_factor,
            Self::WinRate => Some(m.win_rate_pct),
        };
        v.filter(|x| !x.is_nan()).unwrap_or(f64::NEG_INFINITY)
    }
}

/// One combination's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepPoint {
    /// All strategy parameters of the run (manifest ones with the swept ones on top).
    pub params: BTreeMap<String, f64>,
    /// Its figures.
    pub metrics: Metrics,
    /// Final equity, exactly.
    pub final_equity: rust_decimal::Decimal,
}

/// What a sweep found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepResult {
    /// Combinations in the grid.
    pub combinations: usize,
    /// Combinations the strategy refused (e.g. fast >= slow), with one example reason.
    pub skipped: usize,
    /// Why the first skipped combination was refused.
    pub skip_reason: Option<String>,
    /// Worker threads used.
    pub threads: usize,
    /// Wall time of the whole sweep.
    pub seconds: f64,
    /// Metric ranked by.
    pub ranked_by: RankBy,
    /// Every run that happened, best first.
    pub points: Vec<SweepPoint>,
}

/// Runs every combination of `axes` over `prepared`, on `threads` workers (0 = all cores).
pub fn sweep(
    prepared: &Prepared,
    axes: &[Axis],
    rank_by: RankBy,
    threads: usize,
) -> Result<SweepResult, BacktestError> {
    let combinations =
        axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.values.len())).filter(|&n| n <= MAX_COMBINATIONS);
    let Some(combinations) = combinations else {
        return Err(BacktestError::Unsupported(format!(
            "the sweep grid holds more than {MAX_COMBINATIONS} combinations"
        )));
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // More workers than a few per core only costs memory and scheduling.
    let threads = if threads == 0 { cores } else { threads.min(4 * cores) };
    let threads = threads.clamp(1, combinations.max(1));
    let spec = &prepared.backtest.spec;
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let outcome: Mutex<(Vec<SweepPoint>, usize, Option<String>)> =
        Mutex::new((Vec::with_capacity(combinations), 0, None));
    let failure: Mutex<Option<BacktestError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= combinations {
                        break;
                    }
                    let mut params = spec.strategy.params.clone();
                    let mut rest = k;
                    for axis in axes.iter().rev() {
                        params.insert(axis.name.clone(), axis.values[rest % axis.values.len()]);
                        rest /= axis.values.len();
                    }
                    let built = match strategy::build(spec.strategy.name, &params) {
                        Ok(s) => s,
                        Err(e) => {
                            let mut o = outcome.lock().unwrap_or_else(|p| p.into_inner());
                            o.1 += 1;
                            o.2.get_or_insert_with(|| e.to_string());
                            continue;
                        }
                    };
                    match run_with(prepared, &built, Keep::default(), &mut |_, _| {}) {
                        Ok(r) => {
                            let point =
                                SweepPoint { params, metrics: r.metrics, final_equity: r.final_equity };
                            outcome.lock().unwrap_or_else(|p| p.into_inner()).0.push(point);
                        }
                        Err(e) => {
                            failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            next.store(combinations, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let (mut points, skipped, skip_reason) = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
    // Best first; ties broken by the parameters so the order never depends on thread timing.
    points.sort_by(|a, b| {
        rank_by.score(&b.metrics).total_cmp(&rank_by.score(&a.metrics)).then_with(|| {
            a.params
                .values()
                .zip(b.params.values())
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    Ok(SweepResult {
        combinations,
        skipped,
        skip_reason,
        threads,
        seconds: started.elapsed().as_secs_f64(),
        ranked_by: rank_by,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_ranges_steps_and_lists() {
        assert_eq!(
            "fast=5..8".parse::<Axis>(),
            Ok(Axis { name: "fast".into(), values: vec![5.0, 6.0, 7.0, 8.0] })
        );
        assert_eq!("slow=20..60:20".parse::<Axis>().map(|a| a.values), Ok(vec![20.0, 40.0, 60.0]));
        assert_eq!("lower=20..30:2.5".parse::<Axis>().map(|a| a.values.len()), Ok(5));
        assert_eq!("period=7,14,21".parse::<Axis>().map(|a| a.values), Ok(vec![7.0, 14.0, 21.0]));
    }

    #[test]
    fn bad_axes_say_what_is_wrong() {
        let err = |t: &str| t.parse::<Axis>().expect_err(t);
        assert!(err("fast").contains("no '='"));
        assert!(err("fast=9..5").contains("ends before it starts"));
        assert!(err("fast=1..5:0").contains("step must be positive"));
        assert!(err("fast=a..5").contains("\"a\" is not a number"));
        assert!(err("=1..5").contains("no parameter name"));
        assert!(err("fast=0..1e300").contains("too many"));
    }

    #[test]
    fn metric_names_parse_as_they_serialize() {
        for m in [
            RankBy::Sharpe,
            RankBy::Sortino,
            RankBy::Return,
            RankBy::Cagr,
            RankBy::Drawdown,
            RankBy::ProfitFactor,
            RankBy::WinRate,
        ] {
            let name = serde_json::to_value(m).expect("serializes");
            assert_eq!(name.as_str().map(str::parse::<RankBy>), Some(Ok(m)));
        }
        assert!("speed".parse::<RankBy>().is_err());
    }

    #[test]
    fn ranking_puts_missing_metrics_last_and_drawdown_lowest_first() {
        let m = |sharpe: Option<f64>, dd: f64| Metrics {
            total_return_pct: 0.0,
            cagr_pct: 0.0,
            sharpe,
            sortino: None,
            max_drawdown_pct: dd,
            win_rate_pct: 0.0,
            profit_factor: None,
            trades: 0,
            exposure_pct: 0.0,
        };
        assert!(RankBy::Sharpe.score(&m(Some(-5.0), 0.0)) > RankBy::Sharpe.score(&m(None, 0.0)));
        assert!(RankBy::Drawdown.score(&m(None, 5.0)) > RankBy::Drawdown.score(&m(None, 30.0)));
    }
}
