//! Rust types of kuant's custom resources, group `kuant.dev`, version `v1alpha1`:
//! [`Backtest`], [`TradingSession`] and [`Reconciliation`].
//!
//! The types are the source of truth: the CRD YAML under `charts/kuant/crds/` is generated from
//! them by `kuant crd` (a test fails when the committed copy drifts), and
//! [`manifest::parse`] checks a manifest locally with the same schema and CEL rules the API
//! server applies, so `kuant backtest -f` and `kubectl apply` refuse the same mistakes with the
//! same messages.
//!
//! Naming follows the issue that introduced the kinds; where a field has a unit it is in the name
//! (`feeBps`, `maxPositionPct`, `staleAfterSeconds`), and money is a decimal string ([`Amount`]).

pub mod backtest;
pub mod common;
pub mod manifest;
pub mod reconciliation;
pub mod schema_check;
pub mod session;

pub use backtest::{Backtest, BacktestSpec, BacktestStatus};
pub use common::{Amount, SignedAmount, StrategyName, Timeframe};
pub use reconciliation::{Reconciliation, ReconciliationSpec, ReconciliationStatus};
pub use session::{TradingSession, TradingSessionSpec, TradingSessionStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every kuant kind.
pub const GROUP: &str = "kuant.dev";
/// API version of every kuant kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kuant kind.
pub const API_VERSION: &str = "kuant.dev/v1alpha1";

/// The three CustomResourceDefinitions, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Backtest::crd(), TradingSession::crd(), Reconciliation::crd()]
}

/// The CRDs as one multi-document YAML stream, as `kuant crd` prints it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
