//! `kuant exchange-sim`'s REST API: Binance spot's `/api/v3` over the matching engine and the
//! replayed market, with Binance's signed-request checks (API key header, signature, timestamp
//! and `recvWindow`), its error bodies and its `X-MBX-USED-WEIGHT-1M` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::SinkExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::faults::{Fault, Faults, HttpVerdict, OrderVerdict};
use super::matching::{BookShape, Engine, Fees};
use super::replay::{Replay, SimClock, Speed};
use super::streams::{MarketTick, StreamKind, parse_stream, text};
use crate::binance::Credentials;
use crate::binance::wire::{side_name, status_name};
use crate::error::{ExchangeError, RejectKind};
use crate::model::{ClientOrderId, Fill, Order, OrderKind, OrderRequest, OrderStatus, Side, TimeInForce};
use crate::rules::ExchangeRules;

/// One symbol of the simulator: its rules and its market data.
pub struct SimSymbol {
    /// Its filters.
    pub rules: ExchangeRules,
    /// Its candles.
    pub replay: Replay,
    /// The Binance interval name of the candles, e.g. `1h`.
    pub interval: String,
}

/// How the simulator runs.
pub struct SimConfig {
    /// The symbols it lists.
    pub symbols: Vec<SimSymbol>,
    /// How fast its clock runs.
    pub speed: Speed,
    /// The one API key it accepts.
    pub credentials: Credentials,
    /// The account's starting balances.
    pub balances: Vec<(String, Decimal)>,
    /// Maker and taker fees.
    pub fees: Fees,
    /// The synthetic book's shape.
    pub book: BookShape,
}

struct Sim {
    engine: Engine,
    symbols: HashMap<String, SimSymbol>,
    clock: SimClock,
    speed: Speed,
    /// `--speed max`: the simulated present, moved by [`SimState::step`].
    stepped_ms: i64,
    started: Instant,
    applied_ms: i64,
    credentials: Credentials,
    market: tokio::sync::broadcast::Sender<Arc<MarketTick>>,
    account: tokio::sync::broadcast::Sender<Arc<Value>>,
    tick_id: u64,
    weight: (i64, u32),
    next_generated_id: u64,
    /// When each symbol's market streams last heard of it (wall time).
    last_emit: HashMap<String, Instant>,
}

