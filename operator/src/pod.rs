//! What every agent pod shares, whatever it runs: a locked-down pod and container.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext, PodSpec,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::backtest::job::{AgentSettings, ENV_DATABASE_SECRET};

/// Where an agent may write (its root filesystem is read-only).
pub const SCRATCH: &str = "/tmp";

/// The scratch volume of `size` (e.g. `1Gi`) and its mount at [`SCRATCH`].
pub fn scratch(size: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "scratch".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount =
        VolumeMount { name: "scratch".to_owned(), mount_path: SCRATCH.to_owned(), ..Default::default() };
    (volume, mount)
}

/// The store's URL for the agent, when the operator names a database Secret: read from the
/// Secret by the kubelet (the pod spec only names it; optional, so a namespace without it still
/// runs), and the Secret's name, so the agent can say which one is missing.
pub fn store_env(agent: &AgentSettings) -> Vec<EnvVar> {
    let Some(secret) = &agent.database_secret else { return Vec::new() };
    vec![
        EnvVar {
            name: "KUANT_DATABASE_URL".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: agent.database_secret_key.clone(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar {
            name: ENV_DATABASE_SECRET.to_owned(),
            value: Some(format!("{secret}/{}", agent.database_secret_key)),
            ..Default::default()
        },
    ]
}

/// User and group of the agent process (the image's distroless `nonroot` user).
pub const AGENT_UID: i64 = 65532;

/// The agent container's security context: no privilege escalation, a read-only root
/// filesystem, not root, no capabilities.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Default::default() }),
        ..Default::default()
    }
}

/// The agent pod's security context: the image's user (its group may read mounted volumes) and
/// the runtime's default seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(AGENT_UID),
        run_as_group: Some(AGENT_UID),
        fs_group: Some(AGENT_UID),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..Default::default() }),
        ..Default::default()
    }
}

/// An agent's pod: `container` with `volumes`, as `agent`'s ServiceAccount (its token mounted:
/// the agent writes its status), locked down ([`pod_security`]).
pub fn agent_pod(agent: &AgentSettings, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        service_account_name: Some(agent.service_account.clone()),
        automount_service_account_token: Some(true),
        security_context: Some(pod_security()),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    }
}
