//! A reconciliation: a session's ledger against what its exchange account holds.
//!
//! The ledger's side is the session's `wallet` accounts (see [`crate::record`]); the exchange's
//! is the account's balances, free plus locked (a paper session's are its paper account's, as
//! the store keeps them). Drift = exchange − ledger, per asset; an asset is within the threshold
//! when |drift| ≤ `absolute` or ≤ `relativePct` % of the exchange balance. Drift is explained
//! where it can be: the exchange's trades of the session's symbols since its first fill that the
//! ledger lacks (a trade made by hand) are listed. (A trade from outside before the session's
//! first fill is not found: the latest page of trades is asked for then.)
//!
//! [`compare`] and [`unexplained`] are pure; [`run`] reads both sides and writes the run to the
//! store.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kuant_exchanges::{Exchange, ExchangeError, Trade};
use kuant_store::{Drift, ReconciliationResult, ReconciliationRun, Store};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::Serialize;

/// How much drift is tolerated per asset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// An absolute amount, in units of each asset.
    pub absolute: Decimal,
    /// A percentage of the exchange balance.
    pub relative_pct: f64,
}

/// One asset compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetRow {
    /// The asset.
    pub asset: String,
    /// The ledger's balance.
    pub ledger: Decimal,
    /// The exchange's balance (free plus locked).
    pub exchange: Decimal,
    /// exchange − ledger.
    pub drift: Decimal,
    /// The drift as a percentage of the exchange balance (0 when both are 0; 100 when only the
    /// ledger holds some).
    pub drift_pct: f64,
    /// Whether the drift is within the threshold.
    pub within_threshold: bool,
}

/// A trade of the exchange the ledger lacks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnexplainedTrade {
    /// Symbol.
    pub symbol: String,
    /// The exchange's trade id.
    pub trade_id: u64,
    /// The exchange's order id.
    pub order_id: u64,
    /// `buy` or `sell`.
    pub side: &'static str,
    /// Base quantity.
    pub quantity: Decimal,
    /// Price.
    pub price: Decimal,
    /// When, Unix ms.
    pub time_ms: i64,
}

/// A reconciliation's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `InSync` or `Drifted`.
    pub result: &'static str,
    /// The assets compared, by name.
    pub assets: Vec<AssetRow>,
    /// The exchange's trades the ledger lacks.
    pub unexplained: Vec<UnexplainedTrade>,
    /// A sentence: which assets drifted and by how much.
    pub message: String,
}

impl Outcome {
    /// Whether some asset drifted beyond the threshold.
    pub fn drifted(&self) -> bool {
        self.assets.iter().any(|a| !a.within_threshold)
    }
}

/// Whether `drift` is within `threshold` of `exchange`.
pub fn within(drift: Decimal, exchange: Decimal, threshold: Threshold) -> bool {
    let size = drift.abs();
    if size <= threshold.absolute {
        return true;
    }
    let pct = Decimal::from_f64(threshold.relative_pct).unwrap_or_default();
    size * Decimal::ONE_HUNDRED <= pct * exchange.abs()
}

/// The assets of `ledger` and `exchange` compared: those of `assets`, or (empty) every asset
/// either side holds, in name order.
pub fn compare(
    ledger: &BTreeMap<String, Decimal>,
    exchange: &BTreeMap<String, Decimal>,
    assets: &[String],
    threshold: Threshold,
) -> Vec<AssetRow> {
    let names: BTreeSet<String> = if assets.is_empty() {
        ledger
            .iter()
            .chain(exchange)
            .filter(|(_, amount)| !amount.is_zero())
            .map(|(asset, _)| asset.clone())
            .collect()
    } else {
        assets.iter().map(|a| a.to_uppercase()).collect()
    };
    names
        .into_iter()
        .map(|asset| {
            let l = ledger.get(&asset).copied().unwrap_or_default();
            let x = exchange.get(&asset).copied().unwrap_or_default();
            let drift = x - l;
            let drift_pct = if drift.is_zero() {
                0.0
            } else if x.is_zero() {
                100.0
            } else {
                (drift * Decimal::ONE_HUNDRED / x.abs()).round_dp(6).to_f64().unwrap_or(f64::INFINITY)
            };
            AssetRow {
                within_threshold: within(drift, x, threshold),
                asset,
                ledger: l.normalize(),
                exchange: x.normalize(),
                drift: drift.normalize(),
                drift_pct,
            }
        })
        .collect()
}

