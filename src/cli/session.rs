//! `kuant session -f FILE`: run a TradingSession manifest locally, without a cluster.
//!
//! The exchange: with `exchange.name: simulator` and no `baseUrl`, an exchange simulator runs in
//! this process (over loopback, exactly as a remote one), replaying `--data` (synthetic candles
//! without it) at `--speed`; with `baseUrl`, the Binance-compatible server there (a running
//! `kuant exchange-sim`); else Binance. `mode: paper` fills orders in a paper account on that
//! exchange's market data and sends none; `mode: live` sends them (credentials from
//! `--credentials FILE`, never from the manifest; the in-process simulator needs none).
//!
//! It stops after `--duration`, or on Ctrl-C: the kill switch first (open orders cancelled, no
//! new ones, what they did recorded), then the traders. `spec.suspend: true` starts with the kill switch on.
//!
//! Exit codes: 0 stopped, 2 bad input (the manifest, a flag, the data, credentials), 1 an
//! internal error (the exchange or the store failed).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use kuant_crds::TradingSession;
use kuant_crds::session::TradingMode;
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::paper::{BalanceRecorder, PaperAccount, PaperExchange};
use kuant_exchanges::sim::{BookShape, Fees, SimConfig, SimState, Speed, serve_on_loopback};
use kuant_exchanges::{BinanceEndpoints, BinanceExchange, Exchange};
use kuant_runtime::judge::{Judge, RulesJudge};
use kuant_runtime::record::{self, Counters, Recorder, Source};
use kuant_runtime::recovery;
use kuant_runtime::session::{self, Report, Snapshot};
use kuant_runtime::trader::wall_ms;
use kuant_store::{Run, RunKind, Store};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, watch};

use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

/// Flags of `kuant session`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kuant session -f examples/sessions/sim-btc.yaml --data ../shared/data/coinbase_btcusd_1h.csv --speed max --duration 30s\n  \
    kuant session -f examples/sessions/paper-btc.yaml\n  \
    kuant session -f live.yaml --credentials binance-keys.yaml")]
pub struct SessionArgs {
    /// The TradingSession manifest (YAML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// status (a live status line on stderr, a summary at the end) or json (one event per line
    /// on stdout, as stored).
    #[arg(short = 'o', long, value_enum, default_value_t = SessionOutput::Status)]
    pub output: SessionOutput,
    /// With the in-process simulator: candles to replay, a CSV file per symbol in the
    /// manifest's order (e.g. ../shared/data/coinbase_btcusd_1h.csv). Without it, synthetic.
    #[arg(long, value_name = "FILE")]
    pub data: Vec<PathBuf>,
    /// With the in-process simulator: simulated time per real time (`max`: as fast as the
    /// session keeps up).
    #[arg(long, default_value = "60")]
    pub speed: Speed,
    /// Stop after this long (e.g. `30s`, `5m`, `2h`); without it, on Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Live trading's API key: YAML with `apiKey` and `apiSecret` (the keys of the session's
    /// Secret).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Seed of the in-process simulator's synthetic candles.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save the session (events, orders, fills, positions, ledger) to this store: postgres://…
    /// or a SQLite file. Default: `KUANT_DATABASE_URL`, else `~/.local/share/kuant/kuant.db`.
    #[arg(long, value_name = "URL", conflicts_with = "no_store")]
    pub store: Option<String>,
    /// Do not save the session.
    #[arg(long)]
    pub no_store: bool,
    /// Trade even when the restart's recovery found a mismatch between the store and the
    /// exchange (after a human has looked at it).
    #[arg(long)]
    pub resume: bool,
}

/// How the session is shown.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionOutput {
    /// A status line while it runs, a summary at the end.
    Status,
    /// One JSON event per line.
    Json,
}

