//! A live session killed (SIGKILL) after an order was sent and before its answer: at restart
//! the order is found by its client id, recorded once with its fill, never sent again, and the
//! ledger and the exchange agree. Against a `kuant exchange-sim` process over loopback.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kuant_exchanges::binance::Credentials;
use kuant_exchanges::{BinanceEndpoints, BinanceExchange, ClientOrderId, Exchange, OrderStatus};
use kuant_store::Store;
use rust_decimal::Decimal;

#[path = "support/sim.rs"]
mod sim;

use sim::{Killed, exchange_sim};

const KEY: &str = "recovery-key";
const SECRET: &str = "recovery-secret-0123456789";

fn dir(name: &str) -> PathBuf {
    sim::fresh_dir("session-recovery", name)
}

/// Kills the child when the test ends, however it ends.
fn fault(url: &str, body: &str) {
    sim::admin(url, "/_sim/faults", body);
}

/// The live session's manifest, with `risk` lines added to its risk limits.
fn manifest(dir: &Path, url: &str, risk: &str) -> PathBuf {
    let path = dir.join("live.yaml");
    std::fs::write(&path, sim::session_yaml("recovery", true, url, "sim-keys", 10_000, risk))
        .expect("manifest");
    path
}

fn session(dir: &Path, manifest: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuant"));
    cmd.arg("session")
        .arg("-f")
        .arg(manifest)
        .arg("--credentials")
        .arg(dir.join("keys.yaml"))
        .arg("--store")
        .arg(dir.join("kuant.db"))
        .args(["-o", "json"])
        .args(extra)
        .env("RUST_LOG", "warn");
    cmd
}

/// A first life: the session runs until `watch` finds what it waits for in one of its events
/// (within 90 s), and is handed back running, with what was found.
fn first_life<T>(
    dir: &Path,
    file: &Path,
    what: &str,
    mut watch: impl FnMut(&serde_json::Value) -> Option<T>,
) -> (Killed, T) {
    let log = std::fs::File::create(dir.join("first.log")).expect("log");
    let mut first = session(dir, file, &[]).stdout(Stdio::piped()).stderr(log).spawn().expect("runs");
    let stdout = first.stdout.take().expect("stdout");
    let first = Killed(first);
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON event");
        if let Some(found) = watch(&event) {
            // The rest is read too: a closed pipe would end the session at its next line.
            std::thread::spawn(move || lines.for_each(drop));
            return (first, found);
        }
    }
    let log = std::fs::read_to_string(dir.join("first.log")).unwrap_or_default();
    panic!("no {what} within 90 s; the session said:\n{log}")
}

