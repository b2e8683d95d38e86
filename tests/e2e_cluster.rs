//! End to end against a real API server: the operator as a child process, a Backtest from
//! creation to results, an operator restart, and deletion.
//!
//! Runs when `KUBECONFIG` names a test cluster (it needs cluster-admin rights: it applies the
//! CRDs and creates a namespace `kuant-e2e-…` that it deletes at the end); skipped otherwise, and
//! `KUANT_REQUIRE_CLUSTER=1` turns the skip into a failure.
//!
//! The agent pod really runs, so the cluster needs a node that can run the kuant image named
//! by `KUANT_E2E_AGENT_IMAGE`: in CI (and `tests/cluster/cluster.sh run --node target/debug`) the
//! test node runs it as a process of the freshly built `kuant`; on a kind cluster, e.g. `docker
//! build -t kuant:e2e . && kind load docker-image kuant:e2e`.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kuant_crds::{Backtest, TradingSession};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use support::cluster::{
    apply_agent_role, apply_crds, condition, eventually, example_backtest, test_namespace,
};

/// One test at a time: each runs operators that watch every namespace, which would act on the
/// other tests' resources.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `Some(reason)` when the suite must skip.
fn skip_reason() -> Option<String> {
    match std::env::var_os("KUBECONFIG") {
        Some(path) if !path.is_empty() => None,
        _ => Some("KUBECONFIG is not set: no test cluster".to_owned()),
    }
}

/// The operator as a child process, killed when dropped.
struct Operator(Child);

impl Operator {
    /// Starts the operator as the chart does: with leader election, its Lease in `namespace`.
    fn start(agent_image: &str, namespace: &str, identity: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_kuant"))
            .args([
                "operator",
                "--metrics-addr",
                "127.0.0.1:0",
                "--agent-image",
                agent_image,
                "--concurrency",
                "2",
            ])
            .args(["--leader-election", "--lease-namespace", namespace, "--identity", identity])
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the operator starts");
        Self(child)
    }
}

