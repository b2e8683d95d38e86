//! The session agent's Prometheus metrics, served at `/metrics` on `KUANT_METRICS_ADDR`
//! (default `0.0.0.0:9090`, the port the operator's headless Service names): equity, open
//! orders, seconds since the last market-data message, orders by outcome, blocked trades by
//! reason, and the risk state (halted, suspended, held, holding the trading Lease). Every series
//! carries the label `session="<namespace>/<name>"`.
//!
//! Figures are taken from the session's latest [`View`] when scraped, so a scrape costs the
//! traders nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rust_decimal::prelude::ToPrimitive;

use kuant_runtime::status::View;

/// Label of a per-symbol series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SymbolLabel {
    symbol: String,
}

/// Label of orders by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// Label of blocked trades by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What the agent knows besides the view: its holds, the kill switch, the Lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// `spec.suspend`.
    pub suspended: bool,
    /// Holds in `status.holds`.
    pub holds: usize,
    /// This agent holds the trading Lease.
    pub leased: bool,
    /// When the agent last wrote its status (its heartbeat), wall clock ms.
    pub heartbeat_ms: Option<i64>,
}

/// The metrics of one session.
pub struct SessionMetrics {
    registry: Registry,
    equity: FloatGauge,
    cash: FloatGauge,
    pnl_today: FloatGauge,
    open_orders: Gauge,
    data_age: Family<SymbolLabel, FloatGauge>,
    data_healthy: Family<SymbolLabel, Gauge>,
    signals: Counter,
    orders: Family<OutcomeLabel, Counter>,
    fills: Counter,
    blocked: Family<ReasonLabel, Counter>,
    halted: Gauge,
    suspended: Gauge,
    holds: Gauge,
    leased: Gauge,
    heartbeat: FloatGauge,
}

