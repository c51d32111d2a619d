//! Shared by the producer's integration tests: the test cluster's address,
//! unique topic names, running the real binary, and an independent consumer.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Bootstrap servers of the test cluster; panics with how to start one when
/// it is not reachable, so no test silently passes without Kafka.
pub fn bootstrap() -> String {
    e2e::test_bootstrap()
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    e2e::unique(prefix)
}

/// Runs the real `producer` binary and returns its output.
pub fn run_producer(bootstrap: &str, topic: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_producer"))
        .args(["--bootstrap-servers", bootstrap, "--topic", topic])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running the producer binary")
}

/// One record as an independent consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Reads every record of `topic` from the beginning until `expected` arrived
/// (or `timeout` passed), with a plain librdkafka consumer that shares no
/// code with the producer. Sorted by (partition, offset).
pub fn read_all(bootstrap: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("group.id", format!("reader-{topic}"))
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            seen.push(Seen {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    // Anything beyond `expected` would be a duplicate: give it a moment to show.
    let linger = Instant::now() + Duration::from_secs(1);
    while Instant::now() < linger {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(Seen {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    seen.sort_by_key(|s| (s.partition, s.offset));
    seen
}

/// Parses the producer's summary line into its counters.
pub fn summary_counts(stderr: &[u8]) -> HashMap<String, u64> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rfind(|l| l.starts_with("producer: sent "))
        .unwrap_or_else(|| panic!("no summary line in producer output:\n{text}"));
    let mut counts = HashMap::new();
    let words: Vec<&str> = line.split_whitespace().collect();
    counts.insert("sent".into(), words[2].parse().unwrap());
    for pair in words.windows(2) {
        let label = pair[1].trim_end_matches([',', ';']);
        if ["no_purchase", "short", "long", "invalid", "failed"].contains(&label) {
            if let Ok(n) = pair[0].parse() {
                counts.insert(label.to_string(), n);
            }
        }
    }
    if let Some(last) = words.last() {
        counts.insert("failed".into(), last.parse().unwrap());
    }
    counts
}
