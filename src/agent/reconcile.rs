//! `kuant agent reconcile`: one run of a Reconciliation, in the pod the operator starts for it
//! (a Job, or each run of its CronJob).
//!
//! - **What to compare**: the Reconciliation in `KUANT_RECONCILIATION` and its TradingSession in
//!   `KUANT_SESSION` (both as JSON, with their metadata); a live session's key as the files
//!   `apiKey` and `apiSecret` of `KUANT_CREDENTIALS_DIR` (a Secret volume); the ledger in the store
//!   at `KUANT_DATABASE_URL`, where the run is recorded too.
//! - **The outcome** goes into the container's termination message (`KUANT_TERMINATION_LOG`,
//!   default `/dev/termination-log`): a JSON summary the operator copies into the
//!   Reconciliation's status — the result, each asset's figures, the trades that explain the
//!   drift, or the reason it could not compare.
//!
//! Exit codes as `kuant reconcile`: 0 in sync, 4 drifted, 1 could not compare, 2 bad input.

use std::process::ExitCode;

use kuant_crds::{Reconciliation, TradingSession};
use kuant_runtime::reconcile::Outcome;
use serde::Serialize;

use crate::cli::reconcile::{EXIT_DRIFTED, once};
use crate::cli::{EXIT_BAD_INPUT, EXIT_INTERNAL};

pub use kuant_operator::reconciliation::job::ENV_RECONCILIATION;

use super::backtest::{TERMINATION_MESSAGE_LIMIT as LIMIT, termination_log};

/// What the operator reads back.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// The session's run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The outcome, when the run compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why it could not compare.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the Reconciliation handed over in the environment; see the module docs.
pub fn run() -> ExitCode {
    let path = termination_log();
    let (code, report) = match execute() {
        Ok((session, outcome)) => {
            let code = if outcome.drifted() { ExitCode::from(EXIT_DRIFTED) } else { ExitCode::SUCCESS };
            (code, ReconcileReport { session: Some(session), outcome: Some(outcome), error: None })
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            (ExitCode::from(code), ReconcileReport { error: Some(message), ..ReconcileReport::default() })
        }
    };
    if let Err(e) = std::fs::write(&path, message(report)) {
        eprintln!("error: cannot write the report to {}: {e}", path.display());
        return ExitCode::from(EXIT_INTERNAL);
    }
    code
}

/// The report as JSON within the kubelet's 4 KiB: unexplained trades beyond what fits are
/// dropped (the store keeps them all), then assets, and an over-long error is cut.
fn message(mut report: ReconcileReport) -> String {
    loop {
        let text = serde_json::to_string(&report)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the report: {e}\"}}"));
        if text.len() <= LIMIT {
            return text;
        }
        if let Some(outcome) = report.outcome.as_mut() {
            if outcome.unexplained.pop().is_some() || outcome.assets.pop().is_some() {
                continue;
            }
            outcome.message.truncate(200);
        }
        if let Some(error) = report.error.as_mut() {
            let mut end = error.len().saturating_sub(64).min(LIMIT / 2);
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
    }
}

fn execute() -> Result<(String, Outcome), (u8, String)> {
    let read = |name: &str| {
        std::env::var(name).map_err(|_| {
            (
                EXIT_BAD_INPUT,
                format!("{name} is not set: this command runs in a pod made by `kuant operator`"),
            )
        })
    };
    let recon = kuant_crds::manifest::parse::<Reconciliation>(&read(ENV_RECONCILIATION)?, ENV_RECONCILIATION)
        .map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
    let session = kuant_crds::manifest::parse::<TradingSession>(
        &read(super::session::ENV_SESSION)?,
        super::session::ENV_SESSION,
    )
    .map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
    let credentials = match std::env::var_os(super::session::ENV_CREDENTIALS_DIR) {
        Some(dir) if !dir.is_empty() => Some(
            super::session::read_credentials(std::path::Path::new(&dir)).map_err(|e| (EXIT_BAD_INPUT, e))?,
        ),
        _ => None,
    };
    let url = std::env::var("KUANT_DATABASE_URL").ok().filter(|u| !u.trim().is_empty()).ok_or((
        EXIT_BAD_INPUT,
        "KUANT_DATABASE_URL is not set: a reconciliation reads the session's ledger from the store"
            .to_owned(),
    ))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| (EXIT_INTERNAL, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(once(&recon, &session, credentials, &url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_report_is_cut_to_the_kubelets_limit() {
        let report = ReconcileReport { error: Some("é".repeat(5000)), ..ReconcileReport::default() };
        let text = message(report);
        assert!(text.len() <= LIMIT && text.contains("error"), "{}", text.len());
        let row = kuant_runtime::reconcile::AssetRow {
            asset: "BTC".into(),
            ledger: 1.into(),
            exchange: 2.into(),
            drift: 1.into(),
            drift_pct: 50.0,
            within_threshold: false,
        };
        let outcome = kuant_runtime::reconcile::outcome(vec![row; 200], Vec::new());
        let text =
            message(ReconcileReport { session: Some("a/b".into()), outcome: Some(outcome), error: None });
        let back: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert!(text.len() <= LIMIT && back["outcome"]["result"] == "Drifted", "{}", text.len());
    }
}
