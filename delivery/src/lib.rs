//! The delivery service: reads the notifications topic and e-mails each
//! purchase's customer, effectively once.
//!
//! - [`config`]: the command line (every flag with an environment variable).
//! - [`notice`]: a notifications record parsed and checked, or why not.
//! - [`email`]: the Spanish multipart e-mail (Message-ID from the folio) and
//!   lettre's pooled SMTP transport; transient vs permanent failures.
//! - [`deliver`]: the channels (e-mail, webhook or both), the retry policy (backoff with jitter, bounded) and the
//!   `--max-per-second` token bucket.
//! - [`offsets`]: the finished prefix of each partition, which is all the
//!   group ever commits.
//! - [`ledger`]: the compacted topic of delivered folios, read after every
//!   start and rebalance.
//! - [`webhook`]: the signed JSON POST (`Idempotency-Key` from the folio,
//!   HMAC-SHA256 over timestamp + body); HTTP statuses sorted.
//! - [`metrics`]: `/metrics` on `--metrics-listen`.
//!
//! [`run`] ties them: a consumer of the group (`group.protocol=consumer`
//! by default) reads notifications; each one takes a permit of
//! `--max-in-flight`, is sent, recorded in the ledger (or dead-lettered),
//! and only then counts as finished for its partition's commit.

pub mod config;
pub mod deliver;
pub mod email;
pub mod ledger;
pub mod metrics;
pub mod notice;
pub mod offsets;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use config::{Config, GroupProtocol};
use deliver::{Deliverer, Outcome, Policy};
use metrics::Metrics;
use notice::Notice;
use offsets::Tracker;

