//! The paper account and the backtest, on the same candles, fill at the same prices and pay the
//! same fees: the backtest's SMA(10/30) round trips on 3,000 synthetic hourly candles, each
//! order placed on the paper account at the bar the strategy decided on, filled by the paper
//! account at the next open, compared trade by trade to the last decimal.

use std::sync::Arc;

use kuant_agents::backtest::{SymbolConfig, simulate};
use kuant_agents::data::synthetic::SyntheticSource;
use kuant_agents::data::{DataSource, Span};
use kuant_agents::execution::Costs;
use kuant_agents::strategy::SmaCrossover;
use kuant_crds::Timeframe;
use kuant_crds::backtest::FillModel;
use kuant_exchanges::paper::PaperAccount;
use kuant_exchanges::{ClientOrderId, ExchangeRules, Kline, OrderKind, OrderRequest, Side};
use rust_decimal::Decimal;

#[test]
fn paper_fills_match_the_backtests_trade_by_trade() {
    let settings = kuant_crds::backtest::SyntheticData { seed: 7, bars: 3_000, ..Default::default() };
    let series =
        SyntheticSource::new(settings).load("BTCUSDT", Timeframe::H1, Span::default()).expect("candles");
    let costs = Costs::from_bps(10.0, 5.0).expect("costs");
    let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
    let capital = Decimal::from(10_000);
    let cfg = SymbolConfig {
        run_id: Arc::from("parity"),
        symbol: Arc::from("BTCUSDT"),
        initial_cash: capital,
        costs,
        rules: rules.engine_rules(),
        fill: FillModel::NextOpen,
        position_fraction: Decimal::ONE,
    };
    let run = simulate(&series, SmaCrossover::new(10, 30), &cfg, &mut |_| {});
    let trades = run.book.trades();
    assert!(trades.len() > 20, "only {} round trips", trades.len());

    let mut paper = PaperAccount::new([("USDT".to_owned(), capital)], costs);
    paper.add_symbol(rules);
    let bars: Vec<_> = series.iter().collect();
    let mut fills = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        let kline = Kline {
            open_ms: bar.time_ms,
            open: bar.open.to_decimal(),
            high: bar.high.to_decimal(),
            low: bar.low.to_decimal(),
            close: bar.close.to_decimal(),
            volume: Decimal::ONE,
            close_ms: bar.time_ms + 3_599_999,
            closed: true,
        };
        fills.extend(paper.on_candle("BTCUSDT", &kline).into_iter().filter_map(|(_, fill)| fill));
        // Decided on this bar's close: the backtest's entry or exit in the next bar.
        let Some(next) = bars.get(i + 1) else { break };
        for (n, trade) in trades.iter().enumerate() {
            let side = if trade.entry_time == next.time_ms {
                Side::Buy
            } else if trade.exit_time == Some(next.time_ms) {
                Side::Sell
            } else {
                continue;
            };
            let request = OrderRequest {
                symbol: "BTCUSDT".into(),
                side,
                kind: OrderKind::Market,
                quantity: trade.quantity,
                client_id: ClientOrderId::new(format!("p-{n}-{}", side == Side::Buy)).expect("id"),
            };
            paper.place(&request, bar.time_ms).expect("the paper account takes what the backtest filled");
        }
    }
    let closed: Vec<_> = trades.iter().filter(|t| t.exit_time.is_some()).collect();
    assert_eq!(fills.len(), trades.len() + closed.len(), "one fill per entry and per exit");
    let mut at = fills.iter();
    for trade in &trades {
        let entry = at.next().expect("entry fill");
        assert_eq!(
            (entry.side, entry.time_ms, entry.price),
            (Side::Buy, trade.entry_time, trade.entry_price)
        );
        let mut fees = entry.fee;
        if let (Some(time), Some(price)) = (trade.exit_time, trade.exit_price) {
            let exit = at.next().expect("exit fill");
            assert_eq!((exit.side, exit.time_ms, exit.price), (Side::Sell, time, price));
            fees += exit.fee;
        }
        assert_eq!(fees, trade.fees, "fees of the round trip entered at {}", trade.entry_time);
    }
    // And what is left: the backtest's cash, exactly.
    let usdt = paper.balances().into_iter().find(|b| b.asset == "USDT").expect("USDT").free;
    assert_eq!(usdt, run.book.cash(), "cash");
}
