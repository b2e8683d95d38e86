//! The reconcile decision for one TradingSession, as a pure function of what was read: the
//! operator's part of the status, what to do with the children and the finalizer, the Events to
//! record and when to look again.
//!
//! - **Never two traders.** The StatefulSet's name comes from the session, so a restarted
//!   operator finds the one it made; it is applied again only when what the pod reads changed
//!   (the spec hash), so an operator upgrade does not restart running traders.
//! - **Live trading is refused** without `liveTradingAcknowledged`, without a credentials
//!   Secret, or on a Secret another live session of the namespace already trades with (the
//!   older session keeps it): no pod, `Ready=False` with the reason, a Warning Event.
//! - **Status**: `phase`, `observedGeneration`, `message`, `holds` and the condition `Ready`
//!   come from the pod and the agent's heartbeat and conditions; the agent writes the rest.
//! - **Deletion**: the finalizer [`FINALIZER`] stays until the agent, which sees the deletion,
//!   reports that no order is open, or it is not running, or [`CANCEL_TIMEOUT`] has passed.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kuant_crds::TradingSession;
pub use kuant_crds::session::FINALIZER;
use kuant_crds::session::{
    ANNOTATION_RESUME_AT, CONDITION_HALTED, CONDITION_READY, CONDITION_TRADING, Hold, SessionPhase,
    TradingMode, TradingSessionStatus,
};

use super::children::{self, ANNOTATION_SPEC_HASH, CONTAINER};
use crate::backtest::job::AgentSettings;
use crate::backtest::plan::{Note, Severity};
use crate::conditions::{self, Desired, Status};

/// An agent whose last heartbeat is older than this is lost (it beats every 5 s).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deleted session waits for its agent to cancel its open orders.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a deletion in progress is looked at.
const RECHECK_DELETING: Duration = Duration::from_secs(2);
/// How often a refused session looks again for what it lacks (a Secret, the other session gone).
const RECHECK_REFUSED: Duration = Duration::from_secs(30);

/// What the reconcile learnt of the credentials Secret a live session names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    /// Not read: paper trading, or no Secret named.
    NotNeeded,
    /// It exists.
    Present,
    /// It does not exist.
    Missing,
}

/// What the reconcile read.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The session's StatefulSet (by its derived name), if it exists.
    pub stateful_set: Option<&'a StatefulSet>,
    /// Its pod (ordinal 0), if it exists.
    pub pod: Option<&'a Pod>,
    /// The credentials Secret.
    pub secret: Secret,
    /// The other TradingSessions of the namespace (a live one on the same Secret refuses this one
    /// if it is older).
    pub neighbours: &'a [TradingSession],
}

/// What to do with the children.
#[derive(Clone, Debug, PartialEq)]
pub enum Children {
    /// Nothing.
    Keep,
    /// Apply the StatefulSet and its Service (new, or what the pod reads changed).
    Apply(Box<(StatefulSet, Service)>),
    /// Delete the StatefulSet (the session is refused; its pod must not trade).
    Delete(String),
}

/// What to do with the finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finalizer {
    /// Nothing.
    Keep,
    /// Add it (before any child exists).
    Add,
    /// Remove it: the session may go, and its children with it.
    Remove,
}

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The operator's part of the status (see [`operator_part`]).
    pub status: TradingSessionStatus,
    /// The children.
    pub children: Children,
    /// The finalizer.
    pub finalizer: Finalizer,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to reconcile again if nothing is watched changing; `None`: only on a change.
    pub recheck: Option<Duration>,
}

/// The fields of `status` the operator owns: `phase`, `observedGeneration`, `message`, `holds`
/// and the `Ready` condition.
pub fn operator_part(status: &TradingSessionStatus) -> TradingSessionStatus {
    TradingSessionStatus {
        phase: status.phase,
        observed_generation: status.observed_generation,
        message: status.message.clone(),
        holds: status.holds.clone(),
        conditions: status.conditions.iter().filter(|c| c.type_ == CONDITION_READY).cloned().collect(),
        ..TradingSessionStatus::default()
    }
}

/// A key of what makes a session need a reconcile (its generation, deletion, the resume
/// annotation, and what the agent reports that moves the phase), for the watch's predicate
/// filter: the heartbeat alone, every 5 s, does not.
pub fn trigger(session: &TradingSession) -> Option<u64> {
    let status = session.status.clone().unwrap_or_default();
    let mut key = format!(
        "{:?}|{}|{:?}|{:?}|{}",
        session.metadata.generation,
        session.metadata.deletion_timestamp.is_some(),
        session.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_RESUME_AT)),
        status.open_orders,
        status.holds.len(),
    );
    for c in status.conditions.iter().filter(|c| c.type_ != CONDITION_READY) {
        key.push_str(&format!("|{}={}/{}", c.type_, c.status, c.reason));
    }
    Some(u64::from(crate::names::fnv1a(key.as_bytes())))
}

