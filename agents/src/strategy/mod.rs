//! Strategies: state machines that read one bar at a time and may signal a side. They know
//! nothing of cash, orders or exchanges; the engine decides what a signal becomes.
//!
//! Adding a strategy is one file in this folder (its parameters, validation and `on_bar`) plus
//! one line in [`AnyStrategy`] and [`build`].

mod donchian_breakout;
mod ema_crossover;
mod rsi_mean_reversion;
mod sma_crossover;

use std::collections::BTreeMap;

use kuant_crds::StrategyName;
use serde::Serialize;

pub use donchian_breakout::DonchianBreakout;
pub use ema_crossover::EmaCrossover;
pub use rsi_mean_reversion::RsiMeanReversion;
pub use sma_crossover::SmaCrossover;

use crate::candles::Bar;

/// Buy or sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Go long.
    Buy,
    /// Leave the long position.
    Sell,
}

/// A strategy: fed every bar in order, it may signal a side at the bar's close.
pub trait Strategy {
    /// Reads the next bar; `Some(side)` is a signal known at this bar's close.
    fn on_bar(&mut self, bar: &Bar) -> Option<Side>;
}

/// A strategy's parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strategy {strategy}: {problem}")]
pub struct StrategyError {
    /// The strategy.
    pub strategy: StrategyName,
    /// What is wrong with its parameters.
    pub problem: String,
}

/// Reads a strategy's parameters, refusing unknown names and out-of-range values.
pub struct Params<'a> {
    strategy: StrategyName,
    given: &'a BTreeMap<String, f64>,
}

impl<'a> Params<'a> {
    /// Parameters `given` for `strategy`, which knows only the names in `known`.
    pub fn new(
        strategy: StrategyName,
        given: &'a BTreeMap<String, f64>,
        known: &[&str],
    ) -> Result<Self, StrategyError> {
        if let Some(unknown) = given.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(StrategyError {
                strategy,
                problem: format!("unknown parameter {unknown:?} (known: {})", known.join(", ")),
            });
        }
        Ok(Self { strategy, given })
    }

    /// An error about this strategy.
    pub fn error(&self, problem: impl Into<String>) -> StrategyError {
        StrategyError { strategy: self.strategy, problem: problem.into() }
    }

    /// A whole number of bars in 1..=100000, `default` when absent.
    pub fn period(&self, name: &str, default: usize) -> Result<usize, StrategyError> {
        let Some(&v) = self.given.get(name) else { return Ok(default) };
        if v.fract() != 0.0 || !(1.0..=100_000.0).contains(&v) {
            return Err(
                self.error(format!("{name} must be a whole number of bars from 1 to 100000, got {v}"))
            );
        }
        Ok(v as usize)
    }

    /// A number in `[min, max]`, `default` when absent.
    pub fn number(&self, name: &str, default: f64, min: f64, max: f64) -> Result<f64, StrategyError> {
        let Some(&v) = self.given.get(name) else { return Ok(default) };
        if !(min..=max).contains(&v) {
            return Err(self.error(format!("{name} must be between {min} and {max}, got {v}")));
        }
        Ok(v)
    }
}

/// Any built-in strategy, so code can hold one without knowing which.
#[derive(Clone, Debug)]
pub enum AnyStrategy {
    /// sma-crossover
    SmaCrossover(SmaCrossover),
    /// ema-crossover
    EmaCrossover(EmaCrossover),
    /// rsi-mean-reversion
    RsiMeanReversion(RsiMeanReversion),
    /// donchian-breakout
    DonchianBreakout(DonchianBreakout),
}

/// Builds a strategy from its manifest name and parameters.
pub fn build(name: StrategyName, params: &BTreeMap<String, f64>) -> Result<AnyStrategy, StrategyError> {
    Ok(match name {
        StrategyName::SmaCrossover => AnyStrategy::SmaCrossover(SmaCrossover::from_params(params)?),
        StrategyName::EmaCrossover => AnyStrategy::EmaCrossover(EmaCrossover::from_params(params)?),
        StrategyName::RsiMeanReversion => {
            AnyStrategy::RsiMeanReversion(RsiMeanReversion::from_params(params)?)
        }
        StrategyName::DonchianBreakout => {
            AnyStrategy::DonchianBreakout(DonchianBreakout::from_params(params)?)
        }
    })
}

