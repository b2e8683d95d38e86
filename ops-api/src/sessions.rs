//! `/api/v1/sessions`: trading sessions as the store holds them: list, one, portfolio,
//! positions, orders, fills, blocked trades, risk budget, and a daily report.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kuant_store::{AllocationState, RunKind, StoredRun};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Serialize;

use crate::AppState;
use crate::backtests::{
    Page, ResourceView, RunDetail, RunSummary, list_runs, merge_resource, slice_page, stored_detail,
};
use crate::error::ApiError;
use crate::params::Params;

/// A position as served (decimals as strings).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Position {
    /// Symbol.
    pub symbol: String,
    /// When it was so, Unix ms.
    pub at_ms: i64,
    /// Base quantity.
    pub quantity: String,
    /// Average entry price.
    pub avg_price: Option<String>,
}

/// An order as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Order {
    /// Client order id.
    pub client_order_id: String,
    /// Chain.
    pub correlation_id: String,
    /// The exchange's id.
    pub exchange_order_id: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// buy or sell.
    pub side: String,
    /// market, limit, …
    pub order_type: String,
    /// Quantity.
    pub quantity: String,
    /// Limit price.
    pub limit_price: Option<String>,
    /// State.
    pub status: String,
    /// Made at, Unix ms.
    pub created_at_ms: i64,
}

/// A fill as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Fill {
    /// Its id.
    pub fill_id: String,
    /// The order.
    pub client_order_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Price.
    pub price: String,
    /// Quantity.
    pub quantity: String,
    /// Fee.
    pub fee: String,
    /// Fee asset.
    pub fee_asset: String,
}

/// A blocked trade as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Block {
    /// The event's id.
    pub event_id: String,
    /// Chain.
    pub correlation_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Why, for machines.
    pub reason: String,
    /// Why, for people.
    pub detail: String,
}

/// The risk budget a session holds.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Risk {
    /// Claimed or used and not yet released.
    pub in_use: String,
    /// Every allocation, in claim order.
    pub allocations: Vec<Allocation>,
}

/// A risk allocation as served.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Allocation {
    /// Its id.
    pub allocation_id: String,
    /// Chain.
    pub correlation_id: String,
    /// Amount.
    pub amount: String,
    /// claimed, used or released.
    pub state: &'static str,
    /// Claimed at, Unix ms.
    pub claimed_at_ms: i64,
    /// Used at.
    pub used_at_ms: Option<i64>,
    /// Released at.
    pub released_at_ms: Option<i64>,
}

/// A session's holdings.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Portfolio {
    /// Open positions (quantity not zero).
    pub positions: Vec<Position>,
    /// Ledger balance of each of its accounts: `(account, asset, balance)`.
    pub balances: Vec<Balance>,
    /// The newest equity point.
    pub equity: Option<(i64, f64)>,
}

/// One ledger balance.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Balance {
    /// Account.
    pub account: String,
    /// Asset.
    pub asset: String,
    /// Balance.
    pub balance: String,
}

/// A day of a session (UTC).
#[derive(Debug, Serialize, JsonSchema)]
pub struct DailyReport {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Round trips closed that day.
    pub trades_closed: usize,
    /// Their profit or loss after fees.
    pub pnl: String,
    /// Fills that day.
    pub fills: usize,
    /// Fees paid that day, by asset.
    pub fees: BTreeMap<String, String>,
    /// Trades blocked that day, by reason.
    pub blocks: BTreeMap<String, usize>,
    /// Risk budget used that day.
    pub risk_used: String,
}

async fn session(state: &AppState, id: &str) -> Result<StoredRun, ApiError> {
    match state.store.run(id).await? {
        Some(run) if run.run.kind == RunKind::Session => Ok(run),
        _ => Err(ApiError::not_found(format!("no session {id}"))),
    }
}

type Id = Path<(String, String)>;

fn id((namespace, name): (String, String)) -> String {
    format!("{namespace}/{name}")
}

/// `GET /api/v1/sessions?phase=&strategy=&symbol=&limit=&cursor=`
pub async fn list(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Json<Page<RunSummary>>, ApiError> {
    list_runs(&state, params, RunKind::Session).await
}

/// `GET /api/v1/sessions/{namespace}/{name}`
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    params: Params,
) -> Result<Json<RunDetail>, ApiError> {
    params.finish()?;
    let (namespace, name) = path;
    let id = format!("{namespace}/{name}");
    let stored = stored_detail(&state, &id, RunKind::Session).await?;
    let resource = match &state.cluster {
        Some(cluster) => cluster.session(&namespace, &name).await?.as_ref().map(ResourceView::from),
        None => None,
    };
    merge_resource(stored, resource).map(Json).ok_or_else(|| ApiError::not_found(format!("no session {id}")))
}

/// The body of a kill-switch request.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// true stops the session's trading (open orders cancelled, no new ones); false resumes it.
    pub suspend: bool,
}

/// What the kill switch answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Suspended {
    /// `namespace/name`.
    pub id: String,
    /// `spec.suspend` as the API server now holds it.
    pub suspend: bool,
}