/// At a `--speed` factor slow enough that a candle's path points are minutes apart (real time
/// and 1 h candles: 2 min), the streams still hear the forming candle this often, as Binance
/// pushes kline updates every second or two: a quiet market is not a silent stream.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// The simulator's shared state.
#[derive(Clone)]
pub struct SimState {
    sim: Arc<Mutex<Sim>>,
    faults: Arc<Mutex<Faults>>,
    market: tokio::sync::broadcast::Sender<Arc<MarketTick>>,
    account: tokio::sync::broadcast::Sender<Arc<Value>>,
    next_subscription: Arc<std::sync::atomic::AtomicU64>,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SimState {
    /// A simulator from `config`; its simulated clock starts at the first candle.
    pub fn new(config: SimConfig) -> Result<Self, String> {
        let mut engine = Engine::new(config.fees);
        let start =
            config.symbols.iter().map(|s| s.replay.start_ms()).min().ok_or("no symbols to simulate")?;
        for s in &config.symbols {
            engine.add_market(s.rules.clone(), config.book.clone());
        }
        for (asset, amount) in &config.balances {
            engine.adjust(asset, *amount)?;
        }
        let symbols = config.symbols.into_iter().map(|s| (s.rules.symbol.clone(), s)).collect();
        let (market, _) = tokio::sync::broadcast::channel(4096);
        let (account, _) = tokio::sync::broadcast::channel(4096);
        let sim = Sim {
            engine,
            symbols,
            clock: SimClock {
                start_ms: start,
                speed: if let Speed::Times(x) = config.speed { x } else { 1.0 },
            },
            speed: config.speed,
            stepped_ms: start,
            started: Instant::now(),
            applied_ms: start - 1,
            credentials: config.credentials,
            market: market.clone(),
            account: account.clone(),
            tick_id: 0,
            weight: (0, 0),
            next_generated_id: 1,
            last_emit: HashMap::new(),
        };
        let state = Self {
            sim: Arc::new(Mutex::new(sim)),
            faults: Arc::new(Mutex::new(Faults::default())),
            market,
            account,
            next_subscription: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        state.lock().advance();
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        // A handler that panicked left the state as it was between two whole operations.
        self.sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many orders the account has placed (open or not): tests check that an order was not
    /// sent twice.
    pub fn orders_placed(&self) -> usize {
        self.lock().engine.all_orders(None).len()
    }

    /// Puts `fault` in force now (the admin API and the schedule file call this).
    pub fn inject(&self, fault: &Fault) -> Result<(), String> {
        self.faults().apply(fault, Instant::now())
    }

    /// Moves the market to the simulated clock's present (a background task calls this often,
    /// so resting orders fill between requests).
    pub fn tick(&self) {
        self.lock().advance();
    }

    /// `--speed max`: moves the clock `points` path points on (the smallest symbol's, a thirtieth
    /// of its candle) and the market with it. False once every symbol's candles are done (or at
    /// another speed, where real time moves the clock).
    pub fn step(&self, points: i64) -> bool {
        let mut sim = self.lock();
        if sim.speed != Speed::Max {
            return false;
        }
        let (point, end) = sim.symbols.values().fold((i64::MAX, i64::MIN), |(p, e), s| {
            (p.min((s.replay.step_ms() / POINTS_PER_CANDLE).max(1)), e.max(s.replay.end_ms() - 1))
        });
        if sim.stepped_ms >= end {
            return false;
        }
        sim.stepped_ms = (sim.stepped_ms + point * points).min(end);
        sim.advance();
        true
    }

    /// Runs the clock until the process ends: at a `--speed` factor the market moves to the
    /// present every 20 ms (resting orders fill between requests); at `--speed max` it steps
    /// while every market-stream subscriber has taken all but [`MAX_BACKLOG`] messages, and
    /// holds still while nobody subscribes.
    pub async fn drive(self) {
        let speed = self.lock().speed;
        if speed != Speed::Max {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
            loop {
                every.tick().await;
                self.tick();
            }
        }
        loop {
            if self.market.receiver_count() == 0 || self.market.len() >= MAX_BACKLOG {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            if self.step(64) {
                tokio::task::yield_now().await;
            } else {
                // The candles are done: the market stays at their end.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    /// A receiver of every market move as it is made (what the streams send; benchmarks time
    /// their subscribers against it).
    pub fn market_moves(&self) -> tokio::sync::broadcast::Receiver<Arc<MarketTick>> {
        self.market.subscribe()
    }
}

/// `--speed max` steps on while fewer market moves than this wait for their slowest subscriber
/// (the channel holds 4,096: nobody is skipped).
pub const MAX_BACKLOG: usize = 512;

/// Path points per candle the market walks through between two ticks.
const POINTS_PER_CANDLE: i64 = 30;

impl Sim {
    /// Tells the user data stream what happened to `order`: `execution` is Binance's execution
    /// type (NEW, TRADE, CANCELED, EXPIRED, REJECTED); a TRADE carries its fill. Then the
    /// balances of the symbol's assets (`outboundAccountPosition`).
    fn report(&self, order: &Order, fills: &[Fill], execution: &str, now: i64) {
        if self.account.receiver_count() == 0 {
            return;
        }
        let (type_, price, stop, tif) = kind_fields(order.kind);
        let base = json!({
            "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_id.as_str(),
            "S": side_name(order.side), "o": type_,
            "f": tif, "q": order.quantity.to_string(), "p": price.to_string(), "P": stop.to_string(), "F": "0", "g": -1,
            "C": "", "r": "NONE", "i": order.exchange_id, "I": 0, "w": order.status.is_open(), "M": false,
            "O": order.created_ms, "Y": "0", "Q": "0", "V": "NONE",
        });
        let send = |exec: &str, status: OrderStatus, fill: Option<&Fill>, filled: Decimal, quote: Decimal| {
            let mut v = base.clone();
            if let Some(map) = v.as_object_mut() {
                map.extend([
                    ("x".to_owned(), json!(exec)),
                    ("X".to_owned(), json!(status_name(status))),
                    ("l".to_owned(), json!(fill.map_or(Decimal::ZERO, |f| f.quantity).to_string())),
                    ("z".to_owned(), json!(filled.to_string())),
                    ("L".to_owned(), json!(fill.map_or(Decimal::ZERO, |f| f.price).to_string())),
                    ("n".to_owned(), json!(fill.map_or(Decimal::ZERO, |f| f.fee).to_string())),
                    ("N".to_owned(), fill.map_or(Value::Null, |f| json!(f.fee_asset))),
                    ("T".to_owned(), json!(fill.map_or(now, |f| f.time_ms))),
                    ("t".to_owned(), json!(fill.map_or(-1, |f| i64::try_from(f.trade_id).unwrap_or(-1)))),
                    ("m".to_owned(), json!(fill.is_some_and(|f| f.maker))),
                    ("Z".to_owned(), json!(quote.to_string())),
                ]);
            }
            let _ = self.account.send(Arc::new(v));
        };
        // The order's state before these fills, then after each.
        let before: Decimal = fills.iter().map(|f| f.quantity).sum();
        let (mut filled, mut quote) = (
            order.filled_quantity - before,
            order.filled_quote - fills.iter().map(|f| f.price * f.quantity).sum::<Decimal>(),
        );
        if execution == "NEW" {
            send("NEW", OrderStatus::New, None, filled, quote);
        }
        for (i, fill) in fills.iter().enumerate() {
            filled += fill.quantity;
            quote += fill.price * fill.quantity;
            let status = if i + 1 == fills.len() && order.status != OrderStatus::Expired {
                order.status
            } else {
                OrderStatus::PartiallyFilled
            };
            send("TRADE", status, Some(fill), filled, quote);
        }
        if matches!(execution, "CANCELED" | "EXPIRED" | "REJECTED") || order.status == OrderStatus::Expired {
            let exec = if order.status == OrderStatus::Expired { "EXPIRED" } else { execution };
            send(exec, order.status, None, order.filled_quantity, order.filled_quote);
        }
        let assets = self
            .symbols
            .get(&*order.symbol)
            .map(|s| [s.rules.base_asset.clone(), s.rules.quote_asset.clone()]);
        let balances: Vec<Value> = self
            .engine
            .balances()
            .iter()
            .filter(|b| assets.as_ref().is_some_and(|a| a.contains(&b.asset)))
            .map(|b| json!({"a": b.asset, "f": b.free.to_string(), "l": b.locked.to_string()}))
            .collect();
        let _ = self
            .account
            .send(Arc::new(json!({"e": "outboundAccountPosition", "E": now, "u": now, "B": balances})));
    }

    /// Tells the market streams about `symbol`'s move at `t` (when anyone listens).
    fn emit(&mut self, symbol: &str, t: i64) {
        if self.market.receiver_count() == 0 {
            return;
        }
        let Some(s) = self.symbols.get(symbol) else { return };
        let (Some(price), Some(kline), Some(book)) =
            (self.engine.price(symbol), s.replay.kline_at(t), self.engine.depth(symbol))
        else {
            return;
        };
        let (Some(&bid), Some(&ask)) = (book.bids.first(), book.asks.first()) else { return };
        self.tick_id += 1;
        let buyer_maker = kline.close < kline.open;
        let tick = MarketTick {
            symbol: symbol.to_owned(),
            interval: s.interval.clone(),
            time_ms: t,
            id: self.tick_id,
            price,
            quantity: (kline.volume / Decimal::from(POINTS_PER_CANDLE)).round_dp(5).max(Decimal::new(1, 5)),
            buyer_maker,
            bid,
            ask,
            kline,
            rendered: Default::default(),
        };
        let _ = self.market.send(Arc::new(tick));
    }

    fn now_ms(&self) -> i64 {
        match self.speed {
            Speed::Max => self.stepped_ms,
            Speed::Times(_) => {
                self.clock.now(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
            }
        }
    }

    /// Applies every path point from the last one applied to now (at most a few thousand: at
    /// `--speed max` a client sees big steps rather than a frozen server).
    fn advance(&mut self) {
        let now = self.now_ms();
        let steps: Vec<(String, i64, i64, Decimal)> = self
            .symbols
            .values()
            .map(|s| (s.rules.symbol.clone(), s.replay.step_ms(), s.replay.end_ms(), s.rules.price.step))
            .collect();
        for (symbol, step_ms, end_ms, tick) in steps {
            // Trades happen on the tick.
            let on_tick = |p: Decimal| if tick.is_zero() { p } else { (p / tick).round() * tick };
            let point = (step_ms / POINTS_PER_CANDLE).max(1);
            let mut t = (self.applied_ms / point + 1) * point;
            let until = now.min(end_ms - 1);
            if until - t > point * 3000 {
                t = until - point * 3000;
            }
            let mut emitted = false;
            while t <= until {
                // A candle's last moment first, so its closed kline is streamed.
                if t % step_ms == 0
                    && let Some(price) = self.symbols.get(&symbol).and_then(|s| s.replay.price_at(t - 1))
                {
                    self.engine.set_price(&symbol, on_tick(price), t - 1);
                    self.emit(&symbol, t - 1);
                    emitted = true;
                }
                if let Some(price) = self.symbols.get(&symbol).and_then(|s| s.replay.price_at(t)) {
                    let changes = self.engine.set_price(&symbol, on_tick(price), t);
                    for (order, fills) in &changes.orders {
                        self.report(order, fills, "TRADE", t);
                    }
                    self.emit(&symbol, t);
                    emitted = true;
                }
                t += point;
            }
            if let Some(price) = self.symbols.get(&symbol).and_then(|s| s.replay.price_at(until)) {
                self.engine.set_price(&symbol, on_tick(price), until);
            }
            let quiet = self.last_emit.get(&symbol).is_none_or(|at| at.elapsed() >= KEEPALIVE);
            if emitted {
                self.last_emit.insert(symbol.clone(), Instant::now());
            } else if quiet && matches!(self.speed, Speed::Times(_)) && until >= self.applied_ms {
                self.emit(&symbol, until);
                self.last_emit.insert(symbol.clone(), Instant::now());
            }
        }
        self.applied_ms = now;
    }
}

/// Serves `state` on a free loopback port from a thread of its own (its own runtime, its clock
/// driven), for tests and benchmarks in any crate; its base URL.
pub fn serve_on_loopback(state: SimState) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "the simulator's runtime did not start"),
        };
        runtime.block_on(async move {
            tokio::spawn(state.clone().drive());
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let _ = axum::serve(listener, router(state)).await;
                }
                Err(e) => tracing::error!(error = %e, "the simulator cannot listen"),
            }
        });
    });
    Ok(format!("http://{addr}"))
}

/// The simulator's router: Binance's `/api/v3` endpoints.
pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/api/v3/ping", get(|| async { json_ok(json!({})) }))
        .route("/api/v3/time", get(time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/depth", get(depth))
        .route("/api/v3/ticker/price", get(ticker_price))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .route("/api/v3/ticker/24hr", get(ticker_24hr))
        .route("/api/v3/klines", get(klines))
        .route("/api/v3/account", get(signed))
        .route("/api/v3/order", get(signed).post(signed).delete(signed))
        .route("/api/v3/order/test", axum::routing::post(signed))
        .route("/api/v3/openOrders", get(signed).delete(signed))
        .route("/api/v3/allOrders", get(signed))
        .route("/api/v3/myTrades", get(signed))
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_faults))
        .route("/ws/{stream}", get(raw_stream))
        .route("/stream", get(combined_stream))
        .route("/ws-api/v3", get(ws_api))
        .route("/_sim/faults", get(faults_shown).post(fault_injected).delete(faults_cleared))
        .route("/_sim/balance", axum::routing::post(balance_moved))
        .route("/_sim/trade", axum::routing::post(outside_trade))
        .fallback(|| async { binance_error(StatusCode::NOT_FOUND, -1000, "Unknown endpoint.") })
        .with_state(state)
}

