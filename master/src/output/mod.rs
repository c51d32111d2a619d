//! The durable output. One transactional Kafka producer, on its own thread,
//! writes every notification to the notifications topic (key = folio, value
//! = the JSON object of `--notify-format json`) and every invalid record to
//! `<topic>.DLQ`; at each checkpoint it adds the group's next offsets to the
//! same transaction and commits it, then begins the next. Offsets and output
//! move together: a read_committed reader sees each record once, whatever
//! crashes, and a restarted master resumes right after the last commit.
//!
//! Failures, as librdkafka classifies them:
//! - retriable (a timeout, a coordinator moving): the same call again;
//! - abortable (a record the brokers refused, a transaction timed out): the
//!   transaction is aborted and a [`Rewind`] published. The coordinator takes
//!   every partition back to the last committed offsets under new
//!   generations ([`crate::coordinator::Coordinator::rewind`]); whatever it
//!   sent before it saw the rewind carries the old epoch and is dropped here;
//! - stuck: a retriable failure that lasts longer than the transaction
//!   timeout (the brokers have aborted the transaction by then) is handled
//!   as abortable; a call to add the offsets or to commit that has not
//!   returned by then (librdkafka can block past the call's own timeout
//!   when the group coordinator's broker goes away) as fatal;
//! - fatal, not fenced (librdkafka gives the producer up, e.g. an
//!   idempotence sequence lost while a broker was down): the producer is
//!   replaced in-process, as a restart of the master would: a new client
//!   under the same `transactional.id` fences the old one and settles its
//!   last transaction, the group's committed offsets are read back from
//!   Kafka, and a [`Rewind`] to them is published;
//! - fenced (a newer master with the same `transactional.id`): the master
//!   stops with an error.
//!
//! Every call here blocks: this thread is the producer's only caller (the
//! client's own polling thread serves its delivery reports, which aborting a
//! transaction waits for).
//!
//! This file is the transaction loop ([`Output::run`]: records into the open
//! transaction, checkpoints committed, aborts and rewinds). Beside it:
//! `failure` (how a failed call is classified and retried, and the [`Error`]
//! that stops the master), `watchdog` (the limit on a call librdkafka leaves
//! blocked), `replace` (the producer replaced in-process), `dead_letter` (the
//! dead letters' headers and cut-down form, and the delivery callback that
//! remembers the refused ones), `topics` (the topics written, created when
//! absent) and `fault` (fault injection for the tests).

mod dead_letter;
mod failure;
mod fault;
mod replace;
mod topics;
mod watchdog;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::KafkaArgs;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::coordinator::DeadLetter;
use crate::messages::{OffsetsView, OutputMsg, ReadCommitted, Rewind};
use crate::notifier::{Notice, Notices};
use dead_letter::Context;
use failure::{failure, Failure};
use watchdog::bounded;

pub use dead_letter::{
    HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, HEADER_TRUNCATED, TRUNCATED_VALUE_BYTES,
};
pub use failure::{Error, Result};
pub use fault::{FAULT_FATAL_AT_COMMIT, FAULT_STUCK_AT_COMMIT};
pub use topics::Topics;

/// Capacity of the queue into the output, in messages. The queue is also
/// bounded in bytes ([`QUEUE_BYTES`]); both are generous so that a slow
/// commit (the brokers busy) does not stall the coordinator, and with it
/// failover, at once.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most bytes of records waiting in the queue into the output (see
/// [`weight`]); the coordinator waits for room beyond that.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Longest one transactional call may block before it counts as a
/// (retriable) timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A commit slower than this is logged as a warning.
const SLOW_COMMIT: Duration = Duration::from_secs(1);
/// Attempts of `init_transactions` and `abort_transaction`.
const ATTEMPTS: u32 = 5;
/// The brokers abort a transaction open longer than this (the producer's
/// `transaction.timeout.ms`): retrying a call beyond it cannot commit.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a batch's output weighs against [`QUEUE_BYTES`]: about its bytes,
/// never more than the whole budget (so a huge one still goes, alone).
pub fn weight(notices: &[Notice], dead_letters: &[DeadLetter]) -> u32 {
    let notices: usize = notices
        .iter()
        .map(|n| n.json.len() + n.notification.purchase.folio.len() + 64)
        .sum();
    let letters: usize = dead_letters
        .iter()
        .map(|d| {
            let r = &d.record;
            r.key.as_ref().map_or(0, Vec::len)
                + r.value.as_ref().map_or(0, Vec::len)
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
                + r.detail.len()
                + 256
        })
        .sum();
    (notices + letters).clamp(1, QUEUE_BYTES) as u32
}