/// `30s`, `5m`, `2h`, `1d`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 2h"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h, d")),
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// Runs the command; see the module docs.
pub fn run(args: &SessionArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) => return fail(EXIT_BAD_INPUT, format!("cannot read {}: {e}", args.file.display())),
    };
    let manifest =
        match kuant_crds::manifest::parse::<TradingSession>(&text, &args.file.display().to_string()) {
            Ok(m) => m,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(EXIT_INTERNAL, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run_session(args, manifest, Hooks::default()))
}

/// What differs when the session runs in its pod (`kuant agent session`) rather than in a
/// terminal.
#[derive(Default)]
pub struct Hooks {
    /// Live trading's key, when it does not come from `--credentials` (the pod's Secret).
    pub credentials: Option<Credentials>,
    /// The kill switch from outside (`spec.suspend`, watched by the agent).
    pub suspend: Option<watch::Receiver<bool>>,
    /// Where the session's state goes for the status (the agent applies it).
    pub status: Option<watch::Sender<kuant_runtime::status::View>>,
    /// Orders leave only while this says true (the agent's trading Lease); `None`: always.
    pub gate: Option<watch::Receiver<bool>>,
    /// A human's resume (the annotation `kuant.dev/resume-at`, wall ms): lifts the traders'
    /// halts that began at or before it.
    pub resume: Option<watch::Receiver<i64>>,
    /// SIGTERM and Ctrl-C stop the traders without the kill switch: a pod being replaced leaves
    /// its orders (and protective stops) on the exchange.
    pub stop_keeps_orders: bool,
}

/// Runs `manifest` as `args` and `hooks` say.
pub async fn run_session(args: &SessionArgs, manifest: TradingSession, mut hooks: Hooks) -> ExitCode {
    let spec = &manifest.spec;
    let name = manifest.metadata.name.clone().unwrap_or_else(|| "session".into());
    let namespace = manifest.metadata.namespace.clone().unwrap_or_else(|| "local".into());
    let session_id = format!("{namespace}/{name}");
    let plans = match session::plans(&session_id, spec) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let in_process = spec.exchange.name == "simulator" && spec.exchange.base_url.is_none();
    if !in_process && (!args.data.is_empty()) {
        return fail(
            EXIT_BAD_INPUT,
            "--data replays candles in the in-process simulator: it needs exchange.name: simulator without exchange.baseUrl",
        );
    }
    let (endpoints, credentials) = if in_process {
        match simulator(args, spec) {
            Ok(v) => v,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        }
    } else {
        let endpoints = endpoints(&spec.exchange);
        let keys = match (&args.credentials, spec.mode) {
            (None, _) if hooks.credentials.is_some() => hooks.credentials.take(),
            (path, mode) => match credentials_flag(path.as_deref(), mode) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            },
        };
        (endpoints, keys)
    };
    // Paper trading reads market data only: no key leaves this process.
    let credentials = if spec.mode == TradingMode::Paper && !in_process { None } else { credentials };
    let market = match BinanceExchange::new(endpoints, credentials) {
        Ok(e) => Arc::new(e),
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let store = if args.no_store {
        None
    } else {
        let url = match super::store::location(args.store.as_deref()) {
            Ok(url) => url,
            Err(e) => return fail(EXIT_BAD_INPUT, e),
        };
        match Store::open(&url).await {
            Ok(s) => Some(s),
            Err(e) => return fail(EXIT_INTERNAL, format!("the store {}: {e}", kuant_store::redact(&url))),
        }
    };
    let run = Run {
        run_id: session_id.clone(),
        kind: RunKind::Session,
        namespace: Some(namespace),
        name,
        spec: serde_json::to_value(spec).unwrap_or(serde_json::Value::Null),
        phase: "Running".into(),
    };
    if let Some(store) = &store {
        // A replay in the in-process simulator is a new market each time: the run starts
        // afresh. Against a real exchange a restart continues the session.
        let written = if in_process { store.reset_run(&run).await } else { store.upsert_run(&run).await };
        if let Err(e) = written {
            return fail(EXIT_INTERNAL, format!("the store: {e}"));
        }
    }
    let ctx = Context { args, manifest: &manifest, run, store, in_process, hooks };
    match spec.mode {
        TradingMode::Live => ctx.trade(market, plans).await,
        TradingMode::Paper => {
            let quote = spec.budget.quote_asset.to_uppercase();
            // The paper account charges what the traders' sizing allows for.
            let Some(costs) = plans.first().map(|p| p.costs) else {
                return fail(EXIT_BAD_INPUT, "the session has no strategy or no symbol");
            };
            // A paper session that continues starts from the paper account it left.
            let mut opening = vec![(quote, spec.budget.amount.value())];
            if let (Some(store), false) = (&ctx.store, in_process) {
                match store.paper_balances(&ctx.run.run_id).await {
                    Ok(stored) if !stored.is_empty() => {
                        opening = stored.into_iter().map(|b| (b.asset, b.free + b.locked)).collect();
                    }
                    Ok(_) => {}
                    Err(e) => return fail(EXIT_INTERNAL, format!("the store: {e}")),
                }
            }
            let account = PaperAccount::new(opening, costs);
            let recorder = ctx
                .store
                .as_ref()
                .map(|s| BalanceRecorder { store: s.clone(), run_id: ctx.run.run_id.clone() });
            let paper =
                PaperExchange::start(market, account, &spec.symbols, spec.timeframe.as_str(), recorder).await;
            match paper {
                Ok(p) => ctx.trade(Arc::new(p), plans).await,
                Err(e) => fail(EXIT_INTERNAL, format!("the paper account did not start: {e}")),
            }
        }
    }
}

