//! The user data stream (WebSocket API subscription) against `kuant exchange-sim`: the
//! account's order and balance updates arrive as orders are placed, filled and cancelled, the
//! subscription is renewed after a dropped connection, and a wrong key is refused for good.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{KEY, SECRET, d};
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::binance::rest::BinanceRest;
use kuant_exchanges::binance::user_stream::{UserEvent, UserStream};
use kuant_exchanges::{
    AccountUpdate, ClientOrderId, OrderKind, OrderRequest, OrderStatus, Side, TimeInForce,
};
use tokio::sync::mpsc::Receiver;

fn user_stream(base: &str, credentials: Credentials) -> Receiver<UserEvent> {
    let mut s =
        UserStream::new(&format!("{}/ws-api/v3", base.replace("http://", "ws://")), Arc::new(credentials));
    s.first_backoff = Duration::from_millis(50);
    s.spawn()
}

async fn next(rx: &mut Receiver<UserEvent>, want: impl Fn(&UserEvent) -> bool) -> UserEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("nothing wanted within 5 s"),
        }
    }
}

fn order(id: &str, side: Side, kind: OrderKind) -> OrderRequest {
    OrderRequest {
        symbol: "BTCUSDT".into(),
        side,
        kind,
        quantity: d("0.01"),
        client_id: ClientOrderId::new(id).expect("id"),
    }
}

fn is_order(id: &'static str, status: OrderStatus) -> impl Fn(&UserEvent) -> bool {
    move |e| matches!(e, UserEvent::Update(AccountUpdate::Order { order, .. }) if order.client_id.as_str() == id && order.status == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_and_balance_updates_arrive_and_the_subscription_survives_a_dropped_connection() {
    let (base, _state) = common::start(1.0);
    let mut rx = user_stream(&base, Credentials::hmac(KEY, SECRET));
    next(&mut rx, |e| *e == UserEvent::Subscribed).await;

    let api = BinanceRest::new(&base, Some(Credentials::hmac(KEY, SECRET))).expect("client");
    let rules = api.exchange_info().await.expect("rules").remove(0);
    let price = api.price("BTCUSDT").await.expect("price");
    api.place(&order("us-1", Side::Buy, OrderKind::Market), &rules, price).await.expect("placed");
    next(&mut rx, is_order("us-1", OrderStatus::New)).await;
    let filled = next(&mut rx, is_order("us-1", OrderStatus::Filled)).await;
    let UserEvent::Update(AccountUpdate::Order { order: filled_order, fill: Some(fill) }) = filled else {
        panic!("a fill")
    };
    assert_eq!((filled_order.filled_quantity, fill.quantity), (d("0.01"), d("0.01")));
    let balances = next(&mut rx, |e| matches!(e, UserEvent::Update(AccountUpdate::Balances { .. }))).await;
    let UserEvent::Update(AccountUpdate::Balances { balances, .. }) = balances else { panic!("balances") };
    assert!(balances.iter().any(|b| b.asset == "BTC" && b.free > d("0.5")), "{balances:?}");

    let resting = OrderKind::Limit { price: d("30000"), time_in_force: TimeInForce::Gtc };
    api.place(&order("us-2", Side::Buy, resting), &rules, price).await.expect("placed");
    next(&mut rx, is_order("us-2", OrderStatus::New)).await;
    api.cancel("BTCUSDT", &ClientOrderId::new("us-2").expect("id")).await.expect("cancelled");
    next(&mut rx, is_order("us-2", OrderStatus::Canceled)).await;

    // Dropped: reconnected and subscribed again; updates flow again.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    agent.post(format!("{base}/_sim/faults")).send(r#"{"kind": "drop-connections"}"#).expect("fault");
    next(&mut rx, |e| matches!(e, UserEvent::Reconnecting { .. })).await;
    next(&mut rx, |e| *e == UserEvent::Subscribed).await;
    api.place(&order("us-3", Side::Sell, OrderKind::Market), &rules, price).await.expect("placed");
    next(&mut rx, is_order("us-3", OrderStatus::Filled)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_for_good() {
    let (base, _state) = common::start(1.0);
    let mut rx = user_stream(&base, Credentials::hmac(KEY, "not-the-secret"));
    let refused = next(&mut rx, |e| matches!(e, UserEvent::Refused(_))).await;
    assert!(matches!(&refused, UserEvent::Refused(r) if r.contains("-1022")), "{refused:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.expect("ended").is_none(),
        "stopped"
    );
}
