//! Harness for the end-to-end tests in `tests/tests/`: they run the real
//! `master`, `worker` and `producer` binaries as separate OS processes
//! against the real 3-broker test cluster, then check what a user would.
//!
//! - [`test_bootstrap`], [`Cluster`], [`unique`]: the test cluster's address
//!   (fails loudly when it is absent) and fresh names; also used by the
//!   other crates' Kafka tests.
//! - [`Proc`]: a child process, killed on drop, output captured to files.
//! - [`Pipeline`]: a master and its workers on a fresh topic and group;
//!   [`Security`]: TLS, tokens and Kafka credentials for its processes.
//! - [`read_topic`], [`read_notifications`], [`committed_offsets`],
//!   [`end_offsets`]: an independent view of Kafka (read_committed, as a
//!   downstream consumer reads), sharing no code with the system under test.
//! - [`http_get`], [`Scrape`]: a plain HTTP/1.1 GET and a parsed
//!   Prometheus exposition (`--metrics-listen`).
//! - [`Expected`], [`Notification`], [`check_exactly_once`],
//!   [`check_dead_letters`]: the verdict.

pub mod chaos;
mod scrape;

pub use scrape::{http_get, promtool_check, Scrape};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::classify::{classify, Classification, Rules};
use common::pb::admin_client::AdminClient;
use common::pb::{
    GetStatsRequest, GetStatsResponse, ListAssignmentsRequest, ListWorkersRequest,
    PartitionAssignment,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The test cluster's ports (deploy/local/test.sh starts it on these).
pub const DEFAULT_TEST_BOOTSTRAP: &str = "127.0.0.1:27092,127.0.0.1:27093,127.0.0.1:27094";

/// Bootstrap servers of the test cluster (`CYBERDAY_TEST_BOOTSTRAP`, or the
/// ports deploy/local/test.sh uses). Panics with how to start one when it is
/// not reachable, so no test silently passes without Kafka. Every crate's
/// Kafka tests start here.
pub fn test_bootstrap() -> String {
    let bootstrap =
        std::env::var("CYBERDAY_TEST_BOOTSTRAP").unwrap_or_else(|_| DEFAULT_TEST_BOOTSTRAP.into());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("metadata client");
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
        panic!(
            "no Kafka test cluster at {bootstrap} ({e}). Run the whole suite with \
             deploy/local/test.sh, or start the test cluster with \
             `KAFKA_PORT_BASE=27092 deploy/local/kafka.sh up` (or point \
             CYBERDAY_TEST_BOOTSTRAP at another cluster)."
        );
    }
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| warm_up(&bootstrap));
    bootstrap
}

/// On a freshly started cluster the first transaction and the first group
/// offset commit wait for the brokers to create and load
/// `__transaction_state` and `__consumer_offsets`, which takes longer than
/// the tests' own waits on a loaded machine. One transactional offset
/// commit per test process, with a generous timeout, does that first.
fn warm_up(bootstrap: &str) {
    use rdkafka::producer::{BaseProducer, Producer};

    let timeout = Duration::from_secs(120);
    let started = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "cyberday-test-warm-up")
        .create()
        .expect("warm-up producer");
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cyberday-test-warm-up")
        .create()
        .expect("warm-up group client");
    let warm = || -> Result<(), KafkaError> {
        producer.init_transactions(timeout)?;
        producer.begin_transaction()?;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("DataTopic", 0, Offset::Offset(0))?;
        let group = member
            .group_metadata()
            .expect("a consumer with a group.id has group metadata");
        producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
        producer.commit_transaction(timeout)
    };
    if let Err(e) = warm() {
        panic!(
            "the Kafka test cluster at {bootstrap} does not take a transactional offset \
             commit ({e}) after {:?}; see its logs under deploy/local/.run/",
            started.elapsed()
        );
    }
}

/// The Kafka cluster the tests run against.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub bootstrap: String,
}

impl Cluster {
    /// The test cluster; see [`test_bootstrap`].
    pub fn get() -> Self {
        Self {
            bootstrap: test_bootstrap(),
        }
    }

