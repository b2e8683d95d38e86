//! Live feeds over WebSocket: `/ws/live` (fills, orders, positions, blocks, risk, backtest
//! progress) and `/ws/market` (ticks, candles).
//!
//! - **Fan-out**: every message is published once to a [`Hub`], a broadcast channel with a
//!   ring of the last [`RING`] messages. Publishing never waits for a client.
//! - **Slow clients** are dropped, not waited for: a client more than [`CLIENT_BUFFER`] messages
//!   behind is closed with code 4001, and one whose socket accepts nothing for [`SEND_TIMEOUT`]
//!   is disconnected. The others never notice.
//! - **Resume without gaps**: every message has a sequence number; a client that reconnects
//!   with `?cursor=N` first gets the buffered messages after N, then the live ones, each once.
//!   When N is older than the ring it gets `{"type": "reset"}` and should reload over REST.
//! - **Filters** in the URL (they are not secret): `channels=fills,orders`, `run=`, `symbol=`.
//! - **Auth** never in the URL: an `Authorization: Bearer` header where the client can set one,
//!   else a first message `{"type": "auth", "token": "..."}` within [`AUTH_TIMEOUT`].
//! - **Batching**: a client is written at most every [`FLUSH_EVERY`]; messages arriving
//!   meanwhile share one write, so a busy feed adds at most that much delay and the cost of the
//!   fan-out grows with the clients, not with clients × events.
//! - **Keep-alive**: the server pings every [`PING_EVERY`]; a client silent for three periods
//!   is closed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::Response;
use futures_util::SinkExt;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

use crate::AppState;
use crate::auth::Role;
use crate::error::ApiError;
use crate::params::Params;

/// Messages kept for clients that resume.
pub const RING: usize = 10_000;
/// How far behind a client may fall before it is dropped.
pub const CLIENT_BUFFER: usize = 4096;
/// How long a send may wait on a client's socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to authenticate by message.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// A client is written at most this often; messages arriving meanwhile share the write.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Read buffer of a client socket.
const READ_BUFFER: usize = 4096;
/// Messages written per flush at most.
const MAX_BATCH: usize = 256;
/// Server ping period.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// Close code of a client that fell too far behind.
pub const CLOSE_TOO_SLOW: u16 = 4001;
/// Close code of a client without a valid token.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code of a client whose role is not enough.
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// Which socket a channel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    /// `/ws/live`.
    Live,
    /// `/ws/market`.
    Market,
}

/// The channels of each feed.
pub const LIVE_CHANNELS: &[&str] = &["fills", "orders", "positions", "blocks", "risk", "progress"];
/// The channels of the market feed.
pub const MARKET_CHANNELS: &[&str] = &["ticks", "candles"];

/// One published message, encoded once for every client.
#[derive(Debug)]
pub struct Published {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Its feed.
    pub feed: Feed,
    /// Its channel.
    pub channel: String,
    /// The run or session it is about.
    pub run_id: Option<String>,
    /// The symbol it is about.
    pub symbol: Option<String>,
    /// The JSON text sent.
    pub text: Utf8Bytes,
}

/// A message of `/ws/live` and `/ws/market`, as sent.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "LiveMessage")]
pub struct Wire<'a> {
    /// Sequence number, from 1; pass the last one seen as `?cursor=` to resume.
    pub seq: u64,
    /// Its channel (`fills`, `orders`, `positions`, `blocks`, `risk`, `progress`, `ticks`, `candles`).
    pub channel: &'a str,
    /// The run or session it is about.
    pub run_id: Option<&'a str>,
    /// The symbol it is about.
    pub symbol: Option<&'a str>,
    /// When it happened, Unix ms.
    pub at_ms: i64,
    /// The row or progress itself (decimals as strings).
    pub data: &'a serde_json::Value,
}

