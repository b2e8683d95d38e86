//! kuant's exchanges. What every exchange speaks in kuant ([`model`]), the symbol rules every
//! order is checked against before it is sent ([`rules`]), the typed errors ([`error`]), and
//! Binance spot's protocol ([`binance`]): request signing, pacing and clock, error codes and the
//! wire format. These parts are sans-IO: they take text, headers and times and decide, so each
//! decision is tested without a network.

pub mod binance;
pub mod error;
pub mod exchange;
pub mod model;
pub mod paper;
pub mod rules;
pub mod sim;
pub mod tracker;

pub use error::{ExchangeError, RejectKind};
pub use exchange::{BinanceEndpoints, BinanceExchange, Exchange, MarketFeed};
pub use model::{
    AccountUpdate, Balance, BookTicker, ClientOrderId, Fill, Kline, Order, OrderKind, OrderRequest,
    OrderStatus, Side, TimeInForce, Trade,
};
pub use rules::{ExchangeRules, RuleViolation};
pub use tracker::{Applied, OrderTracker};
