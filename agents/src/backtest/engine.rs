//! The backtest loop for one symbol: synchronous, deterministic, no channels and no allocation
//! per candle (the equity statistics are kept online; events and fill marks allocate only when
//! they happen, into room reserved up front).
//!
//! Canonical semantics: decisions on a bar's close; a market order fills at the next bar's open
//! (or at the same close with the `close` fill model), so with next-open a signal on the last bar
//! never fills; entries only when flat, exits only when long, selling the whole position.

use std::sync::Arc;

use kuant_crds::backtest::FillModel;
use rust_decimal::Decimal;
use serde::Serialize;

use super::metrics::EquityStats;
use crate::candles::Series;
use std::num::NonZeroU64;

use crate::events::{BlockReason, Event, EventKind, IdSpace, Seq};
use crate::execution::{Costs, SymbolRules};
use crate::portfolio::Book;
use crate::price::{PRICE_SCALE, Price};
use crate::strategy::{Side, Strategy};

/// How one symbol is traded.
#[derive(Clone, Debug)]
pub struct SymbolConfig {
    /// The run the events belong to.
    pub run_id: Arc<str>,
    /// The symbol.
    pub symbol: Arc<str>,
    /// Cash of this symbol's book at the start.
    pub initial_cash: Decimal,
    /// Fees and slippage.
    pub costs: Costs,
    /// Tick, lot and minimums.
    pub rules: SymbolRules,
    /// When market orders fill.
    pub fill: FillModel,
    /// Share of cash an entry may spend (risk.maxPositionPct / 100).
    pub position_fraction: Decimal,
}

/// Event counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Signals from the strategy.
    pub signals: u64,
    /// Orders submitted.
    pub orders: u64,
    /// Orders filled.
    pub fills: u64,
    /// Trades blocked.
    pub blocked: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.signals += o.signals;
        self.orders += o.orders;
        self.fills += o.fills;
        self.blocked += o.blocked;
    }
}

/// The book's float mirror from a bar on: equity at a close is `cash + quantity × close`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mark {
    /// Index of the bar from which this state holds.
    pub bar: usize,
    /// Cash.
    pub cash: f64,
    /// Quantity held per price unit (quantity / 1e8): times a price's units, the position's value.
    /// Kept this way so that marking to market needs no division.
    pub quantity_per_unit: f64,
}

impl Mark {
    fn of(bar: usize, book: &Book) -> Self {
        Self { bar, cash: book.cash_f(), quantity_per_unit: book.quantity_f() / PRICE_SCALE as f64 }
    }

    /// Equity at `close`: the one formula of the loop and of the equity curve.
    #[inline(always)]
    pub fn equity(cash: f64, quantity_per_unit: f64, close: Price) -> f64 {
        cash + quantity_per_unit * close.units() as f64
    }
}

/// What one symbol's simulation produced.
#[derive(Clone, Debug)]
pub struct SymbolRun {
    /// Statistics of the equity at each bar's close (float mirror of the exact book).
    pub stats: EquityStats,
    /// The book's state after each fill, from which the equity curve is rebuilt on demand.
    pub marks: Vec<Mark>,
    /// Bars that closed with a position open.
    pub exposed_bars: u64,
    /// The book at the end: cash, quantity, trades.
    pub book: Book,
    /// Cash plus position at the last close, exactly.
    pub final_equity: Decimal,
    /// Whether the final equity left the exact decimal range (then `final_equity` is the maximum).
    pub out_of_range: bool,
    /// Every signal and what became of it; [`SymbolRun::events`] expands them into events.
    pub chains: Vec<Chain>,
    /// Turns the events' sequence numbers into ids.
    pub ids: IdSpace,
    /// Event counts.
    pub counters: Counters,
}

/// One signal and what became of it: the compact record the loop keeps (one write per signal
/// instead of four events); [`SymbolRun::events`] expands it into signal → intent →
/// order_submitted → fill | trade_blocked.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// Open time of the signalling bar.
    pub time_ms: i64,
    /// Buy or sell.
    pub side: Side,
    /// Close of the signalling bar.
    pub price: Price,
    /// What happened next.
    pub outcome: Outcome,
}

