//! The Kubernetes API server, when the ops API runs with `--cluster`: it creates Backtests,
//! reads the status of kuant resources (phase, conditions, progress) and flips a
//! TradingSession's kill switch (`spec.suspend`).
//!
//! Every write names the field manager [`FIELD_MANAGER`], so `kubectl get -o yaml
//! --show-managed-fields` tells what the ops API set. The API server's own refusals come back
//! as the API's errors: 409 when the resource exists, 422 with its message when it is invalid,
//! 502 when the ops API may not act (its RBAC) or cannot reach the API server.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kuant_crds::{Backtest, TradingSession};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::backtests::ResourceView;
use crate::error::{ApiError, FieldError};

/// The field manager of the ops API's writes.
pub const FIELD_MANAGER: &str = "kuant-ops-api";

/// A client of the API server.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("default_namespace", &self.client.default_namespace()).finish()
    }
}

impl Cluster {
    /// Talks to the API server through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The namespace of resources created without one (the service account's).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Creates `backtest` (its namespace set). The operator takes it from there.
    pub async fn create_backtest(&self, backtest: &Backtest) -> Result<Backtest, ApiError> {
        let namespace = backtest.namespace().unwrap_or_else(|| self.default_namespace().to_owned());
        let what = format!("backtest {namespace}/{}", backtest.name_any());
        let api = Api::<Backtest>::namespaced(self.client.clone(), &namespace);
        let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.to_owned()) };
        api.create(&params, backtest).await.map_err(|e| refused(e, &what))
    }

    /// Backtest `namespace/name`, if there is one.
    pub async fn backtest(&self, namespace: &str, name: &str) -> Result<Option<Backtest>, ApiError> {
        self.get(namespace, name, "backtest").await
    }

    /// Every Backtest in the cluster.
    pub async fn backtests(&self) -> Result<Vec<Backtest>, ApiError> {
        let api = Api::<Backtest>::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await.map_err(|e| refused(e, "backtests"))?.items)
    }

    /// Every TradingSession in the cluster.
    pub async fn sessions(&self) -> Result<Vec<TradingSession>, ApiError> {
        let api = Api::<TradingSession>::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await.map_err(|e| refused(e, "trading sessions"))?.items)
    }

    /// The current phase of every resource of `kind` that has one, by `namespace/name`.
    pub async fn phases(
        &self,
        kind: kuant_store::RunKind,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        let views: Vec<ResourceView> = match kind {
            kuant_store::RunKind::Backtest => {
                self.backtests().await?.iter().map(ResourceView::from).collect()
            }
            kuant_store::RunKind::Session => self.sessions().await?.iter().map(ResourceView::from).collect(),
            _ => Vec::new(),
        };
        Ok(views
            .into_iter()
            .filter_map(|v| Some((format!("{}/{}", v.namespace, v.name), v.phase?)))
            .collect())
    }

    /// TradingSession `namespace/name`, if there is one.
    pub async fn session(&self, namespace: &str, name: &str) -> Result<Option<TradingSession>, ApiError> {
        self.get(namespace, name, "trading session").await
    }

    /// Sets `spec.suspend` of TradingSession `namespace/name` by server-side apply: true stops
    /// its trading (open orders cancelled, no new ones), false lets it trade again.
    pub async fn suspend_session(
        &self,
        namespace: &str,
        name: &str,
        suspend: bool,
    ) -> Result<TradingSession, ApiError> {
        let body = serde_json::json!({
            "apiVersion": TradingSession::api_version(&()),
            "kind": TradingSession::kind(&()),
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"suspend": suspend},
        });
        // The switch must win over whoever set it last (a GitOps tool included).
        self.apply_to_session(namespace, name, &body).await
    }

    /// Applies `body` to the existing TradingSession `namespace/name`, forced, as the ops API.
    async fn apply_to_session(
        &self,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<TradingSession, ApiError> {
        let what = format!("trading session {namespace}/{name}");
        let api = Api::<TradingSession>::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // Applying to a missing object would create it; these act only on a session.
        if api.get_opt(name).await.map_err(|e| refused(e, &what))?.is_none() {
            return Err(ApiError::not_found(format!("no {what}")));
        }
        api.patch(name, &params, &Patch::Apply(body)).await.map_err(|e| refused(e, &what))
    }

    /// Sets the annotation `kuant.dev/resume-at` of TradingSession `namespace/name` to `at` by
    /// server-side apply: the operator clears the holds placed at or before it, and the agent
    /// lifts the halts that began at or before it. The user's spec is never touched.
    pub async fn resume_session(
        &self,
        namespace: &str,
        name: &str,
        at: &str,
    ) -> Result<TradingSession, ApiError> {
        let body = serde_json::json!({
            "apiVersion": TradingSession::api_version(&()),
            "kind": TradingSession::kind(&()),
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": { kuant_crds::session::ANNOTATION_RESUME_AT: at },
            },
        });
        self.apply_to_session(namespace, name, &body).await
    }

    async fn get<K>(&self, namespace: &str, name: &str, kind: &str) -> Result<Option<K>, ApiError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(|e| refused(e, &format!("{kind} {namespace}/{name}")))
    }
}

