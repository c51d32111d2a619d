//! The chaos run of issue 4: a master and two workers (real processes) on a
//! fresh topic while the producer writes N records at a steady rate; at
//! seeded random moments, one after another, a worker, the master and one
//! Kafka broker are SIGKILLed and restarted. For each kill it measures how
//! long the affected partitions took to make progress again; at the end it
//! checks, from read_committed consumers, that every valid purchase was
//! notified exactly once, every invalid record dead-lettered exactly once
//! with its reason, and the group's committed offsets reached the end.
//!
//! - [`ChaosConfig`], [`KillKind`]: what to run.
//! - [`run`]: runs it and returns a [`ChaosSummary`] (printable as a table,
//!   [`ChaosSummary::to_json`], [`ChaosSummary::failures`]).
//!
//! Used by `tests/tests/chaos.rs` (small) and the `chaos` binary
//! (`deploy/local/chaos.sh`, full).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::classify::{classify, Classification, Rules};
use common::pb::admin_client::AdminClient;
use common::pb::{
    AssignmentState, GetStatsRequest, GetStatsResponse, ListAssignmentsRequest, PartitionAssignment,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    block_on, check_exactly_once, committed_offsets, end_offsets, read_notifications, read_topic,
    Expected, Pipeline, Proc,
};

const PARTITIONS: i32 = 6;
const WORKERS: [&str; 2] = ["w1", "w2"];
const POLL: Duration = Duration::from_millis(50);

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillKind {
    /// SIGKILL of a random worker, restarted with the same id after a pause.
    Worker,
    /// SIGKILL of the master, restarted after a pause (as a supervisor would).
    Master,
    /// SIGKILL of a random Kafka node of three (`deploy/local/kafka.sh kill N`),
    /// started again once the pipeline has made progress without it.
    Broker,
}

impl KillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KillKind::Worker => "worker",
            KillKind::Master => "master",
            KillKind::Broker => "broker",
        }
    }
}

impl fmt::Display for KillKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KillKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "worker" => Ok(KillKind::Worker),
            "master" => Ok(KillKind::Master),
            "broker" => Ok(KillKind::Broker),
            other => Err(format!(
                "unknown kill kind {other:?} (worker, master or broker)"
            )),
        }
    }
}

/// Parameters of one chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Prefix of the topic and group, and the name of the log directory.
    pub name: String,
    pub records: u64,
    /// Records per second, steady.
    pub rate: u32,
    /// Seeds both the producer's records and the kill moments and targets.
    pub seed: u64,
    /// The kills, in order; each waits until the system recovered from the
    /// previous one.
    pub kills: Vec<KillKind>,
    /// From a worker's kill to its restart (at least; it is restarted only
    /// once its partitions' recovery was measured).
    pub worker_pause: Duration,
    /// From the master's kill to its restart.
    pub master_pause: Duration,
    /// Shortest time a killed broker stays down.
    pub broker_down: Duration,
    /// Longest wait for the partitions to move again after a kill; at the
    /// end, longest time the commits may stand still short of the end.
    pub recovery_timeout: Duration,
    /// `KAFKA_PORT_BASE` of the cluster, for `deploy/local/kafka.sh`; `None`:
    /// `KAFKA_PORT_BASE` from the environment, else the lowest port of the
    /// bootstrap servers.
    pub kafka_port_base: Option<u16>,
}

impl ChaosConfig {
    /// One kill of each kind, in the order, with default pauses.
    pub fn new(name: &str, records: u64, rate: u32, seed: u64) -> Self {
        Self {
            name: name.into(),
            records,
            rate,
            seed,
            kills: vec![KillKind::Worker, KillKind::Master, KillKind::Broker],
            worker_pause: Duration::from_secs(1),
            master_pause: Duration::from_secs(1),
            broker_down: Duration::from_secs(5),
            recovery_timeout: Duration::from_secs(60),
            kafka_port_base: None,
        }
    }

    fn produce_time(&self) -> Duration {
        Duration::from_secs_f64(self.records as f64 / f64::from(self.rate.max(1)))
    }
}

