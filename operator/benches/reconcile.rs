//! Reconcile throughput of the Backtest controller: N Backtests created at once, reconciled with
//! the controller's bounded concurrency against an in-memory API server (a tower service that
//! answers like the API server: 404 for a Job not yet made, the object back for applies), so the
//! figure is the operator's own cost (decisions, serialization, the client stack), not a
//! network's. It prints reconciles per second for the first pass (every Backtest gets its
//! ServiceAccount/RoleBinding, Job, status and Event) and for a second pass (the Jobs exist: the
//! Job and its pods are read and the status written), and the process's peak memory. A program that prints figures, not a timed test:
//! `cargo bench -p kuant-operator --bench reconcile` (`KUANT_BENCH_BACKTESTS` sets N, default 1000).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use kuant_crds::Backtest;
use kuant_operator::backtest::controller::{Context, reconcile};
use kuant_operator::backtest::job::AgentSettings;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};

/// Jobs the fake API server holds (by path).
#[derive(Default)]
struct FakeApi {
    jobs: Mutex<HashSet<String>>,
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::from(Vec::new())))
}

async fn handle(
    api: Arc<FakeApi>,
    backtest: Arc<Vec<u8>>,
    request: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect_bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let jobs = || api.jobs.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match parts.method {
        Method::GET if path.contains("/jobs/") => {
            if jobs().contains(&path) {
                respond(StatusCode::OK, br#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j","uid":"u"},"status":{"active":1}}"#.to_vec())
            } else {
                respond(StatusCode::NOT_FOUND, br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_vec())
            }
        }
        // Each Backtest's namespace lacks the agent's ServiceAccount (the worst case: applied each time).
        Method::GET if path.contains("/serviceaccounts/") => respond(
            StatusCode::NOT_FOUND,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                .to_vec(),
        ),
        Method::GET => respond(
            StatusCode::OK,
            br#"{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[]}"#.to_vec(),
        ),
        Method::PATCH if path.ends_with("/status") => respond(StatusCode::OK, backtest.as_ref().clone()),
        Method::PATCH => {
            if path.contains("/jobs/") {
                jobs().insert(path);
            }
            respond(StatusCode::OK, body)
        }
        _ => respond(StatusCode::CREATED, body),
    })
}

fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let n: usize = std::env::var("KUANT_BENCH_BACKTESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let concurrency = 4usize;
    let text = include_str!("../../examples/backtests/btc-sma-crossover.yaml");
    let template: Backtest = match kuant_crds::manifest::parse(text, "example") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("the example does not parse: {e}");
            std::process::exit(1);
        }
    };
    let backtests: Vec<Arc<Backtest>> = (0..n)
        .map(|i| {
            let mut bt = template.clone();
            bt.metadata.name = Some(format!("bt-{i:05}"));
            bt.metadata.namespace = Some("bench".into());
            bt.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
            bt.metadata.generation = Some(1);
            Arc::new(bt)
        })
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let api = Arc::new(FakeApi::default());
        let answer = Arc::new(serde_json::to_vec(&*backtests[0]).unwrap_or_default());
        let service = tower::service_fn(move |request| handle(api.clone(), answer.clone(), request));
        let client = Client::new(service, "default");
        let agent = AgentSettings {
            image: "ghcr.io/kuant-dev/kuant:bench".into(),
            service_account: "kuant-agent".into(),
            log_level: "info".into(),
            cluster_role: "kuant-agent".into(),
            database_secret: None,
            database_secret_key: "url".into(),
        };
        let recorder = Recorder::new(client.clone(), Reporter { controller: "kuant-operator".into(), instance: None });
        let ctx = Arc::new(Context::new(client, agent, recorder));
        println!("kuant operator reconcile throughput: {n} Backtests at once, concurrency {concurrency}, in-memory API server");
        for pass in ["first pass (create Jobs, write status, record Events)", "second pass (Jobs exist: read the Job and its pods, decide, write status)"] {
            let started = Instant::now();
            let failures = futures::stream::iter(backtests.iter().cloned())
                .map(|bt| reconcile(bt, ctx.clone()))
                .buffer_unordered(concurrency)
                .filter(|r| std::future::ready(r.is_err()))
                .count()
                .await;
            let took = started.elapsed().as_secs_f64();
            println!("{pass}: {n} reconciles in {took:.3} s -> {:.0} reconciles/s ({failures} failed)", n as f64 / took);
        }
        println!("peak memory (VmHWM): {}", peak_memory());
    });
}
