//! Risk, decided before any order leaves: the session's risk desk.
//!
//! Every intent to trade asks the desk first. A buy reserves its cost (quote, fee included) from
//! the budget and a sell reserves the base it sells from the position, so intents decided at the
//! same time can never spend one balance twice; a reservation is used as the order fills and what
//! is left is released when the order ends (filled, cancelled, rejected, expired). The desk also
//! holds the session's limits (largest position, largest order, open orders, orders per minute)
//! and halts trading when the day's loss or the fall from the equity peak goes beyond its limit:
//! the daily-loss halt lifts at 00:00 UTC, the others only when a human resumes.
//!
//! Pure: no clock (times are passed in), no IO. A session shares one desk between its tasks
//! behind a lock; each call is whole.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use rust_decimal::Decimal;

use crate::strategy::Side;

/// One UTC day, in ms.
const DAY_MS: i64 = 86_400_000;
/// The window of `max_orders_per_minute`, in ms.
const MINUTE_MS: i64 = 60_000;

/// A session's limits, as fractions (a spec's percentages divided by 100).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskLimits {
    /// Largest position of one symbol, as a fraction of equity.
    pub max_position: Decimal,
    /// Largest notional of one order in the quote asset; `None`: no cap beyond the budget.
    pub max_order_notional: Option<Decimal>,
    /// Most orders open at once.
    pub max_open_orders: u32,
    /// Most orders submitted in any 60 s.
    pub max_orders_per_minute: u32,
    /// Loss today, as a fraction of the day's starting equity, that halts trading until 00:00 UTC.
    pub max_daily_loss: Decimal,
    /// Fall from the equity peak, as a fraction, that halts trading until a human resumes.
    pub max_drawdown: Decimal,
}

/// A percentage from a spec that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("risk.{field}: {value} is not a percentage between 0 and 100")]
pub struct BadPercentage {
    /// The spec's field.
    pub field: &'static str,
    /// What it holds.
    pub value: String,
}

/// A spec's percentage (0 to 100) as a fraction, to six decimals of a percent; `field` names it
/// in the error.
pub fn fraction(field: &'static str, pct: f64) -> Result<Decimal, BadPercentage> {
    let bad = || BadPercentage { field, value: pct.to_string() };
    if !(0.0..=100.0).contains(&pct) {
        return Err(bad());
    }
    Decimal::from_f64_retain(pct).map(|p| p.round_dp(6) / Decimal::ONE_HUNDRED).ok_or_else(bad)
}

impl RiskLimits {
    /// The limits of a TradingSession's `spec.risk`.
    pub fn from_spec(risk: &kuant_crds::session::SessionRisk) -> Result<Self, BadPercentage> {
        Ok(Self {
            max_position: fraction("maxPositionPct", risk.max_position_pct)?,
            max_order_notional: risk.max_order_notional.map(|a| a.value()),
            max_open_orders: risk.max_open_orders,
            max_orders_per_minute: risk.max_orders_per_minute,
            max_daily_loss: fraction("maxDailyLossPct", risk.max_daily_loss_pct)?,
            max_drawdown: fraction("maxDrawdownPct", risk.max_drawdown_pct)?,
        })
    }
}

/// Why trading stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// Today's loss went beyond the limit (lifts at 00:00 UTC, or when a human resumes).
    DailyLoss {
        /// Today's loss as a fraction of the day's starting equity.
        loss: Decimal,
        /// The limit.
        limit: Decimal,
    },
    /// The fall from the equity peak went beyond the limit.
    Drawdown {
        /// The fall as a fraction of the peak.
        drawdown: Decimal,
        /// The limit.
        limit: Decimal,
    },
    /// Something outside the desk (a recovery mismatch, a reconciliation drift, a human).
    External {
        /// The condition reason, e.g. `RecoveryMismatch`.
        reason: String,
        /// What a person reads.
        message: String,
    },
}

impl Halt {
    /// The reason a condition shows, e.g. `DailyLossLimit`.
    pub fn reason(&self) -> &str {
        match self {
            Self::DailyLoss { .. } => "DailyLossLimit",
            Self::Drawdown { .. } => "DrawdownLimit",
            Self::External { reason, .. } => reason,
        }
    }
}