/// One kill and what it cost.
#[derive(Debug, Clone)]
pub struct KillReport {
    pub kind: KillKind,
    /// Worker id, `master`, or `broker N`.
    pub target: String,
    /// When, counted from the producer's start.
    pub at: Duration,
    /// The partitions whose progress was measured.
    pub partitions: Vec<i32>,
    /// From the kill until every affected partition's position (the
    /// master's next offset to notify) advanced past where it was: for a
    /// worker, under another owner; for the master, in the restarted one.
    /// `None`: not within the timeout.
    pub recovery: Option<Duration>,
    /// From the kill until the group's committed offsets (in the same
    /// transaction as the notifications) of every affected partition moved
    /// past where they were at the kill: the durable output is committing
    /// again. The master keeps committing what it holds when a worker dies,
    /// so for a worker kill this is only the commit cadence.
    pub commits_resumed: Option<Duration>,
    /// Records the master had notified but not yet committed at the kill
    /// (all partitions): what a restarted master does again, and roughly
    /// the console lines it prints twice.
    pub uncommitted: i64,
    /// From the kill until the killed process was running again.
    pub restarted: Option<Duration>,
    /// Anything unusual (a skipped kill, a timeout).
    pub note: String,
}

/// The verdict of a chaos run.
#[derive(Debug, Clone, Default)]
pub struct ChaosSummary {
    pub name: String,
    pub topic: String,
    pub logs: PathBuf,
    pub seed: u64,
    pub rate: u32,
    /// Records in the input topic.
    pub records: u64,
    pub producer_ok: bool,
    pub valid_purchases: usize,
    pub short: usize,
    pub long: usize,
    pub no_purchase: usize,
    pub invalid: usize,
    /// Notifications a read_committed consumer of the notifications topic sees.
    pub notified: usize,
    /// Valid purchases not in the notifications topic.
    pub missing: usize,
    /// Valid purchases in it more than once.
    pub duplicated: usize,
    /// Notifications of something that is not that valid purchase.
    pub wrong: usize,
    /// Records in the dead-letter topic (read_committed).
    pub dlq_records: usize,
    pub dlq_missing: usize,
    /// Invalid records dead-lettered more than once.
    pub dlq_duplicates: usize,
    /// Dead letters without a reason, with another reason than the rule
    /// gives, or of a record that is valid.
    pub dlq_wrong: usize,
    /// Valid purchases the console printed more than once (expected around
    /// a master crash: the console is a view, the topic the record).
    pub console_repeats: usize,
    pub console_missing: usize,
    pub committed_offsets: BTreeMap<i32, i64>,
    pub end_offsets: BTreeMap<i32, i64>,
    pub master_clean_exit: bool,
    pub kills: Vec<KillReport>,
    pub elapsed: Duration,
}

impl ChaosSummary {
    pub fn committed_to_end(&self) -> bool {
        !self.end_offsets.is_empty() && self.committed_offsets == self.end_offsets
    }

    /// Median recovery time of the measured kills of `kind`.
    pub fn median_recovery(&self, kind: KillKind) -> Option<Duration> {
        let mut v: Vec<Duration> = self
            .kills
            .iter()
            .filter(|k| k.kind == kind)
            .filter_map(|k| k.recovery)
            .collect();
        v.sort();
        v.get(v.len().checked_sub(1)? / 2).copied()
    }

    /// Everything that is not as it must be; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                f.push(what);
            }
        };
        check(self.producer_ok, "the producer failed".into());
        check(
            self.records > 0,
            "no records in the input topic".to_string(),
        );
        check(self.missing == 0, format!("{} missing", self.missing));
        check(
            self.duplicated == 0,
            format!("{} duplicated", self.duplicated),
        );
        check(
            self.wrong == 0,
            format!("{} wrong notifications", self.wrong),
        );
        check(
            self.dlq_missing == 0,
            format!("{} invalid records not in the DLQ", self.dlq_missing),
        );
        check(
            self.dlq_duplicates == 0,
            format!("{} invalid records in the DLQ twice", self.dlq_duplicates),
        );
        check(
            self.dlq_wrong == 0,
            format!("{} dead letters with a wrong reason", self.dlq_wrong),
        );
        check(
            self.console_missing == 0,
            format!("{} purchases never printed", self.console_missing),
        );
        check(
            self.committed_to_end(),
            format!(
                "committed offsets {:?} are not the end offsets {:?}",
                self.committed_offsets, self.end_offsets
            ),
        );
        check(
            self.master_clean_exit,
            "the master did not exit cleanly".into(),
        );
        for (i, k) in self.kills.iter().enumerate() {
            check(
                k.recovery.is_some() && k.commits_resumed.is_some(),
                format!(
                    "kill #{} ({} {}): no recovery measured {}",
                    i + 1,
                    k.kind,
                    k.target,
                    k.note
                ),
            );
        }
        f
    }

    /// Panics with every failure and the table.
    pub fn assert_ok(&self) {
        let f = self.failures();
        assert!(f.is_empty(), "chaos run failed: {}\n{self}", f.join("; "));
    }

    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        serde_json::json!({
            "name": self.name,
            "topic": self.topic,
            "logs": self.logs,
            "seed": self.seed,
            "rate": self.rate,
            "records": self.records,
            "producer_ok": self.producer_ok,
            "valid_purchases": self.valid_purchases,
            "short": self.short,
            "long": self.long,
            "no_purchase": self.no_purchase,
            "invalid": self.invalid,
            "notified": self.notified,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "wrong": self.wrong,
            "dlq_records": self.dlq_records,
            "dlq_missing": self.dlq_missing,
            "dlq_duplicates": self.dlq_duplicates,
            "dlq_wrong": self.dlq_wrong,
            "console_repeats": self.console_repeats,
            "console_missing": self.console_missing,
            "committed_to_end": self.committed_to_end(),
            "committed_offsets": self.committed_offsets,
            "end_offsets": self.end_offsets,
            "master_clean_exit": self.master_clean_exit,
            "worker_failover_median_s": secs(self.median_recovery(KillKind::Worker)),
            "kills": self.kills.iter().map(|k| serde_json::json!({
                "kind": k.kind.as_str(),
                "target": k.target,
                "at_s": k.at.as_secs_f64(),
                "partitions": k.partitions,
                "recovery_s": secs(k.recovery),
                "commits_resumed_s": secs(k.commits_resumed),
                "restarted_s": secs(k.restarted),
                "uncommitted_at_kill": k.uncommitted,
                "note": k.note,
            })).collect::<Vec<_>>(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "passed": self.failures().is_empty(),
        })
    }
}