async fn time(State(state): State<SimState>) -> Response {
    let skew = state.faults().clock_skew_ms;
    json_ok(json!({"serverTime": wall_ms() + skew}))
}

fn json_ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

/// An answer in Binance's error format: `{"code": -1102, "msg": "…"}` with its HTTP status.
struct ApiError {
    status: StatusCode,
    code: i64,
    msg: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"code": self.code, "msg": self.msg}))).into_response()
    }
}

fn binance_error(status: StatusCode, code: i64, msg: &str) -> ApiError {
    ApiError { status, code, msg: msg.to_owned() }
}

fn exchange_error(e: &ExchangeError) -> ApiError {
    match e {
        ExchangeError::Rejected { code, reason, kind } => {
            let status = if *kind == RejectKind::Unauthorized {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            binance_error(status, *code, reason)
        }
        ExchangeError::Blocked(v) => binance_error(StatusCode::BAD_REQUEST, -1013, &v.to_string()),
        other => binance_error(StatusCode::INTERNAL_SERVER_ERROR, -1001, &other.to_string()),
    }
}

type Params = HashMap<String, String>;

fn params(query: Option<&str>) -> Params {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect()
}

fn param<'a>(p: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| {
        binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )
    })
}

fn decimal(p: &Params, name: &str) -> Result<Decimal, ApiError> {
    param(p, name)?.parse().map_err(|_| {
        binance_error(
            StatusCode::BAD_REQUEST,
            -1100,
            &format!("Illegal characters found in parameter '{name}'."),
        )
    })
}

fn symbol_of<'a>(sim: &'a Sim, p: &Params) -> Result<&'a SimSymbol, ApiError> {
    let name = param(p, "symbol")?;
    sim.symbols.get(name).ok_or_else(|| binance_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol."))
}

fn with_weight(sim: &mut Sim, weight: u32, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let minute = wall_ms() / 60_000;
    if sim.weight.0 != minute {
        sim.weight = (minute, 0);
    }
    sim.weight.1 += weight;
    if let Ok(v) = HeaderValue::from_str(&sim.weight.1.to_string()) {
        response.headers_mut().insert("x-mbx-used-weight-1m", v);
    }
    response
}

fn filters(r: &ExchangeRules) -> Value {
    json!([
        {"filterType": "PRICE_FILTER", "minPrice": r.price.min.to_string(), "maxPrice": r.price.max.to_string(), "tickSize": r.price.step.to_string()},
        {"filterType": "LOT_SIZE", "minQty": r.lot.min.to_string(), "maxQty": r.lot.max.to_string(), "stepSize": r.lot.step.to_string()},
        {"filterType": "MARKET_LOT_SIZE", "minQty": r.market_lot.min.to_string(), "maxQty": r.market_lot.max.to_string(), "stepSize": r.market_lot.step.to_string()},
        {"filterType": "NOTIONAL", "minNotional": r.notional.min.to_string(), "applyMinToMarket": r.notional.min_applies_to_market,
         "maxNotional": r.notional.max.to_string(), "applyMaxToMarket": r.notional.max_applies_to_market, "avgPriceMins": 5},
    ])
}