/// Counters of the hub.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Stats {
    /// Open `/ws/live` connections.
    pub live_connections: u64,
    /// Open `/ws/market` connections.
    pub market_connections: u64,
    /// Messages published.
    pub published: u64,
    /// Messages sent, all clients.
    pub sent: u64,
    /// Clients dropped for being too slow.
    pub dropped_slow: u64,
    /// Messages held for resuming clients.
    pub buffered: u64,
}

/// The fan-out point of live messages.
pub struct Hub {
    sender: broadcast::Sender<Arc<Published>>,
    ring: Mutex<VecDeque<Arc<Published>>>,
    next_seq: AtomicU64,
    live: AtomicU64,
    market: AtomicU64,
    sent: AtomicU64,
    dropped_slow: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CLIENT_BUFFER).0,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            next_seq: AtomicU64::new(1),
            live: AtomicU64::new(0),
            market: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
        }
    }
}

impl Hub {
    /// Publishes a message to every subscribed client of `feed`; never waits. Returns its
    /// sequence number.
    pub fn publish(
        &self,
        feed: Feed,
        channel: &str,
        run_id: Option<&str>,
        symbol: Option<&str>,
        at_ms: i64,
        data: &serde_json::Value,
    ) -> u64 {
        // Numbering and buffering under one lock keep the ring in sequence order.
        let Ok(mut ring) = self.ring.lock() else { return 0 };
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let wire = Wire { seq, channel, run_id, symbol, at_ms, data };
        let text = serde_json::to_string(&wire).unwrap_or_default();
        let message = Arc::new(Published {
            seq,
            feed,
            channel: channel.to_owned(),
            run_id: run_id.map(str::to_owned),
            symbol: symbol.map(str::to_owned),
            text: text.into(),
        });
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(message.clone());
        // No receiver is not an error: nobody is listening yet.
        let _ = self.sender.send(message);
        seq
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            live_connections: self.live.load(Ordering::Relaxed),
            market_connections: self.market.load(Ordering::Relaxed),
            published: self.next_seq.load(Ordering::Relaxed) - 1,
            sent: self.sent.load(Ordering::Relaxed),
            dropped_slow: self.dropped_slow.load(Ordering::Relaxed),
            buffered: self.ring.lock().map_or(0, |r| r.len() as u64),
        }
    }

    /// The buffered messages after `cursor`, or `None` when some after it are gone.
    fn since(&self, cursor: u64) -> Option<Vec<Arc<Published>>> {
        let ring = self.ring.lock().ok()?;
        let next = self.next_seq.load(Ordering::Relaxed);
        let oldest = ring.front().map_or(next, |m| m.seq);
        // Older than the ring, or newer than anything published (a cursor of a server that has
        // since restarted): the client must reload.
        if cursor + 1 < oldest || cursor >= next {
            return None;
        }
        Some(ring.iter().filter(|m| m.seq > cursor).cloned().collect())
    }
}

/// What one client wants.
struct Subscription {
    feed: Feed,
    channels: Vec<&'static str>,
    run: Option<String>,
    symbol: Option<String>,
    cursor: Option<u64>,
}

impl Subscription {
    fn wants(&self, m: &Published) -> bool {
        m.feed == self.feed
            && self.channels.iter().any(|c| *c == m.channel)
            && self.run.as_ref().is_none_or(|r| m.run_id.as_ref() == Some(r))
            && self.symbol.as_ref().is_none_or(|s| m.symbol.as_ref() == Some(s))
    }

    fn parse(feed: Feed, mut params: Params) -> Result<Self, ApiError> {
        let all = match feed {
            Feed::Live => LIVE_CHANNELS,
            Feed::Market => MARKET_CHANNELS,
        };
        let listed = params.text("channels", 256);
        let run = params.text("run", 256);
        let symbol = params.text("symbol", 32);
        let cursor = params.time("cursor").map(|c| c.max(0) as u64);
        params.finish()?;
        let channels = match listed {
            None => all.to_vec(),
            Some(list) => {
                let mut chosen = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match all.iter().find(|c| **c == name) {
                        Some(c) => chosen.push(*c),
                        None => {
                            return Err(ApiError::invalid_field(
                                "channels",
                                format!("unknown channel {name:?}; this feed has {}", all.join(", ")),
                            ));
                        }
                    }
                }
                chosen
            }
        };
        Ok(Self { feed, channels, run, symbol, cursor })
    }
}

