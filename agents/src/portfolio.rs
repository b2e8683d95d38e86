//! Cash, the position and the trade list of one symbol's book, in exact decimals. A float mirror
//! of cash and quantity marks the book to market on every bar without decimal arithmetic.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::events::BlockReason;
use crate::execution::{Costs, QUANTITY_DECIMALS, SymbolRules, execution_price};
use crate::price::Price;
use crate::strategy::Side;

/// A round trip of one book (the symbol is the book's): an entry and, once closed, its exit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trade {
    /// Open time (Unix ms) of the bar the entry filled in.
    pub entry_time: i64,
    /// Open time of the bar the exit filled in; `null` while open.
    pub exit_time: Option<i64>,
    /// Entry execution price.
    pub entry_price: Decimal,
    /// Exit execution price; `null` while open.
    pub exit_price: Option<Decimal>,
    /// Base quantity.
    pub quantity: Decimal,
    /// Exit proceeds after fee minus entry cost including fee; `null` while open.
    pub pnl: Option<Decimal>,
    /// Fees paid, entry and exit.
    pub fees: Decimal,
}

/// What the book records of a round trip while trading; [`Book::trades`] derives the rest (pnl,
/// total fees) when asked, so a fill does no arithmetic only a report needs.
#[derive(Clone, Debug)]
struct RoundTrip {
    entry_time: i64,
    entry_price: Decimal,
    quantity: Decimal,
    entry_fee: Decimal,
    /// Quote spent on entry, fee included.
    cost: Decimal,
    exit: Option<Exit>,
}

#[derive(Clone, Copy, Debug)]
struct Exit {
    time_ms: i64,
    price: Decimal,
    fee: Decimal,
    /// Proceeds after the fee.
    net: Decimal,
}

/// A fill as the book saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Filled {
    /// Execution price.
    pub price: Decimal,
    /// Base quantity.
    pub quantity: Decimal,
    /// Fee in quote.
    pub fee: Decimal,
}

/// One symbol's book: long-only, one position at a time.
#[derive(Clone, Debug)]
pub struct Book {
    cash: Decimal,
    quantity: Decimal,
    cash_f: f64,
    quantity_f: f64,
    trips: Vec<RoundTrip>,
}

impl Book {
    /// A flat book holding `cash`.
    pub fn new(cash: Decimal) -> Self {
        Self::with_capacity(cash, 0)
    }

    /// A flat book holding `cash`, with room for `trips` round trips before it reallocates.
    pub fn with_capacity(cash: Decimal, trips: usize) -> Self {
        Self {
            cash,
            quantity: Decimal::ZERO,
            cash_f: cash.to_f64().unwrap_or(0.0),
            quantity_f: 0.0,
            trips: Vec::with_capacity(trips),
        }
    }

    /// Cash in the quote asset.
    pub fn cash(&self) -> Decimal {
        self.cash
    }

    /// Base quantity held.
    pub fn quantity(&self) -> Decimal {
        self.quantity
    }

    /// Whether a position is open.
    #[inline(always)]
    pub fn is_long(&self) -> bool {
        self.quantity_f > 0.0
    }

    /// Cash as a float (the mirror the equity curve is computed from).
    pub fn cash_f(&self) -> f64 {
        self.cash_f
    }

    /// Quantity as a float (the mirror the equity curve is computed from).
    pub fn quantity_f(&self) -> f64 {
        self.quantity_f
    }

    /// Equity at `price`, as a float (for the equity curve).
    #[inline(always)]
    pub fn equity_f(&self, price: f64) -> f64 {
        self.cash_f + self.quantity_f * price
    }

    /// Equity at `price`, exactly; `None` beyond the decimal range.
    pub fn equity(&self, price: Price) -> Option<Decimal> {
        self.quantity.checked_mul(price.to_decimal())?.checked_add(self.cash)
    }

    /// Round trips so far; the last may be open.
    pub fn trades(&self) -> Vec<Trade> {
        self.trips
            .iter()
            .map(|t| Trade {
                entry_time: t.entry_time,
                exit_time: t.exit.map(|x| x.time_ms),
                entry_price: t.entry_price,
                exit_price: t.exit.map(|x| x.price),
                quantity: t.quantity,
                pnl: t.exit.map(|x| x.net - t.cost),
                fees: t.exit.map_or(t.entry_fee, |x| t.entry_fee + x.fee),
            })
            .collect()
    }

