//! The Binance REST adapter against `kuant exchange-sim` over real HTTP: orders of each kind and
//! state, and the adapter's answer to each fault (back-off on 429, silence during a 418 ban,
//! an unknown outcome resolved without a second order, a skewed clock measured again).

mod common;

use std::time::{Duration, Instant};

use common::{KEY, SECRET, d};
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::binance::rest::BinanceRest;
use kuant_exchanges::{
    ClientOrderId, ExchangeError, ExchangeRules, OrderKind, OrderRequest, OrderStatus, RejectKind,
    RuleViolation, Side, TimeInForce,
};

fn client(base: &str) -> BinanceRest {
    BinanceRest::new(base, Some(Credentials::hmac(KEY, SECRET))).expect("a client")
}

fn order(id: &str, side: Side, kind: OrderKind, quantity: &str) -> OrderRequest {
    OrderRequest {
        symbol: "BTCUSDT".into(),
        side,
        kind,
        quantity: d(quantity),
        client_id: ClientOrderId::new(id).expect("id"),
    }
}

fn inject(base: &str, fault: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent.post(format!("{base}/_sim/faults")).send(fault).expect("answered");
    assert_eq!(r.status().as_u16(), 200, "{fault}");
}

async fn rules(api: &BinanceRest) -> ExchangeRules {
    api.exchange_info()
        .await
        .expect("exchangeInfo")
        .into_iter()
        .find(|r| r.symbol == "BTCUSDT")
        .expect("BTCUSDT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_every_kind_live_their_lives_through_the_adapter() {
    let (base, state) = common::start(1.0);
    let api = client(&base);
    api.sync_time().await.expect("time");
    let rules = rules(&api).await;
    let price = api.price("BTCUSDT").await.expect("a price");
    let candles = api.klines("BTCUSDT", "1h", None, None, 10).await.expect("klines");
    assert_eq!(candles.len(), 1);

    let (market, fills) =
        api.place(&order("a-1", Side::Buy, OrderKind::Market, "0.01"), &rules, price).await.expect("placed");
    assert_eq!(market.status, OrderStatus::Filled);
    assert!(!fills.is_empty());

    let gtc = OrderKind::Limit { price: d("30000"), time_in_force: TimeInForce::Gtc };
    let (resting, _) = api.place(&order("a-2", Side::Buy, gtc, "0.01"), &rules, price).await.expect("placed");
    assert_eq!(resting.status, OrderStatus::New);
    let ioc = OrderKind::Limit { price: d("30000"), time_in_force: TimeInForce::Ioc };
    let (expired, _) = api.place(&order("a-3", Side::Buy, ioc, "0.01"), &rules, price).await.expect("placed");
    assert_eq!(expired.status, OrderStatus::Expired);
    let far = OrderKind::Limit { price: d("90000"), time_in_force: TimeInForce::Gtc };
    api.place(&order("a-4", Side::Sell, far, "0.01"), &rules, price).await.expect("placed");
    // A stop-loss below the market waits on the exchange, and reads back as one.
    let stop_price = (price * d("0.9")).round_dp(2);
    let stop =
        OrderKind::StopLossLimit { stop_price, price: stop_price - d("10"), time_in_force: TimeInForce::Gtc };
    let (waiting, _) =
        api.place(&order("a-7", Side::Sell, stop, "0.01"), &rules, price).await.expect("placed");
    assert_eq!((waiting.status, waiting.kind), (OrderStatus::New, stop));

    assert_eq!(api.open_orders("BTCUSDT").await.expect("open").len(), 3);
    let found = api.order("BTCUSDT", &ClientOrderId::new("a-2").expect("id")).await.expect("asked");
    assert_eq!(found.map(|o| o.status), Some(OrderStatus::New));
    assert_eq!(api.order("BTCUSDT", &ClientOrderId::new("nope").expect("id")).await.expect("asked"), None);
    let cancelled = api.cancel("BTCUSDT", &ClientOrderId::new("a-2").expect("id")).await.expect("cancelled");
    assert_eq!(cancelled.status, OrderStatus::Canceled);
    let rest = api.cancel_all("BTCUSDT").await.expect("cancelled");
    assert_eq!(rest.len(), 2);
    assert!(api.open_orders("BTCUSDT").await.expect("open").is_empty());
    let unknown = api.cancel("BTCUSDT", &ClientOrderId::new("a-2").expect("id")).await.expect_err("gone");
    assert!(matches!(unknown, ExchangeError::Rejected { kind: RejectKind::UnknownOrder, .. }));

    // Blocked before sending: the simulator never sees it.
    let before = state.orders_placed();
    let tiny = api.place(&order("a-5", Side::Buy, OrderKind::Market, "0.000001"), &rules, price).await;
    assert!(matches!(tiny, Err(ExchangeError::Blocked(RuleViolation::QuantityTooSmall { .. }))), "{tiny:?}");
    assert_eq!(state.orders_placed(), before);
    let broke = api.place(&order("a-6", Side::Sell, OrderKind::Market, "5"), &rules, price).await;
    assert!(
        matches!(broke, Err(ExchangeError::Rejected { kind: RejectKind::InsufficientBalance, .. })),
        "{broke:?}"
    );
    let balances = api.balances().await.expect("balances");
    assert!(balances.iter().any(|b| b.asset == "BTC" && b.free > d("0.5")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_a_418_ban_silences_the_client_until_it_ends() {
    let (base, _state) = common::start(1.0);
    let api = client(&base);
    inject(&base, r#"{"kind": "http", "status": 429, "count": 1, "retryAfter": 1}"#);
    let started = Instant::now();
    api.balances().await.expect("answered after the wait");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited Retry-After");
    assert_eq!(api.rate_limit_waits(), 1);

    inject(&base, r#"{"kind": "http", "status": 418, "seconds": 1.5, "retryAfter": 2}"#);
    let started = Instant::now();
    api.balances().await.expect("answered after the ban");
    assert!(started.elapsed() >= Duration::from_secs(2), "nothing sent before the ban's end");
    assert_eq!(api.rate_limit_waits(), 2, "one wait for the ban, not one per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_accepted_then_timed_out_is_found_by_its_client_id_not_sent_twice() {
    let (base, state) = common::start(1.0);
    let api = client(&base);
    let rules = rules(&api).await;
    let price = api.price("BTCUSDT").await.expect("a price");
    inject(&base, r#"{"kind": "timeout-after-accept", "count": 1}"#);
    let before = state.orders_placed();
    let (placed, _) = api
        .place(&order("u-1", Side::Buy, OrderKind::Market, "0.01"), &rules, price)
        .await
        .expect("resolved");
    assert_eq!((placed.client_id.as_str(), placed.status), ("u-1", OrderStatus::Filled));
    assert_eq!(state.orders_placed(), before + 1, "exactly one order");

    // Refused outright (not accepted): an error, and nothing placed.
    inject(&base, r#"{"kind": "reject-orders", "count": 1}"#);
    let refused = api.place(&order("u-2", Side::Buy, OrderKind::Market, "0.01"), &rules, price).await;
    assert!(matches!(refused, Err(ExchangeError::Rejected { code: -2010, .. })), "{refused:?}");
    assert_eq!(state.orders_placed(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_measured_again_after_minus_1021() {
    let (base, _state) = common::start(1.0);
    let api = client(&base);
    api.sync_time().await.expect("time");
    assert!(api.clock_offset_ms().abs() < 1_000);
    // The exchange's clock jumps 30 s ahead: the next signed request is refused with -1021,
    // the adapter measures the clock again and sends it once more.
    inject(&base, r#"{"kind": "clock-skew", "ms": 30000}"#);
    api.balances().await.expect("answered after measuring the clock again");
    assert!((api.clock_offset_ms() - 30_000).abs() < 1_000, "offset {}", api.clock_offset_ms());
}

/// Everything the adapter logs, captured.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_key_or_secret_appears_in_a_log_line_or_an_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let errors = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (base, _state) = common::start(1.0);
            let api = client(&base);
            let rules = rules(&api).await;
            let price = api.price("BTCUSDT").await.expect("a price");
            let mut errors = Vec::new();
            for fault in [
                r#"{"kind": "http", "status": 429, "count": 1, "retryAfter": 1}"#,
                r#"{"kind": "timeout-after-accept", "count": 1}"#,
                r#"{"kind": "clock-skew", "ms": 20000}"#,
                r#"{"kind": "reject-orders", "count": 1}"#,
            ] {
                inject(&base, fault);
                let id = format!("s-{}", errors.len());
                match api.place(&order(&id, Side::Buy, OrderKind::Market, "0.01"), &rules, price).await {
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{e} {e:?}")),
                }
            }
            // A wrong secret, and a server that is not there.
            let wrong =
                BinanceRest::new(&base, Some(Credentials::hmac(KEY, "wrong-secret-value"))).expect("client");
            errors.push(format!("{:?}", wrong.balances().await.expect_err("refused")));
            let gone =
                BinanceRest::new("http://127.0.0.1:9", Some(Credentials::hmac(KEY, SECRET))).expect("client");
            let order = order("s-gone", Side::Buy, OrderKind::Market, "0.01");
            errors.push(format!("{:?}", gone.place(&order, &rules, price).await.expect_err("no server")));
            errors
        })
    });
    let logs = String::from_utf8(captured.0.lock().expect("logs").clone()).expect("utf-8");
    assert!(logs.contains("rate limit"), "the adapter logged its wait:\n{logs}");
    assert!(logs.contains("clock"), "and the clock:\n{logs}");
    for text in errors.iter().chain(std::iter::once(&logs)) {
        for secret in [KEY, SECRET, "wrong-secret-value", "signature="] {
            assert!(!text.contains(secret), "{secret:?} appears in:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_key_signs_orders_the_simulator_accepts() {
    // A throwaway key made with `openssl genpkey -algorithm ed25519`.
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAHGgk+LkgCCbu6iUH86BQynBLAn24nUQlnNVdW0hq3g\n-----END PRIVATE KEY-----\n";
    let yaml = format!("apiKey: ed-key\nprivateKey: |\n  {}", pem.replace('\n', "\n  "));
    let server_side = Credentials::from_yaml(&yaml).expect("an Ed25519 key");
    let (base, _state) = common::start_with(kuant_exchanges::sim::Speed::Times(1.0), server_side);
    let api = BinanceRest::new(&base, Some(Credentials::from_yaml(&yaml).expect("key"))).expect("client");
    let rules = rules(&api).await;
    let price = api.price("BTCUSDT").await.expect("a price");
    // The base64 signature holds '+', '/' and '=': it must arrive percent-encoded and intact.
    for i in 0..5 {
        let id = format!("ed-{i}");
        let (placed, _) = api
            .place(&order(&id, Side::Buy, OrderKind::Market, "0.01"), &rules, price)
            .await
            .expect("placed");
        assert_eq!(placed.status, OrderStatus::Filled);
    }
    let other = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICquQ51Qgyhh3yJl/Ua5tzYJmYN/PeSMtXkJhw/WtP1u\n-----END PRIVATE KEY-----\n";
    let wrong = Credentials::ed25519("ed-key", other).expect("another key");
    let refused =
        BinanceRest::new(&base, Some(wrong)).expect("client").balances().await.expect_err("refused");
    assert!(matches!(refused, ExchangeError::Rejected { code: -1022, .. }), "{refused}");
}
