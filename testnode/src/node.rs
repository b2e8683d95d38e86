//! The Node object: registered at start with its capacity and a `Ready` condition, and kept
//! alive by renewing its Lease in `kube-node-lease`, as a kubelet does, so that the node
//! lifecycle controller never marks it unreachable.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::Error;

/// The field manager of everything the node writes.
pub const FIELD_MANAGER: &str = "kuant-test-node";
/// How often the Lease is renewed (a kubelet's default).
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// What the node advertises.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// Pods that may run at once.
    pub pods: u32,
    /// CPUs (the scheduler's arithmetic only: pods are not limited).
    pub cpu: u32,
    /// Memory in GiB (likewise).
    pub memory_gib: u32,
}

fn node_object(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": go_arch(), "kuant.dev/test-node": "true",
        }},
    })
}

/// This machine's architecture as Kubernetes names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn node_status(name: &str, capacity: &Capacity, now: &str) -> serde_json::Value {
    let resources = json!({
        "pods": capacity.pods.to_string(), "cpu": capacity.cpu.to_string(),
        "memory": format!("{}Gi", capacity.memory_gib), "ephemeral-storage": "100Gi",
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "kuant-test-node runs pods as local processes"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "enough"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "enough"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "enough"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "kuant-test-node", "systemUUID": "kuant-test-node", "bootID": "kuant-test-node",
            "kernelVersion": "local", "osImage": "local processes", "containerRuntimeVersion": "kuant-test-node://0",
            "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": go_arch(),
        },
    }})
}

/// Registers the node (or takes over one of the same name) and reports it Ready.
pub async fn register(client: &Client, name: &str, capacity: &Capacity) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    nodes
        .patch(name, &apply, &Patch::Apply(node_object(name)))
        .await
        .map_err(Error::api("registering the Node"))?;
    let now = crate::now();
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(node_status(name, capacity, &now)))
        .await
        .map_err(Error::api("reporting the Node's status"))?;
    Ok(())
}

/// Renews the node's Lease every 10 s, and its Ready condition every minute, until the process ends.
pub async fn heartbeat(client: Client, name: String, capacity: Capacity) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut beats = 0u64;
    loop {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        if let Err(e) =
            leases.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(lease)).await
        {
            tracing::warn!(error = %e, "renewing the node Lease");
        }
        if beats.is_multiple_of(6)
            && let Err(e) = register(&client, &name, &capacity).await
        {
            tracing::warn!(error = %e, "reporting the Node's status");
        }
        beats += 1;
        tokio::time::sleep(RENEW_EVERY).await;
    }
}
