//! The simulator's matching engine: one account trading against a simulated market.
//!
//! The market of each symbol is a price (moved by the replayed data) and a synthetic book around
//! it: `levels` price levels on each side, `level_quantity` each, `level_step` apart, the best
//! `half_spread` away from the price. The account's orders:
//! - market orders walk the opposite side's levels (that is their slippage); what the book cannot
//!   take expires, as on Binance;
//! - limit orders that cross take liquidity at once the same way (up to their price), the rest
//!   rests (GTC) or expires (IOC); resting orders fill when the price reaches them, in
//!   price-time priority, at most `level_quantity` per price move, so large orders fill in parts;
//! - balances are reserved for open orders (a buy reserves price × quantity of the quote asset, a
//!   sell its quantity of the base asset), and an order the free balance cannot cover is refused
//!   with Binance's -2010; fees are charged in the asset received.
//!
//! Pure: no clock, no IO. Every change returns what happened, for the simulator to stream.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Maps keyed by what clients send (client order ids) and symbols: foldhash, seeded per process,
/// instead of SipHash, which was a tenth of the engine's time.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A growing list in fixed-size chunks: growing never copies what is already stored (one
/// vector's reallocations and their page faults were a tenth of the engine's time at a million
/// orders).
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

/// Items per chunk.
const CHUNK: usize = 4096;

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.chunks.last().map_or(0, |c| (self.chunks.len() - 1) * CHUNK + c.len())
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// Appends `item`; its index.
    fn push(&mut self, item: T) -> usize {
        let at = self.len();
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        at
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

/// Every order, oldest first, found by its client id.
#[derive(Default)]
struct Orders {
    all: Chunked<Order>,
    index: Map<ClientOrderId, usize>,
}

impl Orders {
    fn get(&self, id: &ClientOrderId) -> Option<&Order> {
        self.index.get(id).and_then(|&i| self.all.get(i))
    }

    fn contains_key(&self, id: &ClientOrderId) -> bool {
        self.index.contains_key(id)
    }

    /// Stores `order` under `id`: a new one at the end, a known one in its place.
    fn insert(&mut self, id: ClientOrderId, order: Order) {
        match self.index.get(&id) {
            Some(&i) => {
                if let Some(slot) = self.all.get_mut(i) {
                    *slot = order;
                }
            }
            None => {
                let at = self.all.push(order);
                self.index.insert(id, at);
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &Order> {
        self.all.iter()
    }
}

use rust_decimal::Decimal;

use crate::error::{ExchangeError, RejectKind};
use crate::model::{
    Balance, ClientOrderId, Fill, Order, OrderKind, OrderRequest, OrderStatus, Side, TimeInForce,
};
use crate::rules::{ExchangeRules, RuleViolation};

/// The shape of a symbol's simulated book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookShape {
    /// Distance from the price to the best bid and to the best ask, as a fraction of the price.
    pub half_spread: Decimal,
    /// Distance between levels, as a fraction of the price.
    pub level_step: Decimal,
    /// Quantity at each level, in the base asset.
    pub level_quantity: Decimal,
    /// Levels on each side.
    pub levels: u32,
}

impl Default for BookShape {
    fn default() -> Self {
        Self {
            half_spread: Decimal::new(5, 5),    // 0.5 bp
            level_step: Decimal::new(1, 4),     // 1 bp
            level_quantity: Decimal::new(2, 0), // 2 BTC-like units
            levels: 20,
        }
    }
}

/// A book's levels: (price, quantity), best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Depth {
    /// Buyers' side, highest first.
    pub bids: Vec<(Decimal, Decimal)>,
    /// Sellers' side, lowest first.
    pub asks: Vec<(Decimal, Decimal)>,
}

/// Fees as fractions of the notional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    /// Charged on fills of resting orders.
    pub maker: Decimal,
    /// Charged on fills that take liquidity.
    pub taker: Decimal,
}

impl Default for Fees {
    fn default() -> Self {
        // Binance spot's base rate: 0.1 %.
        Self { maker: Decimal::new(1, 3), taker: Decimal::new(1, 3) }
    }
}

/// A symbol's name and its assets' (shared: a fill holds references, not copies).
#[derive(Clone)]
struct Names {
    symbol: Arc<str>,
    base: Arc<str>,
    quote: Arc<str>,
}

struct Market {
    rules: ExchangeRules,
    /// The symbol and its assets, shared: every fill names them.
    names: Arc<Names>,
    shape: BookShape,
    price: Option<Decimal>,
    /// The synthetic book at the current price: what a buy takes (asks) and a sell (bids).
    asks: Vec<(Decimal, Decimal)>,
    bids: Vec<(Decimal, Decimal)>,
    /// Resting buys, best (highest price, then oldest) first.
    resting_buys: BTreeMap<(Reverse<Decimal>, u64), ClientOrderId>,
    /// Resting sells, best (lowest price, then oldest) first.
    resting_sells: BTreeMap<(Decimal, u64), ClientOrderId>,
}

impl Market {
    /// The synthetic levels a `side` order takes from at `price`: (price, quantity), best first.
    fn levels_at(&self, price: Decimal, side: Side) -> Vec<(Decimal, Decimal)> {
        let tick = self.rules.price.step;
        (0..self.shape.levels)
            .map(|i| {
                let offset = self.shape.half_spread + self.shape.level_step * Decimal::from(i);
                let raw = match side {
                    Side::Buy => price * (Decimal::ONE + offset),
                    Side::Sell => price * (Decimal::ONE - offset),
                };
                // On the tick, against the taker.
                let on_tick = if tick.is_zero() {
                    raw
                } else {
                    let ticks = raw / tick;
                    (if side == Side::Buy { ticks.ceil() } else { ticks.floor() }) * tick
                };
                (on_tick.normalize(), self.shape.level_quantity)
            })
            .filter(|(p, _)| *p > Decimal::ZERO)
            .collect()
    }

    fn levels(&self, side: Side) -> &[(Decimal, Decimal)] {
        match side {
            Side::Buy => &self.asks,
            Side::Sell => &self.bids,
        }
    }
}

/// Where a resting order waits: its symbol, side, limit price and place in the queue.
#[derive(Clone)]
struct Resting {
    symbol: Arc<str>,
    side: Side,
    price: Decimal,
    sequence: u64,
}

#[derive(Default, Clone, Copy)]
struct Holding {
    free: Decimal,
    locked: Decimal,
}

/// One account on a simulated exchange.
pub struct Engine {
    markets: Map<String, Market>,
    balances: BTreeMap<String, Holding>,
    orders: Orders,
    /// The resting (open) orders.
    resting: Map<ClientOrderId, Resting>,
    /// Stop orders not yet triggered: (symbol, side, stop price), their balance held.
    stops: Map<ClientOrderId, (Arc<str>, Side, Decimal)>,
    fills: Chunked<Fill>,
    scratch: Vec<(Decimal, Decimal)>,
    fees: Fees,
    next_order_id: u64,
    next_trade_id: u64,
    next_sequence: u64,
}

/// What a change did: the orders it changed (after the change) and the fills it made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Orders after the change, with the fills that changed them.
    pub orders: Vec<(Order, Vec<Fill>)>,
    /// Assets whose balance changed.
    pub assets: Vec<String>,
}

