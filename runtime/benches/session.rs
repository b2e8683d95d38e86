//! Session benchmarks, in process. Prints figures; asserts nothing.
//!
//! 1. **Tick → order submitted**: a trader fed closed candles that each make a signal (an SMA
//!    1/2 crossover on a zig-zag), against the simulator's matching engine in process (no
//!    network): the time from handing the candle to the trader until its order is placed and
//!    applied — strategy, intent, risk desk, judge, placement, order tracking. p50/p99/max.
//! 2. **20 symbols at 10,000 ticks/s**: twenty traders running (`run_reporting`, as a session
//!    runs them) on a market stream of candle updates for 10 s, a closed candle per symbol every
//!    250 ms; the process's CPU time and peak memory.
//!
//! `cargo bench -p kuant-runtime --bench session` (`KUANT_BENCH_TICKS`, default 20,000;
//! `KUANT_BENCH_SECONDS`, default 10)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuant_agents::execution::Costs;
use kuant_agents::risk::RiskLimits;
use kuant_agents::strategy::{AnyStrategy, SmaCrossover};
use kuant_exchanges::binance::stream::StreamEvent;
use kuant_exchanges::binance::user_stream::UserEvent;
use kuant_exchanges::binance::wire::MarketEvent;
use kuant_exchanges::sim::{BookShape, Engine, Fees};
use kuant_exchanges::{
    Balance, ClientOrderId, Exchange, ExchangeError, ExchangeRules, Fill, Kline, MarketFeed, Order,
    OrderRequest, Trade,
};
use kuant_runtime::session::Report;
use kuant_runtime::{Plan, Step, Trader};
use rust_decimal::Decimal;
use tokio::sync::mpsc;

const H: i64 = 3_600_000;

/// The simulator's matching engine behind the Exchange interface, with a market stream the
/// benchmark feeds.
struct InProcess {
    engine: Mutex<Engine>,
    streams: Mutex<Vec<(String, mpsc::Sender<StreamEvent>)>>,
}

