//! `kuant agent session`: a TradingSession's agent, in the pod the operator runs for it.
//!
//! - **The spec** arrives in `KUANT_SESSION` (the TradingSession as JSON, with its metadata).
//! - **Live credentials** as the files `apiKey` and `apiSecret` of the directory
//!   `KUANT_CREDENTIALS_DIR` (the Secret the spec names, mounted as a volume by the operator;
//!   never in the environment, the spec, the status or the log).
//! - **The store**: `KUANT_DATABASE_URL` when set; the session continues from it after a restart
//!   (recovery first, see `kuant_runtime::recovery`).
//! - **The kill switch**: the agent reads its TradingSession before it trades (the operator hands
//!   the spec over without `suspend`, so the switch never rolls the pod; unreadable, the switch
//!   stays on) and then watches it; `spec.suspend: true` cancels every open order and places no
//!   new one until it is false again. The generation its conditions observe comes from there too.
//! - **Status**: the agent applies its part of the status (`lastHeartbeat`, `portfolio`,
//!   `counters`, the conditions `MarketDataHealthy`, `Trading`, `Halted`, `Degraded`; see
//!   `kuant_runtime::status` for who owns which field) by server-side apply as `kuant-agent`,
//!   every 5 s and at once when a condition changes.
//! - **Metrics** at `/metrics` on `KUANT_METRICS_ADDR` (default `0.0.0.0:9090`; see
//!   [`super::metrics`]).
//! - **Events** go to stdout, one JSON object per line (the pod's log), as `kuant session -o json`.
//! - **Resume**: a later time in the annotation `kuant.dev/resume-at` lifts the traders' halts
//!   (a risk limit's, a recovery mismatch's) that began at or before it; the operator clears the
//!   holds placed before it.
//! - **Holds and deletion**: `status.holds` (requests from outside to stop trading, written by
//!   the operator) and the deletion timestamp work as the kill switch does, within 2 s of the
//!   change; holds show in `Halted` (reason `Held`), deletion in `Trading` (reason `Deleting`),
//!   and `openOrders` is reported at once when it changes, so the operator's finalizer can let
//!   the session go once it is 0.
//! - SIGTERM (the pod deleted, rolled or evicted) turns the kill switch on, so the open orders
//!   are cancelled within the pod's grace period, then stops; the next pod recovers the
//!   positions.
//!
//! Exit codes as `kuant session`: 0 stopped, 2 bad input, 1 an internal error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kuant_crds::TradingSession;
use kuant_exchanges::binance::Credentials;
use kuant_runtime::status::{View, agent_status, conditions_changed};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::cli::session::{Hooks, SessionArgs, SessionOutput, run_session};
use crate::cli::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

