//! Binance's market streams over WebSocket, kept alive: a combined stream
//! (`/stream?streams=a/b`) that reconnects with exponential back-off and jitter, treats a
//! connection that stays open but silent as dead (the failure that leaves bots trading on
//! stale data: it is reported, then the stream reconnects), answers pings, reconnects ahead of
//! Binance's 24-hour cut, and drops duplicated or out-of-order messages.
//!
//! The decisions (back-off, what is fresh) are pure functions below; the IO is the loop in
//! [`MarketStream::spawn`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::wire::{MarketEvent, market_event};

/// Binance spot's market stream base URL.
pub const BINANCE_STREAMS: &str = "wss://stream.binance.com:9443";
/// Binance closes a connection after 24 hours; kuant reconnects a little before.
pub const RECONNECT_BEFORE_CUT: Duration = Duration::from_secs(23 * 3600 + 50 * 60);

/// What the stream tells its reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Connected (again) and subscribed.
    Connected,
    /// A market event, and when it was received (Unix ms, this machine's clock): a reader that
    /// falls behind judges freshness by it, not by when it gets to the event.
    Market(MarketEvent, i64),
    /// Nothing arrived for `for_`: the data is stale; the stream reconnects.
    Silent {
        /// How long nothing came.
        for_: Duration,
    },
    /// The connection is gone (`reason`); the next attempt follows in `after`.
    Reconnecting {
        /// Attempts since the last good connection.
        attempt: u32,
        /// The wait before it.
        after: Duration,
        /// Why.
        reason: String,
    },
}

fn received_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How a market stream runs.
#[derive(Clone, Debug)]
pub struct MarketStream {
    /// Base URL, e.g. [`BINANCE_STREAMS`] or a `kuant exchange-sim`'s `ws://…`.
    pub base: String,
    /// Stream names, e.g. `btcusdt@kline_1h`.
    pub streams: Vec<String>,
    /// Nothing for this long means the connection is dead, open or not.
    pub silence_after: Duration,
    /// The first reconnect wait (doubled each attempt, up to `max_backoff`).
    pub first_backoff: Duration,
    /// The longest reconnect wait.
    pub max_backoff: Duration,
}