impl Operator {
    /// The operator alone, with no leader election: killed, it is back at once.
    fn start_without_lease(agent_image: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_kuant"))
            .args([
                "operator",
                "--metrics-addr",
                "127.0.0.1:0",
                "--agent-image",
                agent_image,
                "--concurrency",
                "4",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the operator starts");
        Self(child)
    }

    /// SIGKILL: no chance to finish what it was doing.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test namespace, deleted when dropped (in the background: a test must not hang on it).
/// A client of the test cluster; `None` (the test skips) without one, a failure when
/// `KUANT_REQUIRE_CLUSTER=1`.
async fn test_cluster() -> Option<Client> {
    if let Some(reason) = skip_reason() {
        assert!(
            std::env::var("KUANT_REQUIRE_CLUSTER").as_deref() != Ok("1"),
            "KUANT_REQUIRE_CLUSTER=1 but {reason}"
        );
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(Client::try_default().await.expect("a client from KUBECONFIG"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_runs_in_a_job_survives_an_operator_restart_and_goes_with_its_job() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    let nodes: Api<Node> = Api::all(client.clone());
    let has_nodes =
        !nodes.list(&ListParams::default().limit(1)).await.expect("nodes listed").items.is_empty();
    assert!(
        has_nodes,
        "the cluster has no node to run the agent pod (tests/cluster/cluster.sh up DIR --node target/debug)"
    );
    let agent_image = std::env::var("KUANT_E2E_AGENT_IMAGE")
        .expect("KUANT_E2E_AGENT_IMAGE names a kuant image the cluster's nodes can run");

    apply_crds(&client).await;
    apply_agent_role(&client).await;
    let cleanup = test_namespace(&client, "").await;
    let namespace = cleanup.name.clone();

    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut operator = Operator::start(&agent_image, &namespace, "e2e-first");

    // Created: the operator makes one Job, named after the Backtest, owned by it, running the agent.
    let created = backtests
        .create(&PostParams::default(), &example_backtest(&namespace))
        .await
        .expect("Backtest created");
    let uid = created.uid().expect("uid");
    let job_name = kuant_operator::names::backtest_job(&created.name_any(), &uid);
    let job = eventually("the Job", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        let job_name = job_name.clone();
        async move { jobs.get_opt(&job_name).await.ok().flatten() }
    })
    .await;
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Backtest", uid.as_str(), Some(true))
    );
    let container =
        &job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec").containers[0];
    assert_eq!(container.args.as_deref(), Some(&["agent".to_owned(), "backtest".to_owned()][..]));

    let bt = eventually("the Backtest's conditions", Duration::from_secs(60), || {
        let backtests = backtests.clone();
        async move {
            backtests.get("btc-sma-crossover").await.ok().filter(|b| condition(b, "Progressing").is_some())
        }
    })
    .await;
    assert_eq!(condition(&bt, "Progressing").map(|c| c.0), Some("True".into()));
    assert_eq!(condition(&bt, "Complete"), Some(("False".into(), "NotFinished".into())));
    assert_eq!(bt.status.as_ref().and_then(|s| s.job_name.clone()), Some(job_name.clone()));

    // Finished by the agent itself, in its pod.
    let done = eventually("Complete with results", Duration::from_secs(300), || {
        let backtests = backtests.clone();
        async move {
            let bt = backtests.get("btc-sma-crossover").await.ok()?;
            (condition(&bt, "Complete").map(|c| c.0).as_deref() == Some("True")).then_some(bt)
        }
    })
    .await;
    let results = done.status.as_ref().and_then(|s| s.results.clone()).expect("results in status");
    assert!(results.trades > 0);
    // The agent ran in its pod, which ended as a kubelet reports it: exit 0, results as its
    // termination message.
    let selector = format!("batch.kubernetes.io/job-name={job_name}");
    let ran = pods.list(&ListParams::default().labels(&selector)).await.expect("pods listed").items;
    let pod_status = ran.first().and_then(|p| p.status.clone()).expect("the Job's pod");
    assert_eq!(pod_status.phase.as_deref(), Some("Succeeded"));
    let terminated =
        pod_status.container_statuses.as_ref().and_then(|c| c.first()?.state.as_ref()?.terminated.clone());
    let terminated = terminated.expect("the agent container terminated");
    assert_eq!(terminated.exit_code, 0);
    assert!(
        terminated.message.is_some_and(|m| m.contains("\"results\"")),
        "the agent's report is the termination message"
    );

    // The first operator holds the Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder =
        |leases: Api<Lease>| async move { leases.get("kuant-operator").await.ok()?.spec?.holder_identity };
    assert_eq!(holder(leases.clone()).await.as_deref(), Some("e2e-first"));

    // Restarted: the new operator takes the Lease once the old one's expires, finds everything
    // done and makes no second Job.
    drop(operator);
    operator = Operator::start(&agent_image, &namespace, "e2e-second");
    eventually("the new operator to lead", Duration::from_secs(90), || {
        let leases = leases.clone();
        async move { (holder(leases).await.as_deref() == Some("e2e-second")).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let owned: Vec<Job> = jobs
        .list(&ListParams::default())
        .await
        .expect("jobs listed")
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    assert_eq!(owned.len(), 1, "one Job per Backtest, even after a restart");
    let after = backtests.get("btc-sma-crossover").await.expect("Backtest");
    assert_eq!(after.status.as_ref().and_then(|s| s.results.clone()), Some(results), "the result is kept");

    // Deleted: the garbage collector takes the Job through its ownerReference.
    backtests.delete("btc-sma-crossover", &DeleteParams::foreground()).await.expect("Backtest deleted");
    eventually("the Job to go", Duration::from_secs(120), || {
        let jobs = jobs.clone();
        let job_name = job_name.clone();
        async move { jobs.get_opt(&job_name).await.ok().and_then(|j| j.is_none().then_some(())) }
    })
    .await;
    drop(operator);
}

/// `kuant ops-api --cluster` as a child process on a free loopback port, killed when dropped.
struct OpsApi {
    child: Child,
    addr: std::net::SocketAddr,
}

impl OpsApi {
    fn start(tokens: &std::path::Path, store: &std::path::Path) -> Self {
        let addr =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_kuant"))
            .args(["ops-api", "--cluster", "--listen", &addr.to_string(), "--tokens"])
            .arg(tokens)
            .arg("--store")
            .arg(store)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the ops API starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the ops API listens in time");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, addr }
    }

    /// One request: its status and JSON body.
    fn call(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
        http(self.addr, method, path, token, body)
    }
}

/// One HTTP request to `addr`: its status and JSON body.
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    // Small JSON bodies come whole or in one chunk.
    let json = rest.find('{').map_or("null", |start| &rest[start..=rest.rfind('}').unwrap_or(start)]);
    (status, serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
}

impl Drop for OpsApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_api_creates_a_backtest_shows_its_status_and_suspends_a_session_through_the_api_server() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    apply_crds(&client).await;
    let cleanup = test_namespace(&client, "api-").await;
    let namespace = cleanup.name.clone();
    let dir = std::env::temp_dir().join(format!("kuant-e2e-ops-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "e2e-trader-token-012345 trader\ne2e-admin-token-0123456 admin\n")
        .expect("tokens");
    let api = OpsApi::start(&tokens, &dir.join("kuant.db"));
    let (trader, admin) = ("e2e-trader-token-012345", "e2e-admin-token-0123456");

    // Created through the ops API: the resource is in the API server, written by its field manager.
    let mut manifest = serde_json::to_value(example_backtest(&namespace)).expect("json");
    manifest["metadata"]["name"] = serde_json::json!("from-ops-api");
    let (status, body) = api.call("POST", "/api/v1/backtests", trader, &manifest.to_string());
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], format!("{namespace}/from-ops-api"));
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &namespace);
    let created = backtests.get("from-ops-api").await.expect("the Backtest exists");
    assert_eq!(created.spec.strategy.name, example_backtest(&namespace).spec.strategy.name);
    assert!(
        created.managed_fields().iter().any(|m| m.manager.as_deref() == Some("kuant-ops-api")),
        "written by the ops API's field manager"
    );
    let (status, body) = api.call("POST", "/api/v1/backtests", trader, &manifest.to_string());
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");

    // Its status, as the operator and the agent would write it, is what the ops API shows.
    let progress = serde_json::json!({"status": {"phase": "Running",
        "progress": {"candlesProcessed": 500, "candlesTotal": 2000, "percent": 25.0}}});
    backtests
        .patch_status("from-ops-api", &PatchParams::default(), &Patch::Merge(&progress))
        .await
        .expect("status written");
    let (status, body) = api.call("GET", &format!("/api/v1/backtests/{namespace}/from-ops-api"), trader, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "Running", "{body}");
    assert_eq!(body["status"]["progress"]["percent"], 25.0, "{body}");

    // The kill switch: admin only, and it lands as spec.suspend.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sessions/paper-btc.yaml"))
            .expect("example session");
    let mut session: kuant_crds::TradingSession =
        kuant_crds::manifest::parse(&text, "paper-btc.yaml").expect("valid example");
    session.metadata.namespace = Some(namespace.clone());
    let sessions: Api<kuant_crds::TradingSession> = Api::namespaced(client.clone(), &namespace);
    sessions.create(&PostParams::default(), &session).await.expect("session created");
    let path = format!("/api/v1/sessions/{namespace}/paper-btc/suspend");
    let (status, _) = api.call("POST", &path, trader, r#"{"suspend": true}"#);
    assert_eq!(status, 403);
    let (status, body) = api.call("POST", &path, admin, r#"{"suspend": true}"#);
    assert_eq!(status, 200, "{body}");
    assert!(sessions.get("paper-btc").await.expect("session").spec.suspend, "suspended in the API server");
    drop(api);
}

/// Runs a command of the test cluster's toolbox (`helm`, `kubectl`: `tests/cluster/cluster.sh
/// run` puts them on PATH) and returns its output, failing the test with its stderr otherwise.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} on PATH (tests/cluster/cluster.sh run puts it there): {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {}: {stdout}{stderr}", args.join(" "));
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_with_default_values_and_its_operator_runs_a_backtest_under_the_charts_rbac() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    let release = test_namespace(&client, "chart").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kuant");
    // Default values: nothing set. A release name without "kuant" in it would prefix every
    // name; this one keeps the chart's cluster-wide names apart from the other tests'.
    tool(
        "helm",
        &["install", "e2e-kuant", chart, "--namespace", &release.name, "--wait", "--timeout", "180s"],
    );
    let uninstall = Uninstall(release.name.clone());

    // Every pod of the release runs, ready, and has never restarted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release.name);
    let check_pods = || async {
        let listed = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=e2e-kuant")).await;
        let listed = listed.expect("pods listed").items;
        assert_eq!(listed.len(), 2, "the operator's pod and the ops API's");
        for pod in &listed {
            let status = pod.status.as_ref().expect("pod status");
            assert_eq!(status.phase.as_deref(), Some("Running"), "{}", pod.name_any());
            for c in status.container_statuses.iter().flatten() {
                assert!(c.ready, "{} is ready", pod.name_any());
                assert_eq!(c.restart_count, 0, "{} never restarted", pod.name_any());
            }
        }
    };
    check_pods().await;

    // A Backtest applied with kubectl runs to Complete with results: the chart's operator, under
    // the chart's RBAC, made its Job, and the agent wrote its progress under its own.
    let runs = test_namespace(&client, "chartbt").await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backtests/btc-sma-crossover.yaml");
    tool("kubectl", &["apply", "--namespace", &runs.name, "-f", example]);
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &runs.name);
    let done = eventually("the Backtest Complete", Duration::from_secs(240), || {
        let backtests = backtests.clone();
        async move {
            let bt = backtests.get("btc-sma-crossover").await.ok()?;
            (condition(&bt, "Complete").map(|c| c.0).as_deref() == Some("True")).then_some(bt)
        }
    })
    .await;
    let status = done.status.expect("status");
    assert!(status.results.is_some_and(|r| r.trades > 0), "results in status");

    // The ops API serves, and only with the admin token it made at first start.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &release.name);
    let secret = secrets.get("e2e-kuant-ops-api-tokens").await.expect("the ops API made its token Secret");
    let token = secret.data.and_then(|d| d.get("admin-token").cloned()).expect("an admin-token key").0;
    let token = String::from_utf8(token).expect("a text token");
    let ops: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("address");
    let path = format!("/api/v1/backtests/{}/btc-sma-crossover", runs.name);
    assert_eq!(http(ops, "GET", &path, "wrong-token-0123456789", "").0, 401);
    let (code, body) = http(ops, "GET", &path, &token, "");
    assert_eq!(code, 200, "{body}");
    check_pods().await;
    drop(uninstall);
}

/// `helm uninstall` of the chart test's release when the test ends, passed or not.
struct Uninstall(String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ =
            Command::new("helm").args(["uninstall", "e2e-kuant", "--namespace", &self.0, "--wait"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_accepted_by_the_api_server_and_the_crds_rules_refuse_what_they_must() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    apply_crds(&client).await;
    let ns = test_namespace(&client, "examples").await;

    // Every manifest in examples/, as a user would apply it, accepted by server-side dry run.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let out = tool(
        "kubectl",
        &["apply", "--dry-run=server", "--recursive", "-f", examples, "--namespace", &ns.name],
    );
    let accepted = out.lines().filter(|l| l.contains("(server dry run)")).count();
    let files = ["backtests", "sessions", "reconciliations"]
        .iter()
        .flat_map(|d| std::fs::read_dir(format!("{examples}/{d}")).expect("examples").flatten())
        .count();
    assert!(accepted >= files, "every example accepted ({accepted} objects from {files} files):\n{out}");

    // A live TradingSession without the acknowledgement: refused with the CEL rule's message.
    let text = std::fs::read_to_string(format!("{examples}/sessions/live-btc.yaml")).expect("live example");
    let mut live: TradingSession = serde_yaml::from_str(&text).expect("a TradingSession");
    live.metadata.namespace = Some(ns.name.clone());
    live.spec.live_trading_acknowledged = false;
    let sessions: Api<TradingSession> = Api::namespaced(client.clone(), &ns.name);
    let refused = sessions.create(&PostParams::default(), &live).await.expect_err("refused");
    let kube::Error::Api(status) = refused else { panic!("an API error: {refused}") };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("live trading needs spec.liveTradingAcknowledged: true"),
        "the CEL message: {}",
        status.message
    );

    // A Backtest's spec cannot change once created.
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &ns.name);
    backtests.create(&PostParams::default(), &example_backtest(&ns.name)).await.expect("created");
    let change = serde_json::json!({"spec": {"execution": {"feeBps": 25}}});
    let refused = backtests
        .patch("btc-sma-crossover", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("a spec change is refused");
    let kube::Error::Api(status) = refused else { panic!("an API error: {refused}") };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("Backtest spec is immutable"), "{}", status.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_backtests_all_complete_once_while_the_operator_is_killed_ten_times() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    let agent_image =
        std::env::var("KUANT_E2E_AGENT_IMAGE").expect("KUANT_E2E_AGENT_IMAGE (a node runs the agents)");
    let seed = std::env::var("KUANT_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_secs())
    });
    eprintln!("chaos seed: {seed} (KUANT_CHAOS_SEED={seed} repeats this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    apply_crds(&client).await;
    apply_agent_role(&client).await;
    let ns = test_namespace(&client, "chaos").await;
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    // Every phase each Backtest shows, in order, from a watch that runs throughout.
    let phases = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Vec<String>>::new()));
    let watch = {
        use futures::StreamExt;
        let phases = phases.clone();
        let stream = kube::runtime::watcher(backtests.clone(), kube::runtime::watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            while let Some(Ok(bt)) = stream.next().await {
                let phase = bt.status.as_ref().and_then(|s| s.phase.as_ref()).map(|p| format!("{p:?}"));
                if let Some(phase) = phase {
                    let mut seen = phases.lock().expect("phases");
                    let list = seen.entry(bt.name_any()).or_default();
                    if list.last() != Some(&phase) {
                        list.push(phase);
                    }
                }
            }
        })
    };

    let mut operator = Operator::start_without_lease(&agent_image);
    let names: Vec<String> = (0..50).map(|i| format!("chaos-{i:02}")).collect();
    let creates = names.iter().map(|name| {
        let mut bt = example_backtest(&ns.name);
        bt.metadata.name = Some(name.clone());
        if let Some(synthetic) = bt.spec.data.synthetic.as_mut() {
            synthetic.bars = 500;
        }
        let backtests = backtests.clone();
        async move { backtests.create(&PostParams::default(), &bt).await.expect("Backtest created") }
    });
    futures::future::join_all(creates).await;
    for kill in 1..=10 {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..3000))).await;
        operator.kill();
        eprintln!("chaos: operator killed ({kill}/10)");
        tokio::time::sleep(Duration::from_millis(rng.u64(0..500))).await;
        operator = Operator::start_without_lease(&agent_image);
    }

    eventually("all fifty Backtests Complete", Duration::from_secs(600), || {
        let backtests = backtests.clone();
        async move {
            let listed = backtests.list(&ListParams::default()).await.ok()?.items;
            let done = listed
                .iter()
                .filter(|b| condition(b, "Complete").map(|c| c.0).as_deref() == Some("True"))
                .count();
            (done == 50).then_some(())
        }
    })
    .await;
    for bt in backtests.list(&ListParams::default()).await.expect("listed").items {
        assert!(
            bt.status.as_ref().and_then(|s| s.results.as_ref()).is_some(),
            "{} has results",
            bt.name_any()
        );
    }
    let mut owners = std::collections::HashMap::<String, usize>::new();
    for job in jobs.list(&ListParams::default()).await.expect("jobs listed").items {
        for owner in job.owner_references() {
            *owners.entry(owner.name.clone()).or_default() += 1;
        }
    }
    assert_eq!(owners.len(), 50, "every Backtest has its Job");
    assert!(owners.values().all(|&n| n == 1), "no Backtest has two Jobs: {owners:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    let phases = phases.lock().expect("phases").clone();
    for (name, seen) in &phases {
        if let Some(end) = seen.iter().position(|p| p == "Succeeded" || p == "Failed") {
            assert_eq!(seen.len(), end + 1, "{name}: a terminal phase never goes back: {seen:?}");
        }
        assert_eq!(seen.last().map(String::as_str), Some("Succeeded"), "{name}: {seen:?}");
    }
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_running_while_the_agent_runs_and_rounded_figures_when_it_is_done() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    let agent_image =
        std::env::var("KUANT_E2E_AGENT_IMAGE").expect("KUANT_E2E_AGENT_IMAGE (a node runs the agents)");
    apply_crds(&client).await;
    apply_agent_role(&client).await;
    let ns = test_namespace(&client, "display").await;
    let backtests: Api<Backtest> = Api::namespaced(client.clone(), &ns.name);
    let _operator = Operator::start_without_lease(&agent_image);

    // Enough candles that the agent (a debug build here) computes for seconds, not milliseconds.
    let mut bt = example_backtest(&ns.name);
    if let Some(synthetic) = bt.spec.data.synthetic.as_mut() {
        synthetic.bars = 3_000_000;
    }
    backtests.create(&PostParams::default(), &bt).await.expect("Backtest created");
    let get = || tool("kubectl", &["get", "backtest", "btc-sma-crossover", "--namespace", &ns.name]);

    // While its pod runs, kubectl says so (the phase follows the pod, not the Job's end).
    let running = eventually("kubectl to show Running", Duration::from_secs(120), || {
        let shown = get();
        let done = shown.contains("Succeeded") || shown.contains("Failed");
        assert!(!done, "the run ended before kubectl showed it Running:\n{shown}");
        async move { shown.contains("Running").then_some(shown) }
    })
    .await;
    assert!(running.contains("BTCUSDT"), "the symbols as text:\n{running}");

    let done = eventually("Complete", Duration::from_secs(300), || {
        let backtests = backtests.clone();
        async move {
            let bt = backtests.get("btc-sma-crossover").await.ok()?;
            (condition(&bt, "Complete").map(|c| c.0).as_deref() == Some("True")).then_some(bt)
        }
    })
    .await;
    let results = done.status.as_ref().and_then(|s| s.results.clone()).expect("results");
    let shown = get();
    let header: Vec<&str> = shown.lines().next().unwrap_or_default().split_whitespace().collect();
    let row: Vec<&str> = shown.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    let column = |name: &str| {
        let at = header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("column {name}:\n{shown}"));
        row.get(at).copied().unwrap_or_default().to_owned()
    };
    assert_eq!(column("SYMBOLS"), "BTCUSDT", "{shown}");
    assert_eq!(column("PHASE"), "Succeeded", "{shown}");
    assert_eq!(column("RETURN%"), format!("{:.2}", results.total_return_pct), "{shown}");
    assert_eq!(column("MAXDD%"), format!("{:.2}", results.max_drawdown_pct), "{shown}");
    let sharpe = results.sharpe.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"));
    assert_eq!(column("SHARPE"), sharpe, "{shown}");
}

