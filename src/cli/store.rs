//! Saving a local backtest to the store: the run, its events and its equity curve.
//!
//! Where: `--store URL`, else `KUANT_DATABASE_URL`, else a SQLite file in the user's data folder
//! (`$XDG_DATA_HOME/kuant/kuant.db`, by default `~/.local/share/kuant/kuant.db`). `--no-store`
//! skips it. Retention: at most [`DEFAULT_MAX_EQUITY_POINTS`] equity points per run
//! (`KUANT_STORE_MAX_EQUITY_POINTS` changes it); a longer curve is thinned evenly, its last
//! point always kept.

use std::path::PathBuf;
use std::time::Instant;

use kuant_agents::backtest::BacktestResult;
use kuant_store::{Run, RunKind, Store, StoredEvent};

/// Equity points kept per run unless `KUANT_STORE_MAX_EQUITY_POINTS` says otherwise.
pub const DEFAULT_MAX_EQUITY_POINTS: usize = 100_000;

/// The store a local run goes to: the flag, the environment, or the default file.
pub fn location(flag: Option<&str>) -> Result<String, String> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Ok(url.to_owned());
    }
    if let Ok(url) = std::env::var("KUANT_DATABASE_URL")
        && !url.is_empty()
    {
        return Ok(url);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or("no data folder (set HOME or XDG_DATA_HOME, or pass --store URL)")?;
    let dir = base.join("kuant");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.join("kuant.db").to_string_lossy().into_owned())
}

/// What was saved.
pub struct Saved {
    /// Events written (new rows).
    pub events: u64,
    /// Equity points written.
    pub equity_points: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Saves `result` (run, events, equity curve) to the store at `url`.
pub fn save(url: &str, result: &BacktestResult, spec: &serde_json::Value) -> Result<Saved, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let started = Instant::now();
        let store = Store::open(url).await.map_err(|e| e.to_string())?;
        let failed = |what: &str| {
            let what = what.to_owned();
            move |e: kuant_store::SqlError| {
                format!("cannot save the {what} to {}: {e}", kuant_store::redact(url))
            }
        };
        let run = Run {
            run_id: result.run_id.clone(),
            kind: RunKind::Backtest,
            namespace: None,
            name: result.name.clone(),
            spec: spec.clone(),
            phase: "Succeeded".to_owned(),
        };
        store.upsert_run(&run).await.map_err(failed("run"))?;
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
        let events = store.insert_events(&events).await.map_err(failed("events"))?;
        let max = std::env::var("KUANT_STORE_MAX_EQUITY_POINTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_EQUITY_POINTS);
        let curve = thin(&result.equity, max);
        let equity_points =
            store.insert_equity(&result.run_id, &curve).await.map_err(failed("equity curve"))?;
        Ok(Saved { events, equity_points, seconds: started.elapsed().as_secs_f64() })
    })
}

/// At most `max` points of `curve`, evenly spaced, the last one always kept.
pub fn thin(curve: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if curve.len() <= max || max == 0 {
        return if max == 0 { Vec::new() } else { curve.to_vec() };
    }
    let step = curve.len().div_ceil(max);
    let mut out: Vec<(i64, f64)> = curve.iter().step_by(step).copied().collect();
    if let (Some(last), Some(kept)) = (curve.last(), out.last())
        && last.0 != kept.0
    {
        if out.len() == max {
            out.pop();
        }
        out.push(*last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_curve_is_thinned_evenly_keeping_its_last_point() {
        let curve: Vec<(i64, f64)> = (0..10).map(|i| (i, i as f64)).collect();
        assert_eq!(thin(&curve, 20), curve);
        let thinned = thin(&curve, 4);
        assert!(thinned.len() <= 4, "{thinned:?}");
        assert_eq!(thinned.first(), Some(&(0, 0.0)));
        assert_eq!(thinned.last(), Some(&(9, 9.0)));
        assert!(thin(&curve, 0).is_empty());
    }
}