fn pct(f: Decimal) -> Decimal {
    (f * Decimal::ONE_HUNDRED).round_dp(2).normalize()
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DailyLoss { loss, limit } => write!(
                f,
                "today's loss is {} % of the day's starting equity, beyond maxDailyLossPct {} %: trading halted until 00:00 UTC or a human resumes",
                pct(*loss),
                pct(*limit)
            ),
            Self::Drawdown { drawdown, limit } => write!(
                f,
                "equity is {} % below its peak, beyond maxDrawdownPct {} %: trading halted until a human resumes",
                pct(*drawdown),
                pct(*limit)
            ),
            Self::External { message, .. } => f.write_str(message),
        }
    }
}

/// Why the desk refused an intent: a `trade_blocked` event's reason and its figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// Trading is halted.
    Halted(Halt),
    /// The intent was already approved (its id is its idempotency key).
    Duplicate,
    /// The unreserved budget cannot pay for it.
    InsufficientBudget {
        /// Cost with the fee.
        needed: Decimal,
        /// Unreserved budget.
        free: Decimal,
    },
    /// A sell of more than the position holds beyond what other sells reserved.
    InsufficientPosition {
        /// To sell.
        wanted: Decimal,
        /// Held and not reserved.
        free: Decimal,
    },
    /// The position would grow beyond `max_position` of equity.
    MaxPosition {
        /// The position's value after the order.
        after: Decimal,
        /// The most it may be.
        limit: Decimal,
    },
    /// The order's notional is beyond `max_order_notional`.
    MaxOrderNotional {
        /// Its notional.
        notional: Decimal,
        /// The limit.
        limit: Decimal,
    },
    /// `max_open_orders` orders are open.
    MaxOpenOrders(u32),
    /// `max_orders_per_minute` orders went out in the last 60 s.
    MaxOrdersPerMinute(u32),
}

impl Block {
    /// The stored reason, e.g. `insufficient_budget`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Halted(_) => "halted",
            Self::Duplicate => "duplicate_intent",
            Self::InsufficientBudget { .. } => "insufficient_budget",
            Self::InsufficientPosition { .. } => "insufficient_position",
            Self::MaxPosition { .. } => "max_position_pct",
            Self::MaxOrderNotional { .. } => "max_order_notional",
            Self::MaxOpenOrders(_) => "max_open_orders",
            Self::MaxOrdersPerMinute(_) => "max_orders_per_minute",
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Halted(h) => write!(f, "halted ({}): {h}", h.reason()),
            Self::Duplicate => f.write_str("this intent was already approved"),
            Self::InsufficientBudget { needed, free } => {
                write!(f, "needs {needed} of the budget, {free} is free (the rest is reserved or spent)")
            }
            Self::InsufficientPosition { wanted, free } => {
                write!(f, "sells {wanted}, the position has {free} not already being sold")
            }
            Self::MaxPosition { after, limit } => {
                write!(f, "the position would be worth {after}, beyond maxPositionPct ({limit})")
            }
            Self::MaxOrderNotional { notional, limit } => {
                write!(f, "notional {notional} is beyond maxOrderNotional {limit}")
            }
            Self::MaxOpenOrders(n) => write!(f, "{n} orders are open (maxOpenOrders)"),
            Self::MaxOrdersPerMinute(n) => {
                write!(f, "{n} orders went out in the last minute (maxOrdersPerMinute)")
            }
        }
    }
}

/// One execution of an order, as the desk counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Execution<'a> {
    /// E.g. `BTCUSDT`.
    pub symbol: &'a str,
    /// Buy or sell.
    pub side: Side,
    /// Base quantity.
    pub quantity: Decimal,
    /// Price.
    pub price: Decimal,
    /// Fee charged.
    pub fee: Decimal,
    /// Whether the fee was charged in the base asset (as Binance charges a buy) rather than the
    /// quote.
    pub fee_in_base: bool,
}

/// What a strategy wants, as the desk sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// Its id (the event id; the order's client id derives from it).
    pub id: String,
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Base quantity.
    pub quantity: Decimal,
    /// The price it is valued at (a limit's price, or the latest price).
    pub price: Decimal,
}

#[derive(Clone, Debug)]
struct Reservation {
    symbol: String,
    side: Side,
    /// Quote still held for a buy.
    quote: Decimal,
    /// Base still held for a sell.
    base: Decimal,
}

#[derive(Clone, Copy, Debug, Default)]
struct Holding {
    quantity: Decimal,
    /// Being sold by open orders.
    selling: Decimal,
}

