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

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use common::cli::KafkaArgs;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::coordinator::DeadLetter;
use crate::messages::{OffsetsView, OutputMsg, ReadCommitted, Rewind};
use crate::notifier::{Notice, Notices};

/// Capacity of the queue into the output, in messages. The queue is also
/// bounded in bytes ([`QUEUE_BYTES`]); both are generous so that a slow
/// commit (the brokers busy) does not stall the coordinator, and with it
/// failover, at once.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most bytes of records waiting in the queue into the output (see
/// [`weight`]); the coordinator waits for room beyond that.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Header with the reason's stable code, e.g. `bad_folio`.
pub const HEADER_REASON: &str = "cyberday.reason";
/// Header with the reason in words.
pub const HEADER_DETAIL: &str = "cyberday.detail";
/// Header with the topic the record was read from.
pub const HEADER_SOURCE_TOPIC: &str = "cyberday.source.topic";
/// Header with the source partition, as a decimal string.
pub const HEADER_SOURCE_PARTITION: &str = "cyberday.source.partition";
/// Header with the source offset, as a decimal string.
pub const HEADER_SOURCE_OFFSET: &str = "cyberday.source.offset";
/// Set only on a dead letter the brokers refused as too large and that was
/// written again cut down: the original value's length in bytes.
pub const HEADER_TRUNCATED: &str = "cyberday.truncated";

/// What a cut-down dead letter keeps: the first bytes of its key and value,
/// and its original headers while they fit.
pub const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;
const TRUNCATED_KEY_BYTES: usize = 1024;
const TRUNCATED_HEADER_BYTES: usize = 16 * 1024;

/// Longest one transactional call may block before it counts as a
/// (retriable) timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Retries of a retriable failure once the master is stopping (unbounded
/// before: the queue fills and the workers wait).
const STOPPING_ATTEMPTS: u32 = 5;
/// A commit slower than this is logged as a warning.
const SLOW_COMMIT: Duration = Duration::from_secs(1);
/// Attempts of `init_transactions` and `abort_transaction`.
const ATTEMPTS: u32 = 5;
/// The brokers abort a transaction open longer than this (the producer's
/// `transaction.timeout.ms`): retrying a call beyond it cannot commit.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the output waits for adding the offsets to a transaction or
/// committing it, though each call is given [`CALL_TIMEOUT`]: librdkafka
/// can block in them far longer when the group coordinator's broker goes
/// away (19 s seen here; in one CI run the call never returned; upstream
/// confluentinc/librdkafka#5456). By then the brokers have aborted the
/// transaction, so the producer is replaced as after a fatal error.
const STUCK_CALL: Duration = TRANSACTION_TIMEOUT;
/// Longest wait between attempts to replace a failed producer.
const REPLACE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Fault injection for the tests: with `CYBERDAY_FAULT_FATAL_AT_COMMIT=N`,
/// librdkafka raises a fatal error in the producer just before its Nth
/// commit, as it does when it loses an idempotence sequence.
pub const FAULT_FATAL_AT_COMMIT: &str = "CYBERDAY_FAULT_FATAL_AT_COMMIT";

/// Fault injection for the tests: with `CYBERDAY_FAULT_STUCK_AT_COMMIT=N`,
/// adding the offsets to the Nth commit's transaction blocks, as librdkafka
/// can when the group coordinator's broker goes away.
pub const FAULT_STUCK_AT_COMMIT: &str = "CYBERDAY_FAULT_STUCK_AT_COMMIT";

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

/// Why the output stopped the master.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "fenced: another master started with transactional.id {id} and took over; this \
         instance stops without committing anything more ({detail})"
    )]
    Fenced { id: String, detail: String },
    #[error(
        "the transactional producer (transactional.id {id}) failed: {detail}; a restarted \
         master resumes from the last committed offsets"
    )]
    Fatal { id: String, detail: String },
    #[error(
        "the last transaction was not committed ({0}); a restarted master resumes from the \
         last committed offsets"
    )]
    NotCommitted(String),
    #[error("creating the transactional producer: {0}")]
    Create(#[source] KafkaError),
}

/// Result alias for the output.
pub type Result<T> = std::result::Result<T, Error>;

/// The topics the output reads from and writes to.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The input topic, whose offsets are committed.
    pub input: String,
    pub notifications: String,
    pub dlq: String,
}

/// How a failed call is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Retry,
    Abort,
    Fatal,
}

fn failure(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(rd) if rd.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(rd) if rd.txn_requires_abort() => Failure::Abort,
        KafkaError::Transaction(rd) if rd.is_retriable() => Failure::Retry,
        // The commit first flushes; only a timeout fails it, which
        // committing again (flushing again) retries.
        KafkaError::Flush(_) => Failure::Retry,
        // Anything else (a call in the wrong state) is a bug or worse:
        // stopping is the one safe answer.
        _ => Failure::Fatal,
    }
}

