//! The delivery service's Prometheus metrics (`--metrics-listen`, `/metrics`).
//! Labels carry channels, kinds, reasons and partitions, never an address.

use std::sync::Arc;

use common::metrics::{histogram, Counter, Family, Gauge, Histogram, Registry};

type Labels = Vec<(&'static str, String)>;

/// Every instrument, shared by the tasks that update them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    sent: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    skipped: Counter,
    rebalances: Counter,
    in_flight: Gauge,
    latency: Histogram,
    lag: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sent = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let skipped = Counter::default();
        let rebalances = Counter::default();
        let in_flight = Gauge::default();
        let latency = histogram(common::metrics::LATENCY_SECONDS_BOUNDS);
        let lag = Family::<Labels, Gauge>::default();
        registry.register(
            "cyberday_delivery_sent",
            "Notifications the provider acknowledged, by channel and kind",
            sent.clone(),
        );
        registry.register(
            "cyberday_delivery_retries",
            "Attempts made again after a transient failure, by channel",
            retries.clone(),
        );
        registry.register(
            "cyberday_delivery_failures",
            "Failed attempts, by channel and reason (smtp_421, smtp_550, timeout, connection, malformed_address, ...)",
            failures.clone(),
        );
        registry.register(
            "cyberday_delivery_dead_letters",
            "Notifications written to the dead-letter topic, by reason",
            dead_letters.clone(),
        );
        registry.register(
            "cyberday_delivery_skipped_already_delivered",
            "Notifications not sent because the ledger records their folio as delivered",
            skipped.clone(),
        );
        registry.register(
            "cyberday_delivery_rebalances",
            "Assignments received from the group (each re-reads the ledger)",
            rebalances.clone(),
        );
        registry.register(
            "cyberday_delivery_in_flight",
            "Notifications being sent or recorded right now (at most --max-in-flight)",
            in_flight.clone(),
        );
        registry.register(
            "cyberday_delivery_latency_seconds",
            "From the notification's Kafka timestamp to the provider's acknowledgement",
            latency.clone(),
        );
        registry.register(
            "cyberday_delivery_partition_lag_records",
            "High watermark minus the position the group may commit, per owned partition",
            lag.clone(),
        );
        Self {
            registry: Arc::new(registry),
            sent,
            retries,
            failures,
            dead_letters,
            skipped,
            rebalances,
            in_flight,
            latency,
            lag,
        }
    }

    pub fn encode(&self) -> String {
        common::metrics::encode(&self.registry)
    }

    pub fn sent(&self, channel: &str, kind: &str, latency_seconds: f64) {
        self.sent
            .get_or_create(&vec![("channel", channel.into()), ("kind", kind.into())])
            .inc();
        self.latency.observe(latency_seconds.max(0.0));
    }

    pub fn retry(&self, channel: &str) {
        self.retries
            .get_or_create(&vec![("channel", channel.into())])
            .inc();
    }

    pub fn failure(&self, channel: &str, reason: &str) {
        self.failures
            .get_or_create(&vec![
                ("channel", channel.into()),
                ("reason", reason.into()),
            ])
            .inc();
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&vec![("reason", reason.into())])
            .inc();
    }

    pub fn skipped(&self) {
        self.skipped.inc();
    }

    pub fn rebalance(&self) {
        self.rebalances.inc();
    }

    pub fn in_flight(&self, n: i64) {
        self.in_flight.set(n);
    }

    pub fn lag(&self, partition: i32, records: i64) {
        self.lag
            .get_or_create(&vec![("partition", partition.to_string())])
            .set(records);
    }

    pub fn forget_partition(&self, partition: i32) {
        self.lag.remove(&vec![("partition", partition.to_string())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_labelled_and_exposed() {
        let m = Metrics::new();
        m.sent("email", "short", 0.02);
        m.failure("email", "smtp_421");
        m.retry("email");
        m.dead_letter("smtp_550");
        m.lag(2, 7);
        m.lag(3, 1);
        m.forget_partition(3);
        let text = m.encode();
        for line in [
            "cyberday_delivery_sent_total{channel=\"email\",kind=\"short\"} 1",
            "cyberday_delivery_failures_total{channel=\"email\",reason=\"smtp_421\"} 1",
            "cyberday_delivery_retries_total{channel=\"email\"} 1",
            "cyberday_delivery_dead_letters_total{reason=\"smtp_550\"} 1",
            "cyberday_delivery_partition_lag_records{partition=\"2\"} 7",
            "cyberday_delivery_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("partition=\"3\""), "{text}");
    }
}
