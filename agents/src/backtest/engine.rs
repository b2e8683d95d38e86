//! The backtest loop for one symbol: synchronous, deterministic, no channels and no allocation
//! per candle (the equity curve is sized up front; events allocate only when they happen).
//!
//! Canonical semantics: decisions on a bar's close; a market order fills at the next bar's open
//! (or at the same close with the `close` fill model); a signal on the last bar never fills;
//! entries only when flat, exits only when long, selling the whole position.

use std::sync::Arc;

use kuant_crds::backtest::FillModel;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::candles::Series;
use crate::events::{BlockReason, ClientOrderId, Event, EventId, EventKind, IdGenerator};
use crate::execution::{Costs, SymbolRules};
use crate::portfolio::Book;
use crate::price::Price;
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

/// What one symbol's simulation produced.
#[derive(Clone, Debug)]
pub struct SymbolRun {
    /// Equity at each bar's close (float mirror of the exact book).
    pub equity: Vec<f64>,
    /// Bars that closed with a position open.
    pub exposed_bars: u64,
    /// The book at the end: cash, quantity, trades.
    pub book: Book,
    /// Cash plus position at the last close, exactly.
    pub final_equity: Decimal,
    /// The event chain.
    pub events: Vec<Event>,
    /// Event counts.
    pub counters: Counters,
}

struct Pending {
    side: Side,
    budget: Decimal,
    client_order_id: ClientOrderId,
    correlation: EventId,
    cause: EventId,
}

struct Recorder {
    ids: IdGenerator,
    symbol: Arc<str>,
    events: Vec<Event>,
}

impl Recorder {
    fn emit(&mut self, time_ms: i64, chain: Option<(EventId, EventId)>, kind: EventKind) -> EventId {
        let id = EventId(self.ids.next_uuid());
        let (correlation_id, causation_id) = match chain {
            Some((correlation, cause)) => (correlation, Some(cause)),
            None => (id, None),
        };
        self.events.push(Event {
            id,
            correlation_id,
            causation_id,
            symbol: self.symbol.clone(),
            time_ms,
            kind,
        });
        id
    }
}

/// Runs `strategy` over `series`. `progress` is called with the number of bars done, now and
/// then and at the end.
pub fn simulate<S: Strategy>(
    series: &Series,
    mut strategy: S,
    cfg: &SymbolConfig,
    progress: &mut dyn FnMut(usize),
) -> SymbolRun {
    let n = series.len();
    let mut book = Book::new(cfg.symbol.clone(), cfg.initial_cash);
    let mut rec = Recorder {
        ids: IdGenerator::new(&cfg.run_id, &cfg.symbol),
        symbol: cfg.symbol.clone(),
        events: Vec::new(),
    };
    let mut counters = Counters::default();
    let mut equity = Vec::with_capacity(n);
    let mut exposed_bars = 0u64;
    let mut pending: Option<Pending> = None;

    for i in 0..n {
        let bar = series.bar(i);
        if let Some(order) = pending.take() {
            execute(&mut book, &mut rec, &mut counters, cfg, order, bar.time_ms, bar.open);
        }
        if let Some(side) = strategy.on_bar(&bar) {
            counters.signals += 1;
            let signal = rec.emit(bar.time_ms, None, EventKind::Signal { side, price: bar.close });
            let actionable = match side {
                Side::Buy => !book.is_long(),
                Side::Sell => book.is_long(),
            };
            if actionable {
                let order =
                    submit(&mut book, &mut rec, &mut counters, cfg, side, signal, bar.time_ms, i + 1 == n);
                match (order, cfg.fill) {
                    (Some(order), FillModel::Close) => {
                        execute(&mut book, &mut rec, &mut counters, cfg, order, bar.time_ms, bar.close);
                    }
                    (order, _) => pending = order,
                }
            }
        }
        let close = bar.close.to_f64();
        equity.push(book.equity_f(close));
        exposed_bars += u64::from(book.is_long());
        if i & 0xFFFF == 0xFFFF {
            progress(i + 1);
        }
    }
    progress(n);
    let last_close = if n == 0 { Price::default() } else { series.bar(n - 1).close };
    let final_equity = book.equity(last_close);
    SymbolRun { equity, exposed_bars, book, final_equity, events: rec.events, counters }
}