/// The producer's callbacks: remembers the dead letters the brokers refused
/// as too large, so the replay after the abort writes them cut down.
struct Context {
    dlq: String,
    refused: Mutex<HashSet<(i32, i64)>>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // A failed record makes the transaction abortable: the commit
        // reports it and the coordinator rewinds. Records purged by an
        // abort fail too; they are expected.
        let Err((error, message)) = result else {
            return;
        };
        let too_large = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
        );
        if too_large && message.topic() == self.dlq {
            if let Some(source) = source_of(message) {
                warn!(
                    partition = source.0,
                    offset = source.1,
                    bytes = message.payload_len(),
                    "the brokers refused a dead letter as too large; it will be written cut down"
                );
                self.refused
                    .lock()
                    .expect("refused set poisoned")
                    .insert(source);
                return;
            }
        }
        debug!(topic = message.topic(), %error, "record not written");
    }
}

/// The source partition and offset in a dead letter's headers.
fn source_of<M: Message>(message: &M) -> Option<(i32, i64)> {
    let headers = message.headers()?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
    };
    let partition: i64 = find(HEADER_SOURCE_PARTITION)?;
    Some((i32::try_from(partition).ok()?, find(HEADER_SOURCE_OFFSET)?))
}

/// Where the output publishes what it did, and whether the master stops.
struct Links<'a> {
    rewinds: &'a watch::Sender<Rewind>,
    view: &'a watch::Sender<OffsetsView>,
    stopping: &'a CancellationToken,
}

/// The transactional writer.
pub struct Output {
    /// Shared only with a call still running past [`STUCK_CALL`].
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
            fault_at: std::env::var(FAULT_FATAL_AT_COMMIT)
                .ok()
                .and_then(|v| v.parse().ok()),
            stuck_at: std::env::var(FAULT_STUCK_AT_COMMIT)
                .ok()
                .and_then(|v| v.parse().ok()),
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

