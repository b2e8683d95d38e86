//! The reconcile decision for one Backtest, as a pure function of what was read: the status to
//! write, the one action on its Job, the Events to record and when to look again.
//!
//! Restart safety rests on three rules:
//! - the Job's name is derived from the Backtest, and a Job is created only when none exists, so
//!   a restarted operator finds the Job it made;
//! - once `status.jobName` is recorded, a missing Job is never recreated (the run is reported
//!   lost instead);
//! - a finished run is recorded in status before the Job gets its TTL, so the Job and its pod,
//!   which hold the result, never disappear before the result is read. After that, a terminal
//!   status is final: nothing is recreated or rerun.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kuant_crds::backtest::{
    BacktestPhase, BacktestResults, CONDITION_COMPLETE, CONDITION_FAILED, CONDITION_PROGRESSING,
};
use kuant_crds::{Backtest, BacktestDisplay, BacktestStatus};

use super::job::{self, AgentSettings};
use super::state::{self, RunState};
use super::validate;
use crate::conditions::{self, Desired, Status};

/// How long a pod may fail to start its container (e.g. an image that cannot be pulled) before
/// the run is failed: long enough for a registry hiccup, short enough that a typo is reported.
pub const STUCK_GRACE: Duration = Duration::from_secs(300);
/// How often a running Backtest is looked at when nothing changes (watches bring changes sooner).
pub const RECHECK_RUNNING: Duration = Duration::from_secs(300);

/// What the controller should do to the Backtest's Job.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing.
    None,
    /// Create this Job (there is none).
    Create(Box<Job>),
    /// Give the finished Job its `ttlSecondsAfterFinished` now that its result is recorded.
    SetTtl {
        /// The Job.
        job: String,
        /// Seconds.
        seconds: i32,
    },
    /// Delete the Job: its pod can never start, and its retries would only add noise.
    Delete {
        /// The Job.
        job: String,
    },
}

/// Normal or Warning, as `kubectl describe` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something went as planned.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// An Event to record on the Backtest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to write (everything but `progress`, which is the agent's).
    pub status: BacktestStatus,
    /// The action on the Job.
    pub action: Action,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to reconcile again if nothing happens; `None`: only on a change.
    pub recheck: Option<Duration>,
}

/// What the reconcile read: the Backtest's Job (by its derived name) and that Job's pods.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The Job, if it exists.
    pub job: Option<&'a Job>,
    /// Its pods.
    pub pods: &'a [Pod],
}