fn engine<T>(e: &Mutex<Engine>, f: impl FnOnce(&mut Engine) -> T) -> T {
    f(&mut e.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

impl InProcess {
    fn new(symbols: &[String]) -> Self {
        let mut e = Engine::new(Fees::default());
        for s in symbols {
            e.add_market(
                ExchangeRules::binance_default("BTCUSDT")
                    .map(|r| ExchangeRules { symbol: s.clone(), ..r })
                    .expect("rules"),
                BookShape::default(),
            );
            e.set_price(s, Decimal::from(100), 0);
        }
        e.adjust("USDT", Decimal::from(1_000_000_000)).expect("deposit");
        Self { engine: Mutex::new(e), streams: Mutex::new(Vec::new()) }
    }
}

impl Exchange for InProcess {
    fn name(&self) -> &str {
        "in-process"
    }
    async fn symbol_rules(&self) -> Result<Vec<ExchangeRules>, ExchangeError> {
        Ok(engine(&self.engine, |e| e.rules().cloned().collect()))
    }
    async fn klines(
        &self,
        _: &str,
        _: &str,
        _: Option<i64>,
        _: Option<i64>,
        _: u16,
    ) -> Result<Vec<Kline>, ExchangeError> {
        Ok(Vec::new())
    }
    async fn latest_price(&self, symbol: &str) -> Result<Decimal, ExchangeError> {
        Ok(engine(&self.engine, |e| e.price(symbol)).unwrap_or_default())
    }
    async fn balances(&self) -> Result<Vec<Balance>, ExchangeError> {
        Ok(engine(&self.engine, |e| e.balances()))
    }
    async fn place(
        &self,
        order: &OrderRequest,
        _: &ExchangeRules,
        _: Decimal,
    ) -> Result<(Order, Vec<Fill>), ExchangeError> {
        engine(&self.engine, |e| e.place(order, 0))
    }
    async fn order(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Option<Order>, ExchangeError> {
        Ok(engine(&self.engine, |e| e.order(symbol, client_id).ok().cloned()))
    }
    async fn cancel(&self, symbol: &str, client_id: &ClientOrderId) -> Result<Order, ExchangeError> {
        engine(&self.engine, |e| e.cancel(symbol, client_id, 0))
    }
    async fn cancel_all(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        engine(&self.engine, |e| e.cancel_all(symbol, 0))
    }
    async fn open_orders(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        Ok(engine(&self.engine, |e| e.open_orders(Some(symbol)).into_iter().cloned().collect()))
    }
    async fn trades(&self, _: &str, _: Option<i64>) -> Result<Vec<Trade>, ExchangeError> {
        Ok(Vec::new())
    }
    fn market_stream(&self, feeds: &[MarketFeed]) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::channel(1024);
        let mut streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for feed in feeds {
            if let MarketFeed::Klines(symbol, _) = feed {
                streams.push((symbol.clone(), tx.clone()));
            }
        }
        rx
    }
    fn account_updates(&self) -> Result<mpsc::Receiver<UserEvent>, ExchangeError> {
        let (tx, rx) = mpsc::channel(1);
        // Held open for as long as the benchmark runs.
        std::mem::forget(tx);
        Ok(rx)
    }
}

fn plan(symbol: &str, fast: usize, slow: usize) -> Plan {
    Plan {
        session_id: "bench".into(),
        stream: format!("{symbol}/0"),
        strategy_name: "sma-crossover".into(),
        symbol: symbol.into(),
        interval: "1h".into(),
        interval_ms: H,
        strategy: AnyStrategy::SmaCrossover(SmaCrossover::new(fast, slow)),
        // Small orders from a large budget: the zig-zag loses on every round trip, and the
        // budget must last the run.
        allocation: Decimal::new(1, 4),
        costs: Costs::from_bps(10.0, 5.0).expect("costs"),
        limits: RiskLimits {
            max_position: Decimal::ONE,
            max_order_notional: None,
            max_open_orders: 5,
            max_orders_per_minute: u32::MAX,
            max_daily_loss: Decimal::ONE,
            max_drawdown: Decimal::ONE,
        },
        budget: Decimal::from(1_000_000),
        stale_after_ms: 3_600_000,
        poll_every_ms: None,
        warm_up: 1,
        stop_loss: None,
    }
}

fn candle(symbol: &str, open_ms: i64, close: Decimal, closed: bool) -> StreamEvent {
    let kline = Kline {
        open_ms,
        open: close,
        high: close,
        low: close,
        close,
        volume: Decimal::ONE,
        close_ms: open_ms + H - 1,
        closed,
    };
    StreamEvent::Market(MarketEvent::Kline { symbol: symbol.into(), interval: "1h".into(), kline }, now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

async fn tick_to_order(ticks: usize) {
    let symbols = vec!["BTCUSDT".to_owned()];
    let exchange = Arc::new(InProcess::new(&symbols));
    let mut trader = Trader::start(exchange.clone(), plan("BTCUSDT", 1, 2)).await.expect("started");
    let mut times = Vec::with_capacity(ticks);
    let start = 1_700_000_000_000 - 1_700_000_000_000 % H;
    for i in 0..ticks {
        // A zig-zag: every candle crosses the 1/2 averages, so every candle is a decision.
        let close = if i % 2 == 0 { Decimal::from(110) } else { Decimal::from(100) };
        let open_ms = start + i as i64 * H;
        engine(&exchange.engine, |e| e.set_price("BTCUSDT", close, open_ms));
        let event = candle("BTCUSDT", open_ms, close, true);
        let now = now_ms();
        let began = Instant::now();
        trader.on_stream(event, now).await;
        let took = began.elapsed();
        if trader.steps().iter().any(|s| matches!(s, Step::Submitted(_))) {
            times.push(took);
        }
        trader.take_journal();
    }
    times.sort_unstable();
    println!(
        "tick → order submitted (in process, the simulator's matching engine): {} orders of {ticks} candles; p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e6
    );
}

/// CPU seconds (user + system) and peak resident memory (KiB) of this process, from /proc.
fn usage() -> (f64, i64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports them in clock ticks of 1/100 s.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, peak)
}

async fn twenty_symbols(seconds: u64) {
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i:02}USDT")).collect();
    let exchange = Arc::new(InProcess::new(&symbols));
    let (reports_tx, mut reports) = mpsc::channel::<Report>(256);
    let (_switch, suspend) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (i, symbol) in symbols.iter().enumerate() {
        let trader = Trader::start(exchange.clone(), plan(symbol, 3, 8)).await.expect("started");
        let (mut stop_rx, suspend, reports_tx) = (stop_rx.clone(), suspend.clone(), reports_tx.clone());
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            trader.run_reporting(stop, suspend, Some((i, reports_tx))).await
        }));
    }
    drop(reports_tx);
    let counted = tokio::spawn(async move {
        let (mut events, mut orders) = (0u64, 0u64);
        while let Some(mut r) = reports.recv().await {
            events += r.notes.len() as u64;
            orders += r.notes.iter().filter(|n| matches!(n.step, Step::Submitted(_))).count() as u64;
            if let Some(ack) = r.ack.take() {
                let _ = ack.send(());
            }
        }
        (events, orders)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let streams: Vec<(String, mpsc::Sender<StreamEvent>)> =
        exchange.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let (cpu_before, _) = usage();
    let began = Instant::now();
    let start = 1_700_000_000_000 - 1_700_000_000_000 % H;
    let mut sent = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(10));
    let mut step = 0i64;
    // 10,000 ticks a second: 100 every 10 ms, 5 per symbol; each 25th step closes the candles.
    while began.elapsed() < Duration::from_secs(seconds) {
        every.tick().await;
        step += 1;
        let candle_index = step / 25;
        let closing = step % 25 == 0;
        for (n, (symbol, tx)) in streams.iter().enumerate() {
            for k in 0..5 {
                let wave = ((step * 5 + k + n as i64) as f64 / 40.0).sin() * 5.0;
                let close = Decimal::from(100)
                    + <Decimal as rust_decimal::prelude::FromPrimitive>::from_f64(wave)
                        .unwrap_or_default()
                        .round_dp(2);
                let last = closing && k == 4;
                if tx
                    .send(candle(symbol, start + (candle_index - i64::from(last)) * H, close, last))
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let (cpu_after, peak_kib) = usage();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let (events, orders) = counted.await.unwrap_or_default();
    println!(
        "20 symbols: {sent} ticks in {elapsed:.1} s ({:.0}/s), {orders} orders, {events} events; CPU {:.1} % of one core; peak memory {:.1} MiB",
        sent as f64 / elapsed,
        (cpu_after - cpu_before) / elapsed * 100.0,
        peak_kib as f64 / 1024.0
    );
}

fn main() {
    let ticks = std::env::var("KUANT_BENCH_TICKS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seconds = std::env::var("KUANT_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(tick_to_order(ticks));
    runtime.block_on(twenty_symbols(seconds));
}