/// Errors of the delivery service's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {cause}")]
    Kafka { what: &'static str, cause: String },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Partitions of a dead-letter topic this service creates.
const DLQ_PARTITIONS: i32 = 6;

/// How often the lag gauges are refreshed (a watermark request per partition).
const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// How long a revocation waits for the sends in flight on its partitions.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long in-flight sends may take to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until `shutdown`, then lets what is in flight finish (bounded),
/// commits, and leaves the group.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let kafka = config.kafka.clone();
    common::kafka::check_options(&kafka)?;
    let topic = config.notifications_topic.clone();
    let ledger_topic = config.ledger_topic();
    let dlq_topic = config.dlq_topic();
    common::kafka::ensure_topic_with(
        &kafka,
        &ledger_topic,
        ledger::PARTITIONS,
        ledger::TOPIC_CONFIGS,
    )
    .await
    .context("creating the ledger topic")?;
    common::kafka::ensure_topic(&kafka, &dlq_topic, DLQ_PARTITIONS)
        .await
        .context("creating the dead-letter topic")?;

    let metrics = Metrics::new();
    let mailer = match &config.smtp_url {
        Some(url) => Some(email::Mailer::new(
            url,
            config.smtp_credentials_file.as_deref(),
            config.smtp_pool_size,
            config.smtp_timeout,
            &config.from,
        )?),
        None => None,
    };
    let webhook = match (&config.webhook_url, &config.webhook_secret_file) {
        (Some(url), Some(secret)) => Some(webhook::Webhook::new(
            url.clone(),
            secret,
            config.webhook_timeout,
        )?),
        _ => None,
    };
    let deliverer = Deliverer::new(
        mailer,
        webhook,
        Policy {
            max_attempts: config.max_attempts,
            retry_for: config.retry_for,
            min_delay: config.retry_min_delay,
            max_delay: config.retry_max_delay,
        },
        config.max_per_second,
        metrics.clone(),
    );
    let producer: FutureProducer = common::kafka::producer_config(&kafka)
        .create()
        .context("creating the ledger and dead-letter producer")?;

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let finished = Arc::new(Condvar::new());
    let context = GroupContext {
        tracker: tracker.clone(),
        finished: finished.clone(),
        generation: AtomicU64::new(0),
        metrics: metrics.clone(),
        topic: topic.clone(),
    };
    let protocol = match config.group_protocol {
        GroupProtocol::Consumer => "consumer",
        GroupProtocol::Classic => "classic",
    };
    let consumer: Arc<StreamConsumer<GroupContext>> = Arc::new(
        common::kafka::delivery_consumer_config(&kafka, &config.group, protocol)
            .create_with_context(context)
            .context("creating the notifications consumer")?,
    );
    consumer
        .subscribe(&[&topic])
        .context("subscribing to the notifications topic")?;
    info!(
        topic,
        group = config.group,
        protocol,
        max_in_flight = config.max_in_flight,
        "delivering"
    );

    let tasks = CancellationToken::new();
    let http = match config.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, metrics.clone(), tasks.clone()).await?),
        None => None,
    };
    let committer = tokio::spawn(commit_loop(
        consumer.clone(),
        tracker.clone(),
        metrics.clone(),
        topic.clone(),
        config.commit_interval,
        tasks.clone(),
    ));

    let shared = Arc::new(Shared {
        deliverer,
        ledger: ledger::Writer::new(producer.clone(), ledger_topic.clone()),
        producer,
        dlq_topic,
        topic: topic.clone(),
        tracker: tracker.clone(),
        finished,
        delivered: Mutex::new(ledger::Delivered::new()),
        metrics: metrics.clone(),
    });
    let permits = Arc::new(Semaphore::new(config.max_in_flight as usize));
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<Error>(1);
    let mut loaded_generation = 0;
    let mut sample = tokio::time::interval(config.commit_interval);
    let outcome: anyhow::Result<()> = loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(e) = fatal_rx.recv() => break Err(e.into()),
            // Here, between two records, every record the consumer returned
            // is in the tracker: its positions are safe to commit up to.
            _ = sample.tick() => {
                sample_positions(&*consumer, &tracker);
                continue;
            }
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m.detach(),
            Err(e) => {
                warn!(error = %e, "consuming the notifications topic");
                continue;
            }
        };
        // A new assignment: the ledger may hold folios a previous owner of
        // these partitions delivered after its last commit.
        let generation = consumer.context().generation.load(Ordering::SeqCst);
        if generation != loaded_generation {
            let args = kafka.clone();
            let t = ledger_topic.clone();
            let timeout = kafka.connect_timeout.max(Duration::from_secs(30));
            let folios = tokio::task::spawn_blocking(move || ledger::read_all(&args, &t, timeout))
                .await
                .context("ledger reader task")?
                .context("reading the delivery ledger")?;
            info!(folios = folios.len(), generation, "ledger read");
            shared.delivered.lock().unwrap().extend(folios);
            loaded_generation = generation;
        }
        let (partition, offset) = (m.partition(), m.offset());
        let Some(epoch) = tracker.lock().unwrap().received(partition, offset) else {
            debug!(partition, offset, "record of a partition no longer ours");
            continue;
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        metrics.in_flight((config.max_in_flight as usize - permits.available_permits()) as i64);
        let item = Item {
            partition,
            offset,
            epoch,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            timestamp_ms: m.timestamp().to_millis(),
        };
        let shared = shared.clone();
        let fatal = fatal_tx.clone();
        let in_flight = permits.clone();
        let max = config.max_in_flight as usize;
        tokio::spawn(async move {
            if let Err(e) = shared.handle(item).await {
                error!(error = %e, "a notification could not be recorded; stopping");
                let _ = fatal.try_send(e);
            }
            drop(permit);
            shared
                .metrics
                .in_flight((max - in_flight.available_permits()) as i64);
        });
    };

    // Drain: every permit back means nothing is in flight.
    let all = config.max_in_flight;
    match tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await {
        Ok(_) => info!("in-flight notifications finished"),
        Err(_) => warn!(
            unfinished = tracker.lock().unwrap().unfinished(),
            "in-flight notifications still unfinished after the drain timeout; they are re-sent by the next owner"
        ),
    }
    tasks.cancel();
    let _ = committer.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    // The last commit, then leave the group: dropping the last reference
    // closes the consumer, which blocks, off the async workers.
    drop(shared);
    tokio::task::spawn_blocking(move || {
        commit_now(&*consumer, &tracker, &topic, CommitMode::Sync);
        consumer.unsubscribe();
        drop(consumer);
    })
    .await
    .context("closing the consumer")?;
    outcome
}