// What the operator hands over is read under the names it writes (its pod's environment, the
// files of the credentials volume).
use kuant_operator::AGENT_FIELD_MANAGER as FIELD_MANAGER;
pub use kuant_operator::session::children::{
    API_KEY_FILE, API_SECRET_FILE, ENV_CREDENTIALS_DIR, ENV_POD_NAME, ENV_SESSION, METRICS_PORT,
};
/// Environment variable: where `/metrics` is served (default `0.0.0.0:`[`METRICS_PORT`], the
/// port the operator's headless Service names).
pub const ENV_METRICS_ADDR: &str = "KUANT_METRICS_ADDR";
/// The heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs the TradingSession handed over in the environment; see the module docs.
pub fn run() -> ExitCode {
    let Ok(text) = std::env::var(ENV_SESSION) else {
        return fail(
            EXIT_BAD_INPUT,
            format!("{ENV_SESSION} is not set: this command runs in a pod made by `kuant operator`"),
        );
    };
    let manifest = match kuant_crds::manifest::parse::<TradingSession>(&text, ENV_SESSION) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let credentials = match std::env::var_os(ENV_CREDENTIALS_DIR) {
        Some(dir) if !dir.is_empty() => match read_credentials(std::path::Path::new(&dir)) {
            Ok(c) => Some(c),
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        },
        _ => None,
    };
    let store = std::env::var("KUANT_DATABASE_URL").ok().filter(|u| !u.is_empty());
    let args = SessionArgs {
        file: PathBuf::from(ENV_SESSION),
        output: SessionOutput::Json,
        data: Vec::new(),
        speed: kuant_exchanges::sim::Speed::Times(1.0),
        duration: None,
        credentials: None,
        seed: 42,
        no_store: store.is_none(),
        store,
        resume: false,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(EXIT_INTERNAL, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let (view_tx, view_rx) = watch::channel(View::default());
        let mut gate = None;
        let mut followed = None;
        let mut resume = None;
        // When the status was last written (the heartbeat), for /metrics.
        let beat = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let switch_rx = match (
            Client::try_default().await,
            manifest.metadata.name.clone(),
            manifest.metadata.namespace.clone(),
        ) {
            (Ok(client), Some(name), Some(namespace)) => {
                let api: Api<TradingSession> = Api::namespaced(client.clone(), &namespace);
                // The operator hands the spec over without `suspend` (the kill switch must not
                // roll the pod): the switch, the holds and the generation come from the object.
                let control = match api.get_opt(&name).await {
                    Ok(Some(now)) => Control::of(&now),
                    Ok(None) => {
                        return fail(EXIT_INTERNAL, format!("TradingSession {namespace}/{name} does not exist"));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the TradingSession could not be read: the kill switch stays on until it can");
                        Control { suspend: true, generation: manifest.metadata.generation, ..Control::default() }
                    }
                };
                gate = Some(trading_lease(client.clone(), &namespace, &name).await);
                let (switch_tx, switch_rx) = watch::channel(control.stops());
                // A resume annotated before this start was for an earlier life: only a later
                // one counts.
                let (resume_tx, resume_rx) = watch::channel(control.resume_at_ms.unwrap_or(0));
                resume = Some(resume_rx);
                let (control_tx, control_rx) = watch::channel(control);
                followed = Some(control_rx.clone());
                tokio::spawn(follow_session(api.clone(), name.clone(), control_tx, switch_tx, resume_tx));
                // SIGTERM: the status says the agent is stopping (not suspended) while it
                // cancels its orders.
                let (stopping_tx, stopping_rx) = watch::channel(false);
                tokio::spawn(async move {
                    crate::cli::shutdown_signal().await;
                    stopping_tx.send_replace(true);
                    std::future::pending::<()>().await;
                });
                let writer = StatusWriter { control: control_rx, stopping: stopping_rx, beat: beat.clone() };
                tokio::spawn(write_status(api, name, writer, view_rx.clone(), HEARTBEAT));
                switch_rx
            }
            (client, _, _) => {
                match client {
                    Err(e) => tracing::warn!(error = %e, "no API access: no status, and spec.suspend is read only at start"),
                    Ok(_) => tracing::warn!("the TradingSession has no name or namespace: no status"),
                }
                // Its sender gone, the switch stays where the manifest put it.
                watch::channel(manifest.spec.suspend).1
            }
        };
        let session = format!(
            "{}/{}",
            manifest.metadata.namespace.as_deref().unwrap_or("local"),
            manifest.metadata.name.as_deref().unwrap_or("session")
        );
        serve_metrics(&session, view_rx, followed, gate.clone(), manifest.spec.suspend, beat).await;
        let hooks = Hooks {
            credentials,
            suspend: Some(switch_rx),
            status: Some(view_tx),
            gate,
            resume,
            // SIGTERM (the pod deleted, rolled or evicted) cancels the open orders within the
            // grace period; the next pod recovers the positions from the store and the exchange.
            stop_keeps_orders: false,
        };
        run_session(&args, manifest, hooks).await
    })
}

/// Serves `/metrics` on `KUANT_METRICS_ADDR` (default port [`METRICS_PORT`]); an address that cannot
/// be bound is logged, and the session trades all the same.
async fn serve_metrics(
    session: &str,
    views: watch::Receiver<View>,
    control: Option<watch::Receiver<Control>>,
    gate: Option<watch::Receiver<bool>>,
    suspend: bool,
    beat: std::sync::Arc<std::sync::atomic::AtomicI64>,
) {
    let addr = std::env::var(ENV_METRICS_ADDR)
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| format!("0.0.0.0:{METRICS_PORT}"));
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve /metrics; trading without them");
            return;
        }
    };
    tracing::info!(addr = %listener.local_addr().map_or(addr, |a| a.to_string()), "serving /metrics");
    let switches = move || {
        let now = control.as_ref().map(|c| c.borrow().clone());
        super::metrics::Switches {
            suspended: now.as_ref().map_or(suspend, |c| c.suspend || c.deleting),
            holds: now.as_ref().map_or(0, |c| c.holds.len()),
            leased: gate.as_ref().is_none_or(|g| *g.borrow()),
            heartbeat_ms: Some(beat.load(std::sync::atomic::Ordering::Relaxed)).filter(|ms| *ms > 0),
        }
    };
    let metrics = std::sync::Arc::new(super::metrics::SessionMetrics::new(session));
    tokio::spawn(super::metrics::serve(listener, metrics, views, switches));
}