    /// Creates `topic` with `partitions` partitions, RF 3, min.insync.replicas=2.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let args = self.kafka_args(topic);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(common::kafka::ensure_topic(&args, topic, partitions))
            .expect("creating the test topic");
        self.wait_until_every_broker_knows(topic, partitions);
    }

    /// Creation is visible broker by broker; a process that asks another
    /// broker right away (a broker restarted by a previous test lags) would
    /// find no topic. Asks each bootstrap broker first-hand.
    fn wait_until_every_broker_knows(&self, topic: &str, partitions: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for broker in self.bootstrap.split(',') {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", broker)
                .create()
                .expect("metadata client");
            loop {
                let known = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        let t = md.topics().iter().find(|t| t.name() == topic)?;
                        (t.error().is_none() && t.partitions().len() == partitions as usize)
                            .then_some(())
                    });
                if known.is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "broker {broker} does not know {topic} after 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn kafka_args(&self, topic: &str) -> common::cli::KafkaArgs {
        common::cli::KafkaArgs {
            bootstrap_servers: self.bootstrap.clone(),
            topic: topic.into(),
            options: vec![],
            kafka_options_file: None,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where cargo put the workspace's binaries (next to this test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// A directory for this test's process output, kept after the run for reading.
pub fn out_dir(test: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("e2e-logs")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's root (scripts live under `deploy/local/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// Throw-away certificates made by `deploy/local/certs.sh` in `dir/certs`.
pub fn make_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    run_ok(
        Command::new(repo_root().join("deploy/local/certs.sh")).arg(&certs),
        "deploy/local/certs.sh",
    );
    certs
}

/// Runs `command` to completion; panics with its stderr unless it succeeds.
pub fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Panics if any file in `dir` (every process's captured stdout and
/// stderr) contains one of `secrets`.
pub fn assert_no_secret_in_logs(dir: &Path, secrets: &[&str]) {
    let mut read = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file()
            || !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("stdout" | "stderr")
            )
        {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !text.contains(secret),
                "a secret appears in {}",
                path.display()
            );
        }
        read += 1;
    }
    assert!(read > 0, "no process output in {}", dir.display());
}

