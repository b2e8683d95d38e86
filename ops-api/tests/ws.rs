//! The live feeds over real WebSockets on a loopback port: auth without the token in the URL,
//! filters, resuming from a cursor without gaps, and a slow consumer that must not delay the
//! others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;
use kuant_ops_api::live::{CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, Feed};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const VIEWER: &str = "viewer-token-0123456789";

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn server() -> (std::net::SocketAddr, Arc<AppState>) {
    let dir = std::env::temp_dir().join(format!("kuant-ws-{}-{}", std::process::id(), rand_tag()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = kuant_store::Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("store");
    let tokens = Tokens::parse(&format!("{VIEWER} viewer")).expect("tokens");
    let state = Arc::new(AppState::new(store, tokens));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(kuant_ops_api::serve(listener, state.clone(), std::future::pending()));
    (addr, state)
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A socket to `path`, authenticated by a first message (as a browser would), or with a header.
async fn connect(addr: std::net::SocketAddr, path: &str, header: bool) -> Socket {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}{path}").into_client_request().expect("request");
    if header {
        request.headers_mut().insert("authorization", format!("Bearer {VIEWER}").parse().expect("header"));
    }
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.expect("handshake");
    if !header {
        let auth = serde_json::json!({"type": "auth", "token": VIEWER}).to_string();
        socket.send(Message::Text(auth.into())).await.expect("auth");
    }
    socket
}

/// The next JSON text message (skipping pings), within a few seconds.
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn fill(state: &AppState, run: &str, n: u64) -> u64 {
    state.hub.publish(Feed::Live, "fills", Some(run), Some("BTCUSDT"), n as i64, &serde_json::json!({"n": n}))
}

/// Waits until the hub counts `n` open live connections (the server side of a handshake
/// finishes after the client's).
async fn until_connected(state: &AppState, n: u64) {
    let started = Instant::now();
    while state.hub.stats().live_connections < n {
        assert!(started.elapsed() < Duration::from_secs(5), "{n} connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_what_their_filters_ask_for_authenticated_by_message_or_header() {
    let (addr, state) = server().await;
    let mut by_message = connect(addr, "/ws/live?run=desk/a&channels=fills", false).await;
    let mut by_header = connect(addr, "/ws/live", true).await;
    until_connected(&state, 2).await;
    fill(&state, "desk/b", 1);
    state.hub.publish(Feed::Live, "orders", Some("desk/a"), None, 2, &serde_json::json!({}));
    state.hub.publish(Feed::Market, "ticks", None, Some("BTCUSDT"), 3, &serde_json::json!({}));
    fill(&state, "desk/a", 4);
    let got = next_json(&mut by_message).await;
    assert_eq!(
        (got["channel"].as_str(), got["run_id"].as_str(), got["seq"].as_u64()),
        (Some("fills"), Some("desk/a"), Some(4))
    );
    let seqs: Vec<u64> =
        [next_json(&mut by_header).await, next_json(&mut by_header).await, next_json(&mut by_header).await]
            .iter()
            .filter_map(|m| m["seq"].as_u64())
            .collect();
    assert_eq!(seqs, [1, 2, 4], "every live message, and no market one");

    let mut market = connect(addr, "/ws/market?symbol=ETHUSDT", false).await;
    while state.hub.stats().market_connections < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    state.hub.publish(Feed::Market, "candles", None, Some("BTCUSDT"), 5, &serde_json::json!({}));
    state.hub.publish(
        Feed::Market,
        "candles",
        None,
        Some("ETHUSDT"),
        6,
        &serde_json::json!({"close": "3000.5"}),
    );
    let candle = next_json(&mut market).await;
    assert_eq!(
        (candle["symbol"].as_str(), candle["data"]["close"].as_str()),
        (Some("ETHUSDT"), Some("3000.5"))
    );

    let stats = reqwest_stats(addr).await;
    assert_eq!(
        (stats["live_connections"].as_u64(), stats["market_connections"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(stats["published"].as_u64(), Some(6));
}

async fn reqwest_stats(addr: std::net::SocketAddr) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/v1/ws/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {VIEWER}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("stats: {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_a_wrong_one_is_closed_with_4401_and_a_bad_filter_is_a_400() {
    let (addr, _state) = server().await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut socket, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws/live"), stream).await.expect("handshake");
    socket.send(Message::Text(r#"{"type":"auth","token":"guessed-0000000000"}"#.into())).await.expect("send");
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("in time") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), CLOSE_UNAUTHORIZED),
        other => panic!("expected a close, got {other:?}"),
    }
    // A wrong header is refused before the upgrade.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/ws/live").into_client_request().expect("request");
    request.headers_mut().insert("authorization", "Bearer guessed-0000000000".parse().expect("header"));
    let refused = tokio_tungstenite::client_async(request, stream).await.expect_err("401");
    assert!(refused.to_string().contains("401"), "{refused}");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let refused =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws/live?channels=gossip"), stream).await;
    assert!(refused.expect_err("400").to_string().contains("400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_with_its_cursor_misses_nothing_and_gets_nothing_twice() {
    let (addr, state) = server().await;
    let mut first = connect(addr, "/ws/live?channels=fills", false).await;
    until_connected(&state, 1).await;
    for n in 1..=5 {
        fill(&state, "desk/a", n);
    }
    let mut cursor = 0;
    for _ in 1..=5 {
        cursor = next_json(&mut first).await["seq"].as_u64().expect("seq");
    }
    drop(first);
    // While it is away.
    for n in 6..=10 {
        fill(&state, "desk/a", n);
    }
    let mut again = connect(addr, &format!("/ws/live?channels=fills&cursor={cursor}"), false).await;
    until_connected(&state, 1).await;
    fill(&state, "desk/a", 11);
    let mut seqs = Vec::new();
    for _ in 6..=11 {
        seqs.push(next_json(&mut again).await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (6..=11).collect::<Vec<_>>(), "the missed ones, then live, each once");

    // A cursor the server never issued (it restarted): reload.
    let mut stale = connect(addr, "/ws/live?cursor=999999", false).await;
    assert_eq!(next_json(&mut stale).await["type"], "reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_and_never_delays_the_others() {
    let (addr, state) = server().await;
    // The slow one reads nothing at all, through a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let stream = socket.connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/ws/live").into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {VIEWER}").parse().expect("header"));
    let (slow, _) = tokio_tungstenite::client_async(request, stream).await.expect("handshake");
    let mut fast = connect(addr, "/ws/live", true).await;
    until_connected(&state, 2).await;

    // The fast one records how late each message arrives.
    let reader = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut expected_seq = 1;
        loop {
            let message = next_json(&mut fast).await;
            let sent_at = message["data"]["sent_us"].as_u64().expect("stamp");
            let late = Duration::from_micros(now_us().saturating_sub(sent_at));
            worst = worst.max(late);
            assert_eq!(message["seq"].as_u64(), Some(expected_seq), "in order, no gap");
            expected_seq += 1;
            if message["data"]["last"] == true {
                // The socket goes back too: dropping it here would close the fast client.
                return (fast, expected_seq - 1, worst);
            }
        }
    });
    // 4 KiB messages, 2,000 a second, until the slow one is dropped (at most 15 s).
    let padding = "x".repeat(4096);
    let started = Instant::now();
    let mut published = 0;
    while state.hub.stats().dropped_slow == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the slow client is dropped");
        for _ in 0..20 {
            let data = serde_json::json!({"sent_us": now_us(), "pad": padding, "last": false});
            state.hub.publish(Feed::Live, "fills", Some("desk/a"), None, 0, &data);
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    state.hub.publish(
        Feed::Live,
        "fills",
        Some("desk/a"),
        None,
        0,
        &serde_json::json!({"sent_us": now_us(), "last": true}),
    );
    let (fast, received, worst) =
        tokio::time::timeout(Duration::from_secs(10), reader).await.expect("in time").expect("reader");
    assert_eq!(received, published + 1, "the fast client got every message");
    // Held up by the slow one, it would wait its whole blocked send (5 s): a busy test machine
    // can add some hundreds of milliseconds, never that.
    assert!(worst < Duration::from_secs(2), "the fast client was never held up: worst {worst:?}");
    assert_eq!(state.hub.stats().live_connections, 1, "only the slow one was dropped");
    drop((slow, fast));
    let _ = CLOSE_TOO_SLOW;
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_agent_writes_to_postgresql_reaches_live_clients_with_exact_decimals() {
    let base = std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let url = kuant_store::fresh_schema(&base, "kuant_ws_live")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"));
    let store = kuant_store::Store::open(&url).await.expect("store");
    let writer = store.clone();
    let tokens = Tokens::parse(&format!("{VIEWER} viewer")).expect("tokens");
    let state = Arc::new(AppState::new(store, tokens));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(kuant_ops_api::serve(listener, state.clone(), std::future::pending()));
    let mut client = connect(addr, "/ws/live?run=desk/live-pg", false).await;
    until_connected(&state, 1).await;
    // The bridge listens once the server runs; give its LISTEN a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An agent (here: the store, as any writer) records an order and its fill.
    writer
        .upsert_run(&kuant_store::Run {
            run_id: "desk/live-pg".into(),
            kind: kuant_store::RunKind::Session,
            namespace: Some("desk".into()),
            name: "live-pg".into(),
            spec: serde_json::json!({}),
            phase: "Trading".into(),
        })
        .await
        .expect("run");
    let order = kuant_store::StoredOrder {
        client_order_id: "kq-live-1".into(),
        run_id: "desk/live-pg".into(),
        correlation_id: "00000000-0000-4000-8000-000000000001".into(),
        exchange_order_id: None,
        symbol: "BTCUSDT".into(),
        side: "buy".into(),
        order_type: "market".into(),
        quantity: "0.00012345678901234567".parse().expect("decimal"),
        limit_price: None,
        status: "new".into(),
        created_at_ms: 1_700_000_000_000,
    };
    writer.insert_orders(&[order]).await.expect("order");
    writer
        .insert_fills(&[kuant_store::StoredFill {
            fill_id: "f-live-1".into(),
            client_order_id: "kq-live-1".into(),
            run_id: "desk/live-pg".into(),
            at_ms: 1_700_000_000_100,
            price: "64000.123456789".parse().expect("decimal"),
            quantity: "0.00012345678901234567".parse().expect("decimal"),
            fee: "0.0079".parse().expect("decimal"),
            fee_asset: "USDT".into(),
        }])
        .await
        .expect("fill");
    let order = next_json(&mut client).await;
    assert_eq!(
        (order["channel"].as_str(), order["data"]["client_order_id"].as_str()),
        (Some("orders"), Some("kq-live-1"))
    );
    assert_eq!(order["data"]["quantity"], "0.00012345678901234567", "decimals digit for digit");
    let fill = next_json(&mut client).await;
    assert_eq!(fill["channel"], "fills");
    // A fill carries its order's symbol, so symbol filters see it.
    assert_eq!((fill["run_id"].as_str(), fill["symbol"].as_str()), (Some("desk/live-pg"), Some("BTCUSDT")));
    assert_eq!(fill["data"]["price"], "64000.123456789");
    let mut by_symbol = connect(addr, "/ws/live?channels=fills&symbol=BTCUSDT", true).await;
    let mut ticks = connect(addr, "/ws/market?channels=ticks&symbol=ETHUSDT", true).await;
    until_connected(&state, 2).await;
    let started = Instant::now();
    while state.hub.stats().market_connections < 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "the market client connects");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer
        .insert_fills(&[kuant_store::StoredFill {
            fill_id: "f-live-2".into(),
            at_ms: 1_700_000_000_200,
            ..kuant_store::StoredFill {
                fill_id: String::new(),
                client_order_id: "kq-live-1".into(),
                run_id: "desk/live-pg".into(),
                at_ms: 0,
                price: "64000.5".parse().expect("decimal"),
                quantity: "0.0001".parse().expect("decimal"),
                fee: "0.0064".parse().expect("decimal"),
                fee_asset: "USDT".into(),
            }
        }])
        .await
        .expect("fill");
    let fill = next_json(&mut by_symbol).await;
    assert_eq!(
        (fill["channel"].as_str(), fill["data"]["fill_id"].as_str()),
        (Some("fills"), Some("f-live-2"))
    );

    // A tick of another market is not this client's; the ETHUSDT one is, exact.
    let tick = |symbol: &str, price: &str| kuant_store::StoredTick {
        exchange: "binance".into(),
        symbol: symbol.into(),
        at_ms: 1_700_000_000_300,
        price: price.parse().expect("decimal"),
        bid: None,
        ask: Some("3000.000000001".parse().expect("decimal")),
    };
    writer.upsert_ticks(&[tick("BTCUSDT", "64001"), tick("ETHUSDT", "2999.999999999")]).await.expect("ticks");
    let got = next_json(&mut ticks).await;
    assert_eq!((got["channel"].as_str(), got["symbol"].as_str()), (Some("ticks"), Some("ETHUSDT")));
    assert_eq!(
        (got["data"]["price"].as_str(), got["data"]["ask"].as_str()),
        (Some("2999.999999999"), Some("3000.000000001"))
    );
}
