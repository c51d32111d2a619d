//! Shared by the master's integration tests: the test cluster, unique names,
//! an in-process master with captured output, a fake worker speaking the
//! Coordinator protocol, and an independent view of the group's offsets and
//! of the output topics (read_committed).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use common::pb::{self, coordinator_client::CoordinatorClient, session_response};
use master::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Bootstrap servers of the test cluster; panics with how to start one when
/// it is not reachable, so no test silently passes without Kafka.
pub fn bootstrap() -> String {
    e2e::test_bootstrap()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    e2e::unique(prefix)
}

/// The master's config for `topic` and `group`, with short intervals and
/// `<topic>.notifications` as the notifications topic.
pub fn config(bootstrap: &str, topic: &str, group: &str, extra: &[&str]) -> Config {
    let notifications = format!("{topic}.notifications");
    let mut args = vec![
        "master",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--listen",
        "127.0.0.1:0",
    ];
    for (flag, value) in [
        ("--commit-interval", "200ms"),
        ("--metadata-interval", "1s"),
        ("--notifications-topic", notifications.as_str()),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("test config")
}

/// Creates `topic` with `partitions` and writes `per_partition` records
/// into each, so watermarks and lag are real.
pub async fn topic_with_records(config: &Config, partitions: i32, per_partition: usize) {
    let n = common::kafka::ensure_topic(&config.kafka, &config.kafka.topic, partitions)
        .await
        .expect("creating the test topic");
    assert_eq!(n, partitions as usize);
    if per_partition == 0 {
        return;
    }
    let args = config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = common::kafka::producer_config(&args)
            .create()
            .expect("producer");
        for p in 0..partitions {
            for i in 0..per_partition {
                let value = format!("{{\"n\":{i}}}");
                producer
                    .send(
                        BaseRecord::<(), _>::to(&args.topic)
                            .partition(p)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    })
    .await
    .unwrap();
}

/// Captures what the master writes as notifications.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .expect("notifications are UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A master served in-process on 127.0.0.1:0.
pub struct Master {
    pub addr: SocketAddr,
    pub output: Output,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Master {
    pub async fn start(config: Config) -> Self {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let output = Output::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(master::serve_to(
            config,
            listener,
            shutdown.clone(),
            output.clone(),
        ));
        Self {
            addr,
            output,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plain channel, for the health and reflection clients.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let endpoint = tonic::transport::Channel::from_shared(self.url()).unwrap();
        tokio::time::timeout(WAIT, endpoint.connect())
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    pub async fn admin(&self) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
        tokio::time::timeout(WAIT, pb::admin_client::AdminClient::connect(self.url()))
            .await
            .expect("admin connect timed out")
            .expect("admin connect")
    }

    /// Cancels and waits for a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("master did not stop in time")
            .expect("master task panicked")
            .expect("master returned an error");
    }
}

/// A worker made of the generated client, driven by the test.
#[derive(Debug)]
pub struct FakeWorker {
    pub id: String,
    pub welcome: pb::Welcome,
    requests: mpsc::Sender<pb::SessionRequest>,
    responses: Streaming<pb::SessionResponse>,
}

impl FakeWorker {
    /// Opens a session with `hello`; the error is the server's refusal.
    pub async fn connect(url: &str, id: &str) -> Result<Self, tonic::Status> {
        let mut client = tokio::time::timeout(WAIT, CoordinatorClient::connect(url.to_owned()))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(request(
                id,
                0,
                pb::session_request::Body::Hello(pb::Hello {
                    version: "test".into(),
                    host: "test-host".into(),
                }),
            ))
            .await
            .unwrap();
        let mut responses = tokio::time::timeout(WAIT, client.session(ReceiverStream::new(rx)))
            .await
            .expect("session timed out")?
            .into_inner();
        let first = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("welcome timed out")?
            .expect("stream ended before welcome");
        let Some(session_response::Body::Welcome(welcome)) = first.body else {
            panic!("first response is not welcome: {first:?}");
        };
        Ok(Self {
            id: welcome.worker_id.clone(),
            welcome,
            requests,
            responses,
        })
    }

    pub async fn send(&self, body: pb::session_request::Body) {
        self.requests
            .send(request(&self.id, 0, body))
            .await
            .expect("session request channel closed");
    }

    /// A handle to send on this session from another task.
    pub fn sender(&self) -> mpsc::Sender<pb::SessionRequest> {
        self.requests.clone()
    }

    /// Sends a request as is (worker id included).
    pub async fn send_raw(&self, req: pb::SessionRequest) {
        self.requests
            .send(req)
            .await
            .expect("session request channel closed");
    }

    /// The next response; panics after [`WAIT`].
    pub async fn next(&mut self) -> Result<Option<session_response::Body>, tonic::Status> {
        let m = tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no response in time")?;
        Ok(m.map(|m| m.body.expect("response without body")))
    }

    /// The next `n` assigns, by partition.
    pub async fn assigns(&mut self, n: usize) -> BTreeMap<i32, pb::Assign> {
        let mut got = BTreeMap::new();
        while got.len() < n {
            match self.next().await.expect("session failed") {
                Some(session_response::Body::Assign(a)) => {
                    got.insert(a.partition, a);
                }
                other => panic!("expected assign, got {other:?}"),
            }
        }
        got
    }

    /// The next `n` revokes, by partition.
    pub async fn revokes(&mut self, n: usize) -> BTreeMap<i32, pb::Revoke> {
        let mut got = BTreeMap::new();
        while got.len() < n {
            match self.next().await.expect("session failed") {
                Some(session_response::Body::Revoke(r)) => {
                    got.insert(r.partition, r);
                }
                other => panic!("expected revoke, got {other:?}"),
            }
        }
        got
    }

    pub async fn results(&self, partition: i32, generation: u64, results: Vec<pb::RecordResult>) {
        self.send(pb::session_request::Body::Results(pb::ResultBatch {
            partition,
            generation,
            results,
        }))
        .await;
    }

    /// Ends the request stream (the worker process going away).
    pub fn hang_up(self) -> Streaming<pb::SessionResponse> {
        self.responses
    }
}

pub fn request(id: &str, generation: u64, body: pb::session_request::Body) -> pb::SessionRequest {
    pb::SessionRequest {
        worker_id: id.into(),
        generation,
        body: Some(body),
    }
}

/// One record's result; SHORT and LONG carry a purchase summary, INVALID
/// the record (key `key-<offset>`, a small value, one header).
pub fn result(offset: i64, outcome: pb::Outcome) -> pb::RecordResult {
    let invalid = outcome == pb::Outcome::Invalid;
    let purchase =
        matches!(outcome, pb::Outcome::Short | pb::Outcome::Long).then(|| pb::PurchaseSummary {
            id: format!("{offset:024x}"),
            nombre: "Valentina".into(),
            apellido: "Muñoz".into(),
            email: "valentina.munoz@mail.com".into(),
            productovisto: "Colchón".into(),
            folio: format!("QZX-{offset:04}"),
            taps: if outcome == pb::Outcome::Long {
                45.0
            } else {
                12.3
            },
        });
    pb::RecordResult {
        offset,
        timestamp_ms: master::coordinator::now_ms() - 5,
        outcome: outcome as i32,
        purchase,
        invalid_code: if invalid {
            "bad_folio".into()
        } else {
            String::new()
        },
        invalid_detail: if invalid {
            "folio must look like ABC-1234".into()
        } else {
            String::new()
        },
        key: invalid.then(|| format!("key-{offset}").into_bytes()),
        value: invalid.then(|| format!("{{\"folio\":\"AB-{offset}\"}}").into_bytes()),
        headers: if invalid {
            vec![pb::KafkaHeader {
                key: "trace-id".into(),
                value: Some(format!("t-{offset}").into_bytes()),
            }]
        } else {
            Vec::new()
        },
    }
}

/// Every committed record of `topic`, as a read_committed consumer sees it.
pub async fn read_committed(bootstrap: &str, topic: &str) -> Vec<e2e::Record> {
    let cluster = e2e::Cluster {
        bootstrap: bootstrap.to_owned(),
    };
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || e2e::read_topic(&cluster, &topic))
        .await
        .unwrap()
}

/// The values of [`read_committed`] as text, sorted.
pub async fn committed_values(bootstrap: &str, topic: &str) -> Vec<String> {
    let mut values: Vec<String> = read_committed(bootstrap, topic)
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.value).expect("UTF-8 values"))
        .collect();
    values.sort();
    values
}

/// The group's committed offsets as Kafka reports them (-1: none).
pub async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| match got.find_partition(&topic, p).unwrap().offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
