//! The operator against a real API server, measured from outside: how fast a new Backtest gets
//! its Job, and how 200 Backtests applied at once fare. Needs a cluster with a node that runs
//! the agent image (`KUBECONFIG`, `KUANT_E2E_AGENT_IMAGE`), e.g.
//!
//! ```sh
//! cargo build -p kuant -p kuant-test-node --bins
//! tests/cluster/cluster.sh run --node target/debug -- cargo bench --bench cluster_scale
//! ```
//!
//! Prints figures; asserts nothing about them. A Backtest here is 500 synthetic candles, which
//! the agent computes in milliseconds: apply → Complete is the operator's, the scheduler's, the
//! node's and the Job controller's overhead. `KUANT_BENCH_BACKTESTS` (default 200) sets the
//! scale, `KUANT_BENCH_REACTIONS` (default 20) how many single applies measure the reaction.
//! Times are taken where a user stands: from the create call's response to the watch event
//! that shows the Job (or the Backtest Complete), on this machine's clock.

#[allow(dead_code)]
#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kuant_crds::Backtest;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// When each named object was first seen by a watch.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each Job (by its Backtest's name) first appears.
fn watch_jobs(api: Api<Job>, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(Ok(job)) = stream.next().await {
            if let Some(owner) = job.owner_references().first()
                && let Ok(mut seen) = seen.lock()
            {
                seen.entry(owner.name.clone()).or_insert_with(Instant::now);
            }
        }
    })
}

/// Records when each Backtest first shows Complete.
fn watch_complete(api: Api<Backtest>, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(Ok(bt)) = stream.next().await {
            if cluster::condition(&bt, "Complete").map(|c| c.0).as_deref() == Some("True")
                && let Ok(mut seen) = seen.lock()
            {
                seen.entry(bt.name_any()).or_insert_with(Instant::now);
            }
        }
    })
}

/// The `q`-quantile of the latencies, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn latencies(applied: &HashMap<String, Instant>, seen: &Seen) -> Vec<Duration> {
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut all: Vec<Duration> = applied
        .iter()
        .filter_map(|(name, at)| seen.get(name).map(|s| s.saturating_duration_since(*at)))
        .collect();
    all.sort();
    all
}

fn report(what: &str, all: &[Duration], of: usize) {
    println!(
        "{what}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of {of})",
        quantile(all, 0.5),
        quantile(all, 0.99),
        quantile(all, 1.0),
        all.len()
    );
}

/// The operator process's peak memory (VmHWM) in MiB and CPU seconds (user + system).
fn usage(child: &Child) -> (f64, f64) {
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 =
        fields.get(11..13).map_or(f64::NAN, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    (hwm_kib / 1024.0, ticks / USER_HZ)
}

/// The unit of the CPU times in /proc/PID/stat: Linux reports them in USER_HZ, 100 a second.
const USER_HZ: f64 = 100.0;

fn backtest(namespace: &str, name: &str) -> Backtest {
    let mut bt = cluster::example_backtest(namespace);
    bt.metadata.name = Some(name.to_owned());
    if let Some(synthetic) = bt.spec.data.synthetic.as_mut() {
        synthetic.bars = 500;
    }
    bt
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "cluster_scale needs a cluster: tests/cluster/cluster.sh run --node target/debug -- cargo bench --bench cluster_scale"
        );
        std::process::exit(2);
    }
    let count: usize =
        std::env::var("KUANT_BENCH_BACKTESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let reactions: usize =
        std::env::var("KUANT_BENCH_REACTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let image =
        std::env::var("KUANT_E2E_AGENT_IMAGE").unwrap_or_else(|_| "ghcr.io/kuant-dev/kuant:e2e".into());
    let client = Client::try_default().await.expect("a client from KUBECONFIG");
    cluster::apply_crds(&client).await;
    cluster::apply_agent_role(&client).await;
    let ns = cluster::test_namespace(&client, "bench").await;
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let job_seen: Seen = Arc::default();
    let complete_seen: Seen = Arc::default();
    let watches =
        [watch_jobs(jobs, job_seen.clone()), watch_complete(backtests.clone(), complete_seen.clone())];

    let mut operator = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["operator", "--metrics-addr", "127.0.0.1:0", "--agent-image", &image])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the operator starts");
    // Warm: the operator's watches are up once a first Backtest got its Job.
    let warmup = backtest(&ns.name, "warmup");
    backtests.create(&PostParams::default(), &warmup).await.expect("created");
    cluster::eventually("the warm-up Job", Duration::from_secs(60), || {
        let seen = job_seen.clone();
        async move { seen.lock().ok()?.contains_key("warmup").then_some(()) }
    })
    .await;

    // Reaction: one apply at a time, from its response to the Job's ADDED event.
    let mut applied = HashMap::new();
    for i in 0..reactions {
        let name = format!("react-{i:03}");
        backtests.create(&PostParams::default(), &backtest(&ns.name, &name)).await.expect("created");
        applied.insert(name.clone(), Instant::now());
        cluster::eventually("the Job", Duration::from_secs(30), || {
            let seen = job_seen.clone();
            let name = name.clone();
            async move { seen.lock().ok()?.contains_key(&name).then_some(()) }
        })
        .await;
        cluster::eventually("Complete", Duration::from_secs(60), || {
            let seen = complete_seen.clone();
            let name = name.clone();
            async move { seen.lock().ok()?.contains_key(&name).then_some(()) }
        })
        .await;
    }
    println!("kuant operator on a real API server (Kubernetes 1.36, test node), warm");
    report("apply -> Job ADDED, one at a time", &latencies(&applied, &job_seen), reactions);
    report("apply -> Complete, one at a time", &latencies(&applied, &complete_seen), reactions);

    // Scale: `count` Backtests applied at once.
    let started = Instant::now();
    let creates = (0..count).map(|i| {
        let backtests = backtests.clone();
        let bt = backtest(&ns.name, &format!("scale-{i:03}"));
        async move {
            backtests.create(&PostParams::default(), &bt).await.expect("created");
            (bt.name_any(), Instant::now())
        }
    });
    let applied: HashMap<String, Instant> = futures::future::join_all(creates).await.into_iter().collect();
    println!("{count} Backtests applied at once in {:.1} s", started.elapsed().as_secs_f64());
    let limit = Duration::from_secs(60 + 6 * count as u64);
    let seen = complete_seen.clone();
    cluster::eventually("every Backtest Complete", limit, || {
        let seen = seen.clone();
        let names: Vec<String> = applied.keys().cloned().collect();
        async move {
            let seen = seen.lock().ok()?;
            names.iter().all(|n| seen.contains_key(n)).then_some(())
        }
    })
    .await;
    report(&format!("apply -> Job ADDED, {count} at once"), &latencies(&applied, &job_seen), count);
    report(&format!("apply -> Complete, {count} at once"), &latencies(&applied, &complete_seen), count);
    let (rss, cpu) = usage(&operator);
    println!("operator: peak RSS {rss:.1} MiB, CPU {cpu:.1} s over the whole run");
    for w in watches {
        w.abort();
    }
    let _ = operator.kill();
    let _ = operator.wait();
}