impl fmt::Display for ChaosSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Option<Duration>| match d {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => "—".into(),
        };
        let yes = |b: bool| if b { "yes" } else { "NO" };
        writeln!(
            f,
            "chaos run {}: {} records at {}/s, seed {}, {:.0} s (topic {}, logs {})",
            self.name,
            self.records,
            self.rate,
            self.seed,
            self.elapsed.as_secs_f64(),
            self.topic,
            self.logs.display()
        )?;
        let rows: [(&str, String); 13] = [
            ("records", self.records.to_string()),
            (
                "valid purchases",
                format!(
                    "{} ({} short, {} long)",
                    self.valid_purchases, self.short, self.long
                ),
            ),
            ("no purchase", self.no_purchase.to_string()),
            ("invalid", self.invalid.to_string()),
            ("notified (read_committed)", self.notified.to_string()),
            ("missing", self.missing.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("wrong", self.wrong.to_string()),
            ("DLQ records", self.dlq_records.to_string()),
            (
                "DLQ missing / duplicates / wrong",
                format!(
                    "{} / {} / {}",
                    self.dlq_missing, self.dlq_duplicates, self.dlq_wrong
                ),
            ),
            (
                "console repeats",
                format!(
                    "{} (never printed: {})",
                    self.console_repeats, self.console_missing
                ),
            ),
            (
                "committed == end offsets",
                yes(self.committed_to_end()).into(),
            ),
            (
                "producer ok, master clean exit",
                format!("{}, {}", yes(self.producer_ok), yes(self.master_clean_exit)),
            ),
        ];
        for (k, v) in rows {
            writeln!(f, "  {k:<34} {v}")?;
        }
        writeln!(
            f,
            "  {:<4} {:<7} {:<10} {:>8} {:>11} {:>11} {:>11} {:>12}  partitions",
            "#", "kill", "target", "at", "progress", "commits", "restarted", "uncommitted"
        )?;
        for (i, k) in self.kills.iter().enumerate() {
            writeln!(
                f,
                "  {:<4} {:<7} {:<10} {:>6.1} s {:>11} {:>11} {:>11} {:>12}  {:?}{}",
                i + 1,
                k.kind.as_str(),
                k.target,
                k.at.as_secs_f64(),
                secs(k.recovery),
                secs(k.commits_resumed),
                secs(k.restarted),
                k.uncommitted,
                k.partitions,
                if k.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", k.note)
                }
            )?;
        }
        if let Some(m) = self.median_recovery(KillKind::Worker) {
            writeln!(f, "  worker failover, median: {:.2} s", m.as_secs_f64())?;
        }
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "  PASSED")
        } else {
            write!(f, "  FAILED: {}", failures.join("; "))
        }
    }
}