/// Starts `/metrics` on `addr` until `stop`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = common::http::bind(addr).await?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { common::http::metrics(m.encode()) }
        }),
    );
    Ok(tokio::spawn(common::http::serve(listener, router, stop)))
}

/// One notification on its way, with where it came from.
struct Item {
    partition: i32,
    offset: i64,
    epoch: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp_ms: Option<i64>,
}

/// What every notification's task uses.
struct Shared {
    deliverer: Deliverer,
    ledger: ledger::Writer,
    producer: FutureProducer,
    dlq_topic: String,
    topic: String,
    tracker: Arc<Mutex<Tracker>>,
    /// Signalled at every finish (a revocation waits on it).
    finished: Arc<Condvar>,
    /// Folios the ledger records as delivered (read at each assignment) and
    /// those this process delivered since, with their notification's place.
    delivered: Mutex<ledger::Delivered>,
    metrics: Metrics,
}

impl Shared {
    /// Delivers (or dead-letters) one notification, then marks it finished.
    /// An error means it could be neither recorded nor dead-lettered.
    async fn handle(&self, item: Item) -> Result<()> {
        match Notice::parse(item.key.as_deref(), &item.value) {
            Err(malformed) => {
                warn!(
                    partition = item.partition,
                    offset = item.offset,
                    reason = malformed.code(),
                    "malformed notification"
                );
                self.metrics.failure("none", malformed.code());
                self.dead_letter(&item, "none", malformed.code(), &malformed.to_string(), 0)
                    .await?;
            }
            Ok(n)
                if ledger::already_delivered(
                    self.delivered.lock().unwrap().get(&n.folio),
                    (item.partition, item.offset),
                ) =>
            {
                debug!(folio = %n.folio, "already delivered (ledger)");
                self.metrics.skipped();
            }
            Ok(n) => {
                let outcomes = self.deliverer.deliver(&n).await;
                let now_ms = now_ms();
                let latency = item
                    .timestamp_ms
                    .map_or(0.0, |t| (now_ms - t) as f64 / 1000.0);
                let mut delivered = Vec::new();
                for (channel, outcome) in outcomes {
                    match outcome {
                        Outcome::Delivered { attempts } => {
                            debug!(folio = %n.folio, channel, attempts, "delivered");
                            delivered.push(channel);
                        }
                        Outcome::DeadLetter {
                            reason,
                            detail,
                            attempts,
                        } => {
                            info!(folio = %n.folio, channel, reason, attempts, "not deliverable, to the dead-letter topic");
                            self.dead_letter(&item, channel, &reason, &detail, attempts)
                                .await?;
                        }
                    }
                }
                if !delivered.is_empty() {
                    let message_id = email::message_id(&n.folio);
                    self.ledger
                        .record(&ledger::Entry {
                            folio: &n.folio,
                            channels: &delivered,
                            message_id: &message_id,
                            partition: item.partition,
                            offset: item.offset,
                            delivered_at_ms: now_ms,
                        })
                        .await?;
                    self.delivered
                        .lock()
                        .unwrap()
                        .insert(n.folio.clone(), Some((item.partition, item.offset)));
                    // Counted once recorded: what /metrics calls sent is
                    // what a restart will not send again.
                    for channel in delivered {
                        self.metrics.sent(channel, n.kind.as_str(), latency);
                    }
                }
            }
        }
        self.tracker
            .lock()
            .unwrap()
            .finish(item.partition, item.epoch, item.offset);
        self.finished.notify_all();
        Ok(())
    }

