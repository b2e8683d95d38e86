//! kuant's ops API: how people and the dashboard see and steer kuant. JSON over REST under
//! `/api/v1`, reading the store; `/healthz`, `/readyz` and `/metrics` beside it.
//!
//! Every error has one shape ([`error::ApiError`]); every list takes `limit` and `cursor` and
//! returns `{"items": [...], "next_cursor": ...}`; unknown query parameters are refused.
//! Requests need a bearer token ([`auth`]) unless the server runs open on a loopback address.

pub mod auth;
pub mod backtests;
pub mod cache;
pub mod cluster;
pub mod error;
pub mod events;
pub mod launch;
pub mod live;
pub mod market;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod sessions;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use kuant_store::Store;

use auth::{Needs, Tokens};
use error::ApiError;
use metrics::Metrics;
use routes::Access;

/// What the handlers share.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Who may call.
    pub tokens: Arc<Tokens>,
    /// Request and connection metrics.
    pub metrics: Arc<Metrics>,
    /// Encoded responses about finished runs, for a moment.
    pub cache: cache::ResponseCache,
    /// The live feeds' fan-out.
    pub hub: live::Hub,
    /// Origins a browser may call this API from (CORS); none: no cross-origin calls.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// The API server, with `--cluster`: backtests are created there, resources read from it.
    pub cluster: Option<cluster::Cluster>,
    /// Backtests this process runs (without a cluster).
    pub local_runs: launch::LocalRuns,
    /// Where backtests run here may read CSV files (see [`launch`]).
    pub data_dir: Option<std::path::PathBuf>,
}

impl AppState {
    /// State over `store` with `tokens`.
    pub fn new(store: Store, tokens: Tokens) -> Self {
        Self {
            store,
            tokens: Arc::new(tokens),
            metrics: Arc::new(Metrics::default()),
            cache: cache::ResponseCache::default(),
            hub: live::Hub::default(),
            cors_origins: Vec::new(),
            cluster: None,
            local_runs: launch::LocalRuns::default(),
            data_dir: None,
        }
    }

    /// Lets backtests run here read CSV files under `dir` (absolute, as given).
    pub fn with_data_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Creates backtests through the API server and reads resources from it.
    pub fn with_cluster(mut self, client: kube::Client) -> Self {
        self.cluster = Some(cluster::Cluster::new(client));
        self
    }

    /// Allows browsers on these origins (`https://dash.example.com`) to call the API.
    pub fn with_cors(mut self, origins: &[String]) -> Result<Self, String> {
        for origin in origins {
            let ok =
                (origin.starts_with("http://") || origin.starts_with("https://")) && !origin.ends_with('/');
            let value = axum::http::HeaderValue::from_str(origin).ok().filter(|_| ok);
            self.cors_origins.push(value.ok_or_else(|| {
                format!("CORS origin {origin:?} must be scheme://host[:port], like https://dash.example.com")
            })?);
        }
        Ok(self)
    }
}

/// The whole API: every endpoint of [`routes::endpoints`], each behind the role it needs.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for endpoint in routes::endpoints() {
        let handler = match endpoint.access {
            Access::Token(role) => endpoint
                .handler
                .route_layer(from_fn_with_state(Needs { tokens: state.tokens.clone(), role }, auth::require)),
            // The sockets authenticate themselves (a header, or a first message).
            Access::Socket(_) | Access::Public => endpoint.handler,
        };
        router = router.route(endpoint.path, handler);
    }
    let cors = (!state.cors_origins.is_empty()).then(|| {
        use axum::http::{Method, header};
        tower_http::cors::CorsLayer::new()
            .allow_origin(state.cors_origins.clone())
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600))
    });
    let router = router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state.metrics.clone(), metrics::track))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Ready when the store answers and its schema is the one this build knows.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    match state.store.ready().await {
        Ok(version) => (StatusCode::OK, format!("ready: store at migration {version}")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

pub(crate) async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small responses and live messages go out at once, not after the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // What agents write reaches the live feeds (PostgreSQL announces it; nothing on SQLite).
    let bridge = tokio::spawn(live::bridge(state.clone()));
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await;
    bridge.abort();
    served
}