/// Decides what to do for `session` given what was observed, at time `now`. `image` is the
/// agent's image (see [`children::agent_image`]).
pub fn plan(
    session: &TradingSession,
    observed: Observed<'_>,
    agent: &AgentSettings,
    image: &str,
    now: &Time,
) -> Plan {
    let previous = session.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let holds = kept_holds(session, &previous.holds, &mut notes);
    let has_finalizer = session.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);

    if let Some(deleted) = &session.metadata.deletion_timestamp {
        let mut status = operator_part(&previous);
        if !has_finalizer {
            return Plan {
                status,
                children: Children::Keep,
                finalizer: Finalizer::Keep,
                notes,
                recheck: None,
            };
        }
        let (finalizer, message, recheck) = deletion(&previous, observed, deleted, now, &mut notes);
        status.message = Some(message);
        return Plan { status, children: Children::Keep, finalizer, notes, recheck };
    }
    let finalizer = if has_finalizer { Finalizer::Keep } else { Finalizer::Add };

    let decision = match refusal(session, observed) {
        Some((reason, message)) => {
            let children = match observed.stateful_set.and_then(|s| s.metadata.name.clone()) {
                Some(name) => Children::Delete(name),
                None => Children::Keep,
            };
            Decision {
                phase: SessionPhase::Failed,
                ready: Desired::new(CONDITION_READY, Status::False, reason, message),
                children,
                recheck: (reason != "LiveTradingNotAcknowledged").then_some(RECHECK_REFUSED),
            }
        }
        None => match children::build(session, agent, image) {
            Err(e) => Decision {
                phase: SessionPhase::Failed,
                ready: Desired::new(CONDITION_READY, Status::False, "InvalidSpec", e.to_string()),
                children: Children::Keep,
                recheck: None,
            },
            Ok(desired) => running(session, &previous, observed, desired, now),
        },
    };

    notes.extend(transition_notes(session, &previous, &decision));
    let generation = session.metadata.generation;
    let previous_ready: Vec<Condition> =
        previous.conditions.iter().filter(|c| c.type_ == CONDITION_READY).cloned().collect();
    let status = TradingSessionStatus {
        phase: Some(decision.phase),
        observed_generation: generation,
        message: Some(decision.ready.message.clone()),
        holds,
        conditions: conditions::merge(
            &previous_ready,
            std::slice::from_ref(&decision.ready),
            generation,
            now,
        ),
        ..TradingSessionStatus::default()
    };
    Plan { status, children: decision.children, finalizer, notes, recheck: decision.recheck }
}

/// The phase, the Ready condition, the children and the recheck a running (not deleted)
/// session gets.
struct Decision {
    phase: SessionPhase,
    ready: Desired,
    children: Children,
    recheck: Option<Duration>,
}

/// Why the operator refuses to run `session`, if it does: reason and message.
fn refusal(session: &TradingSession, observed: Observed<'_>) -> Option<(&'static str, String)> {
    let spec = &session.spec;
    if spec.mode != TradingMode::Live {
        return None;
    }
    if !spec.live_trading_acknowledged {
        return Some((
            "LiveTradingNotAcknowledged",
            "mode live places real orders with real money: set spec.liveTradingAcknowledged: true to allow it"
                .to_owned(),
        ));
    }
    let Some(secret) = &spec.exchange.credentials_secret_ref else {
        return Some((
            "CredentialsMissing",
            "mode live needs spec.exchange.credentialsSecretRef naming the Secret with the exchange's API key"
                .to_owned(),
        ));
    };
    if let Some(other) = owner_of_secret(session, &secret.name, observed.neighbours) {
        return Some((
            "CredentialsInUse",
            format!(
                "the Secret {} already serves the live session {other}: an exchange account's ledger belongs to one session",
                secret.name
            ),
        ));
    }
    // A running agent has its key files already: a Secret deleted since is not a reason to stop it.
    if observed.secret == Secret::Missing && observed.stateful_set.is_none() {
        return Some((
            "CredentialsMissing",
            format!(
                "the Secret {} does not exist in this namespace; create it with the keys {} and {} (no pod until then)",
                secret.name, secret.api_key_key, secret.api_secret_key
            ),
        ));
    }
    None
}

