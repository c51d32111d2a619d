//! The master's Prometheus metrics. Most come, at scrape time, from what
//! the master already keeps: the coordinator's counters and assignments (a
//! snapshot from the actor, as GetStats takes) and the offsets view
//! (committed offsets, high watermarks fetched every second or so), written
//! by a `prometheus-client` collector. What only the record path sees is
//! counted here: the batch sizes and the produce-to-notify latency
//! (`prometheus-client` histograms), the dead letters by reason, and the
//! latency of the last second for the live page (an HdrHistogram: exact
//! percentiles, where the Prometheus buckets only bound them).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::metrics::{
    histogram, Collector, DescriptorEncoder, Families, Histogram, PartitionGauge, Registry,
    BATCH_RECORDS_BOUNDS, LATENCY_SECONDS_BOUNDS,
};

use common::pb;

use crate::coordinator::{DeadLetter, Notification, Snapshot};
use crate::messages::OffsetsView;

/// Most distinct invalid reasons kept apart; more are counted as `other`
/// (the reason is a code a worker sends, so its set must stay bounded).
const MAX_REASONS: usize = 64;

/// Longest latency the live page's window tells apart (an hour, in ms);
/// longer ones count as this.
const WINDOW_MAX_MS: u64 = 3_600_000;

/// What the record path counts for Prometheus and the live page.
#[derive(Debug)]
pub struct Metrics {
    /// Results per batch received from workers.
    pub batch_records: Histogram,
    /// Kafka timestamp of the record → notification accepted, in seconds.
    pub notify_latency: Histogram,
    /// The same latencies, in ms, since the live page's last sample.
    latency_window: Mutex<hdrhistogram::Histogram<u64>>,
    /// Dead letters by reason code; locked once per batch holding any.
    invalid: Mutex<BTreeMap<String, u64>>,
    /// Callers the Coordinator refused (shared with [`crate::auth`]).
    pub auth_refused: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            batch_records: histogram(BATCH_RECORDS_BOUNDS),
            notify_latency: histogram(LATENCY_SECONDS_BOUNDS),
            // Three significant digits: exact below 2 s, within 0.1 % above.
            latency_window: Mutex::new(
                hdrhistogram::Histogram::new_with_max(WINDOW_MAX_MS, 3)
                    .expect("a valid HdrHistogram range"),
            ),
            invalid: Mutex::new(BTreeMap::new()),
            auth_refused: Default::default(),
        }
    }
}

/// Percentiles of the produce-to-notify latency over a window, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyPercentiles {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub count: u64,
}

impl Metrics {
    /// Metrics that report `refused` as the Coordinator's refusals.
    pub fn with_auth_refused(refused: Arc<AtomicU64>) -> Self {
        Self {
            auth_refused: refused,
            ..Self::default()
        }
    }

    /// Notifications accepted at `now_ms`: their latency.
    pub fn notified(&self, notifications: &[Notification], now_ms: i64) {
        let mut window = self
            .latency_window
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for n in notifications {
            // 0: a record without a timestamp; nothing to measure.
            if n.timestamp_ms > 0 {
                let ms = (now_ms - n.timestamp_ms).max(0) as u64;
                self.notify_latency.observe(ms as f64 / 1000.0);
                window.saturating_record(ms.min(WINDOW_MAX_MS));
            }
        }
    }

    /// The latency percentiles since the last call (`None` if nothing was
    /// notified), and a new window.
    pub fn take_latency_window(&self) -> Option<LatencyPercentiles> {
        let mut window = self
            .latency_window
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = window.len();
        let percentiles = (count > 0).then(|| LatencyPercentiles {
            p50_ms: window.value_at_quantile(0.5),
            p99_ms: window.value_at_quantile(0.99),
            count,
        });
        window.reset();
        percentiles
    }

