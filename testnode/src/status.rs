//! The pod status the node reports, as a kubelet would, built from what it knows of the pod's
//! one container. Pure: the caller writes it to `pods/status`.

use serde_json::{Value, json};

/// The state of a container, as `containerStatuses[].state` has it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running: its image cannot be "pulled", its config is incomplete, or it waits to restart.
    Waiting {
        /// `ErrImagePull`, `CreateContainerConfigError`, `CrashLoopBackOff`, `ContainerCreating`, …
        reason: String,
        /// What a person needs to know.
        message: String,
    },
    /// Its process runs.
    Running {
        /// When the process started (RFC 3339).
        started_at: String,
    },
    /// Its process ended.
    Terminated(Terminated),
}

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// The exit code (128 + signal when a signal ended it).
    pub exit_code: i32,
    /// `Completed`, `Error`, `StartError` or `PortConflict`.
    pub reason: String,
    /// The termination message, when the process left one.
    pub message: Option<String>,
    /// When the process started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
}

impl Terminated {
    fn json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code, "reason": self.reason,
            "startedAt": self.started_at, "finishedAt": self.finished_at,
        });
        if let Some(message) = &self.message {
            t["message"] = json!(message);
        }
        t
    }
}

/// Everything the status is made of.
#[derive(Debug, Clone)]
pub struct View {
    /// The container's name.
    pub container: String,
    /// Its image, as the spec names it.
    pub image: String,
    /// Its state now.
    pub state: State,
    /// How its previous run ended, after a restart.
    pub last: Option<Terminated>,
    /// How often it was restarted.
    pub restart_count: u32,
    /// Whether its readiness probe passes (or it has none and runs).
    pub ready: bool,
    /// Whether the pod is over for good (the restart policy starts nothing again).
    pub finished: bool,
    /// When the node took the pod on.
    pub start_time: String,
    /// The node's address, the pod's too (pods share the host's network).
    pub host_ip: String,
    /// The time of this report.
    pub now: String,
}

/// The pod's phase: `Pending` until the process starts, `Running` while it runs or will run
/// again, `Succeeded` or `Failed` once it ended for good.
pub fn phase(view: &View) -> &'static str {
    match (&view.state, view.finished) {
        (State::Terminated(t), true) if t.exit_code == 0 => "Succeeded",
        (State::Terminated(_), true) => "Failed",
        (State::Waiting { .. }, true) => "Failed",
        (State::Running { .. }, _) => "Running",
        (_, false) if view.restart_count > 0 => "Running",
        _ => "Pending",
    }
}

/// The whole `status` of the pod.
pub fn pod_status(view: &View) -> Value {
    let state = match &view.state {
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated(t) => json!({"terminated": t.json()}),
    };
    let mut container = json!({
        "name": view.container, "image": view.image, "imageID": format!("kuant-test-node://{}", view.image),
        "state": state, "ready": view.ready, "restartCount": view.restart_count,
        "started": matches!(view.state, State::Running { .. }),
    });
    if let Some(last) = &view.last {
        container["lastState"] = json!({"terminated": last.json()});
    }
    let ready = view.ready && matches!(view.state, State::Running { .. });
    let condition = |type_: &str, status: bool, reason: Option<&str>| {
        let mut c = json!({"type": type_, "status": if status { "True" } else { "False" }, "lastTransitionTime": view.now});
        if let Some(reason) = reason.filter(|_| !status) {
            c["reason"] = json!(reason);
        }
        c
    };
    let phase = phase(view);
    let not_ready = if view.finished { "PodCompleted" } else { "ContainersNotReady" };
    let mut status = json!({
        "phase": phase,
        "hostIP": view.host_ip, "hostIPs": [{"ip": view.host_ip}],
        "podIP": view.host_ip, "podIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "conditions": [
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            condition("ContainersReady", ready, Some(not_ready)),
            condition("Ready", ready, Some(not_ready)),
        ],
        "containerStatuses": [container],
    });
    if let State::Waiting { reason, message } = &view.state
        && view.finished
    {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: State, finished: bool, restart_count: u32) -> View {
        View {
            container: "agent".into(),
            image: "kuant:e2e".into(),
            state,
            last: None,
            restart_count,
            ready: false,
            finished,
            start_time: "2026-01-01T00:00:00Z".into(),
            host_ip: "127.0.0.1".into(),
            now: "2026-01-01T00:00:05Z".into(),
        }
    }

    fn ended(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: Some("{\"results\":{}}".into()),
            started_at: "2026-01-01T00:00:01Z".into(),
            finished_at: "2026-01-01T00:00:04Z".into(),
        })
    }

    #[test]
    fn phases_follow_the_container_and_the_restart_policy() {
        let waiting = State::Waiting { reason: "ContainerCreating".into(), message: String::new() };
        assert_eq!(phase(&view(waiting.clone(), false, 0)), "Pending");
        assert_eq!(phase(&view(State::Running { started_at: "t".into() }, false, 0)), "Running");
        assert_eq!(phase(&view(ended(0), true, 0)), "Succeeded");
        assert_eq!(phase(&view(ended(2), true, 0)), "Failed");
        assert_eq!(phase(&view(ended(2), false, 1)), "Running", "ended, but it starts again");
        assert_eq!(phase(&view(waiting, true, 0)), "Failed", "it can never start");
    }

    #[test]
    fn a_finished_pod_reports_its_exit_code_and_termination_message() {
        let status = pod_status(&view(ended(0), true, 0));
        assert_eq!(status["phase"], "Succeeded");
        let terminated = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 0);
        assert_eq!(terminated["message"], "{\"results\":{}}");
        assert_eq!(status["conditions"][3]["type"], "Ready");
        assert_eq!(status["conditions"][3]["reason"], "PodCompleted");
    }

    #[test]
    fn a_running_ready_pod_is_ready_and_a_restarted_one_keeps_its_last_state() {
        let mut v = view(State::Running { started_at: "t".into() }, false, 1);
        v.ready = true;
        if let State::Terminated(t) = ended(1) {
            v.last = Some(t);
        }
        let status = pod_status(&v);
        assert_eq!(status["conditions"][3]["status"], "True");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(status["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    }
}