impl MarketStream {
    /// A stream of `streams` from `base`, with kuant's defaults: silence after 60 s, back-off
    /// from 0.5 s to 30 s.
    pub fn new(base: &str, streams: Vec<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            streams,
            silence_after: Duration::from_secs(60),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Runs the stream in a task until the receiver is dropped.
    pub fn spawn(self) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move { self.run(tx).await });
        rx
    }

    async fn run(self, tx: mpsc::Sender<StreamEvent>) {
        let url = format!("{}/stream?streams={}", self.base, self.streams.join("/"));
        let mut attempt = 0u32;
        let mut fresh = Freshness::default();
        let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
        loop {
            let reason = match connect(&url).await {
                Err(e) => e,
                Ok(mut socket) => {
                    if tx.send(StreamEvent::Connected).await.is_err() {
                        return;
                    }
                    let opened = tokio::time::Instant::now();
                    loop {
                        if opened.elapsed() >= RECONNECT_BEFORE_CUT {
                            let _ = socket.close(None).await;
                            break "reconnecting ahead of the exchange's 24-hour cut".to_owned();
                        }
                        match tokio::time::timeout(self.silence_after, socket.next()).await {
                            Err(_) => {
                                if tx.send(StreamEvent::Silent { for_: self.silence_after }).await.is_err() {
                                    return;
                                }
                                break format!(
                                    "silent for {:?} with the connection open",
                                    self.silence_after
                                );
                            }
                            Ok(None) => break "the connection closed".to_owned(),
                            Ok(Some(Err(e))) => break format!("the connection broke: {e}"),
                            Ok(Some(Ok(Message::Text(text)))) => {
                                attempt = 0;
                                let Ok(Some(event)) = market_event(&text) else { continue };
                                let received = received_ms();
                                if fresh.admit(&event)
                                    && tx.send(StreamEvent::Market(event, received)).await.is_err()
                                {
                                    return;
                                }
                            }
                            Ok(Some(Ok(Message::Ping(payload)))) => {
                                if socket.send(Message::Pong(payload)).await.is_err() {
                                    break "a pong could not be sent".to_owned();
                                }
                            }
                            Ok(Some(Ok(Message::Close(frame)))) => {
                                break format!("closed by the exchange: {frame:?}");
                            }
                            Ok(Some(Ok(_))) => {}
                        }
                    }
                }
            };
            attempt += 1;
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let after = backoff(attempt, self.first_backoff, self.max_backoff, seed);
            tracing::warn!(attempt, ?after, %reason, "market stream reconnecting");
            if tx.send(StreamEvent::Reconnecting { attempt, after, reason }).await.is_err() {
                return;
            }
            tokio::time::sleep(after).await;
        }
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(url: &str) -> Result<Socket, String> {
    let connector = if url.starts_with("wss://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        use rustls_platform_verifier::ConfigVerifierExt as _;
        let config = rustls::ClientConfig::with_platform_verifier().map_err(|e| format!("TLS: {e}"))?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => Err("connecting timed out".into()),
        Ok(Err(e)) => Err(format!("connecting: {e}")),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

/// The wait before reconnect `attempt` (1, 2, …): `first` doubled per attempt, at most `max`,
/// then a jitter of up to ±25 % from `seed`, so that many clients do not reconnect in step.
pub fn backoff(attempt: u32, first: Duration, max: Duration, seed: u64) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = doubled.min(max);
    // seed → [0.75, 1.25)
    let jitter = 0.75 + (seed >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
    base.mul_f64(jitter).min(max)
}

/// What has been delivered, per stream, to drop duplicates and stale reorderings: trades by id,
/// book tickers by update id, klines by (open time, and a closed one is final).
#[derive(Default, Debug)]
pub struct Freshness {
    trades: HashMap<String, u64>,
    books: HashMap<String, u64>,
    klines: HashMap<(String, String), (i64, bool)>,
}

impl Freshness {
    /// Whether `event` is new (and remembers it).
    pub fn admit(&mut self, event: &MarketEvent) -> bool {
        match event {
            MarketEvent::Trade { symbol, id, .. } => newer(&mut self.trades, symbol, *id),
            MarketEvent::BookTicker(b) => newer(&mut self.books, &b.symbol, b.update_id),
            MarketEvent::Kline { symbol, interval, kline } => {
                let slot = self.klines.entry((symbol.clone(), interval.clone())).or_insert((i64::MIN, false));
                let fresh = kline.open_ms > slot.0 || (kline.open_ms == slot.0 && !slot.1);
                if fresh {
                    *slot = (kline.open_ms, kline.closed);
                }
                fresh
            }
        }
    }
}

fn newer(seen: &mut HashMap<String, u64>, symbol: &str, id: u64) -> bool {
    match seen.get_mut(symbol) {
        Some(last) if id <= *last => false,
        Some(last) => {
            *last = id;
            true
        }
        None => {
            seen.insert(symbol.to_owned(), id);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kline;
    use rust_decimal::Decimal;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let (first, max) = (Duration::from_millis(500), Duration::from_secs(30));
        let middle = 1u64 << 63; // jitter factor 1.0
        assert_eq!(backoff(1, first, max, middle), first);
        assert_eq!(backoff(2, first, max, middle), Duration::from_secs(1));
        assert_eq!(backoff(4, first, max, middle), Duration::from_secs(4));
        assert_eq!(backoff(40, first, max, middle), max);
        for seed in [0, 1, u64::MAX, 12_345] {
            let b = backoff(3, first, max, seed);
            assert!(b >= Duration::from_millis(1500) && b <= Duration::from_millis(2500), "{b:?}");
        }
    }

    #[test]
    fn duplicates_and_stale_messages_are_dropped() {
        let d = |s: &str| s.parse::<Decimal>().expect("decimal");
        let trade = |id| MarketEvent::Trade {
            symbol: "BTCUSDT".into(),
            id,
            price: d("1"),
            quantity: d("1"),
            time_ms: 0,
        };
        let mut fresh = Freshness::default();
        assert!(fresh.admit(&trade(2)));
        assert!(!fresh.admit(&trade(2)), "a duplicate");
        assert!(!fresh.admit(&trade(1)), "older, arriving late");
        assert!(fresh.admit(&trade(3)));
        let kline = |open_ms, closed| MarketEvent::Kline {
            symbol: "BTCUSDT".into(),
            interval: "1h".into(),
            kline: Kline {
                open_ms,
                open: d("1"),
                high: d("1"),
                low: d("1"),
                close: d("1"),
                volume: d("1"),
                close_ms: open_ms + 1,
                closed,
            },
        };
        assert!(fresh.admit(&kline(10, false)));
        assert!(fresh.admit(&kline(10, true)), "an update of the forming candle, then its close");
        assert!(!fresh.admit(&kline(10, false)), "a forming update after the close is stale");
        assert!(!fresh.admit(&kline(5, true)), "an older candle");
        assert!(fresh.admit(&kline(20, false)));
    }
}
