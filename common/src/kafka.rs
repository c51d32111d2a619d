//! Kafka client settings and small admin helpers.
//!
//! The librdkafka settings that carry our delivery semantics are written out
//! here, once, with the reason for each; `-X` overrides are applied last.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use crate::cli::KafkaArgs;

/// Errors talking to Kafka, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not reach Kafka at {bootstrap} within {timeout:?} ({cause}); is the cluster up? Start the local one with: deploy/local/kafka.sh up")]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        cause: String,
    },
    #[error("Kafka at {bootstrap} refused this client's {what} ({cause}); {fix}")]
    Refused {
        bootstrap: String,
        what: &'static str,
        cause: String,
        fix: &'static str,
    },
    #[error("invalid Kafka client setting ({}); check the -X options, KAFKA_OPTIONS and --kafka-options-file", without_value(.0))]
    Config(rdkafka::error::KafkaError),
    #[error("topic {topic} does not exist and could not be created: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("Kafka metadata for topic {topic}: {reason}")]
    Metadata { topic: String, reason: String },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A client error as text, without the rejected value: rdkafka's own text
/// includes it, and it may be a password.
fn without_value(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => format!("{key}: {desc}"),
        other => other.to_string(),
    }
}

/// Checks the user's librdkafka options (file and `-X`) on their own, so a
/// wrong one is reported by [`Error::Config`], which never shows its value,
/// before any client's creation could report it with the value.
pub fn check_options(args: &KafkaArgs) -> Result<()> {
    let mut c = ClientConfig::new();
    apply_overrides(&mut c, args);
    c.create_native_config().map(drop).map_err(Error::Config)
}

fn base_config(args: &KafkaArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap_servers);
    c
}

/// Applies the user's options (`--kafka-options-file`, then `-X`); they win
/// over ours.
fn apply_overrides(c: &mut ClientConfig, args: &KafkaArgs) {
    for (k, v) in args.user_options() {
        c.set(k, v);
    }
}

/// Settings for every producer that writes records we must not lose or repeat.
pub fn producer_config(args: &KafkaArgs) -> ClientConfig {
    let mut c = base_config(args);
    // A write is confirmed only once every in-sync replica has it; with RF 3 and
    // min.insync.replicas=2 that survives the loss of any one broker.
    c.set("acks", "all");
    // Retries after a lost response neither duplicate nor reorder records.
    c.set("enable.idempotence", "true");
    // Keep retrying through a broker failover rather than failing the record.
    c.set("delivery.timeout.ms", "120000");
    // Throughput: small batching delay and cheap compression.
    c.set("linger.ms", "5");
    c.set("compression.type", "lz4");
    // One produce request in flight per broker. With idempotence and more,
    // librdkafka's broker threads busy-poll between a request and its
    // response: at 10k events/s the producer used 0.85 CPU-s per second with
    // the default 5 and 0.2 with 1, CPU the brokers on the same cores then
    // lacked (a consumer tailing the topic: p50 35-87 ms before, 5-8 after).
    // Batches grow while a request is out, so throughput holds (300k
    // records as fast as possible: 91k/s with 5, 122k/s with 1).
    c.set("max.in.flight.requests.per.connection", "1");
    apply_overrides(&mut c, args);
    c
}

