//! The paper account: orders never leave the process. They fill at the first market price after
//! the decision (on candles: the next candle's open), with the backtest's fees and slippage and
//! the symbol's rules, through the engine's own execution functions, so a paper session and a
//! backtest of the same candles fill at the same prices and pay the same fees. Fees are charged
//! in the quote asset, as the backtest charges them.
//!
//! [`PaperAccount`] is pure: the caller feeds it candles. [`PaperExchange`] is the same account
//! behind the [`Exchange`] interface, fed by a real exchange's (or the simulator's) candles and
//! recording its balances in the store, so a reconciliation reads them as it reads an exchange's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kuant_agents::execution::{Costs, execution_price};
use rust_decimal::Decimal;

use tokio::sync::{broadcast, mpsc};

use crate::binance::stream::StreamEvent;
use crate::binance::user_stream::UserEvent;
use crate::binance::wire::MarketEvent;
use crate::error::{ExchangeError, RejectKind};
use crate::exchange::{Exchange, MarketFeed};
use crate::model::{
    AccountUpdate, Balance, ClientOrderId, Fill, Kline, Order, OrderKind, OrderRequest, OrderStatus, Side,
    TimeInForce, Trade,
};
use crate::rules::ExchangeRules;

/// A simulated account on one or more symbols.
pub struct PaperAccount {
    balances: BTreeMap<String, Decimal>,
    costs: Costs,
    rules: HashMap<String, ExchangeRules>,
    last_price: HashMap<String, Decimal>,
    /// The open time of the latest candle seen per symbol: the market's "now".
    market_time: HashMap<String, i64>,
    orders: HashMap<ClientOrderId, Order>,
    /// Open orders, oldest first.
    open: Vec<ClientOrderId>,
    /// Stop orders whose stop price was reached: they work as limits.
    triggered: std::collections::HashSet<ClientOrderId>,
    fills: Vec<Fill>,
    next_order_id: u64,
    next_trade_id: u64,
    /// The opens of the latest candles per symbol (at most [`OPENS_KEPT`]), oldest first: an
    /// order decided on a candle the account has already passed still fills at the open after
    /// its decision ([`PaperAccount::place_decided`]).
    opens: HashMap<String, std::collections::VecDeque<(i64, Decimal)>>,
}

/// An order that changed, with the fill that changed it.
pub type Changed = (Order, Option<Fill>);

/// Candle opens kept per symbol.
const OPENS_KEPT: usize = 512;

fn rejected(code: i64, reason: &str, kind: RejectKind) -> ExchangeError {
    ExchangeError::Rejected { code, reason: reason.to_owned(), kind }
}

impl PaperAccount {
    /// An account holding `balances`, filling with `costs`.
    pub fn new(balances: impl IntoIterator<Item = (String, Decimal)>, costs: Costs) -> Self {
        Self {
            balances: balances.into_iter().collect(),
            costs,
            rules: HashMap::new(),
            last_price: HashMap::new(),
            market_time: HashMap::new(),
            orders: HashMap::new(),
            open: Vec::new(),
            triggered: std::collections::HashSet::new(),
            fills: Vec::new(),
            next_order_id: 1,
            next_trade_id: 1,
            opens: HashMap::new(),
        }
    }

    /// Trades `rules.symbol` under `rules`.
    pub fn add_symbol(&mut self, rules: ExchangeRules) {
        self.rules.insert(rules.symbol.clone(), rules);
    }

    /// Every asset's balance (paper orders reserve nothing: they fill at the next price).
    pub fn balances(&self) -> Vec<Balance> {
        self.balances
            .iter()
            .map(|(a, f)| Balance { asset: a.clone(), free: *f, locked: Decimal::ZERO })
            .collect()
    }

    /// The market's time for `symbol`: the open time of the latest candle seen. An order taken
    /// now fills on the candle after it.
    pub fn market_time(&self, symbol: &str) -> Option<i64> {
        self.market_time.get(symbol).copied()
    }

