//! Market data for the simulator: candles replayed on a simulated clock, each walked through an
//! intra-candle path so that the price (and with it trades, the book and resting orders) moves
//! within a candle as it would: a rising candle goes open → low → high → close, a falling one
//! open → high → low → close, each leg a third of the candle, linear within it.
//!
//! Pure: the caller says what time it is on the simulated clock.

use rust_decimal::Decimal;

use crate::model::Kline;

/// One candle in decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candle {
    /// Open time, Unix ms.
    pub open_ms: i64,
    /// Open, high, low, close.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Last price.
    pub close: Decimal,
    /// Base volume.
    pub volume: Decimal,
}

impl Candle {
    /// The four corners of its path: open, the first extreme, the second, close.
    fn corners(&self) -> [Decimal; 4] {
        if self.close >= self.open {
            [self.open, self.low, self.high, self.close]
        } else {
            [self.open, self.high, self.low, self.close]
        }
    }
}

/// A symbol's candles, replayed.
#[derive(Clone, Debug)]
pub struct Replay {
    candles: Vec<Candle>,
    step_ms: i64,
}

impl Replay {
    /// Candles `step_ms` apart, ascending (as the data sources give them).
    pub fn new(candles: Vec<Candle>, step_ms: i64) -> Result<Self, String> {
        if candles.is_empty() {
            return Err("no candles to replay".into());
        }
        if step_ms <= 0 {
            return Err(format!("the candle interval must be positive, not {step_ms} ms"));
        }
        if let Some(w) = candles.windows(2).find(|w| w[1].open_ms != w[0].open_ms + step_ms) {
            return Err(format!(
                "candles at {} and {} are not {step_ms} ms apart",
                w[0].open_ms, w[1].open_ms
            ));
        }
        Ok(Self { candles, step_ms })
    }

    /// The candles from the engine's series (prices are exact; volumes come from f64).
    pub fn from_series(series: &kuant_agents::candles::Series, step_ms: i64) -> Result<Self, String> {
        let candles = series
            .iter()
            .map(|b| Candle {
                open_ms: b.time_ms,
                open: b.open.to_decimal(),
                high: b.high.to_decimal(),
                low: b.low.to_decimal(),
                close: b.close.to_decimal(),
                volume: Decimal::from_f64_retain(b.volume).unwrap_or_default().round_dp(8),
            })
            .collect();
        Self::new(candles, step_ms)
    }

    /// When the first candle opens.
    pub fn start_ms(&self) -> i64 {
        self.candles[0].open_ms
    }

    /// When the last candle closes (the replay's end).
    pub fn end_ms(&self) -> i64 {
        self.candles[self.candles.len() - 1].open_ms + self.step_ms
    }

    /// The candle interval.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    fn index(&self, t: i64) -> Option<usize> {
        if t < self.start_ms() || t >= self.end_ms() {
            return None;
        }
        usize::try_from((t - self.start_ms()) / self.step_ms).ok()
    }

    /// The price at simulated time `t` (none before the first candle or after the last).
    pub fn price_at(&self, t: i64) -> Option<Decimal> {
        let c = self.candles[self.index(t)?];
        let into = Decimal::from((t - c.open_ms) * 3) / Decimal::from(self.step_ms);
        let leg = into.floor();
        let corners = c.corners();
        let i = usize::try_from(leg.mantissa()).unwrap_or(0).min(2);
        let within = into - leg;
        Some(corners[i] + (corners[i + 1] - corners[i]) * within)
    }

    /// The candle of time `t` as formed by then: its high and low so far, its close the price
    /// at `t`; `closed` when `t` is its last millisecond or later.
    pub fn kline_at(&self, t: i64) -> Option<Kline> {
        let i = self.index(t)?;
        let c = self.candles[i];
        let price = self.price_at(t)?;
        let into = (t - c.open_ms) * 3 / self.step_ms;
        let corners = c.corners();
        let reached = &corners[..=usize::try_from(into).unwrap_or(0).min(3)];
        let high = reached.iter().copied().fold(price, Decimal::max);
        let low = reached.iter().copied().fold(price, Decimal::min);
        let share = Decimal::from(t - c.open_ms + 1) / Decimal::from(self.step_ms);
        let closed = t >= c.open_ms + self.step_ms - 1;
        if closed {
            // Its last millisecond: the candle as the data has it (the path's interpolation
            // stops a hair short of the close).
            return Some(self.whole(&c));
        }
        Some(Kline {
            open_ms: c.open_ms,
            open: c.open,
            high,
            low,
            close: price,
            volume: (c.volume * share).round_dp(8),
            close_ms: c.open_ms + self.step_ms - 1,
            closed,
        })
    }

    /// The candles that opened in `[from, to]` and by `now` (the one forming at `now` as formed
    /// so far), at most `limit`, oldest first; the latest ones when only `limit` is given.
    pub fn klines(&self, from: Option<i64>, to: Option<i64>, now: i64, limit: usize) -> Vec<Kline> {
        let last = match self.index(now) {
            Some(i) => i,
            None if now >= self.end_ms() => self.candles.len() - 1,
            None => return Vec::new(),
        };
        let in_range = |c: &&Candle| from.is_none_or(|f| c.open_ms >= f) && to.is_none_or(|t| c.open_ms <= t);
        let chosen: Vec<&Candle> = self.candles[..=last].iter().filter(in_range).collect();
        let chosen = if from.is_none() && chosen.len() > limit {
            &chosen[chosen.len() - limit..]
        } else {
            &chosen[..chosen.len().min(limit)]
        };
        chosen
            .iter()
            .map(|c| match self.kline_at(now) {
                Some(k) if k.open_ms == c.open_ms => k,
                _ => self.whole(c),
            })
            .collect()
    }

    /// Candle `c` closed, as the data has it.
    fn whole(&self, c: &Candle) -> Kline {
        Kline {
            open_ms: c.open_ms,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            close_ms: c.open_ms + self.step_ms - 1,
            closed: true,
        }
    }
}