/// Where the session's exchange answers: its `baseUrl` (and `wsUrl`) overrides, else Binance.
pub fn endpoints(exchange: &kuant_crds::session::ExchangeSpec) -> BinanceEndpoints {
    match &exchange.base_url {
        Some(url) => {
            let mut e = BinanceEndpoints::at(url);
            if let Some(ws) = &exchange.ws_url {
                e.streams.clone_from(ws);
            }
            e
        }
        None => BinanceEndpoints::binance(),
    }
}

/// The key `--credentials FILE` names (YAML with apiKey and apiSecret); required in `mode` live,
/// none without it in paper mode.
pub fn credentials_flag(
    path: Option<&std::path::Path>,
    mode: TradingMode,
) -> Result<Option<Credentials>, String> {
    match (path, mode) {
        (Some(path), _) => {
            Credentials::from_file(path).map(Some).map_err(|e| format!("--credentials {}: {e}", path.display()))
        }
        (None, TradingMode::Live) => Err(
            "mode live needs the exchange's API key: --credentials FILE (YAML with apiKey and apiSecret); kuant never reads keys from the manifest"
                .into(),
        ),
        (None, TradingMode::Paper) => Ok(None),
    }
}

/// The in-process simulator: the manifest's symbols replaying `--data` (or synthetic candles),
/// the budget as its balance; where it answers, and its keys.
fn simulator(
    args: &SessionArgs,
    spec: &kuant_crds::session::TradingSessionSpec,
) -> Result<(BinanceEndpoints, Option<Credentials>), String> {
    if !args.data.is_empty() && args.data.len() != spec.symbols.len() {
        return Err(format!(
            "{} --data files for {} symbols: give one file per symbol, in the manifest's order",
            args.data.len(),
            spec.symbols.len()
        ));
    }
    let symbols = super::exchange_sim::sim_symbols(
        "spec.symbols:",
        &spec.symbols,
        &args.data,
        spec.timeframe,
        args.seed,
        8_760,
    )?;
    // Keys only this process knows.
    let secret =
        kuant_ops_api::auth::fresh_token().map_err(|e| format!("making the simulator's keys: {e}"))?;
    let config = SimConfig {
        symbols,
        speed: args.speed,
        credentials: Credentials::hmac("kuant-session", &secret),
        balances: vec![(spec.budget.quote_asset.to_uppercase(), spec.budget.amount.value())],
        fees: Fees::default(),
        book: BookShape::default(),
    };
    let state = SimState::new(config)?;
    let url = serve_on_loopback(state).map_err(|e| format!("the in-process simulator cannot listen: {e}"))?;
    Ok((BinanceEndpoints::at(&url), Some(Credentials::hmac("kuant-session", &secret))))
}

