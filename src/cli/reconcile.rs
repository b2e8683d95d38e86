//! `kuant reconcile -f RECONCILIATION --session SESSION_FILE`: a session's ledger against its
//! exchange account, once, on this machine (the operator's `kuant agent reconcile` runs the same
//! comparison in a pod). See `kuant_runtime::reconcile`.
//!
//! Exit codes: 0 in sync, 4 drifted beyond the threshold, 1 the run could not compare (the
//! exchange or the store did not answer, the session has no ledger), 2 bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use kuant_crds::session::TradingMode;
use kuant_crds::{Reconciliation, TradingSession};
use kuant_exchanges::BinanceExchange;
use kuant_exchanges::binance::Credentials;
use kuant_runtime::reconcile::{self, Account, Outcome, Request, Threshold};
use kuant_store::Store;

use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

/// Exit code of a run that found drift beyond the threshold.
pub const EXIT_DRIFTED: u8 = 4;

/// The flags of `kuant reconcile`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kuant reconcile -f examples/reconciliations/hourly.yaml --session examples/sessions/paper-btc.yaml\n  \
    kuant reconcile -f recon.yaml --session live.yaml --credentials keys.yaml -o json\n\n\
    Exit codes: 0 in sync, 4 drifted, 1 could not compare, 2 bad input.")]
pub struct ReconcileArgs {
    /// The Reconciliation manifest (its schedule is ignored: this runs once).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The TradingSession manifest the Reconciliation names (its exchange and symbols).
    #[arg(long, value_name = "SESSION_FILE")]
    pub session: PathBuf,
    /// A live session's exchange key: YAML with apiKey and apiSecret (as `kuant session`).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// The store holding the session's ledger (default: `KUANT_DATABASE_URL`, else the local
    /// store).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// `table` (default) or `json`.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// Runs `kuant reconcile`.
pub fn run(args: &ReconcileArgs) -> ExitCode {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let (recon, session) = match (read(&args.file), read(&args.session)) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_BAD_INPUT, e),
    };
    let recon: Reconciliation = match kuant_crds::manifest::parse(&recon, &args.file.display().to_string()) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let session: TradingSession =
        match kuant_crds::manifest::parse(&session, &args.session.display().to_string()) {
            Ok(s) => s,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        };
    let name = session.metadata.name.clone().unwrap_or_default();
    if recon.spec.session_ref.name != name {
        return fail(
            EXIT_BAD_INPUT,
            format!(
                "{} reconciles session {:?}, but {} holds session {name:?}",
                args.file.display(),
                recon.spec.session_ref.name,
                args.session.display()
            ),
        );
    }
    let credentials = match super::session::credentials_flag(args.credentials.as_deref(), session.spec.mode) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let url = match super::store::location(args.store.as_deref()) {
        Ok(u) => u,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(EXIT_INTERNAL, format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(once(&recon, &session, credentials, &url)) {
        Ok((run_id, outcome)) => {
            print(&outcome, &run_id, &args.output);
            if outcome.drifted() { ExitCode::from(EXIT_DRIFTED) } else { ExitCode::SUCCESS }
        }
        Err((code, message)) => fail(code, message),
    }
}

/// One reconciliation of `session` as `recon` asks, against the store at `url`: the session's
/// run id and the outcome (recorded in the store), or an exit code and why not. What `kuant
/// reconcile` and `kuant agent reconcile` share.
pub async fn once(
    recon: &Reconciliation,
    session: &TradingSession,
    credentials: Option<Credentials>,
    url: &str,
) -> Result<(String, Outcome), (u8, String)> {
    let name = session.metadata.name.clone().unwrap_or_default();
    let namespace = session.metadata.namespace.clone().unwrap_or_else(|| "local".into());
    let run_id = format!("{namespace}/{name}");
    let spec = &session.spec;
    if spec.exchange.name == "simulator" && spec.exchange.base_url.is_none() {
        return Err((
            EXIT_BAD_INPUT,
            "the session trades on an in-process simulator, which is gone when the session ends: there is no account to reconcile against".into(),
        ));
    }
    let threshold = Threshold {
        absolute: recon.spec.threshold.absolute.value(),
        relative_pct: recon.spec.threshold.relative_pct,
    };
    let store = Store::open(url)
        .await
        .map_err(|e| (EXIT_INTERNAL, format!("the store {}: {e}", kuant_store::redact(url))))?;
    let started_ms = jiff::Timestamp::now().as_millisecond();
    let request = Request {
        run_id: &run_id,
        symbols: &spec.symbols,
        assets: &recon.spec.assets,
        threshold,
        recon_id: uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("kuant:{run_id}@{started_ms}").as_bytes(),
        )
        .to_string(),
        started_ms,
    };
    let outcome = match (spec.mode, credentials) {
        (TradingMode::Paper, _) => reconcile::run::<BinanceExchange>(&store, Account::Paper, &request).await,
        (TradingMode::Live, None) => {
            return Err((
                EXIT_BAD_INPUT,
                "a live session's account is read with its key, and none was given".into(),
            ));
        }
        (TradingMode::Live, Some(credentials)) => {
            let exchange = BinanceExchange::new(super::session::endpoints(&spec.exchange), Some(credentials))
                .map_err(|e| (EXIT_BAD_INPUT, e.to_string()))?;
            reconcile::run(&store, Account::Exchange(&exchange), &request).await
        }
    };
    outcome
        .map(|o| (run_id.clone(), o))
        .map_err(|e| (EXIT_INTERNAL, format!("session {run_id}: {e} (nothing was compared)")))
}

fn print(outcome: &Outcome, run_id: &str, output: &str) {
    if output == "json" {
        let mut value = serde_json::to_value(outcome).unwrap_or_default();
        value["session"] = serde_json::json!(run_id);
        println!("{value}");
        return;
    }
    println!("{:<8} {:>22} {:>22} {:>22} {:>10}  STATE", "ASSET", "LEDGER", "EXCHANGE", "DRIFT", "DRIFT %");
    for a in &outcome.assets {
        println!(
            "{:<8} {:>22} {:>22} {:>22} {:>10.4}  {}",
            a.asset,
            a.ledger.normalize().to_string(),
            a.exchange.normalize().to_string(),
            a.drift.normalize().to_string(),
            a.drift_pct,
            if a.within_threshold { "ok" } else { "DRIFTED" }
        );
    }
    for t in &outcome.unexplained {
        println!(
            "unexplained: {} trade {} (order {}): {} {} @ {}",
            t.symbol,
            t.trade_id,
            t.order_id,
            t.side,
            t.quantity.normalize(),
            t.price.normalize()
        );
    }
    println!("{run_id}: {}: {}", outcome.result, outcome.message);
}
