//! Seeded synthetic candles: a geometric random walk whose volatility and drift switch between
//! regimes (calm, normal, turbulent; bull, flat, bear), so trend and mean-reversion strategies
//! both find something to trade. The same seed and settings give the same candles every run.

use kuant_crds::Timeframe;
use kuant_crds::backtest::SyntheticData;

use super::{DataError, DataSource, Span};
use crate::candles::{Bar, Series};
use crate::price::Price;

/// First bar of a synthetic series when `market.start` is absent: 2024-01-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_704_067_200_000;
const YEAR_SECONDS: f64 = 365.25 * 86_400.0;

/// The synthetic candle generator.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    settings: SyntheticData,
}

impl SyntheticSource {
    /// A generator with these settings.
    pub fn new(settings: SyntheticData) -> Self {
        Self { settings }
    }
}

impl DataSource for SyntheticSource {
    fn load(&self, symbol: &str, timeframe: Timeframe, span: Span) -> Result<Series, DataError> {
        let s = &self.settings;
        let bad = |problem: String| DataError::Source { source_name: "synthetic data".into(), problem };
        if !(s.start_price.is_finite() && s.start_price > 0.0) {
            return Err(bad(format!("startPrice {} must be a positive number", s.start_price)));
        }
        if !(s.volatility.is_finite() && s.volatility >= 0.0 && s.drift.is_finite()) {
            return Err(bad("drift and volatility must be finite, volatility non-negative".into()));
        }
        let step_ms = timeframe.seconds() as i64 * 1000;
        let start = span.start_ms.unwrap_or(DEFAULT_START_MS);
        let start = start + (step_ms - start.rem_euclid(step_ms)) % step_ms;
        let mut bars = s.bars;
        if let Some(end) = span.end_ms {
            bars = bars.min(((end - start).max(0) / step_ms) as u64);
        }
        if bars == 0 {
            return Err(bad("no bars inside market.start/market.end".into()));
        }
        let bars = usize::try_from(bars).map_err(|_| bad(format!("{bars} bars do not fit in memory")))?;
        generate(s, symbol, timeframe, start, bars).map_err(bad)
    }
}

#[derive(Clone, Copy)]
struct Regime {
    vol_multiplier: f64,
    annual_drift: f64,
}

const VOLATILITY_REGIMES: [f64; 3] = [0.5, 1.0, 2.2];
const DRIFT_REGIMES: [f64; 3] = [0.8, 0.0, -0.6];

fn generate(
    s: &SyntheticData,
    symbol: &str,
    timeframe: Timeframe,
    start_ms: i64,
    bars: usize,
) -> Result<Series, String> {
    let mut rng = Rng::new(s.seed ^ fnv1a(symbol.as_bytes()));
    let dt = timeframe.seconds() as f64 / YEAR_SECONDS;
    // Regimes last about two weeks on average, whatever the timeframe.
    let switch_probability = (timeframe.seconds() as f64 / (14.0 * 86_400.0)).min(0.5);
    let tick = tick_for(s.start_price);
    let mut regime = Regime { vol_multiplier: 1.0, annual_drift: 0.0 };
    let mut close = round_to(s.start_price, tick);
    let mut series = Series::with_capacity(bars);
    for i in 0..bars {
        if rng.next_f64() < switch_probability {
            regime.vol_multiplier = VOLATILITY_REGIMES[rng.below(3)];
        }
        if rng.next_f64() < switch_probability {
            regime.annual_drift = DRIFT_REGIMES[rng.below(3)];
        }
        let sigma = s.volatility * regime.vol_multiplier;
        let mu = s.drift + regime.annual_drift * s.volatility;
        let open = close;
        let z = rng.normal();
        let log_return = (mu - 0.5 * sigma * sigma) * dt + sigma * dt.sqrt() * z;
        close = round_to((open * log_return.exp()).max(tick), tick);
        let wick = sigma * dt.sqrt() * 0.6;
        let high = round_up(open.max(close) * (rng.normal().abs() * wick).exp(), tick);
        let low = round_down(open.min(close) * (-rng.normal().abs() * wick).exp(), tick).max(tick);
        let volume = (100.0 * regime.vol_multiplier * (0.5 * rng.normal()).exp() * 1e4).round() / 1e4;
        let price = |x: f64| {
            Price::from_f64(x).filter(|p| p.units() > 0).ok_or_else(|| {
                format!("the random walk left the range of prices kuant can hold at bar {i} ({x:e}); lower startPrice, drift or volatility")
            })
        };
        let bar = Bar {
            time_ms: start_ms + i as i64 * timeframe.seconds() as i64 * 1000,
            open: price(open)?,
            high: price(high)?,
            low: price(low)?,
            close: price(close)?,
            volume,
        };
        crate::candles::check_bar(&bar).map_err(|e| format!("bar {i}: {e}"))?;
        series.push(bar);
    }
    Ok(series)
}

