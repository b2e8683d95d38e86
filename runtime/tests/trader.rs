//! A trader against `kuant exchange-sim` over loopback, live (orders to the simulator) and on
//! paper (the simulator's market data, orders filled by the paper account): signals become
//! orders and fills, each counted once, and the risk desk's books end equal to the exchange's.

use std::sync::Arc;
use std::time::Duration;

use kuant_agents::execution::Costs;
use kuant_agents::risk::RiskLimits;
use kuant_agents::strategy::{AnyStrategy, SmaCrossover};
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::paper::{PaperAccount, PaperExchange};
use kuant_exchanges::sim::{
    BookShape, Candle, Fees, Replay, SimConfig, SimState, SimSymbol, Speed, serve_on_loopback,
};
use kuant_exchanges::{BinanceEndpoints, BinanceExchange, Exchange, ExchangeRules, OrderStatus};
use kuant_runtime::{Noted, Plan, Step, Trader};
use rust_decimal::Decimal;

const H: i64 = 3_600_000;

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// A simulator of BTCUSDT swinging around 60,000 (so a fast SMA crosses a slow one often), at
/// `speed`; its base URL and state.
fn simulator(speed: Speed) -> (String, SimState) {
    let start = 1_700_000_000_000 - 1_700_000_000_000 % H;
    let candles = (0..600)
        .map(|i| {
            let swing = (f64::from(i) / 3.0).sin() * 3_000.0;
            let open = Decimal::from(60_000 + swing as i64);
            Candle {
                open_ms: start + i64::from(i) * H,
                open,
                high: open + Decimal::from(40),
                low: open - Decimal::from(40),
                close: open + Decimal::from(10),
                volume: d("12.5"),
            }
        })
        .collect();
    let config = SimConfig {
        symbols: vec![SimSymbol {
            rules: ExchangeRules::binance_default("BTCUSDT").expect("rules"),
            replay: Replay::new(candles, H).expect("replay"),
            interval: "1h".into(),
        }],
        speed,
        credentials: Credentials::hmac("k", "s"),
        balances: vec![("USDT".into(), d("10000"))],
        fees: Fees::default(),
        book: BookShape::default(),
    };
    let state = SimState::new(config).expect("a simulator");
    let base = serve_on_loopback(state.clone()).expect("served");
    (base, state)
}

/// A client trading on a fresh simulator (see [`simulator`]) at `speed`, with the simulator's state.
fn live(speed: Speed) -> (Arc<BinanceExchange>, SimState) {
    let (base, state) = simulator(speed);
    let exchange = Arc::new(
        BinanceExchange::new(BinanceEndpoints::at(&base), Some(Credentials::hmac("k", "s"))).expect("client"),
    );
    (exchange, state)
}

/// A kill switch that stays off (its sender gone, it never changes).
fn off() -> tokio::sync::watch::Receiver<bool> {
    tokio::sync::watch::channel(false).1
}

fn plan() -> Plan {
    Plan {
        session_id: "it-session".into(),
        stream: "BTCUSDT/0".into(),
        strategy_name: "sma-crossover".into(),
        symbol: "BTCUSDT".into(),
        interval: "1h".into(),
        interval_ms: H,
        strategy: AnyStrategy::SmaCrossover(SmaCrossover::new(3, 8)),
        allocation: d("0.5"),
        costs: Costs::from_bps(10.0, 5.0).expect("costs"),
        limits: RiskLimits {
            max_position: Decimal::ONE,
            max_order_notional: None,
            max_open_orders: 5,
            max_orders_per_minute: 6000,
            max_daily_loss: Decimal::ONE,
            max_drawdown: Decimal::ONE,
        },
        budget: d("10000"),
        stale_after_ms: 30_000,
        poll_every_ms: Some(5_000),
        warm_up: 100,
        stop_loss: None,
    }
}