    /// Invalid records accepted: counted by reason.
    pub fn dead_lettered(&self, dead_letters: &[DeadLetter]) {
        if dead_letters.is_empty() {
            return;
        }
        let mut invalid = self.invalid.lock().unwrap_or_else(|e| e.into_inner());
        for d in dead_letters {
            let code = d.record.code.as_str();
            if let Some(n) = invalid.get_mut(code) {
                *n += 1;
            } else if invalid.len() < MAX_REASONS {
                invalid.insert(code.to_owned(), 1);
            } else {
                *invalid.entry("other".to_owned()).or_default() += 1;
            }
        }
    }

    /// Dead letters by reason so far.
    pub fn invalid_by_reason(&self) -> BTreeMap<String, u64> {
        self.invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Lag of one partition in records: from the high watermark back to the
/// committed offset and to the master's position (what it has notified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// -1 while unknown.
    pub high_watermark: i64,
    /// -1 while nothing is committed.
    pub committed: i64,
    /// Next offset to notify.
    pub position: i64,
    /// `high_watermark - committed`; `None` while either is unknown.
    pub committed_lag: Option<i64>,
    /// `high_watermark - position`; `None` while the watermark is unknown.
    pub processed_lag: Option<i64>,
}

/// The lag of every partition of the snapshot.
pub fn partition_lags(snapshot: &Snapshot, offsets: &OffsetsView) -> Vec<PartitionLag> {
    snapshot
        .assignments
        .iter()
        .map(|a| {
            // Fetched every second or so, the watermark can trail what was
            // notified since; the partition holds at least `next_offset`.
            let high = offsets
                .high_watermarks
                .get(&a.partition)
                .map(|h| (*h).max(a.next_offset));
            let committed = offsets.committed.get(&a.partition).copied();
            PartitionLag {
                partition: a.partition,
                high_watermark: high.unwrap_or(-1),
                committed: committed.unwrap_or(-1),
                position: a.next_offset,
                committed_lag: high.zip(committed).map(|(h, c)| (h - c).max(0)),
                processed_lag: high.map(|h| (h - a.next_offset).max(0)),
            }
        })
        .collect()
}

/// The whole exposition.
pub fn render(snapshot: &Snapshot, offsets: &OffsetsView, metrics: &Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ScrapeView {
        snapshot: snapshot.clone(),
        lags: partition_lags(snapshot, offsets)
            .into_iter()
            .map(|l| (l.partition, l))
            .collect(),
        invalid: metrics.invalid_by_reason(),
        auth_refused: metrics.auth_refused.load(Ordering::Relaxed),
    }));
    registry.register(
        "cyberday_master_batch_records",
        "Results per batch received from workers",
        metrics.batch_records.clone(),
    );
    registry.register(
        "cyberday_master_notify_latency_seconds",
        "From the record's Kafka timestamp (its creation) to the master emitting its notification",
        metrics.notify_latency.clone(),
    );
    common::metrics::encode(&registry)
}

/// The values of one scrape, written as families.
#[derive(Debug)]
struct ScrapeView {
    snapshot: Snapshot,
    lags: Vec<(i32, PartitionLag)>,
    invalid: BTreeMap<String, u64>,
    auth_refused: u64,
}

