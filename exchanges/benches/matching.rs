//! The simulator's matching engine in process: orders per second for a mix of market orders,
//! resting limit orders, cancels and price moves. Prints figures; asserts nothing.
//!
//! `cargo bench -p kuant-exchanges --bench matching` (`KUANT_BENCH_ORDERS`, default 1,000,000)

use std::time::Instant;

use kuant_exchanges::sim::{BookShape, Engine, Fees};
use kuant_exchanges::{ClientOrderId, ExchangeRules, OrderKind, OrderRequest, Side, TimeInForce};
use rust_decimal::Decimal;

fn main() {
    let count: u64 =
        std::env::var("KUANT_BENCH_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut engine = Engine::new(Fees::default());
    let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
    engine.add_market(rules, BookShape::default());
    engine.adjust("USDT", Decimal::from(1_000_000_000_000i64)).expect("deposit");
    engine.adjust("BTC", Decimal::from(1_000_000)).expect("deposit");
    let mut price = Decimal::from(60_000);
    engine.set_price("BTCUSDT", price, 0);
    // Ids made before the clock starts: making them is the caller's work, not the engine's.
    let ids: Vec<ClientOrderId> =
        (0..count).map(|i| ClientOrderId::new(format!("b{i}")).expect("id")).collect();
    let quantity = Decimal::new(1, 3);
    let (mut accepted, mut fills_before) = (0u64, 0usize);
    let mut resting = std::collections::VecDeque::new();
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let i = i as u64;
        let side = if i.is_multiple_of(2) { Side::Buy } else { Side::Sell };
        // Three in four are market orders; one in four a limit 0.1 % away that rests.
        let kind = if i % 4 == 3 {
            let away = if side == Side::Buy { Decimal::new(999, 3) } else { Decimal::new(1001, 3) };
            OrderKind::Limit { price: (price * away).round_dp(2), time_in_force: TimeInForce::Gtc }
        } else {
            OrderKind::Market
        };
        let request = OrderRequest { symbol: "BTCUSDT".into(), side, kind, quantity, client_id: id.clone() };
        let now = i as i64;
        if let Ok((order, _)) = engine.place(&request, now) {
            accepted += 1;
            if order.status.is_open() {
                resting.push_back(order.client_id);
            }
        }
        // Every 100 orders the price moves (resting orders may fill) and the oldest resting one
        // is cancelled.
        if i % 100 == 99 {
            let step = if (i / 100).is_multiple_of(2) { Decimal::new(1002, 3) } else { Decimal::new(998, 3) };
            price = (price * step).round_dp(2);
            fills_before += engine.set_price("BTCUSDT", price, now).orders.len();
            // (It may have filled since: then the cancel is refused, as on the exchange.)
            if let Some(oldest) = resting.pop_front() {
                let _ = engine.cancel("BTCUSDT", &oldest, now);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "matching engine: {count} orders in {elapsed:.2} s = {:.0} orders/s ({accepted} accepted, {} fills, {fills_before} resting-order fills, {} open at the end)",
        count as f64 / elapsed,
        engine.fill_count(),
        engine.open_orders(None).len(),
    );
}