/// What became of a signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing: a buy while long or a sell while flat.
    Ignored,
    /// An intent whose order could not leave: the data ended (next-open fills).
    EndOfData {
        /// Quote budget of a buy, base quantity of a sell.
        amount: Decimal,
    },
    /// An order is out and has not filled yet.
    Submitted {
        /// Quote budget of a buy, base quantity of a sell.
        amount: Decimal,
    },
    /// The order filled.
    Filled {
        /// Quote budget of a buy, base quantity of a sell.
        amount: Decimal,
        /// Open time of the bar it filled in.
        time_ms: i64,
        /// Execution price.
        price: Decimal,
        /// Base quantity.
        quantity: Decimal,
        /// Fee in quote.
        fee: Decimal,
    },
    /// The order was refused.
    Blocked {
        /// Quote budget of a buy, base quantity of a sell.
        amount: Decimal,
        /// Open time of the bar it was refused in.
        time_ms: i64,
        /// Why.
        reason: BlockReason,
        /// Details for a human.
        detail: Box<str>,
    },
}

impl Outcome {
    fn amount(&self) -> Option<Decimal> {
        match self {
            Self::Ignored => None,
            Self::EndOfData { amount } | Self::Submitted { amount } => Some(*amount),
            Self::Filled { amount, .. } | Self::Blocked { amount, .. } => Some(*amount),
        }
    }
}

struct Pending {
    side: Side,
    budget: Decimal,
    chain: usize,
}

/// Runs `strategy` over `series`. `progress` is called with the number of bars done, now and
/// then and at the end.
///
/// The loop itself only feeds the strategy and marks the float mirror of the book to market;
/// everything that happens on a few bars in a hundred (a signal, a fill) is handled out of line
/// by [`Desk`], so the per-bar path stays small enough to live in registers.
pub fn simulate<S: Strategy>(
    series: &Series,
    strategy: S,
    cfg: &SymbolConfig,
    progress: &mut dyn FnMut(usize),
) -> SymbolRun {
    let n = series.len();
    let mut desk = Desk::new(cfg, n);
    let mut stats = EquityStats::new(desk.book.cash_f());
    let mut mirror = Mirror { cash: desk.book.cash_f(), quantity_per_unit: 0.0, pending: false };
    // A local of this frame that nothing else sees: the optimiser keeps its fields in registers.
    let mut strategy = strategy;
    let (times, opens) = (series.times(), series.opens());
    for (i, bar) in series.iter().enumerate() {
        // Fills and signals read these columns a few bars in a hundred: too sparse for the
        // hardware to stream them, so each read would wait on memory.
        prefetch(times, i + PREFETCH_AHEAD);
        prefetch(opens, i + PREFETCH_AHEAD);
        if mirror.pending {
            mirror = desk.fill_pending(i, bar.time_ms, bar.open);
        }
        if let Some(side) = strategy.on_bar(&bar) {
            mirror = desk.on_signal(i, bar.time_ms, bar.close, side, i + 1 == n);
        }
        // Flat, the quantity is zero and the equity is exactly the cash.
        stats.push(Mark::equity(mirror.cash, mirror.quantity_per_unit, bar.close));
        if i & 0xFFFF == 0xFFFF {
            progress(i + 1);
        }
    }
    progress(n);
    let Desk { book, chains, counters, marks, .. } = desk;
    let last_close = if n == 0 { Price::default() } else { series.bar(n - 1).close };
    let final_equity = book.equity(last_close);
    let out_of_range = final_equity.is_none();
    let final_equity = final_equity.unwrap_or(Decimal::MAX);
    let ids = IdSpace::new(&cfg.run_id, &cfg.symbol);
    let exposed_bars = exposed_bars(&marks, n);
    SymbolRun { stats, marks, exposed_bars, book, final_equity, out_of_range, chains, ids, counters }
}

/// How many bars ahead of the loop [`prefetch`] asks for (eight cache lines of a column).
const PREFETCH_AHEAD: usize = 64;

/// Hints the CPU to bring `column[i]` into cache; no effect past the end or on other targets.
#[inline(always)]
fn prefetch<T>(column: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let address = column.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: a prefetch is only a hint: it reads nothing into the program and never faults,
        // whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (column, i);
}

/// Bars that closed with a position, counted from the marks (each holds from its bar to the
/// next mark's) rather than bar by bar in the loop.
fn exposed_bars(marks: &[Mark], n: usize) -> u64 {
    let ends = marks.iter().skip(1).map(|m| m.bar).chain([n]);
    marks
        .iter()
        .zip(ends)
        .filter(|(m, _)| m.quantity_per_unit > 0.0)
        .map(|(m, end)| (end - m.bar) as u64)
        .sum()
}

