//! The `kuant` binary as a user meets it.

#[path = "common/shared.rs"]
mod shared;
use shared::shared_data;
use std::process::Command;

fn kuant(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(args)
        .env("KUANT_DATABASE_URL", test_store())
        .output()
        .expect("kuant runs")
}

/// The store local runs of these tests save to: a SQLite file of this test process, never the
/// user's own.
fn test_store() -> String {
    let dir = std::env::temp_dir().join(format!("kuant-cli-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("kuant.db").to_string_lossy().into_owned()
}

#[test]
fn crd_prints_the_three_committed_crds() {
    let out = kuant(&["crd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kuant/crds/");
    let mut expected = String::new();
    for name in
        ["backtests.kuant.dev.yaml", "tradingsessions.kuant.dev.yaml", "reconciliations.kuant.dev.yaml"]
    {
        expected.push_str("---\n");
        expected.push_str(&std::fs::read_to_string(format!("{dir}{name}")).expect("committed CRD"));
    }
    assert_eq!(stdout, expected);
}

#[test]
fn the_reconcile_agent_outside_a_pod_says_what_it_misses_and_reports_it() {
    let report = std::env::temp_dir().join(format!("kuant-recon-report-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["agent", "reconcile"])
        .env_remove("KUANT_RECONCILIATION")
        .env("KUANT_TERMINATION_LOG", &report)
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(2), "it must not pretend to succeed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KUANT_RECONCILIATION is not set"), "{stderr}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("a report")).expect("JSON");
    assert!(written["error"].as_str().is_some_and(|e| e.contains("KUANT_RECONCILIATION")), "{written}");
    let _ = std::fs::remove_file(&report);
}

#[test]
fn the_session_agent_outside_a_pod_says_what_it_misses() {
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["agent", "session"])
        .env_remove("KUANT_SESSION")
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KUANT_SESSION is not set"));
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["agent", "session"])
        .env("KUANT_SESSION", r#"{"apiVersion": "kuant.dev/v1alpha1", "kind": "TradingSession", "metadata": {"name": "x"}, "spec": {"mode": "live"}}"#)
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kuant-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn example(name: &str) -> String {
    format!("{}/examples/backtests/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_broken_manifest_exits_2_with_a_one_line_error() {
    let dir = temp_dir("manifest");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: kuant.dev/v1alpha1\nkind: Backtest\nmetadata: {name: bad}\nspec:\n  strategy: {name: sma-crossover}\n  market: {symbols: [BTCUSDT], timeframe: 2h}\n  portfolio: {initialCash: \"100\"}\n",
    )
    .expect("write manifest");
    let out = kuant(&["backtest", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.yaml: spec.market.timeframe: Unsupported value: \"2h\""), "{stderr}");

    let out = kuant(&["backtest", "-f", dir.join("missing.yaml").to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn broken_csv_data_exits_2_naming_file_line_and_problem() {
    let dir = temp_dir("csv");
    let cases = [
        (
            "unsorted.csv",
            "1500001200000,1,2,0.5,1,1\n1499997600000,1,2,0.5,1,1\n",
            ":3: timestamp 1499997600000 is before the previous row's 1500001200000 (rows must be ascending)",
        ),
        (
            "dup.csv",
            "1500001200000,1,2,0.5,1,1\n1500001200000,1,2,0.5,1,1\n",
            ":3: duplicate timestamp 1500001200000",
        ),
        ("gap.csv", "1500001200000,1,2,0.5,1,1\n1500012000000,1,2,0.5,1,1\n", ":3: gap: 2 missing 1h bars"),
        ("hl.csv", "1500001200000,1,0.4,0.5,1,1\n", ":2: high 0.4 < low 0.5"),
        ("nan.csv", "1500001200000,1,2,0.5,NaN,1\n", ":2: close: \"NaN\" is not a number"),
        ("neg.csv", "1500001200000,0,2,0.5,1,1\n", ":2: open 0 is not a positive price"),
    ];
    for (name, body, expected) in cases {
        let file = dir.join(name);
        std::fs::write(&file, format!("timestamp_ms,open,high,low,close,volume\n{body}")).expect("write csv");
        let out = kuant(&[
            "backtest",
            "-f",
            &example("btc-sma-crossover.yaml"),
            "--data",
            file.to_str().expect("utf-8"),
        ]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(&format!("{name}{expected}")), "{name}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_first_readme_command_prints_a_result_table() {
    let out = kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for row in ["final equity", "total return", "Sharpe", "max drawdown", "trades", "exposure"] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
}

#[test]
fn json_output_is_identical_on_every_run_but_for_timings() {
    let dir = temp_dir("json");
    let run = |csv: &str| {
        let out =
            kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml"), "-o", "json", "--equity-csv", csv]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let timings = json.as_object_mut().and_then(|o| o.remove("timings")).expect("timings present");
        assert!(timings["load_seconds"].as_f64().is_some() && timings["simulate_seconds"].as_f64().is_some());
        json
    };
    let (a_csv, b_csv) = (dir.join("a.csv"), dir.join("b.csv"));
    let a = run(a_csv.to_str().expect("utf-8"));
    let b = run(b_csv.to_str().expect("utf-8"));
    assert_eq!(a, b);
    assert!(a["final_equity"].is_string());
    let trades = a["trades"].as_array().expect("trades");
    assert!(trades.len() > 10);
    for key in ["entry_time", "exit_time", "entry_price", "exit_price", "quantity", "pnl"] {
        assert!(trades[0].get(key).is_some(), "trade field {key}");
    }
    let last = trades.last().expect("a trade");
    if last["exit_time"].is_null() {
        assert!(last["pnl"].is_null() && last["exit_price"].is_null(), "an open trade has null exit and pnl");
    }
    let curve = std::fs::read_to_string(&a_csv).expect("equity csv");
    assert_eq!(curve, std::fs::read_to_string(&b_csv).expect("equity csv"));
    assert_eq!(curve.lines().count(), 20_001, "header + one row per candle");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_every_subcommand() {
    let out = kuant(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for sub in ["crd", "operator", "agent", "ops-api", "backtest", "session", "exchange-sim"] {
        assert!(stdout.contains(sub), "{sub} missing from --help:\n{stdout}");
    }
}

#[test]
fn a_sweep_of_1000_combinations_over_btc_hourly_finishes_and_prints_its_time() {
    let Some(btc) = shared_data("coinbase_btcusd_1h.csv") else { return };
    let out = kuant(&[
        "backtest",
        "-f",
        &example("btc-sma-crossover.yaml"),
        "--data",
        &btc,
        "--sweep",
        "fast=2..21",
        "--sweep",
        "slow=30..128:2",
        "--top",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("Sweep: 1000 combinations (1000 ran, 0 refused) in "), "{stdout}");
    assert!(first.contains(" s on ") && first.ends_with("ranked by sharpe"), "{first}");
    assert_eq!(
        stdout.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count(),
        3,
        "{stdout}"
    );
    eprintln!("{first}");
}

#[test]
fn a_sweep_reports_refused_combinations_and_ranks_deterministically() {
    let run = || {
        let out = kuant(&[
            "backtest",
            "-f",
            &example("btc-sma-crossover.yaml"),
            "--sweep",
            "fast=10,30",
            "--sweep",
            "slow=20,40",
            "--by",
            "return",
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        json.as_object_mut().map(|o| o.remove("seconds"));
        json
    };
    let a = run();
    assert_eq!(a["combinations"], 4);
    assert_eq!(a["skipped"], 1, "fast=30 slow=20 is refused: {a}");
    assert!(a["skip_reason"].as_str().is_some_and(|r| r.contains("must be less than slow")));
    let points = a["points"].as_array().expect("points");
    assert_eq!(points.len(), 3);
    let ret = |p: &serde_json::Value| p["metrics"]["total_return_pct"].as_f64().expect("return");
    assert!(ret(&points[0]) >= ret(&points[1]) && ret(&points[1]) >= ret(&points[2]), "best first");
    assert_eq!(a, run(), "same ranking on every run");
}

#[test]
fn a_sweep_over_an_unknown_parameter_is_bad_input() {
    let out = kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml"), "--sweep", "fst=1..3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown parameter \"fst\""));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["backtest", "-f", &example("btc-sma-crossover.yaml"), "-o", "json", "--no-store"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kuant runs");
    let mut first = [0u8; 16];
    child.stdout.as_mut().expect("stdout").read_exact(&mut first).expect("some output");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("kuant ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// `kuant agent backtest` as the Job runs it: the Backtest in `KUANT_BACKTEST`, the report in
/// the termination log, no API server reachable (progress is skipped, the run goes on).
fn agent_backtest(backtest_json: Option<&str>, tag: &str) -> (std::process::Output, String) {
    agent_backtest_saving_to(backtest_json, tag, None)
}

/// `kuant agent backtest` as a Job runs it, with the store URL the chart would give it.
fn agent_backtest_saving_to(
    backtest_json: Option<&str>,
    tag: &str,
    store: Option<&str>,
) -> (std::process::Output, String) {
    let dir = temp_dir(tag);
    let log = dir.join("termination-log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuant"));
    cmd.args(["agent", "backtest"])
        .env("KUANT_TERMINATION_LOG", &log)
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUANT_BACKTEST")
        .env_remove("KUANT_DATABASE_URL")
        .env_remove("KUANT_DATABASE_SECRET");
    if let Some(url) = store {
        cmd.env("KUANT_DATABASE_URL", url).env("KUANT_STORE_CONNECT_TIMEOUT_SECS", "1");
    }
    if let Some(json) = backtest_json {
        cmd.env("KUANT_BACKTEST", json);
    }
    let out = cmd.output().expect("kuant runs");
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    (out, report)
}

fn example_as_handed_over(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text = std::fs::read_to_string(example("btc-sma-crossover.yaml")).expect("example");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
    value["metadata"]["namespace"] = "research".into();
    value["metadata"]["uid"] = "5d0c6a55-0f4e-4b8e-9a52-6f1f2b7a9c01".into();
    value["spec"]["data"]["synthetic"]["bars"] = 2000.into();
    edit(&mut value);
    value.to_string()
}

#[test]
fn the_backtest_agent_writes_its_results_to_the_termination_message() {
    let (out, report) = agent_backtest(Some(&example_as_handed_over(|_| {})), "agent-ok");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.len() <= 4096, "the kubelet keeps 4 KiB: {} bytes", report.len());
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["candles"], 2000);
    assert!(report["results"]["finalEquity"].is_string(), "{report}");
    assert!(report["results"]["trades"].as_u64().is_some_and(|t| t > 0), "{report}");
    assert!(report.get("error").is_none());
    // It reads back as the type the operator reads it with.
    let typed: kuant_crds::backtest::AgentReport = serde_json::from_value(report).expect("an AgentReport");
    assert!(typed.results.is_some());
}

#[test]
fn the_backtest_agent_reports_bad_input_with_exit_2_and_the_reason() {
    let bad = example_as_handed_over(|v| v["spec"]["strategy"]["params"]["fast"] = 99.into());
    let (out, report) = agent_backtest(Some(&bad), "agent-bad");
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["error"], "strategy sma-crossover: fast (99) must be less than slow (30)");

    let (out, report) = agent_backtest(None, "agent-none");
    assert_eq!(out.status.code(), Some(2));
    assert!(report.contains("KUANT_BACKTEST is not set"), "{report}");
}

#[test]
fn the_operator_without_a_cluster_says_why_and_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["operator", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", temp_dir("operator").join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: cannot reach the Kubernetes API"), "{stderr}");
}

#[test]
fn the_ops_api_with_cluster_but_no_kubeconfig_says_why_and_exits_1() {
    let dir = temp_dir("ops-api-cluster");
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["ops-api", "--cluster", "--listen", "127.0.0.1:0", "--store"])
        .arg(dir.join("kuant.db"))
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster: cannot configure a Kubernetes client"), "{stderr}");
}

/// What the store holds of a run: events, curve, trades, and the run itself.
type Stored =
    (Vec<kuant_store::StoredEvent>, Vec<(i64, f64)>, Vec<kuant_store::StoredTrade>, kuant_store::StoredRun);

/// What the store at `db` holds of run `run_id`.
fn stored(db: &str, run_id: &str) -> Stored {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = kuant_store::Store::open(db).await.expect("the store opens");
        (
            store.events_of_run(run_id, 10_000_000).await.expect("events"),
            store.equity_of_run(run_id).await.expect("curve"),
            store.trades_of_run(run_id).await.expect("trades"),
            store.run(run_id).await.expect("run").expect("the run is stored"),
        )
    })
}

#[test]
fn a_local_backtest_is_saved_whole_and_a_rerun_replaces_it() {
    let dir = temp_dir("saved");
    let db = dir.join("runs.db").to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&db);
    let run = |manifest: &str| kuant(&["backtest", "-f", manifest, "-o", "json", "--store", &db]);
    let check = |out: &std::process::Output, max_points: usize| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("saved to ") && stderr.contains("equity points"), "{stderr}");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let run_id = result["run_id"].as_str().expect("run id").to_owned();
        let (events, curve, trades, stored_run) = stored(&db, &run_id);
        assert_eq!(events.len(), result["events"].as_array().map_or(0, Vec::len), "every event, once");
        let candles = result["candles"].as_u64().expect("candles") as usize;
        if candles <= max_points {
            assert_eq!(curve.len(), candles, "a point per candle");
        } else {
            assert!(curve.len() <= max_points && curve.len() > max_points * 9 / 10, "{} points", curve.len());
        }
        assert_eq!(trades.len(), result["trades"].as_array().map_or(0, Vec::len), "every trade");
        assert!(!trades.is_empty());
        assert_eq!(
            trades[0].entry_price.to_string(),
            result["trades"][0]["entry_price"].as_str().expect("price")
        );
        assert_eq!(stored_run.run.phase, "Succeeded");
        let results = stored_run.results.expect("results");
        assert_eq!(results["final_equity"], result["final_equity"], "the results of this run");
        assert_eq!(results["metrics"], result["metrics"]);
        assert!(results.get("events").is_none() && results.get("trades").is_none(), "stored apart");
        let status = stored_run.status.expect("status");
        assert_eq!(status["results"]["trades"], result["metrics"]["trades"]);
        assert!(stored_run.finished_at_ms.is_some());
        (result, events.len())
    };
    // 20,000 candles: more than the 10,000 points kept by default.
    let (first, first_events) = check(&run(&example("btc-sma-crossover.yaml")), 10_000);

    // The same run again, keeping every point: one copy of each event, not two.
    let whole = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["backtest", "-f", &example("btc-sma-crossover.yaml"), "-o", "json", "--store", &db])
        .env("KUANT_STORE_MAX_EQUITY_POINTS", "50000")
        .output()
        .expect("kuant runs");
    let (_, again_events) = check(&whole, 50_000);
    assert_eq!(again_events, first_events);

    // The same Backtest with other parameters: the stored run is the new one, curve and all.
    let text = std::fs::read_to_string(example("btc-sma-crossover.yaml")).expect("example");
    let edited = dir.join("faster.yaml");
    std::fs::write(&edited, text.replace("fast: 10", "fast: 5")).expect("edited manifest");
    let (second, _) = check(&run(&edited.to_string_lossy()), 10_000);
    assert_eq!(second["run_id"], first["run_id"], "same Backtest, same run id");
    assert_ne!(second["final_equity"], first["final_equity"], "the parameters matter");
}

#[test]
fn the_backtest_agent_saves_its_run_when_given_a_store() {
    let dir = temp_dir("agent-store");
    let db = dir.join("cluster.db").to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&db);
    let (out, report) =
        agent_backtest_saving_to(Some(&example_as_handed_over(|_| {})), "agent-store", Some(&db));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&report).expect("report");
    assert!(report.get("warning").is_none(), "{report}");
    let (events, curve, trades, run) = stored(&db, "research/btc-sma-crossover");
    assert_eq!(run.run.namespace.as_deref(), Some("research"));
    assert_eq!(run.run.phase, "Succeeded");
    assert_eq!(curve.len(), 2000, "a point per candle");
    assert!(!events.is_empty());
    let results = run.results.expect("results");
    assert_eq!(results["metrics"]["trades"].as_u64(), Some(trades.len() as u64));
    assert_eq!(report["results"]["trades"].as_u64(), Some(trades.len() as u64), "the same run as reported");
}

#[test]
fn a_backtest_agent_that_cannot_save_still_reports_its_results_with_a_warning() {
    let url = "postgres://kuant:hunter2@127.0.0.1:1/kuant";
    let (out, report) =
        agent_backtest_saving_to(Some(&example_as_handed_over(|_| {})), "agent-nostore", Some(url));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&report).expect("report");
    assert!(report["results"]["finalEquity"].is_string(), "{report}");
    let warning = report["warning"].as_str().expect("a warning");
    assert!(warning.starts_with("the run is not saved to the store: cannot open the store at"), "{warning}");
    assert!(!warning.contains("hunter2") && !String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn a_backtest_agent_whose_namespace_lacks_the_database_secret_says_so() {
    let dir = temp_dir("agent-nosecret");
    let log = dir.join("termination-log");
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["agent", "backtest"])
        .env("KUANT_TERMINATION_LOG", &log)
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUANT_DATABASE_URL")
        .env("KUANT_DATABASE_SECRET", "kuant-database/url")
        .env("KUANT_BACKTEST", example_as_handed_over(|_| {}))
        .output()
        .expect("kuant runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).expect("report")).expect("JSON");
    let warning = report["warning"].as_str().expect("a warning");
    assert!(warning.contains("namespace research has no Secret kuant-database/url"), "{warning}");
    assert!(report["results"].is_object());
}

#[test]
fn a_local_backtest_saves_to_postgresql_as_well() {
    // A schema of this test's own on the CI PostgreSQL (KUANT_TEST_PG overrides psql's target).
    let psql = |sql: &str| {
        let target = std::env::var("KUANT_TEST_PG")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let out = Command::new("psql")
            .args([target.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs (install postgresql-client)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    psql("DROP SCHEMA IF EXISTS kuant_cli_store CASCADE; CREATE SCHEMA kuant_cli_store;");
    let base = std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3Dkuant_cli_store");
    let out = kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml"), "-o", "json", "--store", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let (events, curve, trades, run) = stored(&url, result["run_id"].as_str().expect("run id"));
    assert_eq!(events.len(), result["events"].as_array().map_or(0, Vec::len));
    assert_eq!(trades.len(), result["trades"].as_array().map_or(0, Vec::len));
    assert!(!curve.is_empty() && curve.len() <= 10_000);
    assert_eq!(run.results.expect("results")["final_equity"], result["final_equity"]);
    psql("DROP SCHEMA kuant_cli_store CASCADE;");
}

#[test]
fn the_ops_api_refuses_to_serve_a_non_loopback_address_without_tokens() {
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["ops-api", "--listen", "0.0.0.0:0", "--store", &test_store()])
        .env_remove("KUANT_OPS_API_TOKENS")
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve 0.0.0.0:0 without --tokens"), "{stderr}");
}

#[test]
fn the_ops_api_serves_the_local_store_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, Read, Write};
    let dir = temp_dir("ops-api");
    let db = dir.join("local.db").to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&db);
    let saved = kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml"), "--store", &db]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));

    let mut server = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["ops-api", "--listen", "127.0.0.1:0", "--store", &db])
        .env("RUST_LOG", "info")
        .env_remove("KUANT_OPS_API_TOKENS")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kuant ops-api starts");
    let stderr = server.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("the server says where it listens").expect("a line");
        let plain: String = strip_ansi(&line);
        if let Some(rest) = plain.split("address=").nth(1) {
            break rest.split_whitespace().next().expect("an address").to_owned();
        }
    };
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream
        .write_all(b"GET /api/v1/backtests/local/btc-sma-crossover/results HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"final_equity\""), "the run kuant backtest saved: {reply}");

    // A long backtest created through the API is under way when the server is stopped.
    let text = std::fs::read_to_string(example("btc-sma-crossover.yaml")).expect("example");
    let mut manifest: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
    manifest["metadata"]["name"] = serde_json::json!("long-run");
    manifest["spec"]["data"]["synthetic"]["bars"] = serde_json::json!(3_000_000);
    let body = manifest.to_string();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    write!(
        stream,
        "POST /api/v1/backtests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");

    let started = std::time::Instant::now();
    let killed = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = server.wait().expect("the server exits");
    assert_eq!(status.code(), Some(0), "a clean shutdown on SIGTERM");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "it does not wait for the run");
    // The run does not stay Running forever: it is marked interrupted, with the reason.
    let (.., run) = stored(&db, "local/long-run");
    assert_eq!(run.run.phase, "Failed");
    let message = run.status.as_ref().and_then(|s| s["message"].as_str()).unwrap_or_default().to_owned();
    assert!(message.contains("interrupted"), "{message}");
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn no_store_skips_saving() {
    let out = kuant(&["backtest", "-f", &example("btc-sma-crossover.yaml"), "--no-store"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("saved to"));
}

#[test]
fn exchange_sim_refuses_bad_flags_with_exit_2_and_says_why() {
    for (args, says) in [
        (&["--speed", "0"][..], "\"0\" is not a speed: a positive number (1 is real time) or max"),
        (
            &["--symbol", "DOGEUSDT"][..],
            "--symbol DOGEUSDT: the simulator knows the rules of BTCUSDT and ETHUSDT",
        ),
        (&["--interval", "2h"][..], "--interval \"2h\" is not one of 1m, 5m, 15m, 1h, 4h, 1d"),
        (&["--balance", "USDT"][..], "--balance \"USDT\" is not ASSET=AMOUNT"),
        (&["--balance", "USDT=-5"][..], "an asset and an amount of zero or more"),
        (&["--keys", "/nonexistent/keys.yaml"][..], "reading the credentials file /nonexistent/keys.yaml"),
        (&["--data", "/nonexistent/btc.csv"][..], "/nonexistent/btc.csv: cannot read"),
    ] {
        let mut all = vec!["exchange-sim", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = kuant(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} says {says:?}: {stderr}");
    }
}

#[test]
fn exchange_sim_lists_every_symbol_it_is_given_and_prints_where_it_listens() {
    use std::io::{BufRead, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args([
            "exchange-sim",
            "--listen",
            "127.0.0.1:0",
            "--symbol",
            "BTCUSDT",
            "--symbol",
            "ETHUSDT",
            "--bars",
            "100",
            "--speed",
            "max",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("started");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let key = lines.next().and_then(Result::ok).unwrap_or_default();
    let secret = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("it listens where it says");
    write!(stream, "GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("BTCUSDT, ETHUSDT at max speed"), "{first}");
    assert!(
        key.starts_with("key: ") && secret.starts_with("secret: ") && secret.len() > 40,
        "{key} / {secret}"
    );
    assert!(
        answer.contains("\"symbol\":\"BTCUSDT\"") && answer.contains("\"symbol\":\"ETHUSDT\""),
        "{answer}"
    );
}

#[test]
fn exchange_sim_needs_one_data_file_per_symbol() {
    let out = kuant(&[
        "exchange-sim",
        "--listen",
        "127.0.0.1:0",
        "--symbol",
        "BTCUSDT",
        "--symbol",
        "ETHUSDT",
        "--data",
        "a.csv",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 --data files for 2 --symbol"));
    let out =
        kuant(&["exchange-sim", "--listen", "127.0.0.1:0", "--symbol", "BTCUSDT", "--symbol", "BTCUSDT"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--symbol BTCUSDT is given twice"));
}
