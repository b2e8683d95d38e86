//! The simulator's market streams and its faults, over real WebSocket and HTTP on loopback, read
//! with kuant's Binance parsers and error mapping.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{KEY, SECRET, d};
use futures::{SinkExt, StreamExt};
use kuant_exchanges::binance::wire::{self, MarketEvent, market_event};
use kuant_exchanges::binance::{Credentials, classify, sign};
use kuant_exchanges::{ClientOrderId, ExchangeError, OrderStatus};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// 36,000 simulated ms per real ms: an hourly candle every 100 ms, a path point every 3 ms.
const FAST: f64 = 36_000.0;

async fn connect(base: &str, path: &str) -> Socket {
    let addr = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream).await.expect("handshake").0
}

/// The next text message within `limit`, `None` if none came; panics if the connection ended.
async fn next_text(socket: &mut Socket, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(p)))) => {
                let _ = socket.send(Message::Pong(p)).await;
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the connection ended: {other:?}"),
        }
    }
}

fn post(base: &str, path: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("answered");
    (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
}

fn signed(base: &str, method: &str, path: &str, params: &[(&str, &str)]) -> (u16, String, Option<u64>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let credentials = Credentials::hmac(KEY, SECRET);
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis().to_string();
    let mut all = params.to_vec();
    all.push(("timestamp", &ts));
    let query = sign::signed_query(&credentials, &all);
    let url = format!("{base}{path}?{query}");
    let mut r = match method {
        "POST" => agent.post(url).header("X-MBX-APIKEY", KEY).send_empty(),
        _ => agent.get(url).header("X-MBX-APIKEY", KEY).call(),
    }
    .expect("answered");
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), r.body_mut().read_to_string().expect("body"), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_combined_streams_speak_binances_format() {
    let (base, _state) = common::start(FAST);
    let mut trades = connect(&base, "/ws/btcusdt@trade").await;
    let text = next_text(&mut trades, Duration::from_secs(5)).await.expect("a trade");
    let event = market_event(&text).expect("parsed").expect("an event");
    assert!(matches!(event, MarketEvent::Trade { ref symbol, .. } if symbol == "BTCUSDT"), "{text}");

    let mut combined = connect(&base, "/stream?streams=btcusdt@kline_1h/btcusdt@bookTicker").await;
    let (mut klines, mut books, mut closed) = (0, 0, 0);
    let started = Instant::now();
    while (klines == 0 || books == 0 || closed == 0) && started.elapsed() < Duration::from_secs(10) {
        let Some(text) = next_text(&mut combined, Duration::from_secs(5)).await else { break };
        assert!(text.starts_with("{\"data\"") || text.starts_with("{\"stream\""), "{text}");
        match market_event(&text).expect("parsed").expect("an event") {
            MarketEvent::Kline { kline, interval, .. } => {
                assert_eq!(interval, "1h");
                klines += 1;
                closed += usize::from(kline.closed);
            }
            MarketEvent::BookTicker(b) => {
                assert!(b.bid.0 < b.ask.0);
                books += 1;
            }
            other => panic!("not asked for: {other:?}"),
        }
    }
    assert!(klines > 0 && books > 0 && closed > 0, "klines {klines} (closed {closed}), book tickers {books}");
    let refused = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.expect("connect");
    let refused = tokio_tungstenite::client_async(
        format!("ws://{}/ws/btcusdt@depth", base.trim_start_matches("http://")),
        refused,
    )
    .await;
    assert!(refused.is_err(), "an unknown stream is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_stream_keeps_its_connection_open_and_sends_nothing_then_resumes() {
    let (base, _state) = common::start(FAST);
    let mut socket = connect(&base, "/ws/btcusdt@trade").await;
    assert!(next_text(&mut socket, Duration::from_secs(5)).await.is_some());
    let (status, body) = post(&base, "/_sim/faults", r#"{"kind": "silence", "seconds": 3}"#);
    assert_eq!(status, 200, "{body}");
    // Drain what was in flight, then nothing for a second: no message, no close, no error.
    drain(&mut socket).await;
    assert_eq!(next_text(&mut socket, Duration::from_millis(900)).await, None, "silent");
    assert!(next_text(&mut socket, Duration::from_secs(5)).await.is_some(), "resumed on the same connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_end_without_a_close_frame() {
    let (base, _state) = common::start(FAST);
    let mut socket = connect(&base, "/ws/btcusdt@trade").await;
    assert!(next_text(&mut socket, Duration::from_secs(5)).await.is_some());
    assert_eq!(post(&base, "/_sim/faults", r#"{"kind": "drop-connections"}"#).0, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return format!("a close frame {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("error: {e}"),
                None => return "ended".to_owned(),
            }
        }
    })
    .await
    .expect("the connection ends");
    assert!(!ended.starts_with("a close frame"), "{ended}");
    // A new connection works.
    let mut again = connect(&base, "/ws/btcusdt@trade").await;
    assert!(next_text(&mut again, Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_messages_are_what_they_say() {
    let (base, _state) = common::start(FAST);
    assert_eq!(post(&base, "/_sim/faults", r#"{"kind": "stream", "duplicate": true}"#).0, 200);
    let mut socket = connect(&base, "/ws/btcusdt@trade").await;
    let first = next_text(&mut socket, Duration::from_secs(5)).await.expect("a message");
    let second = next_text(&mut socket, Duration::from_secs(5)).await.expect("its copy");
    assert_eq!(first, second);
    assert_eq!(post(&base, "/_sim/faults", r#"{"kind": "stream", "reorder": true}"#).0, 200);
    drain(&mut socket).await;
    let id = |t: &str| match market_event(t).expect("parsed") {
        Some(MarketEvent::Trade { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(id(&next_text(&mut socket, Duration::from_secs(5)).await.expect("a message")));
    }
    assert!(ids.windows(2).any(|w| w[0] > w[1]), "swapped pairs: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 6, "no copies: {ids:?}");
}

/// Reads and drops what arrives for 200 ms (messages in flight before a fault took hold).
async fn drain(socket: &mut Socket) {
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        let _ = next_text(socket, Duration::from_millis(20)).await;
    }
}

#[test]
fn http_errors_latency_and_order_faults_reach_the_client_as_binance_sends_them() {
    let (base, _state) = common::start(1.0);
    let (status, body) =
        post(&base, "/_sim/faults", r#"{"kind": "http", "status": 429, "count": 2, "retryAfter": 3}"#);
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (status, body, retry_after) = signed(&base, "GET", "/api/v3/account", &[]);
        let e = classify(status, retry_after, &body, None);
        assert_eq!(e, ExchangeError::RateLimited { retry_after: Duration::from_secs(3), banned: false });
    }
    assert_eq!(signed(&base, "GET", "/api/v3/account", &[]).0, 200, "the count ran out");
    post(&base, "/_sim/faults", r#"{"kind": "http", "status": 418, "seconds": 0.5, "retryAfter": 60}"#);
    let (status, body, retry_after) = signed(&base, "GET", "/api/v3/account", &[]);
    assert!(matches!(
        classify(status, retry_after, &body, None),
        ExchangeError::RateLimited { banned: true, .. }
    ));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(signed(&base, "GET", "/api/v3/account", &[]).0, 200, "the ban ended");

    post(&base, "/_sim/faults", r#"{"kind": "latency", "ms": 300}"#);
    let started = Instant::now();
    assert_eq!(signed(&base, "GET", "/api/v3/account", &[]).0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    post(&base, "/_sim/faults", r#"{"kind": "latency", "ms": 0}"#);

    let order = |id: &'static str| {
        [
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", id),
        ]
    };
    post(&base, "/_sim/faults", r#"{"kind": "reject-orders", "count": 1}"#);
    let (status, body, _) = signed(&base, "POST", "/api/v3/order", &order("f-1"));
    assert!(
        matches!(classify(status, None, &body, None), ExchangeError::Rejected { code: -2010, .. }),
        "{body}"
    );

    // Accepted, then a timeout: the outcome is unknown; asking by client id finds the order, so
    // it is not sent again.
    post(&base, "/_sim/faults", r#"{"kind": "timeout-after-accept", "count": 1}"#);
    let id = ClientOrderId::new("f-2").expect("id");
    let (status, body, _) = signed(&base, "POST", "/api/v3/order", &order("f-2"));
    assert!(
        matches!(classify(status, None, &body, Some(&id)), ExchangeError::UnknownOutcome { .. }),
        "{body}"
    );
    let (status, body, _) =
        signed(&base, "GET", "/api/v3/order", &[("symbol", "BTCUSDT"), ("origClientOrderId", "f-2")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(wire::order(&body).expect("the order").0.status, OrderStatus::Filled);

    // From outside: a balance moved and a trade the API never saw.
    let (status, body) = post(&base, "/_sim/balance", r#"{"asset": "USDT", "delta": "-100"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(post(&base, "/_sim/balance", r#"{"asset": "USDT", "delta": "-1000000"}"#).0, 400);
    let (status, body) =
        post(&base, "/_sim/trade", r#"{"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.1"}"#);
    assert_eq!(status, 200, "{body}");
    let (_, body, _) = signed(&base, "GET", "/api/v3/account", &[]);
    let btc = wire::account(&body).expect("account").into_iter().find(|b| b.asset == "BTC").expect("BTC");
    assert_eq!(btc.free, d("0.5") + d("0.01") - d("0.00001") - d("0.1"));
    let (status, _) = post(&base, "/_sim/faults", r#"{"kind": "nonsense"}"#);
    assert_eq!(status, 400);
}
