//! Bulk insert throughput of the store on both backends: events and equity points in rows per
//! second, through the same calls the engine uses (multi-row statements in one transaction).
//! A program that prints figures, not a timed test: `cargo bench -p kuant-store --bench inserts`.
//! PostgreSQL at `KUANT_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test, in a
//! schema of its own); SQLite in a temporary file. `KUANT_BENCH_ROWS` sets the rows (default
//! 100,000 of each). Last, per backend: the cost of storing a 1,000,000-bar run's equity curve
//! as `kuant backtest` does (downsampled to 10,000 points, then written).

use std::time::Instant;

use kuant_store::{Run, RunKind, Store, StoredEvent};

fn rows() -> usize {
    std::env::var("KUANT_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

async fn open_postgres() -> Result<Store, String> {
    let base = std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let url = kuant_store::fresh_schema(&base, "kuant_bench").await.map_err(|e| e.to_string())?;
    Store::open(&url).await.map_err(|e| e.to_string())
}

async fn bench(name: &str, store: &Store, n: usize) -> Result<(), String> {
    let run = Run {
        run_id: "bench".into(),
        kind: RunKind::Backtest,
        namespace: None,
        name: "bench".into(),
        spec: serde_json::json!({}),
        phase: "Succeeded".into(),
    };
    store.upsert_run(&run).await.map_err(|e| e.to_string())?;
    let events: Vec<StoredEvent> = (0..n as u64)
        .map(|i| StoredEvent {
            event_id: format!("00000000-0000-4000-8000-{i:012x}"),
            run_id: "bench".into(),
            correlation_id: format!("00000000-0000-4000-9000-{:012x}", i / 4),
            causation_id: i.checked_sub(1).map(|c| format!("00000000-0000-4000-8000-{c:012x}")),
            event_type: "fill".into(),
            source: "engine".into(),
            occurred_at_ms: 1_700_000_000_000 + i as i64,
            payload: serde_json::json!({"side": "buy", "price": "2505.56", "quantity": "0.12345678", "fee": "0.31"}),
        })
        .collect();
    let started = Instant::now();
    let inserted = store.insert_events(&events).await.map_err(|e| e.to_string())?;
    let took = started.elapsed().as_secs_f64();
    println!("{name}: {inserted} events in {took:.2} s -> {:.0} rows/s", inserted as f64 / took);

    let points: Vec<(i64, f64)> =
        (0..n as i64).map(|i| (1_700_000_000_000 + i * 3_600_000, 10_000.0 + i as f64 * 0.01)).collect();
    let started = Instant::now();
    let inserted = store.insert_equity("bench", &points).await.map_err(|e| e.to_string())?;
    let took = started.elapsed().as_secs_f64();
    println!("{name}: {inserted} equity points in {took:.2} s -> {:.0} rows/s", inserted as f64 / took);

    // What `kuant backtest` pays for a 1,000,000-bar run's curve: downsampled to the default
    // cap (KUANT_STORE_MAX_EQUITY_POINTS, 10,000) and written.
    let curve: Vec<(i64, f64)> = (0..1_000_000_i64)
        .map(|i| (1_700_000_000_000 + i * 3_600_000, 10_000.0 + ((i * 7919) % 1000) as f64 * 0.37))
        .collect();
    let mut curve_run = run.clone();
    curve_run.run_id = "bench-curve".into();
    store.upsert_run(&curve_run).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let kept = kuant_store::downsample(&curve, 10_000);
    let downsampled = started.elapsed().as_secs_f64();
    let inserted = store.insert_equity("bench-curve", &kept).await.map_err(|e| e.to_string())?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{name}: a 1,000,000-bar curve kept as {inserted} points in {took:.3} s ({downsampled:.3} s downsampling)"
    );
    Ok(())
}

fn main() {
    let n = rows();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let outcome: Result<(), String> = runtime.block_on(async {
        println!("kuant store bulk inserts: {n} rows each, batched in one transaction (SQLite: multi-row VALUES; PostgreSQL: UNNEST over arrays)");
        let pg = open_postgres().await.map_err(|e| format!("PostgreSQL: {e}"))?;
        bench("postgres", &pg, n).await?;
        let dir = std::env::temp_dir().join(format!("kuant-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let sqlite = Store::open(&dir.join("kuant.db").to_string_lossy()).await.map_err(|e| e.to_string())?;
        bench("sqlite", &sqlite, n).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
