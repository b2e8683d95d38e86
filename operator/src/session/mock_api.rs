//! The API traffic of a TradingSession reconcile against a mocked API server: each test states
//! the requests a reconcile must make, in order, and answers them as the API server would.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kuant_crds::TradingSession;
use kuant_crds::session::{FINALIZER, SessionPhase, TradingSessionStatus};
use kuant_mock_api::{Expect, expect, not_found, ok, play};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::controller::reconcile;
use super::fixtures::{agent, children_of, live, pod, reported, session};
use crate::backtest::controller::Context;
use crate::backtest::fixtures::{at, running};

const SESSIONS: &str = "/apis/kuant.dev/v1alpha1/namespaces/trading/tradingsessions";
const SETS: &str = "/apis/apps/v1/namespaces/trading/statefulsets";
const PODS: &str = "/api/v1/namespaces/trading/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/trading/events";

/// Runs one reconcile of `s` at minute `minute` against `script`; every scripted request must be
/// made, and no other.
async fn reconcile_with(s: TradingSession, minute: i64, script: Vec<Expect>) -> Requeue {
    let (client, handle) = kuant_mock_api::client("default");
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "kuant-operator".into(), instance: None });
    let clock: fn() -> _ = match minute {
        3 => || at(3),
        4 => || at(4),
        _ => || at(0),
    };
    let ctx = Arc::new(
        Context::new(client, crate::backtest::fixtures::agent(), recorder)
            .with_session_agent(agent())
            .with_clock(clock),
    );
    let server = tokio::spawn(play(handle, script));
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(s), ctx))
        .await
        .expect("the reconcile finished")
        .expect("the reconcile succeeded");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("every request made").expect("server");
    action
}

fn child(s: &TradingSession) -> String {
    children_of(s).0.metadata.name.unwrap_or_default()
}

fn status_of(body: &Value) -> TradingSessionStatus {
    serde_json::from_value(body["status"].clone()).expect("a TradingSessionStatus")
}

fn ready_reason(body: &Value) -> String {
    status_of(body)
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn event(reason: &'static str, kind: &'static str) -> Expect {
    expect(Method::POST, EVENTS, ok(Value::Null)).checking(move |_, body| {
        assert_eq!((body["reason"].as_str(), body["type"].as_str()), (Some(reason), Some(kind)), "{body}");
        assert_eq!(body["regarding"]["kind"], "TradingSession");
    })
}

fn get_set(s: &TradingSession, existing: Option<&StatefulSet>) -> Expect {
    let name = child(s);
    match existing {
        Some(set) => expect(Method::GET, format!("{SETS}/{name}"), ok(set)),
        None => expect(Method::GET, format!("{SETS}/{name}"), not_found("statefulsets", &name)),
    }
}

fn get_pod(s: &TradingSession, existing: Option<&Pod>) -> Expect {
    let name = format!("{}-0", child(s));
    match existing {
        Some(p) => expect(Method::GET, format!("{PODS}/{name}"), ok(p)),
        None => expect(Method::GET, format!("{PODS}/{name}"), not_found("pods", &name)),
    }
}

/// The children's applies, the agent identity already in place.
fn apply_children(s: &TradingSession) -> Vec<Expect> {
    let name = child(s);
    vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/trading/serviceaccounts/kuant-session-agent",
            ok(
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kuant-session-agent"}}),
            ),
        ),
        expect(Method::PATCH, format!("/api/v1/namespaces/trading/services/{name}"), ok(Value::Null))
            .checking(|query, body| {
                assert!(query.contains("fieldManager=kuant-operator"), "{query}");
                assert_eq!(body["spec"]["clusterIP"], "None");
            }),
        expect(Method::PATCH, format!("{SETS}/{name}"), ok(Value::Null)).checking(|query, body| {
            assert!(query.contains("fieldManager=kuant-operator") && query.contains("force=true"), "{query}");
            assert_eq!(body["spec"]["replicas"], 1);
            assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "TradingSession");
            assert_eq!(body["spec"]["template"]["spec"]["serviceAccountName"], "kuant-session-agent");
        }),
    ]
}

#[tokio::test]
async fn a_new_session_gets_its_finalizer_then_its_children_then_its_status() {
    let mut s = session("paper-btc.yaml");
    s.metadata.finalizers = None;
    let mut script = vec![
        get_set(&s, None),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc"), ok(&s)).checking(|query, body| {
            assert!(!query.contains("fieldManager"), "a JSON patch: {query}");
            assert_eq!(body[0]["path"], "/metadata/finalizers");
            assert_eq!(body[0]["value"][0], FINALIZER);
        }),
    ];
    script.extend(apply_children(&s));
    script.push(expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&s)).checking(
        |query, body| {
            assert!(query.contains("fieldManager=kuant-operator") && query.contains("force=true"), "{query}");
            assert_eq!(status_of(body).phase, Some(SessionPhase::Pending));
            assert!(body["status"].get("lastHeartbeat").is_none(), "the agent's field");
            assert!(body.get("metadata").is_none(), "decided afresh each time: no resourceVersion");
        },
    ));
    script.push(event("Created", "Normal"));
    let action = reconcile_with(s, 0, script).await;
    assert_eq!(action, Requeue::await_change());
}

