//! Binance spot's wire format, as its API documentation describes it, read into kuant's model:
//! `exchangeInfo`, orders (placed, queried, cancelled), the account, klines, and the events of
//! the market streams and of the user data stream. Fields kuant does not use are ignored.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::model::{
    AccountUpdate, Balance, BookTicker, ClientOrderId, Fill, Kline, Order, OrderKind, OrderStatus, Side,
    TimeInForce, Trade,
};
use crate::rules::{ExchangeRules, Notional, Range};

/// An answer that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading Binance's {what}: {problem}")]
pub struct WireError {
    /// What was being read.
    pub what: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn wire<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, WireError> {
    serde_json::from_str(text).map_err(|e| WireError { what, problem: e.to_string() })
}

fn side(what: &'static str, s: &str) -> Result<Side, WireError> {
    match s {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        other => Err(WireError { what, problem: format!("unknown side {other:?}") }),
    }
}

/// Binance's name of a side.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

fn status(what: &'static str, s: &str) -> Result<OrderStatus, WireError> {
    Ok(match s {
        "NEW" | "PENDING_NEW" => OrderStatus::New,
        "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
        "FILLED" => OrderStatus::Filled,
        "CANCELED" => OrderStatus::Canceled,
        "PENDING_CANCEL" => OrderStatus::PendingCancel,
        "REJECTED" => OrderStatus::Rejected,
        "EXPIRED" | "EXPIRED_IN_MATCH" => OrderStatus::Expired,
        other => return Err(WireError { what, problem: format!("unknown order status {other:?}") }),
    })
}

/// Binance's name of an order status.
pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::New => "NEW",
        OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
        OrderStatus::Filled => "FILLED",
        OrderStatus::Canceled => "CANCELED",
        OrderStatus::PendingCancel => "PENDING_CANCEL",
        OrderStatus::Rejected => "REJECTED",
        OrderStatus::Expired => "EXPIRED",
    }
}

fn kind(
    what: &'static str,
    type_: &str,
    price: Decimal,
    stop_price: Decimal,
    tif: Option<&str>,
) -> Result<OrderKind, WireError> {
    let time_in_force = || match tif {
        Some("IOC") => Ok(TimeInForce::Ioc),
        Some("GTC") | None => Ok(TimeInForce::Gtc),
        Some(other) => {
            Err(WireError { what, problem: format!("time in force {other:?} is not used by kuant") })
        }
    };
    match type_ {
        "MARKET" => Ok(OrderKind::Market),
        "LIMIT" => Ok(OrderKind::Limit { price, time_in_force: time_in_force()? }),
        "STOP_LOSS_LIMIT" => {
            Ok(OrderKind::StopLossLimit { stop_price, price, time_in_force: time_in_force()? })
        }
        other => Err(WireError { what, problem: format!("order type {other:?} is not used by kuant") }),
    }
}

