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
//!   letters and the group's offsets, committed together.
//! - [`offsets`]: committed offsets at start, watermarks, partition count.
//! - [`error`]: the error enum and its one mapping to `tonic::Status`.
//! - [`metrics`]: Prometheus metrics (`/metrics` on `--metrics-listen`).
//! - [`live`]: the HTTP routes of `--metrics-listen`: the live page, its
//!   JSON and `/metrics`, with the per-second history behind the charts.
//! - [`run`] / [`serve`] / [`serve_to`]: start everything (binding `--listen`,
//!   on a given listener, or writing notifications elsewhere than stdout);
//!   stop on the cancellation token.

pub mod actor;
pub mod admin;
pub mod assignment;
pub mod auth;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod notifier;
pub mod offsets;
pub mod output;
pub mod service;
pub mod tls;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use common::pb::{admin_server::AdminServer, coordinator_server::CoordinatorServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use config::Config;
use coordinator::{Coordinator, Settings};
use messages::{OffsetsView, Rewind};
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
pub async fn serve_to<W: Write + Send + 'static>(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    output: W,
) -> anyhow::Result<()> {
    config.validate().map_err(|e| anyhow!(e))?;
    // Before Kafka: a wrong file is reported at once.
    let security = auth::Security::load(&config)?;
    let http_listener = match config.metrics_listen {
        Some(addr) => Some(common::http::bind(addr).await?),
        None => None,
    };
    // Ours to cancel when anything fails; the caller's token cancels it too.
    let stop = shutdown.child_token();
    let kafka = &config.kafka;
    let topic = kafka.topic.clone();

    let partitions = common::kafka::topic_partitions(kafka, &topic)
        .await
        .with_context(|| format!("reading the metadata of input topic {topic}"))?
        .ok_or_else(|| {
            anyhow!(
                "input topic {topic} does not exist at {}; create it first: run the producer \
                 (it creates the topic) or `deploy/local/kafka.sh up` (creates DataTopic), \
                 or point --topic at an existing topic",
                kafka.bootstrap_servers
            )
        })?;
    let topics = Topics {
        input: topic.clone(),
        notifications: config.notifications_topic.trim().to_owned(),
        dlq: kafka.dlq_topic(),
    };
    topics.ensure(kafka, partitions).await?;

    let offsets = Arc::new(Offsets::new(kafka, &config.group)?);
    let group = offsets
        .group_metadata()
        .ok_or_else(|| anyhow!("no group metadata for group {}", config.group))?;
    // Before reading the committed offsets: initialising transactions
    // aborts what a previous instance left open, which settles them.
    let transactional_id = config.transactional_id();
    let out = {
        let (kafka, id) = (kafka.clone(), transactional_id.clone());
        let read_committed = offsets.committed_reader();
        tokio::task::spawn_blocking(move || {
            Output::init(&kafka, &id, topics, group, read_committed)
        })
        .await
        .context("transactions task")?
        .with_context(|| format!("initialising transactions as {transactional_id}"))?
    };
    let starts = offsets
        .starts((0..partitions as i32).collect())
        .await
        .with_context(|| {
            format!(
                "reading the committed offsets of group {} for {topic}",
                config.group
            )
        })?;
    for s in &starts {
        info!(partition = s.partition, committed = ?s.committed, start_offset = s.position, "start position");
    }
    let committed: std::collections::BTreeMap<i32, i64> = starts
        .iter()
        .filter_map(|s| s.committed.map(|c| (s.partition, c)))
        .collect();
    let (view_tx, view_rx) = watch::channel(OffsetsView {
        committed: committed.clone(),
        high_watermarks: Default::default(),
    });

    let mut core = Coordinator::new(
        Settings {
            topic: topic.clone(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            revoke_timeout: config.revoke_timeout,
            max_batch_records: config.max_batch_records,
            max_workers: config.max_workers.map(|n| n as usize),
        },
        starts.iter().map(|s| (s.partition, s.position)).collect(),
    );
    // Before any worker joins: the first rebalance already prefers them.
    let leaders = match offsets.layout().await {
        Ok(Some((_, leaders))) => leaders,
        Ok(None) => Default::default(),
        Err(e) => {
            warn!(error = %e, "could not read the input partitions' leaders; assigning without them");
            Default::default()
        }
    };
    core.set_leaders(leaders.clone());

    // Console: its own blocking thread; a failed write stops the master.
    let (console_tx, console_rx) = mpsc::channel(notifier::QUEUE_CAPACITY);
    let format = config.notify_format;
    let console_failed = stop.clone();
    let console = tokio::task::spawn_blocking(move || {
        let result = notifier::run(console_rx, output, format);
        if result.is_err() {
            console_failed.cancel();
        }
        result
    });

    // The transactional output: its own blocking thread; a fatal error
    // (fenced by a newer master) stops the master.
    let (output_tx, output_rx) = mpsc::channel(output::QUEUE_CAPACITY);
    let (rewind_tx, rewind_rx) = watch::channel(Rewind::default());
    let output_failed = stop.clone();
    let stopping = stop.clone();
    let output_view = view_tx.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let result = out.run(committed, output_rx, rewind_tx, output_view, stopping);
        if result.is_err() {
            output_failed.cancel();
        }
        result
    });

    let (count_tx, count_rx) = watch::channel(partitions);
    let watermarks = tokio::spawn(offsets::watch_watermarks(
        offsets.clone(),
        count_rx,
        view_tx.clone(),
        config.commit_interval.max(Duration::from_secs(1)),
        stop.clone(),
    ));

    let (commands, commands_rx) = mpsc::channel(actor::COMMAND_CAPACITY);
    let metrics = Arc::new(metrics::Metrics::with_auth_refused(security.auth.refused()));
    let liveness_every = config
        .heartbeat_interval
        .min(config.heartbeat_timeout / 4)
        .max(Duration::from_millis(10));
    let actor = tokio::spawn(actor::run(
        core,
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
        offsets.clone(),
        count_tx,
        commands.clone(),
        view_tx,
        leaders,
        config.metadata_interval,
        stop.clone(),
    ));

    // Prometheus and the live page, when asked for; it failing stops the master.
    let http = http_listener.map(|listener| {
        let live = live::Live::new(
            commands.clone(),
            view_rx.clone(),
            metrics,
            topic.clone(),
            config.group.clone(),
        );
        let sampling = tokio::spawn(live.clone().sample(stop.clone()));
        let stopping = stop.clone();
        tokio::spawn(async move {
            let served = common::http::serve(listener, live.router(), stopping.clone()).await;
            stopping.cancel();
            let _ = sampling.await;
            served
        })
    });

    let served = grpc(&config, security, listener, commands, view_rx, stop.clone()).await;
    // Whatever ended the server, everything else stops too.
    stop.cancel();
    let http_result = match http {
        Some(http) => http.await.context("HTTP task")?,
        None => Ok(()),
    };

    let _ = metadata.await;
    let _ = watermarks.await;
    let actor_result = actor.await.context("coordinator task")?;
    let output_result = writer.await.context("output task")?;
    let console_result = console.await.context("console task")?;
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