/// The desk's books are the exchange's, to the last decimal.
async fn books_agree<E: Exchange, X: Exchange>(trader: &Trader<E>, exchange: &X) {
    let balances = exchange.balances().await.expect("balances");
    let total =
        |asset: &str| balances.iter().find(|b| b.asset == asset).map(|b| b.total()).unwrap_or_default();
    let desk = trader.desk();
    assert_eq!(desk.position("BTCUSDT"), total("BTC"));
    assert_eq!(desk.free_quote() + desk.reserved_quote(), total("USDT"));
}

/// Every submitted order filled, each fill counted once, nothing blocked but by the data, and
/// every step in its chain: its causes lead back to the signal its correlation id names.
fn check_chain(journal: &[Noted]) -> usize {
    let steps: Vec<&Step> = journal.iter().map(|n| &n.step).collect();
    let submitted: Vec<_> = steps
        .iter()
        .filter_map(|s| if let Step::Submitted(o) = s { Some(o.client_id.clone()) } else { None })
        .collect();
    assert!(submitted.len() >= 4, "orders: {steps:#?}");
    for id in &submitted {
        let filled = steps
            .iter()
            .any(|s| matches!(s, Step::Order(o) if o.client_id == *id && o.status == OrderStatus::Filled));
        assert!(filled, "{id} filled: {steps:#?}");
        assert!(id.as_str().starts_with("kq") && id.as_str().len() == 34, "{id}");
    }
    let mut trade_ids: Vec<u64> =
        steps.iter().filter_map(|s| if let Step::Fill(f) = s { Some(f.trade_id) } else { None }).collect();
    let all = trade_ids.len();
    trade_ids.sort_unstable();
    trade_ids.dedup();
    assert_eq!(trade_ids.len(), all, "each fill once");
    let blocked: Vec<_> = steps.iter().filter(|s| matches!(s, Step::Blocked { .. })).collect();
    assert!(blocked.is_empty(), "{blocked:#?}");
    traces_to_signals(journal);
    submitted.len()
}

