//! The dead letters: each invalid record goes to `<topic>.DLQ` as it came
//! (key, value, headers), plus headers saying why and where it was read.
//! One the brokers refuse as too large is remembered by the producer's
//! delivery callback ([`Context`]) and, after the abort and rewind, written
//! again cut down.

use std::collections::HashSet;
use std::sync::Mutex;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use tracing::{debug, warn};

use super::{send, Output};
use crate::coordinator::DeadLetter;

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

/// The producer's callbacks: remembers the dead letters the brokers refused
/// as too large, so the replay after the abort writes them cut down.
pub(super) struct Context {
    pub(super) dlq: String,
    /// Sources (partition, offset) of the dead letters refused as too large.
    pub(super) refused: Mutex<HashSet<(i32, i64)>>,
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

impl Output {
    /// Queues one dead letter, cut down if the brokers refused it whole
    /// before or the client refuses it now.
    pub(super) fn send_dead_letter(&self, letter: &DeadLetter) -> KafkaResult<()> {
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
