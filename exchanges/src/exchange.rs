//! One interface for every exchange kuant trades on: Binance spot and `kuant exchange-sim`
//! ([`BinanceExchange`]) and the paper account ([`crate::paper::PaperExchange`]). A session is
//! written against [`Exchange`] and runs unchanged on any of them.
//!
//! What it covers: market data (klines for a range, the latest price, a stream of trades, book
//! tickers and candles), the symbols' rules from the exchange's own `exchangeInfo`, the
//! account's balances, orders (market and limit GTC/IOC with an idempotent client order id;
//! query by client id, cancel one, cancel all, list the open ones), the account's trades, and
//! its order and balance updates as they happen. Errors are [`ExchangeError`]s, typed by what
//! the caller must do.

use std::future::Future;

use rust_decimal::Decimal;
use tokio::sync::mpsc;

use crate::binance::Credentials;
use crate::binance::rest::{BINANCE_SPOT, BinanceRest};
use crate::binance::stream::{BINANCE_STREAMS, MarketStream, StreamEvent};
use crate::binance::user_stream::{BINANCE_WS_API, UserEvent, UserStream};
use crate::error::{ExchangeError, RejectKind};
use crate::model::{Balance, ClientOrderId, Fill, Kline, Order, OrderRequest, Trade};
use crate::rules::ExchangeRules;

/// A market stream to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarketFeed {
    /// Every trade of a symbol.
    Trades(String),
    /// A symbol's best bid and ask.
    BookTicker(String),
    /// A symbol's candles at an interval (Binance's name, e.g. `1h`), forming and closed.
    Klines(String, String),
}

impl MarketFeed {
    /// Binance's stream name, e.g. `btcusdt@kline_1h`.
    pub fn binance_name(&self) -> String {
        match self {
            Self::Trades(s) => format!("{}@trade", s.to_lowercase()),
            Self::BookTicker(s) => format!("{}@bookTicker", s.to_lowercase()),
            Self::Klines(s, i) => format!("{}@kline_{i}", s.to_lowercase()),
        }
    }
}

/// What kuant needs of an exchange. Implementations are cheap to share (`Arc`) and safe to call
/// from several tasks at once.
pub trait Exchange: Send + Sync + 'static {
    /// Its name in logs and the store (`binance`, `paper`).
    fn name(&self) -> &str;

    /// Every symbol's rules, from the exchange's own `exchangeInfo`.
    fn symbol_rules(&self) -> impl Future<Output = Result<Vec<ExchangeRules>, ExchangeError>> + Send;

    /// Candles of `symbol` at `interval`, opening in `[start_ms, end_ms]` (the latest when both
    /// are absent), at most `limit`.
    fn klines(
        &self,
        symbol: &str,
        interval: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: u16,
    ) -> impl Future<Output = Result<Vec<Kline>, ExchangeError>> + Send;

    /// The latest price of `symbol`.
    fn latest_price(&self, symbol: &str) -> impl Future<Output = Result<Decimal, ExchangeError>> + Send;

    /// The account's balances (free and locked), every asset it holds.
    fn balances(&self) -> impl Future<Output = Result<Vec<Balance>, ExchangeError>> + Send;

    /// Places `order`, checked against `rules` first (a market order valued at
    /// `reference_price`): an order they refuse never leaves ([`ExchangeError::Blocked`]). An
    /// unknown outcome is resolved by asking for the client order id, never by sending again.
    /// Returns the order and the fills it got at once.
    fn place(
        &self,
        order: &OrderRequest,
        rules: &ExchangeRules,
        reference_price: Decimal,
    ) -> impl Future<Output = Result<(Order, Vec<Fill>), ExchangeError>> + Send;

    /// As [`Exchange::place`], for an order decided at market time `decided_ms` on a candle
    /// whose close was `reference_price`. An exchange fills when it fills (this is
    /// [`Exchange::place`]); a paper account fills a market order at the open of the first candle
    /// opening after the decision, as the backtest does, even when its own feed ran ahead.
    fn place_decided(
        &self,
        order: &OrderRequest,
        rules: &ExchangeRules,
        reference_price: Decimal,
        decided_ms: i64,
    ) -> impl Future<Output = Result<(Order, Vec<Fill>), ExchangeError>> + Send {
        let _ = decided_ms;
        self.place(order, rules, reference_price)
    }

    /// The order with `client_id`; `None` when the exchange has none.
    fn order(
        &self,
        symbol: &str,
        client_id: &ClientOrderId,
    ) -> impl Future<Output = Result<Option<Order>, ExchangeError>> + Send;

    /// Cancels the open order with `client_id` (an unknown one is
    /// [`RejectKind::UnknownOrder`]).
    fn cancel(
        &self,
        symbol: &str,
        client_id: &ClientOrderId,
    ) -> impl Future<Output = Result<Order, ExchangeError>> + Send;

    /// Cancels every open order of `symbol`; none open is not an error.
    fn cancel_all(&self, symbol: &str) -> impl Future<Output = Result<Vec<Order>, ExchangeError>> + Send;

    /// The open orders of `symbol`, oldest first.
    fn open_orders(&self, symbol: &str) -> impl Future<Output = Result<Vec<Order>, ExchangeError>> + Send;

    /// The account's trades of `symbol` from `since_ms` on (the latest without it), oldest first.
    fn trades(
        &self,
        symbol: &str,
        since_ms: Option<i64>,
    ) -> impl Future<Output = Result<Vec<Trade>, ExchangeError>> + Send;

    /// Follows `feeds` until the receiver is dropped: reconnected, resubscribed, silence
    /// reported ([`StreamEvent`]).
    fn market_stream(&self, feeds: &[MarketFeed]) -> mpsc::Receiver<StreamEvent>;

    /// The account's order and balance updates as they happen, until the receiver is dropped.
    /// After each [`UserEvent::Subscribed`] past the first, updates may have been missed: ask
    /// for the open orders and balances.
    fn account_updates(&self) -> Result<mpsc::Receiver<UserEvent>, ExchangeError>;
}

