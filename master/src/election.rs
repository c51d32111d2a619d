//! Which replica leads (`--election`): Kafka's own group protocol on a
//! one-partition election topic, as Confluent's Schema Registry elects its
//! primary. Every replica joins the group `<election topic>`; the member the
//! group assigns partition 0 leads, the others stand by. A leader that
//! vanishes loses the partition when its group session times out
//! (`--election-session-timeout`); one that stops cleanly leaves the group,
//! and a standby leads within a rebalance.
//!
//! The group decides who *should* lead; safety does not rest on it. A new
//! leader's `init_transactions` under the shared transactional id fences the
//! old one, whose next transactional call fails, so two replicas that both
//! believe they lead (a partition between the old leader and the group
//! coordinator) can never both commit.
//!
//! A leader also writes its address to the election topic; every replica
//! tails the topic's last record, which is how a standby names the leader
//! to a worker it refuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use common::cli::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;

/// This replica's standing in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Whether the group gives this replica the election partition.
    pub leading: bool,
    /// How many times it was given the partition: a term's number.
    pub term: u64,
}

/// The record a leader writes to the election topic.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The leader's `--advertise` address.
    pub leader: String,
    /// When it was elected (ms since the epoch).
    pub since_ms: i64,
}

/// A running election: its standing and the leader last announced.
pub struct Election {
    standing: watch::Receiver<Standing>,
    leader: watch::Receiver<Option<Announcement>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the group consumer is polled (its rebalance callbacks run in
/// the poll) and the election topic tailed.
const POLL: Duration = Duration::from_millis(20);

impl Election {
    /// Creates the election topic when absent and joins its group.
    pub async fn join(config: &Config) -> anyhow::Result<Self> {
        let topic = config.election_topic();
        common::kafka::ensure_topic(&config.kafka, &topic, 1)
            .await
            .with_context(|| format!("creating the election topic {topic}"))?;
        let (standing_tx, standing) = watch::channel(Standing::default());
        let (leader_tx, leader) = watch::channel(None);
        let stop = Arc::new(AtomicBool::new(false));
        let group = Group::new(
            &config.kafka,
            &topic,
            config.election_session_timeout,
            standing_tx,
        )?;
        let tail = Tail::new(&config.kafka, &topic)?;
        let announcer = Announcer::new(&config.kafka, &topic, config.advertise())?;
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("election".into())
            .spawn(move || run(group, tail, announcer, leader_tx, stopping))
            .context("starting the election thread")?;
        info!(
            topic,
            session_timeout = ?config.election_session_timeout,
            replica = config.advertise(),
            "joined the election"
        );
        Ok(Self {
            standing,
            leader,
            stop,
            thread: Some(thread),
        })
    }

    /// This replica's standing, as it changes.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }

    /// The leader last announced on the election topic (possibly one that
    /// has just died: a worker sent there tries the next address).
    pub fn leader(&self) -> watch::Receiver<Option<Announcement>> {
        self.leader.clone()
    }

    /// Leaves the group (a standby then leads within one rebalance) and
    /// waits for the election thread. Blocking: call it off the async workers.
    pub fn leave(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The election thread: polls the group and the tail until `stop`, and
/// announces this replica each time it is elected.
fn run(
    group: Group,
    tail: Tail,
    announcer: Announcer,
    leader_tx: watch::Sender<Option<Announcement>>,
    stop: Arc<AtomicBool>,
) {
    let mut announced_term = 0;
    while !stop.load(Ordering::SeqCst) {
        // Messages of the election topic reach the group consumer only
        // while it leads; the tail reads them in every role.
        let _ = group.consumer.poll(POLL);
        let standing = *group.consumer.context().standing.borrow();
        if standing.leading && standing.term != announced_term {
            announcer.announce();
            announced_term = standing.term;
        }
        while let Some(a) = tail.next() {
            leader_tx.send_replace(Some(a));
        }
    }
    // Leaving the group now: a standby is assigned the partition in the
    // rebalance this triggers, without waiting for the session timeout.
    group.consumer.unsubscribe();
    drop(group);
    announcer.flush();
}

/// The group member: its rebalances set the standing.
struct Group {
    consumer: BaseConsumer<GroupContext>,
}

struct GroupContext {
    topic: String,
    standing: watch::Sender<Standing>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let leads = tpl
                    .elements()
                    .iter()
                    .any(|e| e.topic() == self.topic && e.partition() == 0);
                // Incremental (cooperative-sticky): an assignment names
                // only what is added; the partition leaves by a revocation.
                if leads {
                    self.standing.send_modify(|s| {
                        if !s.leading {
                            s.term += 1;
                            info!(term = s.term, "elected: this replica leads");
                        }
                        s.leading = true;
                    });
                }
            }
            Rebalance::Revoke(tpl) => {
                let loses = tpl
                    .elements()
                    .iter()
                    .any(|e| e.topic() == self.topic && e.partition() == 0);
                if loses {
                    self.standing.send_modify(|s| {
                        if s.leading {
                            warn!("the election partition was revoked: this replica stands by");
                        }
                        s.leading = false;
                    });
                }
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "election rebalance error: this replica stands by");
                self.standing.send_modify(|s| s.leading = false);
            }
        }
    }
}

