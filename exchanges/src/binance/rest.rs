//! The Binance spot REST client: the thin IO around the sans-IO parts (signing, pacing, clock,
//! error mapping, wire format). reqwest underneath.
//!
//! What it does for its caller:
//! - every request waits for the rate gate (request weight, 429, 418); each wait is logged once
//!   and counted ([`BinanceRest::rate_limit_waits`]);
//! - signed requests carry `timestamp` (corrected by the measured server-time offset) and
//!   `recvWindow`; after -1021 the offset is measured again and the request sent once more;
//! - an order is checked against the symbol's rules before it is sent ([`ExchangeError::Blocked`]);
//! - an order whose outcome is unknown (a timeout after sending, a 5xx, -1007) is looked up by
//!   its client order id ([`BinanceRest::place`]), never sent twice blindly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;

use super::classify;
use super::limits::{DEFAULT_WEIGHT_PER_MINUTE, RateGate, ServerClock, Wait};
use super::sign::{Credentials, query, signed_query};
use super::wire;
use crate::error::{ExchangeError, RejectKind};
use crate::model::{Balance, ClientOrderId, Fill, Kline, Order, OrderKind, OrderRequest, TimeInForce, Trade};
use crate::rules::ExchangeRules;

/// Binance spot's REST base URL.
pub const BINANCE_SPOT: &str = "https://api.binance.com";
/// The `recvWindow` sent with signed requests, in ms.
pub const RECV_WINDOW_MS: u64 = 5_000;
/// How long a request may take before its outcome counts as unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a request that may be sent again (reads after a 429 or an outage; any request
/// after -1021 or a 429, which Binance did not act on).
const ATTEMPTS: u32 = 4;

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A Binance spot REST client for one API key (or none, for market data only).
pub struct BinanceRest {
    base: String,
    http: reqwest::Client,
    credentials: Option<std::sync::Arc<Credentials>>,
    gate: Mutex<RateGate>,
    clock: Mutex<ServerClock>,
    waits_logged: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl BinanceRest {
    /// A client of `base_url` (e.g. [`BINANCE_SPOT`] or a `kuant exchange-sim`).
    pub fn new(base_url: &str, credentials: Option<Credentials>) -> Result<Self, ExchangeError> {
        // reqwest is built without a TLS crypto provider of its own: kuant's is ring (as kube's).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("kuant/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ExchangeError::Unavailable(format!("an HTTP client: {e}")))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            credentials: credentials.map(std::sync::Arc::new),
            gate: Mutex::new(RateGate::new(DEFAULT_WEIGHT_PER_MINUTE)),
            clock: Mutex::new(ServerClock::default()),
            waits_logged: AtomicU64::new(0),
        })
    }

    /// The key it signs with, if any (the user data stream signs its subscription with it).
    pub fn credentials(&self) -> Option<std::sync::Arc<Credentials>> {
        self.credentials.clone()
    }

    /// Waits ordered by the rate gate so far (the `kuant_exchange_rate_limit_waits_total` metric).
    pub fn rate_limit_waits(&self) -> u64 {
        self.gate.lock().map_or(0, |g| g.waits())
    }

    /// The measured offset of Binance's clock from this machine's, in ms.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock.lock().map_or(0, |c| c.offset_ms())
    }

    fn server_ms(&self) -> i64 {
        self.clock.lock().map_or_else(|_| local_ms(), |c| c.timestamp(local_ms()))
    }

    /// Measures the server-time offset (`GET /api/v3/time`).
    pub async fn sync_time(&self) -> Result<(), ExchangeError> {
        // One unsigned request, not through `send` (which calls this after -1021).
        self.pace(1).await;
        let sent = local_ms();
        let body = self.send_once(Method::Get, "/api/v3/time", &[], false, None).await.map_err(|(_, e)| e)?.1;
        let received = local_ms();
        let server: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ExchangeError::Protocol(format!("time: {e}")))?;
        let server_ms = server["serverTime"]
            .as_i64()
            .ok_or_else(|| ExchangeError::Protocol("time: no serverTime".into()))?;
        if let Ok(mut clock) = self.clock.lock() {
            *clock = ServerClock::measured(sent, server_ms, received);
        }
        Ok(())
    }

    /// Every symbol's rules (`exchangeInfo`); the gate takes the weight budget it names.
    pub async fn exchange_info(&self) -> Result<Vec<ExchangeRules>, ExchangeError> {
        let body = self.send(Method::Get, "/api/v3/exchangeInfo", &[], false, 20, None).await?;
        let (rules, weight) =
            wire::exchange_info(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))?;
        if let (Some(limit), Ok(mut gate)) = (weight, self.gate.lock()) {
            *gate = RateGate::new(limit);
        }
        Ok(rules)
    }

    /// Candles of `symbol` at `interval` (Binance's name, e.g. `1h`), opening in `[start, end]`.
    pub async fn klines(
        &self,
        symbol: &str,
        interval: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: u16,
    ) -> Result<Vec<Kline>, ExchangeError> {
        let (start, end, limit) =
            (start_ms.map(|s| s.to_string()), end_ms.map(|e| e.to_string()), limit.to_string());
        let mut params = vec![("symbol", symbol), ("interval", interval), ("limit", limit.as_str())];
        if let Some(s) = &start {
            params.push(("startTime", s));
        }
        if let Some(e) = &end {
            params.push(("endTime", e));
        }
        let body = self.send(Method::Get, "/api/v3/klines", &params, false, 2, None).await?;
        wire::klines(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// The latest price of `symbol`.
    pub async fn price(&self, symbol: &str) -> Result<Decimal, ExchangeError> {
        let body =
            self.send(Method::Get, "/api/v3/ticker/price", &[("symbol", symbol)], false, 2, None).await?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ExchangeError::Protocol(format!("price: {e}")))?;
        v["price"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| ExchangeError::Protocol(format!("price: {body}")))
    }

    /// The account's balances.
    pub async fn balances(&self) -> Result<Vec<Balance>, ExchangeError> {
        let body = self
            .send(Method::Get, "/api/v3/account", &[("omitZeroBalances", "true")], true, 20, None)
            .await?;
        wire::account(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// Places `order` after checking it against `rules` (a market order valued at
    /// `reference_price`). When the answer does not say whether it was placed, asks for it by its
    /// client id: found, it is returned; not found, it was not placed and is sent once more with
    /// the same id (a second arrival would be refused as a duplicate, and then found).
    pub async fn place(
        &self,
        order: &OrderRequest,
        rules: &ExchangeRules,
        reference_price: Decimal,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        rules.check(order, reference_price)?;
        let mut last = None;
        for _ in 0..2 {
            match self.place_once(order).await {
                Ok(placed) => return Ok(placed),
                Err(ExchangeError::UnknownOutcome { detail, .. })
                | Err(ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, reason: detail, .. }) => {
                    tracing::warn!(client_id = %order.client_id, %detail, "order outcome unknown: asking for it by its client id");
                    match self.order(&order.symbol, &order.client_id).await? {
                        Some(found) => return Ok((found, Vec::new())),
                        None => last = Some(detail),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ExchangeError::UnknownOutcome {
            client_id: order.client_id.clone(),
            detail: last.unwrap_or_else(|| "no answer".into()),
        })
    }

    async fn place_once(&self, order: &OrderRequest) -> Result<(Order, Vec<Fill>), ExchangeError> {
        let quantity = order.quantity.normalize().to_string();
        let mut params = vec![
            ("symbol", order.symbol.as_str()),
            ("side", wire::side_name(order.side)),
            ("quantity", quantity.as_str()),
            ("newClientOrderId", order.client_id.as_str()),
            ("newOrderRespType", "FULL"),
        ];
        let (type_, stop) = match order.kind {
            OrderKind::Market => ("MARKET", None),
            OrderKind::Limit { .. } => ("LIMIT", None),
            OrderKind::StopLossLimit { stop_price, .. } => {
                ("STOP_LOSS_LIMIT", Some(stop_price.normalize().to_string()))
            }
        };
        params.push(("type", type_));
        let price = order.kind.limit_price().map(|p| p.normalize().to_string());
        if let Some(p) = &price {
            params.push(("price", p.as_str()));
        }
        if let Some(s) = &stop {
            params.push(("stopPrice", s.as_str()));
        }
        if let Some(tif) = order.kind.time_in_force() {
            params.push(("timeInForce", if tif == TimeInForce::Ioc { "IOC" } else { "GTC" }));
        }
        let body = self.send(Method::Post, "/api/v3/order", &params, true, 1, Some(&order.client_id)).await?;
        wire::order(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// The order with `client_id`; `None` when Binance has none (-2013).
    pub async fn order(
        &self,
        symbol: &str,
        client_id: &ClientOrderId,
    ) -> Result<Option<Order>, ExchangeError> {
        let params = [("symbol", symbol), ("origClientOrderId", client_id.as_str())];
        match self.send(Method::Get, "/api/v3/order", &params, true, 4, None).await {
            Ok(body) => {
                wire::order(&body).map(|(o, _)| Some(o)).map_err(|e| ExchangeError::Protocol(e.to_string()))
            }
            Err(ExchangeError::Rejected { kind: RejectKind::UnknownOrder, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cancels the order with `client_id`.
    pub async fn cancel(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Order, ExchangeError> {
        let params = [("symbol", symbol), ("origClientOrderId", client_id.as_str())];
        let body = self.send(Method::Delete, "/api/v3/order", &params, true, 1, None).await?;
        wire::order(&body).map(|(o, _)| o).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// Cancels every open order of `symbol` (none open is not an error).
    pub async fn cancel_all(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        match self.send(Method::Delete, "/api/v3/openOrders", &[("symbol", symbol)], true, 1, None).await {
            Ok(body) => wire::orders(&body).map_err(|e| ExchangeError::Protocol(e.to_string())),
            Err(ExchangeError::Rejected { kind: RejectKind::UnknownOrder, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The open orders of `symbol`.
    pub async fn open_orders(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        let body = self.send(Method::Get, "/api/v3/openOrders", &[("symbol", symbol)], true, 6, None).await?;
        wire::orders(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// The account's trades of `symbol` (`myTrades`, up to 1,000): from `start_ms` on, or of
    /// one order (`order_id`), or the latest.
    pub async fn my_trades(
        &self,
        symbol: &str,
        start_ms: Option<i64>,
        order_id: Option<u64>,
    ) -> Result<Vec<Trade>, ExchangeError> {
        let (start, order) = (start_ms.map(|s| s.to_string()), order_id.map(|o| o.to_string()));
        let mut params = vec![("symbol", symbol), ("limit", "1000")];
        if let Some(o) = &order {
            params.push(("orderId", o));
        } else if let Some(s) = &start {
            params.push(("startTime", s));
        }
        // Weight 20; 5 for one order's.
        let weight = if order.is_some() { 5 } else { 20 };
        let body = self.send(Method::Get, "/api/v3/myTrades", &params, true, weight, None).await?;
        wire::my_trades(&body).map_err(|e| ExchangeError::Protocol(e.to_string()))
    }

    /// Waits until the gate lets a request of `weight` go.
    async fn pace(&self, weight: u32) {
        loop {
            let now = self.server_ms();
            let wait = self.gate.lock().ok().and_then(|mut g| g.before(now, weight));
            let Some(wait) = wait else { return };
            self.log_wait(&wait, now);
            tokio::time::sleep(wait.duration_from(now)).await;
        }
    }

    fn log_wait(&self, wait: &Wait, now: i64) {
        // Once per wait: the gate counts a wait once, however often it is asked.
        let count = self.rate_limit_waits();
        if self.waits_logged.swap(count, Ordering::Relaxed) != count {
            tracing::warn!(reason = ?wait.reason, wait_ms = wait.until_ms - now, "Binance rate limit: waiting");
        }
    }

    /// One request, paced, signed when `signed`, retried where that is safe; its body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        signed: bool,
        weight: u32,
        placing: Option<&ClientOrderId>,
    ) -> Result<String, ExchangeError> {
        let mut resynced = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pace(weight).await;
            let outcome = self.send_once(method, path, params, signed, placing).await;
            let now = self.server_ms();
            let (used, result) = match outcome {
                Ok((used, body)) => (used, Ok(body)),
                Err((used, e)) => (used, Err(e)),
            };
            let new_wait = self.gate.lock().ok().and_then(|mut g| g.after(now, used, result.as_ref().err()));
            if let Some(wait) = new_wait {
                self.log_wait(&wait, now);
            }
            match result {
                Ok(body) => return Ok(body),
                Err(ExchangeError::ClockSkew(detail)) if signed && !resynced => {
                    tracing::warn!(%detail, "Binance says the timestamp is off: measuring the clock again");
                    resynced = true;
                    self.sync_time().await?;
                }
                // Binance acted on neither: safe to send again, after the gate's wait.
                Err(e @ ExchangeError::RateLimited { .. }) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, "retrying after the wait");
                }
                Err(ExchangeError::Unavailable(detail)) if placing.is_none() && attempt < ATTEMPTS => {
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt));
                    tracing::warn!(%detail, ?backoff, "Binance unavailable: retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        signed: bool,
        placing: Option<&ClientOrderId>,
    ) -> Result<(Option<u32>, String), (Option<u32>, ExchangeError)> {
        let query_string = if signed {
            let Some(credentials) = &self.credentials else {
                return Err((
                    None,
                    ExchangeError::Rejected {
                        code: -2015,
                        reason: "this request needs an API key and none was given".into(),
                        kind: RejectKind::Unauthorized,
                    },
                ));
            };
            let (timestamp, window) = (self.server_ms().to_string(), RECV_WINDOW_MS.to_string());
            let mut all = params.to_vec();
            all.push(("recvWindow", &window));
            all.push(("timestamp", &timestamp));
            signed_query(credentials, &all)
        } else {
            query(params)
        };
        let url = if query_string.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query_string}", self.base)
        };
        let builder = match method {
            Method::Get => self.http.get(url),
            Method::Post => self.http.post(url),
            Method::Delete => self.http.delete(url),
        };
        let builder = match &self.credentials {
            Some(c) => builder.header("X-MBX-APIKEY", c.api_key()),
            None => builder,
        };
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                // Not connected: nothing was sent. Anything else (a timeout) may have arrived.
                let detail = without_url(&e);
                let error = match placing {
                    Some(id) if !e.is_connect() => {
                        ExchangeError::UnknownOutcome { client_id: id.clone(), detail }
                    }
                    _ => ExchangeError::Unavailable(detail),
                };
                return Err((None, error));
            }
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        };
        let used = header("x-mbx-used-weight-1m").and_then(|u| u32::try_from(u).ok());
        let retry_after = header("retry-after");
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => {
                let detail = format!("reading the answer: {}", without_url(&e));
                let error = match placing {
                    Some(id) => ExchangeError::UnknownOutcome { client_id: id.clone(), detail },
                    None => ExchangeError::Unavailable(detail),
                };
                return Err((used, error));
            }
        };
        if (200..300).contains(&status) {
            return Ok((used, body));
        }
        Err((used, classify(status, retry_after, &body, placing)))
    }
}

/// A reqwest error without its URL: the query string of a signed request holds its signature.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "a broken answer"
    } else {
        "the request failed"
    };
    // The causes, not the error's own text, which names the URL.
    let mut text = kind.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
