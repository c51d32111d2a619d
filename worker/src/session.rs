//! The worker's life with the master: connect (retrying with backoff), open
//! one `Session` stream, and serve it until it breaks or the worker shuts
//! down; then drop every partition and start over.
//!
//! One task owns a session. It reacts to whichever comes first: a message
//! from the master (assign, revoke), room on the outgoing stream, the
//! heartbeat tick, a batch's linger, or a record from Kafka. Records are read
//! only while nothing waits to go out, so a master that does not keep up
//! stops the worker reading, and memory stays bounded.
//!
//! The worker writes nothing to Kafka: an invalid record's result carries
//! the record itself, and the master writes the dead letter in the same
//! transaction as the notifications and the offsets.

use std::collections::VecDeque;
use std::time::Duration;

use common::classify::{classify, Classification, Kind, Rules};
use common::pb::coordinator_client::CoordinatorClient;
use common::pb::session_request::Body;
use common::pb::session_response::Body as Push;
use common::pb::{
    Assign, Heartbeat, Hello, KafkaHeader, Leave, Outcome, PartitionProgress, PurchaseSummary,
    RecordResult, ResultBatch, Revoke, RevokeAck, SessionRequest, SessionResponse, Welcome,
};
use common::security::Token;
use futures::stream::StreamExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{debug, info, instrument, warn};

use crate::backoff::Backoff;
use crate::batch::{Batcher, MAX_BATCH_BYTES};
use crate::config::Config;
use crate::metrics::{Metrics, PartitionView};
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
/// The whole shutdown: last results, `leave`, and the master closing the stream.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an invalid record's value carried to the master; a larger
/// value (only possible when the topic's limits were raised far beyond the
/// defaults) is cut, so one record can never exceed what the master accepts.
pub const MAX_CARRIED_VALUE_BYTES: usize = 16 * 1024 * 1024;
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

/// Connects and serves sessions until `shutdown`; every error is retried,
/// a refusal by the master too (it may be lifted: a worker leaves, a
/// certificate is renewed), with the backoff and a warning each time.
pub async fn run(
    config: &Config,
    credentials: &Credentials,
    parts: &mut Partitions,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let opened = tokio::select! {
            opened = open(config, credentials) => opened,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match opened {
            Ok(opened) => {
                let started = Instant::now();
                metrics.sessions.inc();
                metrics.set_connected(true);
                let ended = serve(config, parts, metrics, opened, shutdown).await;
                metrics.set_connected(false);
                // A new session starts from nothing: the master reassigns
                // from the offsets it committed.
                if let Err(e) = parts.clear() {
                    warn!(error = %e, "unassigning every partition");
                }
                metrics.set_partitions([]);
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
            Err(Error::Refused(status)) if is_refusal(status.code()) => {
                warn!(
                    code = ?status.code(),
                    reason = status.message(),
                    retry_in = ?backoff.peek(),
                    "the master refused this worker; retrying"
                );
            }
            Err(Error::Refused(status))
                if credentials.tls.is_some() && status.code() == tonic::Code::Cancelled =>
            {
                // TLS 1.3: the client's side of the handshake is over before
                // the master checks the client certificate, so a refused
                // certificate shows up as a connection closed at once.
                warn!(
                    error = %status.message(),
                    retry_in = ?backoff.peek(),
                    "the master closed the connection during the session's start: is this \
                     worker's certificate (--tls-cert) signed by the CA the master trusts \
                     (its --tls-ca)? retrying"
                );
            }
            Err(e) => {
                metrics.connect_failures.inc();
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

/// Statuses by which the master refuses a worker (rather than failing).
fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unauthenticated | PermissionDenied | ResourceExhausted | AlreadyExists
    )
}

/// An open stream whose `welcome` has arrived.
struct Opened {
    tx: mpsc::Sender<SessionRequest>,
    responses: Streaming<SessionResponse>,
    welcome: Welcome,
}

/// How the worker reaches the master: TLS settings and the token, read
/// from their files once at start.
#[derive(Clone, Default)]
pub struct Credentials {
    pub tls: Option<ClientTlsConfig>,
    pub token: Option<Token>,
}

impl Credentials {
    /// Reads the files `config` names.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let tls = match &config.tls_ca {
            None => None,
            Some(ca) => {
                let pair = config.tls_cert.as_deref().zip(config.tls_key.as_deref());
                Some(common::security::client_tls(ca, pair)?)
            }
        };
        let token = Token::from_optional_file(config.token_file.as_deref())?;
        Ok(Self { tls, token })
    }
}

/// Connects, sends `hello` and waits for `welcome`.
async fn open(config: &Config, credentials: &Credentials) -> Result<Opened, Error> {
    let url = config.master.to_string();
    let connect_error = |e: tonic::transport::Error| Error::Connect {
        url: url.clone(),
        cause: error_chain(&e),
    };
    let mut endpoint = Endpoint::from(config.master.clone());
    if let Some(tls) = &credentials.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(connect_error)?;
    }
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(connect_error)?;
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
    let max_message = config.max_message_bytes as usize;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &credentials.token {
        request
            .metadata_mut()
            .insert(common::security::TOKEN_METADATA, token.metadata());
    }
    let mut responses = CoordinatorClient::new(channel)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message)
        .session(request)
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
    metrics: &Metrics,
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
        max_carried: max_carried(config.max_message_bytes as usize),
        parts,
        metrics,
        batcher: Batcher::new(max_batch, MAX_BATCH_BYTES, config.batch_linger),
        outbox: VecDeque::new(),
        drain: None,
    };
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A far instant stands in for "no deadline" in disabled branches.
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);

    loop {
        if session.drain.is_some() && session.outbox.is_empty() {
            break;
        }
        let linger_at = session.batcher.next_deadline();
        let drain_at = session.drain.as_ref().map(|d| d.deadline);
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
            _ = heartbeat.tick() => session.queue_heartbeat(),
            _ = sleep_until(linger_at.unwrap_or(never)), if linger_at.is_some() => {
                session.release_all(Instant::now());
            }
            record = consumer.recv(), if reading => match record {
                Ok(record) => session.on_record(&record),
                Err(e) => {
                    session.metrics.kafka_errors.inc();
                    warn!(error = %e, "Kafka consumer error");
                }
            },
            // Polled only when the consumer has no record ready (biased):
            // whatever was fetched together goes out now rather than after
            // the linger, which only bounds the wait of a steady stream.
            () = std::future::ready(()), if reading && session.batcher.has_unsent() => {
                let batches = session.batcher.flush_all();
                session.queue_batches(batches);
            }
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
    /// Most bytes of an invalid record's value sent to the master.
    max_carried: usize,
    parts: &'a mut Partitions,
    metrics: &'a Metrics,
    batcher: Batcher,
    /// Messages in stream order, waiting for room on the stream.
    outbox: VecDeque<Body>,
    drain: Option<Drain>,
}

