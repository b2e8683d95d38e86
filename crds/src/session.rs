//! `TradingSession`: a long-running paper or live trading session.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backtest::{default_exchange, default_quote_asset};
use crate::common::{
    ASSET_PATTERN, Amount, CredentialsSecretRef, EXCHANGE_PATTERN, HTTP_URL_PATTERN, Runner, SYMBOL_PATTERN,
    SecretKeyRef, SignedAmount, StrategyName, StrategyParams, Timeframe, WS_URL_PATTERN,
};

/// Condition type: the session is up and doing what its spec asks (the summary condition).
pub const CONDITION_READY: &str = "Ready";
/// Condition type: market data is fresh (not stale beyond `marketData.staleAfterSeconds`).
pub const CONDITION_MARKET_DATA_HEALTHY: &str = "MarketDataHealthy";
/// Condition type: the session may place orders now.
pub const CONDITION_TRADING: &str = "Trading";
/// Condition type: trading stopped by a risk limit, drift or the kill switch; the reason says which.
pub const CONDITION_HALTED: &str = "Halted";
/// Condition type: running, but impaired (e.g. on REST fallback, judge unavailable).
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Annotation a human sets to resume a held session: an RFC 3339 time; the operator clears every
/// hold placed at or before it (see [`Hold`]). GitOps-safe: it is not in the spec, and setting it
/// again with a later time clears later holds.
pub const ANNOTATION_RESUME_AT: &str = "kuant.dev/resume-at";
/// Finalizer that keeps a deleted TradingSession until its agent has cancelled its open orders.
pub const FINALIZER: &str = "kuant.dev/cancel-open-orders";

/// A TradingSession runs strategies against an exchange, on paper or live, until deleted or
/// suspended. The operator runs its agent in a StatefulSet of one replica: never two traders for
/// one session.
// Printer columns repeat `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kuant.dev",
    version = "v1alpha1",
    kind = "TradingSession",
    namespaced,
    status = "TradingSessionStatus",
    shortname = "ts",
    category = "kuant",
    derive = "PartialEq",
    doc = "A TradingSession runs strategies against an exchange, on paper or live, until deleted or suspended.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Symbols", type_ = "string", json_path = ".spec.symbols", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Equity", type_ = "string", json_path = ".status.portfolio.equity"),
    printcolumn(name = "PnL-Today", type_ = "string", json_path = ".status.portfolio.pnlToday"),
    printcolumn(
        name = "Market-Data",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"MarketDataHealthy\")].reason"
    ),
    printcolumn(name = "Open-Orders", type_ = "integer", json_path = ".status.openOrders", priority = 1),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend", priority = 1),
    printcolumn(name = "Heartbeat", type_ = "date", json_path = ".status.lastHeartbeat", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.mode != 'live' || self.liveTradingAcknowledged").message("live trading needs spec.liveTradingAcknowledged: true (real orders with real money)").field_path(".liveTradingAcknowledged"),
    validation = Rule::new("self.mode != 'live' || has(self.exchange.credentialsSecretRef)").message("live trading needs spec.exchange.credentialsSecretRef naming the Secret with the exchange API key").field_path(".exchange"),
    validation = Rule::new("self.strategies.map(s, s.allocationPct).sum() <= 100.0").message("strategy allocations (allocationPct) must sum to at most 100").field_path(".strategies"),
)]
#[serde(rename_all = "camelCase")]
pub struct TradingSessionSpec {
    /// paper (default: simulated fills on live data) or live (real orders; needs
    /// liveTradingAcknowledged and credentials).
    #[serde(default)]
    pub mode: TradingMode,
    /// Must be true for mode live: the owner acknowledges that real orders will be placed.
    #[serde(default)]
    pub live_trading_acknowledged: bool,
    /// The exchange to trade on.
    pub exchange: ExchangeSpec,
    /// Symbols to trade, as the exchange names them (e.g. `BTCUSDT`).
    #[schemars(length(min = 1, max = 20), inner(pattern(SYMBOL_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub symbols: Vec<String>,
    /// Candle length the strategies decide on.
    #[serde(default)]
    pub timeframe: Timeframe,
    /// Strategies and the share of the budget each may use.
    #[schemars(length(min = 1, max = 16))]
    pub strategies: Vec<SessionStrategy>,
    /// Capital the session may use.
    pub budget: Budget,
    /// Limits enforced before any order leaves.
    #[serde(default)]
    pub risk: SessionRisk,
    /// Who approves trade plans before they become orders.
    #[serde(default)]
    pub judge: JudgeSpec,
    /// Market-data health: when data counts as stale and what to do then.
    #[serde(default)]
    pub market_data: MarketDataSpec,
    /// Kill switch: true cancels open orders and places no new ones; market data keeps flowing.
    #[serde(default)]
    pub suspend: bool,
    /// Image and resources of the session's agent pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
}

