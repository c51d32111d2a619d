//! The ledger of delivered folios: a compacted topic (key = folio) written
//! once the provider acknowledged a send, read whole after every start and
//! every rebalance, so a process that takes a partition over skips what its
//! predecessor already delivered, even past that predecessor's last commit.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::cli::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::{Error, Result};

/// Partitions of a ledger topic this service creates.
pub const PARTITIONS: i32 = 6;

/// The topic configuration of a ledger this service creates: only the last
/// record per folio is kept.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// The value of one ledger record.
#[derive(Serialize)]
pub struct Entry<'a> {
    pub folio: &'a str,
    /// The channels that delivered it.
    pub channels: &'a [&'a str],
    /// The e-mail's `Message-ID` (also the webhook's `Idempotency-Key` source).
    pub message_id: &'a str,
    /// Where the notification was in the notifications topic.
    pub partition: i32,
    pub offset: i64,
    pub delivered_at_ms: i64,
}

/// Where a delivered notification was in the notifications topic, by folio.
pub type Delivered = HashMap<String, Source>;

/// A notification's place in the notifications topic; `None` when a ledger
/// record does not say (then its folio alone counts as delivered).
pub type Source = Option<(i32, i64)>;

/// Whether the notification at `at` with a folio the ledger has as
/// `recorded` was already delivered. The notifications topic holds each
/// purchase once, so its place identifies it; a folio two purchases share
/// (the synthetic producer's folios can collide) does not hide the second.
pub fn already_delivered(recorded: Option<&Source>, at: (i32, i64)) -> bool {
    match recorded {
        None => false,
        Some(None) => true,
        Some(Some(place)) => *place == at,
    }
}

/// Writes one record per delivered folio, waiting for the brokers' ack.
#[derive(Clone)]
pub struct Writer {
    producer: FutureProducer,
    topic: String,
}

impl Writer {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Records `entry`; `Ok` once every in-sync replica has it.
    pub async fn record(&self, entry: &Entry<'_>) -> Result<()> {
        let value = serde_json::to_vec(entry).expect("plain struct serializes");
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(entry.folio)
                    .payload(&value),
                Duration::from_secs(120),
            )
            .await
            .map(drop)
            .map_err(|(e, _)| Error::Kafka {
                what: "writing the delivery ledger",
                cause: e.to_string(),
            })
    }
}

/// The `partition` and `offset` of a ledger value.
fn source(value: Option<&[u8]>) -> Source {
    let v: serde_json::Value = serde_json::from_slice(value?).ok()?;
    Some((
        i32::try_from(v.get("partition")?.as_i64()?).ok()?,
        v.get("offset")?.as_i64()?,
    ))
}

/// Every folio in the ledger `topic` up to its end offsets as they are now,
/// with where its notification was. Blocking: call it off the async workers.
pub fn read_all(args: &KafkaArgs, topic: &str, timeout: Duration) -> Result<Delivered> {
    let kafka = |what: &'static str| {
        move |e: KafkaError| Error::Kafka {
            what,
            cause: e.to_string(),
        }
    };
    let consumer: BaseConsumer =
        common::kafka::reader_config(args, "cyberday-delivery-ledger-reader")
            .create()
            .map_err(kafka("creating the ledger reader"))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka("reading the ledger's metadata"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeSet::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(kafka("reading the ledger's offsets"))?;
        if high > low {
            open.insert((p, high));
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(kafka("assigning the ledger"))?;
        }
    }
    let mut folios = Delivered::new();
    if open.is_empty() {
        return Ok(folios);
    }
    consumer
        .assign(&tpl)
        .map_err(kafka("assigning the ledger"))?;
    let ends: std::collections::BTreeMap<i32, i64> = open.iter().copied().collect();
    let mut left: BTreeSet<i32> = ends.keys().copied().collect();
    let deadline = Instant::now() + timeout;
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Kafka {
                what: "reading the delivery ledger",
                cause: format!("not at its end after {timeout:?}"),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("reading the delivery ledger")(e)),
            Some(Ok(m)) => {
                if let Some(folio) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    folios.insert(folio.to_owned(), source(m.payload()));
                }
                if m.offset() + 1 >= ends[&m.partition()] {
                    left.remove(&m.partition());
                }
            }
        }
    }
    Ok(folios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folio_counts_as_delivered_only_for_its_own_notification() {
        let value = serde_json::to_vec(&Entry {
            folio: "QZX-0042",
            channels: &["email"],
            message_id: "<QZX-0042@notificaciones.cyberday>",
            partition: 2,
            offset: 41,
            delivered_at_ms: 1,
        })
        .unwrap();
        let recorded = source(Some(&value));
        assert_eq!(recorded, Some((2, 41)));
        assert!(already_delivered(Some(&recorded), (2, 41)));
        assert!(
            !already_delivered(Some(&recorded), (5, 7)),
            "another purchase, same folio"
        );
        assert!(!already_delivered(None, (2, 41)));
        assert!(
            already_delivered(Some(&source(Some(b"junk"))), (9, 9)),
            "unknown place: by folio"
        );
    }
}
