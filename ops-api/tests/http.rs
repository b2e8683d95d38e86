//! The ops API over HTTP: a real server on a loopback port, over PostgreSQL (127.0.0.1:5432;
//! `KUANT_TEST_DATABASE_URL` overrides it, each test in a schema of its own) and SQLite, each
//! seeded through the store.

use std::sync::Arc;

use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;
use kuant_store::{Run, RunKind, Store, StoredEvent, StoredTrade};

mod common;
use common::{Reply, request};

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
    let url = kuant_store::fresh_schema(&postgres_url(), &schema)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"));
    let pg = Store::open(&url).await.expect("pg store");
    let dir = std::env::temp_dir().join(format!("kuant-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("sqlite store");
    vec![pg, sqlite]
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

fn dec(text: &str) -> rust_decimal::Decimal {
    text.parse().expect("decimal")
}

/// A session `desk/paper-btc` with a day of trading on 2024-03-01 (and one fill the day after).
async fn seed_session(store: &Store) {
    use kuant_store::*;
    let id = "desk/paper-btc";
    store
        .upsert_run(&Run {
            run_id: id.into(),
            kind: RunKind::Session,
            namespace: Some("desk".into()),
            name: "paper-btc".into(),
            spec: serde_json::json!({"market": {"symbols": ["BTCUSDT"]}}),
            phase: "Trading".into(),
        })
        .await
        .expect("session");
    let day = 1_709_251_200_000; // 2024-03-01T00:00Z
    let orders: Vec<StoredOrder> = (0..3)
        .map(|n| StoredOrder {
            client_order_id: format!("kq-{n}"),
            run_id: id.into(),
            correlation_id: uuid(500 + n),
            exchange_order_id: Some(format!("ex-{n}")),
            symbol: "BTCUSDT".into(),
            side: if n == 1 { "sell".into() } else { "buy".into() },
            order_type: "market".into(),
            quantity: dec("0.01"),
            limit_price: None,
            status: "filled".into(),
            created_at_ms: day + n as i64 * 1000,
        })
        .collect();
    store.insert_orders(&orders).await.expect("orders");
    let fills: Vec<StoredFill> = (0..3)
        .map(|n| StoredFill {
            fill_id: format!("f-{n}"),
            client_order_id: format!("kq-{n}"),
            run_id: id.into(),
            at_ms: if n == 2 { day + 86_400_000 + 5 } else { day + n as i64 * 1000 + 10 },
            price: dec("60000.5"),
            quantity: dec("0.01"),
            fee: dec("0.6"),
            fee_asset: "USDT".into(),
        })
        .collect();
    store.insert_fills(&fills).await.expect("fills");
    store
        .upsert_position(&StoredPosition {
            run_id: id.into(),
            symbol: "BTCUSDT".into(),
            at_ms: day + 86_400_005,
            quantity: dec("0.01"),
            avg_price: Some(dec("60000.5")),
            mark_price: None,
        })
        .await
        .expect("position");
    store
        .insert_trades(
            id,
            &[StoredTrade {
                symbol: "BTCUSDT".into(),
                trade_no: 1,
                entry_time_ms: day + 10,
                exit_time_ms: Some(day + 1010),
                entry_price: dec("60000.5"),
                exit_price: Some(dec("60100")),
                quantity: dec("0.01"),
                pnl: Some(dec("-0.205")),
                fees: dec("1.2"),
            }],
        )
        .await
        .expect("trades");
    let block = |n: u64, reason: &str| StoredBlock {
        event_id: uuid(600 + n),
        run_id: id.into(),
        correlation_id: uuid(700 + n),
        at_ms: day + 5000 + n as i64,
        reason: reason.into(),
        detail: "blocked".into(),
    };
    store
        .insert_blocks(&[block(0, "stale_data"), block(1, "stale_data"), block(2, "risk_budget")])
        .await
        .expect("blocks");
    for (n, amount) in [(0, "600.005"), (1, "100")] {
        store
            .claim_risk(&RiskAllocation {
                allocation_id: uuid(800 + n),
                run_id: id.into(),
                correlation_id: uuid(500 + n),
                amount: dec(amount),
                state: AllocationState::Claimed,
                claimed_at_ms: day + n as i64,
                used_at_ms: None,
                released_at_ms: None,
            })
            .await
            .expect("claim");
    }
    store.advance_risk(&uuid(800), AllocationState::Used, day + 10).await.expect("used");
    for (account, asset, kind) in
        [("usdt", "USDT", AccountKind::Asset), ("capital", "USDT", AccountKind::Equity)]
    {
        store
            .open_account(&LedgerAccount {
                account_id: account.into(),
                run_id: Some(id.into()),
                name: account.into(),
                asset: asset.into(),
                kind,
            })
            .await
            .expect("account");
    }
    store
        .post(&LedgerTransaction {
            tx_id: uuid(900),
            run_id: id.into(),
            correlation_id: None,
            at_ms: day,
            memo: "deposit".into(),
            lines: vec![("usdt".into(), dec("1000")), ("capital".into(), dec("-1000"))],
        })
        .await
        .expect("deposit");
    store.insert_equity(id, &[(day, 1000.0), (day + 3_600_000, 1001.5)]).await.expect("equity");
    let candle = |symbol: &str, hour: i64| StoredCandle {
        exchange: "binance".into(),
        symbol: symbol.into(),
        timeframe: "1h".into(),
        open_time_ms: day + hour * 3_600_000,
        open: dec("60000"),
        high: dec("60500"),
        low: dec("59900"),
        close: dec("60250.25"),
        volume: 3.5,
    };
    let candles: Vec<_> =
        (0..24).map(|h| candle("BTCUSDT", h)).chain((0..3).map(|h| candle("ETHUSDT", h))).collect();
    store.insert_candles(&candles).await.expect("candles");
    let tick = |symbol: &str, price: &str| StoredTick {
        exchange: "binance".into(),
        symbol: symbol.into(),
        at_ms: 1_709_251_300_000,
        price: dec(price),
        bid: Some(dec(price) - dec("0.5")),
        ask: None,
    };
    store.upsert_ticks(&[tick("BTCUSDT", "60300.75"), tick("ETHUSDT", "3400.125")]).await.expect("ticks");
    let call = |n: u64, agent: &str, cost: &str| LlmCall {
        call_id: uuid(950 + n),
        run_id: id.into(),
        agent: agent.into(),
        model: "judge-1".into(),
        tokens_in: 1000,
        tokens_out: 100,
        cost: dec(cost),
        latency_ms: 400 + n as i64,
        at_ms: day + n as i64,
    };
    store
        .insert_llm_calls(&[
            call(0, "judge", "0.0031"),
            call(1, "judge", "0.0029"),
            call(2, "analyst", "0.01"),
        ])
        .await
        .expect("llm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_market_and_llm_read_real_tables_on_both_backends() {
    for store in stores("sessions").await {
        let backend = store.backend();
        seed_session(&store).await;
        let addr = serve(store).await;
        let list = get(addr, "/api/v1/sessions?phase=Trading").await;
        assert_eq!(list.status, 200, "{backend:?}: {}", list.text);
        assert_eq!(list.body["items"][0]["id"], "desk/paper-btc");
        assert!(
            get(addr, "/api/v1/backtests").await.body["items"].as_array().expect("items").is_empty(),
            "kinds apart"
        );
        let base = "/api/v1/sessions/desk/paper-btc";
        assert_eq!(get(addr, base).await.body["phase"], "Trading");

        let portfolio = get(addr, &format!("{base}/portfolio")).await;
        assert_eq!(portfolio.body["positions"][0]["quantity"], "0.01", "{backend:?}: {}", portfolio.text);
        let balances = portfolio.body["balances"].as_array().expect("balances");
        assert!(balances.iter().any(|b| b["account"] == "usdt" && b["balance"] == "1000"));
        assert_eq!(portfolio.body["equity"][1], 1001.5);

        let orders = get(addr, &format!("{base}/orders?limit=2")).await;
        assert_eq!(orders.body["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(orders.body["items"][1]["side"], "sell");
        assert!(orders.body["next_cursor"].is_string());
        let fills = get(addr, &format!("{base}/fills")).await;
        assert_eq!(fills.body["items"][0]["price"], "60000.5");
        assert_eq!(fills.body["items"].as_array().map(Vec::len), Some(3));
        let stale = get(addr, &format!("{base}/blocks?reason=stale_data")).await;
        assert_eq!(stale.body.as_array().map(Vec::len), Some(2));
        let risk = get(addr, &format!("{base}/risk")).await;
        assert_eq!(risk.body["in_use"], "700.005", "{backend:?}");
        assert_eq!(risk.body["allocations"][0]["state"], "used");

        let report = get(addr, &format!("{base}/report?date=2024-03-01")).await;
        assert_eq!(report.status, 200, "{}", report.text);
        assert_eq!(report.body["trades_closed"], 1);
        assert_eq!(report.body["pnl"], "-0.205");
        assert_eq!(report.body["fills"], 2, "the third fill is the next day");
        assert_eq!(report.body["fees"]["USDT"], "1.2");
        assert_eq!(report.body["blocks"], serde_json::json!({"risk_budget": 1, "stale_data": 2}));
        assert_eq!(report.body["risk_used"], "600.005");
        let bad = get(addr, &format!("{base}/report?date=2024-02-30")).await;
        assert_eq!((bad.status, bad.body["details"][0]["field"].as_str()), (400, Some("date")));
        let missing = get(addr, &format!("{base}/report")).await;
        assert_eq!((missing.status, missing.body["details"][0]["field"].as_str()), (400, Some("date")));

        let from = 1_709_251_200_000_i64 + 2 * 3_600_000;
        let candles = get(
            addr,
            &format!(
                "/api/v1/market/candles?exchange=binance&symbol=BTCUSDT&timeframe=1h&from={from}&to={}",
                from + 3 * 3_600_000
            ),
        )
        .await;
        assert_eq!(candles.body.as_array().map(Vec::len), Some(3), "{backend:?}: {}", candles.text);
        assert_eq!(candles.body[0]["close"], "60250.25");
        let latest = get(addr, "/api/v1/market/latest?exchange=binance").await;
        let symbols: Vec<&str> =
            latest.body.as_array().expect("latest").iter().filter_map(|c| c["symbol"].as_str()).collect();
        assert_eq!(symbols, ["BTCUSDT", "ETHUSDT"]);
        let ticks = get(addr, "/api/v1/market/ticks?exchange=binance&symbol=ETHUSDT").await;
        assert_eq!(ticks.status, 200, "{backend:?}: {}", ticks.text);
        assert_eq!(
            ticks.body,
            serde_json::json!([{"exchange": "binance", "symbol": "ETHUSDT", "at_ms": 1_709_251_300_000_i64,
                                "price": "3400.125", "bid": "3399.625", "ask": null}]),
            "{backend:?}"
        );
        let no_symbol = get(addr, "/api/v1/market/candles?exchange=binance&timeframe=1h").await;
        assert_eq!((no_symbol.status, no_symbol.body["details"][0]["field"].as_str()), (400, Some("symbol")));

        let usage = get(addr, "/api/v1/llm/usage?run=desk/paper-btc").await;
        let judge = usage
            .body
            .as_array()
            .expect("usage")
            .iter()
            .find(|u| u["agent"] == "judge")
            .cloned()
            .expect("judge");
        assert_eq!(
            (judge["calls"].as_u64(), judge["cost"].as_str()),
            (Some(2), Some("0.0060")),
            "{backend:?}"
        );
        assert_eq!(get(addr, "/api/v1/sessions/desk/none/risk").await.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_an_allowed_origin_may_call_and_others_get_no_cors_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = stores("cors").await.remove(1);
    let tokens = Tokens::parse(&format!("{VIEWER} viewer")).expect("tokens");
    let state = AppState::new(store, tokens).with_cors(&["https://dash.example.com".into()]).expect("origin");
    assert!(
        AppState::new(stores("cors2").await.remove(1), Tokens::Open)
            .with_cors(&["dash.example.com/".into()])
            .is_err()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(kuant_ops_api::serve(listener, Arc::new(state), std::future::pending()));
    let preflight = |origin: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "OPTIONS /api/v1/backtests HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.expect("read");
        reply.to_ascii_lowercase()
    };
    let allowed = preflight("https://dash.example.com").await;
    assert!(allowed.contains("access-control-allow-origin: https://dash.example.com"), "{allowed}");
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = preflight("https://evil.example.com").await;
    assert!(!other.contains("access-control-allow-origin"), "{other}");
}

/// Checks `value` against `schema` (resolving `$ref`s in `doc`) for what the API relies on:
/// types, required properties and no property the schema does not name. Returns the problems.
fn check_shape(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "{reference} is not in components");
        return check_shape(doc, target, value, at);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let fits = options.iter().any(|o| check_shape(doc, o, value, at).is_empty());
            return if fits { vec![] } else { vec![format!("{at}: fits no option of {key}")] };
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return vec![format!("{at}: {kind}, the schema says {types:?}")];
    }
    let mut problems = Vec::new();
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(required) {
                    problems.push(format!("{at}: {required} is required but missing"));
                }
            }
            for (key, item) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => problems.extend(check_shape(doc, sub, item, &format!("{at}.{key}"))),
                    None if properties.is_some() && schema["additionalProperties"].is_null() => {
                        problems.push(format!("{at}.{key} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                problems.extend(check_shape(doc, &schema["items"], item, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint_and_each_answers_as_it_says() {
    for store in stores("openapi").await {
        every_endpoint_as_documented(store).await;
    }
}

/// Every GET of the document, with its documented parameters, on `store` (seeded here).
async fn every_endpoint_as_documented(store: Store) {
    seed(&store, 3).await;
    seed_session(&store).await;
    let addr = serve(store).await;

    let doc = request(addr, "GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200, "public, like the probes");
    let doc = doc.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let operations: usize = paths.values().map(|item| item.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(operations, kuant_ops_api::routes::endpoints().len(), "one operation per endpoint");
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1).filter_map(|s| s.split('"').next()) {
        let name = reference.trim_start_matches("#/components/schemas/");
        assert!(doc["components"]["schemas"].get(name).is_some(), "{reference} resolves");
    }
    assert!(
        doc["paths"]["/api/v1/backtests"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            == "#/components/schemas/Backtest"
            && doc["components"]["schemas"]["Backtest"]["properties"]["spec"].is_object(),
        "the Backtest body is the CRD's schema"
    );

    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("operations") {
            let concrete = path
                .replace("/backtests/{namespace}/{name}", "/backtests/research/bt-01")
                .replace("/sessions/{namespace}/{name}", "/sessions/desk/paper-btc")
                .replace("{correlation_id}", &uuid(1000));
            let parameters = operation["parameters"].as_array().expect("parameters");
            let query: Vec<String> = parameters
                .iter()
                .filter(|p| p["in"] == "query" && p["example"].is_string())
                .map(|p| {
                    format!("{}={}", p["name"].as_str().unwrap_or(""), p["example"].as_str().unwrap_or(""))
                })
                .collect();
            let url = format!("{concrete}?{}", query.join("&"));
            let method = method.to_ascii_uppercase();
            let secured = operation.get("x-kuant-role").is_some();
            let socket = operation["responses"].get("101").is_some();
            if method == "GET" && !socket {
                // Every documented parameter is taken, with its example value.
                let reply = request(addr, "GET", &url, Some(ADMIN), None).await;
                assert!(reply.status < 500, "{url}: {}", reply.text);
                assert_ne!(reply.status, 400, "{url}: documented parameters are accepted: {}", reply.text);
                let documented = &operation["responses"][reply.status.to_string()];
                assert!(documented.is_object(), "{url}: status {} is documented", reply.status);
                if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
                    let schema = serde_json::Value::Object(schema.clone());
                    let problems = check_shape(&doc, &schema, &reply.body, "$");
                    assert!(problems.is_empty(), "{url} answers as documented: {problems:?}\n{}", reply.text);
                    checked += 1;
                }
            }
            if secured && !socket {
                // And an undocumented one is refused, by name.
                let sep = if query.is_empty() { "" } else { "&" };
                let bogus = format!("{url}{sep}bogus=1");
                let reply = request(addr, &method, &bogus, Some(ADMIN), Some("{}")).await;
                assert_eq!(reply.status, 400, "{method} {bogus}: {}", reply.text);
                assert_eq!(reply.body["details"][0]["field"], "bogus", "{method} {bogus}: {}", reply.text);
            }
        }
    }
    assert!(checked >= 20, "{checked} answers checked against their schemas");
}