    /// Number of round trips so far (the last may be open).
    pub fn trade_count(&self) -> usize {
        self.trips.len()
    }

    /// Buys with `budget` of quote (fee included) at the market `reference` price.
    pub fn buy(
        &mut self,
        time_ms: i64,
        reference: Price,
        budget: Decimal,
        costs: &Costs,
        rules: &SymbolRules,
    ) -> Result<Filled, (BlockReason, String)> {
        let budget = budget.min(self.cash);
        let price = execution_price(reference.to_decimal(), Side::Buy, costs, rules);
        let quantity = price
            .checked_mul(costs.one_plus_fee())
            .and_then(|unit_cost| budget.checked_div(unit_cost))
            .ok_or_else(out_of_range)?
            .round_dp_with_strategy(QUANTITY_DECIMALS, RoundingStrategy::ToZero);
        let quantity = rules.round_quantity(quantity);
        let notional = quantity.checked_mul(price).ok_or_else(out_of_range)?;
        rules.check(quantity, notional)?;
        // Spending all the cash without a lot size, the fee is what is left over, so no rounding
        // dust stays behind as cash (and never a negative balance).
        let spend_all = budget == self.cash && rules.lot_step.is_none();
        let (fee, cost) = if spend_all {
            // The quantity was rounded down from cash / (price × (1 + fee)), so what is left is
            // at least the fee.
            (self.cash - notional, self.cash)
        } else {
            let fee = notional.checked_mul(costs.fee_rate()).ok_or_else(out_of_range)?;
            if notional + fee > self.cash { (self.cash - notional, self.cash) } else { (fee, notional + fee) }
        };
        // Spending all the cash (the usual case) leaves exactly zero: no subtraction needed.
        self.cash = if cost == self.cash { Decimal::ZERO } else { self.cash - cost };
        self.quantity = if self.quantity.is_zero() { quantity } else { self.quantity + quantity };
        self.sync_floats();
        self.trips.push(RoundTrip {
            entry_time: time_ms,
            entry_price: price,
            quantity,
            entry_fee: fee,
            cost,
            exit: None,
        });
        Ok(Filled { price, quantity, fee })
    }

    /// Sells the whole position at the market `reference` price.
    pub fn sell_all(
        &mut self,
        time_ms: i64,
        reference: Price,
        costs: &Costs,
        rules: &SymbolRules,
    ) -> Result<Filled, (BlockReason, String)> {
        let price = execution_price(reference.to_decimal(), Side::Sell, costs, rules);
        let quantity = self.quantity;
        let proceeds = quantity.checked_mul(price).ok_or_else(out_of_range)?;
        rules.check(quantity, proceeds)?;
        let fee = proceeds.checked_mul(costs.fee_rate()).ok_or_else(out_of_range)?;
        let net = proceeds - fee;
        self.cash =
            if self.cash.is_zero() { net } else { self.cash.checked_add(net).ok_or_else(out_of_range)? };
        self.quantity = Decimal::ZERO;
        self.sync_floats();
        if let Some(trip) = self.trips.last_mut().filter(|t| t.exit.is_none()) {
            trip.exit = Some(Exit { time_ms, price, fee, net });
        }
        Ok(Filled { price, quantity, fee })
    }

    fn sync_floats(&mut self) {
        self.cash_f = approx_f64(self.cash);
        self.quantity_f = approx_f64(self.quantity);
    }
}

fn out_of_range() -> (BlockReason, String) {
    (
        BlockReason::AmountOutOfRange,
        "the order's amounts exceed the exact decimal range (about 7.9e28)".to_owned(),
    )
}