/// A session's agent as a process of its own, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(status, reason)` of the session's condition `type_`.
fn session_condition(session: &TradingSession, type_: &str) -> Option<(String, String)> {
    let status = session.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// The session agent against a real API server. (Starting its pod is the TradingSession
/// controller's job, issue 16; here the agent runs as a process with the test cluster's
/// kubeconfig, as the pod would with its service account.) It applies its part of the status as
/// `kuant-agent` — heartbeat, portfolio, counters and its conditions — and follows the kill
/// switch: `spec.suspend: true` turns `Trading` to `Suspended` at once, `false` turns it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_agent_applies_its_status_and_follows_the_kill_switch_through_the_api_server() {
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    apply_crds(&client).await;
    let ns = test_namespace(&client, "session").await;
    let sessions: Api<TradingSession> = Api::namespaced(client.clone(), &ns.name);
    let path = format!("{}/examples/sessions/sim-btc.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the example");
    let mut session: TradingSession = kuant_crds::manifest::parse(&text, &path).expect("the example parses");
    session.metadata.namespace = Some(ns.name.clone());
    let created = sessions.create(&PostParams::default(), &session).await.expect("TradingSession created");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_kuant"))
            .args(["agent", "session"])
            // As the operator hands it over: without `suspend` and the generation, which the
            // agent reads from the API server.
            .env("KUANT_SESSION", kuant_operator::session::children::handed_over(&created).expect("JSON"))
            .env_remove("KUANT_DATABASE_URL")
            .env("KUANT_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent starts"),
    );
    let get = || {
        let sessions = sessions.clone();
        async move { sessions.get("sim-btc").await.ok() }
    };
    let trading = |want: &'static str, reason: &'static str| {
        move |s: &TradingSession| {
            session_condition(s, "Trading").is_some_and(|(status, r)| status == want && r == reason)
        }
    };
    let first = eventually("the agent's status", Duration::from_secs(90), || async {
        get().await.filter(|s| trading("True", "Trading")(s))
    })
    .await;
    let status = first.status.clone().expect("a status");
    assert!(status.last_heartbeat.is_some(), "{status:#?}");
    assert_eq!(status.portfolio.as_ref().map(|p| p.equity.value()), Some("10000".parse().expect("decimal")));
    assert!(status.counters.is_some(), "{status:#?}");
    assert_eq!(session_condition(&first, "MarketDataHealthy").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(session_condition(&first, "Halted").map(|c| c.0).as_deref(), Some("False"));
    assert!(status.conditions.iter().all(|c| c.observed_generation == created.metadata.generation));
    let managers: Vec<(Option<String>, Option<String>)> = first
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.subresource.clone()))
        .collect();
    assert!(
        managers.contains(&(Some("kuant-agent".into()), Some("status".into()))),
        "the status applied as kuant-agent: {managers:?}"
    );
    // The agent holds the session's trading Lease (orders leave only while it does).
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = eventually("the trading Lease", Duration::from_secs(20), || async {
        leases
            .get("sim-btc-trader")
            .await
            .ok()
            .filter(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_some())
    })
    .await;
    assert_eq!(lease.spec.and_then(|s| s.lease_duration_seconds), Some(15));
    // The heartbeat moves on.
    let beat = status.last_heartbeat.clone();
    eventually("a second heartbeat", Duration::from_secs(20), || async {
        get().await.filter(|s| s.status.as_ref().and_then(|st| st.last_heartbeat.clone()) != beat)
    })
    .await;

    // The kill switch, through the API server.
    let switch = |on: bool| {
        let sessions = sessions.clone();
        async move {
            let patch = Patch::Merge(serde_json::json!({"spec": {"suspend": on}}));
            sessions.patch("sim-btc", &PatchParams::default(), &patch).await.expect("patched");
        }
    };
    let thrown = Instant::now();
    switch(true).await;
    eventually("Trading=False (Suspended)", Duration::from_secs(15), || async {
        get().await.filter(|s| trading("False", "Suspended")(s))
    })
    .await;
    eprintln!("the kill switch showed in the status {:?} after the patch", thrown.elapsed());
    switch(false).await;
    eventually("Trading=True again", Duration::from_secs(15), || async {
        get().await.filter(|s| trading("True", "Trading")(s))
    })
    .await;
}