/// The seeded moments of the kills, counted from the producer's start: one
/// in each equal slot of the middle of the production (10 % to 60 % of it,
/// so the last kill's recovery still sees new records), never earlier than
/// 2 s.
pub fn plan_kills(rng: &mut StdRng, kills: usize, produce: Duration) -> Vec<Duration> {
    let start = produce.mul_f64(0.1).max(Duration::from_secs(2));
    let end = produce.mul_f64(0.6).max(start);
    let slot = (end - start) / kills.max(1) as u32;
    (0..kills)
        .map(|i| start + slot * i as u32 + slot.mul_f64(rng.gen::<f64>()))
        .collect()
}

/// `KAFKA_PORT_BASE` for `deploy/local/kafka.sh`: from the environment,
/// else the lowest port among the bootstrap servers.
pub fn kafka_port_base(bootstrap: &str) -> u16 {
    if let Some(base) = std::env::var("KAFKA_PORT_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return base;
    }
    bootstrap
        .split(',')
        .filter_map(|s| s.rsplit(':').next()?.trim().parse::<u16>().ok())
        .min()
        .unwrap_or_else(|| panic!("no port in the bootstrap servers {bootstrap:?}"))
}

/// Runs `deploy/local/kafka.sh ARGS` against the cluster at `port_base`.
fn kafka_sh(port_base: u16, args: &[&str]) -> Result<(), String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/kafka.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .env("KAFKA_PORT_BASE", port_base.to_string())
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kafka.sh {args:?} failed: {status}"))
    }
}

/// A Kafka node killed by the run; started again on [`DownBroker::restart`]
/// or, if the run panics first, on drop, so the cluster always ends with
/// three nodes.
struct DownBroker {
    node: u8,
    port_base: u16,
    down: bool,
}

impl DownBroker {
    fn kill(node: u8, port_base: u16) -> Self {
        let mut b = Self {
            node,
            port_base,
            down: true,
        };
        if let Err(e) = kafka_sh(port_base, &["kill", &node.to_string()]) {
            b.down = false;
            panic!("{e}");
        }
        b
    }