impl Collector for ScrapeView {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.snapshot.stats;
        let mut f = Families::new(encoder);
        f.counter(
            "cyberday_master_records",
            "Records accepted from workers under a current generation (every outcome; not duplicates).",
            s.records_processed,
        )?;
        f.counters(
            "cyberday_master_notifications",
            "Notifications emitted, by kind.",
            [
                ([("kind", "short")], s.notifications_short),
                ([("kind", "long")], s.notifications_long),
            ],
        )?;
        f.counter(
            "cyberday_master_no_purchase",
            "Valid records of shoppers who did not buy (counted, not notified).",
            s.no_purchase,
        )?;
        f.counters(
            "cyberday_master_invalid",
            "Invalid records sent to the dead-letter topic, by reason.",
            self.invalid
                .iter()
                .map(|(reason, n)| ([("reason", reason.as_str())], *n)),
        )?;
        f.counter(
            "cyberday_master_duplicates_suppressed",
            "Results for offsets already notified (re-delivered after a partition moved).",
            s.duplicates_suppressed,
        )?;
        f.counter(
            "cyberday_master_auth_refused",
            "Callers the Coordinator refused: no or a wrong client certificate or worker token.",
            self.auth_refused,
        )?;
        f.counter(
            "cyberday_master_stale_batches_rejected",
            "Result batches rejected because their generation was not current (zombie fencing).",
            s.stale_batches_rejected,
        )?;
        f.counter(
            "cyberday_master_rebalances",
            "Times workers or partitions changed and partitions moved.",
            s.rebalances,
        )?;
        let workers = &self.snapshot.workers;
        f.gauge(
            "cyberday_master_workers",
            "Workers connected now.",
            workers.len() as i64,
        )?;
        let by_worker = |w: &pb::WorkerInfo| [("worker", w.worker_id.clone())];
        f.counters(
            "cyberday_master_worker_records",
            "Records accepted from each connected worker during its current session.",
            workers.iter().map(|w| (by_worker(w), w.records_processed)),
        )?;
        f.gauges(
            "cyberday_master_worker_partitions",
            "Partitions each connected worker holds.",
            workers
                .iter()
                .map(|w| (by_worker(w), w.partitions.len() as i64)),
        )?;
        self.partitions(&mut f)
    }
}