/// `POST /api/v1/sessions/{namespace}/{name}/suspend` (admin), body `{"suspend": true}`: the
/// kill switch, through the API server (`spec.suspend` of the TradingSession).
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Id,
    params: Params,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Suspended>, ApiError> {
    params.finish()?;
    let request: SuspendRequest = crate::error::json_body(body)?;
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::not_available(
            "this ops API runs without --cluster: trading sessions are switched through the Kubernetes API server",
        ));
    };
    let session = cluster.suspend_session(&namespace, &name, request.suspend).await?;
    tracing::warn!(namespace, name, suspend = request.suspend, "kill switch of a trading session set");
    Ok(Json(Suspended { id: format!("{namespace}/{name}"), suspend: session.spec.suspend }))
}

/// The body of a resume request.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// Clear the holds placed, and lift the halts begun, at or before this RFC 3339 time;
    /// default: now.
    #[serde(default)]
    pub at: Option<String>,
}

/// What a resume answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resumed {
    /// `namespace/name`.
    pub id: String,
    /// The annotation `kuant.dev/resume-at` as the API server now holds it.
    pub resume_at: String,
    /// The holds the session had when resumed (the operator clears those placed at or before
    /// `resume_at` within seconds).
    pub holds: Vec<String>,
}

/// `POST /api/v1/sessions/{namespace}/{name}/resume` (admin), body `{}` or `{"at": "…"}`: a
/// human resumes a halted or held session, through the annotation `kuant.dev/resume-at` (never
/// by rewriting the spec, so GitOps tools see no drift).
pub async fn resume(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Id,
    params: Params,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Resumed>, ApiError> {
    params.finish()?;
    let request: ResumeRequest = match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => ResumeRequest::default(),
        _ => crate::error::json_body(body)?,
    };
    let at = match request.at.as_deref() {
        None => k8s_openapi::jiff::Timestamp::now(),
        Some(text) => text.parse::<k8s_openapi::jiff::Timestamp>().map_err(|e| {
            ApiError::invalid_body(vec![crate::error::FieldError {
                field: "at".to_owned(),
                message: format!("{text:?} is not an RFC 3339 time like 2026-12-07T10:00:00Z: {e}"),
            }])
        })?,
    };
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::not_available(
            "this ops API runs without --cluster: trading sessions are resumed through the Kubernetes API server",
        ));
    };
    let at = at.to_string();
    let session = cluster.resume_session(&namespace, &name, &at).await?;
    tracing::warn!(namespace, name, resume_at = %at, "a trading session resumed by a human");
    let holds = session.status.map(|s| s.holds).unwrap_or_default();
    Ok(Json(Resumed {
        id: format!("{namespace}/{name}"),
        resume_at: at,
        holds: holds.into_iter().map(|h| format!("{}: {}: {}", h.source, h.reason, h.message)).collect(),
    }))
}

/// `GET /api/v1/sessions/{namespace}/{name}/positions`
pub async fn positions(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    params: Params,
) -> Result<Json<Vec<Position>>, ApiError> {
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    Ok(Json(state.store.positions_of_run(&id).await?.into_iter().map(position).collect()))
}

fn position(p: kuant_store::StoredPosition) -> Position {
    Position {
        symbol: p.symbol,
        at_ms: p.at_ms,
        quantity: p.quantity.to_string(),
        avg_price: p.avg_price.map(|v| v.to_string()),
    }
}

/// `GET /api/v1/sessions/{namespace}/{name}/portfolio`
pub async fn portfolio(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    params: Params,
) -> Result<Json<Portfolio>, ApiError> {
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    let positions = state
        .store
        .positions_of_run(&id)
        .await?
        .into_iter()
        .filter(|p| !p.quantity.is_zero())
        .map(position)
        .collect();
    let balances = state
        .store
        .balances(&id, i64::MAX)
        .await?
        .into_iter()
        .map(|(account, asset, balance)| Balance { account, asset, balance: balance.to_string() })
        .collect();
    let equity = state.store.equity_of_run(&id).await?.last().copied();
    Ok(Json(Portfolio { positions, balances, equity }))
}

/// `GET /api/v1/sessions/{namespace}/{name}/orders?limit=&cursor=`
pub async fn orders(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    mut params: Params,
) -> Result<Json<Page<Order>>, ApiError> {
    let limit = params.limit(100) as usize;
    let from = params.cursor().map_or(0, |(offset, _)| usize::try_from(offset).unwrap_or(0));
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    let all = state.store.orders_of_run(&id).await?;
    Ok(Json(slice_page(all, from, limit, |o| Order {
        client_order_id: o.client_order_id,
        correlation_id: o.correlation_id,
        exchange_order_id: o.exchange_order_id,
        symbol: o.symbol,
        side: o.side,
        order_type: o.order_type,
        quantity: o.quantity.to_string(),
        limit_price: o.limit_price.map(|p| p.to_string()),
        status: o.status,
        created_at_ms: o.created_at_ms,
    })))
}

