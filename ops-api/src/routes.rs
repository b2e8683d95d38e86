//! Every endpoint once: its method and path, who may call it, its query parameters, the types
//! of its body and answer, and its handler. The router ([`crate::router`]) and the OpenAPI
//! document ([`crate::openapi`]) are both built from [`endpoints`], so neither can list an
//! endpoint the other lacks.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::auth::Role;
use crate::backtests::{Comparison, Equity, Event, Page, RunDetail, RunSummary, Trade};
use crate::launch::Created;
use crate::live::Stats;
use crate::market::{Candle, Tick, Usage};
use crate::sessions::{
    Block, DailyReport, Fill, Order, Portfolio, Position, ResumeRequest, Resumed, Risk, SuspendRequest,
    Suspended,
};
use crate::{AppState, backtests, events, launch, live, market, sessions};

/// A schema of the generator's, usually a `$ref` to a component.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (probes, metrics, this document).
    Public,
    /// A bearer token of this role or above.
    Token(Role),
    /// A WebSocket that authenticates itself (header or first message) with this role or above.
    Socket(Role),
}

/// The answer of an endpoint.
#[derive(Clone, Copy)]
pub enum Answer {
    /// JSON of a type, with this status.
    Json(u16, SchemaFn),
    /// JSON the CRD or the engine defines (a free-form object).
    Object(u16, &'static str),
    /// Plain text.
    Text(&'static str),
    /// A WebSocket of [`crate::live::Wire`] messages.
    Socket,
}

/// A query parameter.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    /// Its name.
    pub name: &'static str,
    /// `string` or `integer`.
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
    /// A value it accepts.
    pub example: &'static str,
    /// Whether it must be given.
    pub required: bool,
}

const fn q(
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    example: &'static str,
) -> Query {
    Query { name, kind, description, example, required: false }
}

const fn required(query: Query) -> Query {
    Query { required: true, ..query }
}

const LIMIT: Query = q("limit", "integer", "Page size, 1 to 1000.", "10");
const CURSOR: Query = q("cursor", "string", "`next_cursor` of the previous page.", "");
const PHASE: Query =
    q("phase", "string", "Only runs in this phase (Pending, Running, Succeeded, Failed, …).", "Succeeded");
const STRATEGY: Query = q("strategy", "string", "Only runs of this strategy.", "sma-crossover");
const SYMBOL: Query = q("symbol", "string", "Only runs or messages about this symbol.", "BTCUSDT");
const RUN: Query = q("run", "string", "Only this run or session (`namespace/name`).", "research/bt-00");
const TYPE: Query = q("type", "string", "Only events of this type.", "fill");
const SOURCE: Query = q("source", "string", "Only events of this agent.", "engine");
const FROM: Query = q("from", "integer", "From this time, Unix ms.", "1700000000000");
const TO: Query = q("to", "integer", "Until this time, Unix ms.", "1800000000000");
const EXCHANGE: Query = q("exchange", "string", "The exchange.", "binance");
const CHANNELS: Query = q("channels", "string", "Comma-separated channels; default all of the feed's.", "");
const WS_CURSOR: Query = q("cursor", "integer", "Resume after this message `seq`.", "0");

const RUN_LIST: &[Query] = &[PHASE, STRATEGY, SYMBOL, LIMIT, CURSOR];
const PAGE: &[Query] = &[LIMIT, CURSOR];

/// One endpoint.
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path, `{name}` for path parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line on what it does.
    pub summary: &'static str,
    /// Its query parameters.
    pub query: Vec<Query>,
    /// The type of its JSON body.
    pub body: Option<SchemaFn>,
    /// Its answer.
    pub answer: Answer,
    /// Its handler.
    pub handler: MethodRouter<Arc<AppState>>,
}

fn endpoint(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: MethodRouter<Arc<AppState>>,
) -> Endpoint {
    Endpoint {
        method,
        path,
        access,
        summary,
        query: Vec::new(),
        body: None,
        answer: Answer::Text("ok"),
        handler,
    }
}

impl Endpoint {
    fn query(mut self, query: &[Query]) -> Self {
        self.query = query.to_vec();
        self
    }

    fn json<T: JsonSchema>(mut self) -> Self {
        self.answer = Answer::Json(200, schema_of::<T>);
        self
    }

    fn answer(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }

    fn body<T: JsonSchema>(self) -> Self {
        self.body_schema(schema_of::<T>)
    }

    fn body_schema(mut self, schema: SchemaFn) -> Self {
        self.body = Some(schema);
        self
    }
}

const VIEWER: Access = Access::Token(Role::Viewer);

/// Every endpoint of the API.
pub fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let backtest = "/api/v1/backtests/{namespace}/{name}";
    vec![
        endpoint(M::GET, "/api/v1/backtests", VIEWER, "Backtests, newest first.", get(backtests::list))
            .query(RUN_LIST)
            .json::<Page<RunSummary>>(),
        endpoint(
            M::POST,
            "/api/v1/backtests",
            Access::Token(Role::Trader),
            "Create a backtest from a Backtest manifest: 201 created in the cluster (--cluster), \
             202 accepted to run in this server.",
            post(launch::create),
        )
        .body_schema(launch::manifest_schema)
        .answer(Answer::Json(202, schema_of::<Created>)),
        endpoint(
            M::GET,
            "/api/v1/backtests/compare",
            VIEWER,
            "2 to 8 backtests side by side, their equity curves aligned on time.",
            get(backtests::compare),
        )
        .query(&[
            required(q("ids", "string", "Comma-separated ids (`namespace/name`).", "research/bt-00,research/bt-01")),
            q("points", "integer", "Points per curve, 2 to 5000.", "100"),
        ])
        .json::<Comparison>(),
        endpoint(M::GET, backtest, VIEWER, "One backtest: spec, status and progress, results.", get(backtests::get))
            .json::<RunDetail>(),
        endpoint(
            M::GET,
            "/api/v1/backtests/{namespace}/{name}/results",
            VIEWER,
            "Every figure of a finished backtest (metrics, counters, timings).",
            get(backtests::results),
        )
        .answer(Answer::Object(200, "The engine's summary of the run.")),
        endpoint(
            M::GET,
            "/api/v1/backtests/{namespace}/{name}/equity",
            VIEWER,
            "The equity curve, downsampled on the server keeping each bucket's low and high.",
            get(backtests::equity),
        )
        .query(&[q("points", "integer", "Points, 2 to 10000.", "500")])
        .json::<Equity>(),
        endpoint(
            M::GET,
            "/api/v1/backtests/{namespace}/{name}/trades",
            VIEWER,
            "A backtest's trades.",
            get(backtests::trades),
        )
        .query(PAGE)
        .json::<Page<Trade>>(),
        endpoint(
            M::GET,
            "/api/v1/backtests/{namespace}/{name}/events",
            VIEWER,
            "A backtest's events, in time order.",
            get(backtests::events),
        )
        .query(&[TYPE, SOURCE, q("correlation_id", "string", "Only this chain.", ""), LIMIT, CURSOR])
        .json::<Page<Event>>(),
        endpoint(M::GET, "/api/v1/events", VIEWER, "Agent events, in time order.", get(events::list))
            .query(&[RUN, q("correlation_id", "string", "Only this chain.", ""), TYPE, SOURCE, LIMIT, CURSOR])
            .json::<Page<Event>>(),
        endpoint(
            M::GET,
            "/api/v1/chains/{correlation_id}",
            VIEWER,
            "One chain (signal → intent → order → fill) in causal order.",
            get(events::chain),
        )
        .json::<Vec<Event>>(),
        endpoint(M::GET, "/api/v1/sessions", VIEWER, "Trading sessions, newest first.", get(sessions::list))
            .query(RUN_LIST)
            .json::<Page<RunSummary>>(),
        endpoint(M::GET, "/api/v1/sessions/{namespace}/{name}", VIEWER, "One session.", get(sessions::get))
            .json::<RunDetail>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/portfolio",
            VIEWER,
            "Positions, balances and the last equity of a session.",
            get(sessions::portfolio),
        )
        .json::<Portfolio>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/positions",
            VIEWER,
            "A session's positions.",
            get(sessions::positions),
        )
        .json::<Vec<Position>>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/orders",
            VIEWER,
            "A session's orders.",
            get(sessions::orders),
        )
        .query(PAGE)
        .json::<Page<Order>>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/fills",
            VIEWER,
            "A session's fills.",
            get(sessions::fills),
        )
        .query(PAGE)
        .json::<Page<Fill>>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/blocks",
            VIEWER,
            "Trades the risk checks blocked, with their reasons.",
            get(sessions::blocks),
        )
        .query(&[q("reason", "string", "Only blocks for this reason.", "max_position")])
        .json::<Vec<Block>>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/risk",
            VIEWER,
            "The risk budget in use and its allocations.",
            get(sessions::risk),
        )
        .json::<Risk>(),
        endpoint(
            M::GET,
            "/api/v1/sessions/{namespace}/{name}/report",
            VIEWER,
            "A day of a session: trades, P&L, fills, fees, blocks by reason, risk used.",
            get(sessions::report),
        )
        .query(&[required(q("date", "string", "The day, YYYY-MM-DD (UTC).", "2023-11-14"))])
        .json::<DailyReport>(),
        endpoint(
            M::POST,
            "/api/v1/sessions/{namespace}/{name}/suspend",
            Access::Token(Role::Admin),
            "The kill switch: sets the TradingSession's spec.suspend through the API server (needs --cluster).",
            post(sessions::suspend),
        )
        .body::<SuspendRequest>()
        .json::<Suspended>(),
        endpoint(
            M::POST,
            "/api/v1/sessions/{namespace}/{name}/resume",
            Access::Token(Role::Admin),
            "A human resumes a halted or held session: sets the annotation kuant.dev/resume-at (default now); the operator clears the holds placed before it and the agent lifts the halts begun before it (needs --cluster).",
            post(sessions::resume),
        )
        .body::<ResumeRequest>()
        .json::<Resumed>(),
        endpoint(
            M::GET,
            "/api/v1/market/candles",
            VIEWER,
            "Candles of a symbol and timeframe in a time range.",
            get(market::candles),
        )
        .query(&[
            required(EXCHANGE),
            required(q("symbol", "string", "The symbol.", "BTCUSDT")),
            required(q("timeframe", "string", "Candle length.", "1h")),
            FROM,
            TO,
            LIMIT,
        ])
        .json::<Vec<Candle>>(),
        endpoint(M::GET, "/api/v1/market/ticks", VIEWER, "The latest tick of each market.", get(market::ticks))
            .query(&[required(EXCHANGE), q("symbol", "string", "Only this symbol.", "BTCUSDT")])
            .json::<Vec<Tick>>(),
        endpoint(M::GET, "/api/v1/market/latest", VIEWER, "The latest candle of each symbol.", get(market::latest))
            .query(&[required(EXCHANGE)])
            .json::<Vec<Candle>>(),
        endpoint(
            M::GET,
            "/api/v1/llm/usage",
            VIEWER,
            "LLM calls, tokens and cost by agent and model.",
            get(market::llm_usage),
        )
        .query(&[RUN, FROM, TO])
        .json::<Vec<Usage>>(),
        endpoint(M::GET, "/api/v1/ws/stats", VIEWER, "Counters of the live feeds.", get(live::stats))
            .json::<Stats>(),
        endpoint(
            M::GET,
            "/ws/live",
            Access::Socket(Role::Viewer),
            "WebSocket: fills, orders, positions, blocks, risk and backtest progress as they happen.",
            get(live::live),
        )
        .query(&[CHANNELS, RUN, SYMBOL, WS_CURSOR])
        .answer(Answer::Socket),
        endpoint(
            M::GET,
            "/ws/market",
            Access::Socket(Role::Viewer),
            "WebSocket: ticks and candles as they happen.",
            get(live::market),
        )
        .query(&[CHANNELS, RUN, SYMBOL, WS_CURSOR])
        .answer(Answer::Socket),
        endpoint(M::GET, "/openapi.json", Access::Public, "This document.", get(crate::openapi::serve))
            .answer(Answer::Object(200, "OpenAPI 3.1")),
        endpoint(M::GET, "/healthz", Access::Public, "Liveness.", get(|| async { "ok" })),
        endpoint(
            M::GET,
            "/readyz",
            Access::Public,
            "Readiness: the store answers and its schema is current (503 otherwise).",
            get(crate::ready),
        )
        .answer(Answer::Text("ready: store at migration N")),
        endpoint(
            M::GET,
            "/metrics",
            Access::Public,
            "Prometheus metrics: requests and latency by route, WebSocket connections.",
            get(crate::metrics_text),
        )
        .answer(Answer::Text("Prometheus text format")),
    ]
}