/// What the agent follows of its TradingSession, besides the spec it was handed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Control {
    /// `spec.suspend`.
    suspend: bool,
    /// `status.holds`, each as `source: reason: message`.
    holds: Vec<String>,
    /// `metadata.deletionTimestamp` is set: cancel everything and report it.
    deleting: bool,
    /// `metadata.generation`.
    generation: Option<i64>,
    /// The annotation `kuant.dev/resume-at`, as wall ms (a human's resume).
    resume_at_ms: Option<i64>,
}

impl Control {
    fn of(session: &TradingSession) -> Self {
        let holds = session.status.as_ref().map(|s| s.holds.as_slice()).unwrap_or_default();
        Self {
            suspend: session.spec.suspend,
            holds: holds.iter().map(|h| format!("{}: {}: {}", h.source, h.reason, h.message)).collect(),
            deleting: session.metadata.deletion_timestamp.is_some(),
            generation: session.metadata.generation,
            resume_at_ms: session.resume_at().and_then(Result::ok).map(|t| t.as_millisecond()),
        }
    }

    /// Whether the traders' kill switch is on: suspended, held or being deleted (open orders
    /// cancelled, none placed).
    fn stops(&self) -> bool {
        self.suspend || self.deleting || !self.holds.is_empty()
    }
}

/// Takes and keeps the session's trading Lease `<name>-trader` (see [`super::lease`]): the
/// receiver says whether this agent holds it now. Orders leave only while it says true, so two
/// pods of one session (a partitioned node's and its replacement) never trade at once.
async fn trading_lease(client: Client, namespace: &str, name: &str) -> watch::Receiver<bool> {
    let identity = std::env::var(ENV_POD_NAME)
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{name}-agent-{}", std::process::id()));
    let lease = format!("{name}-trader");
    tracing::info!(%lease, %identity, "trading once the Lease is held");
    let (holding_tx, holding) = watch::channel(false);
    let api = Api::namespaced(client, namespace);
    tokio::spawn(super::lease::hold(api, lease, identity, holding_tx, super::lease::RENEW_EVERY));
    holding
}

/// The credentials in `dir` (files [`API_KEY_FILE`] and [`API_SECRET_FILE`], surrounding
/// whitespace ignored); the error names the file, never its content.
pub(crate) fn read_credentials(dir: &std::path::Path) -> Result<Credentials, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Ok(_) => Err(format!("{ENV_CREDENTIALS_DIR}: {} is empty", path.display())),
            Err(e) => Err(format!("{ENV_CREDENTIALS_DIR}: cannot read {}: {e}", path.display())),
        }
    };
    let key = read(API_KEY_FILE)?;
    let secret = read(API_SECRET_FILE)?;
    Ok(Credentials::hmac(key, &secret))
}

/// Follows the TradingSession (a watch of the one object, reconnected by the watcher's own
/// backoff): what it says in `control`, and whether the traders' kill switch is on in `switch`.
async fn follow_session(
    api: Api<TradingSession>,
    name: String,
    control: watch::Sender<Control>,
    switch: watch::Sender<bool>,
    resume: watch::Sender<i64>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                let now = Control::of(&s);
                if let Some(at) = now.resume_at_ms {
                    resume.send_if_modified(|last| {
                        let later = at > *last;
                        *last = (*last).max(at);
                        later
                    });
                }
                switch.send_if_modified(|on| {
                    let changed = *on != now.stops();
                    *on = now.stops();
                    changed
                });
                control.send_if_modified(|c| {
                    let changed = *c != now;
                    *c = now;
                    changed
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the TradingSession"),
        }
    }
}

