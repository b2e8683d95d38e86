//! `/api/v1/backtests`: list, one, results, equity, trades, events, and compare.
//!
//! A backtest is addressed as `{namespace}/{name}`, the id its run carries in the store; local
//! runs (`kuant backtest`) have the namespace `local`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kuant_store::{RunFilter, RunKind, StoredEvent, StoredRun, StoredTrade};
use schemars::JsonSchema;
use serde::Serialize;

use axum::body::Bytes;
use axum::response::Response;

use crate::AppState;
use crate::cache::{finished, json_bytes};
use crate::error::ApiError;
use crate::params::{Params, encode_cursor};

/// Phases a filter may name: a Backtest's, and a TradingSession's.
const PHASES: &[&str] =
    &["Pending", "Running", "Saving", "Succeeded", "Failed", "Ready", "Trading", "Halted", "Stopped"];

/// A page of a list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A run (backtest or session) in a list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunSummary {
    /// `namespace/name`.
    pub id: String,
    /// Namespace (`local` for a local run).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Phase.
    pub phase: String,
    /// Strategy.
    pub strategy: Option<String>,
    /// Symbols.
    pub symbols: Vec<String>,
    /// When it was recorded, Unix ms.
    pub created_at_ms: i64,
    /// When it finished, Unix ms.
    pub finished_at_ms: Option<i64>,
    /// Its headline figures (a Backtest's `status.results`), once finished.
    pub results: Option<serde_json::Value>,
}

/// One run: the summary, its spec and its whole status (progress included).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The spec it ran with.
    pub spec: serde_json::Value,
    /// Its status.
    pub status: Option<serde_json::Value>,
}

/// An equity curve, columns of equal length.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Equity {
    /// `namespace/name`.
    pub id: String,
    /// Points stored for the run (before downsampling to `points`).
    pub stored_points: usize,
    /// Unix ms.
    pub times: Vec<i64>,
    /// Equity at each time.
    pub equity: Vec<f64>,
}

/// A trade as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Trade {
    /// Symbol.
    pub symbol: String,
    /// Its number within the run and symbol.
    pub trade_no: i64,
    /// Entry time, Unix ms.
    pub entry_time_ms: i64,
    /// Exit time, Unix ms.
    pub exit_time_ms: Option<i64>,
    /// Entry price (a decimal string).
    pub entry_price: String,
    /// Exit price.
    pub exit_price: Option<String>,
    /// Quantity.
    pub quantity: String,
    /// Profit or loss after fees.
    pub pnl: Option<String>,
    /// Fees.
    pub fees: String,
}

/// An event as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Event {
    /// Its id.
    pub id: String,
    /// Run or session.
    pub run_id: String,
    /// Chain.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// Type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The agent that wrote it.
    pub source: String,
    /// When, Unix ms.
    pub occurred_at_ms: i64,
    /// Its fields.
    pub payload: serde_json::Value,
}

/// Backtests side by side.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Comparison {
    /// The backtests, in the order asked for.
    pub backtests: Vec<RunSummary>,
    /// The union of the curves' times, Unix ms.
    pub times: Vec<i64>,
    /// One curve per backtest, aligned on `times`: each value is the equity at or before that
    /// time (null before the curve starts).
    pub equity: Vec<Vec<Option<f64>>>,
}

impl From<StoredTrade> for Trade {
    fn from(t: StoredTrade) -> Self {
        Self {
            symbol: t.symbol,
            trade_no: t.trade_no,
            entry_time_ms: t.entry_time_ms,
            exit_time_ms: t.exit_time_ms,
            entry_price: t.entry_price.to_string(),
            exit_price: t.exit_price.map(|p| p.to_string()),
            quantity: t.quantity.to_string(),
            pnl: t.pnl.map(|p| p.to_string()),
            fees: t.fees.to_string(),
        }
    }
}

