//! `kuant ops-api`: serves the ops API over the store.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C), 2 bad flags or token file, 1 when
//! the store cannot be opened, the address cannot be bound or (with `--cluster`) no Kubernetes
//! configuration is found.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use kuant_ops_api::AppState;
use kuant_ops_api::auth::Tokens;

use super::{EXIT_BAD_INPUT, EXIT_INTERNAL};

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run(
    listen: SocketAddr,
    store: Option<&str>,
    tokens: Option<&Path>,
    cluster: bool,
    cors_origins: &[String],
    data_dir: Option<&Path>,
) -> ExitCode {
    let data_dir = match data_dir.map(std::fs::canonicalize).transpose() {
        Ok(dir) => dir,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("--data-dir: {e}")),
    };
    let tokens = match tokens {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match Tokens::parse(&text) {
                Ok(t) => t,
                Err(e) => return fail(EXIT_BAD_INPUT, format!("token file {}: {e}", path.display())),
            },
            Err(e) => {
                return fail(EXIT_BAD_INPUT, format!("cannot read the token file {}: {e}", path.display()));
            }
        },
        None if listen.ip().is_loopback() => Tokens::Open,
        None => {
            return fail(
                EXIT_BAD_INPUT,
                format!(
                    "refusing to serve {listen} without --tokens: anyone who reaches it would act as admin; \
                     pass --tokens FILE, or listen on 127.0.0.1"
                ),
            );
        }
    };
    let url = match super::store::location(store) {
        Ok(url) => url,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(EXIT_INTERNAL, format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(async move {
        let store = match kuant_store::Store::open(&url).await {
            Ok(s) => s,
            Err(e) => return fail(EXIT_INTERNAL, e),
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => return fail(EXIT_INTERNAL, format!("cannot listen on {listen}: {e}")),
        };
        let open = matches!(tokens, Tokens::Open);
        let bound = listener.local_addr().map_or_else(|_| listen.to_string(), |a| a.to_string());
        tracing::info!(
            address = %bound,
            store = %kuant_store::redact(&url),
            auth = if open { "none (loopback only; every request acts as admin)" } else { "bearer tokens" },
            "ops API listening"
        );
        let mut state = match AppState::new(store, tokens).with_cors(cors_origins) {
            Ok(state) => state,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        };
        if let Some(dir) = data_dir {
            state = state.with_data_dir(dir);
        }
        if cluster {
            // In a pod: its service account; elsewhere: KUBECONFIG or ~/.kube/config.
            match kube::Client::try_default().await {
                Ok(client) => {
                    tracing::info!(
                        default_namespace = client.default_namespace(),
                        "creating backtests and reading resources through the Kubernetes API server"
                    );
                    state = state.with_cluster(client);
                }
                Err(e) => {
                    return fail(
                        EXIT_INTERNAL,
                        format!(
                            "--cluster: cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {e}"
                        ),
                    );
                }
            }
        }
        let state = Arc::new(state);
        let served = kuant_ops_api::serve(listener, state.clone(), shutdown_signal()).await;
        kuant_ops_api::launch::interrupt(&state).await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_INTERNAL, format!("the server stopped: {e}")),
        }
    });
    // A backtest thread still simulating is not waited for: its run is marked interrupted.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