/// A child process whose stdout and stderr go to files; killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, program: &Path, args: &[String]) -> Self {
        Self::spawn_with_env(name, dir, program, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        dir: &Path,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Self {
            name: name.into(),
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: no chance to drain, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// What the processes of a [`Pipeline`] get beyond the defaults: how they
/// reach Kafka (a SASL_SSL listener and its credentials) and each other
/// (TLS, tokens). The harness's own view of Kafka stays on `cluster`.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Bootstrap servers for the processes instead of the cluster's.
    pub bootstrap: Option<String>,
    /// Extra arguments of every process, e.g. `--kafka-options-file`.
    pub kafka_args: Vec<String>,
    /// Extra arguments of the master, e.g. `--tls-cert`.
    pub master_args: Vec<String>,
    /// Extra arguments of every worker started by [`Pipeline::start_worker`].
    pub worker_args: Vec<String>,
    /// The CA of the master's certificate: the master is reached over https.
    pub master_ca: Option<PathBuf>,
}

/// A master (JSON notifications) and workers on a fresh topic and group.
pub struct Pipeline {
    pub cluster: Cluster,
    pub security: Security,
    pub topic: String,
    pub group: String,
    /// The master's `--notifications-topic`: `<topic>.notifications`.
    pub notifications_topic: String,
    pub port: u16,
    /// The master's `--metrics-listen` port (Prometheus and the live page).
    pub metrics_port: u16,
    /// Each worker's `--metrics-listen` port, by id.
    pub worker_metrics_ports: BTreeMap<String, u16>,
    pub dir: PathBuf,
    pub master: Option<Proc>,
    /// Output files of every master run, in order (a restarted master adds one).
    pub master_outputs: Vec<PathBuf>,
    pub workers: Vec<Proc>,
    master_runs: usize,
    /// Extra environment of every master this pipeline starts.
    master_env: Vec<(String, String)>,
}

impl Pipeline {
    /// Creates the topic (6 partitions) and starts the master.
    pub fn start(test: &str, partitions: i32) -> Self {
        Self::start_with(test, partitions, Cluster::get(), Security::default())
    }

    /// [`Pipeline::start`], the master with extra environment variables.
    pub fn start_with_master_env(test: &str, partitions: i32, env: &[(&str, &str)]) -> Self {
        Self::build(test, partitions, Cluster::get(), Security::default(), env)
    }

    /// As [`Self::start`], on `cluster`, with `security` for the processes.
    pub fn start_with(test: &str, partitions: i32, cluster: Cluster, security: Security) -> Self {
        Self::build(test, partitions, cluster, security, &[])
    }

    fn build(
        test: &str,
        partitions: i32,
        cluster: Cluster,
        security: Security,
        env: &[(&str, &str)],
    ) -> Self {
        let topic = unique(test);
        cluster.create_topic(&topic, partitions);
        let mut p = Self {
            cluster,
            security,
            group: format!("{topic}-group"),
            notifications_topic: format!("{topic}.notifications"),
            topic,
            port: free_port(),
            metrics_port: free_port(),
            worker_metrics_ports: BTreeMap::new(),
            dir: out_dir(test),
            master: None,
            master_outputs: vec![],
            workers: vec![],
            master_runs: 0,
            master_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.start_master();
        p
    }

    pub fn master_url(&self) -> String {
        let scheme = if self.security.master_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The bootstrap servers the processes use.
    pub fn process_bootstrap(&self) -> &str {
        self.security
            .bootstrap
            .as_deref()
            .unwrap_or(&self.cluster.bootstrap)
    }

    /// `--bootstrap-servers` and the extra Kafka arguments of every process.
    fn kafka_args(&self) -> Vec<String> {
        let mut args = vec![
            "--bootstrap-servers".to_owned(),
            self.process_bootstrap().to_owned(),
        ];
        args.extend(self.security.kafka_args.iter().cloned());
        args
    }

    /// A client of the master's Admin service (over TLS when the master
    /// speaks it; no client certificate needed).
    pub async fn admin(&self) -> Result<AdminClient<Channel>, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(self.master_url())?;
        if let Some(ca) = &self.security.master_ca {
            let ca = std::fs::read(ca).expect("reading the master's CA");
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
        }
        Ok(AdminClient::new(endpoint.connect().await?))
    }

    pub fn start_master(&mut self) {
        self.master_runs += 1;
        let mut args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--topic",
            &self.topic,
            "--group",
            &self.group,
            "--notifications-topic",
            &self.notifications_topic,
            "--notify-format",
            "json",
            "--heartbeat-timeout",
            "2s",
            "--metrics-listen",
            &format!("127.0.0.1:{}", self.metrics_port),
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.kafka_args());
        args.extend(self.security.master_args.iter().cloned());
        let name = format!("master-{}", self.master_runs);
        let proc = Proc::spawn_with_env(&name, &self.dir, &bin("master"), &args, &self.master_env);
        self.master_outputs.push(proc.stdout.clone());
        self.master = Some(proc);
        self.wait_for_master();
    }

    fn wait_for_master(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if block_on(self.admin()).is_ok() {
                return;
            }
            let m = self.master.as_mut().unwrap();
            assert!(m.is_running(), "master exited:\n{}", m.stderr_text());
            assert!(Instant::now() < deadline, "master not listening after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn start_worker(&mut self, id: &str) {
        let args = self.security.worker_args.clone();
        self.start_worker_with(id, &args);
    }

    /// Starts a worker with `extra` arguments instead of the pipeline's
    /// worker arguments (an intruder, a misconfigured worker); a `--master`
    /// among them replaces the master's address.
    pub fn start_worker_with(&mut self, id: &str, extra: &[String]) {
        let metrics_port = free_port();
        self.worker_metrics_ports
            .insert(id.to_owned(), metrics_port);
        let mut args: Vec<String> = vec!["--id".into(), id.into()];
        if !extra.iter().any(|a| a == "--master") {
            args.extend(["--master".into(), self.master_url()]);
        }
        args.extend(self.kafka_args());
        args.extend([
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ]);
        args.extend(extra.iter().cloned());
        self.workers
            .push(Proc::spawn(id, &self.dir, &bin("worker"), &args));
    }

    pub fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers.iter_mut().find(|w| w.name == id).unwrap()
    }

    /// Runs the producer to completion (it paces itself with `--rate`).
    pub fn produce(&self, count: u64, rate: u32, seed: u64) -> std::process::Output {
        let mut command = Command::new(bin("producer"));
        command
            .args(self.kafka_args())
            .args(["--topic", &self.topic])
            .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
            .args(["--seed", &seed.to_string()])
            .args([
                "--no-purchase-ratio",
                "0.3",
                "--long-ratio",
                "0.2",
                "--invalid-ratio",
                "0.02",
            ])
            .env("RUST_LOG", "warn");
        run_ok(&mut command, "the producer")
    }

    /// Starts the producer in the background.
    pub fn produce_in_background(&self, count: u64, rate: u32, seed: u64) -> Proc {
        let mut args: Vec<String> = [
            "--topic",
            &self.topic,
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
            "--seed",
            &seed.to_string(),
            "--no-purchase-ratio",
            "0.3",
            "--long-ratio",
            "0.2",
            "--invalid-ratio",
            "0.02",
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.kafka_args());
        Proc::spawn("producer", &self.dir, &bin("producer"), &args)
    }

    pub fn stats(&self) -> GetStatsResponse {
        block_on(async {
            let mut c = self.admin().await?;
            Ok::<_, Box<dyn std::error::Error>>(c.get_stats(GetStatsRequest {}).await?.into_inner())
        })
        .expect("GetStats")
    }

    /// The ids of the workers the master has accepted.
    pub fn worker_ids(&self) -> Vec<String> {
        block_on(async {
            let mut c = self.admin().await?;
            let workers = c.list_workers(ListWorkersRequest {}).await?.into_inner();
            Ok::<_, Box<dyn std::error::Error>>(workers.workers)
        })
        .expect("ListWorkers")
        .into_iter()
        .map(|w| w.worker_id)
        .collect()
    }

    pub fn assignments(&self) -> Vec<PartitionAssignment> {
        block_on(async {
            let mut c = self.admin().await?;
            Ok::<_, Box<dyn std::error::Error>>(
                c.list_assignments(ListAssignmentsRequest {})
                    .await?
                    .into_inner()
                    .assignments,
            )
        })
        .expect("ListAssignments")
    }

    /// Waits until the group's committed offsets reach the topic's end offsets.
    pub fn wait_until_committed_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let end = end_offsets(&self.cluster, &self.topic);
            let committed = committed_offsets(&self.cluster, &self.topic, &self.group);
            if end.iter().all(|(p, e)| committed.get(p) == Some(e)) {
                return;
            }
            if let Some(m) = self.master.as_mut() {
                assert!(m.is_running(), "master exited:\n{}", m.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "committed offsets {committed:?} did not reach end offsets {end:?} in {timeout:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM everything; the master must exit cleanly.
    pub fn stop(&mut self) {
        for w in &mut self.workers {
            w.terminate(Duration::from_secs(15));
        }
        if let Some(m) = self.master.as_mut() {
            let clean = m.terminate(Duration::from_secs(15));
            assert!(clean, "master did not exit cleanly:\n{}", m.stderr_text());
        }
    }

    /// Every notification in the notifications topic, as a read_committed
    /// consumer sees it (the durable record, unlike the console).
    pub fn topic_notifications(&self) -> Vec<Notification> {
        read_notifications(&self.cluster, &self.notifications_topic)
    }

    /// Every notification the master printed, over all its runs.
    pub fn notifications(&self) -> Vec<Notification> {
        self.master_outputs
            .iter()
            .flat_map(|path| {
                let file = File::open(path).unwrap();
                BufReader::new(file)
                    .lines()
                    .map(|l| l.unwrap())
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| Notification::parse(&l))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One record as an independent consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// High watermark of every partition of `topic`.
pub fn end_offsets(cluster: &Cluster, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            (p.id(), high)
        })
        .collect()
}

/// Offsets committed by `group` on `topic` (partitions without a commit are absent).
pub fn committed_offsets(cluster: &Cluster, topic: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in end_offsets(cluster, topic).keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Every committed record of `topic` up to its current end offsets, as a
/// read_committed consumer sees it: records of aborted transactions and
/// transaction markers are skipped. With a transaction still open, it
/// stops where the open transaction begins.
pub fn read_topic(cluster: &Cluster, topic: &str) -> Vec<Record> {
    let end = end_offsets(cluster, topic);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("group.id", "e2e-reader") // needed by librdkafka even for assign; never committed
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // A transactional topic ends with markers no record stands for:
        // the end is where the client says it is.
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut done = BTreeSet::new();
    for (&p, &high) in &end {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (low, _) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if low >= high {
            done.insert(p);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.len() < end.len() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                done.insert(p);
                continue;
            }
            Err(e) => panic!("consuming {topic}: {e}"),
        };
        if m.offset() + 1 >= end[&m.partition()] {
            done.insert(m.partition());
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// What the input topic says must happen.
#[derive(Debug, Default)]
pub struct Expected {
    /// (partition, offset) → (kind, folio) of every valid purchase.
    pub purchases: BTreeMap<(i32, i64), (String, String)>,
    pub no_purchase: usize,
    /// (partition, offset) of every invalid record.
    pub invalid: Vec<(i32, i64)>,
}

impl Expected {
    pub fn from_topic(cluster: &Cluster, topic: &str) -> Self {
        let mut e = Expected::default();
        for r in read_topic(cluster, topic) {
            match classify(&r.value, &Rules::default()) {
                Classification::Purchase { kind, purchase } => {
                    e.purchases.insert(
                        (r.partition, r.offset),
                        (kind.as_str().into(), purchase.folio.unwrap_or_default()),
                    );
                }
                Classification::NoPurchase(_) => e.no_purchase += 1,
                Classification::Invalid(_) => e.invalid.push((r.partition, r.offset)),
            }
        }
        e
    }
}

/// Every notification in the notifications `topic`, read_committed. Each
/// value must be one JSON object as the console prints it, keyed by folio.
pub fn read_notifications(cluster: &Cluster, topic: &str) -> Vec<Notification> {
    read_topic(cluster, topic)
        .iter()
        .map(|r| {
            let value = std::str::from_utf8(&r.value)
                .unwrap_or_else(|e| panic!("notification that is not UTF-8 ({e}): {r:?}"));
            let n = Notification::parse(value);
            assert_eq!(
                r.key.as_deref(),
                Some(n.folio.as_bytes()),
                "a notification's key is its folio: {value}"
            );
            n
        })
        .collect()
}

/// One line of the master's `--notify-format json` output (or one value of
/// the notifications topic: the same object).
#[derive(Debug, Clone)]
pub struct Notification {
    pub kind: String,
    pub folio: String,
    pub partition: i32,
    pub offset: i64,
    pub worker: String,
    pub latency_ms: f64,
}

impl Notification {
    pub fn parse(line: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("master printed a line that is not JSON ({e}): {line}"));
        for key in [
            "kind",
            "folio",
            "nombre",
            "email",
            "productovisto",
            "taps",
            "partition",
            "offset",
            "worker",
            "latency_ms",
        ] {
            assert!(v.get(key).is_some(), "notification without {key}: {line}");
        }
        Self {
            kind: v["kind"].as_str().unwrap().into(),
            folio: v["folio"].as_str().unwrap().into(),
            partition: v["partition"].as_i64().unwrap() as i32,
            offset: v["offset"].as_i64().unwrap(),
            worker: v["worker"].as_str().unwrap().into(),
            latency_ms: v["latency_ms"].as_f64().unwrap(),
        }
    }
}

/// How the notifications compare with what the input topic requires.
#[derive(Debug, Default)]
pub struct Verdict {
    pub missing: Vec<(i32, i64)>,
    pub duplicated: Vec<(i32, i64)>,
    /// Notified although not a valid purchase, or with the wrong kind/folio.
    pub wrong: Vec<String>,
}

impl Verdict {
    pub fn assert_exactly_once(&self) {
        assert!(
            self.missing.is_empty() && self.duplicated.is_empty() && self.wrong.is_empty(),
            "{} missing (first {:?}), {} duplicated (first {:?}), {} wrong (first {:?})",
            self.missing.len(),
            self.missing.first(),
            self.duplicated.len(),
            self.duplicated.first(),
            self.wrong.len(),
            self.wrong.first()
        );
    }
}

pub fn check_exactly_once(expected: &Expected, notified: &[Notification]) -> Verdict {
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    let mut v = Verdict::default();
    for n in notified {
        let at = (n.partition, n.offset);
        *seen.entry(at).or_default() += 1;
        match expected.purchases.get(&at) {
            Some((kind, folio)) if *kind == n.kind && *folio == n.folio => {}
            other => v.wrong.push(format!("{n:?} expected {other:?}")),
        }
    }
    for at in expected.purchases.keys() {
        match seen.get(at).copied().unwrap_or(0) {
            0 => v.missing.push(*at),
            1 => {}
            _ => v.duplicated.push(*at),
        }
    }
    v
}

/// Checks the dead-letter topic holds every invalid record of the input with
/// a reason (read_committed); returns how many appear more than once.
pub fn check_dead_letters(cluster: &Cluster, topic: &str, expected: &Expected) -> usize {
    let dlq = read_topic(cluster, &format!("{topic}.DLQ"));
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    for r in &dlq {
        let partition: i32 = r
            .header("cyberday.source.partition")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("DLQ record without cyberday.source.partition: {r:?}"));
        let offset: i64 = r
            .header("cyberday.source.offset")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("DLQ record without cyberday.source.offset: {r:?}"));
        let reason = r.header("cyberday.reason").unwrap_or_default();
        assert!(!reason.is_empty(), "DLQ record without a reason: {r:?}");
        *seen.entry((partition, offset)).or_default() += 1;
    }
    for at in &expected.invalid {
        assert!(
            seen.contains_key(at),
            "invalid record {at:?} is not in the DLQ"
        );
    }
    assert_eq!(
        seen.len(),
        expected.invalid.len(),
        "the DLQ holds records that are not invalid input"
    );
    seen.values().filter(|n| **n > 1).count()
}