    /// Writes the original record to the dead-letter topic with the reason
    /// and its source in headers.
    async fn dead_letter(
        &self,
        item: &Item,
        channel: &str,
        reason: &str,
        detail: &str,
        attempts: u32,
    ) -> Result<()> {
        let (partition, offset, attempts) = (
            item.partition.to_string(),
            item.offset.to_string(),
            attempts.to_string(),
        );
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("cyberday.reason", reason),
            ("cyberday.detail", detail),
            ("cyberday.channel", channel),
            ("cyberday.attempts", &attempts),
            ("cyberday.source.topic", &self.topic),
            ("cyberday.source.partition", &partition),
            ("cyberday.source.offset", &offset),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::to(&self.dlq_topic)
            .payload(&item.value)
            .headers(headers);
        if let Some(key) = &item.key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(120))
            .await
            .map_err(|(e, _)| Error::Kafka {
                what: "writing the dead-letter topic",
                cause: e.to_string(),
            })?;
        self.metrics.dead_letter(reason);
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Commits the finished prefixes every `interval` and updates the lag gauges.
async fn commit_loop(
    consumer: Arc<StreamConsumer<GroupContext>>,
    tracker: Arc<Mutex<Tracker>>,
    metrics: Metrics,
    topic: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    let mut last_lag = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        commit_now(&*consumer, &tracker, &topic, CommitMode::Async);
        if last_lag.elapsed() < LAG_INTERVAL {
            continue;
        }
        last_lag = tokio::time::Instant::now();
        let positions = tracker.lock().unwrap().positions();
        let (c, t) = (consumer.clone(), topic.clone());
        // Watermark requests block: off the async workers, and bounded.
        let highs = tokio::task::spawn_blocking(move || {
            positions
                .into_iter()
                .filter_map(|(p, pos)| {
                    let (_, high) = c.fetch_watermarks(&t, p, Duration::from_secs(1)).ok()?;
                    Some((p, (high - pos).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (partition, lag) in highs {
            metrics.lag(partition, lag);
        }
    }
}

/// Passes the consumer's positions to `tracker`; see
/// [`Tracker::consumer_position`] for when that is safe.
fn sample_positions<C: Consumer<GroupContext>>(consumer: &C, tracker: &Mutex<Tracker>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut tracker = tracker.lock().unwrap();
    for e in positions.elements() {
        if let Offset::Offset(o) = e.offset() {
            tracker.consumer_position(e.partition(), o);
        }
    }
}

/// Commits what moved in `tracker`.
fn commit_now<C: Consumer<GroupContext>>(
    consumer: &C,
    tracker: &Mutex<Tracker>,
    topic: &str,
    mode: CommitMode,
) {
    let moved = tracker.lock().unwrap().to_commit();
    if moved.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in &moved {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        // The next commit carries the same or a later position.
        warn!(error = %e, "committing the delivered offsets");
    }
}

/// Keeps the tracker in step with the group's assignment.
struct GroupContext {
    tracker: Arc<Mutex<Tracker>>,
    /// Signalled at every finish.
    finished: Arc<Condvar>,
    /// Bumped at every assignment: the consume loop then re-reads the ledger.
    generation: AtomicU64,
    metrics: Metrics,
    topic: String,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut commit = TopicPartitionList::new();
        {
            // Let the sends in flight on these partitions finish (bounded),
            // so the next owner finds them in the ledger and the commit
            // instead of sending them again. The consume loop is here, so
            // nothing new starts; block_in_place hands this worker's other
            // tasks to another thread meanwhile.
            let started = std::time::Instant::now();
            let (mut tracker, waited) = tokio::task::block_in_place(|| {
                let guard = self.tracker.lock().unwrap();
                self.finished
                    .wait_timeout_while(guard, REVOKE_DRAIN_TIMEOUT, |t| {
                        t.unfinished_in(&partitions) > 0
                    })
                    .unwrap()
            });
            if waited.timed_out() {
                warn!(
                    ?partitions,
                    unfinished = tracker.unfinished_in(&partitions),
                    "sends on revoked partitions still unfinished; the next owner may send them again"
                );
            } else {
                debug!(?partitions, waited = ?started.elapsed(), "in-flight sends of revoked partitions finished");
            }
            for e in tpl.elements() {
                if let Some(offset) = tracker.revoke(e.partition()) {
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        e.partition(),
                        Offset::Offset(offset),
                    );
                }
                self.metrics.forget_partition(e.partition());
            }
        }
        info!(?partitions, "partitions revoked");
        if commit.count() > 0 {
            // What finished before the revocation is not read again by the next owner.
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                warn!(error = %e, "committing the revoked partitions");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) if tpl.count() > 0 => {
                let mut tracker = self.tracker.lock().unwrap();
                for e in tpl.elements() {
                    tracker.assign(e.partition());
                }
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "partitions assigned");
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.metrics.rebalance();
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
            _ => {}
        }
    }
}
