//! `sma-crossover {fast, slow}`: buy when the fast simple moving average of closes crosses above
//! the slow one, sell when it crosses below. The means are compared exactly (integer sums), so a
//! tie is a tie: `d = fast - slow` crosses up from `d <= 0` to `d > 0`, down from `d >= 0` to `d < 0`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError, cross};
use crate::candles::Bar;

/// Simple moving-average crossover. Both windows live in one ring of the last `slow` closes: a
/// close enters both sums, and leaves the fast sum `fast` bars later and the slow sum `slow` bars
/// later.
#[derive(Clone, Debug)]
pub struct SmaCrossover {
    ring: Vec<i64>,
    fast: usize,
    /// Where the next close goes (and the oldest slow close leaves).
    head: usize,
    /// Where the close leaving the fast window sits.
    fast_tail: usize,
    seen: usize,
    fast_sum: i128,
    slow_sum: i128,
    previous: Option<Ordering>,
}

impl SmaCrossover {
    /// A crossover of the `fast`- and `slow`-bar means (`1 <= fast < slow`).
    pub fn new(fast: usize, slow: usize) -> Self {
        let slow = slow.max(2);
        let fast = fast.clamp(1, slow - 1);
        Self {
            ring: vec![0; slow],
            fast,
            head: 0,
            fast_tail: slow - fast,
            seen: 0,
            fast_sum: 0,
            slow_sum: 0,
            previous: None,
        }
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
        let slow = self.ring.len();
        let x = i128::from(bar.close.units());
        // Slots not yet written hold 0, so during warm-up nothing real leaves either sum.
        let (Some(leaving_slow), Some(leaving_fast)) =
            (self.ring.get(self.head), self.ring.get(self.fast_tail))
        else {
            return None;
        };
        self.slow_sum += x - i128::from(*leaving_slow);
        self.fast_sum += x - i128::from(*leaving_fast);
        if let Some(slot) = self.ring.get_mut(self.head) {
            *slot = bar.close.units();
        }
        self.head = if self.head + 1 == slow { 0 } else { self.head + 1 };
        self.fast_tail = if self.fast_tail + 1 == slow { 0 } else { self.fast_tail + 1 };
        if self.seen < slow {
            self.seen += 1;
            if self.seen < slow {
                return None;
            }
        }
        // fast/nf vs slow/ns, compared as fast*ns vs slow*nf: exact, no division.
        let now = (self.fast_sum * slow as i128).cmp(&(self.slow_sum * self.fast as i128));
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

#[cfg(test)]
mod window_tests {
    use super::*;
    use crate::strategy::test_support::bars;

    /// The ring gives the same sums as sums recomputed from scratch, on a long uneven walk.
    #[test]
    fn ring_sums_equal_recomputed_sums() {
        let closes: Vec<f64> =
            (0..500).map(|i| 100.0 + ((i * 37 % 101) as f64 - 50.0) * 0.01 * (i % 7) as f64).collect();
        let mut s = SmaCrossover::new(4, 9);
        for (t, bar) in bars(&closes).iter().enumerate() {
            s.on_bar(bar);
            let sum = |n: usize| {
                closes[t.saturating_sub(n - 1)..=t].iter().map(|c| (c * 1e8).round() as i128).sum::<i128>()
            };
            if t >= 8 {
                assert_eq!((s.fast_sum, s.slow_sum), (sum(4), sum(9)), "bar {t}");
            }
        }
    }
}