/// A TradingSession on the simulator at `url`: sma-crossover 3/8 on 1h candles, a protective
/// stop 5 % under each entry (so an order rests on the exchange while a position is held).
fn sim_session(name: &str, namespace: &str, url: &str, live: bool, secret: &str) -> TradingSession {
    let extra = "    stopLossPct: 5\n  marketData:\n    staleAfterSeconds: 10\n";
    let text = support::sim::session_yaml(name, live, url, secret, 5_000, extra);
    let mut session: TradingSession = kuant_crds::manifest::parse(&text, name).expect("a valid session");
    session.metadata.namespace = Some(namespace.to_owned());
    session
}

/// The TradingSession controller end to end (issue 16), the operator and the agents as the test
/// node runs them: a live session on `kuant exchange-sim` runs as one pod of its StatefulSet,
/// reaches `Trading` with its fills in the store, and its protective stop rests on the simulator;
/// `suspend: true` cancels it and shows `Suspended` within 5 s; deleting the session waits for
/// the agent to cancel its orders, then the pod goes and the simulator has no open order. A
/// paper session trades on the simulator's market data; a live one without acknowledgement is
/// refused by the API server, and one without its Secret gets no pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_as_one_agent_pod_suspends_and_leaves_no_open_order_when_deleted() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;
    use kuant_exchanges::binance::Credentials;
    use kuant_exchanges::{BinanceEndpoints, BinanceExchange, Exchange};

    const KEY: &str = "e2e-session-key";
    const SECRET: &str = "e2e-session-secret-0123456789";
    let _serial = SERIAL.lock().await;
    let Some(client) = test_cluster().await else { return };
    let agent_image = std::env::var("KUANT_E2E_AGENT_IMAGE")
        .expect("KUANT_E2E_AGENT_IMAGE names a kuant image the cluster's nodes can run");
    apply_crds(&client).await;
    apply_agent_role(&client).await;
    let ns = test_namespace(&client, "ts").await;
    let namespace = ns.name.clone();

    // The store: a schema of this test's own on the CI PostgreSQL.
    let schema = format!("kuant_e2e_ts_{}", std::process::id());
    let psql = |sql: String| {
        let target = std::env::var("KUANT_TEST_PG")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let out = Command::new("psql")
            .args([target.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql])
            .output()
            .expect("psql runs (install postgresql-client)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    psql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"));
    let base = std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let separator = if base.contains('?') { '&' } else { '?' };
    let store_url = format!("{base}{separator}options=-c%20search_path%3D{schema}");

    let dir = std::env::temp_dir().join(format!("kuant-e2e-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_sim, url) = support::sim::exchange_sim(&dir, KEY, SECRET);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for (name, data) in [
        ("kuant-store", serde_json::json!({ "url": store_url })),
        ("sim-keys", serde_json::json!({ "apiKey": KEY, "apiSecret": SECRET })),
    ] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": data
        }))
        .expect("a Secret");
        secrets.create(&PostParams::default(), &secret).await.expect("Secret created");
    }
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_kuant"))
            .args(["operator", "--metrics-addr", "127.0.0.1:0", "--agent-image", &agent_image])
            .args(["--agent-database-secret", "kuant-store"])
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the operator starts"),
    );
    let sessions: Api<TradingSession> = Api::namespaced(client.clone(), &namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let get = |name: &'static str| {
        let sessions = sessions.clone();
        async move { sessions.get(name).await.ok() }
    };
    let phase = |s: &TradingSession| s.status.as_ref().and_then(|st| st.phase).map(|p| format!("{p:?}"));
    let exchange = BinanceExchange::new(BinanceEndpoints::at(&url), Some(Credentials::hmac(KEY, SECRET)))
        .expect("a client of the simulator");
    let open_on_sim =
        || async { exchange.open_orders("BTCUSDT").await.map(|o| o.len()).unwrap_or(usize::MAX) };

    // Refused: by the API server without the acknowledgement...
    let mut unacknowledged = sim_session("live-unacked", &namespace, &url, true, "sim-keys");
    unacknowledged.spec.live_trading_acknowledged = false;
    let refused = sessions.create(&PostParams::default(), &unacknowledged).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("liveTradingAcknowledged")),
        "{refused:?}"
    );
    // ...and by the operator without the Secret: Ready=False, and never a pod.
    let keyless = sim_session("live-keyless", &namespace, &url, true, "no-such-secret");
    sessions.create(&PostParams::default(), &keyless).await.expect("created");
    let refused = eventually("CredentialsMissing", Duration::from_secs(30), || async {
        get("live-keyless")
            .await
            .filter(|s| session_condition(s, "Ready").is_some_and(|c| c.1 == "CredentialsMissing"))
    })
    .await;
    assert_eq!(phase(&refused).as_deref(), Some("Failed"));

    // A paper session on the simulator's market data: it trades, its fills are stored, and its
    // agent serves its metrics. (Pods on the test node share this machine's network, so only one
    // agent at a time can listen on the metrics port: the sessions run one after the other.)
    let store = kuant_store::Store::open(&store_url).await.expect("the store");
    let trading = |name: &'static str| async move {
        let s = eventually(&format!("{name} Trading"), Duration::from_secs(120), || async move {
            get(name).await.filter(|s| phase(s).as_deref() == Some("Trading"))
        })
        .await;
        assert_eq!(session_condition(&s, "Ready"), Some(("True".into(), "Trading".into())), "{name}");
        s
    };
    let fills = |name: &'static str| {
        let (store, run) = (store.clone(), format!("{namespace}/{name}"));
        async move {
            eventually(&format!("fills of {run} in the store"), Duration::from_secs(120), || {
                let (store, run) = (store.clone(), run.clone());
                async move { store.fills_of_run(&run).await.ok().filter(|f| !f.is_empty()) }
            })
            .await
        }
    };
    let paper = sessions
        .create(&PostParams::default(), &sim_session("paper", &namespace, &url, false, "sim-keys"))
        .await
        .expect("created");
    trading("paper").await;
    fills("paper").await;
    let metrics = tokio::task::spawn_blocking(|| {
        let mut stream = std::net::TcpStream::connect("127.0.0.1:9090").expect("the agent's metrics port");
        use std::io::{Read, Write};
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").expect("sent");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text
    })
    .await
    .expect("scraped");
    let series = format!("kuant_session_fills_total{{session=\"{namespace}/paper\"}}");
    assert!(
        metrics.contains(&series) && metrics.contains("kuant_session_market_data_age_seconds"),
        "{metrics}"
    );
    let paper_pod =
        format!("{}-0", kuant_operator::names::session_agent("paper", &paper.uid().expect("uid")));
    sessions.delete("paper", &DeleteParams::background()).await.expect("deleted");
    eventually("the paper agent's pod to go", Duration::from_secs(90), || async {
        pods.get_opt(&paper_pod).await.ok().and_then(|p| p.is_none().then_some(()))
    })
    .await;

    // A live session: one StatefulSet of one pod, fills in the store, a stop resting on the
    // simulator.
    let live = sessions
        .create(&PostParams::default(), &sim_session("live", &namespace, &url, true, "sim-keys"))
        .await
        .expect("created");
    trading("live").await;
    // What `kubectl get ts` shows: mode, phase, equity, P&L today, market data, age.
    let table = tool("kubectl", &["get", "ts", "live", "-n", &namespace]);
    for column in ["MODE", "PHASE", "EQUITY", "PNL-TODAY", "MARKET-DATA", "AGE", "live", "Trading", "Fresh"] {
        assert!(table.contains(column), "no {column} in\n{table}");
    }
    let child = kuant_operator::names::session_agent("live", &live.uid().expect("uid"));
    let set = sets.get(&child).await.expect("the live session's StatefulSet");
    assert_eq!(set.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(set.owner_references()[0].kind, "TradingSession");
    let managed = ListParams::default().labels("app.kubernetes.io/component=session");
    let all_sets = sets.list(&managed).await.expect("listed").items;
    assert!(
        all_sets.iter().all(|s| !s.name_any().starts_with("live-keyless")),
        "no StatefulSet for the session without its Secret"
    );
    assert!(
        pods.list(&managed).await.expect("listed").items.iter().all(|p| !p.name_any().contains("keyless")),
        "no pod for the session without its Secret"
    );
    fills("live").await;
    eventually("a protective stop on the simulator", Duration::from_secs(120), || async {
        (open_on_sim().await > 0 && open_on_sim().await != usize::MAX).then_some(())
    })
    .await;

    // The kill switch: open orders cancelled and Suspended within 5 s.
    let switch = |on: bool| {
        let sessions = sessions.clone();
        async move {
            let patch = Patch::Merge(serde_json::json!({"spec": {"suspend": on}}));
            sessions.patch("live", &PatchParams::default(), &patch).await.expect("patched");
        }
    };
    let thrown = Instant::now();
    switch(true).await;
    eventually("Suspended with no open order", Duration::from_secs(5), || async {
        let s = get("live").await?;
        (phase(&s).as_deref() == Some("Suspended") && open_on_sim().await == 0).then_some(())
    })
    .await;
    eprintln!("suspended, orders cancelled, {:?} after the patch", thrown.elapsed());
    let pod_before = pods.get(&format!("{child}-0")).await.expect("the agent pod").uid();
    switch(false).await;
    eventually("Trading again", Duration::from_secs(30), || async {
        get("live").await.filter(|s| phase(s).as_deref() == Some("Trading"))
    })
    .await;
    assert_eq!(
        pods.get(&format!("{child}-0")).await.expect("the agent pod").uid(),
        pod_before,
        "the kill switch does not roll the pod"
    );
    // A hold from outside (as the Reconciliation controller will place one, in the operator's
    // status field): the agent stops trading within 2 s and shows it in Halted; the resume
    // annotation clears it.
    let since = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(1);
    let hold = serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1", "kind": "TradingSession",
        "status": {"holds": [{"source": "reconciliation/e2e", "reason": "BalanceDrift",
                              "message": "BTC off by 0.1", "since": since.to_string()}]}
    });
    let held_at = Instant::now();
    sessions
        .patch_status("live", &PatchParams::apply("kuant-operator").force(), &Patch::Apply(&hold))
        .await
        .expect("a hold placed");
    eventually("Halted (Held)", Duration::from_secs(2), || async {
        get("live").await.filter(|s| session_condition(s, "Halted") == Some(("True".into(), "Held".into())))
    })
    .await;
    eprintln!("the hold showed in Halted {:?} after it was placed", held_at.elapsed());
    eventually("phase Halted", Duration::from_secs(10), || async {
        get("live").await.filter(|s| phase(s).as_deref() == Some("Halted"))
    })
    .await;
    let resume = Patch::Merge(serde_json::json!({"metadata": {"annotations": {
        "kuant.dev/resume-at": k8s_openapi::jiff::Timestamp::now().to_string()
    }}}));
    sessions.patch("live", &PatchParams::default(), &resume).await.expect("annotated");
    let resumed = eventually("Trading after the resume", Duration::from_secs(15), || async {
        get("live").await.filter(|s| phase(s).as_deref() == Some("Trading"))
    })
    .await;
    assert!(resumed.status.as_ref().is_some_and(|s| s.holds.is_empty()), "the hold is cleared");
    eventually("a stop resting again", Duration::from_secs(120), || async {
        (open_on_sim().await > 0 && open_on_sim().await != usize::MAX).then_some(())
    })
    .await;

    // The pod deleted (SIGTERM, as a node drain or an eviction sends it): the agent cancels its
    // resting stop before it exits; the StatefulSet's new pod recovers and trades again.
    let resting = exchange.open_orders("BTCUSDT").await.expect("open orders")[0].client_id.clone();
    let pod_name = format!("{child}-0");
    let old_pod = pods.get(&pod_name).await.expect("the agent pod").uid();
    pods.delete(&pod_name, &DeleteParams::default()).await.expect("pod deleted");
    eventually("the stop cancelled by the stopping agent", Duration::from_secs(30), || async {
        let order = exchange.order("BTCUSDT", &resting).await.ok().flatten()?;
        (order.status == kuant_exchanges::OrderStatus::Canceled).then_some(())
    })
    .await;
    eventually("a new agent pod trading", Duration::from_secs(120), || async {
        let new_pod = pods.get(&pod_name).await.ok()?.uid();
        let s = get("live").await?;
        let ready = session_condition(&s, "Ready");
        eprintln!("new pod: {}, phase {:?}, Ready {ready:?}", new_pod != old_pod, phase(&s));
        (new_pod != old_pod && phase(&s).as_deref() == Some("Trading")).then_some(())
    })
    .await;
    eventually("a stop resting once more", Duration::from_secs(120), || async {
        (open_on_sim().await > 0 && open_on_sim().await != usize::MAX).then_some(())
    })
    .await;

    // Deleted: the agent cancels its orders, then the session, its StatefulSet and pod go.
    sessions.delete("live", &DeleteParams::background()).await.expect("deleted");
    eventually("the session to go", Duration::from_secs(90), || async {
        sessions.get_opt("live").await.ok().and_then(|s| s.is_none().then_some(()))
    })
    .await;
    assert_eq!(open_on_sim().await, 0, "no open order left on the simulator");
    // What `kubectl describe` showed along the way.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &namespace);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("live"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Created", "Started", "Suspended", "Resumed", "Halted", "HoldsCleared", "OrdersCancelled"]
    {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} Event: {reasons:?}");
    }
    eventually("the agent pod to go", Duration::from_secs(90), || async {
        pods.get_opt(&format!("{child}-0")).await.ok().and_then(|p| p.is_none().then_some(()))
    })
    .await;
    sessions.delete("live-keyless", &DeleteParams::background()).await.expect("deleted");
    eventually("every session gone", Duration::from_secs(90), || async {
        sessions.list(&ListParams::default()).await.ok().filter(|l| l.items.is_empty()).map(|_| ())
    })
    .await;
    psql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    let _ = std::fs::remove_dir_all(&dir);
}