/// A tick about a millionth of the price: 0.01 for BTC-like prices, finer for cheap assets.
fn tick_for(price: f64) -> f64 {
    10f64.powf(price.log10().floor() - 6.0).clamp(1e-8, 0.01)
}

fn round_to(x: f64, tick: f64) -> f64 {
    (x / tick).round() * tick
}
fn round_up(x: f64, tick: f64) -> f64 {
    (x / tick - 1e-9).ceil() * tick
}
fn round_down(x: f64, tick: f64) -> f64 {
    (x / tick + 1e-9).floor() * tick
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// xoshiro256** seeded by SplitMix64: small, fast and identical on every platform.
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candles::check_bar;

    fn load(seed: u64, bars: u64) -> Series {
        let settings = SyntheticData { seed, bars, ..SyntheticData::default() };
        SyntheticSource::new(settings).load("BTCUSDT", Timeframe::H1, Span::default()).expect("generates")
    }

    #[test]
    fn the_same_seed_gives_the_same_candles() {
        assert_eq!(load(7, 500), load(7, 500));
        assert_ne!(load(7, 500), load(8, 500));
    }

    #[test]
    fn candles_are_consistent_contiguous_and_start_at_the_open_price() {
        let s = load(42, 5_000);
        assert_eq!(s.len(), 5_000);
        assert_eq!(s.bar(0).open, Price::parse("30000").expect("price"));
        for i in 0..s.len() {
            check_bar(&s.bar(i)).unwrap_or_else(|e| panic!("bar {i}: {e}"));
            if i > 0 {
                assert_eq!(s.bar(i).time_ms - s.bar(i - 1).time_ms, 3_600_000);
                assert_eq!(s.bar(i).open, s.bar(i - 1).close, "open continues the previous close");
            }
        }
    }

    #[test]
    fn volatility_is_roughly_what_was_asked_for() {
        let s = load(1, 20_000);
        let closes: Vec<f64> = s.closes().iter().map(|p| p.to_f64()).collect();
        let returns: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let mean = returns.iter().sum::<f64>() / returns.len() as f64;
        let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (returns.len() - 1) as f64;
        let annual = (var * YEAR_SECONDS / 3600.0).sqrt();
        // Regimes scale 0.6 by 0.5–2.2, so the mix lands somewhere around 0.5–1.2.
        assert!((0.3..1.5).contains(&annual), "annualised volatility {annual}");
    }

    #[test]
    fn prices_beyond_the_representable_range_are_an_error_not_a_crash_to_zero() {
        let settings = SyntheticData { start_price: 5e11, bars: 10, ..SyntheticData::default() };
        let err =
            SyntheticSource::new(settings).load("X", Timeframe::H1, Span::default()).expect_err("too large");
        assert!(err.to_string().contains("left the range of prices"), "{err}");
    }

    #[test]
    fn honours_the_span_end() {
        let settings = SyntheticData { bars: 1_000, ..SyntheticData::default() };
        let span = Span { start_ms: Some(DEFAULT_START_MS), end_ms: Some(DEFAULT_START_MS + 10 * 3_600_000) };
        let s = SyntheticSource::new(settings).load("X", Timeframe::H1, span).expect("generates");
        assert_eq!(s.len(), 10);
    }
}
