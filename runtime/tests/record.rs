//! What a session records in the store, against a real (SQLite) store.

use std::sync::Arc;

use kuant_agents::strategy::Side;
use kuant_exchanges::{ClientOrderId, Fill, Order, OrderKind, OrderRequest, OrderStatus};
use kuant_runtime::record::{Recorder, Source, stored_events};
use kuant_runtime::{Noted, Report, Snapshot, Step};
use kuant_store::{Run, RunKind, Store};
use rust_decimal::Decimal;
use uuid::Uuid;

fn source() -> Source {
    Source {
        stream: "BTCUSDT/0".into(),
        strategy: "sma-crossover".into(),
        symbol: "BTCUSDT".into(),
        base: "BTC".into(),
    }
}

/// A market buy of session `run` filled by trade 1 (trade ids are per exchange and symbol: a
/// paper account numbers its own from 1 in every session).
fn bought(run: u8) -> Vec<Noted> {
    let chain = Uuid::from_u128(u128::from(run) << 64 | 1);
    let request = OrderRequest {
        symbol: "BTCUSDT".into(),
        side: Side::Buy,
        kind: OrderKind::Market,
        quantity: Decimal::new(1, 2),
        client_id: ClientOrderId::new(format!("run-{run}-order-1")).expect("an id"),
    };
    let mut order = Order::accepted(&request, Arc::from("BTCUSDT"), 1, 1_000);
    order.status = OrderStatus::Filled;
    order.filled_quantity = request.quantity;
    order.filled_quote = Decimal::from(600);
    let fill = Fill {
        symbol: Arc::from("BTCUSDT"),
        client_id: request.client_id.clone(),
        order_id: 1,
        trade_id: 1,
        side: Side::Buy,
        price: Decimal::from(60_000),
        quantity: request.quantity,
        fee: Decimal::ZERO,
        fee_asset: Arc::from("USDT"),
        maker: false,
        time_ms: 1_000,
    };
    let noted = |n: u128, step| Noted {
        id: Uuid::from_u128(u128::from(run) << 64 | n),
        correlation: chain,
        causation: Some(chain),
        step,
    };
    vec![noted(2, Step::Submitted(order)), noted(3, Step::Fill(fill))]
}