/// Where the output publishes what it did, and whether the master stops.
struct Links<'a> {
    rewinds: &'a watch::Sender<Rewind>,
    view: &'a watch::Sender<OffsetsView>,
    stopping: &'a CancellationToken,
}

/// The transactional writer.
pub struct Output {
    /// Shared only with a call still running past [`watchdog::STUCK_CALL`].
    producer: Arc<ThreadedProducer<Context>>,
    group: Arc<ConsumerGroupMetadata>,
    topics: Topics,
    id: String,
    /// To create a replacement producer.
    args: KafkaArgs,
    read_committed: ReadCommitted,
    /// Every partition a checkpoint has named.
    partitions: std::collections::BTreeSet<i32>,
    /// When the open transaction began.
    opened: std::time::Instant,
    /// Commits attempted, and the one before which to inject a fatal error.
    commits: u64,
    fault_at: Option<u64>,
    stuck_at: Option<u64>,
    /// The group's offsets as of the last commit (partitions never committed
    /// are absent).
    committed: BTreeMap<i32, i64>,
    epoch: u64,
    /// Records written in the open transaction.
    pending: usize,
    /// A rewind is published and nothing of its epoch has arrived yet.
    rewinding: bool,
}

impl Output {
    /// Creates the producer and initialises transactions under `id`, which
    /// aborts what an earlier instance with that id left open and fences
    /// it. Blocks; call before reading the group's committed offsets, which
    /// that abort settles.
    pub fn init(
        args: &KafkaArgs,
        id: &str,
        topics: Topics,
        group: ConsumerGroupMetadata,
        read_committed: ReadCommitted,
    ) -> Result<Self> {
        let producer = Arc::new(create(args, id, &topics.dlq, HashSet::new())?);
        let mut output = Self {
            producer,
            group: Arc::new(group),
            topics,
            id: id.to_owned(),
            args: args.clone(),
            read_committed,
            partitions: Default::default(),
            opened: std::time::Instant::now(),
            commits: 0,
            fault_at: fault::at(FAULT_FATAL_AT_COMMIT),
            stuck_at: fault::at(FAULT_STUCK_AT_COMMIT),
            committed: BTreeMap::new(),
            epoch: 0,
            pending: 0,
            rewinding: false,
        };
        if let Err(e) = output.init_transactions() {
            return Err(output.fatal(&e));
        }
        info!(
            transactional_id = id,
            "transactions initialised; any earlier instance is fenced"
        );
        output
            .producer
            .begin_transaction()
            .map_err(|e| output.fatal(&e))?;
        output.opened = std::time::Instant::now();
        Ok(output)
    }

