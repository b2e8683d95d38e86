//! `sma-crossover {fast, slow}`: buy when the fast simple moving average of closes crosses above
//! the slow one, sell when it crosses below. The means are compared exactly (integer sums), so a
//! tie is a tie: `d = fast - slow` crosses up from `d <= 0` to `d > 0`, down from `d >= 0` to `d < 0`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError, cross};
use crate::candles::Bar;
use crate::indicators::RollingSum;

/// Simple moving-average crossover.
#[derive(Clone, Debug)]
pub struct SmaCrossover {
    fast: RollingSum,
    slow: RollingSum,
    previous: Option<Ordering>,
}

impl SmaCrossover {
    /// A crossover of the `fast`- and `slow`-bar means (`fast < slow`).
    pub fn new(fast: usize, slow: usize) -> Self {
        Self { fast: RollingSum::new(fast), slow: RollingSum::new(slow), previous: None }
    }

    /// From manifest parameters: `fast` (default 10) and `slow` (default 30).
    pub fn from_params(given: &BTreeMap<String, f64>) -> Result<Self, StrategyError> {
        let p = Params::new(StrategyName::SmaCrossover, given, &["fast", "slow"])?;
        let (fast, slow) = (p.period("fast", 10)?, p.period("slow", 30)?);
        if fast >= slow {
            return Err(p.error(format!("fast ({fast}) must be less than slow ({slow})")));
        }
        Ok(Self::new(fast, slow))
    }
}

impl Strategy for SmaCrossover {
    #[inline(always)]
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        self.fast.push(bar.close);
        self.slow.push(bar.close);
        if !self.slow.is_full() {
            return None;
        }
        // fast/nf vs slow/ns, compared as fast*ns vs slow*nf: exact, no division.
        let now =
            (self.fast.sum() * self.slow.len() as i128).cmp(&(self.slow.sum() * self.fast.len() as i128));
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
    fn crosses_up_and_down_on_the_canonical_rule() {
        // fast=2, slow=3. d is defined from bar 2; a signal needs d at the bar before, so from bar 3.
        let closes = [10.0, 10.0, 10.0, 12.0, 12.0, 8.0, 8.0];
        // bar 2: d=0; bar 3: fast 11, slow 10.67 → up; bar 5: fast 10, slow 10.67 → down.
        assert_eq!(signals(SmaCrossover::new(2, 3), &closes), vec![(3, Side::Buy), (5, Side::Sell)]);
    }

    #[test]
    fn touching_zero_is_not_a_cross_but_leaving_it_is() {
        // d goes +, 0, + : no second buy; then 0 → - is a sell.
        let closes = [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 2.0];
        assert_eq!(signals(SmaCrossover::new(2, 3), &closes), vec![(6, Side::Sell)]);
    }

    #[test]
    fn a_flat_market_never_signals() {
        assert!(signals(SmaCrossover::new(10, 30), &[2505.56; 100]).is_empty());
    }
}
