//! The Cyberday notifier's master: assigns the partitions of the input
//! topic to workers over gRPC, fences stale results, prints one notification
//! per purchase, and writes the notifications and dead letters to Kafka in
//! transactions that also commit the consumer group's offsets.
//!
//! - [`config`]: flags and environment variables.
//! - [`assignment`]: the pure, sticky, balanced partition assignment.
//! - [`coordinator`]: the state and its rules (sessions, generations,
//!   revoke → ack → assign, fencing, duplicate suppression, rewinds,
//!   counters), as a plain struct returning effects.
//! - [`actor`]: the task that owns the coordinator, fed by a bounded channel.
//! - [`messages`]: what the tasks send each other (commands to the actor,
//!   the output's queue, rewinds, the offsets view); it imports none of them.
//! - [`service`]: the `Coordinator` gRPC service workers call (an adapter).
//! - [`auth`]: who may call it (client certificate, shared token).
//! - [`tls`]: the TLS listener (mutual TLS; refused certificates counted).
//! - [`admin`]: the `Admin` gRPC service operators call (an adapter).
//! - [`notifier`]: the console output (text or JSON lines on stdout), a view.
//! - [`output`]: the transactional producer: notifications topic, dead
//!   letters and the group's offsets, committed together. Its `mod.rs` is
//!   the transaction loop; beside it the failure policy, the watchdog on
//!   stuck calls, the producer's in-process replacement, the dead letters,
//!   the topics it creates and the test faults, a file each.
//! - [`offsets`]: committed offsets at start, watermarks, partition count.
//! - [`election`]: with `--election`, which replica leads (a Kafka group on
//!   a one-partition topic); [`standby`]: what a standby serves meanwhile.
//! - [`error`]: the error enum and its one mapping to `tonic::Status`.
//! - [`metrics`]: Prometheus metrics (`/metrics` on `--metrics-listen`).
//! - [`live`]: the HTTP routes of `--metrics-listen`: the live page, its
//!   JSON and `/metrics`, with the per-second history behind the charts.
//! - [`run`] / [`serve`] / [`serve_to`]: start everything (binding `--listen`,
//!   on a given listener, or writing notifications elsewhere than stdout);
//!   stop on the cancellation token. [`serve_to`] states the order: prepare,
//!   spawn the tasks by name, serve gRPC, then drain and wait.

pub mod actor;
pub mod admin;
pub mod assignment;
pub mod auth;
pub mod config;
pub mod coordinator;
pub mod election;
pub mod error;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod notifier;
pub mod offsets;
pub mod output;
pub mod service;
pub mod standby;
pub mod tls;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use common::pb::{self, admin_server::AdminServer, coordinator_server::CoordinatorServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use assignment::Leaders;
use config::Config;
use coordinator::{Coordinator, Settings};
use messages::{Command, OffsetsView, Rewind};
use offsets::Offsets;
use output::{Output, Topics};

/// How long open connections (sessions, health watches) may take to close
/// after shutdown starts, before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 flow-control window of each worker stream and connection.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// Binds `--listen` and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener`, notifying on stdout, until `shutdown` is
/// cancelled; then commits the last transaction.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_to(config, listener, shutdown, std::io::stdout()).await
}

/// As [`serve`], writing the console's notifications to `output` instead of
/// stdout (tests).
///
/// In this order, each step only once the one before it is done:
/// 1. `prepare`: everything that can fail, before any task runs: the flags,
///    the security files (before Kafka: a wrong file is reported at once),
///    `--metrics-listen`, the input topic's partitions, the dead-letter and
///    notifications topics, transactions initialised (which settles what a
///    previous instance left open) and only then the committed offsets
///    read, and the partitions' leaders.
/// 2. `Prepared::spawn`: the tasks, by name: console, output, watermarks,
///    actor, metadata, HTTP. A console or output that fails, or an HTTP
///    server that ends, cancels the rest.
/// 3. The gRPC server, until `shutdown` is cancelled, a task above cancels
///    it, or the server fails; then everything is cancelled and
///    `Tasks::wait` joins the tasks in a fixed order: HTTP, metadata,
///    watermarks, then the actor (it ends the sessions and sends its last
///    checkpoint after the cancel), the output (it commits that checkpoint
///    and ends once the actor's sender is gone) and the console (it prints
///    what is still queued). Of their errors the cause is reported: the
///    console's, the output's, the gRPC server's, HTTP's, the actor's.
pub async fn serve_to<W: Write + Send + 'static>(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    output: W,
) -> anyhow::Result<()> {
    let listener = Arc::new(listener);
    if config.election {
        return replicated(config, listener, shutdown, output).await;
    }
    let role = pb::GetRoleResponse {
        role: "leader".into(),
        replica: config.advertise(),
        leader: config.advertise(),
        term: 1,
    };
    lead(config, listener, shutdown, output, role).await
}