async fn exchange_info(State(state): State<SimState>) -> Response {
    let mut sim = state.lock();
    let mut symbols: Vec<&SimSymbol> = sim.symbols.values().collect();
    symbols.sort_by(|a, b| a.rules.symbol.cmp(&b.rules.symbol));
    let symbols: Vec<Value> = symbols
        .iter()
        .map(|s| {
            let r = &s.rules;
            json!({
                "symbol": r.symbol, "status": if r.trading { "TRADING" } else { "BREAK" },
                "baseAsset": r.base_asset, "baseAssetPrecision": 8, "quoteAsset": r.quote_asset,
                "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET", "STOP_LOSS_LIMIT"], "icebergAllowed": false, "ocoAllowed": false, "otoAllowed": false,
                "quoteOrderQtyMarketAllowed": false, "allowTrailingStop": false, "cancelReplaceAllowed": false,
                "amendAllowed": false, "isSpotTradingAllowed": true, "isMarginTradingAllowed": false,
                "filters": filters(r), "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": ["NONE"],
            })
        })
        .collect();
    let body = json!({
        "timezone": "UTC", "serverTime": wall_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [], "symbols": symbols,
    });
    with_weight(&mut sim, 20, json_ok(body))
}

fn levels(levels: &[(Decimal, Decimal)], limit: usize) -> Value {
    levels.iter().take(limit).map(|(p, q)| json!([p.to_string(), q.to_string()])).collect()
}

async fn depth(State(state): State<SimState>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let mut sim = state.lock();
    sim.advance();
    let symbol = match symbol_of(&sim, &p) {
        Ok(s) => s.rules.symbol.clone(),
        Err(e) => return e.into_response(),
    };
    let limit = p.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100usize).min(5000);
    let Some(book) = sim.engine.depth(&symbol) else {
        return binance_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.").into_response();
    };
    let body = json!({"lastUpdateId": sim.applied_ms, "bids": levels(&book.bids, limit), "asks": levels(&book.asks, limit)});
    with_weight(&mut sim, 5, json_ok(body))
}

/// The symbols a ticker request names (`symbol`, or all).
fn ticker_symbols(sim: &Sim, p: &Params) -> Result<(Vec<String>, bool), ApiError> {
    if p.contains_key("symbol") {
        return Ok((vec![symbol_of(sim, p)?.rules.symbol.clone()], true));
    }
    let mut all: Vec<String> = sim.symbols.keys().cloned().collect();
    all.sort();
    Ok((all, false))
}

fn one_or_all(values: Vec<Value>, one: bool) -> Value {
    if one { values.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(values) }
}

async fn ticker_price(State(state): State<SimState>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let mut sim = state.lock();
    sim.advance();
    let (names, one) = match ticker_symbols(&sim, &p) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let values = names
        .iter()
        .map(|s| json!({"symbol": s, "price": sim.engine.price(s).map(|p| p.round_dp(8).to_string())}))
        .collect();
    with_weight(&mut sim, if one { 2 } else { 4 }, json_ok(one_or_all(values, one)))
}

async fn book_ticker(State(state): State<SimState>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let mut sim = state.lock();
    sim.advance();
    let (names, one) = match ticker_symbols(&sim, &p) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let values = names
        .iter()
        .filter_map(|s| {
            let book = sim.engine.depth(s)?;
            let (bid, ask) = (book.bids.first()?, book.asks.first()?);
            Some(json!({"symbol": s, "bidPrice": bid.0.to_string(), "bidQty": bid.1.to_string(),
                "askPrice": ask.0.to_string(), "askQty": ask.1.to_string()}))
        })
        .collect();
    with_weight(&mut sim, if one { 2 } else { 4 }, json_ok(one_or_all(values, one)))
}

async fn ticker_24hr(State(state): State<SimState>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let mut sim = state.lock();
    sim.advance();
    let (names, one) = match ticker_symbols(&sim, &p) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let now = sim.now_ms();
    let values = names
        .iter()
        .filter_map(|name| {
            let s = sim.symbols.get(name)?;
            let day = s.replay.klines(Some(now - 86_400_000), None, now, usize::MAX);
            let (first, last) = (day.first()?, day.last()?);
            let high = day.iter().map(|k| k.high).max()?;
            let low = day.iter().map(|k| k.low).min()?;
            let volume: Decimal = day.iter().map(|k| k.volume).sum();
            let change = last.close - first.open;
            let pct = if first.open.is_zero() { Decimal::ZERO } else { (change / first.open * Decimal::from(100)).round_dp(3) };
            let book = sim.engine.depth(name)?;
            Some(json!({
                "symbol": name, "priceChange": change.round_dp(8).to_string(), "priceChangePercent": pct.to_string(),
                "weightedAvgPrice": ((high + low) / Decimal::TWO).round_dp(8).to_string(),
                "prevClosePrice": first.open.to_string(), "lastPrice": last.close.round_dp(8).to_string(), "lastQty": "0",
                "bidPrice": book.bids.first().map(|b| b.0.to_string()), "bidQty": book.bids.first().map(|b| b.1.to_string()),
                "askPrice": book.asks.first().map(|a| a.0.to_string()), "askQty": book.asks.first().map(|a| a.1.to_string()),
                "openPrice": first.open.to_string(), "highPrice": high.round_dp(8).to_string(), "lowPrice": low.round_dp(8).to_string(),
                "volume": volume.to_string(), "quoteVolume": (volume * last.close).round_dp(8).to_string(),
                "openTime": first.open_ms, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
            }))
        })
        .collect();
    with_weight(&mut sim, if one { 2 } else { 80 }, json_ok(one_or_all(values, one)))
}

