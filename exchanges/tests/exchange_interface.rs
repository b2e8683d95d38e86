//! One scenario through the [`Exchange`] interface, run unchanged on Binance's adapter against
//! `kuant exchange-sim` over real HTTP and WebSocket, and on the paper account fed by the same
//! simulator's public data (its balances recorded in a store).

mod common;

use std::sync::Arc;
use std::time::Duration;

use kuant_agents::execution::Costs;
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::binance::stream::StreamEvent;
use kuant_exchanges::binance::user_stream::UserEvent;
use kuant_exchanges::paper::{BalanceRecorder, PaperAccount, PaperExchange};
use kuant_exchanges::{
    AccountUpdate, BinanceEndpoints, BinanceExchange, ClientOrderId, Exchange, ExchangeError, ExchangeRules,
    MarketFeed, OrderKind, OrderRequest, OrderStatus, RejectKind, Side, TimeInForce,
};
use rust_decimal::Decimal;

use common::d;

/// An hourly candle every 100 ms.
const FAST: f64 = 36_000.0;

fn id(text: &str) -> ClientOrderId {
    ClientOrderId::new(text).expect("id")
}

fn request(client_id: &str, side: Side, kind: OrderKind, quantity: &str) -> OrderRequest {
    OrderRequest { symbol: "BTCUSDT".into(), side, kind, quantity: d(quantity), client_id: id(client_id) }
}

fn gtc(price: &str) -> OrderKind {
    OrderKind::Limit { price: d(price), time_in_force: TimeInForce::Gtc }
}