/// Settings for the master's transactional producer, which writes the
/// notifications and dead letters and commits the group's offsets in one
/// Kafka transaction. `transactional_id` must stay the same across restarts
/// of one logical master.
pub fn transactional_producer_config(args: &KafkaArgs, transactional_id: &str) -> ClientConfig {
    let mut c = base_config(args);
    // One stable id per logical master: `init_transactions` under it aborts
    // whatever a previous instance left open and fences that instance, so a
    // zombie master can never commit again.
    c.set("transactional.id", transactional_id);
    // Required by transactions: retries after a lost response neither
    // duplicate nor reorder records.
    c.set("enable.idempotence", "true");
    // A write counts only once every in-sync replica has it (RF 3,
    // min.insync.replicas=2: survives the loss of any one broker).
    c.set("acks", "all");
    // A master that hangs or dies mid-transaction has it aborted by the
    // brokers after this long, so read_committed readers and the group's
    // offsets are never held back for longer. Far above the commit interval;
    // librdkafka also bounds its message timeout by it.
    c.set("transaction.timeout.ms", "30000");
    // Dead letters carry hostile records whole; the brokers' own limit is
    // what decides (the master truncates a dead letter they refuse).
    c.set("message.max.bytes", "16777216");
    // Nothing waits for these writes but the next commit, which sends what
    // is queued at once: a long batching delay costs no latency and makes
    // far fewer produce requests, whose handling (and the followers'
    // fetches each one wakes) the brokers did on the cores the pipeline
    // needs. Produce requests to one broker at 10k events/s: 462/s with 5
    // ms, 338/s with 100 (the shoppers' producer alone makes 216/s).
    c.set("linger.ms", "100");
    c.set("compression.type", "lz4");
    // One request in flight per broker, as for the shoppers' producer (the
    // default 5 busy-polls: the master used 0.5 CPU-s per second at 10k
    // events/s with 5, 0.1 with 1) ...
    c.set("max.in.flight.requests.per.connection", "1");
    // ... and then the client's queue holds more between requests: bounded
    // here, or the master's peak RSS in a 1M-record drain reached 135-141
    // MiB (target 128; 130 with 16 MiB here on a cold cluster). A full
    // queue makes the output wait (backpressure).
    c.set("queue.buffering.max.kbytes", "8192");
    apply_overrides(&mut c, args);
    c
}

/// Settings for a worker's consumer, which reads exactly the partitions the
/// master gives it (`assign`, never `subscribe`) and never commits.
pub fn worker_consumer_config(args: &KafkaArgs) -> ClientConfig {
    let mut c = base_config(args);
    // librdkafka's consumer needs a group id even for `assign`; this one never
    // joins the group nor commits, and is deliberately not the master's group.
    c.set("group.id", "cyberday-worker");
    // Offsets belong to the master: it commits only after notifying.
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    // A start offset that retention already deleted: read what is left, skip nothing newer.
    c.set("auto.offset.reset", "earliest");
    // Never read records of aborted transactions.
    c.set("isolation.level", "read_committed");
    c.set("enable.partition.eof", "false");
    // Memory: librdkafka prefetches up to 64 MiB by default; a few MiB
    // keep the workers busy while the master takes results at its pace
    // (HTTP/2 flow control stops the reading when it is slower).
    c.set("queued.max.messages.kbytes", "4096");
    // Each fetch response brings up to this much per partition (1 MiB by
    // default), held until its last record is taken. Workers' peak RSS in
    // six 1M-record drains (`bench/run.sh --phases ceiling,drain`, warm
    // cluster): 46-58 MiB with the default (65.5 once in a full run; the
    // target is 64), 34-40 MiB with 256 KiB, the drain as fast (186-219k
    // vs 154-234k events/s).
    c.set("max.partition.fetch.bytes", "262144");
    // Past that bound librdkafka waits this long before fetching the
    // partition again (1 s by default, which throttles a drain).
    c.set("fetch.queue.backoff.ms", "10");
    // After a fetch error librdkafka stops fetching the partition for this
    // long (500 ms by default). With the default, a partition that was
    // caught up for a moment held its next records for half a second
    // (`debug=fetch` showed the pause after the partition's end; which
    // error triggers it is not pinned down: librdkafka 2.12.1 does not back
    // off on the end itself). Measured with a consumer tailing a topic at 10k
    // events/s: p99 331-335 ms in 3 runs with the default, 26-29 ms in 2 of
    // 3 with 20 (the third had one 1.1 s stall of another kind).
    c.set("fetch.error.backoff.ms", "20");
    apply_overrides(&mut c, args);
    c
}