async fn klines(State(state): State<SimState>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let mut sim = state.lock();
    sim.advance();
    let now = sim.now_ms();
    let s = match symbol_of(&sim, &p) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let interval = match param(&p, "interval") {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if interval != s.interval {
        return binance_error(StatusCode::BAD_REQUEST, -1120, "Invalid interval.").into_response();
    }
    let num = |name: &str| p.get(name).and_then(|v| v.parse::<i64>().ok());
    let limit = num("limit").map_or(500, |l| l.clamp(1, 1000)) as usize;
    let rows: Vec<Value> = s
        .replay
        .klines(num("startTime"), num("endTime"), now, limit)
        .iter()
        .map(|k| {
            json!([
                k.open_ms,
                k.open.to_string(),
                k.high.round_dp(8).to_string(),
                k.low.round_dp(8).to_string(),
                k.close.round_dp(8).to_string(),
                k.volume.to_string(),
                k.close_ms,
                (k.volume * k.close).round_dp(8).to_string(),
                0,
                "0",
                "0",
                "0"
            ])
        })
        .collect();
    with_weight(&mut sim, 2, json_ok(Value::Array(rows)))
}

/// A signed request's parameters, checked: the API key header, the signature over the query
/// string and the body, the timestamp within `recvWindow`.
fn check_signed(
    sim: &Sim,
    headers: &HeaderMap,
    query: &str,
    body: &str,
    skew_ms: i64,
) -> Result<Params, ApiError> {
    let key = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key.is_empty() || key != sim.credentials.api_key() {
        return Err(binance_error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        ));
    }
    let total = match (query.is_empty(), body.is_empty()) {
        (false, false) => format!("{query}{body}"),
        (false, true) => query.to_owned(),
        _ => body.to_owned(),
    };
    let Some((payload, signature)) =
        total.rsplit_once("&signature=").or_else(|| total.strip_prefix("signature=").map(|s| ("", s)))
    else {
        return Err(binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        ));
    };
    let signature: String =
        form_urlencoded::parse(format!("s={signature}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
    if !sim.credentials.verify(payload, &signature) {
        return Err(binance_error(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        ));
    }
    let params: Params = form_urlencoded::parse(payload.as_bytes()).into_owned().collect();
    let timestamp: i64 = param(&params, "timestamp")?.parse().map_err(|_| {
        binance_error(StatusCode::BAD_REQUEST, -1100, "Illegal characters found in parameter 'timestamp'.")
    })?;
    let window: i64 = params.get("recvWindow").and_then(|w| w.parse().ok()).unwrap_or(5000);
    if !(1..=60_000).contains(&window) {
        return Err(binance_error(StatusCode::BAD_REQUEST, -1131, "recvWindow must be less than 60000"));
    }
    let now = wall_ms() + skew_ms;
    if timestamp > now + 1000 || now - timestamp > window {
        return Err(binance_error(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ));
    }
    Ok(params)
}

/// Binance's fields of an order's kind: its type, price, stop price and time in force.
fn kind_fields(kind: OrderKind) -> (&'static str, Decimal, Decimal, &'static str) {
    let tif = match kind.time_in_force() {
        Some(TimeInForce::Ioc) => "IOC",
        _ => "GTC",
    };
    let price = kind.limit_price().unwrap_or_default();
    match kind {
        OrderKind::Market => ("MARKET", price, Decimal::ZERO, tif),
        OrderKind::Limit { .. } => ("LIMIT", price, Decimal::ZERO, tif),
        OrderKind::StopLossLimit { stop_price, .. } => ("STOP_LOSS_LIMIT", price, stop_price, tif),
    }
}

fn order_json(o: &Order, fills: Option<&[Fill]>, transact: bool) -> Value {
    let (type_, price, stop, tif) = kind_fields(o.kind);
    let mut v = json!({
        "symbol": o.symbol, "orderId": o.exchange_id, "orderListId": -1, "clientOrderId": o.client_id.as_str(),
        "price": price.to_string(), "origQty": o.quantity.to_string(), "executedQty": o.filled_quantity.to_string(),
        "origQuoteOrderQty": "0", "cummulativeQuoteQty": o.filled_quote.to_string(), "status": status_name(o.status),
        "timeInForce": tif, "type": type_,
        "side": side_name(o.side), "workingTime": o.created_ms, "selfTradePreventionMode": "NONE",
    });
    if let Some(map) = v.as_object_mut() {
        if transact {
            map.insert("transactTime".into(), json!(o.updated_ms));
            // A conditional field: placement answers carry it for stop orders.
            if !stop.is_zero() {
                map.insert("stopPrice".into(), json!(stop.to_string()));
            }
        } else {
            map.extend([
                ("stopPrice".to_owned(), json!(stop.to_string())),
                ("icebergQty".to_owned(), json!("0")),
                ("time".to_owned(), json!(o.created_ms)),
                ("updateTime".to_owned(), json!(o.updated_ms)),
                ("isWorking".to_owned(), json!(true)),
            ]);
        }
        if let Some(fills) = fills {
            let fills: Vec<Value> = fills
                .iter()
                .map(|f| json!({"price": f.price.to_string(), "qty": f.quantity.to_string(), "commission": f.fee.to_string(),
                    "commissionAsset": f.fee_asset, "tradeId": f.trade_id}))
                .collect();
            map.insert("fills".into(), Value::Array(fills));
        }
    }
    v
}

fn request_of(sim: &mut Sim, p: &Params) -> Result<OrderRequest, ApiError> {
    let symbol = symbol_of(sim, p)?.rules.symbol.clone();
    let bad = |code, msg: &str| binance_error(StatusCode::BAD_REQUEST, code, msg);
    let side = match param(p, "side")? {
        "BUY" => Side::Buy,
        "SELL" => Side::Sell,
        _ => return Err(bad(-1100, "Illegal characters found in parameter 'side'.")),
    };
    let time_in_force = || match param(p, "timeInForce")? {
        "GTC" => Ok(TimeInForce::Gtc),
        "IOC" => Ok(TimeInForce::Ioc),
        _ => Err(bad(-1115, "Invalid timeInForce.")),
    };
    let kind = match param(p, "type")? {
        "MARKET" => OrderKind::Market,
        "LIMIT" => OrderKind::Limit { price: decimal(p, "price")?, time_in_force: time_in_force()? },
        "STOP_LOSS_LIMIT" => OrderKind::StopLossLimit {
            stop_price: decimal(p, "stopPrice")?,
            price: decimal(p, "price")?,
            time_in_force: time_in_force()?,
        },
        _ => return Err(bad(-1116, "Invalid orderType.")),
    };
    if p.contains_key("quoteOrderQty") {
        return Err(bad(
            -1104,
            "Not all sent parameters were read; quoteOrderQty is not supported by the simulator.",
        ));
    }
    let client_id = match p.get("newClientOrderId").filter(|v| !v.is_empty()) {
        Some(id) => ClientOrderId::new(id.clone())
            .map_err(|_| bad(-1100, "Illegal characters found in parameter 'newClientOrderId'."))?,
        None => {
            sim.next_generated_id += 1;
            ClientOrderId::new(format!("sim-{}", sim.next_generated_id)).map_err(|_| bad(-1000, "id"))?
        }
    };
    Ok(OrderRequest { symbol, side, kind, quantity: decimal(p, "quantity")?, client_id })
}

fn find_order<'a>(sim: &'a Sim, p: &Params, symbol: &str) -> Result<&'a Order, ApiError> {
    let found = if let Some(id) = p.get("origClientOrderId") {
        ClientOrderId::new(id.clone()).ok().and_then(|id| sim.engine.order(symbol, &id).ok())
    } else if let Some(id) = p.get("orderId").and_then(|i| i.parse::<u64>().ok()) {
        sim.engine.all_orders(Some(symbol)).into_iter().find(|o| o.exchange_id == id)
    } else {
        return Err(binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        ));
    };
    found.ok_or_else(|| binance_error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."))
}

