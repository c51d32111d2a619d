//! The worker's life with the master: connect (retrying with backoff), open
//! one `Session` stream, and serve it until it breaks or the worker shuts
//! down; then drop every partition and start over.
//!
//! One task owns a session. It reacts to whichever comes first: a message
//! from the master (assign, revoke), room on the outgoing stream, a
//! confirmed dead-letter write, the heartbeat tick, a batch's linger, or a
//! record from Kafka. Records are read only while nothing waits to go out,
//! so a master that does not keep up stops the worker reading, and memory
//! stays bounded.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use common::classify::{classify, Classification, Kind, Rules};
use common::pb::coordinator_client::CoordinatorClient;
use common::pb::session_request::Body;
use common::pb::session_response::Body as Push;
use common::pb::{
    Assign, Heartbeat, Hello, Leave, Outcome, PartitionProgress, PurchaseSummary, RecordResult,
    ResultBatch, Revoke, RevokeAck, SessionRequest, SessionResponse, Welcome,
};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;
use tonic::transport::Endpoint;
use tracing::{debug, info, instrument, warn};

use crate::backoff::Backoff;
use crate::batch::Batcher;
use crate::config::Config;
use crate::dlq::{DeadLetter, Dlq, Source};
use crate::partitions::Partitions;

/// Messages waiting for the gRPC stream to take them. The worker stops
/// reading Kafka while anything else waits behind them.
const SEND_QUEUE: usize = 32;
/// First and longest wait between attempts to reach the master.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings detect a master that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the master may take to answer `hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a revoke waits for the partition's dead-letter writes before it
/// gives the partition back at the first unconfirmed one.
const REVOKE_WAIT: Duration = Duration::from_secs(5);
/// The whole shutdown: last results, `leave`, and the master closing the stream.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The part of it spent waiting for dead-letter writes.
const DRAIN_DLQ_WAIT: Duration = Duration::from_secs(5);
/// Used when the master sends zeros.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(1);
const FALLBACK_MAX_BATCH: usize = 500;

/// Why a session ended (other than by shutdown).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the master at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("the master refused the session: {0}")]
    Refused(tonic::Status),
    #[error("the master did not answer hello within {0:?}")]
    NoWelcome(Duration),
    #[error("the master's first message was not a welcome")]
    NotWelcome,
    #[error("the stream broke: {0}")]
    Broken(tonic::Status),
    #[error("the master closed the stream")]
    Closed,
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
}