/// What the status writer follows besides the session's view.
struct StatusWriter {
    /// The TradingSession's switches, holds and generation.
    control: watch::Receiver<Control>,
    /// The agent is stopping (SIGTERM).
    stopping: watch::Receiver<bool>,
    /// Where the time of the last successful write goes (for `/metrics`).
    beat: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Applies the agent's status fields every `heartbeat`, and at once when a condition or the
/// number of open orders changes.
async fn write_status(
    api: Api<TradingSession>,
    name: String,
    writer: StatusWriter,
    mut views: watch::Receiver<View>,
    heartbeat: Duration,
) {
    let StatusWriter { mut control, mut stopping, beat } = writer;
    let mut previous: Vec<Condition> = Vec::new();
    let mut previous_open: Option<u32> = None;
    let mut every = tokio::time::interval(heartbeat);
    loop {
        let changed = tokio::select! {
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            Ok(()) = control.changed() => true,
            Ok(()) = stopping.changed() => true,
            _ = every.tick() => false,
        };
        let mut view = views.borrow_and_update().clone();
        if view.snapshots.is_empty() {
            continue;
        }
        let now = control.borrow_and_update().clone();
        view.holds = now.holds;
        view.deleting = now.deleting;
        view.stopping = *stopping.borrow_and_update();
        let status = agent_status(&view, now.generation, &previous, Time(jiff::Timestamp::now()));
        if changed
            && !conditions_changed(&previous, &status.conditions)
            && status.open_orders == previous_open
        {
            // Nothing a user needs now: the heartbeat carries it.
            continue;
        }
        let patch = kuant_operator::session::controller::status_patch(&status);
        match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
        {
            Ok(_) => {
                previous = status.conditions;
                previous_open = status.open_orders;
                beat.store(jiff::Timestamp::now().as_millisecond(), std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the session's status could not be written; the next heartbeat tries again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_deletion_work_the_kill_switch_as_suspend_does() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sessions/paper-btc.yaml"))
                .expect("the example");
        let mut s: TradingSession = kuant_crds::manifest::parse(&text, "example").expect("a session");
        assert!(!Control::of(&s).stops());
        s.spec.suspend = true;
        assert!(Control::of(&s).stops());
        s.spec.suspend = false;
        s.status = Some(kuant_crds::session::TradingSessionStatus {
            holds: vec![kuant_crds::session::Hold {
                source: "reconciliation/main".into(),
                reason: "BalanceDrift".into(),
                message: "BTC off by 0.1".into(),
                since: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        let held = Control::of(&s);
        assert!(held.stops());
        assert_eq!(held.holds, ["reconciliation/main: BalanceDrift: BTC off by 0.1"]);
        s.status = None;
        s.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(Control::of(&s).stops() && Control::of(&s).deleting);
    }

    #[test]
    fn credentials_are_read_from_the_mounted_files_and_errors_never_show_them() {
        let dir = std::env::temp_dir().join(format!("kuant-agent-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(API_KEY_FILE), "the-key\n").expect("key");
        let missing = read_credentials(&dir).expect_err("no secret file");
        assert!(missing.contains("apiSecret") && !missing.contains("the-key"), "{missing}");
        std::fs::write(dir.join(API_SECRET_FILE), "  \n").expect("secret");
        let empty = read_credentials(&dir).expect_err("an empty secret");
        assert!(empty.contains("is empty"), "{empty}");
        std::fs::write(dir.join(API_SECRET_FILE), "the-secret\n").expect("secret");
        assert!(read_credentials(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
    use http::{Request, Response};
    use kuant_runtime::session::Snapshot;
    use kube::client::Body;

    #[tokio::test(start_paused = true)]
    async fn the_status_is_applied_as_the_agent_at_each_heartbeat_and_at_once_on_a_change() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<TradingSession> = Api::namespaced(Client::new(service, "default"), "desk");
        let healthy =
            Snapshot { healthy: true, equity: 1000.into(), cash: 1000.into(), ..Snapshot::default() };
        let view = |healthy_now: bool| View {
            symbols: vec!["BTCUSDT".into()],
            snapshots: vec![Snapshot { healthy: healthy_now, ..healthy.clone() }],
            ..View::default()
        };
        let (tx, rx) = watch::channel(View::default());
        let writer = tokio::spawn(write_status(
            api,
            "btc".into(),
            StatusWriter {
                control: watch::channel(Control { generation: Some(3), ..Control::default() }).1,
                stopping: watch::channel(false).1,
                beat: std::sync::Arc::default(),
            },
            rx,
            Duration::from_secs(5),
        ));
        tx.send_replace(view(true));
        let mut seen = Vec::new();
        for expected_trading in ["True", "True", "False"] {
            if seen.len() == 2 {
                // The data goes stale: applied at once, not at the next heartbeat.
                tx.send_replace(view(false));
            }
            let (request, respond) = handle.next_request().await.expect("a status write");
            assert_eq!(request.method(), "PATCH");
            let uri = request.uri().to_string();
            assert!(uri.contains("/namespaces/desk/tradingsessions/btc/status"), "{uri}");
            assert!(uri.contains("fieldManager=kuant-agent") && uri.contains("force=true"), "{uri}");
            let body = request.into_body().collect_bytes().await.expect("body");
            let patch: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let status = &patch["status"];
            assert!(status.get("phase").is_none(), "the operator's fields are not claimed: {status}");
            assert!(status["lastHeartbeat"].is_string());
            let trading = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Trading"))
                .expect("a Trading condition");
            assert_eq!(trading["status"], expected_trading, "{status}");
            assert_eq!(trading["observedGeneration"], 3);
            respond.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&patch).expect("json")))
                    .expect("response"),
            );
            seen.push(status.clone());
        }
        writer.abort();
    }
}
