//! The master's HTTP side (`--metrics-listen`): Prometheus `/metrics`, the
//! live page `/` (plain HTML, CSS and JS, embedded), and its data at
//! `/api/status`: workers and their partitions, per-partition lag, and the
//! last [`HISTORY`] seconds of throughput, latency and lag, from a ring
//! buffer a sampler fills once a second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::actor;
use crate::coordinator::{now_ms, Snapshot, Stats};
use crate::messages::{Command, OffsetsView};
use crate::metrics::{self, LatencyPercentiles, Metrics};

/// Seconds of per-second samples kept (and shown).
pub const HISTORY: usize = 300;

/// Longest a scrape waits for the coordinator's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

const PAGE: &str = include_str!("live.html");

/// One second of the master's life, as the page charts it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    /// Records accepted per second (every outcome).
    pub records_per_s: f64,
    pub notified_per_s: f64,
    pub invalid_per_s: f64,
    /// Produce-to-notify latency percentiles over the second, in ms, from
    /// every notification in it (exact at the timestamps' 1 ms resolution);
    /// absent with no notification.
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    /// Sums over the partitions (see [`metrics::PartitionLag`]).
    pub committed_lag: i64,
    pub processed_lag: i64,
    pub workers: usize,
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct Live {
    commands: mpsc::Sender<Command>,
    offsets: watch::Receiver<OffsetsView>,
    metrics: Arc<Metrics>,
    history: Arc<Mutex<VecDeque<Sample>>>,
    topic: String,
    group: String,
}

impl Live {
    pub fn new(
        commands: mpsc::Sender<Command>,
        offsets: watch::Receiver<OffsetsView>,
        metrics: Arc<Metrics>,
        topic: String,
        group: String,
    ) -> Self {
        Self {
            commands,
            offsets,
            metrics,
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))),
            topic,
            group,
        }
    }

    /// The routes: `/`, `/api/status`, `/metrics`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/status", get(status))
            .route("/metrics", get(prometheus))
            .with_state(self)
    }

    async fn snapshot(&self) -> Option<Snapshot> {
        tokio::time::timeout(SNAPSHOT_TIMEOUT, actor::snapshot(&self.commands))
            .await
            .ok()?
            .ok()
    }

    fn samples(&self) -> Vec<Sample> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(sample);
    }

    /// Takes one sample a second until `shutdown`.
    pub async fn sample(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<(Instant, Stats)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(snapshot) = self.snapshot().await else {
                continue;
            };
            let now = Instant::now();
            // Taken every tick, so the first sample's window starts at the
            // first tick too.
            let latency = self.metrics.take_latency_window();
            if let Some((then, stats)) = &last {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                let sample = sample_of(&snapshot, &self.offsets.borrow(), stats, secs, latency);
                self.push(sample);
            }
            last = Some((now, snapshot.stats));
        }
    }
}

/// One sample from the counters now and `secs` ago.
fn sample_of(
    snapshot: &Snapshot,
    offsets: &OffsetsView,
    before: &Stats,
    secs: f64,
    latency: Option<LatencyPercentiles>,
) -> Sample {
    let s = &snapshot.stats;
    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
    let lags = metrics::partition_lags(snapshot, offsets);
    Sample {
        t_ms: now_ms(),
        records_per_s: rate(s.records_processed, before.records_processed),
        notified_per_s: rate(
            s.notifications_short + s.notifications_long,
            before.notifications_short + before.notifications_long,
        ),
        invalid_per_s: rate(s.invalid, before.invalid),
        latency_p50_ms: latency.map(|l| l.p50_ms),
        latency_p99_ms: latency.map(|l| l.p99_ms),
        committed_lag: lags.iter().filter_map(|l| l.committed_lag).sum(),
        processed_lag: lags.iter().filter_map(|l| l.processed_lag).sum(),
        workers: snapshot.workers.len(),
    }
}

