//! The simulator's REST API over real HTTP on loopback: Binance's signed-request checks and
//! error bodies, an order's life (placed, filled, resting, queried, listed, cancelled), the
//! account, and market data read by kuant's own Binance parsers.

use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use common::{H, KEY, SECRET, d};
use kuant_exchanges::binance::{Credentials, classify, sign, wire};
use kuant_exchanges::{ExchangeError, ExchangeRules, OrderStatus, RejectKind};
use rust_decimal::Decimal;

fn start() -> String {
    common::start(1.0).0
}

fn now_ms() -> String {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis().to_string()
}

struct Client {
    base: String,
    agent: ureq::Agent,
    credentials: Credentials,
}

impl Client {
    fn new(base: &str, credentials: Credentials) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Self { base: base.to_owned(), agent, credentials }
    }

    fn public(&self, path: &str) -> (u16, String) {
        let mut r = self.agent.get(format!("{}{path}", self.base)).call().expect("answered");
        (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
    }

    /// A signed request, its parameters in the query string (or, for POST, in a form body).
    fn signed(&self, method: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
        let timestamp = now_ms();
        let mut all = params.to_vec();
        all.push(("timestamp", &timestamp));
        let signed = sign::signed_query(&self.credentials, &all);
        let url = format!("{}{path}", self.base);
        let key = self.credentials.api_key();
        let mut r = match method {
            "GET" => self.agent.get(format!("{url}?{signed}")).header("X-MBX-APIKEY", key).call(),
            "DELETE" => self.agent.delete(format!("{url}?{signed}")).header("X-MBX-APIKEY", key).call(),
            _ => self
                .agent
                .post(url)
                .header("X-MBX-APIKEY", key)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(signed.as_str()),
        }
        .expect("answered");
        (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
    }
}

fn error(answer: (u16, String)) -> ExchangeError {
    assert!(answer.0 >= 400, "an error, not {answer:?}");
    classify(answer.0, None, &answer.1, None)
}

#[test]
fn signed_requests_are_checked_as_binance_checks_them() {
    let base = start();
    let good = Client::new(&base, Credentials::hmac(KEY, SECRET));
    let (status, _) = good.signed("GET", "/api/v3/account", &[]);
    assert_eq!(status, 200);

    let wrong_secret = Client::new(&base, Credentials::hmac(KEY, "not-the-secret"));
    let e = error(wrong_secret.signed("GET", "/api/v3/account", &[]));
    assert!(matches!(e, ExchangeError::Rejected { code: -1022, kind: RejectKind::Unauthorized, .. }), "{e}");

    let wrong_key = Client::new(&base, Credentials::hmac("someone-else", SECRET));
    let answer = wrong_key.signed("GET", "/api/v3/account", &[]);
    assert_eq!(answer.0, 401);
    assert!(matches!(error(answer), ExchangeError::Rejected { code: -2015, .. }));

    // A timestamp from a minute ago is outside the default 5 s window: clock skew.
    let stale =
        (SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() - 60_000).to_string();
    let query = sign::signed_query(&good.credentials, &[("timestamp", &stale)]);
    let mut r = good
        .agent
        .get(format!("{base}/api/v3/account?{query}"))
        .header("X-MBX-APIKEY", KEY)
        .call()
        .expect("answered");
    let body = r.body_mut().read_to_string().expect("body");
    assert!(
        matches!(classify(r.status().as_u16(), None, &body, None), ExchangeError::ClockSkew(_)),
        "{body}"
    );
}

#[test]
fn an_order_lives_its_life_through_the_rest_api() {
    let base = start();
    let client = Client::new(&base, Credentials::hmac(KEY, SECRET));

    // Rules and prices, read with kuant's own parsers.
    let (status, info) = client.public("/api/v3/exchangeInfo");
    assert_eq!(status, 200);
    let (rules, weight) = wire::exchange_info(&info).expect("exchangeInfo");
    assert_eq!(weight, Some(6000));
    assert_eq!(rules[0], ExchangeRules::binance_default("BTCUSDT").expect("defaults"));
    let (_, klines) = client.public("/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5");
    let klines = wire::klines(&klines).expect("klines");
    assert_eq!(klines.len(), 1, "only the candle that has opened on the simulated clock");
    let (_, price) = client.public("/api/v3/ticker/price?symbol=BTCUSDT");
    let price: serde_json::Value = serde_json::from_str(&price).expect("json");
    let price: Decimal = price["price"].as_str().expect("a price").parse().expect("decimal");
    assert!(price > d("59000") && price < d("61000"), "{price}");
    let (status, _) = client.public("/api/v3/depth?symbol=BTCUSDT&limit=5");
    assert_eq!(status, 200);

    // A market buy fills at once (FULL answer with its fills).
    let (status, body) = client.signed(
        "POST",
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "kuant-t-1"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let (order, fills) = wire::order(&body).expect("an order");
    assert_eq!((order.status, order.client_id.as_str()), (OrderStatus::Filled, "kuant-t-1"));
    assert_eq!(fills.iter().map(|f| f.quantity).sum::<Decimal>(), d("0.01"));

    // The same client id again: a duplicate, refused.
    let e = error(client.signed(
        "POST",
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "kuant-t-1"),
        ],
    ));
    assert!(matches!(e, ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, .. }), "{e}");

    // A limit far below rests, holding its money; it is queried, listed and cancelled.
    let (status, body) = client.signed(
        "POST",
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.01"),
            ("price", "30000"),
            ("newClientOrderId", "kuant-t-2"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) =
        client.signed("GET", "/api/v3/order", &[("symbol", "BTCUSDT"), ("origClientOrderId", "kuant-t-2")]);
    assert_eq!(wire::order(&body).expect("an order").0.status, OrderStatus::New);
    let (_, body) = client.signed("GET", "/api/v3/openOrders", &[("symbol", "BTCUSDT")]);
    assert_eq!(wire::orders(&body).expect("orders").len(), 1);
    let (_, body) = client.signed("GET", "/api/v3/account", &[]);
    let usdt = wire::account(&body).expect("account").into_iter().find(|b| b.asset == "USDT").expect("USDT");
    assert_eq!(usdt.locked, d("300"));
    let (status, body) = client.signed(
        "DELETE",
        "/api/v3/order",
        &[("symbol", "BTCUSDT"), ("origClientOrderId", "kuant-t-2")],
    );
    assert_eq!(status, 200, "{body}");
    let (cancelled, _) = wire::order(&body).expect("the cancelled order");
    assert_eq!((cancelled.status, cancelled.client_id.as_str()), (OrderStatus::Canceled, "kuant-t-2"));
    let e = error(client.signed(
        "DELETE",
        "/api/v3/order",
        &[("symbol", "BTCUSDT"), ("origClientOrderId", "kuant-t-2")],
    ));
    assert!(matches!(e, ExchangeError::Rejected { code: -2011, kind: RejectKind::UnknownOrder, .. }), "{e}");

    // Filters and balance, refused as Binance refuses them.
    let e = error(client.signed(
        "POST",
        "/api/v3/order",
        &[("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.000001")],
    ));
    assert!(matches!(e, ExchangeError::Rejected { code: -1013, kind: RejectKind::Filter, .. }), "{e}");
    let e = error(client.signed(
        "POST",
        "/api/v3/order",
        &[("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "MARKET"), ("quantity", "5")],
    ));
    assert!(matches!(e, ExchangeError::Rejected { kind: RejectKind::InsufficientBalance, .. }), "{e}");
    let (status, _) = client.signed(
        "POST",
        "/api/v3/order/test",
        &[("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.01")],
    );
    assert_eq!(status, 200);

    let (_, body) = client.signed("GET", "/api/v3/allOrders", &[("symbol", "BTCUSDT")]);
    assert_eq!(wire::orders(&body).expect("orders").len(), 2);
    let (_, body) = client.signed("GET", "/api/v3/myTrades", &[("symbol", "BTCUSDT")]);
    let trades: Vec<serde_json::Value> = serde_json::from_str(&body).expect("trades");
    assert_eq!(trades.len(), fills.len());
}

#[test]
fn kuants_own_binance_data_source_reads_the_simulators_klines() {
    use kuant_agents::data::{DataSource, Span};
    let base = start();
    let source = kuant_agents::data::binance::BinanceSource::new(Some(&base), None);
    let first = 1_700_000_000_000 - 1_700_000_000_000 % H;
    let span = Span { start_ms: Some(first), end_ms: Some(first + H) };
    let series = source.load("BTCUSDT", kuant_crds::Timeframe::H1, span);
    // The simulated clock has only reached the first candle.
    let series = series.expect("candles");
    assert_eq!(series.len(), 1);
}
