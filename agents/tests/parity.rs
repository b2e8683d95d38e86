//! Parity of the engine with the canonical semantics on real data: BTC and ETH hourly candles from
//! `../shared/data`. The reference below is written independently as a plain loop — window means
//! recomputed from scratch each bar (exact decimals) and float accounting — and the engine must
//! produce the same trades, trade by trade, and the same final equity to 1e-9 relative.
//!
//! A user's clone has no `../shared/data`: the tests then skip with a message, unless
//! `KUANT_REQUIRE_SHARED_DATA=1` (set by `.ci/run`) turns the skip into a failure.

use std::path::PathBuf;
use std::str::FromStr;

use kuant_agents::backtest::{SymbolConfig, simulate};
use kuant_agents::data::csv::CsvSource;
use kuant_agents::data::{DataSource, Span};
use kuant_agents::execution::{Costs, SymbolRules};
use kuant_agents::strategy::SmaCrossover;
use kuant_crds::Timeframe;
use kuant_crds::backtest::FillModel;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

const FEE: f64 = 0.001;
const INITIAL_CASH: f64 = 10_000.0;

fn shared_data(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KUANT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let path = dir.join(file);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("KUANT_REQUIRE_SHARED_DATA").is_ok_and(|v| v == "1") {
        panic!("{} is missing and KUANT_REQUIRE_SHARED_DATA=1", path.display());
    }
    eprintln!("skipped: {} not found (the shared data lives beside the repository)", path.display());
    None
}

#[derive(Debug)]
struct RefTrade {
    entry_time: i64,
    exit_time: Option<i64>,
    entry_price: f64,
    exit_price: Option<f64>,
    quantity: f64,
    pnl: Option<f64>,
}

struct Row {
    time: i64,
    open: f64,
    close: Decimal,
}

/// The canonical long-only SMA(10/30) crossover, as a plain loop.
fn reference(path: &PathBuf) -> (Vec<RefTrade>, f64) {
    let text = std::fs::read_to_string(path).expect("readable");
    let rows: Vec<Row> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                time: f[0].parse().expect("timestamp"),
                open: f[1].parse().expect("open"),
                close: Decimal::from_str(f[4]).expect("close"),
            }
        })
        .collect();
    let mean =
        |t: usize, n: usize| rows[t + 1 - n..=t].iter().map(|r| r.close).sum::<Decimal>() / Decimal::from(n);
    let d = |t: usize| mean(t, 10) - mean(t, 30);
    let (mut cash, mut qty) = (INITIAL_CASH, 0.0f64);
    let mut trades: Vec<RefTrade> = Vec::new();
    for t in 30..rows.len() {
        let (prev, now) = (d(t - 1), d(t));
        let up = prev <= Decimal::ZERO && now > Decimal::ZERO;
        let down = prev >= Decimal::ZERO && now < Decimal::ZERO;
        let Some(next) = rows.get(t + 1) else { break };
        if up && qty == 0.0 {
            qty = cash / (next.open * (1.0 + FEE));
            cash = 0.0;
            trades.push(RefTrade {
                entry_time: next.time,
                exit_time: None,
                entry_price: next.open,
                exit_price: None,
                quantity: qty,
                pnl: None,
            });
        } else if down && qty > 0.0 {
            let trade = trades.last_mut().expect("an open trade");
            cash = qty * next.open * (1.0 - FEE);
            trade.exit_time = Some(next.time);
            trade.exit_price = Some(next.open);
            trade.pnl = Some(qty * next.open * (1.0 - FEE) - qty * trade.entry_price * (1.0 + FEE));
            qty = 0.0;
        }
    }
    let last_close = rows.last().expect("rows").close.to_f64().expect("f64");
    (trades, cash + qty * last_close)
}

fn close_enough(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * scale.abs().max(1e-300)
}

fn check_parity(file: &str) {
    let Some(path) = shared_data(file) else { return };
    let series =
        CsvSource::new(&path).load("X", Timeframe::H1, Span::default()).expect("engine loads the data");
    let cfg = SymbolConfig {
        run_id: "parity".into(),
        symbol: "X".into(),
        initial_cash: Decimal::from(10_000),
        costs: Costs::from_bps(10.0, 0.0).expect("costs"),
        rules: SymbolRules::unrestricted(),
        fill: FillModel::NextOpen,
        position_fraction: Decimal::ONE,
    };
    let run = simulate(&series, SmaCrossover::new(10, 30), &cfg, &mut |_| {});
    let (expected, expected_equity) = reference(&path);
    let trades = run.book.trades();
    assert!(expected.len() > 100, "{file}: the reference found only {} trades", expected.len());
    assert_eq!(trades.len(), expected.len(), "{file}: number of trades");
    for (i, (got, want)) in trades.iter().zip(&expected).enumerate() {
        let f = |d: Decimal| d.to_f64().expect("f64");
        assert_eq!(
            (got.entry_time, got.exit_time),
            (want.entry_time, want.exit_time),
            "{file} trade {i} times"
        );
        assert_eq!(f(got.entry_price), want.entry_price, "{file} trade {i} entry price");
        assert_eq!(got.exit_price.map(f), want.exit_price, "{file} trade {i} exit price");
        assert!(close_enough(f(got.quantity), want.quantity, want.quantity), "{file} trade {i} quantity");
        let cost = want.quantity * want.entry_price;
        match (got.pnl.map(f), want.pnl) {
            (Some(a), Some(b)) => assert!(close_enough(a, b, cost), "{file} trade {i} pnl {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "{file} trade {i}: open in one, closed in the other"),
        }
    }
    let equity = run.final_equity.to_f64().expect("f64");
    assert!(
        close_enough(equity, expected_equity, expected_equity),
        "{file}: final equity {equity} vs reference {expected_equity}"
    );
    eprintln!("{file}: {} trades, final equity {equity:.6} (reference {expected_equity:.6})", trades.len());
}

#[test]
fn btc_hourly_matches_the_reference_trade_by_trade() {
    check_parity("coinbase_btcusd_1h.csv");
}

#[test]
fn eth_hourly_matches_the_reference_trade_by_trade() {
    check_parity("coinbase_ethusd_1h.csv");
}
