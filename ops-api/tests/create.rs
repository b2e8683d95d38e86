//! Creating backtests and the kill switch, over a real server on a loopback port:
//! - without a cluster, a created backtest runs in the server, streams its progress on
//!   `/ws/live` and lands in the store (PostgreSQL and SQLite);
//! - with `--cluster`, against a mocked API server (tower-test) that checks each request the
//!   ops API makes and answers as the API server would;
//! - bad bodies and too-small roles are refused with a 4xx naming the field, never a 500.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use kuant_mock_api::{Expect, expect, play, status};
use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;
use kuant_store::Store;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;
use common::{Reply, request};

const VIEWER: &str = "viewer-token-0123456789";
const TRADER: &str = "trader-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn sqlite(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("kuant-api-create-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("kuant.db").to_string_lossy().into_owned()
}

async fn server(store: Store, cluster: Option<kube::Client>) -> (std::net::SocketAddr, Arc<AppState>) {
    let tokens =
        Tokens::parse(&format!("{VIEWER} viewer\n{TRADER} trader\n{ADMIN} admin\n")).expect("tokens");
    let mut state = AppState::new(store, tokens);
    if let Some(client) = cluster {
        state = state.with_cluster(client);
    }
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(kuant_ops_api::serve(listener, state.clone(), std::future::pending()));
    (addr, state)
}

/// A Backtest on synthetic candles: it needs no file and no network.
fn manifest(name: &str, bars: u64) -> Value {
    json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "Backtest",
        "metadata": {"name": name},
        "spec": {
            "strategy": {"name": "sma-crossover", "params": {"fast": 10, "slow": 30}},
            "market": {"exchange": "binance", "symbols": ["BTCUSDT"], "timeframe": "1h"},
            "data": {"source": "synthetic",
                     "synthetic": {"seed": 7, "bars": bars, "startPrice": 30000, "drift": 0.05, "volatility": 0.6}},
            "portfolio": {"initialCash": "10000", "quoteAsset": "USDT"},
            "execution": {"feeBps": 10, "slippageBps": 0, "fill": "next-open"}
        }
    })
}

async fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    request(addr, "POST", path, token, Some(body)).await
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn progress_feed(addr: std::net::SocketAddr, run: &str) -> Socket {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("ws://{addr}/ws/live?channels=progress&run={run}").into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {VIEWER}").parse().expect("header"));
    tokio_tungstenite::client_async(request, stream).await.expect("handshake").0
}