    /// The latest price of `symbol` (a candle's close, or [`PaperAccount::mark`]).
    pub fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.last_price.get(symbol).copied()
    }

    /// Every fill, oldest first.
    pub fn fills(&self) -> &[Fill] {
        &self.fills
    }

    /// The order with `client_id`.
    pub fn order(&self, client_id: &ClientOrderId) -> Option<&Order> {
        self.orders.get(client_id)
    }

    /// The open orders, oldest first.
    pub fn open_orders(&self) -> Vec<&Order> {
        self.open.iter().filter_map(|id| self.orders.get(id)).collect()
    }

    fn free(&self, asset: &str) -> Decimal {
        self.balances.get(asset).copied().unwrap_or_default()
    }

    /// Takes `request` at `now_ms`: checked against the rules (valued at the last price seen)
    /// and the balance; it fills on the next candle.
    pub fn place(&mut self, request: &OrderRequest, now_ms: i64) -> Result<Order, ExchangeError> {
        self.take(request, now_ms, None)
    }

    /// Takes `request`, decided at market time `decided_ms` on a candle whose close was
    /// `reference` (what a market order is valued at). A market order fills as the backtest's
    /// does: at the open of the first candle opening after the decision — at once when the
    /// account's feed has already passed that open (a replay running ahead of the trader),
    /// otherwise when it arrives. Returns the order as taken and what changed (its fill).
    pub fn place_decided(
        &mut self,
        request: &OrderRequest,
        now_ms: i64,
        decided_ms: i64,
        reference: Decimal,
    ) -> Result<(Order, Vec<Changed>), ExchangeError> {
        let market = request.kind == OrderKind::Market;
        let taken = self.take(
            request,
            if market { decided_ms } else { now_ms },
            (market && reference > Decimal::ZERO).then_some(reference),
        )?;
        let next = self
            .opens
            .get(&*taken.symbol)
            .and_then(|opens| opens.iter().find(|(open_ms, _)| *open_ms > taken.created_ms).copied());
        let changed = match next {
            Some((open_ms, open)) if market => {
                let candle = Kline {
                    open_ms,
                    open,
                    high: open,
                    low: open,
                    close: open,
                    volume: Decimal::ZERO,
                    close_ms: open_ms,
                    closed: false,
                };
                self.fill_open(&taken.symbol.clone(), &candle, Some(&taken.client_id))
            }
            _ => Vec::new(),
        };
        Ok((taken, changed))
    }

    fn take(
        &mut self,
        request: &OrderRequest,
        now_ms: i64,
        reference: Option<Decimal>,
    ) -> Result<Order, ExchangeError> {
        if self.orders.contains_key(&request.client_id) {
            return Err(rejected(-2010, "Duplicate order sent.", RejectKind::DuplicateOrder));
        }
        let rules = self
            .rules
            .get(&request.symbol)
            .ok_or_else(|| rejected(-1121, "Invalid symbol.", RejectKind::Other))?;
        let reference = match request.kind.limit_price().or(reference) {
            Some(price) => price,
            None => self.last_price.get(&request.symbol).copied().ok_or_else(|| {
                rejected(-1013, "No price yet: a market order needs a candle first.", RejectKind::Filter)
            })?,
        };
        rules.check(request, reference)?;
        let enough = match request.side {
            Side::Buy => {
                self.free(&rules.quote_asset) >= reference * request.quantity * self.costs.one_plus_fee()
            }
            Side::Sell => self.free(&rules.base_asset) >= request.quantity,
        };
        if !enough {
            return Err(rejected(
                -2010,
                "Account has insufficient balance for requested action.",
                RejectKind::InsufficientBalance,
            ));
        }
        let order = Order::accepted(request, request.symbol.as_str().into(), self.next_order_id, now_ms);
        self.next_order_id += 1;
        self.orders.insert(order.client_id.clone(), order.clone());
        self.open.push(order.client_id.clone());
        Ok(order)
    }

    /// Cancels an open order.
    pub fn cancel(&mut self, client_id: &ClientOrderId, now_ms: i64) -> Result<Order, ExchangeError> {
        let Some(at) = self.open.iter().position(|id| id == client_id) else {
            return Err(rejected(-2011, "Unknown order sent.", RejectKind::UnknownOrder));
        };
        self.open.remove(at);
        let order = self
            .orders
            .get_mut(client_id)
            .ok_or_else(|| rejected(-2011, "Unknown order sent.", RejectKind::UnknownOrder))?;
        order.status = OrderStatus::Canceled;
        order.updated_ms = now_ms;
        Ok(order.clone())
    }

    /// A new candle of `symbol`: open orders placed before it fill, market orders at its open
    /// (with slippage, on the tick), limit orders at their price or better when it reaches them
    /// (an IOC that does not fill at the open expires). Returns what changed.
    pub fn on_candle(&mut self, symbol: &str, candle: &Kline) -> Vec<Changed> {
        let changed = self.fill_open(symbol, candle, None);
        self.last_price.insert(symbol.to_owned(), candle.close);
        let time = self.market_time.entry(symbol.to_owned()).or_insert(candle.open_ms);
        *time = (*time).max(candle.open_ms);
        let opens = self.opens.entry(symbol.to_owned()).or_default();
        if opens.back().is_none_or(|(last, _)| *last < candle.open_ms) {
            opens.push_back((candle.open_ms, candle.open));
            if opens.len() > OPENS_KEPT {
                opens.pop_front();
            }
        }
        changed
    }

    /// The open orders (only `only`, when given) that `candle` fills, filled.
    fn fill_open(&mut self, symbol: &str, candle: &Kline, only: Option<&ClientOrderId>) -> Vec<Changed> {
        let Some(rules) = self.rules.get(symbol).cloned() else { return Vec::new() };
        let engine_rules = rules.engine_rules();
        let mut changed = Vec::new();
        let mut still_open = Vec::new();
        for id in std::mem::take(&mut self.open) {
            if only.is_some_and(|only| *only != id) {
                still_open.push(id);
                continue;
            }
            let Some(mut order) = self.orders.get(&id).cloned() else { continue };
            // Only candles that open after the decision fill it.
            if &*order.symbol != symbol || candle.open_ms <= order.created_ms {
                still_open.push(id);
                continue;
            }
            // The price it fills at, if it does; and whether it is working as a limit (an IOC that
            // did not fill then expires).
            let (price, working) = match order.kind {
                OrderKind::Market => {
                    (Some(execution_price(candle.open, order.side, &self.costs, &engine_rules)), true)
                }
                OrderKind::Limit { price, time_in_force } => {
                    (limit_fill(order.side, price, time_in_force, candle), true)
                }
                OrderKind::StopLossLimit { stop_price, price, time_in_force } => {
                    if self.triggered.contains(&id) {
                        (limit_fill(order.side, price, time_in_force, candle), true)
                    } else {
                        match stop_trigger(order.side, stop_price, candle) {
                            // Not reached: it keeps waiting, whatever its time in force.
                            None => (None, false),
                            Some(at) => {
                                self.triggered.insert(id.clone());
                                // At the trigger it is a limit at `price` facing the price `at`.
                                let marketable = match order.side {
                                    Side::Buy => at <= price,
                                    Side::Sell => at >= price,
                                };
                                (marketable.then_some(at), true)
                            }
                        }
                    }
                }
            };
            let Some(price) = price else {
                if working && order.kind.time_in_force() == Some(TimeInForce::Ioc) {
                    order.status = OrderStatus::Expired;
                    order.updated_ms = candle.open_ms;
                    self.orders.insert(id, order.clone());
                    changed.push((order, None));
                } else {
                    still_open.push(id);
                }
                continue;
            };
            let notional = price * order.quantity;
            let fee = notional * self.costs.fee_rate();
            let (base, quote) = (rules.base_asset.clone(), rules.quote_asset.clone());
            let covered = match order.side {
                Side::Buy => self.free(&quote) >= notional + fee,
                Side::Sell => self.free(&base) >= order.quantity,
            };
            if !covered {
                // The balance moved since the order was taken: refused as the exchange would.
                order.status = OrderStatus::Rejected;
                order.updated_ms = candle.open_ms;
                self.orders.insert(id, order.clone());
                changed.push((order, None));
                continue;
            }
            match order.side {
                Side::Buy => {
                    *self.balances.entry(quote.clone()).or_default() -= notional + fee;
                    *self.balances.entry(base).or_default() += order.quantity;
                }
                Side::Sell => {
                    *self.balances.entry(base).or_default() -= order.quantity;
                    *self.balances.entry(quote.clone()).or_default() += notional - fee;
                }
            }
            order.filled_quantity = order.quantity;
            order.filled_quote = notional;
            order.status = OrderStatus::Filled;
            order.updated_ms = candle.open_ms;
            let fill = Fill {
                symbol: symbol.into(),
                client_id: order.client_id.clone(),
                order_id: order.exchange_id,
                trade_id: self.next_trade_id,
                side: order.side,
                price,
                quantity: order.quantity,
                fee,
                fee_asset: quote.into(),
                maker: !matches!(order.kind, OrderKind::Market) && price != candle.open,
                time_ms: candle.open_ms,
            };
            self.next_trade_id += 1;
            self.fills.push(fill.clone());
            self.orders.insert(id, order.clone());
            changed.push((order, Some(fill)));
        }
        self.open = still_open;
        changed
    }
}