impl TradingSession {
    /// The annotation [`ANNOTATION_RESUME_AT`]: `None` without it, its text as the error when it
    /// is not an RFC 3339 time.
    pub fn resume_at(&self) -> Option<Result<k8s_openapi::jiff::Timestamp, &str>> {
        let text = self.metadata.annotations.as_ref()?.get(ANNOTATION_RESUME_AT)?;
        Some(text.parse().map_err(|_| text.as_str()))
    }
}

/// Paper or live trading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TradingMode {
    /// Simulated fills on live market data; no real orders.
    #[default]
    Paper,
    /// Real orders on the exchange.
    Live,
}

/// The exchange a session trades on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// Exchange adapter: `binance`, or `simulator` for the kuant exchange simulator.
    #[serde(default = "default_exchange")]
    #[schemars(pattern(EXCHANGE_PATTERN))]
    pub name: String,
    /// Secret with the API key and secret; required for live trading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// REST base URL override (testnet, simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_URL_PATTERN), length(max = 2048))]
    pub base_url: Option<String>,
    /// WebSocket URL override (testnet, simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WS_URL_PATTERN), length(max = 2048))]
    pub ws_url: Option<String>,
}

/// A strategy of a session and its share of the budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStrategy {
    /// Built-in strategy: sma-crossover, ema-crossover, rsi-mean-reversion or donchian-breakout.
    pub name: StrategyName,
    /// Numeric parameters of the strategy; absent ones take defaults.
    #[serde(default, skip_serializing_if = "StrategyParams::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub params: StrategyParams,
    /// Percentage of the budget this strategy may use; all allocations sum to at most 100.
    #[schemars(range(min = 0.0, max = 100.0))]
    #[x_kube(validation = Rule::new("self > 0.0").message("allocationPct must be greater than 0"))]
    pub allocation_pct: f64,
}

/// Capital a session may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Asset the budget is held in, e.g. USDT.
    #[serde(default = "default_quote_asset")]
    #[schemars(pattern(ASSET_PATTERN))]
    pub quote_asset: String,
    /// Amount of the quote asset, as a decimal string (e.g. "1000").
    #[x_kube(validation = Rule::new("double(self) > 0.0").message("budget.amount must be greater than 0"))]
    pub amount: Amount,
}

/// Risk limits of a session, enforced before any order leaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRisk {
    /// Largest position per symbol as a percentage of equity.
    #[serde(default = "default_max_position_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_position_pct: f64,
    /// Largest notional of one order in the quote asset (decimal string); absent: no extra cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_order_notional: Option<Amount>,
    /// Loss today (UTC) as a percentage of the day's starting equity that halts trading.
    #[serde(default = "default_max_daily_loss_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_daily_loss_pct: f64,
    /// Fall from the equity peak, in percent, that halts trading.
    #[serde(default = "default_max_drawdown_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_drawdown_pct: f64,
    /// Most orders open at once.
    #[serde(default = "default_max_open_orders")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_open_orders: u32,
    /// Most orders submitted per minute (a throttle against runaway loops).
    #[serde(default = "default_max_orders_per_minute")]
    #[schemars(range(min = 1, max = 6000))]
    pub max_orders_per_minute: u32,
    /// Protective stop, in percent below the entry price: after an entry fills, a stop-loss
    /// order for the position rests on the exchange (Binance's STOP_LOSS_LIMIT), so the position
    /// stays protected while the agent is down; absent: no stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 100.0").message("stopLossPct must be greater than 0 and less than 100"))]
    pub stop_loss_pct: Option<f64>,
}

impl Default for SessionRisk {
    fn default() -> Self {
        Self {
            max_position_pct: default_max_position_pct(),
            max_order_notional: None,
            max_daily_loss_pct: default_max_daily_loss_pct(),
            max_drawdown_pct: default_max_drawdown_pct(),
            max_open_orders: default_max_open_orders(),
            max_orders_per_minute: default_max_orders_per_minute(),
            stop_loss_pct: None,
        }
    }
}

fn default_max_position_pct() -> f64 {
    25.0
}
fn default_max_daily_loss_pct() -> f64 {
    5.0
}
fn default_max_drawdown_pct() -> f64 {
    20.0
}
fn default_max_open_orders() -> u32 {
    10
}
fn default_max_orders_per_minute() -> u32 {
    30
}

/// Who judges trade plans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMode {
    /// Deterministic rules (default).
    #[default]
    Rules,
    /// A language model behind an OpenAI-compatible endpoint, within a daily cost cap.
    Llm,
}