struct Context<'a> {
    args: &'a SessionArgs,
    manifest: &'a TradingSession,
    run: Run,
    store: Option<Store>,
    /// The market is the in-process simulator's: a fresh one each run, nothing to recover.
    in_process: bool,
    hooks: Hooks,
}

impl Context<'_> {
    async fn trade<E: Exchange + 'static>(
        self,
        exchange: Arc<E>,
        plans: Vec<kuant_runtime::Plan>,
    ) -> ExitCode {
        let spec = &self.manifest.spec;
        let judge: Arc<dyn Judge> = Arc::new(RulesJudge::default());
        let mut traders = match session::start(&exchange, plans, &judge).await {
            Ok(t) => t,
            Err(e @ kuant_runtime::TraderError::UnknownSymbol { .. }) => return fail(EXIT_BAD_INPUT, e),
            Err(e) => return fail(EXIT_INTERNAL, format!("the session did not start: {e}")),
        };
        if let Some(gate) = &self.hooks.gate {
            traders = traders.into_iter().map(|t| t.with_gate(gate.clone())).collect();
        }
        if let Some(resume) = &self.hooks.resume {
            traders = traders.into_iter().map(|t| t.with_resume(resume.clone())).collect();
        }
        // A session that continues: the store and the exchange compared before any order.
        if let (Some(store), false) = (&self.store, self.in_process) {
            let stored = match recovery::Stored::read(store, &self.run.run_id).await {
                Ok(s) => s,
                Err(e) => return fail(EXIT_INTERNAL, format!("recovery: the store: {e}")),
            };
            match recovery::recover(&mut traders, exchange.as_ref(), &stored, true).await {
                Ok(found) => {
                    if found.orders_found + found.never_sent + found.fills_found > 0 {
                        eprintln!(
                            "recovered: {} orders sent before the restart found on the exchange, {} never sent, {} fills made while down",
                            found.orders_found, found.never_sent, found.fills_found
                        );
                    }
                    if !found.mismatches.is_empty() {
                        eprintln!("recovery mismatch (trading halted): {}", found.mismatches.join("; "));
                        if self.args.resume {
                            eprintln!("--resume: trading anyway");
                            traders.iter_mut().for_each(kuant_runtime::Trader::resume);
                        }
                    }
                }
                Err(e) => {
                    return fail(EXIT_INTERNAL, format!("recovery: the exchange: {e} (nothing was traded)"));
                }
            }
        }
        let desks: Vec<Source> = traders
            .iter()
            .map(|t| Source {
                stream: t.plan().stream.clone(),
                strategy: t.plan().strategy_name.clone(),
                symbol: t.plan().symbol.clone(),
                base: t.rules().base_asset.to_string(),
            })
            .collect();
        let started = wall_ms();
        let mut recorder = match &self.store {
            None => None,
            Some(store) => {
                // The ledger opens with what the account holds (a live account holds more than
                // the budget; a paper account holds the budget), so a reconciliation compares
                // like with like.
                let opening = match exchange.balances().await {
                    Ok(balances) => balances.iter().map(|b| (b.asset.to_uppercase(), b.total())).collect(),
                    Err(e) => {
                        return fail(
                            EXIT_INTERNAL,
                            format!("the exchange's balances at the session's start: {e}"),
                        );
                    }
                };
                let quote = &spec.budget.quote_asset;
                match Recorder::open(store.clone(), self.run.clone(), quote, opening, desks.clone(), started)
                    .await
                {
                    Ok(r) => Some(r),
                    Err(e) => return fail(EXIT_INTERNAL, e),
                }
            }
        };
        let (suspend_tx, suspend_rx) = watch::channel(spec.suspend);
        let suspend_tx = Arc::new(suspend_tx);
        if let Some(mut outside) = self.hooks.suspend {
            let inside = Arc::clone(&suspend_tx);
            tokio::spawn(async move {
                while outside.changed().await.is_ok() {
                    let on = *outside.borrow_and_update();
                    inside.send_replace(on);
                }
            });
        }
        let stop_keeps_orders = self.hooks.stop_keeps_orders;
        let (reports_tx, mut reports) = mpsc::channel::<Report>(256);
        let duration = self.args.duration;
        let stop = async move {
            let timer = async {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => {}
                () = super::shutdown_signal() => {}
            }
            if !stop_keeps_orders {
                // The kill switch first: open orders cancelled, nothing new, their last fills
                // and cancels recorded; then stop.
                suspend_tx.send_replace(true);
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        };
        let running = tokio::spawn(session::run(traders, stop, suspend_rx, reports_tx));
        let mut status = StatusLine::new(self.args.output, desks.clone(), spec.budget.amount.value());
        let mut failed = None;
        while let Some(mut report) = reports.recv().await {
            let json = self.args.output == SessionOutput::Json;
            let events = match desks.get(report.trader) {
                Some(source) if json || recorder.is_some() => {
                    record::stored_events(&report.notes, source, &self.run.run_id)
                }
                _ => Vec::new(),
            };
            if json {
                print_events(&events);
            }
            if let Some(r) = recorder.as_mut()
                && failed.is_none()
                && let Err(e) = r.record(&report, &events).await
            {
                // Nothing trades that cannot be recorded: stop.
                eprintln!("error: the session stops: {e}");
                failed = Some(e.to_string());
                break;
            }
            if let Some(ack) = report.ack.take() {
                let _ = ack.send(());
            }
            status.update(&report);
            if let Some(view) = &self.hooks.status {
                view.send_replace(status.view(failed.clone()));
            }
        }
        drop(reports);
        let ended = match running.await {
            Ok(results) => results,
            Err(e) => return fail(EXIT_INTERNAL, format!("the session's task failed: {e}")),
        };
        status.finish();
        let errors: Vec<String> =
            ended.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
        let results = serde_json::json!({
            "equity": status.equity().to_string(),
            "counters": status.counters_json(),
            "errors": errors,
        });
        if let Some(r) = &recorder {
            let phase = if failed.is_some() || !errors.is_empty() { "Failed" } else { "Stopped" };
            if let Err(e) = r.finish(phase, &results, wall_ms()).await {
                eprintln!("warning: the session's end is not saved: {e}");
            }
        }
        if self.args.output == SessionOutput::Status {
            eprintln!("{}", status.summary(&self.run.run_id));
        }
        match (failed, errors.first()) {
            (Some(e), _) => fail(EXIT_INTERNAL, e),
            (None, Some(e)) => fail(EXIT_INTERNAL, e),
            (None, None) => ExitCode::SUCCESS,
        }
    }
}