async fn signed(
    State(state): State<SimState>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut sim = state.lock();
    sim.advance();
    let body = String::from_utf8_lossy(&body);
    let skew = state.faults().clock_skew_ms;
    let p = match check_signed(&sim, &headers, query.as_deref().unwrap_or_default(), &body, skew) {
        Ok(p) => p,
        Err(e) => return with_weight(&mut sim, 1, e),
    };
    let now = sim.now_ms();
    let path = uri.path();
    let (weight, response) = match (method.as_str(), path) {
        ("GET", "/api/v3/account") => {
            let balances: Vec<Value> = sim
                .engine
                .balances()
                .iter()
                .map(
                    |b| json!({"asset": b.asset, "free": b.free.to_string(), "locked": b.locked.to_string()}),
                )
                .collect();
            let body = json!({
                "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "canTrade": true, "canWithdraw": false, "canDeposit": false, "brokered": false,
                "requireSelfTradePrevention": false, "preventSor": false, "updateTime": now,
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1,
            });
            (20, json_ok(body))
        }
        ("POST", "/api/v3/order") | ("POST", "/api/v3/order/test") => {
            let request = match request_of(&mut sim, &p) {
                Ok(r) => r,
                Err(e) => return with_weight(&mut sim, 1, e),
            };
            if path.ends_with("/test") {
                let Some(price) = sim.engine.price(&request.symbol) else { return json_ok(json!({})) };
                let checked = sim.symbols.get(&request.symbol).map(|s| s.rules.check(&request, price));
                return match checked {
                    Some(Err(v)) => {
                        with_weight(&mut sim, 1, exchange_error(&super::matching::filter_failure(&v)))
                    }
                    _ => with_weight(&mut sim, 1, json_ok(json!({}))),
                };
            }
            let verdict = state.faults().order();
            if verdict == OrderVerdict::Reject {
                return with_weight(
                    &mut sim,
                    1,
                    binance_error(StatusCode::BAD_REQUEST, -2010, "New order rejected."),
                );
            }
            let placed = sim.engine.place(&request, now);
            if let Ok((order, fills)) = &placed {
                sim.report(order, fills, "NEW", now);
            }
            match placed {
                Ok(_) if verdict == OrderVerdict::PlaceThenTimeOut => (
                    1,
                    binance_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        -1007,
                        "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
                    )
                    .into_response(),
                ),
                Ok((order, fills)) => {
                    let body = match p.get("newOrderRespType").map(String::as_str) {
                        Some("ACK") => {
                            json!({"symbol": order.symbol, "orderId": order.exchange_id, "orderListId": -1,
                            "clientOrderId": order.client_id.as_str(), "transactTime": order.updated_ms})
                        }
                        Some("RESULT") => order_json(&order, None, true),
                        _ => order_json(&order, Some(&fills), true),
                    };
                    (1, json_ok(body))
                }
                Err(e) => (1, exchange_error(&e).into_response()),
            }
        }
        ("GET", "/api/v3/order") => {
            let symbol = match symbol_of(&sim, &p) {
                Ok(s) => s.rules.symbol.clone(),
                Err(e) => return e.into_response(),
            };
            (
                4,
                find_order(&sim, &p, &symbol)
                    .map_or_else(IntoResponse::into_response, |o| json_ok(order_json(o, None, false))),
            )
        }
        ("DELETE", "/api/v3/order") => {
            let symbol = match symbol_of(&sim, &p) {
                Ok(s) => s.rules.symbol.clone(),
                Err(e) => return e.into_response(),
            };
            let id = match find_order(&sim, &p, &symbol) {
                Ok(o) => o.client_id.clone(),
                Err(_) => {
                    return with_weight(
                        &mut sim,
                        1,
                        binance_error(StatusCode::BAD_REQUEST, -2011, "Unknown order sent."),
                    );
                }
            };
            match sim.engine.cancel(&symbol, &id, now) {
                Ok(o) => {
                    sim.report(&o, &[], "CANCELED", now);
                    let mut body = order_json(&o, None, true);
                    if let Some(map) = body.as_object_mut() {
                        map.insert("origClientOrderId".into(), json!(o.client_id.as_str()));
                        let cancel_id = p
                            .get("newClientOrderId")
                            .cloned()
                            .unwrap_or_else(|| format!("cancel-{}", o.exchange_id));
                        map.insert("clientOrderId".into(), json!(cancel_id));
                    }
                    (1, json_ok(body))
                }
                Err(e) => (1, exchange_error(&e).into_response()),
            }
        }
        ("GET", "/api/v3/openOrders") => {
            let symbol = if p.contains_key("symbol") {
                match symbol_of(&sim, &p) {
                    Ok(s) => Some(s.rules.symbol.clone()),
                    Err(e) => return e.into_response(),
                }
            } else {
                None
            };
            let open: Vec<Value> = sim
                .engine
                .open_orders(symbol.as_deref())
                .iter()
                .map(|o| order_json(o, None, false))
                .collect();
            (if symbol.is_some() { 6 } else { 80 }, json_ok(Value::Array(open)))
        }
        ("DELETE", "/api/v3/openOrders") => {
            let symbol = match symbol_of(&sim, &p) {
                Ok(s) => s.rules.symbol.clone(),
                Err(e) => return e.into_response(),
            };
            match sim.engine.cancel_all(&symbol, now) {
                Ok(all) => {
                    for o in &all {
                        sim.report(o, &[], "CANCELED", now);
                    }
                    let body: Vec<Value> = all
                        .iter()
                        .map(|o| {
                            let mut v = order_json(o, None, true);
                            if let Some(map) = v.as_object_mut() {
                                map.insert("origClientOrderId".into(), json!(o.client_id.as_str()));
                            }
                            v
                        })
                        .collect();
                    (1, json_ok(Value::Array(body)))
                }
                Err(e) => (1, exchange_error(&e).into_response()),
            }
        }
        ("GET", "/api/v3/allOrders") => {
            let symbol = match symbol_of(&sim, &p) {
                Ok(s) => s.rules.symbol.clone(),
                Err(e) => return e.into_response(),
            };
            let all: Vec<Value> =
                sim.engine.all_orders(Some(&symbol)).iter().map(|o| order_json(o, None, false)).collect();
            (20, json_ok(Value::Array(all)))
        }
        ("GET", "/api/v3/myTrades") => {
            let symbol = match symbol_of(&sim, &p) {
                Ok(s) => s.rules.symbol.clone(),
                Err(e) => return e.into_response(),
            };
            // Binance's selectors: one order's, from a trade id, or in a time range; at most
            // `limit` (500 unless asked, up to 1,000), the oldest first.
            let number = |name: &str| -> Result<Option<i64>, ApiError> {
                p.get(name)
                    .map(|v| {
                        v.parse::<i64>().map_err(|_| {
                            binance_error(
                                StatusCode::BAD_REQUEST,
                                -1100,
                                &format!("Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."),
                            )
                        })
                    })
                    .transpose()
            };
            let selectors = (
                number("orderId"),
                number("fromId"),
                number("startTime"),
                number("endTime"),
                number("limit"),
            );
            let (order_id, from_id, start, end, limit) = match selectors {
                (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
                (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _, _) | (.., Err(e), _) | (.., Err(e)) => {
                    return e.into_response();
                }
            };
            let limit = usize::try_from(limit.unwrap_or(500).clamp(1, 1000)).unwrap_or(500);
            let trades = sim
                .engine
                .fills()
                .filter(|f| *f.symbol == *symbol)
                .filter(|f| order_id.is_none_or(|o| i64::try_from(f.order_id).is_ok_and(|id| id == o)))
                .filter(|f| from_id.is_none_or(|from| i64::try_from(f.trade_id).is_ok_and(|id| id >= from)))
                .filter(|f| start.is_none_or(|s| f.time_ms >= s) && end.is_none_or(|e| f.time_ms <= e))
                .collect::<Vec<_>>();
            // From a start: the first `limit`; otherwise the latest.
            let skip =
                if from_id.is_some() || start.is_some() { 0 } else { trades.len().saturating_sub(limit) };
            let trades: Vec<Value> = trades
                .into_iter()
                .skip(skip)
                .take(limit)
                .map(|f| {
                    json!({"symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
                        "price": f.price.to_string(), "qty": f.quantity.to_string(), "quoteQty": (f.price * f.quantity).to_string(),
                        "commission": f.fee.to_string(), "commissionAsset": f.fee_asset, "time": f.time_ms,
                        "isBuyer": f.side == Side::Buy, "isMaker": f.maker, "isBestMatch": true})
                })
                .collect();
            (20, json_ok(Value::Array(trades)))
        }
        _ => (1, binance_error(StatusCode::NOT_FOUND, -1000, "Unknown endpoint.").into_response()),
    };
    with_weight(&mut sim, weight, response)
}