/// Connects and serves sessions until `shutdown`; every error is retried.
pub async fn run(
    config: &Config,
    parts: &mut Partitions,
    dlq: &Dlq,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let opened = tokio::select! {
            opened = open(config) => opened,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match opened {
            Ok(opened) => {
                let started = Instant::now();
                let ended = serve(config, parts, dlq, opened, shutdown).await;
                // A new session starts from nothing: the master reassigns
                // from the offsets it committed.
                if let Err(e) = parts.clear() {
                    warn!(error = %e, "unassigning every partition");
                }
                match ended {
                    Ok(()) => return Ok(()),
                    Err(e) if shutdown.is_cancelled() => {
                        warn!(error = %e, "session ended while shutting down");
                        return Ok(());
                    }
                    Err(e) => warn!(
                        error = %e,
                        "session with the master ended; dropped every partition, reconnecting"
                    ),
                }
                // After a session that lasted, try again at once; a master
                // that ends sessions right away gets the backoff.
                if started.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                    continue;
                }
            }
            Err(e) => {
                // Quiet while the master may just be starting; louder once
                // the delays are at their longest.
                if backoff.at_max() {
                    warn!(error = %e, retry_in = ?backoff.peek(), "master not reachable, retrying");
                } else {
                    info!(error = %e, retry_in = ?backoff.peek(), "master not reachable yet, retrying");
                }
            }
        }
        let retry_in = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// An open stream whose `welcome` has arrived.
struct Opened {
    tx: mpsc::Sender<SessionRequest>,
    responses: Streaming<SessionResponse>,
    welcome: Welcome,
}

/// Connects, sends `hello` and waits for `welcome`.
async fn open(config: &Config) -> Result<Opened, Error> {
    let url = config.master.to_string();
    let channel = Endpoint::from(config.master.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| Error::Connect {
            url,
            cause: error_chain(&e),
        })?;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let hello = SessionRequest {
        worker_id: config.id.clone().unwrap_or_default(),
        generation: 0,
        body: Some(Body::Hello(Hello {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: hostname(),
        })),
    };
    tx.try_send(hello)
        .expect("a new channel has room for hello");
    let mut responses = CoordinatorClient::new(channel)
        .session(ReceiverStream::new(rx))
        .await
        .map_err(Error::Refused)?
        .into_inner();
    let first = tokio::time::timeout(WELCOME_TIMEOUT, responses.message())
        .await
        .map_err(|_| Error::NoWelcome(WELCOME_TIMEOUT))?
        .map_err(Error::Broken)?
        .ok_or(Error::Closed)?;
    match first.body {
        Some(Push::Welcome(welcome)) => Ok(Opened {
            tx,
            responses,
            welcome,
        }),
        _ => Err(Error::NotWelcome),
    }
}

/// Serves one session until it breaks (`Err`) or, after `shutdown`, the
/// worker has left (`Ok`).
#[instrument(name = "session", skip_all, fields(worker = %opened.welcome.worker_id))]
async fn serve(
    config: &Config,
    parts: &mut Partitions,
    dlq: &Dlq,
    opened: Opened,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let Opened {
        tx,
        mut responses,
        welcome,
    } = opened;
    let heartbeat_every = match welcome.heartbeat_interval_ms {
        0 => FALLBACK_HEARTBEAT,
        ms => Duration::from_millis(ms.into()),
    };
    let max_batch = match welcome.max_batch_records {
        0 => FALLBACK_MAX_BATCH,
        n => n as usize,
    };
    let topic = if welcome.topic.is_empty() {
        config.kafka.topic.clone()
    } else {
        welcome.topic.clone()
    };
    info!(
        master = %config.master,
        topic,
        heartbeat_ms = heartbeat_every.as_millis() as u64,
        max_batch,
        "session open"
    );

    let consumer = parts.consumer();
    let mut session = Session {
        worker_id: welcome.worker_id,
        generation: 0,
        topic,
        rules: config.rules(),
        parts,
        dlq,
        batcher: Batcher::new(max_batch, config.batch_linger),
        outbox: VecDeque::new(),
        writes: FuturesUnordered::new(),
        abandon: BTreeMap::new(),
        revoking: BTreeMap::new(),
        drain: None,
    };
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A far instant stands in for "no deadline" in disabled branches.
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);

    loop {
        session.maybe_leave(Instant::now());
        if session.drain.as_ref().is_some_and(|d| d.leave_queued) && session.outbox.is_empty() {
            break;
        }
        let linger_at = session.batcher.next_deadline();
        let revoke_at = session.revoking.values().map(|r| r.deadline).min();
        let drain_at = session.drain.as_ref().map(|d| d.deadline);
        let dlq_wait_at = session
            .drain
            .as_ref()
            .filter(|d| !d.writes_given_up && !d.leave_queued && !session.writes.is_empty())
            .map(|d| d.dlq_deadline);
        let reading = session.drain.is_none() && session.outbox.is_empty();

        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if session.drain.is_none() => session.start_drain(),
            _ = sleep_until(drain_at.unwrap_or(never)), if drain_at.is_some() => {
                warn!(timeout = ?DRAIN_TIMEOUT, "shutdown took too long; exiting without leave");
                return Ok(());
            }
            message = responses.next() => match message {
                Some(Ok(message)) => session.on_push(message)?,
                Some(Err(status)) => return Err(Error::Broken(status)),
                None => return Err(Error::Closed),
            },
            permit = tx.reserve(), if !session.outbox.is_empty() => {
                let permit = permit.map_err(|_| Error::Broken(tonic::Status::cancelled("request stream dropped")))?;
                let body = session.outbox.pop_front().expect("outbox is not empty");
                permit.send(session.request(body));
            }
            Some(written) = session.writes.next(), if !session.writes.is_empty() => {
                if let Some(source) = written {
                    session.on_written(source)?;
                }
            }
            _ = heartbeat.tick() => session.queue_heartbeat(),
            _ = sleep_until(linger_at.unwrap_or(never)), if linger_at.is_some() => {
                session.release_all(Instant::now())?;
            }
            _ = sleep_until(revoke_at.unwrap_or(never)), if revoke_at.is_some() => {
                session.expire_revokes(Instant::now());
            }
            _ = sleep_until(dlq_wait_at.unwrap_or(never)), if dlq_wait_at.is_some() => {
                warn!(pending = session.writes.len(), "dead-letter writes still unconfirmed; leaving without them");
                session.give_up_writes();
            }
            record = consumer.recv(), if reading => match record {
                Ok(record) => session.on_record(&record)?,
                Err(e) => warn!(error = %e, "Kafka consumer error"),
            },
        }
    }

    // Half-close: the master sees the end of the requests after `leave`.
    drop(tx);
    let deadline = session
        .drain
        .as_ref()
        .map_or_else(|| Instant::now() + DRAIN_TIMEOUT, |d| d.deadline);
    // Wait for the master to end the stream, so `leave` is surely read.
    loop {
        tokio::select! {
            message = responses.next() => match message {
                Some(Ok(message)) => debug!(?message, "message after leave ignored"),
                Some(Err(status)) => {
                    debug!(%status, "stream ended after leave");
                    break;
                }
                None => break,
            },
            _ = sleep_until(deadline) => {
                warn!("the master did not close the stream after leave");
                break;
            }
        }
    }
    info!("left the master");
    Ok(())
}