    fn init_transactions(&self) -> KafkaResult<()> {
        let mut attempt = 1;
        loop {
            match self.producer.init_transactions(CALL_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) if failure(&e) == Failure::Retry && attempt < ATTEMPTS => {
                    warn!(error = %e, attempt, "initialising transactions; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves `queue` until it closes (after the coordinator's final
    /// checkpoint). `committed` is what the group had at start; commits are
    /// published on `view`, aborts on `rewinds`. Once `stopping` is
    /// cancelled, retriable failures are retried only a few times.
    pub fn run(
        mut self,
        committed: BTreeMap<i32, i64>,
        mut queue: mpsc::Receiver<OutputMsg>,
        rewinds: watch::Sender<Rewind>,
        view: watch::Sender<OffsetsView>,
        stopping: CancellationToken,
    ) -> Result<()> {
        self.partitions.extend(committed.keys());
        self.committed = committed;
        let to = Links {
            rewinds: &rewinds,
            view: &view,
            stopping: &stopping,
        };
        // Records that came after the last checkpoint of a coalesced run:
        // they belong to the next transaction.
        let mut held: VecDeque<OutputMsg> = VecDeque::new();
        loop {
            let msg = match held.pop_front() {
                Some(msg) => msg,
                None => match queue.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                },
            };
            if !self.current(&msg) {
                continue;
            }
            match msg {
                OutputMsg::Records {
                    notices,
                    dead_letters,
                    room,
                    ..
                } => {
                    self.write(&notices, &dead_letters, &to)?;
                    // In the client's buffer now, bounded by its own limits.
                    drop(room);
                }
                OutputMsg::Checkpoint { mut positions, .. } => {
                    // A commit takes a while; the checkpoints queued behind
                    // this one share its transaction instead of each taking
                    // their own: the records up to the last of them are
                    // written, those after it wait for the next.
                    let epoch = self.epoch;
                    while self.epoch == epoch {
                        let Ok(next) = queue.try_recv() else { break };
                        if !self.current(&next) {
                            continue;
                        }
                        match next {
                            OutputMsg::Checkpoint { positions: p, .. } => {
                                for msg in held.drain(..) {
                                    if let OutputMsg::Records {
                                        notices,
                                        dead_letters,
                                        ..
                                    } = msg
                                    {
                                        self.write(&notices, &dead_letters, &to)?;
                                    }
                                }
                                positions = p;
                            }
                            records => held.push_back(records),
                        }
                    }
                    // A write that failed aborted the transaction: nothing
                    // of this epoch is committed.
                    if self.epoch == epoch {
                        self.commit(positions, &to)?;
                    }
                    if self.epoch != epoch {
                        // Aborted: what was held belongs to the old epoch.
                        held.clear();
                    }
                }
            }
        }
        if self.rewinding {
            return Err(Error::NotCommitted(
                "it was aborted while the master was stopping".into(),
            ));
        }
        if self.pending > 0 {
            // Records after the final checkpoint: never committed.
            let _ = self.producer.abort_transaction(CALL_TIMEOUT);
            return Err(Error::NotCommitted(format!(
                "{} records came after the final checkpoint",
                self.pending
            )));
        }
        info!(committed = ?self.committed, "output stopped");
        Ok(())
    }

    /// Whether `msg` is of the current epoch; older ones were sent before
    /// the coordinator saw the rewind, and are replayed.
    fn current(&mut self, msg: &OutputMsg) -> bool {
        if msg.epoch() != self.epoch {
            debug!(
                epoch = msg.epoch(),
                current = self.epoch,
                "output of an aborted epoch dropped"
            );
            return false;
        }
        self.rewinding = false;
        true
    }

    /// Writes one batch's notifications and dead letters into the open
    /// transaction; a record that cannot be queued aborts it.
    fn write(
        &mut self,
        notices: &Notices,
        dead_letters: &[DeadLetter],
        to: &Links<'_>,
    ) -> Result<()> {
        for notice in notices.iter() {
            let record = BaseRecord::<[u8], [u8]>::to(&self.topics.notifications)
                .key(notice.notification.purchase.folio.as_bytes())
                .payload(notice.json.as_bytes());
            if let Err(e) = send(&self.producer, record) {
                return self.abort(&e, to);
            }
            self.pending += 1;
        }
        for letter in dead_letters {
            if let Err(e) = self.send_dead_letter(letter) {
                return self.abort(&e, to);
            }
            self.pending += 1;
        }
        Ok(())
    }

    /// Commits the open transaction with `positions` as the group's offsets,
    /// then begins the next. Nothing to do when nothing changed.
    fn commit(&mut self, positions: BTreeMap<i32, i64>, to: &Links<'_>) -> Result<()> {
        self.partitions.extend(positions.keys());
        let changed: BTreeMap<i32, i64> = positions
            .into_iter()
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .collect();
        if changed.is_empty() && self.pending == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.commits += 1;
        if self.fault_at == Some(self.commits) {
            self.inject_fatal();
        }
        if !changed.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for (&p, &o) in &changed {
                offsets
                    .add_partition_offset(&self.topics.input, p, Offset::Offset(o))
                    .expect("a plain offset is valid");
            }
            let what = "adding the offsets to the transaction";
            let stuck = self.stuck_at == Some(self.commits);
            if stuck {
                warn!("{FAULT_STUCK_AT_COMMIT}: adding the offsets blocks");
            }
            let sent = self.retrying(what, to.stopping, |o| {
                let (producer, group, offsets) =
                    (o.producer.clone(), o.group.clone(), offsets.clone());
                bounded(what, move || {
                    if stuck {
                        fault::block();
                    }
                    producer.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
                })
            });
            if let Err((kind, e)) = sent {
                return self.fail(kind, &e, to);
            }
        }
        let offsets_took = started.elapsed();
        let what = "committing the transaction";
        let committed = self.retrying(what, to.stopping, |o| {
            let producer = o.producer.clone();
            bounded(what, move || producer.commit_transaction(CALL_TIMEOUT))
        });
        if let Err((kind, e)) = committed {
            return self.fail(kind, &e, to);
        }
        let took = started.elapsed();
        if took > SLOW_COMMIT {
            warn!(
                records = self.pending,
                ?took,
                ?offsets_took,
                "slow transaction commit"
            );
        } else {
            debug!(records = self.pending, ?took, ?offsets_took, offsets = ?changed, "transaction committed");
        }
        self.pending = 0;
        self.committed.extend(changed.iter().map(|(p, o)| (*p, *o)));
        // Refused dead letters before the committed offsets never come again.
        let committed = &self.committed;
        self.producer
            .context()
            .refused
            .lock()
            .expect("refused set poisoned")
            .retain(|(p, o)| committed.get(p).is_none_or(|c| o >= c));
        to.view.send_modify(|v| v.committed.extend(changed));
        self.begin(to)
    }

    /// Aborts the open transaction, publishes a rewind to the last committed
    /// offsets and begins the next transaction. A producer that cannot
    /// abort is replaced.
    fn abort(&mut self, cause: &KafkaError, to: &Links<'_>) -> Result<()> {
        warn!(
            error = %cause,
            records = self.pending,
            epoch = self.epoch,
            "aborting the transaction; every partition goes back to its last committed offset"
        );
        let mut attempt = 1;
        loop {
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) if failure(&e) == Failure::Retry && attempt < ATTEMPTS => {
                    warn!(error = %e, attempt, "aborting the transaction; retrying");
                    attempt += 1;
                }
                Err(e) => return self.replace(&e, to),
            }
        }
        self.publish_rewind(to.rewinds);
        self.begin(to)
    }

    /// From the next epoch on, every partition starts over from the last
    /// committed offsets.
    fn publish_rewind(&mut self, rewinds: &watch::Sender<Rewind>) {
        self.epoch += 1;
        self.pending = 0;
        self.rewinding = true;
        rewinds.send_replace(Rewind {
            epoch: self.epoch,
            committed: self.committed.clone(),
        });
    }

    fn begin(&mut self, to: &Links<'_>) -> Result<()> {
        match self.producer.begin_transaction() {
            Ok(()) => {
                self.opened = std::time::Instant::now();
                Ok(())
            }
            Err(e) => self.replace(&e, to),
        }
    }
}

/// A transactional producer under `id`, not yet initialised.
fn create(
    args: &KafkaArgs,
    id: &str,
    dlq: &str,
    refused: HashSet<(i32, i64)>,
) -> Result<ThreadedProducer<Context>> {
    let context = Context {
        dlq: dlq.to_owned(),
        refused: Mutex::new(refused),
    };
    common::kafka::transactional_producer_config(args, id)
        .create_with_context(context)
        .map_err(Error::Create)
}

/// Queues one record, waiting while the client's queue is full.
fn send(
    producer: &ThreadedProducer<Context>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> KafkaResult<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