/// Code that runs with a concrete strategy type, so the hot loop is compiled for each one.
pub trait WithStrategy {
    /// What the code returns.
    type Output;
    /// Runs with `strategy`.
    fn run<S: Strategy>(self, strategy: S) -> Self::Output;
}

impl AnyStrategy {
    /// Hands the concrete strategy to `f`.
    pub fn with<W: WithStrategy>(self, f: W) -> W::Output {
        match self {
            Self::SmaCrossover(s) => f.run(s),
            Self::EmaCrossover(s) => f.run(s),
            Self::RsiMeanReversion(s) => f.run(s),
            Self::DonchianBreakout(s) => f.run(s),
        }
    }
}

impl Strategy for AnyStrategy {
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        match self {
            Self::SmaCrossover(s) => s.on_bar(bar),
            Self::EmaCrossover(s) => s.on_bar(bar),
            Self::RsiMeanReversion(s) => s.on_bar(bar),
            Self::DonchianBreakout(s) => s.on_bar(bar),
        }
    }
}

/// The cross of a difference through zero: up when it goes from `<= 0` to `> 0`, down from
/// `>= 0` to `< 0` (the canonical crossover rule).
#[inline(always)]
pub(crate) fn cross(previous: Option<std::cmp::Ordering>, now: std::cmp::Ordering) -> Option<Side> {
    use std::cmp::Ordering::{Greater, Less};
    match (previous?, now) {
        (p, Greater) if p != Greater => Some(Side::Buy),
        (p, Less) if p != Less => Some(Side::Sell),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::price::Price;

    /// Bars whose close (and open, high, low) follow `closes`, one hour apart.
    pub fn bars(closes: &[f64]) -> Vec<Bar> {
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let p = Price::from_f64(c).expect("finite");
                Bar { time_ms: i as i64 * 3_600_000, open: p, high: p, low: p, close: p, volume: 1.0 }
            })
            .collect()
    }

    /// The signals a strategy gives on `closes`, with the bar index.
    pub fn signals(mut s: impl Strategy, closes: &[f64]) -> Vec<(usize, Side)> {
        bars(closes).iter().enumerate().filter_map(|(i, b)| s.on_bar(b).map(|side| (i, side))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn bad_parameters_are_refused_with_the_reason() {
        let cases = [
            (
                StrategyName::SmaCrossover,
                params(&[("fast", 30.0), ("slow", 10.0)]),
                "strategy sma-crossover: fast (30) must be less than slow (10)",
            ),
            (
                StrategyName::SmaCrossover,
                params(&[("fst", 5.0)]),
                "strategy sma-crossover: unknown parameter \"fst\" (known: fast, slow)",
            ),
            (
                StrategyName::EmaCrossover,
                params(&[("fast", 2.5)]),
                "strategy ema-crossover: fast must be a whole number of bars from 1 to 100000, got 2.5",
            ),
            (
                StrategyName::RsiMeanReversion,
                params(&[("lower", 80.0), ("upper", 70.0)]),
                "strategy rsi-mean-reversion: lower (80) must be less than upper (70)",
            ),
            (
                StrategyName::RsiMeanReversion,
                params(&[("upper", 120.0)]),
                "strategy rsi-mean-reversion: upper must be between 0 and 100, got 120",
            ),
            (
                StrategyName::DonchianBreakout,
                params(&[("period", 0.0)]),
                "strategy donchian-breakout: period must be a whole number of bars from 1 to 100000, got 0",
            ),
        ];
        for (name, p, expected) in cases {
            assert_eq!(build(name, &p).expect_err(expected).to_string(), expected);
        }
    }

    #[test]
    fn defaults_apply_when_parameters_are_absent() {
        for name in [
            StrategyName::SmaCrossover,
            StrategyName::EmaCrossover,
            StrategyName::RsiMeanReversion,
            StrategyName::DonchianBreakout,
        ] {
            assert!(build(name, &BTreeMap::new()).is_ok(), "{name}");
        }
    }
}
