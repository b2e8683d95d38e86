//! One strategy trading one symbol on an exchange.
//!
//! - **Warm-up**: the latest closed candles from REST go through the strategy first (their
//!   signals are history, not decisions), so it has its indicators at start.
//! - **Decisions** only on a closed candle newer than the last one seen, and only while the
//!   market data is healthy ([`Watchdog`]); a gap after a reconnect is back-filled from REST
//!   through the strategy before the new candle is decided on.
//! - **Intents** as in the backtest: a buy when flat spends `allocation` of the free budget, a
//!   sell when long sells the position; the quantity is floored to the symbol's lot.
//! - **Risk** before any order leaves: the [`Desk`] reserves the buy's cost or the sell's
//!   quantity, and refuses with a reason ([`Step::Blocked`]).
//! - **Orders** are market orders whose client id derives from the session, the symbol and the
//!   candle: the same decision made again after a restart is the same order to the exchange. Their
//!   life is followed by an [`OrderTracker`] from the placement's answer and the account's
//!   updates; each fill counts once in the desk.
//! - **Protective stops** (`risk.stopLossPct`): once an entry has filled (and no order of the
//!   trader is in flight), a stop-loss-limit sell of the position rests on the exchange, so the
//!   position stays protected while the agent is down. An exit cancels it before its sell leaves
//!   (a stop that filled meanwhile makes the exit moot); the kill switch cancels it with every
//!   other order and places it again when lifted; a restart adopts the one it finds, or places it
//!   again. Stops are not desk reservations: they sell only what the position holds.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kuant_agents::candles::Bar;
use kuant_agents::events::{IdSpace, Seq};
use kuant_agents::execution::Costs;
use kuant_agents::price::Price;
use kuant_agents::risk::{Desk, Execution, Intent, RiskLimits};
use kuant_agents::strategy::{AnyStrategy, Side, Strategy};
use kuant_agents::watchdog::{Change, Watchdog, gap};
use kuant_exchanges::binance::stream::StreamEvent;
use kuant_exchanges::binance::user_stream::UserEvent;
use kuant_exchanges::binance::wire::MarketEvent;
use kuant_exchanges::{
    AccountUpdate, ClientOrderId, Exchange, ExchangeError, ExchangeRules, Fill, Kline, MarketFeed, Order,
    OrderKind, OrderRequest, OrderTracker,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::judge::{Judge, Proposal, RulesJudge};
use crate::session::{Report, Snapshot};

/// What a trader runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The session's id (its run id): client order ids derive from it.
    pub session_id: String,
    /// The id stream of this trader within the session (e.g. `BTCUSDT/0`: the symbol and the
    /// strategy's index): its event ids and client order ids derive from it, so two strategies
    /// on one symbol never share an id.
    pub stream: String,
    /// The strategy's name as the manifest gives it (stored with each signal).
    pub strategy_name: String,
    /// E.g. `BTCUSDT`.
    pub symbol: String,
    /// The candles' interval, Binance's name (e.g. `1h`).
    pub interval: String,
    /// The interval in ms.
    pub interval_ms: i64,
    /// The strategy.
    pub strategy: AnyStrategy,
    /// Share of the free budget an entry spends.
    pub allocation: Decimal,
    /// Fees and slippage the sizing allows for.
    pub costs: Costs,
    /// The risk limits.
    pub limits: RiskLimits,
    /// The budget, in the symbol's quote asset.
    pub budget: Decimal,
    /// No stream message for this long: the data is stale.
    pub stale_after_ms: i64,
    /// While stale, poll REST this often (`None`: no fallback).
    pub poll_every_ms: Option<i64>,
    /// Closed candles read at start to warm the strategy up (at most 1,000).
    pub warm_up: u16,
    /// A protective stop this far (a fraction) below the entry price; `None`: no stop.
    pub stop_loss: Option<Decimal>,
}

/// What happened, in order: the session's event chain in the making.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The strategy signalled on the candle opening at `at_ms`, whose close was `price`.
    Signal {
        /// The candle's open time.
        at_ms: i64,
        /// Buy or sell.
        side: Side,
        /// The candle's close.
        price: Decimal,
    },
    /// The trade the signal asks for, sized (base quantity, valued at `price`).
    Intent {
        /// The candle's open time.
        at_ms: i64,
        /// Buy or sell.
        side: Side,
        /// Base quantity.
        quantity: Decimal,
        /// The price it is valued at.
        price: Decimal,
    },
    /// The judge's verdict on the intent, after the risk desk approved it.
    Judged {
        /// The candle's open time.
        at_ms: i64,
        /// Approved (an order follows) or not (a block follows).
        approved: bool,
        /// The judge's reason.
        reason: String,
    },
    /// Trading halted (the desk's daily loss or drawdown limit, or from outside), at wall time
    /// `at_ms`.
    Halted {
        /// When.
        at_ms: i64,
        /// E.g. `DrawdownLimit`.
        reason: String,
        /// The figures.
        message: String,
    },
    /// A trade that did not happen, and why (`reason` as stored, e.g. `stale_market_data`).
    Blocked {
        /// The candle's open time.
        at_ms: i64,
        /// The reason.
        reason: String,
        /// What a person reads.
        detail: String,
    },
    /// An order left (the exchange's answer).
    Submitted(Order),
    /// An order moved on (a fill, a cancel, an expiry).
    Order(Order),
    /// A fill, counted once.
    Fill(Fill),
    /// The market data's health changed, at wall time `at_ms`.
    Health {
        /// When.
        at_ms: i64,
        /// How.
        change: Change,
    },
}