/// Decides what to do for `backtest` given what was observed, at time `now`.
pub fn plan(backtest: &Backtest, observed: Observed<'_>, agent: &AgentSettings, now: &Time) -> Plan {
    let previous = backtest.status.clone().unwrap_or_default();
    let generation = backtest.metadata.generation;
    let ttl = backtest.spec.runner.as_ref().and_then(|r| r.ttl_seconds_after_finished);
    let job_name = observed.job.and_then(|j| j.metadata.name.clone()).or(previous.job_name.clone());
    let set_ttl = |job: Option<&Job>| match (job, ttl) {
        (Some(j), Some(seconds)) if j.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished).is_none() => {
            j.metadata.name.clone().map(|job| Action::SetTtl { job, seconds }).unwrap_or(Action::None)
        }
        _ => Action::None,
    };

    // A finished run is final: keep what was recorded, only give the Job its TTL.
    if is_terminal(&previous) {
        let mut status = previous.clone();
        status.progress = None;
        status.display = Some(BacktestDisplay::of(&backtest.spec.market.symbols, status.results.as_ref()));
        return Plan { status, action: set_ttl(observed.job), notes: Vec::new(), recheck: None };
    }

    let outcome = match observed.job {
        None if previous.job_name.is_some() => Outcome::Failed {
            reason: "JobDeleted",
            message: format!(
                "the Job {} was deleted before the run finished; create a new Backtest to run again",
                previous.job_name.as_deref().unwrap_or_default()
            ),
            at: None,
        },
        None => match validate::spec(&backtest.spec) {
            Err(problem) => Outcome::Failed { reason: "InvalidSpec", message: problem, at: None },
            Ok(()) => match job::build(backtest, agent) {
                Ok(job) => Outcome::Create(Box::new(job)),
                Err(e) => Outcome::Failed { reason: "InvalidSpec", message: e.to_string(), at: None },
            },
        },
        Some(job) => match state::of(job, observed.pods) {
            RunState::Pending => {
                Outcome::Pending { reason: "Pending", message: "waiting for the agent pod to start".into() }
            }
            RunState::Stuck { reason, message, since, hopeless } => {
                let waited = since.map(|s| now.0.duration_since(s.0)).unwrap_or_default();
                let text = format!("the agent pod cannot start: {reason}: {message}");
                if hopeless || waited >= jiff::SignedDuration::try_from(STUCK_GRACE).unwrap_or_default() {
                    Outcome::FailedDelete { reason: stuck_reason(&reason), message: text }
                } else {
                    Outcome::Pending { reason: "PodNotStarting", message: text }
                }
            }
            RunState::Running { since } => Outcome::Running { since },
            RunState::Succeeded { at, report: Ok(report) } => match report.results {
                Some(results) => Outcome::Succeeded { at, results, warning: report.warning },
                None => Outcome::Failed {
                    reason: "ResultsUnreadable",
                    message: "the agent's report has no results".into(),
                    at,
                },
            },
            RunState::Succeeded { at, report: Err(problem) } => {
                Outcome::Failed { reason: "ResultsUnreadable", message: problem, at }
            }
            RunState::Failed { at, reason, message } => Outcome::Failed { reason, message, at },
        },
    };

    let mut status = BacktestStatus {
        observed_generation: generation,
        job_name: job_name.clone(),
        start_time: previous.start_time.clone(),
        ..Default::default()
    };
    let mut warning = None;
    let (phase, desired, action, recheck) = match outcome {
        Outcome::Create(job) => {
            status.job_name = job.metadata.name.clone();
            (
                BacktestPhase::Pending,
                vec![
                    Desired::new(
                        CONDITION_PROGRESSING,
                        Status::True,
                        "JobCreated",
                        "the Job is created; waiting for its pod",
                    ),
                    not_finished(),
                    not_failed(),
                ],
                Action::Create(job),
                None,
            )
        }
        Outcome::Pending { reason, message } => (
            BacktestPhase::Pending,
            vec![
                Desired::new(CONDITION_PROGRESSING, Status::True, reason, message),
                not_finished(),
                not_failed(),
            ],
            Action::None,
            // A stuck pod turns into a failure after the grace period even if nothing changes.
            Some(if reason == "PodNotStarting" { Duration::from_secs(30) } else { RECHECK_RUNNING }),
        ),
        Outcome::Running { since } => {
            status.start_time = status.start_time.or(since).or_else(|| Some(now.clone()));
            (
                BacktestPhase::Running,
                vec![
                    Desired::new(
                        CONDITION_PROGRESSING,
                        Status::True,
                        "Running",
                        "the agent is running the backtest",
                    ),
                    not_finished(),
                    not_failed(),
                ],
                Action::None,
                Some(RECHECK_RUNNING),
            )
        }
        Outcome::Succeeded { at, results, warning: agent_warning } => {
            warning = agent_warning;
            status.completion_time = at.or_else(|| Some(now.clone()));
            let summary = summary(&results);
            status.results = Some(results);
            (
                BacktestPhase::Succeeded,
                vec![
                    Desired::new(CONDITION_PROGRESSING, Status::False, "Finished", "the run is over"),
                    Desired::new(CONDITION_COMPLETE, Status::True, "Succeeded", summary),
                    Desired::new(CONDITION_FAILED, Status::False, "Succeeded", "the run succeeded"),
                ],
                set_ttl(observed.job),
                None,
            )
        }
        Outcome::Failed { reason, message, at } => {
            status.completion_time = at.or_else(|| Some(now.clone()));
            (BacktestPhase::Failed, failed(reason, message), set_ttl(observed.job), None)
        }
        Outcome::FailedDelete { reason, message } => {
            status.completion_time = Some(now.clone());
            let action = job_name.clone().map(|job| Action::Delete { job }).unwrap_or(Action::None);
            (BacktestPhase::Failed, failed(reason, message), action, None)
        }
    };
    status.phase = Some(phase);
    status.display = Some(BacktestDisplay::of(&backtest.spec.market.symbols, status.results.as_ref()));
    status.conditions = conditions::merge(&previous.conditions, &desired, generation, now);
    status.message = desired.iter().find(|d| d.status == Status::True).map(|d| d.message.clone());
    let mut notes = notes(&previous, &status, &action);
    // The agent's warning (its results are not in the store, say), once: when the run finishes.
    if let Some(message) = warning
        && previous.phase != status.phase
    {
        notes.push(Note { severity: Severity::Warning, reason: "AgentWarning", message });
    }
    Plan { status, action, notes, recheck }
}