fn rejected(code: i64, reason: &str, kind: RejectKind) -> ExchangeError {
    ExchangeError::Rejected { code, reason: reason.to_owned(), kind }
}

/// What the unfilled rest of an open `order` holds: a buy its limit price's worth of the quote
/// asset, a sell its quantity of the base asset.
fn held_by<'a>(order: &Order, names: &'a Names) -> (&'a str, Decimal) {
    let rest = order.quantity - order.filled_quantity;
    match order.side {
        Side::Buy => (&names.quote, order.kind.limit_price().unwrap_or_default() * rest),
        Side::Sell => (&names.base, rest),
    }
}

/// Binance's answer to an order a filter refuses.
pub fn filter_failure(violation: &RuleViolation) -> ExchangeError {
    let filter = match violation {
        RuleViolation::NotTrading(_) => {
            return rejected(-1013, "Market is closed.", RejectKind::Filter);
        }
        RuleViolation::NonPositiveQuantity(_) => {
            return rejected(-1013, "Invalid quantity.", RejectKind::Filter);
        }
        RuleViolation::PriceTooLow { .. }
        | RuleViolation::PriceTooHigh { .. }
        | RuleViolation::PriceOffTick { .. } => "PRICE_FILTER",
        RuleViolation::QuantityTooSmall { .. }
        | RuleViolation::QuantityTooLarge { .. }
        | RuleViolation::QuantityOffStep { .. } => "LOT_SIZE",
        RuleViolation::NotionalTooSmall { .. } | RuleViolation::NotionalTooLarge { .. } => "NOTIONAL",
    };
    rejected(-1013, &format!("Filter failure: {filter}"), RejectKind::Filter)
}

