//! The dead-letter producer: every invalid record goes to `<topic>.DLQ`
//! unchanged (key, value and headers), plus headers saying why and where it
//! came from. A write is retried until the brokers confirm it; its result is
//! reported to the master only after that (see [`crate::batch`]).

use std::future::Future;
use std::time::Duration;

use common::classify::InvalidReason;
use common::cli::KafkaArgs;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::Message;

use crate::backoff::Backoff;

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

/// The dead-letter topic of an input topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.DLQ")
}

/// Writes invalid records to their dead-letter topic.
#[derive(Clone)]
pub struct Dlq {
    producer: FutureProducer,
}

/// One invalid record, ready to be written (and written again if needed).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it goes.
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The original headers followed by ours.
    pub headers: OwnedHeaders,
    /// Where it came from, and under which assignment it was read.
    pub source: Source,
}

/// Identifies the source record of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
}

impl DeadLetter {
    /// The dead letter for `message`, read under `generation`, found invalid
    /// for `reason`.
    pub fn new(message: &BorrowedMessage<'_>, reason: &InvalidReason, generation: u64) -> Self {
        let mut headers = message
            .headers()
            .map_or_else(|| OwnedHeaders::new_with_capacity(5), |h| h.detach());
        for (key, value) in reason_headers(
            reason,
            message.topic(),
            message.partition(),
            message.offset(),
        ) {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        Self {
            topic: dlq_topic(message.topic()),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
            source: Source {
                partition: message.partition(),
                offset: message.offset(),
                generation,
            },
        }
    }
}

/// The headers added to a dead letter, in order.
pub fn reason_headers(
    reason: &InvalidReason,
    topic: &str,
    partition: i32,
    offset: i64,
) -> [(&'static str, String); 5] {
    [
        (HEADER_REASON, reason.code().to_owned()),
        (HEADER_DETAIL, reason.to_string()),
        (HEADER_SOURCE_TOPIC, topic.to_owned()),
        (HEADER_SOURCE_PARTITION, partition.to_string()),
        (HEADER_SOURCE_OFFSET, offset.to_string()),
    ]
}

/// First and longest wait between attempts to write one dead letter.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Dlq {
    /// A producer with the project's delivery settings (`acks=all`, idempotence).
    pub fn new(args: &KafkaArgs) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = common::kafka::producer_config(args).create()?;
        Ok(Self { producer })
    }

    /// Writes `letter`, retrying until the brokers confirm it; resolves to
    /// its source. A record whose write keeps failing is never reported as
    /// done, so its partition stops there rather than lose it.
    pub fn write(&self, letter: DeadLetter) -> impl Future<Output = Source> + Send + 'static {
        let producer = self.producer.clone();
        async move {
            let source = letter.source;
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            loop {
                let mut record = FutureRecord::<[u8], [u8]>::to(&letter.topic)
                    .payload(&letter.value)
                    .headers(letter.headers.clone());
                if let Some(key) = &letter.key {
                    record = record.key(key);
                }
                // Timeout::Never: wait for room in the client's queue instead of failing.
                match producer.send(record, Timeout::Never).await {
                    Ok(delivery) => {
                        tracing::debug!(
                            partition = source.partition,
                            offset = source.offset,
                            dlq_partition = delivery.partition,
                            dlq_offset = delivery.offset,
                            "dead letter written"
                        );
                        return source;
                    }
                    Err((error, _)) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            partition = source.partition,
                            offset = source.offset,
                            topic = letter.topic,
                            %error,
                            retry_in = ?delay,
                            "dead-letter write failed; the partition waits for it"
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_say_why_and_where() {
        let reason = InvalidReason::BadFolio("AB-12".into());
        let headers = reason_headers(&reason, "DataTopic", 3, 1234);
        assert_eq!(
            headers.map(|(k, v)| format!("{k}={v}")),
            [
                "cyberday.reason=bad_folio",
                "cyberday.detail=folio must look like ABC-1234 (got \"AB-12\")",
                "cyberday.source.topic=DataTopic",
                "cyberday.source.partition=3",
                "cyberday.source.offset=1234",
            ]
        );
        assert_eq!(dlq_topic("DataTopic"), "DataTopic.DLQ");
    }
}
