//! `kuant agent backtest`: the entry point of a Backtest's Job.
//!
//! How it reports, and why:
//! - **The spec** arrives in the `KUANT_BACKTEST` environment variable (the Backtest as JSON,
//!   written by the operator into the Job). The pod needs no API access to learn what to run, and
//!   the spec it runs is exactly the one the Job was made for.
//! - **Progress** is written by the agent itself into `status.progress` of its Backtest, by
//!   server-side apply with its own field manager (`kuant-agent`), at most once a second. The
//!   operator owns every other status field and never writes `progress`, so the two never fight
//!   over a field; and the operator need not watch pods or logs to learn how far a run is. When
//!   the API server cannot be reached (or `KUANT_PROGRESS=off`), the run goes on without
//!   progress: it is a convenience, not part of the result.
//! - **The result** (or the reason of a failure) goes into the container's termination message
//!   (`/dev/termination-log`, a small JSON [`AgentReport`]). The kubelet keeps it in the pod's
//!   status, where the operator reads it and copies the results into the Backtest's status: no
//!   database and no API write is needed for the result to survive.
//!
//! - **The store**: when `KUANT_DATABASE_URL` is set (the chart passes it from a Secret), the
//!   agent also saves the run — results, events, equity curve, trades — as `kuant backtest`
//!   does locally ([`persist`]), trying three times. A run whose results could not be
//!   saved still succeeds (they are in its status); the report carries a warning, which the
//!   operator records as a Warning Event on the Backtest.
//!
//! Exit codes: 0 done, 2 bad input (the manifest or the data), 1 internal error. The Job's pod
//! failure policy fails the Job at once on 1 and 2: a deterministic run would fail again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kuant_agents::backtest::{self, Keep, Options, persist};
use kuant_crds::Backtest;
use kuant_crds::backtest::AgentReport;
use kuant_operator::backtest::job::ENV_DATABASE_SECRET;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::cli::{EXIT_BAD_INPUT, EXIT_INTERNAL};

/// Environment variable holding the Backtest (the operator sets it).
pub const ENV_BACKTEST: &str = "KUANT_BACKTEST";
/// Where the termination message goes; the kubelet reads `/dev/termination-log` by default.
const ENV_TERMINATION_LOG: &str = "KUANT_TERMINATION_LOG";
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// The file an agent's termination message goes to: `KUANT_TERMINATION_LOG`, else the
/// kubelet's default.
pub(crate) fn termination_log() -> PathBuf {
    std::env::var_os(ENV_TERMINATION_LOG)
        .map_or_else(|| PathBuf::from(DEFAULT_TERMINATION_LOG), PathBuf::from)
}
/// `off` turns progress reporting off.
const ENV_PROGRESS: &str = "KUANT_PROGRESS";
/// The kubelet keeps at most 4 KiB of a termination message.
pub(crate) const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// Progress is written at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
use kuant_operator::AGENT_FIELD_MANAGER as FIELD_MANAGER;