#[test]
fn killed_between_sending_an_order_and_its_answer_the_restart_records_it_once() {
    let dir = dir("in-flight");
    let (_sim, url) = exchange_sim(&dir, KEY, SECRET);
    let file = manifest(&dir, &url, "");

    // First life: trade until an order has filled, then slow the exchange's answers down and
    // kill the process while the next order waits for its answer.
    let mut filled = false;
    let (mut first, chain) =
        first_life(&dir, &file, "order decided after the first fill", |event| match event["type"].as_str() {
            Some("fill") if !filled => {
                filled = true;
                fault(&url, r#"{"kind": "latency", "ms": 6000}"#);
                None
            }
            Some("plan_judged") if filled && event["payload"]["approved"] == true => {
                event["correlation_id"].as_str().map(str::to_owned)
            }
            _ => None,
        });
    // The decision is stored (write-ahead) and the order is on its way; its answer is not.
    std::thread::sleep(Duration::from_millis(1500));
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    fault(&url, r#"{"kind": "latency", "ms": 0}"#);

    let db = dir.join("kuant.db").to_string_lossy().into_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let before = runtime.block_on(async {
        let store = Store::open(&db).await.expect("store");
        store.orders_of_run("local/recovery").await.expect("orders")
    });
    assert!(
        !before.iter().any(|o| o.correlation_id == chain),
        "the order was not stored before the kill (else this test proves nothing)"
    );

    // Second life: recovery first.
    let out = session(&dir, &file, &["--duration", "4s"]).output().expect("runs again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("recovered: 1 orders sent before the restart"), "{stderr}");
    assert!(!stderr.contains("mismatch"), "{stderr}");

    runtime.block_on(async {
        let store = Store::open(&db).await.expect("store");
        let orders = store.orders_of_run("local/recovery").await.expect("orders");
        let of_chain: Vec<_> = orders.iter().filter(|o| o.correlation_id == chain).collect();
        assert_eq!(of_chain.len(), 1, "the order exists once in the store");
        let order = of_chain[0];
        assert_eq!(order.status, "filled");
        let exchange = Arc::new(
            BinanceExchange::new(BinanceEndpoints::at(&url), Some(Credentials::hmac(KEY, SECRET)))
                .expect("client"),
        );
        let client = ClientOrderId::new(order.client_order_id.clone()).expect("a client id");
        let on_exchange =
            exchange.order("BTCUSDT", &client).await.expect("asked").expect("the exchange has it");
        assert_eq!(on_exchange.status, OrderStatus::Filled);
        // Its fills: recorded once each, as many as the exchange made.
        let trades = exchange.trades("BTCUSDT", Some(on_exchange.created_ms)).await.expect("trades");
        let made = trades.iter().filter(|t| t.order_id == on_exchange.exchange_id).count();
        let fills = store.fills_of_run("local/recovery").await.expect("fills");
        let recorded = fills.iter().filter(|f| f.client_order_id == order.client_order_id).count();
        assert!(made >= 1);
        assert_eq!(recorded, made, "each fill recorded once");
        // Every order the session stored exists on the exchange once: none was sent twice.
        let all_trades = exchange.trades("BTCUSDT", Some(0)).await.expect("all trades");
        assert_eq!(fills.len(), all_trades.len(), "the store has every fill of the account, once");
        // The ledger balances, and its BTC is the exchange's.
        let balances = store.balances("local/recovery", i64::MAX / 2).await.expect("ledger");
        let mut per_asset: HashMap<&str, Decimal> = HashMap::new();
        for (_, asset, b) in &balances {
            *per_asset.entry(asset.as_str()).or_default() += *b;
        }
        assert!(per_asset.values().all(Decimal::is_zero), "{per_asset:?}");
        let wallet = balances
            .iter()
            .find(|(a, _, _)| a == "local/recovery:wallet:BTC")
            .map(|(_, _, b)| *b)
            .unwrap_or_default();
        let held = exchange.balances().await.expect("balances");
        let btc = held.iter().find(|b| b.asset == "BTC").map(|b| b.total()).unwrap_or_default();
        assert_eq!(wallet, btc, "the ledger's BTC is the exchange's");
        let usdt = held.iter().find(|b| b.asset == "USDT").map(|b| b.total()).unwrap_or_default();
        let ledger_usdt = balances
            .iter()
            .find(|(a, _, _)| a == "local/recovery:wallet:USDT")
            .map(|(_, _, b)| *b)
            .unwrap_or_default();
        assert_eq!(ledger_usdt, usdt, "the ledger's USDT is the exchange's");
    });
}

#[test]
fn killed_while_its_protective_stop_rests_the_restart_adopts_it_and_places_no_second_one() {
    let dir = dir("stop");
    let (_sim, url) = exchange_sim(&dir, KEY, SECRET);
    // 30 %: the stop rests for as long as the position lasts.
    let file = manifest(&dir, &url, "    stopLossPct: 30\n");

    // First life: trade until a stop rests, then SIGKILL.
    let (mut first, (stop_id, chain)) = first_life(&dir, &file, "stop placed", |event| {
        let stop = event["type"] == "order_submitted" && event["payload"]["type"] == "stop_loss_limit";
        stop.then(|| {
            let id = event["payload"]["client_order_id"].as_str().expect("an id").to_owned();
            (id, event["correlation_id"].as_str().expect("a chain").to_owned())
        })
    });
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    let exchange = Arc::new(
        BinanceExchange::new(BinanceEndpoints::at(&url), Some(Credentials::hmac(KEY, SECRET)))
            .expect("client"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = ClientOrderId::new(stop_id.clone()).expect("a client id");
    let resting =
        runtime.block_on(exchange.order("BTCUSDT", &client)).expect("asked").expect("the exchange has it");
    assert!(resting.status.is_open(), "the stop rests while the agent is down: {resting:?}");

    // Second life: recovery adopts the stop; no second stop for the same entry.
    let out = session(&dir, &file, &["--duration", "3s"]).output().expect("runs again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("mismatch"), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event"))
        .collect();
    let stops_of_the_entry: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["type"] == "order_submitted"
                && e["payload"]["type"] == "stop_loss_limit"
                && e["correlation_id"] == chain.as_str()
        })
        .filter_map(|e| e["payload"]["client_order_id"].as_str())
        .collect();
    assert!(stops_of_the_entry.iter().all(|id| *id == stop_id), "one stop per entry: {stops_of_the_entry:?}");
    // Followed again: it ended in this life (an exit, or the kill switch that ends the run).
    let ended = events.iter().any(|e| {
        e["type"] == "order_update"
            && e["payload"]["client_order_id"] == stop_id.as_str()
            && matches!(e["payload"]["status"].as_str(), Some("canceled" | "filled"))
    });
    assert!(ended, "the adopted stop was followed: {events:#?}");
    let now =
        runtime.block_on(exchange.order("BTCUSDT", &client)).expect("asked").expect("the exchange has it");
    assert!(!now.status.is_open(), "{now:?}");
}