async fn until_filled<E: Exchange>(exchange: &E, client_id: &str) {
    for _ in 0..100 {
        let order = exchange.order("BTCUSDT", &id(client_id)).await.expect("asked").expect("known");
        if order.status == OrderStatus::Filled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{client_id} did not fill within 5 s");
}

/// The scenario: market data, rules, a market order filled (and announced), a limit resting
/// and cancelled, cancel-all, the rules' refusal, an idempotent client id, trades and balances.
async fn scenario<E: Exchange>(exchange: &E) {
    let name = exchange.name().to_owned();
    let rules = exchange.symbol_rules().await.expect("rules");
    let btc = rules.iter().find(|r| r.symbol == "BTCUSDT").expect("BTCUSDT listed").clone();
    let candles = exchange.klines("BTCUSDT", "1h", None, None, 5).await.expect("klines");
    assert!(!candles.is_empty(), "{name}: klines");
    let price = exchange.latest_price("BTCUSDT").await.expect("price");
    assert!(price > Decimal::ZERO);
    let mut market = exchange.market_stream(&[MarketFeed::Klines("BTCUSDT".into(), "1h".into())]);
    let mut updates = exchange.account_updates().expect("updates");
    assert_eq!(updates.recv().await, Some(UserEvent::Subscribed), "{name}");

    // A market buy fills (at once on the exchange; on the paper account at the next candle).
    let (placed, _) = exchange
        .place(&request("if-m1", Side::Buy, OrderKind::Market, "0.01"), &btc, price)
        .await
        .expect("placed");
    assert_eq!(placed.client_id, id("if-m1"));
    until_filled(exchange, "if-m1").await;
    // Its client id is its idempotency key: sent again, the same order, not a second one.
    let (again, _) = exchange
        .place(&request("if-m1", Side::Buy, OrderKind::Market, "0.01"), &btc, price)
        .await
        .expect("again");
    assert_eq!((again.exchange_id, again.status), (placed.exchange_id, OrderStatus::Filled), "{name}");
    let trades = exchange.trades("BTCUSDT", None).await.expect("trades");
    let bought: Decimal =
        trades.iter().filter(|t| t.order_id == placed.exchange_id).map(|t| t.quantity).sum();
    assert_eq!(bought, d("0.01"), "{name}: {trades:?}");
    let balances = exchange.balances().await.expect("balances");
    let held =
        |asset: &str| balances.iter().find(|b| b.asset == asset).map(|b| b.total()).unwrap_or_default();
    assert!(held("BTC") >= d("0.01") && held("USDT") < d("10000"), "{name}: {balances:?}");

    // Limits rest below the market; one cancelled, then the rest at once.
    for (n, p) in [("if-l1", "30000"), ("if-l2", "30100"), ("if-l3", "30200")] {
        exchange.place(&request(n, Side::Buy, gtc(p), "0.01"), &btc, price).await.expect("resting");
    }
    assert_eq!(exchange.open_orders("BTCUSDT").await.expect("open").len(), 3, "{name}");
    let canceled = exchange.cancel("BTCUSDT", &id("if-l1")).await.expect("cancelled");
    assert_eq!(canceled.status, OrderStatus::Canceled);
    let unknown = exchange.cancel("BTCUSDT", &id("if-l1")).await;
    assert!(
        matches!(unknown, Err(ExchangeError::Rejected { kind: RejectKind::UnknownOrder, .. })),
        "{name}: {unknown:?}"
    );
    assert_eq!(exchange.cancel_all("BTCUSDT").await.expect("all").len(), 2, "{name}");
    assert!(exchange.open_orders("BTCUSDT").await.expect("open").is_empty());
    // Below the lot size: refused before it leaves.
    let tiny = exchange.place(&request("if-t1", Side::Buy, OrderKind::Market, "0.000001"), &btc, price).await;
    assert!(matches!(tiny, Err(ExchangeError::Blocked(_))), "{name}: {tiny:?}");

    // The fill was announced, with its execution.
    let mut announced = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), updates.recv()).await {
        if let UserEvent::Update(AccountUpdate::Order { order, fill: Some(fill) }) = event
            && order.client_id == id("if-m1")
        {
            assert!(fill.quantity > Decimal::ZERO && fill.quantity <= d("0.01"), "{name}: {fill:?}");
            announced = true;
        }
    }
    assert!(announced, "{name}: the fill of if-m1 was announced");
    // And the market stream flows.
    let flowing = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = market.recv().await {
            if matches!(e, StreamEvent::Market(..)) {
                return true;
            }
        }
        false
    });
    assert!(flowing.await.unwrap_or(false), "{name}: market data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binance_adapter_against_the_simulator() {
    let (base, _state) = common::start(FAST);
    let exchange = BinanceExchange::new(
        BinanceEndpoints::at(&base),
        Some(Credentials::hmac(common::KEY, common::SECRET)),
    )
    .expect("client");
    scenario(&exchange).await;
    // myTrades' selectors: one order's trades, or from a time on.
    let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
    let price = exchange.latest_price("BTCUSDT").await.expect("price");
    let (second, _) = exchange
        .place(&request("if-m2", Side::Sell, OrderKind::Market, "0.005"), &rules, price)
        .await
        .expect("placed");
    let of_second =
        exchange.rest().my_trades("BTCUSDT", None, Some(second.exchange_id)).await.expect("trades");
    assert!(
        !of_second.is_empty()
            && of_second.iter().all(|t| t.order_id == second.exchange_id && t.side == Side::Sell)
    );
    let all = exchange.trades("BTCUSDT", None).await.expect("all");
    assert!(all.len() > of_second.len());
    let later = exchange.trades("BTCUSDT", Some(i64::MAX / 2)).await.expect("none later");
    assert!(later.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paper_account_on_the_simulators_data_records_its_balances() {
    let (base, state) = common::start(FAST);
    // Market data only: no key.
    let market = Arc::new(BinanceExchange::new(BinanceEndpoints::at(&base), None).expect("client"));
    let dir = std::env::temp_dir().join(format!("kuant-paper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // Removed when the test ends, whatever happens.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let store = kuant_store::Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("store");
    store
        .upsert_run(&kuant_store::Run {
            run_id: "paper-it".into(),
            kind: kuant_store::RunKind::Session,
            namespace: None,
            name: "paper".into(),
            spec: serde_json::json!({}),
            phase: "Running".into(),
        })
        .await
        .expect("run");
    let costs = Costs::from_bps(10.0, 5.0).expect("costs");
    let account = PaperAccount::new([("USDT".to_owned(), d("10000"))], costs);
    let recorder = BalanceRecorder { store: store.clone(), run_id: "paper-it".into() };
    let paper = PaperExchange::start(market, account, &["BTCUSDT".into()], "1h", Some(recorder))
        .await
        .expect("paper");
    let opening = store.paper_balances("paper-it").await.expect("opening");
    assert_eq!(
        opening.iter().map(|b| (b.asset.as_str(), b.free)).collect::<Vec<_>>(),
        vec![("USDT", d("10000"))]
    );

    scenario(&paper).await;
    assert_eq!(state.orders_placed(), 0, "paper orders never leave the process");
    // The store holds what the account holds, to the last digit.
    let held = paper.balances().await.expect("balances");
    let recorded = store.paper_balances("paper-it").await.expect("recorded");
    assert_eq!(
        recorded.iter().map(|b| (b.asset.clone(), b.free + b.locked)).collect::<Vec<_>>(),
        held.iter().map(|b| (b.asset.clone(), b.total())).collect::<Vec<_>>(),
    );
    assert!(held.iter().any(|b| b.asset == "BTC" && b.free == d("0.01")));
}
