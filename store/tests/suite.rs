//! The store suite: the same tests on real PostgreSQL (127.0.0.1:5432 in CI,
//! `KUANT_TEST_DATABASE_URL` overrides it; each test in a throw-away schema) and on SQLite.

use kuant_store::{
    AccountKind, AllocationState, Drift, LedgerAccount, LedgerError, LedgerTransaction, LlmCall,
    ReconciliationResult, ReconciliationRun, RiskAllocation, Run, RunKind, Store, StoredBlock, StoredCandle,
    StoredEvent, StoredPosition, StoredSignal, StoredTrade, Wallet,
};
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Each backend, freshly migrated, for a test named `tag`.
async fn stores(tag: &str) -> Vec<Store> {
    // A fixed name per test: a rerun drops what the last run left.
    let schema = format!("kuant_suite_{tag}");
    let url = kuant_store::fresh_schema(&postgres_url(), &schema)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"));
    let pg = Store::open(&url).await.expect("postgres store");

    let dir = std::env::temp_dir().join(format!("kuant-suite-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("sqlite store");
    vec![pg, sqlite]
}

fn run(id: &str) -> Run {
    Run {
        run_id: id.into(),
        kind: RunKind::Backtest,
        namespace: Some("research".into()),
        name: "btc".into(),
        spec: serde_json::json!({"strategy": {"name": "sma-crossover"}}),
        phase: "Running".into(),
    }
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn event(n: u64, run_id: &str, chain: u64, at_ms: i64) -> StoredEvent {
    StoredEvent {
        event_id: uuid(n),
        run_id: run_id.into(),
        correlation_id: uuid(1_000_000 + chain),
        causation_id: n.checked_sub(1).map(uuid),
        event_type: if n.is_multiple_of(2) { "signal".into() } else { "fill".into() },
        source: "engine".into(),
        occurred_at_ms: at_ms,
        payload: serde_json::json!({"n": n, "price": "2505.56"}),
    }
}

#[tokio::test]
async fn writing_the_same_events_twice_keeps_one_row_each() {
    for store in stores("dedup").await {
        store.upsert_run(&run("bt-1")).await.expect("run");
        let first: Vec<_> = (0..3).map(|n| event(n, "bt-1", 0, 1_700_000_000_000 + n as i64)).collect();
        assert_eq!(store.insert_events(&first).await.expect("insert"), 3, "{:?}", store.backend());
        let mut again = first.clone();
        again.push(event(3, "bt-1", 0, 1_700_000_000_003));
        assert_eq!(
            store.insert_events(&again).await.expect("retry"),
            1,
            "only the new one: {:?}",
            store.backend()
        );
        assert_eq!(store.events_of_run("bt-1", 100).await.expect("read").len(), 4);
    }
}

#[tokio::test]
async fn events_read_back_in_time_order_with_exact_times_and_payloads() {
    for store in stores("order").await {
        store.upsert_run(&run("bt-2")).await.expect("run");
        // Written out of order; two share a millisecond (then the id decides).
        let events = vec![
            event(5, "bt-2", 1, 1_700_000_000_250),
            event(2, "bt-2", 0, 1_700_000_000_123),
            event(4, "bt-2", 1, 1_700_000_000_250),
            event(1, "bt-2", 0, 1_700_000_000_001),
        ];
        store.insert_events(&events).await.expect("insert");
        let read = store.events_of_run("bt-2", 100).await.expect("read");
        let order: Vec<_> = read.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(order, [uuid(1), uuid(2), uuid(4), uuid(5)], "{:?}", store.backend());
        assert_eq!(read[1], events[1], "round trip: {:?}", store.backend());
        assert_eq!(store.events_of_run("bt-2", 2).await.expect("limit").len(), 2);
        let chain = store.events_of_chain(&uuid(1_000_001)).await.expect("chain");
        assert_eq!(chain.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), [uuid(4), uuid(5)]);
    }
}

#[tokio::test]
async fn a_run_is_recorded_once_its_phase_follows_and_it_ends_with_results() {
    for store in stores("runs").await {
        store.upsert_run(&run("bt-3")).await.expect("run");
        let mut done = run("bt-3");
        done.phase = "Succeeded".into();
        store.upsert_run(&done).await.expect("update");
        let stored = store.run("bt-3").await.expect("read").expect("stored");
        assert_eq!(stored.run, done, "{:?}", store.backend());
        assert_eq!(
            (stored.status.clone(), stored.results.clone(), stored.finished_at_ms),
            (None, None, None)
        );

        let results = serde_json::json!({"finalEquity": "10450.12", "trades": 7});
        let status = serde_json::json!({"phase": "Succeeded", "conditions": []});
        assert!(
            store
                .finish_run("bt-3", "Succeeded", Some(&status), Some(&results), 1_700_000_123_456)
                .await
                .expect("finish")
        );
        assert!(!store.finish_run("nope", "Failed", None, None, 0).await.expect("no such run"));
        let stored = store.run("bt-3").await.expect("read").expect("stored");
        assert_eq!(stored.results, Some(results), "{:?}", store.backend());
        assert_eq!(stored.status, Some(status));
        assert_eq!(stored.finished_at_ms, Some(1_700_000_123_456));
        assert!(store.run("nope").await.expect("read").is_none());

        let mut session = run("s-3");
        session.kind = RunKind::Session;
        store.upsert_run(&session).await.expect("session");
        let sessions = store.runs(Some(RunKind::Session), 10).await.expect("list");
        assert_eq!(sessions.iter().map(|r| r.run.run_id.as_str()).collect::<Vec<_>>(), ["s-3"]);
        assert_eq!(store.runs(None, 10).await.expect("all").len(), 2);
        assert_eq!(store.runs(None, 1).await.expect("limit").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_neither_lose_nor_duplicate_a_row() {
    for store in stores("concurrent").await {
        store.upsert_run(&run("s-1")).await.expect("run");
        // Writer A writes events 0..300, writer B 150..450, in batches of 25, at the same time.
        let write = |from: u64, to: u64| {
            let store = store.clone();
            tokio::spawn(async move {
                let all: Vec<_> =
                    (from..to).map(|n| event(n, "s-1", n / 4, 1_700_000_000_000 + n as i64)).collect();
                let mut inserted = 0;
                for batch in all.chunks(25) {
                    inserted += store.insert_events(batch).await.expect("concurrent insert");
                }
                inserted
            })
        };
        let (a, b) = (write(0, 300), write(150, 450));
        let inserted = a.await.expect("writer a") + b.await.expect("writer b");
        assert_eq!(inserted, 450, "each event counted once as new: {:?}", store.backend());
        let read = store.events_of_run("s-1", 10_000).await.expect("read");
        assert_eq!(read.len(), 450, "{:?}", store.backend());
    }
}

#[tokio::test]
async fn equity_points_round_trip_across_batches_and_are_kept_once() {
    for store in stores("equity").await {
        store.upsert_run(&run("bt-eq")).await.expect("run");
        // More than two multi-row statements, awkward floats included.
        let points: Vec<(i64, f64)> = (0..2500)
            .map(|i| (1_700_000_000_000 + i * 3_600_000, 10_000.0 + i as f64 * 0.1 + 1e-9))
            .collect();
        assert_eq!(
            store.insert_equity("bt-eq", &points).await.expect("insert"),
            2500,
            "{:?}",
            store.backend()
        );
        assert_eq!(store.insert_equity("bt-eq", &points[..10]).await.expect("retry"), 0);
        assert_eq!(
            store.equity_of_run("bt-eq").await.expect("read"),
            points,
            "exact floats: {:?}",
            store.backend()
        );
    }
}

#[tokio::test]
async fn a_batch_larger_than_one_statement_is_written_whole() {
    for store in stores("bigbatch").await {
        store.upsert_run(&run("bt-big")).await.expect("run");
        let events: Vec<_> =
            (0..2_345).map(|n| event(n, "bt-big", n / 4, 1_700_000_000_000 + n as i64)).collect();
        assert_eq!(store.insert_events(&events).await.expect("insert"), 2_345, "{:?}", store.backend());
        assert_eq!(store.events_of_run("bt-big", 10_000).await.expect("read").len(), 2_345);
    }
}

fn order(n: u64, run_id: &str) -> kuant_store::StoredOrder {
    kuant_store::StoredOrder {
        client_order_id: format!("kq{n:032x}"),
        run_id: run_id.into(),
        correlation_id: uuid(2_000_000 + n),
        exchange_order_id: None,
        symbol: "BTCUSDT".into(),
        side: "buy".into(),
        order_type: "market".into(),
        quantity: "0.12345678".parse().expect("decimal"),
        limit_price: None,
        status: "filled".into(),
        created_at_ms: 1_700_000_000_000 + n as i64,
    }
}

fn fill(n: u64, order_n: u64, run_id: &str) -> kuant_store::StoredFill {
    kuant_store::StoredFill {
        fill_id: format!("f-{n:06}"),
        client_order_id: format!("kq{order_n:032x}"),
        run_id: run_id.into(),
        at_ms: 1_700_000_000_000 + n as i64,
        price: "2505.56".parse().expect("decimal"),
        quantity: "0.00012345678901234567".parse().expect("decimal"),
        fee: "0.10".parse().expect("decimal"),
        fee_asset: "USDT".into(),
    }
}

#[tokio::test]
async fn orders_and_fills_are_kept_once_with_exact_amounts() {
    for store in stores("fills").await {
        store.upsert_run(&run("s-f")).await.expect("run");
        let orders: Vec<_> = (0..3).map(|n| order(n, "s-f")).collect();
        assert_eq!(store.insert_orders(&orders).await.expect("orders"), 3);
        assert_eq!(store.insert_orders(&orders).await.expect("retried"), 0, "client order ids are unique");
        let fills: Vec<_> = (0..6).map(|n| fill(n, n / 2, "s-f")).collect();
        assert_eq!(store.insert_fills(&fills).await.expect("fills"), 6);
        assert_eq!(store.insert_fills(&fills[2..]).await.expect("retried"), 0);
        let read = store.fills_of_run("s-f").await.expect("read");
        assert_eq!(read, fills, "exact decimals, in time order: {:?}", store.backend());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_writing_fills_for_one_session_neither_lose_nor_duplicate_a_row() {
    for store in stores("concurrent_fills").await {
        store.upsert_run(&run("s-cf")).await.expect("run");
        let orders: Vec<_> = (0..100).map(|n| order(n, "s-cf")).collect();
        store.insert_orders(&orders).await.expect("orders");
        // Task A writes fills 0..300, task B 200..500 (the overlap a retry after a crash makes).
        let write = |from: u64, to: u64| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut inserted = 0;
                for chunk in (from..to).collect::<Vec<_>>().chunks(10) {
                    let batch: Vec<_> = chunk.iter().map(|&n| fill(n, n / 5, "s-cf")).collect();
                    inserted += store.insert_fills(&batch).await.expect("concurrent fills");
                }
                inserted
            })
        };
        let (a, b) = (write(0, 300), write(200, 500));
        let inserted = a.await.expect("task a") + b.await.expect("task b");
        assert_eq!(inserted, 500, "{:?}", store.backend());
        let read = store.fills_of_run("s-cf").await.expect("read");
        assert_eq!(read.len(), 500);
        let ids: std::collections::BTreeSet<_> = read.iter().map(|f| f.fill_id.clone()).collect();
        assert_eq!(ids.len(), 500, "no duplicates");
    }
}

#[tokio::test]
async fn order_status_moves_forward_in_time_only_and_keeps_the_exchange_id() {
    for store in stores("order_status").await {
        store.upsert_run(&run("s-o")).await.expect("run");
        let mut o = order(1, "s-o");
        o.status = "new".into();
        o.limit_price = Some(dec("42000.5"));
        store.insert_orders(std::slice::from_ref(&o)).await.expect("order");
        let at = o.created_at_ms;
        assert!(
            store
                .update_order_status(&o.client_order_id, "open", Some("ex-77"), at + 10)
                .await
                .expect("open")
        );
        assert!(
            store.update_order_status(&o.client_order_id, "filled", None, at + 30).await.expect("filled")
        );
        // A late report from before the fill does not roll it back.
        assert!(!store.update_order_status(&o.client_order_id, "open", None, at + 20).await.expect("late"));
        assert!(!store.update_order_status("kq-unknown", "open", None, at).await.expect("unknown"));
        let read = store.orders_of_run("s-o").await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].status, "filled", "{:?}", store.backend());
        assert_eq!(read[0].exchange_order_id.as_deref(), Some("ex-77"));
        assert_eq!(read[0].limit_price, Some(dec("42000.5")));
        assert_eq!(read[0].quantity, o.quantity);
    }
}

#[tokio::test]
async fn signals_and_blocked_trades_are_kept_once_and_read_by_run_and_reason() {
    for store in stores("signals").await {
        store.upsert_run(&run("s-s")).await.expect("run");
        let signals: Vec<_> = (0..3)
            .map(|n| StoredSignal {
                signal_id: uuid(10 + n),
                run_id: "s-s".into(),
                correlation_id: uuid(10 + n),
                at_ms: 1_700_000_000_000 - n as i64,
                strategy: "sma-crossover".into(),
                symbol: "ETHUSDT".into(),
                side: if n == 1 { "sell".into() } else { "buy".into() },
                price: dec("2505.123456789"),
            })
            .collect();
        assert_eq!(store.insert_signals(&signals).await.expect("signals"), 3);
        assert_eq!(store.insert_signals(&signals).await.expect("retried"), 0);
        let read = store.signals_of_run("s-s").await.expect("read");
        assert_eq!(
            read,
            signals.iter().rev().cloned().collect::<Vec<_>>(),
            "time order: {:?}",
            store.backend()
        );

        let block = |n: u64, reason: &str| StoredBlock {
            event_id: uuid(20 + n),
            run_id: "s-s".into(),
            correlation_id: uuid(10 + n),
            at_ms: 1_700_000_000_100 + n as i64,
            reason: reason.into(),
            detail: format!("blocked #{n}"),
        };
        let blocks = vec![block(0, "stale_data"), block(1, "risk_budget"), block(2, "stale_data")];
        assert_eq!(store.insert_blocks(&blocks).await.expect("blocks"), 3);
        assert_eq!(store.insert_blocks(&blocks[..1]).await.expect("retried"), 0);
        assert_eq!(store.blocks_of_run("s-s", None).await.expect("all"), blocks);
        let stale = store.blocks_of_run("s-s", Some("stale_data")).await.expect("stale");
        assert_eq!(stale, vec![blocks[0].clone(), blocks[2].clone()], "{:?}", store.backend());
    }
}

#[tokio::test]
async fn positions_never_roll_back_and_snapshots_read_in_time_order() {
    for store in stores("positions").await {
        store.upsert_run(&run("s-p")).await.expect("run");
        let at = |ms: i64, quantity: &str| StoredPosition {
            run_id: "s-p".into(),
            symbol: "BTCUSDT".into(),
            at_ms: ms,
            quantity: dec(quantity),
            avg_price: Some(dec("41000.25")),
            mark_price: None,
        };
        assert!(store.upsert_position(&at(2_000, "0.5")).await.expect("first"));
        assert!(store.upsert_position(&at(3_000, "0.75")).await.expect("newer"));
        assert!(!store.upsert_position(&at(2_500, "0.1")).await.expect("late"), "{:?}", store.backend());
        assert_eq!(store.positions_of_run("s-p").await.expect("read"), vec![at(3_000, "0.75")]);

        let snaps: Vec<_> = [(3_000, "0.75"), (1_000, "0.25"), (2_000, "0.5")]
            .iter()
            .map(|&(ms, q)| StoredPosition { mark_price: Some(dec("41500")), ..at(ms, q) })
            .collect();
        assert_eq!(store.insert_position_snapshots(&snaps).await.expect("snapshots"), 3);
        assert_eq!(store.insert_position_snapshots(&snaps).await.expect("retried"), 0);
        let history = store.position_history("s-p", "BTCUSDT", 1_500).await.expect("history");
        assert_eq!(history, vec![snaps[2].clone(), snaps[0].clone()], "{:?}", store.backend());
    }
}

#[tokio::test]
async fn risk_allocations_go_claimed_used_released_and_never_back() {
    for store in stores("risk").await {
        store.upsert_run(&run("s-r")).await.expect("run");
        let claim = |n: u64, amount: &str| RiskAllocation {
            allocation_id: uuid(30 + n),
            run_id: "s-r".into(),
            correlation_id: uuid(10 + n),
            amount: dec(amount),
            state: AllocationState::Claimed,
            claimed_at_ms: 1_000 + n as i64,
            used_at_ms: None,
            released_at_ms: None,
        };
        assert!(store.claim_risk(&claim(0, "100.10")).await.expect("claim"));
        assert!(!store.claim_risk(&claim(0, "999")).await.expect("claimed twice"), "one claim per id");
        assert!(store.claim_risk(&claim(1, "0.20")).await.expect("claim"));
        assert_eq!(store.risk_in_use("s-r").await.expect("in use"), dec("100.30"));

        let (a, b) = (uuid(30), uuid(31));
        assert!(store.advance_risk(&a, AllocationState::Used, 2_000).await.expect("used"));
        assert!(!store.advance_risk(&a, AllocationState::Used, 2_001).await.expect("used twice"));
        assert!(!store.advance_risk(&a, AllocationState::Claimed, 2_002).await.expect("back"));
        assert!(store.advance_risk(&b, AllocationState::Released, 2_003).await.expect("released unused"));
        assert!(!store.advance_risk(&b, AllocationState::Used, 2_004).await.expect("used after release"));
        assert_eq!(store.risk_in_use("s-r").await.expect("in use"), dec("100.10"), "{:?}", store.backend());
        assert!(store.advance_risk(&a, AllocationState::Released, 3_000).await.expect("released"));
        assert_eq!(store.risk_in_use("s-r").await.expect("none"), Decimal::ZERO);

        let read = store.risk_of_run("s-r").await.expect("read");
        assert_eq!(read[0].state, AllocationState::Released);
        assert_eq!((read[0].used_at_ms, read[0].released_at_ms), (Some(2_000), Some(3_000)));
        assert_eq!((read[1].used_at_ms, read[1].released_at_ms), (None, Some(2_003)));
    }
}

fn account(id: &str, asset: &str, kind: AccountKind) -> LedgerAccount {
    LedgerAccount {
        account_id: id.into(),
        run_id: Some("s-l".into()),
        name: id.into(),
        asset: asset.into(),
        kind,
    }
}

#[tokio::test]
async fn the_ledger_posts_only_balanced_transactions_once_and_sums_exactly() {
    for store in stores("ledger").await {
        store.upsert_run(&run("s-l")).await.expect("run");
        for a in [
            account("usdt", "USDT", AccountKind::Asset),
            account("btc", "BTC", AccountKind::Asset),
            account("capital", "USDT", AccountKind::Equity),
            account("fees", "USDT", AccountKind::Expense),
            account("btc-in", "BTC", AccountKind::Equity),
            account("usdt-out", "USDT", AccountKind::Equity),
        ] {
            assert!(store.open_account(&a).await.expect("account"));
        }
        assert!(!store.open_account(&account("usdt", "USDT", AccountKind::Asset)).await.expect("again"));
        let tx = |n: u64, at_ms: i64, lines: &[(&str, &str)]| LedgerTransaction {
            tx_id: uuid(40 + n),
            run_id: "s-l".into(),
            correlation_id: Some(uuid(10 + n)),
            at_ms,
            memo: format!("tx {n}"),
            lines: lines.iter().map(|(a, v)| ((*a).to_owned(), dec(v))).collect(),
        };
        let deposit = tx(0, 1_000, &[("usdt", "10000"), ("capital", "-10000")]);
        // A buy of 0.1 BTC at 42000.01 with a 4.2 USDT fee: two assets, each balanced.
        let buy = tx(
            1,
            2_000,
            &[
                ("btc", "0.1"),
                ("btc-in", "-0.1"),
                ("usdt-out", "4200.001"),
                ("usdt", "-4204.201"),
                ("fees", "4.2"),
            ],
        );
        assert!(store.post(&deposit).await.expect("deposit"));
        assert!(store.post(&buy).await.expect("buy"));
        assert!(!store.post(&buy).await.expect("posted twice"), "one posting per id");

        let unbalanced = tx(2, 3_000, &[("usdt", "-1"), ("fees", "0.99999999")]);
        match store.post(&unbalanced).await {
            Err(LedgerError::Unbalanced { asset, sum, .. }) => {
                assert_eq!((asset.as_str(), sum), ("USDT", dec("-0.00000001")), "{:?}", store.backend())
            }
            other => panic!("an unbalanced transaction is refused, got {other:?}"),
        }
        let cross_asset = tx(3, 3_000, &[("usdt", "1"), ("btc", "-1")]);
        assert!(matches!(store.post(&cross_asset).await, Err(LedgerError::Unbalanced { .. })));
        let unknown = tx(4, 3_000, &[("usdt", "1"), ("nowhere", "-1")]);
        assert!(matches!(store.post(&unknown).await, Err(LedgerError::UnknownAccount { .. })));
        assert!(matches!(store.post(&tx(5, 3_000, &[])).await, Err(LedgerError::Empty(_))));

        let balances = store.balances("s-l", i64::MAX).await.expect("balances");
        let of = |id: &str| balances.iter().find(|(a, _, _)| a == id).map(|(_, _, b)| *b);
        assert_eq!(
            of("usdt"),
            Some(dec("5795.799")),
            "refused transactions wrote nothing: {:?}",
            store.backend()
        );
        assert_eq!(of("btc"), Some(dec("0.1")));
        assert_eq!(of("fees"), Some(dec("4.2")));
        let before_buy = store.balances("s-l", 1_999).await.expect("as of");
        assert_eq!(before_buy.iter().find(|(a, _, _)| a == "usdt").map(|(_, _, b)| *b), Some(dec("10000")));
        let by_asset =
            |asset: &str| balances.iter().filter(|(_, a, _)| a == asset).map(|(_, _, b)| *b).sum::<Decimal>();
        assert_eq!((by_asset("USDT"), by_asset("BTC")), (Decimal::ZERO, Decimal::ZERO), "double entry");
    }
}

#[tokio::test]
async fn wallets_and_reconciliations_keep_per_asset_drift() {
    for store in stores("recon").await {
        store.upsert_run(&run("r-1")).await.expect("run");
        let wallet = |id: &str, asset: &str| Wallet {
            wallet_id: id.into(),
            exchange: "binance".into(),
            account: "spot".into(),
            asset: asset.into(),
        };
        assert!(store.register_wallet(&wallet("w-usdt", "USDT")).await.expect("wallet"));
        assert!(store.register_wallet(&wallet("w-btc", "BTC")).await.expect("wallet"));
        assert!(
            !store.register_wallet(&wallet("w-usdt-2", "USDT")).await.expect("same asset"),
            "one per asset"
        );
        let wallets = store.wallets("binance").await.expect("wallets");
        assert_eq!(wallets.iter().map(|w| w.asset.as_str()).collect::<Vec<_>>(), ["BTC", "USDT"]);

        let recon = |n: u64, at: i64, result, drifts: Vec<Drift>| ReconciliationRun {
            recon_id: uuid(50 + n),
            run_id: "r-1".into(),
            started_at_ms: at,
            finished_at_ms: Some(at + 250),
            result: Some(result),
            drifts,
            threshold: (n == 1).then(|| (dec("0.000001"), 0.1)),
            explanation: (n == 1)
                .then(|| serde_json::json!([{"tradeId": 7, "side": "sell", "quantity": "0.00001"}])),
            message: (n == 1).then(|| "BTC drifted by -0.00001".to_owned()),
        };
        let drift = |asset: &str, ledger: &str, exchange: &str| Drift {
            asset: asset.into(),
            ledger_balance: dec(ledger),
            exchange_balance: dec(exchange),
            within_threshold: (asset == "USDT").then_some(true),
        };
        let first =
            recon(0, 1_000, ReconciliationResult::InSync, vec![drift("USDT", "5795.799", "5795.799")]);
        let second = recon(
            1,
            2_000,
            ReconciliationResult::Drifted,
            vec![drift("BTC", "0.1", "0.09999"), drift("USDT", "5795.799", "5795.799")],
        );
        assert!(store.record_reconciliation(&first).await.expect("first"));
        assert!(store.record_reconciliation(&second).await.expect("second"));
        assert!(!store.record_reconciliation(&second).await.expect("again"), "one row per id");
        let read = store.reconciliations("r-1", 10).await.expect("read");
        assert_eq!(read, vec![second.clone(), first], "newest first: {:?}", store.backend());
        assert_eq!(read[0].drifts[0].drift(), dec("-0.00001"));
        assert_eq!(store.reconciliations("r-1", 1).await.expect("limit").len(), 1);
    }
}

#[tokio::test]
async fn candles_read_by_market_and_range_and_are_kept_once() {
    for store in stores("candles").await {
        let candle = |market: &str, hour: i64| StoredCandle {
            exchange: "coinbase".into(),
            symbol: market.into(),
            timeframe: "1h".into(),
            open_time_ms: 1_700_000_000_000 + hour * 3_600_000,
            open: dec("37000.01"),
            high: dec("37500"),
            low: dec("36900.5"),
            close: dec("37123.456789"),
            volume: 12.5 + hour as f64,
        };
        let mut all: Vec<_> = (0..1_500).map(|h| candle("BTC-USD", h)).collect();
        all.extend((0..10).map(|h| candle("ETH-USD", h)));
        assert_eq!(store.insert_candles(&all).await.expect("candles"), 1_510, "{:?}", store.backend());
        assert_eq!(store.insert_candles(&all[..5]).await.expect("retried"), 0);
        let from = 1_700_000_000_000 + 10 * 3_600_000;
        let page =
            store.candles("coinbase", "BTC-USD", "1h", from, from + 5 * 3_600_000, 100).await.expect("range");
        assert_eq!(page, all[10..15].to_vec(), "half-open range, exact: {:?}", store.backend());
        assert_eq!(
            store.candles("coinbase", "BTC-USD", "1h", 0, i64::MAX / 2, 7).await.expect("limit").len(),
            7
        );
        assert!(
            store
                .candles("coinbase", "BTC-USD", "1m", 0, i64::MAX / 2, 7)
                .await
                .expect("other tf")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_market_keeps_only_its_newest_tick_exactly() {
    for store in stores("ticks").await {
        let tick = |symbol: &str, at_ms: i64, price: &str| kuant_store::StoredTick {
            exchange: "binance".into(),
            symbol: symbol.into(),
            at_ms,
            price: dec(price),
            bid: Some(dec(price) - dec("0.01")),
            ask: None,
        };
        let first = [tick("BTCUSDT", 1_000, "60000.10"), tick("ETHUSDT", 1_000, "3000.123456789")];
        assert_eq!(store.upsert_ticks(&first).await.expect("ticks"), 2, "{:?}", store.backend());
        // A newer tick replaces; an older or equally old one changes nothing.
        assert_eq!(store.upsert_ticks(&[tick("BTCUSDT", 2_000, "60001.5")]).await.expect("newer"), 1);
        assert_eq!(store.upsert_ticks(&[tick("BTCUSDT", 1_500, "1")]).await.expect("older"), 0);
        assert_eq!(store.upsert_ticks(&[tick("BTCUSDT", 2_000, "2")]).await.expect("same time"), 0);
        let latest = store.latest_ticks("binance").await.expect("latest");
        assert_eq!(
            latest,
            vec![tick("BTCUSDT", 2_000, "60001.5"), first[1].clone()],
            "{:?}",
            store.backend()
        );
        assert_eq!(latest[0].price.to_string(), "60001.5", "exact digits");
        assert!(store.latest_ticks("kraken").await.expect("none").is_empty());
    }
}

#[tokio::test]
async fn llm_calls_are_kept_once_and_their_cost_sums_exactly_per_agent_and_model() {
    for store in stores("llm").await {
        store.upsert_run(&run("s-llm")).await.expect("run");
        let call = |n: u64, agent: &str, model: &str, cost: &str| LlmCall {
            call_id: uuid(60 + n),
            run_id: "s-llm".into(),
            agent: agent.into(),
            model: model.into(),
            tokens_in: 1_000 + n as i64,
            tokens_out: 200,
            cost: dec(cost),
            latency_ms: 300 + n as i64,
            at_ms: 1_700_000_000_000 + n as i64,
        };
        let calls = vec![
            call(0, "analyst", "claude-x", "0.0012345"),
            call(1, "analyst", "claude-x", "0.0000001"),
            call(2, "risk", "small", "0.1"),
        ];
        assert_eq!(store.insert_llm_calls(&calls).await.expect("calls"), 3);
        assert_eq!(store.insert_llm_calls(&calls).await.expect("retried"), 0);
        assert_eq!(store.llm_calls_of_run("s-llm").await.expect("read"), calls, "{:?}", store.backend());
        let usage = store.llm_usage(Some("s-llm"), i64::MIN, i64::MAX).await.expect("usage");
        assert_eq!(
            store.llm_usage(None, 0, 1_700_000_000_001).await.expect("window")[0].calls,
            1,
            "a time window"
        );
        assert_eq!(usage.len(), 2);
        assert_eq!((usage[0].calls, usage[0].cost, usage[0].tokens_in), (2, dec("0.0012346"), 2_001));
        assert_eq!(usage[0].max_latency_ms, 301);
        assert_eq!((usage[1].agent.as_str(), usage[1].cost), ("risk", dec("0.1")));
    }
}

#[tokio::test]
async fn trades_round_trip_exactly_and_are_kept_once() {
    for store in stores("trades").await {
        store.upsert_run(&run("bt-t")).await.expect("run");
        let trade = |n: i64, open: bool| StoredTrade {
            symbol: "BTCUSDT".into(),
            trade_no: n,
            entry_time_ms: 1_700_000_000_000 + n * 1_000,
            exit_time_ms: (!open).then_some(1_700_000_000_500 + n * 1_000),
            entry_price: dec("42000.123456789012"),
            exit_price: (!open).then(|| dec("42100")),
            quantity: dec("0.000012345678901234"),
            pnl: (!open).then(|| dec("-0.0000001")),
            fees: dec("0.25"),
        };
        let trades: Vec<_> = (1..=1_200).map(|n| trade(n, n == 1_200)).collect();
        assert_eq!(
            store.insert_trades("bt-t", &trades).await.expect("trades"),
            1_200,
            "{:?}",
            store.backend()
        );
        assert_eq!(store.insert_trades("bt-t", &trades[..3]).await.expect("retried"), 0);
        assert_eq!(store.trades_of_run("bt-t").await.expect("read"), trades, "{:?}", store.backend());
    }
}

#[tokio::test]
async fn events_page_by_time_keep_their_causation_and_old_ones_are_pruned() {
    for store in stores("paging").await {
        store.upsert_run(&run("s-e")).await.expect("run");
        let events: Vec<_> = (0..10).map(|n| event(n, "s-e", 0, 1_000 * n as i64)).collect();
        store.insert_events(&events).await.expect("events");
        let page = store.events_between("s-e", 2_000, 5_000, 100).await.expect("page");
        assert_eq!(page, events[3..6].to_vec(), "after, up to and including: {:?}", store.backend());
        assert_eq!(page[0].causation_id, Some(uuid(2)));
        assert_eq!(store.events_of_run("s-e", 1).await.expect("first")[0].causation_id, None);
        assert_eq!(store.events_between("s-e", 2_000, 9_000, 2).await.expect("limit").len(), 2);

        // The run was recorded just now: its events, however old, are young enough to stay.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .expect("clock");
        let future = event(10, "s-e", 0, now + 3_600_000);
        store.insert_events(std::slice::from_ref(&future)).await.expect("future event");
        assert_eq!(store.prune_events(now - 86_400_000).await.expect("prune"), 0, "{:?}", store.backend());
        // Once the run is older than the cutoff, only the events after the cutoff stay.
        assert_eq!(store.prune_events(now + 60_000).await.expect("prune"), 10, "{:?}", store.backend());
        assert_eq!(store.events_of_run("s-e", 100).await.expect("left"), vec![future]);
        assert!(store.run("s-e").await.expect("run kept").is_some(), "retention keeps the run");
    }
}

#[tokio::test]
async fn resetting_a_run_replaces_everything_it_had() {
    for store in stores("reset").await {
        store.upsert_run(&run("bt-r")).await.expect("run");
        store.insert_events(&[event(1, "bt-r", 0, 1_000)]).await.expect("events");
        store.insert_equity("bt-r", &[(1_000, 1.0), (2_000, 2.0)]).await.expect("equity");
        store
            .finish_run("bt-r", "Succeeded", None, Some(&serde_json::json!({"x": 1})), 5)
            .await
            .expect("finish");
        store.upsert_run(&run("other")).await.expect("other run");
        store.insert_events(&[event(2, "other", 0, 1_000)]).await.expect("other events");

        store.reset_run(&run("bt-r")).await.expect("reset");
        store.insert_equity("bt-r", &[(1_000, 7.0)]).await.expect("new equity");
        assert_eq!(
            store.equity_of_run("bt-r").await.expect("equity"),
            vec![(1_000, 7.0)],
            "{:?}",
            store.backend()
        );
        assert!(store.events_of_run("bt-r", 10).await.expect("events").is_empty());
        assert_eq!(store.run("bt-r").await.expect("read").expect("there").results, None);
        assert_eq!(store.events_of_run("other", 10).await.expect("other").len(), 1, "other runs untouched");
    }
}

#[tokio::test]
async fn runs_filter_by_phase_strategy_and_symbol_and_page_without_gaps_or_repeats() {
    for store in stores("run_pages").await {
        for n in 0..25 {
            let mut r = run(&format!("ns/bt-{n:02}"));
            r.spec = serde_json::json!({
                "strategy": {"name": if n % 2 == 0 { "sma-crossover" } else { "rsi-mean-reversion" }},
                "market": {"symbols": if n % 5 == 0 { vec!["BTCUSDT", "ETHUSDT"] } else { vec!["BTCUSDT"] }},
            });
            r.phase = if n % 3 == 0 { "Failed".into() } else { "Succeeded".into() };
            store.upsert_run(&r).await.expect("run");
        }
        let mut filter = kuant_store::RunFilter { limit: 7, ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let page = store.list_runs(&filter).await.expect("page");
            seen.extend(page.iter().map(|r| r.run.run_id.clone()));
            match page.last() {
                Some(last) if page.len() == 7 => filter.after = Some(last.cursor()),
                _ => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!((seen.len(), unique.len()), (25, 25), "every run once: {:?}", store.backend());

        let only = |f: kuant_store::RunFilter| {
            let store = store.clone();
            async move {
                let mut ids: Vec<String> = store
                    .list_runs(&kuant_store::RunFilter { limit: 100, ..f })
                    .await
                    .expect("filtered")
                    .into_iter()
                    .map(|r| r.run.run_id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let eth = only(kuant_store::RunFilter { symbol: Some("ETHUSDT".into()), ..Default::default() }).await;
        assert_eq!(
            eth,
            ["ns/bt-00", "ns/bt-05", "ns/bt-10", "ns/bt-15", "ns/bt-20"],
            "{:?}",
            store.backend()
        );
        let failed_rsi = only(kuant_store::RunFilter {
            phase: Some("Failed".into()),
            strategy: Some("rsi-mean-reversion".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(failed_rsi, ["ns/bt-03", "ns/bt-09", "ns/bt-15", "ns/bt-21"]);
        let sessions =
            only(kuant_store::RunFilter { kind: Some(RunKind::Session), ..Default::default() }).await;
        assert!(sessions.is_empty());
    }
}

#[tokio::test]
async fn events_filter_by_run_chain_type_and_source_and_page_by_cursor() {
    for store in stores("event_pages").await {
        store.upsert_run(&run("s-ev")).await.expect("run");
        store.upsert_run(&run("s-other")).await.expect("run");
        // Ten events per millisecond for part of the run: pages must split ties correctly.
        let mut events: Vec<_> = (0..60).map(|n| event(n, "s-ev", n / 6, 1_000 + (n / 10) as i64)).collect();
        events.push(event(100, "s-other", 0, 1_000));
        store.insert_events(&events).await.expect("events");

        let mut filter =
            kuant_store::EventFilter { run_id: Some("s-ev".into()), limit: 7, ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let page = store.list_events(&filter).await.expect("page");
            seen.extend(page.iter().map(|e| e.event_id.clone()));
            match page.last() {
                Some(last) if page.len() == 7 => filter.after = Some(last.cursor()),
                _ => break,
            }
        }
        let expected: Vec<_> = (0..60).map(uuid).collect();
        assert_eq!(seen, expected, "in order, every event once: {:?}", store.backend());

        let fills = store
            .list_events(&kuant_store::EventFilter {
                run_id: Some("s-ev".into()),
                event_type: Some("fill".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("fills");
        assert_eq!(fills.len(), 30);
        let chain = store
            .list_events(&kuant_store::EventFilter {
                correlation_id: Some(uuid(1_000_002)),
                source: Some("engine".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("chain");
        assert_eq!(
            chain.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(),
            (12..18).map(uuid).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_paper_accounts_balances_are_kept_per_asset_newest_first_and_exact() {
    for store in stores("paper_balances").await {
        store.upsert_run(&run("paper-1")).await.expect("run");
        let b = |asset: &str, free: &str, locked: &str, at_ms: i64| kuant_store::PaperBalance {
            asset: asset.into(),
            free: dec(free),
            locked: dec(locked),
            at_ms,
        };
        let opening = [b("USDT", "10000", "0", 1_000), b("BTC", "0", "0", 1_000)];
        assert_eq!(store.record_paper_balances("paper-1", &opening).await.expect("opening"), 2);
        let after_fill = [b("USDT", "4987.4435000000001", "0", 2_000), b("BTC", "0.1", "0", 2_000)];
        assert_eq!(store.record_paper_balances("paper-1", &after_fill).await.expect("fill"), 2);
        // A late write of an older state changes nothing.
        assert_eq!(store.record_paper_balances("paper-1", &opening).await.expect("late"), 0);
        let read = store.paper_balances("paper-1").await.expect("read");
        assert_eq!(read, vec![after_fill[1].clone(), after_fill[0].clone()], "{:?}", store.backend());
        assert_eq!(read[1].free.to_string(), "4987.4435000000001", "exact digits");
        assert!(store.paper_balances("nobody").await.expect("none").is_empty());
    }
}