/// `GET /ws/live`
pub async fn live(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    connect(state, headers, Subscription::parse(Feed::Live, params)?, upgrade)
}

/// `GET /ws/market`
pub async fn market(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    connect(state, headers, Subscription::parse(Feed::Market, params)?, upgrade)
}

/// `GET /api/v1/ws/stats`
pub async fn stats(State(state): State<Arc<AppState>>, params: Params) -> Result<Json<Stats>, ApiError> {
    params.finish()?;
    Ok(Json(state.hub.stats()))
}

fn connect(
    state: Arc<AppState>,
    headers: HeaderMap,
    subscription: Subscription,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // A header, when there is one, is checked before the upgrade: a plain 401/403.
    let header_role = match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) => Some(state.tokens.role_of(Some(value))?),
        None => None,
    };
    if let Some(role) = header_role
        && role < Role::Viewer
    {
        return Err(ApiError::forbidden("the live feeds need the viewer role"));
    }
    // Clients send little (an auth message, pongs): a small read buffer, which the library
    // zeroes on every read, keeps a thousand sockets cheap.
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve_client(state, socket, subscription, header_role)))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Waits for `{"type": "auth", "token": "..."}`; the role, or the close message to send.
async fn authenticate(state: &AppState, socket: &mut WebSocket) -> Result<Role, Message> {
    let first = timeout(AUTH_TIMEOUT, socket.recv()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        return Err(close(CLOSE_UNAUTHORIZED, "send {\"type\":\"auth\",\"token\":\"...\"} first"));
    };
    let token = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .filter(|v| v["type"] == "auth")
        .and_then(|v| v["token"].as_str().map(str::to_owned));
    let Some(token) = token else {
        return Err(close(CLOSE_UNAUTHORIZED, "send {\"type\":\"auth\",\"token\":\"...\"} first"));
    };
    match state.tokens.role_of(Some(&format!("Bearer {token}"))) {
        Ok(role) if role >= Role::Viewer => Ok(role),
        Ok(_) => Err(close(CLOSE_FORBIDDEN, "the live feeds need the viewer role")),
        Err(_) => Err(close(CLOSE_UNAUTHORIZED, "unknown token")),
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())))
}

/// Sends `messages` with one flush, within [`SEND_TIMEOUT`].
async fn send_all(socket: &mut WebSocket, messages: Vec<Message>) -> bool {
    let write = async {
        for m in messages {
            socket.feed(m).await?;
        }
        socket.flush().await
    };
    matches!(timeout(SEND_TIMEOUT, write).await, Ok(Ok(())))
}

async fn serve_client(
    state: Arc<AppState>,
    mut socket: WebSocket,
    sub: Subscription,
    header_role: Option<Role>,
) {
    if header_role.is_none()
        && let Err(refusal) = authenticate(&state, &mut socket).await
    {
        let _ = send(&mut socket, refusal).await;
        return;
    }
    let hub = &state.hub;
    let gauge = match sub.feed {
        Feed::Live => &hub.live,
        Feed::Market => &hub.market,
    };
    gauge.fetch_add(1, Ordering::Relaxed);
    state.metrics.websockets.inc();
    run_client(&state, &mut socket, &sub).await;
    gauge.fetch_sub(1, Ordering::Relaxed);
    state.metrics.websockets.dec();
}

