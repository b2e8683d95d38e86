//! A TradingSession: its spec made into traders (one per strategy and symbol), and the traders
//! run together against one exchange, reporting what happens through one bounded channel.
//!
//! Budgets: each strategy gets its `allocationPct` of `budget.amount`, split evenly over the
//! symbols; each trader's risk desk holds its share, so one strategy can never spend another's.

use std::future::Future;
use std::sync::Arc;

use kuant_agents::execution::Costs;
use kuant_agents::risk::RiskLimits;
use kuant_crds::session::TradingSessionSpec;
use kuant_exchanges::Exchange;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use tokio::sync::{mpsc, watch};

use crate::judge::Judge;
use crate::trader::{Noted, Plan, Trader, TraderError};

/// Fees the sizing allows for: Binance spot's base rate, 10 bps, and 5 bps of slippage.
pub const SIZING_FEE_BPS: f64 = 10.0;
/// See [`SIZING_FEE_BPS`].
pub const SIZING_SLIPPAGE_BPS: f64 = 5.0;
/// Closed candles read at start to warm the strategies up.
pub const WARM_UP_CANDLES: u16 = 500;

/// A spec the session cannot run, with the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// E.g. `spec.strategies[1].params`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), message: message.into() }
}

/// The traders' plans of a session with id `session_id` (its run id) and spec `spec`: one per
/// strategy and symbol.
pub fn plans(session_id: &str, spec: &TradingSessionSpec) -> Result<Vec<Plan>, SpecError> {
    let quote = spec.budget.quote_asset.to_uppercase();
    for (i, symbol) in spec.symbols.iter().enumerate() {
        if !symbol.ends_with(&quote) || symbol.len() == quote.len() {
            return Err(bad(
                format!("spec.symbols[{i}]"),
                format!("{symbol} is not quoted in the budget's asset {quote} (spec.budget.quoteAsset)"),
            ));
        }
        if spec.symbols[..i].contains(symbol) {
            return Err(bad(format!("spec.symbols[{i}]"), format!("{symbol} is listed twice")));
        }
    }
    let total: f64 = spec.strategies.iter().map(|s| s.allocation_pct).sum();
    if total > 100.0 + 1e-9 {
        return Err(bad("spec.strategies", format!("allocationPct sums to {total}, more than 100")));
    }
    let amount = spec.budget.amount.value();
    if amount <= Decimal::ZERO {
        return Err(bad("spec.budget.amount", "must be more than 0"));
    }
    let limits = RiskLimits::from_spec(&spec.risk).map_err(|e| bad("spec.risk", e.to_string()))?;
    let costs = Costs::from_bps(SIZING_FEE_BPS, SIZING_SLIPPAGE_BPS)
        .ok_or_else(|| bad("costs", "the sizing costs are out of range"))?;
    // An entry spends what the position limit allows, at most all of the trader's budget.
    let allocation = limits.max_position.min(Decimal::ONE);
    let interval_ms =
        i64::try_from(spec.timeframe.seconds() * 1000).map_err(|_| bad("spec.timeframe", "out of range"))?;
    let stale_after_ms = i64::from(spec.market_data.stale_after_seconds.max(1)) * 1000;
    let poll_every_ms =
        spec.market_data.rest_fallback.then(|| i64::from(spec.market_data.rest_poll_seconds.max(1)) * 1000);
    let stop_loss = spec
        .risk
        .stop_loss_pct
        .map(|pct| {
            kuant_agents::risk::fraction("stopLossPct", pct)
                .ok()
                .filter(|f| *f > Decimal::ZERO && *f < Decimal::ONE)
                .ok_or_else(|| bad("spec.risk.stopLossPct", format!("{pct} is not between 0 and 100")))
        })
        .transpose()?;
    let symbols = Decimal::from(spec.symbols.len());
    let mut plans = Vec::new();
    for (i, strategy) in spec.strategies.iter().enumerate() {
        let field = format!("spec.strategies[{i}]");
        let share = Decimal::from_f64(strategy.allocation_pct)
            .filter(|p| *p > Decimal::ZERO)
            .ok_or_else(|| bad(format!("{field}.allocationPct"), "must be more than 0"))?;
        let budget = amount * share / Decimal::ONE_HUNDRED / symbols;
        for symbol in &spec.symbols {
            let built = kuant_agents::strategy::build(strategy.name, &strategy.params)
                .map_err(|e| bad(format!("{field}.params"), e.to_string()))?;
            plans.push(Plan {
                session_id: session_id.to_owned(),
                stream: format!("{symbol}/{i}"),
                strategy_name: strategy.name.as_str().to_owned(),
                symbol: symbol.clone(),
                interval: spec.timeframe.as_str().to_owned(),
                interval_ms,
                strategy: built,
                allocation,
                costs,
                limits: limits.clone(),
                budget: budget.round_dp(8),
                stale_after_ms,
                poll_every_ms,
                warm_up: WARM_UP_CANDLES,
                stop_loss,
            });
        }
    }
    Ok(plans)
}