/// The name of an older live session of the namespace that trades with the Secret `secret`.
fn owner_of_secret(session: &TradingSession, secret: &str, neighbours: &[TradingSession]) -> Option<String> {
    let key = |s: &TradingSession| {
        (s.metadata.creation_timestamp.as_ref().map(|t| t.0), s.metadata.name.clone().unwrap_or_default())
    };
    neighbours
        .iter()
        .filter(|n| {
            n.metadata.uid != session.metadata.uid && n.metadata.namespace == session.metadata.namespace
        })
        .filter(|n| n.metadata.deletion_timestamp.is_none() && n.spec.mode == TradingMode::Live)
        .filter(|n| n.spec.exchange.credentials_secret_ref.as_ref().is_some_and(|r| r.name == secret))
        .filter(|n| key(n) < key(session))
        .min_by_key(|n| key(n))
        .and_then(|n| n.metadata.name.clone())
}

/// The holds of `previous` not cleared by the resume annotation (each one placed at or before
/// its time goes).
fn kept_holds(session: &TradingSession, previous: &[Hold], notes: &mut Vec<Note>) -> Vec<Hold> {
    let resume_at = match session.resume_at() {
        None => return previous.to_vec(),
        Some(Ok(at)) => at,
        Some(Err(text)) => {
            notes.push(Note {
            severity: Severity::Warning,
            reason: "InvalidResumeAt",
            message: format!(
                "the annotation {ANNOTATION_RESUME_AT} is {text:?}, not an RFC 3339 time like 2026-12-07T10:00:00Z; no hold is cleared"
            ),
            });
            return previous.to_vec();
        }
    };
    let (cleared, kept): (Vec<&Hold>, Vec<&Hold>) = previous.iter().partition(|h| h.since.0 <= resume_at);
    if !cleared.is_empty() {
        let sources: Vec<&str> = cleared.iter().map(|h| h.source.as_str()).collect();
        notes.push(Note {
            severity: Severity::Normal,
            reason: "HoldsCleared",
            message: format!(
                "{ANNOTATION_RESUME_AT} {resume_at} cleared the holds of {}",
                sources.join(", ")
            ),
        });
    }
    kept.into_iter().cloned().collect()
}

/// The agent container's status in `pod`.
fn agent_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == CONTAINER)
}

/// The agent container's state in `pod`.
fn agent_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    agent_status(pod)?.state.as_ref()
}

/// How the agent's last run in `pod` ended, when it failed: exit code and the end of its message.
fn last_failure(pod: &Pod) -> Option<String> {
    let ended = agent_status(pod)?.last_state.as_ref()?.terminated.as_ref()?;
    let message = ended.message.as_deref().unwrap_or_default().trim();
    let skip = message.chars().count().saturating_sub(400);
    Some(format!("exit code {}: {}", ended.exit_code, message.chars().skip(skip).collect::<String>()))
}

/// How long ago `then` was, at `now` (zero if in the future).
fn age(then: &Time, now: &Time) -> Duration {
    Duration::try_from(now.0.duration_since(then.0)).unwrap_or_default()
}

