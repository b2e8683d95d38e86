//! Simulated execution: fees and slippage in basis points, and the symbol rules an exchange
//! enforces (price tick, lot size, minimum quantity, minimum notional).

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

use crate::events::BlockReason;
use crate::strategy::Side;

/// Decimal places kept of a computed quantity (an attounit: far finer than any exchange's lot, and
/// a relative error below 1e-18 per fill even for a quantity of one). Rounding toward zero never
/// spends more than the budget.
pub const QUANTITY_DECIMALS: u32 = 18;

/// Fees and slippage as fractions of the notional (10 bps = 0.001).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Costs {
    fee_rate: Decimal,
    slippage_rate: Decimal,
    one_plus_fee: Decimal,
}

impl Costs {
    /// Costs from rates (fractions of the notional).
    pub fn new(fee_rate: Decimal, slippage_rate: Decimal) -> Self {
        Self { fee_rate, slippage_rate, one_plus_fee: Decimal::ONE + fee_rate }
    }

    /// Costs from basis points; `None` for negative or non-finite input.
    pub fn from_bps(fee_bps: f64, slippage_bps: f64) -> Option<Self> {
        let rate = |bps: f64| {
            (bps.is_finite() && bps >= 0.0)
                .then(|| Decimal::from_f64(bps))
                .flatten()
                .map(|d| d / Decimal::from(10_000))
        };
        Some(Self::new(rate(fee_bps)?, rate(slippage_bps)?))
    }

    /// Fee per fill as a fraction of the notional.
    pub fn fee_rate(&self) -> Decimal {
        self.fee_rate
    }

    /// Slippage as a fraction of the price.
    pub fn slippage_rate(&self) -> Decimal {
        self.slippage_rate
    }

    /// 1 + fee rate: what one unit of notional costs with its fee.
    pub fn one_plus_fee(&self) -> Decimal {
        self.one_plus_fee
    }
}

/// What an exchange allows for one symbol. `None` or zero means no restriction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolRules {
    /// Prices are multiples of this.
    pub tick_size: Option<Decimal>,
    /// Quantities are multiples of this.
    pub lot_step: Option<Decimal>,
    /// Smallest quantity.
    pub min_quantity: Decimal,
    /// Smallest order value (price × quantity) in the quote asset.
    pub min_notional: Decimal,
}

impl SymbolRules {
    /// No rules: any fractional quantity at any price (the canonical parity semantics).
    pub fn unrestricted() -> Self {
        Self::default()
    }

    /// The rules kuant knows for a symbol of an exchange; unrestricted when it knows none.
    /// Values from Binance spot's exchangeInfo (PRICE_FILTER, LOT_SIZE, NOTIONAL); a live session
    /// reads them from the exchange instead.
    pub fn known(exchange: &str, symbol: &str) -> Self {
        let rules = |tick: i64, tick_scale: u32, step: i64, step_scale: u32, min_notional: i64| Self {
            tick_size: Some(Decimal::new(tick, tick_scale)),
            lot_step: Some(Decimal::new(step, step_scale)),
            min_quantity: Decimal::new(step, step_scale),
            min_notional: Decimal::from(min_notional),
        };
        match (exchange, symbol) {
            ("binance", "BTCUSDT" | "BTCUSDC" | "BTCFDUSD") => rules(1, 2, 1, 5, 5),
            ("binance", "ETHUSDT" | "ETHUSDC" | "ETHFDUSD") => rules(1, 2, 1, 4, 5),
            ("binance", "SOLUSDT" | "BNBUSDT") => rules(1, 2, 1, 3, 5),
            _ => Self::unrestricted(),
        }
    }

    /// `quantity` rounded down to the lot step.
    pub fn round_quantity(&self, quantity: Decimal) -> Decimal {
        match self.lot_step {
            Some(step) if !step.is_zero() => (quantity / step).floor() * step,
            _ => quantity,
        }
    }

