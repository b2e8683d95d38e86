//! `kuant exchange-sim` measured from a client over loopback: the REST order round trip (a signed
//! market order, placed and answered with its fills) and the fan-out of one market stream to
//! many WebSocket subscribers at `--speed max`. Prints figures; asserts nothing.
//!
//! `cargo bench -p kuant-exchanges --bench sim_io` (`KUANT_BENCH_ORDERS`, default 5,000;
//! `KUANT_BENCH_SUBSCRIBERS`, default 1,000). The server runs in this process on its own
//! runtime thread; the clients talk to it over real TCP.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kuant_exchanges::binance::{Credentials, sign};
use kuant_exchanges::sim::Speed;

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn rest_round_trip(orders: usize) {
    let (base, _state) = common::start(1.0);
    let credentials = Credentials::hmac(common::KEY, common::SECRET);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    // Buy and sell in turn so the balance lasts.
    let mut took = Vec::with_capacity(orders);
    for i in 0..orders + 200 {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()).to_string();
        let id = format!("bench-{i}");
        let side = if i % 2 == 0 { "BUY" } else { "SELL" };
        let query = sign::signed_query(
            &credentials,
            &[
                ("symbol", "BTCUSDT"),
                ("side", side),
                ("type", "MARKET"),
                ("quantity", "0.001"),
                ("newClientOrderId", &id),
                ("timestamp", &ts),
            ],
        );
        let started = Instant::now();
        let mut r = agent
            .post(format!("{base}/api/v3/order"))
            .header("X-MBX-APIKEY", common::KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(query.as_str())
            .expect("answered");
        let body = r.body_mut().read_to_string().expect("body");
        let elapsed = started.elapsed();
        assert_eq!(r.status().as_u16(), 200, "{body}");
        // The first 200 warm the connection and the caches.
        if i >= 200 {
            took.push(elapsed);
        }
    }
    took.sort();
    println!(
        "REST order round trip (signed MARKET order, FULL answer, keep-alive): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs over {orders} orders",
        quantile(&took, 0.5),
        quantile(&took, 0.99),
        quantile(&took, 1.0)
    );
}

/// The trade id (`"t":N`) of a trade message, read without parsing the rest.
fn trade_id(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn fan_out(subscribers: usize) {
    // `--speed max`: the clock steps as fast as the slowest subscriber takes the messages.
    // Enough candles that the replay outlasts the clients' connecting and the measurement.
    let (base, state) =
        common::start_sized(Speed::Max, Credentials::hmac(common::KEY, common::SECRET), 200_000);
    let addr = base.trim_start_matches("http://").to_owned();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async move {
        // Each subscriber reads from the moment it connects, as a real client does; the
        // measurement starts once all are connected.
        let window = Duration::from_secs(5);
        let start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let mut tasks = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            let (mut socket, _) =
                tokio_tungstenite::client_async(format!("ws://{addr}/ws/btcusdt@trade"), stream)
                    .await
                    .expect("handshake");
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    if start.get().is_some_and(|s| s.elapsed() >= window) {
                        return seen;
                    }
                    let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(200), socket.next()).await else {
                        continue;
                    };
                    let Some(started) = start.get() else { continue };
                    let Ok(text) = msg.into_text() else { continue };
                    let now = Instant::now();
                    if let Some(id) = trade_id(&text)
                        && now.saturating_duration_since(*started) < window
                    {
                        seen.push((id, now));
                    }
                }
            }));
        }
        let started = Instant::now();
        let _ = start.set(started);
        // When each move was published: an in-process receiver on its own thread.
        let mut moves = state.market_moves();
        let published = std::thread::spawn(move || {
            let mut at = std::collections::HashMap::new();
            // Polled (a blocking receive would wait forever once the candles are done).
            while started.elapsed() < window {
                match moves.try_recv() {
                    Ok(tick) => {
                        at.insert(tick.id, Instant::now());
                    }
                    Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            at
        });
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(seen) = t.await {
                all.push(seen);
            }
        }
        let published = published.join().unwrap_or_default();
        let total: usize = all.iter().map(Vec::len).sum();
        // Gaps: ids a subscriber skipped between its first and last message.
        let skipped: u64 = all
            .iter()
            .map(|seen| match (seen.first(), seen.last()) {
                (Some(a), Some(b)) => (b.0 - a.0 + 1).saturating_sub(seen.len() as u64),
                _ => 0,
            })
            .sum();
        let mut delays: Vec<Duration> = all
            .iter()
            .flatten()
            .filter_map(|(id, got)| published.get(id).map(|p| got.saturating_duration_since(*p)))
            .collect();
        delays.sort();
        let fewest = all.iter().map(Vec::len).min().unwrap_or(0);
        println!(
            "WebSocket fan-out of btcusdt@trade to {subscribers} subscribers at --speed max: {} moves published in {:.0} s; {:.0} messages/s delivered in all, {:.0} per subscriber (the slowest {:.0}), {skipped} skipped; delay from publication p50 {:.1} ms, p99 {:.1} ms",
            published.len(),
            window.as_secs_f64(),
            total as f64 / window.as_secs_f64(),
            total as f64 / window.as_secs_f64() / subscribers as f64,
            fewest as f64 / window.as_secs_f64(),
            quantile(&delays, 0.5) / 1000.0,
            quantile(&delays, 0.99) / 1000.0
        );
    });
}

fn main() {
    let orders = std::env::var("KUANT_BENCH_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let subscribers =
        std::env::var("KUANT_BENCH_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    rest_round_trip(orders);
    fan_out(subscribers);
}