/// A decimal as the nearest float, give or take an ulp: mantissa over a power of ten. Far cheaper
/// than an exactly rounded conversion, and the float mirror only feeds statistics.
#[inline]
pub fn approx_f64(d: Decimal) -> f64 {
    const POW10: [f64; 29] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
        1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28,
    ];
    let m = d.mantissa();
    // The mantissa has 96 bits: beyond an i64, its high part converts exactly and only the low
    // 64 bits round (a generic i128 conversion costs several times more).
    let m = i64::try_from(m).map_or_else(
        |_| ((m >> 64) as i64) as f64 * 18_446_744_073_709_551_616.0 + m as u64 as f64,
        |small| small as f64,
    );
    m / POW10[(d.scale() as usize).min(28)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn p(s: &str) -> Price {
        Price::parse(s).expect("price")
    }

    #[test]
    fn approx_f64_is_within_an_ulp_of_the_exact_conversion() {
        for text in [
            "0",
            "1",
            "2505.56",
            "0.000000012345",
            "99.900099900099",
            "183676621976379744.26",
            "-12.5",
            // Mantissas beyond 64 bits, up to the largest.
            "12345678901234567890.123456789",
            "-7922816251426433759354.3950335",
            "79228162514264337593543950335",
        ] {
            let d: Decimal = text.parse().expect("decimal");
            let exact = d.to_f64().expect("f64");
            let approx = approx_f64(d);
            assert!(
                (approx - exact).abs() <= exact.abs() * 2.0 * f64::EPSILON,
                "{text}: {approx} vs {exact}"
            );
        }
    }

    #[test]
    fn a_round_trip_follows_the_canonical_formulas() {
        let costs = Costs::new(d("0.001"), Decimal::ZERO);
        let rules = SymbolRules::unrestricted();
        let mut book = Book::new(d("10000"));
        let buy = book.buy(1, p("100"), d("10000"), &costs, &rules).expect("buy");
        // qty = cash / (open * (1 + fee)), to 18 decimal places
        let qty = d("99.900099900099900099");
        assert_eq!(buy.quantity, qty);
        assert_eq!(book.cash(), Decimal::ZERO, "all cash spent, no dust");
        let sell = book.sell_all(2, p("110"), &costs, &rules).expect("sell");
        assert_eq!(sell.quantity, qty);
        // pnl = qty*exit*(1-fee) - qty*entry*(1+fee)
        let expected = qty * d("110") * d("0.999") - d("10000");
        let trade = &book.trades()[0];
        assert_eq!(trade.pnl, Some(expected));
        assert_eq!(book.cash(), d("10000") + expected);
        assert_eq!((trade.entry_time, trade.exit_time), (1, Some(2)));
    }

    #[test]
    fn amounts_beyond_the_decimal_range_block_the_trade_instead_of_panicking() {
        let costs = Costs::new(d("0.001"), Decimal::ZERO);
        let rules = SymbolRules::unrestricted();
        let mut book = Book::new(d("1000000000000000"));
        book.buy(1, Price(1), d("1000000000000000"), &costs, &rules).expect("a huge quantity fits");
        let err = book.sell_all(2, p("90000000000"), &costs, &rules).expect_err("proceeds overflow");
        assert_eq!(err.0, BlockReason::AmountOutOfRange);
        assert!(book.is_long(), "nothing changed");
        assert_eq!(book.equity(p("90000000000")), None);
    }

    #[test]
    fn lot_rules_round_the_quantity_and_keep_the_rest_as_cash() {
        let costs = Costs::new(d("0.001"), Decimal::ZERO);
        let rules = SymbolRules::known("binance", "BTCUSDT");
        let mut book = Book::new(d("1000"));
        let buy = book.buy(1, p("30000"), d("1000"), &costs, &rules).expect("buy");
        assert_eq!(buy.quantity, d("0.03330"));
        assert_eq!(buy.fee, d("0.999"));
        assert_eq!(book.cash(), d("1000") - d("999") - d("0.999"));
    }

    #[test]
    fn a_budget_below_the_minimum_notional_is_blocked_and_changes_nothing() {
        let costs = Costs::new(d("0.001"), Decimal::ZERO);
        let rules = SymbolRules::known("binance", "BTCUSDT");
        let mut book = Book::new(d("4"));
        let err = book.buy(1, p("30000"), d("4"), &costs, &rules).expect_err("too small");
        assert_eq!(err.0, BlockReason::BelowMinNotional);
        assert_eq!(err.1, "order value 3.9 is below the minimum notional 5");
        let mut book = Book::new(d("4.5"));
        assert!(book.buy(1, p("10"), d("4.5"), &costs, &rules).is_err());
        assert_eq!(book.cash(), d("4.5"));
        assert!(book.trades().is_empty());
    }
}