    fn restart(mut self) {
        self.down = false;
        start_node(self.port_base, self.node).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for DownBroker {
    fn drop(&mut self) {
        if self.down {
            eprintln!("chaos: starting Kafka node {} again", self.node);
            if let Err(e) = start_node(self.port_base, self.node) {
                eprintln!("chaos: {e}");
            }
        }
    }
}

/// `kafka.sh start N`, tried three times: a node sometimes exits at once
/// because a client's ephemeral port holds its port for a moment ("Address
/// already in use"); `start` does nothing if the node already runs.
fn start_node(port_base: u16, node: u8) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        match kafka_sh(port_base, &["start", &node.to_string()]) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 3 => return Err(e),
            Err(e) => {
                eprintln!("chaos: {e} (attempt {attempt}); trying again in 2 s");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

/// What the master says, through its Admin service.
struct Snapshot {
    assignments: BTreeMap<i32, PartitionAssignment>,
    stats: GetStatsResponse,
}

impl Snapshot {
    /// `None` while the master is down or does not answer within 2 s.
    fn take(url: &str) -> Option<Self> {
        block_on(async {
            let call = async {
                let mut c = AdminClient::connect(url.to_string()).await.ok()?;
                let a = c
                    .list_assignments(ListAssignmentsRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .assignments;
                let stats = c.get_stats(GetStatsRequest {}).await.ok()?.into_inner();
                Some(Snapshot {
                    assignments: a.into_iter().map(|a| (a.partition, a)).collect(),
                    stats,
                })
            };
            tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .ok()
                .flatten()
        })
    }

    fn positions(&self) -> BTreeMap<i32, i64> {
        self.assignments
            .iter()
            .map(|(p, a)| (*p, a.next_offset))
            .collect()
    }

    /// For each of `partitions`, one past its committed offset: the commits
    /// resumed once they all got there.
    fn commit_targets(&self, partitions: &[i32]) -> BTreeMap<i32, i64> {
        self.stats
            .partitions
            .iter()
            .filter(|s| partitions.contains(&s.partition))
            .map(|s| (s.partition, s.committed_offset + 1))
            .collect()
    }

    /// Sum over the partitions of the position minus the committed offset.
    fn uncommitted(&self) -> i64 {
        self.stats
            .partitions
            .iter()
            .filter_map(|s| {
                let a = self.assignments.get(&s.partition)?;
                Some((a.next_offset - s.committed_offset.max(0)).max(0))
            })
            .sum()
    }

    /// Every partition assigned to a live worker, `workers` connected, each
    /// owning at least one partition.
    fn steady(&self, workers: usize) -> bool {
        let all_assigned = self.assignments.len() == PARTITIONS as usize
            && self
                .assignments
                .values()
                .all(|a| a.state == AssignmentState::Assigned as i32 && !a.owner.is_empty());
        let owners: BTreeSet<&str> = self
            .assignments
            .values()
            .map(|a| a.owner.as_str())
            .collect();
        all_assigned && self.stats.workers as usize == workers && owners.len() == workers
    }
}

/// The input topic's end offsets through a client made in advance, so they
/// can be read just before a broker is killed (creating a client and
/// fetching metadata takes seconds on a busy machine).
struct EndOffsets {
    consumer: rdkafka::consumer::BaseConsumer,
    topic: String,
}

impl EndOffsets {
    fn new(bootstrap: &str, topic: &str) -> Self {
        let consumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("a watermarks client");
        let ends = Self {
            consumer,
            topic: topic.into(),
        };
        ends.read(); // connects to every leader now
        ends
    }

    fn read(&self) -> BTreeMap<i32, i64> {
        use rdkafka::consumer::Consumer;
        (0..PARTITIONS)
            .map(|p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("end offset of {}[{p}]: {e}", self.topic));
                (p, high)
            })
            .collect()
    }
}

/// Polls the master until every partition of `baseline` has advanced past
/// its baseline position (under an owner other than `not_owner`, when
/// given); returns the time from `since`.
///
/// With `not_owner`, a partition's baseline is raised to its position when
/// it is first seen under a new owner: results the dead worker sent before
/// dying may still land, and they are not the new owner's progress. This
/// makes the figure conservative by up to one poll (50 ms).
fn wait_progress(
    url: &str,
    baseline: &BTreeMap<i32, i64>,
    not_owner: Option<&str>,
    since: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let mut base = baseline.clone();
    let mut rebased = BTreeSet::new();
    let mut reached = BTreeSet::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = Snapshot::take(url) {
            for (p, b) in base.iter_mut() {
                let Some(a) = s.assignments.get(p) else {
                    continue;
                };
                let live = a.state == AssignmentState::Assigned as i32 && !a.owner.is_empty();
                if reached.contains(p) || !live || not_owner == Some(a.owner.as_str()) {
                    continue;
                }
                if not_owner.is_some() && rebased.insert(*p) {
                    *b = (*b).max(a.next_offset);
                } else if a.next_offset > *b {
                    reached.insert(*p);
                }
            }
            if reached.len() == base.len() {
                return Some(since.elapsed());
            }
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Committed offsets per partition, by when they were seen.
type Samples = Arc<Mutex<Vec<(Instant, BTreeMap<i32, i64>)>>>;

/// Records the master's committed offsets (GetStats) every poll, in the
/// background, so the time until the commits resumed after a kill can be
/// read afterwards without holding up the run.
struct CommitLog {
    samples: Samples,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommitLog {
    fn start(url: String) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = Snapshot::take(&url) {
                        let committed = s
                            .stats
                            .partitions
                            .iter()
                            .map(|p| (p.partition, p.committed_offset))
                            .collect();
                        samples.lock().unwrap().push((Instant::now(), committed));
                    }
                    std::thread::sleep(POLL);
                }
            })
        };
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// From `since` until the first sample with every partition of
    /// `targets` committed at least that far.
    fn committed_after(&self, since: Instant, targets: &BTreeMap<i32, i64>) -> Option<Duration> {
        if targets.is_empty() {
            return None;
        }
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= since)
            .find(|(_, c)| {
                targets
                    .iter()
                    .all(|(p, o)| c.get(p).is_some_and(|c| c >= o))
            })
            .map(|(t, _)| *t - since)
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls until [`Snapshot::steady`]; panics after `timeout`.
fn wait_steady(p: &Pipeline, workers: usize, timeout: Duration) -> Snapshot {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = Snapshot::take(&p.master_url()) {
            if s.steady(workers) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not settle ({workers} workers, every partition assigned) in \
             {timeout:?}; logs in {}",
            p.dir.display()
        );
        std::thread::sleep(POLL);
    }
}

/// Keeps a killed worker's output next to its successor's.
fn keep_logs(proc: &Proc, suffix: &str) {
    for path in [&proc.stdout, &proc.stderr] {
        let mut kept = path.clone().into_os_string();
        kept.push(suffix);
        let _ = std::fs::rename(path, kept);
    }
}

fn progress_line(r: &KillReport) {
    let s = |d: Option<Duration>| d.map_or("—".into(), |d| format!("{d:.2?}"));
    eprintln!(
        "chaos: {} {} killed at {:.1?}: partitions {:?} progress again after {}, restarted after {}{}",
        r.kind,
        r.target,
        r.at,
        r.partitions,
        s(r.recovery),
        s(r.restarted),
        if r.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.note)
        }
    );
}

