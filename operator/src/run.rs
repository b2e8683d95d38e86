//! `kuant operator`: the process. It serves `/healthz`, `/readyz` and `/metrics`, takes the
//! leader-election Lease when asked to, and runs the controllers while it leads. Losing the
//! Lease ends the process (the Deployment restarts it, and it waits for the Lease again): a
//! former leader never keeps writing next to a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::LeaseManagerBuilder;

use crate::backtest::controller::{self, Context};
use crate::backtest::job::AgentSettings;
use crate::metrics::Metrics;

/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "kuant-operator";

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What Backtest agent pods get.
    pub agent: AgentSettings,
    /// What TradingSession agent pods get.
    pub session_agent: AgentSettings,
    /// Backtests reconciled at once, at most.
    pub concurrency: u16,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_addr: SocketAddr,
    /// Take the Lease in this namespace, as this identity, before reconciling.
    pub leader_election: Option<Lease>,
}

/// Leader-election settings.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This process's name in the Lease (the pod name).
    pub identity: String,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    /// The health and metrics address cannot be bound.
    #[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another operator holds the Lease now.
    #[error("lost the leader-election Lease to another operator; exiting so that only one reconciles")]
    LostLease,
}

/// Runs the operator until SIGTERM/Ctrl-C (then `Ok`) or a fatal error.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Listen { addr: settings.metrics_addr, source })?;
    tokio::spawn(serve_http(listener, metrics.clone(), ready.clone()));
    tracing::info!(addr = %settings.metrics_addr, "serving /healthz, /readyz and /metrics");

    let reporter = Reporter {
        controller: crate::FIELD_MANAGER.to_owned(),
        instance: settings.leader_election.as_ref().map(|l| l.identity.clone()),
    };
    let ctx = Arc::new(
        Context::new(client.clone(), settings.agent.clone(), Recorder::new(client.clone(), reporter))
            .with_session_agent(settings.session_agent.clone())
            .with_metrics(metrics),
    );
    let shutdown = futures::FutureExt::shared(shutdown_signal());
    let controllers = async {
        futures::join!(
            controller::run(ctx.clone(), settings.concurrency, shutdown.clone()),
            crate::session::controller::run(ctx, settings.concurrency, shutdown),
        );
    };

    let Some(lease) = settings.leader_election else {
        ready.store(true, Ordering::Relaxed);
        tracing::info!(concurrency = settings.concurrency, "reconciling (no leader election)");
        controllers.await;
        return Ok(());
    };
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        // One field manager per candidate: the library tells a loser by the conflict between
        // two managers' applies; with a shared name, two could both win a race for the Lease.
        .with_field_manager(format!("{}-lease-{}", crate::FIELD_MANAGER, lease.identity))
        .build()
        .await?;
    let (leading, lease_task) = manager.watch().await;
    // Ready means able to take over: a standby is ready too.
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = LEASE_NAME, namespace = %lease.namespace, identity = %lease.identity, "waiting for the Lease");
    let outcome = lead(leading, controllers, settings.concurrency).await;
    // `lead` dropped its receiver: the lease task releases the Lease, so that the next operator
    // (a rolling update) need not wait for it to expire.
    if tokio::time::timeout(std::time::Duration::from_secs(5), lease_task).await.is_err() {
        tracing::warn!("the Lease was not released in time; the next leader waits for it to expire");
    }
    outcome
}

/// Waits until `leading` says this process holds the Lease, then runs `controllers` (not
/// polled before: nothing is reconciled by a process that does not lead) until they end, or until
/// the Lease is lost, which is an error: the process must exit.
async fn lead(
    mut leading: tokio::sync::watch::Receiver<bool>,
    controllers: impl std::future::Future<Output = ()>,
    concurrency: u16,
) -> Result<(), RunError> {
    while !*leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            return Err(RunError::LostLease);
        }
    }
    tracing::info!(concurrency, "leading: reconciling");
    tokio::select! {
        () = controllers => Ok(()),
        () = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow_and_update() {
                    break;
                }
            }
        } => Err(RunError::LostLease),
    }
}

async fn serve_http(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the health and metrics server stopped");
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .expect("request");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("response");
            response
        })
        .await
        .expect("client thread")
    }

    /// Controllers that record that they started and then run until stopped.
    async fn controllers(started: Arc<AtomicBool>) {
        started.store(true, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }

    #[tokio::test]
    async fn only_the_leader_reconciles_and_losing_the_lease_ends_the_run() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let started = Arc::new(AtomicBool::new(false));
        let run = tokio::spawn(lead(rx, controllers(started.clone()), 4));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!started.load(Ordering::Relaxed), "a standby does not reconcile");
        tx.send_replace(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(started.load(Ordering::Relaxed), "the leader reconciles");
        assert!(!run.is_finished());
        tx.send_replace(false);
        let ended = tokio::time::timeout(Duration::from_secs(5), run).await.expect("ends").expect("task");
        assert!(matches!(ended, Err(RunError::LostLease)), "{ended:?}");
    }

    #[tokio::test]
    async fn a_lease_manager_that_stops_is_a_lost_lease() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        drop(tx);
        let started = Arc::new(AtomicBool::new(false));
        assert!(matches!(lead(rx, controllers(started.clone()), 4).await, Err(RunError::LostLease)));
        assert!(!started.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_are_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let metrics = Arc::new(Metrics::default());
        metrics.observe("Backtest", Duration::from_millis(2), false);
        let ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(serve_http(listener, metrics, ready.clone()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(addr, "/readyz").await.starts_with("HTTP/1.1 503"),
            "not ready before the controllers run"
        );
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("kuant_operator_reconciles_total{kind=\"Backtest\"} 1"), "{metrics}");
    }
}
