//! The market stream client against `kuant exchange-sim`'s faults over real WebSocket: silence
//! with the connection open is detected and the stream reconnects, a dropped connection is
//! reconnected, and duplicated or reordered messages never reach the reader.

mod common;

use std::time::Duration;

use kuant_exchanges::binance::stream::{MarketStream, StreamEvent};
use kuant_exchanges::binance::wire::MarketEvent;
use tokio::sync::mpsc::Receiver;

const FAST: f64 = 36_000.0;

fn stream(base: &str, streams: &[&str]) -> Receiver<StreamEvent> {
    let mut s =
        MarketStream::new(&base.replace("http://", "ws://"), streams.iter().map(|s| s.to_string()).collect());
    s.silence_after = Duration::from_millis(500);
    s.first_backoff = Duration::from_millis(50);
    s.max_backoff = Duration::from_millis(200);
    s.spawn()
}

fn inject(base: &str, fault: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent.post(format!("{base}/_sim/faults")).send(fault).expect("answered");
    assert_eq!(r.status().as_u16(), 200, "{fault}");
}

/// Events until `want` matches one, within `limit`; all of them.
async fn until(
    rx: &mut Receiver<StreamEvent>,
    limit: Duration,
    want: impl Fn(&StreamEvent) -> bool,
) -> Vec<StreamEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                let done = want(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("not within {limit:?}; saw {:?}", seen.iter().rev().take(5).collect::<Vec<_>>()),
        }
    }
}

fn is_market(e: &StreamEvent) -> bool {
    matches!(e, StreamEvent::Market(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_with_the_connection_open_is_detected_and_the_stream_reconnects() {
    let (base, _state) = common::start(FAST);
    let mut rx = stream(&base, &["btcusdt@trade"]);
    until(&mut rx, Duration::from_secs(5), |e| *e == StreamEvent::Connected).await;
    until(&mut rx, Duration::from_secs(5), is_market).await;
    inject(&base, r#"{"kind": "silence", "seconds": 1.5}"#);
    let seen = until(&mut rx, Duration::from_secs(5), |e| matches!(e, StreamEvent::Silent { .. })).await;
    assert!(
        seen.iter().all(|e| !matches!(e, StreamEvent::Reconnecting { .. })),
        "silence, not a broken connection"
    );
    until(&mut rx, Duration::from_secs(5), |e| matches!(e, StreamEvent::Reconnecting { .. })).await;
    // Once the silence ends, data flows again.
    until(&mut rx, Duration::from_secs(10), is_market).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reconnected() {
    let (base, _state) = common::start(FAST);
    let mut rx = stream(&base, &["btcusdt@trade", "btcusdt@kline_1h"]);
    until(&mut rx, Duration::from_secs(5), is_market).await;
    inject(&base, r#"{"kind": "drop-connections"}"#);
    until(&mut rx, Duration::from_secs(5), |e| matches!(e, StreamEvent::Reconnecting { .. })).await;
    until(&mut rx, Duration::from_secs(5), |e| *e == StreamEvent::Connected).await;
    until(&mut rx, Duration::from_secs(5), is_market).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_messages_never_reach_the_reader() {
    let (base, _state) = common::start(FAST);
    inject(&base, r#"{"kind": "stream", "duplicate": true, "reorder": true}"#);
    let mut rx = stream(&base, &["btcusdt@trade"]);
    let mut ids = Vec::new();
    while ids.len() < 50 {
        let seen = until(&mut rx, Duration::from_secs(5), is_market).await;
        if let Some(StreamEvent::Market(MarketEvent::Trade { id, .. }, _)) = seen.last() {
            ids.push(*id);
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {ids:?}");
}

fn latest_open(base: &str) -> i64 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = agent
        .get(format!("{base}/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1"))
        .call()
        .expect("answered")
        .body_mut()
        .read_to_string()
        .expect("body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v[0][0].as_i64().expect("an open time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_speed_the_clock_waits_for_subscribers_and_skips_nothing() {
    use kuant_exchanges::binance::Credentials;
    use kuant_exchanges::sim::Speed;
    let (base, _state) = common::start_with(Speed::Max, Credentials::hmac(common::KEY, common::SECRET));
    // Nobody subscribes: the clock holds still.
    let first = latest_open(&base);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(latest_open(&base), first, "no subscriber, no progress");
    // A subscriber: every trade, in order, and candle after candle closes.
    let mut rx = stream(&base, &["btcusdt@trade", "btcusdt@kline_1h"]);
    let (mut ids, mut closed) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while closed.len() < 20 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(StreamEvent::Market(MarketEvent::Trade { id, .. }, _))) => ids.push(id),
            Ok(Some(StreamEvent::Market(MarketEvent::Kline { kline, .. }, _))) if kline.closed => {
                closed.push(kline.open_ms)
            }
            Ok(Some(_)) => {}
            other => panic!("{other:?} after {} closed candles", closed.len()),
        }
    }
    assert!(closed.windows(2).all(|w| w[1] == w[0] + common::H), "one candle after another: {closed:?}");
    assert!(ids.len() > 500, "{} trades", ids.len());
    // A trade id per market move: none skipped for this reader.
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "every move, in order");
    assert!(latest_open(&base) >= first + 20 * common::H);
}