/// The trades of `trades` whose ids `known` (`SYMBOL:tradeId`, as the store names fills) does
/// not hold.
pub fn unexplained(trades: &[Trade], known: &HashSet<String>) -> Vec<UnexplainedTrade> {
    trades
        .iter()
        .filter(|t| !known.contains(&crate::record::legacy_fill_id(&t.symbol, t.trade_id)))
        .map(|t| UnexplainedTrade {
            symbol: t.symbol.clone(),
            trade_id: t.trade_id,
            order_id: t.order_id,
            side: crate::record::side(t.side),
            quantity: t.quantity,
            price: t.price,
            time_ms: t.time_ms,
        })
        .collect()
}

/// The outcome of `rows` with `unexplained` trades.
pub fn outcome(rows: Vec<AssetRow>, unexplained: Vec<UnexplainedTrade>) -> Outcome {
    let drifted: Vec<String> = rows
        .iter()
        .filter(|r| !r.within_threshold)
        .map(|r| {
            format!(
                "{} {} (ledger {}, exchange {})",
                r.asset,
                r.drift.normalize(),
                r.ledger.normalize(),
                r.exchange.normalize()
            )
        })
        .collect();
    let mut message = if drifted.is_empty() {
        format!("{} assets within the threshold", rows.len())
    } else {
        format!("drifted: {}", drifted.join("; "))
    };
    if !unexplained.is_empty() {
        let ids: Vec<String> = unexplained.iter().map(|t| format!("{} #{}", t.symbol, t.trade_id)).collect();
        message.push_str(&format!("; trades the ledger lacks: {}", ids.join(", ")));
    }
    Outcome {
        result: if drifted.is_empty() { "InSync" } else { "Drifted" },
        assets: rows,
        unexplained,
        message,
    }
}

/// Why a reconciliation could not compare.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error("the store: {0}")]
    Store(#[from] kuant_store::SqlError),
    /// The exchange failed.
    #[error("the exchange: {0}")]
    Exchange(#[from] ExchangeError),
    /// The session has no ledger in the store.
    #[error("the store has no ledger of session {0}: has it run with this store?")]
    UnknownSession(String),
}

/// Where the exchange's side comes from.
pub enum Account<'a, E> {
    /// A real exchange (or the simulator): its balances and trades.
    Exchange(&'a E),
    /// A paper account: its balances as the store keeps them.
    Paper,
}

/// What to reconcile.
pub struct Request<'a> {
    /// The session's run id (`namespace/name`).
    pub run_id: &'a str,
    /// The session's symbols (whose trades explain drift).
    pub symbols: &'a [String],
    /// The assets to compare (empty: all).
    pub assets: &'a [String],
    /// The threshold.
    pub threshold: Threshold,
    /// The run's id in the store (a UUID) and its start, Unix ms.
    pub recon_id: String,
    /// When it started.
    pub started_ms: i64,
}

