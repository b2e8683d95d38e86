//! The workload of a Reconciliation, built by a pure function: a Job that runs `kuant agent
//! reconcile` once, or a CronJob that runs it on `spec.schedule` (`concurrencyPolicy: Forbid`,
//! `spec.suspend` mapped). The pod reads the Reconciliation and its TradingSession from its
//! environment, a live session's key from the files of a Secret volume (never the environment),
//! the store's URL from the operator's database Secret; its summary is its termination message.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kuant_crds::{Reconciliation, TradingSession};
use kube::Resource;

use crate::backtest::job::AgentSettings;
use crate::names;
use crate::session::children::{self, BuildError};

/// Environment variable carrying the Reconciliation into the pod.
pub const ENV_RECONCILIATION: &str = "KUANT_RECONCILIATION";
/// Name of the agent container.
pub const CONTAINER: &str = "agent";
/// Label naming the Reconciliation a Job or pod belongs to.
pub const LABEL_RECONCILIATION: &str = "kuant.dev/reconciliation";
/// Seconds a run may take (an exchange that does not answer fails it, never hangs it).
pub const DEADLINE_SECONDS: i64 = 300;

/// A Reconciliation's workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Run once.
    Once(Box<Job>),
    /// Run on a schedule.
    Scheduled(Box<CronJob>),
}

/// The Reconciliation as the pod reads it: its identity and spec.
pub fn handed_over(recon: &Reconciliation) -> Result<String, BuildError> {
    let name = recon.metadata.name.as_deref().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = recon.metadata.namespace.as_deref().ok_or(BuildError::MissingMetadata("namespace"))?;
    let uid = recon.metadata.uid.as_deref().ok_or(BuildError::MissingMetadata("uid"))?;
    serde_json::to_string(&serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "Reconciliation",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": recon.spec,
    }))
    .map_err(|e| BuildError::Encode(e.to_string()))
}

