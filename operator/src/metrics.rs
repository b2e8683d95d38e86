//! The operator's Prometheus metrics: reconciles, failures and reconcile duration, by kind.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The kind a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `Backtest`, `TradingSession` or `Reconciliation`.
    pub kind: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<KindLabel, Counter>,
    duration: Family<KindLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kuant_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<KindLabel, Counter>::default();
        let duration =
            Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed (retried with backoff)",
            failures.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time a reconcile took", duration.clone());
        Self { registry, reconciles, failures, duration }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` that took `took`, failed or not.
    pub fn observe(&self, kind: &'static str, took: Duration, failed: bool) {
        let label = KindLabel { kind };
        self.reconciles.get_or_create(&label).inc();
        if failed {
            self.failures.get_or_create(&label).inc();
        }
        self.duration.get_or_create(&label).observe(took.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_counted_by_kind() {
        let m = Metrics::default();
        m.observe("Backtest", Duration::from_millis(3), false);
        m.observe("Backtest", Duration::from_millis(5), true);
        let text = m.encode();
        assert!(text.contains("kuant_operator_reconciles_total{kind=\"Backtest\"} 2"), "{text}");
        assert!(text.contains("kuant_operator_reconcile_failures_total{kind=\"Backtest\"} 1"), "{text}");
        assert!(
            text.contains("kuant_operator_reconcile_duration_seconds_count{kind=\"Backtest\"} 2"),
            "{text}"
        );
    }
}
