//! Objects for the TradingSession controller's tests: sessions as the API server returns them,
//! their children, their pod and the agent's report.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ContainerState, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kuant_crds::TradingSession;
use kuant_crds::session::{
    CONDITION_HALTED, CONDITION_MARKET_DATA_HEALTHY, CONDITION_READY, CONDITION_TRADING, FINALIZER,
};

use super::children::{self, CONTAINER};
use crate::backtest::fixtures::at;
use crate::backtest::job::AgentSettings;

pub const UID: &str = "7b0c6a55-0f4e-4b8e-9a52-6f1f2b7a9c03";
pub const IMAGE: &str = "ghcr.io/kuant-dev/kuant:test";

pub fn agent() -> AgentSettings {
    AgentSettings {
        image: IMAGE.into(),
        service_account: "kuant-session-agent".into(),
        log_level: "info".into(),
        cluster_role: "kuant-session-agent".into(),
        database_secret: None,
        database_secret_key: "url".into(),
    }
}

/// The example `file` as the API server returns it: namespace `trading`, generation 1, created
/// at minute 0, with the finalizer.
pub fn session(file: &str) -> TradingSession {
    let path = format!("{}/../examples/sessions/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut s: TradingSession = kuant_crds::manifest::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    s.metadata.namespace = Some("trading".into());
    s.metadata.uid = Some(UID.into());
    s.metadata.generation = Some(1);
    s.metadata.creation_timestamp = Some(at(0));
    s.metadata.finalizers = Some(vec![FINALIZER.into()]);
    s
}

pub fn live() -> TradingSession {
    let mut s = session("live-btc.yaml");
    s.spec.live_trading_acknowledged = true;
    s
}

pub fn children_of(s: &TradingSession) -> (StatefulSet, Service) {
    children::build(s, &agent(), IMAGE).unwrap_or_else(|e| panic!("{e}"))
}

/// The session's pod with its agent container in `state`.
pub fn pod(state: ContainerState) -> Pod {
    Pod {
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: CONTAINER.into(),
                state: Some(state),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn condition(kind: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: kind.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{kind} {reason}"),
        observed_generation: Some(1),
        last_transition_time: at(2),
    }
}

/// `s` with the agent's report: a heartbeat at `minute` and Trading `trading` for `reason`.
pub fn reported(mut s: TradingSession, minute: i64, trading: (&str, &str)) -> TradingSession {
    let status = s.status.get_or_insert_with(Default::default);
    status.last_heartbeat = Some(at(minute));
    status.conditions.retain(|c| c.type_ == CONDITION_READY);
    status.conditions.push(condition(CONDITION_MARKET_DATA_HEALTHY, "True", "Fresh"));
    status.conditions.push(condition(CONDITION_TRADING, trading.0, trading.1));
    status.conditions.push(condition(CONDITION_HALTED, "False", "NotHalted"));
    s
}