    fn send_dead_letter(&self, letter: &DeadLetter) -> KafkaResult<()> {
        let source = (letter.partition, letter.offset);
        let refused = self
            .producer
            .context()
            .refused
            .lock()
            .expect("refused set poisoned")
            .contains(&source);
        let whole = dead_letter(letter, &self.topics.input, refused);
        match send(&self.producer, whole.record(&self.topics.dlq)) {
            // Over even the client's limit: cut down at once.
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge))
                if !refused =>
            {
                warn!(
                    partition = letter.partition,
                    offset = letter.offset,
                    "dead letter over the client's size limit; written cut down"
                );
                let cut = dead_letter(letter, &self.topics.input, true);
                send(&self.producer, cut.record(&self.topics.dlq))
            }
            other => other,
        }
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
                        std::thread::sleep(STUCK_CALL * 20);
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

    /// Calls `call` until it succeeds or fails in a way retrying cannot fix.
    fn retrying(
        &self,
        what: &str,
        stopping: &CancellationToken,
        mut call: impl FnMut(&Self) -> KafkaResult<()>,
    ) -> std::result::Result<(), (Failure, KafkaError)> {
        let mut delay = RETRY_FIRST;
        let mut attempt = 1;
        let started = std::time::Instant::now();
        loop {
            let e = match call(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match failure(&e) {
                // The brokers have aborted the transaction by now.
                Failure::Retry if started.elapsed() >= TRANSACTION_TIMEOUT => {
                    warn!(error = %e, attempt, took = ?started.elapsed(), "{what} still failing after the transaction timeout; giving the transaction up");
                    return Err((Failure::Abort, e));
                }
                Failure::Retry if !stopping.is_cancelled() || attempt < STOPPING_ATTEMPTS => {
                    warn!(error = %e, attempt, retry_in = ?delay, "{what} failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(RETRY_MAX);
                    attempt += 1;
                }
                // Stopping and still failing: give the transaction up.
                Failure::Retry => return Err((Failure::Abort, e)),
                kind => return Err((kind, e)),
            }
        }
    }

    fn fail(&mut self, kind: Failure, e: &KafkaError, to: &Links<'_>) -> Result<()> {
        match kind {
            Failure::Fatal => self.replace(e, to),
            Failure::Abort | Failure::Retry => self.abort(e, to),
        }
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

    /// Replaces a producer librdkafka gave up on, as a restarted master
    /// would: a new client under the same `transactional.id` (which fences
    /// the old one and settles its last transaction, committed or aborted),
    /// then the committed offsets read back from Kafka and a rewind to
    /// them. Fenced by another master, or stopping: the master stops.
    fn replace(&mut self, cause: &KafkaError, to: &Links<'_>) -> Result<()> {
        let error = self.fatal(cause);
        // Fenced: by the brokers, when the transaction outlived its timeout
        // (they bump the producer's epoch as they abort it), or else by
        // another master that took the id over, which keeps it.
        let taken_over =
            matches!(error, Error::Fenced { .. }) && self.opened.elapsed() < TRANSACTION_TIMEOUT;
        if taken_over || to.stopping.is_cancelled() {
            error!(%error, "stopping the master");
            return Err(error);
        }
        warn!(
            %error,
            transactional_id = %self.id,
            "replacing the transactional producer; the partitions start over from the offsets committed in Kafka"
        );

        let refused = std::mem::take(
            &mut *self
                .producer
                .context()
                .refused
                .lock()
                .expect("refused set poisoned"),
        );
        let mut delay = RETRY_FIRST;
        let mut attempt = 1;
        loop {
            if to.stopping.is_cancelled() {
                error!(%error, "stopping the master");
                return Err(error);
            }
            match self.reinit(refused.clone()) {
                Ok(committed) => {
                    info!(attempt, committed = ?committed, "transactional producer replaced");
                    self.committed = committed;
                    to.view
                        .send_modify(|v| v.committed.clone_from(&self.committed));
                    self.publish_rewind(to.rewinds);
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Fenced { .. } = e {
                        error!(error = %e, "stopping the master");
                        return Err(e);
                    }
                    warn!(error = %e, attempt, retry_in = ?delay, "replacing the transactional producer failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(REPLACE_RETRY_MAX);
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of [`Self::replace`]: the new producer, its first
    /// transaction begun, and the committed offsets.
    fn reinit(&mut self, refused: HashSet<(i32, i64)>) -> Result<BTreeMap<i32, i64>> {
        self.producer = Arc::new(create(&self.args, &self.id, &self.topics.dlq, refused)?);
        if let Err(e) = self.init_transactions() {
            return Err(self.fatal(&e));
        }
        let partitions: Vec<i32> = self.partitions.iter().copied().collect();
        let committed = (self.read_committed)(&partitions)
            .map_err(|e| Error::NotCommitted(format!("reading the committed offsets back: {e}")))?;
        self.producer
            .begin_transaction()
            .map_err(|e| self.fatal(&e))?;
        self.opened = std::time::Instant::now();
        Ok(committed)
    }

    fn inject_fatal(&self) {
        warn!(
            commit = self.commits,
            "{FAULT_FATAL_AT_COMMIT}: injecting a fatal producer error"
        );
        let reason = c"fault injected by CYBERDAY_FAULT_FATAL_AT_COMMIT";
        // SAFETY: the client pointer is valid while `self.producer` lives,
        // and librdkafka copies the reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    /// What a failure of the producer means for the master.
    fn fatal(&self, e: &KafkaError) -> Error {
        let mut detail = e.to_string();
        let mut codes = vec![e.rdkafka_error_code()];
        if let Some((code, text)) = self.producer.client().fatal_error() {
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            codes.push(Some(code));
        }
        let fenced = codes.iter().flatten().any(|c| {
            matches!(
                c,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        });
        let id = self.id.clone();
        if fenced {
            Error::Fenced { id, detail }
        } else {
            Error::Fatal { id, detail }
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

/// Runs a transactional `call` on its own thread and waits at most
/// [`STUCK_CALL`] for it. A call still running then is left to finish on its
/// own (it holds its own reference to the client); the output gets an
/// error that [`failure`] counts as fatal, so the producer is replaced.
fn bounded(what: &str, call: impl FnOnce() -> KafkaResult<()> + Send + 'static) -> KafkaResult<()> {
    within(STUCK_CALL, call).unwrap_or_else(|| {
        warn!(
            limit = ?STUCK_CALL,
            "{what} did not return; giving the producer up (librdkafka can block past the call's timeout when the group coordinator goes away)"
        );
        Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut))
    })
}

/// `f`'s result if it returns within `limit`, run on a thread of its own.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std_mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            // The receiver is gone when the output gave up waiting.
            let _ = tx.send(f());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(limit).ok(),
        Err(e) => {
            warn!(error = %e, "could not start a thread for a transactional call");
            None
        }
    }
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

/// A dead letter's key, value and headers, borrowed from the result.
struct Letter<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: OwnedHeaders,
}

impl Letter<'_> {
    fn record<'t>(&'t self, topic: &'t str) -> BaseRecord<'t, [u8], [u8]> {
        let mut record = BaseRecord::to(topic).headers(self.headers.clone());
        if let Some(key) = self.key {
            record = record.key(key);
        }
        if let Some(value) = self.value {
            record = record.payload(value);
        }
        record
    }
}

/// The dead letter of `letter`, read from `input`: the original key, value
/// and headers (a Kafka null stays null), then the reason and the source.
/// `cut` keeps only the first bytes of the key and value and the original
/// headers that fit, and says so in [`HEADER_TRUNCATED`].
fn dead_letter<'a>(letter: &'a DeadLetter, input: &str, cut: bool) -> Letter<'a> {
    let r = &letter.record;
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 6);
    let mut header_bytes = 0;
    for (key, value) in &r.headers {
        header_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        if cut && header_bytes > TRUNCATED_HEADER_BYTES {
            break;
        }
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let ours = [
        (HEADER_REASON, r.code.clone()),
        (HEADER_DETAIL, r.detail.clone()),
        (HEADER_SOURCE_TOPIC, input.to_owned()),
        (HEADER_SOURCE_PARTITION, letter.partition.to_string()),
        (HEADER_SOURCE_OFFSET, letter.offset.to_string()),
    ];
    for (key, value) in &ours {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let (mut key, mut value) = (r.key.as_deref(), r.value.as_deref());
    if cut {
        let original = value.map_or(0, <[u8]>::len);
        headers = headers.insert(Header {
            key: HEADER_TRUNCATED,
            value: Some(original.to_string().as_bytes()),
        });
        key = key.map(|k| &k[..k.len().min(TRUNCATED_KEY_BYTES)]);
        value = value.map(|v| &v[..v.len().min(TRUNCATED_VALUE_BYTES)]);
    }
    Letter {
        key,
        value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    use super::*;
    use crate::coordinator::Invalid;

    #[test]
    fn a_call_that_outlives_its_limit_is_given_up_and_a_quick_one_is_not() {
        let started = std::time::Instant::now();
        let stuck = within(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(120));
            1
        });
        assert_eq!(stuck, None);
        // Not a speed check: only that the stuck call was not waited for.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited for the stuck call: {:?}",
            started.elapsed()
        );
        assert_eq!(within(Duration::from_secs(60), || 7), Some(7));
    }

    fn letter(value: Vec<u8>) -> DeadLetter {
        DeadLetter {
            partition: 3,
            offset: 1234,
            record: Box::new(Invalid {
                code: "bad_folio".into(),
                detail: "folio must look like ABC-1234 (got \"AB-12\")".into(),
                key: None,
                value: Some(value),
                headers: vec![
                    ("trace-id".into(), Some(b"t-1".to_vec())),
                    ("empty".into(), None),
                ],
            }),
        }
    }

    fn headers(h: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        h.iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn a_dead_letter_is_the_record_then_why_and_where() {
        let l = letter(b"{\"folio\":\"AB-12\"}".to_vec());
        let d = dead_letter(&l, "DataTopic", false);
        assert_eq!(d.key, None, "a null key stays null");
        assert_eq!(d.value, Some(&b"{\"folio\":\"AB-12\"}"[..]));
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            headers(&d.headers),
            [
                ("trace-id".into(), s("t-1")),
                ("empty".into(), None),
                (HEADER_REASON.into(), s("bad_folio")),
                (
                    HEADER_DETAIL.into(),
                    s("folio must look like ABC-1234 (got \"AB-12\")")
                ),
                (HEADER_SOURCE_TOPIC.into(), s("DataTopic")),
                (HEADER_SOURCE_PARTITION.into(), s("3")),
                (HEADER_SOURCE_OFFSET.into(), s("1234")),
            ]
        );
        // The delivery callback finds its source again.
        let message = OwnedMessage::new(
            None,
            None,
            "DataTopic.DLQ".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(d.headers.clone()),
        );
        assert_eq!(source_of(&message), Some((3, 1234)));
    }

    #[test]
    fn a_cut_down_dead_letter_keeps_the_start_and_says_how_long_it_was() {
        let big = vec![b'x'; 3 * TRUNCATED_VALUE_BYTES + 7];
        let mut l = letter(big.clone());
        l.record.key = Some(vec![b'k'; 5000]);
        l.record
            .headers
            .push(("huge".into(), Some(vec![b'h'; 2 * TRUNCATED_HEADER_BYTES])));
        let d = dead_letter(&l, "DataTopic", true);
        assert_eq!(d.value, Some(&big[..TRUNCATED_VALUE_BYTES]));
        assert_eq!(d.key.map(<[u8]>::len), Some(TRUNCATED_KEY_BYTES));
        let h = headers(&d.headers);
        assert!(h.iter().all(|(k, _)| k != "huge"), "{h:?}");
        assert_eq!(h[0].0, "trace-id");
        assert!(h.contains(&(HEADER_REASON.into(), Some("bad_folio".into()))));
        assert_eq!(
            h.last().unwrap(),
            &(HEADER_TRUNCATED.into(), Some(big.len().to_string()))
        );
    }
}
