//! What a Backtest's Job and pods say about its run: read from the objects alone (pure), in the
//! terms a user needs (running since when, finished with which results, failed why).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kuant_crds::backtest::AgentReport;

use super::job::CONTAINER;

/// Label the Job controller puts on each pod of a Job, with the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Waiting reasons of a container that will not start without a change to the Job or cluster.
pub(crate) const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// Of those, the ones no waiting can fix.
const HOPELESS_REASONS: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];

/// Where a Backtest's run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// The Job exists; no pod is running yet.
    Pending,
    /// A pod cannot start its container (e.g. the image cannot be pulled) since `since`.
    Stuck {
        /// The kubelet's reason, e.g. `ImagePullBackOff`.
        reason: String,
        /// The kubelet's message.
        message: String,
        /// When the pod was created.
        since: Option<Time>,
        /// No waiting can fix it (e.g. an invalid image name).
        hopeless: bool,
    },
    /// The agent runs.
    Running {
        /// When it started.
        since: Option<Time>,
    },
    /// The Job succeeded.
    Succeeded {
        /// When.
        at: Option<Time>,
        /// The agent's report, or why it could not be read.
        report: Result<AgentReport, String>,
    },
    /// The Job failed.
    Failed {
        /// When.
        at: Option<Time>,
        /// CamelCase reason for the Backtest's `Failed` condition.
        reason: &'static str,
        /// Why, for a human.
        message: String,
    },
}

/// The run state of `job` with `pods` (the pods of this Job; others are ignored).
pub fn of(job: &Job, pods: &[Pod]) -> RunState {
    let pods: Vec<&Pod> = pods.iter().filter(|p| belongs_to(p, job)).collect();
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True").cloned()
    };
    if let Some(done) = condition("Complete") {
        let at = status.completion_time.clone().or(done.last_transition_time);
        let report = match last_terminated(&pods, |t| t.exit_code == 0) {
            Some(t) => read_report(t.message.as_deref()),
            None => Err("the Job succeeded but its pod is gone, and with it the agent's report".to_owned()),
        };
        return RunState::Succeeded { at, report };
    }
    if let Some(failed) = condition("Failed") {
        let at = failed.last_transition_time.clone();
        let (reason, message) = failure(failed.reason.as_deref(), failed.message.as_deref(), job, &pods);
        return RunState::Failed { at, reason, message };
    }
    let mut running_since = None;
    for pod in &pods {
        for cs in agent_statuses(pod) {
            let Some(state) = &cs.state else { continue };
            if let Some(running) = &state.running {
                running_since = Some(running.started_at.clone());
            }
            if let Some(waiting) = &state.waiting
                && let Some(reason) = waiting.reason.as_deref().filter(|r| STUCK_REASONS.contains(r))
            {
                return RunState::Stuck {
                    reason: reason.to_owned(),
                    message: waiting.message.clone().unwrap_or_default(),
                    since: pod.metadata.creation_timestamp.clone(),
                    hopeless: HOPELESS_REASONS.contains(&reason),
                };
            }
        }
    }
    match running_since {
        Some(since) => RunState::Running { since: since.or(status.start_time) },
        None => RunState::Pending,
    }
}

fn belongs_to(pod: &Pod, job: &Job) -> bool {
    let by_owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && Some(&o.uid) == job.metadata.uid.as_ref());
    let labels = pod.metadata.labels.as_ref();
    let by_label = job.metadata.name.is_some()
        && labels.and_then(|l| l.get(JOB_NAME_LABEL).or(l.get("job-name"))) == job.metadata.name.as_ref();
    by_owner || by_label
}

fn agent_statuses(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).filter(|c| c.name == CONTAINER)
}

/// The agent container's last termination matching `which`, latest first.
fn last_terminated<'a>(
    pods: &[&'a Pod],
    which: impl Fn(&ContainerStateTerminated) -> bool,
) -> Option<&'a ContainerStateTerminated> {
    pods.iter()
        .flat_map(|p| agent_statuses(p))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter(|t| which(t))
        .max_by_key(|t| t.finished_at.as_ref().map(|f| f.0))
}

