//! `rsi-mean-reversion {period, lower, upper}`: buy when Wilder's RSI falls below `lower`
//! (oversold), sell when it rises above `upper` (overbought). Signals fire on the crossing bar.

use std::collections::BTreeMap;

use kuant_crds::StrategyName;

use super::{Params, Side, Strategy, StrategyError};
use crate::candles::Bar;
use crate::indicators::Rsi;

/// RSI mean reversion.
#[derive(Clone, Debug)]
pub struct RsiMeanReversion {
    rsi: Rsi,
    lower: f64,
    upper: f64,
    previous: Option<f64>,
}

impl RsiMeanReversion {
    /// Buy below `lower`, sell above `upper`, on an RSI of `period` bars.
    pub fn new(period: usize, lower: f64, upper: f64) -> Self {
        Self { rsi: Rsi::new(period), lower, upper, previous: None }
    }

    /// From manifest parameters: `period` (default 14), `lower` (30) and `upper` (70).
    pub fn from_params(given: &BTreeMap<String, f64>) -> Result<Self, StrategyError> {
        let p = Params::new(StrategyName::RsiMeanReversion, given, &["period", "lower", "upper"])?;
        let period = p.period("period", 14)?;
        let lower = p.number("lower", 30.0, 0.0, 100.0)?;
        let upper = p.number("upper", 70.0, 0.0, 100.0)?;
        if lower >= upper {
            return Err(p.error(format!("lower ({lower}) must be less than upper ({upper})")));
        }
        Ok(Self::new(period, lower, upper))
    }
}

impl Strategy for RsiMeanReversion {
    #[inline(always)]
    fn on_bar(&mut self, bar: &Bar) -> Option<Side> {
        let rsi = self.rsi.push(bar.close.to_f64())?;
        let previous = self.previous.replace(rsi)?;
        if rsi < self.lower && previous >= self.lower {
            Some(Side::Buy)
        } else if rsi > self.upper && previous <= self.upper {
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
    fn buys_the_dip_and_sells_the_rip() {
        let mut closes = vec![100.0, 101.0, 100.0, 101.0, 100.0, 101.0];
        closes.extend([97.0, 94.0, 91.0]); // falls: RSI drops below 30
        closes.extend([95.0, 99.0, 103.0, 107.0]); // rises: RSI climbs above 70
        let s = signals(RsiMeanReversion::new(3, 30.0, 70.0), &closes);
        let sides: Vec<Side> = s.iter().map(|(_, side)| *side).collect();
        assert_eq!(sides, [Side::Buy, Side::Sell], "{s:?}");
    }
}