fn add_note(report: &mut KillReport, note: &str) {
    if !report.note.is_empty() {
        report.note.push_str("; ");
    }
    report.note.push_str(note);
}

/// After a kill and its restart: waits until every partition is assigned
/// again and, while records still arrive, until every partition moves;
/// false if they did not move within `timeout`.
fn settle(p: &Pipeline, url: &str, producer: &mut Proc, timeout: Duration) -> bool {
    let s = wait_steady(p, WORKERS.len(), Duration::from_secs(60));
    if !producer.is_running() {
        return true;
    }
    let again = wait_progress(url, &s.positions(), None, Instant::now(), timeout);
    again.is_some() || !producer.is_running()
}

/// A killed broker being started again in the background.
struct Restarting {
    thread: std::thread::JoinHandle<()>,
    killed: Instant,
    /// Index of its kill's report.
    report: usize,
}

impl Restarting {
    /// Waits for the node, then for the pipeline to settle.
    fn finish(
        self,
        p: &Pipeline,
        url: &str,
        producer: &mut Proc,
        reports: &mut [KillReport],
        timeout: Duration,
    ) {
        if let Err(e) = self.thread.join() {
            std::panic::resume_unwind(e);
        }
        let report = &mut reports[self.report];
        report.restarted = Some(self.killed.elapsed());
        eprintln!(
            "chaos: {} running again {:.1?} after its kill",
            report.target,
            self.killed.elapsed()
        );
        if !settle(p, url, producer, timeout) {
            add_note(report, "no progress after the restart");
        }
    }
}

