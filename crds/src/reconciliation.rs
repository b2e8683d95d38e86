//! `Reconciliation`: compares a session's ledger with the balances the exchange reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ASSET_PATTERN, Amount, OBJECT_NAME_PATTERN, SignedAmount};

/// Condition type: the last run found every asset within the threshold.
pub const CONDITION_IN_SYNC: &str = "InSync";
/// Condition type: the last run found drift beyond the threshold; the message names the assets.
pub const CONDITION_DRIFTED: &str = "Drifted";
/// Condition type: the reconciliation is set up and runs as scheduled (the summary condition).
pub const CONDITION_READY: &str = "Ready";

/// Standard cron (5 fields) or a macro such as `@hourly`; the operator checks the fields.
pub const SCHEDULE_PATTERN: &str =
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$";

/// A Reconciliation compares the ledger of a TradingSession with the balances its exchange
/// account reports, once or on a schedule, and alerts or halts the session on drift.
// Printer columns repeat `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kuant.dev",
    version = "v1alpha1",
    kind = "Reconciliation",
    namespaced,
    status = "ReconciliationStatus",
    shortname = "recon",
    category = "kuant",
    derive = "PartialEq",
    doc = "A Reconciliation compares a TradingSession's ledger with the balances its exchange account reports.",
    printcolumn(name = "Session", type_ = "string", json_path = ".spec.sessionRef.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Result", type_ = "string", json_path = ".status.lastRun.result"),
    printcolumn(name = "Last-Run", type_ = "date", json_path = ".status.lastRun.completionTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationSpec {
    /// The TradingSession (same namespace) whose ledger and exchange account are compared.
    pub session_ref: SessionRef,
    /// Assets to compare, e.g. [BTC, USDT]; empty: every asset the ledger or the account holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(pattern(ASSET_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub assets: Vec<String>,
    /// How much difference is tolerated before an asset counts as drifted.
    #[serde(default)]
    pub threshold: Threshold,
    /// When to run: standard cron (`0 * * * *`) or a macro (`@hourly`). Absent: run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SCHEDULE_PATTERN), length(max = 128))]
    pub schedule: Option<String>,
    /// What to do on drift: alert (condition, Event, metric) or haltSession (also halt the session).
    #[serde(default)]
    pub on_drift: OnDrift,
    /// Pause scheduled runs.
    #[serde(default)]
    pub suspend: bool,
}

/// Reference to a TradingSession in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    /// Name of the TradingSession.
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(min = 1, max = 253))]
    pub name: String,
}

/// Drift tolerance. An asset is within the threshold while its drift is at most `absolute` or at
/// most `relativePct` percent of the exchange balance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// Largest tolerated absolute difference, in units of each asset (decimal string).
    #[serde(default)]
    pub absolute: Amount,
    /// Largest tolerated difference as a percentage of the exchange balance.
    #[serde(default = "default_relative_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub relative_pct: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Self { absolute: Amount::default(), relative_pct: default_relative_pct() }
    }
}

fn default_relative_pct() -> f64 {
    0.1
}

/// What a Reconciliation does when it finds drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnDrift {
    /// Set Drifted, emit an Event and a metric.
    #[default]
    Alert,
    /// Also halt the session (its Halted condition names the drift).
    HaltSession,
}

/// Lifecycle phase of a Reconciliation, for humans; conditions are the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReconciliationPhase {
    /// No run yet.
    #[default]
    Pending,
    /// A run is in progress.
    Running,
    /// The last run found no drift.
    InSync,
    /// The last run found drift.
    Drifted,
    /// The last run could not compare (e.g. the exchange did not answer).
    Failed,
    /// Scheduled runs are paused.
    Suspended,
}

/// Outcome of one reconciliation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunResult {
    /// Every asset within the threshold.
    InSync,
    /// At least one asset beyond the threshold.
    Drifted,
    /// The run could not compare.
    Failed,
}

/// Observed state of a Reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationStatus {
    /// Pending, Running, InSync, Drifted, Failed or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReconciliationPhase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// InSync, Drifted and Ready conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Per-asset comparison of the most recent run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["asset".into()]))]
    pub assets: Vec<AssetDrift>,
    /// The last 10 runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<RunSummary>,
    /// A human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One reconciliation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// When the run started.
    pub start_time: Time,
    /// When the run finished; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// InSync, Drifted or Failed; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    /// Number of assets beyond the threshold.
    #[serde(default)]
    pub drifted_assets: u32,
    /// Why a run failed, or which assets drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Ledger against exchange for one asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetDrift {
    /// Asset ticker.
    #[schemars(pattern(ASSET_PATTERN))]
    pub asset: String,
    /// Balance according to kuant's ledger.
    pub ledger: Amount,
    /// Balance according to the exchange.
    pub exchange: Amount,
    /// exchange − ledger.
    pub drift: SignedAmount,
    /// drift as a percentage of the exchange balance (0 when both are 0).
    pub drift_pct: f64,
    /// Whether the drift is within the threshold.
    pub within_threshold: bool,
}