/// The risk desk of one session.
#[derive(Clone, Debug)]
pub struct Desk {
    limits: RiskLimits,
    fee_rate: Decimal,
    /// Budget neither reserved nor spent.
    free_quote: Decimal,
    reservations: HashMap<String, Reservation>,
    holdings: HashMap<String, Holding>,
    prices: HashMap<String, Decimal>,
    /// Submission times of the last minute.
    recent: VecDeque<i64>,
    equity: Decimal,
    day: i64,
    day_start_equity: Decimal,
    peak: Decimal,
    halt: Option<Halt>,
}

impl Desk {
    /// A desk for a session with `budget` of the quote asset (nothing held), paying `fee_rate`
    /// per fill, starting at `now_ms`.
    pub fn new(limits: RiskLimits, budget: Decimal, fee_rate: Decimal, now_ms: i64) -> Self {
        Self {
            limits,
            fee_rate,
            free_quote: budget,
            reservations: HashMap::new(),
            holdings: HashMap::new(),
            prices: HashMap::new(),
            recent: VecDeque::new(),
            equity: budget,
            day: now_ms.div_euclid(DAY_MS),
            day_start_equity: budget,
            peak: budget,
            halt: None,
        }
    }

    /// Budget neither reserved nor spent.
    pub fn free_quote(&self) -> Decimal {
        self.free_quote
    }

    /// Quote held for open buys.
    pub fn reserved_quote(&self) -> Decimal {
        self.reservations.values().map(|r| r.quote).sum()
    }

    /// The position of `symbol`.
    pub fn position(&self, symbol: &str) -> Decimal {
        self.holdings.get(symbol).map_or(Decimal::ZERO, |h| h.quantity)
    }

    /// Open intents (one order each).
    pub fn open(&self) -> usize {
        self.reservations.len()
    }

    /// The ids of the open intents.
    pub fn open_ids(&self) -> impl Iterator<Item = &str> {
        self.reservations.keys().map(String::as_str)
    }

    /// Why trading is halted, if it is.
    pub fn halted(&self) -> Option<&Halt> {
        self.halt.as_ref()
    }

    /// Approves `intent` at `now_ms` and reserves what it may spend, or says why not.
    pub fn approve(&mut self, intent: &Intent, now_ms: i64) -> Result<(), Block> {
        self.roll_day(now_ms);
        if let Some(h) = &self.halt {
            return Err(Block::Halted(h.clone()));
        }
        if self.reservations.contains_key(&intent.id) {
            return Err(Block::Duplicate);
        }
        if self.reservations.len() >= self.limits.max_open_orders as usize {
            return Err(Block::MaxOpenOrders(self.limits.max_open_orders));
        }
        while self.recent.front().is_some_and(|&t| t <= now_ms - MINUTE_MS) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limits.max_orders_per_minute as usize {
            return Err(Block::MaxOrdersPerMinute(self.limits.max_orders_per_minute));
        }
        let notional = intent.quantity * intent.price;
        if let Some(limit) = self.limits.max_order_notional
            && notional > limit
        {
            return Err(Block::MaxOrderNotional { notional, limit });
        }
        let holding = self.holdings.get(&intent.symbol).copied().unwrap_or_default();
        let reservation = match intent.side {
            Side::Buy => {
                let needed = notional * (Decimal::ONE + self.fee_rate);
                if needed > self.free_quote {
                    return Err(Block::InsufficientBudget { needed, free: self.free_quote });
                }
                // What the symbol will hold: the position, open buys, and this one.
                let buying: Decimal = self
                    .reservations
                    .values()
                    .filter(|r| r.symbol == intent.symbol && r.side == Side::Buy)
                    .map(|r| r.quote)
                    .sum();
                let after = holding.quantity * intent.price + buying + needed;
                let limit = self.limits.max_position * self.equity;
                if after > limit {
                    return Err(Block::MaxPosition { after, limit });
                }
                self.free_quote -= needed;
                Reservation {
                    symbol: intent.symbol.clone(),
                    side: Side::Buy,
                    quote: needed,
                    base: Decimal::ZERO,
                }
            }
            Side::Sell => {
                let free = holding.quantity - holding.selling;
                if intent.quantity > free {
                    return Err(Block::InsufficientPosition { wanted: intent.quantity, free });
                }
                self.holdings.entry(intent.symbol.clone()).or_default().selling += intent.quantity;
                Reservation {
                    symbol: intent.symbol.clone(),
                    side: Side::Sell,
                    quote: Decimal::ZERO,
                    base: intent.quantity,
                }
            }
        };
        self.recent.push_back(now_ms);
        self.reservations.insert(intent.id.clone(), reservation);
        Ok(())
    }