/// The decision for a session the operator runs: its children, and its phase from the pod and
/// the agent.
fn running(
    session: &TradingSession,
    previous: &TradingSessionStatus,
    observed: Observed<'_>,
    desired: (StatefulSet, Service),
    now: &Time,
) -> Decision {
    let Some(existing) = observed.stateful_set else {
        return Decision {
            phase: SessionPhase::Pending,
            ready: Desired::new(
                CONDITION_READY,
                Status::False,
                "Creating",
                "the agent's StatefulSet is created",
            ),
            children: Children::Apply(Box::new(desired)),
            recheck: None,
        };
    };
    let hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(ANNOTATION_SPEC_HASH).cloned())
    };
    let children =
        if hash(existing) == hash(&desired.0) { Children::Keep } else { Children::Apply(Box::new(desired)) };
    if children != Children::Keep {
        return Decision {
            phase: SessionPhase::Starting,
            ready: Desired::new(
                CONDITION_READY,
                Status::False,
                "Rolling",
                "the spec changed: the agent pod is replaced (it cancels its open orders as it stops; the next one recovers from the store)",
            ),
            children,
            recheck: Some(Duration::from_secs(10)),
        };
    }
    let starting = |reason: &'static str, message: String, recheck: u64| Decision {
        phase: SessionPhase::Starting,
        ready: Desired::new(CONDITION_READY, Status::False, reason, message),
        children: Children::Keep,
        recheck: Some(Duration::from_secs(recheck)),
    };
    let Some(state) = observed.pod.and_then(agent_state) else {
        return starting("PodStarting", "waiting for the agent pod to start".into(), 30);
    };
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        let known = crate::backtest::state::STUCK_REASONS
            .iter()
            .chain(&["CrashLoopBackOff", "RunContainerError"])
            .find(|r| **r == reason);
        return match known {
            Some(&"CreateContainerConfigError") if message.to_lowercase().contains("secret") => Decision {
                phase: SessionPhase::Failed,
                ready: Desired::new(CONDITION_READY, Status::False, "CredentialsMissing", message),
                children: Children::Keep,
                recheck: Some(RECHECK_REFUSED),
            },
            Some(reason) => Decision {
                phase: SessionPhase::Failed,
                ready: Desired::new(
                    CONDITION_READY,
                    Status::False,
                    reason,
                    match observed.pod.and_then(last_failure) {
                        Some(last) => {
                            format!("the agent pod cannot run: {reason}: {message}; its last run: {last}")
                        }
                        None => format!("the agent pod cannot run: {reason}: {message}"),
                    },
                ),
                children: Children::Keep,
                recheck: Some(RECHECK_REFUSED),
            },
            None => starting("PodStarting", format!("the agent pod is starting ({reason})"), 30),
        };
    }
    let Some(started) = state.running.as_ref().and_then(|r| r.started_at.clone()) else {
        return starting("PodStarting", "the agent container is not running".into(), 30);
    };
    // A heartbeat from before this container started is an earlier pod's.
    let heartbeat = previous.last_heartbeat.as_ref().filter(|h| h.0 >= started.0);
    let Some(beat) = heartbeat else {
        if age(&started, now) < HEARTBEAT_TIMEOUT {
            return starting("AwaitingHeartbeat", "waiting for the agent's first heartbeat".into(), 10);
        }
        return lost(format!(
            "the agent has not reported since its container started {}s ago",
            age(&started, now).as_secs()
        ));
    };
    let silent = age(beat, now);
    if silent > HEARTBEAT_TIMEOUT {
        return lost(format!("the agent's last heartbeat is {}s old (it beats every 5 s)", silent.as_secs()));
    }
    // Fresh: look again just after the heartbeat would be lost, if none comes.
    let recheck = Some(HEARTBEAT_TIMEOUT.saturating_sub(silent) + Duration::from_secs(1));
    let find = |kind: &str| previous.conditions.iter().find(|c| c.type_ == kind);
    let decision = |phase, status, reason, message: String| Decision {
        phase,
        ready: Desired::new(CONDITION_READY, status, reason, message),
        children: Children::Keep,
        recheck,
    };
    if let Some(halted) = find(CONDITION_HALTED).filter(|c| c.status == "True") {
        return decision(
            SessionPhase::Halted,
            Status::False,
            "Halted",
            format!("trading is halted: {}: {}", halted.reason, halted.message),
        );
    }
    match find(CONDITION_TRADING).map(|c| (c.status.as_str(), c.reason.as_str(), c.message.clone())) {
        Some(("True", _, _)) => decision(
            SessionPhase::Trading,
            Status::True,
            "Trading",
            format!("trading ({})", if session.spec.mode == TradingMode::Live { "live" } else { "paper" }),
        ),
        Some((_, "Suspended", _)) if session.spec.suspend => decision(
            SessionPhase::Suspended,
            Status::True,
            "Suspended",
            "spec.suspend is true: open orders cancelled, no new ones; market data keeps flowing".into(),
        ),
        Some((_, "Suspended", _)) => decision(
            SessionPhase::Suspended,
            Status::False,
            "Resuming",
            "the agent lifts the kill switch".into(),
        ),
        // Before it first trades, an agent waits for its first market data: still starting.
        Some((_, "StaleMarketData", message))
            if matches!(previous.phase, None | Some(SessionPhase::Pending | SessionPhase::Starting)) =>
        {
            decision(SessionPhase::Starting, Status::False, "StaleMarketData", message)
        }
        Some((_, "StaleMarketData", message)) => {
            decision(SessionPhase::Degraded, Status::False, "StaleMarketData", message)
        }
        // The pod is being replaced (SIGTERM): its orders cancelled, the next pod starts.
        Some((_, "Stopping", message)) => {
            decision(SessionPhase::Starting, Status::False, "Stopping", message)
        }
        Some((_, "NoTradingLease", message)) => {
            decision(SessionPhase::Starting, Status::False, "NoTradingLease", message)
        }
        Some((_, _, message)) => decision(SessionPhase::Degraded, Status::False, "NotTrading", message),
        None => decision(
            SessionPhase::Starting,
            Status::False,
            "AwaitingHeartbeat",
            "the agent has not reported its conditions yet".into(),
        ),
    }
}