/// One term as the leader (the whole life of a master without
/// `--election`): the three steps of [`serve_to`], until `shutdown`.
async fn lead<W: Write + Send + 'static>(
    config: Config,
    listener: Arc<TcpListener>,
    shutdown: CancellationToken,
    output: W,
    role: pb::GetRoleResponse,
) -> anyhow::Result<()> {
    let prepared = tokio::select! {
        prepared = prepare(config) => prepared?,
        // A signal while starting (waiting for the input topic, say):
        // nothing runs yet that would need draining.
        _ = shutdown.cancelled() => return Ok(()),
    };
    // Ours to cancel when anything fails; the caller's token cancels it too.
    let stop = shutdown.child_token();
    let (grpc, tasks) = prepared.spawn(output, &stop);
    let served = grpc.serve(listener, role, stop.clone()).await;
    // Whatever ended the server, everything else stops too.
    stop.cancel();
    tasks.wait(served).await
}

/// `--election`: stands by until elected, leads until the term ends, and
/// again, until `shutdown`. A term ends when the group moves the election
/// partition elsewhere (the term is cancelled, its last transaction
/// committed if it still can be) or when a newer leader fenced this one;
/// after a fence it waits to be elected anew before leading again.
async fn replicated<W: Write + Send + 'static>(
    config: Config,
    listener: Arc<TcpListener>,
    shutdown: CancellationToken,
    output: W,
) -> anyhow::Result<()> {
    config.validate().map_err(|e| anyhow!(e))?;
    let election = tokio::select! {
        joined = election::Election::join(&config) => joined?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let output = SharedWriter(Arc::new(Mutex::new(output)));
    let mut standing = election.standing();
    // A term fenced by a newer leader does not lead again until the group
    // elects this replica anew.
    let mut fenced_term = 0;
    let ended = loop {
        // Standby until elected.
        let now = *standing.borrow();
        let until = shutdown.child_token();
        let standby = {
            let (config, listener, leader, until) = (
                config.clone(),
                listener.clone(),
                election.leader(),
                until.clone(),
            );
            tokio::spawn(async move { standby::serve(&config, listener, leader, now, until).await })
        };
        info!(replica = config.advertise(), "standing by");
        let elected = tokio::select! {
            s = standing.wait_for(|s| s.leading && s.term > fenced_term) => s.ok().map(|s| *s),
            _ = shutdown.cancelled() => None,
        };
        until.cancel();
        match standby.await.context("standby task")? {
            Ok(()) => {}
            Err(e) => break Err(e),
        }
        let Some(term) = elected else { break Ok(()) };
        let took_over = std::time::Instant::now();
        info!(
            term = term.term,
            "elected: taking over (fencing the previous leader)"
        );
        // The term ends when the election partition moves away.
        let stop = shutdown.child_token();
        let lost = {
            let (mut standing, stop) = (standing.clone(), stop.clone());
            tokio::spawn(async move {
                let _ = standing
                    .wait_for(|s| !s.leading || s.term != term.term)
                    .await;
                stop.cancel();
            })
        };
        let role = pb::GetRoleResponse {
            role: "leader".into(),
            replica: config.advertise(),
            leader: config.advertise(),
            term: term.term,
        };
        let led = lead(config.clone(), listener.clone(), stop, output.clone(), role).await;
        lost.abort();
        if shutdown.is_cancelled() {
            break led;
        }
        match led {
            Ok(()) => warn!(
                term = term.term,
                led_for = ?took_over.elapsed(),
                "no longer the leader: standing by"
            ),
            Err(e) if is_fenced(&e) => {
                warn!(term = term.term, error = %e, "fenced by a newer leader: standing by");
                fenced_term = term.term;
            }
            Err(e) => break Err(e),
        }
    };
    // Leave the group only now, the last transaction committed: a standby
    // is elected at once instead of after the session timeout.
    tokio::task::spawn_blocking(move || election.leave())
        .await
        .context("leaving the election")?;
    ended
}

/// Whether `e` says a newer master fenced this one.
fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<output::Error>(),
            Some(output::Error::Fenced { .. })
        )
    })
}

