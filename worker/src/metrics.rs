//! The worker's Prometheus metrics (`/metrics` on `--metrics-listen`):
//! records by outcome, batch sizes, the stream to the master, and where it
//! stands on each partition it owns. Counters and histograms are
//! `prometheus-client` instruments in one registry; the per-partition view
//! is replaced once per heartbeat and written at scrape time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::metrics::{
    histogram, Collector, Counter, DescriptorEncoder, Families, Family, Gauge, Histogram,
    PartitionGauge, Registry, BATCH_BYTES_BOUNDS, BATCH_RECORDS_BOUNDS,
};

/// Record outcomes, in the order of [`Metrics::records`].
pub const OUTCOMES: [&str; 4] = ["no_purchase", "short", "long", "invalid"];

/// Where the worker stands on one owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionView {
    /// Next offset the worker will read.
    pub position: i64,
    /// The consumer's last known high watermark; -1 if unknown.
    pub high_watermark: i64,
}

/// What the worker counts.
#[derive(Debug)]
pub struct Metrics {
    /// Records classified, by outcome (index into [`OUTCOMES`]): the
    /// family's counters, looked up once so the record path only adds.
    pub records: [Counter; 4],
    pub batch_records: Histogram,
    pub batch_bytes: Histogram,
    /// 1 while a session stream is open.
    pub master_connected: Gauge,
    /// Sessions opened (welcomed); all but the first are reconnections.
    pub sessions: Counter,
    /// Attempts to reach the master that failed.
    pub connect_failures: Counter,
    pub assignments: Counter,
    pub revocations: Counter,
    pub kafka_errors: Counter,
    partitions: Arc<Mutex<BTreeMap<i32, PartitionView>>>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let outcomes = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let records = OUTCOMES.map(|o| outcomes.get_or_create(&[("outcome", o)]).clone());
        let mut m = Self {
            records,
            batch_records: histogram(BATCH_RECORDS_BOUNDS),
            batch_bytes: histogram(BATCH_BYTES_BOUNDS),
            master_connected: Gauge::default(),
            sessions: Counter::default(),
            connect_failures: Counter::default(),
            assignments: Counter::default(),
            revocations: Counter::default(),
            kafka_errors: Counter::default(),
            partitions: Arc::default(),
            registry: Registry::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "cyberday_worker_records",
            "Records read and classified, by outcome",
            outcomes,
        );
        for (name, help, h) in [
            (
                "cyberday_worker_batch_records",
                "Results per batch sent to the master",
                &m.batch_records,
            ),
            (
                "cyberday_worker_batch_bytes",
                "Encoded size of each batch sent to the master",
                &m.batch_bytes,
            ),
        ] {
            registry.register(name, help, h.clone());
        }
        registry.register(
            "cyberday_worker_master_connected",
            "1 while a session stream with the master is open",
            m.master_connected.clone(),
        );
        for (name, help, c) in [
            (
                "cyberday_worker_master_sessions",
                "Sessions opened with the master",
                &m.sessions,
            ),
            (
                "cyberday_worker_master_connect_failures",
                "Attempts to reach the master that failed",
                &m.connect_failures,
            ),
            (
                "cyberday_worker_assignments",
                "Partitions assigned by the master",
                &m.assignments,
            ),
            (
                "cyberday_worker_revocations",
                "Partitions revoked by the master",
                &m.revocations,
            ),
            (
                "cyberday_worker_kafka_errors",
                "Errors the Kafka consumer reported",
                &m.kafka_errors,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register_collector(Box::new(StreamView {
            sessions: m.sessions.clone(),
            partitions: m.partitions.clone(),
        }));
        m
    }
}

impl Metrics {
    /// Replaces the per-partition view (every heartbeat; empty when the
    /// session ends).
    pub fn set_partitions(&self, view: impl IntoIterator<Item = (i32, PartitionView)>) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions.clear();
        partitions.extend(view);
    }

    pub fn set_connected(&self, connected: bool) {
        self.master_connected.set(i64::from(connected));
    }

    /// The whole exposition.
    pub fn render(&self) -> String {
        common::metrics::encode(&self.registry)
    }

    /// `/metrics`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self)
    }
}

/// What is written at scrape time: reconnections and the partitions.
#[derive(Debug)]
struct StreamView {
    sessions: Counter,
    partitions: Arc<Mutex<BTreeMap<i32, PartitionView>>>,
}

impl Collector for StreamView {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        f.counter(
            "cyberday_worker_master_reconnects",
            "Sessions opened after the first (the master restarted or the stream broke).",
            self.sessions.get().saturating_sub(1),
        )?;
        let rows: Vec<(i32, PartitionView)> = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, v)| (*p, *v))
            .collect();
        f.gauge(
            "cyberday_worker_partitions",
            "Partitions this worker owns.",
            rows.len() as i64,
        )?;
        f.partition_gauges(
            &[
                PartitionGauge {
                    name: "cyberday_worker_partition_position",
                    help: "Next offset the worker will read.",
                    value: |v: &PartitionView| Some(v.position),
                },
                PartitionGauge {
                    name: "cyberday_worker_partition_high_watermark",
                    help: "The consumer's last known high watermark.",
                    value: |v: &PartitionView| (v.high_watermark >= 0).then_some(v.high_watermark),
                },
                PartitionGauge {
                    name: "cyberday_worker_partition_lag_records",
                    help: "High watermark minus the next offset to read: records not yet read.",
                    value: |v: &PartitionView| {
                        (v.high_watermark >= 0).then(|| (v.high_watermark - v.position).max(0))
                    },
                },
            ],
            &rows,
        )
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    common::http::metrics(metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_records_stream_and_partitions() {
        let m = Metrics::default();
        m.records[1].inc();
        m.records[1].inc();
        m.sessions.inc();
        m.sessions.inc();
        m.set_connected(true);
        m.batch_bytes.observe(300.0);
        m.set_partitions([
            (
                3,
                PartitionView {
                    position: 10,
                    high_watermark: 25,
                },
            ),
            (
                4,
                PartitionView {
                    position: 0,
                    high_watermark: -1,
                },
            ),
        ]);
        let text = m.render();
        for line in [
            "cyberday_worker_records_total{outcome=\"short\"} 2",
            "cyberday_worker_records_total{outcome=\"invalid\"} 0",
            "cyberday_worker_master_connected 1",
            "cyberday_worker_master_reconnects_total 1",
            "cyberday_worker_partitions 2",
            "cyberday_worker_partition_lag_records{partition=\"3\"} 15",
            "cyberday_worker_batch_bytes_bucket{le=\"1024\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("lag_records{partition=\"4\"}"));
    }
}