/// Why a trader cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum TraderError {
    /// The exchange does not list the symbol.
    #[error("{exchange} does not list {symbol}")]
    UnknownSymbol {
        /// The exchange.
        exchange: String,
        /// The symbol.
        symbol: String,
    },
    /// The exchange failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// This machine's clock, Unix ms.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A candle as the strategy reads it; `None` when a price is outside the engine's range.
fn bar(k: &Kline) -> Option<Bar> {
    let price = |d: Decimal| Price::parse(&d.normalize().to_string()).ok();
    Some(Bar {
        time_ms: k.open_ms,
        open: price(k.open)?,
        high: price(k.high)?,
        low: price(k.low)?,
        close: price(k.close)?,
        volume: k.volume.try_into().unwrap_or(0.0),
    })
}

/// The bits of an event id's sequence number that number the events of one decision's chain:
/// the chain of the candle `k` (its open time over the interval) holds the sequence numbers
/// `k << CHAIN_BITS | slot`, so the same decision, made again after a restart, has the same
/// event ids and the same client order id.
const CHAIN_BITS: u32 = 16;
/// The slots of a chain.
const SIGNAL: u64 = 1;
const INTENT: u64 = 2;
const JUDGED: u64 = 3;
const SUBMITTED: u64 = 4;
const BLOCKED: u64 = 5;
/// The protective stops of the chain's entry, one slot per attempt (a stop the kill switch
/// cancelled is placed again under a new client id).
const STOPS: u64 = 0x10;
/// Attempts at a stop per entry.
const STOP_ATTEMPTS: u64 = 0x70;
/// The entry order's updates, numbered from here (up to 256).
const UPDATES: u64 = 0x100;
/// Each stop's updates (16 per attempt), numbered from here.
const STOP_UPDATES: u64 = 0x200;
/// How far below its stop price a triggered stop may still sell: its limit price.
const STOP_LIMIT_BAND: Decimal = Decimal::from_parts(5, 0, 0, false, 3);
/// Fills, by the exchange's trade id (its low 15 bits): a fill reported twice is one event.
const FILLS: u64 = 0x8000;
/// Candles this far from 1970 (in intervals) still fit a chain's sequence numbers.
const MAX_CANDLE: u64 = 1 << (62 - CHAIN_BITS);

/// A step with its place in the session's event chain: its id, the id of the signal that
/// started its chain (`correlation`) and of the event that caused it (`causation`). Steps outside
/// a decision (market-data health, halts) are chains of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Noted {
    /// The event's id.
    pub id: Uuid,
    /// Its chain: the signal's id.
    pub correlation: Uuid,
    /// What caused it.
    pub causation: Option<Uuid>,
    /// What happened.
    pub step: Step,
}

/// The chain an order belongs to.
#[derive(Clone, Copy, Debug)]
struct Chain {
    candle: u64,
    /// Its last event: the next update's cause.
    last: Uuid,
    updates: u64,
    /// The slot of its first update, and how many slots its updates have.
    update_slots: (u64, u64),
}

impl Chain {
    /// The chain of an entry or exit order.
    fn order(candle: u64, last: Uuid) -> Self {
        Self { candle, last, updates: 0, update_slots: (UPDATES, STOP_UPDATES - UPDATES) }
    }

    /// The chain of the protective stop `attempt` of the entry on `candle`.
    fn stop(candle: u64, attempt: u64, last: Uuid) -> Self {
        Self { candle, last, updates: 0, update_slots: (STOP_UPDATES + attempt * 16, 16) }
    }
}

/// One strategy on one symbol.
pub struct Trader<E: Exchange> {
    exchange: Arc<E>,
    plan: Plan,
    rules: ExchangeRules,
    ids: IdSpace,
    /// Ids of events outside a decision's chain.
    loose_ids: IdSpace,
    loose_seq: u64,
    desk: Desk,
    tracker: OrderTracker,
    watchdog: Watchdog,
    judge: Arc<dyn Judge>,
    last_open_ms: Option<i64>,
    last_price: Decimal,
    /// The chain of each order this trader placed.
    orders: HashMap<ClientOrderId, Chain>,
    journal: Vec<Noted>,
    suspended: bool,
    /// Where [`Trader::run_reporting`] reports (its index and channel).
    reporter: Option<(usize, tokio::sync::mpsc::Sender<Report>)>,
    /// The average price of the position's buys (0 when flat).
    entry_price: Decimal,
    /// Orders adopted at a restart: their updates' ids number from here (in the
    /// `<stream>#recovered` id space).
    recovered: HashMap<ClientOrderId, u64>,
    /// The protective stop resting for the position.
    stop: Option<ClientOrderId>,
    /// The candle of the position's entry (its stops belong to that chain) and the next stop
    /// attempt's number.
    entry_chain: Option<(u64, u64)>,
    /// A stop is wanted and not resting: place it at the next chance.
    stop_due: bool,
    /// Orders may be placed only while this says true (the agent's trading Lease); `None`:
    /// always.
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// A human's resume: a halt that began at or before the time it carries (wall ms) is lifted.
    resume: Option<tokio::sync::watch::Receiver<i64>>,
    /// When the current halt began (wall ms).
    halted_at_ms: Option<i64>,
}

