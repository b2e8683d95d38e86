//! The account's updates from Binance's WebSocket API: the user data stream subscription
//! (`userDataStream.subscribe.signature`; the spot listenKey was discontinued on 2026-02-20),
//! resubscribed after every reconnect. Updates sent while the connection was down are lost: a
//! reader that sees [`UserEvent::Subscribed`] again should ask for its open orders and balances.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::sign::Credentials;
use super::stream::backoff;
use super::wire::account_update;
use crate::model::AccountUpdate;

/// Binance spot's WebSocket API.
pub const BINANCE_WS_API: &str = "wss://ws-api.binance.com:443/ws-api/v3";

/// What the user data stream tells its reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEvent {
    /// Subscribed (again): updates flow from now on.
    Subscribed,
    /// An order or balance update.
    Update(AccountUpdate),
    /// The connection is gone; the next attempt follows in `after`.
    Reconnecting {
        /// Attempts since the last good subscription.
        attempt: u32,
        /// The wait before it.
        after: Duration,
        /// Why.
        reason: String,
    },
    /// The exchange refused the key or its signature: the stream stops.
    Refused(String),
}

/// How the user data stream runs.
pub struct UserStream {
    /// The WebSocket API's URL, e.g. [`BINANCE_WS_API`] or a simulator's `ws://…/ws-api/v3`.
    pub url: String,
    /// The key that signs the subscription.
    pub credentials: Arc<Credentials>,
    /// Binance's clock minus this machine's, in ms (from the REST client).
    pub clock_offset_ms: i64,
    /// The first reconnect wait.
    pub first_backoff: Duration,
    /// The longest reconnect wait.
    pub max_backoff: Duration,
}

enum Ended {
    Retry(String),
    Refused(String),
}

impl UserStream {
    /// A stream for `credentials` at `url`.
    pub fn new(url: &str, credentials: Arc<Credentials>) -> Self {
        Self {
            url: url.to_owned(),
            credentials,
            clock_offset_ms: 0,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Runs the stream in a task until the receiver is dropped or the key is refused.
    pub fn spawn(self) -> mpsc::Receiver<UserEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move { self.run(tx).await });
        rx
    }

    /// The subscription request: params sorted by name and signed as a query string.
    fn subscribe_request(&self, id: u64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        let timestamp = (now + self.clock_offset_ms).to_string();
        // Sorted: apiKey < timestamp.
        let payload =
            super::sign::query(&[("apiKey", self.credentials.api_key()), ("timestamp", &timestamp)]);
        let signature = self.credentials.sign(&payload);
        serde_json::json!({
            "id": format!("kuant-sub-{id}"),
            "method": "userDataStream.subscribe.signature",
            "params": {"apiKey": self.credentials.api_key(), "timestamp": timestamp.parse::<i64>().unwrap_or(now), "signature": signature},
        })
        .to_string()
    }

    async fn run(self, tx: mpsc::Sender<UserEvent>) {
        let mut attempt = 0u32;
        let mut seed = u64::from(std::process::id()).rotate_left(29) ^ 0x5851_f42d_4c95_7f2d;
        loop {
            let ended = self.session(&tx, &mut attempt).await;
            let reason = match ended {
                None => return,
                Some(Ended::Refused(reason)) => {
                    tracing::error!(%reason, "user data stream refused");
                    let _ = tx.send(UserEvent::Refused(reason)).await;
                    return;
                }
                Some(Ended::Retry(reason)) => reason,
            };
            attempt += 1;
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let after = backoff(attempt, self.first_backoff, self.max_backoff, seed);
            tracing::warn!(attempt, ?after, %reason, "user data stream reconnecting");
            if tx.send(UserEvent::Reconnecting { attempt, after, reason }).await.is_err() {
                return;
            }
            tokio::time::sleep(after).await;
        }
    }

    /// One connection: subscribe, then forward updates. `None` when the reader is gone.
    async fn session(&self, tx: &mpsc::Sender<UserEvent>, attempt: &mut u32) -> Option<Ended> {
        let mut socket = match super::stream::connect(&self.url).await {
            Ok(s) => s,
            Err(e) => return Some(Ended::Retry(e)),
        };
        let id = u64::from(*attempt);
        if let Err(e) = socket.send(Message::Text(self.subscribe_request(id).into())).await {
            return Some(Ended::Retry(format!("subscribing: {e}")));
        }
        loop {
            let message = match tokio::time::timeout(Duration::from_secs(60), socket.next()).await {
                // The user data stream is quiet when nothing happens: keep the connection checked.
                Err(_) => {
                    let ping = serde_json::json!({"id": "kuant-ping", "method": "ping"}).to_string();
                    if socket.send(Message::Text(ping.into())).await.is_err() {
                        return Some(Ended::Retry("the connection broke".into()));
                    }
                    continue;
                }
                Ok(None) => return Some(Ended::Retry("the connection closed".into())),
                Ok(Some(Err(e))) => return Some(Ended::Retry(format!("the connection broke: {e}"))),
                Ok(Some(Ok(m))) => m,
            };
            let text = match message {
                Message::Text(t) => t.to_string(),
                Message::Ping(p) => {
                    if socket.send(Message::Pong(p)).await.is_err() {
                        return Some(Ended::Retry("a pong could not be sent".into()));
                    }
                    continue;
                }
                Message::Close(frame) => {
                    return Some(Ended::Retry(format!("closed by the exchange: {frame:?}")));
                }
                _ => continue,
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            if value.get("id").and_then(|i| i.as_str()).is_some_and(|i| i.starts_with("kuant-sub-")) {
                if value["status"].as_u64() == Some(200) {
                    *attempt = 0;
                    if tx.send(UserEvent::Subscribed).await.is_err() {
                        return None;
                    }
                    continue;
                }
                let code = value["error"]["code"].as_i64().unwrap_or_default();
                let msg = value["error"]["msg"].as_str().unwrap_or_default().to_owned();
                let reason = format!("subscription refused ({code}): {msg}");
                // A bad key or signature does not get better by retrying; a clock issue might.
                return Some(if matches!(code, -2014 | -2015 | -1022) {
                    Ended::Refused(reason)
                } else {
                    Ended::Retry(reason)
                });
            }
            if value.get("event").is_some() {
                match account_update(&text) {
                    Ok(Some(update)) => {
                        if tx.send(UserEvent::Update(update)).await.is_err() {
                            return None;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "an account update that does not parse"),
                }
            }
        }
    }
}
