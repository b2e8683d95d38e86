//! `kuant exchange-sim`: a Binance-spot-compatible exchange in one process, replaying candles.
//!
//! Exit codes: 0 after Ctrl-C or SIGTERM, 2 bad flags, data or keys file, 1 when the address
//! cannot be bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use kuant_agents::data::{DataSource, Span};
use kuant_crds::Timeframe;
use kuant_exchanges::ExchangeRules;
use kuant_exchanges::binance::Credentials;
use kuant_exchanges::sim::{BookShape, Fees, Replay, SimConfig, SimState, SimSymbol, Speed, router};
use rust_decimal::Decimal;

use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, fail};

/// The flags of `kuant exchange-sim`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    kuant exchange-sim --data ../shared/data/coinbase_btcusd_1h.csv --symbol BTCUSDT --speed 100\n  \
    kuant exchange-sim --symbol BTCUSDT --symbol ETHUSDT --keys sim-keys.yaml --balance USDT=50000 --balance BTC=1\n\n\
    Clients use the printed URL as Binance's base URL (REST /api/v3/...) with the printed key and secret.")]
pub struct ExchangeSimArgs {
    /// Candles to replay: a CSV file in one of the backtest's formats, one per `--symbol`, in
    /// the same order. Without it, synthetic candles (`--seed`).
    #[arg(long, value_name = "FILE")]
    data: Vec<PathBuf>,
    /// A symbol it lists; repeat for more. BTCUSDT and ETHUSDT trade with Binance's published
    /// filters.
    #[arg(long, default_values = ["BTCUSDT"])]
    symbol: Vec<String>,
    /// The candles' interval: 1m, 5m, 15m, 1h, 4h or 1d.
    #[arg(long, default_value = "1h")]
    interval: String,
    /// Simulated time per real time: 1 is real time, 100 a hundred times as fast; `max` steps
    /// as fast as the market streams' subscribers keep up (and holds still while nobody
    /// subscribes).
    #[arg(long, default_value = "1")]
    speed: Speed,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The API key and secret it accepts: YAML with `apiKey` and `apiSecret` (the file `kuant
    /// session --credentials` reads). Without it, a fresh pair is made and printed.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// A starting balance, `ASSET=AMOUNT`; repeat for more assets.
    #[arg(long = "balance", value_name = "ASSET=AMOUNT", default_values = ["USDT=10000"])]
    balances: Vec<String>,
    /// Seed of the synthetic candles.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Synthetic candles to generate.
    #[arg(long, default_value_t = 8_760)]
    bars: u64,
    /// Faults to inject on a schedule: YAML, a list of `{at: SECONDS, kind: …}` with the
    /// fields of `POST /_sim/faults` (e.g. `- {at: 60, kind: silence, seconds: 300}`).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
}

fn schedule(path: &std::path::Path) -> Result<Vec<kuant_exchanges::sim::Scheduled>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading --faults {}: {e}", path.display()))?;
    let schedule: Vec<kuant_exchanges::sim::Scheduled> =
        serde_yaml::from_str(&text).map_err(|e| format!("--faults {}: {e}", path.display()))?;
    if let Some(bad) = schedule.iter().find(|s| !(s.at.is_finite() && s.at >= 0.0)) {
        return Err(format!(
            "--faults {}: at {} is not a number of seconds from start",
            path.display(),
            bad.at
        ));
    }
    Ok(schedule)
}

fn timeframe(name: &str) -> Result<Timeframe, String> {
    Timeframe::ALL.into_iter().find(|t| t.as_str() == name).ok_or_else(|| {
        let names: Vec<&str> = Timeframe::ALL.iter().map(|t| t.as_str()).collect();
        format!("--interval {name:?} is not one of {}", names.join(", "))
    })
}

fn balances(flags: &[String]) -> Result<Vec<(String, Decimal)>, String> {
    flags
        .iter()
        .map(|flag| {
            let (asset, amount) =
                flag.split_once('=').ok_or_else(|| format!("--balance {flag:?} is not ASSET=AMOUNT"))?;
            let amount: Decimal = amount
                .trim()
                .parse()
                .map_err(|_| format!("--balance {flag:?}: {amount:?} is not a number"))?;
            if amount.is_sign_negative() || asset.trim().is_empty() {
                return Err(format!("--balance {flag:?}: an asset and an amount of zero or more"));
            }
            Ok((asset.trim().to_uppercase(), amount))
        })
        .collect()
}

