//! The shopper producer: writes synthetic purchase events into `DataTopic`.
//!
//! - [`config`]: flags and environment variables.
//! - [`generate`]: reproducible shoppers from embedded word lists.
//! - [`run`]: paces records at `--rate`, sends them keyed by `id` with
//!   `acks=all` and idempotence, confirms every delivery, and reports a
//!   [`Summary`].
//! - [`progress`]: with `--count`, a progress bar on a terminal (plain
//!   lines otherwise) on stderr.

pub mod config;
pub mod generate;
pub mod progress;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio_util::sync::CancellationToken;

use config::Config;
use generate::{Class, Generator};

/// How long to wait, at exit, for records still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts confirmed and failed deliveries by class, from librdkafka's
/// delivery-report thread.
#[derive(Default)]
struct Deliveries {
    delivered: [AtomicU64; 4],
    failed: AtomicU64,
}

impl Deliveries {
    /// Records confirmed so far, of every class.
    fn confirmed(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }
}

struct DeliveryCounter(Arc<Deliveries>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, class: usize) {
        match result {
            Ok(m) => {
                self.0.delivered[class].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    class = Class::ALL[class].as_str(),
                    "delivered"
                );
            }
            Err((e, _)) => {
                let n = self.0.failed.fetch_add(1, Ordering::Relaxed);
                // The first failures say why; the count says how many.
                if n < 10 {
                    tracing::warn!(error = %e, "record not delivered");
                }
            }
        }
    }
}

/// What the producer did, printed on exit.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub topic: String,
    pub seed: u64,
    /// Records handed to the client.
    pub attempted: u64,
    /// Records the brokers confirmed, by [`Class::index`].
    pub delivered: [u64; 4],
    /// Records that failed or were still unconfirmed at exit.
    pub failed: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn delivered_total(&self) -> u64 {
        self.delivered.iter().sum()
    }

    pub fn all_delivered(&self) -> bool {
        self.failed == 0 && self.delivered_total() == self.attempted
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        write!(
            f,
            "producer: sent {} records to {} in {:.1}s ({:.0}/s), seed {}: {} no_purchase, {} short, {} long, {} invalid; failed {}",
            self.delivered_total(),
            self.topic,
            secs,
            self.delivered_total() as f64 / secs,
            self.seed,
            self.delivered[Class::NoPurchase.index()],
            self.delivered[Class::Short.index()],
            self.delivered[Class::Long.index()],
            self.delivered[Class::Invalid.index()],
            self.failed,
        )
    }
}

/// Produces until `--count` records are sent or `shutdown` is cancelled, then
/// waits for every record in flight to be confirmed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let ratios = config.ratios().map_err(anyhow::Error::msg)?;
    let seed = config.seed.unwrap_or_else(rand::random);
    let topic = config.kafka.topic.clone();

    let partitions = common::kafka::ensure_topic(&config.kafka, &topic, config.partitions)
        .await
        .with_context(|| format!("preparing topic {topic}"))?;
    tracing::info!(
        topic,
        partitions,
        seed,
        rate = config.rate,
        count = config.count,
        "producing"
    );

    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<DeliveryCounter> = common::kafka::producer_config(&config.kafka)
        .create_with_context(DeliveryCounter(deliveries.clone()))
        .map_err(common::kafka::Error::Config)
        .context("creating the Kafka producer")?;

    // Connect before the first record: the client opens its connections to
    // the partition leaders and gets its producer id only once records wait
    // for them, so the first 100-500 ms of records (1,000-5,000 at 10k/s)
    // used to carry that set-up in their latency. A ListOffsets request to
    // each leader opens the connections now. Not fatal: records would wait
    // for the connections as before.
    let connect =
        tokio::task::block_in_place(|| connect_to_leaders(producer.client(), &topic, partitions));
    if let Err(e) = connect {
        tracing::warn!(topic, error = %e, "could not reach every partition leader before producing; the first records wait for them");
    }

    let progress_done = CancellationToken::new();
    let progress = config.count.map(|total| {
        let deliveries = deliveries.clone();
        tokio::spawn(progress::report(
            total,
            move || deliveries.confirmed(),
            progress_done.clone(),
        ))
    });

    let mut generator = Generator::new(seed, ratios);
    let started = Instant::now();
    let mut attempted = 0u64;
    'produce: while config.count.is_none_or(|c| attempted < c) {
        if config.rate > 0.0 {
            let due = started + Duration::from_secs_f64(attempted as f64 / config.rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shutdown.cancelled() => break 'produce,
            }
        } else if shutdown.is_cancelled() {
            break;
        }
        let record = generator.next_record();
        let mut base = BaseRecord::with_opaque_to(&topic, record.class.index())
            .key(record.key.as_str())
            .payload(record.value.as_slice())
            .timestamp(now_millis());
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The client's queue is full: wait for deliveries to make room.
                    base = back;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = shutdown.cancelled() => break 'produce,
                    }
                }
                Err((e, _)) => return Err(e).context("handing a record to the Kafka client"),
            }
        }
        attempted += 1;
    }

    let flushed = tokio::task::spawn_blocking(move || {
        let result = producer.flush(FLUSH_TIMEOUT);
        drop(producer);
        result
    })
    .await
    .context("flush task")?;
    progress_done.cancel();
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    if let Err(e) = flushed {
        tracing::warn!(error = %e, "records still unconfirmed after {FLUSH_TIMEOUT:?}");
    }

    let delivered = Class::ALL.map(|c| deliveries.delivered[c.index()].load(Ordering::Relaxed));
    let confirmed: u64 = delivered.iter().sum();
    let failed = attempted.saturating_sub(confirmed);
    Ok(Summary {
        topic,
        seed,
        attempted,
        delivered,
        failed,
        elapsed: started.elapsed(),
    })
}

/// How long the producer waits for each partition leader before its first record.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks each partition's leader for its offsets, which opens the client's
/// connection to it (blocking).
fn connect_to_leaders<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partitions: usize,
) -> Result<(), KafkaError> {
    for partition in 0..partitions as i32 {
        client.fetch_watermarks(topic, partition, CONNECT_TIMEOUT)?;
    }
    Ok(())
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
