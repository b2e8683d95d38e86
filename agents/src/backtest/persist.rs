//! Saving a backtest's result to the store, for `kuant backtest` (locally), `kuant agent
//! backtest` (in a Job) and the ops API (a backtest it runs itself): the run with its spec, status and results, the event chain, the equity
//! curve and the trades.
//!
//! A run is saved afresh: whatever its id held before (an earlier run of the same manifest, a
//! retried Job) is replaced, so a stored curve always belongs to the stored results. The run is
//! written as `Saving` first and marked `Succeeded` with its results last, so a save cut short
//! never looks complete.
//!
//! Retention (see the README's "Store" section):
//! - at most `KUANT_STORE_MAX_EQUITY_POINTS` equity points per run (default
//!   [`DEFAULT_MAX_EQUITY_POINTS`], more than a chart has pixels across); a longer curve is
//!   downsampled keeping its ends and each bucket's lowest and highest point ([`kuant_store::downsample`]).
//!   The whole curve is one flag away: `kuant backtest --equity-csv FILE`;
//! - events are kept `KUANT_STORE_EVENT_RETENTION_DAYS` days (default
//!   [`DEFAULT_EVENT_RETENTION_DAYS`]; 0 keeps them forever): each save deletes the events that
//!   are older than that and belong to runs recorded longer ago than that.
//!
//! `KUANT_STORE_CONNECT_TIMEOUT_SECS` (default 10) bounds the wait for an unreachable
//! PostgreSQL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::BacktestResult;
use kuant_store::{Run, RunKind, Store, StoredEvent, StoredTrade};

/// Equity points kept per run unless `KUANT_STORE_MAX_EQUITY_POINTS` says otherwise.
pub const DEFAULT_MAX_EQUITY_POINTS: usize = 10_000;
/// Days events are kept unless `KUANT_STORE_EVENT_RETENTION_DAYS` says otherwise.
pub const DEFAULT_EVENT_RETENTION_DAYS: u64 = 90;

/// What was saved.
#[derive(Debug)]
pub struct Saved {
    /// Events written.
    pub events: u64,
    /// Equity points written.
    pub equity_points: u64,
    /// Trades written.
    pub trades: u64,
    /// Old events deleted by retention.
    pub pruned_events: u64,
    /// Seconds it took, all of it (opening and migrating the store included).
    pub seconds: f64,
}

/// Where a result goes and who it belongs to.
pub struct Target<'a> {
    /// The store's URL.
    pub url: &'a str,
    /// The Backtest's namespace (absent for a local run).
    pub namespace: Option<&'a str>,
    /// The Backtest's spec as run.
    pub spec: &'a serde_json::Value,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|_| format!("{name}={v:?} is not a whole number"))
        }
        _ => Ok(default),
    }
}

/// The store's row of `backtest` in `phase`, before it has results: recorded when it is created
/// or starts, so lists show runs under way. Its id is `namespace/name` (`local` without a
/// namespace), the id its results are saved under.
pub fn run_row(backtest: &kuant_crds::Backtest, phase: &str) -> Run {
    let namespace = backtest.metadata.namespace.clone().unwrap_or_else(|| "local".to_owned());
    let name = backtest.metadata.name.clone().unwrap_or_default();
    Run {
        run_id: format!("{namespace}/{name}"),
        kind: RunKind::Backtest,
        namespace: Some(namespace),
        name,
        spec: serde_json::to_value(&backtest.spec).unwrap_or(serde_json::Value::Null),
        phase: phase.to_owned(),
    }
}

/// Records in the store at `url` that `backtest` is now in `phase` (see [`run_row`]), giving up
/// after `timeout`: a convenience for lists, never a reason to stop a run.
pub async fn record_phase(
    url: &str,
    backtest: &kuant_crds::Backtest,
    phase: &str,
    timeout: Duration,
) -> Result<(), String> {
    let store = Store::open_with(url, timeout).await.map_err(|e| e.to_string())?;
    store.upsert_run(&run_row(backtest, phase)).await.map_err(|e| format!("cannot record the run: {e}"))
}

/// Saves `result` to the store named by `target`, on a runtime of its own.
pub fn save(target: &Target<'_>, result: &BacktestResult) -> Result<Saved, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(save_async(target, result))
}

