//! `kuant session` as a user meets it: a manifest on the in-process simulator trades, every step
//! is stored as an event of the session with its chain, the ledger balances; bad input exits 2
//! with the field named.

#[path = "common/shared.rs"]
mod shared;
use shared::shared_data;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kuant_store::Store;
use rust_decimal::Decimal;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kuant-session-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn kuant(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kuant"))
        .args(args)
        .env("KUANT_DATABASE_URL", store.join("kuant.db"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("kuant runs")
}

fn example(name: &str) -> String {
    format!("{}/examples/sessions/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `examples/sessions/sim-btc.yaml` with `edit` applied to its text, written to `dir`.
fn manifest(dir: &Path, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(example("sim-btc.yaml")).expect("the example");
    let path = dir.join("session.yaml");
    std::fs::write(&path, edit(text)).expect("written");
    path.to_string_lossy().into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_session_on_the_in_process_simulator_trades_and_stores_every_step_in_its_chain() {
    let store_dir = dir("trades");
    let db = store_dir.join("kuant.db");
    // Fast swings (synthetic candles, 1h) and a short SMA pair: many signals in a few seconds.
    let file = manifest(&store_dir, |t| t.replace("{fast: 10, slow: 30}", "{fast: 3, slow: 8}"));
    let out =
        kuant(&["session", "-f", &file, "--speed", "max", "--duration", "8s", "-o", "json"], &store_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let count = |t: &str| lines.iter().filter(|e| e["type"] == t).count();
    assert!(count("signal") >= 4, "signals: {}\n{}", count("signal"), stderr(&out));
    assert!(count("order_submitted") >= 2, "orders: {}", count("order_submitted"));
    assert!(count("fill") >= 2, "fills: {}", count("fill"));
    assert!(lines.iter().all(|e| e["session_id"] == "local/sim-btc"));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(&db.to_string_lossy()).await.expect("the store");
        let run = store.run("local/sim-btc").await.expect("read").expect("the session's run");
        assert_eq!(run.run.phase, "Stopped");
        let events = store.events_of_run("local/sim-btc", 100_000).await.expect("events");
        assert_eq!(events.len(), lines.len(), "every printed event is stored, once");
        let by_id: HashMap<&str, &kuant_store::StoredEvent> =
            events.iter().map(|e| (e.event_id.as_str(), e)).collect();
        let signals: HashSet<String> = store
            .signals_of_run("local/sim-btc")
            .await
            .expect("signals")
            .into_iter()
            .map(|s| s.signal_id)
            .collect();
        assert_eq!(signals.len(), count("signal"));
        // Every event's chain starts at a signal (or is a chain of one), and its causes lead
        // back there.
        for e in &events {
            let mut at: &kuant_store::StoredEvent = e;
            let mut steps = 0;
            while let Some(cause) = &at.causation_id {
                at = by_id
                    .get(cause.as_str())
                    .copied()
                    .unwrap_or_else(|| panic!("{} names a missing cause", e.event_type));
                steps += 1;
                assert!(steps < 64, "a cycle");
            }
            assert_eq!(
                at.event_id, e.correlation_id,
                "{}'s causes end at its chain's first event",
                e.event_type
            );
            if ["intent", "order_submitted", "order_update", "fill", "plan_judged"]
                .contains(&e.event_type.as_str())
            {
                assert!(signals.contains(&e.correlation_id), "{} traces back to a signal", e.event_type);
            }
        }
        // Orders and fills in their tables, each tracing back to its signal.
        let orders = store.orders_of_run("local/sim-btc").await.expect("orders");
        assert_eq!(orders.len(), count("order_submitted"));
        assert!(orders.iter().all(|o| signals.contains(&o.correlation_id)));
        let order_ids: HashSet<&str> = orders.iter().map(|o| o.client_order_id.as_str()).collect();
        let fills = store.fills_of_run("local/sim-btc").await.expect("fills");
        assert_eq!(fills.len(), count("fill"));
        assert!(fills.iter().all(|f| order_ids.contains(f.client_order_id.as_str())));
        // The ledger: every asset sums to zero; the wallet's BTC is the position.
        let balances = store.balances("local/sim-btc", i64::MAX / 2).await.expect("balances");
        let mut per_asset: HashMap<&str, Decimal> = HashMap::new();
        for (_, asset, b) in &balances {
            *per_asset.entry(asset.as_str()).or_default() += *b;
        }
        assert!(per_asset.values().all(Decimal::is_zero), "{per_asset:?}");
        let wallet = |asset: &str| {
            balances
                .iter()
                .find(|(a, _, _)| a == &format!("local/sim-btc:wallet:{asset}"))
                .map(|(_, _, b)| *b)
                .unwrap_or_default()
        };
        let position = store
            .positions_of_run("local/sim-btc")
            .await
            .expect("positions")
            .into_iter()
            .find(|p| p.symbol == "BTCUSDT")
            .map(|p| p.quantity)
            .unwrap_or_default();
        assert_eq!(wallet("BTC"), position);
        // And the ledger agrees with the paper account (the session's "exchange") to the last
        // decimal.
        let paper = store.paper_balances("local/sim-btc").await.expect("paper balances");
        for asset in ["USDT", "BTC"] {
            let held = paper.iter().find(|b| b.asset == asset).map(|b| b.free + b.locked).unwrap_or_default();
            assert_eq!(wallet(asset), held, "{asset}: the ledger's wallet against the paper account's");
        }
    });
}

/// A change to the example manifest's text.
type Edit = fn(String) -> String;

#[test]
fn bad_input_exits_2_with_the_field_named() {
    let store = dir("bad");
    let cases: [(&str, Edit, &str); 5] = [
        (
            "allocations over 100 %",
            |t| {
                t.replace(
                    "allocationPct: 100",
                    "allocationPct: 70\n    - name: ema-crossover\n      allocationPct: 40",
                )
            },
            "allocationPct",
        ),
        ("an unknown symbol", |t| t.replace("[BTCUSDT]", "[DOGEUSDT]"), "DOGEUSDT"),
        (
            "live without acknowledgement",
            |t| t.replace("mode: paper", "mode: live"),
            "liveTradingAcknowledged",
        ),
        (
            "a symbol not in the budget's asset",
            |t| t.replace("quoteAsset: USDT", "quoteAsset: EUR"),
            "spec.symbols[0]",
        ),
        (
            "a bad strategy parameter",
            |t| t.replace("{fast: 10, slow: 30}", "{fast: 30, slow: 10}"),
            "spec.strategies[0].params",
        ),
    ];
    for (what, edit, field) in cases {
        let file = manifest(&store, edit);
        let out = kuant(&["session", "-f", &file, "--duration", "1s", "--no-store"], &store);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{what}: {field} not named in {}", stderr(&out));
    }
    // Live against a running exchange needs keys from a file, never the manifest.
    let file = manifest(&store, |t| {
        t.replace("mode: paper", "mode: live\n  liveTradingAcknowledged: true").replace(
            "name: simulator",
            "name: binance\n    baseUrl: http://127.0.0.1:9\n    credentialsSecretRef:\n      name: keys",
        )
    });
    let out = kuant(&["session", "-f", &file, "--duration", "1s", "--no-store"], &store);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--credentials"), "{}", stderr(&out));
    let out = kuant(&["session", "-f", &example("sim-btc.yaml"), "--duration", "soon"], &store);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The session's manifest of the parity test: the backtest's strategy, budget and costs, every
/// entry spending the whole budget, and no risk limit the backtest lacks.
const PARITY_SESSION: &str = r#"
apiVersion: kuant.dev/v1alpha1
kind: TradingSession
metadata:
  name: parity
spec:
  mode: paper
  exchange:
    name: simulator
  symbols: [BTCUSDT]
  timeframe: 1h
  strategies:
    - name: sma-crossover
      params: {fast: 10, slow: 30}
      allocationPct: 100
  budget:
    quoteAsset: USDT
    amount: "10000"
  risk:
    maxPositionPct: 100
    maxDailyLossPct: 100
    maxDrawdownPct: 100
"#;

/// Parity with the backtest: a paper session replaying real BTC candles in the simulator, and a
/// backtest of the same candles with the same strategy, budget and costs (10 bps fees, 5 bps
/// slippage), make the same decisions — the same signals at the same candles, the same orders
/// (candle, side, quantity) and the same fills (time, price, quantity), to the last decimal. The
/// session's run is a prefix of the backtest's (it stops after its `--duration`).
#[test]
fn a_paper_session_replaying_a_csv_signals_orders_and_fills_exactly_as_the_backtest() {
    let Some(btc) = shared_data("coinbase_btcusd_1h.csv") else { return };
    let store = dir("parity");
    let backtest = std::fs::read_to_string(format!(
        "{}/examples/backtests/btc-sma-crossover.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the example backtest")
    .replace("slippageBps: 0", "slippageBps: 5");
    assert!(backtest.contains("slippageBps: 5"));
    let backtest_file = store.join("backtest.yaml");
    std::fs::write(&backtest_file, backtest).expect("written");
    let session_file = store.join("session.yaml");
    std::fs::write(&session_file, PARITY_SESSION).expect("written");
    let out = kuant(
        &["backtest", "-f", &backtest_file.to_string_lossy(), "--data", &btc, "-o", "json", "--no-store"],
        &store,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the backtest's JSON");
    let events = result["events"].as_array().expect("events");
    let text = |v: &serde_json::Value| v.as_str().expect("a string").to_owned();
    let expected_signals: Vec<(i64, String)> = events
        .iter()
        .filter(|e| e["type"] == "signal")
        .map(|e| (e["time_ms"].as_i64().expect("time"), text(&e["side"])))
        .collect();
    // (time, side, quantity, price); the decision's candle of each order is the fill's candle
    // before.
    let expected_fills: Vec<(i64, String, String, String)> = events
        .iter()
        .filter(|e| e["type"] == "fill")
        .map(|e| {
            (e["time_ms"].as_i64().expect("time"), text(&e["side"]), text(&e["quantity"]), text(&e["price"]))
        })
        .collect();
    let out = kuant(
        &[
            "session",
            "-f",
            &session_file.to_string_lossy(),
            "--data",
            &btc,
            "--speed",
            "max",
            "--duration",
            "6s",
            "-o",
            "json",
            "--no-store",
        ],
        &store,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stream: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .collect();
    let signals: Vec<(i64, String)> = stream
        .iter()
        .filter(|e| e["type"] == "signal")
        .map(|e| (e["payload"]["candle_open_ms"].as_i64().expect("time"), text(&e["payload"]["side"])))
        .collect();
    assert!(signals.len() >= 20, "only {} signals in 6 s", signals.len());
    assert!(expected_signals.len() >= signals.len());
    assert_eq!(signals, expected_signals[..signals.len()], "the session's signals are the backtest's");
    let fills: Vec<(i64, String, String, String)> = stream
        .iter()
        .filter(|e| e["type"] == "fill")
        .map(|e| {
            let p = &e["payload"];
            (e["at_ms"].as_i64().expect("time"), text(&p["side"]), text(&p["quantity"]), text(&p["price"]))
        })
        .collect();
    assert!(fills.len() >= 10, "only {} fills in 6 s", fills.len());
    // The last order may still wait for its candle when the run ends.
    assert!(expected_fills.len() >= fills.len());
    assert_eq!(fills, expected_fills[..fills.len()], "the session's fills are the backtest's");
    let orders: Vec<(i64, String, String)> = stream
        .iter()
        .filter(|e| e["type"] == "order_submitted")
        .map(|e| {
            let p = &e["payload"];
            (e["at_ms"].as_i64().expect("time"), text(&p["side"]), text(&p["quantity"]))
        })
        .collect();
    assert!(
        orders.len() == fills.len() || orders.len() == fills.len() + 1,
        "{} orders, {} fills",
        orders.len(),
        fills.len()
    );
    for (order, fill) in orders.iter().zip(&fills) {
        // Decided at the close of the candle before the fill's, for the fill's side and quantity.
        assert_eq!(order, &(fill.0 - 1, fill.1.clone(), fill.2.clone()), "one order per decision");
    }
    // Nothing blocked, but by the kill switch that ends the run.
    let blocked: Vec<&serde_json::Value> = stream
        .iter()
        .filter(|e| e["type"] == "trade_blocked" && e["payload"]["reason"] != "suspended")
        .collect();
    assert!(blocked.is_empty(), "{blocked:#?}");
}
