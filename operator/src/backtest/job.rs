//! The Job that runs a Backtest: built by a pure function from the Backtest and the operator's
//! settings, so every field of it is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kuant_crds::Backtest;
use kube::Resource;

use crate::names;

/// Environment variable that carries the Backtest (metadata and spec, as JSON) into the pod, so
/// the agent needs no API access to learn what to run.
pub const ENV_BACKTEST: &str = "KUANT_BACKTEST";
/// Name of the agent container.
pub const CONTAINER: &str = "agent";
/// Label naming the Backtest a Job or pod belongs to.
pub const LABEL_BACKTEST: &str = "kuant.dev/backtest";
/// Annotation of a pod with the full name of its Backtest.
pub const ANNOTATION_BACKTEST: &str = "kuant.dev/backtest-name";
/// Label selector of the pods of Backtest Jobs.
pub const POD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=kuant-operator,app.kubernetes.io/component=backtest";
use crate::pod::SCRATCH;
/// Exit codes of `kuant agent backtest` that retrying cannot fix: 2 bad input, 1 internal error.
const FATAL_EXIT_CODES: [i32; 2] = [1, 2];

/// What the operator decides for every agent pod, whatever the Backtest says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// Image when the Backtest's `runner.image` is absent (the operator's own image).
    pub image: String,
    /// ServiceAccount the pod runs as: it may only patch the progress of Backtests.
    pub service_account: String,
    /// `RUST_LOG` of the agent.
    pub log_level: String,
    /// ClusterRole holding the agent's rights, bound to its ServiceAccount in each namespace.
    pub cluster_role: String,
    /// Secret holding the store's URL, looked up in the Backtest's namespace. When set, the
    /// agent saves its run (results, events, curve, trades) there; when the namespace has no
    /// such Secret the agent runs all the same and reports that it saved nothing.
    pub database_secret: Option<String>,
    /// Key of that Secret holding the URL.
    pub database_secret_key: String,
}

/// Default key of the database Secret that holds the store's URL.
pub const DATABASE_SECRET_KEY: &str = "url";
/// Environment variable naming the database Secret (not its content) for the agent, so that it
/// can say which Secret is missing.
pub const ENV_DATABASE_SECRET: &str = "KUANT_DATABASE_SECRET";

/// The agent's identity in `namespace`: its ServiceAccount and the RoleBinding that gives it the
/// agent ClusterRole's rights there only. Shared by every Backtest of the namespace, so not
/// owned by any of them.
pub fn agent_identity(namespace: &str, agent: &AgentSettings) -> (ServiceAccount, RoleBinding) {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kuant".to_owned()),
            ("app.kubernetes.io/component".to_owned(), "agent".to_owned()),
            ("app.kubernetes.io/managed-by".to_owned(), crate::FIELD_MANAGER.to_owned()),
        ])),
        ..Default::default()
    };
    let account = ServiceAccount { metadata: meta(&agent.service_account), ..Default::default() };
    let binding = RoleBinding {
        metadata: meta(&agent.service_account),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: agent.cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: agent.service_account.clone(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    };
    (account, binding)
}

/// Why no Job can be built for a Backtest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The Backtest lacks what the API server always sets (a name, a namespace, a uid).
    #[error("the Backtest has no {0}; was it read from the API server?")]
    MissingMetadata(&'static str),
    /// The spec could not be written as JSON.
    #[error("cannot encode the spec for the agent: {0}")]
    Encode(String),
}

