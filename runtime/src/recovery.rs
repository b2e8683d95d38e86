//! Restart recovery, failing closed. Before any order, a session that continues (against an
//! exchange that outlived it) compares what the store knows with what the exchange knows:
//!
//! - **Decisions in flight**: a plan the judge approved (stored before its order left, see
//!   the trader's write-ahead) with no order stored. Its client order id derives from the
//!   decision, so the exchange is asked for it: found, the order is recorded once with the fills
//!   it had meanwhile; unknown, the order never arrived (a `never_sent` block). It is never sent
//!   again.
//! - **Orders stored as open**: their state and fills now, from the exchange; followed again
//!   when still open. One the exchange does not know is a mismatch.
//! - **Open orders on the exchange** that carry this session's client ids but are not stored:
//!   a mismatch — unless it is a protective stop (placed, then the process died before the
//!   store heard of it): that one is adopted, it protects the position.
//! - **Books**: each trader's cash and position are rebuilt from the fills (stored and
//!   recovered); where the exchange's balance of a base asset differs from the session's position
//!   by more than one lot step, a mismatch.
//!
//! Any mismatch halts every trader (`Halted`, reason `RecoveryMismatch`, the figures in the
//! message) until a human resumes; the session keeps its market data and its status.

use std::collections::{HashMap, HashSet};

use kuant_agents::events::ClientOrderId as EventClientId;
use kuant_agents::strategy::Side;
use kuant_exchanges::{Exchange, ExchangeError, Fill, Order, Trade};
use kuant_store::{EventFilter, Store, StoredFill, StoredOrder};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::trader::Trader;

/// The halt reason of a failed recovery.
pub const RECOVERY_MISMATCH: &str = "RecoveryMismatch";

/// What the store knows of a session, read once at start.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// The chains (signal ids) of approved plans.
    pub approved: Vec<Uuid>,
    /// Its orders.
    pub orders: Vec<StoredOrder>,
    /// The chains that ended in a block.
    pub blocked: HashSet<String>,
    /// Its fills.
    pub fills: Vec<StoredFill>,
}

