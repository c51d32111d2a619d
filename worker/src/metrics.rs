//! The worker's Prometheus metrics (`/metrics` on `--metrics-listen`):
//! records by outcome, batch sizes, the stream to the master, and where it
//! stands on each partition it owns. Counters are relaxed atomics; the
//! per-partition view is replaced once per heartbeat.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::metrics::{
    Exposition, Histogram, PartitionGauge, BATCH_BYTES_BOUNDS, BATCH_RECORDS_BOUNDS,
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
    /// Records classified, by outcome (index into [`OUTCOMES`]).
    pub records: [AtomicU64; 4],
    pub batch_records: Histogram,
    pub batch_bytes: Histogram,
    pub master_connected: AtomicBool,
    /// Sessions opened (welcomed); all but the first are reconnections.
    pub sessions: AtomicU64,
    /// Attempts to reach the master that failed.
    pub connect_failures: AtomicU64,
    pub assignments: AtomicU64,
    pub revocations: AtomicU64,
    pub kafka_errors: AtomicU64,
    partitions: Mutex<BTreeMap<i32, PartitionView>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records: Default::default(),
            batch_records: Histogram::new(BATCH_RECORDS_BOUNDS, 1.0),
            batch_bytes: Histogram::new(BATCH_BYTES_BOUNDS, 1.0),
            master_connected: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            kafka_errors: AtomicU64::new(0),
            partitions: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
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
        self.master_connected.store(connected, Ordering::Relaxed);
    }

    /// The whole exposition.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut e = Exposition::new();
        e.family(
            "cyberday_worker_records_total",
            "counter",
            "Records read and classified, by outcome.",
        );
        for (outcome, n) in OUTCOMES.iter().zip(&self.records) {
            e.sample(
                "cyberday_worker_records_total",
                &[("outcome", outcome)],
                load(n),
            );
        }
        e.histogram(
            "cyberday_worker_batch_records",
            "Results per batch sent to the master.",
            &self.batch_records.snapshot(),
        );
        e.histogram(
            "cyberday_worker_batch_bytes",
            "Encoded size of each batch sent to the master.",
            &self.batch_bytes.snapshot(),
        );
        let sessions = load(&self.sessions);
        e.single(
            "cyberday_worker_master_connected",
            "gauge",
            "1 while a session stream with the master is open.",
            u8::from(self.master_connected.load(Ordering::Relaxed)),
        );
        for (name, help, value) in [
            (
                "cyberday_worker_master_sessions_total",
                "Sessions opened with the master.",
                sessions,
            ),
            (
                "cyberday_worker_master_reconnects_total",
                "Sessions opened after the first (the master restarted or the stream broke).",
                sessions.saturating_sub(1),
            ),
            (
                "cyberday_worker_master_connect_failures_total",
                "Attempts to reach the master that failed.",
                load(&self.connect_failures),
            ),
            (
                "cyberday_worker_assignments_total",
                "Partitions assigned by the master.",
                load(&self.assignments),
            ),
            (
                "cyberday_worker_revocations_total",
                "Partitions revoked by the master.",
                load(&self.revocations),
            ),
            (
                "cyberday_worker_kafka_errors_total",
                "Errors the Kafka consumer reported.",
                load(&self.kafka_errors),
            ),
        ] {
            e.single(name, "counter", help, value);
        }
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        e.single(
            "cyberday_worker_partitions",
            "gauge",
            "Partitions this worker owns.",
            partitions.len(),
        );
        let rows: Vec<(i32, PartitionView)> = partitions.into_iter().collect();
        e.partition_gauges(
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
        );
        e.finish()
    }

    /// `/metrics`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self)
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
        inc(&m.records[1]);
        inc(&m.records[1]);
        inc(&m.sessions);
        inc(&m.sessions);
        m.set_connected(true);
        m.batch_bytes.observe(300);
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
