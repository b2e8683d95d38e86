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

/// What a trader runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The session's id (its run id): client order ids derive from it.
    pub session_id: String,
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

fn wall_ms() -> i64 {
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

/// One strategy on one symbol.
pub struct Trader<E: Exchange> {
    exchange: Arc<E>,
    plan: Plan,
    rules: ExchangeRules,
    ids: IdSpace,
    desk: Desk,
    tracker: OrderTracker,
    watchdog: Watchdog,
    last_open_ms: Option<i64>,
    /// The intent (desk) id of each order.
    intents: HashMap<ClientOrderId, String>,
    steps: Vec<Step>,
    suspended: bool,
}

impl<E: Exchange> Trader<E> {
    /// Reads the symbol's rules and warms the strategy up on the latest closed candles.
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
        for k in history.iter().filter(|k| k.closed) {
            if let Some(b) = bar(k) {
                // History: its signals were decided (or not) long ago.
                let _ = plan.strategy.on_bar(&b);
                last_open_ms = Some(k.open_ms);
            }
        }
        let now = wall_ms();
        Ok(Self {
            ids: IdSpace::new(&plan.session_id, &plan.symbol),
            desk: Desk::new(plan.limits.clone(), plan.budget, plan.costs.fee_rate(), now),
            watchdog: Watchdog::new(plan.stale_after_ms, plan.poll_every_ms, now),
            tracker: OrderTracker::new(),
            intents: HashMap::new(),
            steps: Vec::new(),
            suspended: false,
            last_open_ms,
            exchange,
            plan,
            rules,
        })
    }

    /// What happened so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The risk desk (budget, position, halts).
    pub fn desk(&self) -> &Desk {
        &self.desk
    }

    /// Time passes: the watchdog may find the data stale.
    pub fn tick(&mut self, now_ms: i64) {
        if let Some(change) = self.watchdog.tick(now_ms) {
            tracing::warn!(symbol = %self.plan.symbol, ?change, "market data is stale: no decisions until the stream delivers again");
            self.steps.push(Step::Health { at_ms: now_ms, change });
        }
    }

    /// A market stream event, handled at wall time `now_ms`. Its freshness is judged by when
    /// it was received, so a trader that fell behind its stream does not mistake old messages
    /// for live data.
    pub async fn on_stream(&mut self, event: StreamEvent, now_ms: i64) {
        let StreamEvent::Market(event, received_ms) = event else { return };
        if let Some(change) = self.watchdog.on_stream_message(received_ms, now_ms) {
            self.steps.push(Step::Health { at_ms: now_ms, change });
        }
        let MarketEvent::Kline { symbol, kline, .. } = event else { return };
        if symbol != self.plan.symbol {
            return;
        }
        self.desk.mark(&symbol, kline.close, now_ms);
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
            self.decide(side, &kline, now_ms).await;
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

    fn blocked(&mut self, at_ms: i64, reason: &str, detail: impl Into<String>) {
        self.steps.push(Step::Blocked { at_ms, reason: reason.to_owned(), detail: detail.into() });
    }

    /// A signal on the closed candle `kline`: an intent, checked, then an order.
    async fn decide(&mut self, side: Side, kline: &Kline, now_ms: i64) {
        let at = kline.open_ms;
        self.steps.push(Step::Signal { at_ms: at, side, price: kline.close });
        if self.suspended {
            return self.blocked(at, "suspended", "the kill switch is on: no new orders");
        }
        if !self.watchdog.may_trade() {
            return self.blocked(at, "stale_market_data", "no decision on stale market data");
        }
        let position = self.desk.position(&self.plan.symbol);
        let long = position >= self.rules.lot.min && !position.is_zero();
        // As the backtest: a buy when flat, a sell when long; one order at a time.
        if self.desk.open() > 0 || (side == Side::Buy) == long {
            return;
        }
        let quantity = match side {
            Side::Buy => {
                let budget = self.desk.free_quote() * self.plan.allocation;
                let unit = kline.close
                    * self.plan.costs.one_plus_fee()
                    * (Decimal::ONE + self.plan.costs.slippage_rate());
                if unit.is_zero() { Decimal::ZERO } else { self.rules.floor_quantity(budget / unit, true) }
            }
            Side::Sell => self.rules.floor_quantity(position, true),
        };
        let Some(seq) = NonZeroU64::new(u64::try_from(at / self.plan.interval_ms.max(1)).unwrap_or(0)) else {
            return self.blocked(at, "invalid_time", "a candle before 1970");
        };
        let id = self.ids.client_order_id(Seq(seq)).to_string();
        let Ok(client_id) = ClientOrderId::new(id.clone()) else {
            return self.blocked(at, "invalid_client_id", id);
        };
        let intent =
            Intent { id: id.clone(), symbol: self.plan.symbol.clone(), side, quantity, price: kline.close };
        if let Err(block) = self.desk.approve(&intent, now_ms) {
            return self.blocked(at, block.reason(), block.to_string());
        }
        let request = OrderRequest {
            symbol: self.plan.symbol.clone(),
            side,
            kind: OrderKind::Market,
            quantity,
            client_id,
        };
        match self.exchange.place(&request, &self.rules, kline.close).await {
            Ok((order, fills)) => {
                self.intents.insert(order.client_id.clone(), id);
                self.steps.push(Step::Submitted(order.clone()));
                self.apply(&order, &fills);
            }
            Err(ExchangeError::UnknownOutcome { client_id, detail }) => {
                // It may exist: the reservation stays until the exchange says what became of it.
                self.intents.insert(client_id, id);
                tracing::warn!(%detail, "an order's outcome is unknown: its account updates will tell");
            }
            Err(e) => {
                self.desk.end(&id);
                let reason = match e {
                    ExchangeError::Blocked(_) => "exchange_filter",
                    ExchangeError::Rejected { .. } => "rejected_by_exchange",
                    _ => "exchange_unavailable",
                };
                self.blocked(at, reason, e.to_string());
            }
        }
    }

    /// A report of `order` with the fills it carries: each fill counted once, then the order
    /// moved forward once (and its reservation released when it has ended).
    fn apply(&mut self, order: &Order, fills: &[Fill]) {
        let intent = self.intents.get(&order.client_id).cloned();
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
            self.desk.fill(intent.as_deref().unwrap_or(""), &execution);
            self.steps.push(Step::Fill(f));
        }
        if let Some(o) = changed {
            if !o.status.is_open()
                && let Some(id) = &intent
            {
                self.desk.end(id);
            }
            self.steps.push(Step::Order(o));
        }
    }

    /// An account update from the exchange.
    pub fn on_account(&mut self, event: UserEvent) {
        if let UserEvent::Update(AccountUpdate::Order { order, fill }) = event {
            // Only this trader's orders.
            if self.intents.contains_key(&order.client_id) {
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
    /// what happened.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        mut suspend: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, TraderError> {
        let feeds = [MarketFeed::Klines(self.plan.symbol.clone(), self.plan.interval.clone())];
        let mut market = self.exchange.market_stream(&feeds);
        let mut account = self.exchange.account_updates()?;
        let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
        let initially = *suspend.borrow_and_update();
        if initially {
            self.suspend(true).await;
        }
        tokio::pin!(stop);
        // A switch whose sender is gone stays where it is.
        let mut switch_alive = true;
        loop {
            tokio::select! {
                () = &mut stop => return Ok(self),
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
                    None => return Ok(self),
                },
                update = account.recv() => match update {
                    Some(u) => self.on_account(u),
                    None => return Ok(self),
                },
                _ = every.tick() => self.tick(wall_ms()),
            }
        }
    }
}
