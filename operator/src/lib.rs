//! kuant's controllers. Each reconcile is a pipeline (see the design notes in the repository):
//! read what exists → validate (pure) → build the desired children (pure) → apply them →
//! compute the status from what was observed (pure) → write the status. The pure stages live in
//! modules of their own with exhaustive unit tests; only the controller modules talk to the API
//! server.

pub mod backtest;
pub mod conditions;
pub mod metrics;
pub mod names;
pub mod pod;
pub mod reconciliation;
pub mod run;
pub mod session;

/// Field manager of everything the operator applies, objects and status alike.
pub const FIELD_MANAGER: &str = "kuant-operator";
/// Field manager of what an agent pod writes (a Backtest's progress).
pub const AGENT_FIELD_MANAGER: &str = "kuant-agent";
