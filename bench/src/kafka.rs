//! The benchmark's own view of Kafka, independent of the system under test:
//! topic creation, end and committed offsets, the bare consumer that sets
//! the ceiling, and a bare consumer that measures Kafka's own latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::procs;
use crate::stats::Split;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Next offset per partition.
pub type Offsets = BTreeMap<i32, i64>;

/// Creates `topic` (RF 3, min.insync.replicas=2) as the product would.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let args = common::cli::KafkaArgs {
        bootstrap_servers: bootstrap.into(),
        topic: topic.into(),
        options: vec![],
        kafka_options_file: None,
        connect_timeout: TIMEOUT,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let n = rt
        .block_on(common::kafka::ensure_topic(&args, topic, partitions))
        .with_context(|| format!("creating topic {topic}"))?;
    if n != partitions as usize {
        bail!("topic {topic} exists with {n} partitions, not {partitions}");
    }
    Ok(())
}

fn client(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // As the workers' consumers: no 500 ms pause of a partition after
        // it was read to its end (see common::kafka::worker_consumer_config).
        .set("fetch.error.backoff.ms", "20")
        .create()
        .context("creating a Kafka client")
}

/// High watermark of every partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Result<Offsets> {
    let c = client(bootstrap, "cyberday-bench-meta")?;
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let t = md.topics().first().context("no topic in metadata")?;
    let mut out = Offsets::new();
    for p in t.partitions() {
        let (_, high) = c
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{}", p.id()))?;
        out.insert(p.id(), high);
    }
    if out.is_empty() {
        bail!("topic {topic} has no partitions (does it exist?)");
    }
    Ok(out)
}

/// Reads a consumer group's committed offsets, over and over, with one client.
pub struct CommittedReader {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl CommittedReader {
    pub fn new(bootstrap: &str, topic: &str, group: &str, partitions: &Offsets) -> Result<Self> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions.keys() {
            tpl.add_partition(topic, *p);
        }
        Ok(Self {
            consumer: client(bootstrap, group)?,
            tpl,
        })
    }

    /// Committed offsets; partitions without a commit are absent.
    pub fn read(&self) -> Result<Offsets> {
        let c = self
            .consumer
            .committed_offsets(self.tpl.clone(), TIMEOUT)
            .context("reading committed offsets")?;
        Ok(c.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// True when every partition's committed offset has reached `end`.
    pub fn reached(&self, end: &Offsets) -> Result<bool> {
        let c = self.read()?;
        Ok(end.iter().all(|(p, e)| c.get(p).is_some_and(|o| o >= e)))
    }
}

/// One drain of the topic by the bare consumer.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRun {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub events_per_sec: f64,
    /// CPU time of this process (the consumer's threads) during the drain.
    pub cpu_secs: Option<f64>,
}

/// A bare librdkafka consumer — assign every partition from the beginning,
/// count payloads, parse nothing — until it has read up to `end`. The clock
/// starts before the client is created, as the pipeline's does.
pub fn ceiling(bootstrap: &str, topic: &str, end: &Offsets, group: &str) -> Result<CeilingRun> {
    let cpu_before = procs::cpu_secs(std::process::id());
    let started = Instant::now();
    let consumer = client(bootstrap, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in end.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl).context("assigning the partitions")?;
    let mut next: BTreeMap<i32, i64> = end.keys().map(|p| (*p, 0)).collect();
    let mut unfinished = end.iter().filter(|(_, e)| **e > 0).count();
    let (mut records, mut bytes) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(600);
    while unfinished > 0 {
        if Instant::now() > deadline {
            bail!("the bare consumer did not reach {end:?} in 600 s (at {next:?})");
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.context("bare consumer")?;
        records += 1;
        bytes += m.payload_len() as u64;
        let p = m.partition();
        let was_done = next[&p] >= end[&p];
        next.insert(p, m.offset() + 1);
        if !was_done && next[&p] >= end[&p] {
            unfinished -= 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = procs::cpu_secs(std::process::id());
    Ok(CeilingRun {
        records,
        bytes,
        secs,
        events_per_sec: records as f64 / secs,
        cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    })
}

/// Deletes every topic whose name starts with `prefix` (the benchmark's
/// inputs, their dead-letter topics and its notifications topic), so runs do
/// not fill the brokers' disks. Returns how many.
pub fn delete_topics(bootstrap: &str, prefix: &str) -> Result<usize> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let meta = client(bootstrap, "cyberday-bench-meta")?
        .fetch_metadata(None, TIMEOUT)
        .context("listing topics")?;
    let names: Vec<String> = meta
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a Kafka admin client")?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt
        .block_on(admin.delete_topics(&refs, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .context("deleting the benchmark's topics")?;
    Ok(results.iter().filter(|r| r.is_ok()).count())
}

/// A bare consumer tailing `topic` from `start` on its own thread,
/// recording each record's Kafka timestamp → received, in ms: what Kafka
/// alone costs, next to the pipeline's produce-to-notify latency. Records
/// before `cut` (unknown until it is set) count as the ramp. Stops when
/// `stop` is set and returns the latencies.
pub fn spawn_tail(
    bootstrap: &str,
    topic: &str,
    start: &Offsets,
    group: &str,
    stop: Arc<AtomicBool>,
    cut: Arc<OnceLock<Offsets>>,
) -> Result<std::thread::JoinHandle<Result<Split>>> {
    let consumer = client(bootstrap, group)?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in start {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    consumer.assign(&tpl).context("assigning the partitions")?;
    Ok(std::thread::spawn(move || {
        let mut split = Split::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.context("tail consumer")?;
            if let Some(ts) = m.timestamp().to_millis() {
                let ms = now_ms().saturating_sub(ts).max(0) as u64;
                split.record(cut.get(), m.partition(), m.offset(), ms);
            }
        }
        Ok(split)
    }))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
