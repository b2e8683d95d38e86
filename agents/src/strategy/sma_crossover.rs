//! `sma-crossover {fast, slow}`: buy when the fast simple moving average of closes crosses above
//! the slow one, sell when it crosses below. The means are compared exactly (integer sums), so a
//! tie is a tie: `d = fast - slow` crosses up from `d <= 0` to `d > 0`, down from `d >= 0` to `d < 0`.

use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError};
use crate::candles::Bar;

/// Simple moving-average crossover. Both windows live in one ring of the last `slow` closes: a
/// close enters both sums, and leaves the fast sum `fast` bars later and the slow sum `slow` bars
/// later.
///
/// The running sums are `i64`, exact while every close is at most `i64::MAX / slow` units (about
/// 3e9 of the quote at slow = 30). A larger close raises a sticky flag, and from then on the sums
/// are recomputed in `i128` from the ring at each bar: slower, and still exact.
#[derive(Clone, Debug)]
pub struct SmaCrossover {
    ring: Vec<i64>,
    fast: usize,
    /// Where the next close goes (and the oldest slow close leaves).
    head: usize,
    /// Where the close leaving the fast window sits.
    fast_tail: usize,
    seen: usize,
    fast_sum: i64,
    slow_sum: i64,
    limit: i64,
    beyond_limit: bool,
    /// Sign of fast − slow at the previous bar: -1, 0, 1, or 2 before the first.
    previous: i8,
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
            limit: i64::MAX / slow as i64,
            beyond_limit: false,
            previous: 2,
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

    /// The fast and slow sums, exactly.
    fn sums(&self) -> (i128, i128) {
        if !self.beyond_limit {
            return (i128::from(self.fast_sum), i128::from(self.slow_sum));
        }
        let slow = self.ring.len();
        let slow_sum = self.ring.iter().map(|&x| i128::from(x)).sum();
        let fast_sum = (1..=self.fast).map(|k| i128::from(self.ring[(self.head + slow - k) % slow])).sum();
        (fast_sum, slow_sum)
    }
}

impl Strategy for SmaCrossover {
    #[inline(always)]
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        let slow = self.ring.len();
        let x = bar.close.units();
        // Slots not yet written hold 0, so during warm-up nothing real leaves either sum.
        let (Some(&leaving_slow), Some(&leaving_fast)) =
            (self.ring.get(self.head), self.ring.get(self.fast_tail))
        else {
            return None;
        };
        if let Some(slot) = self.ring.get_mut(self.head) {
            *slot = x;
        }
        self.beyond_limit |= x.unsigned_abs() > self.limit.unsigned_abs();
        self.slow_sum = self.slow_sum.wrapping_add(x).wrapping_sub(leaving_slow);
        self.fast_sum = self.fast_sum.wrapping_add(x).wrapping_sub(leaving_fast);
        self.head = if self.head + 1 == slow { 0 } else { self.head + 1 };
        self.fast_tail = if self.fast_tail + 1 == slow { 0 } else { self.fast_tail + 1 };
        if self.seen < slow {
            self.seen += 1;
            if self.seen < slow {
                return None;
            }
        }
        // fast/nf vs slow/ns, compared as fast*ns vs slow*nf: exact, no division. The products
        // fit an i64 for any realistic price; otherwise they are taken again in i128.
        let small = if self.beyond_limit {
            None
        } else {
            self.fast_sum.checked_mul(slow as i64).zip(self.slow_sum.checked_mul(self.fast as i64))
        };
        let order = match small {
            Some((fast_cross, slow_cross)) => fast_cross.cmp(&slow_cross),
            None => {
                let (fast_sum, slow_sum) = self.sums();
                (fast_sum * slow as i128).cmp(&(slow_sum * self.fast as i128))
            }
        };
        let now = order as i8;
        let previous = std::mem::replace(&mut self.previous, now);
        // Up from d <= 0 to d > 0; down from d >= 0 to d < 0.
        if previous <= 0 && now > 0 {
            Some(Side::Buy)
        } else if previous != 2 && previous >= 0 && now < 0 {
            Some(Side::Sell)
        } else {
            None
        }
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
                assert_eq!(s.sums(), (sum(4), sum(9)), "bar {t}");
            }
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use crate::price::Price;

    fn bar(units: i64) -> Bar {
        let p = Price(units);
        Bar { time_ms: 0, open: p, high: p, low: p, close: p, volume: 0.0 }
    }

    #[test]
    fn closes_beyond_the_i64_limit_keep_the_sums_exact() {
        let mut s = SmaCrossover::new(2, 4);
        let huge = i64::MAX / 3;
        for x in [10, 20, 30, huge, huge, 5] {
            s.on_bar(&bar(x));
        }
        assert!(s.beyond_limit);
        let h = i128::from(huge);
        assert_eq!(s.sums(), (h + 5, 30 + 2 * h + 5));
    }

    #[test]
    fn a_cross_is_found_on_both_sides_of_the_limit() {
        let huge = i64::MAX / 4;
        let run = |prices: &[i64]| {
            let mut s = SmaCrossover::new(2, 3);
            prices.iter().filter_map(|&x| s.on_bar(&bar(x))).collect::<Vec<_>>()
        };
        assert_eq!(run(&[10, 10, 10, 12, 12, 8]), [Side::Buy, Side::Sell]);
        assert_eq!(run(&[huge, huge, huge, huge + 2, huge + 2, huge - 2]), [Side::Buy, Side::Sell]);
    }
}
