//! The API traffic of a Backtest reconcile against a mocked API server (tower-test): each test
//! states the requests a reconcile must make, in order, and answers them as the API server would.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kuant_crds::Backtest;
use kuant_crds::backtest::BacktestPhase;
use kuant_mock_api::{Expect, expect, not_found, ok, play};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::controller::{Context, reconcile};
use super::fixtures::{self, at};
use super::plan;

const JOBS: &str = "/apis/batch/v1/namespaces/research/jobs";
const BACKTESTS: &str = "/apis/kuant.dev/v1alpha1/namespaces/research/backtests";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/research/events";

/// Runs one reconcile of `backtest` against `script`; every scripted request must be made, and
/// no other.
async fn reconcile_with(backtest: Backtest, script: Vec<Expect>) -> kube::runtime::controller::Action {
    let (ctx, server) = mocked(script);
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(backtest), ctx))
        .await
        .expect("the reconcile finished")
        .expect("the reconcile succeeded");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("every request made").expect("server");
    action
}

/// A reconcile context whose client talks to a mocked API server that plays `script`.
fn mocked(script: Vec<Expect>) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let (client, handle) = kuant_mock_api::client("default");
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "kuant-operator".into(), instance: None });
    let ctx = Arc::new(Context::new(client, fixtures::agent(), recorder).with_clock(|| at(11)));
    (ctx, tokio::spawn(play(handle, script)))
}

fn job_name(bt: &Backtest) -> String {
    fixtures::job(bt).metadata.name.unwrap_or_default()
}

fn pod_list(pods: Vec<Pod>) -> (StatusCode, Value) {
    ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods}))
}

/// The status a reconcile wrote, from the server-side apply body.
fn status_of(body: &Value) -> kuant_crds::BacktestStatus {
    serde_json::from_value(body["status"].clone()).expect("a BacktestStatus")
}

/// `bt` as it reads after a first reconcile (Job created, status Pending).
fn created(bt: Backtest) -> Backtest {
    let mut bt = bt;
    let p = plan::plan(&bt, plan::Observed { job: None, pods: &[] }, &fixtures::agent(), &at(0));
    bt.status = Some(p.status);
    bt
}

#[tokio::test]
async fn a_new_backtest_creates_its_job_by_server_side_apply_then_writes_status_and_an_event() {
    let bt = fixtures::backtest("btc");
    let name = job_name(&bt);
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), not_found("jobs", &name)),
        expect(
            Method::GET,
            "/api/v1/namespaces/research/serviceaccounts/kuant-agent",
            not_found("serviceaccounts", "kuant-agent"),
        ),
        expect(
            Method::PATCH,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/research/rolebindings/kuant-agent",
            ok(Value::Null),
        )
        .checking(|query, body| {
            assert!(query.contains("fieldManager=kuant-operator"), "{query}");
            assert_eq!(body["roleRef"]["name"], "kuant-agent");
        }),
        expect(Method::PATCH, "/api/v1/namespaces/research/serviceaccounts/kuant-agent", ok(Value::Null)),
        expect(Method::PATCH, format!("{JOBS}/{name}"), ok(Value::Null)).checking(|query, body| {
            assert!(query.contains("fieldManager=kuant-operator"), "{query}");
            assert_eq!(body["kind"], "Job");
            assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Backtest");
            assert!(body["spec"].get("ttlSecondsAfterFinished").is_none());
        }),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), ok(&bt)).checking(|query, body| {
            assert!(query.contains("fieldManager=kuant-operator") && query.contains("force=true"), "{query}");
            let status = status_of(body);
            assert_eq!(status.phase, Some(BacktestPhase::Pending));
            assert!(status.job_name.is_some());
            assert!(body["status"].get("progress").is_none(), "progress is the agent's");
            assert_eq!(body["metadata"]["resourceVersion"], "100", "decided on the version read");
        }),
        expect(Method::POST, EVENTS, ok(Value::Null)).checking(|_, body| {
            assert_eq!(
                (body["reason"].as_str(), body["type"].as_str()),
                (Some("JobCreated"), Some("Normal"))
            );
            assert_eq!(body["regarding"]["name"], "btc");
        }),
    ];
    reconcile_with(bt, script).await;
}

#[tokio::test]
async fn a_running_job_with_progress_makes_the_backtest_running_and_leaves_progress_alone() {
    let mut bt = created(fixtures::backtest("btc"));
    if let Some(status) = bt.status.as_mut() {
        status.progress =
            Some(kuant_crds::backtest::Progress { candles_processed: 10, candles_total: 20, percent: 50.0 });
    }
    let job = fixtures::job_with(fixtures::job(&bt), 1, None);
    let pod = fixtures::pod(&job, fixtures::running());
    let name = job_name(&bt);
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::GET, "/api/v1/namespaces/research/pods", pod_list(vec![pod])).checking(
            move |query, _| {
                assert!(query.contains("labelSelector=batch.kubernetes.io%2Fjob-name%3D"), "{query}");
            },
        ),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), ok(&bt)).checking(|_, body| {
            assert_eq!(status_of(body).phase, Some(BacktestPhase::Running));
            assert!(body["status"].get("progress").is_none(), "the agent's progress is not overwritten");
        }),
        expect(Method::POST, EVENTS, ok(Value::Null))
            .checking(|_, body| assert_eq!(body["reason"], "Started")),
    ];
    let action = reconcile_with(bt, script).await;
    assert_eq!(action, kube::runtime::controller::Action::requeue(plan::RECHECK_RUNNING));
}