/// State of one session.
struct Session<'a> {
    worker_id: String,
    /// Highest generation of any assign or revoke received.
    generation: u64,
    /// Topic of assignments that name none.
    topic: String,
    rules: Rules,
    parts: &'a mut Partitions,
    dlq: &'a Dlq,
    batcher: Batcher,
    /// Messages in stream order, waiting for room on the stream.
    outbox: VecDeque<Body>,
    /// Dead-letter writes in flight; `None` when abandoned.
    writes: FuturesUnordered<BoxFuture<'static, Option<Source>>>,
    /// Cancels a partition's dead-letter writes once it is given up.
    abandon: BTreeMap<i32, CancellationToken>,
    /// Revoked partitions still waiting for dead-letter writes.
    revoking: BTreeMap<i32, Revoking>,
    drain: Option<Drain>,
}

struct Revoking {
    generation: u64,
    next_offset: i64,
    deadline: Instant,
}

struct Drain {
    deadline: Instant,
    dlq_deadline: Instant,
    writes_given_up: bool,
    leave_queued: bool,
}

impl Session<'_> {
    fn request(&self, body: Body) -> SessionRequest {
        SessionRequest {
            worker_id: self.worker_id.clone(),
            generation: self.generation,
            body: Some(body),
        }
    }

    fn on_push(&mut self, message: SessionResponse) -> Result<(), Error> {
        if self.drain.as_ref().is_some_and(|d| d.leave_queued) {
            // `leave` is the last word; the master moves everything anyway.
            debug!(?message, "message after leave ignored");
            return Ok(());
        }
        match message.body {
            Some(Push::Assign(assign)) => {
                self.generation = self.generation.max(assign.generation);
                self.on_assign(assign)
            }
            Some(Push::Revoke(revoke)) => {
                self.generation = self.generation.max(revoke.generation);
                self.on_revoke(revoke)
            }
            Some(Push::Welcome(_)) => {
                warn!("second welcome ignored");
                Ok(())
            }
            None => {
                debug!("empty message from the master ignored");
                Ok(())
            }
        }
    }

    fn on_assign(&mut self, assign: Assign) -> Result<(), Error> {
        let Assign {
            topic,
            partition,
            start_offset,
            generation,
        } = assign;
        let topic = if topic.is_empty() {
            self.topic.clone()
        } else {
            topic
        };
        if let Some(owned) = self.parts.get(partition) {
            if owned.generation == generation && owned.topic == topic {
                debug!(partition, generation, "repeated assign ignored");
                return Ok(());
            }
            warn!(
                partition,
                old_generation = owned.generation,
                generation,
                "partition assigned again without a revoke; restarting it"
            );
        }
        if self.revoking.contains_key(&partition) {
            self.finish_revoke(partition, true);
        }
        self.close(partition);
        // While shutting down it is only recorded: `leave` gives it back
        // where it starts.
        self.parts
            .assign(&topic, partition, start_offset, generation)?;
        self.batcher.open(partition, generation);
        self.abandon.insert(partition, CancellationToken::new());
        info!(
            topic,
            partition,
            generation,
            offset = start_offset,
            "assigned"
        );
        Ok(())
    }

    fn on_revoke(&mut self, revoke: Revoke) -> Result<(), Error> {
        let Revoke {
            topic,
            partition,
            generation,
        } = revoke;
        let held = self
            .parts
            .get(partition)
            .is_some_and(|o| o.generation == generation && (topic.is_empty() || topic == o.topic));
        if !held {
            if self
                .revoking
                .get(&partition)
                .is_some_and(|r| r.generation == generation)
            {
                debug!(partition, generation, "repeated revoke ignored");
            } else {
                warn!(
                    partition,
                    generation,
                    held = ?self.parts.get(partition).map(|o| o.generation),
                    "revoke of a generation this worker does not hold; ignored"
                );
            }
            return Ok(());
        }
        let owned = self
            .parts
            .unassign(partition)?
            .expect("the partition is owned");
        info!(
            partition,
            generation,
            offset = owned.next_offset,
            "revoked; stopped reading it"
        );
        self.revoking.insert(
            partition,
            Revoking {
                generation,
                next_offset: owned.next_offset,
                deadline: Instant::now() + REVOKE_WAIT,
            },
        );
        self.finish_revoke(partition, false);
        Ok(())
    }

    /// Sends what a revoked partition has ready and, once nothing is held
    /// back (or `force`), its `revoke_ack`.
    fn finish_revoke(&mut self, partition: i32, force: bool) {
        let Some(revoking) = self.revoking.get(&partition) else {
            return;
        };
        let (generation, read_up_to) = (revoking.generation, revoking.next_offset);
        let ready = self.batcher.flush(partition);
        self.queue_batches(ready);
        if self.batcher.unsent(partition) > 0 && !force {
            debug!(partition, generation, "revoke waits for dead-letter writes");
            return;
        }
        let next_offset = match self.close(partition) {
            Some(first_unsent) => {
                warn!(
                    partition,
                    generation,
                    offset = first_unsent,
                    "dead-letter writes unconfirmed; the partition is given back at the first of them"
                );
                first_unsent
            }
            None => read_up_to,
        };
        self.revoking.remove(&partition);
        self.outbox.push_back(Body::RevokeAck(RevokeAck {
            partition,
            generation,
            next_offset,
        }));
        info!(
            partition,
            generation,
            offset = next_offset,
            "revoke acknowledged"
        );
    }

    fn expire_revokes(&mut self, now: Instant) {
        let expired: Vec<i32> = self
            .revoking
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for partition in expired {
            self.finish_revoke(partition, true);
        }
    }

    /// Forgets `partition`'s unsent results and abandons its dead-letter
    /// writes; returns the first unsent offset.
    fn close(&mut self, partition: i32) -> Option<i64> {
        if let Some(token) = self.abandon.remove(&partition) {
            token.cancel();
        }
        self.batcher.close(partition)
    }

    fn on_record(&mut self, record: &BorrowedMessage<'_>) -> Result<(), Error> {
        let partition = record.partition();
        let offset = record.offset();
        let Some(owned) = self.parts.get_mut(partition) else {
            debug!(partition, offset, "record of a partition not owned ignored");
            return Ok(());
        };
        if owned.topic != record.topic() || offset < owned.next_offset {
            debug!(
                partition,
                offset,
                expected = owned.next_offset,
                "stale record ignored"
            );
            return Ok(());
        }
        owned.next_offset = offset + 1;
        let generation = owned.generation;

        let mut result = RecordResult {
            offset,
            // Kafka always sets one; 0 would mean the broker gave none.
            timestamp_ms: record.timestamp().to_millis().unwrap_or(0),
            ..Default::default()
        };
        let mut confirmed = true;
        match classify(record.payload().unwrap_or_default(), &self.rules) {
            Classification::NoPurchase(_) => result.outcome = Outcome::NoPurchase as i32,
            Classification::Purchase { kind, purchase } => {
                result.outcome = match kind {
                    Kind::Short => Outcome::Short,
                    Kind::Long => Outcome::Long,
                } as i32;
                result.purchase = Some(PurchaseSummary {
                    id: purchase.id,
                    nombre: purchase.nombre,
                    apellido: purchase.apellido,
                    email: purchase.email,
                    productovisto: purchase.productovisto,
                    folio: purchase.folio.unwrap_or_default(),
                    taps: purchase.taps.unwrap_or_default(),
                });
            }
            Classification::Invalid(reason) => {
                debug!(
                    partition,
                    offset,
                    reason = reason.code(),
                    "invalid record to the dead-letter topic"
                );
                result.outcome = Outcome::Invalid as i32;
                result.invalid_code = reason.code().to_owned();
                result.invalid_detail = reason.to_string();
                confirmed = false;
                let letter = DeadLetter::new(record, &reason, generation);
                let abandon = self.abandon.entry(partition).or_default().clone();
                let write = self.dlq.write(letter);
                self.writes.push(Box::pin(async move {
                    tokio::select! {
                        source = write => Some(source),
                        _ = abandon.cancelled() => None,
                    }
                }));
            }
        }
        self.batcher
            .push(partition, result, confirmed, Instant::now());
        self.release(partition, Instant::now())
    }

    fn on_written(&mut self, source: Source) -> Result<(), Error> {
        let Source {
            partition,
            offset,
            generation,
        } = source;
        if !self.batcher.confirm(partition, generation, offset) {
            return Ok(());
        }
        if self.revoking.contains_key(&partition) {
            self.finish_revoke(partition, false);
            Ok(())
        } else {
            self.release(partition, Instant::now())
        }
    }

    /// Queues the partition's due batches, and stops fetching it while a
    /// batch's worth of results is held back by dead-letter writes.
    fn release(&mut self, partition: i32, now: Instant) -> Result<(), Error> {
        if self.drain.is_some() {
            let ready = self.batcher.flush(partition);
            self.queue_batches(ready);
            return Ok(());
        }
        let due = self.batcher.take_due(partition, now);
        self.queue_batches(due);
        let Some(owned) = self.parts.get(partition) else {
            return Ok(());
        };
        let too_many = self.batcher.unsent(partition) >= self.batcher.max_records();
        if too_many && !owned.paused {
            debug!(partition, "paused: results held back by dead-letter writes");
            self.parts.pause(partition)?;
        } else if !too_many && owned.paused {
            debug!(partition, "resumed");
            self.parts.resume(partition)?;
        }
        Ok(())
    }

    fn release_all(&mut self, now: Instant) -> Result<(), Error> {
        let partitions: Vec<i32> = self.parts.iter().map(|(p, _)| p).collect();
        for partition in partitions {
            self.release(partition, now)?;
        }
        Ok(())
    }

    fn queue_batches(&mut self, batches: Vec<ResultBatch>) {
        for batch in batches {
            debug!(
                partition = batch.partition,
                generation = batch.generation,
                offset = batch.results.first().map(|r| r.offset),
                count = batch.results.len(),
                "batch queued"
            );
            self.outbox.push_back(Body::Results(batch));
        }
    }

    /// Where each owned partition stands: every result before `next_offset`
    /// is already ahead of this message on the stream.
    fn progress(&self) -> Vec<PartitionProgress> {
        self.parts
            .iter()
            .map(|(partition, owned)| PartitionProgress {
                partition,
                generation: owned.generation,
                next_offset: self
                    .batcher
                    .first_unsent(partition)
                    .unwrap_or(owned.next_offset),
                high_watermark: self.parts.high_watermark(partition),
            })
            .collect()
    }

    fn queue_heartbeat(&mut self) {
        // One waiting heartbeat is enough, and none goes after `leave`.
        let left = self.drain.as_ref().is_some_and(|d| d.leave_queued);
        if left || self.outbox.iter().any(|b| matches!(b, Body::Heartbeat(_))) {
            return;
        }
        let progress = self.progress();
        self.outbox
            .push_back(Body::Heartbeat(Heartbeat { progress }));
    }

    fn start_drain(&mut self) {
        let now = Instant::now();
        info!(
            partitions = self.parts.iter().count(),
            "shutting down: sending the last results, then leave"
        );
        self.drain = Some(Drain {
            deadline: now + DRAIN_TIMEOUT,
            dlq_deadline: now + DRAIN_DLQ_WAIT,
            writes_given_up: false,
            leave_queued: false,
        });
        if let Err(e) = self.parts.stop_all() {
            warn!(error = %e, "stopping the consumer");
        }
        let partitions: Vec<i32> = self.parts.iter().map(|(p, _)| p).collect();
        for partition in partitions {
            let ready = self.batcher.flush(partition);
            self.queue_batches(ready);
        }
    }

    fn give_up_writes(&mut self) {
        if let Some(drain) = &mut self.drain {
            drain.writes_given_up = true;
        }
    }

    /// Once draining and no dead-letter write is worth waiting for, queues
    /// the last results and `leave`.
    fn maybe_leave(&mut self, now: Instant) {
        let Some(drain) = &self.drain else {
            return;
        };
        let waiting = !self.writes.is_empty() && !drain.writes_given_up && now < drain.dlq_deadline;
        if drain.leave_queued || waiting {
            return;
        }
        let revoking: Vec<i32> = self.revoking.keys().copied().collect();
        for partition in revoking {
            self.finish_revoke(partition, true);
        }
        let owned: Vec<(i32, u64, i64)> = self
            .parts
            .iter()
            .map(|(p, o)| (p, o.generation, o.next_offset))
            .collect();
        let mut progress = Vec::with_capacity(owned.len());
        for (partition, generation, read_up_to) in owned {
            let ready = self.batcher.flush(partition);
            self.queue_batches(ready);
            let next_offset = self.close(partition).unwrap_or(read_up_to);
            progress.push(PartitionProgress {
                partition,
                generation,
                next_offset,
                high_watermark: self.parts.high_watermark(partition),
            });
        }
        info!(?progress, "leaving");
        self.outbox.push_back(Body::Leave(Leave { progress }));
        if let Some(drain) = &mut self.drain {
            drain.leave_queued = true;
        }
    }
}

/// Host or pod name for `hello`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// An error and its causes on one line (tonic's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Some layers repeat their inner error's message.
        let message = c.to_string();
        if message != last {
            text.push_str(": ");
            text.push_str(&message);
        }
        last = message;
        cause = c.source();
    }
    text
}
