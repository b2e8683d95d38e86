//! The part of a TradingSession's status its agent writes.
//!
//! Who owns which status field (server-side apply, one field manager each, so neither ever
//! overwrites the other's):
//!
//! | field | owner |
//! |---|---|
//! | `phase`, `observedGeneration`, `message`, condition `Ready` | the operator (`kuant-operator`) |
//! | `lastHeartbeat`, `portfolio`, `counters` | the session's agent (`kuant-agent`) |
//! | conditions `MarketDataHealthy`, `Trading`, `Halted`, `Degraded` | the session's agent |
//!
//! The agent applies its fields every 5 s (the heartbeat) and at once when a condition changes.
//! [`agent_status`] is the pure part: what the agent says, from where its traders stand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kuant_crds::common::{Amount, SignedAmount};
use kuant_crds::session::{
    CONDITION_DEGRADED, CONDITION_HALTED, CONDITION_MARKET_DATA_HEALTHY, CONDITION_TRADING, Counters,
    PortfolioStatus, Position, TradingSessionStatus,
};
use rust_decimal::Decimal;

use crate::record;
use crate::session::Snapshot;

/// Where a session stands, as its status shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Each trader's symbol, in the session's order.
    pub symbols: Vec<String>,
    /// Each trader's snapshot, in the same order.
    pub snapshots: Vec<Snapshot>,
    /// The session's counters.
    pub counters: record::Counters,
    /// Why the store cannot be written, when it cannot.
    pub store_error: Option<String>,
    /// The holds of `status.holds` the agent honours (each `source: reason: message`).
    pub holds: Vec<String>,
    /// The session is being deleted: its orders are cancelled and none placed.
    pub deleting: bool,
    /// The agent is stopping (SIGTERM: its pod deleted, rolled or evicted): its orders are
    /// cancelled and none placed; the next pod recovers the positions.
    pub stopping: bool,
    /// Orders by outcome and blocked trades by reason.
    pub tally: Tally,
}

/// Orders by how they ended and blocked trades by reason, counted from the traders' steps (what
/// the agent's `/metrics` serves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Orders by outcome: `submitted`, `filled`, `canceled`, `rejected`, `expired`.
    pub outcomes: std::collections::BTreeMap<&'static str, u64>,
    /// Blocked trades by reason (e.g. `stale_market_data`).
    pub blocked: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    /// Counts `step`.
    pub fn count(&mut self, step: &crate::trader::Step) {
        use crate::trader::Step;
        use kuant_exchanges::OrderStatus;
        let outcome = match step {
            Step::Submitted(_) => "submitted",
            Step::Order(order) => match order.status {
                OrderStatus::Filled => "filled",
                OrderStatus::Canceled => "canceled",
                OrderStatus::Rejected => "rejected",
                OrderStatus::Expired => "expired",
                _ => return,
            },
            Step::Blocked { reason, .. } => {
                *self.blocked.entry(reason.clone()).or_default() += 1;
                return;
            }
            _ => return,
        };
        *self.outcomes.entry(outcome).or_default() += 1;
    }
}