/// REST faults: injected errors (with `Retry-After`) and latency.
async fn http_faults(
    State(state): State<SimState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let verdict = state.faults().http(Instant::now());
    match verdict {
        HttpVerdict::Fail { status, retry_after } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (code_number, msg) = match status {
                429 => (
                    -1003,
                    "Too much request weight used; current limit is 6000 request weight per 1 MINUTE.",
                ),
                418 => (-1003, "Way too much request weight used; IP banned until further notice."),
                _ => (-1001, "Internal error; unable to process your request. Please try again."),
            };
            let mut response = binance_error(code, code_number, msg).into_response();
            if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                response.headers_mut().insert("retry-after", v);
            }
            response
        }
        HttpVerdict::Serve(latency) => {
            // The exchange acts at once; its answer is slow to come back (so an order can be
            // placed while its caller still waits, or has died waiting).
            let response = next.run(request).await;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            response
        }
    }
}

async fn faults_shown(State(state): State<SimState>) -> Response {
    json_ok(state.faults().describe(Instant::now()))
}

async fn fault_injected(State(state): State<SimState>, body: Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": format!("not a fault: {e}")})))
                .into_response();
        }
    };
    match state.inject(&fault) {
        Ok(()) => json_ok(state.faults().describe(Instant::now())),
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response(),
    }
}

async fn faults_cleared(State(state): State<SimState>) -> Response {
    state.faults().clear();
    json_ok(state.faults().describe(Instant::now()))
}

fn admin_error(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": message.to_string()}))).into_response()
}

/// `{"asset": "USDT", "delta": "-100"}`: a balance moved from outside (a deposit, a withdrawal,
/// drift for a reconciliation to find).
async fn balance_moved(State(state): State<SimState>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return admin_error("not JSON") };
    let asset = v["asset"].as_str().unwrap_or_default().to_uppercase();
    let delta: Option<Decimal> = v["delta"].as_str().and_then(|d| d.parse().ok());
    let (false, Some(delta)) = (asset.is_empty(), delta) else {
        return admin_error("expected {\"asset\": \"USDT\", \"delta\": \"-100\"} (delta a decimal string)");
    };
    match state.lock().engine.adjust(&asset, delta) {
        Ok(b) => {
            json_ok(json!({"asset": b.asset, "free": b.free.to_string(), "locked": b.locked.to_string()}))
        }
        Err(e) => admin_error(e),
    }
}

/// `{"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}`: a market order placed from
/// outside the API (as on the exchange's website), which a session's ledger never saw.
async fn outside_trade(State(state): State<SimState>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return admin_error("not JSON") };
    let mut sim = state.lock();
    sim.advance();
    sim.next_generated_id += 1;
    let side = match v["side"].as_str() {
        Some("BUY") => Side::Buy,
        Some("SELL") => Side::Sell,
        _ => return admin_error("side is BUY or SELL"),
    };
    let quantity: Option<Decimal> = v["quantity"].as_str().and_then(|q| q.parse().ok());
    let (Some(symbol), Some(quantity)) = (v["symbol"].as_str(), quantity) else {
        return admin_error("expected symbol, side and quantity (a decimal string)");
    };
    let Ok(client_id) = ClientOrderId::new(format!("outside-{}", sim.next_generated_id)) else {
        return admin_error("id");
    };
    let request =
        OrderRequest { symbol: symbol.to_owned(), side, kind: OrderKind::Market, quantity, client_id };
    let now = sim.now_ms();
    match sim.engine.place(&request, now) {
        Ok((order, fills)) => {
            sim.report(&order, &fills, "NEW", now);
            json_ok(order_json(&order, Some(&fills), true))
        }
        Err(e) => admin_error(e),
    }
}

async fn raw_stream(
    State(state): State<SimState>,
    axum::extract::Path(stream): axum::extract::Path<String>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    subscribe(state, vec![stream], false, upgrade)
}

async fn combined_stream(
    State(state): State<SimState>,
    RawQuery(q): RawQuery,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let p = params(q.as_deref());
    let streams = p.get("streams").map(|s| s.split('/').map(str::to_owned).collect()).unwrap_or_default();
    subscribe(state, streams, true, upgrade)
}

