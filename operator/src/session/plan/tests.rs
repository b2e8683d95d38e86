//! Each decision of the TradingSession controller, from what it read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ContainerState;

use super::*;
use crate::backtest::fixtures::{at, running, waiting};
use crate::session::fixtures::{IMAGE, agent, children_of, condition, live, pod, reported, session};

/// `s` after a reconcile: its status as the plan wrote it (the agent's fields kept).
fn after(mut s: TradingSession, plan: &Plan) -> TradingSession {
    let mut status = s.status.take().unwrap_or_default();
    status.conditions.retain(|c| c.type_ != CONDITION_READY);
    status.conditions.extend(plan.status.conditions.clone());
    status.phase = plan.status.phase;
    status.holds = plan.status.holds.clone();
    s.status = Some(status);
    s
}

fn run(s: &TradingSession, sts: Option<&StatefulSet>, pod: Option<&Pod>, minute: i64) -> Plan {
    let observed = Observed { stateful_set: sts, pod, secret: Secret::Present, neighbours: &[] };
    plan(s, observed, &agent(), IMAGE, &at(minute))
}

fn ready(p: &Plan) -> (&str, &str) {
    let c = p.status.conditions.iter().find(|c| c.type_ == CONDITION_READY).expect("Ready");
    (c.status.as_str(), c.reason.as_str())
}

fn reasons(p: &Plan) -> Vec<&str> {
    p.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn a_new_session_gets_its_finalizer_and_children_and_is_pending() {
    let mut s = session("paper-btc.yaml");
    s.metadata.finalizers = None;
    let p = run(&s, None, None, 0);
    assert_eq!(p.finalizer, Finalizer::Add);
    let Children::Apply(children) = &p.children else { panic!("children applied: {:?}", p.children) };
    assert_eq!(children.0.metadata.name, children_of(&s).0.metadata.name);
    assert_eq!(p.status.phase, Some(SessionPhase::Pending));
    assert_eq!(p.status.observed_generation, Some(1));
    assert_eq!(ready(&p), ("False", "Creating"));
    assert_eq!(reasons(&p), ["Created"]);
    assert!(
        p.status.last_heartbeat.is_none() && p.status.portfolio.is_none(),
        "the agent's fields stay unset"
    );
}

#[test]
fn a_restarted_operator_finds_its_stateful_set_and_applies_nothing() {
    let s = session("paper-btc.yaml");
    let (sts, _) = children_of(&s);
    let p = run(&s, Some(&sts), None, 0);
    assert_eq!((p.children.clone(), p.finalizer), (Children::Keep, Finalizer::Keep));
    assert_eq!(ready(&p), ("False", "PodStarting"));
    // An operator upgrade brings another default image: the running agent keeps its own.
    let upgraded = AgentSettings { image: "ghcr.io/kuant-dev/kuant:9.9.9".into(), ..agent() };
    let image = children::agent_image(&s, Some(&sts), &upgraded.image);
    let observed =
        Observed { stateful_set: Some(&sts), pod: None, secret: Secret::NotNeeded, neighbours: &[] };
    assert_eq!(plan(&s, observed, &upgraded, &image, &at(0)).children, Children::Keep);
}

#[test]
fn a_spec_change_rolls_the_pod_and_suspend_does_not() {
    let s = session("paper-btc.yaml");
    let (sts, _) = children_of(&s);
    let mut suspended = s.clone();
    suspended.spec.suspend = true;
    suspended.metadata.generation = Some(2);
    assert_eq!(run(&suspended, Some(&sts), None, 0).children, Children::Keep);
    let mut changed = s.clone();
    changed.spec.risk.max_open_orders = 2;
    changed.metadata.generation = Some(2);
    let p = run(&changed, Some(&sts), None, 0);
    assert!(matches!(p.children, Children::Apply(_)), "{:?}", p.children);
    assert_eq!(ready(&p), ("False", "Rolling"));
    assert_eq!(p.status.observed_generation, Some(2));
}

#[test]
fn the_phase_follows_the_pod_and_the_agents_heartbeat() {
    let s = session("paper-btc.yaml");
    let (sts, _) = children_of(&s);
    let up = pod(running()); // started at minute 2
    // Running, no heartbeat yet: starting, then lost after 30 s.
    let p = run(&s, Some(&sts), Some(&up), 2);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Starting), ("False", "AwaitingHeartbeat")));
    let p = run(&s, Some(&sts), Some(&up), 3);
    assert_eq!(ready(&p), ("False", "HeartbeatLost"));
    // Waiting for its first market data: still starting, no Warning.
    let p = run(&reported(s.clone(), 3, ("False", "StaleMarketData")), Some(&sts), Some(&up), 3);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Starting), ("False", "StaleMarketData")));
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    // Trading: Ready, a Started Event once, and a look back when the heartbeat would be lost.
    let trading = reported(s.clone(), 3, ("True", "Trading"));
    let p = run(&trading, Some(&sts), Some(&up), 3);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Trading), ("True", "Trading")));
    assert_eq!(reasons(&p), ["Started"]);
    assert_eq!(p.recheck, Some(HEARTBEAT_TIMEOUT + Duration::from_secs(1)));
    let again = after(trading.clone(), &p);
    assert!(run(&again, Some(&sts), Some(&up), 3).notes.is_empty(), "no Event without a change");
    // Its data goes stale while trading: degraded, with a Warning.
    let p = run(&reported(again.clone(), 3, ("False", "StaleMarketData")), Some(&sts), Some(&up), 3);
    assert_eq!((p.status.phase, reasons(&p)), (Some(SessionPhase::Degraded), vec!["StaleMarketData"]));
    // The heartbeat goes silent: lost, with a Warning; then back: recovered.
    let p = run(&again, Some(&sts), Some(&up), 4);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Degraded), ("False", "HeartbeatLost")));
    assert_eq!(p.notes[0].severity, Severity::Warning);
    let lost = after(again, &p);
    let p = run(&reported(lost, 5, ("True", "Trading")), Some(&sts), Some(&up), 5);
    assert_eq!(reasons(&p), ["Recovered"]);
    // A pod being replaced says so (not "suspended").
    let p = run(&reported(s.clone(), 5, ("False", "Stopping")), Some(&sts), Some(&up), 5);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Starting), ("False", "Stopping")));
    // A heartbeat older than the container is an earlier pod's.
    let restarted = pod(ContainerState {
        running: Some(k8s_openapi::api::core::v1::ContainerStateRunning { started_at: Some(at(6)) }),
        ..Default::default()
    });
    let p = run(&reported(s, 5, ("True", "Trading")), Some(&sts), Some(&restarted), 6);
    assert_eq!(ready(&p), ("False", "AwaitingHeartbeat"));
}

