//! `kuant reconcile` against `kuant exchange-sim`: a live session's ledger agrees with the
//! simulator's account to the last decimal; a trade made "from outside" drifts it, and the run
//! names that trade; a paper session agrees with its paper account.

#[path = "support/sim.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY: &str = "reconcile-key";
const SECRET: &str = "reconcile-secret-0123456789";

fn dir(name: &str) -> PathBuf {
    sim::fresh_dir("reconcile", name)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

fn session_manifest(dir: &Path, url: &str, mode: &str) -> PathBuf {
    let yaml = sim::session_yaml(&format!("{mode}-btc"), mode == "live", url, "sim-keys", 5_000, "");
    write(dir, &format!("{mode}.yaml"), &yaml)
}

fn recon_manifest(dir: &Path, session: &str) -> PathBuf {
    write(
        dir,
        &format!("recon-{session}.yaml"),
        &format!(
            "apiVersion: kuant.dev/v1alpha1
kind: Reconciliation
metadata:
  name: {session}-check
spec:
  sessionRef:
    name: {session}
  threshold:
    absolute: \"0\"
    relativePct: 0
"
        ),
    )
}

fn kuant(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(args)
        .arg("--store")
        .arg(dir.join("kuant.db"))
        .arg("--credentials")
        .arg(dir.join("keys.yaml"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("kuant runs")
}

fn reconcile(dir: &Path, recon: &Path, session: &Path) -> (Option<i32>, serde_json::Value, String) {
    let out = kuant(
        dir,
        &[
            "reconcile",
            "-f",
            &recon.display().to_string(),
            "--session",
            &session.display().to_string(),
            "-o",
            "json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code(), json, stderr)
}

fn outside_trade(url: &str) {
    sim::admin(url, "/_sim/trade", r#"{"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}"#);
}

#[test]
fn a_live_sessions_ledger_agrees_with_the_exchange_until_a_trade_from_outside_which_it_names() {
    let dir = dir("live");
    let (_sim, url) = sim::exchange_sim(&dir, KEY, SECRET);
    let session = session_manifest(&dir, &url, "live");
    let out =
        kuant(&dir, &["session", "-f", &session.display().to_string(), "-o", "json", "--duration", "25s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let types: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    assert!(types.iter().any(|t| t == "fill"), "the session traded (else this proves little): {types:?}");

    let recon = recon_manifest(&dir, "live-btc");
    let (code, first, stderr) = reconcile(&dir, &recon, &session);
    assert_eq!((code, first["result"].as_str()), (Some(0), Some("InSync")), "{first:#}\n{stderr}");
    let assets: Vec<&str> =
        first["assets"].as_array().expect("assets").iter().filter_map(|a| a["asset"].as_str()).collect();
    assert!(assets.contains(&"USDT") && assets.contains(&"BTC"), "{assets:?}");
    assert!(
        first["assets"].as_array().expect("assets").iter().all(|a| a["drift"] == "0"),
        "to the last decimal: {first:#}"
    );

    outside_trade(&url);
    let (code, second, stderr) = reconcile(&dir, &recon, &session);
    assert_eq!((code, second["result"].as_str()), (Some(4), Some("Drifted")), "{second:#}\n{stderr}");
    let btc = second["assets"].as_array().expect("assets").iter().find(|a| a["asset"] == "BTC").expect("BTC");
    assert_eq!(btc["withinThreshold"], false);
    let lacking = second["unexplained"].as_array().expect("unexplained");
    assert_eq!(lacking.len(), 1, "the outside trade, and only it: {second:#}");
    assert_eq!((lacking[0]["side"].as_str(), lacking[0]["quantity"].as_str()), (Some("buy"), Some("0.01")));

    // The same in a pod's shape: `kuant agent reconcile`, its key as files, its summary as the
    // termination message.
    let keys = dir.join("credentials");
    std::fs::create_dir_all(&keys).expect("dir");
    std::fs::write(keys.join("apiKey"), KEY).expect("key");
    std::fs::write(keys.join("apiSecret"), SECRET).expect("secret");
    let report = dir.join("termination-log");
    let out = Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(["agent", "reconcile"])
        .env("KUANT_RECONCILIATION", std::fs::read_to_string(&recon).expect("recon"))
        .env("KUANT_SESSION", std::fs::read_to_string(&session).expect("session"))
        .env("KUANT_CREDENTIALS_DIR", &keys)
        .env("KUANT_DATABASE_URL", dir.join("kuant.db"))
        .env("KUANT_TERMINATION_LOG", &report)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kuant runs");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("a report")).expect("JSON");
    assert_eq!(summary["outcome"]["result"], "Drifted", "{summary:#}");
    assert_eq!(summary["session"], "local/live-btc");
    assert!(!summary.to_string().contains(SECRET), "no key in the report");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_paper_session_agrees_with_its_paper_account_and_bad_input_is_refused() {
    let dir = dir("paper");
    let (_sim, url) = sim::exchange_sim(&dir, KEY, SECRET);
    let session = session_manifest(&dir, &url, "paper");
    let out =
        kuant(&dir, &["session", "-f", &session.display().to_string(), "-o", "json", "--duration", "8s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recon = recon_manifest(&dir, "paper-btc");
    let (code, outcome, stderr) = reconcile(&dir, &recon, &session);
    assert_eq!((code, outcome["result"].as_str()), (Some(0), Some("InSync")), "{outcome:#}\n{stderr}");

    // A Reconciliation of another session, or a session never run with this store.
    let other = recon_manifest(&dir, "someone-else");
    let out = kuant(
        &dir,
        &["reconcile", "-f", &other.display().to_string(), "--session", &session.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("someone-else"));
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).expect("dir");
    std::fs::copy(dir.join("keys.yaml"), fresh.join("keys.yaml")).expect("keys");
    let out = kuant(
        &fresh,
        &["reconcile", "-f", &recon.display().to_string(), "--session", &session.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no ledger"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
