//! `donchian-breakout {period}`: buy when a close breaks above the highest high of the previous
//! `period` bars, sell when one breaks below their lowest low. Each breakout signals once.

use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError};
use crate::candles::Bar;
use crate::indicators::RollingExtreme;

/// Donchian channel breakout.
#[derive(Clone, Debug)]
pub struct DonchianBreakout {
    highs: RollingExtreme,
    lows: RollingExtreme,
    last: Option<Side>,
}

impl DonchianBreakout {
    /// A channel over the previous `period` bars.
    pub fn new(period: usize) -> Self {
        Self { highs: RollingExtreme::max(period), lows: RollingExtreme::min(period), last: None }
    }

    /// From manifest parameters: `period` (default 20).
    pub fn from_params(given: &BTreeMap<String, f64>) -> Result<Self, StrategyError> {
        let p = Params::new(StrategyName::DonchianBreakout, given, &["period"])?;
        Ok(Self::new(p.period("period", 20)?))
    }
}

impl Strategy for DonchianBreakout {
    #[inline(always)]
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        // The channel of the bars before this one: no look-ahead into the current bar.
        let signal = match (self.highs.value(), self.lows.value()) {
            (Some(upper), _) if bar.close > upper && self.last != Some(Side::Buy) => Some(Side::Buy),
            (_, Some(lower)) if bar.close < lower && self.last != Some(Side::Sell) => Some(Side::Sell),
            _ => None,
        };
        self.highs.push(bar.high);
        self.lows.push(bar.low);
        if signal.is_some() {
            self.last = signal;
        }
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::signals;

    #[test]
    fn signals_each_breakout_once() {
        let closes = [10.0, 11.0, 10.0, 12.0, 13.0, 14.0, 9.0, 8.0];
        // period 3: bar 3 closes 12 > max(10,11,10) → buy; 13 and 14 are no new signal;
        // bar 6 closes 9 < min(12,13,14) → sell; bar 7 no repeat.
        assert_eq!(signals(DonchianBreakout::new(3), &closes), vec![(3, Side::Buy), (6, Side::Sell)]);
    }
}