/// Where a Binance-compatible exchange answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinanceEndpoints {
    /// REST base, e.g. `https://api.binance.com`.
    pub rest: String,
    /// Market streams base, e.g. `wss://stream.binance.com:9443`.
    pub streams: String,
    /// The WebSocket API, e.g. `wss://ws-api.binance.com:443/ws-api/v3`.
    pub ws_api: String,
}

impl BinanceEndpoints {
    /// Binance spot.
    pub fn binance() -> Self {
        Self { rest: BINANCE_SPOT.into(), streams: BINANCE_STREAMS.into(), ws_api: BINANCE_WS_API.into() }
    }

    /// A `kuant exchange-sim` (or any server speaking Binance's API on one address) at
    /// `base`, e.g. `http://127.0.0.1:9100`.
    pub fn at(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", base.trim_start_matches("http://"))
        };
        Self { rest: base.to_owned(), streams: ws.clone(), ws_api: format!("{ws}/ws-api/v3") }
    }
}

/// Binance spot (or a simulator of it) through the [`Exchange`] interface: the REST adapter,
/// the market stream client and the user data stream.
pub struct BinanceExchange {
    rest: BinanceRest,
    endpoints: BinanceEndpoints,
}

impl BinanceExchange {
    /// A client of `endpoints`; without `credentials` only market data works.
    pub fn new(endpoints: BinanceEndpoints, credentials: Option<Credentials>) -> Result<Self, ExchangeError> {
        Ok(Self { rest: BinanceRest::new(&endpoints.rest, credentials)?, endpoints })
    }

    /// The REST adapter underneath (its clock, its rate-limit waits).
    pub fn rest(&self) -> &BinanceRest {
        &self.rest
    }
}

impl Exchange for BinanceExchange {
    fn name(&self) -> &str {
        "binance"
    }

    async fn symbol_rules(&self) -> Result<Vec<ExchangeRules>, ExchangeError> {
        self.rest.exchange_info().await
    }

    async fn klines(
        &self,
        symbol: &str,
        interval: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: u16,
    ) -> Result<Vec<Kline>, ExchangeError> {
        self.rest.klines(symbol, interval, start_ms, end_ms, limit).await
    }

    async fn latest_price(&self, symbol: &str) -> Result<Decimal, ExchangeError> {
        self.rest.price(symbol).await
    }

    async fn balances(&self) -> Result<Vec<Balance>, ExchangeError> {
        self.rest.balances().await
    }

    async fn place(
        &self,
        order: &OrderRequest,
        rules: &ExchangeRules,
        reference_price: Decimal,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        self.rest.place(order, rules, reference_price).await
    }

    async fn order(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Option<Order>, ExchangeError> {
        self.rest.order(symbol, client_id).await
    }

    async fn cancel(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Order, ExchangeError> {
        self.rest.cancel(symbol, client_id).await
    }

    async fn cancel_all(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        self.rest.cancel_all(symbol).await
    }

    async fn open_orders(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        self.rest.open_orders(symbol).await
    }

    async fn trades(&self, symbol: &str, since_ms: Option<i64>) -> Result<Vec<Trade>, ExchangeError> {
        self.rest.my_trades(symbol, since_ms, None).await
    }

    fn market_stream(&self, feeds: &[MarketFeed]) -> mpsc::Receiver<StreamEvent> {
        MarketStream::new(&self.endpoints.streams, feeds.iter().map(MarketFeed::binance_name).collect())
            .spawn()
    }

    fn account_updates(&self) -> Result<mpsc::Receiver<UserEvent>, ExchangeError> {
        let credentials = self.rest.credentials().ok_or_else(no_key)?;
        let mut stream = UserStream::new(&self.endpoints.ws_api, credentials);
        stream.clock_offset_ms = self.rest.clock_offset_ms();
        Ok(stream.spawn())
    }
}

fn no_key() -> ExchangeError {
    ExchangeError::Rejected {
        code: -2015,
        reason: "no API key: the account's updates need credentials (--credentials FILE)".into(),
        kind: RejectKind::Unauthorized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_named_as_binance_names_streams() {
        assert_eq!(MarketFeed::Trades("BTCUSDT".into()).binance_name(), "btcusdt@trade");
        assert_eq!(MarketFeed::BookTicker("ETHUSDT".into()).binance_name(), "ethusdt@bookTicker");
        assert_eq!(MarketFeed::Klines("BTCUSDT".into(), "1h".into()).binance_name(), "btcusdt@kline_1h");
    }

    #[test]
    fn a_simulator_answers_everything_on_one_address() {
        let sim = BinanceEndpoints::at("http://127.0.0.1:9100/");
        assert_eq!(sim.rest, "http://127.0.0.1:9100");
        assert_eq!(sim.streams, "ws://127.0.0.1:9100");
        assert_eq!(sim.ws_api, "ws://127.0.0.1:9100/ws-api/v3");
        assert_eq!(BinanceEndpoints::at("https://sim.example").ws_api, "wss://sim.example/ws-api/v3");
    }
}