fn read_report(message: Option<&str>) -> Result<AgentReport, String> {
    let text = message.map(str::trim).filter(|m| !m.is_empty()).ok_or_else(|| {
        "the agent finished without writing its report to the termination message".to_owned()
    })?;
    let report: AgentReport = serde_json::from_str(text)
        .map_err(|e| format!("the agent's report is not valid JSON ({e}): {}", clip(text)))?;
    if report.results.is_none() {
        return Err(format!("the agent's report has no results: {}", clip(text)));
    }
    Ok(report)
}

/// The Backtest's failure reason and message from the Job's `Failed` condition and the pods.
fn failure(
    job_reason: Option<&str>,
    job_message: Option<&str>,
    job: &Job,
    pods: &[&Pod],
) -> (&'static str, String) {
    if job_reason == Some("DeadlineExceeded") {
        let limit = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let limit = limit.map(|s| format!(" ({s} s)")).unwrap_or_default();
        return ("DeadlineExceeded", format!("the run took longer than runner.activeDeadlineSeconds{limit}"));
    }
    if let Some(t) = last_terminated(pods, |t| t.exit_code != 0) {
        let said = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(|m| {
            match serde_json::from_str::<AgentReport>(m).ok().and_then(|r| r.error) {
                Some(error) => error,
                None => last_lines(m),
            }
        });
        let said = said.map(|s| format!(": {s}")).unwrap_or_default();
        return match (t.reason.as_deref(), t.exit_code) {
            (Some("OOMKilled"), _) => (
                "OOMKilled",
                format!(
                    "the agent ran out of memory (exit code {}); raise runner.resources.limits.memory{said}",
                    t.exit_code
                ),
            ),
            (_, 2) => ("InvalidInput", format!("the agent refused its input (exit code 2){said}")),
            (_, 1) => ("AgentError", format!("the agent failed (exit code 1){said}")),
            (reason, code) => (
                "AgentError",
                format!(
                    "the agent ended with exit code {code}{}{said}",
                    reason.map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            ),
        };
    }
    let message =
        job_message.filter(|m| !m.is_empty()).unwrap_or("the Job failed and left no pod to say why");
    ("JobFailed", format!("{}{}", job_reason.map(|r| format!("{r}: ")).unwrap_or_default(), message))
}

/// The end of a log tail, on one line, short enough for a condition message.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    clip(&lines[lines.len().saturating_sub(3)..].join(" | "))
}