    /// `price` rounded to the tick against the trader: up for buys, down for sells.
    pub fn round_price(&self, price: Decimal, side: Side) -> Decimal {
        match self.tick_size {
            Some(tick) if !tick.is_zero() => {
                let ticks = price / tick;
                (if side == Side::Buy { ticks.ceil() } else { ticks.floor() }) * tick
            }
            _ => price,
        }
    }

    /// Whether an order of `quantity` worth `notional` may be placed; the reason and a detail if not.
    pub fn check(&self, quantity: Decimal, notional: Decimal) -> Result<(), (BlockReason, String)> {
        if quantity.is_zero() || quantity.is_sign_negative() {
            return Err((BlockReason::InsufficientFunds, "the quantity rounds to zero".to_owned()));
        }
        // A zero minimum (no rule) needs no comparison: decimals of different scales are
        // costly to compare, and this runs on every fill.
        if !self.min_quantity.is_zero() && quantity < self.min_quantity {
            return Err((
                BlockReason::BelowMinQuantity,
                format!("quantity {quantity} is below the minimum {}", self.min_quantity),
            ));
        }
        if !self.min_notional.is_zero() && notional < self.min_notional {
            return Err((
                BlockReason::BelowMinNotional,
                format!(
                    "order value {} is below the minimum notional {}",
                    notional.round_dp(8).normalize(),
                    self.min_notional
                ),
            ));
        }
        Ok(())
    }
}

/// The execution price of a market order with slippage, rounded to the tick.
pub fn execution_price(reference: Decimal, side: Side, costs: &Costs, rules: &SymbolRules) -> Decimal {
    if costs.slippage_rate.is_zero() && rules.tick_size.is_none() {
        return reference;
    }
    let slipped = match side {
        Side::Buy => reference * (Decimal::ONE + costs.slippage_rate),
        Side::Sell => reference * (Decimal::ONE - costs.slippage_rate),
    };
    rules.round_price(slipped, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn costs_convert_from_basis_points() {
        let c = Costs::from_bps(10.0, 5.0).expect("valid");
        assert_eq!(
            (c.fee_rate(), c.slippage_rate(), c.one_plus_fee()),
            (d("0.001"), d("0.0005"), d("1.001"))
        );
        assert!(Costs::from_bps(-1.0, 0.0).is_none());
        assert!(Costs::from_bps(f64::NAN, 0.0).is_none());
    }

    #[test]
    fn quantities_round_down_to_the_lot_and_prices_against_the_trader() {
        let r = SymbolRules::known("binance", "BTCUSDT");
        assert_eq!(r.round_quantity(d("0.123456789")), d("0.12345"));
        assert_eq!(r.round_price(d("100.001"), Side::Buy), d("100.01"));
        assert_eq!(r.round_price(d("100.009"), Side::Sell), d("100.00"));
        let c = Costs::new(Decimal::ZERO, d("0.001"));
        assert_eq!(execution_price(d("100"), Side::Buy, &c, &r), d("100.10"));
        assert_eq!(execution_price(d("100"), Side::Sell, &c, &r), d("99.90"));
    }

    #[test]
    fn orders_below_the_minimums_are_blocked_with_the_reason() {
        let r = SymbolRules::known("binance", "BTCUSDT");
        assert_eq!(r.check(d("0.00001"), d("0.3")).map_err(|e| e.0), Err(BlockReason::BelowMinNotional));
        assert_eq!(r.check(d("0.000001"), d("0.03")).map_err(|e| e.0), Err(BlockReason::BelowMinQuantity));
        assert_eq!(
            r.check(Decimal::ZERO, Decimal::ZERO).map_err(|e| e.0),
            Err(BlockReason::InsufficientFunds)
        );
        assert!(r.check(d("0.001"), d("30")).is_ok());
        assert!(SymbolRules::unrestricted().check(d("0.000000001"), d("1")).is_ok());
    }
}
