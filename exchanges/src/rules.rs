//! A symbol's trading rules as an exchange publishes them (Binance's `PRICE_FILTER`, `LOT_SIZE`,
//! `MARKET_LOT_SIZE`, `MIN_NOTIONAL` and `NOTIONAL` filters), and the check every order passes
//! before it is sent: an order they refuse never leaves; it becomes a blocked trade with its
//! reason. The same check is the simulator's, so both refuse the same orders.

use rust_decimal::Decimal;

use crate::model::{OrderKind, OrderRequest};

/// Bounds and step of a price or a quantity. Zero means "no such rule", as in Binance's filters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// Smallest allowed (0: none).
    pub min: Decimal,
    /// Largest allowed (0: none).
    pub max: Decimal,
    /// Values are `min` plus a multiple of this (0: any).
    pub step: Decimal,
}

impl Range {
    /// Which bound or step `value` breaks, if any.
    fn check(&self, value: Decimal) -> Option<Break> {
        if !self.min.is_zero() && value < self.min {
            return Some(Break::Below(self.min));
        }
        if !self.max.is_zero() && value > self.max {
            return Some(Break::Above(self.max));
        }
        if !self.step.is_zero() && !((value - self.min) % self.step).is_zero() {
            return Some(Break::Step(self.step));
        }
        None
    }

    /// `value` rounded down onto the step.
    pub fn floor(&self, value: Decimal) -> Decimal {
        if self.step.is_zero() {
            return value;
        }
        self.min + ((value - self.min) / self.step).floor() * self.step
    }
}

enum Break {
    Below(Decimal),
    Above(Decimal),
    Step(Decimal),
}

/// Minimum and maximum order value (price × quantity, in the quote asset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notional {
    /// Smallest order value (0: none).
    pub min: Decimal,
    /// Whether the minimum applies to market orders too.
    pub min_applies_to_market: bool,
    /// Largest order value (0: none).
    pub max: Decimal,
    /// Whether the maximum applies to market orders too.
    pub max_applies_to_market: bool,
}

/// What an exchange allows for one symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeRules {
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// E.g. `BTC`.
    pub base_asset: String,
    /// E.g. `USDT`.
    pub quote_asset: String,
    /// Whether the symbol trades now (Binance's status `TRADING`).
    pub trading: bool,
    /// `PRICE_FILTER`.
    pub price: Range,
    /// `LOT_SIZE`: quantities of every order.
    pub lot: Range,
    /// `MARKET_LOT_SIZE`: quantities of market orders (on top of `lot`).
    pub market_lot: Range,
    /// `NOTIONAL` (or the older `MIN_NOTIONAL`).
    pub notional: Notional,
}

/// Why an order may not be sent: the rule it breaks, in words a trader reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    /// The symbol is not trading.
    #[error("{0} is not trading now")]
    NotTrading(String),
    /// Zero or negative quantity.
    #[error("the quantity must be positive, not {0}")]
    NonPositiveQuantity(Decimal),
    /// Below the smallest price.
    #[error("price {price} is below the minimum {min}")]
    PriceTooLow {
        /// The order's price.
        price: Decimal,
        /// The rule.
        min: Decimal,
    },
    /// Above the largest price.
    #[error("price {price} is above the maximum {max}")]
    PriceTooHigh {
        /// The order's price.
        price: Decimal,
        /// The rule.
        max: Decimal,
    },
    /// Not on the tick.
    #[error("price {price} is not a multiple of the tick size {tick}")]
    PriceOffTick {
        /// The order's price.
        price: Decimal,
        /// The rule.
        tick: Decimal,
    },
    /// Below the smallest quantity (`LOT_SIZE` or `MARKET_LOT_SIZE`).
    #[error("quantity {quantity} is below the minimum {min}")]
    QuantityTooSmall {
        /// The order's quantity.
        quantity: Decimal,
        /// The rule.
        min: Decimal,
    },
    /// Above the largest quantity.
    #[error("quantity {quantity} is above the maximum {max}")]
    QuantityTooLarge {
        /// The order's quantity.
        quantity: Decimal,
        /// The rule.
        max: Decimal,
    },
    /// Not on the lot step.
    #[error("quantity {quantity} is not a multiple of the lot step {step}")]
    QuantityOffStep {
        /// The order's quantity.
        quantity: Decimal,
        /// The rule.
        step: Decimal,
    },
    /// The order is worth too little.
    #[error("order value {value} is below the minimum notional {min}")]
    NotionalTooSmall {
        /// Price × quantity.
        value: Decimal,
        /// The rule.
        min: Decimal,
    },
    /// The order is worth too much.
    #[error("order value {value} is above the maximum notional {max}")]
    NotionalTooLarge {
        /// Price × quantity.
        value: Decimal,
        /// The rule.
        max: Decimal,
    },
}