async fn run_client(state: &AppState, socket: &mut WebSocket, sub: &Subscription) {
    let hub = &state.hub;
    // Subscribe first, then read the ring: nothing published in between is missed, and what
    // is in both is sent once.
    let mut receiver = hub.sender.subscribe();
    let mut last_sent = 0;
    if let Some(cursor) = sub.cursor {
        match hub.since(cursor) {
            Some(backlog) => {
                for m in backlog.iter().filter(|m| sub.wants(m)) {
                    if !send(socket, Message::Text(m.text.clone())).await {
                        return;
                    }
                    hub.sent.fetch_add(1, Ordering::Relaxed);
                }
                last_sent = backlog.last().map_or(cursor, |m| m.seq);
            }
            None => {
                let reset = r#"{"type":"reset","message":"the cursor is older than what the server keeps; reload over REST"}"#;
                if !send(socket, Message::Text(reset.into())).await {
                    return;
                }
            }
        }
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = Instant::now();
    let mut last_flush = Instant::now() - FLUSH_EVERY;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pongs, pings (answered by the library) and anything else: the client is alive.
                Some(Ok(_)) => heard = Instant::now(),
            },
            published = receiver.recv() => {
                // A client is written at most every FLUSH_EVERY: what arrives meanwhile goes out
                // in the same write. A quiet feed adds no delay (the last write is long past); a
                // busy one costs each client a bounded number of writes a second, whatever the
                // event rate — the fan-out's cost is writes, not messages.
                let since_flush = last_flush.elapsed();
                if since_flush < FLUSH_EVERY {
                    tokio::time::sleep(FLUSH_EVERY - since_flush).await;
                }
                let mut batch = Vec::new();
                let mut next = published;
                loop {
                    match next {
                        Ok(m) => {
                            if m.seq > last_sent && sub.wants(&m) {
                                last_sent = m.seq;
                                batch.push(Message::Text(m.text.clone()));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            hub.dropped_slow.fetch_add(1, Ordering::Relaxed);
                            let _ = send(socket, close(CLOSE_TOO_SLOW, "too slow: reconnect with ?cursor=")).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                    next = match receiver.try_recv() {
                        Ok(m) => Ok(m),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                        Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
                        Err(broadcast::error::TryRecvError::Empty) => break,
                    };
                }
                if batch.is_empty() {
                    continue;
                }
                let count = batch.len() as u64;
                last_flush = Instant::now();
                if !send_all(socket, batch).await {
                    hub.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                hub.sent.fetch_add(count, Ordering::Relaxed);
            },
            _ = ping.tick() => {
                if heard.elapsed() > PING_EVERY * 3 {
                    let _ = send(socket, close(1001, "no answer to pings")).await;
                    return;
                }
                if !send(socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
}

/// Pushes what agents write to the live feeds, as PostgreSQL announces it (`LISTEN kuant_live`,
/// see migrations/postgres/0005 and 0006), until the task is stopped. Returns at once on SQLite.
pub async fn bridge(state: Arc<AppState>) {
    let mut listener = match state.store.listen_live().await {
        Ok(Some(listener)) => listener,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen to the store: the live feeds get only what this process publishes");
            return;
        }
    };
    loop {
        match listener.next().await {
            Ok(row) => publish_row(&state.hub, &row),
            Err(e) => {
                tracing::warn!(error = %e, "lost the store's announcements; listening again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Publishes one announced row on its feed and channel.
pub fn publish_row(hub: &Hub, row: &kuant_store::LiveRow) {
    let (feed, channel) = match row.table.as_str() {
        "fills" => (Feed::Live, "fills"),
        "orders" => (Feed::Live, "orders"),
        "positions" => (Feed::Live, "positions"),
        "block_events" => (Feed::Live, "blocks"),
        "risk_allocations" => (Feed::Live, "risk"),
        "candles" => (Feed::Market, "candles"),
        "ticks" => (Feed::Market, "ticks"),
        _ => return,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    hub.publish(feed, channel, row.row["run_id"].as_str(), row.row["symbol"].as_str(), now_ms, &row.row);
}