/// The console's writer, kept across the terms of one replica.
struct SharedWriter<W>(Arc<Mutex<W>>);

impl<W> Clone for SharedWriter<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// What [`prepare`] made ready for the tasks.
struct Prepared {
    config: Config,
    security: auth::Security,
    /// `--metrics-listen`, bound.
    http_listener: Option<TcpListener>,
    /// The input topic's partition count at start.
    partitions: usize,
    offsets: Arc<Offsets>,
    /// Transactions initialised, the first one begun.
    output: Output,
    /// The group's committed offsets at start (partitions with none absent).
    committed: BTreeMap<i32, i64>,
    /// At the start positions, preferring the partitions' leaders.
    core: Coordinator,
    /// The leaders `core` prefers, for the metadata watcher to compare with.
    leaders: Leaders,
}

/// Step 1 of [`serve_to`]: checks, connects and reads, in that order;
/// nothing runs yet.
async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    config.validate().map_err(|e| anyhow!(e))?;
    // Before Kafka: a wrong file is reported at once.
    let security = auth::Security::load(&config)?;
    let http_listener = match config.metrics_listen {
        Some(addr) => Some(common::http::bind(addr).await?),
        None => None,
    };
    let kafka = &config.kafka;
    let partitions = input_partitions(kafka, config.topic_wait).await?;
    let topics = Topics {
        input: kafka.topic.clone(),
        notifications: config.notifications_topic.trim().to_owned(),
        dlq: kafka.dlq_topic(),
    };
    topics.ensure(kafka, partitions).await?;

    let offsets = Arc::new(Offsets::new(kafka, &config.group)?);
    // Before reading the committed offsets: initialising transactions
    // aborts what a previous instance left open, which settles them.
    let output = init_output(&config, &offsets, topics).await?;
    let starts = offsets
        .starts((0..partitions as i32).collect())
        .await
        .with_context(|| {
            format!(
                "reading the committed offsets of group {} for {}",
                config.group, kafka.topic
            )
        })?;
    for s in &starts {
        info!(partition = s.partition, committed = ?s.committed, start_offset = s.position, "start position");
    }
    let committed = starts
        .iter()
        .filter_map(|s| s.committed.map(|c| (s.partition, c)))
        .collect();

    let mut core = Coordinator::new(
        Settings {
            topic: kafka.topic.clone(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            revoke_timeout: config.revoke_timeout,
            max_batch_records: config.max_batch_records,
            max_workers: config.max_workers.map(|n| n as usize),
        },
        starts.iter().map(|s| (s.partition, s.position)).collect(),
    );
    // Before any worker joins: the first rebalance already prefers them.
    let leaders = input_leaders(&offsets).await;
    core.set_leaders(leaders.clone());
    Ok(Prepared {
        config,
        security,
        http_listener,
        partitions,
        offsets,
        output,
        committed,
        core,
        leaders,
    })
}

/// The input topic's partition count, once it exists (waiting up to
/// `--topic-wait` for it).
async fn input_partitions(kafka: &common::cli::KafkaArgs, wait: Duration) -> anyhow::Result<usize> {
    let topic = &kafka.topic;
    common::kafka::wait_for_topic(kafka, topic, wait)
        .await
        .with_context(|| format!("reading the metadata of input topic {topic}"))?
        .ok_or_else(|| {
            anyhow!(
                "input topic {topic} does not exist at {} (waited {wait:?}, --topic-wait); \
                 create it first: run the producer (it creates the topic) or \
                 `deploy/local/kafka.sh up` (creates DataTopic), or point --topic at an \
                 existing topic",
                kafka.bootstrap_servers
            )
        })
}