/// A trader's state, as the status and the status line show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What its desk holds, valued at the latest price.
    pub equity: Decimal,
    /// Quote neither reserved nor spent.
    pub cash: Decimal,
    /// Profit or loss today (UTC).
    pub pnl_today: Decimal,
    /// Base held.
    pub position: Decimal,
    /// The average price the position was bought at.
    pub entry_price: Decimal,
    /// The latest price seen.
    pub last_price: Decimal,
    /// Open orders.
    pub open_orders: usize,
    /// Market data fresh enough to trade on.
    pub healthy: bool,
    /// Why trading is halted, if it is.
    pub halted: Option<String>,
    /// The kill switch is on.
    pub suspended: bool,
    /// Orders may not leave: the trader does not hold its session's trading Lease.
    pub no_lease: bool,
    /// When its last market-data message came (wall clock, ms).
    pub last_market_data_ms: Option<i64>,
}

impl Snapshot {
    /// Of `trader`, now.
    pub fn of<E: Exchange>(trader: &Trader<E>) -> Self {
        let desk = trader.desk();
        Self {
            equity: desk.equity(),
            cash: desk.free_quote() + desk.reserved_quote(),
            pnl_today: desk.pnl_today(),
            position: desk.position(&trader.plan().symbol),
            entry_price: trader.entry_price(),
            last_price: trader.last_price(),
            open_orders: trader.open_orders(),
            healthy: trader.healthy(),
            halted: desk.halted().map(|h| format!("{}: {h}", h.reason())),
            suspended: trader.suspended(),
            no_lease: !trader.gate_open(),
            last_market_data_ms: trader.last_market_data_ms(),
        }
    }
}

/// What one trader reports: what happened since its last report, and where it stands.
#[derive(Debug)]
pub struct Report {
    /// Its index in the session's plans.
    pub trader: usize,
    /// Events, in order.
    pub notes: Vec<Noted>,
    /// Where it stands after them.
    pub snapshot: Snapshot,
    /// Write-ahead: the trader waits for this answer (sent once the notes are stored, or at
    /// once when nothing is stored) before its order leaves.
    pub ack: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Starts a trader per plan (rules, warm-up), each judged by `judge`.
pub async fn start<E: Exchange + 'static>(
    exchange: &Arc<E>,
    plans: Vec<Plan>,
    judge: &Arc<dyn Judge>,
) -> Result<Vec<Trader<E>>, TraderError> {
    let mut traders = Vec::with_capacity(plans.len());
    for plan in plans {
        traders.push(Trader::start(Arc::clone(exchange), plan).await?.with_judge(Arc::clone(judge)));
    }
    Ok(traders)
}

/// Runs `traders` together until `stop` completes (or every trader's streams end), with the
/// kill switch `suspend`; each reports to `reports` as things happen. Returns the traders.
pub async fn run<E: Exchange + 'static>(
    traders: Vec<Trader<E>>,
    stop: impl Future<Output = ()>,
    suspend: watch::Receiver<bool>,
    reports: mpsc::Sender<Report>,
) -> Vec<Result<Trader<E>, TraderError>> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, trader) in traders.into_iter().enumerate() {
        let mut stop_rx = stop_rx.clone();
        let suspend = suspend.clone();
        let reports = reports.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            (i, trader.run_reporting(stop, suspend, Some((i, reports))).await)
        });
    }
    drop(reports);
    tokio::pin!(stop);
    let mut done = Vec::new();
    loop {
        tokio::select! {
            () = &mut stop => {
                let _ = stop_tx.send(true);
                break;
            }
            joined = tasks.join_next() => match joined {
                Some(Ok(result)) => done.push(result),
                Some(Err(e)) => tracing::error!(error = %e, "a trader's task failed"),
                None => break,
            },
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => done.push(result),
            Err(e) => tracing::error!(error = %e, "a trader's task failed"),
        }
    }
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