impl From<StoredEvent> for Event {
    fn from(e: StoredEvent) -> Self {
        Self {
            id: e.event_id,
            run_id: e.run_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            event_type: e.event_type,
            source: e.source,
            occurred_at_ms: e.occurred_at_ms,
            payload: e.payload,
        }
    }
}

pub(crate) fn summary(run: &StoredRun) -> RunSummary {
    let (namespace, name) = match run.run.run_id.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (run.run.namespace.clone().unwrap_or_else(|| "local".into()), run.run.name.clone()),
    };
    RunSummary {
        id: run.run.run_id.clone(),
        namespace,
        name,
        phase: run.run.phase.clone(),
        strategy: run.run.strategy().map(str::to_owned),
        symbols: run.run.symbols().map(str::to_owned).collect(),
        created_at_ms: run.created_at_ms,
        finished_at_ms: run.finished_at_ms,
        results: run.status.as_ref().and_then(|s| s.get("results")).cloned(),
    }
}

async fn backtest(state: &AppState, id: &str) -> Result<StoredRun, ApiError> {
    match state.store.run(id).await? {
        Some(run) if run.run.kind == RunKind::Backtest => Ok(run),
        _ => Err(ApiError::not_found(format!("no backtest {id}"))),
    }
}

/// `GET /api/v1/backtests?phase=&strategy=&symbol=&limit=&cursor=`
pub async fn list(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Json<Page<RunSummary>>, ApiError> {
    list_runs(&state, params, RunKind::Backtest).await
}

/// One page of runs of `kind`, filtered by `phase`, `strategy` and `symbol`.
pub async fn list_runs(
    state: &AppState,
    mut params: Params,
    kind: RunKind,
) -> Result<Json<Page<RunSummary>>, ApiError> {
    let filter = RunFilter {
        kind: Some(kind),
        phase: params.choice("phase", PHASES).map(str::to_owned),
        strategy: params.text("strategy", 64),
        symbol: params.text("symbol", 32),
        after: params.cursor(),
        limit: i64::from(params.limit(50)),
    };
    params.finish()?;
    let runs = state.store.list_runs(&filter).await?;
    let next_cursor = match runs.last() {
        Some(last) if runs.len() as i64 == filter.limit => {
            let (ms, id) = last.cursor();
            Some(encode_cursor(ms, &id))
        }
        _ => None,
    };
    let mut items: Vec<RunSummary> = runs.iter().map(summary).collect();
    // With --cluster, the phase shown is the resource's current one (a pod that died leaves the
    // store's row Running; the operator marks the resource Failed). The filters act on the store.
    if let Some(cluster) = &state.cluster
        && !items.is_empty()
    {
        match cluster.phases(kind).await {
            Ok(phases) => {
                for item in &mut items {
                    if let Some(phase) = phases.get(&item.id) {
                        item.phase.clone_from(phase);
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = e.message,
                "listing from the store only: the API server did not answer"
            ),
        }
    }
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /api/v1/backtests/{namespace}/{name}`: the stored run; with `--cluster`, the
/// resource's current status (phase, conditions, progress) over it, and a Backtest not in the
/// store yet; for a backtest this server runs, its progress.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> Result<Json<RunDetail>, ApiError> {
    params.finish()?;
    let id = format!("{namespace}/{name}");
    let stored = stored_detail(&state, &id, RunKind::Backtest).await?;
    let resource = match &state.cluster {
        Some(cluster) => cluster.backtest(&namespace, &name).await?.as_ref().map(ResourceView::from),
        None => None,
    };
    let mut detail =
        merge_resource(stored, resource).ok_or_else(|| ApiError::not_found(format!("no backtest {id}")))?;
    if let Some(progress) = state.local_runs.progress(&id) {
        detail.summary.phase = progress.phase.to_owned();
        let status = detail.status.get_or_insert_with(|| serde_json::json!({}));
        if let Some(status) = status.as_object_mut() {
            status.insert("phase".into(), progress.phase.into());
            status.insert("progress".into(), serde_json::to_value(&progress).unwrap_or_default());
        }
    }
    Ok(Json(detail))
}

/// Run `id` of `kind` as the store holds it, if it does.
pub(crate) async fn stored_detail(
    state: &AppState,
    id: &str,
    kind: RunKind,
) -> Result<Option<RunDetail>, ApiError> {
    Ok(state.store.run(id).await?.filter(|run| run.run.kind == kind).map(|run| RunDetail {
        summary: summary(&run),
        spec: run.run.spec,
        status: run.status,
    }))
}

/// A kuant resource as the API server holds it, in the terms of a [`RunDetail`].
#[derive(Debug)]
pub struct ResourceView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `spec.strategy.name` (the first strategy of a session).
    pub strategy: Option<String>,
    /// The symbols it trades.
    pub symbols: Vec<String>,
    /// Its spec.
    pub spec: serde_json::Value,
    /// Its status.
    pub status: Option<serde_json::Value>,
    /// `metadata.creationTimestamp`, Unix ms.
    pub created_at_ms: i64,
    /// When it finished, Unix ms.
    pub finished_at_ms: Option<i64>,
}

/// The stored run with the resource's current status over it: the API server knows the phase,
/// conditions and progress now; the store keeps the results and the history. Either alone
/// stands for itself.
pub fn merge_resource(stored: Option<RunDetail>, resource: Option<ResourceView>) -> Option<RunDetail> {
    let Some(r) = resource else { return stored };
    let Some(mut detail) = stored else {
        let results = r.status.as_ref().and_then(|s| s.get("results")).cloned();
        return Some(RunDetail {
            summary: RunSummary {
                id: format!("{}/{}", r.namespace, r.name),
                namespace: r.namespace,
                name: r.name,
                phase: r.phase.unwrap_or_else(|| "Pending".to_owned()),
                strategy: r.strategy,
                symbols: r.symbols,
                created_at_ms: r.created_at_ms,
                finished_at_ms: r.finished_at_ms,
                results,
            },
            spec: r.spec,
            status: r.status,
        });
    };
    if let Some(phase) = r.phase {
        detail.summary.phase = phase;
    }
    // The store records when a run was saved; the resource, when it was asked for.
    if r.created_at_ms > 0 {
        detail.summary.created_at_ms = r.created_at_ms;
    }
    detail.summary.finished_at_ms = detail.summary.finished_at_ms.or(r.finished_at_ms);
    if let Some(serde_json::Value::Object(current)) = r.status {
        let status = detail.status.get_or_insert_with(|| serde_json::json!({}));
        if let Some(status) = status.as_object_mut() {
            status.extend(current);
        }
    }
    Some(detail)
}

/// `GET /api/v1/backtests/{namespace}/{name}/results`: every figure of the run (metrics,
/// counters, timings…).
pub async fn results(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    params.finish()?;
    let id = format!("{namespace}/{name}");
    let key = format!("results {id}");
    if let Some(bytes) = state.cache.get(&key) {
        return Ok(json_bytes(bytes));
    }
    let run = backtest(&state, &id).await?;
    let results = run.results.ok_or_else(|| {
        ApiError::not_found(format!("backtest {id} has no results yet (phase {})", run.run.phase))
    })?;
    let bytes = Bytes::from(serde_json::to_vec(&results).map_err(|e| ApiError::internal(&e.to_string()))?);
    if finished(&run.run.phase) {
        state.cache.put(key, bytes.clone());
    }
    Ok(json_bytes(bytes))
}

/// `GET /api/v1/backtests/{namespace}/{name}/equity?points=N` (2 to 10,000; default 1,000):
/// the curve downsampled on the server, keeping each bucket's low and high.
pub async fn equity(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut params: Params,
) -> Result<Response, ApiError> {
    let points = params.number("points", 1000, 2, 10_000) as usize;
    params.finish()?;
    let id = format!("{namespace}/{name}");
    let key = format!("equity {points} {id}");
    if let Some(bytes) = state.cache.get(&key) {
        return Ok(json_bytes(bytes));
    }
    let run = backtest(&state, &id).await?;
    let curve = state.store.equity_of_run(&id).await?;
    let kept = kuant_store::downsample(&curve, points);
    let body = Equity {
        id,
        stored_points: curve.len(),
        times: kept.iter().map(|p| p.0).collect(),
        equity: kept.iter().map(|p| p.1).collect(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).map_err(|e| ApiError::internal(&e.to_string()))?);
    if finished(&run.run.phase) {
        state.cache.put(key, bytes.clone());
    }
    Ok(json_bytes(bytes))
}

/// `GET /api/v1/backtests/{namespace}/{name}/trades?limit=&cursor=`
pub async fn trades(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut params: Params,
) -> Result<Json<Page<Trade>>, ApiError> {
    let limit = params.limit(100) as usize;
    // The cursor of a trade page is the position of the next trade.
    let from = params.cursor().map_or(0, |(offset, _)| usize::try_from(offset).unwrap_or(0));
    params.finish()?;
    let id = format!("{namespace}/{name}");
    backtest(&state, &id).await?;
    let all = state.store.trades_of_run(&id).await?;
    Ok(Json(slice_page(all, from, limit, Trade::from)))
}

/// The page of `all` from position `from`, at most `limit` long; its cursor is the next position.
pub(crate) fn slice_page<T, U>(all: Vec<T>, from: usize, limit: usize, map: impl Fn(T) -> U) -> Page<U> {
    let end = from.saturating_add(limit).min(all.len());
    let next_cursor = (end < all.len()).then(|| encode_cursor(end as i64, ""));
    let items = all.into_iter().skip(from).take(end.saturating_sub(from)).map(map).collect();
    Page { items, next_cursor }
}

/// `GET /api/v1/backtests/{namespace}/{name}/events?type=&source=&limit=&cursor=`
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Page<Event>>, ApiError> {
    let id = format!("{namespace}/{name}");
    backtest(&state, &id).await?;
    crate::events::page(&state, params, Some(id)).await
}

/// `GET /api/v1/backtests/compare?ids=ns/a,ns/b&points=N`: 2 to 8 backtests, their figures
/// side by side and their curves aligned on time.
pub async fn compare(
    State(state): State<Arc<AppState>>,
    mut params: Params,
) -> Result<Json<Comparison>, ApiError> {
    let ids = params.text("ids", 2048);
    let points = params.number("points", 500, 2, 5_000) as usize;
    params.finish()?;
    let ids: Vec<String> = ids
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !(2..=8).contains(&ids.len()) {
        return Err(ApiError::invalid_field(
            "ids",
            "give 2 to 8 backtest ids (namespace/name), comma-separated",
        ));
    }
    let mut backtests = Vec::with_capacity(ids.len());
    let mut curves = Vec::with_capacity(ids.len());
    for id in &ids {
        backtests.push(summary(&backtest(&state, id).await?));
        curves.push(kuant_store::downsample(&state.store.equity_of_run(id).await?, points));
    }
    let mut times: Vec<i64> = curves.iter().flatten().map(|p| p.0).collect();
    times.sort_unstable();
    times.dedup();
    let equity = curves.iter().map(|curve| align(curve, &times)).collect();
    Ok(Json(Comparison { backtests, times, equity }))
}

/// `curve` (in time order) on `times` (sorted): the last value at or before each time.
fn align(curve: &[(i64, f64)], times: &[i64]) -> Vec<Option<f64>> {
    let mut next = 0;
    let mut last = None;
    times
        .iter()
        .map(|&t| {
            while next < curve.len() && curve[next].0 <= t {
                last = Some(curve[next].1);
                next += 1;
            }
            last
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn curves_align_on_the_union_of_times_holding_the_last_value() {
        let times = [1, 2, 3, 5, 8];
        assert_eq!(
            align(&[(2, 10.0), (5, 11.0)], &times),
            [None, Some(10.0), Some(10.0), Some(11.0), Some(11.0)]
        );
        assert_eq!(align(&[], &times), [None; 5]);
    }
}