/// The workload of `recon`, comparing the ledger of `session` (the TradingSession it names),
/// under `agent`'s identity and image.
pub fn build(
    recon: &Reconciliation,
    session: &TradingSession,
    agent: &AgentSettings,
) -> Result<Workload, BuildError> {
    let name = recon.metadata.name.as_deref().ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = recon.metadata.namespace.as_deref().ok_or(BuildError::MissingMetadata("namespace"))?;
    let uid = recon.metadata.uid.as_deref().ok_or(BuildError::MissingMetadata("uid"))?;
    let mut owner = recon.controller_owner_ref(&()).ok_or(BuildError::MissingMetadata("uid"))?;
    owner.block_owner_deletion = Some(true);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "kuant".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "reconciliation".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), crate::FIELD_MANAGER.to_owned()),
        (LABEL_RECONCILIATION.to_owned(), names::label_value(name)),
    ]);
    let env = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    };
    let mut envs = vec![
        env(ENV_RECONCILIATION, handed_over(recon)?),
        env(children::ENV_SESSION, children::handed_over(session)?),
        env("RUST_LOG", agent.log_level.clone()),
    ];
    envs.extend(crate::pod::store_env(agent));
    let (scratch, scratch_mount) = crate::pod::scratch("64Mi");
    let (mut volumes, mut mounts) = (vec![scratch], vec![scratch_mount]);
    if let Some((volume, mount, dir)) = children::credentials(session) {
        volumes.push(volume);
        mounts.push(mount);
        envs.push(dir);
    }
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(agent.image.clone()),
        args: Some(vec!["agent".to_owned(), "reconcile".to_owned()]),
        env: Some(envs),
        // The agent's summary (or why it could not compare) is its termination message.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        security_context: Some(crate::pod::container_security()),
        ..Default::default()
    };
    let job_spec = JobSpec {
        // A failed comparison is reported, not retried: the next scheduled run compares again.
        backoff_limit: Some(0),
        active_deadline_seconds: Some(DEADLINE_SECONDS),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_owned()),
                ..crate::pod::agent_pod(agent, container, volumes)
            }),
        },
        ..Default::default()
    };
    let meta = ObjectMeta {
        name: Some(names::reconciliation(name, uid)),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    Ok(match &recon.spec.schedule {
        None => Workload::Once(Box::new(Job { metadata: meta, spec: Some(job_spec), status: None })),
        Some(schedule) => Workload::Scheduled(Box::new(CronJob {
            metadata: meta,
            spec: Some(CronJobSpec {
                schedule: schedule.clone(),
                concurrency_policy: Some("Forbid".to_owned()),
                suspend: Some(recon.spec.suspend),
                successful_jobs_history_limit: Some(3),
                failed_jobs_history_limit: Some(3),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                    spec: Some(job_spec),
                },
                ..Default::default()
            }),
            status: None,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fixtures;

    fn recon(schedule: Option<&str>) -> Reconciliation {
        let text = include_str!("../../../examples/reconciliations/hourly.yaml");
        let mut r: Reconciliation =
            kuant_crds::manifest::parse(text, "hourly.yaml").unwrap_or_else(|e| panic!("{e}"));
        r.metadata.namespace = Some("trading".into());
        r.metadata.uid = Some("3c0c6a55-0f4e-4b8e-9a52-6f1f2b7a9c04".into());
        r.spec.schedule = schedule.map(str::to_owned);
        r
    }

    fn pod_of(template: &PodTemplateSpec) -> &PodSpec {
        template.spec.as_ref().expect("a pod")
    }

    #[test]
    fn once_is_a_job_and_a_schedule_a_forbid_concurrency_cron_job_with_suspend_mapped() {
        let session = fixtures::live();
        let Ok(Workload::Once(job)) = build(&recon(None), &session, &fixtures::agent()) else {
            panic!("a Job")
        };
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(DEADLINE_SECONDS)));
        assert_eq!(job.metadata.owner_references.as_ref().expect("owner")[0].kind, "Reconciliation");
        let container = &pod_of(&spec.template).containers[0];
        assert_eq!(container.args.as_deref(), Some(&["agent".to_owned(), "reconcile".to_owned()][..]));

        let mut suspended = recon(Some("0 * * * *"));
        suspended.spec.suspend = true;
        let Ok(Workload::Scheduled(cron)) = build(&suspended, &session, &fixtures::agent()) else {
            panic!("a CronJob")
        };
        let spec = cron.spec.as_ref().expect("spec");
        assert_eq!(
            (spec.schedule.as_str(), spec.concurrency_policy.as_deref(), spec.suspend),
            ("0 * * * *", Some("Forbid"), Some(true))
        );
        assert_eq!(cron.metadata.name, job.metadata.name, "one name, derived from the Reconciliation");
        assert!(cron.metadata.name.as_deref().is_some_and(|n| n.len() <= 52));
    }

    #[test]
    fn the_pod_gets_both_manifests_and_a_live_sessions_key_as_files_only() {
        let Ok(Workload::Once(job)) = build(&recon(None), &fixtures::live(), &fixtures::agent()) else {
            panic!("a Job")
        };
        let pod = pod_of(&job.spec.as_ref().expect("spec").template);
        let env = pod.containers[0].env.as_ref().expect("env");
        let named = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        assert!(named(ENV_RECONCILIATION).is_some_and(|v| v.contains("\"kind\":\"Reconciliation\"")));
        assert!(named(children::ENV_SESSION).is_some_and(|v| v.contains("\"kind\":\"TradingSession\"")));
        assert_eq!(named(children::ENV_CREDENTIALS_DIR).as_deref(), Some(children::CREDENTIALS_DIR));
        assert!(
            env.iter().all(|e| e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_none_or(|s| s.key == "url")),
            "no key in the environment"
        );
        assert!(pod.volumes.iter().flatten().any(|v| v.secret.is_some()));
        // A paper session's run reads its paper account from the store: no key at all.
        let Ok(Workload::Once(paper)) =
            build(&recon(None), &fixtures::session("paper-btc.yaml"), &fixtures::agent())
        else {
            panic!("a Job")
        };
        assert!(
            pod_of(&paper.spec.as_ref().expect("spec").template)
                .volumes
                .iter()
                .flatten()
                .all(|v| v.secret.is_none())
        );
    }
}