/// Reads the ledger of `request.run_id` and the balances of `account`, compares them, explains
/// the drift, and records the run in the store.
pub async fn run<E: Exchange>(
    store: &Store,
    account: Account<'_, E>,
    request: &Request<'_>,
) -> Result<Outcome, ReconcileError> {
    let prefix = format!("{}:wallet:", request.run_id);
    let ledger: BTreeMap<String, Decimal> = store
        .balances(request.run_id, i64::MAX)
        .await?
        .into_iter()
        .filter(|(account, _, _)| account.starts_with(&prefix))
        .map(|(_, asset, balance)| (asset, balance))
        .collect();
    if ledger.is_empty() {
        return Err(ReconcileError::UnknownSession(request.run_id.to_owned()));
    }
    let (exchange, unexplained_trades) = match account {
        Account::Paper => {
            let balances = store
                .paper_balances(request.run_id)
                .await?
                .into_iter()
                .map(|b| (b.asset, b.free + b.locked))
                .collect();
            (balances, Vec::new())
        }
        Account::Exchange(x) => {
            let balances: BTreeMap<String, Decimal> =
                x.balances().await?.into_iter().map(|b| (b.asset.to_uppercase(), b.total())).collect();
            let fills = store.fills_of_run(request.run_id).await?;
            // From the session's first fill on, in the exchange's own clock (a simulator's is
            // the market's): earlier trades of a shared account are in the opening balances.
            let since_ms = fills.iter().map(|f| f.at_ms).min();
            let known: HashSet<String> =
                fills.iter().map(|f| crate::record::trade_key(&f.fill_id).to_owned()).collect();
            let mut lacking = Vec::new();
            for symbol in request.symbols {
                lacking.extend(unexplained(&x.trades(symbol, since_ms).await?, &known));
            }
            (balances, lacking)
        }
    };
    let rows = compare(&ledger, &exchange, request.assets, request.threshold);
    // Trades explain a drift; with none, there is nothing to explain.
    let drifted = rows.iter().any(|r| !r.within_threshold);
    let outcome = outcome(rows, if drifted { unexplained_trades } else { Vec::new() });
    let finished = crate::trader::wall_ms();
    store
        .record_reconciliation(&ReconciliationRun {
            recon_id: request.recon_id.clone(),
            run_id: request.run_id.to_owned(),
            started_at_ms: request.started_ms,
            finished_at_ms: Some(finished),
            result: Some(if outcome.drifted() {
                ReconciliationResult::Drifted
            } else {
                ReconciliationResult::InSync
            }),
            drifts: outcome
                .assets
                .iter()
                .map(|r| Drift {
                    asset: r.asset.clone(),
                    ledger_balance: r.ledger,
                    exchange_balance: r.exchange,
                    within_threshold: Some(r.within_threshold),
                })
                .collect(),
            threshold: Some((request.threshold.absolute, request.threshold.relative_pct)),
            explanation: (!outcome.unexplained.is_empty())
                .then(|| serde_json::to_value(&outcome.unexplained).unwrap_or_default()),
            message: Some(outcome.message.clone()),
        })
        .await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, Decimal> {
        items.iter().map(|(a, v)| ((*a).to_owned(), d(v))).collect()
    }

    const T: Threshold = Threshold { absolute: Decimal::ZERO, relative_pct: 0.1 };

    #[test]
    fn drift_is_exchange_minus_ledger_within_an_absolute_or_a_relative_threshold() {
        let rows = compare(
            &map(&[("BTC", "0.5"), ("USDT", "10000")]),
            &map(&[("BTC", "0.4"), ("USDT", "10005"), ("ETH", "1")]),
            &[],
            T,
        );
        let by: BTreeMap<&str, &AssetRow> = rows.iter().map(|r| (r.asset.as_str(), r)).collect();
        assert_eq!(by["BTC"].drift, d("-0.1"));
        assert!(!by["BTC"].within_threshold, "0.1 of 0.4 is 25 %");
        assert_eq!(by["USDT"].drift, d("5"));
        assert!(by["USDT"].within_threshold, "5 of 10005 is under 0.1 %");
        assert_eq!(
            (by["ETH"].drift_pct, by["ETH"].within_threshold),
            (100.0, false),
            "only the exchange holds it"
        );
        // Chosen assets only; an absolute threshold covers dust.
        let rows = compare(
            &map(&[("BTC", "0.5")]),
            &map(&[("BTC", "0.50000001")]),
            &["btc".into()],
            Threshold { absolute: d("0.00000001"), relative_pct: 0.0 },
        );
        assert_eq!(rows.len(), 1);
        assert!(rows[0].within_threshold);
        // Nothing on either side: nothing to compare, nothing drifts.
        assert!(compare(&map(&[("BTC", "0")]), &BTreeMap::new(), &[], T).is_empty());
    }

    #[test]
    fn trades_the_ledger_lacks_explain_the_drift() {
        let trade = |id: u64| Trade {
            symbol: "BTCUSDT".into(),
            trade_id: id,
            order_id: 10 + id,
            side: kuant_agents::strategy::Side::Sell,
            price: d("60000"),
            quantity: d("0.1"),
            fee: Decimal::ZERO,
            fee_asset: "USDT".into(),
            maker: false,
            time_ms: 5,
        };
        let known: HashSet<String> = ["BTCUSDT:1".to_owned()].into();
        let lacking = unexplained(&[trade(1), trade(2)], &known);
        assert_eq!(lacking.len(), 1);
        assert_eq!((lacking[0].trade_id, lacking[0].order_id, lacking[0].side), (2, 12, "sell"));
        let o = outcome(compare(&map(&[("BTC", "0.5")]), &map(&[("BTC", "0.4")]), &[], T), lacking);
        assert_eq!(o.result, "Drifted");
        assert!(o.message.contains("BTC -0.1") && o.message.contains("BTCUSDT #2"), "{}", o.message);
    }
}