/// Runs the Backtest handed over in the environment; see the module docs.
pub fn run() -> ExitCode {
    let report_path = termination_log();
    let (code, report) = match execute() {
        Ok(report) => (ExitCode::SUCCESS, report),
        Err((code, message)) => {
            eprintln!("error: {message}");
            (ExitCode::from(code), AgentReport { error: Some(message), ..Default::default() })
        }
    };
    match termination_message(&report) {
        Ok(text) => {
            if let Err(e) = std::fs::write(&report_path, text) {
                eprintln!("error: cannot write the report to {}: {e}", report_path.display());
                return ExitCode::from(EXIT_INTERNAL);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    }
    code
}

/// The report as JSON within the kubelet's limit (an over-long error is cut, never the results).
fn termination_message(report: &AgentReport) -> Result<String, String> {
    let text = serde_json::to_string(report).map_err(|e| format!("cannot encode the report: {e}"))?;
    if text.len() <= TERMINATION_MESSAGE_LIMIT {
        return Ok(text);
    }
    let Some(error) = &report.error else {
        return Err(format!("the report is {} bytes, over the 4 KiB termination message limit", text.len()));
    };
    let mut cut = error.clone();
    while serde_json::to_string(&AgentReport { error: Some(cut.clone()), ..report.clone() })
        .map_or(0, |t| t.len())
        > TERMINATION_MESSAGE_LIMIT
    {
        let mut end = cut.len().saturating_sub(64);
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncate(end);
    }
    cut.push('…');
    serde_json::to_string(&AgentReport { error: Some(cut), ..report.clone() }).map_err(|e| e.to_string())
}

fn execute() -> Result<AgentReport, (u8, String)> {
    let text = std::env::var(ENV_BACKTEST).map_err(|_| {
        (
            EXIT_BAD_INPUT,
            format!("{ENV_BACKTEST} is not set: this command runs in a Job made by `kuant operator`"),
        )
    })?;
    let manifest = kuant_crds::manifest::parse::<Backtest>(&text, ENV_BACKTEST)
        .map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| (EXIT_INTERNAL, format!("cannot start the async runtime: {e}")))?;
    let (progress_tx, progress_rx) = watch::channel(None::<(u64, u64)>);
    let publisher = runtime.spawn(publish_progress(manifest.clone(), progress_rx));

    let prepared =
        backtest::prepare(&manifest, &Options::default()).map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
    let total: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();
    progress_tx.send_replace(Some((0, total)));
    let store_url = std::env::var("KUANT_DATABASE_URL").ok().filter(|u| !u.trim().is_empty());
    if let Some(url) = &store_url {
        // Lists show the run while it runs; its results replace this row at the end.
        let started = persist::record_phase(url, &manifest, "Running", Duration::from_secs(2));
        if let Err(e) = runtime.block_on(started) {
            tracing::warn!(error = %e, "cannot record the run as Running in the store; carrying on");
        }
    }
    let keep = Keep { equity_curve: store_url.is_some(), events: store_url.is_some() };
    let result = backtest::run(&prepared, keep, &mut |done, total| {
        progress_tx.send_replace(Some((done, total)));
    })
    .map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
    progress_tx.send_replace(Some((total, total)));
    drop(progress_tx);
    // The last progress write gets a few seconds; the result does not depend on it.
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), publisher).await });
    tracing::info!(
        candles = result.candles,
        final_equity = %result.final_equity,
        simulate_seconds = result.timings.simulate_seconds,
        "backtest finished"
    );
    let results = result.status_results().map_err(|e| (EXIT_BAD_INPUT, e))?;
    let warning = match (store_url, std::env::var(ENV_DATABASE_SECRET)) {
        (Some(url), _) => save(&runtime, &url, &manifest, &result).err(),
        // The operator named a Secret, but this namespace does not have it.
        (None, Ok(secret)) if !secret.is_empty() => {
            let namespace = manifest.metadata.namespace.as_deref().unwrap_or("default");
            let message = format!(
                "the run is not saved to the store: namespace {namespace} has no Secret {secret} (name/key) \
                 holding the store's URL; create it there to save this namespace's runs"
            );
            tracing::warn!("{message}");
            Some(message)
        }
        (None, _) => None,
    };
    Ok(AgentReport { results: Some(results), candles: Some(result.candles), error: None, warning })
}

/// Attempts at saving to the store, and the pause before each retry.
const SAVE_RETRIES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];
/// The longest warning a report carries (the termination message holds 4 KiB in all).
const WARNING_LIMIT: usize = 512;

/// Saves the run to the store at `url`, retrying; the error (cut to fit a report) when it could
/// not.
fn save(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    backtest: &Backtest,
    result: &backtest::BacktestResult,
) -> Result<(), String> {
    let spec = serde_json::to_value(&backtest.spec).unwrap_or(serde_json::Value::Null);
    let target = persist::Target { url, namespace: backtest.metadata.namespace.as_deref(), spec: &spec };
    let mut pauses = SAVE_RETRIES.iter();
    loop {
        match runtime.block_on(persist::save_async(&target, result)) {
            Ok(saved) => {
                tracing::info!(
                    store = %kuant_store::redact(url),
                    events = saved.events,
                    equity_points = saved.equity_points,
                    trades = saved.trades,
                    seconds = saved.seconds,
                    "run saved to the store"
                );
                return Ok(());
            }
            Err(e) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot save the run to the store; retrying");
                    std::thread::sleep(*pause);
                }
                None => {
                    tracing::error!(error = %e, "cannot save the run to the store; its results are in status only");
                    let mut message = format!("the run is not saved to the store: {e}");
                    if message.len() > WARNING_LIMIT {
                        let mut end = WARNING_LIMIT;
                        while !message.is_char_boundary(end) {
                            end -= 1;
                        }
                        message.truncate(end);
                        message.push('…');
                    }
                    return Err(message);
                }
            },
        }
    }
}