/// The Job for `backtest`: deterministic name, owned by the Backtest, running
/// `kuant agent backtest` on the spec it carries in [`ENV_BACKTEST`].
///
/// No `ttlSecondsAfterFinished` here: the operator adds it only once the results are in the
/// Backtest's status (see [`super::decide`]), so a Job never disappears with a result unread.
pub fn build(backtest: &Backtest, agent: &AgentSettings) -> Result<Job, BuildError> {
    let name = backtest.metadata.name.as_deref().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = backtest.metadata.namespace.as_deref().ok_or(BuildError::MissingMetadata("namespace"))?;
    let uid = backtest.metadata.uid.as_deref().ok_or(BuildError::MissingMetadata("uid"))?;
    let mut owner = backtest.controller_owner_ref(&()).ok_or(BuildError::MissingMetadata("uid"))?;
    // With foreground deletion the Backtest stays until its Job (and pod) are gone.
    owner.block_owner_deletion = Some(true);
    let runner = backtest.spec.runner.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "kuant".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "backtest".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), crate::FIELD_MANAGER.to_owned()),
        (LABEL_BACKTEST.to_owned(), names::label_value(name)),
    ]);

    let (scratch, scratch_mount) = crate::pod::scratch("1Gi");
    let (mut volumes, mut mounts) = (vec![scratch], vec![scratch_mount]);
    if let Some(data) = &backtest.spec.data.volume {
        volumes.push(Volume {
            name: "data".to_owned(),
            persistent_volume_claim: data.claim_name.as_ref().map(|claim| {
                PersistentVolumeClaimVolumeSource { claim_name: claim.clone(), read_only: Some(true) }
            }),
            config_map: data
                .config_map
                .as_ref()
                .map(|cm| ConfigMapVolumeSource { name: cm.clone(), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "data".to_owned(),
            mount_path: data.mount_path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let handed_over = serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "Backtest",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": backtest.metadata.generation,
        },
        "spec": backtest.spec,
    });
    let handed_over = serde_json::to_string(&handed_over).map_err(|e| BuildError::Encode(e.to_string()))?;
    let env = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    };

    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(runner.image.clone().unwrap_or_else(|| agent.image.clone())),
        args: Some(vec!["agent".to_owned(), "backtest".to_owned()]),
        env: Some(
            [
                env(ENV_BACKTEST, handed_over),
                env("RUST_LOG", agent.log_level.clone()),
                env("KUANT_CACHE_DIR", format!("{SCRATCH}/kuant-cache")),
            ]
            .into_iter()
            .chain(crate::pod::store_env(agent))
            .collect(),
        ),
        resources: runner.resources.clone(),
        // The agent writes its result (or its error) to the termination message; should it die
        // without writing one, the kubelet takes the end of its log instead.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        security_context: Some(crate::pod::container_security()),
        ..Default::default()
    };

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(names::backtest_job(name, uid)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A backtest is deterministic: a failure of the run itself would fail again. Only a
            // pod lost to the node (eviction, preemption) is retried, and it does not count.
            backoff_limit: Some(1),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".to_owned(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(CONTAINER.to_owned()),
                            operator: "In".to_owned(),
                            values: FATAL_EXIT_CODES.to_vec(),
                        }),
                        ..Default::default()
                    },
                    PodFailurePolicyRule {
                        action: "Ignore".to_owned(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".to_owned(),
                            status: "True".to_owned(),
                        }]),
                        ..Default::default()
                    },
                ],
            }),
            active_deadline_seconds: runner.active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    // The full name (a label value may be cut): watch events of a pod find
                    // their Backtest by it.
                    annotations: Some(BTreeMap::from([(ANNOTATION_BACKTEST.to_owned(), name.to_owned())])),
                    ..Default::default()
                }),
                // The image's user; its group may read a mounted data volume.
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    ..crate::pod::agent_pod(agent, container, volumes)
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The Backtest a pod handed over in [`ENV_BACKTEST`], as the agent reads it back.
pub fn handed_over(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == ENV_BACKTEST)?
        .value
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::fixtures;

    fn settings() -> AgentSettings {
        AgentSettings {
            image: "ghcr.io/kuant-dev/kuant:1.2.3".into(),
            service_account: "kuant-agent".into(),
            log_level: "info".into(),
            cluster_role: "kuant-agent".into(),
            database_secret: None,
            database_secret_key: DATABASE_SECRET_KEY.into(),
        }
    }

    #[test]
    fn the_agent_gets_its_rights_in_the_backtests_namespace_only() {
        let (account, binding) = agent_identity("research", &settings());
        assert_eq!(account.metadata.name.as_deref(), Some("kuant-agent"));
        assert_eq!(
            binding.metadata.namespace.as_deref(),
            Some("research"),
            "a RoleBinding, not cluster-wide"
        );
        assert_eq!(
            (binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()),
            ("ClusterRole", "kuant-agent")
        );
        let subject = &binding.subjects.as_ref().expect("subjects")[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), ("kuant-agent", Some("research")));
    }

    fn pod_spec(job: &Job) -> &PodSpec {
        job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
    }

    #[test]
    fn the_job_is_named_owned_and_runs_the_agent() {
        let bt = fixtures::backtest("btc-sma-crossover");
        let job = build(&bt, &settings()).expect("job");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(names::backtest_job("btc-sma-crossover", fixtures::UID).as_str())
        );
        assert_eq!(job.metadata.namespace.as_deref(), Some("research"));
        let owner = &job.metadata.owner_references.as_ref().expect("owners")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Backtest", "btc-sma-crossover", fixtures::UID)
        );
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        let pod = pod_spec(&job);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/kuant-dev/kuant:1.2.3"));
        assert_eq!(c.args.as_deref(), Some(&["agent".to_owned(), "backtest".to_owned()][..]));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("kuant-agent"));
        assert_eq!(c.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
    }

    #[test]
    fn the_spec_travels_in_the_environment_and_reads_back_as_the_same_backtest() {
        let bt = fixtures::backtest("btc-sma-crossover");
        let job = build(&bt, &settings()).expect("job");
        let text = handed_over(&job).expect("env var");
        let back: Backtest = serde_json::from_str(text).expect("a Backtest");
        assert_eq!(back.spec, bt.spec);
        assert_eq!(back.metadata.uid, bt.metadata.uid);
    }

    #[test]
    fn the_store_url_comes_from_the_named_secret_never_inline() {
        let bt = fixtures::backtest("btc-sma-crossover");
        let env_of = |job: &Job| {
            job.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| p.containers[0].env.clone().unwrap_or_default())
                .unwrap_or_default()
        };
        let without = build(&bt, &settings()).expect("job");
        assert!(env_of(&without).iter().all(|e| e.name != "KUANT_DATABASE_URL"), "no store unless asked");

        let with = AgentSettings { database_secret: Some("kuant-database".into()), ..settings() };
        let job = build(&bt, &with).expect("job");
        let env = env_of(&job);
        let url = env.iter().find(|e| e.name == "KUANT_DATABASE_URL").expect("the store's URL");
        assert_eq!(url.value, None, "never the URL itself in the Job");
        let selector = url.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("a secret ref");
        assert_eq!((selector.name.as_str(), selector.key.as_str()), ("kuant-database", DATABASE_SECRET_KEY));
        assert_eq!(selector.optional, Some(true), "a namespace without the Secret still runs its backtests");
        let named = env.iter().find(|e| e.name == ENV_DATABASE_SECRET).and_then(|e| e.value.as_deref());
        assert_eq!(named, Some("kuant-database/url"), "so the agent can say which Secret is missing");
    }

    #[test]
    fn runner_settings_reach_the_job_and_no_ttl_is_set_before_results_are_read() {
        let mut bt = fixtures::backtest("tuned");
        bt.spec.runner = Some(kuant_crds::common::JobRunner {
            image: Some("registry.local/kuant:dev".into()),
            resources: None,
            ttl_seconds_after_finished: Some(600),
            active_deadline_seconds: Some(3600),
        });
        let job = build(&bt, &settings()).expect("job");
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        assert_eq!(spec.ttl_seconds_after_finished, None, "added only once the results are in status");
        assert_eq!(spec.backoff_limit, Some(1));
        let rules = &spec.pod_failure_policy.as_ref().expect("policy").rules;
        assert_eq!(rules[0].action, "FailJob");
        assert_eq!(rules[1].action, "Ignore");
        assert_eq!(pod_spec(&job).containers[0].image.as_deref(), Some("registry.local/kuant:dev"));
    }

    #[test]
    fn the_data_volume_is_mounted_read_only() {
        let mut bt = fixtures::backtest("csv");
        bt.spec.data.volume = Some(kuant_crds::backtest::DataVolume {
            claim_name: Some("candles".into()),
            config_map: None,
            mount_path: "/data".into(),
        });
        let job = build(&bt, &settings()).expect("job");
        let pod = pod_spec(&job);
        let volume = pod.volumes.as_ref().and_then(|v| v.iter().find(|v| v.name == "data")).expect("volume");
        assert_eq!(volume.persistent_volume_claim.as_ref().map(|p| p.claim_name.as_str()), Some("candles"));
        let mount =
            pod.containers[0].volume_mounts.as_ref().and_then(|m| m.iter().find(|m| m.name == "data"));
        assert_eq!(mount.map(|m| (m.mount_path.as_str(), m.read_only)), Some(("/data", Some(true))));
    }

    #[test]
    fn the_pod_is_locked_down() {
        let job = build(&fixtures::backtest("x"), &settings()).expect("job");
        let pod = pod_spec(&job);
        let sc = pod.containers[0].security_context.as_ref().expect("container security context");
        assert_eq!((sc.allow_privilege_escalation, sc.read_only_root_filesystem), (Some(false), Some(true)));
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.fs_group),
            (Some(true), Some(65532), Some(65532))
        );
        assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    }

    #[test]
    fn a_backtest_without_a_uid_is_refused() {
        let mut bt = fixtures::backtest("x");
        bt.metadata.uid = None;
        assert_eq!(build(&bt, &settings()).expect_err("no uid"), BuildError::MissingMetadata("uid"));
    }
}