/// The simulator's symbols: each replays its `--data` file (in the order of `symbols`), or
/// synthetic candles from `seed` when there is none. Shared with `kuant session`'s in-process
/// simulator; errors name a symbol after `label` (the flag or field that gave it).
pub fn sim_symbols(
    label: &str,
    symbols: &[String],
    data: &[PathBuf],
    interval: Timeframe,
    seed: u64,
    bars: u64,
) -> Result<Vec<SimSymbol>, String> {
    let step_ms = i64::try_from(interval.seconds() * 1000).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, symbol) in symbols.iter().enumerate() {
        if symbols[..i].contains(symbol) {
            return Err(format!("{label} {symbol} is given twice"));
        }
        let rules = ExchangeRules::binance_default(symbol).ok_or_else(|| {
            format!("{label} {symbol}: the simulator knows the rules of BTCUSDT and ETHUSDT")
        })?;
        let series = match data.get(i) {
            Some(path) => {
                kuant_agents::data::csv::CsvSource::new(path).load(symbol, interval, Span::default())
            }
            None => {
                let settings = kuant_crds::backtest::SyntheticData {
                    // Each symbol its own path.
                    seed: seed.wrapping_add(i as u64),
                    bars,
                    start_price: if symbol == "ETHUSDT" { 3_000.0 } else { 60_000.0 },
                    ..Default::default()
                };
                kuant_agents::data::synthetic::SyntheticSource::new(settings).load(
                    symbol,
                    interval,
                    Span::default(),
                )
            }
        }
        .map_err(|e| e.to_string())?;
        let replay = Replay::from_series(&series, step_ms)?;
        out.push(SimSymbol { rules, replay, interval: interval.as_str().to_owned() });
    }
    Ok(out)
}

/// Builds the simulator from the flags; the key and, when it made it, the secret to print.
fn config(args: &ExchangeSimArgs) -> Result<(SimConfig, String, Option<String>), String> {
    let interval = timeframe(&args.interval)?;
    if !args.data.is_empty() && args.data.len() != args.symbol.len() {
        return Err(format!(
            "{} --data files for {} --symbol: give one file per symbol, in the same order",
            args.data.len(),
            args.symbol.len()
        ));
    }
    let symbols = sim_symbols("--symbol", &args.symbol, &args.data, interval, args.seed, args.bars)?;
    let (credentials, key, secret) = match &args.keys {
        Some(path) => {
            let c = Credentials::from_file(path).map_err(|e| e.to_string())?;
            let key = c.api_key().to_owned();
            (c, key, None)
        }
        None => {
            let fresh =
                |what: &str| kuant_ops_api::auth::fresh_token().map_err(|e| format!("making {what}: {e}"));
            let (key, secret) = (fresh("an API key")?, fresh("a secret")?);
            (Credentials::hmac(&key, &secret), key, Some(secret))
        }
    };
    let config = SimConfig {
        symbols,
        speed: args.speed,
        credentials,
        balances: balances(&args.balances)?,
        fees: Fees::default(),
        book: BookShape::default(),
    };
    Ok((config, key, secret))
}

/// Runs the simulator until Ctrl-C or SIGTERM.
pub fn run(args: &ExchangeSimArgs) -> ExitCode {
    let (config, key, secret) = match config(args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let schedule = match args.faults.as_deref().map(schedule).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let state = match SimState::new(config) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_BAD_INPUT, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(EXIT_INTERNAL, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => return fail(EXIT_INTERNAL, format!("cannot listen on {}: {e}", args.listen)),
        };
        let addr = listener.local_addr().unwrap_or(args.listen);
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {addr}: anyone who reaches it can inject faults and move balances through /_sim (it has no authentication)"
            );
        }
        println!(
            "kuant exchange-sim: Binance spot API at http://{addr} ({} at {})",
            args.symbol.join(", "), args.speed
        );
        println!("key: {key}");
        match &secret {
            Some(secret) => println!("secret: {secret}"),
            None => println!(
                "secret: the apiSecret of {}",
                args.keys.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
        // The market moves (and resting orders fill) between requests too.
        tokio::spawn(state.clone().drive());
        for entry in schedule {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs_f64(entry.at)).await;
                match state.inject(&entry.fault) {
                    Ok(()) => tracing::info!(at = entry.at, fault = ?entry.fault, "fault injected"),
                    Err(e) => tracing::warn!(at = entry.at, error = %e, "scheduled fault refused"),
                }
            });
        }
        let served = axum::serve(listener, router(state)).with_graceful_shutdown(super::shutdown_signal()).await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_INTERNAL, format!("serving: {e}")),
        }
    })
}