fn condition(
    kind: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if on { "True" } else { "False" };
    // The transition time moves only when the status does.
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The agent's fields of the status (the others left unset, so an apply of it claims only
/// these): heartbeat `now`, the portfolio summed over the traders, the counters, and the four
/// conditions (their transition times kept from `previous` while their status holds).
pub fn agent_status(
    view: &View,
    generation: Option<i64>,
    previous: &[Condition],
    now: Time,
) -> TradingSessionStatus {
    let stale: Vec<&str> = view
        .symbols
        .iter()
        .zip(&view.snapshots)
        .filter(|(_, s)| !s.healthy)
        .map(|(sym, _)| sym.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // A hold from outside is a halt too, shown first: a human must clear it.
    let halted = match view.holds.as_slice() {
        [] => view.snapshots.iter().find_map(|s| s.halted.clone()),
        holds => Some(format!("Held: {}", holds.join("; "))),
    };
    let suspended = view.snapshots.iter().any(|s| s.suspended);
    let healthy = stale.is_empty();
    let data = if healthy {
        condition(
            CONDITION_MARKET_DATA_HEALTHY,
            true,
            "Fresh",
            "market data of every symbol is fresh".into(),
            generation,
            previous,
            &now,
        )
    } else {
        condition(
            CONDITION_MARKET_DATA_HEALTHY,
            false,
            "Stale",
            format!("no fresh market data: {} (polling REST while the stream reconnects)", stale.join(", ")),
            generation,
            previous,
            &now,
        )
    };
    let halt = match &halted {
        Some(text) => {
            let (reason, message) = text.split_once(": ").unwrap_or((text.as_str(), text.as_str()));
            condition(CONDITION_HALTED, true, reason, message.to_owned(), generation, previous, &now)
        }
        None => condition(
            CONDITION_HALTED,
            false,
            "NotHalted",
            "within the risk limits".into(),
            generation,
            previous,
            &now,
        ),
    };
    let trading = if view.deleting {
        condition(
            CONDITION_TRADING,
            false,
            "Deleting",
            "the session is being deleted: open orders cancelled, no new ones".into(),
            generation,
            previous,
            &now,
        )
    } else if view.stopping {
        condition(
            CONDITION_TRADING,
            false,
            "Stopping",
            "the agent is stopping (SIGTERM): open orders cancelled; the next pod recovers the positions"
                .into(),
            generation,
            previous,
            &now,
        )
    } else if halted.is_some() {
        condition(
            CONDITION_TRADING,
            false,
            "Halted",
            "trading is halted (see the Halted condition)".into(),
            generation,
            previous,
            &now,
        )
    } else if suspended {
        condition(
            CONDITION_TRADING,
            false,
            "Suspended",
            "spec.suspend is true: open orders cancelled, no new ones".into(),
            generation,
            previous,
            &now,
        )
    } else if view.snapshots.iter().any(|s| s.no_lease) {
        condition(
            CONDITION_TRADING,
            false,
            "NoTradingLease",
            "waiting for the session's trading Lease (another pod of this session may still hold it)".into(),
            generation,
            previous,
            &now,
        )
    } else if !healthy {
        condition(
            CONDITION_TRADING,
            false,
            "StaleMarketData",
            "no decisions on stale market data".into(),
            generation,
            previous,
            &now,
        )
    } else {
        condition(
            CONDITION_TRADING,
            true,
            "Trading",
            "deciding on fresh market data".into(),
            generation,
            previous,
            &now,
        )
    };
    let degraded = match (&view.store_error, healthy) {
        (Some(e), _) => {
            condition(CONDITION_DEGRADED, true, "StoreUnavailable", e.clone(), generation, previous, &now)
        }
        (None, false) => condition(
            CONDITION_DEGRADED,
            true,
            "StaleMarketData",
            format!("stale: {}", stale.join(", ")),
            generation,
            previous,
            &now,
        ),
        (None, true) => condition(
            CONDITION_DEGRADED,
            false,
            "AllHealthy",
            "market data and store healthy".into(),
            generation,
            previous,
            &now,
        ),
    };
    let mut positions: Vec<(String, Decimal, Decimal, Decimal)> = Vec::new();
    for (symbol, s) in view.symbols.iter().zip(&view.snapshots) {
        if s.position <= Decimal::ZERO {
            continue;
        }
        match positions.iter_mut().find(|p| p.0 == *symbol) {
            Some(p) => {
                p.2 = (p.2 * p.1 + s.entry_price * s.position) / (p.1 + s.position);
                p.1 += s.position;
                p.3 = s.last_price;
            }
            None => positions.push((symbol.clone(), s.position, s.entry_price, s.last_price)),
        }
    }
    let sum = |f: fn(&Snapshot) -> Decimal| view.snapshots.iter().map(f).sum::<Decimal>();
    let c = view.counters;
    TradingSessionStatus {
        conditions: vec![data, trading, halt, degraded],
        last_heartbeat: Some(now),
        portfolio: Some(PortfolioStatus {
            equity: Amount(sum(|s| s.equity).max(Decimal::ZERO).round_dp(8)),
            cash: Amount(sum(|s| s.cash).max(Decimal::ZERO).round_dp(8)),
            pnl_today: SignedAmount(sum(|s| s.pnl_today).round_dp(8)),
            positions: positions
                .into_iter()
                .map(|(symbol, quantity, entry, last)| Position {
                    symbol,
                    quantity: Amount(quantity.normalize()),
                    average_price: Amount(entry.round_dp(8).normalize()),
                    unrealized_pnl: SignedAmount(((last - entry) * quantity).round_dp(8).normalize()),
                })
                .collect(),
        }),
        counters: Some(Counters { signals: c.signals, orders: c.orders, fills: c.fills, blocked: c.blocked }),
        open_orders: Some(
            u32::try_from(view.snapshots.iter().map(|s| s.open_orders).sum::<usize>()).unwrap_or(u32::MAX),
        ),
        ..TradingSessionStatus::default()
    }
}

/// Whether two statuses differ in a condition's status or reason (a change the agent applies
/// at once, not at the next heartbeat).
pub fn conditions_changed(before: &[Condition], after: &[Condition]) -> bool {
    after
        .iter()
        .any(|a| !before.iter().any(|b| b.type_ == a.type_ && b.status == a.status && b.reason == a.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("a time"))
    }

    fn snapshot(position: i64, healthy: bool) -> Snapshot {
        Snapshot {
            equity: Decimal::from(1000),
            cash: Decimal::from(400),
            pnl_today: Decimal::from(-5),
            position: Decimal::from(position),
            entry_price: Decimal::from(100),
            last_price: Decimal::from(110),
            open_orders: 0,
            healthy,
            halted: None,
            suspended: false,
            no_lease: false,
            last_market_data_ms: None,
        }
    }

    fn view(snapshots: Vec<Snapshot>) -> View {
        View {
            symbols: vec!["BTCUSDT".into(), "BTCUSDT".into()],
            snapshots,
            counters: record::Counters { signals: 3, orders: 2, fills: 2, blocked: 1 },
            ..View::default()
        }
    }

    fn find<'a>(s: &'a TradingSessionStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).expect("the condition")
    }

    #[test]
    fn a_healthy_session_trades_and_sums_its_traders() {
        let s = agent_status(
            &view(vec![snapshot(2, true), snapshot(1, true)]),
            Some(4),
            &[],
            time("2026-12-07T10:00:00Z"),
        );
        assert_eq!(find(&s, CONDITION_TRADING).status, "True");
        assert_eq!(find(&s, CONDITION_MARKET_DATA_HEALTHY).reason, "Fresh");
        assert_eq!(find(&s, CONDITION_HALTED).status, "False");
        assert_eq!(find(&s, CONDITION_DEGRADED).status, "False");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(4)));
        let p = s.portfolio.expect("portfolio");
        assert_eq!(p.equity.0, Decimal::from(2000));
        assert_eq!(p.pnl_today.0, Decimal::from(-10));
        assert_eq!(p.positions.len(), 1, "one symbol, two traders");
        assert_eq!(p.positions[0].quantity.0, Decimal::from(3));
        assert_eq!(p.positions[0].unrealized_pnl.0, Decimal::from(30));
        assert_eq!(s.counters.expect("counters").blocked, 1);
        assert!(s.phase.is_none() && s.observed_generation.is_none(), "the operator's fields stay unset");
    }

    #[test]
    fn stale_data_halts_and_suspension_each_stop_trading_with_their_reason() {
        let now = time("2026-12-07T10:00:00Z");
        let stale = agent_status(&view(vec![snapshot(0, false), snapshot(0, true)]), None, &[], now.clone());
        assert_eq!(find(&stale, CONDITION_TRADING).reason, "StaleMarketData");
        assert_eq!(find(&stale, CONDITION_DEGRADED).reason, "StaleMarketData");
        assert!(find(&stale, CONDITION_MARKET_DATA_HEALTHY).message.contains("BTCUSDT"));
        let mut halted = snapshot(0, true);
        halted.halted = Some("RecoveryMismatch: BTC: the session holds 1, the exchange 0".into());
        let s = agent_status(&view(vec![halted, snapshot(0, true)]), None, &[], now.clone());
        let h = find(&s, CONDITION_HALTED);
        assert_eq!((h.status.as_str(), h.reason.as_str()), ("True", "RecoveryMismatch"));
        assert!(h.message.contains("the exchange 0"), "the figures: {}", h.message);
        assert_eq!(find(&s, CONDITION_TRADING).reason, "Halted");
        let mut off = snapshot(0, true);
        off.suspended = true;
        let s = agent_status(&view(vec![off, snapshot(0, true)]), None, &[], now);
        assert_eq!(find(&s, CONDITION_TRADING).reason, "Suspended");
    }

    #[test]
    fn holds_halt_deletion_stops_and_open_orders_are_summed() {
        let now = time("2026-12-07T10:00:00Z");
        let mut busy = snapshot(1, true);
        busy.open_orders = 2;
        let mut held = view(vec![busy, snapshot(0, true)]);
        held.holds = vec!["reconciliation/main: BalanceDrift: BTC off by 0.1".into()];
        let s = agent_status(&held, None, &[], now.clone());
        let h = find(&s, CONDITION_HALTED);
        assert_eq!((h.status.as_str(), h.reason.as_str()), ("True", "Held"));
        assert!(h.message.contains("reconciliation/main: BalanceDrift"), "{}", h.message);
        assert_eq!(find(&s, CONDITION_TRADING).reason, "Halted");
        assert_eq!(s.open_orders, Some(2));
        held.deleting = true;
        assert_eq!(find(&agent_status(&held, None, &[], now.clone()), CONDITION_TRADING).reason, "Deleting");
        held.deleting = false;
        held.stopping = true;
        assert_eq!(find(&agent_status(&held, None, &[], now.clone()), CONDITION_TRADING).reason, "Stopping");
        let mut unleased = snapshot(0, true);
        unleased.no_lease = true;
        let s = agent_status(&view(vec![unleased, snapshot(0, true)]), None, &[], now);
        assert_eq!(find(&s, CONDITION_TRADING).reason, "NoTradingLease");
    }

    #[test]
    fn transition_times_move_only_when_a_status_changes() {
        let first = agent_status(
            &view(vec![snapshot(0, true), snapshot(0, true)]),
            None,
            &[],
            time("2026-12-07T10:00:00Z"),
        );
        let same = agent_status(
            &view(vec![snapshot(0, true), snapshot(0, true)]),
            None,
            &first.conditions,
            time("2026-12-07T10:00:05Z"),
        );
        assert_eq!(find(&same, CONDITION_TRADING).last_transition_time, time("2026-12-07T10:00:00Z"));
        assert!(!conditions_changed(&first.conditions, &same.conditions));
        let stale = agent_status(
            &view(vec![snapshot(0, false), snapshot(0, true)]),
            None,
            &same.conditions,
            time("2026-12-07T10:00:10Z"),
        );
        assert_eq!(find(&stale, CONDITION_TRADING).last_transition_time, time("2026-12-07T10:00:10Z"));
        assert!(conditions_changed(&same.conditions, &stale.conditions));
    }
}