impl<E: Exchange> Trader<E> {
    /// Reads the symbol's rules and warms the strategy up on the latest closed candles. Plans
    /// are judged by the rules judge unless [`Trader::with_judge`] says otherwise.
    pub async fn start(exchange: Arc<E>, mut plan: Plan) -> Result<Self, TraderError> {
        let rules = exchange.symbol_rules().await?.into_iter().find(|r| r.symbol == plan.symbol).ok_or_else(
            || TraderError::UnknownSymbol {
                exchange: exchange.name().to_owned(),
                symbol: plan.symbol.clone(),
            },
        )?;
        let history =
            exchange.klines(&plan.symbol, &plan.interval, None, None, plan.warm_up.clamp(1, 1000)).await?;
        let mut last_open_ms = None;
        let mut last_price = Decimal::ZERO;
        for k in history.iter().filter(|k| k.closed) {
            if let Some(b) = bar(k) {
                // History: its signals were decided (or not) long ago.
                let _ = plan.strategy.on_bar(&b);
                last_open_ms = Some(k.open_ms);
                last_price = k.close;
            }
        }
        let now = wall_ms();
        Ok(Self {
            ids: IdSpace::new(&plan.session_id, &plan.stream),
            loose_ids: IdSpace::new(&plan.session_id, &format!("{}#state", plan.stream)),
            loose_seq: 0,
            desk: Desk::new(plan.limits.clone(), plan.budget, plan.costs.fee_rate(), now),
            watchdog: Watchdog::new(plan.stale_after_ms, plan.poll_every_ms, now),
            tracker: OrderTracker::new(),
            judge: Arc::new(RulesJudge::default()),
            orders: HashMap::new(),
            journal: Vec::new(),
            suspended: false,
            reporter: None,
            recovered: HashMap::new(),
            stop: None,
            entry_chain: None,
            stop_due: false,
            gate: None,
            resume: None,
            halted_at_ms: None,
            entry_price: Decimal::ZERO,
            last_open_ms,
            last_price,
            exchange,
            plan,
            rules,
        })
    }

    /// Plans are judged by `judge`.
    #[must_use]
    pub fn with_judge(mut self, judge: Arc<dyn Judge>) -> Self {
        self.judge = judge;
        self
    }

    /// Orders are placed only while `gate` says true (and never once its sender is gone): the
    /// agent's hold on its trading Lease, so a pod that lost it stops placing orders before a
    /// replacement can start. Nothing is cancelled when it closes: the orders may be the
    /// replacement's to follow.
    #[must_use]
    pub fn with_gate(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// A human resumes through `resume` (the TradingSession's annotation `kuant.dev/resume-at`,
    /// as wall ms): each new value lifts a halt that began at or before it — a risk limit's or a
    /// recovery mismatch's — but not one that came later.
    #[must_use]
    pub fn with_resume(mut self, resume: tokio::sync::watch::Receiver<i64>) -> Self {
        self.resume = Some(resume);
        self
    }

    /// Whether the gate (if any) lets orders out now.
    pub fn gate_open(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.has_changed().is_ok() && *g.borrow())
    }

    /// What happened so far (and not yet taken by [`Trader::take_journal`]).
    pub fn steps(&self) -> Vec<&Step> {
        self.journal.iter().map(|n| &n.step).collect()
    }

    /// What happened so far, with the event ids (and not yet taken).
    pub fn journal(&self) -> &[Noted] {
        &self.journal
    }

    /// Takes what happened since the last call: the session hands it on to the store and the
    /// status.
    pub fn take_journal(&mut self) -> Vec<Noted> {
        std::mem::take(&mut self.journal)
    }

    /// The plan it trades.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The symbol's rules on the exchange.
    pub fn rules(&self) -> &ExchangeRules {
        &self.rules
    }

    /// The risk desk (budget, position, halts).
    pub fn desk(&self) -> &Desk {
        &self.desk
    }

    /// The average price the position was bought at (0 when flat).
    pub fn entry_price(&self) -> Decimal {
        self.entry_price
    }

    /// The latest price seen.
    pub fn last_price(&self) -> Decimal {
        self.last_price
    }

    /// Whether the market data is fresh enough to trade on.
    pub fn healthy(&self) -> bool {
        self.watchdog.may_trade()
    }

    /// When the last market-data message came (wall clock, ms), if one has.
    pub fn last_market_data_ms(&self) -> Option<i64> {
        self.watchdog.last_message_ms()
    }

    /// Whether the kill switch is on.
    pub fn suspended(&self) -> bool {
        self.suspended
    }

    /// Orders this trader placed that are still open (its protective stop included).
    pub fn open_orders(&self) -> usize {
        self.desk.open() + usize::from(self.stop.is_some())
    }

    /// The protective stop resting for the position, if any.
    pub fn stop(&self) -> Option<&ClientOrderId> {
        self.stop.as_ref()
    }

    /// The candle of the decision whose chain `id` belongs to, when it is one of this trader's
    /// ids (an event id, or the UUID of one of its client order ids).
    pub fn owns(&self, id: Uuid) -> Option<u64> {
        self.ids.seq_of(id).map(|seq| seq.0.get() >> CHAIN_BITS)
    }

    /// The attempt number when `id` is the client order id of one of this trader's protective
    /// stops.
    fn stop_attempt_of(&self, id: &ClientOrderId) -> Option<(u64, u64)> {
        let seq = self.seq_of_order(id)?;
        let slot = seq & ((1 << CHAIN_BITS) - 1);
        (STOPS..STOPS + STOP_ATTEMPTS).contains(&slot).then(|| (seq >> CHAIN_BITS, slot - STOPS))
    }