    /// A fill of intent `id`'s order. A fill of an unknown intent (already ended) still moves
    /// the position and the budget; [`Desk::end`] releases what the order did not use.
    pub fn fill(&mut self, id: &str, execution: &Execution<'_>) {
        let Execution { symbol, side, quantity, price, fee, fee_in_base } = *execution;
        let notional = quantity * price;
        let (quote_fee, base_fee) = if fee_in_base { (Decimal::ZERO, fee) } else { (fee, Decimal::ZERO) };
        let holding = self.holdings.entry(symbol.to_owned()).or_default();
        match side {
            Side::Buy => {
                holding.quantity += quantity - base_fee;
                let cost = notional + quote_fee;
                match self.reservations.get_mut(id) {
                    Some(r) => {
                        // Paid from the reservation; beyond it (a worse price), from the budget.
                        let from_reservation = cost.min(r.quote);
                        r.quote -= from_reservation;
                        self.free_quote -= cost - from_reservation;
                    }
                    None => self.free_quote -= cost,
                }
            }
            Side::Sell => {
                holding.quantity -= quantity + base_fee;
                if let Some(r) = self.reservations.get_mut(id) {
                    let released = quantity.min(r.base);
                    r.base -= released;
                    holding.selling -= released;
                }
                self.free_quote += notional - quote_fee;
            }
        }
        self.prices.insert(symbol.to_owned(), price);
    }

    /// Intent `id`'s order ended (filled, cancelled, rejected, expired, or never sent): what its
    /// reservation still holds goes back.
    pub fn end(&mut self, id: &str) {
        let Some(r) = self.reservations.remove(id) else { return };
        self.free_quote += r.quote;
        if let Some(h) = self.holdings.get_mut(&r.symbol) {
            h.selling -= r.base;
        }
    }

    /// The latest price of `symbol`, at `now_ms`: equity is valued again, the day rolls at 00:00
    /// UTC, and a loss beyond the limits halts trading. Returns the halt when this made one.
    pub fn mark(&mut self, symbol: &str, price: Decimal, now_ms: i64) -> Option<Halt> {
        self.prices.insert(symbol.to_owned(), price);
        self.roll_day(now_ms);
        let held: Decimal = self
            .holdings
            .iter()
            .map(|(s, h)| h.quantity * self.prices.get(s).copied().unwrap_or_default())
            .sum();
        self.equity = self.free_quote + self.reserved_quote() + held;
        self.peak = self.peak.max(self.equity);
        if self.halt.is_some() {
            return None;
        }
        // The drawdown first: it holds until a human resumes, the daily loss only for the day.
        let drawdown =
            if self.peak.is_zero() { Decimal::ZERO } else { (self.peak - self.equity) / self.peak };
        let loss = if self.day_start_equity.is_zero() {
            Decimal::ZERO
        } else {
            (self.day_start_equity - self.equity) / self.day_start_equity
        };
        let halt = if drawdown > self.limits.max_drawdown {
            Some(Halt::Drawdown { drawdown, limit: self.limits.max_drawdown })
        } else if loss > self.limits.max_daily_loss {
            Some(Halt::DailyLoss { loss, limit: self.limits.max_daily_loss })
        } else {
            None
        };
        self.halt.clone_from(&halt);
        halt
    }

    /// The equity as last marked.
    pub fn equity(&self) -> Decimal {
        self.equity
    }

    /// Profit or loss since the day (UTC) began, or since the last restart or resume.
    pub fn pnl_today(&self) -> Decimal {
        self.equity - self.day_start_equity
    }

    /// Halts trading for a reason outside the desk.
    pub fn halt(&mut self, reason: &str, message: &str) {
        self.halt = Some(Halt::External { reason: reason.to_owned(), message: message.to_owned() });
    }

