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
    matches!(e, StreamEvent::Market(_))
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
        if let Some(StreamEvent::Market(MarketEvent::Trade { id, .. })) = seen.last() {
            ids.push(*id);
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {ids:?}");
}
