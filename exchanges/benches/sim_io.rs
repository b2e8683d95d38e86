//! `kuant exchange-sim` measured from a client over loopback: the REST order round trip (a signed
//! market order, placed and answered with its fills) and the fan-out of one market stream to
//! many WebSocket subscribers at a fast replay. Prints figures; asserts nothing.
//!
//! `cargo bench -p kuant-exchanges --bench sim_io` (`KUANT_BENCH_ORDERS`, default 5,000;
//! `KUANT_BENCH_SUBSCRIBERS`, default 1,000). The server runs in this process on its own
//! runtime thread; the clients talk to it over real TCP.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kuant_exchanges::binance::{Credentials, sign};

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

fn fan_out(subscribers: usize) {
    // An hourly candle every 10 ms of real time: a message every 0.33 ms per stream.
    let (base, _state) = common::start(360_000.0);
    let addr = base.trim_start_matches("http://").to_owned();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let mut sockets = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws/btcusdt@trade"), stream)
                .await
                .expect("handshake");
            sockets.push(socket);
        }
        let window = Duration::from_secs(5);
        let started = Instant::now();
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|mut socket| {
                tokio::spawn(async move {
                    let (mut count, mut delays) = (0u64, Vec::new());
                    let mut first: Option<(Instant, i64)> = None;
                    while started.elapsed() < window {
                        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(200), socket.next()).await else {
                            continue;
                        };
                        let Ok(text) = msg.into_text() else { continue };
                        count += 1;
                        // Delay: how far this message's simulated time runs behind the first
                        // one's, converted back to real time.
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        let sim_ms = v["E"].as_i64().unwrap_or_default();
                        let now = Instant::now();
                        let (t0, s0) = *first.get_or_insert((now, sim_ms));
                        let expected = Duration::from_secs_f64(((sim_ms - s0) as f64 / 360_000.0).max(0.0) / 1000.0);
                        delays.push(now.saturating_duration_since(t0).saturating_sub(expected));
                    }
                    (count, delays)
                })
            })
            .collect();
        let (mut total, mut delays) = (0u64, Vec::new());
        for t in tasks {
            if let Ok((count, d)) = t.await {
                total += count;
                delays.extend(d);
            }
        }
        delays.sort();
        println!(
            "WebSocket fan-out of btcusdt@trade to {subscribers} subscribers: {:.0} messages/s delivered in all, {:.0} per subscriber; lag behind the replay p50 {:.1} ms, p99 {:.1} ms",
            total as f64 / window.as_secs_f64(),
            total as f64 / window.as_secs_f64() / subscribers as f64,
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