/// What the per-bar loop needs of the book: its float mirror, and whether an order waits for
/// the next bar.
#[derive(Clone, Copy)]
struct Mirror {
    cash: f64,
    quantity_per_unit: f64,
    pending: bool,
}

/// The book and the record of what happened: the rare path of the loop.
struct Desk<'a> {
    cfg: &'a SymbolConfig,
    book: Book,
    chains: Vec<Chain>,
    counters: Counters,
    marks: Vec<Mark>,
    pending: Option<Pending>,
}

impl<'a> Desk<'a> {
    fn new(cfg: &'a SymbolConfig, n: usize) -> Self {
        // Room up front for the records of a signal every few bars: untouched capacity costs
        // only address space, and the loop never stops to move a grown vector.
        let room = (n / 8).clamp(16, 1 << 21);
        let book = Book::with_capacity(cfg.initial_cash, room / 2);
        let mut marks = Vec::with_capacity(room);
        marks.push(Mark::of(0, &book));
        Self {
            cfg,
            book,
            chains: Vec::with_capacity(room),
            counters: Counters::default(),
            marks,
            pending: None,
        }
    }

    fn mirror(&self) -> Mirror {
        let Mark { cash, quantity_per_unit, .. } = Mark::of(0, &self.book);
        Mirror { cash, quantity_per_unit, pending: self.pending.is_some() }
    }

    /// Fills the order waiting since the previous bar at this bar's open.
    #[cold]
    #[inline(never)]
    fn fill_pending(&mut self, i: usize, time_ms: i64, open: Price) -> Mirror {
        if let Some(order) = self.pending.take()
            && self.execute(order, time_ms, open)
        {
            self.mark(i);
        }
        self.mirror()
    }

    /// Records a signal at bar `i`'s close and, when it fits the position, submits its order
    /// (filled at once with the close model).
    #[cold]
    #[inline(never)]
    fn on_signal(&mut self, i: usize, time_ms: i64, close: Price, side: Side, last_bar: bool) -> Mirror {
        self.counters.signals += 1;
        self.chains.push(Chain { time_ms, side, price: close, outcome: Outcome::Ignored });
        let long = self.book.is_long();
        let actionable = match side {
            Side::Buy => !long,
            Side::Sell => long,
        };
        if actionable && let Some(order) = self.submit(side, last_bar) {
            match self.cfg.fill {
                FillModel::Close => {
                    if self.execute(order, time_ms, close) {
                        self.mark(i);
                    }
                }
                FillModel::NextOpen => self.pending = Some(order),
            }
        }
        self.mirror()
    }

    fn mark(&mut self, i: usize) {
        // A fill earlier in the same bar (the next-open fill) is superseded.
        if self.marks.last().is_some_and(|m| m.bar == i) {
            self.marks.pop();
        }
        self.marks.push(Mark::of(i, &self.book));
    }

    /// Turns the last signal into an intent and submits its order (or notes that the data ends
    /// before it could fill).
    fn submit(&mut self, side: Side, last_bar: bool) -> Option<Pending> {
        let (book, cfg) = (&self.book, self.cfg);
        let budget = match side {
            Side::Buy if cfg.position_fraction == Decimal::ONE => book.cash(),
            Side::Buy => book.cash() * cfg.position_fraction,
            Side::Sell => Decimal::ZERO,
        };
        let amount = if side == Side::Buy { budget } else { book.quantity() };
        let chain = self.chains.len().checked_sub(1)?;
        if last_bar && cfg.fill == FillModel::NextOpen {
            self.counters.blocked += 1;
            self.chains[chain].outcome = Outcome::EndOfData { amount };
            return None;
        }
        self.counters.orders += 1;
        self.chains[chain].outcome = Outcome::Submitted { amount };
        Some(Pending { side, budget, chain })
    }

    fn execute(&mut self, order: Pending, time_ms: i64, price: Price) -> bool {
        let (book, cfg) = (&mut self.book, self.cfg);
        let result = match order.side {
            Side::Buy => book.buy(time_ms, price, order.budget, &cfg.costs, &cfg.rules),
            Side::Sell => book.sell_all(time_ms, price, &cfg.costs, &cfg.rules),
        };
        let Some(chain) = self.chains.get_mut(order.chain) else { return false };
        let amount = chain.outcome.amount().unwrap_or_default();
        match result {
            Ok(f) => {
                self.counters.fills += 1;
                chain.outcome =
                    Outcome::Filled { amount, time_ms, price: f.price, quantity: f.quantity, fee: f.fee };
                true
            }
            Err((reason, detail)) => {
                self.counters.blocked += 1;
                chain.outcome = Outcome::Blocked { amount, time_ms, reason, detail: detail.into() };
                false
            }
        }
    }
}