/// An agent that stopped reporting.
fn lost(message: String) -> Decision {
    Decision {
        phase: SessionPhase::Degraded,
        ready: Desired::new(CONDITION_READY, Status::False, "HeartbeatLost", message),
        children: Children::Keep,
        recheck: Some(HEARTBEAT_TIMEOUT),
    }
}

/// A deleted session with the finalizer: whether it may go now (the agent has cancelled its
/// orders, or it is not running, or the wait is over), the status message, and the recheck.
fn deletion(
    previous: &TradingSessionStatus,
    observed: Observed<'_>,
    deleted: &Time,
    now: &Time,
    notes: &mut Vec<Note>,
) -> (Finalizer, String, Option<Duration>) {
    let open = previous.open_orders.unwrap_or(0);
    let started = observed.pod.and_then(agent_state).and_then(|s| s.running.as_ref()?.started_at.clone());
    let fresh =
        |beat: &&Time| started.as_ref().is_some_and(|s| beat.0 >= s.0) && age(beat, now) <= HEARTBEAT_TIMEOUT;
    let beat = previous.last_heartbeat.as_ref().filter(fresh);
    let saw_deletion =
        previous.conditions.iter().any(|c| c.type_ == CONDITION_TRADING && c.reason == "Deleting");
    match beat {
        Some(beat) if saw_deletion && beat.0 >= deleted.0 && open == 0 => {
            notes.push(Note {
                severity: Severity::Normal,
                reason: "OrdersCancelled",
                message: "the agent cancelled every open order; the session and its pod go".into(),
            });
            (Finalizer::Remove, "deleted: no open order left".into(), None)
        }
        None => {
            if open > 0 {
                notes.push(Note {
                    severity: Severity::Warning,
                    reason: "OrdersMayRemainOpen",
                    message: format!(
                        "the agent is not running to cancel the {open} orders it last reported open; check the exchange"
                    ),
                });
            }
            (Finalizer::Remove, "deleted: the agent is not running".into(), None)
        }
        Some(_) if age(deleted, now) >= CANCEL_TIMEOUT => {
            notes.push(Note {
                severity: Severity::Warning,
                reason: "CancelTimedOut",
                message: format!(
                    "the agent did not report its orders cancelled within {}s ({open} last reported open); check the exchange",
                    CANCEL_TIMEOUT.as_secs()
                ),
            });
            (
                Finalizer::Remove,
                "deleted: the agent did not confirm its orders cancelled in time".into(),
                None,
            )
        }
        Some(_) => (
            Finalizer::Keep,
            format!("deleting: waiting for the agent to cancel its open orders ({open} open)"),
            Some(RECHECK_DELETING),
        ),
    }
}

/// The Events a change of phase or of the Ready reason deserves.
fn transition_notes(
    session: &TradingSession,
    previous: &TradingSessionStatus,
    decision: &Decision,
) -> Vec<Note> {
    let before = previous.phase;
    let was = previous.conditions.iter().find(|c| c.type_ == CONDITION_READY).map(|c| c.reason.as_str());
    let reason = decision.ready.reason;
    let note = |severity, reason, message: String| vec![Note { severity, reason, message }];
    let message = decision.ready.message.clone();
    match decision.phase {
        _ if was == Some(reason) && before == Some(decision.phase) => Vec::new(),
        SessionPhase::Trading => match before {
            Some(SessionPhase::Suspended | SessionPhase::Halted) => {
                note(Severity::Normal, "Resumed", "trading again".into())
            }
            Some(SessionPhase::Degraded | SessionPhase::Failed) => note(
                Severity::Normal,
                "Recovered",
                format!("trading again after {}", was.unwrap_or("a fault")),
            ),
            Some(SessionPhase::Trading) => Vec::new(),
            _ => note(
                Severity::Normal,
                "Started",
                format!(
                    "{message} on {} for {}",
                    session.spec.exchange.name,
                    session.spec.symbols.join(", ")
                ),
            ),
        },
        SessionPhase::Suspended if before != Some(SessionPhase::Suspended) => {
            note(Severity::Normal, "Suspended", message)
        }
        SessionPhase::Halted if before != Some(SessionPhase::Halted) => {
            note(Severity::Warning, "Halted", message)
        }
        SessionPhase::Pending if reason == "Creating" => note(Severity::Normal, "Created", message),
        _ if was == Some(reason) => Vec::new(),
        SessionPhase::Failed | SessionPhase::Degraded => note(Severity::Warning, reason, message),
        _ if reason == "Rolling" => note(Severity::Normal, "Rolling", message),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
