//! What a session does, written to the store: every step as an event of its chain (run id = the
//! session id; correlation = the signal; causation = the step before), and the trading tables
//! the ops API reads — signals, orders and their states, fills, blocked trades, positions, risk
//! allocations — with one double-entry ledger transaction per fill.
//!
//! Ids are the trader's deterministic event ids, so a report written twice (a restart that
//! replays what it saw) keeps one row of each.
//!
//! The ledger of a session `S` with quote asset `Q`: `S:wallet:<asset>` (asset: what the session
//! holds), `S:capital:<asset>` (equity: what the account held when the session opened — the
//! budget of a paper account, every balance of a live account's session assets, so the first
//! reconciliation compares like with like), `S:trading:<asset>` (equity: the other side
//! of each exchange of one asset for another, so every transaction balances per asset) and
//! `S:fees:<asset>` (expense). A buy of `q` base at `p`: wallet base `+q`, trading base `-q`,
//! wallet quote `-q·p`, trading quote `+q·p`, and the fee from the wallet of its asset to fees.

use std::collections::HashMap;

use kuant_agents::events::{IdSpace, Seq};
use kuant_agents::strategy::Side;
use kuant_agents::watchdog::Change;
use kuant_exchanges::{Fill, Order, OrderKind, OrderStatus};
use kuant_store::{
    AccountKind, AllocationState, LedgerAccount, LedgerError, LedgerTransaction, RiskAllocation, Run,
    RunKind, Store, StoredBlock, StoredEvent, StoredFill, StoredOrder, StoredPosition, StoredSignal,
};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::session::Report;
use crate::trader::{Noted, Step};

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A query failed.
    #[error("the store: {0}")]
    Sql(#[from] kuant_store::SqlError),
    /// The ledger refused a transaction.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// One trader, as the record names it.
#[derive(Clone, Debug)]
pub struct Source {
    /// Its id stream (`BTCUSDT/0`): the events' source.
    pub stream: String,
    /// The strategy's name.
    pub strategy: String,
    /// The symbol.
    pub symbol: String,
    /// The symbol's base asset.
    pub base: String,
}

/// The session's counters, as the status shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Signals.
    pub signals: u64,
    /// Orders submitted.
    pub orders: u64,
    /// Fills.
    pub fills: u64,
    /// Trades blocked.
    pub blocked: u64,
}

