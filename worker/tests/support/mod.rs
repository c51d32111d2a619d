//! Shared by the worker's integration tests: the test Kafka cluster, unique
//! topics, records written with plain rdkafka, the worker run
//! in-process, and a fake master that hands every session to the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use common::cli::KafkaArgs;
use common::pb::coordinator_server::{Coordinator, CoordinatorServer};
use common::pb::session_request::Body;
use common::pb::session_response::Body as Push;
use common::pb::{Assign, Revoke, SessionRequest, SessionResponse, Welcome};
use futures::{Stream, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for any one thing before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// Bootstrap servers of the test cluster; panics with how to start one when
/// it is not reachable, so no test silently passes without Kafka.
pub fn bootstrap() -> String {
    e2e::test_bootstrap()
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    e2e::unique(prefix)
}

pub fn kafka_args(bootstrap: &str, topic: &str) -> KafkaArgs {
    KafkaArgs {
        bootstrap_servers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        options: Vec::new(),
        kafka_options_file: None,
        connect_timeout: Duration::from_secs(15),
    }
}

/// Creates `topic` with `partitions` partitions and its dead-letter topic
/// (the master's job in production; the worker must leave it alone).
pub async fn create_topics(bootstrap: &str, topic: &str, partitions: i32) {
    let args = kafka_args(bootstrap, topic);
    common::kafka::ensure_topic(&args, topic, partitions)
        .await
        .expect("creating the input topic");
    common::kafka::ensure_topic(&args, &format!("{topic}.DLQ"), 1)
        .await
        .expect("creating the dead-letter topic");
}

/// A record to write: partition, key, value, headers, timestamp.
#[derive(Debug, Clone)]
pub struct Input {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    /// `None`: a Kafka null value.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: i64,
}

/// Writes `records` (in order within each partition: the producer is
/// idempotent) and returns the offset of each.
pub async fn produce(bootstrap: &str, topic: &str, records: &[Input]) -> Vec<i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let sends = records.iter().map(|r| {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(r.partition)
            .timestamp(r.timestamp_ms)
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        producer.send(record, Duration::from_secs(30))
    });
    let deliveries = futures::future::join_all(sends).await;
    records
        .iter()
        .zip(deliveries)
        .map(|(r, d)| {
            let d = d.map_err(|(e, _)| e).expect("writing a test record");
            assert_eq!(d.partition, r.partition);
            d.offset
        })
        .collect()
}

/// High watermark of one partition, asked of the brokers.
pub fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// A valid record as the producer writes it; `taps`/`folio` decide its class.
pub fn purchase(id: &str, nombre: &str, taps: Option<f64>, folio: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "nombre": nombre,
        "apellido": "Rojas",
        "edad": 34,
        "email": format!("{}.rojas@mail.com", nombre.to_lowercase()),
        "telefono": "+56 912-345-6789",
        "ubicacion": {"direccion": "Av. Providencia 1234", "ciudad": "Santiago", "pais": "Chile"},
        "productovisto": "Colchón",
        "taps": taps,
        "folio": folio,
    })
    .to_string()
    .into_bytes()
}

/// Starts the worker in-process against `master`; returns its shutdown
/// token and task.
pub fn start_worker(
    bootstrap: &str,
    topic: &str,
    master: &str,
    extra: &[&str],
) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let mut args = vec![
        "worker",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--master",
        master,
    ];
    args.extend_from_slice(extra);
    let config = <worker::config::Config as clap::Parser>::try_parse_from(args).expect("flags");
    let token = CancellationToken::new();
    let task = tokio::spawn(worker::run(config, token.clone()));
    (token, task)
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------- fake master

/// What the fake master tells every worker in `welcome`.
#[derive(Debug, Clone)]
pub struct WelcomeSpec {
    pub worker_id: String,
    pub heartbeat_interval_ms: u32,
    pub topic: String,
    pub max_batch_records: u32,
}

/// A Coordinator that answers `hello` with `welcome` and hands each session
/// to the test, which then plays the master.
pub struct FakeMaster {
    pub addr: SocketAddr,
    sessions: mpsc::Receiver<FakeSession>,
    stop: CancellationToken,
}