/// Records the intent for an actionable signal and submits its order (or blocks it when the data
/// ends before it could fill).
#[allow(clippy::too_many_arguments)]
fn submit(
    book: &mut Book,
    rec: &mut Recorder,
    counters: &mut Counters,
    cfg: &SymbolConfig,
    side: Side,
    signal: EventId,
    time_ms: i64,
    last_bar: bool,
) -> Option<Pending> {
    let (budget, kind) = match side {
        Side::Buy => {
            let budget = book.cash() * cfg.position_fraction;
            (budget, EventKind::Intent { side, quote_budget: Some(budget), quantity: None })
        }
        Side::Sell => {
            (Decimal::ZERO, EventKind::Intent { side, quote_budget: None, quantity: Some(book.quantity()) })
        }
    };
    let intent = rec.emit(time_ms, Some((signal, signal)), kind);
    if last_bar && cfg.fill == FillModel::NextOpen {
        counters.blocked += 1;
        let detail = "the signal came on the last bar: there is no next open to fill at".to_owned();
        rec.emit(
            time_ms,
            Some((signal, intent)),
            EventKind::TradeBlocked { reason: BlockReason::EndOfData, detail },
        );
        return None;
    }
    let client_order_id = ClientOrderId(rec.ids.next_uuid());
    counters.orders += 1;
    let order =
        rec.emit(time_ms, Some((signal, intent)), EventKind::OrderSubmitted { client_order_id, side });
    Some(Pending { side, budget, client_order_id, correlation: signal, cause: order })
}

fn execute(
    book: &mut Book,
    rec: &mut Recorder,
    counters: &mut Counters,
    cfg: &SymbolConfig,
    order: Pending,
    time_ms: i64,
    price: Price,
) {
    let result = match order.side {
        Side::Buy => book.buy(time_ms, price, order.budget, &cfg.costs, &cfg.rules),
        Side::Sell => book.sell_all(time_ms, price, &cfg.costs, &cfg.rules),
    };
    let chain = Some((order.correlation, order.cause));
    match result {
        Ok(f) => {
            counters.fills += 1;
            let kind = EventKind::Fill {
                client_order_id: order.client_order_id,
                side: order.side,
                price: f.price,
                quantity: f.quantity,
                fee: f.fee,
            };
            rec.emit(time_ms, chain, kind);
        }
        Err((reason, detail)) => {
            counters.blocked += 1;
            rec.emit(time_ms, chain, EventKind::TradeBlocked { reason, detail });
        }
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
            costs: Costs { fee_rate: Decimal::ZERO, slippage_rate: Decimal::ZERO },
            rules: SymbolRules::unrestricted(),
            fill,
            position_fraction: Decimal::ONE,
        }
    }

    fn kinds(run: &SymbolRun) -> Vec<&'static str> {
        run.events
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

    #[test]
    fn fills_at_the_next_open_and_marks_at_the_close() {
        let s = series(&[(10.0, 10.0), (20.0, 25.0), (30.0, 30.0), (40.0, 40.0)]);
        let run = simulate(
            &s,
            Script(vec![(0, Side::Buy), (2, Side::Sell)], 0),
            &config(FillModel::NextOpen),
            &mut |_| {},
        );
        // Buy 1000/20 = 50 at bar 1's open; sell at bar 3's open 40 → 2000.
        assert_eq!(run.equity, vec![1000.0, 1250.0, 1500.0, 2000.0]);
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
        assert_eq!(run.equity, vec![1000.0, 2500.0, 2500.0]);
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
        let s = series(&[(10.0, 10.0), (20.0, 25.0), (30.0, 30.0), (40.0, 40.0)]);
        let run = simulate(
            &s,
            Script(vec![(0, Side::Buy), (2, Side::Sell)], 0),
            &config(FillModel::NextOpen),
            &mut |_| {},
        );
        let mut signal = None;
        for e in &run.events {
            match e.kind {
                EventKind::Signal { .. } => {
                    assert_eq!((e.correlation_id, e.causation_id), (e.id, None));
                    signal = Some(e.id);
                }
                _ => assert_eq!(Some(e.correlation_id), signal),
            }
        }
    }
}
