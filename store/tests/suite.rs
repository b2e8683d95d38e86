//! The store suite: the same tests on real PostgreSQL (127.0.0.1:5432 in CI,
//! `KUANT_TEST_DATABASE_URL` overrides it; each test in a throw-away schema) and on SQLite.

use kuant_store::{Run, RunKind, Store, StoredEvent};

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Each backend, freshly migrated, for a test named `tag`.
async fn stores(tag: &str) -> Vec<Store> {
    // A fixed name per test: a rerun drops what the last run left.
    let schema = format!("kuant_suite_{tag}");
    let base = postgres_url();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} (set KUANT_TEST_DATABASE_URL): {e}"));
    // The schema name is the test's own, not input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
    )))
    .execute(&admin)
    .await
    .expect("schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    let pg = Store::open(&format!("{base}{separator}options=-c%20search_path%3D{schema}"))
        .await
        .expect("postgres store");

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
async fn a_run_is_recorded_once_and_its_phase_follows() {
    for store in stores("runs").await {
        store.upsert_run(&run("bt-3")).await.expect("run");
        let mut done = run("bt-3");
        done.phase = "Succeeded".into();
        store.upsert_run(&done).await.expect("update");
        let phase: String = match &store {
            Store::Postgres(pool) => {
                sqlx::query_scalar("SELECT phase FROM runs WHERE run_id = $1")
                    .bind("bt-3")
                    .fetch_one(pool)
                    .await
            }
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT phase FROM runs WHERE run_id = ?1")
                    .bind("bt-3")
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("phase");
        assert_eq!(phase, "Succeeded");
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
