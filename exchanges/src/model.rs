//! What every exchange speaks in kuant: orders with an idempotent client id, their states and
//! fills, balances, candles. Money and quantities are decimals; times are Unix milliseconds.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use kuant_agents::strategy::Side;

/// A client order id: the order's identity on the exchange, chosen by kuant before it is sent, so
/// that an order whose outcome is unknown is found again by asking for it, never sent twice.
/// Binance's rule: 1 to 36 characters of `A-Z a-z 0-9 . : / _ -`. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientOrderId(std::sync::Arc<str>);

impl ClientOrderId {
    /// The longest id Binance accepts.
    pub const MAX_LEN: usize = 36;

    /// `id` when it is a valid client order id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidClientOrderId> {
        let id = id.into();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-');
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.chars().all(allowed) {
            return Err(InvalidClientOrderId(id));
        }
        Ok(Self(id.into()))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ClientOrderId {
    type Error = InvalidClientOrderId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<ClientOrderId> for String {
    fn from(id: ClientOrderId) -> Self {
        id.0.to_string()
    }
}

/// A client order id that breaks the exchange's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client order id {0:?}: 1 to 36 characters of A-Z a-z 0-9 . : / _ -")]
pub struct InvalidClientOrderId(pub String);

/// How long a limit order stays on the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: rests until filled or cancelled.
    Gtc,
    /// Immediate or cancel: fills what it can at once, the rest expires.
    Ioc,
}

/// Market, limit, or a stop that becomes a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderKind {
    /// At the best prices available now.
    Market,
    /// At `price` or better.
    Limit {
        /// The limit price, in the quote asset.
        price: Decimal,
        /// How long it stays on the book.
        time_in_force: TimeInForce,
    },
    /// Binance's `STOP_LOSS_LIMIT`: it waits on the exchange (its balance held) until the price
    /// reaches `stop_price` — a sell when the price falls to it, a buy when it rises to it — and
    /// then works as a limit order at `price`. A position stays protected while its trader is
    /// down.
    StopLossLimit {
        /// The price that triggers it.
        stop_price: Decimal,
        /// The limit price once triggered.
        price: Decimal,
        /// How long it stays on the book once triggered.
        time_in_force: TimeInForce,
    },
}

impl OrderKind {
    /// The limit price (of a limit, or of a stop once triggered); `None` for a market order.
    pub fn limit_price(self) -> Option<Decimal> {
        match self {
            Self::Market => None,
            Self::Limit { price, .. } | Self::StopLossLimit { price, .. } => Some(price),
        }
    }

    /// How long it stays on the book; `None` for a market order.
    pub fn time_in_force(self) -> Option<TimeInForce> {
        match self {
            Self::Market => None,
            Self::Limit { time_in_force, .. } | Self::StopLossLimit { time_in_force, .. } => {
                Some(time_in_force)
            }
        }
    }
}

/// An order to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRequest {
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Market or limit.
    pub kind: OrderKind,
    /// In the base asset.
    pub quantity: Decimal,
    /// Chosen before sending; the same id is never used for two orders.
    pub client_id: ClientOrderId,
}

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Accepted, nothing filled.
    New,
    /// Part filled, the rest still working.
    PartiallyFilled,
    /// Wholly filled.
    Filled,
    /// Cancelled by the user (a part may have filled).
    Canceled,
    /// A cancel was requested and is not yet done.
    PendingCancel,
    /// Refused by the exchange.
    Rejected,
    /// Ended by the exchange's rules (an IOC remainder, say).
    Expired,
}

impl OrderStatus {
    /// Whether the order can still fill.
    pub fn is_open(self) -> bool {
        matches!(self, Self::New | Self::PartiallyFilled | Self::PendingCancel)
    }
}

/// An order as the exchange reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// E.g. `BTCUSDT` (shared: an exchange keeps many orders of one symbol).
    pub symbol: std::sync::Arc<str>,
    /// The id kuant chose.
    pub client_id: ClientOrderId,
    /// The exchange's id.
    pub exchange_id: u64,
    /// Buy or sell.
    pub side: Side,
    /// Market or limit.
    pub kind: OrderKind,
    /// Ordered, in the base asset.
    pub quantity: Decimal,
    /// Filled so far, in the base asset.
    pub filled_quantity: Decimal,
    /// Quote asset spent (buy) or received (sell) so far, before fees.
    pub filled_quote: Decimal,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// When it was placed.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