impl SymbolRun {
    /// The event chains, expanded: signal → intent → order_submitted → fill | trade_blocked,
    /// numbered in the order they happened.
    pub fn events(&self) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.chains.len() * 4);
        let mut last = 0u64;
        let mut next = |time_ms: i64, chain: Option<(Seq, Seq)>, kind: EventKind| {
            last += 1;
            let seq = Seq(NonZeroU64::new(last).unwrap_or(NonZeroU64::MIN));
            let (correlation, causation) = match chain {
                Some((correlation, cause)) => (correlation, Some(cause)),
                None => (seq, None),
            };
            events.push(Event { seq, correlation, causation, time_ms, kind });
            seq
        };
        for c in &self.chains {
            let signal = next(c.time_ms, None, EventKind::Signal { side: c.side, price: c.price });
            let Some(amount) = c.outcome.amount() else { continue };
            let intent = next(c.time_ms, Some((signal, signal)), EventKind::Intent { side: c.side, amount });
            if let Outcome::EndOfData { .. } = c.outcome {
                let detail = "the signal came on the last bar: there is no next open to fill at".into();
                next(
                    c.time_ms,
                    Some((signal, intent)),
                    EventKind::TradeBlocked { reason: BlockReason::EndOfData, detail },
                );
                continue;
            }
            let order = next(c.time_ms, Some((signal, intent)), EventKind::OrderSubmitted { side: c.side });
            match &c.outcome {
                Outcome::Filled { time_ms, price, quantity, fee, .. } => {
                    let kind =
                        EventKind::Fill { side: c.side, price: *price, quantity: *quantity, fee: *fee };
                    next(*time_ms, Some((signal, order)), kind);
                }
                Outcome::Blocked { time_ms, reason, detail, .. } => {
                    let kind = EventKind::TradeBlocked { reason: *reason, detail: detail.clone() };
                    next(*time_ms, Some((signal, order)), kind);
                }
                _ => {}
            }
        }
        events
    }

    /// Equity at each bar's close, rebuilt from the marks: the same floats the loop computed.
    pub fn equity_curve(&self, series: &Series) -> Vec<f64> {
        let mut curve = Vec::with_capacity(series.len());
        let mut marks = self.marks.iter().peekable();
        let mut state =
            self.marks.first().copied().unwrap_or(Mark { bar: 0, cash: 0.0, quantity_per_unit: 0.0 });
        for (i, close) in series.closes().iter().enumerate() {
            while let Some(m) = marks.next_if(|m| m.bar <= i) {
                state = *m;
            }
            curve.push(Mark::equity(state.cash, state.quantity_per_unit, *close));
        }
        curve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candles::Bar;

    /// A strategy that signals at fixed bars.
    struct Script(Vec<(usize, Side)>, usize);

    impl Strategy for Script {
        fn on_bar(&mut self, _: &Bar) -> Option<Side> {
            let i = self.1;
            self.1 += 1;
            self.0.iter().find(|(at, _)| *at == i).map(|(_, s)| *s)
        }
    }

    fn series(prices: &[(f64, f64)]) -> Series {
        let mut s = Series::default();
        for (i, &(o, c)) in prices.iter().enumerate() {
            let (o, c) = (Price::from_f64(o).expect("open"), Price::from_f64(c).expect("close"));
            s.push(Bar { time_ms: i as i64, open: o, high: o.max(c), low: o.min(c), close: c, volume: 1.0 });
        }
        s
    }

    fn config(fill: FillModel) -> SymbolConfig {
        SymbolConfig {
            run_id: "t".into(),
            symbol: "X".into(),
            initial_cash: Decimal::from(1000),
            costs: Costs::new(Decimal::ZERO, Decimal::ZERO),
            rules: SymbolRules::unrestricted(),
            fill,
            position_fraction: Decimal::ONE,
        }
    }

    fn kinds(run: &SymbolRun) -> Vec<&'static str> {
        run.events()
            .iter()
            .map(|e| match e.kind {
                EventKind::Signal { .. } => "signal",
                EventKind::Intent { .. } => "intent",
                EventKind::OrderSubmitted { .. } => "order",
                EventKind::Fill { .. } => "fill",
                EventKind::TradeBlocked { .. } => "blocked",
            })
            .collect()
    }

    /// Buy at bar 0's close, sell at bar 2's close, over four bars.
    fn buy_then_sell() -> (Series, SymbolRun) {
        let s = series(&[(10.0, 10.0), (20.0, 25.0), (30.0, 30.0), (40.0, 40.0)]);
        let script = Script(vec![(0, Side::Buy), (2, Side::Sell)], 0);
        let run = simulate(&s, script, &config(FillModel::NextOpen), &mut |_| {});
        (s, run)
    }

    #[test]
    fn fills_at_the_next_open_and_marks_at_the_close() {
        let (s, run) = buy_then_sell();
        // Buy 1000/20 = 50 at bar 1's open; sell at bar 3's open 40 → 2000.
        assert_eq!(run.equity_curve(&s), vec![1000.0, 1250.0, 1500.0, 2000.0]);
        assert_eq!(run.stats, EquityStats::of(1000.0, &[1000.0, 1250.0, 1500.0, 2000.0]), "online = offline");
        assert_eq!(run.final_equity, Decimal::from(2000));
        assert_eq!(run.exposed_bars, 2);
        let t = &run.book.trades()[0];
        assert_eq!((t.entry_time, t.exit_time), (1, Some(3)));
        assert_eq!(kinds(&run), ["signal", "intent", "order", "fill", "signal", "intent", "order", "fill"]);
        assert_eq!(run.counters, Counters { signals: 2, orders: 2, fills: 2, blocked: 0 });
    }

    #[test]
    fn the_close_model_fills_on_the_signal_bar() {
        let s = series(&[(10.0, 10.0), (20.0, 25.0), (30.0, 30.0)]);
        let run = simulate(
            &s,
            Script(vec![(0, Side::Buy), (1, Side::Sell)], 0),
            &config(FillModel::Close),
            &mut |_| {},
        );
        assert_eq!(run.final_equity, Decimal::from(2500));
        assert_eq!(run.equity_curve(&s), vec![1000.0, 2500.0, 2500.0]);
    }

    #[test]
    fn exposure_counts_the_closes_held_long_under_both_fill_models() {
        let s = series(&[(10.0, 10.0); 10]);
        let script = || Script(vec![(0, Side::Buy), (3, Side::Sell), (5, Side::Buy), (8, Side::Sell)], 0);
        // Next open: long at the closes of bars 1–3 and 6–8.
        let run = simulate(&s, script(), &config(FillModel::NextOpen), &mut |_| {});
        assert_eq!(run.exposed_bars, 6);
        // Close: long at the closes of bars 0–2 and 5–7.
        let run = simulate(&s, script(), &config(FillModel::Close), &mut |_| {});
        assert_eq!(run.exposed_bars, 6);
        // Still long at the end: bars 1–9.
        let run = simulate(&s, Script(vec![(0, Side::Buy)], 0), &config(FillModel::NextOpen), &mut |_| {});
        assert_eq!(run.exposed_bars, 9);
    }

    #[test]
    fn a_signal_on_the_last_bar_never_fills() {
        let s = series(&[(10.0, 10.0), (20.0, 20.0)]);
        let run = simulate(&s, Script(vec![(1, Side::Buy)], 0), &config(FillModel::NextOpen), &mut |_| {});
        assert_eq!(kinds(&run), ["signal", "intent", "blocked"]);
        assert!(run.book.trades().is_empty());
        assert_eq!(run.counters.blocked, 1);
    }

    #[test]
    fn signals_that_do_not_fit_the_position_are_recorded_but_not_traded() {
        let s = series(&[(10.0, 10.0), (10.0, 10.0), (10.0, 10.0), (10.0, 10.0)]);
        let script = Script(vec![(0, Side::Sell), (1, Side::Buy), (2, Side::Buy)], 0);
        let run = simulate(&s, script, &config(FillModel::NextOpen), &mut |_| {});
        assert_eq!(kinds(&run), ["signal", "signal", "intent", "order", "fill", "signal"]);
    }

    #[test]
    fn every_event_chains_to_its_signal() {
        let (_, run) = buy_then_sell();
        let mut signal = None;
        for e in &run.events() {
            match e.kind {
                EventKind::Signal { .. } => {
                    assert_eq!((e.correlation, e.causation), (e.seq, None));
                    signal = Some(e.seq);
                }
                _ => {
                    assert_eq!(Some(e.correlation), signal);
                    assert!(e.causation.is_some_and(|c| c < e.seq), "caused by an earlier event");
                }
            }
        }
    }
}