/// Where a limit at `price` fills in `candle`: at the open when the open is at or better than
/// it, at its price when the candle reaches it (GTC only: an IOC has only the open).
fn limit_fill(side: Side, price: Decimal, time_in_force: TimeInForce, candle: &Kline) -> Option<Decimal> {
    let (at_open, within) = match side {
        Side::Buy => (candle.open <= price, candle.low <= price),
        Side::Sell => (candle.open >= price, candle.high >= price),
    };
    if at_open {
        Some(candle.open)
    } else if within && time_in_force == TimeInForce::Gtc {
        Some(price)
    } else {
        None
    }
}

/// The price at which a stop at `stop_price` triggers in `candle`, if it does: the open when it
/// opens beyond the stop (a gap), else the stop price when the candle reaches it (a sell's when
/// the price falls to it, a buy's when it rises to it).
fn stop_trigger(side: Side, stop_price: Decimal, candle: &Kline) -> Option<Decimal> {
    let (at_open, within) = match side {
        Side::Sell => (candle.open <= stop_price, candle.low <= stop_price),
        Side::Buy => (candle.open >= stop_price, candle.high >= stop_price),
    };
    if at_open { Some(candle.open) } else { within.then_some(stop_price) }
}

/// Where a [`PaperExchange`] records its balances: the store and the session (run) they belong
/// to (the run's row must exist).
#[derive(Clone, Debug)]
pub struct BalanceRecorder {
    /// The store.
    pub store: kuant_store::Store,
    /// The session's run id.
    pub run_id: String,
}

