//! What the end-to-end suite and the cluster benchmark share: the CRDs and the agent's
//! ClusterRole applied, a namespace per test, the example Backtest, waiting for a condition.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kuant_crds::Backtest;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

/// The field manager of what the suite applies.
pub const FIELD_MANAGER: &str = "kuant-e2e";
/// The agent's ClusterRole, as the chart names it for a release called `kuant`.
pub const AGENT_ROLE: &str = "kuant-agent";
/// The session agent's ClusterRole (the operator's default name).
pub const SESSION_AGENT_ROLE: &str = "kuant-session-agent";

/// Polls `check` every half second until it gives `Some`, or fails after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub struct TestNamespace {
    api: Api<Namespace>,
    /// The namespace's name.
    pub name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (api, name) = (self.api.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(api.delete(&name, &DeleteParams::background()));
            }
        })
        .join();
    }
}

pub fn condition(bt: &Backtest, type_: &str) -> Option<(String, String)> {
    let c = bt.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

pub async fn apply_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kuant_crds::crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .expect("CRD applied");
        eventually(&format!("CRD {name} established"), Duration::from_secs(60), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                let established =
                    crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
}

/// The agent's ClusterRole as the chart defines it (the operator binds it per namespace).
pub async fn apply_agent_role(client: &Client) {
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": AGENT_ROLE },
        "rules": [
            { "apiGroups": ["kuant.dev"], "resources": ["backtests/status"], "verbs": ["patch"] },
        ],
    }))
    .expect("ClusterRole");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles
        .patch(AGENT_ROLE, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&role))
        .await
        .expect("ClusterRole applied");
    // The session agent's, as rbac-session-agent.yaml defines it.
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": SESSION_AGENT_ROLE },
        "rules": [
            { "apiGroups": ["kuant.dev"], "resources": ["tradingsessions"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["kuant.dev"], "resources": ["tradingsessions/status"], "verbs": ["patch"] },
            { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"] },
        ],
    }))
    .expect("ClusterRole");
    roles
        .patch(SESSION_AGENT_ROLE, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&role))
        .await
        .expect("ClusterRole applied");
}

pub fn example_backtest(namespace: &str) -> Backtest {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/backtests/btc-sma-crossover.yaml"
    ))
    .expect("example");
    let mut bt: Backtest = kuant_crds::manifest::parse(&text, "example").expect("valid example");
    bt.metadata.namespace = Some(namespace.to_owned());
    if let Some(synthetic) = bt.spec.data.synthetic.as_mut() {
        synthetic.bars = 2000;
    }
    bt
}

/// A namespace `kuant-e2e-{tag}-{pid}` for one test, deleted at its end.
pub async fn test_namespace(client: &Client, tag: &str) -> TestNamespace {
    let name = format!("kuant-e2e-{tag}{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace created");
    TestNamespace { api: namespaces, name }
}