/// The API's error for a failed request about `what`.
fn refused(error: kube::Error, what: &str) -> ApiError {
    match error {
        kube::Error::Api(status) if status.is_already_exists() || status.is_conflict() => {
            ApiError::conflict(format!("{what} already exists; pick another name"))
        }
        kube::Error::Api(status) if status.is_not_found() => ApiError::not_found(format!("no {what}")),
        kube::Error::Api(status) if status.is_invalid() || status.code == 422 => {
            // The API server names the fields in its message (`spec.x: Invalid value: …`).
            ApiError::invalid_body(vec![FieldError { field: String::new(), message: status.message.clone() }])
        }
        kube::Error::Api(status) if status.is_forbidden() => ApiError::cluster(
            format!(
                "the API server does not let the ops API act on {what}: check the RBAC of its service account \
                 (the Helm chart grants it)"
            ),
            &status.message,
        ),
        other => ApiError::cluster("the Kubernetes API server cannot be reached now; try again", &other),
    }
}

fn ms(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    time.map(|t| t.0.as_millisecond())
}

fn view(
    meta: &kube::core::ObjectMeta,
    spec: serde_json::Value,
    status: Option<serde_json::Value>,
    finished: Option<i64>,
) -> ResourceView {
    let text = |pointer: &str| spec.pointer(pointer).and_then(serde_json::Value::as_str).map(str::to_owned);
    let strategy = text("/strategy/name").or_else(|| text("/strategies/0/name"));
    let symbols = spec
        .pointer("/market/symbols")
        .or_else(|| spec.pointer("/symbols"))
        .and_then(serde_json::Value::as_array)
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ResourceView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        phase: status.as_ref().and_then(|s| s.get("phase")).and_then(|p| p.as_str()).map(str::to_owned),
        strategy,
        symbols,
        spec,
        status,
        created_at_ms: ms(meta.creation_timestamp.as_ref()).unwrap_or(0),
        finished_at_ms: finished,
    }
}

impl From<&Backtest> for ResourceView {
    fn from(b: &Backtest) -> Self {
        let spec = serde_json::to_value(&b.spec).unwrap_or_default();
        let status = b.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let finished = ms(b.status.as_ref().and_then(|s| s.completion_time.as_ref()));
        view(&b.metadata, spec, status, finished)
    }
}

impl From<&TradingSession> for ResourceView {
    fn from(s: &TradingSession) -> Self {
        let spec = serde_json::to_value(&s.spec).unwrap_or_default();
        let status = s.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        view(&s.metadata, spec, status, None)
    }
}

/// The key of the token file in the tokens Secret.
pub const TOKENS_KEY: &str = "tokens";
/// The key of the admin token the ops API made, for a person to read.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";

/// The token file held by the Secret `name` in the client's namespace (the ops API's own). When
/// the Secret does not exist it is made, with one fresh admin token: so a default install gives
/// a secure ops API with nothing to configure, and the token stays the same across restarts and
/// GitOps syncs (the chart renders no Secret that a sync would change). The token never reaches
/// a log.
pub async fn token_file_secret(client: &Client, name: &str) -> Result<String, String> {
    let namespace = client.default_namespace().to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let read = |secret: Secret| -> Result<String, String> {
        let data = secret.data.unwrap_or_default();
        let ByteString(bytes) = data.get(TOKENS_KEY).ok_or_else(|| {
            format!("Secret {namespace}/{name} has no key {TOKENS_KEY:?} (one `TOKEN ROLE` per line)")
        })?;
        String::from_utf8(bytes.clone())
            .map_err(|_| format!("Secret {namespace}/{name}: {TOKENS_KEY:?} is not text"))
    };
    let refused =
        |e: kube::Error| format!("reading the tokens Secret {namespace}/{name} (the ops API's RBAC?): {e}");
    if let Some(secret) = secrets.get_opt(name).await.map_err(refused)? {
        return read(secret);
    }
    let token = crate::auth::fresh_token().map_err(|e| format!("no random token: {e}"))?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "kuant", "app.kubernetes.io/component": "ops-api"},
            "annotations": {"kuant.dev/made-by": "the ops API at first start: the admin token is under admin-token"},
        },
        "type": "Opaque",
        "stringData": {
            ADMIN_TOKEN_KEY: token,
            TOKENS_KEY: format!("{}\n", crate::auth::hashed_line(&token, crate::auth::Role::Admin)),
        },
    }))
    .map_err(|e| format!("building the tokens Secret: {e}"))?;
    match secrets
        .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() }, &secret)
        .await
    {
        Ok(created) => {
            tracing::warn!(
                secret = %format!("{namespace}/{name}"),
                "made an admin token for the ops API; read it with: kubectl -n {namespace} get secret {name} -o jsonpath='{{.data.{ADMIN_TOKEN_KEY}}}' | base64 -d"
            );
            read(created)
        }
        // Another replica made it first: use that one.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            secrets.get(name).await.map_err(refused).and_then(read)
        }
        Err(e) => Err(format!("making the tokens Secret {namespace}/{name} (the ops API's RBAC?): {e}")),
    }
}