fn subscribe(
    state: SimState,
    names: Vec<String>,
    combined: bool,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let mut streams = Vec::new();
    for name in &names {
        match parse_stream(name) {
            Ok((symbol, kind)) => streams.push((name.clone(), symbol, kind)),
            Err(e) => return binance_error(StatusCode::BAD_REQUEST, -1100, &e).into_response(),
        }
    }
    if streams.is_empty() {
        return binance_error(StatusCode::BAD_REQUEST, -1102, "No stream named.").into_response();
    }
    upgrade.on_upgrade(move |socket| serve_stream(state, socket, streams, combined))
}

/// Binance pings every 20 s and closes a connection after 24 h.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(20);
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

async fn serve_stream(
    state: SimState,
    mut socket: axum::extract::ws::WebSocket,
    streams: Vec<(String, String, StreamKind)>,
    combined: bool,
) {
    use axum::extract::ws::Message;
    let mut ticks = state.market.subscribe();
    let epoch = state.faults().connection_epoch;
    let opened = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut check = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut held: Option<axum::extract::ws::Utf8Bytes> = None;
    loop {
        tokio::select! {
            tick = ticks.recv() => {
                let mut batch = match tick {
                    Ok(t) => vec![t],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                // What is ready too goes out in the same write.
                while batch.len() < 64 {
                    match ticks.try_recv() {
                        Ok(t) => batch.push(t),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                let (silent, duplicate, reorder) = {
                    let f = state.faults();
                    (f.silent(Instant::now()), f.duplicate, f.reorder)
                };
                if silent {
                    continue;
                }
                for tick in &batch {
                    for (name, symbol, kind) in &streams {
                        let Some(data) = text(tick, symbol, kind) else { continue };
                        let text = if combined {
                            format!("{{\"stream\":{},\"data\":{}}}", Value::from(name.as_str()), data.as_str()).into()
                        } else {
                            data
                        };
                        let mut out = Vec::new();
                        if reorder {
                            match held.take() {
                                None => { held = Some(text); continue; }
                                Some(first) => { out.push(text); out.push(first); }
                            }
                        } else {
                            out.push(text);
                        }
                        for text in out {
                            let copies = if duplicate { 2 } else { 1 };
                            for _ in 0..copies {
                                if socket.feed(Message::Text(text.clone())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {
                // Dropped from outside: gone without a close frame, as a broken connection goes.
                if state.faults().connection_epoch != epoch {
                    return;
                }
                if opened.elapsed() >= CONNECTION_LIFETIME {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }
}

/// The WebSocket API (`/ws-api/v3`): `ping`, `time`, and the user data stream subscription
/// `userDataStream.subscribe.signature` (with `userDataStream.unsubscribe`), after which account
/// events arrive as `{"subscriptionId": N, "event": {…}}`.
async fn ws_api(State(state): State<SimState>, upgrade: axum::extract::ws::WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_ws_api(state, socket))
}

fn ws_answer(id: &Value, status: u16, result: Result<Value, (i64, &str)>) -> String {
    match result {
        Ok(result) => json!({"id": id, "status": status, "result": result}).to_string(),
        Err((code, msg)) => {
            json!({"id": id, "status": status, "error": {"code": code, "msg": msg}}).to_string()
        }
    }
}

/// Checks a signed WebSocket API request: its params sorted by name, joined as a query string
/// (without `signature`), signed with the key.
fn check_ws_signature(
    state: &SimState,
    params: &serde_json::Map<String, Value>,
) -> Result<(), (i64, &'static str)> {
    let skew = state.faults().clock_skew_ms;
    let sim = state.lock();
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    if params.get("apiKey").map(text).as_deref() != Some(sim.credentials.api_key()) {
        return Err((-2015, "Invalid API-key, IP, or permissions for action."));
    }
    let signature = params.get("signature").map(text).unwrap_or_default();
    let mut pairs: Vec<(&String, String)> =
        params.iter().filter(|(k, _)| *k != "signature").map(|(k, v)| (k, text(v))).collect();
    pairs.sort();
    let mut payload = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        payload.append_pair(k, v);
    }
    if !sim.credentials.verify(&payload.finish(), &signature) {
        return Err((-1022, "Signature for this request is not valid."));
    }
    let timestamp = params.get("timestamp").and_then(Value::as_i64).unwrap_or_default();
    let window = params.get("recvWindow").and_then(Value::as_i64).unwrap_or(5000);
    let now = wall_ms() + skew;
    if timestamp > now + 1000 || now - timestamp > window {
        return Err((-1021, "Timestamp for this request is outside of the recvWindow."));
    }
    Ok(())
}

async fn serve_ws_api(state: SimState, mut socket: axum::extract::ws::WebSocket) {
    use axum::extract::ws::Message;
    let mut events = state.account.subscribe();
    let mut subscription: Option<u64> = None;
    let epoch = state.faults().connection_epoch;
    let mut check = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(request) = serde_json::from_str::<Value>(&text) else {
                    let _ = socket.send(Message::Text(ws_answer(&Value::Null, 400, Err((-1100, "Malformed request."))).into())).await;
                    continue;
                };
                let id = request.get("id").cloned().unwrap_or(Value::Null);
                let params = request.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
                let answer = match request.get("method").and_then(Value::as_str) {
                    Some("ping") => ws_answer(&id, 200, Ok(json!({}))),
                    Some("time") => ws_answer(&id, 200, Ok(json!({"serverTime": wall_ms() + state.faults().clock_skew_ms}))),
                    Some("userDataStream.subscribe.signature") => match check_ws_signature(&state, &params) {
                        Ok(()) => {
                            let n = state.next_subscription.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            subscription = Some(n);
                            // Events from now on only.
                            events = state.account.subscribe();
                            ws_answer(&id, 200, Ok(json!({"subscriptionId": n})))
                        }
                        Err(e) => ws_answer(&id, if e.0 == -2015 { 401 } else { 400 }, Err(e)),
                    },
                    Some("userDataStream.unsubscribe") => {
                        subscription = None;
                        ws_answer(&id, 200, Ok(json!({})))
                    }
                    _ => ws_answer(&id, 400, Err((-1100, "Unknown method."))),
                };
                if socket.send(Message::Text(answer.into())).await.is_err() {
                    return;
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(n) = subscription else { continue };
                let text = json!({"subscriptionId": n, "event": *event}).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {
                if state.faults().connection_epoch != epoch {
                    return;
                }
            }
        }
    }
}