fn client_id(what: &'static str, id: &str) -> Result<ClientOrderId, WireError> {
    ClientOrderId::new(id).map_err(|e| WireError { what, problem: e.to_string() })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeInfo {
    #[serde(default)]
    rate_limits: Vec<RateLimit>,
    symbols: Vec<SymbolInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimit {
    rate_limit_type: String,
    interval: String,
    interval_num: u32,
    limit: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SymbolInfo {
    symbol: String,
    status: String,
    base_asset: String,
    quote_asset: String,
    filters: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(tag = "filterType", rename_all = "SCREAMING_SNAKE_CASE")]
enum Filter {
    #[serde(rename = "PRICE_FILTER", rename_all = "camelCase")]
    Price { min_price: Decimal, max_price: Decimal, tick_size: Decimal },
    #[serde(rename_all = "camelCase")]
    LotSize { min_qty: Decimal, max_qty: Decimal, step_size: Decimal },
    #[serde(rename_all = "camelCase")]
    MarketLotSize { min_qty: Decimal, max_qty: Decimal, step_size: Decimal },
    #[serde(rename_all = "camelCase")]
    MinNotional { min_notional: Decimal, apply_to_market: bool },
    #[serde(rename_all = "camelCase")]
    Notional {
        min_notional: Decimal,
        apply_min_to_market: bool,
        max_notional: Decimal,
        apply_max_to_market: bool,
    },
}

/// What `GET /api/v3/exchangeInfo` says: each symbol's rules and the request-weight budget per
/// minute (when it names one).
pub fn exchange_info(text: &str) -> Result<(Vec<ExchangeRules>, Option<u32>), WireError> {
    const WHAT: &str = "exchangeInfo";
    let info: ExchangeInfo = wire(WHAT, text)?;
    let weight = info
        .rate_limits
        .iter()
        .find(|l| l.rate_limit_type == "REQUEST_WEIGHT" && l.interval == "MINUTE" && l.interval_num == 1)
        .map(|l| l.limit);
    let mut all = Vec::with_capacity(info.symbols.len());
    for s in info.symbols {
        let mut rules = ExchangeRules {
            symbol: s.symbol,
            base_asset: s.base_asset,
            quote_asset: s.quote_asset,
            trading: s.status == "TRADING",
            ..ExchangeRules::default()
        };
        for value in s.filters {
            // Filters kuant does not apply (ICEBERG_PARTS, PERCENT_PRICE_BY_SIDE, …) are skipped;
            // a known one that does not parse is an error.
            let known = value.get("filterType").and_then(|t| t.as_str()).is_some_and(|t| {
                matches!(t, "PRICE_FILTER" | "LOT_SIZE" | "MARKET_LOT_SIZE" | "MIN_NOTIONAL" | "NOTIONAL")
            });
            if !known {
                continue;
            }
            let filter: Filter = serde_json::from_value(value)
                .map_err(|e| WireError { what: WHAT, problem: format!("{}: {e}", rules.symbol) })?;
            match filter {
                Filter::Price { min_price, max_price, tick_size } => {
                    rules.price = Range { min: min_price, max: max_price, step: tick_size };
                }
                Filter::LotSize { min_qty, max_qty, step_size } => {
                    rules.lot = Range { min: min_qty, max: max_qty, step: step_size };
                }
                Filter::MarketLotSize { min_qty, max_qty, step_size } => {
                    rules.market_lot = Range { min: min_qty, max: max_qty, step: step_size };
                }
                Filter::MinNotional { min_notional, apply_to_market } => {
                    rules.notional.min = min_notional;
                    rules.notional.min_applies_to_market = apply_to_market;
                }
                Filter::Notional { min_notional, apply_min_to_market, max_notional, apply_max_to_market } => {
                    rules.notional = Notional {
                        min: min_notional,
                        min_applies_to_market: apply_min_to_market,
                        max: max_notional,
                        max_applies_to_market: apply_max_to_market,
                    };
                }
            }
        }
        all.push(rules);
    }
    Ok((all, weight))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderWire {
    symbol: String,
    order_id: u64,
    client_order_id: String,
    /// Set on a cancel's answer: then `client_order_id` is the cancel's own id.
    #[serde(default)]
    orig_client_order_id: Option<String>,
    price: Decimal,
    /// Stop orders' trigger (absent or 0 otherwise).
    #[serde(default)]
    stop_price: Decimal,
    orig_qty: Decimal,
    executed_qty: Decimal,
    cummulative_quote_qty: Decimal,
    status: String,
    #[serde(default)]
    time_in_force: Option<String>,
    #[serde(rename = "type")]
    type_: String,
    side: String,
    /// Placement answers.
    #[serde(default)]
    transact_time: Option<i64>,
    /// Query answers.
    #[serde(default)]
    time: Option<i64>,
    #[serde(default)]
    update_time: Option<i64>,
    #[serde(default)]
    fills: Vec<FillWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FillWire {
    price: Decimal,
    qty: Decimal,
    commission: Decimal,
    commission_asset: String,
    trade_id: u64,
}

/// An order as `POST`, `GET` or `DELETE /api/v3/order` (or `openOrders`, `allOrders`) answer
/// it, with the fills a `FULL` placement answer carries.
pub fn order(text: &str) -> Result<(Order, Vec<Fill>), WireError> {
    order_from(wire("order", text)?)
}

/// The orders of `openOrders`, `allOrders` or `DELETE openOrders`.
pub fn orders(text: &str) -> Result<Vec<Order>, WireError> {
    let all: Vec<serde_json::Value> = wire("orders", text)?;
    all.into_iter()
        // `DELETE openOrders` also lists order lists (OCO); kuant places none.
        .filter(|v| v.get("orderId").is_some())
        .map(|v| {
            let w: OrderWire = serde_json::from_value(v)
                .map_err(|e| WireError { what: "orders", problem: e.to_string() })?;
            order_from(w).map(|(o, _)| o)
        })
        .collect()
}

fn order_from(w: OrderWire) -> Result<(Order, Vec<Fill>), WireError> {
    const WHAT: &str = "order";
    let id = client_id(WHAT, w.orig_client_order_id.as_deref().unwrap_or(&w.client_order_id))?;
    let created = w.time.or(w.transact_time).unwrap_or_default();
    let side = side(WHAT, &w.side)?;
    let order = Order {
        symbol: w.symbol.as_str().into(),
        client_id: id.clone(),
        exchange_id: w.order_id,
        side,
        kind: kind(WHAT, &w.type_, w.price, w.stop_price, w.time_in_force.as_deref())?,
        quantity: w.orig_qty,
        filled_quantity: w.executed_qty,
        filled_quote: w.cummulative_quote_qty,
        status: status(WHAT, &w.status)?,
        created_ms: created,
        updated_ms: w.update_time.or(w.transact_time).unwrap_or(created),
    };
    let fills = w
        .fills
        .into_iter()
        .map(|f| Fill {
            symbol: w.symbol.as_str().into(),
            client_id: id.clone(),
            order_id: w.order_id,
            trade_id: f.trade_id,
            side,
            price: f.price,
            quantity: f.qty,
            fee: f.commission,
            fee_asset: f.commission_asset.into(),
            maker: false,
            time_ms: created,
        })
        .collect();
    Ok((order, fills))
}

#[derive(Deserialize)]
struct AccountWire {
    balances: Vec<BalanceWire>,
}

#[derive(Deserialize)]
struct BalanceWire {
    asset: String,
    free: Decimal,
    locked: Decimal,
}

/// The balances of `GET /api/v3/account`.
pub fn account(text: &str) -> Result<Vec<Balance>, WireError> {
    let a: AccountWire = wire("account", text)?;
    Ok(a.balances.into_iter().map(|b| Balance { asset: b.asset, free: b.free, locked: b.locked }).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountTradeWire {
    symbol: String,
    id: u64,
    order_id: u64,
    price: Decimal,
    qty: Decimal,
    commission: Decimal,
    commission_asset: String,
    time: i64,
    is_buyer: bool,
    is_maker: bool,
}

/// The account's trades of `GET /api/v3/myTrades`.
pub fn my_trades(text: &str) -> Result<Vec<Trade>, WireError> {
    let all: Vec<AccountTradeWire> = wire("myTrades", text)?;
    Ok(all
        .into_iter()
        .map(|t| Trade {
            symbol: t.symbol,
            trade_id: t.id,
            order_id: t.order_id,
            side: if t.is_buyer { Side::Buy } else { Side::Sell },
            price: t.price,
            quantity: t.qty,
            fee: t.commission,
            fee_asset: t.commission_asset,
            maker: t.is_maker,
            time_ms: t.time,
        })
        .collect())
}

/// `GET /api/v3/klines`: arrays of open time, OHLC, volume, close time and more.
pub fn klines(text: &str) -> Result<Vec<Kline>, WireError> {
    type Head = (i64, Decimal, Decimal, Decimal, Decimal, Decimal, i64);
    let err = |problem: String| WireError { what: "klines", problem };
    let rows: Vec<Vec<serde_json::Value>> = wire("klines", text)?;
    rows.into_iter()
        .map(|mut row| {
            if row.len() < 7 {
                return Err(err(format!("a row of {} cells, not 12", row.len())));
            }
            row.truncate(7);
            let (open_ms, open, high, low, close, volume, close_ms): Head =
                serde_json::from_value(serde_json::Value::Array(row)).map_err(|e| err(e.to_string()))?;
            Ok(Kline { open_ms, open, high, low, close, volume, close_ms, closed: true })
        })
        .collect()
}

/// An event of the market streams (`/ws/<stream>` or `/stream?streams=`, whose `{"stream",
/// "data"}` wrapper is unwrapped here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarketEvent {
    /// A trade.
    Trade {
        /// E.g. `BTCUSDT`.
        symbol: String,
        /// Trade id.
        id: u64,
        /// Price.
        price: Decimal,
        /// Base quantity.
        quantity: Decimal,
        /// When, Unix ms.
        time_ms: i64,
    },
    /// The best bid and ask changed.
    BookTicker(BookTicker),
    /// A candle, forming or closed.
    Kline {
        /// E.g. `BTCUSDT`.
        symbol: String,
        /// E.g. `1h`.
        interval: String,
        /// The candle.
        kline: Kline,
    },
}

#[derive(Deserialize)]
struct TradeWire {
    s: String,
    t: u64,
    p: Decimal,
    q: Decimal,
    #[serde(rename = "T")]
    time: i64,
}

#[derive(Deserialize)]
struct BookTickerWire {
    u: u64,
    s: String,
    b: Decimal,
    #[serde(rename = "B")]
    bid_qty: Decimal,
    a: Decimal,
    #[serde(rename = "A")]
    ask_qty: Decimal,
}

#[derive(Deserialize)]
struct KlineEventWire {
    s: String,
    k: KlineWire,
}

#[derive(Deserialize)]
struct KlineWire {
    t: i64,
    #[serde(rename = "T")]
    close_ms: i64,
    i: String,
    o: Decimal,
    c: Decimal,
    h: Decimal,
    l: Decimal,
    v: Decimal,
    x: bool,
}

/// A market stream message; `None` for one kuant does not use (a subscription's answer, say).
pub fn market_event(text: &str) -> Result<Option<MarketEvent>, WireError> {
    const WHAT: &str = "market stream";
    let mut value: serde_json::Value = wire(WHAT, text)?;
    if let Some(data) = value.get_mut("data").filter(|_| text.contains("\"stream\"")) {
        value = data.take();
    }
    let parse = |v: serde_json::Value| -> Result<MarketEvent, WireError> {
        let event = v.get("e").and_then(|e| e.as_str()).map(str::to_owned);
        let err = |e: serde_json::Error| WireError { what: WHAT, problem: e.to_string() };
        Ok(match event.as_deref() {
            Some("trade") => {
                let t: TradeWire = serde_json::from_value(v).map_err(err)?;
                MarketEvent::Trade { symbol: t.s, id: t.t, price: t.p, quantity: t.q, time_ms: t.time }
            }
            Some("kline") => {
                let k: KlineEventWire = serde_json::from_value(v).map_err(err)?;
                let kline = Kline {
                    open_ms: k.k.t,
                    open: k.k.o,
                    high: k.k.h,
                    low: k.k.l,
                    close: k.k.c,
                    volume: k.k.v,
                    close_ms: k.k.close_ms,
                    closed: k.k.x,
                };
                MarketEvent::Kline { symbol: k.s, interval: k.k.i, kline }
            }
            // The bookTicker stream's messages carry no event type.
            _ => {
                let b: BookTickerWire = serde_json::from_value(v).map_err(err)?;
                MarketEvent::BookTicker(BookTicker {
                    symbol: b.s,
                    update_id: b.u,
                    bid: (b.b, b.bid_qty),
                    ask: (b.a, b.ask_qty),
                })
            }
        })
    };
    let is_market = value.get("e").and_then(|e| e.as_str()).is_some_and(|e| e == "trade" || e == "kline")
        || (value.get("u").is_some() && value.get("b").is_some() && value.get("a").is_some());
    if !is_market {
        return Ok(None);
    }
    parse(value).map(Some)
}

#[derive(Deserialize)]
struct ExecutionReport {
    s: String,
    c: String,
    #[serde(rename = "C", default)]
    orig_client_id: Option<String>,
    #[serde(rename = "S")]
    side: String,
    o: String,
    f: String,
    q: Decimal,
    p: Decimal,
    /// Stop price.
    #[serde(rename = "P", default)]
    stop_price: Decimal,
    x: String,
    #[serde(rename = "X")]
    status: String,
    i: u64,
    l: Decimal,
    z: Decimal,
    #[serde(rename = "L")]
    last_price: Decimal,
    n: Decimal,
    #[serde(rename = "N")]
    fee_asset: Option<String>,
    #[serde(rename = "T")]
    time: i64,
    t: i64,
    m: bool,
    #[serde(rename = "O")]
    created: i64,
    #[serde(rename = "Z")]
    quote: Decimal,
}

#[derive(Deserialize)]
struct AccountPosition {
    #[serde(rename = "E")]
    time: i64,
    #[serde(rename = "B")]
    balances: Vec<PositionBalance>,
}

#[derive(Deserialize)]
struct PositionBalance {
    a: String,
    f: Decimal,
    l: Decimal,
}

/// A user data stream event (from the WebSocket API's subscription, whose `{"subscriptionId",
/// "event"}` wrapper is unwrapped here); `None` for one kuant does not use.
pub fn account_update(text: &str) -> Result<Option<AccountUpdate>, WireError> {
    const WHAT: &str = "user data stream";
    let mut value: serde_json::Value = wire(WHAT, text)?;
    if let Some(event) = value.get_mut("event") {
        value = event.take();
    }
    let err = |e: serde_json::Error| WireError { what: WHAT, problem: e.to_string() };
    match value.get("e").and_then(|e| e.as_str()) {
        Some("executionReport") => {
            let r: ExecutionReport = serde_json::from_value(value).map_err(err)?;
            // A cancel names the cancelled order in `C` (and its own request in `c`).
            let id = match r.orig_client_id.as_deref() {
                Some(orig) if !orig.is_empty() => orig,
                _ => r.c.as_str(),
            };
            let id = client_id(WHAT, id)?;
            let side = side(WHAT, &r.side)?;
            let order = Order {
                symbol: r.s.as_str().into(),
                client_id: id.clone(),
                exchange_id: r.i,
                side,
                kind: kind(WHAT, &r.o, r.p, r.stop_price, Some(&r.f))?,
                quantity: r.q,
                filled_quantity: r.z,
                filled_quote: r.quote,
                status: status(WHAT, &r.status)?,
                created_ms: r.created,
                updated_ms: r.time,
            };
            let fill = (r.x == "TRADE").then(|| {
                Box::new(Fill {
                    symbol: r.s.into(),
                    client_id: id,
                    order_id: r.i,
                    trade_id: u64::try_from(r.t).unwrap_or_default(),
                    side,
                    price: r.last_price,
                    quantity: r.l,
                    fee: r.n,
                    fee_asset: r.fee_asset.unwrap_or_default().into(),
                    maker: r.m,
                    time_ms: r.time,
                })
            });
            Ok(Some(AccountUpdate::Order { order, fill }))
        }
        Some("outboundAccountPosition") => {
            let p: AccountPosition = serde_json::from_value(value).map_err(err)?;
            let balances =
                p.balances.into_iter().map(|b| Balance { asset: b.a, free: b.f, locked: b.l }).collect();
            Ok(Some(AccountUpdate::Balances { balances, time_ms: p.time }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/binance/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn exchange_info_gives_each_symbols_filters_and_the_weight_budget() {
        let (rules, weight) = exchange_info(&fixture("exchange-info")).expect("parsed");
        assert_eq!(weight, Some(6000));
        let btc = rules.iter().find(|r| r.symbol == "BTCUSDT").expect("BTCUSDT");
        assert!(btc.trading);
        assert_eq!((btc.base_asset.as_str(), btc.quote_asset.as_str()), ("BTC", "USDT"));
        assert_eq!(btc.price, Range { min: d("0.01"), max: d("1000000"), step: d("0.01") });
        assert_eq!(btc.lot, Range { min: d("0.00001"), max: d("9000"), step: d("0.00001") });
        assert_eq!(btc.market_lot.max, d("107.53264084"));
        assert_eq!(btc.notional.min, d("5"));
        assert!(btc.notional.min_applies_to_market && !btc.notional.max_applies_to_market);
        // The older MIN_NOTIONAL filter, and a symbol that is not trading.
        let old = rules.iter().find(|r| r.symbol == "LTCBTC").expect("LTCBTC");
        assert_eq!(old.notional.min, d("0.0001"));
        assert!(!old.trading);
        // The published rules are the simulator's defaults.
        let defaults = ExchangeRules::binance_default("BTCUSDT").expect("defaults");
        assert_eq!((defaults.price, defaults.lot, defaults.notional), (btc.price, btc.lot, btc.notional));
    }

    #[test]
    fn orders_read_in_every_state() {
        let (filled, fills) = order(&fixture("order-full-filled")).expect("FULL answer");
        assert_eq!(filled.status, OrderStatus::Filled);
        assert_eq!(filled.kind, OrderKind::Market);
        assert_eq!(filled.client_id.as_str(), "kuant-s1-000001");
        assert_eq!(fills.len(), 2);
        assert_eq!(fills.iter().map(|f| f.quantity).sum::<Decimal>(), filled.filled_quantity);
        assert_eq!(filled.average_price(), Some(d("60000.5")));

        let (new, none) = order(&fixture("order-query-new")).expect("query answer");
        assert!(none.is_empty());
        assert_eq!(new.status, OrderStatus::New);
        assert_eq!(new.kind, OrderKind::Limit { price: d("59000"), time_in_force: TimeInForce::Gtc });
        assert_eq!(new.average_price(), None);

        let (stop, _) = order(&fixture("order-query-stop-loss-limit")).expect("stop");
        assert_eq!(
            (stop.status, stop.kind),
            (
                OrderStatus::New,
                OrderKind::StopLossLimit {
                    stop_price: d("56000"),
                    price: d("55900"),
                    time_in_force: TimeInForce::Gtc
                }
            )
        );

        let (partial, _) = order(&fixture("order-query-partially-filled")).expect("partial");
        assert_eq!(partial.status, OrderStatus::PartiallyFilled);
        assert!(partial.status.is_open());

        let (cancelled, _) = order(&fixture("order-cancel")).expect("cancel answer");
        assert_eq!(cancelled.status, OrderStatus::Canceled);
        assert_eq!(
            cancelled.client_id.as_str(),
            "kuant-s1-000002",
            "the cancelled order's id, not the cancel's"
        );

        let (expired, _) = order(&fixture("order-ioc-expired")).expect("IOC");
        assert_eq!(expired.status, OrderStatus::Expired);
        assert!(matches!(expired.kind, OrderKind::Limit { time_in_force: TimeInForce::Ioc, .. }));

        let open = orders(&fixture("open-orders")).expect("open orders");
        assert_eq!(open.len(), 2);
        assert!(open.iter().all(|o| o.status.is_open()));
    }

    #[test]
    fn the_account_and_klines_read() {
        let balances = account(&fixture("account")).expect("account");
        let usdt = balances.iter().find(|b| b.asset == "USDT").expect("USDT");
        assert_eq!((usdt.free, usdt.locked, usdt.total()), (d("9400.5"), d("590"), d("9990.5")));
        let candles = klines(&fixture("klines")).expect("klines");
        assert_eq!(candles.len(), 2);
        assert_eq!(candles[0].open_ms, 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000);
        assert_eq!((candles[0].high, candles[0].close_ms - candles[0].open_ms), (d("37150.00"), 3_599_999));
        assert!(klines("[[1, \"2\"]]").is_err());
    }

    #[test]
    fn the_accounts_trades_read_with_their_side_and_fee_asset() {
        let trades = my_trades(&fixture("my-trades")).expect("myTrades");
        assert_eq!(trades.len(), 2);
        let (bought, sold) = (&trades[0], &trades[1]);
        assert_eq!((bought.side, bought.maker, bought.fee_asset.as_str()), (Side::Buy, false, "BTC"));
        assert_eq!((bought.trade_id, bought.order_id, bought.quantity), (28457, 100234, d("0.012")));
        assert_eq!((sold.side, sold.maker, sold.fee), (Side::Sell, true, d("0.7212")));
        assert!(my_trades("{\"code\": -1102}").is_err());
    }

    #[test]
    fn market_stream_messages_read_raw_and_combined() {
        let trade = market_event(&fixture("stream-trade")).expect("trade").expect("an event");
        assert!(matches!(trade, MarketEvent::Trade { ref symbol, id: 12345, .. } if symbol == "BTCUSDT"));
        let book = market_event(&fixture("stream-book-ticker")).expect("book").expect("an event");
        let MarketEvent::BookTicker(book) = book else { panic!("a book ticker") };
        assert!(book.bid.0 < book.ask.0);
        let kline = market_event(&fixture("stream-kline-combined")).expect("kline").expect("an event");
        let MarketEvent::Kline { interval, kline, .. } = kline else { panic!("a kline") };
        assert_eq!(interval, "1h");
        assert!(kline.closed);
        assert_eq!(market_event(r#"{"result":null,"id":1}"#).expect("an answer"), None);
    }

    #[test]
    fn user_data_events_read_from_the_websocket_api_subscription() {
        let update = account_update(&fixture("execution-report-trade")).expect("parsed").expect("an event");
        let AccountUpdate::Order { order, fill: Some(fill) } = update else { panic!("an order with a fill") };
        assert_eq!(order.status, OrderStatus::PartiallyFilled);
        assert_eq!((fill.quantity, fill.price, &*fill.fee_asset), (d("0.001"), d("60000"), "BNB"));
        assert!(fill.maker);
        let update =
            account_update(&fixture("execution-report-canceled")).expect("parsed").expect("an event");
        let AccountUpdate::Order { order, fill: None } = update else { panic!("an order without a fill") };
        assert_eq!((order.status, order.client_id.as_str()), (OrderStatus::Canceled, "kuant-s1-000002"));
        let update =
            account_update(&fixture("outbound-account-position")).expect("parsed").expect("an event");
        let AccountUpdate::Balances { balances, .. } = update else { panic!("balances") };
        assert_eq!(balances.len(), 2);
        assert_eq!(account_update(r#"{"subscriptionId":0,"event":{"e":"listStatus"}}"#).expect("ok"), None);
    }
}
