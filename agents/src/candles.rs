//! Candle series: one symbol's bars at one timeframe, stored column by column so that the
//! backtest loop streams only the columns it reads.

use kuant_crds::Timeframe;

use crate::price::Price;

/// One candle. `time_ms` is the bar's open time (UTC, Unix milliseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// Open time of the bar, Unix milliseconds.
    pub time_ms: i64,
    /// First trade price.
    pub open: Price,
    /// Highest trade price.
    pub high: Price,
    /// Lowest trade price.
    pub low: Price,
    /// Last trade price.
    pub close: Price,
    /// Base-asset volume.
    pub volume: f64,
}

/// Candles of one symbol, strictly ascending in time, one per timeframe step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    time_ms: Vec<i64>,
    open: Vec<Price>,
    high: Vec<Price>,
    low: Vec<Price>,
    close: Vec<Price>,
    volume: Vec<f64>,
}

impl Series {
    /// An empty series with room for `n` bars.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            time_ms: Vec::with_capacity(n),
            open: Vec::with_capacity(n),
            high: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
        }
    }

    /// Appends a bar after checking it against the previous one; the error says what is wrong.
    pub fn push_checked(&mut self, bar: Bar, timeframe: Timeframe) -> Result<(), String> {
        check_bar(&bar)?;
        if let Some(&prev) = self.time_ms.last() {
            let step = timeframe.seconds() as i64 * 1000;
            let delta = bar.time_ms - prev;
            if delta == 0 {
                return Err(format!("duplicate timestamp {}", bar.time_ms));
            }
            if delta < 0 {
                return Err(format!(
                    "timestamp {} is before the previous row's {prev} (rows must be ascending)",
                    bar.time_ms
                ));
            }
            if delta < step {
                return Err(format!(
                    "rows are {}s apart, less than the timeframe {timeframe} (is this {timeframe} data?)",
                    delta / 1000
                ));
            }
            if delta > step {
                return Err(format!(
                    "gap: {} missing {timeframe} bars before timestamp {} (previous row {prev})",
                    delta / step - 1,
                    bar.time_ms
                ));
            }
        }
        self.push(bar);
        Ok(())
    }

    /// Appends a bar without checks (generators that guarantee the invariants).
    pub fn push(&mut self, bar: Bar) {
        self.time_ms.push(bar.time_ms);
        self.open.push(bar.open);
        self.high.push(bar.high);
        self.low.push(bar.low);
        self.close.push(bar.close);
        self.volume.push(bar.volume);
    }

    /// Number of bars.
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// Whether there are no bars.
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }

    /// Bar `i`; panics when out of range, like slice indexing.
    #[inline(always)]
    pub fn bar(&self, i: usize) -> Bar {
        Bar {
            time_ms: self.time_ms[i],
            open: self.open[i],
            high: self.high[i],
            low: self.low[i],
            close: self.close[i],
            volume: self.volume[i],
        }
    }

    /// Every bar in order, read column by column without bounds checks.
    #[inline(always)]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Bar> + '_ {
        self.time_ms
            .iter()
            .zip(&self.open)
            .zip(&self.high)
            .zip(&self.low)
            .zip(&self.close)
            .zip(&self.volume)
            .map(|(((((&time_ms, &open), &high), &low), &close), &volume)| Bar {
                time_ms,
                open,
                high,
                low,
                close,
                volume,
            })
    }

    /// Open times of all bars.
    pub fn times(&self) -> &[i64] {
        &self.time_ms
    }

    /// Opens of all bars.
    pub fn opens(&self) -> &[Price] {
        &self.open
    }

    /// Closes of all bars.
    pub fn closes(&self) -> &[Price] {
        &self.close
    }
}

/// The checks every bar must pass, whatever its source.
pub fn check_bar(bar: &Bar) -> Result<(), String> {
    let Bar { open, high, low, close, volume, .. } = *bar;
    for (name, p) in [("open", open), ("high", high), ("low", low), ("close", close)] {
        if p.units() <= 0 {
            return Err(format!("{name} {p} is not a positive price"));
        }
    }
    if high < low {
        return Err(format!("high {high} < low {low}"));
    }
    if open > high || open < low {
        return Err(format!("open {open} is outside [low {low}, high {high}]"));
    }
    if close > high || close < low {
        return Err(format!("close {close} is outside [low {low}, high {high}]"));
    }
    if !volume.is_finite() || volume < 0.0 {
        return Err(format!("volume {volume} is not a non-negative number"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(time_ms: i64, o: i64, h: i64, l: i64, c: i64) -> Bar {
        Bar { time_ms, open: Price(o), high: Price(h), low: Price(l), close: Price(c), volume: 1.0 }
    }

    #[test]
    fn refuses_inconsistent_bars() {
        assert_eq!(check_bar(&bar(0, 5, 4, 6, 5)), Err("high 0.00000004 < low 0.00000006".into()));
        assert!(check_bar(&bar(0, 0, 4, 1, 2)).unwrap_err().contains("not a positive price"));
        assert!(check_bar(&bar(0, 9, 8, 1, 2)).unwrap_err().contains("open"));
        let mut nan = bar(0, 2, 3, 1, 2);
        nan.volume = f64::NAN;
        assert!(check_bar(&nan).unwrap_err().contains("volume"));
    }

    #[test]
    fn refuses_unsorted_duplicate_gapped_or_denser_rows() {
        let h = 3_600_000;
        let mut s = Series::default();
        s.push_checked(bar(10 * h, 2, 3, 1, 2), Timeframe::H1).expect("first bar");
        let err = |t| {
            let mut s = s.clone();
            s.push_checked(bar(t, 2, 3, 1, 2), Timeframe::H1).expect_err("refused")
        };
        assert_eq!(err(10 * h), format!("duplicate timestamp {}", 10 * h));
        assert!(err(9 * h).contains("rows must be ascending"));
        assert!(err(13 * h).starts_with("gap: 2 missing 1h bars"));
        assert!(err(10 * h + 60_000).contains("less than the timeframe 1h"));
        s.push_checked(bar(11 * h, 2, 3, 1, 2), Timeframe::H1).expect("next hour");
        assert_eq!(s.len(), 2);
    }
}