impl Counters {
    /// Counts `step`.
    pub fn count(&mut self, step: &Step) {
        match step {
            Step::Signal { .. } => self.signals += 1,
            Step::Submitted(_) => self.orders += 1,
            Step::Fill(_) => self.fills += 1,
            Step::Blocked { .. } => self.blocked += 1,
            _ => {}
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Holding {
    quantity: Decimal,
    avg_price: Decimal,
}

/// The store's id of the fill `trade_id` of `symbol` in run `run_id`. Trade ids are unique per
/// exchange and symbol only (a paper account numbers its own from 1, and two sessions trading
/// with each other see one trade id), so the run is part of the id: without it, a second session
/// on the same store had its fills silently taken for duplicates of the first's.
pub fn fill_id(run_id: &str, symbol: &str, trade_id: u64) -> String {
    format!("{run_id}/{symbol}:{trade_id}")
}

/// The id a fill had in stores written before [`fill_id`] named the run, and the part of
/// [`fill_id`] after the run (what recovery compares).
pub fn legacy_fill_id(symbol: &str, trade_id: u64) -> String {
    format!("{symbol}:{trade_id}")
}

/// A stored fill id as [`legacy_fill_id`] writes it, whichever way it was stored (symbols and
/// trade ids hold no `/`): how a session's fills are matched with the exchange's trades.
pub fn trade_key(stored_fill_id: &str) -> &str {
    stored_fill_id.rsplit('/').next().unwrap_or(stored_fill_id)
}

/// Writes a session's reports to the store.
pub struct Recorder {
    store: Store,
    run_id: String,
    quote: String,
    desks: Vec<Source>,
    holdings: HashMap<String, Holding>,
    /// Risk allocations by chain (the signal's id).
    allocations: HashMap<Uuid, String>,
    /// The quote value of intents awaiting their verdict, by chain.
    intents: HashMap<Uuid, Decimal>,
    /// The opening balances, posted as capital with the first report (at the market's time then,
    /// so a replay's ledger starts before its first fill).
    opening: Option<(Vec<(String, Decimal)>, i64)>,
}

/// `buy` or `sell`, as the store and the events write a side.
pub(crate) fn side(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// The store's name of a status.
pub fn status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::New => "new",
        OrderStatus::PartiallyFilled => "partially_filled",
        OrderStatus::Filled => "filled",
        OrderStatus::Canceled => "canceled",
        OrderStatus::PendingCancel => "pending_cancel",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Expired => "expired",
    }
}

fn kind(k: &OrderKind) -> &'static str {
    match k {
        OrderKind::Market => "market",
        OrderKind::Limit { .. } => "limit",
        OrderKind::StopLossLimit { .. } => "stop_loss_limit",
    }
}

/// What an event's `event_type` is, and its payload.
pub fn event_of(step: &Step, desk: &Source) -> (&'static str, serde_json::Value) {
    let symbol = &desk.symbol;
    match step {
        Step::Signal { at_ms, side: s, price } => (
            "signal",
            json!({"symbol": symbol, "strategy": desk.strategy, "side": side(*s), "price": price.to_string(), "candle_open_ms": at_ms}),
        ),
        Step::Intent { side: s, quantity, price, .. } => (
            "intent",
            json!({"symbol": symbol, "side": side(*s), "quantity": quantity.to_string(), "price": price.to_string()}),
        ),
        Step::Judged { approved, reason, .. } => {
            ("plan_judged", json!({"symbol": symbol, "approved": approved, "reason": reason}))
        }
        Step::Submitted(o) => ("order_submitted", order_payload(o)),
        Step::Order(o) => ("order_update", order_payload(o)),
        Step::Fill(f) => (
            "fill",
            json!({
                "symbol": symbol, "client_order_id": f.client_id.as_str(), "trade_id": f.trade_id,
                "side": side(f.side), "price": f.price.to_string(), "quantity": f.quantity.to_string(),
                "fee": f.fee.to_string(), "fee_asset": &*f.fee_asset,
            }),
        ),
        Step::Blocked { reason, detail, .. } => {
            ("trade_blocked", json!({"symbol": symbol, "reason": reason, "detail": detail}))
        }
        Step::Health { change, .. } => match change {
            Change::BecameStale { silent_ms } => {
                ("market_data", json!({"symbol": symbol, "healthy": false, "silent_ms": silent_ms}))
            }
            Change::BecameHealthy { stale_ms } => {
                ("market_data", json!({"symbol": symbol, "healthy": true, "stale_ms": stale_ms}))
            }
        },
        Step::Halted { reason, message, .. } => {
            ("halted", json!({"symbol": symbol, "reason": reason, "message": message}))
        }
    }
}

fn order_payload(o: &Order) -> serde_json::Value {
    json!({
        "symbol": &*o.symbol, "client_order_id": o.client_id.as_str(), "exchange_order_id": o.exchange_id,
        "side": side(o.side), "type": kind(&o.kind), "quantity": o.quantity.to_string(),
        "filled_quantity": o.filled_quantity.to_string(), "status": status(o.status),
    })
}

/// A report's notes as the store keeps them (and `kuant session -o json` prints them): of
/// session `run_id`, written by `source`.
pub fn stored_events(notes: &[Noted], source: &Source, run_id: &str) -> Vec<StoredEvent> {
    notes
        .iter()
        .map(|n| {
            let (event_type, payload) = event_of(&n.step, source);
            StoredEvent {
                event_id: n.id.to_string(),
                run_id: run_id.to_owned(),
                correlation_id: n.correlation.to_string(),
                causation_id: n.causation.map(|c| c.to_string()),
                event_type: event_type.to_owned(),
                source: format!("trader/{}", source.stream),
                occurred_at_ms: occurred_at(&n.step),
                payload,
            }
        })
        .collect()
}

/// When a step happened, Unix ms: a decision at its candle's open (as the backtest stamps it),
/// an order or fill when the exchange says.
pub fn occurred_at(step: &Step) -> i64 {
    match step {
        Step::Signal { at_ms, .. }
        | Step::Intent { at_ms, .. }
        | Step::Judged { at_ms, .. }
        | Step::Blocked { at_ms, .. }
        | Step::Health { at_ms, .. }
        | Step::Halted { at_ms, .. } => *at_ms,
        Step::Submitted(o) => o.created_ms,
        Step::Order(o) => o.updated_ms,
        Step::Fill(f) => f.time_ms,
    }
}

impl Recorder {
    /// Records the session's run (`phase` Running), opens its ledger accounts and posts the
    /// `opening` balances (asset, amount) once: a paper account's budget, or what a live account
    /// holds of the session's assets. A session that continues keeps the opening it had.
    pub async fn open(
        store: Store,
        run: Run,
        quote: &str,
        opening: Vec<(String, Decimal)>,
        desks: Vec<Source>,
        started_ms: i64,
    ) -> Result<Self, RecordError> {
        debug_assert_eq!(run.kind, RunKind::Session);
        store.upsert_run(&run).await?;
        let run_id = run.run_id;
        let quote = quote.to_uppercase();
        let mut assets = vec![quote.clone()];
        for d in &desks {
            if !assets.contains(&d.base) {
                assets.push(d.base.clone());
            }
        }
        for asset in &assets {
            for (what, kind) in [
                ("wallet", AccountKind::Asset),
                ("trading", AccountKind::Equity),
                ("fees", AccountKind::Expense),
                ("capital", AccountKind::Equity),
            ] {
                store
                    .open_account(&LedgerAccount {
                        account_id: format!("{run_id}:{what}:{asset}"),
                        run_id: Some(run_id.clone()),
                        name: format!("{what} {asset}"),
                        asset: asset.clone(),
                        kind,
                    })
                    .await?;
            }
        }
        // Positions as stored (a restart continues from them).
        let mut holdings = HashMap::new();
        for p in store.positions_of_run(&run_id).await? {
            holdings.insert(
                p.symbol,
                Holding { quantity: p.quantity, avg_price: p.avg_price.unwrap_or_default() },
            );
        }
        Ok(Self {
            store,
            run_id,
            quote,
            desks,
            holdings,
            allocations: HashMap::new(),
            intents: HashMap::new(),
            opening: Some((
                opening
                    .into_iter()
                    .filter(|(asset, amount)| !amount.is_zero() && assets.contains(asset))
                    .collect(),
                started_ms,
            )),
        })
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Writes one report, whose events ([`stored_events`]) are `events`.
    pub async fn record(&mut self, report: &Report, events: &[StoredEvent]) -> Result<(), RecordError> {
        if report.notes.is_empty() {
            return Ok(());
        }
        let Some(desk) = self.desks.get(report.trader).cloned() else {
            tracing::error!(trader = report.trader, "a report of a trader the session does not have");
            return Ok(());
        };
        if let Some((opening, started_ms)) = self.opening.take() {
            let first = events.iter().map(|e| e.occurred_at_ms).min().unwrap_or(started_ms);
            self.post_opening(&opening, first.min(started_ms)).await?;
        }
        self.store.insert_events(events).await?;
        for n in &report.notes {
            self.table_rows(n, &desk).await?;
        }
        Ok(())
    }

    async fn table_rows(&mut self, n: &Noted, desk: &Source) -> Result<(), RecordError> {
        let run_id = self.run_id.clone();
        let chain = n.correlation.to_string();
        match &n.step {
            Step::Signal { at_ms, side: s, price } => {
                self.store
                    .insert_signals(&[StoredSignal {
                        signal_id: n.id.to_string(),
                        run_id,
                        correlation_id: chain,
                        at_ms: *at_ms,
                        strategy: desk.strategy.clone(),
                        symbol: desk.symbol.clone(),
                        side: side(*s).to_owned(),
                        price: *price,
                    }])
                    .await?;
            }
            Step::Intent { quantity, price, .. } => {
                self.intents.insert(n.correlation, quantity * price);
            }
            Step::Health { .. } | Step::Halted { .. } => {}
            Step::Judged { at_ms, approved: true, .. } => {
                // The desk reserved the intent's value: the budget it claims.
                let amount = self.intents.remove(&n.correlation).unwrap_or_default();
                let allocation = RiskAllocation {
                    allocation_id: n.id.to_string(),
                    run_id,
                    correlation_id: chain,
                    amount,
                    state: AllocationState::Claimed,
                    claimed_at_ms: *at_ms,
                    used_at_ms: None,
                    released_at_ms: None,
                };
                self.store.claim_risk(&allocation).await?;
                self.allocations.insert(n.correlation, allocation.allocation_id);
            }
            Step::Judged { .. } => {
                self.intents.remove(&n.correlation);
            }
            Step::Submitted(o) => {
                self.store
                    .insert_orders(&[StoredOrder {
                        client_order_id: o.client_id.to_string(),
                        run_id,
                        correlation_id: chain,
                        exchange_order_id: Some(o.exchange_id.to_string()),
                        symbol: o.symbol.to_string(),
                        side: side(o.side).to_owned(),
                        order_type: kind(&o.kind).to_owned(),
                        quantity: o.quantity,
                        limit_price: o.kind.limit_price(),
                        status: status(o.status).to_owned(),
                        created_at_ms: o.created_ms,
                    }])
                    .await?;
            }
            Step::Order(o) => {
                let exchange_id = o.exchange_id.to_string();
                self.store
                    .update_order_status(
                        o.client_id.as_str(),
                        status(o.status),
                        Some(&exchange_id),
                        o.updated_ms,
                    )
                    .await?;
                if !o.status.is_open() {
                    self.release(n.correlation, o.updated_ms).await?;
                }
            }
            Step::Fill(f) => {
                self.fill(n, f, desk).await?;
            }
            Step::Blocked { at_ms, reason, detail } => {
                self.store
                    .insert_blocks(&[StoredBlock {
                        event_id: n.id.to_string(),
                        run_id,
                        correlation_id: chain,
                        at_ms: *at_ms,
                        reason: reason.clone(),
                        detail: detail.clone(),
                    }])
                    .await?;
                self.release(n.correlation, *at_ms).await?;
            }
        }
        Ok(())
    }

    /// The opening balances: once per session (its id derives from the session's, so a restart
    /// keeps the first life's).
    async fn post_opening(&self, opening: &[(String, Decimal)], at_ms: i64) -> Result<(), RecordError> {
        if opening.is_empty() {
            return Ok(());
        }
        let run_id = &self.run_id;
        let capital = IdSpace::new(run_id, "ledger").event_id(Seq(std::num::NonZeroU64::MIN));
        let what: Vec<String> =
            opening.iter().map(|(asset, amount)| format!("{} {asset}", amount.normalize())).collect();
        let mut lines = Vec::with_capacity(opening.len() * 2);
        for (asset, amount) in opening {
            lines.push((format!("{run_id}:wallet:{asset}"), *amount));
            lines.push((format!("{run_id}:capital:{asset}"), -*amount));
        }
        self.store
            .post(&LedgerTransaction {
                tx_id: capital.to_string(),
                run_id: run_id.clone(),
                correlation_id: None,
                at_ms,
                memo: format!("opening balances {}", what.join(", ")),
                lines,
            })
            .await?;
        Ok(())
    }

    async fn release(&mut self, chain: Uuid, at_ms: i64) -> Result<(), RecordError> {
        if let Some(id) = self.allocations.remove(&chain) {
            self.store.advance_risk(&id, AllocationState::Released, at_ms).await?;
        }
        Ok(())
    }

    async fn fill(&mut self, n: &Noted, f: &Fill, desk: &Source) -> Result<(), RecordError> {
        let run_id = &self.run_id;
        let fill_id = fill_id(run_id, &f.symbol, f.trade_id);
        let new = self
            .store
            .insert_fills(&[StoredFill {
                fill_id,
                client_order_id: f.client_id.to_string(),
                run_id: run_id.clone(),
                at_ms: f.time_ms,
                price: f.price,
                quantity: f.quantity,
                fee: f.fee,
                fee_asset: f.fee_asset.to_string(),
            }])
            .await?;
        if let Some(id) = self.allocations.get(&n.correlation) {
            self.store.advance_risk(id, AllocationState::Used, f.time_ms).await?;
        }
        if new == 0 {
            // Recorded before (a restart replaying it): the ledger and position already count it.
            return Ok(());
        }
        let (base, quote) = (&desk.base, &self.quote);
        let notional = f.quantity * f.price;
        let sign = match f.side {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        };
        let account = |what: &str, asset: &str| format!("{run_id}:{what}:{asset}");
        let mut lines = vec![
            (account("wallet", base), sign * f.quantity),
            (account("trading", base), -sign * f.quantity),
            (account("wallet", quote), -sign * notional),
            (account("trading", quote), sign * notional),
        ];
        if !f.fee.is_zero() {
            lines.push((account("fees", &f.fee_asset), f.fee));
            lines.push((account("wallet", &f.fee_asset), -f.fee));
        }
        self.store
            .post(&LedgerTransaction {
                tx_id: n.id.to_string(),
                run_id: run_id.clone(),
                correlation_id: Some(n.correlation.to_string()),
                at_ms: f.time_ms,
                memo: format!(
                    "fill {} {} {} {} @ {}",
                    f.client_id,
                    side(f.side),
                    f.quantity.normalize(),
                    base,
                    f.price.normalize()
                ),
                lines,
            })
            .await?;
        // The position: bought net of a fee in the base asset; the average entry moves on buys.
        let held = self.holdings.entry(desk.symbol.clone()).or_default();
        let base_fee = if *f.fee_asset == **base { f.fee } else { Decimal::ZERO };
        match f.side {
            Side::Buy => {
                let got = f.quantity - base_fee;
                let total = held.quantity + got;
                if !total.is_zero() {
                    held.avg_price = (held.avg_price * held.quantity + f.price * got) / total;
                }
                held.quantity = total;
            }
            Side::Sell => {
                held.quantity -= f.quantity + base_fee;
                if held.quantity.is_zero() {
                    held.avg_price = Decimal::ZERO;
                }
            }
        }
        let position = StoredPosition {
            run_id: run_id.clone(),
            symbol: desk.symbol.clone(),
            at_ms: f.time_ms,
            quantity: held.quantity,
            avg_price: (!held.quantity.is_zero()).then_some(held.avg_price.round_dp(8)),
            mark_price: Some(f.price),
        };
        self.store.upsert_position(&position).await?;
        self.store.insert_position_snapshots(&[position]).await?;
        Ok(())
    }

    /// Records how the session ended.
    pub async fn finish(
        &self,
        phase: &str,
        results: &serde_json::Value,
        at_ms: i64,
    ) -> Result<(), RecordError> {
        self.store.finish_run(&self.run_id, phase, None, Some(results), at_ms).await?;
        Ok(())
    }
}