/// Whether the status records a finished run (succeeded or failed).
pub fn is_terminal(status: &BacktestStatus) -> bool {
    conditions::is_true(&status.conditions, CONDITION_COMPLETE)
        || conditions::is_true(&status.conditions, CONDITION_FAILED)
}

enum Outcome {
    Create(Box<Job>),
    Pending { reason: &'static str, message: String },
    Running { since: Option<Time> },
    Succeeded { at: Option<Time>, results: BacktestResults, warning: Option<String> },
    Failed { reason: &'static str, message: String, at: Option<Time> },
    FailedDelete { reason: &'static str, message: String },
}

fn not_finished() -> Desired {
    Desired::new(CONDITION_COMPLETE, Status::False, "NotFinished", "the run has not finished")
}

fn not_failed() -> Desired {
    Desired::new(CONDITION_FAILED, Status::False, "NotFailed", "no failure so far")
}

fn failed(reason: &'static str, message: String) -> Vec<Desired> {
    vec![
        Desired::new(CONDITION_PROGRESSING, Status::False, "Failed", "the run is over"),
        Desired::new(CONDITION_COMPLETE, Status::False, "Failed", "the run failed"),
        Desired::new(CONDITION_FAILED, Status::True, reason, message),
    ]
}

fn stuck_reason(kubelet_reason: &str) -> &'static str {
    match kubelet_reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => "ImagePullFailed",
        _ => "PodNotStarting",
    }
}

fn summary(r: &BacktestResults) -> String {
    let sharpe = r.sharpe.map(|s| format!(", Sharpe {s:.2}")).unwrap_or_default();
    format!(
        "final equity {}, return {:.2} %, max drawdown {:.2} %, {} trades{sharpe}",
        r.final_equity, r.total_return_pct, r.max_drawdown_pct, r.trades
    )
}

/// Events for what changed between `before` and `after`.
fn notes(before: &BacktestStatus, after: &BacktestStatus, action: &Action) -> Vec<Note> {
    let mut notes = Vec::new();
    let note = |severity, reason, message: String| Note { severity, reason, message };
    if let Action::Create(job) = action {
        let name = job.metadata.name.clone().unwrap_or_default();
        notes.push(note(Severity::Normal, "JobCreated", format!("created Job {name} to run the backtest")));
    }
    if let Action::Delete { job } = action {
        notes.push(note(Severity::Warning, "JobDeleted", format!("deleted Job {job}: its pod cannot start")));
    }
    if before.phase == after.phase {
        return notes;
    }
    let condition_message = |type_: &str| {
        after.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).unwrap_or_default()
    };
    match after.phase {
        Some(BacktestPhase::Running) => {
            notes.push(note(Severity::Normal, "Started", "the agent started the backtest".into()))
        }
        Some(BacktestPhase::Succeeded) => {
            notes.push(note(Severity::Normal, "Completed", condition_message(CONDITION_COMPLETE)))
        }
        Some(BacktestPhase::Failed) => {
            let reason =
                after.conditions.iter().find(|c| c.type_ == CONDITION_FAILED).map(|c| c.reason.clone());
            let message = format!("{}: {}", reason.unwrap_or_default(), condition_message(CONDITION_FAILED));
            notes.push(note(Severity::Warning, "Failed", message));
        }
        Some(BacktestPhase::Pending) | None => {}
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::fixtures::{self, at};

    fn condition<'a>(status: &'a BacktestStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).expect(type_);
        (c.status.as_str(), c.reason.as_str())
    }

    fn run(bt: &Backtest, job: Option<&Job>, pods: &[Pod], minute: i64) -> Plan {
        plan(bt, Observed { job, pods }, &fixtures::agent(), &at(minute))
    }

    /// `bt` with the status a plan wrote, as the next reconcile reads it.
    fn after(mut bt: Backtest, plan: &Plan) -> Backtest {
        bt.status = Some(plan.status.clone());
        bt
    }

    #[test]
    fn a_new_backtest_gets_its_job_and_every_condition() {
        let bt = fixtures::backtest("bt");
        let p = run(&bt, None, &[], 0);
        let Action::Create(job) = &p.action else { panic!("create: {:?}", p.action) };
        assert_eq!(p.status.job_name, job.metadata.name);
        assert_eq!(p.status.phase, Some(BacktestPhase::Pending));
        assert_eq!(p.status.observed_generation, Some(1));
        assert_eq!(condition(&p.status, CONDITION_PROGRESSING), ("True", "JobCreated"));
        assert_eq!(condition(&p.status, CONDITION_COMPLETE), ("False", "NotFinished"));
        assert_eq!(condition(&p.status, CONDITION_FAILED), ("False", "NotFailed"));
        assert!(p.status.conditions.iter().all(|c| c.observed_generation == Some(1)));
        assert_eq!(p.notes[0].reason, "JobCreated");
    }

    #[test]
    fn an_existing_job_is_never_created_again() {
        // An operator restarted right after creating the Job, before it wrote the status.
        let bt = fixtures::backtest("bt");
        let job = fixtures::job(&bt);
        let p = run(&bt, Some(&job), &[], 1);
        assert_eq!(p.action, Action::None);
        assert_eq!(p.status.job_name, job.metadata.name);
    }

    #[test]
    fn a_running_job_makes_the_backtest_running_with_a_start_time_and_one_event() {
        let bt = fixtures::backtest("bt");
        let created = run(&bt, None, &[], 0);
        let bt = after(bt, &created);
        let job = fixtures::job_with(fixtures::job(&bt), 1, None);
        let pods = [fixtures::pod(&job, fixtures::running())];
        let p = run(&bt, Some(&job), &pods, 3);
        assert_eq!(p.status.phase, Some(BacktestPhase::Running));
        assert_eq!(p.status.start_time, Some(at(2)));
        assert_eq!(condition(&p.status, CONDITION_PROGRESSING), ("True", "Running"));
        assert_eq!(p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), ["Started"]);
        assert_eq!(p.recheck, Some(RECHECK_RUNNING));
        // Progressing stayed True: its transition time is still the creation's.
        let t = |s: &BacktestStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CONDITION_PROGRESSING)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(t(&p.status), t(&created.status));
        // Nothing changes on the next look: no new event.
        let again = run(&after(bt, &p), Some(&job), &pods, 4);
        assert!(again.notes.is_empty());
        assert_eq!(again.status, p.status);
    }

    #[test]
    fn an_agent_warning_becomes_one_warning_event_and_the_run_still_succeeds() {
        let bt = after(fixtures::backtest("bt"), &run(&fixtures::backtest("bt"), None, &[], 0));
        let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Complete", "CompletionsReached", "")));
        let mut report: serde_json::Value = serde_json::from_str(&fixtures::results_message()).expect("json");
        report["warning"] = "the run is not saved to the store: connection refused".into();
        let pods = [fixtures::pod(&job, fixtures::terminated(0, "Completed", &report.to_string()))];
        let p = run(&bt, Some(&job), &pods, 11);
        assert_eq!(p.status.phase, Some(BacktestPhase::Succeeded));
        assert_eq!(p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), ["Completed", "AgentWarning"]);
        let warning = &p.notes[1];
        assert_eq!(warning.severity, Severity::Warning);
        assert!(warning.message.contains("not saved to the store"), "{}", warning.message);
        assert!(run(&after(bt, &p), Some(&job), &pods, 20).notes.is_empty(), "once");
    }

    #[test]
    fn a_succeeded_job_records_results_then_gets_its_ttl() {
        let bt = after(fixtures::backtest("bt"), &run(&fixtures::backtest("bt"), None, &[], 0));
        let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Complete", "CompletionsReached", "")));
        let pods = [fixtures::pod(&job, fixtures::terminated(0, "Completed", &fixtures::results_message()))];
        let p = run(&bt, Some(&job), &pods, 11);
        assert_eq!(p.status.phase, Some(BacktestPhase::Succeeded));
        assert_eq!(condition(&p.status, CONDITION_COMPLETE), ("True", "Succeeded"));
        assert_eq!(condition(&p.status, CONDITION_PROGRESSING), ("False", "Finished"));
        assert_eq!(p.status.results.as_ref().map(|r| r.final_equity.to_string()), Some("10250.50".into()));
        assert_eq!(p.status.completion_time, Some(at(10)));
        let message =
            &p.status.conditions.iter().find(|c| c.type_ == CONDITION_COMPLETE).expect("complete").message;
        assert!(message.starts_with("final equity 10250.50, return 2.51 %"), "{message}");
        assert_eq!(
            p.action,
            Action::SetTtl { job: job.metadata.name.clone().unwrap_or_default(), seconds: 86400 }
        );
        assert_eq!(p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), ["Completed"]);
        assert_eq!(p.recheck, None);

        // Later: terminal, nothing moves; the TTL is asked for only while the Job lacks it.
        let done = after(bt, &p);
        let again = run(&done, Some(&job), &pods, 20);
        assert_eq!(again.status.results, p.status.results);
        assert!(again.notes.is_empty());
        let mut with_ttl = job.clone();
        with_ttl.spec.as_mut().expect("spec").ttl_seconds_after_finished = Some(86400);
        assert_eq!(run(&done, Some(&with_ttl), &pods, 21).action, Action::None);
        // The TTL removed the Job: the result stays and nothing is recreated.
        let gone = run(&done, None, &[], 30);
        assert_eq!((gone.action, gone.status.results), (Action::None, p.status.results.clone()));
    }

    #[test]
    fn a_failed_job_fails_the_backtest_with_the_pods_reason() {
        let bt = after(fixtures::backtest("bt"), &run(&fixtures::backtest("bt"), None, &[], 0));
        let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Failed", "PodFailurePolicy", "x")));
        let pods = [fixtures::pod(&job, fixtures::terminated(137, "OOMKilled", ""))];
        let p = run(&bt, Some(&job), &pods, 11);
        assert_eq!(p.status.phase, Some(BacktestPhase::Failed));
        assert_eq!(condition(&p.status, CONDITION_FAILED), ("True", "OOMKilled"));
        assert_eq!(condition(&p.status, CONDITION_COMPLETE), ("False", "Failed"));
        let note = &p.notes[0];
        assert_eq!((note.severity, note.reason), (Severity::Warning, "Failed"));
        assert!(note.message.starts_with("OOMKilled: the agent ran out of memory"), "{}", note.message);
        assert!(p.status.message.as_deref().is_some_and(|m| m.contains("out of memory")));
    }

    #[test]
    fn an_image_that_never_pulls_fails_after_the_grace_period_and_the_job_goes() {
        let bt = after(fixtures::backtest("bt"), &run(&fixtures::backtest("bt"), None, &[], 0));
        let job = fixtures::job_with(fixtures::job(&bt), 1, None);
        let pods =
            [fixtures::pod(&job, fixtures::waiting("ImagePullBackOff", "Back-off pulling image \"nope\""))];
        let early = run(&bt, Some(&job), &pods, 1);
        assert_eq!(early.status.phase, Some(BacktestPhase::Pending));
        assert_eq!(condition(&early.status, CONDITION_PROGRESSING), ("True", "PodNotStarting"));
        assert_eq!(early.recheck, Some(Duration::from_secs(30)));
        let late = run(&after(bt, &early), Some(&job), &pods, 6);
        assert_eq!(condition(&late.status, CONDITION_FAILED), ("True", "ImagePullFailed"));
        assert_eq!(late.action, Action::Delete { job: job.metadata.name.clone().unwrap_or_default() });
    }

    #[test]
    fn an_invalid_spec_fails_once_and_stays_failed_without_rechecks() {
        let mut bt = fixtures::backtest("bt");
        bt.spec.strategy.params.insert("fast".into(), 50.0);
        let p = run(&bt, None, &[], 0);
        assert_eq!(p.action, Action::None);
        assert_eq!(condition(&p.status, CONDITION_FAILED), ("True", "InvalidSpec"));
        assert_eq!(p.recheck, None);
        assert_eq!(p.notes.len(), 1);
        let again = run(&after(bt, &p), None, &[], 1);
        assert!(again.notes.is_empty() && again.action == Action::None);
    }

    #[test]
    fn a_job_deleted_before_the_end_is_reported_not_recreated() {
        let bt = after(fixtures::backtest("bt"), &run(&fixtures::backtest("bt"), None, &[], 0));
        let p = run(&bt, None, &[], 5);
        assert_eq!(p.action, Action::None);
        assert_eq!(condition(&p.status, CONDITION_FAILED), ("True", "JobDeleted"));
    }

    #[test]
    fn the_operator_never_writes_the_agents_progress() {
        let mut bt = fixtures::backtest("bt");
        let mut status = run(&bt, None, &[], 0).status;
        status.progress =
            Some(kuant_crds::backtest::Progress { candles_processed: 5, candles_total: 10, percent: 50.0 });
        bt.status = Some(status);
        let job = fixtures::job(&bt);
        assert_eq!(run(&bt, Some(&job), &[], 1).status.progress, None);
    }
}