impl Engine {
    /// An engine with these fees and no markets or money.
    pub fn new(fees: Fees) -> Self {
        Self {
            markets: Map::default(),
            balances: BTreeMap::new(),
            orders: Orders::default(),
            resting: Map::default(),
            stops: Map::default(),
            fills: Chunked::default(),
            scratch: Vec::new(),
            fees,
            next_order_id: 1,
            next_trade_id: 1,
            next_sequence: 0,
        }
    }

    /// Adds a symbol with its rules and book shape (no price until [`Engine::set_price`]).
    pub fn add_market(&mut self, rules: ExchangeRules, shape: BookShape) {
        let market = Market {
            names: Arc::new(Names {
                symbol: rules.symbol.as_str().into(),
                base: rules.base_asset.as_str().into(),
                quote: rules.quote_asset.as_str().into(),
            }),
            rules,
            shape,
            price: None,
            asks: Vec::new(),
            bids: Vec::new(),
            resting_buys: BTreeMap::new(),
            resting_sells: BTreeMap::new(),
        };
        self.markets.insert(market.rules.symbol.clone(), market);
    }

    /// The rules of every symbol.
    pub fn rules(&self) -> impl Iterator<Item = &ExchangeRules> {
        self.markets.values().map(|m| &m.rules)
    }

    /// The price of `symbol`, once it has one.
    pub fn price(&self, symbol: &str) -> Option<Decimal> {
        self.markets.get(symbol)?.price
    }

    /// The book of `symbol`: bids and asks, best first.
    pub fn depth(&self, symbol: &str) -> Option<Depth> {
        let m = self.markets.get(symbol)?;
        Some(Depth { bids: m.bids.clone(), asks: m.asks.clone() })
    }

    /// Moves `asset`'s free balance by `delta` (a deposit, or drift "from outside"); refused when
    /// it would go negative.
    pub fn adjust(&mut self, asset: &str, delta: Decimal) -> Result<Balance, String> {
        let h = self.balances.entry(asset.to_owned()).or_default();
        if h.free + delta < Decimal::ZERO {
            return Err(format!("{asset} has {} free; {delta} would make it negative", h.free));
        }
        h.free += delta;
        Ok(Balance { asset: asset.to_owned(), free: h.free, locked: h.locked })
    }

    /// Every asset's balance.
    pub fn balances(&self) -> Vec<Balance> {
        self.balances
            .iter()
            .map(|(a, h)| Balance { asset: a.clone(), free: h.free, locked: h.locked })
            .collect()
    }

    /// Every fill so far, oldest first.
    pub fn fills(&self) -> impl Iterator<Item = &Fill> {
        self.fills.iter()
    }

    /// How many fills so far.
    pub fn fill_count(&self) -> usize {
        self.fills.len()
    }

    /// The order with `client_id`.
    pub fn order(&self, symbol: &str, client_id: &ClientOrderId) -> Result<&Order, ExchangeError> {
        self.orders
            .get(client_id)
            .filter(|o| &*o.symbol == symbol)
            .ok_or_else(|| rejected(-2013, "Order does not exist.", RejectKind::UnknownOrder))
    }

    /// Every order of `symbol` (or all), open or not, oldest first.
    pub fn all_orders(&self, symbol: Option<&str>) -> Vec<&Order> {
        let mut all: Vec<&Order> =
            self.orders.values().filter(|o| symbol.is_none_or(|s| &*o.symbol == s)).collect();
        all.sort_by_key(|o| o.exchange_id);
        all
    }

    /// The open orders of `symbol` (or all), oldest first.
    pub fn open_orders(&self, symbol: Option<&str>) -> Vec<&Order> {
        let resting =
            self.resting.iter().filter(|(_, r)| symbol.is_none_or(|s| &*r.symbol == s)).map(|(id, _)| id);
        let stops =
            self.stops.iter().filter(|(_, (s, ..))| symbol.is_none_or(|want| &**s == want)).map(|(id, _)| id);
        let mut open: Vec<&Order> = resting.chain(stops).filter_map(|id| self.orders.get(id)).collect();
        open.sort_by_key(|o| o.exchange_id);
        open
    }

