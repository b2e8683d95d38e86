//! `Backtest`: a finite run of one strategy over historical or synthetic candles.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    ASSET_PATTERN, Amount, EXCHANGE_PATTERN, HTTP_URL_PATTERN, JobRunner, OBJECT_NAME_PATTERN,
    SYMBOL_PATTERN, StrategyRef, Timeframe,
};

/// Condition type: the run is pending or in progress.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the run finished and its results are in status.
pub const CONDITION_COMPLETE: &str = "Complete";
/// Condition type: the run failed; the message says why.
pub const CONDITION_FAILED: &str = "Failed";

/// A Backtest runs one strategy over a span of candles and reports progress and results in its
/// status. The operator runs it in a Job; `kuant backtest -f` runs the same manifest locally.
/// The spec is immutable: to run again with other settings, create a new Backtest.
// Printer columns repeat `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kuant.dev",
    version = "v1alpha1",
    kind = "Backtest",
    namespaced,
    status = "BacktestStatus",
    shortname = "bt",
    category = "kuant",
    derive = "PartialEq",
    doc = "A Backtest runs one strategy over a span of candles and reports progress and results in its status.",
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy.name"),
    printcolumn(name = "Symbols", type_ = "string", json_path = ".status.display.symbols"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress%", type_ = "number", json_path = ".status.progress.percent"),
    printcolumn(name = "Return%", type_ = "string", json_path = ".status.display.returnPct"),
    printcolumn(name = "Sharpe", type_ = "string", json_path = ".status.display.sharpe"),
    printcolumn(name = "MaxDD%", type_ = "string", json_path = ".status.display.maxDrawdownPct"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("Backtest spec is immutable: create a new Backtest to run with other settings"))]
#[serde(rename_all = "camelCase")]
pub struct BacktestSpec {
    /// The strategy to run and its parameters.
    pub strategy: StrategyRef,
    /// Exchange, symbols, timeframe and time span of the candles.
    pub market: MarketSpec,
    /// Where the candles come from.
    #[serde(default)]
    pub data: DataSpec,
    /// Starting capital.
    pub portfolio: PortfolioSpec,
    /// Fees, slippage and how orders fill.
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// Position sizing limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<BacktestRisk>,
    /// Image, resources, deadline and clean-up of the Job that runs the backtest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<JobRunner>,
}

/// Exchange, symbols, timeframe and time span of the candles a backtest runs over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.start) || !has(self.end) || self.start < self.end").message("market.start must be before market.end"))]
#[serde(rename_all = "camelCase")]
pub struct MarketSpec {
    /// Exchange whose symbol rules (lot size, tick, min notional) and candles apply, e.g. `binance`.
    #[serde(default = "default_exchange")]
    #[schemars(pattern(EXCHANGE_PATTERN))]
    pub exchange: String,
    /// Symbols to trade, as the exchange names them (e.g. `BTCUSDT`). Capital is split equally.
    #[schemars(length(min = 1, max = 20), inner(pattern(SYMBOL_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub symbols: Vec<String>,
    /// Candle length: 1m, 5m, 15m, 1h, 4h or 1d.
    #[serde(default)]
    pub timeframe: Timeframe,
    /// First candle to use (RFC 3339, inclusive). Absent: from the start of the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    /// Last candle to use (RFC 3339, exclusive). Absent: to the end of the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}

pub(crate) fn default_exchange() -> String {
    "binance".to_owned()
}

/// Where candles come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// Generated from a seed: reproducible, needs nothing outside.
    #[default]
    Synthetic,
    /// A CSV file (`timestamp_ms,open,high,low,close,volume` or Binance's kline layout).
    Csv,
    /// Downloaded from the exchange's public candle endpoint.
    Exchange,
}

/// The data a backtest reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.source != 'csv' || has(self.csv)").message("data.csv is required when data.source is csv"),
    validation = Rule::new("!has(self.csv) || self.source == 'csv'").message("data.csv is set but data.source is not csv"),
    validation = Rule::new("!has(self.exchange) || self.source == 'exchange'").message("data.exchange is set but data.source is not exchange"),
    validation = Rule::new("!has(self.synthetic) || self.source == 'synthetic'").message("data.synthetic is set but data.source is not synthetic"),
    validation = Rule::new("!has(self.volume) || self.source == 'csv'").message("data.volume is only used with csv data"),
    validation = Rule::new("!has(self.volume) || !has(self.csv) || self.csv.path.startsWith(self.volume.mountPath + '/')").message("data.csv.path must lie under data.volume.mountPath"),
)]
#[serde(rename_all = "camelCase")]
pub struct DataSpec {
    /// synthetic (default), csv or exchange.
    #[serde(default)]
    pub source: DataSource,
    /// The CSV file, when source is csv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvData>,
    /// Generator settings, when source is synthetic (defaults apply when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticData>,
    /// Download settings, when source is exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeData>,
    /// A volume mounted into the backtest pod that holds the CSV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DataVolume>,
}