impl BalanceRecorder {
    async fn record(&self, balances: &[Balance], at_ms: i64) -> Result<(), kuant_store::SqlError> {
        let rows: Vec<kuant_store::PaperBalance> = balances
            .iter()
            .map(|b| kuant_store::PaperBalance {
                asset: b.asset.clone(),
                free: b.free,
                locked: b.locked,
                at_ms,
            })
            .collect();
        self.store.record_paper_balances(&self.run_id, &rows).await.map(|_| ())
    }
}

/// A [`PaperAccount`] behind the [`Exchange`] interface. Market data, rules and prices come from
/// `market` (Binance's public data, or a simulator); orders never leave the process and fill as
/// `market`'s candles of `interval` arrive (the first update of the candle after the order: its
/// open). Every change is announced on [`Exchange::account_updates`] and the balances are
/// recorded (with a [`BalanceRecorder`]) at the start and after every fill.
pub struct PaperExchange<M: Exchange> {
    market: Arc<M>,
    account: Arc<Mutex<PaperAccount>>,
    updates: broadcast::Sender<AccountUpdate>,
    feed: tokio::task::JoinHandle<()>,
    recorder: Option<BalanceRecorder>,
    /// The candles' interval of the account's feed.
    interval: String,
    /// The symbols of the account's feed.
    symbols: Vec<String>,
    /// Readers of the account's own feed (see [`Exchange::market_stream`]).
    readers: Readers,
}

/// A reader of a paper account's market feed: the symbols it follows, and its channel.
type Reader = (Vec<String>, mpsc::Sender<StreamEvent>);
/// The readers of a paper account's market feed.
type Readers = Arc<Mutex<Vec<Reader>>>;