/// The transactional output under `--transactional-id`, initialised on the
/// blocking pool.
async fn init_output(config: &Config, offsets: &Offsets, topics: Topics) -> anyhow::Result<Output> {
    let group = offsets
        .group_metadata()
        .ok_or_else(|| anyhow!("no group metadata for group {}", config.group))?;
    let transactional_id = config.transactional_id();
    let (kafka, id) = (config.kafka.clone(), transactional_id.clone());
    let read_committed = offsets.committed_reader();
    tokio::task::spawn_blocking(move || Output::init(&kafka, &id, topics, group, read_committed))
        .await
        .context("transactions task")?
        .with_context(|| format!("initialising transactions as {transactional_id}"))
}

/// The input partitions' leaders; none (assignment without them) if they
/// cannot be read.
async fn input_leaders(offsets: &Offsets) -> Leaders {
    match offsets.layout().await {
        Ok(Some((_, leaders))) => leaders,
        Ok(None) => Default::default(),
        Err(e) => {
            warn!(error = %e, "could not read the input partitions' leaders; assigning without them");
            Default::default()
        }
    }
}

impl Prepared {
    /// Step 2 of [`serve_to`]: starts every task but the gRPC server, which
    /// it returns ready to serve.
    fn spawn<W: Write + Send + 'static>(
        self,
        console_out: W,
        stop: &CancellationToken,
    ) -> (Grpc, Tasks) {
        let config = self.config;
        let (view_tx, view_rx) = watch::channel(OffsetsView {
            committed: self.committed.clone(),
            high_watermarks: Default::default(),
        });

        // Console: its own blocking thread; a failed write stops the master.
        let (console_tx, console_rx) = mpsc::channel(notifier::QUEUE_CAPACITY);
        let format = config.notify_format;
        let console =
            blocking_or_stop(stop, move || notifier::run(console_rx, console_out, format));

        // The transactional output: its own blocking thread; a fatal error
        // (fenced by a newer master) stops the master.
        let (output_tx, output_rx) = mpsc::channel(output::QUEUE_CAPACITY);
        let (rewind_tx, rewind_rx) = watch::channel(Rewind::default());
        let (out, committed) = (self.output, self.committed);
        let (output_view, stopping) = (view_tx.clone(), stop.clone());
        let writer = blocking_or_stop(stop, move || {
            out.run(committed, output_rx, rewind_tx, output_view, stopping)
        });

        let (count_tx, count_rx) = watch::channel(self.partitions);
        let watermarks = tokio::spawn(offsets::watch_watermarks(
            self.offsets.clone(),
            count_rx,
            view_tx.clone(),
            config.commit_interval.max(Duration::from_secs(1)),
            stop.clone(),
        ));

        let (commands, commands_rx) = mpsc::channel(actor::COMMAND_CAPACITY);
        let metrics = Arc::new(metrics::Metrics::with_auth_refused(
            self.security.auth.refused(),
        ));
        let liveness_every = config
            .heartbeat_interval
            .min(config.heartbeat_timeout / 4)
            .max(Duration::from_millis(10));
        let actor = tokio::spawn(actor::run(
            self.core,
            commands_rx,
            actor::Sinks {
                console: console_tx,
                output: output_tx,
                output_room: Arc::new(tokio::sync::Semaphore::new(output::QUEUE_BYTES)),
                rewinds: rewind_rx,
                metrics: metrics.clone(),
            },
            liveness_every,
            config.commit_interval,
            stop.clone(),
        ));
        let metadata = tokio::spawn(offsets::watch_partitions(
            self.offsets,
            count_tx,
            commands.clone(),
            view_tx,
            self.leaders,
            config.metadata_interval,
            stop.clone(),
        ));

        // Prometheus and the live page, when asked for; it failing stops the master.
        let http = self.http_listener.map(|listener| {
            let live = live::Live::new(
                commands.clone(),
                view_rx.clone(),
                metrics,
                config.kafka.topic.clone(),
                config.group.clone(),
            );
            spawn_http(listener, live, stop)
        });

        let tasks = Tasks {
            http,
            metadata,
            watermarks,
            actor,
            output: writer,
            console,
        };
        let grpc = Grpc {
            config,
            security: self.security,
            commands,
            offsets: view_rx,
        };
        (grpc, tasks)
    }
}