/// A CSV file of candles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsvData {
    /// Path of the file inside the pod (under `volume.mountPath`), or on the local disk when run
    /// with `kuant backtest -f`.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// Settings of the synthetic candle generator: a seeded random walk with volatility regimes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticData {
    /// Random seed; the same seed gives the same candles on every machine.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of candles to generate.
    #[serde(default = "default_bars")]
    #[schemars(range(min = 2, max = 100_000_000))]
    pub bars: u64,
    /// Price of the first candle's open.
    #[serde(default = "default_start_price")]
    #[schemars(range(min = 0.01, max = 1e9))]
    pub start_price: f64,
    /// Expected return per year as a fraction (0.1 = +10 %/year; may be negative).
    #[serde(default)]
    #[schemars(range(min = -10.0, max = 10.0))]
    pub drift: f64,
    /// Annualised volatility as a fraction (0.6 = 60 %/year, typical of BTC).
    #[serde(default = "default_volatility")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub volatility: f64,
}

impl Default for SyntheticData {
    fn default() -> Self {
        Self {
            seed: default_seed(),
            bars: default_bars(),
            start_price: default_start_price(),
            drift: 0.0,
            volatility: default_volatility(),
        }
    }
}

fn default_seed() -> u64 {
    42
}
fn default_bars() -> u64 {
    10_000
}
fn default_start_price() -> f64 {
    30_000.0
}
fn default_volatility() -> f64 {
    0.6
}

/// Download candles from an exchange's public market-data API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeData {
    /// Exchange to download from, e.g. `binance`.
    #[serde(default = "default_exchange")]
    #[schemars(pattern(EXCHANGE_PATTERN))]
    pub name: String,
    /// Base URL of the REST API, for mirrors, testnets or the kuant exchange simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_URL_PATTERN), length(max = 2048))]
    pub base_url: Option<String>,
}

/// A volume holding CSV data, mounted read-only into the backtest pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.claimName) != has(self.configMap)").message("data.volume needs exactly one of claimName or configMap"))]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// Name of a PersistentVolumeClaim in the Backtest's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(max = 253))]
    pub claim_name: Option<String>,
    /// Name of a ConfigMap in the Backtest's namespace (small files only: 1 MiB in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(max = 253))]
    pub config_map: Option<String>,
    /// Where the volume is mounted in the pod.
    #[serde(default = "default_mount_path")]
    #[schemars(pattern(r"^/[^\s]*[^/\s]$"), length(max = 1024))]
    pub mount_path: String,
}

fn default_mount_path() -> String {
    "/data".to_owned()
}

/// Starting capital.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioSpec {
    /// Cash at the start, in the quote asset, as a decimal string (e.g. "10000").
    #[x_kube(validation = Rule::new("double(self) > 0.0").message("portfolio.initialCash must be greater than 0"))]
    pub initial_cash: Amount,
    /// Asset the cash is held in and prices are quoted in, e.g. USDT.
    #[serde(default = "default_quote_asset")]
    #[schemars(pattern(ASSET_PATTERN))]
    pub quote_asset: String,
}

pub(crate) fn default_quote_asset() -> String {
    "USDT".to_owned()
}

/// How simulated orders fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FillModel {
    /// Decide on a candle's close, fill at the next candle's open (canonical; no look-ahead).
    #[default]
    NextOpen,
    /// Fill at the same candle's close (optimistic; for comparison with other tools).
    Close,
}

/// Fees, slippage and fill model of the simulated exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSpec {
    /// Fee per fill in basis points of the notional (10 = 0.1 %), charged in the quote asset.
    #[serde(default = "default_fee_bps")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub fee_bps: f64,
    /// Price slippage per fill in basis points, against the trader.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub slippage_bps: f64,
    /// next-open (default) or close.
    #[serde(default)]
    pub fill: FillModel,
}

impl Default for ExecutionSpec {
    fn default() -> Self {
        Self { fee_bps: default_fee_bps(), slippage_bps: 0.0, fill: FillModel::NextOpen }
    }
}

fn default_fee_bps() -> f64 {
    10.0
}

/// Position sizing limits of a backtest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestRisk {
    /// Largest position per symbol as a percentage of equity at entry (100 = all of it).
    #[serde(default = "default_max_position_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    #[x_kube(validation = Rule::new("self > 0.0").message("risk.maxPositionPct must be greater than 0"))]
    pub max_position_pct: f64,
}