impl<M: Exchange> Drop for PaperExchange<M> {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

fn locked<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change (to the account, to the readers) is whole before the lock is let go.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<M: Exchange> PaperExchange<M> {
    /// Trades `account` on `symbols` (their rules read from `market`), filling on `market`'s
    /// candles of `interval`: the current candle is read first (the account's price and time),
    /// then the stream is followed. Records the opening balances when `recorder` is given (a
    /// store that cannot be written then is an error; later failures are logged and the next
    /// change writes every asset again).
    pub async fn start(
        market: Arc<M>,
        mut account: PaperAccount,
        symbols: &[String],
        interval: &str,
        recorder: Option<BalanceRecorder>,
    ) -> Result<Self, ExchangeError> {
        let rules = market.symbol_rules().await?;
        for symbol in symbols {
            let r = rules.iter().find(|r| r.symbol == *symbol).ok_or_else(|| ExchangeError::Rejected {
                code: -1121,
                reason: format!("Invalid symbol: {} does not list {symbol}.", market.name()),
                kind: RejectKind::Other,
            })?;
            account.add_symbol(r.clone());
            if let Some(current) = market.klines(symbol, interval, None, None, 1).await?.pop() {
                account.on_candle(symbol, &current);
            }
        }
        let opening = (account.balances(), symbols.iter().filter_map(|s| account.market_time(s)).max());
        if let Some(recorder) = &recorder {
            recorder.record(&opening.0, opening.1.unwrap_or_default()).await.map_err(|e| {
                ExchangeError::Unavailable(format!("recording the paper account's opening balances: {e}"))
            })?;
        }
        let account = Arc::new(Mutex::new(account));
        let (updates, _) = broadcast::channel(1024);
        let feeds: Vec<MarketFeed> =
            symbols.iter().map(|s| MarketFeed::Klines(s.clone(), interval.to_owned())).collect();
        let stream = market.market_stream(&feeds);
        let readers = Readers::default();
        let feed =
            tokio::spawn(feed(stream, account.clone(), updates.clone(), recorder.clone(), readers.clone()));
        Ok(Self {
            market,
            account,
            updates,
            feed,
            recorder,
            interval: interval.to_owned(),
            symbols: symbols.to_vec(),
            readers,
        })
    }

    /// The account's fills so far, oldest first.
    pub fn fills(&self) -> Vec<Fill> {
        locked(&self.account).fills().to_vec()
    }

    /// Takes `order` (decided at a market time, on a price, when given; see
    /// [`PaperAccount::place_decided`]), announces it and what it changed, and records the
    /// balances when it filled at once.
    async fn take(
        &self,
        order: &OrderRequest,
        decided: Option<(i64, Decimal)>,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        let (placed, changed, balances) = {
            let mut a = locked(&self.account);
            let now = a.market_time(&order.symbol).unwrap_or_default();
            let taken = match decided {
                Some((decided_ms, reference)) => a.place_decided(order, now, decided_ms, reference),
                None => a.place(order, now).map(|o| (o, Vec::new())),
            };
            match taken {
                Ok((placed, changed)) => {
                    let filled = changed.iter().any(|(_, fill)| fill.is_some());
                    (placed, changed, filled.then(|| (a.balances(), now)))
                }
                // The client order id is the idempotency key: the order it already names, as
                // the Binance adapter answers a duplicate.
                Err(e @ ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, .. }) => {
                    return a.order(&order.client_id).cloned().map(|o| (o, Vec::new())).ok_or(e);
                }
                Err(e) => return Err(e),
            }
        };
        let _ = self.updates.send(AccountUpdate::Order { order: placed.clone(), fill: None });
        // The order as it stands now, with the fills it got at once.
        let mut now = (placed.clone(), Vec::new());
        for (order, fill) in changed.iter().filter(|(o, _)| o.client_id == placed.client_id) {
            now.0 = order.clone();
            now.1.extend(fill.clone());
        }
        publish(&self.updates, self.recorder.as_ref(), changed, balances).await;
        Ok(now)
    }
}

/// Feeds `market`'s candles to the account, announces what changed and records the balances;
/// then hands each event on to the account's `readers`, so a reader never sees a candle before
/// the account has filled on it.
async fn feed(
    mut market: mpsc::Receiver<StreamEvent>,
    account: Arc<Mutex<PaperAccount>>,
    updates: broadcast::Sender<AccountUpdate>,
    recorder: Option<BalanceRecorder>,
    readers: Readers,
) {
    while let Some(event) = market.recv().await {
        on_feed(&event, &account, &updates, recorder.as_ref()).await;
        let symbol = match &event {
            StreamEvent::Market(MarketEvent::Kline { symbol, .. }, _) => Some(symbol.clone()),
            StreamEvent::Market(..) => continue,
            _ => None,
        };
        let current: Vec<_> = locked(&readers).clone();
        let mut gone = Vec::new();
        for (symbols, reader) in &current {
            if symbol.as_ref().is_some_and(|s| !symbols.contains(s)) {
                continue;
            }
            // A reader that is full is waited for (backpressure, never a dropped candle).
            if reader.send(event.clone()).await.is_err() {
                gone.push(reader.clone());
            }
        }
        if !gone.is_empty() {
            locked(&readers).retain(|(_, r)| !gone.iter().any(|g| g.same_channel(r)));
        }
    }
}

