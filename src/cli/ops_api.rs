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

use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

/// Where the ops API's tokens come from.
#[derive(Debug, Clone, Copy)]
pub enum TokenSource<'a> {
    /// No tokens: every request acts as admin, so only a loopback address is served.
    Open,
    /// A token file.
    File(&'a Path),
    /// A Secret in the ops API's namespace, made at first start when it does not exist.
    Secret(&'a str),
}

impl<'a> TokenSource<'a> {
    /// The source the flags name (clap keeps them exclusive).
    pub fn of(file: Option<&'a Path>, secret: Option<&'a str>) -> Self {
        match (file, secret) {
            (Some(path), _) => Self::File(path),
            (None, Some(name)) => Self::Secret(name),
            (None, None) => Self::Open,
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run(
    listen: SocketAddr,
    store: Option<&str>,
    tokens: TokenSource<'_>,
    cluster: bool,
    cors_origins: &[String],
    data_dir: Option<&Path>,
) -> ExitCode {
    let data_dir = match data_dir.map(std::fs::canonicalize).transpose() {
        Ok(dir) => dir,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("--data-dir: {e}")),
    };
    // The token file's tokens; those of a Secret are read once the API server is at hand.
    let file_tokens = match tokens {
        TokenSource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => match Tokens::parse(&text) {
                Ok(t) => Some(t),
                Err(e) => return fail(EXIT_BAD_INPUT, format!("token file {}: {e}", path.display())),
            },
            Err(e) => {
                return fail(EXIT_BAD_INPUT, format!("cannot read the token file {}: {e}", path.display()));
            }
        },
        TokenSource::Secret(_) => None,
        TokenSource::Open if listen.ip().is_loopback() => Some(Tokens::Open),
        TokenSource::Open => {
            return fail(
                EXIT_BAD_INPUT,
                format!(
                    "refusing to serve {listen} without --tokens: anyone who reaches it would act as admin; \
                     pass --tokens FILE (or --tokens-secret NAME with --cluster), or listen on 127.0.0.1"
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
        // In a pod: its service account; elsewhere: KUBECONFIG or ~/.kube/config.
        let client = if cluster {
            match kube::Client::try_default().await {
                Ok(client) => Some(client),
                Err(e) => {
                    return fail(
                        EXIT_INTERNAL,
                        format!(
                            "--cluster: cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {e}"
                        ),
                    );
                }
            }
        } else {
            None
        };
        let tokens = match (file_tokens, tokens, &client) {
            (Some(tokens), _, _) => tokens,
            (None, TokenSource::Secret(name), Some(client)) => {
                match kuant_ops_api::cluster::token_file_secret(client, name).await {
                    Ok(text) => match Tokens::parse(&text) {
                        Ok(t) => t,
                        Err(e) => {
                            return fail(EXIT_BAD_INPUT, format!("the token file in Secret {name}: {e}"));
                        }
                    },
                    Err(e) => return fail(EXIT_INTERNAL, e),
                }
            }
            (None, _, _) => return fail(EXIT_BAD_INPUT, "--tokens-secret needs --cluster"),
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
        if let Some(client) = client {
            tracing::info!(
                default_namespace = client.default_namespace(),
                "creating backtests and reading resources through the Kubernetes API server"
            );
            state = state.with_cluster(client);
        }
        let state = Arc::new(state);
        let served = kuant_ops_api::serve(listener, state.clone(), super::shutdown_signal()).await;
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
