//! Load on the ops API: requests/s and p50/p99 latency of `GET` of a backtest's results and of
//! its equity curve (downsampled to 500 points), at fixed concurrency, over keep-alive
//! connections on loopback. A program that prints figures, not a timed test:
//! `cargo bench -p kuant-ops-api --bench load`.
//!
//! The store is SQLite in a temporary file by default; `KUANT_BENCH_STORE=postgres` uses
//! PostgreSQL at `KUANT_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test, in
//! a schema of its own). `KUANT_BENCH_CONCURRENCY` (default 32) and `KUANT_BENCH_SECONDS`
//! (default 5) set the load.
//!
//! Then the live feed: `KUANT_BENCH_WS_CLIENTS` (default 1,000) WebSocket clients on `/ws/live`
//! while `KUANT_BENCH_WS_RATE` (default 1,000) events a second are published for the same
//! seconds; it prints the delivery latency p50/p99/max over every (event, client) pair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;
use kuant_store::{Run, RunKind, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "bench-viewer-token-0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn open_store() -> Result<Store, String> {
    if std::env::var("KUANT_BENCH_STORE").is_ok_and(|v| v == "postgres") {
        let base = std::env::var("KUANT_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let url = kuant_store::fresh_schema(&base, "kuant_api_bench").await.map_err(|e| e.to_string())?;
        return Store::open(&url).await.map_err(|e| e.to_string());
    }
    let dir = std::env::temp_dir().join(format!("kuant-api-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Store::open(&dir.join("kuant.db").to_string_lossy()).await.map_err(|e| e.to_string())
}

/// A finished backtest `bench/btc` with a 10,000-point curve (the default cap) and results.
async fn seed(store: &Store) -> Result<(), String> {
    let run = Run {
        run_id: "bench/btc".into(),
        kind: RunKind::Backtest,
        namespace: Some("bench".into()),
        name: "btc".into(),
        spec: serde_json::json!({"strategy": {"name": "sma-crossover"}, "market": {"symbols": ["BTCUSDT"]}}),
        phase: "Succeeded".into(),
    };
    store.reset_run(&run).await.map_err(|e| e.to_string())?;
    let curve: Vec<(i64, f64)> = (0..10_000)
        .map(|i| (1_500_000_000_000 + i * 3_600_000, 10_000.0 + ((i * 7919) % 1000) as f64))
        .collect();
    store.insert_equity("bench/btc", &curve).await.map_err(|e| e.to_string())?;
    let results = serde_json::json!({
        "name": "btc", "run_id": "bench/btc", "final_equity": "12345.67",
        "metrics": {"total_return_pct": 23.45, "sharpe": 1.2, "max_drawdown_pct": 12.5, "trades": 420},
        "counters": {"signals": 900, "orders": 840, "fills": 840, "blocked": 12},
    });
    let status =
        serde_json::json!({"phase": "Succeeded", "results": {"finalEquity": "12345.67", "trades": 420}});
    store
        .finish_run("bench/btc", "Succeeded", Some(&status), Some(&results), 1)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One keep-alive connection sending `GET path` until `until`; the latency of each request.
async fn client(
    addr: std::net::SocketAddr,
    path: &'static str,
    until: Instant,
) -> Result<Vec<Duration>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let mut latencies = Vec::new();
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        write.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut length = None;
        let mut status_ok = false;
        loop {
            line.clear();
            if read.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err("the server closed the connection".into());
            }
            if line.starts_with("HTTP/1.1 ") {
                status_ok = line.starts_with("HTTP/1.1 200");
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if line == "\r\n" {
                break;
            }
        }
        let length = length.ok_or("a response without Content-Length")?;
        body.resize(length, 0);
        read.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        if !status_ok {
            return Err(format!("{path}: {}", String::from_utf8_lossy(&body)));
        }
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

async fn load(
    addr: std::net::SocketAddr,
    path: &'static str,
    connections: u64,
    seconds: u64,
) -> Result<(), String> {
    // Warm up (connections, caches), then measure.
    let warm = Instant::now() + Duration::from_millis(500);
    let tasks: Vec<_> = (0..connections).map(|_| tokio::spawn(client(addr, path, warm))).collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections).map(|_| tokio::spawn(client(addr, path, until))).collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let took = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "GET {path}: {} requests in {took:.1} s -> {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms ({connections} connections)",
        all.len(),
        all.len() as f64 / took,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One WebSocket client: the delivery latency of every event until one says `last`.
async fn ws_client(stream: tokio::net::TcpStream, addr: std::net::SocketAddr) -> Result<Vec<u32>, String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws/live").into_client_request().map_err(|e| e.to_string())?;
    let header = format!("Bearer {TOKEN}").parse().map_err(|_| "header".to_owned())?;
    request.headers_mut().insert("authorization", header);
    // The library zeroes its whole read buffer (128 KiB by default) on every read: with a
    // thousand clients in this process that would be the benchmark's main cost, not the server's.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let mut latencies = Vec::with_capacity(8192);
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message.map_err(|e| e.to_string())? else { continue };
        // Only the stamp is read (a full parse per delivery would make the clients, which
        // share the two cores with the server, the bottleneck).
        if text.contains("\"last\":true") {
            return Ok(latencies);
        }
        let sent = text
            .split("\"us\":")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<u64>().ok())
            .unwrap_or(0);
        latencies.push(now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
    }
    Err("the server closed a client (too slow?)".into())
}

async fn fan_out(
    state: Arc<AppState>,
    addr: std::net::SocketAddr,
    clients: u64,
    rate: u64,
    seconds: u64,
) -> Result<(), String> {
    use kuant_ops_api::live::Feed;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{e} (raise the open-files limit: ulimit -n)"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(ws_client(stream, addr)));
    }
    let started = Instant::now();
    while state.hub.stats().live_connections < clients {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "only {} of {clients} clients connected",
                state.hub.stats().live_connections
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events one by one, evenly spaced, at `rate` a second.
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let first = Instant::now();
    let until = first + Duration::from_secs(seconds);
    let mut published = 0_u64;
    while Instant::now() < until {
        let due = first + gap.mul_f64(published as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let data = serde_json::json!({"us": now_us(), "side": "buy", "price": "64000.5", "quantity": "0.01"});
        state.hub.publish(Feed::Live, "fills", Some("bench/session"), Some("BTCUSDT"), 0, &data);
        published += 1;
    }
    state.hub.publish(Feed::Live, "fills", None, None, 0, &serde_json::json!({"last": true}));
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    println!(
        "WebSocket fan-out: {published} events at {rate}/s to {clients} clients ({} deliveries, {} dropped clients): latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        state.hub.stats().dropped_slow,
        f64::from(pct(0.50)) / 1000.0,
        f64::from(pct(0.99)) / 1000.0,
        f64::from(all.last().copied().unwrap_or(0)) / 1000.0,
    );
    Ok(())
}

fn main() {
    let connections = env_number("KUANT_BENCH_CONCURRENCY", 32);
    let seconds = env_number("KUANT_BENCH_SECONDS", 5);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let outcome: Result<(), String> = runtime.block_on(async {
        let store = open_store().await?;
        println!(
            "kuant ops API load: {:?} store, {connections} keep-alive connections, {seconds} s per endpoint",
            store.backend()
        );
        seed(&store).await?;
        let tokens = Tokens::parse(&format!("{TOKEN} viewer")).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(AppState::new(store, tokens));
        tokio::spawn(kuant_ops_api::serve(listener, state.clone(), std::future::pending()));
        // KUANT_BENCH_ONLY=ws or =http runs one half.
        let only = std::env::var("KUANT_BENCH_ONLY").unwrap_or_default();
        if only != "ws" {
            load(addr, "/api/v1/backtests/bench/btc/results", connections, seconds).await?;
            load(addr, "/api/v1/backtests/bench/btc/equity?points=500", connections, seconds).await?;
        }
        if only == "http" {
            return Ok(());
        }
        let clients = env_number("KUANT_BENCH_WS_CLIENTS", 1000);
        let rate = env_number("KUANT_BENCH_WS_RATE", 1000);
        fan_out(state, addr, clients, rate, seconds).await?;
        Ok(())
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