fn print_events(events: &[kuant_store::StoredEvent]) {
    let mut out = std::io::stdout().lock();
    for e in events {
        let line = serde_json::json!({
            "session_id": e.run_id,
            "event_id": e.event_id,
            "correlation_id": e.correlation_id,
            "causation_id": e.causation_id,
            "type": e.event_type,
            "source": e.source,
            "at_ms": e.occurred_at_ms,
            "payload": e.payload,
        });
        // A reader that went away (`| head`) ends the printing, not the session.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// The live status line: equity, P&L, positions, open orders, data health, the last event.
struct StatusLine {
    output: SessionOutput,
    tty: bool,
    desks: Vec<Source>,
    budget: Decimal,
    snapshots: Vec<Snapshot>,
    counters: Counters,
    tally: kuant_runtime::status::Tally,
    last_event: String,
    last_draw: Option<Instant>,
}

impl StatusLine {
    fn new(output: SessionOutput, desks: Vec<Source>, budget: Decimal) -> Self {
        let snapshots = vec![Snapshot::default(); desks.len()];
        Self {
            output,
            tty: std::io::stderr().is_terminal(),
            desks,
            budget,
            snapshots,
            counters: Counters::default(),
            tally: kuant_runtime::status::Tally::default(),
            last_event: "starting".into(),
            last_draw: None,
        }
    }

    /// What the status shows.
    fn view(&self, store_error: Option<String>) -> kuant_runtime::status::View {
        kuant_runtime::status::View {
            symbols: self.desks.iter().map(|d| d.symbol.clone()).collect(),
            snapshots: self.snapshots.clone(),
            counters: self.counters,
            store_error,
            tally: self.tally.clone(),
            ..Default::default()
        }
    }

    fn equity(&self) -> Decimal {
        self.snapshots.iter().map(|s| s.equity).sum()
    }

    fn counters_json(&self) -> serde_json::Value {
        let c = self.counters;
        serde_json::json!({"signals": c.signals, "orders": c.orders, "fills": c.fills, "blocked": c.blocked})
    }

    fn update(&mut self, report: &Report) {
        if let Some(slot) = self.snapshots.get_mut(report.trader) {
            *slot = report.snapshot.clone();
        }
        for n in &report.notes {
            self.counters.count(&n.step);
            self.tally.count(&n.step);
        }
        // Only the last event is shown.
        if let (Some(n), Some(desk)) = (report.notes.last(), self.desks.get(report.trader)) {
            let (kind, payload) = kuant_runtime::record::event_of(&n.step, desk);
            let detail =
                payload.get("reason").or_else(|| payload.get("side")).and_then(|v| v.as_str()).unwrap_or("");
            self.last_event = format!("{kind} {} {detail}", desk.symbol).trim_end().to_owned();
        }
        if self.output != SessionOutput::Status {
            return;
        }
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(10) };
        if self.last_draw.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let line = self.line();
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r\x1b[2K{line}") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }

    fn line(&self) -> String {
        let equity = self.equity();
        let pnl = equity - self.budget;
        let mut positions: Vec<(String, Decimal)> = Vec::new();
        for (desk, s) in self.desks.iter().zip(&self.snapshots) {
            match positions.iter_mut().find(|(sym, _)| *sym == desk.symbol) {
                Some((_, q)) => *q += s.position,
                None => positions.push((desk.symbol.clone(), s.position)),
            }
        }
        let positions: Vec<String> = positions
            .iter()
            .filter(|(_, q)| !q.is_zero())
            .map(|(sym, q)| format!("{sym} {}", q.normalize()))
            .collect();
        let open: usize = self.snapshots.iter().map(|s| s.open_orders).sum();
        let data = if self.snapshots.iter().all(|s| s.healthy) { "healthy" } else { "STALE" };
        let state = if let Some(h) = self.snapshots.iter().find_map(|s| s.halted.as_deref()) {
            format!(" HALTED ({h})")
        } else if self.snapshots.iter().any(|s| s.suspended) {
            " SUSPENDED".to_owned()
        } else {
            String::new()
        };
        let c = self.counters;
        format!(
            "equity {} | pnl {} | positions {} | open orders {open} | data {data}{state} | signals {} orders {} fills {} blocked {} | {}",
            equity.round_dp(2),
            pnl.round_dp(2),
            if positions.is_empty() { "none".to_owned() } else { positions.join(", ") },
            c.signals,
            c.orders,
            c.fills,
            c.blocked,
            self.last_event
        )
    }

    fn finish(&mut self) {
        if self.tty && self.output == SessionOutput::Status && self.last_draw.is_some() {
            eprintln!();
        }
    }

    fn summary(&self, session_id: &str) -> String {
        format!("session {session_id} stopped: {}", self.line())
    }
}