/// Shutting down: `leave` is queued; the stream must end by `deadline`.
struct Drain {
    deadline: Instant,
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
        if self.drain.is_some() {
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
            // The master rewound (an aborted transaction): what was read
            // under the old generation is void, start over where it says.
            info!(
                partition,
                old_generation = owned.generation,
                generation,
                offset = start_offset,
                "partition assigned again under a new generation; restarting it"
            );
        }
        self.batcher.close(partition);
        // While shutting down it is only recorded: `leave` gives it back
        // where it starts.
        self.parts
            .assign(&topic, partition, start_offset, generation)?;
        self.batcher.open(partition, generation);
        self.metrics.assignments.inc();
        info!(
            topic,
            partition,
            generation,
            offset = start_offset,
            "assigned"
        );
        Ok(())
    }

    /// Stops the partition, sends what it holds, then `revoke_ack`.
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
            warn!(
                partition,
                generation,
                held = ?self.parts.get(partition).map(|o| o.generation),
                "revoke of a generation this worker does not hold; ignored"
            );
            return Ok(());
        }
        let owned = self
            .parts
            .unassign(partition)?
            .expect("the partition is owned");
        let ready = self.batcher.flush(partition);
        self.queue_batches(ready);
        self.batcher.close(partition);
        self.metrics.revocations.inc();
        self.outbox.push_back(Body::RevokeAck(RevokeAck {
            partition,
            generation,
            next_offset: owned.next_offset,
        }));
        info!(
            partition,
            generation,
            offset = owned.next_offset,
            "revoked; stopped reading it and acknowledged"
        );
        Ok(())
    }

    fn on_record(&mut self, record: &BorrowedMessage<'_>) {
        let partition = record.partition();
        let offset = record.offset();
        let Some(owned) = self.parts.get_mut(partition) else {
            debug!(partition, offset, "record of a partition not owned ignored");
            return;
        };
        if owned.topic != record.topic() || offset < owned.next_offset {
            debug!(
                partition,
                offset,
                expected = owned.next_offset,
                "stale record ignored"
            );
            return;
        }
        owned.next_offset = offset + 1;

        let mut result = RecordResult {
            offset,
            // Kafka always sets one; 0 would mean the broker gave none.
            timestamp_ms: record.timestamp().to_millis().unwrap_or(0),
            ..Default::default()
        };
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
                    "invalid record; the master dead-letters it"
                );
                result.outcome = Outcome::Invalid as i32;
                result.invalid_code = reason.code().to_owned();
                result.invalid_detail = reason.to_string();
                carry(record, &mut result, self.max_carried);
            }
        }
        // OUTCOMES is in the protocol's order, from NO_PURCHASE = 1.
        if let Some(n) = self
            .metrics
            .records
            .get((result.outcome as usize).wrapping_sub(1))
        {
            n.inc();
        }
        self.batcher.push(partition, result, Instant::now());
        self.release(partition, Instant::now());
    }

    /// Queues the partition's due batches.
    fn release(&mut self, partition: i32, now: Instant) {
        let due = if self.drain.is_some() {
            self.batcher.flush(partition)
        } else {
            self.batcher.take_due(partition, now)
        };
        self.queue_batches(due);
    }

    fn release_all(&mut self, now: Instant) {
        let partitions: Vec<i32> = self.parts.iter().map(|(p, _)| p).collect();
        for partition in partitions {
            self.release(partition, now);
        }
    }

    fn queue_batches(&mut self, batches: Vec<ResultBatch>) {
        for batch in batches {
            self.metrics
                .batch_records
                .observe(batch.results.len() as f64);
            self.metrics
                .batch_bytes
                .observe(prost::Message::encoded_len(&batch) as f64);
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
        let left = self.drain.is_some();
        if left || self.outbox.iter().any(|b| matches!(b, Body::Heartbeat(_))) {
            return;
        }
        let progress = self.progress();
        self.metrics
            .set_partitions(self.parts.iter().map(|(p, owned)| {
                let view = PartitionView {
                    position: owned.next_offset,
                    high_watermark: self.parts.high_watermark(p),
                };
                (p, view)
            }));
        self.outbox
            .push_back(Body::Heartbeat(Heartbeat { progress }));
    }

    /// Stops reading, queues every result still waiting, then `leave` with
    /// where each partition stops.
    fn start_drain(&mut self) {
        info!(
            partitions = self.parts.iter().count(),
            "shutting down: sending the last results, then leave"
        );
        if let Err(e) = self.parts.stop_all() {
            warn!(error = %e, "stopping the consumer");
        }
        let owned: Vec<(i32, u64, i64)> = self
            .parts
            .iter()
            .map(|(p, o)| (p, o.generation, o.next_offset))
            .collect();
        let mut progress = Vec::with_capacity(owned.len());
        for (partition, generation, next_offset) in owned {
            let ready = self.batcher.flush(partition);
            self.queue_batches(ready);
            self.batcher.close(partition);
            progress.push(PartitionProgress {
                partition,
                generation,
                next_offset,
                high_watermark: self.parts.high_watermark(partition),
            });
        }
        info!(?progress, "leaving");
        self.outbox.push_back(Body::Leave(Leave { progress }));
        self.drain = Some(Drain {
            deadline: Instant::now() + DRAIN_TIMEOUT,
        });
    }
}

/// The most of an invalid record's value that fits in a message of
/// `max_message` bytes beside its key, headers and batch framing.
fn max_carried(max_message: usize) -> usize {
    MAX_CARRIED_VALUE_BYTES.min(max_message / 2)
}

/// Puts an invalid record's key, value and headers in its result, for the
/// master's dead letter; a Kafka null stays absent.
fn carry(record: &BorrowedMessage<'_>, result: &mut RecordResult, max: usize) {
    result.key = record.key().map(<[u8]>::to_vec);
    result.value = record.payload().map(|v| {
        if v.len() > max {
            warn!(
                partition = record.partition(),
                offset = record.offset(),
                bytes = v.len(),
                "invalid record's value cut to {max} bytes for the master"
            );
        }
        v[..v.len().min(max)].to_vec()
    });
    if let Some(headers) = record.headers() {
        result.headers = headers
            .iter()
            .map(|h| KafkaHeader {
                key: h.key.to_owned(),
                value: h.value.map(<[u8]>::to_vec),
            })
            .collect();
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