impl Stored {
    /// Reads session `run_id`'s records.
    pub async fn read(store: &Store, run_id: &str) -> Result<Self, kuant_store::SqlError> {
        let mut approved = Vec::new();
        let mut filter = EventFilter {
            run_id: Some(run_id.to_owned()),
            event_type: Some("plan_judged".into()),
            limit: 10_000,
            ..EventFilter::default()
        };
        loop {
            let page = store.list_events(&filter).await?;
            for e in &page {
                if e.payload.get("approved").and_then(serde_json::Value::as_bool) == Some(true)
                    && let Ok(chain) = Uuid::try_parse(&e.correlation_id)
                {
                    approved.push(chain);
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == filter.limit => filter.after = Some(last.cursor()),
                _ => break,
            }
        }
        Ok(Self {
            approved,
            orders: store.orders_of_run(run_id).await?,
            blocked: store.blocks_of_run(run_id, None).await?.into_iter().map(|b| b.correlation_id).collect(),
            fills: store.fills_of_run(run_id).await?,
        })
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Orders found on the exchange that the store had not seen (sent, then the process died).
    pub orders_found: usize,
    /// Decisions whose order never reached the exchange.
    pub never_sent: usize,
    /// Fills that happened while the session was down.
    pub fills_found: usize,
    /// What does not agree (empty: trading may start).
    pub mismatches: Vec<String>,
}

fn stored_status_open(status: &str) -> bool {
    matches!(status, "new" | "partially_filled" | "pending_cancel")
}

/// Which trader's id `id` is, and of which decision.
fn owner<E: Exchange>(traders: &[Trader<E>], id: Uuid) -> Option<(usize, u64)> {
    traders.iter().enumerate().find_map(|(i, t)| t.owns(id).map(|candle| (i, candle)))
}

fn client_uuid(client_id: &str) -> Option<Uuid> {
    EventClientId::parse(client_id).map(|c| c.0)
}

/// The fills of `order` among the account's trades since it was made.
pub(crate) async fn fills_of<E: Exchange>(exchange: &E, order: &Order) -> Result<Vec<Fill>, ExchangeError> {
    let trades: Vec<Trade> = exchange.trades(&order.symbol, Some(order.created_ms)).await?;
    Ok(trades
        .into_iter()
        .filter(|t| t.order_id == order.exchange_id)
        .map(|t| Fill {
            symbol: order.symbol.clone(),
            client_id: order.client_id.clone(),
            order_id: t.order_id,
            trade_id: t.trade_id,
            side: t.side,
            price: t.price,
            quantity: t.quantity,
            fee: t.fee,
            fee_asset: t.fee_asset.into(),
            maker: t.maker,
            time_ms: t.time_ms,
        })
        .collect())
}

/// A trader's books from its fills: `(cash, position, average entry price)` from `budget`, a fee
/// charged in `base` taken from the position, any other from the cash.
pub fn books<'a>(
    budget: Decimal,
    base: &str,
    fills: impl IntoIterator<Item = (Side, Decimal, Decimal, Decimal, &'a str)>,
) -> (Decimal, Decimal, Decimal) {
    let (mut cash, mut position, mut entry) = (budget, Decimal::ZERO, Decimal::ZERO);
    for (side, quantity, price, fee, fee_asset) in fills {
        let (quote_fee, base_fee) =
            if fee_asset == base { (Decimal::ZERO, fee) } else { (fee, Decimal::ZERO) };
        match side {
            Side::Buy => {
                let got = quantity - base_fee;
                if position + got > Decimal::ZERO {
                    entry = (entry * position.max(Decimal::ZERO) + price * got)
                        / (position.max(Decimal::ZERO) + got);
                }
                position += got;
                cash -= quantity * price + quote_fee;
            }
            Side::Sell => {
                position -= quantity + base_fee;
                cash += quantity * price - quote_fee;
            }
        }
    }
    if position <= Decimal::ZERO {
        entry = Decimal::ZERO;
    }
    (cash, position, entry)
}

/// Recovers `traders` (started, not yet running) from `stored` and `exchange`; see the module
/// docs. What it finds is in each trader's journal (the session records it as usual). With
/// `check_balances`, the exchange's balances must match the positions (a paper account
/// restored from the store, or a live account the session alone trades).
pub async fn recover<E: Exchange>(
    traders: &mut [Trader<E>],
    exchange: &E,
    stored: &Stored,
    check_balances: bool,
) -> Result<Outcome, ExchangeError> {
    let mut outcome = Outcome::default();
    let ordered: HashSet<&str> = stored.orders.iter().map(|o| o.correlation_id.as_str()).collect();
    let now = crate::trader::wall_ms();
    let mut followed: HashSet<String> = HashSet::new();
    let mut recovered_fills: Vec<(usize, Fill)> = Vec::new();
    // Decisions in flight.
    for chain in &stored.approved {
        let text = chain.to_string();
        if ordered.contains(text.as_str()) || stored.blocked.contains(&text) {
            continue;
        }
        let Some((i, candle)) = owner(traders, *chain) else { continue };
        let Some(client) = traders[i].client_id(candle) else { continue };
        let symbol = traders[i].plan().symbol.clone();
        match exchange.order(&symbol, &client).await? {
            Some(order) => {
                let fills = fills_of(exchange, &order).await?;
                outcome.orders_found += 1;
                outcome.fills_found += fills.len();
                recovered_fills.extend(fills.iter().cloned().map(|f| (i, f)));
                traders[i].adopt(candle, &order, &fills, true);
                followed.insert(order.client_id.to_string());
            }
            None => {
                outcome.never_sent += 1;
                traders[i].never_sent(candle, now);
            }
        }
    }
    // Orders stored as open.
    // By symbol and trade id: the stored ids are the run's (`<run>/<symbol>:<trade>`), or from
    // before the run was part of them (`<symbol>:<trade>`).
    let known_fills: HashSet<&str> =
        stored.fills.iter().map(|f| crate::record::trade_key(&f.fill_id)).collect();
    for o in stored.orders.iter().filter(|o| stored_status_open(&o.status)) {
        let Some((i, seq_candle)) = client_uuid(&o.client_order_id).and_then(|u| owner(traders, u)) else {
            continue;
        };
        let Ok(client) = kuant_exchanges::ClientOrderId::new(o.client_order_id.clone()) else { continue };
        match exchange.order(&o.symbol, &client).await? {
            Some(order) => {
                let fills = fills_of(exchange, &order).await?;
                let new: Vec<Fill> = fills
                    .iter()
                    .filter(|f| {
                        !known_fills.contains(crate::record::legacy_fill_id(&f.symbol, f.trade_id).as_str())
                    })
                    .cloned()
                    .collect();
                outcome.fills_found += new.len();
                recovered_fills.extend(new.iter().cloned().map(|f| (i, f)));
                traders[i].adopt(seq_candle, &order, &fills, false);
                followed.insert(order.client_id.to_string());
            }
            None => outcome.mismatches.push(format!(
                "order {} ({} {} {}) is open in the store; the exchange does not know it",
                o.client_order_id,
                o.side,
                o.quantity.normalize(),
                o.symbol
            )),
        }
    }
    // Open orders only the exchange knows.
    let stored_ids: HashSet<&str> = stored.orders.iter().map(|o| o.client_order_id.as_str()).collect();
    let mut symbols: Vec<String> = traders.iter().map(|t| t.plan().symbol.clone()).collect();
    symbols.sort();
    symbols.dedup();
    for symbol in &symbols {
        for order in exchange.open_orders(symbol).await? {
            let id = order.client_id.to_string();
            let ours = client_uuid(&id).and_then(|u| owner(traders, u));
            if let Some((i, candle)) = ours
                && !stored_ids.contains(id.as_str())
                && !followed.contains(&id)
                && matches!(order.kind, kuant_exchanges::OrderKind::StopLossLimit { .. })
                && order.side == Side::Sell
            {
                outcome.orders_found += 1;
                traders[i].adopt(candle, &order, &[], true);
                followed.insert(id);
                continue;
            }
            if ours.is_some() && !stored_ids.contains(id.as_str()) && !followed.contains(&id) {
                outcome.mismatches.push(format!(
                    "order {id} ({:?} {} {symbol}) is open on the exchange; the store does not know it",
                    order.side,
                    order.quantity.normalize()
                ));
            }
        }
    }
    // Books: each trader's from its fills, stored and recovered.
    let sides: HashMap<&str, Side> = stored
        .orders
        .iter()
        .map(|o| (o.client_order_id.as_str(), if o.side == "sell" { Side::Sell } else { Side::Buy }))
        .collect();
    let mut positions: HashMap<String, (Decimal, Decimal)> = HashMap::new();
    for (i, trader) in traders.iter_mut().enumerate() {
        let base = trader.rules().base_asset.to_string();
        let mut fills: Vec<(Side, Decimal, Decimal, Decimal, &str)> = Vec::new();
        for f in &stored.fills {
            let mine = client_uuid(&f.client_order_id).and_then(|u| trader.owns(u)).is_some();
            if let (true, Some(side)) = (mine, sides.get(f.client_order_id.as_str())) {
                fills.push((*side, f.quantity, f.price, f.fee, f.fee_asset.as_str()));
            }
        }
        for (_, f) in recovered_fills.iter().filter(|(t, _)| *t == i) {
            if !known_fills.contains(format!("{}:{}", f.symbol, f.trade_id).as_str()) {
                fills.push((f.side, f.quantity, f.price, f.fee, &f.fee_asset));
            }
        }
        let (cash, position, entry) = books(trader.plan().budget, &base, fills);
        trader.restore(cash, position, entry);
        trader.recall_orders(stored.orders.iter().map(|o| o.client_order_id.as_str()));
        let entry = positions.entry(base).or_insert((Decimal::ZERO, trader.rules().lot.step));
        entry.0 += position;
    }
    if check_balances {
        let balances = exchange.balances().await?;
        for (asset, (position, step)) in &positions {
            let held = balances.iter().find(|b| b.asset == *asset).map(|b| b.total()).unwrap_or_default();
            if (held - position).abs() > *step {
                outcome.mismatches.push(format!(
                    "{asset}: the session holds {} by its fills, the exchange {} (more than one lot step, {}, apart)",
                    position.normalize(),
                    held.normalize(),
                    step.normalize()
                ));
            }
        }
    }
    if !outcome.mismatches.is_empty() {
        let message = outcome.mismatches.join("; ");
        tracing::error!(%message, "recovery found a mismatch: trading halted until a human resumes");
        for trader in traders.iter_mut() {
            trader.halt(RECOVERY_MISMATCH, &message);
        }
    }
    Ok(outcome)
}