/// Settings for the master's client of consumer group `group`: it never
/// subscribes nor consumes; it reads the group's committed offsets and lends
/// its group metadata to the transactional producer, which commits them.
pub fn committer_config(args: &KafkaArgs, group: &str) -> ClientConfig {
    let mut c = base_config(args);
    c.set("group.id", group);
    // Offsets move only inside the transaction that writes the output for them.
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    // Reading committed offsets waits for a pending transactional commit of
    // them to settle, instead of returning a value that may still be aborted.
    c.set("isolation.level", "read_committed");
    apply_overrides(&mut c, args);
    c
}

/// Settings for the delivery service's consumer of the notifications
/// topic: a member of `group` under Kafka's group protocol (`consumer`, KIP-848,
/// or `classic`), committing itself only what was delivered.
pub fn delivery_consumer_config(args: &KafkaArgs, group: &str, protocol: &str) -> ClientConfig {
    let mut c = base_config(args);
    c.set("group.id", group);
    c.set("group.protocol", protocol);
    if protocol == "classic" {
        // Move only the partitions that change owner, as KIP-848 does.
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    // Offsets move only once the provider acknowledged the send and the
    // ledger has it: the service commits the finished prefix itself.
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    // A group without offsets starts at the beginning: nothing is skipped.
    c.set("auto.offset.reset", "earliest");
    // Never deliver a notification of an aborted transaction of the master.
    c.set("isolation.level", "read_committed");
    c.set("enable.partition.eof", "false");
    apply_overrides(&mut c, args);
    c
}

/// Settings for reading a whole topic once (the delivery ledger) with
/// `assign`: no group membership, no commits.
pub fn reader_config(args: &KafkaArgs, group: &str) -> ClientConfig {
    let mut c = base_config(args);
    // Needed by librdkafka even for `assign`; never joins nor commits.
    c.set("group.id", group);
    c.set("enable.auto.commit", "false");
    c.set("auto.offset.reset", "earliest");
    c.set("isolation.level", "read_committed");
    c.set("enable.partition.eof", "true");
    apply_overrides(&mut c, args);
    c
}

/// Settings for admin and metadata clients.
pub fn admin_config(args: &KafkaArgs) -> ClientConfig {
    let mut c = base_config(args);
    apply_overrides(&mut c, args);
    c
}

/// Cluster metadata (brokers and, if `topic` is given, that topic), waiting at
/// most `args.connect_timeout`.
pub async fn fetch_metadata(args: &KafkaArgs, topic: Option<&str>) -> Result<Metadata> {
    check_options(args)?;
    let consumer: BaseConsumer = admin_config(args).create().map_err(Error::Config)?;
    let timeout = args.connect_timeout;
    let topic = topic.map(str::to_owned);
    let bootstrap = args.bootstrap_servers.clone();
    // fetch_metadata blocks; keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        // In short steps: between them, a refused login or TLS handshake
        // ends the wait at once, with what to fix.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let e = match consumer.fetch_metadata(topic.as_deref(), left.min(METADATA_STEP)) {
                Ok(md) => return Ok(md),
                Err(e) => e,
            };
            if let Some(refused) = security_failure(&consumer, &bootstrap) {
                return Err(refused);
            }
            if left <= METADATA_STEP {
                return Err(Error::Unreachable {
                    bootstrap,
                    timeout,
                    cause: e
                        .rdkafka_error_code()
                        .map_or_else(|| e.to_string(), |c| c.to_string()),
                });
            }
        }
    })
    .await
    .expect("metadata task panicked")
}

/// How long one metadata request may wait before the client's errors are
/// checked for a refusal.
const METADATA_STEP: Duration = Duration::from_millis(500);

/// A failed SASL login or TLS handshake among the client's pending errors
/// (served by polling: without a group the client's main queue holds them).
fn security_failure(consumer: &BaseConsumer, bootstrap: &str) -> Option<Error> {
    while let Some(event) = consumer.poll(Duration::ZERO) {
        let Err(e) = event else { continue };
        let (what, fix) = match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => (
                "credentials",
                "check security.protocol, sasl.mechanism, sasl.username and sasl.password \
                 (--kafka-options-file)",
            ),
            Some(RDKafkaErrorCode::SSL) => (
                "TLS handshake",
                "check security.protocol and ssl.ca.location (the CA of the brokers' \
                 certificate) in --kafka-options-file",
            ),
            _ => continue,
        };
        let cause = e
            .rdkafka_error_code()
            .map_or_else(|| e.to_string(), |c| c.to_string());
        return Some(Error::Refused {
            bootstrap: bootstrap.to_owned(),
            what,
            cause,
            fix,
        });
    }
    None
}