/// Runs the chaos scenario described in the module documentation against
/// the test cluster ([`crate::Cluster::get`]). Panics when the harness
/// cannot do its part (the master never listens, the pipeline never
/// settles); what the system under test got wrong is in the summary's
/// [`ChaosSummary::failures`].
pub fn run(cfg: &ChaosConfig) -> ChaosSummary {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut p = Pipeline::start(&cfg.name, PARTITIONS);
    let url = p.master_url();
    let port_base = cfg
        .kafka_port_base
        .unwrap_or_else(|| kafka_port_base(&p.cluster.bootstrap));
    for w in WORKERS {
        p.start_worker(w);
    }
    wait_steady(&p, WORKERS.len(), Duration::from_secs(60));
    eprintln!(
        "chaos: topic {}, {} records at {}/s, kills {:?}, logs in {}",
        p.topic,
        cfg.records,
        cfg.rate,
        cfg.kills,
        p.dir.display()
    );

    let commits = CommitLog::start(url.clone());
    let ends = EndOffsets::new(&p.cluster.bootstrap, &p.topic);
    let mut producer = p.produce_in_background(cfg.records, cfg.rate, cfg.seed);
    let t0 = Instant::now();
    let plan = plan_kills(&mut rng, cfg.kills.len(), cfg.produce_time());
    // Per kill: when, and the committed offsets that mean "commits resumed".
    let mut commit_targets = Vec::new();
    let mut reports = Vec::new();
    let mut restarting: Option<Restarting> = None;
    for (i, (&kind, &planned)) in cfg.kills.iter().zip(&plan).enumerate() {
        if let Some(r) = restarting.take() {
            r.finish(&p, &url, &mut producer, &mut reports, cfg.recovery_timeout);
        }
        while t0.elapsed() < planned && producer.is_running() {
            std::thread::sleep(POLL);
        }
        let mut report = KillReport {
            kind,
            target: String::new(),
            at: t0.elapsed(),
            partitions: vec![],
            recovery: None,
            commits_resumed: None,
            uncommitted: 0,
            restarted: None,
            note: String::new(),
        };
        if !producer.is_running() {
            add_note(
                &mut report,
                "skipped: the producer had finished; use more records",
            );
            eprintln!("chaos: kill #{} ({kind}) {}", i + 1, report.note);
            reports.push(report);
            commit_targets.push((t0, BTreeMap::new()));
            continue;
        }
        let before = wait_steady(&p, WORKERS.len(), Duration::from_secs(60));
        report.uncommitted = before.uncommitted();
        let killed;
        let progress;
        match kind {
            KillKind::Worker => {
                let victim = WORKERS[rng.gen_range(0..WORKERS.len())];
                let baseline: BTreeMap<i32, i64> = before
                    .assignments
                    .values()
                    .filter(|a| a.owner == victim)
                    .map(|a| (a.partition, a.next_offset))
                    .collect();
                report.target = victim.into();
                report.partitions = baseline.keys().copied().collect();
                killed = Instant::now();
                report.at = t0.elapsed();
                p.worker(victim).kill9();
                progress =
                    wait_progress(&url, &baseline, Some(victim), killed, cfg.recovery_timeout);
                // Restarted only after the measurement: it takes partitions back.
                std::thread::sleep(cfg.worker_pause.saturating_sub(killed.elapsed()));
                let dead = p.workers.iter().position(|w| w.name == victim).unwrap();
                let dead = p.workers.remove(dead);
                keep_logs(&dead, &format!(".killed-{}", i + 1));
                drop(dead);
                p.start_worker(victim);
                report.restarted = Some(killed.elapsed());
            }
            KillKind::Master => {
                let baseline = before.positions();
                report.target = "master".into();
                report.partitions = baseline.keys().copied().collect();
                killed = Instant::now();
                report.at = t0.elapsed();
                p.master.as_mut().expect("a master runs").kill9();
                std::thread::sleep(cfg.master_pause);
                p.start_master();
                report.restarted = Some(killed.elapsed());
                progress = wait_progress(&url, &baseline, None, killed, cfg.recovery_timeout);
            }
            KillKind::Broker => {
                let node: u8 = rng.gen_range(1..=3);
                // Progress means records written after the kill were
                // notified (the workers' prefetched records do not count):
                // the end offsets just before it, plus what the producer's
                // rate adds until the SIGKILL has landed.
                let read = Instant::now();
                let mut baseline = ends.read();
                report.target = format!("broker {node}");
                report.partitions = baseline.keys().copied().collect();
                report.at = t0.elapsed();
                let down = DownBroker::kill(node, port_base);
                killed = Instant::now();
                let written = f64::from(cfg.rate) * (killed - read).as_secs_f64();
                for end in baseline.values_mut() {
                    *end += (written / f64::from(PARTITIONS)).ceil() as i64;
                }
                progress = wait_progress(&url, &baseline, None, killed, cfg.recovery_timeout);
                if progress.is_none() {
                    add_note(&mut report, "no progress while the broker was down");
                }
                // The node takes a while to start (log recovery after a
                // SIGKILL): the run goes on meanwhile, the next kill waits.
                let stay_down = cfg.broker_down.saturating_sub(killed.elapsed());
                restarting = Some(Restarting {
                    thread: std::thread::spawn(move || {
                        std::thread::sleep(stay_down);
                        down.restart();
                    }),
                    killed,
                    report: reports.len(),
                });
            }
        }
        report.recovery = progress;
        progress_line(&report);
        commit_targets.push((killed, before.commit_targets(&report.partitions)));
        if restarting.is_none() && !settle(&p, &url, &mut producer, cfg.recovery_timeout) {
            add_note(&mut report, "no progress after the restart");
        }
        reports.push(report);
    }

    let producer_ok = producer.child.wait().map(|s| s.success()).unwrap_or(false);
    eprintln!(
        "chaos: {:.1?} after the producer's start, it has finished (ok: {producer_ok}); \
         waiting for the commits to reach the end",
        t0.elapsed()
    );
    // A broker still starting (log recovery after a SIGKILL takes a while
    // on a loaded machine) is the last disruption: the commits have
    // `recovery_timeout` to reach the end once it is back.
    if let Some(r) = restarting.take() {
        r.finish(&p, &url, &mut producer, &mut reports, cfg.recovery_timeout);
    }
    let (committed, end) = wait_committed_to_end(&mut p, cfg.recovery_timeout);
    for (report, (killed, targets)) in reports.iter_mut().zip(&commit_targets) {
        report.commits_resumed = commits.committed_after(*killed, targets);
    }
    drop(commits);
    let master_clean_exit = stop(&mut p);

    eprintln!("chaos: reading the input, the notifications and the DLQ back");
    let mut summary = verdict(&p);
    summary.name = cfg.name.clone();
    summary.topic = p.topic.clone();
    summary.logs = p.dir.clone();
    summary.seed = cfg.seed;
    summary.rate = cfg.rate;
    summary.producer_ok = producer_ok;
    summary.committed_offsets = committed;
    summary.end_offsets = end;
    summary.master_clean_exit = master_clean_exit;
    summary.kills = reports;
    summary.elapsed = started.elapsed();
    summary
}

