//! `/api/v1/market`: candles by market, timeframe and range, and the latest prices; and
//! `/api/v1/llm/usage`: LLM telemetry by agent and model.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::params::Params;

/// A candle as served (prices as decimal strings).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Candle {
    /// Symbol.
    pub symbol: String,
    /// Timeframe.
    pub timeframe: String,
    /// Open time, Unix ms.
    pub open_time_ms: i64,
    /// Open.
    pub open: String,
    /// High.
    pub high: String,
    /// Low.
    pub low: String,
    /// Close.
    pub close: String,
    /// Volume.
    pub volume: f64,
}

impl From<kuant_store::StoredCandle> for Candle {
    fn from(c: kuant_store::StoredCandle) -> Self {
        Self {
            symbol: c.symbol,
            timeframe: c.timeframe,
            open_time_ms: c.open_time_ms,
            open: c.open.to_string(),
            high: c.high.to_string(),
            low: c.low.to_string(),
            close: c.close.to_string(),
            volume: c.volume,
        }
    }
}

/// LLM use of one agent and model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Usage {
    /// Agent.
    pub agent: String,
    /// Model.
    pub model: String,
    /// Calls.
    pub calls: u64,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Completion tokens.
    pub tokens_out: i64,
    /// Total cost in USD, exact.
    pub cost: String,
    /// Slowest call.
    pub max_latency_ms: i64,
}

/// `GET /api/v1/market/candles?exchange=&symbol=&timeframe=&from=&to=&limit=`: candles with
/// open time in `[from, to)`, oldest first.
pub async fn candles(
    State(state): State<Arc<AppState>>,
    mut params: Params,
) -> Result<Json<Vec<Candle>>, ApiError> {
    let exchange = params.required("exchange", 64);
    let symbol = params.required("symbol", 32);
    let timeframe = params.required("timeframe", 8);
    let from = params.time("from").unwrap_or(kuant_store::MIN_TIME_MS);
    let to = params.time("to").unwrap_or(kuant_store::MAX_TIME_MS);
    let limit = params.limit(500);
    params.finish()?;
    let (Some(exchange), Some(symbol), Some(timeframe)) = (exchange, symbol, timeframe) else {
        return Err(ApiError::internal("required parameters passed the check while absent"));
    };
    if from >= to {
        return Err(ApiError::invalid_field("to", "must be after from"));
    }
    let candles = state.store.candles(&exchange, &symbol, &timeframe, from, to, i64::from(limit)).await?;
    Ok(Json(candles.into_iter().map(Candle::from).collect()))
}

/// `GET /api/v1/market/latest?exchange=`: the newest candle of every market and timeframe.
pub async fn latest(
    State(state): State<Arc<AppState>>,
    mut params: Params,
) -> Result<Json<Vec<Candle>>, ApiError> {
    let exchange = params.required("exchange", 64);
    params.finish()?;
    let exchange = exchange.unwrap_or_default();
    Ok(Json(state.store.latest_candles(&exchange).await?.into_iter().map(Candle::from).collect()))
}

/// The latest tick of a market as served (decimals as strings).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tick {
    /// Exchange.
    pub exchange: String,
    /// Symbol.
    pub symbol: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Last trade price.
    pub price: String,
    /// Best bid.
    pub bid: Option<String>,
    /// Best ask.
    pub ask: Option<String>,
}

/// `GET /api/v1/market/ticks?exchange=&symbol=`: the latest tick of every market (or one).
pub async fn ticks(
    State(state): State<Arc<AppState>>,
    mut params: Params,
) -> Result<Json<Vec<Tick>>, ApiError> {
    let exchange = params.required("exchange", 64);
    let symbol = params.text("symbol", 32);
    params.finish()?;
    let ticks = state.store.latest_ticks(&exchange.unwrap_or_default()).await?;
    Ok(Json(
        ticks
            .into_iter()
            .filter(|t| symbol.as_ref().is_none_or(|s| *s == t.symbol))
            .map(|t| Tick {
                exchange: t.exchange,
                symbol: t.symbol,
                at_ms: t.at_ms,
                price: t.price.to_string(),
                bid: t.bid.map(|d| d.to_string()),
                ask: t.ask.map(|d| d.to_string()),
            })
            .collect(),
    ))
}

/// `GET /api/v1/llm/usage?run=&from=&to=`: calls, tokens, cost and worst latency by agent and
/// model, of one run or session or all, in a time window.
pub async fn llm_usage(
    State(state): State<Arc<AppState>>,
    mut params: Params,
) -> Result<Json<Vec<Usage>>, ApiError> {
    let run = params.text("run", 256);
    let from = params.time("from").unwrap_or(kuant_store::MIN_TIME_MS);
    let to = params.time("to").unwrap_or(kuant_store::MAX_TIME_MS);
    params.finish()?;
    let usage = state.store.llm_usage(run.as_deref(), from, to).await?;
    Ok(Json(
        usage
            .into_iter()
            .map(|u| Usage {
                agent: u.agent,
                model: u.model,
                calls: u.calls,
                tokens_in: u.tokens_in,
                tokens_out: u.tokens_out,
                cost: u.cost.to_string(),
                max_latency_ms: u.max_latency_ms,
            })
            .collect(),
    ))
}