/// Number of partitions of `topic`, or `None` if it does not exist.
pub async fn topic_partitions(args: &KafkaArgs, topic: &str) -> Result<Option<usize>> {
    let md = fetch_metadata(args, Some(topic)).await?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None => Ok(Some(t.partitions().len())),
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(e) => Err(Error::Metadata {
            topic: topic.to_owned(),
            reason: RDKafkaErrorCode::from(e).to_string(),
        }),
    }
}

/// How often [`wait_for_topic`] asks again.
const TOPIC_POLL: Duration = Duration::from_millis(500);

/// Number of partitions of `topic`, waiting up to `within` for it to exist
/// (its creator starting beside this process, as a Kubernetes Job does, or a
/// broker that has not yet learned of a topic just created); says so once in
/// the log. `None` if it still does not exist then.
pub async fn wait_for_topic(
    args: &KafkaArgs,
    topic: &str,
    within: Duration,
) -> Result<Option<usize>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut waiting = false;
    loop {
        if let Some(n) = topic_partitions(args, topic).await? {
            if waiting {
                tracing::info!(topic, partitions = n, "the topic exists now");
            }
            return Ok(Some(n));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if !waiting {
            tracing::info!(topic, wait = ?within, "the topic does not exist yet; waiting for it");
            waiting = true;
        }
        tokio::time::sleep(TOPIC_POLL.min(deadline - now)).await;
    }
}

/// Creates `topic` if it does not exist, replicated on up to three brokers and
/// requiring two in sync when there are three. Returns its partition count.
pub async fn ensure_topic(args: &KafkaArgs, topic: &str, partitions: i32) -> Result<usize> {
    ensure_topic_with(args, topic, partitions, &[]).await
}

/// [`ensure_topic`] with topic-level `configs` (e.g. `cleanup.policy=compact`)
/// for a topic it creates.
pub async fn ensure_topic_with(
    args: &KafkaArgs,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<usize> {
    if let Some(n) = topic_partitions(args, topic).await? {
        return Ok(n);
    }
    let brokers = fetch_metadata(args, None).await?.brokers().len().max(1);
    let rf = brokers.min(3) as i32;
    let min_isr = rf.min(2).to_string();
    let admin: AdminClient<DefaultClientContext> =
        admin_config(args).create().map_err(Error::Config)?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf))
        .set("min.insync.replicas", &min_isr);
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(args.connect_timeout));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| Error::CreateTopic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, replication_factor = rf, "created topic"),
            // Someone else created it between our check and our request.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::CreateTopic {
                    topic: topic.to_owned(),
                    reason: code.to_string(),
                })
            }
        }
    }
    // Creation is asynchronous in the brokers; wait until metadata shows it.
    let deadline = tokio::time::Instant::now() + args.connect_timeout;
    loop {
        if let Some(n) = topic_partitions(args, topic).await? {
            return Ok(n);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CreateTopic {
                topic: topic.to_owned(),
                reason: "created, but not visible in metadata in time".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_is_built_with_tls_and_sasl_plain_and_scram() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for needed in ["ssl", "sasl_plain", "sasl_scram"] {
            assert!(
                features.split(',').any(|f| f == needed),
                "librdkafka lacks {needed}: {features}"
            );
        }
    }

    #[test]
    fn a_rejected_option_is_reported_without_its_value() {
        let args = KafkaArgs {
            bootstrap_servers: "127.0.0.1:1".into(),
            topic: "T".into(),
            options: vec![("sasl.pasword".into(), "hunter2".into())],
            kafka_options_file: None,
            connect_timeout: Duration::from_secs(1),
        };
        let e = check_options(&args).unwrap_err().to_string();
        assert!(e.contains("sasl.pasword") && !e.contains("hunter2"), "{e}");
    }
}