/// Runs `f` on the blocking pool; an error it returns cancels `stop`.
fn blocking_or_stop<T, E>(
    stop: &CancellationToken,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> JoinHandle<Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let failed = stop.clone();
    tokio::task::spawn_blocking(move || {
        let result = f();
        if result.is_err() {
            failed.cancel();
        }
        result
    })
}

/// Serves `--metrics-listen` until `stop`, with the live page's sampler;
/// the server ending, however, cancels `stop`.
fn spawn_http(
    listener: TcpListener,
    live: live::Live,
    stop: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let sampling = tokio::spawn(live.clone().sample(stop.clone()));
    let stopping = stop.clone();
    tokio::spawn(async move {
        let served = common::http::serve(listener, live.router(), stopping.clone()).await;
        stopping.cancel();
        let _ = sampling.await;
        served
    })
}

/// The master's tasks, by name, as [`Prepared::spawn`] started them.
struct Tasks {
    /// `--metrics-listen`: the live page's sampler and the HTTP server.
    http: Option<JoinHandle<anyhow::Result<()>>>,
    /// New partitions and leaders, for the actor.
    metadata: JoinHandle<()>,
    /// High watermarks, for the lag.
    watermarks: JoinHandle<()>,
    /// The coordinator's owner; sends the last checkpoint once cancelled.
    actor: JoinHandle<Result<(), actor::Gone>>,
    /// The transactional output; ends when the actor's sender is gone.
    output: JoinHandle<output::Result<()>>,
    /// The console; ends when the actor's sender is gone.
    console: JoinHandle<std::io::Result<()>>,
}

impl Tasks {
    /// Step 3 of [`serve_to`], once everything is cancelled: joins the
    /// tasks in this order (the actor before the output and the console,
    /// whose queues close when it is gone), then reports how the master
    /// ended, given how the gRPC server did (`served`).
    async fn wait(self, served: anyhow::Result<()>) -> anyhow::Result<()> {
        let http_result = match self.http {
            Some(http) => http.await.context("HTTP task")?,
            None => Ok(()),
        };
        let _ = self.metadata.await;
        let _ = self.watermarks.await;
        let actor_result = self.actor.await.context("coordinator task")?;
        let output_result = self.output.await.context("output task")?;
        let console_result = self.console.await.context("console task")?;
        // The cause first: a broken stdout also leaves the last transaction
        // uncommitted; a fenced output leaves the console fine.
        console_result.context("writing notifications to stdout")?;
        output_result.context("writing to Kafka")?;
        served?;
        http_result.context("serving --metrics-listen")?;
        actor_result?;
        info!("master stopped");
        Ok(())
    }
}

/// Warns when anyone who can reach the port could act as a worker.
fn warn_if_open(addr: std::net::SocketAddr, tls: bool, token: bool) {
    if tls || addr.ip().is_loopback() {
        return;
    }
    if token {
        warn!(listen = %addr, "listening in PLAINTEXT on a non-loopback address: the worker token and \
              every purchase travel unencrypted; give --tls-cert, --tls-key and --tls-ca");
    } else {
        warn!(listen = %addr, "listening in PLAINTEXT on a non-loopback address with no worker \
              authentication: anyone who reaches this port can act as a worker; give \
              --tls-cert, --tls-key and --tls-ca (or at least --token-file)");
    }
}

/// The gRPC server's parts, as [`Prepared::spawn`] leaves them.
struct Grpc {
    config: Config,
    security: auth::Security,
    /// Into the actor.
    commands: mpsc::Sender<Command>,
    /// For the Admin service.
    offsets: watch::Receiver<OffsetsView>,
}