impl RuleViolation {
    /// The name of the exchange filter it breaks, as Binance names it (`PRICE_FILTER`,
    /// `LOT_SIZE`, `NOTIONAL`; `TRADING` when the symbol does not trade).
    pub fn filter(&self) -> &'static str {
        match self {
            Self::NotTrading(_) => "TRADING",
            Self::PriceTooLow { .. } | Self::PriceTooHigh { .. } | Self::PriceOffTick { .. } => {
                "PRICE_FILTER"
            }
            Self::NonPositiveQuantity(_)
            | Self::QuantityTooSmall { .. }
            | Self::QuantityTooLarge { .. }
            | Self::QuantityOffStep { .. } => "LOT_SIZE",
            Self::NotionalTooSmall { .. } | Self::NotionalTooLarge { .. } => "NOTIONAL",
        }
    }
}

impl ExchangeRules {
    /// Whether `order` may be sent. `reference_price` values a market order's notional (the
    /// last or average price); a limit order is valued at its own price.
    pub fn check(&self, order: &OrderRequest, reference_price: Decimal) -> Result<(), RuleViolation> {
        if !self.trading {
            return Err(RuleViolation::NotTrading(self.symbol.clone()));
        }
        let quantity = order.quantity;
        if quantity <= Decimal::ZERO {
            return Err(RuleViolation::NonPositiveQuantity(quantity));
        }
        let price_check = |price: Decimal| match self.price.check(price) {
            Some(Break::Below(min)) => Err(RuleViolation::PriceTooLow { price, min }),
            Some(Break::Above(max)) => Err(RuleViolation::PriceTooHigh { price, max }),
            Some(Break::Step(tick)) => Err(RuleViolation::PriceOffTick { price, tick }),
            None => Ok(()),
        };
        let (value, market) = match order.kind {
            OrderKind::Limit { price, .. } => {
                price_check(price)?;
                (price * quantity, false)
            }
            // Both prices follow PRICE_FILTER; it is valued at its limit.
            OrderKind::StopLossLimit { stop_price, price, .. } => {
                price_check(stop_price)?;
                price_check(price)?;
                (price * quantity, false)
            }
            OrderKind::Market => (reference_price * quantity, true),
        };
        let lots = if market { [Some(&self.lot), Some(&self.market_lot)] } else { [Some(&self.lot), None] };
        for lot in lots.into_iter().flatten() {
            match lot.check(quantity) {
                Some(Break::Below(min)) => return Err(RuleViolation::QuantityTooSmall { quantity, min }),
                Some(Break::Above(max)) => return Err(RuleViolation::QuantityTooLarge { quantity, max }),
                Some(Break::Step(step)) => return Err(RuleViolation::QuantityOffStep { quantity, step }),
                None => {}
            }
        }
        let n = &self.notional;
        if !n.min.is_zero() && (!market || n.min_applies_to_market) && value < n.min {
            return Err(RuleViolation::NotionalTooSmall { value, min: n.min });
        }
        if !n.max.is_zero() && (!market || n.max_applies_to_market) && value > n.max {
            return Err(RuleViolation::NotionalTooLarge { value, max: n.max });
        }
        Ok(())
    }

    /// `quantity` rounded down to what the lot rules allow (market orders: both lot rules).
    pub fn floor_quantity(&self, quantity: Decimal, market: bool) -> Decimal {
        let lot = self.lot.floor(quantity);
        if market { self.market_lot.floor(lot) } else { lot }
    }

    /// The engine's view of these rules (tick, lot step, minimum quantity and notional), so a
    /// backtest or a paper session refuses what the exchange would.
    pub fn engine_rules(&self) -> kuant_agents::execution::SymbolRules {
        let some = |d: Decimal| (!d.is_zero()).then_some(d);
        kuant_agents::execution::SymbolRules {
            tick_size: some(self.price.step),
            lot_step: some(self.lot.step),
            min_quantity: self.lot.min,
            min_notional: self.notional.min,
        }
    }