/// Builds the gRPC server (Coordinator, Admin, health, reflection v1 and
/// v1alpha) and serves until `shutdown`, waiting at most [`DRAIN_TIMEOUT`]
/// for open streams.
async fn grpc(
    config: &Config,
    security: auth::Security,
    listener: TcpListener,
    commands: mpsc::Sender<messages::Command>,
    offsets: watch::Receiver<OffsetsView>,
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
    let admin = AdminServer::new(admin::AdminService::new(commands, offsets, auth_refused))
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
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(common::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service")?;

    info!(listen = %addr, tls = tls.is_some(), topic = %config.kafka.topic, group = %config.group, "master serving");

    let router = tonic::transport::Server::builder()
        // HTTP/2's default 64 KiB windows hold a worker to one round trip
        // per 64 KiB of results; a few MiB per stream keep it streaming,
        // and still bound what the master buffers per worker.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(STREAM_WINDOW))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator)
        .add_service(admin);
    let stop = shutdown.clone();
    let stopped = async move { stop.cancelled().await };
    let mut server = match tls {
        Some(tls) => {
            let incoming = tls::incoming(listener, tls, refused_handshakes, shutdown.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                if let Ok(c) = &conn {
                    // Assignments and revocations are small and urgent.
                    let _ = c.set_nodelay(true);
                }
                conn
            });
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
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(done) => done.context("gRPC server task")?.context("gRPC server"),
        Err(_) => {
            warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; closing them");
            server.abort();
            Ok(())
        }
    }
}