impl Default for BacktestRisk {
    fn default() -> Self {
        Self { max_position_pct: default_max_position_pct() }
    }
}

fn default_max_position_pct() -> f64 {
    100.0
}

/// Lifecycle phase of a Backtest, for humans; conditions are the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BacktestPhase {
    /// Accepted; the Job is not running yet.
    #[default]
    Pending,
    /// The Job is running.
    Running,
    /// Finished; results are in status.
    Succeeded,
    /// Failed; the `Failed` condition says why.
    Failed,
}

/// Observed state of a Backtest, written by the operator (and progress by the agent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BacktestPhase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Progressing, Complete and Failed conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Candles processed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished (succeeded or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Name of the Job that runs the backtest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Performance figures of the finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<BacktestResults>,
    /// A human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The figures `kubectl get` prints: rounded, symbols as text (`results` stays exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<BacktestDisplay>,
}

/// Figures for people, as `kubectl get` prints them: percentages and ratios rounded to two
/// decimals, symbols as text. The exact figures are in `results`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestDisplay {
    /// The symbols, comma-separated.
    pub symbols: String,
    /// Total return in percent, two decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_pct: Option<String>,
    /// Sharpe ratio, two decimals (`-` when it is undefined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpe: Option<String>,
    /// Maximum drawdown in percent, two decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drawdown_pct: Option<String>,
}

impl BacktestDisplay {
    /// The display of a run over `symbols`, with its `results` once it has them.
    pub fn of(symbols: &[String], results: Option<&BacktestResults>) -> Self {
        let round = |v: f64| format!("{v:.2}");
        Self {
            symbols: symbols.join(","),
            return_pct: results.map(|r| round(r.total_return_pct)),
            sharpe: results.map(|r| r.sharpe.map_or_else(|| "-".to_owned(), round)),
            max_drawdown_pct: results.map(|r| round(r.max_drawdown_pct)),
        }
    }
}

/// Progress of a running backtest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Candles simulated so far.
    pub candles_processed: u64,
    /// Candles in the run.
    pub candles_total: u64,
    /// candlesProcessed / candlesTotal × 100.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
}

/// Performance figures of a finished backtest. Percentages are in percent (12.5 = 12.5 %).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BacktestResults {
    /// Cash plus positions at the last close, in the quote asset.
    pub final_equity: Amount,
    /// (final equity / initial cash − 1) × 100.
    pub total_return_pct: f64,
    /// Compound annual growth rate over the span of the data, in percent.
    pub cagr_pct: f64,
    /// Annualised Sharpe ratio of per-candle returns (risk-free rate 0); absent when undefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpe: Option<f64>,
    /// Annualised Sortino ratio of per-candle returns; absent when undefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sortino: Option<f64>,
    /// Largest peak-to-trough fall of equity, in percent (positive number).
    pub max_drawdown_pct: f64,
    /// Share of closed trades with positive P&L, in percent.
    pub win_rate_pct: f64,
    /// Gross profit / gross loss of closed trades; absent when there was no loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profit_factor: Option<f64>,
    /// Number of trades (entries).
    pub trades: u64,
    /// Share of candles with an open position, in percent.
    pub exposure_pct: f64,
}

/// What `kuant agent backtest` writes to its container's termination message (JSON, well under
/// the kubelet's 4 KiB limit), and the operator copies into the Backtest's status: the results of
/// a finished run, or why it could not run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// Results of a finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<BacktestResults>,
    /// Candles simulated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candles: Option<u64>,
    /// Why the run failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something that went wrong without failing the run (its results could not be saved to
    /// the store, say), in one line: the operator records it as a Warning Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_rounds_for_people_and_names_the_symbols_as_text() {
        let results = BacktestResults {
            total_return_pct: -71.73516642525,
            sharpe: Some(-0.902244488441548),
            max_drawdown_pct: 73.84392976790906,
            ..BacktestResults::default()
        };
        let symbols = ["BTCUSDT".to_owned(), "ETHUSDT".to_owned()];
        let shown = BacktestDisplay::of(&symbols, Some(&results));
        assert_eq!(shown.symbols, "BTCUSDT,ETHUSDT");
        assert_eq!(shown.return_pct.as_deref(), Some("-71.74"));
        assert_eq!(shown.sharpe.as_deref(), Some("-0.90"));
        assert_eq!(shown.max_drawdown_pct.as_deref(), Some("73.84"));
        let undefined = BacktestResults { sharpe: None, ..results };
        assert_eq!(BacktestDisplay::of(&symbols, Some(&undefined)).sharpe.as_deref(), Some("-"));
        let running = BacktestDisplay::of(&symbols[..1], None);
        assert_eq!((running.symbols.as_str(), running.return_pct), ("BTCUSDT", None));
    }
}