impl Order {
    /// `request` as an exchange has just accepted it, under `exchange_id` at `now_ms`: nothing
    /// filled yet. `symbol` is the request's, shared.
    pub fn accepted(
        request: &OrderRequest,
        symbol: std::sync::Arc<str>,
        exchange_id: u64,
        now_ms: i64,
    ) -> Self {
        debug_assert_eq!(*symbol, *request.symbol);
        Self {
            symbol,
            client_id: request.client_id.clone(),
            exchange_id,
            side: request.side,
            kind: request.kind,
            quantity: request.quantity,
            filled_quantity: Decimal::ZERO,
            filled_quote: Decimal::ZERO,
            status: OrderStatus::New,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// The average fill price so far; `None` before the first fill.
    pub fn average_price(&self) -> Option<Decimal> {
        (!self.filled_quantity.is_zero()).then(|| self.filled_quote / self.filled_quantity)
    }
}

/// One execution of an order against another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    /// E.g. `BTCUSDT` (shared: an exchange makes many fills of one symbol).
    pub symbol: std::sync::Arc<str>,
    /// The order it belongs to.
    pub client_id: ClientOrderId,
    /// The exchange's id of the order.
    pub order_id: u64,
    /// The exchange's id of the trade (unique per symbol).
    pub trade_id: u64,
    /// Buy or sell.
    pub side: Side,
    /// Price of this execution.
    pub price: Decimal,
    /// Base quantity of this execution.
    pub quantity: Decimal,
    /// Fee charged.
    pub fee: Decimal,
    /// The asset the fee was charged in (shared, as the symbol).
    pub fee_asset: std::sync::Arc<str>,
    /// Whether the order was resting on the book (maker).
    pub maker: bool,
    /// When it happened.
    pub time_ms: i64,
}

/// One of the account's trades as the exchange lists them afterwards (Binance's `myTrades`):
/// the order's exchange id, not its client id (ask for the order to learn that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trade {
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// The exchange's id of the trade (unique per symbol).
    pub trade_id: u64,
    /// The exchange's id of the order.
    pub order_id: u64,
    /// Whether the account bought.
    pub side: Side,
    /// Price.
    pub price: Decimal,
    /// Base quantity.
    pub quantity: Decimal,
    /// Fee charged.
    pub fee: Decimal,
    /// The asset the fee was charged in.
    pub fee_asset: String,
    /// Whether the account's order was resting on the book.
    pub maker: bool,
    /// When, Unix ms.
    pub time_ms: i64,
}

impl From<&Fill> for Trade {
    fn from(f: &Fill) -> Self {
        Self {
            symbol: f.symbol.to_string(),
            trade_id: f.trade_id,
            order_id: f.order_id,
            side: f.side,
            price: f.price,
            quantity: f.quantity,
            fee: f.fee,
            fee_asset: f.fee_asset.to_string(),
            maker: f.maker,
            time_ms: f.time_ms,
        }
    }
}

/// One asset of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// E.g. `BTC`.
    pub asset: String,
    /// Available to trade or withdraw.
    pub free: Decimal,
    /// Reserved by open orders.
    pub locked: Decimal,
}

impl Balance {
    /// Free plus locked.
    pub fn total(&self) -> Decimal {
        self.free + self.locked
    }
}

/// An update of the account, pushed by the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountUpdate {
    /// An order changed; with the fill that changed it, if one did.
    Order {
        /// The order after the change.
        order: Order,
        /// The execution, when the change was one.
        fill: Option<Box<Fill>>,
    },
    /// Balances changed (only the assets that did).
    Balances {
        /// The balances after the change.
        balances: Vec<Balance>,
        /// When.
        time_ms: i64,
    },
}

/// The best bid and ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookTicker {
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// The book's update id (a later update has a larger one).
    pub update_id: u64,
    /// Best bid price and quantity.
    pub bid: (Decimal, Decimal),
    /// Best ask price and quantity.
    pub ask: (Decimal, Decimal),
}

/// One candle as an exchange reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kline {
    /// When it opens, Unix ms.
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
    /// When it closes, Unix ms (the last millisecond in it).
    pub close_ms: i64,
    /// Whether it is complete (a streamed candle may still be forming).
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids_follow_the_exchanges_rule() {
        assert!(ClientOrderId::new("kuant-bt1-000042").is_ok());
        assert!(ClientOrderId::new("a.b:c/d_e-F9").is_ok());
        assert!(ClientOrderId::new("").is_err());
        assert!(ClientOrderId::new("x".repeat(37)).is_err());
        assert!(ClientOrderId::new("x".repeat(36)).is_ok());
        assert!(ClientOrderId::new("no spaces").is_err());
        assert!(ClientOrderId::new("ünicode").is_err());
        let parsed: Result<ClientOrderId, _> = serde_json::from_str("\"bad id\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn the_average_price_is_the_quote_over_the_base() {
        let order = Order {
            symbol: "BTCUSDT".into(),
            client_id: ClientOrderId::new("x").expect("id"),
            exchange_id: 1,
            side: Side::Buy,
            kind: OrderKind::Market,
            quantity: Decimal::new(2, 0),
            filled_quantity: Decimal::new(2, 0),
            filled_quote: Decimal::new(60_001, 0),
            status: OrderStatus::Filled,
            created_ms: 0,
            updated_ms: 0,
        };
        assert_eq!(order.average_price(), Some(Decimal::new(300_005, 1)));
        assert!(!order.status.is_open());
    }
}