/// Raises `counter` to `total` (counters only grow; the view carries totals).
fn raise(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl SessionMetrics {
    /// Metrics labelled `session` (`<namespace>/<name>`).
    pub fn new(session: &str) -> Self {
        let label = [("session".into(), session.to_owned().into())];
        let mut registry = Registry::with_prefix_and_labels("kuant_session", label.into_iter());
        let metrics = Self {
            registry: Registry::default(),
            equity: FloatGauge::default(),
            cash: FloatGauge::default(),
            pnl_today: FloatGauge::default(),
            open_orders: Gauge::default(),
            data_age: Family::default(),
            data_healthy: Family::default(),
            signals: Counter::default(),
            orders: Family::default(),
            fills: Counter::default(),
            blocked: Family::default(),
            halted: Gauge::default(),
            suspended: Gauge::default(),
            holds: Gauge::default(),
            leased: Gauge::default(),
            heartbeat: FloatGauge::default(),
        };
        let m = &metrics;
        registry.register("equity", "Cash plus positions at market, in the quote asset", m.equity.clone());
        registry.register("cash", "Free cash, in the quote asset", m.cash.clone());
        registry.register("pnl_today", "Profit or loss since 00:00 UTC", m.pnl_today.clone());
        registry.register(
            "open_orders",
            "Orders open on the exchange, stops included",
            m.open_orders.clone(),
        );
        registry.register(
            "market_data_age_seconds",
            "Seconds since the last market-data message, per symbol (+Inf before the first)",
            m.data_age.clone(),
        );
        registry.register(
            "market_data_healthy",
            "1 while the symbol's market data is fresh enough to trade on",
            m.data_healthy.clone(),
        );
        registry.register("signals", "Signals emitted by the strategies", m.signals.clone());
        registry.register(
            "orders",
            "Orders by outcome (submitted, filled, canceled, rejected, expired)",
            m.orders.clone(),
        );
        registry.register("fills", "Fills received", m.fills.clone());
        registry.register("blocked_trades", "Trades blocked, by reason", m.blocked.clone());
        registry.register(
            "halted",
            "1 while a risk limit, a recovery mismatch or a hold halts trading",
            m.halted.clone(),
        );
        registry.register("suspended", "1 while the kill switch (spec.suspend) is on", m.suspended.clone());
        registry.register("holds", "Holds from outside the agent (status.holds)", m.holds.clone());
        registry.register(
            "trading_lease",
            "1 while this agent holds the session's trading Lease",
            m.leased.clone(),
        );
        registry.register(
            "last_heartbeat_timestamp_seconds",
            "When the agent last wrote its status (every 5 s); 0 before the first",
            m.heartbeat.clone(),
        );
        Self { registry, ..metrics }
    }

    /// Takes the figures of `view` and `switches` at wall time `now_ms`.
    pub fn update(&self, view: &View, switches: Switches, now_ms: i64) {
        let sum = |f: fn(&kuant_runtime::session::Snapshot) -> rust_decimal::Decimal| {
            view.snapshots.iter().map(f).sum::<rust_decimal::Decimal>().to_f64().unwrap_or(0.0)
        };
        self.equity.set(sum(|s| s.equity));
        self.cash.set(sum(|s| s.cash));
        self.pnl_today.set(sum(|s| s.pnl_today));
        self.open_orders.set(
            i64::try_from(view.snapshots.iter().map(|s| s.open_orders).sum::<usize>()).unwrap_or(i64::MAX),
        );
        // Several traders on one symbol share its stream: the freshest counts.
        let mut symbols: BTreeMap<&str, (Option<i64>, bool)> = BTreeMap::new();
        for (symbol, s) in view.symbols.iter().zip(&view.snapshots) {
            let seen = symbols.entry(symbol.as_str()).or_default();
            seen.0 = seen.0.max(s.last_market_data_ms);
            seen.1 |= s.healthy;
        }
        for (symbol, (last, healthy)) in symbols {
            let label = SymbolLabel { symbol: symbol.to_owned() };
            let age = last.map_or(f64::INFINITY, |at| (now_ms - at).max(0) as f64 / 1000.0);
            self.data_age.get_or_create(&label).set(age);
            self.data_healthy.get_or_create(&label).set(i64::from(healthy));
        }
        raise(&self.signals, view.counters.signals);
        raise(&self.fills, view.counters.fills);
        for (outcome, total) in &view.tally.outcomes {
            raise(&self.orders.get_or_create(&OutcomeLabel { outcome: (*outcome).to_owned() }), *total);
        }
        for (reason, total) in &view.tally.blocked {
            raise(&self.blocked.get_or_create(&ReasonLabel { reason: reason.clone() }), *total);
        }
        let halted = switches.holds > 0 || view.snapshots.iter().any(|s| s.halted.is_some());
        self.halted.set(i64::from(halted));
        self.suspended.set(i64::from(switches.suspended));
        self.holds.set(i64::try_from(switches.holds).unwrap_or(i64::MAX));
        self.leased.set(i64::from(switches.leased));
        self.heartbeat.set(switches.heartbeat_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics");
        }
        text
    }
}

/// Serves `/metrics` (and `/healthz`) on `listener`: each scrape takes the latest view, the
/// switches and the time first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<SessionMetrics>,
    view: tokio::sync::watch::Receiver<View>,
    switches: impl Fn() -> Switches + Clone + Send + Sync + 'static,
) {
    use axum::routing::get;
    let scrape = move || {
        let (metrics, view, switches) = (metrics.clone(), view.clone(), switches.clone());
        async move {
            let now_ms = jiff::Timestamp::now().as_millisecond();
            metrics.update(&view.borrow(), switches(), now_ms);
            (
                [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                metrics.encode(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", get(scrape)).route("/healthz", get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use kuant_runtime::session::Snapshot;

    use super::*;

    #[test]
    fn the_view_becomes_prometheus_series_labelled_with_the_session() {
        let metrics = SessionMetrics::new("desk/btc");
        let mut view = View {
            symbols: vec!["BTCUSDT".into()],
            snapshots: vec![Snapshot {
                equity: 1000.into(),
                open_orders: 2,
                healthy: true,
                last_market_data_ms: Some(10_000),
                ..Snapshot::default()
            }],
            ..View::default()
        };
        view.tally.outcomes.insert("filled", 3);
        view.tally.blocked.insert("stale_market_data".into(), 4);
        view.counters.fills = 3;
        metrics.update(
            &view,
            Switches { suspended: false, holds: 0, leased: true, heartbeat_ms: Some(12_000) },
            12_500,
        );
        let text = metrics.encode();
        for line in [
            "kuant_session_equity{session=\"desk/btc\"} 1000.0",
            "kuant_session_open_orders{session=\"desk/btc\"} 2",
            "kuant_session_market_data_age_seconds{session=\"desk/btc\",symbol=\"BTCUSDT\"} 2.5",
            "kuant_session_orders_total{session=\"desk/btc\",outcome=\"filled\"} 3",
            "kuant_session_blocked_trades_total{session=\"desk/btc\",reason=\"stale_market_data\"} 4",
            "kuant_session_fills_total{session=\"desk/btc\"} 3",
            "kuant_session_trading_lease{session=\"desk/btc\"} 1",
            "kuant_session_halted{session=\"desk/btc\"} 0",
            "kuant_session_last_heartbeat_timestamp_seconds{session=\"desk/btc\"} 12.0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // Totals only grow: a later view with more adds the difference.
        view.tally.outcomes.insert("filled", 5);
        metrics.update(
            &view,
            Switches { suspended: true, holds: 1, leased: true, heartbeat_ms: None },
            13_000,
        );
        let text = metrics.encode();
        assert!(
            text.contains("kuant_session_orders_total{session=\"desk/btc\",outcome=\"filled\"} 5"),
            "{text}"
        );
        assert!(text.contains("kuant_session_halted{session=\"desk/btc\"} 1"), "{text}");
        assert!(text.contains("kuant_session_suspended{session=\"desk/btc\"} 1"), "{text}");
    }
}
