//! Incremental indicators, O(1) per bar and allocation-free after construction.

use std::collections::VecDeque;

use crate::price::Price;

/// Exponential moving average with `alpha = 2 / (n + 1)`, seeded with the simple mean of its
/// first `n` values.
#[derive(Clone, Debug)]
pub struct Ema {
    period: usize,
    alpha: f64,
    seen: usize,
    value: f64,
}

impl Ema {
    /// An EMA over `period >= 1` values.
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self { period, alpha: 2.0 / (period as f64 + 1.0), seen: 0, value: 0.0 }
    }

    /// Adds a value; returns the EMA once `period` values have been seen.
    #[inline(always)]
    pub fn push(&mut self, x: f64) -> Option<f64> {
        self.seen += 1;
        if self.seen < self.period {
            self.value += x;
            None
        } else if self.seen == self.period {
            self.value = (self.value + x) / self.period as f64;
            Some(self.value)
        } else {
            self.value += self.alpha * (x - self.value);
            Some(self.value)
        }
    }
}

/// Wilder's relative strength index.
#[derive(Clone, Debug)]
pub struct Rsi {
    period: usize,
    previous: Option<f64>,
    seen: usize,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    /// An RSI over `period >= 1` changes.
    pub fn new(period: usize) -> Self {
        Self { period: period.max(1), previous: None, seen: 0, avg_gain: 0.0, avg_loss: 0.0 }
    }

    /// Adds a close; returns the RSI (0–100) once `period` changes have been seen.
    #[inline(always)]
    pub fn push(&mut self, close: f64) -> Option<f64> {
        let previous = self.previous.replace(close)?;
        let change = close - previous;
        let (gain, loss) = if change > 0.0 { (change, 0.0) } else { (0.0, -change) };
        self.seen += 1;
        let n = self.period as f64;
        if self.seen <= self.period {
            self.avg_gain += gain / n;
            self.avg_loss += loss / n;
            if self.seen < self.period {
                return None;
            }
        } else {
            self.avg_gain = (self.avg_gain * (n - 1.0) + gain) / n;
            self.avg_loss = (self.avg_loss * (n - 1.0) + loss) / n;
        }
        Some(if self.avg_loss == 0.0 {
            if self.avg_gain == 0.0 { 50.0 } else { 100.0 }
        } else {
            100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        })
    }
}

/// Highest (or lowest) of the last `n` values, by a monotonic queue.
#[derive(Clone, Debug)]
pub struct RollingExtreme {
    n: usize,
    highest: bool,
    count: usize,
    queue: VecDeque<(usize, Price)>,
}

impl RollingExtreme {
    /// The maximum of the last `n` values.
    pub fn max(n: usize) -> Self {
        Self { n: n.max(1), highest: true, count: 0, queue: VecDeque::with_capacity(n.max(1) + 1) }
    }

    /// The minimum of the last `n` values.
    pub fn min(n: usize) -> Self {
        Self { highest: false, ..Self::max(n) }
    }

    /// Adds a value.
    #[inline(always)]
    pub fn push(&mut self, p: Price) {
        let dominated = |q: Price| if self.highest { q <= p } else { q >= p };
        while self.queue.back().is_some_and(|&(_, q)| dominated(q)) {
            self.queue.pop_back();
        }
        self.queue.push_back((self.count, p));
        self.count += 1;
        while self.queue.front().is_some_and(|&(i, _)| i + self.n < self.count) {
            self.queue.pop_front();
        }
    }

    /// The extreme of the last `n` values, once `n` have been seen.
    #[inline(always)]
    pub fn value(&self) -> Option<Price> {
        if self.count < self.n { None } else { self.queue.front().map(|&(_, p)| p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_seeds_with_the_mean_then_smooths() {
        let mut e = Ema::new(3);
        assert_eq!(e.push(1.0), None);
        assert_eq!(e.push(2.0), None);
        assert_eq!(e.push(3.0), Some(2.0));
        assert_eq!(e.push(6.0), Some(4.0));
    }

    #[test]
    fn rsi_matches_a_hand_computed_case() {
        // Changes +1, -1, +2 over period 2: seed gains (1+0)/2=0.5, losses (0+1)/2=0.5 → RSI 50;
        // then gain 2: avg_gain (0.5+2)/2=1.25, avg_loss 0.25 → RS 5 → RSI 83.33.
        let mut r = Rsi::new(2);
        assert_eq!(r.push(10.0), None);
        assert_eq!(r.push(11.0), None);
        assert_eq!(r.push(10.0), Some(50.0));
        let v = r.push(12.0).expect("ready");
        assert!((v - 83.333_333_333).abs() < 1e-6, "{v}");
    }

    #[test]
    fn rolling_extremes_follow_the_window() {
        let mut hi = RollingExtreme::max(3);
        let mut lo = RollingExtreme::min(3);
        let mut highs = Vec::new();
        let mut lows = Vec::new();
        for v in [5, 1, 4, 2, 3, 0, 9] {
            hi.push(Price(v));
            lo.push(Price(v));
            highs.push(hi.value().map(|p| p.0));
            lows.push(lo.value().map(|p| p.0));
        }
        assert_eq!(highs, [None, None, Some(5), Some(4), Some(4), Some(3), Some(9)]);
        assert_eq!(lows, [None, None, Some(1), Some(1), Some(2), Some(0), Some(0)]);
    }
}