/// Calls `f` until it does not panic, up to 10 times a second apart: the
/// harness's Kafka reads unwrap, and a broker that just came back moves
/// leaders around for a while (`NotLeaderForPartition`).
fn retried<T>(what: &str, f: impl Fn() -> T) -> T {
    let mut attempt = 1;
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f)) {
            Ok(v) => return v,
            Err(e) if attempt >= 10 => std::panic::resume_unwind(e),
            Err(_) => {
                eprintln!("chaos: {what} failed (attempt {attempt}); retrying in 1 s");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Waits until the group's committed offsets reach the end offsets, or
/// until they stopped moving for `stall`; returns both as last seen.
fn wait_committed_to_end(
    p: &mut Pipeline,
    stall: Duration,
) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    let mut last = (BTreeMap::new(), Instant::now());
    loop {
        let end = retried("reading the end offsets", || {
            end_offsets(&p.cluster, &p.topic)
        });
        let committed = retried("reading the committed offsets", || {
            committed_offsets(&p.cluster, &p.topic, &p.group)
        });
        let master_gone = !p.master.as_mut().is_some_and(Proc::is_running);
        if committed != last.0 {
            last = (committed.clone(), Instant::now());
        }
        if committed == end || master_gone || last.1.elapsed() >= stall {
            if committed != end {
                eprintln!(
                    "chaos: the commits stopped short of the end (master running: {}); logs in {}",
                    !master_gone,
                    p.dir.display()
                );
            }
            return (committed, end);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SIGTERM the workers, then the master; whether the master exited 0.
fn stop(p: &mut Pipeline) -> bool {
    for w in &mut p.workers {
        w.terminate(Duration::from_secs(15));
    }
    p.master
        .as_mut()
        .is_some_and(|m| m.terminate(Duration::from_secs(15)))
}

/// Reads the input, the notifications and the dead letters back
/// (read_committed) and counts what is missing, repeated or wrong.
fn verdict(p: &Pipeline) -> ChaosSummary {
    let mut expected = Expected::default();
    let mut reasons: HashMap<(i32, i64), &'static str> = HashMap::new();
    let input = retried("reading the input", || read_topic(&p.cluster, &p.topic));
    for r in &input {
        match classify(&r.value, &Rules::default()) {
            Classification::Purchase { kind, purchase } => {
                expected.purchases.insert(
                    (r.partition, r.offset),
                    (kind.as_str().into(), purchase.folio.unwrap_or_default()),
                );
            }
            Classification::NoPurchase(_) => expected.no_purchase += 1,
            Classification::Invalid(reason) => {
                expected.invalid.push((r.partition, r.offset));
                reasons.insert((r.partition, r.offset), reason.code());
            }
        }
    }

    let notified = retried("reading the notifications", || {
        read_notifications(&p.cluster, &p.notifications_topic)
    });
    let topic = check_exactly_once(&expected, &notified);
    let console = check_exactly_once(&expected, &p.notifications());

    let dlq = retried("reading the DLQ", || {
        read_topic(&p.cluster, &format!("{}.DLQ", p.topic))
    });
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    let mut dlq_wrong = 0;
    for r in &dlq {
        let source = r
            .header("cyberday.source.partition")
            .and_then(|s| s.parse::<i32>().ok())
            .zip(
                r.header("cyberday.source.offset")
                    .and_then(|s| s.parse::<i64>().ok()),
            );
        let Some(at) = source else {
            dlq_wrong += 1;
            continue;
        };
        *seen.entry(at).or_default() += 1;
        let reason = r.header("cyberday.reason").unwrap_or_default();
        if reasons.get(&at).is_none_or(|expected| *expected != reason) {
            dlq_wrong += 1;
        }
    }

    let count = |kind: &str| {
        expected
            .purchases
            .values()
            .filter(|(k, _)| k == kind)
            .count()
    };
    ChaosSummary {
        records: input.len() as u64,
        valid_purchases: expected.purchases.len(),
        short: count("short"),
        long: count("long"),
        no_purchase: expected.no_purchase,
        invalid: expected.invalid.len(),
        notified: notified.len(),
        missing: topic.missing.len(),
        duplicated: topic.duplicated.len(),
        wrong: topic.wrong.len(),
        dlq_records: dlq.len(),
        dlq_missing: expected
            .invalid
            .iter()
            .filter(|at| !seen.contains_key(at))
            .count(),
        dlq_duplicates: seen.values().filter(|n| **n > 1).count(),
        dlq_wrong,
        console_repeats: console.duplicated.len(),
        console_missing: console.missing.len(),
        ..ChaosSummary::default()
    }
}