    /// After a restart: the books as the store and the exchange left them — `cash` of the quote
    /// free, `position` of `symbol` held at `price`, nothing reserved. The equity's peak and the
    /// day's start begin again from there (the loss limits count from the restart).
    pub fn restore(&mut self, symbol: &str, cash: Decimal, position: Decimal, price: Decimal) {
        self.reservations.clear();
        self.free_quote = cash;
        self.holdings.insert(symbol.to_owned(), Holding { quantity: position, selling: Decimal::ZERO });
        if !price.is_zero() {
            self.prices.insert(symbol.to_owned(), price);
        }
        self.equity = cash + position * price;
        self.peak = self.equity;
        self.day_start_equity = self.equity;
    }

    /// A human resumes trading: the halt ends, and the peak and the day start again from the
    /// equity now (else the same loss would halt again at once).
    pub fn resume(&mut self) {
        self.halt = None;
        self.peak = self.equity;
        self.day_start_equity = self.equity;
    }

    fn roll_day(&mut self, now_ms: i64) {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.day_start_equity = self.equity;
            if matches!(self.halt, Some(Halt::DailyLoss { .. })) {
                self.halt = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn limits() -> RiskLimits {
        RiskLimits {
            max_position: d("1"),
            max_order_notional: None,
            max_open_orders: 1000,
            max_orders_per_minute: 6000,
            max_daily_loss: d("0.05"),
            max_drawdown: d("0.20"),
        }
    }

    fn buy(id: &str, quantity: &str, price: &str) -> Intent {
        Intent {
            id: id.into(),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            quantity: d(quantity),
            price: d(price),
        }
    }

    fn ex(side: Side, quantity: &str, price: &str, fee: &str) -> Execution<'static> {
        Execution {
            symbol: "BTCUSDT",
            side,
            quantity: d(quantity),
            price: d(price),
            fee: d(fee),
            fee_in_base: false,
        }
    }

    fn sell(id: &str, quantity: &str, price: &str) -> Intent {
        Intent { side: Side::Sell, ..buy(id, quantity, price) }
    }

    #[test]
    fn a_buy_reserves_its_cost_and_gives_back_what_it_did_not_use() {
        let mut desk = Desk::new(limits(), d("1000"), d("0.001"), 0);
        desk.approve(&buy("a", "1", "100"), 0).expect("approved");
        assert_eq!((desk.free_quote(), desk.reserved_quote()), (d("899.9"), d("100.1")));
        // Filled below the reference: the rest comes back when the order ends.
        desk.fill("a", &ex(Side::Buy, "1", "99", "0.099"));
        desk.end("a");
        assert_eq!((desk.free_quote(), desk.reserved_quote()), (d("1000") - d("99.099"), d("0")));
        assert_eq!(desk.position("BTCUSDT"), d("1"));
        // A cancelled one gives everything back.
        desk.approve(&buy("b", "1", "100"), 1).expect("approved");
        desk.end("b");
        assert_eq!(desk.free_quote(), d("900.901"));
    }

    #[test]
    fn two_sells_cannot_sell_one_position_twice() {
        let mut desk = Desk::new(limits(), d("1000"), d("0"), 0);
        desk.fill("x", &ex(Side::Buy, "2", "100", "0"));
        desk.approve(&sell("s1", "1.5", "100"), 0).expect("approved");
        let second = desk.approve(&sell("s2", "1", "100"), 0);
        assert_eq!(second, Err(Block::InsufficientPosition { wanted: d("1"), free: d("0.5") }));
        desk.fill("s1", &ex(Side::Sell, "1.5", "110", "0.165"));
        desk.end("s1");
        assert_eq!(desk.position("BTCUSDT"), d("0.5"));
        assert_eq!(desk.free_quote(), d("800") + d("165") - d("0.165"));
        desk.approve(&sell("s3", "0.5", "100"), 0).expect("the rest");
    }

    #[test]
    fn each_limit_blocks_with_its_reason() {
        let strict = RiskLimits {
            max_position: d("0.25"),
            max_order_notional: Some(d("200")),
            max_open_orders: 2,
            max_orders_per_minute: 3,
            ..limits()
        };
        let mut desk = Desk::new(strict, d("1000"), d("0"), 0);
        let reason = |r: Result<(), Block>| r.err().map(|b| b.reason());
        assert_eq!(reason(desk.approve(&buy("big", "3", "100"), 0)), Some("max_order_notional"));
        assert_eq!(reason(desk.approve(&buy("a", "2", "100"), 0)), None);
        // 200 held by the open buy + 100 more: beyond a quarter of 1,000.
        assert_eq!(reason(desk.approve(&buy("b", "1", "100"), 0)), Some("max_position_pct"));
        assert_eq!(reason(desk.approve(&buy("a", "0.1", "100"), 0)), Some("duplicate_intent"));
        desk.end("a");
        assert_eq!(reason(desk.approve(&buy("c", "0.1", "100"), 1)), None);
        assert_eq!(reason(desk.approve(&buy("d", "0.1", "100"), 2)), None);
        assert_eq!(reason(desk.approve(&buy("e", "0.1", "100"), 3)), Some("max_open_orders"));
        desk.end("c");
        // Three went out within the minute (a, c, d).
        assert_eq!(reason(desk.approve(&buy("f", "0.1", "100"), 4)), Some("max_orders_per_minute"));
        assert_eq!(reason(desk.approve(&buy("f", "0.1", "100"), 60_001)), None);
        let broke = Desk::new(limits(), d("10"), d("0"), 0).approve(&buy("g", "1", "100"), 0);
        assert_eq!(broke, Err(Block::InsufficientBudget { needed: d("100"), free: d("10") }));
        assert!(broke.err().map(|b| b.to_string()).is_some_and(|m| m.contains("needs 100")));
    }

    #[test]
    fn a_daily_loss_halts_until_midnight_utc_and_a_drawdown_until_a_human_resumes() {
        let mut desk = Desk::new(limits(), d("1000"), d("0"), 0);
        desk.approve(&buy("a", "10", "100"), 0).expect("approved");
        desk.fill("a", &ex(Side::Buy, "10", "100", "0"));
        desk.end("a");
        assert_eq!(desk.mark("BTCUSDT", d("96"), 1_000), None, "4 % down: within 5 %");
        let halt = desk.mark("BTCUSDT", d("94"), 2_000).expect("6 % down halts");
        assert_eq!(halt.reason(), "DailyLossLimit");
        assert!(halt.to_string().contains("6 %") && halt.to_string().contains("5 %"), "{halt}");
        assert!(matches!(desk.approve(&sell("s", "1", "94"), 3_000), Err(Block::Halted(_))));
        // The next UTC day it lifts; the day starts from the equity then.
        desk.approve(&sell("s", "1", "94"), DAY_MS + 1).expect("a new day");
        desk.end("s");
        // 21 % below the peak of 1,000: halted until a human resumes, whatever the day.
        let halt = desk.mark("BTCUSDT", d("79"), DAY_MS + 2).expect("drawdown");
        assert_eq!(halt.reason(), "DrawdownLimit");
        assert!(desk.approve(&sell("t", "1", "79"), 3 * DAY_MS).is_err());
        desk.resume();
        desk.approve(&sell("t", "1", "79"), 3 * DAY_MS).expect("resumed");
        desk.halt("RecoveryMismatch", "an open order only the exchange knows");
        assert_eq!(desk.halted().map(Halt::reason), Some("RecoveryMismatch"));
    }

    #[test]
    fn limits_come_from_the_spec_as_fractions() {
        let spec = kuant_crds::session::SessionRisk::default();
        let l = RiskLimits::from_spec(&spec).expect("limits");
        assert_eq!((l.max_position, l.max_daily_loss, l.max_drawdown), (d("0.25"), d("0.05"), d("0.2")));
        let bad = kuant_crds::session::SessionRisk { max_drawdown_pct: 150.0, ..spec };
        assert_eq!(
            RiskLimits::from_spec(&bad).err().map(|e| e.to_string()),
            Some("risk.maxDrawdownPct: 150 is not a percentage between 0 and 100".into())
        );
    }

    #[test]
    fn a_hundred_intents_raced_on_a_budget_for_ten_make_ten_orders() {
        use std::sync::{Arc, Mutex};
        let desk = Arc::new(Mutex::new(Desk::new(limits(), d("1000"), d("0"), 0)));
        let threads: Vec<_> = (0..100)
            .map(|i| {
                let desk = desk.clone();
                std::thread::spawn(move || {
                    let mut desk = desk.lock().expect("lock");
                    desk.approve(&buy(&format!("i{i}"), "1", "100"), 0).is_ok()
                })
            })
            .collect();
        let approved = threads.into_iter().map(|t| t.join()).filter(|r| matches!(r, Ok(true))).count();
        let desk = desk.lock().expect("lock");
        assert_eq!(approved, 10);
        assert_eq!((desk.free_quote(), desk.reserved_quote()), (d("0"), d("1000")));
    }
}
