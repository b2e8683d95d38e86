//! `ema-crossover {fast, slow}`: buy when the fast exponential moving average crosses above the
//! slow one, sell when it crosses below (same crossing rule as sma-crossover).

use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError, cross};
use crate::candles::Bar;
use crate::indicators::Ema;

/// Exponential moving-average crossover.
#[derive(Clone, Debug)]
pub struct EmaCrossover {
    fast: Ema,
    slow: Ema,
    previous: Option<std::cmp::Ordering>,
}

impl EmaCrossover {
    /// A crossover of the `fast`- and `slow`-bar EMAs (`fast < slow`).
    pub fn new(fast: usize, slow: usize) -> Self {
        Self { fast: Ema::new(fast), slow: Ema::new(slow), previous: None }
    }

    /// From manifest parameters: `fast` (default 12) and `slow` (default 26).
    pub fn from_params(given: &BTreeMap<String, f64>) -> Result<Self, StrategyError> {
        let p = Params::new(StrategyName::EmaCrossover, given, &["fast", "slow"])?;
        let (fast, slow) = (p.period("fast", 12)?, p.period("slow", 26)?);
        if fast >= slow {
            return Err(p.error(format!("fast ({fast}) must be less than slow ({slow})")));
        }
        Ok(Self::new(fast, slow))
    }
}

impl Strategy for EmaCrossover {
    #[inline(always)]
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        let close = bar.close.to_f64();
        let fast = self.fast.push(close);
        let (Some(fast), Some(slow)) = (fast, self.slow.push(close)) else { return None };
        let now = fast.total_cmp(&slow);
        let signal = cross(self.previous, now);
        self.previous = Some(now);
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::signals;

    #[test]
    fn follows_a_trend_change() {
        let mut closes: Vec<f64> = (0..40).map(|i| 100.0 - i as f64).collect();
        closes.extend((0..40).map(|i| 60.0 + 2.0 * i as f64));
        closes.extend((0..40).map(|i| 140.0 - 3.0 * i as f64));
        let s = signals(EmaCrossover::new(3, 8), &closes);
        let sides: Vec<Side> = s.iter().map(|(_, side)| *side).collect();
        assert_eq!(sides, [Side::Buy, Side::Sell]);
        assert!((40..50).contains(&s[0].0) && (80..90).contains(&s[1].0), "{s:?}");
    }
}