#[tokio::test]
async fn two_sessions_on_one_store_each_keep_their_fill_of_the_same_trade_id() {
    let dir = std::env::temp_dir().join(format!("kuant-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("kuant.db").display().to_string()).await.expect("store");
    for (n, run_id) in [(1, "desk/paper"), (2, "desk/live")] {
        let run = Run {
            run_id: run_id.into(),
            kind: RunKind::Session,
            namespace: Some("desk".into()),
            name: run_id.trim_start_matches("desk/").into(),
            spec: serde_json::Value::Null,
            phase: "Running".into(),
        };
        let mut recorder = Recorder::open(
            store.clone(),
            run,
            "USDT",
            vec![("USDT".into(), Decimal::from(1000))],
            vec![source()],
            0,
        )
        .await
        .expect("open");
        let report = Report { trader: 0, notes: bought(n), snapshot: Snapshot::default(), ack: None };
        let events = stored_events(&report.notes, &source(), run_id);
        recorder.record(&report, &events).await.expect("recorded");
    }
    for run_id in ["desk/paper", "desk/live"] {
        let fills = store.fills_of_run(run_id).await.expect("fills");
        assert_eq!(fills.len(), 1, "{run_id}: its fill is kept, not taken for the other session's");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One order of a random sequence: side, quantity (in 0.00001), price (in 0.01), how many
/// fills it takes (0 = cancelled before any), whether the rest is cancelled after them, and the
/// fee's asset.
#[derive(Clone, Debug)]
struct Move {
    buy: bool,
    quantity: u32,
    price: u32,
    fills: u8,
    cancel_rest: bool,
    fee_in_base: bool,
}

fn moves() -> impl proptest::strategy::Strategy<Value = Vec<Move>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (any::<bool>(), 1u32..50_000, 1_000_000u32..9_000_000, 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(buy, quantity, price, fills, cancel_rest, fee_in_base)| Move {
                buy,
                quantity,
                price,
                fills,
                cancel_rest,
                fee_in_base,
            }),
        1..25,
    )
}

/// Plays `moves` through a recorder of a fresh store; returns the ledger's wallet balances
/// (BTC, USDT), what the fills say the portfolio is, the sum of every account per asset, and the
/// stored position.
async fn ledger_after(
    moves: &[Move],
    case: u64,
) -> ((Decimal, Decimal), (Decimal, Decimal), Vec<Decimal>, Decimal) {
    let dir = std::env::temp_dir().join(format!("kuant-ledger-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("kuant.db").display().to_string()).await.expect("store");
    let run = Run {
        run_id: "desk/prop".into(),
        kind: RunKind::Session,
        namespace: Some("desk".into()),
        name: "prop".into(),
        spec: serde_json::Value::Null,
        phase: "Running".into(),
    };
    let opening = Decimal::from(1_000_000);
    let mut recorder = Recorder::open(
        store.clone(),
        run,
        "USDT",
        vec![("USDT".into(), opening), ("BTC".into(), Decimal::ONE)],
        vec![source()],
        0,
    )
    .await
    .expect("open");
    let (mut btc, mut usdt) = (Decimal::ONE, opening);
    let (mut ids, mut trade) = (0u128, 0u64);
    for (i, m) in moves.iter().enumerate() {
        let chain = Uuid::from_u128(1 << 100 | i as u128);
        let mut next = |step| {
            ids += 1;
            Noted { id: Uuid::from_u128(ids), correlation: chain, causation: Some(chain), step }
        };
        let side = if m.buy { Side::Buy } else { Side::Sell };
        // Never sell more than is held.
        let quantity = Decimal::new(i64::from(m.quantity), 5).min(if m.buy { Decimal::MAX } else { btc });
        if quantity <= Decimal::ZERO {
            continue;
        }
        let price = Decimal::new(i64::from(m.price), 2);
        let request = OrderRequest {
            symbol: "BTCUSDT".into(),
            side,
            kind: OrderKind::Market,
            quantity,
            client_id: ClientOrderId::new(format!("prop-{i}")).expect("an id"),
        };
        let mut order = Order::accepted(&request, Arc::from("BTCUSDT"), i as u64 + 1, i as i64 * 10);
        let mut notes = vec![next(Step::Submitted(order.clone()))];
        // Partial fills: equal parts, the last one taking the rest (to the last decimal).
        let parts = u32::from(m.fills);
        let filled_total =
            if m.cancel_rest && parts > 0 { (quantity / Decimal::from(2)).round_dp(5) } else { quantity };
        let mut left = if parts == 0 { Decimal::ZERO } else { filled_total };
        for part in 0..parts {
            let qty =
                if part + 1 == parts { left } else { (filled_total / Decimal::from(parts)).round_dp(5) };
            if qty <= Decimal::ZERO {
                continue;
            }
            left -= qty;
            trade += 1;
            let (fee, fee_asset) = if m.fee_in_base {
                ((qty / Decimal::from(1000)).round_dp(8), "BTC")
            } else {
                ((qty * price / Decimal::from(1000)).round_dp(8), "USDT")
            };
            let fill = Fill {
                symbol: Arc::from("BTCUSDT"),
                client_id: request.client_id.clone(),
                order_id: order.exchange_id,
                trade_id: trade,
                side,
                price,
                quantity: qty,
                fee,
                fee_asset: Arc::from(fee_asset),
                maker: false,
                time_ms: i as i64 * 10 + i64::from(part) + 1,
            };
            let sign = if m.buy { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
            btc += sign * qty;
            usdt -= sign * qty * price;
            if m.fee_in_base {
                btc -= fee;
            } else {
                usdt -= fee;
            }
            order.filled_quantity += qty;
            order.filled_quote += qty * price;
            notes.push(next(Step::Fill(fill)));
        }
        order.status =
            if order.filled_quantity == quantity { OrderStatus::Filled } else { OrderStatus::Canceled };
        notes.push(next(Step::Order(order)));
        let report = Report { trader: 0, notes, snapshot: Snapshot::default(), ack: None };
        let events = stored_events(&report.notes, &source(), "desk/prop");
        recorder
            .record(&report, &events)
            .await
            .expect("every transaction balances (the store refuses one that does not)");
    }
    let balances = store.balances("desk/prop", i64::MAX).await.expect("balances");
    let wallet = |asset: &str| {
        balances
            .iter()
            .find(|(account, _, _)| *account == format!("desk/prop:wallet:{asset}"))
            .map_or(Decimal::ZERO, |(_, _, b)| *b)
    };
    let per_asset: Vec<Decimal> = ["BTC", "USDT"]
        .iter()
        .map(|asset| balances.iter().filter(|(_, a, _)| a == asset).map(|(_, _, b)| *b).sum())
        .collect();
    let position = store
        .positions_of_run("desk/prop")
        .await
        .expect("positions")
        .into_iter()
        .map(|p| p.quantity)
        .sum::<Decimal>();
    let _ = std::fs::remove_dir_all(&dir);
    ((wallet("BTC"), wallet("USDT")), (btc, usdt), per_asset, position)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..proptest::prelude::ProptestConfig::default() })]

    /// Random fills, partial fills, fees in either asset and cancels: every transaction balances
    /// (each asset's accounts sum to zero), and the ledger's wallets are the portfolio the fills
    /// make, to the last decimal, as is the stored position (plus the opening BTC).
    #[test]
    fn the_ledger_balances_and_equals_the_portfolio_to_the_last_decimal(moves in moves(), case in 0u64..u64::MAX) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (ledger, portfolio, per_asset, position) = runtime.block_on(ledger_after(&moves, case));
        proptest::prop_assert_eq!(ledger, portfolio);
        proptest::prop_assert!(per_asset.iter().all(Decimal::is_zero), "every asset's accounts sum to zero: {:?}", per_asset);
        proptest::prop_assert_eq!(position + Decimal::ONE, ledger.0, "the position is the fills' (the opening BTC aside)");
    }
}