/// Every step of a decision (all but health changes) leads back, cause by cause, to the signal
/// its correlation id names; event ids are distinct.
fn traces_to_signals(journal: &[Noted]) {
    let by_id: std::collections::HashMap<_, _> = journal.iter().map(|n| (n.id, n)).collect();
    assert_eq!(by_id.len(), journal.len(), "event ids are distinct");
    for n in journal.iter().filter(|n| !matches!(n.step, Step::Health { .. })) {
        let mut at = n;
        while let Some(cause) = at.causation {
            at = by_id.get(&cause).unwrap_or_else(|| panic!("{:?}: its cause is not in the journal", n.step));
        }
        assert_eq!(at.id, n.correlation, "{:?}: its causes end at its chain's signal", n.step);
        assert!(matches!(at.step, Step::Signal { .. }), "{:?} traces back to a signal", n.step);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_on_the_simulator_signals_become_orders_and_the_books_agree() {
    let (exchange, state) = live(Speed::Times(360_000.0));
    let trader = Trader::start(exchange.clone(), plan()).await.expect("started");
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(4)), off()).await.expect("ran");
    let orders = check_chain(trader.journal());
    assert_eq!(state.orders_placed(), orders, "one order per decision, none twice");
    books_agree(&trader, exchange.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_paper_nothing_reaches_the_simulator_and_fills_come_from_the_paper_account() {
    let (base, state) = simulator(Speed::Times(360_000.0));
    let market = Arc::new(BinanceExchange::new(BinanceEndpoints::at(&base), None).expect("client"));
    let costs = Costs::from_bps(10.0, 5.0).expect("costs");
    let account = PaperAccount::new([("USDT".to_owned(), d("10000"))], costs);
    let paper = Arc::new(
        PaperExchange::start(market, account, &["BTCUSDT".into()], "1h", None).await.expect("paper"),
    );
    let trader = Trader::start(paper.clone(), plan()).await.expect("started");
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(4)), off()).await.expect("ran");
    check_chain(trader.journal());
    assert_eq!(state.orders_placed(), 0);
    books_agree(&trader, paper.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_stale_within_its_limit_and_nothing_trades_until_it_returns() {
    use kuant_agents::watchdog::Change;
    // Ten candles a second: the trader keeps up, so silence at the server is silence here.
    let (exchange, state) = live(Speed::Times(36_000.0));
    let plan = Plan { stale_after_ms: 500, ..plan() };
    let trader = Trader::start(exchange, plan).await.expect("started");
    let silenced = std::time::Instant::now() + Duration::from_secs(1);
    let silencer = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(silenced.into()).await;
        silencer.inject(&kuant_exchanges::sim::Fault::Silence { seconds: 1.5 }).expect("silence");
    });
    let silenced_ms = i64::try_from(
        (std::time::SystemTime::now() + Duration::from_secs(1))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_millis(),
    )
    .expect("ms");
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(6)), off()).await.expect("ran");
    let steps = trader.steps();
    let stale = steps
        .iter()
        .position(|s| matches!(s, Step::Health { change: Change::BecameStale { .. }, .. }))
        .expect("went stale");
    let Step::Health { at_ms, .. } = &steps[stale] else { unreachable!("a health step") };
    assert!(*at_ms - silenced_ms <= 500 + 1_000, "stale {} ms after the silence began", at_ms - silenced_ms);
    let healthy = steps[stale..]
        .iter()
        .position(|s| matches!(s, Step::Health { change: Change::BecameHealthy { .. }, .. }))
        .expect("healthy again")
        + stale;
    assert!(!steps[stale..healthy].iter().any(|s| matches!(s, Step::Submitted(_))), "no order on stale data");
    assert!(
        steps[healthy..].iter().any(|s| matches!(s, Step::Submitted(_))),
        "trading resumed: {:#?}",
        &steps[healthy..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_cancels_open_orders_at_once_and_blocks_new_ones_while_data_flows() {
    let (base, state) = simulator(Speed::Times(36_000.0));
    let market = Arc::new(BinanceExchange::new(BinanceEndpoints::at(&base), None).expect("client"));
    let costs = Costs::from_bps(10.0, 5.0).expect("costs");
    let account = PaperAccount::new([("USDT".to_owned(), d("10000"))], costs);
    let paper = Arc::new(
        PaperExchange::start(market, account, &["BTCUSDT".into()], "1h", None).await.expect("paper"),
    );
    let mut trader = Trader::start(paper.clone(), plan()).await.expect("started");
    // An order resting on the account (the switch cancels every open order of the symbol).
    let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
    let resting = kuant_exchanges::OrderRequest {
        symbol: "BTCUSDT".into(),
        side: kuant_agents::strategy::Side::Buy,
        kind: kuant_exchanges::OrderKind::Limit {
            price: d("1000"),
            time_in_force: kuant_exchanges::TimeInForce::Gtc,
        },
        quantity: d("0.01"),
        client_id: kuant_exchanges::ClientOrderId::new("resting-1").expect("id"),
    };
    paper.place(&resting, &rules, d("1000")).await.expect("resting");
    assert_eq!(paper.open_orders("BTCUSDT").await.expect("open").len(), 1);
    let thrown = std::time::Instant::now();
    trader.suspend(true).await;
    assert!(thrown.elapsed() < Duration::from_secs(2));
    assert!(paper.open_orders("BTCUSDT").await.expect("open").is_empty(), "cancelled");
    assert!(trader.steps().iter().any(|s| matches!(s, Step::Order(o) if o.status == OrderStatus::Canceled)));
    // Data keeps flowing; signals are refused.
    let mut stream =
        paper.market_stream(&[kuant_exchanges::MarketFeed::Klines("BTCUSDT".into(), "1h".into())]);
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !trader.steps().iter().any(|s| matches!(s, Step::Blocked { reason, .. } if reason == "suspended")) {
        let event = tokio::time::timeout_at(until, stream.recv())
            .await
            .expect("a signal within 20 s")
            .expect("a stream");
        trader.on_stream(event, wall()).await;
    }
    assert!(!trader.steps().iter().any(|s| matches!(s, Step::Submitted(_))), "nothing new while suspended");
    // Off again: it trades.
    trader.suspend(false).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !trader.steps().iter().any(|s| matches!(s, Step::Submitted(_))) {
        let event = tokio::time::timeout_at(until, stream.recv())
            .await
            .expect("an order within 20 s")
            .expect("a stream");
        trader.on_stream(event, wall()).await;
    }
    assert_eq!(state.orders_placed(), 0);
}

fn wall() -> i64 {
    i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_millis(),
    )
    .expect("ms")
}

/// The client ids of the protective stops submitted, in order.
fn stops_submitted(steps: &[&Step]) -> Vec<kuant_exchanges::ClientOrderId> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Submitted(o) if matches!(o.kind, kuant_exchanges::OrderKind::StopLossLimit { .. }) => {
                Some(o.client_id.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protective_stop_rests_after_each_entry_and_sells_when_the_price_falls_through_it() {
    let (exchange, state) = live(Speed::Times(360_000.0));
    let plan = Plan { stop_loss: Some(d("0.01")), ..plan() };
    let trader = Trader::start(exchange.clone(), plan).await.expect("started");
    // The 600 candles are replayed in 6 s; a stop that fills at the end is reported on the
    // account stream a moment later: the trader runs on until the market has stopped moving.
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(7)), off()).await.expect("ran");
    let steps = trader.steps();
    traces_to_signals(trader.journal());
    let stops = stops_submitted(&steps);
    let entries = steps
        .iter()
        .filter(|s| matches!(s, Step::Submitted(o) if o.side == kuant_agents::strategy::Side::Buy))
        .count();
    assert!(stops.len() >= 3 && stops.len() >= entries, "a stop after each entry: {steps:#?}");
    let hit = stops
        .iter()
        .filter(|id| steps.iter().any(|s| matches!(s, Step::Fill(f) if f.client_id == **id)))
        .count();
    assert!(hit >= 1, "some stop sold the position: {steps:#?}");
    // Each stop's price is 1 % under its entry.
    for s in &steps {
        if let Step::Submitted(o) = s
            && let kuant_exchanges::OrderKind::StopLossLimit { stop_price, price, .. } = o.kind
        {
            assert!(price < stop_price, "{o:?}");
            assert_eq!(o.side, kuant_agents::strategy::Side::Sell);
        }
    }
    // Nothing rests on the exchange but the position's stop.
    let open = exchange.open_orders("BTCUSDT").await.expect("open orders");
    assert!(open.len() <= 1, "{open:#?}");
    assert_eq!(open.first().map(|o| &o.client_id), trader.stop(), "the open order is the trader's stop");
    books_agree(&trader, exchange.as_ref()).await;
    assert!(state.orders_placed() >= entries + stops.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_cancels_its_stop_before_the_sell_leaves() {
    let (exchange, _state) = live(Speed::Times(360_000.0));
    // 30 %: the swings never reach it.
    let plan = Plan { stop_loss: Some(d("0.3")), ..plan() };
    let trader = Trader::start(exchange.clone(), plan).await.expect("started");
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(4)), off()).await.expect("ran");
    let steps = trader.steps();
    traces_to_signals(trader.journal());
    let stops = stops_submitted(&steps);
    let exits: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Step::Submitted(o) if o.side == kuant_agents::strategy::Side::Sell && o.kind == kuant_exchanges::OrderKind::Market))
        .map(|(i, _)| i)
        .collect();
    assert!(exits.len() >= 2, "{steps:#?}");
    for exit in exits {
        // The stop before it was cancelled before it.
        let stop = stops_submitted(&steps[..exit]).pop().expect("a stop before the exit");
        let cancelled = steps[..exit]
            .iter()
            .any(|s| matches!(s, Step::Order(o) if o.client_id == stop && o.status == OrderStatus::Canceled));
        assert!(cancelled, "{stop} cancelled before the exit at step {exit}: {steps:#?}");
    }
    let stop_fills =
        steps.iter().filter(|s| matches!(s, Step::Fill(f) if stops.contains(&f.client_id))).count();
    assert_eq!(stop_fills, 0);
    let open = exchange.open_orders("BTCUSDT").await.expect("open orders");
    assert_eq!(open.first().map(|o| &o.client_id), trader.stop());
    assert!(open.len() <= 1);
    books_agree(&trader, exchange.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_resting_stop_is_adopted_and_a_lost_one_is_placed_again_under_a_new_id() {
    let (exchange, _state) = live(Speed::Times(36_000.0));
    let plan = Plan { stop_loss: Some(d("0.3")), ..plan() };
    // The first life trades until a stop rests.
    let mut first = Trader::start(exchange.clone(), plan.clone()).await.expect("started");
    for _ in 0..20 {
        first = first.run(tokio::time::sleep(Duration::from_millis(500)), off()).await.expect("ran");
        if first.stop().is_some() {
            break;
        }
    }
    let resting = first.stop().cloned().expect("a stop rests after an entry");
    let sent: Vec<String> = first
        .steps()
        .iter()
        .filter_map(|s| if let Step::Submitted(o) = s { Some(o.client_id.to_string()) } else { None })
        .collect();
    let (cash, position, entry) =
        (first.desk().free_quote(), first.desk().position("BTCUSDT"), first.entry_price());
    drop(first);
    // A restart that finds it resting adopts it: no second stop.
    let mut second = Trader::start(exchange.clone(), plan.clone()).await.expect("started");
    second.restore(cash, position, entry);
    second.recall_orders(sent.iter().map(String::as_str));
    let open = exchange.open_orders("BTCUSDT").await.expect("open");
    assert_eq!(open.len(), 1, "{open:#?}");
    let uuid = kuant_agents::events::ClientOrderId::parse(open[0].client_id.as_str()).expect("ours").0;
    let candle = second.owns(uuid).expect("the session's id");
    second.adopt(candle, &open[0], &[], false);
    assert_eq!(second.stop(), Some(&resting));
    second.ensure_stop().await;
    assert_eq!(exchange.open_orders("BTCUSDT").await.expect("open").len(), 1, "not placed twice");
    // Lost meanwhile (cancelled by hand): the next life places it again, under a new id.
    exchange.cancel("BTCUSDT", &resting).await.expect("cancelled");
    let mut third = Trader::start(exchange.clone(), plan).await.expect("started");
    third.restore(cash, position, entry);
    third.recall_orders(sent.iter().map(String::as_str));
    assert!(third.stop().is_none());
    third.ensure_stop().await;
    let placed = third.stop().cloned().expect("placed again");
    assert_ne!(placed, resting, "a new client id: the cancelled one is not reused");
    assert_eq!(
        third.owns(kuant_agents::events::ClientOrderId::parse(placed.as_str()).expect("ours").0),
        Some(candle)
    );
    let open = exchange.open_orders("BTCUSDT").await.expect("open");
    assert_eq!(open.iter().map(|o| &o.client_id).collect::<Vec<_>>(), vec![&placed]);
    assert!(matches!(open[0].kind, kuant_exchanges::OrderKind::StopLossLimit { .. }));
    assert_eq!(
        open[0].quantity,
        ExchangeRules::binance_default("BTCUSDT").expect("rules").floor_quantity(position, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_below_the_lot_size_or_the_minimum_notional_never_leaves_and_names_its_filter() {
    // 4 USDT buys 0.00006 BTC at 60,000: worth 3.6, under the 5 USDT minimum notional; 0.3 USDT
    // buys less than the 0.00001 lot.
    for (budget, filter) in [("4", "NOTIONAL"), ("0.3", "LOT_SIZE")] {
        let (exchange, state) = live(Speed::Times(360_000.0));
        let plan = Plan { budget: d(budget), ..plan() };
        let trader = Trader::start(exchange, plan).await.expect("started");
        let trader = trader.run(tokio::time::sleep(Duration::from_secs(2)), off()).await.expect("ran");
        let steps = trader.steps();
        let blocked: Vec<&String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Blocked { reason, detail, .. } if reason == "exchange_filter" => Some(detail),
                _ => None,
            })
            .collect();
        assert!(!blocked.is_empty(), "{budget}: blocked: {steps:#?}");
        assert!(blocked.iter().all(|d| d.starts_with(filter)), "{budget}: {blocked:#?}");
        assert!(!steps.iter().any(|s| matches!(s, Step::Submitted(_))), "{budget}: nothing submitted");
        assert_eq!(state.orders_placed(), 0, "{budget}: nothing reached the exchange");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_intents_raced_on_a_budget_for_ten_send_ten_orders_and_no_balance_goes_negative() {
    use kuant_agents::risk::{Desk, Execution, Intent};
    use kuant_agents::strategy::Side;
    // Real time: the price holds still while the orders race.
    let (exchange, state) = live(Speed::Times(1.0));
    let rules = Arc::new(ExchangeRules::binance_default("BTCUSDT").expect("rules"));
    let price = exchange.latest_price("BTCUSDT").await.expect("a price");
    let (quantity, fee) = (d("0.01"), d("0.001"));
    // Ten orders' worth, and 5 % to spare for the fills' slippage: not eleven.
    let budget = Decimal::TEN * quantity * price * (Decimal::ONE + fee) * d("1.05");
    let limits = RiskLimits { max_open_orders: 1000, ..plan().limits };
    let desk = Arc::new(std::sync::Mutex::new(Desk::new(limits, budget, fee, wall())));
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (desk, exchange, rules) = (desk.clone(), exchange.clone(), rules.clone());
        racers.spawn(async move {
            let id = format!("race-{i}");
            let intent =
                Intent { id: id.clone(), symbol: "BTCUSDT".into(), side: Side::Buy, quantity, price };
            let approved = desk.lock().expect("desk").approve(&intent, wall()).is_ok();
            if !approved {
                return false;
            }
            let request = kuant_exchanges::OrderRequest {
                symbol: "BTCUSDT".into(),
                side: Side::Buy,
                kind: kuant_exchanges::OrderKind::Market,
                quantity,
                client_id: kuant_exchanges::ClientOrderId::new(id.clone()).expect("id"),
            };
            let placed = exchange.place(&request, &rules, price).await;
            let mut desk = desk.lock().expect("desk");
            if let Ok((_, fills)) = &placed {
                for f in fills {
                    let execution = Execution {
                        symbol: "BTCUSDT",
                        side: f.side,
                        quantity: f.quantity,
                        price: f.price,
                        fee: f.fee,
                        fee_in_base: &*f.fee_asset == "BTC",
                    };
                    desk.fill(&id, &execution);
                }
            }
            desk.end(&id);
            placed.is_ok()
        });
    }
    let placed = racers.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(placed, 10, "the budget covers ten");
    assert_eq!(state.orders_placed(), 10, "at most ten reached the exchange");
    let (free, reserved, position) = {
        let desk = desk.lock().expect("desk");
        (desk.free_quote(), desk.reserved_quote(), desk.position("BTCUSDT"))
    };
    assert!(free >= Decimal::ZERO, "the budget never goes negative: {free}");
    assert_eq!(reserved, Decimal::ZERO, "every reservation released");
    let balances = exchange.balances().await.expect("balances");
    assert!(balances.iter().all(|b| b.free >= Decimal::ZERO && b.locked >= Decimal::ZERO), "{balances:#?}");
    let btc = balances.iter().find(|b| b.asset == "BTC").map(|b| b.total()).unwrap_or_default();
    assert_eq!(position, btc, "the desk holds what the exchange holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_loss_beyond_the_limit_halts_trading_until_the_next_utc_day() {
    const DAY: i64 = 86_400_000;
    let (exchange, _state) = live(Speed::Times(360_000.0));
    // Half the budget in a position that swings 5 %: a loss of 0.5 % of the day's equity comes
    // soon.
    let plan = Plan { limits: RiskLimits { max_daily_loss: d("0.005"), ..plan().limits }, ..plan() };
    let trader = Trader::start(exchange.clone(), plan).await.expect("started");
    let trader = trader.run(tokio::time::sleep(Duration::from_secs(4)), off()).await.expect("ran");
    let steps = trader.steps();
    let halted = steps
        .iter()
        .position(|s| matches!(s, Step::Halted { reason, .. } if reason == "DailyLossLimit"))
        .unwrap_or_else(|| panic!("a daily-loss halt: {steps:#?}"));
    let Step::Halted { message, .. } = steps[halted] else { unreachable!("a halt") };
    assert!(message.contains("maxDailyLossPct"), "the figures: {message}");
    // The halt's market day: the candle the market was on.
    let day = steps[..halted]
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Fill(f) => Some(f.time_ms),
            Step::Signal { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .expect("a step before the halt")
        .div_euclid(DAY);
    let after: Vec<i64> = steps[halted..]
        .iter()
        .filter_map(|s| if let Step::Submitted(o) = s { Some(o.created_ms.div_euclid(DAY)) } else { None })
        .collect();
    assert!(after.iter().all(|d| *d > day), "no order on the halted day: {after:?} vs {day}");
    assert!(!after.is_empty(), "trading resumed on a later day: {steps:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_leave_only_while_the_trading_lease_is_held_and_never_once_it_is_lost() {
    let (exchange, state) = live(Speed::Times(360_000.0));
    let (holding, gate) = tokio::sync::watch::channel(false);
    let trader = Trader::start(exchange, plan()).await.expect("started").with_gate(gate);
    let submitted = |steps: &[&Step]| steps.iter().filter(|s| matches!(s, Step::Submitted(_))).count();
    let refused = |steps: &[&Step]| {
        steps
            .iter()
            .filter(|s| matches!(s, Step::Blocked { reason, .. } if reason == "no_trading_lease"))
            .count()
    };
    // Not held yet: signals, no orders.
    let mut trader = trader.run(tokio::time::sleep(Duration::from_millis(1500)), off()).await.expect("ran");
    let steps = trader.steps();
    assert!(refused(&steps) >= 1, "{steps:#?}");
    assert_eq!(submitted(&steps), 0);
    assert_eq!(state.orders_placed(), 0);
    trader.take_journal();
    // Held: it trades.
    holding.send(true).expect("sent");
    let mut trader = trader.run(tokio::time::sleep(Duration::from_millis(1500)), off()).await.expect("ran");
    assert!(submitted(&trader.steps()) >= 1, "{:#?}", trader.steps());
    trader.take_journal();
    let placed = state.orders_placed();
    // Lost for good (the Lease's task ended): no order again.
    drop(holding);
    assert!(!trader.gate_open());
    let trader = trader.run(tokio::time::sleep(Duration::from_millis(1500)), off()).await.expect("ran");
    let steps = trader.steps();
    assert_eq!(submitted(&steps), 0, "{steps:#?}");
    assert!(refused(&steps) >= 1, "{steps:#?}");
    assert_eq!(state.orders_placed(), placed, "nothing reached the exchange after the Lease was lost");
}

/// Runs `trader` for half a second with `resume` sending `at_ms` (a human's resume), and hands
/// it back.
async fn resumed_at<E: Exchange + 'static>(trader: Trader<E>, at_ms: i64) -> Trader<E> {
    let (resume_tx, resume_rx) = tokio::sync::watch::channel(0);
    let trader = trader.with_resume(resume_rx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(trader.run(
        async {
            let _ = stop_rx.await;
        },
        off(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    resume_tx.send_replace(at_ms);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    running.await.expect("the trader's task").expect("the trader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_humans_resume_lifts_a_halt_that_began_before_it_and_not_a_later_one() {
    let (exchange, _state) = live(Speed::Times(1.0));
    let mut trader = Trader::start(exchange, plan()).await.expect("started");
    trader.halt("RecoveryMismatch", "BTC: the session holds 1, the exchange 0");
    let halted_at = wall();
    // A resume from before the halt (say, an old annotation) leaves it.
    let trader = resumed_at(trader, halted_at - 60_000).await;
    assert!(trader.desk().halted().is_some(), "an older resume does not lift a later halt");
    // One from after it lifts it.
    let trader = resumed_at(trader, wall()).await;
    assert!(trader.desk().halted().is_none(), "resumed");
}