/// Writes the latest progress into the Backtest's status, at most once a second, until the
/// sender is dropped (then once more with the final figure).
async fn publish_progress(backtest: Backtest, updates: watch::Receiver<Option<(u64, u64)>>) {
    if std::env::var(ENV_PROGRESS).is_ok_and(|v| v == "off") {
        return;
    }
    let (Some(name), Some(namespace)) = (backtest.metadata.name.clone(), backtest.metadata.namespace.clone())
    else {
        return;
    };
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no API access: the run goes on without progress in status");
            return;
        }
    };
    write_progress(Api::namespaced(client, &namespace), &name, updates).await;
}

/// The loop of [`publish_progress`] once the API is at hand.
async fn write_progress(api: Api<Backtest>, name: &str, mut updates: watch::Receiver<Option<(u64, u64)>>) {
    let mut written = None;
    loop {
        let open = updates.changed().await.is_ok();
        let latest = *updates.borrow_and_update();
        if let Some((done, total)) = latest
            && written != latest
        {
            let percent =
                if total == 0 { 100.0 } else { (done as f64 / total as f64 * 100.0).clamp(0.0, 100.0) };
            let patch = serde_json::json!({
                "apiVersion": "kuant.dev/v1alpha1",
                "kind": "Backtest",
                "status": { "progress": {
                    "candlesProcessed": done,
                    "candlesTotal": total,
                    "percent": (percent * 100.0).round() / 100.0,
                }},
            });
            match api
                .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => written = latest,
                Err(e) => tracing::warn!(error = %e, "cannot write progress; the run goes on"),
            }
        }
        if !open {
            return;
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Vec<u8> {
        let text = include_str!("../../examples/backtests/btc-sma-crossover.yaml");
        let mut value: serde_json::Value = serde_yaml::from_str(text).expect("yaml");
        value["metadata"]["namespace"] = "research".into();
        serde_json::to_vec(&value).expect("json")
    }

    /// Against a mocked API server: progress goes to the Backtest's status subresource by
    /// server-side apply as `kuant-agent`, with nothing but `progress`; updates that come within
    /// a second are folded into one write of the latest.
    #[tokio::test(start_paused = true)]
    async fn progress_is_applied_to_the_status_as_the_agent_at_most_once_a_second() {
        use http::{Request, Response};
        use kube::client::Body;

        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<Backtest> = Api::namespaced(Client::new(service, "default"), "research");
        let (tx, rx) = watch::channel(None);
        let writer = tokio::spawn(write_progress(api, "btc", rx));
        tx.send_replace(Some((0, 200)));
        let mut bodies = Vec::new();
        for step in 0..2 {
            let (request, respond) = handle.next_request().await.expect("a status write");
            assert_eq!(
                request.uri().path(),
                "/apis/kuant.dev/v1alpha1/namespaces/research/backtests/btc/status"
            );
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(query.contains("fieldManager=kuant-agent") && query.contains("force=true"), "{query}");
            let body = request.into_body().collect_bytes().await.expect("body");
            bodies.push(serde_json::from_slice::<serde_json::Value>(&body).expect("JSON"));
            respond.send_response(Response::new(Body::from(answer())));
            if step == 0 {
                for done in [50, 100, 150, 200] {
                    tx.send_replace(Some((done, 200)));
                }
            }
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), writer).await.expect("the writer ends").expect("task");
        assert_eq!(
            bodies[0]["status"],
            serde_json::json!({"progress": {"candlesProcessed": 0, "candlesTotal": 200, "percent": 0.0}})
        );
        assert_eq!(bodies[1]["status"]["progress"]["candlesProcessed"], 200, "the latest figure, once");
        assert_eq!(bodies[1].as_object().map(|o| o.len()), Some(3), "apiVersion, kind and status only");
    }

    #[test]
    fn an_overlong_error_is_cut_to_fit_the_termination_message() {
        let report = AgentReport { error: Some("é".repeat(5000)), ..Default::default() };
        let text = termination_message(&report).expect("fits");
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        let back: AgentReport = serde_json::from_str(&text).expect("valid JSON");
        assert!(back.error.is_some_and(|e| e.ends_with('…')));
    }
}