impl Group {
    fn new(
        kafka: &KafkaArgs,
        topic: &str,
        session_timeout: Duration,
        standing: watch::Sender<Standing>,
    ) -> anyhow::Result<Self> {
        let session_ms = session_timeout.as_millis().max(1);
        let heartbeat_ms = (session_ms / 10).max(10);
        let mut c = common::kafka::admin_config(kafka);
        c.set("group.id", topic)
            // The classic protocol: the session timeout is the member's
            // own (KIP-848's is the broker's, 45 s by default).
            .set("group.protocol", "classic")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", heartbeat_ms.to_string())
            // Sticky: a replica that joins does not take the lead from
            // the one holding it.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest");
        let consumer: BaseConsumer<GroupContext> = c
            .create_with_context(GroupContext {
                topic: topic.to_owned(),
                standing,
            })
            .context("creating the election's group member")?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("joining the election group {topic}"))?;
        Ok(Self { consumer })
    }
}

/// A reader of the election topic's last records, in every role.
struct Tail {
    consumer: BaseConsumer,
}

impl Tail {
    fn new(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Self> {
        let mut c = common::kafka::admin_config(kafka);
        c.set("group.id", format!("{topic}.tail"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100");
        let consumer: BaseConsumer = c.create().context("creating the election topic's reader")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::OffsetTail(1))
            .context("reading the election topic")?;
        consumer
            .assign(&tpl)
            .context("reading the election topic")?;
        Ok(Self { consumer })
    }

    /// The next announcement read, if one is ready.
    fn next(&self) -> Option<Announcement> {
        loop {
            match self.consumer.poll(Duration::ZERO)? {
                Ok(m) => {
                    if let Some(a) = m.payload().and_then(|p| serde_json::from_slice(p).ok()) {
                        return Some(a);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reading the election topic");
                    return None;
                }
            }
        }
    }
}

/// Writes this replica's address when it is elected.
struct Announcer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    advertise: String,
}

impl Announcer {
    fn new(kafka: &KafkaArgs, topic: &str, advertise: String) -> anyhow::Result<Self> {
        let mut c = common::kafka::producer_config(kafka);
        c.set("linger.ms", "0");
        let producer = c.create().context("creating the election's announcer")?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            advertise,
        })
    }

    fn announce(&self) {
        let since_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let value = serde_json::to_vec(&Announcement {
            leader: self.advertise.clone(),
            since_ms,
        })
        .expect("plain struct serializes");
        if let Err((e, _)) = self
            .producer
            .send(BaseRecord::to(&self.topic).key("leader").payload(&value))
        {
            warn!(error = %e, "announcing this replica as the leader");
        }
    }

    fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(2));
    }
}