    /// After a restart: the client ids of this trader's stored orders, so the stop of the
    /// position's entry is numbered past every one placed before.
    pub fn recall_orders<'a>(&mut self, client_ids: impl IntoIterator<Item = &'a str>) {
        for id in client_ids {
            let Ok(id) = ClientOrderId::new(id.to_owned()) else { continue };
            if let Some((candle, attempt)) = self.stop_attempt_of(&id) {
                self.count_stop(candle, attempt);
            } else if let Some(seq) = self.seq_of_order(&id) {
                // An entry or exit: the latest one is the position's entry.
                self.entry_chain = self.entry_chain.max(Some((seq >> CHAIN_BITS, 0)));
            }
        }
    }

    /// Stop `attempt` of the entry on `candle` was placed: the next is numbered past it (the
    /// latest entry's chain, by candle, is the position's).
    fn count_stop(&mut self, candle: u64, attempt: u64) {
        self.entry_chain = self.entry_chain.max(Some((candle, attempt + 1)));
    }

    /// The client order id of the decision on `candle`.
    pub fn client_id(&self, candle: u64) -> Option<ClientOrderId> {
        self.order_id(candle, SUBMITTED).ok()
    }

    /// The client order id of slot `slot` of the chain of `candle` (its UUID is that slot's
    /// event id); the text when the exchange's rules refuse it.
    fn order_id(&self, candle: u64, slot: u64) -> Result<ClientOrderId, String> {
        let seq = NonZeroU64::new((candle << CHAIN_BITS) | slot).unwrap_or(NonZeroU64::MIN);
        let id = self.ids.client_order_id(Seq(seq)).to_string();
        ClientOrderId::new(id.clone()).map_err(|_| id)
    }

    /// The sequence number of `id` when it is one of this trader's client order ids.
    fn seq_of_order(&self, id: &ClientOrderId) -> Option<u64> {
        let uuid = kuant_agents::events::ClientOrderId::parse(id.as_str())?.0;
        self.ids.seq_of(uuid).map(|seq| seq.0.get())
    }

    /// After a restart: `order`, of the decision on `candle`, is followed again, with the fills
    /// it had while the trader was down. `announce`: the store has not seen the order yet (it
    /// was sent, then the process died), so it is reported as submitted first.
    pub fn adopt(&mut self, candle: u64, order: &Order, fills: &[Fill], announce: bool) {
        let (signal, judged, submitted) =
            (self.chain_id(candle, SIGNAL), self.chain_id(candle, JUDGED), self.chain_id(candle, SUBMITTED));
        if announce {
            self.note(submitted, signal, Some(judged), Step::Submitted(order.clone()));
        }
        // Updates after a restart get ids of their own space, numbered from the wall clock
        // (16 per order, 64 orders per millisecond), never reusing a stored id.
        let now = u64::try_from(wall_ms()).unwrap_or(0);
        let updates = now * 1024 + (self.recovered.len() as u64 % 64) * 16;
        self.orders.insert(order.client_id.clone(), Chain::order(candle, submitted));
        self.recovered.insert(order.client_id.clone(), updates);
        if let Some((candle, attempt)) = self.stop_attempt_of(&order.client_id) {
            if order.status.is_open() {
                self.stop = Some(order.client_id.clone());
            }
            self.count_stop(candle, attempt);
        }
        self.apply(order, fills);
    }

    /// After a restart: the decision on `candle` was stored but its order never reached the
    /// exchange.
    pub fn never_sent(&mut self, candle: u64, at_ms: i64) {
        let judged = self.chain_id(candle, JUDGED);
        let detail = "the process stopped before the order reached the exchange (found at restart)";
        self.blocked(candle, at_ms, judged, "never_sent", detail);
    }

    /// After a restart: the books as the store and the exchange left them.
    pub fn restore(&mut self, cash: Decimal, position: Decimal, entry_price: Decimal) {
        self.desk.restore(&self.plan.symbol, cash, position, self.last_price);
        self.entry_price = if position > Decimal::ZERO { entry_price } else { Decimal::ZERO };
    }

    /// Halts trading until a human resumes (reason as stored, e.g. `RecoveryMismatch`).
    pub fn halt(&mut self, reason: &str, message: &str) {
        self.desk.halt(reason, message);
        let now = wall_ms();
        self.halted_at_ms = Some(now);
        self.note_loose(
            now,
            Step::Halted { at_ms: now, reason: reason.to_owned(), message: message.to_owned() },
        );
    }

    /// A human resumes trading after a halt.
    pub fn resume(&mut self) {
        self.halted_at_ms = None;
        self.desk.resume();
    }

    /// A human's resume at `at_ms`: lifts the halt if it began at or before then.
    fn resume_from(&mut self, at_ms: i64) {
        if self.desk.halted().is_none() {
            return;
        }
        match self.halted_at_ms {
            Some(since) if since > at_ms => {
                tracing::warn!(since, at_ms, "a resume older than the halt: the halt stays");
            }
            _ => {
                tracing::warn!(symbol = %self.plan.symbol, "trading resumed by a human");
                self.resume();
            }
        }
    }

    /// Whether a protective stop should rest now and does not: a stop is asked for, the
    /// position holds at least a lot, no order is in flight, and the kill switch is off.
    fn stop_wanted(&self) -> bool {
        self.plan.stop_loss.is_some()
            && self.stop.is_none()
            && !self.suspended
            && self.gate_open()
            && self.desk.open() == 0
            && self.rules.floor_quantity(self.desk.position(&self.plan.symbol), false) >= self.rules.lot.min
            && !self.desk.position(&self.plan.symbol).is_zero()
    }

    /// Places the position's protective stop when one is wanted (see [`Trader::stop_wanted`]):
    /// a stop-loss-limit sell of the position, triggered `stop_loss` below the entry price, its
    /// limit [`STOP_LIMIT_BAND`] below that.
    pub async fn ensure_stop(&mut self) {
        self.stop_due = false;
        let Some(loss) = self.plan.stop_loss.filter(|_| self.stop_wanted()) else { return };
        let Some((candle, attempt)) = self.entry_chain.filter(|(_, a)| *a < STOP_ATTEMPTS) else {
            let now = wall_ms();
            let detail =
                "the position's entry is not known, or its stop was placed too often: no protective stop";
            return self.note_loose(
                now,
                Step::Blocked { at_ms: now, reason: "stop_not_placed".into(), detail: detail.into() },
            );
        };
        self.entry_chain = Some((candle, attempt + 1));
        let reference = if self.entry_price.is_zero() { self.last_price } else { self.entry_price };
        let stop_price = self.rules.price.floor(reference * (Decimal::ONE - loss));
        let price = self.rules.price.floor(stop_price * (Decimal::ONE - STOP_LIMIT_BAND));
        let quantity = self.rules.floor_quantity(self.desk.position(&self.plan.symbol), false);
        let Ok(client_id) = self.order_id(candle, STOPS + attempt) else { return };
        let request = OrderRequest {
            symbol: self.plan.symbol.clone(),
            side: Side::Sell,
            kind: OrderKind::StopLossLimit {
                stop_price,
                price,
                time_in_force: kuant_exchanges::TimeInForce::Gtc,
            },
            quantity,
            client_id: client_id.clone(),
        };
        let (id, signal, cause) = (
            self.chain_id(candle, STOPS + attempt),
            self.chain_id(candle, SIGNAL),
            self.chain_id(candle, SUBMITTED),
        );
        match self.exchange.place(&request, &self.rules, self.last_price).await {
            Ok((order, fills)) => {
                self.orders.insert(client_id.clone(), Chain::stop(candle, attempt, id));
                self.note(id, signal, Some(cause), Step::Submitted(order.clone()));
                if order.status.is_open() {
                    self.stop = Some(client_id);
                }
                self.apply(&order, &fills);
            }
            Err(ExchangeError::UnknownOutcome { detail, .. }) => {
                self.orders.insert(client_id.clone(), Chain::stop(candle, attempt, cause));
                self.stop = Some(client_id);
                tracing::warn!(%detail, "a stop's outcome is unknown: its account updates will tell");
            }
            Err(e) => {
                tracing::error!(error = %e, symbol = %self.plan.symbol, "the protective stop could not be placed; it is tried again on the next candle");
                let now = wall_ms();
                let detail = format!("the protective stop could not be placed: {e}");
                self.note_loose(now, Step::Blocked { at_ms: now, reason: "stop_not_placed".into(), detail });
            }
        }
    }

    /// Cancels the protective stop before an exit; false when it could not be (the exit waits).
    /// A stop that filled meanwhile is applied with its fills.
    async fn cancel_stop(&mut self) -> bool {
        let Some(id) = self.stop.clone() else { return true };
        let symbol = self.plan.symbol.clone();
        let order = match self.exchange.cancel(&symbol, &id).await {
            Ok(order) => order,
            Err(e) => match self.exchange.order(&symbol, &id).await {
                Ok(Some(order)) if !order.status.is_open() => order,
                _ => {
                    tracing::error!(error = %e, "the protective stop could not be cancelled: no exit until it is");
                    return false;
                }
            },
        };
        self.apply_with_fills(&order).await;
        self.stop.is_none()
    }

    fn chain_id(&self, candle: u64, slot: u64) -> Uuid {
        // `slot` ≥ 1, so the sequence number is never 0.
        let seq = NonZeroU64::new((candle << CHAIN_BITS) | slot).unwrap_or(NonZeroU64::MIN);
        self.ids.event_id(Seq(seq))
    }

    fn note(&mut self, id: Uuid, correlation: Uuid, causation: Option<Uuid>, step: Step) {
        self.journal.push(Noted { id, correlation, causation, step });
    }

    /// A chain of one (health, halts), numbered from the wall clock so ids stay distinct
    /// across restarts.
    fn note_loose(&mut self, at_ms: i64, step: Step) {
        self.loose_seq = self.loose_seq.saturating_add(1).max(u64::try_from(at_ms).unwrap_or(0));
        let id = self.loose_ids.event_id(Seq(NonZeroU64::new(self.loose_seq).unwrap_or(NonZeroU64::MIN)));
        self.note(id, id, None, step);
    }

    /// Time passes: the watchdog may find the data stale.
    pub fn tick(&mut self, now_ms: i64) {
        if let Some(change) = self.watchdog.tick(now_ms) {
            tracing::warn!(symbol = %self.plan.symbol, ?change, "market data is stale: no decisions until the stream delivers again");
            self.note_loose(now_ms, Step::Health { at_ms: now_ms, change });
        }
    }

    /// A market stream event, handled at wall time `now_ms`. Its freshness is judged by when
    /// it was received, so a trader that fell behind its stream does not mistake old messages
    /// for live data.
    pub async fn on_stream(&mut self, event: StreamEvent, now_ms: i64) {
        let StreamEvent::Market(event, received_ms) = event else { return };
        if let Some(change) = self.watchdog.on_stream_message(received_ms, now_ms) {
            self.note_loose(now_ms, Step::Health { at_ms: now_ms, change });
        }
        let MarketEvent::Kline { symbol, kline, .. } = event else { return };
        if symbol != self.plan.symbol {
            return;
        }
        self.last_price = kline.close;
        // The desk keeps the market's time (its days, its orders per minute), so a replay at
        // any speed is judged as the market lived it; the watchdog keeps the wall clock.
        if let Some(halt) = self.desk.mark(&symbol, kline.close, kline.open_ms) {
            tracing::error!(symbol = %symbol, reason = halt.reason(), %halt, "trading halted");
            self.halted_at_ms = Some(now_ms);
            let step =
                Step::Halted { at_ms: now_ms, reason: halt.reason().to_owned(), message: halt.to_string() };
            self.note_loose(now_ms, step);
        }
        if !kline.closed || self.last_open_ms.is_some_and(|last| kline.open_ms <= last) {
            return;
        }
        if let Some(last) = self.last_open_ms
            && let Some((from, to)) = gap(last, kline.open_ms, self.plan.interval_ms)
        {
            self.back_fill(from, to).await;
        }
        self.last_open_ms = Some(kline.open_ms);
        let Some(b) = bar(&kline) else { return };
        if let Some(side) = self.plan.strategy.on_bar(&b) {
            self.decide(side, &kline, kline.close_ms).await;
        }
        // A stop that could not be placed is tried again once a candle.
        if self.stop_wanted() {
            self.stop_due = true;
        }
    }

    /// Candles the stream missed go through the strategy before the next decision.
    async fn back_fill(&mut self, from: i64, to: i64) {
        match self.exchange.klines(&self.plan.symbol, &self.plan.interval, Some(from), Some(to), 1000).await {
            Ok(missed) => {
                for k in missed.iter().filter(|k| k.closed) {
                    if let Some(b) = bar(k) {
                        let _ = self.plan.strategy.on_bar(&b);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the candles missed during a reconnect could not be read"),
        }
    }

    fn blocked(&mut self, candle: u64, at_ms: i64, cause: Uuid, reason: &str, detail: impl Into<String>) {
        let step = Step::Blocked { at_ms, reason: reason.to_owned(), detail: detail.into() };
        let (id, signal) = (self.chain_id(candle, BLOCKED), self.chain_id(candle, SIGNAL));
        self.note(id, signal, Some(cause), step);
    }

    /// A signal on the closed candle `kline`, at market time `now_ms`: an intent, checked by the
    /// desk and the judge, then an order.
    async fn decide(&mut self, side: Side, kline: &Kline, now_ms: i64) {
        let at = kline.open_ms;
        let Some(candle) = u64::try_from(at / self.plan.interval_ms.max(1)).ok().filter(|c| *c < MAX_CANDLE)
        else {
            return tracing::warn!(open_ms = at, "a candle outside the ids' range: not decided on");
        };
        let signal = self.chain_id(candle, SIGNAL);
        self.note(signal, signal, None, Step::Signal { at_ms: at, side, price: kline.close });
        if self.suspended {
            return self.blocked(candle, at, signal, "suspended", "the kill switch is on: no new orders");
        }
        if !self.watchdog.may_trade() {
            return self.blocked(candle, at, signal, "stale_market_data", "no decision on stale market data");
        }
        if !self.gate_open() {
            let detail = "this agent does not hold the session's trading Lease: no orders";
            return self.blocked(candle, at, signal, "no_trading_lease", detail);
        }
        if self.desk.open() > 0 {
            self.settle_open().await;
        }
        // As the backtest: a buy when flat, a sell when long; one order at a time.
        if self.desk.open() > 0 || (side == Side::Buy) == self.long() {
            return;
        }
        // An exit first takes its protective stop off the exchange (it holds the position).
        if side == Side::Sell {
            if !self.cancel_stop().await {
                let detail = "the protective stop could not be cancelled: no exit while it rests";
                return self.blocked(candle, at, signal, "stop_not_cancelled", detail);
            }
            if !self.long() {
                // The stop sold it meanwhile.
                return;
            }
        }
        let quantity = match side {
            Side::Buy => {
                // As the backtest sizes a buy: what the budget buys at the price a market order
                // fills at (slipped, on the tick), its fee included.
                let budget = self.desk.free_quote() * self.plan.allocation;
                let price = kuant_agents::execution::execution_price(
                    kline.close,
                    Side::Buy,
                    &self.plan.costs,
                    &self.rules.engine_rules(),
                );
                let unit = price * self.plan.costs.one_plus_fee();
                if unit.is_zero() { Decimal::ZERO } else { self.rules.floor_quantity(budget / unit, true) }
            }
            Side::Sell => self.rules.floor_quantity(self.desk.position(&self.plan.symbol), true),
        };
        let intent_id = self.chain_id(candle, INTENT);
        let step = Step::Intent { at_ms: at, side, quantity, price: kline.close };
        self.note(intent_id, signal, Some(signal), step);
        let client_id = match self.order_id(candle, SUBMITTED) {
            Ok(c) => c,
            Err(id) => return self.blocked(candle, at, intent_id, "invalid_client_id", id),
        };
        let id = client_id.to_string();
        let intent =
            Intent { id: id.clone(), symbol: self.plan.symbol.clone(), side, quantity, price: kline.close };
        if let Err(block) = self.desk.approve(&intent, now_ms) {
            return self.blocked(candle, at, intent_id, block.reason(), block.to_string());
        }
        let proposal = Proposal {
            strategy: self.plan.strategy_name.clone(),
            symbol: self.plan.symbol.clone(),
            side,
            quantity,
            decided_at_price: kline.close,
            last_price: self.last_price,
        };
        let verdict = self.judge.judge(&proposal).await;
        let judged = self.chain_id(candle, JUDGED);
        let step = Step::Judged { at_ms: at, approved: verdict.approved, reason: verdict.reason.clone() };
        self.note(judged, signal, Some(intent_id), step);
        if !verdict.approved {
            self.desk.end(&id);
            return self.blocked(candle, at, judged, &verdict.reason, verdict.detail);
        }
        // Write-ahead: the decision is stored before its order leaves, so a process killed
        // while the order is on its way finds it again at restart (by its client id).
        if !self.write_ahead().await {
            self.desk.end(&id);
            return self.blocked(
                candle,
                at,
                judged,
                "not_recorded",
                "the store did not take the decision: no order",
            );
        }
        let request = OrderRequest {
            symbol: self.plan.symbol.clone(),
            side,
            kind: OrderKind::Market,
            quantity,
            client_id,
        };
        let submitted = self.chain_id(candle, SUBMITTED);
        match self.exchange.place_decided(&request, &self.rules, kline.close, kline.close_ms).await {
            Ok((order, fills)) => {
                self.orders.insert(order.client_id.clone(), Chain::order(candle, submitted));
                self.note(submitted, signal, Some(judged), Step::Submitted(order.clone()));
                self.apply(&order, &fills);
            }
            Err(ExchangeError::UnknownOutcome { client_id, detail }) => {
                // It may exist: the reservation stays until the exchange says what became of it.
                self.orders.insert(client_id, Chain::order(candle, judged));
                tracing::warn!(%detail, "an order's outcome is unknown: its account updates will tell");
            }
            Err(e) => {
                self.desk.end(&id);
                let (reason, detail) = match &e {
                    // The filter named, as the exchange names it.
                    ExchangeError::Blocked(v) => ("exchange_filter", format!("{}: {e}", v.filter())),
                    ExchangeError::Rejected { .. } => ("rejected_by_exchange", e.to_string()),
                    _ => ("exchange_unavailable", e.to_string()),
                };
                self.blocked(candle, at, judged, reason, detail);
            }
        }
    }

    /// An order still open at a new decision may have ended with its news on the way: the
    /// exchange is asked, and what became of it applied (its fills counted once), so the
    /// decision sees the books as they are.
    async fn settle_open(&mut self) {
        let open: Vec<String> = self.desk.open_ids().map(str::to_owned).collect();
        for id in open {
            let Ok(client) = ClientOrderId::new(id) else { continue };
            match self.exchange.order(&self.plan.symbol, &client).await {
                Ok(Some(order)) if !order.status.is_open() => self.apply_with_fills(&order).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "an open order's state could not be read"),
            }
        }
    }

    /// `order`, as the exchange answered a query, applied with the fills it had (read from the
    /// account's trades when it filled at all; each counts once).
    async fn apply_with_fills(&mut self, order: &Order) {
        let fills = if order.filled_quantity.is_zero() {
            Vec::new()
        } else {
            crate::recovery::fills_of(self.exchange.as_ref(), order).await.unwrap_or_default()
        };
        self.apply(order, &fills);
    }

    /// Whether the position holds at least a lot.
    fn long(&self) -> bool {
        let position = self.desk.position(&self.plan.symbol);
        position >= self.rules.lot.min && !position.is_zero()
    }

    /// Hands the journal to the reporter and waits until it says it is stored; true at once
    /// without a reporter.
    async fn write_ahead(&mut self) -> bool {
        let Some((trader, report)) = self.reporter.clone() else { return true };
        let (ack, stored) = tokio::sync::oneshot::channel();
        let batch =
            Report { trader, notes: self.take_journal(), snapshot: Snapshot::of(self), ack: Some(ack) };
        if report.send(batch).await.is_err() {
            return false;
        }
        stored.await.is_ok()
    }

    /// A report of `order` with the fills it carries: each fill counted once, then the order
    /// moved forward once (and its reservation released when it has ended).
    fn apply(&mut self, order: &Order, fills: &[Fill]) {
        let intent = self.orders.contains_key(&order.client_id).then(|| order.client_id.to_string());
        let mut changed = None;
        let reports: Vec<Option<&Fill>> =
            if fills.is_empty() { vec![None] } else { fills.iter().map(Some).collect() };
        for fill in reports {
            let applied = self.tracker.apply(order, fill);
            changed = changed.or(applied.changed);
            let Some(f) = applied.new_fill else { continue };
            let execution = Execution {
                symbol: &f.symbol,
                side: f.side,
                quantity: f.quantity,
                price: f.price,
                fee: f.fee,
                fee_in_base: *f.fee_asset == *self.rules.base_asset,
            };
            let before = self.desk.position(&self.plan.symbol);
            self.desk.fill(intent.as_deref().unwrap_or(""), &execution);
            let after = self.desk.position(&self.plan.symbol);
            if after <= Decimal::ZERO {
                self.entry_price = Decimal::ZERO;
            } else if after > before {
                self.entry_price = (self.entry_price * before + f.price * (after - before)) / after;
            }
            if f.side == Side::Buy
                && let Some(chain) = self.orders.get(&order.client_id)
                && self.entry_chain.is_none_or(|(c, _)| c != chain.candle)
            {
                // A new entry: its stops belong to its chain.
                self.entry_chain = Some((chain.candle, 0));
            }
            match self.orders.get(&order.client_id).copied() {
                Some(chain) => {
                    let id = self.chain_id(chain.candle, FILLS | (f.trade_id & (FILLS - 1)));
                    let signal = self.chain_id(chain.candle, SIGNAL);
                    self.note(id, signal, Some(chain.last), Step::Fill(f));
                }
                None => self.note_loose(f.time_ms, Step::Fill(f)),
            }
        }
        if let Some(o) = changed {
            if !o.status.is_open()
                && let Some(id) = &intent
            {
                self.desk.end(id);
            }
            if !o.status.is_open() && self.stop.as_ref() == Some(&o.client_id) {
                self.stop = None;
            }
            match self.orders.get(&order.client_id).copied() {
                Some(chain) => {
                    let id = match self.recovered.get(&order.client_id) {
                        Some(base) => {
                            let seq =
                                NonZeroU64::new(base + chain.updates.min(15)).unwrap_or(NonZeroU64::MIN);
                            IdSpace::new(&self.plan.session_id, &format!("{}#recovered", self.plan.stream))
                                .event_id(Seq(seq))
                        }
                        None => {
                            let (first, slots) = chain.update_slots;
                            self.chain_id(chain.candle, first + chain.updates.min(slots - 1))
                        }
                    };
                    self.orders.insert(
                        order.client_id.clone(),
                        Chain { last: id, updates: chain.updates + 1, ..chain },
                    );
                    let signal = self.chain_id(chain.candle, SIGNAL);
                    self.note(id, signal, Some(chain.last), Step::Order(o));
                }
                None => self.note_loose(o.updated_ms, Step::Order(o)),
            }
        }
        if self.stop_wanted() {
            self.stop_due = true;
        }
    }

    /// An account update from the exchange.
    pub fn on_account(&mut self, event: UserEvent) {
        if let UserEvent::Update(AccountUpdate::Order { order, fill }) = event {
            // Only this trader's orders.
            if self.orders.contains_key(&order.client_id) {
                self.apply(&order, fill.as_deref().map(std::slice::from_ref).unwrap_or_default());
            }
        }
    }

    /// The kill switch: while `on`, every open order of the symbol is cancelled (at once) and no
    /// new intent is decided; market data keeps flowing, so the strategy and the watchdog stay
    /// current. Off again, trading resumes.
    pub async fn suspend(&mut self, on: bool) {
        self.suspended = on;
        if !on {
            self.stop_due = self.stop_wanted();
            return;
        }
        match self.exchange.cancel_all(&self.plan.symbol).await {
            Ok(cancelled) => {
                for order in cancelled {
                    self.apply(&order, &[]);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the kill switch could not cancel the open orders; it tries again on the next change")
            }
        }
    }

    /// Trades until `stop` completes, with the kill switch `suspend` (see [`Trader::suspend`]);
    /// what happened stays in the journal.
    pub async fn run(
        self,
        stop: impl std::future::Future<Output = ()>,
        suspend: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, TraderError> {
        self.run_reporting(stop, suspend, None).await
    }

    /// As [`Trader::run`], handing what happens to `report` (this trader's index, and the
    /// channel) as it happens, with a snapshot at least every 250 ms; the journal stays empty.
    /// A full channel is backpressure: the trader waits for room and says so in the log —
    /// never an unbounded queue, never a dropped event.
    pub async fn run_reporting(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        suspend: tokio::sync::watch::Receiver<bool>,
        report: Option<(usize, tokio::sync::mpsc::Sender<Report>)>,
    ) -> Result<Self, TraderError> {
        self.reporter = report;
        let followed = self.follow(stop, suspend).await;
        // The channel closes when every trader has stopped: the session's reader ends then.
        self.reporter = None;
        followed.map(|()| self)
    }

    async fn follow(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
        mut suspend: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), TraderError> {
        let feeds = [MarketFeed::Klines(self.plan.symbol.clone(), self.plan.interval.clone())];
        let mut market = self.exchange.market_stream(&feeds);
        let mut account = self.exchange.account_updates()?;
        let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
        let initially = *suspend.borrow_and_update();
        if initially {
            self.suspend(true).await;
        }
        // After a restart the position may have lost its stop.
        self.stop_due = self.stop_wanted();
        tokio::pin!(stop);
        // A switch whose sender is gone stays where it is.
        let mut switch_alive = true;
        let mut resume = self.resume.take();
        loop {
            let mut ticked = false;
            tokio::select! {
                () = &mut stop => return Ok(()),
                changed = async { resume.as_mut()?.changed().await.ok() }, if resume.is_some() => {
                    match (changed, resume.as_mut()) {
                        (Some(()), Some(r)) => {
                            let at_ms = *r.borrow_and_update();
                            self.resume_from(at_ms);
                        }
                        _ => resume = None,
                    }
                }
                changed = suspend.changed(), if switch_alive => {
                    if changed.is_ok() {
                        let on = *suspend.borrow_and_update();
                        self.suspend(on).await;
                    } else {
                        switch_alive = false;
                    }
                }
                event = market.recv() => match event {
                    Some(e) => self.on_stream(e, wall_ms()).await,
                    None => return Ok(()),
                },
                update = account.recv() => match update {
                    Some(u) => self.on_account(u),
                    None => return Ok(()),
                },
                _ = every.tick() => {
                    self.tick(wall_ms());
                    ticked = true;
                }
            }
            if self.stop_due {
                self.ensure_stop().await;
            }
            if let Some((trader, report)) = self.reporter.clone()
                && (ticked || !self.journal.is_empty())
            {
                let batch =
                    Report { trader, notes: self.take_journal(), snapshot: Snapshot::of(self), ack: None };
                match report.try_send(batch) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(batch)) => {
                        tracing::warn!(stream = %self.plan.stream, "the session's report channel is full: the trader waits for the store");
                        if report.send(batch).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
            }
        }
    }
}