async fn page() -> Response {
    common::http::body("text/html; charset=utf-8", PAGE)
}

async fn prometheus(State(live): State<Live>) -> Response {
    match live.snapshot().await {
        Some(s) => {
            common::http::metrics(metrics::render(&s, &live.offsets.borrow(), &live.metrics))
        }
        None => common::http::unavailable("the coordinator did not answer\n"),
    }
}

async fn status(State(live): State<Live>) -> Response {
    let Some(s) = live.snapshot().await else {
        return common::http::unavailable("the coordinator did not answer\n");
    };
    let lags = metrics::partition_lags(&s, &live.offsets.borrow());
    let partitions: Vec<_> = s
        .assignments
        .iter()
        .zip(&lags)
        .map(|(a, l)| {
            json!({
                "partition": a.partition,
                "owner": a.owner,
                "generation": a.generation,
                "state": match a.state() {
                    common::pb::AssignmentState::Assigned => "assigned",
                    common::pb::AssignmentState::Revoking => "revoking",
                    _ => "unassigned",
                },
                "position": l.position,
                "committed": l.committed,
                "high_watermark": l.high_watermark,
                "committed_lag": l.committed_lag,
                "processed_lag": l.processed_lag,
            })
        })
        .collect();
    let workers: Vec<_> = s
        .workers
        .iter()
        .map(|w| {
            json!({
                "id": w.worker_id,
                "host": w.host,
                "peer": w.peer,
                "version": w.version,
                "partitions": w.partitions,
                "records": w.records_processed,
                "connected_at_ms": w.connected_at_ms,
                "last_heartbeat_ms": w.last_heartbeat_ms,
            })
        })
        .collect();
    let c = &s.stats;
    let body = json!({
        "topic": live.topic,
        "group": live.group,
        "now_ms": now_ms(),
        "totals": {
            "records": c.records_processed,
            "short": c.notifications_short,
            "long": c.notifications_long,
            "no_purchase": c.no_purchase,
            "invalid": c.invalid,
            "duplicates_suppressed": c.duplicates_suppressed,
            "stale_batches_rejected": c.stale_batches_rejected,
            "rebalances": c.rebalances,
        },
        "workers": workers,
        "partitions": partitions,
        "samples": live.samples(),
    });
    common::http::body("application/json", body.to_string())
}

#[cfg(test)]
mod tests {
    use common::pb;

    use super::*;

    #[test]
    fn a_sample_is_rates_over_the_interval_and_summed_lags() {
        let before = Stats {
            records_processed: 100,
            notifications_short: 10,
            ..Default::default()
        };
        let snapshot = Snapshot {
            topic: "T".into(),
            workers: vec![pb::WorkerInfo::default(); 2],
            assignments: (0..2)
                .map(|p| pb::PartitionAssignment {
                    partition: p,
                    next_offset: 90,
                    ..Default::default()
                })
                .collect(),
            stats: Stats {
                records_processed: 300,
                notifications_short: 50,
                notifications_long: 20,
                invalid: 4,
                ..Default::default()
            },
        };
        let offsets = OffsetsView {
            committed: [(0, 80), (1, 70)].into(),
            high_watermarks: [(0, 100), (1, 100)].into(),
        };
        let latency = LatencyPercentiles {
            p50_ms: 20,
            p99_ms: 31,
            count: 70,
        };
        let s = sample_of(&snapshot, &offsets, &before, 2.0, Some(latency));
        assert_eq!(s.records_per_s, 100.0);
        assert_eq!(s.notified_per_s, 30.0);
        assert_eq!(s.invalid_per_s, 2.0);
        assert_eq!((s.latency_p50_ms, s.latency_p99_ms), (Some(20), Some(31)));
        assert_eq!(s.committed_lag, 20 + 30);
        assert_eq!(s.processed_lag, 10 + 10);
        assert_eq!(s.workers, 2);
    }
}
