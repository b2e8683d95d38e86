//! Properties of the simulator's matching engine over random sequences of orders (market, limit
//! and stop-limit), cancels and price moves: balances never go negative, what is reserved is
//! exactly what open orders hold, no order fills more than its quantity, and every asset's total
//! is what the deposits and the fills make it.

use std::collections::HashMap;

use kuant_exchanges::sim::{BookShape, Engine, Fees};
use kuant_exchanges::{ClientOrderId, ExchangeRules, OrderKind, OrderRequest, Side, TimeInForce};
use proptest::prelude::*;
use rust_decimal::Decimal;

#[derive(Clone, Debug)]
enum Op {
    Place { buy: bool, market: bool, ioc: bool, quantity_steps: u32, price_offset_bp: i32, stop: bool },
    Cancel { which: usize },
    CancelAll,
    Move { bp: i32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), any::<bool>(), any::<bool>(), 1u32..200_000, -300i32..300, 0u8..4).prop_map(
            |(buy, market, ioc, quantity_steps, price_offset_bp, stop)| Op::Place { buy, market, ioc, quantity_steps, price_offset_bp, stop: stop == 0 }
        ),
        1 => (0usize..64).prop_map(|which| Op::Cancel { which }),
        1 => Just(Op::CancelAll),
        3 => (-200i32..200).prop_map(|bp| Op::Move { bp }),
    ]
}

fn bp(n: i32) -> Decimal {
    Decimal::new(i64::from(n), 4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn balances_reservations_and_fills_always_add_up(ops in proptest::collection::vec(op(), 1..120)) {
        let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
        let mut engine = Engine::new(Fees::default());
        let shape = BookShape { level_quantity: Decimal::new(3, 1), levels: 5, ..BookShape::default() };
        engine.add_market(rules.clone(), shape);
        let (usdt0, btc0) = (Decimal::from(20_000), Decimal::ONE);
        engine.adjust("USDT", usdt0).expect("deposit");
        engine.adjust("BTC", btc0).expect("deposit");
        let mut price = Decimal::from(30_000);
        engine.set_price("BTCUSDT", price, 0);
        let mut ids: Vec<ClientOrderId> = Vec::new();

        for (t, op) in ops.into_iter().enumerate() {
            let now = i64::try_from(t).expect("small") + 1;
            match op {
                Op::Place { buy, market, ioc, quantity_steps, price_offset_bp, stop } => {
                    let id = ClientOrderId::new(format!("p{t}")).expect("id");
                    let limit = (price * (Decimal::ONE + bp(price_offset_bp))).round_dp(2);
                    let time_in_force = if ioc { TimeInForce::Ioc } else { TimeInForce::Gtc };
                    let kind = if market {
                        OrderKind::Market
                    } else if stop {
                        // A stop beyond the market, its limit 0.1 % past the stop.
                        let past = if buy { Decimal::new(1001, 3) } else { Decimal::new(999, 3) };
                        OrderKind::StopLossLimit { stop_price: limit, price: (limit * past).round_dp(2), time_in_force }
                    } else {
                        OrderKind::Limit { price: limit, time_in_force }
                    };
                    let request = OrderRequest {
                        symbol: "BTCUSDT".into(),
                        side: if buy { Side::Buy } else { Side::Sell },
                        kind,
                        quantity: Decimal::new(i64::from(quantity_steps), 5),
                        client_id: id.clone(),
                    };
                    // Refusals (balance, filters) are fine; what is accepted must add up.
                    if engine.place(&request, now).is_ok() {
                        ids.push(id);
                    }
                }
                Op::Cancel { which } => {
                    if let Some(id) = ids.get(which % ids.len().max(1)) {
                        let _ = engine.cancel("BTCUSDT", id, now);
                    }
                }
                Op::CancelAll => {
                    engine.cancel_all("BTCUSDT", now).expect("a known symbol");
                }
                Op::Move { bp: step } => {
                    price = (price * (Decimal::ONE + bp(step))).round_dp(2).max(Decimal::ONE);
                    engine.set_price("BTCUSDT", price, now);
                }
            }

            // Never negative.
            for b in engine.balances() {
                prop_assert!(b.free >= Decimal::ZERO && b.locked >= Decimal::ZERO, "{b:?}");
            }
            // Reserved = what open orders hold.
            let (mut quote_held, mut base_held) = (Decimal::ZERO, Decimal::ZERO);
            for o in engine.open_orders(None) {
                let rest = o.quantity - o.filled_quantity;
                match (o.side, o.kind.limit_price()) {
                    (Side::Buy, Some(price)) => quote_held += price * rest,
                    (Side::Sell, _) => base_held += rest,
                    _ => prop_assert!(false, "a market order left open: {o:?}"),
                }
            }
            let balance = |asset: &str| engine.balances().into_iter().find(|b| b.asset == asset).expect("held");
            prop_assert_eq!(balance("USDT").locked, quote_held);
            prop_assert_eq!(balance("BTC").locked, base_held);
            // No order fills more than its quantity; its fills add up to what it says.
            let mut filled: HashMap<ClientOrderId, Decimal> = HashMap::new();
            for f in engine.fills() {
                *filled.entry(f.client_id.clone()).or_default() += f.quantity;
            }
            for o in engine.all_orders(None) {
                prop_assert!(o.filled_quantity <= o.quantity, "{o:?}");
                prop_assert_eq!(filled.get(&o.client_id).copied().unwrap_or_default(), o.filled_quantity);
            }
            // Totals: deposits moved only by fills and their fees.
            let (mut usdt, mut btc) = (usdt0, btc0);
            for f in engine.fills() {
                let notional = f.price * f.quantity;
                match f.side {
                    Side::Buy => { usdt -= notional; btc += f.quantity - f.fee; }
                    Side::Sell => { btc -= f.quantity; usdt += notional - f.fee; }
                }
            }
            prop_assert_eq!(balance("USDT").total(), usdt);
            prop_assert_eq!(balance("BTC").total(), btc);
        }
    }
}