impl Grpc {
    /// Serves on `listener` until `shutdown` (see [`grpc`]).
    async fn serve(
        self,
        listener: Arc<TcpListener>,
        role: pb::GetRoleResponse,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Grpc {
            config,
            security,
            commands,
            offsets,
        } = self;
        grpc(
            &config, security, listener, commands, offsets, role, shutdown,
        )
        .await
    }
}

/// Builds the gRPC server (Coordinator, Admin, health, reflection v1 and
/// v1alpha) and serves until `shutdown`, waiting at most [`DRAIN_TIMEOUT`]
/// for open streams.
async fn grpc(
    config: &Config,
    security: auth::Security,
    listener: Arc<TcpListener>,
    commands: mpsc::Sender<Command>,
    offsets: watch::Receiver<OffsetsView>,
    role: pb::GetRoleResponse,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let auth::Security { tls, auth } = security;
    warn_if_open(addr, tls.is_some(), auth.has_token());
    let auth_refused = auth.refused();
    let refused_handshakes = auth.refused();
    // A batch holds about 1 MiB of results at most, but one invalid record
    // travels whole, alone in its batch.
    let max_message = config.max_message_bytes as usize;
    let coordinator = InterceptedService::new(
        CoordinatorServer::new(service::CoordinatorService::new(
            commands.clone(),
            config.heartbeat_timeout,
            config.max_batch_records,
            shutdown.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message),
        auth,
    );
    let admin = AdminServer::new(admin::AdminService::new(
        commands,
        offsets,
        auth_refused,
        role,
    ))
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_serving::<CoordinatorServer<service::CoordinatorService>>()
        .await;
    health
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    info!(listen = %addr, tls = tls.is_some(), topic = %config.kafka.topic, group = %config.group, "master serving");

    let router = tonic::transport::Server::builder()
        // HTTP/2's default 64 KiB windows hold a worker to one round trip
        // per 64 KiB of results; a few MiB per stream keep it streaming,
        // and still bound what the master buffers per worker.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(STREAM_WINDOW))
        .add_service(health_service)
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?)
        .add_service(coordinator)
        .add_service(admin);
    serve_router(
        router,
        listener,
        tls,
        refused_handshakes,
        health,
        shutdown,
        DRAIN_TIMEOUT,
    )
    .await
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(common::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Server reflection, v1 (grpcurl's first choice).
fn reflection_v1() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    reflection()
        .build_v1()
        .context("building the reflection service")
}

/// Server reflection, v1alpha (older clients).
fn reflection_v1alpha() -> anyhow::Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    reflection()
        .build_v1alpha()
        .context("building the reflection service")
}

/// Serves `router` on `listener` (TLS when given) until `shutdown`; then
/// reports `""` not serving and lets open streams finish for at most
/// `drain` before cutting them. The listener stays open for whoever serves
/// on it next (a replica's next role).
async fn serve_router(
    router: tonic::transport::server::Router,
    listener: Arc<TcpListener>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    refused_handshakes: Arc<AtomicU64>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    let stopped = async move { stop.cancelled().await };
    let mut server = match tls {
        Some(tls) => {
            let incoming = tls::incoming(listener, tls, refused_handshakes, shutdown.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = plain_incoming(listener, shutdown.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };

    tokio::select! {
        done = &mut server => return done.context("gRPC server task")?.context("gRPC server"),
        _ = shutdown.cancelled() => {}
    }
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    match tokio::time::timeout(drain, &mut server).await {
        Ok(done) => done.context("gRPC server task")?.context("gRPC server"),
        Err(_) => {
            if !drain.is_zero() {
                warn!(timeout = ?drain, "connections still open after the drain timeout; closing them");
            }
            server.abort();
            Ok(())
        }
    }
}

/// The connections accepted on `listener` until `shutdown` (then the
/// listener is left to the next server).
fn plain_incoming(
    listener: Arc<TcpListener>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<tokio::net::TcpStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((conn, _)) => {
                    // Assignments and revocations are small and urgent.
                    let _ = conn.set_nodelay(true);
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: pass, and retry.
                    warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