    /// Binance spot's published rules for the symbols kuant's examples trade (as its
    /// `exchangeInfo` gave them): the simulator's defaults. `None` for another symbol.
    pub fn binance_default(symbol: &str) -> Option<Self> {
        let d = |s: &str| s.parse::<Decimal>().unwrap_or_default();
        let (base, quote, min_qty, max_qty, market_max) = match symbol {
            "BTCUSDT" => ("BTC", "USDT", "0.00001", "9000", "100"),
            "ETHUSDT" => ("ETH", "USDT", "0.0001", "9000", "2000"),
            _ => return None,
        };
        Some(Self {
            symbol: symbol.to_owned(),
            base_asset: base.to_owned(),
            quote_asset: quote.to_owned(),
            trading: true,
            price: Range { min: d("0.01"), max: d("1000000"), step: d("0.01") },
            lot: Range { min: d(min_qty), max: d(max_qty), step: d(min_qty) },
            market_lot: Range { min: Decimal::ZERO, max: d(market_max), step: Decimal::ZERO },
            notional: Notional {
                min: d("5"),
                min_applies_to_market: true,
                max: d("9000000"),
                max_applies_to_market: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientOrderId, Side, TimeInForce};

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn limit(price: &str, quantity: &str) -> OrderRequest {
        OrderRequest {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            kind: OrderKind::Limit { price: d(price), time_in_force: TimeInForce::Gtc },
            quantity: d(quantity),
            client_id: ClientOrderId::new("t1").expect("id"),
        }
    }

    fn market(quantity: &str) -> OrderRequest {
        OrderRequest { kind: OrderKind::Market, ..limit("1", quantity) }
    }

    #[test]
    fn a_valid_order_passes() {
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
        assert_eq!(rules.check(&limit("60000.01", "0.001"), d("60000")), Ok(()));
        assert_eq!(rules.check(&market("0.00100"), d("60000")), Ok(()));
    }

    #[test]
    fn each_filter_refuses_what_it_must() {
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
        let at = d("60000");
        let check = |o: &OrderRequest| rules.check(o, at).expect_err("refused");
        assert!(matches!(check(&limit("60000.001", "0.001")), RuleViolation::PriceOffTick { .. }));
        assert!(matches!(check(&limit("0.001", "0.001")), RuleViolation::PriceTooLow { .. }));
        assert!(matches!(check(&limit("2000000", "0.001")), RuleViolation::PriceTooHigh { .. }));
        assert!(matches!(check(&limit("60000", "0.000001")), RuleViolation::QuantityTooSmall { .. }));
        assert!(matches!(check(&limit("60000", "0.000015")), RuleViolation::QuantityOffStep { .. }));
        assert!(matches!(check(&limit("60000", "9001")), RuleViolation::QuantityTooLarge { .. }));
        assert!(matches!(check(&market("101")), RuleViolation::QuantityTooLarge { .. }));
        assert!(matches!(check(&limit("60000", "0.00005")), RuleViolation::NotionalTooSmall { .. }));
        assert!(matches!(check(&market("0.00005")), RuleViolation::NotionalTooSmall { .. }));
        assert!(matches!(check(&limit("999999", "9.1")), RuleViolation::NotionalTooLarge { .. }));
        assert!(matches!(check(&market("0")), RuleViolation::NonPositiveQuantity(_)));
        let message = check(&limit("60000", "0.00005")).to_string();
        assert_eq!(message, "order value 3.00000 is below the minimum notional 5");
        assert_eq!(check(&limit("60000", "0.00005")).filter(), "NOTIONAL");
        assert_eq!(check(&market("0")).filter(), "LOT_SIZE");
        assert_eq!(check(&limit("60000", "0.000015")).filter(), "LOT_SIZE");
        assert_eq!(check(&limit("60000.001", "0.001")).filter(), "PRICE_FILTER");
    }

    #[test]
    fn a_maximum_that_does_not_apply_to_market_orders_lets_them_through() {
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
        // 99 BTC at 100,000 = 9.9M, over the maximum notional, which does not apply to market orders.
        assert_eq!(rules.check(&market("99"), d("100000")), Ok(()));
        let halted = ExchangeRules { trading: false, ..rules };
        assert!(matches!(halted.check(&market("1"), d("1")), Err(RuleViolation::NotTrading(_))));
    }

    #[test]
    fn quantities_round_down_onto_the_step() {
        let rules = ExchangeRules::binance_default("ETHUSDT").expect("rules");
        assert_eq!(rules.floor_quantity(d("1.23456789"), false), d("1.2345"));
        let odd = Range { min: d("0.5"), max: Decimal::ZERO, step: d("0.2") };
        assert_eq!(odd.floor(d("1.0")), d("0.9"));
        let engine = rules.engine_rules();
        assert_eq!(engine.lot_step, Some(d("0.0001")));
        assert_eq!(engine.min_notional, d("5"));
    }
}