#[test]
fn suspension_and_halts_show_in_the_phase_with_their_events() {
    let s = session("paper-btc.yaml");
    let (sts, _) = children_of(&s);
    let up = pod(running());
    let trading = after(
        reported(s.clone(), 3, ("True", "Trading")),
        &run(&reported(s.clone(), 3, ("True", "Trading")), Some(&sts), Some(&up), 3),
    );
    let mut off = reported(trading.clone(), 3, ("False", "Suspended"));
    off.spec.suspend = true;
    let p = run(&off, Some(&sts), Some(&up), 3);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Suspended), ("True", "Suspended")));
    assert_eq!(reasons(&p), ["Suspended"]);
    let mut on = reported(after(off, &p), 3, ("True", "Trading"));
    on.spec.suspend = false;
    assert_eq!(reasons(&run(&on, Some(&sts), Some(&up), 3)), ["Resumed"]);

    let mut halted = reported(trading, 3, ("False", "Halted"));
    if let Some(status) = halted.status.as_mut() {
        status.conditions.retain(|c| c.type_ != CONDITION_HALTED);
        status.conditions.push(condition(CONDITION_HALTED, "True", "DailyLossLimit"));
    }
    let p = run(&halted, Some(&sts), Some(&up), 3);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Halted), ("False", "Halted")));
    assert!(
        p.status.message.as_deref().is_some_and(|m| m.contains("DailyLossLimit")),
        "{:?}",
        p.status.message
    );
    assert_eq!((p.notes[0].reason, p.notes[0].severity), ("Halted", Severity::Warning));
}

#[test]
fn live_trading_without_acknowledgement_is_refused_and_a_running_agent_removed() {
    let mut s = live();
    s.spec.live_trading_acknowledged = false;
    let p = run(&s, None, None, 0);
    assert_eq!(
        (p.status.phase, ready(&p)),
        (Some(SessionPhase::Failed), ("False", "LiveTradingNotAcknowledged"))
    );
    assert_eq!(p.children, Children::Keep, "no pod");
    assert_eq!((p.notes[0].reason, p.notes[0].severity), ("LiveTradingNotAcknowledged", Severity::Warning));
    let (sts, _) = children_of(&live());
    let p = run(&s, Some(&sts), None, 0);
    assert_eq!(p.children, Children::Delete(sts.metadata.name.clone().unwrap_or_default()));
    // Said once: the next reconcile records no second Event.
    assert!(run(&after(s, &p), None, None, 1).notes.is_empty());
}