/// The progress messages of one run, until it succeeds or fails.
async fn follow(socket: &mut Socket) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("the run ends in time")
            .expect("open")
            .expect("no error");
        let Message::Text(text) = message else { continue };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(message["channel"], "progress");
        let phase = message["data"]["phase"].as_str().expect("phase").to_owned();
        seen.push(message);
        if phase == "Succeeded" || phase == "Failed" {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_created_without_a_cluster_runs_here_streams_progress_and_is_saved_on_both_backends() {
    let pg_url = kuant_store::fresh_schema(&postgres_url(), "kuant_api_create")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"));
    for url in [pg_url, sqlite("run")] {
        let store = Store::open(&url).await.expect("store");
        let (addr, _state) = server(store, None).await;
        let mut feed = progress_feed(addr, "local/from-api").await;

        let body = manifest("from-api", 60_000).to_string();
        let created = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
        assert_eq!(created.status, 202, "{url}: {}", created.text);
        assert_eq!(created.body["id"], "local/from-api");
        assert_eq!(created.body["runs_in"], "local");
        assert_eq!(created.body["links"]["progress"], "/ws/live?channels=progress&run=local/from-api");
        // The same id again while it is under way: refused, not run twice.
        let again = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
        assert_eq!(again.status, 409, "{}", again.text);
        assert_eq!(again.body["code"], "conflict");

        let seen = follow(&mut feed).await;
        let phases: Vec<&str> = seen.iter().filter_map(|m| m["data"]["phase"].as_str()).collect();
        let last = seen.last().expect("messages");
        assert_eq!(last["data"]["phase"], "Succeeded", "{url}: {seen:?}");
        assert_eq!(last["data"]["percent"], 100.0);
        assert_eq!(last["data"]["candlesTotal"], 60_000);
        assert_eq!(last["run_id"], "local/from-api");
        for phase in ["Pending", "Running", "Saving"] {
            assert!(phases.contains(&phase), "{url}: {phase} in {phases:?}");
        }
        // Progress only moves forward.
        let done: Vec<u64> = seen.iter().filter_map(|m| m["data"]["candlesProcessed"].as_u64()).collect();
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");

        let one = request(addr, "GET", "/api/v1/backtests/local/from-api", Some(VIEWER), None).await;
        assert_eq!(one.status, 200, "{}", one.text);
        assert_eq!(one.body["phase"], "Succeeded");
        assert_eq!(one.body["strategy"], "sma-crossover");
        assert_eq!(one.body["spec"]["data"]["synthetic"]["bars"], 60_000);
        let results =
            request(addr, "GET", "/api/v1/backtests/local/from-api/results", Some(VIEWER), None).await;
        assert_eq!(results.status, 200, "{}", results.text);
        assert_eq!(results.body["candles"], 60_000, "{}", results.text);
        let equity =
            request(addr, "GET", "/api/v1/backtests/local/from-api/equity?points=100", Some(VIEWER), None)
                .await;
        assert_eq!(equity.status, 200);
        assert!(equity.body["stored_points"].as_u64().unwrap_or(0) >= 100, "{}", equity.text);

        // Once finished, the same id may run again: the new run replaces the old one.
        let rerun = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
        assert_eq!(rerun.status, 202, "{}", rerun.text);
        let seen = follow(&mut feed).await;
        assert_eq!(seen.last().expect("messages")["data"]["phase"], "Succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_files_are_read_only_under_the_data_dir_and_a_run_that_fails_says_why() {
    let db = sqlite("data-dir");
    let dir = std::path::Path::new(&db).parent().expect("dir").join("candles");
    std::fs::create_dir_all(&dir).expect("data dir");
    let hour = 3_600_000_i64;
    let rows: String = (0..200)
        .map(|i| format!("{},{p},{p},{p},{p},1\n", 1_700_000_000_000 + i * hour, p = 100 + i % 7))
        .collect();
    std::fs::write(dir.join("btc.csv"), format!("timestamp_ms,open,high,low,close,volume\n{rows}"))
        .expect("csv");
    let store = Store::open(&db).await.expect("store");
    let tokens =
        Tokens::parse(&format!("{VIEWER} viewer\n{TRADER} trader\n{ADMIN} admin\n")).expect("tokens");
    let state = Arc::new(AppState::new(store, tokens).with_data_dir(dir.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(kuant_ops_api::serve(listener, state, std::future::pending()));
    let with_csv = |name: &str, path: &str| {
        let mut body = manifest(name, 10);
        body["spec"]["data"] = json!({"source": "csv", "csv": {"path": path}});
        body.to_string()
    };

    // Outside the data dir: refused before anything runs, naming the field.
    for path in ["/etc/passwd", "../kuant.db", "sub/../../kuant.db"] {
        let r = post(addr, "/api/v1/backtests", Some(TRADER), &with_csv("outside", path)).await;
        assert_eq!(r.status, 422, "{path}: {}", r.text);
        assert_eq!(r.body["details"][0]["field"], "spec.data.csv.path", "{path}");
    }
    // Inside: a relative path runs from the data dir, an absolute one under it too.
    let mut feed = progress_feed(addr, "local/from-csv").await;
    let r = post(addr, "/api/v1/backtests", Some(TRADER), &with_csv("from-csv", "btc.csv")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let seen = follow(&mut feed).await;
    assert_eq!(seen.last().expect("messages")["data"]["phase"], "Succeeded", "{seen:?}");
    assert_eq!(seen.last().expect("messages")["data"]["candlesTotal"], 200);

    // A file that is not there: accepted, then Failed with the reason, in the store and on the feed.
    let mut feed = progress_feed(addr, "local/no-file").await;
    let missing = dir.join("missing.csv").to_string_lossy().into_owned();
    let created = post(addr, "/api/v1/backtests", Some(TRADER), &with_csv("no-file", &missing)).await;
    assert_eq!(created.status, 202, "{}", created.text);
    let seen = follow(&mut feed).await;
    let last = &seen.last().expect("messages")["data"];
    assert_eq!(last["phase"], "Failed");
    assert!(last["message"].as_str().unwrap_or("").contains("missing.csv"), "{last}");
    let one = request(addr, "GET", "/api/v1/backtests/local/no-file", Some(VIEWER), None).await;
    assert_eq!(one.body["phase"], "Failed", "{}", one.text);
    assert!(one.body["status"]["message"].as_str().unwrap_or("").contains("missing.csv"), "{}", one.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_small_roles_are_4xx_naming_the_field_never_a_500() {
    let store = Store::open(&sqlite("bad")).await.expect("store");
    let (addr, state) = server(store, None).await;
    let create = |token, body: String| async move { post(addr, "/api/v1/backtests", token, &body).await };

    let r = create(Some(TRADER), "{\"apiVersion\": ".into()).await;
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("malformed_body")), "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "body");
    assert!(r.body["details"][0]["message"].as_str().unwrap_or("").contains("line 1"), "{}", r.text);

    let mut unknown = manifest("x", 10);
    unknown["spec"]["portfolio"]["leverage"] = json!(5);
    let r = create(Some(TRADER), unknown.to_string()).await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("invalid_body")), "{}", r.text);
    assert!(r.text.contains("spec.portfolio.leverage"), "{}", r.text);

    let mut negative = manifest("x", 10);
    negative["spec"]["execution"]["feeBps"] = json!(-3);
    let r = create(Some(TRADER), negative.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "spec.execution.feeBps", "{}", r.text);

    let mut nameless = manifest("x", 10);
    nameless["metadata"] = json!({});
    let r = create(Some(TRADER), nameless.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("metadata.name"), "{}", r.text);

    let mut wrong_kind = manifest("x", 10);
    wrong_kind["kind"] = json!("TradingSession");
    let r = create(Some(TRADER), wrong_kind.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "kind");

    // A shared server (it has tokens) without --data-dir reads no files and no custom URLs.
    let mut csv = manifest("x", 10);
    csv["spec"]["data"] = json!({"source": "csv", "csv": {"path": "/etc/passwd"}});
    let r = create(Some(TRADER), csv.to_string()).await;
    assert_eq!(
        (r.status, r.body["details"][0]["field"].as_str()),
        (422, Some("spec.data.csv.path")),
        "{}",
        r.text
    );
    let mut url = manifest("x", 10);
    url["spec"]["data"] =
        json!({"source": "exchange", "exchange": {"name": "binance", "baseUrl": "http://10.0.0.1"}});
    let r = create(Some(TRADER), url.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "spec.data.exchange.baseUrl", "{}", r.text);

    let r = post(addr, "/api/v1/backtests?dry=1", Some(TRADER), &manifest("x", 10).to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "dry");

    // Roles: reading is not creating; no token is 401; neither echoes the token.
    let r = create(Some(VIEWER), manifest("x", 10).to_string()).await;
    assert_eq!((r.status, r.body["code"].as_str()), (403, Some("forbidden")), "{}", r.text);
    assert!(!r.text.contains(VIEWER));
    let r = create(None, manifest("x", 10).to_string()).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(state.local_runs.progress("local/x").is_none(), "a refused request starts nothing");

    // The kill switch is admin-only, checks its body, and needs a cluster.
    let suspend = "/api/v1/sessions/desk/paper-btc/suspend";
    let r = post(addr, suspend, Some(TRADER), "{\"suspend\": true}").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(addr, suspend, Some(ADMIN), "{\"suspend\": \"yes\"}").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "suspend", "{}", r.text);
    let r = post(addr, suspend, Some(ADMIN), "{\"suspend\": true, \"reason\": \"x\"}").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"][0]["field"], "reason", "{}", r.text);
    let r = post(addr, suspend, Some(ADMIN), "suspend").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(addr, suspend, Some(ADMIN), "{\"suspend\": true}").await;
    assert_eq!((r.status, r.body["code"].as_str()), (501, Some("not_available")), "{}", r.text);

    // So is a resume; its time must be one.
    let resume = "/api/v1/sessions/desk/paper-btc/resume";
    let r = post(addr, resume, Some(TRADER), "{}").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(addr, resume, Some(ADMIN), "{\"at\": \"yesterday\"}").await;
    assert_eq!((r.status, r.body["details"][0]["field"].as_str()), (422, Some("at")), "{}", r.text);
    let r = post(addr, resume, Some(ADMIN), "").await;
    assert_eq!((r.status, r.body["code"].as_str()), (501, Some("not_available")), "{}", r.text);
}

// ---- With --cluster: a mocked API server ----

const BACKTESTS: &str = "/apis/kuant.dev/v1alpha1/namespaces/research/backtests";
const SESSIONS: &str = "/apis/kuant.dev/v1alpha1/namespaces/desk/tradingsessions";

fn paper_session() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sessions/paper-btc.yaml"))
            .expect("example session");
    let session: kuant_crds::TradingSession =
        kuant_crds::manifest::parse(&text, "paper-btc.yaml").expect("a valid session");
    let mut value = serde_json::to_value(session).expect("json");
    value["metadata"]["namespace"] = json!("desk");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_backtests_are_created_and_read_and_sessions_switched_through_the_api_server() {
    let (client, handle) = kuant_mock_api::client("research");
    let store = Store::open(&sqlite("cluster")).await.expect("store");
    let (addr, state) = server(store, Some(client)).await;

    let mut created = paper_session();
    created["spec"]["suspend"] = json!(true);
    let script = vec![
        // Created in the client's namespace, with the CRD's defaults, as the ops API's field manager.
        Expect {
            check: Box::new(|query, body| {
                assert!(query.contains("fieldManager=kuant-ops-api"), "{query}");
                assert_eq!(body["kind"], "Backtest");
                assert_eq!(body["metadata"]["name"], "from-api");
                assert_eq!(body["metadata"]["namespace"], "research");
                assert_eq!(body["spec"]["strategy"]["name"], "sma-crossover");
                assert_eq!(body["spec"]["data"]["synthetic"]["bars"], 500);
            }),
            ..expect(Method::POST, BACKTESTS, (StatusCode::CREATED, Value::Null))
        },
        // Listed: the store's row, with the resource's current phase.
        expect(
            Method::GET,
            "/apis/kuant.dev/v1alpha1/backtests",
            (StatusCode::OK, {
                let mut b = manifest("from-api", 500);
                b["metadata"]["namespace"] = json!("research");
                b["status"] = json!({"phase": "Running"});
                json!({"apiVersion": "kuant.dev/v1alpha1", "kind": "BacktestList", "metadata": {}, "items": [b]})
            }),
        ),
        expect(
            Method::POST,
            BACKTESTS,
            status(409, "AlreadyExists", "backtests.kuant.dev \"from-api\" already exists"),
        ),
        expect(
            Method::POST,
            BACKTESTS,
            status(403, "Forbidden", "User \"system:serviceaccount:kuant:ops\" cannot create"),
        ),
        // Read back: the resource's status, though the store has nothing of it yet.
        expect(
            Method::GET,
            format!("{BACKTESTS}/from-api"),
            (StatusCode::OK, {
                let mut b = manifest("from-api", 500);
                b["metadata"]["namespace"] = json!("research");
                b["metadata"]["creationTimestamp"] = json!("2026-11-23T10:00:00Z");
                b["status"] = json!({"phase": "Running",
                    "progress": {"candlesProcessed": 250, "candlesTotal": 500, "percent": 50.0}});
                b
            }),
        ),
        expect(Method::GET, format!("{BACKTESTS}/gone"), status(404, "NotFound", "not found")),
        // The kill switch: the session must exist, then spec.suspend is applied, forced.
        expect(Method::GET, format!("{SESSIONS}/paper-btc"), (StatusCode::OK, paper_session())),
        Expect {
            check: Box::new(|query, body| {
                assert!(query.contains("fieldManager=kuant-ops-api"), "{query}");
                assert!(query.contains("force=true"), "{query}");
                assert_eq!(body["kind"], "TradingSession");
                assert_eq!(body["spec"], json!({"suspend": true}), "only the switch is applied");
            }),
            ..expect(Method::PATCH, format!("{SESSIONS}/paper-btc"), (StatusCode::OK, created))
        },
        expect(Method::GET, format!("{SESSIONS}/nope"), status(404, "NotFound", "not found")),
        // A resume: the annotation only, forced, never the spec.
        expect(Method::GET, format!("{SESSIONS}/paper-btc"), (StatusCode::OK, paper_session())),
        Expect {
            check: Box::new(|query, body| {
                assert!(
                    query.contains("fieldManager=kuant-ops-api") && query.contains("force=true"),
                    "{query}"
                );
                assert_eq!(body["metadata"]["annotations"]["kuant.dev/resume-at"], "2026-12-07T10:00:00Z");
                assert!(body.get("spec").is_none(), "the spec is the user's: {body}");
            }),
            ..expect(
                Method::PATCH,
                format!("{SESSIONS}/paper-btc"),
                (StatusCode::OK, {
                    let mut held = paper_session();
                    held["status"] = json!({"holds": [{"source": "reconciliation/main", "reason": "BalanceDrift",
                    "message": "BTC off", "since": "2026-12-07T09:00:00Z"}]});
                    held
                }),
            )
        },
    ];
    let api_server = tokio::spawn(play(handle, script));

    let body = manifest("from-api", 500).to_string();
    let r = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["id"], "research/from-api");
    assert_eq!(r.body["runs_in"], "cluster");
    assert!(state.local_runs.progress("research/from-api").is_none(), "nothing runs in the server");
    let listed = request(addr, "GET", "/api/v1/backtests", Some(VIEWER), None).await;
    assert_eq!(
        (listed.body["items"][0]["id"].as_str(), listed.body["items"][0]["phase"].as_str()),
        (Some("research/from-api"), Some("Running")),
        "listed at once, in the resource's phase: {}",
        listed.text
    );
    let r = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
    assert_eq!((r.status, r.body["code"].as_str()), (409, Some("conflict")), "{}", r.text);
    let r = post(addr, "/api/v1/backtests", Some(TRADER), &body).await;
    assert_eq!((r.status, r.body["code"].as_str()), (502, Some("cluster_unavailable")), "{}", r.text);
    assert!(r.text.contains("RBAC"), "{}", r.text);
    assert!(!r.text.contains("system:serviceaccount"), "the API server's words stay in the log: {}", r.text);
    // An invalid manifest never reaches the API server (the script has no request for it).
    let mut invalid = manifest("bad", 500);
    invalid["spec"]["market"]["symbols"] = json!([]);
    let r = post(addr, "/api/v1/backtests", Some(TRADER), &invalid.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("spec.market.symbols"), "{}", r.text);

    let r = request(addr, "GET", "/api/v1/backtests/research/from-api", Some(VIEWER), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["phase"], "Running");
    assert_eq!(r.body["status"]["progress"]["percent"], 50.0);
    assert_eq!(r.body["symbols"], json!(["BTCUSDT"]));
    assert_eq!(r.body["created_at_ms"], 1_795_428_000_000_i64);
    let r = request(addr, "GET", "/api/v1/backtests/research/gone", Some(VIEWER), None).await;
    assert_eq!(r.status, 404, "{}", r.text);

    let r = post(addr, "/api/v1/sessions/desk/paper-btc/suspend", Some(ADMIN), "{\"suspend\": true}").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"id": "desk/paper-btc", "suspend": true}));
    let r = post(addr, "/api/v1/sessions/desk/nope/suspend", Some(ADMIN), "{\"suspend\": true}").await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post(
        addr,
        "/api/v1/sessions/desk/paper-btc/resume",
        Some(ADMIN),
        "{\"at\": \"2026-12-07T10:00:00Z\"}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["resume_at"], "2026-12-07T10:00:00Z");
    assert_eq!(r.body["holds"], json!(["reconciliation/main: BalanceDrift: BTC off"]));

    tokio::time::timeout(Duration::from_secs(10), api_server)
        .await
        .expect("every scripted request made")
        .expect("the mocked API server");
}
