//! The consumer group's offsets and the topic's watermarks, through one
//! librdkafka client that never subscribes and never reads a record: it
//! reads committed offsets at start, lends its group metadata to the
//! transactional producer (which commits the offsets, see
//! [`crate::output`]), and fetches watermarks (for lag) and the partition
//! count (for new partitions).
//!
//! librdkafka calls block, so each runs on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::cli::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::assignment::Leaders;
use crate::messages::{Command, OffsetsView, ReadCommitted};

/// Where a partition starts: the group's committed offset if there is one,
/// else the partition's earliest offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub partition: i32,
    pub committed: Option<i64>,
    pub position: i64,
}

/// The group's offsets client for one topic.
pub struct Offsets {
    consumer: Arc<BaseConsumer>,
    topic: String,
    timeout: Duration,
}

impl Offsets {
    /// A client of consumer group `group`; connects lazily.
    pub fn new(args: &KafkaArgs, group: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = common::kafka::committer_config(args, group)
            .create()
            .map_err(common::kafka::Error::Config)
            .with_context(|| format!("creating the offsets client of group {group}"))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: args.topic.clone(),
            timeout: args.connect_timeout,
        })
    }

    /// The group's metadata for `send_offsets_to_transaction`. This client
    /// never joins the group, so it carries the group id alone, which is
    /// all a transactional offset commit of a non-subscribing group needs.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer, &str, Duration) -> T + Send + 'static,
    ) -> T {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || f(&consumer, &topic, timeout))
            .await
            .expect("Kafka client call panicked")
    }

    /// A blocking reader of the group's committed offsets, for the output
    /// thread (which reads them back after replacing its producer).
    pub fn committed_reader(&self) -> ReadCommitted {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let timeout = self.timeout;
        Box::new(move |partitions: &[i32]| {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer.committed_offsets(tpl, timeout)?;
            Ok(committed
                .elements_for_topic(&topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                    _ => None,
                })
                .collect())
        })
    }

    /// Partition count of the topic and the leader of each partition that
    /// has one; `None` if the topic does not exist.
    pub async fn layout(&self) -> KafkaResult<Option<(usize, Leaders)>> {
        self.blocking(|c, topic, timeout| {
            let md = c.fetch_metadata(Some(topic), timeout)?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| {
                    let leaders = t
                        .partitions()
                        .iter()
                        .filter(|p| p.leader() >= 0)
                        .map(|p| (p.id(), p.leader()))
                        .collect();
                    (t.partitions().len(), leaders)
                }))
        })
        .await
    }

    /// Start positions of `partitions`: committed offset, else earliest.
    pub async fn starts(&self, partitions: Vec<i32>) -> KafkaResult<Vec<Start>> {
        self.blocking(move |c, topic, timeout| {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition(topic, p);
            }
            let committed = c.committed_offsets(tpl, timeout)?;
            partitions
                .iter()
                .map(|&p| {
                    let committed =
                        committed
                            .find_partition(topic, p)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) if o >= 0 => Some(o),
                                _ => None,
                            });
                    let position = match committed {
                        Some(o) => o,
                        None => c.fetch_watermarks(topic, p, timeout)?.0,
                    };
                    Ok(Start {
                        partition: p,
                        committed,
                        position,
                    })
                })
                .collect()
        })
        .await
    }

    /// High watermarks of `partitions`; partitions that fail are left out.
    pub async fn high_watermarks(&self, partitions: Vec<i32>) -> BTreeMap<i32, i64> {
        self.blocking(move |c, topic, timeout| {
            // Serve the client's queued events (errors, logs); it has no records.
            let _ = c.poll(Duration::ZERO);
            // Lag is informative: skip a partition rather than wait long.
            let timeout = timeout.min(Duration::from_secs(1));
            partitions
                .into_iter()
                .filter_map(|p| match c.fetch_watermarks(topic, p, timeout) {
                    Ok((_, high)) => Some((p, high)),
                    Err(e) => {
                        debug!(partition = p, error = %e, "high watermark unavailable");
                        None
                    }
                })
                .collect()
        })
        .await
    }
}

/// Refreshes the high watermarks of the topic's `partitions` (a count)
/// every `interval`, for GetStats, apart from the commits so a slow broker
/// never delays a commit.
pub async fn watch_watermarks(
    offsets: Arc<Offsets>,
    partitions: watch::Receiver<usize>,
    view: watch::Sender<OffsetsView>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let partitions: Vec<i32> = (0..*partitions.borrow() as i32).collect();
        if partitions.is_empty() {
            continue;
        }
        let highs = tokio::select! {
            _ = shutdown.cancelled() => return,
            highs = offsets.high_watermarks(partitions) => highs,
        };
        view.send_modify(|v| v.high_watermarks.extend(highs));
    }
}

/// Re-reads the topic's partition count and leaders every `interval`; new
/// partitions go to the coordinator at their start positions, leaders that
/// differ from the last known (`leaders`) as a preference for its next
/// rebalance.
pub async fn watch_partitions(
    offsets: Arc<Offsets>,
    known_tx: watch::Sender<usize>,
    commands: mpsc::Sender<Command>,
    view: watch::Sender<OffsetsView>,
    mut leaders: Leaders,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut known = *known_tx.borrow();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let layout = tokio::select! {
            _ = shutdown.cancelled() => return,
            layout = offsets.layout() => layout,
        };
        let count = match layout {
            Ok(Some((n, now))) => {
                if now != leaders {
                    debug!(topic = %offsets.topic, leaders = ?now, "partition leaders changed");
                    if commands.send(Command::Leaders(now.clone())).await.is_err() {
                        return;
                    }
                    leaders = now;
                }
                n
            }
            Ok(None) => {
                warn!(topic = %offsets.topic, "input topic not found in metadata");
                continue;
            }
            Err(e) => {
                warn!(topic = %offsets.topic, error = %e, "could not re-read the partition count");
                continue;
            }
        };
        if count <= known {
            if count < known {
                warn!(topic = %offsets.topic, count, known, "topic reports fewer partitions than before; keeping them");
            }
            continue;
        }
        let new: Vec<i32> = (known as i32..count as i32).collect();
        let starts = tokio::select! {
            _ = shutdown.cancelled() => return,
            starts = offsets.starts(new) => starts,
        };
        let starts = match starts {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "could not read start offsets of new partitions; retrying");
                continue;
            }
        };
        info!(topic = %offsets.topic, from = known, to = count, "partitions added");
        view.send_modify(|v| {
            v.committed.extend(
                starts
                    .iter()
                    .filter_map(|s| s.committed.map(|c| (s.partition, c))),
            )
        });
        let positions = starts.iter().map(|s| (s.partition, s.position)).collect();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = commands.send(Command::AddPartitions(positions)) => {
                if sent.is_err() {
                    return;
                }
            }
        }
        known = count;
        known_tx.send_replace(count);
    }
}