fn clip(text: &str) -> String {
    const MAX: usize = 512;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::fixtures::{self, at};

    fn bt_job() -> Job {
        fixtures::job(&fixtures::backtest("bt"))
    }

    #[test]
    fn a_job_without_pods_is_pending() {
        assert_eq!(of(&bt_job(), &[]), RunState::Pending);
    }

    #[test]
    fn a_running_agent_is_running_since_its_start() {
        let job = fixtures::job_with(bt_job(), 1, None);
        let pod = fixtures::pod(&job, fixtures::running());
        assert_eq!(of(&job, &[pod]), RunState::Running { since: Some(at(2)) });
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_stuck_and_an_invalid_name_is_hopeless() {
        let job = fixtures::job_with(bt_job(), 1, None);
        let pod = fixtures::pod(&job, fixtures::waiting("ImagePullBackOff", "Back-off pulling image"));
        assert!(
            matches!(of(&job, &[pod]), RunState::Stuck { ref reason, hopeless: false, .. } if reason == "ImagePullBackOff")
        );
        let pod = fixtures::pod(&job, fixtures::waiting("InvalidImageName", "bad"));
        assert!(matches!(of(&job, &[pod]), RunState::Stuck { hopeless: true, .. }));
        // An ordinary wait is not stuck.
        let pod = fixtures::pod(&job, fixtures::waiting("ContainerCreating", ""));
        assert_eq!(of(&job, &[pod]), RunState::Pending);
    }

    #[test]
    fn a_completed_job_gives_the_agents_results() {
        let job = fixtures::job_with(bt_job(), 0, Some(("Complete", "CompletionsReached", "")));
        let pod = fixtures::pod(&job, fixtures::terminated(0, "Completed", &fixtures::results_message()));
        let RunState::Succeeded { at: when, report } = of(&job, &[pod]) else { panic!("succeeded") };
        assert_eq!(when, Some(at(10)));
        let report = report.expect("report");
        assert_eq!(report.results.map(|r| r.trades), Some(12));
        assert_eq!(report.candles, Some(20000));
    }

    #[test]
    fn a_completed_job_without_a_readable_report_says_so() {
        let job = fixtures::job_with(bt_job(), 0, Some(("Complete", "CompletionsReached", "")));
        let garbled = fixtures::pod(&job, fixtures::terminated(0, "Completed", "not json"));
        let RunState::Succeeded { report, .. } = of(&job, &[garbled]) else { panic!("succeeded") };
        assert!(report.expect_err("unreadable").contains("not valid JSON"));
        let RunState::Succeeded { report, .. } = of(&job, &[]) else { panic!("succeeded") };
        assert!(report.expect_err("gone").contains("pod is gone"));
    }

    #[test]
    fn failures_carry_the_reason_from_the_pod() {
        let failed = || {
            fixtures::job_with(
                bt_job(),
                0,
                Some(("Failed", "PodFailurePolicy", "Container agent for pod x failed")),
            )
        };
        let oom = fixtures::pod(&failed(), fixtures::terminated(137, "OOMKilled", ""));
        let RunState::Failed { reason, message, .. } = of(&failed(), &[oom]) else { panic!("failed") };
        assert_eq!(reason, "OOMKilled");
        assert!(message.contains("runner.resources.limits.memory"), "{message}");

        let bad = r#"{"error":"data: /data/btc.csv line 7: high 1 < low 2"}"#;
        let pod = fixtures::pod(&failed(), fixtures::terminated(2, "Error", bad));
        let RunState::Failed { reason, message, .. } = of(&failed(), &[pod]) else { panic!("failed") };
        assert_eq!(reason, "InvalidInput");
        assert_eq!(
            message,
            "the agent refused its input (exit code 2): data: /data/btc.csv line 7: high 1 < low 2"
        );

        // No JSON (the agent died): the log tail the kubelet kept.
        let pod = fixtures::pod(
            &failed(),
            fixtures::terminated(101, "Error", "starting\nthread 'main' panicked at x\n"),
        );
        let RunState::Failed { reason, message, .. } = of(&failed(), &[pod]) else { panic!("failed") };
        assert_eq!(reason, "AgentError");
        assert!(
            message.contains("exit code 101 (Error): starting | thread 'main' panicked at x"),
            "{message}"
        );
    }

    #[test]
    fn a_deadline_or_a_failure_without_pods_is_explained_by_the_job() {
        let job = fixtures::job_with(
            bt_job(),
            0,
            Some(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")),
        );
        let RunState::Failed { reason, message, .. } = of(&job, &[]) else { panic!("failed") };
        assert_eq!(reason, "DeadlineExceeded");
        assert!(message.contains("activeDeadlineSeconds (3600 s)"), "{message}");
        let job = fixtures::job_with(
            bt_job(),
            0,
            Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
        );
        let RunState::Failed { reason, message, .. } = of(&job, &[]) else { panic!("failed") };
        assert_eq!(
            (reason, message.as_str()),
            ("JobFailed", "BackoffLimitExceeded: Job has reached the specified backoff limit")
        );
    }

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(400);
        let clipped = clip(&long);
        assert!(clipped.len() <= 515 && clipped.ends_with('…'));
    }
}