/// The judge that approves or vetoes trade plans.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.mode != 'llm' || has(self.llm)").message("judge.llm is required when judge.mode is llm"))]
#[serde(rename_all = "camelCase")]
pub struct JudgeSpec {
    /// rules (default) or llm.
    #[serde(default)]
    pub mode: JudgeMode,
    /// Language-model settings, when mode is llm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmJudge>,
}

/// A language-model judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmJudge {
    /// Base URL of an OpenAI-compatible chat completions API.
    #[schemars(pattern(HTTP_URL_PATTERN), length(max = 2048))]
    pub endpoint: String,
    /// Model name.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Secret key holding the API key; absent for endpoints without auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Spend cap per UTC day in US dollars; past it the rules judge decides and Degraded is set.
    #[serde(default = "default_max_daily_cost_usd")]
    #[schemars(range(min = 0.0, max = 100_000.0))]
    pub max_daily_cost_usd: f64,
    /// Seconds to wait for a verdict; on timeout the plan is vetoed.
    #[serde(default = "default_llm_timeout_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
}

fn default_max_daily_cost_usd() -> f64 {
    5.0
}
fn default_llm_timeout_seconds() -> u32 {
    20
}

/// Market-data health settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataSpec {
    /// Seconds without a market-data message after which data is stale: no decision is made on
    /// stale data and MarketDataHealthy turns False.
    #[serde(default = "default_stale_after_seconds")]
    #[schemars(range(min = 1, max = 86_400))]
    pub stale_after_seconds: u32,
    /// Poll the REST API while the stream is silent (and keep reconnecting the stream).
    #[serde(default = "default_true")]
    pub rest_fallback: bool,
    /// Seconds between REST polls while on fallback.
    #[serde(default = "default_rest_poll_seconds")]
    #[schemars(range(min = 1, max = 3_600))]
    pub rest_poll_seconds: u32,
}

impl Default for MarketDataSpec {
    fn default() -> Self {
        Self {
            stale_after_seconds: default_stale_after_seconds(),
            rest_fallback: true,
            rest_poll_seconds: default_rest_poll_seconds(),
        }
    }
}

fn default_stale_after_seconds() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn default_rest_poll_seconds() -> u32 {
    5
}

/// Lifecycle phase of a TradingSession, for humans; conditions are the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SessionPhase {
    /// Accepted; nothing runs yet.
    #[default]
    Pending,
    /// The agent pod is starting or catching up with market data.
    Starting,
    /// Trading (paper or live).
    Trading,
    /// The kill switch is on: no orders.
    Suspended,
    /// A risk limit or drift stopped trading; the Halted condition says which.
    Halted,
    /// Running but impaired; the Degraded condition says how.
    Degraded,
    /// The agent cannot run; the Ready condition says why.
    Failed,
}

/// Observed state of a TradingSession.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradingSessionStatus {
    /// Pending, Starting, Trading, Suspended, Halted, Degraded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, MarketDataHealthy, Trading, Halted and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Last time the agent reported in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Equity, cash and positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portfolio: Option<PortfolioStatus>,
    /// Event counters since the session started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// A human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Orders open on the exchange (protective stops included), as the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_orders: Option<u32>,
    /// Requests from outside the agent to stop trading (e.g. a reconciliation's drift), one per
    /// source; the agent honours them within 2 s and shows them in the Halted condition. Written
    /// by the operator only; cleared by the annotation `kuant.dev/resume-at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["source".into()]))]
    pub holds: Vec<Hold>,
}

/// A request from outside the agent to stop trading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// Who asks, e.g. `reconciliation/binance-main`.
    #[schemars(length(min = 1, max = 253))]
    pub source: String,
    /// Why, in CamelCase, e.g. `BalanceDrift`.
    #[schemars(length(min = 1, max = 128))]
    pub reason: String,
    /// What a human should know.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When the hold was placed.
    pub since: Time,
}

/// Equity, cash and positions of a session, in the budget's quote asset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioStatus {
    /// Cash plus positions at market.
    pub equity: Amount,
    /// Free cash.
    pub cash: Amount,
    /// Realised plus unrealised P&L since 00:00 UTC.
    pub pnl_today: SignedAmount,
    /// Open positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["symbol".into()]))]
    pub positions: Vec<Position>,
}

/// An open position.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// Symbol held.
    #[schemars(pattern(SYMBOL_PATTERN))]
    pub symbol: String,
    /// Quantity of the base asset.
    pub quantity: Amount,
    /// Average entry price.
    pub average_price: Amount,
    /// P&L of the position at the last price.
    pub unrealized_pnl: SignedAmount,
}

/// Event counters of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Signals emitted by strategies.
    pub signals: u64,
    /// Orders submitted.
    pub orders: u64,
    /// Fills received.
    pub fills: u64,
    /// Trades blocked by risk or the judge.
    pub blocked: u64,
}