#[tokio::test]
async fn a_succeeded_job_puts_results_in_status_and_only_then_gets_its_ttl() {
    // The order matters: with a TTL of 0 the Job could be gone before a later status write.
    let bt = created(fixtures::backtest("btc"));
    let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Complete", "CompletionsReached", "")));
    let pod = fixtures::pod(&job, fixtures::terminated(0, "Completed", &fixtures::results_message()));
    let name = job_name(&bt);
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::GET, "/api/v1/namespaces/research/pods", pod_list(vec![pod])),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), ok(&bt)).checking(|_, body| {
            let status = status_of(body);
            assert_eq!(status.phase, Some(BacktestPhase::Succeeded));
            assert_eq!(status.results.map(|r| r.trades), Some(12));
        }),
        expect(Method::PATCH, format!("{JOBS}/{name}"), ok(&job)).checking(|query, body| {
            assert!(
                !query.contains("fieldManager=kuant-operator&force"),
                "a merge patch, not an apply: {query}"
            );
            assert_eq!(body, &json!({"spec": {"ttlSecondsAfterFinished": 86400}}));
        }),
        expect(Method::POST, EVENTS, ok(Value::Null))
            .checking(|_, body| assert_eq!(body["reason"], "Completed")),
    ];
    let action = reconcile_with(bt, script).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

#[tokio::test]
async fn a_failed_job_fails_the_backtest_with_the_reason_from_the_pod() {
    let bt = created(fixtures::backtest("btc"));
    let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Failed", "PodFailurePolicy", "x")));
    let pod =
        fixtures::pod(&job, fixtures::terminated(2, "Error", r#"{"error":"data: gap: 3 missing 1h bars"}"#));
    let name = job_name(&bt);
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::GET, "/api/v1/namespaces/research/pods", pod_list(vec![pod])),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), ok(&bt)).checking(|_, body| {
            let status = status_of(body);
            let failed = status.conditions.iter().find(|c| c.type_ == "Failed").expect("Failed");
            assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "InvalidInput"));
            assert!(failed.message.ends_with("data: gap: 3 missing 1h bars"), "{}", failed.message);
        }),
        expect(Method::PATCH, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::POST, EVENTS, ok(Value::Null)).checking(|_, body| {
            assert_eq!((body["reason"].as_str(), body["type"].as_str()), (Some("Failed"), Some("Warning")));
        }),
    ];
    reconcile_with(bt, script).await;
}

#[tokio::test]
async fn a_finished_backtest_whose_job_is_gone_makes_one_read_and_no_write() {
    // After completion the TTL deleted the Job (and the Backtest's deletion takes the rest through
    // the ownerReference): the reconcile reads, finds nothing to do, writes nothing.
    let bt = created(fixtures::backtest("btc"));
    let job = fixtures::job_with(fixtures::job(&bt), 0, Some(("Complete", "CompletionsReached", "")));
    let pod = fixtures::pod(&job, fixtures::terminated(0, "Completed", &fixtures::results_message()));
    let done = plan::plan(&bt, plan::Observed { job: Some(&job), pods: &[pod] }, &fixtures::agent(), &at(10));
    let mut bt = bt;
    bt.status = Some(done.status);
    let name = job_name(&bt);
    let script = vec![expect(Method::GET, format!("{JOBS}/{name}"), not_found("jobs", &name))];
    let action = reconcile_with(bt, script).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

#[tokio::test]
async fn a_restarted_operator_finds_the_job_it_made_and_creates_no_second_one() {
    // Crashed after creating the Job, before writing the status: the status is empty.
    let bt = fixtures::backtest("btc");
    let job: Job = fixtures::job(&bt);
    let name = job_name(&bt);
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::GET, "/api/v1/namespaces/research/pods", pod_list(vec![])),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), ok(&bt)).checking(move |_, body| {
            assert_eq!(status_of(body).job_name.as_deref(), Some(name.as_str()));
        }),
    ];
    reconcile_with(bt, script).await;
}

#[tokio::test]
async fn a_deleted_backtest_is_left_to_the_garbage_collector() {
    // Its Job carries an ownerReference to it, so the API server's garbage collector deletes the
    // Job and its pods; the reconcile makes no request at all.
    let mut bt = created(fixtures::backtest("btc"));
    bt.metadata.deletion_timestamp = Some(at(20));
    let action = reconcile_with(bt, Vec::new()).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

#[tokio::test]
async fn a_status_write_on_a_stale_copy_is_a_conflict_retried_at_once() {
    let bt = created(fixtures::backtest("btc"));
    let job = fixtures::job_with(fixtures::job(&bt), 1, None);
    let pod = fixtures::pod(&job, fixtures::running());
    let name = job_name(&bt);
    let conflict = (
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
               "message": "the object has been modified"}),
    );
    let script = vec![
        expect(Method::GET, format!("{JOBS}/{name}"), ok(&job)),
        expect(Method::GET, "/api/v1/namespaces/research/pods", pod_list(vec![pod])),
        expect(Method::PATCH, format!("{BACKTESTS}/btc/status"), conflict),
    ];
    let (ctx, server) = mocked(script);
    let bt = Arc::new(bt);
    let error = reconcile(bt.clone(), ctx.clone()).await.expect_err("a conflict");
    assert!(error.is_conflict(), "{error}");
    assert_eq!(
        super::controller::error_policy(bt, &error, ctx),
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    server.await.expect("server");
}