/// [`save`] on the caller's runtime.
pub async fn save_async(target: &Target<'_>, result: &BacktestResult) -> Result<Saved, String> {
    let connect_timeout = env_number("KUANT_STORE_CONNECT_TIMEOUT_SECS", 10_u64)?;
    let started = Instant::now();
    let store = Store::open_with(target.url, Duration::from_secs(connect_timeout.max(1)))
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "opened and migrated the store");
    let shown = kuant_store::redact(target.url);
    let mut saved = save_into(&store, target.namespace, target.spec, result)
        .await
        .map_err(|e| format!("{e} (store {shown})"))?;
    saved.seconds = started.elapsed().as_secs_f64();
    Ok(saved)
}

/// Saves `result` into an open `store` (the ops API's, for a backtest it runs itself): the run
/// under `namespace` with `spec`, its events, curve and trades, then retention.
pub async fn save_into(
    store: &Store,
    namespace: Option<&str>,
    spec: &serde_json::Value,
    result: &BacktestResult,
) -> Result<Saved, String> {
    let max_points = env_number("KUANT_STORE_MAX_EQUITY_POINTS", DEFAULT_MAX_EQUITY_POINTS)?;
    let retention_days = env_number("KUANT_STORE_EVENT_RETENTION_DAYS", DEFAULT_EVENT_RETENTION_DAYS)?;
    let started = Instant::now();
    let mut lap = Instant::now();
    let mut step = |what: &str, rows: u64| {
        tracing::debug!(step = what, rows, seconds = lap.elapsed().as_secs_f64(), "saving the run");
        lap = Instant::now();
    };
    let failed = |what: &'static str| move |e: kuant_store::SqlError| format!("cannot save the {what}: {e}");
    let run = Run {
        run_id: result.run_id.clone(),
        kind: RunKind::Backtest,
        namespace: namespace.map(str::to_owned),
        name: result.name.clone(),
        spec: spec.clone(),
        phase: "Saving".to_owned(),
    };
    store.reset_run(&run).await.map_err(failed("run"))?;
    step("reset the run", 1);

    let events: Vec<StoredEvent> = result
        .events
        .iter()
        .map(|e| {
            let payload = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
            StoredEvent {
                event_id: e.id().to_string(),
                run_id: result.run_id.clone(),
                correlation_id: e.correlation_id().to_string(),
                causation_id: e.causation_id().map(|id| id.to_string()),
                event_type: payload["type"].as_str().unwrap_or("unknown").to_owned(),
                source: "engine".to_owned(),
                occurred_at_ms: e.event.time_ms,
                payload,
            }
        })
        .collect();
    step("encode the events", events.len() as u64);
    let events = store.insert_events(&events).await.map_err(failed("events"))?;
    step("write the events", events);

    let curve = kuant_store::downsample(&result.equity, max_points);
    let equity_points = store.insert_equity(&result.run_id, &curve).await.map_err(failed("equity curve"))?;
    step("downsample and write the equity curve", equity_points);

    let mut numbers = std::collections::HashMap::<&str, i64>::new();
    let trades: Vec<StoredTrade> = result
        .trades
        .iter()
        .map(|t| {
            let n = numbers.entry(&t.symbol).or_default();
            *n += 1;
            StoredTrade {
                symbol: t.symbol.to_string(),
                trade_no: *n,
                entry_time_ms: t.trade.entry_time,
                exit_time_ms: t.trade.exit_time,
                entry_price: t.trade.entry_price,
                exit_price: t.trade.exit_price,
                quantity: t.trade.quantity,
                pnl: t.trade.pnl,
                fees: t.trade.fees,
            }
        })
        .collect();
    let trades = store.insert_trades(&result.run_id, &trades).await.map_err(failed("trades"))?;
    step("write the trades", trades);

    let results =
        serde_json::to_value(result.summary()).map_err(|e| format!("cannot encode the results: {e}"))?;
    let status = match result.status_results() {
        Ok(figures) => serde_json::json!({"phase": "Succeeded", "results": figures}),
        Err(reason) => serde_json::json!({"phase": "Succeeded", "message": reason}),
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    store
        .finish_run(&result.run_id, "Succeeded", Some(&status), Some(&results), now_ms)
        .await
        .map_err(failed("results"))?;
    step("write the results", 1);

    let pruned_events = if retention_days == 0 {
        0
    } else {
        let cutoff = now_ms.saturating_sub((retention_days as i64).saturating_mul(86_400_000));
        store.prune_events(cutoff).await.map_err(failed("retention of old events"))?
    };
    step("retention", pruned_events);
    Ok(Saved { events, equity_points, trades, pruned_events, seconds: started.elapsed().as_secs_f64() })
}
