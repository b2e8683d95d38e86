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
        let mut recorder = Recorder::open(store.clone(), run, "USDT", Decimal::from(1000), vec![source()], 0)
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