/// How fast the simulated clock runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Simulated milliseconds per real millisecond (1 is real time).
    Times(f64),
    /// Stepped as fast as the market streams' subscribers keep up: the clock moves on when every
    /// subscriber has taken what was sent, and holds still while nobody subscribes.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Self::Times(x)),
            _ => Err(format!("{text:?} is not a speed: a positive number (1 is real time) or max")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Times(x) => write!(f, "{x}x"),
            Self::Max => f.write_str("max speed"),
        }
    }
}

/// The simulated clock: simulated time runs `speed` times as fast as real time from `start_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimClock {
    /// Simulated time at real time zero.
    pub start_ms: i64,
    /// Simulated milliseconds per real millisecond.
    pub speed: f64,
}

impl SimClock {
    /// Simulated time after `real_elapsed_ms` of real time.
    pub fn now(&self, real_elapsed_ms: u64) -> i64 {
        self.start_ms + (real_elapsed_ms as f64 * self.speed) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    const H: i64 = 3_600_000;

    fn replay() -> Replay {
        let c = |i: i64, o: &str, h: &str, l: &str, c: &str| Candle {
            open_ms: i * H,
            open: d(o),
            high: d(h),
            low: d(l),
            close: d(c),
            volume: d("30"),
        };
        Replay::new(vec![c(0, "100", "130", "90", "120"), c(1, "120", "125", "60", "90")], H).expect("replay")
    }

    #[test]
    fn a_rising_candle_goes_to_its_low_then_its_high_then_closes() {
        let r = replay();
        assert_eq!(r.price_at(0), Some(d("100")));
        assert_eq!(r.price_at(H / 3), Some(d("90")));
        assert_eq!(r.price_at(H / 6), Some(d("95")));
        assert_eq!(r.price_at(2 * H / 3), Some(d("130")));
        assert_eq!(r.price_at(H - 1).map(|p| p.round_dp(2)), Some(d("120.00")));
        // A falling candle: its high first.
        assert_eq!(r.price_at(H + H / 3), Some(d("125")));
        assert_eq!(r.price_at(H + 2 * H / 3), Some(d("60")));
        assert_eq!(r.price_at(-1), None);
        assert_eq!(r.price_at(2 * H), None);
    }

    #[test]
    fn the_forming_candle_has_the_high_and_low_it_reached() {
        let r = replay();
        let k = r.kline_at(H / 2).expect("forming");
        assert_eq!(
            (k.open, k.high, k.low, k.close, k.closed),
            (d("100"), d("110"), d("90"), d("110"), false)
        );
        let k = r.kline_at(H - 1).expect("closing");
        assert!(k.closed);
        assert_eq!((k.high, k.low), (d("130"), d("90")));
    }

    #[test]
    fn klines_are_those_opened_by_now() {
        let r = replay();
        assert_eq!(r.klines(None, None, H / 2, 500).len(), 1);
        let both = r.klines(None, None, H + 10, 500);
        assert_eq!(both.len(), 2);
        assert!(both[0].closed && !both[1].closed);
        assert_eq!(r.klines(None, None, H + 10, 1)[0].open_ms, H, "the latest when limited");
        assert_eq!(r.klines(Some(0), None, H + 10, 1)[0].open_ms, 0, "the first from a start");
        assert_eq!(r.klines(Some(H), Some(H), 10 * H, 500).len(), 1);
        assert!(r.klines(None, None, -5, 500).is_empty());
        assert!(Replay::new(Vec::new(), H).is_err());
        let clock = SimClock { start_ms: 1_000, speed: 100.0 };
        assert_eq!(clock.now(50), 6_000);
    }

    #[test]
    fn speeds_are_positive_numbers_or_max() {
        assert_eq!("100".parse(), Ok(Speed::Times(100.0)));
        assert_eq!("0.5".parse(), Ok(Speed::Times(0.5)));
        assert_eq!("MAX".parse(), Ok(Speed::Max));
        for bad in ["0", "-1", "inf", "NaN", "fast", ""] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
        assert_eq!(Speed::Times(100.0).to_string(), "100x");
    }
}
