//! The Cyberday notifier's master: assigns the partitions of the input
//! topic to workers over gRPC, fences stale results, prints one notification
//! per purchase and commits the consumer group's offsets after them.
//!
//! - [`config`]: flags and environment variables.
//! - [`assignment`]: the pure, sticky, balanced partition assignment.
//! - [`coordinator`]: the state and its rules (sessions, generations,
//!   revoke → ack → assign, fencing, duplicate suppression, counters), as a
//!   plain struct returning effects.
//! - [`actor`]: the task that owns the coordinator, fed by a bounded channel.
//! - [`service`]: the `Coordinator` gRPC service workers call (an adapter).
//! - [`admin`]: the `Admin` gRPC service operators call (an adapter).
//! - [`notifier`]: the console output (text or JSON lines on stdout).
//! - [`offsets`]: committed offsets, commits, watermarks, partition count.
//! - [`error`]: the error enum and its one mapping to `tonic::Status`.
//! - [`run`] / [`serve`] / [`serve_to`]: start everything (binding `--listen`,
//!   on a given listener, or writing notifications elsewhere than stdout);
//!   stop on the cancellation token.

pub mod actor;
pub mod admin;
pub mod assignment;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod notifier;
pub mod offsets;
pub mod service;

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
use tracing::{info, warn};

use config::Config;
use coordinator::{Coordinator, Settings};
use offsets::{Offsets, OffsetsView};

/// How long open connections (sessions, health watches) may take to close
/// after shutdown starts, before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `--listen` and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener`, notifying on stdout, until `shutdown` is
/// cancelled; then flushes and commits once more.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_to(config, listener, shutdown, std::io::stdout()).await
}

/// As [`serve`], writing notifications to `output` instead of stdout (tests).
pub async fn serve_to<W: Write + Send + 'static>(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    output: W,
) -> anyhow::Result<()> {
    config.validate().map_err(|e| anyhow!(e))?;
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
    let dlq = kafka.dlq_topic();
    common::kafka::ensure_topic(kafka, &dlq, partitions as i32)
        .await
        .with_context(|| format!("preparing the dead-letter topic {dlq}"))?;

    let offsets = Arc::new(Offsets::new(kafka, &config.group)?);
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
    let (view_tx, view_rx) = watch::channel(OffsetsView {
        committed: starts
            .iter()
            .filter_map(|s| s.committed.map(|c| (s.partition, c)))
            .collect(),
        high_watermarks: Default::default(),
    });

    let core = Coordinator::new(
        Settings {
            topic: topic.clone(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            revoke_timeout: config.revoke_timeout,
            max_batch_records: config.max_batch_records,
        },
        starts.iter().map(|s| (s.partition, s.position)).collect(),
    );

    // Console: its own blocking thread; a failed write stops the master.
    let (notify_tx, notify_rx) = mpsc::channel(notifier::QUEUE_CAPACITY);
    let (flushed_tx, flushed_rx) = watch::channel(None);
    let format = config.notify_format;
    let console_failed = stop.clone();
    let console = tokio::task::spawn_blocking(move || {
        let result = notifier::run(notify_rx, output, format, flushed_tx);
        if result.is_err() {
            console_failed.cancel();
        }
        result
    });

    let committer = tokio::spawn(offsets::committer(
        offsets.clone(),
        flushed_rx.clone(),
        view_tx.clone(),
    ));
    let watermarks = tokio::spawn(offsets::watch_watermarks(
        offsets.clone(),
        flushed_rx,
        view_tx.clone(),
        config.commit_interval,
        stop.clone(),
    ));

    let (commands, commands_rx) = mpsc::channel(actor::COMMAND_CAPACITY);
    let liveness_every = config
        .heartbeat_interval
        .min(config.heartbeat_timeout / 4)
        .max(Duration::from_millis(10));
    let actor = tokio::spawn(actor::run(
        core,
        commands_rx,
        notify_tx,
        liveness_every,
        config.commit_interval,
        stop.clone(),
    ));
    let metadata = tokio::spawn(offsets::watch_partitions(
        offsets.clone(),
        partitions,
        commands.clone(),
        view_tx,
        config.metadata_interval,
        stop.clone(),
    ));

    let served = grpc(&config, listener, commands, view_rx, stop.clone()).await;
    // Whatever ended the server, everything else stops too.
    stop.cancel();

    let _ = metadata.await;
    let _ = watermarks.await;
    let actor_result = actor.await.context("coordinator task")?;
    let console_result = console.await.context("console task")?;
    let commit_result = committer.await.context("committer task")?;
    served?;
    console_result.context("writing notifications to stdout")?;
    if actor_result.is_err() {
        return Err(anyhow!("the console stopped before the coordinator"));
    }
    commit_result?;
    info!("master stopped");
    Ok(())
}

/// Builds the gRPC server (Coordinator, Admin, health, reflection v1 and
/// v1alpha) and serves until `shutdown`, waiting at most [`DRAIN_TIMEOUT`]
/// for open streams.
async fn grpc(
    config: &Config,
    listener: TcpListener,
    commands: mpsc::Sender<actor::Command>,
    offsets: watch::Receiver<OffsetsView>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let coordinator = CoordinatorServer::new(service::CoordinatorService::new(
        commands.clone(),
        config.heartbeat_timeout,
        config.max_batch_records,
        shutdown.clone(),
    ));
    let admin = AdminServer::new(admin::AdminService::new(commands, offsets));

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

    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            // Assignments and revocations are small and urgent.
            let _ = c.set_nodelay(true);
        }
        conn
    });
    info!(listen = %addr, topic = %config.kafka.topic, group = %config.group, "master serving");

    let stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    let mut server = tokio::spawn(server);

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