#[test]
fn a_missing_credentials_secret_gives_no_pod_until_it_exists() {
    let s = live();
    let observed = Observed { stateful_set: None, pod: None, secret: Secret::Missing, neighbours: &[] };
    let p = plan(&s, observed, &agent(), IMAGE, &at(0));
    assert_eq!((ready(&p), p.children.clone()), (("False", "CredentialsMissing"), Children::Keep));
    assert!(p.status.message.as_deref().is_some_and(|m| m.contains("binance-credentials")));
    assert_eq!(p.recheck, Some(RECHECK_REFUSED), "looked at again: Secrets are not watched");
    // Present: the children come.
    let observed = Observed { secret: Secret::Present, ..observed };
    assert!(matches!(plan(&s, observed, &agent(), IMAGE, &at(0)).children, Children::Apply(_)));
    // A pod the kubelet cannot give its Secret says so.
    let (sts, _) = children_of(&s);
    let stuck = pod(waiting("CreateContainerConfigError", "secret \"binance-credentials\" not found"));
    let p = run(&s, Some(&sts), Some(&stuck), 1);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Failed), ("False", "CredentialsMissing")));
    // An agent that keeps failing says why, from the end of its log.
    let mut crashing = pod(waiting("CrashLoopBackOff", "back-off 40s restarting failed container"));
    if let Some(c) =
        crashing.status.as_mut().and_then(|s| s.container_statuses.as_mut()).and_then(|c| c.first_mut())
    {
        c.last_state = Some(ContainerState {
            terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                exit_code: 1,
                message: Some("error: the store's schema is newer than this kuant knows".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let p = run(&s, Some(&sts), Some(&crashing), 1);
    assert_eq!((p.status.phase, ready(&p)), (Some(SessionPhase::Failed), ("False", "CrashLoopBackOff")));
    assert!(
        p.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exit code 1: error: the store's schema is newer")),
        "{:?}",
        p.status.message
    );
    let pull = pod(waiting("ImagePullBackOff", "back-off pulling"));
    assert_eq!(ready(&run(&s, Some(&sts), Some(&pull), 1)), ("False", "ImagePullBackOff"));
}

#[test]
fn two_live_sessions_on_one_secret_the_younger_is_refused() {
    let older = live();
    let mut younger = live();
    younger.metadata.name = Some("live-btc-2".into());
    younger.metadata.uid = Some("another-uid".into());
    younger.metadata.creation_timestamp = Some(at(5));
    let all = [older.clone(), younger.clone()];
    let observed = Observed { stateful_set: None, pod: None, secret: Secret::Present, neighbours: &all };
    let p = plan(&younger, observed, &agent(), IMAGE, &at(6));
    assert_eq!(ready(&p), ("False", "CredentialsInUse"));
    assert!(p.status.message.as_deref().is_some_and(|m| m.contains("live-btc")));
    assert!(matches!(plan(&older, observed, &agent(), IMAGE, &at(6)).children, Children::Apply(_)));
    // A paper session on the same Secret takes nothing from it.
    let mut paper = younger.clone();
    paper.spec.mode = TradingMode::Paper;
    let observed = Observed { neighbours: &[older, paper.clone()], ..observed };
    assert!(matches!(plan(&paper, observed, &agent(), IMAGE, &at(6)).children, Children::Apply(_)));
}

fn deleted(s: TradingSession, open: u32, agent_saw: bool, beat: i64) -> TradingSession {
    let mut s = reported(s, beat, if agent_saw { ("False", "Deleting") } else { ("True", "Trading") });
    s.metadata.deletion_timestamp = Some(at(3));
    if let Some(status) = s.status.as_mut() {
        status.open_orders = Some(open);
    }
    s
}

#[test]
fn a_deleted_session_waits_for_its_agent_to_cancel_every_order() {
    let s = session("paper-btc.yaml");
    let (sts, _) = children_of(&s);
    let up = pod(running());
    // The agent has not seen the deletion yet, or still has orders open: wait.
    let p = run(&deleted(s.clone(), 2, false, 3), Some(&sts), Some(&up), 3);
    assert_eq!((p.finalizer, p.recheck), (Finalizer::Keep, Some(RECHECK_DELETING)));
    assert_eq!(p.children, Children::Keep);
    assert!(p.status.message.as_deref().is_some_and(|m| m.contains("2 open")));
    let p = run(&deleted(s.clone(), 1, true, 3), Some(&sts), Some(&up), 3);
    assert_eq!(p.finalizer, Finalizer::Keep);
    // Every order cancelled, reported after the deletion: the finalizer goes.
    let p = run(&deleted(s.clone(), 0, true, 3), Some(&sts), Some(&up), 3);
    assert_eq!((p.finalizer, reasons(&p)), (Finalizer::Remove, vec!["OrdersCancelled"]));
    // The agent never confirms: bounded, with a Warning.
    let p = run(&deleted(s.clone(), 1, true, 4), Some(&sts), Some(&up), 4);
    assert_eq!((p.finalizer, reasons(&p)), (Finalizer::Remove, vec!["CancelTimedOut"]));
    // No agent to ask: the finalizer goes, with a Warning if orders were open.
    let p = run(&deleted(s.clone(), 1, false, 3), Some(&sts), None, 3);
    assert_eq!((p.finalizer, reasons(&p)), (Finalizer::Remove, vec!["OrdersMayRemainOpen"]));
    assert!(run(&deleted(s.clone(), 0, false, 3), None, None, 3).notes.is_empty());
    // Without the finalizer there is nothing to do.
    let mut gone = deleted(s, 1, false, 3);
    gone.metadata.finalizers = None;
    let p = run(&gone, Some(&sts), Some(&up), 3);
    assert_eq!((p.finalizer, p.children, p.notes.len()), (Finalizer::Keep, Children::Keep, 0));
}

fn hold(source: &str, minute: i64) -> Hold {
    Hold {
        source: source.into(),
        reason: "BalanceDrift".into(),
        message: "BTC off".into(),
        since: at(minute),
    }
}

#[test]
fn the_resume_annotation_clears_the_holds_placed_before_it() {
    let mut s = session("paper-btc.yaml");
    s.status = Some(TradingSessionStatus {
        holds: vec![hold("reconciliation/a", 1), hold("reconciliation/b", 5)],
        ..Default::default()
    });
    assert_eq!(run(&s, None, None, 6).status.holds.len(), 2, "kept without the annotation");
    let resume = at(2).0.to_string();
    s.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_RESUME_AT.to_owned(), resume)]));
    let p = run(&s, None, None, 6);
    assert_eq!(p.status.holds, [hold("reconciliation/b", 5)]);
    assert!(reasons(&p).contains(&"HoldsCleared"), "{:?}", reasons(&p));
    s.metadata.annotations =
        Some(BTreeMap::from([(ANNOTATION_RESUME_AT.to_owned(), "yesterday".to_owned())]));
    let p = run(&s, None, None, 6);
    assert_eq!((p.status.holds.len(), p.notes[0].reason), (2, "InvalidResumeAt"));
}

