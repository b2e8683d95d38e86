//! A simulator on a free loopback port, for the tests over real HTTP and WebSocket.
#![allow(dead_code)]

use kuant_exchanges::ExchangeRules;
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::sim::{
    BookShape, Candle, Fees, Replay, SimConfig, SimState, SimSymbol, Speed, serve_on_loopback,
};
use rust_decimal::Decimal;

pub const KEY: &str = "sim-test-key";
pub const SECRET: &str = "sim-test-secret";
pub const H: i64 = 3_600_000;

pub fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// Starts a simulator of BTCUSDT over 2,000 hourly candles around 60,000, its clock at `speed`, with
/// a background ticker as `kuant exchange-sim` has; its base URL and state.
pub fn start(speed: f64) -> (String, SimState) {
    start_with(Speed::Times(speed), Credentials::hmac(KEY, SECRET))
}

/// [`start`] with the key pair the simulator accepts.
pub fn start_with(speed: Speed, credentials: Credentials) -> (String, SimState) {
    start_sized(speed, credentials, 2000)
}

/// [`start_with`] over `count` candles.
pub fn start_sized(speed: Speed, credentials: Credentials, count: i64) -> (String, SimState) {
    let candles = (0..count)
        .map(|i| {
            let open = Decimal::from(60_000 + 10 * (i % 48));
            Candle {
                open_ms: 1_700_000_000_000 - 1_700_000_000_000 % H + i * H,
                open,
                high: open + Decimal::from(50),
                low: open - Decimal::from(50),
                close: open + Decimal::from(10),
                volume: d("12.5"),
            }
        })
        .collect();
    let replay = Replay::new(candles, H).expect("replay");
    let rules = ExchangeRules::binance_default("BTCUSDT").expect("rules");
    let config = SimConfig {
        symbols: vec![SimSymbol { rules, replay, interval: "1h".into() }],
        speed,
        credentials,
        balances: vec![("USDT".into(), d("10000")), ("BTC".into(), d("0.5"))],
        fees: Fees::default(),
        book: BookShape::default(),
    };
    let state = SimState::new(config).expect("a simulator");
    let base = serve_on_loopback(state.clone()).expect("served");
    (base, state)
}
