//! The children of a TradingSession, built by pure functions from the session and the
//! operator's settings: a StatefulSet of one replica running `kuant agent session`, and the
//! headless Service it names.
//!
//! - **What the pod reads** is the session handed over in `KUANT_SESSION`: its name, namespace,
//!   uid and spec, *without* `spec.suspend` and without the generation. The kill switch does not
//!   roll the pod (the agent watches its TradingSession and acts on `suspend` within 2 s); a change
//!   of strategies, symbols, budget, risk or exchange does, through the hash of what the pod reads
//!   in the pod template's annotation [`ANNOTATION_SPEC_HASH`].
//! - **Credentials** reach the agent as the files `apiKey` and `apiSecret` of a Secret volume
//!   (mode 0400, read-only) at [`CREDENTIALS_DIR`]: never in the environment, a ConfigMap, the
//!   status or an Event.
//! - **The image** is the session's `runner.image`, else the one its StatefulSet already runs,
//!   else the operator's default ([`agent_image`]): upgrading the operator does not restart
//!   running traders.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kuant_crds::TradingSession;
use kube::Resource;

use crate::backtest::job::AgentSettings;
use crate::names;

/// Environment variable carrying the session into the pod (what `kuant agent session` reads).
pub const ENV_SESSION: &str = "KUANT_SESSION";
/// Environment variable naming the directory of the credentials files.
pub const ENV_CREDENTIALS_DIR: &str = "KUANT_CREDENTIALS_DIR";
/// Environment variable with the pod's own name (the holder identity of its trading Lease).
pub const ENV_POD_NAME: &str = "KUANT_POD_NAME";
/// The file of [`CREDENTIALS_DIR`] holding the API key.
pub const API_KEY_FILE: &str = "apiKey";
/// The file of [`CREDENTIALS_DIR`] holding the API secret.
pub const API_SECRET_FILE: &str = "apiSecret";
/// Where the credentials Secret is mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/kuant/credentials";
/// Name of the agent container.
pub const CONTAINER: &str = "agent";
/// Label naming the TradingSession a StatefulSet or pod belongs to.
pub const LABEL_SESSION: &str = "kuant.dev/session";
/// Label selector of every session agent pod the operator made.
pub const POD_SELECTOR: &str =
    "app.kubernetes.io/component=session,app.kubernetes.io/managed-by=kuant-operator";
/// Annotation of a pod with the full name of its TradingSession.
pub const ANNOTATION_SESSION: &str = "kuant.dev/session-name";
/// Pod template annotation: the hash of what the pod reads (a change rolls the pod).
pub const ANNOTATION_SPEC_HASH: &str = "kuant.dev/spec-hash";
/// The agent's metrics port.
pub const METRICS_PORT: i32 = 9090;
/// Seconds a stopping pod has to leave (the agent cancels its open orders on SIGTERM).
pub const GRACE_SECONDS: i64 = 30;

/// Why no children can be built for a TradingSession.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The session lacks what the API server always sets.
    #[error("the TradingSession has no {0}; was it read from the API server?")]
    MissingMetadata(&'static str),
    /// The spec could not be written as JSON.
    #[error("cannot encode the spec for the agent: {0}")]
    Encode(String),
}

/// What the agent pod reads: the session's identity and its spec without `suspend`, as JSON.
pub fn handed_over(session: &TradingSession) -> Result<String, BuildError> {
    let name = session.metadata.name.as_deref().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = session.metadata.namespace.as_deref().ok_or(BuildError::MissingMetadata("namespace"))?;
    let uid = session.metadata.uid.as_deref().ok_or(BuildError::MissingMetadata("uid"))?;
    let mut spec = serde_json::to_value(&session.spec).map_err(|e| BuildError::Encode(e.to_string()))?;
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("suspend");
    }
    let text = serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "TradingSession",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": spec,
    });
    serde_json::to_string(&text).map_err(|e| BuildError::Encode(e.to_string()))
}

/// The image of the session's agent: `runner.image`, else the image `existing` (its StatefulSet
/// as found) runs, else `default` (the operator's).
pub fn agent_image(session: &TradingSession, existing: Option<&StatefulSet>, default: &str) -> String {
    if let Some(image) = session.spec.runner.as_ref().and_then(|r| r.image.clone()) {
        return image;
    }
    existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| default.to_owned())
}