impl ScrapeView {
    /// Per-partition families: owner, offsets and the two lags.
    fn partitions(&self, f: &mut Families<'_>) -> fmt::Result {
        let owners = self
            .snapshot
            .assignments
            .iter()
            .filter(|a| !a.owner.is_empty())
            .map(|a| {
                let state = match a.state() {
                    pb::AssignmentState::Revoking => "revoking",
                    _ => "assigned",
                };
                let labels = [
                    ("partition", a.partition.to_string()),
                    ("worker", a.owner.clone()),
                    ("state", state.to_owned()),
                ];
                (labels, 1)
            });
        f.gauges(
            "cyberday_master_partition_owner",
            "1 for the worker holding the partition (state assigned or revoking).",
            owners,
        )?;
        f.partition_gauges(
            &[
                PartitionGauge {
                    name: "cyberday_master_partition_high_watermark",
                    help: "The partition's high watermark (fetched every second or so).",
                    value: |l: &PartitionLag| (l.high_watermark >= 0).then_some(l.high_watermark),
                },
                PartitionGauge {
                    name: "cyberday_master_partition_committed_offset",
                    help: "Offset committed for the consumer group.",
                    value: |l: &PartitionLag| (l.committed >= 0).then_some(l.committed),
                },
                PartitionGauge {
                    name: "cyberday_master_partition_position",
                    help: "Next offset to notify: every record before it is notified.",
                    value: |l: &PartitionLag| Some(l.position),
                },
                PartitionGauge {
                    name: "cyberday_master_partition_committed_lag_records",
                    help: "High watermark minus committed offset: what a restart would redo.",
                    value: |l: &PartitionLag| l.committed_lag,
                },
                PartitionGauge {
                    name: "cyberday_master_partition_processed_lag_records",
                    help: "High watermark minus the master's position: records not yet notified.",
                    value: |l: &PartitionLag| l.processed_lag,
                },
            ],
            &self.lags,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::classify::Kind;

    use super::*;
    use crate::coordinator::{Invalid, Stats};

    fn snapshot() -> Snapshot {
        Snapshot {
            topic: "T".into(),
            workers: vec![pb::WorkerInfo {
                worker_id: "w1".into(),
                partitions: vec![0],
                records_processed: 7,
                ..Default::default()
            }],
            assignments: vec![
                pb::PartitionAssignment {
                    partition: 0,
                    owner: "w1".into(),
                    generation: 3,
                    state: pb::AssignmentState::Assigned as i32,
                    next_offset: 40,
                },
                pb::PartitionAssignment {
                    partition: 1,
                    state: pb::AssignmentState::Unassigned as i32,
                    next_offset: 5,
                    ..Default::default()
                },
            ],
            stats: Stats {
                records_processed: 10,
                notifications_short: 4,
                notifications_long: 2,
                no_purchase: 3,
                invalid: 1,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_exposition_has_the_counters_lags_and_histograms() {
        let m = Metrics::default();
        m.dead_lettered(&[DeadLetter {
            partition: 0,
            offset: 1,
            record: Box::new(Invalid {
                code: "bad_folio".into(),
                ..Default::default()
            }),
        }]);
        m.notified(
            &[Notification {
                kind: Kind::Short,
                purchase: Default::default(),
                partition: 0,
                offset: 2,
                worker: Arc::from("w1"),
                timestamp_ms: 1_000,
            }],
            1_030,
        );
        m.batch_records.observe(12.0);
        let offsets = OffsetsView {
            committed: [(0, 30)].into(),
            high_watermarks: [(0, 50), (1, 5)].into(),
        };
        let text = render(&snapshot(), &offsets, &m);
        for line in [
            "cyberday_master_records_total 10",
            "cyberday_master_notifications_total{kind=\"short\"} 4",
            "cyberday_master_notifications_total{kind=\"long\"} 2",
            "cyberday_master_no_purchase_total 3",
            "cyberday_master_invalid_total{reason=\"bad_folio\"} 1",
            "cyberday_master_workers 1",
            "cyberday_master_partition_owner{partition=\"0\",worker=\"w1\",state=\"assigned\"} 1",
            "cyberday_master_partition_committed_lag_records{partition=\"0\"} 20",
            "cyberday_master_partition_processed_lag_records{partition=\"0\"} 10",
            "cyberday_master_partition_processed_lag_records{partition=\"1\"} 0",
            "cyberday_master_notify_latency_seconds_bucket{le=\"0.05\"} 1",
            "cyberday_master_notify_latency_seconds_count 1",
            "cyberday_master_batch_records_bucket{le=\"10\"} 0",
            "cyberday_master_batch_records_bucket{le=\"25\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // Partition 1 has never been committed: no committed lag to show.
        assert!(!text.contains("committed_lag_records{partition=\"1\"}"));
    }

    #[test]
    fn a_watermark_fetched_before_the_last_notifications_is_not_shown_behind_them() {
        // Partition 0 is notified up to 40; its watermark was read at 38.
        let offsets = OffsetsView {
            committed: [(0, 40)].into(),
            high_watermarks: [(0, 38)].into(),
        };
        let lag = &partition_lags(&snapshot(), &offsets)[0];
        assert_eq!(
            (lag.high_watermark, lag.processed_lag, lag.committed_lag),
            (40, Some(0), Some(0))
        );
    }

    #[test]
    fn the_live_window_gives_exact_percentiles_and_starts_again() {
        let m = Metrics::default();
        let at = |timestamp_ms| Notification {
            kind: Kind::Short,
            purchase: Default::default(),
            partition: 0,
            offset: 0,
            worker: Arc::from("w1"),
            timestamp_ms,
        };
        // 1..=100 ms late, and one without a timestamp (not measured).
        let mut batch: Vec<Notification> = (1..=100).map(|late| at(10_000 - late)).collect();
        batch.push(at(0));
        m.notified(&batch, 10_000);
        assert_eq!(
            m.take_latency_window(),
            Some(LatencyPercentiles {
                p50_ms: 50,
                p99_ms: 99,
                count: 100
            })
        );
        assert_eq!(m.take_latency_window(), None, "a new window is empty");
        m.notified(&[at(10_000 - 1_234)], 10_000);
        let p = m.take_latency_window().unwrap();
        assert_eq!((p.p50_ms, p.p99_ms), (1_234, 1_234));
    }

    #[test]
    fn reasons_beyond_the_bound_count_as_other() {
        let m = Metrics::default();
        let letters: Vec<DeadLetter> = (0..MAX_REASONS + 3)
            .map(|i| DeadLetter {
                partition: 0,
                offset: i as i64,
                record: Box::new(Invalid {
                    code: format!("r{i}"),
                    ..Default::default()
                }),
            })
            .collect();
        m.dead_lettered(&letters);
        let by_reason = m.invalid_by_reason();
        assert_eq!(by_reason.len(), MAX_REASONS + 1);
        assert_eq!(by_reason["other"], 3);
    }
}