#[tokio::test]
async fn a_restarted_operator_reads_what_exists_and_writes_nothing() {
    let s = session("paper-btc.yaml");
    let (set, _) = children_of(&s);
    let up = pod(running());
    // The status as the previous operator left it: trading, heartbeat fresh.
    let mut s = reported(s, 3, ("True", "Trading"));
    let decided = super::plan::plan(
        &s,
        super::plan::Observed {
            stateful_set: Some(&set),
            pod: Some(&up),
            secret: super::plan::Secret::NotNeeded,
            neighbours: &[],
        },
        &agent(),
        super::fixtures::IMAGE,
        &at(3),
    );
    if let Some(status) = s.status.as_mut() {
        status.conditions.extend(decided.status.conditions);
        status.phase = decided.status.phase;
        status.observed_generation = decided.status.observed_generation;
        status.message = decided.status.message;
    }
    let action = reconcile_with(s.clone(), 3, vec![get_set(&s, Some(&set)), get_pod(&s, Some(&up))]).await;
    assert_eq!(action, Requeue::requeue(Duration::from_secs(31)), "back when the heartbeat would be lost");
}

#[tokio::test]
async fn a_spec_change_applies_the_stateful_set_again_and_suspend_does_not() {
    let s = session("paper-btc.yaml");
    let (set, _) = children_of(&s);
    let mut changed = s.clone();
    changed.spec.risk.max_open_orders = 2;
    changed.metadata.generation = Some(2);
    let mut script = vec![get_set(&changed, Some(&set)), get_pod(&changed, None)];
    script.extend(apply_children(&changed));
    script.push(
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&changed))
            .checking(|_, body| assert_eq!(ready_reason(body), "Rolling")),
    );
    script.push(event("Rolling", "Normal"));
    reconcile_with(changed, 0, script).await;

    let mut suspended = s.clone();
    suspended.spec.suspend = true;
    suspended.metadata.generation = Some(2);
    let script = vec![
        get_set(&suspended, Some(&set)),
        get_pod(&suspended, None),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&suspended)).checking(|_, body| {
            assert_eq!(status_of(body).observed_generation, Some(2));
        }),
    ];
    reconcile_with(suspended, 0, script).await;
}

#[tokio::test]
async fn a_lost_heartbeat_turns_ready_false_with_a_warning() {
    let s = reported(session("paper-btc.yaml"), 3, ("True", "Trading"));
    let (set, _) = children_of(&s);
    let up = pod(running());
    let script = vec![
        get_set(&s, Some(&set)),
        get_pod(&s, Some(&up)),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&s)).checking(|_, body| {
            assert_eq!(ready_reason(body), "HeartbeatLost");
            assert_eq!(status_of(body).phase, Some(SessionPhase::Degraded));
        }),
        event("HeartbeatLost", "Warning"),
    ];
    reconcile_with(s, 4, script).await;
}

#[tokio::test]
async fn live_without_acknowledgement_or_secret_gets_no_pod() {
    let mut s = live();
    s.spec.live_trading_acknowledged = false;
    let secret = "/api/v1/namespaces/trading/secrets/binance-credentials";
    let script = vec![
        get_set(&s, None),
        expect(
            Method::GET,
            secret,
            ok(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "binance-credentials"}})),
        ),
        expect(
            Method::GET,
            SESSIONS,
            ok(
                json!({"apiVersion": "kuant.dev/v1alpha1", "kind": "TradingSessionList", "metadata": {}, "items": [&s]}),
            ),
        ),
        expect(Method::PATCH, format!("{SESSIONS}/live-btc/status"), ok(&s))
            .checking(|_, body| assert_eq!(ready_reason(body), "LiveTradingNotAcknowledged")),
        event("LiveTradingNotAcknowledged", "Warning"),
    ];
    assert_eq!(reconcile_with(s, 0, script).await, Requeue::await_change());

    let s = live();
    let script = vec![
        get_set(&s, None),
        expect(Method::GET, secret, not_found("secrets", "binance-credentials")),
        expect(
            Method::GET,
            SESSIONS,
            ok(
                json!({"apiVersion": "kuant.dev/v1alpha1", "kind": "TradingSessionList", "metadata": {}, "items": [&s]}),
            ),
        ),
        expect(Method::PATCH, format!("{SESSIONS}/live-btc/status"), ok(&s)).checking(|_, body| {
            assert_eq!(ready_reason(body), "CredentialsMissing");
            assert!(!body.to_string().contains("apiSecret\":\""), "no key material");
        }),
        event("CredentialsMissing", "Warning"),
    ];
    assert_eq!(reconcile_with(s, 0, script).await, Requeue::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_deleted_session_keeps_its_finalizer_until_the_agent_reports_no_open_order() {
    let s = session("paper-btc.yaml");
    let (set, _) = children_of(&s);
    let up = pod(running());
    let deleted = |open: u32| {
        let mut d = reported(s.clone(), 3, ("False", "Deleting"));
        d.metadata.deletion_timestamp = Some(at(3));
        if let Some(status) = d.status.as_mut() {
            status.open_orders = Some(open);
        }
        d
    };
    let waiting = deleted(2);
    let script = vec![
        get_set(&waiting, Some(&set)),
        get_pod(&waiting, Some(&up)),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&waiting)).checking(|_, body| {
            assert!(status_of(body).message.is_some_and(|m| m.contains("2 open")), "{body}");
        }),
    ];
    assert_eq!(reconcile_with(waiting, 3, script).await, Requeue::requeue(Duration::from_secs(2)));

    let done = deleted(0);
    let script = vec![
        get_set(&done, Some(&set)),
        get_pod(&done, Some(&up)),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc/status"), ok(&done)),
        event("OrdersCancelled", "Normal"),
        expect(Method::PATCH, format!("{SESSIONS}/paper-btc"), ok(&done)).checking(|_, body| {
            assert_eq!((body[0]["op"].as_str(), body[1]["op"].as_str()), (Some("test"), Some("remove")));
            assert_eq!(body[0]["value"], FINALIZER);
        }),
    ];
    assert_eq!(reconcile_with(done, 3, script).await, Requeue::await_change());
}