    fn rest(&mut self, order: &Order, price: Decimal) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        if let Some(m) = self.markets.get_mut(&*order.symbol) {
            match order.side {
                Side::Buy => m.resting_buys.insert((Reverse(price), sequence), order.client_id.clone()),
                Side::Sell => m.resting_sells.insert((price, sequence), order.client_id.clone()),
            };
        }
        let resting = Resting { symbol: order.symbol.clone(), side: order.side, price, sequence };
        self.resting.insert(order.client_id.clone(), resting);
    }

    fn unrest(&mut self, id: &ClientOrderId) {
        self.stops.remove(id);
        let Some(r) = self.resting.remove(id) else { return };
        if let Some(m) = self.markets.get_mut(&*r.symbol) {
            match r.side {
                Side::Buy => m.resting_buys.remove(&(Reverse(r.price), r.sequence)),
                Side::Sell => m.resting_sells.remove(&(r.price, r.sequence)),
            };
        }
    }

    fn market(&self, symbol: &str) -> Result<&Market, ExchangeError> {
        self.markets.get(symbol).ok_or_else(|| rejected(-1121, "Invalid symbol.", RejectKind::Other))
    }

    /// Moves `amount` of `asset` from free to locked (a negative amount: back).
    fn lock(&mut self, asset: &str, amount: Decimal) {
        let h = self.holding(asset);
        h.free -= amount;
        h.locked += amount;
    }

    fn holding(&mut self, asset: &str) -> &mut Holding {
        // Looked up before inserting: an entry() would allocate the key on every fill.
        if !self.balances.contains_key(asset) {
            self.balances.insert(asset.to_owned(), Holding::default());
        }
        self.balances.get_mut(asset).expect("inserted above")
    }

    /// Places `request` at `now_ms`: refused (rules, balance, a duplicate id) or accepted, with
    /// what it filled at once.
    pub fn place(
        &mut self,
        request: &OrderRequest,
        now_ms: i64,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        if self.orders.contains_key(&request.client_id) {
            return Err(rejected(-2010, "Duplicate order sent.", RejectKind::DuplicateOrder));
        }
        let market = self.market(&request.symbol)?;
        let Some(price) = market.price else {
            return Err(rejected(-1013, "Market is closed.", RejectKind::Filter));
        };
        market.rules.check(request, price).map_err(|v| filter_failure(&v))?;
        let names = market.names.clone();
        let order = Order::accepted(request, names.symbol.clone(), self.next_order_id, now_ms);
        let placed = match request.kind {
            OrderKind::StopLossLimit { stop_price, .. } => {
                self.hold_stop(order, &names, price, stop_price)?
            }
            _ => self.work(order, &names, now_ms)?,
        };
        self.next_order_id += 1;
        self.orders.insert(placed.0.client_id.clone(), placed.0.clone());
        Ok(placed)
    }

    /// A stop order waits: refused when the price is already beyond its stop (Binance's answer),
    /// else its balance is held (a buy at its limit price) until it triggers or is cancelled.
    fn hold_stop(
        &mut self,
        order: Order,
        names: &Names,
        price: Decimal,
        stop_price: Decimal,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        let now = match order.side {
            Side::Sell => price <= stop_price,
            Side::Buy => price >= stop_price,
        };
        if now {
            return Err(rejected(-2010, "Stop price would trigger immediately.", RejectKind::Other));
        }
        let (asset, amount) = held_by(&order, names);
        if self.holding(asset).free < amount {
            return Err(rejected(
                -2010,
                "Account has insufficient balance for requested action.",
                RejectKind::InsufficientBalance,
            ));
        }
        self.lock(asset, amount);
        self.stops.insert(order.client_id.clone(), (names.symbol.clone(), order.side, stop_price));
        Ok((order, Vec::new()))
    }

    /// Works `order` (a market or limit order, or a stop just triggered) against the book: what
    /// it takes at once, then rest (GTC) or expiry. Refused when the free balance cannot cover
    /// it. Not stored: the caller stores it.
    fn work(
        &mut self,
        mut order: Order,
        names: &Names,
        now_ms: i64,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        // A buffer kept between orders: one allocation less per order.
        let mut takes = std::mem::take(&mut self.scratch);
        takes.clear();
        let market = self.market(&order.symbol)?;
        let limit = order.kind.limit_price();
        // What the order takes at once: the opposite side's levels up to its limit.
        let mut left = order.quantity - order.filled_quantity;
        for &(level_price, level_qty) in market.levels(order.side) {
            let crosses = match (order.side, limit) {
                (_, None) => true,
                (Side::Buy, Some(l)) => level_price <= l,
                (Side::Sell, Some(l)) => level_price >= l,
            };
            if !crosses || left.is_zero() {
                break;
            }
            let q = left.min(level_qty);
            takes.push((level_price, q));
            left -= q;
        }
        // The balance it needs: a buy its cost (taken now, plus its limit for what rests), a
        // sell its quantity.
        let rests = order.kind.time_in_force() == Some(TimeInForce::Gtc);
        let needed = match order.side {
            Side::Buy => {
                let now: Decimal = takes.iter().map(|(p, q)| p * q).sum();
                now + if rests { limit.unwrap_or_default() * left } else { Decimal::ZERO }
            }
            Side::Sell => order.quantity - order.filled_quantity - if rests { Decimal::ZERO } else { left },
        };
        let pay_asset = if order.side == Side::Buy { &names.quote } else { &names.base };
        if self.balances.get(&**pay_asset).map_or(Decimal::ZERO, |h| h.free) < needed {
            self.scratch = takes;
            return Err(rejected(
                -2010,
                "Account has insufficient balance for requested action.",
                RejectKind::InsufficientBalance,
            ));
        }
        let mut fills = Vec::new();
        for &(p, q) in &takes {
            fills.push(self.execute(&mut order, p, q, false, now_ms, names, None));
        }
        self.scratch = takes;
        let remaining = order.quantity - order.filled_quantity;
        order.status = if remaining.is_zero() {
            OrderStatus::Filled
        } else if rests {
            // Reserve what the rest needs.
            let (asset, amount) = held_by(&order, names);
            self.lock(asset, amount);
            self.rest(&order, limit.unwrap_or_default());
            if order.filled_quantity.is_zero() { OrderStatus::New } else { OrderStatus::PartiallyFilled }
        } else {
            OrderStatus::Expired
        };
        Ok((order, fills))
    }

    /// Stops of `symbol` the price `price` reached: their hold released, each works as a limit
    /// order (what the balance no longer covers expires).
    fn trigger_stops(
        &mut self,
        symbol: &str,
        price: Decimal,
        now_ms: i64,
        names: &Names,
        changes: &mut Changes,
    ) {
        let mut reached: Vec<ClientOrderId> = self
            .stops
            .iter()
            .filter(|(_, (s, side, stop))| {
                &**s == symbol
                    && match side {
                        Side::Sell => price <= *stop,
                        Side::Buy => price >= *stop,
                    }
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Oldest first.
        reached.sort_by_key(|id| self.orders.get(id).map_or(u64::MAX, |o| o.exchange_id));
        for id in reached {
            self.stops.remove(&id);
            let Some(order) = self.orders.get(&id).cloned() else { continue };
            let (asset, amount) = held_by(&order, names);
            self.lock(asset, -amount);
            let (worked, fills) = match self.work(order.clone(), names, now_ms) {
                Ok(done) => done,
                Err(_) => {
                    let mut expired = order;
                    expired.status = OrderStatus::Expired;
                    expired.updated_ms = now_ms;
                    (expired, Vec::new())
                }
            };
            self.orders.insert(id, worked.clone());
            changes.orders.push((worked, fills));
        }
    }

    /// One execution of `order` at `price` for `quantity`: balances moved, fee charged in the
    /// asset received, the fill recorded. `reserved_at` is the limit price a resting buy
    /// reserved at (its reservation is released as it fills).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        order: &mut Order,
        price: Decimal,
        quantity: Decimal,
        maker: bool,
        now_ms: i64,
        names: &Names,
        reserved_at: Option<Decimal>,
    ) -> Fill {
        let (base, quote) = (&*names.base, &*names.quote);
        let rate = if maker { self.fees.maker } else { self.fees.taker };
        let notional = price * quantity;
        let (fee, fee_asset) = match order.side {
            Side::Buy => {
                let fee = quantity * rate;
                let q = self.holding(quote);
                match reserved_at {
                    Some(limit) => {
                        q.locked -= limit * quantity;
                        q.free += limit * quantity - notional;
                    }
                    None => q.free -= notional,
                }
                self.holding(base).free += quantity - fee;
                (fee, &names.base)
            }
            Side::Sell => {
                let fee = notional * rate;
                let b = self.holding(base);
                if reserved_at.is_some() {
                    b.locked -= quantity;
                } else {
                    b.free -= quantity;
                }
                self.holding(quote).free += notional - fee;
                (fee, &names.quote)
            }
        };
        order.filled_quantity += quantity;
        order.filled_quote += notional;
        order.updated_ms = now_ms;
        let fill = Fill {
            symbol: names.symbol.clone(),
            client_id: order.client_id.clone(),
            order_id: order.exchange_id,
            trade_id: self.next_trade_id,
            side: order.side,
            price,
            quantity,
            fee,
            fee_asset: fee_asset.clone(),
            maker,
            time_ms: now_ms,
        };
        self.next_trade_id += 1;
        self.fills.push(fill.clone());
        fill
    }

    /// Cancels the open order `client_id` of `symbol`, releasing its reservation.
    pub fn cancel(
        &mut self,
        symbol: &str,
        client_id: &ClientOrderId,
        now_ms: i64,
    ) -> Result<Order, ExchangeError> {
        let unknown = || rejected(-2011, "Unknown order sent.", RejectKind::UnknownOrder);
        let order = self
            .orders
            .get(client_id)
            .filter(|o| &*o.symbol == symbol && o.status.is_open())
            .ok_or_else(unknown)?;
        let mut order = order.clone();
        let names = self.market(symbol)?.names.clone();
        // Open orders are limits (or stops): what their rest holds goes back.
        let (asset, amount) = held_by(&order, &names);
        self.lock(asset, -amount);
        order.status = OrderStatus::Canceled;
        order.updated_ms = now_ms;
        self.unrest(client_id);
        self.orders.insert(client_id.clone(), order.clone());
        Ok(order)
    }

    /// Cancels every open order of `symbol`.
    pub fn cancel_all(&mut self, symbol: &str, now_ms: i64) -> Result<Vec<Order>, ExchangeError> {
        self.market(symbol)?;
        let ids: Vec<ClientOrderId> =
            self.open_orders(Some(symbol)).iter().map(|o| o.client_id.clone()).collect();
        ids.iter().map(|id| self.cancel(symbol, id, now_ms)).collect()
    }

    /// Moves `symbol`'s price to `price` at `now_ms`: resting orders the new book reaches fill
    /// (makers, at their own price), best price first, then oldest first, at most one level's
    /// quantity in all.
    pub fn set_price(&mut self, symbol: &str, price: Decimal, now_ms: i64) -> Changes {
        let Some(market) = self.markets.get_mut(symbol) else { return Changes::default() };
        market.price = Some(price);
        market.asks = market.levels_at(price, Side::Buy);
        market.bids = market.levels_at(price, Side::Sell);
        let (Some(&(bid, _)), Some(&(ask, _))) = (market.bids.first(), market.asks.first()) else {
            return Changes::default();
        };
        let mut liquidity = market.shape.level_quantity;
        let names = market.names.clone();
        // Resting buys at or above the best ask and sells at or below the best bid, in priority:
        // buys first (the price fell to them) or sells (it rose); both cannot be reached at once
        // unless they cross each other, which resting orders of one account never do long.
        let mut reached: Vec<(ClientOrderId, Decimal)> = Vec::new();
        let mut budget = liquidity;
        for ((Reverse(limit), _), id) in &market.resting_buys {
            if *limit < ask || budget.is_zero() {
                break;
            }
            budget -=
                budget.min(self.orders.get(id).map_or(Decimal::ZERO, |o| o.quantity - o.filled_quantity));
            reached.push((id.clone(), *limit));
        }
        let mut budget = liquidity;
        for ((limit, _), id) in &market.resting_sells {
            if *limit > bid || budget.is_zero() {
                break;
            }
            budget -=
                budget.min(self.orders.get(id).map_or(Decimal::ZERO, |o| o.quantity - o.filled_quantity));
            reached.push((id.clone(), *limit));
        }
        let mut changes = Changes::default();
        for (id, limit) in reached {
            if liquidity.is_zero() {
                break;
            }
            let Some(mut order) = self.orders.get(&id).cloned() else { continue };
            let q = (order.quantity - order.filled_quantity).min(liquidity);
            liquidity -= q;
            // A resting order's balance is reserved: a buy's at its limit price.
            let reserved = Some(if order.side == Side::Buy { limit } else { Decimal::ZERO });
            let fill = self.execute(&mut order, limit, q, true, now_ms, &names, reserved);
            order.status = if order.filled_quantity == order.quantity {
                self.unrest(&id);
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            self.orders.insert(id, order.clone());
            changes.orders.push((order, vec![fill]));
        }
        self.trigger_stops(symbol, price, now_ms, &names, &mut changes);
        if !changes.orders.is_empty() {
            changes.assets = vec![names.base.to_string(), names.quote.to_string()];
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn engine() -> Engine {
        let mut e = Engine::new(Fees::default());
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
        let shape = BookShape {
            half_spread: d("0.0001"),
            level_step: d("0.0001"),
            level_quantity: d("0.5"),
            levels: 4,
        };
        e.add_market(rules, shape);
        e.adjust("USDT", d("100000")).expect("deposit");
        e.adjust("BTC", d("1")).expect("deposit");
        e.set_price("BTCUSDT", d("50000"), 0);
        e
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

    fn limit(price: &str, tif: TimeInForce) -> OrderKind {
        OrderKind::Limit { price: d(price), time_in_force: tif }
    }

    fn balance(e: &Engine, asset: &str) -> (Decimal, Decimal) {
        e.balances()
            .iter()
            .find(|b| b.asset == asset)
            .map_or((Decimal::ZERO, Decimal::ZERO), |b| (b.free, b.locked))
    }

    fn held(e: &Engine, asset: &str) -> (Decimal, Decimal) {
        e.balances().into_iter().find(|b| b.asset == asset).map(|b| (b.free, b.locked)).unwrap_or_default()
    }

    #[test]
    fn a_stop_loss_waits_with_its_balance_held_then_sells_when_the_price_falls_to_it() {
        let mut e = engine();
        let stop = |stop: &str, price: &str| OrderKind::StopLossLimit {
            stop_price: d(stop),
            price: d(price),
            time_in_force: TimeInForce::Gtc,
        };
        // Already beyond its stop: refused, as Binance refuses it.
        let now = e.place(&request("s0", Side::Sell, stop("50500", "50400"), "0.4"), 1);
        assert!(matches!(now, Err(ExchangeError::Rejected { code: -2010, .. })), "{now:?}");
        let (placed, fills) =
            e.place(&request("s1", Side::Sell, stop("49000", "48900"), "0.4"), 1).expect("placed");
        assert_eq!((placed.status, fills.len()), (OrderStatus::New, 0));
        assert_eq!(held(&e, "BTC"), (d("0.6"), d("0.4")), "its quantity held");
        assert_eq!(e.open_orders(Some("BTCUSDT")).len(), 1);
        assert!(e.set_price("BTCUSDT", d("49500"), 2).orders.is_empty(), "not reached");
        // The price falls through the stop: it sells as a limit at 48,900 or better.
        let changes = e.set_price("BTCUSDT", d("48950"), 3);
        let (sold, fills) =
            changes.orders.iter().find(|(o, _)| o.client_id.as_str() == "s1").expect("triggered");
        assert_eq!(sold.status, OrderStatus::Filled);
        assert!(fills.iter().all(|f| f.price >= d("48900") && f.side == Side::Sell), "{fills:?}");
        assert_eq!(held(&e, "BTC"), (d("0.6"), d("0")));
        assert!(e.open_orders(None).is_empty());
        // A cancelled stop gives its hold back; a stop buy holds its limit's cost.
        e.place(&request("b1", Side::Buy, stop("52000", "52100"), "0.1"), 4).expect("placed");
        assert_eq!(held(&e, "USDT").1, d("5210"));
        e.cancel("BTCUSDT", &ClientOrderId::new("b1").expect("id"), 5).expect("cancelled");
        assert_eq!(held(&e, "USDT").1, d("0"));
    }

    #[test]
    fn a_market_buy_walks_the_book_and_pays_its_fee_in_what_it_receives() {
        let mut e = engine();
        let (order, fills) = e.place(&request("m1", Side::Buy, OrderKind::Market, "0.7"), 1).expect("placed");
        assert_eq!(order.status, OrderStatus::Filled);
        // 0.5 at the best ask (50005), 0.2 at the next level (50010).
        assert_eq!(
            fills.iter().map(|f| (f.price, f.quantity)).collect::<Vec<_>>(),
            vec![(d("50005"), d("0.5")), (d("50010"), d("0.2"))]
        );
        assert_eq!(balance(&e, "USDT").0, d("100000") - d("25002.5") - d("10002"));
        assert_eq!(balance(&e, "BTC").0, d("1") + d("0.7") - d("0.0007"));
        assert!(fills.iter().all(|f| !f.maker && &*f.fee_asset == "BTC"));
    }

    #[test]
    fn a_market_order_larger_than_the_book_fills_what_it_can_and_expires() {
        let mut e = engine();
        e.adjust("BTC", d("5")).expect("deposit");
        let (order, fills) = e.place(&request("m2", Side::Sell, OrderKind::Market, "3"), 1).expect("placed");
        assert_eq!(order.status, OrderStatus::Expired);
        assert_eq!(order.filled_quantity, d("2"));
        assert_eq!(fills.len(), 4);
    }

    #[test]
    fn a_resting_limit_reserves_then_fills_in_parts_as_the_price_reaches_it() {
        let mut e = engine();
        let (order, fills) =
            e.place(&request("l1", Side::Buy, limit("49000", TimeInForce::Gtc), "0.8"), 1).expect("placed");
        assert!(fills.is_empty());
        assert_eq!(order.status, OrderStatus::New);
        assert_eq!(balance(&e, "USDT"), (d("100000") - d("39200"), d("39200")));
        // Not reached yet.
        assert!(e.set_price("BTCUSDT", d("49500"), 2).orders.is_empty());
        // Reached: 0.5 fills (one level's liquidity), then the rest at the next move.
        let first = e.set_price("BTCUSDT", d("48900"), 3);
        assert_eq!(first.orders[0].0.status, OrderStatus::PartiallyFilled);
        assert_eq!(first.orders[0].1[0].price, d("49000"));
        assert!(first.orders[0].1[0].maker);
        let second = e.set_price("BTCUSDT", d("48900"), 4);
        assert_eq!(second.orders[0].0.status, OrderStatus::Filled);
        assert_eq!(balance(&e, "USDT"), (d("60800"), d("0")));
        assert_eq!(balance(&e, "BTC").0, d("1") + d("0.8") - d("0.0008"));
    }

    #[test]
    fn price_then_time_decides_who_fills_first() {
        let mut e = engine();
        for (id, price) in [("a", "49000"), ("b", "49100"), ("c", "49100")] {
            e.place(&request(id, Side::Buy, limit(price, TimeInForce::Gtc), "0.5"), 1).expect("placed");
        }
        let filled = e.set_price("BTCUSDT", d("48000"), 2);
        assert_eq!(filled.orders.len(), 1);
        assert_eq!(filled.orders[0].0.client_id.as_str(), "b", "best price, then oldest");
        let next = e.set_price("BTCUSDT", d("48000"), 3);
        assert_eq!(next.orders[0].0.client_id.as_str(), "c");
    }

    #[test]
    fn a_crossing_limit_takes_up_to_its_price_and_an_ioc_remainder_expires() {
        let mut e = engine();
        let (order, fills) =
            e.place(&request("x1", Side::Buy, limit("50005", TimeInForce::Ioc), "0.8"), 1).expect("placed");
        assert_eq!((order.status, order.filled_quantity, fills.len()), (OrderStatus::Expired, d("0.5"), 1));
        assert_eq!(balance(&e, "USDT").1, Decimal::ZERO, "an IOC reserves nothing");
        let (gtc, _) =
            e.place(&request("x2", Side::Buy, limit("50005", TimeInForce::Gtc), "0.8"), 2).expect("placed");
        assert_eq!((gtc.status, gtc.filled_quantity), (OrderStatus::PartiallyFilled, d("0.5")));
        assert_eq!(balance(&e, "USDT").1, d("50005") * d("0.3"));
    }

    #[test]
    fn refusals_are_binances() {
        let mut e = engine();
        let too_big = e
            .place(&request("r1", Side::Buy, limit("49000", TimeInForce::Gtc), "3"), 1)
            .expect_err("refused");
        assert!(matches!(
            too_big,
            ExchangeError::Rejected { code: -2010, kind: RejectKind::InsufficientBalance, .. }
        ));
        let lot = e.place(&request("r2", Side::Buy, OrderKind::Market, "0.000001"), 1).expect_err("refused");
        assert_eq!(lot.to_string(), "rejected by the exchange (-1013): Filter failure: LOT_SIZE");
        e.place(&request("r3", Side::Sell, limit("60000", TimeInForce::Gtc), "0.1"), 1).expect("placed");
        let again =
            e.place(&request("r3", Side::Sell, limit("60000", TimeInForce::Gtc), "0.1"), 1).expect_err("dup");
        assert!(matches!(again, ExchangeError::Rejected { kind: RejectKind::DuplicateOrder, .. }));
        let id = ClientOrderId::new("nope").expect("id");
        assert!(matches!(e.cancel("BTCUSDT", &id, 2), Err(ExchangeError::Rejected { code: -2011, .. })));
        assert!(matches!(e.order("BTCUSDT", &id), Err(ExchangeError::Rejected { code: -2013, .. })));
        // Cancelling releases the reservation.
        assert_eq!(balance(&e, "BTC"), (d("0.9"), d("0.1")));
        let all = e.cancel_all("BTCUSDT", 3).expect("cancelled");
        assert_eq!(all.len(), 1);
        assert_eq!(balance(&e, "BTC"), (d("1"), d("0")));
        assert!(e.open_orders(None).is_empty());
    }
}
