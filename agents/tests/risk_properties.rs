//! The risk desk over random sequences of intents, fills (whole or partial, at or better than the
//! price the intent was valued at), cancels and rejects: the budget never goes negative, nothing
//! is reserved once every order has ended, and every unit of quote is accounted for: free +
//! reserved = the budget - what buys cost + what sells brought.

use kuant_agents::risk::{Desk, Execution, Intent, RiskLimits};
use kuant_agents::strategy::Side;
use proptest::prelude::*;
use rust_decimal::Decimal;

#[derive(Clone, Debug)]
enum Step {
    Intent { buy: bool, quantity: u32, price: u32 },
    Fill { which: usize, part: u32, better: u32 },
    End { which: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<bool>(), 1u32..50, 50u32..150).prop_map(|(buy, quantity, price)| Step::Intent {
            buy,
            quantity,
            price
        }),
        (0usize..64, 1u32..=100, 0u32..5).prop_map(|(which, part, better)| Step::Fill {
            which,
            part,
            better
        }),
        (0usize..64).prop_map(|which| Step::End { which }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn the_budget_is_never_overspent_and_always_accounted_for(steps in prop::collection::vec(step(), 1..120)) {
        let limits = RiskLimits {
            max_position: Decimal::ONE,
            max_order_notional: None,
            max_open_orders: 20,
            max_orders_per_minute: 6000,
            max_daily_loss: Decimal::ONE,
            max_drawdown: Decimal::ONE,
        };
        let budget = Decimal::from(5_000);
        let fee_rate = Decimal::new(1, 3);
        let mut desk = Desk::new(limits, budget, fee_rate, 0);
        // (intent, quantity left to fill)
        let mut intents: Vec<(Intent, Decimal)> = Vec::new();
        let mut flow = Decimal::ZERO;
        for (n, s) in steps.into_iter().enumerate() {
            match s {
                Step::Intent { buy, quantity, price } => {
                    let intent = Intent {
                        id: format!("i{n}"),
                        symbol: "BTCUSDT".into(),
                        side: if buy { Side::Buy } else { Side::Sell },
                        quantity: Decimal::new(i64::from(quantity), 2),
                        price: Decimal::from(price),
                    };
                    if desk.approve(&intent, n as i64).is_ok() {
                        let q = intent.quantity;
                        intents.push((intent, q));
                    }
                }
                Step::Fill { which, part, better } => {
                    let Some((intent, left)) = intents.get_mut(which) else { continue };
                    if left.is_zero() { continue; }
                    let q = (intent.quantity * Decimal::from(part) / Decimal::ONE_HUNDRED).round_dp(2).min(*left);
                    if q.is_zero() { continue; }
                    // At the price it was valued at, or better for the account.
                    let price = match intent.side {
                        Side::Buy => intent.price - Decimal::from(better),
                        Side::Sell => intent.price + Decimal::from(better),
                    };
                    let fee = q * price * fee_rate;
                    let execution = Execution {
                        symbol: &intent.symbol,
                        side: intent.side,
                        quantity: q,
                        price,
                        fee,
                        fee_in_base: false,
                    };
                    desk.fill(&intent.id, &execution);
                    flow += match intent.side { Side::Buy => -(q * price + fee), Side::Sell => q * price - fee };
                    *left -= q;
                    if left.is_zero() { desk.end(&intent.id); }
                }
                Step::End { which } => {
                    if let Some((intent, left)) = intents.get_mut(which) {
                        desk.end(&intent.id);
                        *left = Decimal::ZERO;
                    }
                }
            }
            prop_assert!(desk.free_quote() >= Decimal::ZERO, "free {}", desk.free_quote());
            prop_assert!(desk.position("BTCUSDT") >= Decimal::ZERO);
            prop_assert_eq!(desk.free_quote() + desk.reserved_quote(), budget + flow);
        }
        for (intent, _) in &intents { desk.end(&intent.id); }
        prop_assert_eq!(desk.reserved_quote(), Decimal::ZERO);
        prop_assert_eq!(desk.free_quote(), budget + flow);
    }
}