/// One worker's session as the fake master sees it.
pub struct FakeSession {
    pub hello: SessionRequest,
    pub welcome: Welcome,
    requests: mpsc::Receiver<SessionRequest>,
    push: mpsc::Sender<Result<SessionResponse, Status>>,
    /// While true the fake master stops reading the worker's stream.
    stalled: tokio::sync::watch::Sender<bool>,
}

struct Service {
    welcome: WelcomeSpec,
    sessions: mpsc::Sender<FakeSession>,
}

type PushStream = Pin<Box<dyn Stream<Item = Result<SessionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for Service {
    type SessionStream = PushStream;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<PushStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no hello"))?;
        let worker_id = if hello.worker_id.is_empty() {
            self.welcome.worker_id.clone()
        } else {
            hello.worker_id.clone()
        };
        let welcome = Welcome {
            worker_id,
            heartbeat_interval_ms: self.welcome.heartbeat_interval_ms,
            topic: self.welcome.topic.clone(),
            max_batch_records: self.welcome.max_batch_records,
        };
        let (push, push_rx) = mpsc::channel(64);
        push.send(Ok(SessionResponse {
            body: Some(Push::Welcome(welcome.clone())),
        }))
        .await
        .unwrap();
        let (requests_tx, requests) = mpsc::channel(10_000);
        // Like a real master: the responses end when the requests end.
        let ended = CancellationToken::new();
        let ended_by_worker = ended.clone();
        let (stalled, mut stall) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                if stall.wait_for(|stalled| !stalled).await.is_err() {
                    break;
                }
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if requests_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            ended_by_worker.cancel();
        });
        self.sessions
            .send(FakeSession {
                hello,
                welcome,
                requests,
                push,
                stalled,
            })
            .await
            .map_err(|_| Status::unavailable("test gone"))?;
        let stream = ReceiverStream::new(push_rx).take_until(ended.cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

impl FakeMaster {
    /// Serves on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr, welcome: WelcomeSpec) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("binding the fake master");
        let addr = listener.local_addr().unwrap();
        let (sessions_tx, sessions) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let service = Service {
            welcome,
            sessions: sessions_tx,
        };
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(CoordinatorServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
                .expect("fake master");
        });
        Self {
            addr,
            sessions,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next worker session.
    pub async fn session(&mut self) -> FakeSession {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("no worker connected in time")
            .expect("fake master stopped")
    }

    /// Stops accepting; open sessions end.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeSession {
    pub async fn assign(&self, topic: &str, partition: i32, start_offset: i64, generation: u64) {
        self.push(Push::Assign(Assign {
            topic: topic.to_owned(),
            partition,
            start_offset,
            generation,
        }))
        .await;
    }

    pub async fn revoke(&self, topic: &str, partition: i32, generation: u64) {
        self.push(Push::Revoke(Revoke {
            topic: topic.to_owned(),
            partition,
            generation,
        }))
        .await;
    }

    async fn push(&self, body: Push) {
        self.push
            .send(Ok(SessionResponse { body: Some(body) }))
            .await
            .expect("session closed");
    }

    /// Stops (`true`) or resumes reading the worker's messages, as a master
    /// that does not keep up would.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Ends the session with an error, as a master that goes away would.
    pub async fn break_stream(&self) {
        let _ = self
            .push
            .send(Err(Status::unavailable("master restarting")))
            .await;
    }

    /// The next message from the worker; `None` once it closed the stream.
    pub async fn next(&mut self) -> Option<SessionRequest> {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("nothing from the worker in time")
    }

    /// The next message whose body `pick` accepts, skipping others (each
    /// given to `seen`).
    pub async fn next_matching<T>(
        &mut self,
        mut pick: impl FnMut(&Body) -> Option<T>,
        mut seen: impl FnMut(&SessionRequest),
    ) -> T {
        loop {
            let m = self.next().await.expect("the worker closed the stream");
            seen(&m);
            if let Some(t) = m.body.as_ref().and_then(&mut pick) {
                return t;
            }
        }
    }
}

/// Waits for a worker started by [`start_worker`] to stop (10 s at most)
/// and asserts that it returned without error.
pub async fn stopped(worker: JoinHandle<anyhow::Result<()>>) {
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops within 10 s")
        .expect("worker task")
        .expect("worker result");
}