/// One event of the account's feed: a candle fills what it fills.
async fn on_feed(
    event: &StreamEvent,
    account: &Mutex<PaperAccount>,
    updates: &broadcast::Sender<AccountUpdate>,
    recorder: Option<&BalanceRecorder>,
) {
    let StreamEvent::Market(MarketEvent::Kline { symbol, kline, .. }, _) = event else { return };
    let (changed, balances) = {
        let mut a = locked(account);
        let changed = a.on_candle(symbol, kline);
        let filled = changed.iter().any(|(_, fill)| fill.is_some());
        (changed, filled.then(|| (a.balances(), kline.open_ms)))
    };
    publish(updates, recorder, changed, balances).await;
}

/// Announces what changed and, after a fill, the balances (as of `at_ms`), which are recorded
/// too; a balance not recorded is written again with the next fill.
async fn publish(
    updates: &broadcast::Sender<AccountUpdate>,
    recorder: Option<&BalanceRecorder>,
    changed: Vec<Changed>,
    balances: Option<(Vec<Balance>, i64)>,
) {
    for (order, fill) in changed {
        let _ = updates.send(AccountUpdate::Order { order, fill: fill.map(Box::new) });
    }
    let Some((balances, at_ms)) = balances else { return };
    let _ = updates.send(AccountUpdate::Balances { balances: balances.clone(), time_ms: at_ms });
    if let Some(recorder) = recorder
        && let Err(e) = recorder.record(&balances, at_ms).await
    {
        tracing::warn!(run_id = %recorder.run_id, error = %e, "the paper account's balances were not recorded; the next fill writes them again");
    }
}

impl<M: Exchange> Exchange for PaperExchange<M> {
    fn name(&self) -> &str {
        "paper"
    }

    async fn symbol_rules(&self) -> Result<Vec<ExchangeRules>, ExchangeError> {
        self.market.symbol_rules().await
    }

    async fn klines(
        &self,
        symbol: &str,
        interval: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: u16,
    ) -> Result<Vec<Kline>, ExchangeError> {
        self.market.klines(symbol, interval, start_ms, end_ms, limit).await
    }

    async fn latest_price(&self, symbol: &str) -> Result<Decimal, ExchangeError> {
        self.market.latest_price(symbol).await
    }

    async fn balances(&self) -> Result<Vec<Balance>, ExchangeError> {
        Ok(locked(&self.account).balances())
    }

    /// Checked against the account's own copy of the symbol's rules (the same `exchangeInfo`),
    /// valued at the latest price it saw; `reference_price` is not needed.
    async fn place(
        &self,
        order: &OrderRequest,
        _rules: &ExchangeRules,
        _reference_price: Decimal,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        self.take(order, None).await
    }

    async fn place_decided(
        &self,
        order: &OrderRequest,
        _rules: &ExchangeRules,
        reference_price: Decimal,
        decided_ms: i64,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        self.take(order, Some((decided_ms, reference_price))).await
    }

    async fn order(&self, _symbol: &str, client_id: &ClientOrderId) -> Result<Option<Order>, ExchangeError> {
        Ok(locked(&self.account).order(client_id).cloned())
    }

