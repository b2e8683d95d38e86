//! The ops API over HTTP: a real server on a loopback port, over PostgreSQL (127.0.0.1:5432;
//! `KUANT_TEST_DATABASE_URL` overrides it, each test in a schema of its own) and SQLite, each
//! seeded through the store.

use std::sync::Arc;

use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;
use kuant_store::{Run, RunKind, Store, StoredEvent, StoredTrade};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIEWER: &str = "viewer-token-0123456789";
const TRADER: &str = "trader-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Each backend, freshly migrated, for a test named `tag`.
async fn stores(tag: &str) -> Vec<Store> {
    let schema = format!("kuant_api_{tag}");
    let base = postgres_url();
    let admin = kuant_store::Store::open(&base).await.expect("PostgreSQL (set KUANT_TEST_DATABASE_URL)");
    let Store::Postgres(pool) = &admin else { panic!("a PostgreSQL URL") };
    // The schema name is the test's own, not input.
    sqlx_exec(pool, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};")).await;
    let separator = if base.contains('?') { '&' } else { '?' };
    let pg = Store::open(&format!("{base}{separator}options=-c%20search_path%3D{schema}"))
        .await
        .expect("pg store");
    let dir = std::env::temp_dir().join(format!("kuant-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("sqlite store");
    vec![pg, sqlite]
}

async fn sqlx_exec(pool: &sqlx::PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.expect("admin SQL");
}

/// A server over `store` on a free loopback port; its base URL's address.
async fn serve(store: Store) -> std::net::SocketAddr {
    let tokens =
        Tokens::parse(&format!("{VIEWER} viewer\n{TRADER} trader\n{ADMIN} admin\n")).expect("tokens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    let state = Arc::new(AppState::new(store, tokens));
    tokio::spawn(kuant_ops_api::serve(listener, state, std::future::pending()));
    addr
}

/// A response: status, and the body as JSON (or a string when it is not JSON).
struct Reply {
    status: u16,
    body: serde_json::Value,
    text: String,
}

/// One HTTP/1.1 request over a fresh connection.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body.as_bytes()).await.expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a response");
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let body = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.clone()));
    Reply { status, body, text }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, Some(VIEWER), None).await
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Seeds `n` finished backtests `research/bt-NN` with curves, trades and events.
async fn seed(store: &Store, n: usize) {
    for i in 0..n {
        let id = format!("research/bt-{i:02}");
        let run = Run {
            run_id: id.clone(),
            kind: RunKind::Backtest,
            namespace: Some("research".into()),
            name: format!("bt-{i:02}"),
            spec: serde_json::json!({
                "strategy": {"name": if i % 2 == 0 { "sma-crossover" } else { "ema-crossover" }},
                "market": {"symbols": if i % 3 == 0 { vec!["ETHUSDT"] } else { vec!["BTCUSDT"] }},
            }),
            phase: "Succeeded".into(),
        };
        store.reset_run(&run).await.expect("run");
        let curve: Vec<(i64, f64)> = (0..500)
            .map(|k| (1_700_000_000_000 + (k + i as i64) * 3_600_000, 10_000.0 + (k * i as i64) as f64))
            .collect();
        store.insert_equity(&id, &curve).await.expect("curve");
        let trades: Vec<StoredTrade> = (1..=5)
            .map(|k| StoredTrade {
                symbol: "BTCUSDT".into(),
                trade_no: k,
                entry_time_ms: 1_700_000_000_000 + k * 1000,
                exit_time_ms: Some(1_700_000_000_500 + k * 1000),
                entry_price: "42000.5".parse().expect("decimal"),
                exit_price: Some("42100".parse().expect("decimal")),
                quantity: "0.001".parse().expect("decimal"),
                pnl: Some("0.0995".parse().expect("decimal")),
                fees: "0.0001".parse().expect("decimal"),
            })
            .collect();
        store.insert_trades(&id, &trades).await.expect("trades");
        let base = 1_000 * i as u64;
        let events: Vec<StoredEvent> = ["signal", "intent", "order_submitted", "fill"]
            .iter()
            .enumerate()
            .map(|(k, kind)| StoredEvent {
                event_id: uuid(base + k as u64),
                run_id: id.clone(),
                correlation_id: uuid(base),
                causation_id: k.checked_sub(1).map(|c| uuid(base + c as u64)),
                event_type: (*kind).into(),
                source: "engine".into(),
                // All in one millisecond: only the causation orders them.
                occurred_at_ms: 1_700_000_000_000,
                payload: serde_json::json!({"k": k}),
            })
            .collect();
        store.insert_events(&events).await.expect("events");
        let status =
            serde_json::json!({"phase": "Succeeded", "results": {"finalEquity": "10500", "trades": 5}});
        let results = serde_json::json!({"final_equity": "10500", "metrics": {"trades": 5}});
        store
            .finish_run(&id, "Succeeded", Some(&status), Some(&results), 1_700_000_999_000)
            .await
            .expect("finish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_list_filter_and_page_over_both_backends() {
    for store in stores("list").await {
        let backend = store.backend();
        seed(&store, 12).await;
        let addr = serve(store).await;
        let mut seen = Vec::new();
        let mut path = "/api/v1/backtests?limit=5".to_owned();
        loop {
            let page = get(addr, &path).await;
            assert_eq!(page.status, 200, "{backend:?}: {}", page.text);
            let items = page.body["items"].as_array().expect("items").clone();
            seen.extend(items.iter().map(|b| b["id"].as_str().expect("id").to_owned()));
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/backtests?limit=5&cursor={cursor}"),
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (12, 12), "{backend:?}: {seen:?}");

        let eth = get(addr, "/api/v1/backtests?symbol=ETHUSDT&strategy=sma-crossover&phase=Succeeded").await;
        let ids: Vec<&str> =
            eth.body["items"].as_array().expect("items").iter().filter_map(|b| b["id"].as_str()).collect();
        let mut ids = ids.clone();
        ids.sort();
        assert_eq!(ids, ["research/bt-00", "research/bt-06"], "{backend:?}");
        let first = &eth.body["items"][0];
        assert_eq!(first["results"]["finalEquity"], "10500");
        assert_eq!(first["symbols"], serde_json::json!(["ETHUSDT"]));
        assert!(
            get(addr, "/api/v1/backtests?phase=Failed").await.body["items"]
                .as_array()
                .expect("items")
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backtest_its_results_equity_trades_events_and_chain() {
    for store in stores("one").await {
        let backend = store.backend();
        seed(&store, 3).await;
        let addr = serve(store).await;
        let one = get(addr, "/api/v1/backtests/research/bt-02").await;
        assert_eq!(one.status, 200, "{backend:?}: {}", one.text);
        assert_eq!(
            (one.body["id"].as_str(), one.body["phase"].as_str()),
            (Some("research/bt-02"), Some("Succeeded"))
        );
        assert_eq!(one.body["spec"]["strategy"]["name"], "sma-crossover");
        assert_eq!(one.body["status"]["results"]["trades"], 5);

        let results = get(addr, "/api/v1/backtests/research/bt-02/results").await;
        assert_eq!(results.body["final_equity"], "10500", "{backend:?}");

        let equity = get(addr, "/api/v1/backtests/research/bt-02/equity?points=50").await;
        assert_eq!(equity.body["stored_points"], 500);
        let times = equity.body["times"].as_array().expect("times");
        assert!(times.len() <= 50 && times.len() >= 40, "{}", times.len());
        assert_eq!(times.len(), equity.body["equity"].as_array().expect("equity").len());
        assert_eq!(
            get(addr, "/api/v1/backtests/research/bt-02/equity").await.body["times"].as_array().map(Vec::len),
            Some(500)
        );

        let trades = get(addr, "/api/v1/backtests/research/bt-02/trades?limit=2").await;
        assert_eq!(trades.body["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(trades.body["items"][0]["entry_price"], "42000.5", "exact decimals as strings");
        let cursor = trades.body["next_cursor"].as_str().expect("more").to_owned();
        let rest =
            get(addr, &format!("/api/v1/backtests/research/bt-02/trades?limit=10&cursor={cursor}")).await;
        assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(3));
        assert_eq!(rest.body["items"][0]["trade_no"], 3);
        assert!(rest.body["next_cursor"].is_null());

        let events = get(addr, "/api/v1/backtests/research/bt-02/events?type=fill").await;
        assert_eq!(events.body["items"].as_array().map(Vec::len), Some(1), "{backend:?}: {}", events.text);
        let all = get(addr, "/api/v1/events?run=research/bt-01&source=engine&limit=2").await;
        assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2));
        assert!(all.body["next_cursor"].is_string());

        let chain = get(addr, &format!("/api/v1/chains/{}", uuid(2000))).await;
        let types: Vec<&str> =
            chain.body.as_array().expect("chain").iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types, ["signal", "intent", "order_submitted", "fill"], "causal order: {backend:?}");

        let compare =
            get(addr, "/api/v1/backtests/compare?ids=research/bt-01,research/bt-02&points=100").await;
        assert_eq!(compare.status, 200, "{}", compare.text);
        let times = compare.body["times"].as_array().expect("times").len();
        let series = compare.body["equity"].as_array().expect("series");
        assert_eq!(series.len(), 2);
        assert!(series.iter().all(|s| s.as_array().map(Vec::len) == Some(times)), "aligned on one time axis");
        assert!(series[1][0].is_null(), "bt-02 starts an hour after bt-01");
        assert_eq!(compare.body["backtests"][1]["id"], "research/bt-02");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_naming_the_field_never_a_500() {
    let store = stores("bad").await.remove(1);
    seed(&store, 1).await;
    let addr = serve(store).await;
    for (path, field) in [
        ("/api/v1/backtests?limit=0", "limit"),
        ("/api/v1/backtests?limit=abc", "limit"),
        ("/api/v1/backtests?phase=Sleeping", "phase"),
        ("/api/v1/backtests?bogus=1", "bogus"),
        ("/api/v1/backtests?cursor=nothex", "cursor"),
        ("/api/v1/backtests/research/bt-00/equity?points=1", "points"),
        ("/api/v1/backtests/compare?ids=research/bt-00", "ids"),
        ("/api/v1/events?correlation_id=not-a-uuid", "correlation_id"),
        ("/api/v1/chains/NOT-A-UUID", "correlation_id"),
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert_eq!(reply.body["code"], "invalid_parameter", "{path}");
        let fields: Vec<&str> = reply.body["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{path}: {fields:?}");
    }
    for path in
        ["/api/v1/backtests/research/nope", "/api/v1/backtests/research/nope/equity", "/api/v1/nothing"]
    {
        let reply = get(addr, path).await;
        assert_eq!((reply.status, reply.body["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    let reply = request(addr, "DELETE", "/api/v1/backtests", Some(VIEWER), None).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (405, Some("method_not_allowed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reads_and_no_token_or_a_wrong_one_is_refused_without_echoing_it() {
    let store = stores("auth").await.remove(0);
    seed(&store, 1).await;
    let addr = serve(store).await;
    for token in [VIEWER, TRADER, ADMIN] {
        assert_eq!(request(addr, "GET", "/api/v1/backtests", Some(token), None).await.status, 200);
    }
    let none = request(addr, "GET", "/api/v1/backtests", None, None).await;
    assert_eq!((none.status, none.body["code"].as_str()), (401, Some("unauthorized")));
    assert!(none.body["message"].as_str().is_some_and(|m| m.contains("Bearer")));
    let wrong = request(addr, "GET", "/api/v1/backtests", Some("guessed-token-0000000"), None).await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.text.contains("guessed-token"), "a token is never echoed");
    // Health and metrics need no token.
    assert_eq!(request(addr, "GET", "/healthz", None, None).await.status, 200);
    let ready = request(addr, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let metrics = request(addr, "GET", "/metrics", None, None).await;
    assert!(
        metrics.text.contains(
            "kuant_ops_api_http_requests_total{route=\"/api/v1/backtests\",method=\"GET\",status=\"2xx\"} 3"
        ),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("kuant_ops_api_http_request_duration_seconds_bucket"));
    assert!(!metrics.text.contains(VIEWER));
}
