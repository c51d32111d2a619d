//! Experiment helper: tails every partition of a topic from its end for a
//! while and prints produce → received percentiles (ms). KEY=VALUE pairs are
//! librdkafka consumer properties; `debug=fetch` prints librdkafka's fetch
//! decisions with a millisecond clock to stderr (how the 500 ms pause after
//! a partition's end was found). With `TAIL_SLOW_MS=N` in the environment,
//! every record later than N ms is printed to stdout as `received_ms
//! partition offset latency_ms` (to see whether stalls hit one partition or
//! all, and when).
//! `cargo run --release -p bench --example tail_latency -- BOOTSTRAP TOPIC SECS [KEY=VALUE ...]`
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Prints librdkafka's log lines (with `debug=fetch`: every fetch decision).
struct Log;
impl ClientContext for Log {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, line: &str) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        eprintln!("{ms} {fac} {line}");
    }
}
impl ConsumerContext for Log {}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, topic, secs, extra @ ..] = args.as_slice() else {
        anyhow::bail!("usage: tail_latency BOOTSTRAP TOPIC SECS [KEY=VALUE ...]");
    };
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("group.id", "tail-latency")
        .set("enable.auto.commit", "false");
    for kv in extra {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cfg.set(k, v);
    }
    cfg.set_log_level(RDKafkaLogLevel::Debug);
    let c: BaseConsumer<Log> = cfg.create_with_context(Log)?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::End)?;
    }
    c.assign(&tpl)?;
    let slow_ms: Option<i64> = std::env::var("TAIL_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    let until = Instant::now() + Duration::from_secs(secs.parse()?);
    while Instant::now() < until {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            if let Some(ts) = m.timestamp().to_millis() {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
                let latency = (now - ts).max(0);
                h.saturating_record(latency as u64);
                if slow_ms.is_some_and(|s| latency > s) {
                    println!("{now} {} {} {latency}", m.partition(), m.offset());
                }
            }
        }
    }
    println!(
        "n={} p50={} p90={} p99={} p99.9={} max={}",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    Ok(())
}