/// `GET /api/v1/sessions/{namespace}/{name}/fills?limit=&cursor=`
pub async fn fills(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    mut params: Params,
) -> Result<Json<Page<Fill>>, ApiError> {
    let limit = params.limit(100) as usize;
    let from = params.cursor().map_or(0, |(offset, _)| usize::try_from(offset).unwrap_or(0));
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    let all = state.store.fills_of_run(&id).await?;
    Ok(Json(slice_page(all, from, limit, |f| Fill {
        fill_id: f.fill_id,
        client_order_id: f.client_order_id,
        at_ms: f.at_ms,
        price: f.price.to_string(),
        quantity: f.quantity.to_string(),
        fee: f.fee.to_string(),
        fee_asset: f.fee_asset,
    })))
}

/// `GET /api/v1/sessions/{namespace}/{name}/blocks?reason=`
pub async fn blocks(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    mut params: Params,
) -> Result<Json<Vec<Block>>, ApiError> {
    let reason = params.text("reason", 64);
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    let blocks = state.store.blocks_of_run(&id, reason.as_deref()).await?;
    Ok(Json(
        blocks
            .into_iter()
            .map(|b| Block {
                event_id: b.event_id,
                correlation_id: b.correlation_id,
                at_ms: b.at_ms,
                reason: b.reason,
                detail: b.detail,
            })
            .collect(),
    ))
}

fn state_name(s: AllocationState) -> &'static str {
    match s {
        AllocationState::Claimed => "claimed",
        AllocationState::Used => "used",
        AllocationState::Released => "released",
    }
}

/// `GET /api/v1/sessions/{namespace}/{name}/risk`
pub async fn risk(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    params: Params,
) -> Result<Json<Risk>, ApiError> {
    params.finish()?;
    let id = id(path);
    session(&state, &id).await?;
    let all = state.store.risk_of_run(&id).await?;
    let in_use: Decimal = all.iter().filter(|a| a.state != AllocationState::Released).map(|a| a.amount).sum();
    Ok(Json(Risk {
        in_use: in_use.to_string(),
        allocations: all
            .into_iter()
            .map(|a| Allocation {
                allocation_id: a.allocation_id,
                correlation_id: a.correlation_id,
                amount: a.amount.to_string(),
                state: state_name(a.state),
                claimed_at_ms: a.claimed_at_ms,
                used_at_ms: a.used_at_ms,
                released_at_ms: a.released_at_ms,
            })
            .collect(),
    }))
}

/// Unix ms of 00:00 UTC of `YYYY-MM-DD`, if it is a real date.
fn day_start(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

/// `GET /api/v1/sessions/{namespace}/{name}/report?date=YYYY-MM-DD`: that UTC day's closed
/// trades and P&L, fills and fees, blocks by reason and risk used.
pub async fn report(
    State(state): State<Arc<AppState>>,
    Path(path): Id,
    mut params: Params,
) -> Result<Json<DailyReport>, ApiError> {
    let date = params.required("date", 10);
    params.finish()?;
    let date = date.unwrap_or_default();
    let start =
        day_start(&date).ok_or_else(|| ApiError::invalid_field("date", "must be a date, YYYY-MM-DD"))?;
    let end = start + 86_400_000;
    let within = |ms: i64| (start..end).contains(&ms);
    let id = id(path);
    session(&state, &id).await?;
    let closed: Vec<_> = state
        .store
        .trades_of_run(&id)
        .await?
        .into_iter()
        .filter(|t| t.exit_time_ms.is_some_and(within))
        .collect();
    let pnl: Decimal = closed.iter().filter_map(|t| t.pnl).sum();
    let fills: Vec<_> =
        state.store.fills_of_run(&id).await?.into_iter().filter(|f| within(f.at_ms)).collect();
    let mut fees: BTreeMap<String, Decimal> = BTreeMap::new();
    for f in &fills {
        *fees.entry(f.fee_asset.clone()).or_default() += f.fee;
    }
    let mut blocks: BTreeMap<String, usize> = BTreeMap::new();
    for b in state.store.blocks_of_run(&id, None).await? {
        if within(b.at_ms) {
            *blocks.entry(b.reason).or_default() += 1;
        }
    }
    let risk_used: Decimal = state
        .store
        .risk_of_run(&id)
        .await?
        .iter()
        .filter(|a| a.used_at_ms.is_some_and(within))
        .map(|a| a.amount)
        .sum();
    Ok(Json(DailyReport {
        date,
        trades_closed: closed.len(),
        pnl: pnl.to_string(),
        fills: fills.len(),
        fees: fees.into_iter().map(|(asset, fee)| (asset, fee.to_string())).collect(),
        blocks,
        risk_used: risk_used.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::day_start;

    #[test]
    fn dates_become_utc_midnights_and_impossible_ones_are_refused() {
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(day_start("2000-03-01"), Some(951_868_800_000));
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "yesterday", "2024-01-01-01", "2024-04-31"] {
            assert_eq!(day_start(bad), None, "{bad}");
        }
    }
}