    async fn cancel(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Order, ExchangeError> {
        let canceled = {
            let mut a = locked(&self.account);
            let now = a.market_time(symbol).unwrap_or_default();
            a.cancel(client_id, now)?
        };
        let _ = self.updates.send(AccountUpdate::Order { order: canceled.clone(), fill: None });
        Ok(canceled)
    }

    async fn cancel_all(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        let canceled: Vec<Order> = {
            let mut a = locked(&self.account);
            let now = a.market_time(symbol).unwrap_or_default();
            let open: Vec<ClientOrderId> = a
                .open_orders()
                .into_iter()
                .filter(|o| &*o.symbol == symbol)
                .map(|o| o.client_id.clone())
                .collect();
            open.iter().filter_map(|id| a.cancel(id, now).ok()).collect()
        };
        for order in &canceled {
            let _ = self.updates.send(AccountUpdate::Order { order: order.clone(), fill: None });
        }
        Ok(canceled)
    }

    async fn open_orders(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        Ok(locked(&self.account)
            .open_orders()
            .into_iter()
            .filter(|o| &*o.symbol == symbol)
            .cloned()
            .collect())
    }

    async fn trades(&self, symbol: &str, since_ms: Option<i64>) -> Result<Vec<Trade>, ExchangeError> {
        Ok(locked(&self.account)
            .fills()
            .iter()
            .filter(|f| &*f.symbol == symbol && since_ms.is_none_or(|s| f.time_ms >= s))
            .map(Trade::from)
            .collect())
    }

    /// Candles of the account's own feed come through the account: each after the account has
    /// filled on it, so a trader never decides on a candle the account has not seen. Other
    /// feeds come from the market.
    fn market_stream(&self, feeds: &[MarketFeed]) -> mpsc::Receiver<StreamEvent> {
        let own: Option<Vec<String>> = feeds
            .iter()
            .map(|f| match f {
                MarketFeed::Klines(symbol, interval)
                    if *interval == self.interval && self.symbols.contains(symbol) =>
                {
                    Some(symbol.clone())
                }
                _ => None,
            })
            .collect();
        match own {
            Some(symbols) if !symbols.is_empty() => {
                let (tx, rx) = mpsc::channel(1024);
                locked(&self.readers).push((symbols, tx));
                rx
            }
            _ => self.market.market_stream(feeds),
        }
    }

    /// Subscribed at once; every change of the account from then on.
    fn account_updates(&self) -> Result<mpsc::Receiver<UserEvent>, ExchangeError> {
        let (tx, rx) = mpsc::channel(1024);
        let mut updates = self.updates.subscribe();
        tokio::spawn(async move {
            if tx.send(UserEvent::Subscribed).await.is_err() {
                return;
            }
            loop {
                let event = match updates.recv().await {
                    Ok(update) => UserEvent::Update(update),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // As after a reconnect: the reader asks for orders and balances again.
                        tracing::warn!(missed, "a slow reader missed paper account updates");
                        UserEvent::Subscribed
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    const H: i64 = 3_600_000;

    fn candle(i: i64, open: &str, high: &str, low: &str, close: &str) -> Kline {
        Kline {
            open_ms: i * H,
            open: d(open),
            high: d(high),
            low: d(low),
            close: d(close),
            volume: d("1"),
            close_ms: i * H + H - 1,
            closed: true,
        }
    }

    fn account() -> PaperAccount {
        let costs = Costs::from_bps(10.0, 5.0).expect("costs");
        let mut a = PaperAccount::new([("USDT".to_owned(), d("10000"))], costs);
        a.add_symbol(ExchangeRules::binance_default("BTCUSDT").expect("rules"));
        a
    }

    fn request(id: &str, side: Side, kind: OrderKind, quantity: &str) -> OrderRequest {
        OrderRequest {
            symbol: "BTCUSDT".into(),
            side,
            kind,
            quantity: d(quantity),
            client_id: ClientOrderId::new(id).expect("id"),
        }
    }

    #[test]
    fn a_market_order_fills_at_the_next_open_as_the_backtest_fills() {
        let mut a = account();
        assert!(a.place(&request("m0", Side::Buy, OrderKind::Market, "0.01"), 0).is_err(), "no price yet");
        a.on_candle("BTCUSDT", &candle(0, "50000", "50100", "49900", "50050"));
        let placed = a.place(&request("m1", Side::Buy, OrderKind::Market, "0.1"), H - 1).expect("taken");
        assert_eq!(placed.status, OrderStatus::New);
        let changed = a.on_candle("BTCUSDT", &candle(1, "50200", "50300", "50100", "50250"));
        let (order, fill) = &changed[0];
        let fill = fill.as_ref().expect("filled");
        // The engine's own execution price: the open plus 5 bp of slippage, on the tick.
        let costs = Costs::from_bps(10.0, 5.0).expect("costs");
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules").engine_rules();
        let expected = execution_price(d("50200"), Side::Buy, &costs, &rules);
        assert_eq!(expected, d("50225.10"));
        assert_eq!((order.status, fill.price), (OrderStatus::Filled, expected));
        assert_eq!(fill.fee, expected * d("0.1") * d("0.001"));
        let usdt = a.balances().into_iter().find(|b| b.asset == "USDT").expect("USDT").free;
        assert_eq!(usdt, d("10000") - expected * d("0.1") - fill.fee);
        // And back: the sell pays its fee from the proceeds.
        a.place(&request("m2", Side::Sell, OrderKind::Market, "0.1"), 2 * H - 1).expect("taken");
        let changed = a.on_candle("BTCUSDT", &candle(2, "50000", "50000", "50000", "50000"));
        let sold = changed[0].1.as_ref().expect("filled");
        assert_eq!(sold.price, execution_price(d("50000"), Side::Sell, &costs, &rules));
        assert!(a.balances().iter().any(|b| b.asset == "BTC" && b.free.is_zero()));
    }

    #[test]
    fn limits_fill_when_reached_an_ioc_expires_and_refusals_are_binances() {
        let mut a = account();
        a.on_candle("BTCUSDT", &candle(0, "50000", "50000", "50000", "50000"));
        a.place(
            &request(
                "l1",
                Side::Buy,
                OrderKind::Limit { price: d("49000"), time_in_force: TimeInForce::Gtc },
                "0.1",
            ),
            1,
        )
        .expect("taken");
        a.place(
            &request(
                "l2",
                Side::Buy,
                OrderKind::Limit { price: d("49000"), time_in_force: TimeInForce::Ioc },
                "0.1",
            ),
            1,
        )
        .expect("taken");
        let changed = a.on_candle("BTCUSDT", &candle(1, "50000", "50100", "49500", "49600"));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0.status, OrderStatus::Expired);
        assert_eq!(a.open_orders().len(), 1);
        let changed = a.on_candle("BTCUSDT", &candle(2, "49600", "49700", "48800", "48900"));
        let fill = changed[0].1.as_ref().expect("filled");
        assert_eq!((fill.price, fill.maker), (d("49000"), true));
        let dup = a.place(&request("l1", Side::Buy, OrderKind::Market, "0.1"), 3 * H);
        assert!(matches!(dup, Err(ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, .. })));
        let broke = a.place(&request("b1", Side::Buy, OrderKind::Market, "1"), 3 * H);
        assert!(matches!(broke, Err(ExchangeError::Rejected { kind: RejectKind::InsufficientBalance, .. })));
        let tiny = a.place(&request("t1", Side::Buy, OrderKind::Market, "0.000001"), 3 * H);
        assert!(matches!(tiny, Err(ExchangeError::Blocked(_))));
        a.place(
            &request(
                "c1",
                Side::Sell,
                OrderKind::Limit { price: d("90000"), time_in_force: TimeInForce::Gtc },
                "0.05",
            ),
            3 * H,
        )
        .expect("taken");
        assert_eq!(
            a.cancel(&ClientOrderId::new("c1").expect("id"), 3 * H).expect("cancelled").status,
            OrderStatus::Canceled
        );
        assert!(a.cancel(&ClientOrderId::new("c1").expect("id"), 3 * H).is_err());
    }

    #[test]
    fn a_stop_loss_waits_then_sells_at_its_stop_or_rests_after_a_gap() {
        let mut a = account();
        a.on_candle("BTCUSDT", &candle(0, "50000", "50000", "50000", "50000"));
        a.place(&request("m1", Side::Buy, OrderKind::Market, "0.15"), 0).expect("taken");
        a.on_candle("BTCUSDT", &candle(1, "50000", "50100", "49900", "50000"));
        let stop = |stop: &str, price: &str| OrderKind::StopLossLimit {
            stop_price: d(stop),
            price: d(price),
            time_in_force: TimeInForce::Gtc,
        };
        a.place(&request("s1", Side::Sell, stop("49000", "48900"), "0.07"), H).expect("taken");
        a.place(&request("s2", Side::Sell, stop("48000", "47900"), "0.07"), H).expect("taken");
        assert!(
            a.on_candle("BTCUSDT", &candle(2, "50000", "50200", "49500", "49800")).is_empty(),
            "not reached"
        );
        // Falls through 49,000 within the candle: s1 sells at its stop (its limit is below it).
        let changed = a.on_candle("BTCUSDT", &candle(3, "49800", "49800", "48500", "48600"));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].1.as_ref().map(|f| f.price), Some(d("49000")));
        // Opens below 48,000 and below its limit: triggered, it rests as a limit at 47,900...
        assert!(a.on_candle("BTCUSDT", &candle(4, "47500", "47800", "47000", "47700")).is_empty());
        assert_eq!(a.open_orders().len(), 1);
        // ...and sells when the price comes back to it.
        let changed = a.on_candle("BTCUSDT", &candle(5, "47700", "48000", "47600", "47950"));
        assert_eq!(changed[0].1.as_ref().map(|f| f.price), Some(d("47900")));
        assert!(a.open_orders().is_empty());
    }
}
