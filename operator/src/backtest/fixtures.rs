//! Objects for tests: a Backtest as the API server returns it, and its Job and pod in each state
//! a kubelet and the Job controller put them in.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kuant_crds::Backtest;

use super::job::{AgentSettings, build};

/// The uid every fixture Backtest has.
pub const UID: &str = "5d0c6a55-0f4e-4b8e-9a52-6f1f2b7a9c01";

/// A time `minutes` after 2026-01-01T00:00:00Z.
pub fn at(minutes: i64) -> Time {
    let base: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Time(base + jiff::SignedDuration::from_mins(minutes))
}

/// The README's example Backtest, named `name` in namespace `research`, generation 1.
pub fn backtest(name: &str) -> Backtest {
    let text = include_str!("../../../examples/backtests/btc-sma-crossover.yaml");
    let mut bt: Backtest = kuant_crds::manifest::parse(text, "example").unwrap_or_else(|e| panic!("{e}"));
    bt.metadata.name = Some(name.to_owned());
    bt.metadata.namespace = Some("research".to_owned());
    bt.metadata.uid = Some(UID.to_owned());
    bt.metadata.generation = Some(1);
    bt.metadata.resource_version = Some("100".to_owned());
    bt
}

/// Agent settings of the tests.
pub fn agent() -> AgentSettings {
    AgentSettings {
        image: "ghcr.io/kuant-dev/kuant:test".into(),
        service_account: "kuant-agent".into(),
        log_level: "info".into(),
        cluster_role: "kuant-agent".into(),
        database_secret: None,
        database_secret_key: "url".into(),
    }
}

/// The Job the operator builds for `bt`, as just created (no status yet).
pub fn job(bt: &Backtest) -> Job {
    let mut job = build(bt, &agent()).unwrap_or_else(|e| panic!("{e}"));
    job.metadata.uid = Some("job-uid".into());
    job.status = Some(JobStatus::default());
    job
}

/// `job` with a status: started at minute 1, with `active` pods, and `condition` (type, reason,
/// message) set to True at minute 10.
pub fn job_with(mut job: Job, active: i32, condition: Option<(&str, &str, &str)>) -> Job {
    job.status = Some(JobStatus {
        active: Some(active),
        start_time: Some(at(1)),
        completion_time: condition.filter(|c| c.0 == "Complete").map(|_| at(10)),
        conditions: condition.map(|(type_, reason, message)| {
            vec![JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(at(10)),
                ..Default::default()
            }]
        }),
        ..Default::default()
    });
    job
}

/// A pod of `job` whose agent container is in `state`, created at minute 0.
pub fn pod(job: &Job, state: ContainerState) -> Pod {
    let name = format!("{}-abcde", job.metadata.name.as_deref().unwrap_or("job"));
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                super::state::JOB_NAME_LABEL.to_owned(),
                job.metadata.name.clone().unwrap_or_default(),
            )])),
            creation_timestamp: Some(at(0)),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: super::job::CONTAINER.into(),
                state: Some(state),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The agent container running since minute 2.
pub fn running() -> ContainerState {
    ContainerState { running: Some(ContainerStateRunning { started_at: Some(at(2)) }), ..Default::default() }
}

/// The agent container waiting with `reason`.
pub fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.into()) }),
        ..Default::default()
    }
}

/// The agent container ended with `exit_code`, `reason` and termination `message`, at minute 9.
pub fn terminated(exit_code: i32, reason: &str, message: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(reason.into()),
            message: Some(message.into()),
            started_at: Some(at(2)),
            finished_at: Some(at(9)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A termination message as the agent writes it on success.
pub fn results_message() -> String {
    serde_json::json!({
        "results": {
            "finalEquity": "10250.50",
            "totalReturnPct": 2.51,
            "cagrPct": 1.2,
            "sharpe": 0.8,
            "maxDrawdownPct": 12.0,
            "winRatePct": 40.0,
            "trades": 12,
            "exposurePct": 48.0
        },
        "candles": 20000
    })
    .to_string()
}