#[test]
fn the_watch_triggers_on_what_moves_the_phase_not_on_the_heartbeat() {
    let s = reported(session("paper-btc.yaml"), 3, ("True", "Trading"));
    let key = trigger(&s);
    assert_eq!(trigger(&reported(s.clone(), 4, ("True", "Trading"))), key, "a heartbeat alone");
    assert_ne!(trigger(&reported(s.clone(), 4, ("False", "Suspended"))), key);
    let mut resumed = s.clone();
    resumed.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_RESUME_AT.to_owned(), "x".to_owned())]));
    assert_ne!(trigger(&resumed), key);
    let mut gone = s;
    gone.metadata.deletion_timestamp = Some(at(9));
    assert_ne!(trigger(&gone), key);
}

#[test]
fn the_operator_part_of_the_status_is_exactly_its_fields() {
    let s = reported(session("paper-btc.yaml"), 3, ("True", "Trading"));
    let (sts, _) = children_of(&s);
    let p = run(&s, Some(&sts), Some(&pod(running())), 3);
    let json = serde_json::to_value(&p.status).expect("json");
    let mut keys: Vec<&str> = json.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["conditions", "message", "observedGeneration", "phase"]);
    assert!(p.status.conditions.iter().all(|c| c.type_ == CONDITION_READY));
}