/// A live session's key as the files `apiKey` and `apiSecret` of its Secret, read-only (0400) at
/// [`CREDENTIALS_DIR`]: the volume, its mount and the variable naming the directory. Paper
/// trading reads market data only: its pods get no key, even when the spec names one.
pub fn credentials(session: &TradingSession) -> Option<(Volume, VolumeMount, EnvVar)> {
    let live = session.spec.mode == kuant_crds::session::TradingMode::Live;
    let credentials = session.spec.exchange.credentials_secret_ref.as_ref().filter(|_| live)?;
    let volume = Volume {
        name: "credentials".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(credentials.name.clone()),
            items: Some(vec![
                KeyToPath { key: credentials.api_key_key.clone(), path: API_KEY_FILE.to_owned(), mode: None },
                KeyToPath {
                    key: credentials.api_secret_key.clone(),
                    path: API_SECRET_FILE.to_owned(),
                    mode: None,
                },
            ]),
            default_mode: Some(0o400),
            // A missing Secret keeps the pod from starting.
            optional: Some(false),
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "credentials".to_owned(),
        mount_path: CREDENTIALS_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    let dir = EnvVar {
        name: ENV_CREDENTIALS_DIR.to_owned(),
        value: Some(CREDENTIALS_DIR.to_owned()),
        ..Default::default()
    };
    Some((volume, mount, dir))
}

/// The session's StatefulSet and headless Service, running `image` (see [`agent_image`]) under
/// `agent`'s ServiceAccount.
pub fn build(
    session: &TradingSession,
    agent: &AgentSettings,
    image: &str,
) -> Result<(StatefulSet, Service), BuildError> {
    let name = session.metadata.name.as_deref().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = session.metadata.namespace.as_deref().ok_or(BuildError::MissingMetadata("namespace"))?;
    let uid = session.metadata.uid.as_deref().ok_or(BuildError::MissingMetadata("uid"))?;
    let mut owner = session.controller_owner_ref(&()).ok_or(BuildError::MissingMetadata("uid"))?;
    owner.block_owner_deletion = Some(true);
    let child = names::session_agent(name, uid);
    let selector = BTreeMap::from([
        ("app.kubernetes.io/component".to_owned(), "session".to_owned()),
        (LABEL_SESSION.to_owned(), names::label_value(name)),
    ]);
    let mut labels = selector.clone();
    labels.insert("app.kubernetes.io/name".to_owned(), "kuant".to_owned());
    labels.insert("app.kubernetes.io/managed-by".to_owned(), crate::FIELD_MANAGER.to_owned());
    let meta = ObjectMeta {
        name: Some(child.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };

    let session_json = handed_over(session)?;
    let hash = format!("{:08x}", names::fnv1a(session_json.as_bytes()));
    let env = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    };
    let mut envs = vec![
        env(ENV_SESSION, session_json),
        env("RUST_LOG", agent.log_level.clone()),
        EnvVar {
            name: ENV_POD_NAME.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    envs.extend(crate::pod::store_env(agent));
    let (scratch, scratch_mount) = crate::pod::scratch("256Mi");
    let (mut volumes, mut mounts) = (vec![scratch], vec![scratch_mount]);
    if let Some((volume, mount, dir)) = credentials(session) {
        volumes.push(volume);
        mounts.push(mount);
        envs.push(dir);
    }
    let runner = session.spec.runner.clone().unwrap_or_default();
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec!["agent".to_owned(), "session".to_owned()]),
        env: Some(envs),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        resources: runner.resources,
        // A failed start (bad keys, a store with a newer schema) shows in the Ready condition
        // through the end of the agent's log.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        security_context: Some(crate::pod::container_security()),
        ..Default::default()
    };
    let stateful_set = StatefulSet {
        metadata: meta.clone(),
        spec: Some(StatefulSetSpec {
            // One trader: the StatefulSet never runs a second pod of the same ordinal, even
            // while the first is terminating.
            replicas: Some(1),
            service_name: Some(child.clone()),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            pod_management_policy: Some("OrderedReady".to_owned()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([
                        (ANNOTATION_SESSION.to_owned(), name.to_owned()),
                        (ANNOTATION_SPEC_HASH.to_owned(), hash),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(GRACE_SECONDS),
                    ..crate::pod::agent_pod(agent, container, volumes)
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("metrics".to_owned()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".to_owned())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Ok((stateful_set, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "9a0c6a55-0f4e-4b8e-9a52-6f1f2b7a9c02";

    fn session(file: &str) -> TradingSession {
        let path = format!("{}/../examples/sessions/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut s: TradingSession =
            kuant_crds::manifest::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        s.metadata.namespace = Some("trading".to_owned());
        s.metadata.uid = Some(UID.to_owned());
        s.metadata.generation = Some(3);
        s
    }

    fn settings() -> AgentSettings {
        AgentSettings {
            image: "ghcr.io/kuant-dev/kuant:2.0.0".into(),
            service_account: "kuant-session-agent".into(),
            log_level: "info".into(),
            cluster_role: "kuant-session-agent".into(),
            database_secret: Some("kuant-database".into()),
            database_secret_key: "url".into(),
        }
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
    }

    fn template_annotations(set: &StatefulSet) -> BTreeMap<String, String> {
        set.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    }

    #[test]
    fn one_replica_owned_by_the_session_named_after_it_with_its_headless_service() {
        let s = session("paper-btc.yaml");
        let (set, service) = build(&s, &settings(), "img:1").expect("built");
        let name = names::session_agent(s.metadata.name.as_deref().expect("name"), UID);
        assert_eq!(set.metadata.name.as_deref(), Some(name.as_str()));
        let spec = set.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some(name.as_str()));
        assert_eq!(service.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("None"));
        let owner = &set.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("TradingSession", UID, Some(true))
        );
        // The selector picks the template's pods, and the Service's selector is the same.
        let selector = spec.selector.match_labels.clone().expect("selector");
        let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("labels");
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(service.spec.as_ref().and_then(|s| s.selector.clone()), Some(selector));
        let p = pod(&set);
        assert_eq!(p.containers[0].args.as_deref(), Some(&["agent".to_owned(), "session".to_owned()][..]));
        assert_eq!(p.containers[0].image.as_deref(), Some("img:1"));
        assert_eq!(p.service_account_name.as_deref(), Some("kuant-session-agent"));
        assert_eq!(p.termination_grace_period_seconds, Some(GRACE_SECONDS));
        assert_eq!(p.security_context, Some(crate::pod::pod_security()));
    }

    #[test]
    fn the_kill_switch_does_not_roll_the_pod_and_a_spec_change_does() {
        let s = session("paper-btc.yaml");
        let (before, _) = build(&s, &settings(), "img").expect("built");
        let mut suspended = s.clone();
        suspended.spec.suspend = true;
        suspended.metadata.generation = Some(4);
        let (after, _) = build(&suspended, &settings(), "img").expect("built");
        assert_eq!(before.spec, after.spec, "suspend (and the generation it bumps) leave the pod alone");
        let text = handed_over(&suspended).expect("handed over");
        assert!(!text.contains("suspend") && !text.contains("generation"), "{text}");
        let mut riskier = s.clone();
        riskier.spec.risk.max_position_pct = 42.0;
        let (rolled, _) = build(&riskier, &settings(), "img").expect("built");
        assert_ne!(
            template_annotations(&before).get(ANNOTATION_SPEC_HASH),
            template_annotations(&rolled).get(ANNOTATION_SPEC_HASH),
            "a risk change rolls the pod"
        );
        // What the pod reads back is the session.
        let back: TradingSession =
            kuant_crds::manifest::parse(&handed_over(&s).expect("text"), "env").expect("a TradingSession");
        assert_eq!(back.spec, s.spec);
    }

    #[test]
    fn credentials_are_files_of_a_secret_volume_never_environment_variables() {
        let s = session("live-btc.yaml");
        let secret = s.spec.exchange.credentials_secret_ref.clone().expect("the live example names a Secret");
        let (set, _) = build(&s, &settings(), "img").expect("built");
        let p = pod(&set);
        let volume =
            p.volumes.iter().flatten().find(|v| v.name == "credentials").expect("a credentials volume");
        let source = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(source.secret_name.as_deref(), Some(secret.name.as_str()));
        assert_eq!(source.default_mode, Some(0o400));
        let items: Vec<(&str, &str)> =
            source.items.iter().flatten().map(|i| (i.key.as_str(), i.path.as_str())).collect();
        assert_eq!(
            items,
            vec![(secret.api_key_key.as_str(), "apiKey"), (secret.api_secret_key.as_str(), "apiSecret")]
        );
        let c = &p.containers[0];
        let mount = c.volume_mounts.iter().flatten().find(|m| m.name == "credentials").expect("mounted");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (CREDENTIALS_DIR, Some(true)));
        let env = c.env.clone().unwrap_or_default();
        assert!(
            env.iter().all(|e| e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_none_or(|r| r.name != secret.name)),
            "no environment variable reads the credentials Secret"
        );
        assert_eq!(
            env.iter().find(|e| e.name == ENV_CREDENTIALS_DIR).and_then(|e| e.value.as_deref()),
            Some(CREDENTIALS_DIR)
        );
        // A paper session mounts no credentials.
        let (paper, _) = build(&session("paper-btc.yaml"), &settings(), "img").expect("built");
        assert!(pod(&paper).volumes.iter().flatten().all(|v| v.name != "credentials"));
    }

    #[test]
    fn the_image_is_pinned_so_an_operator_upgrade_does_not_restart_traders() {
        let s = session("paper-btc.yaml");
        assert_eq!(agent_image(&s, None, "kuant:2"), "kuant:2", "a new session: the operator's image");
        let (running, _) = build(&s, &settings(), "kuant:1").expect("built");
        assert_eq!(
            agent_image(&s, Some(&running), "kuant:2"),
            "kuant:1",
            "a running session keeps its image"
        );
        let mut pinned = s.clone();
        pinned.spec.runner =
            Some(kuant_crds::common::Runner { image: Some("kuant:3".into()), resources: None });
        assert_eq!(agent_image(&pinned, Some(&running), "kuant:2"), "kuant:3", "runner.image wins");
    }

    #[test]
    fn a_session_without_a_uid_is_refused() {
        let mut s = session("paper-btc.yaml");
        s.metadata.uid = None;
        assert_eq!(build(&s, &settings(), "img").expect_err("no uid"), BuildError::MissingMetadata("uid"));
    }
}
