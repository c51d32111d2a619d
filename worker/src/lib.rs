//! The Cyberday worker: reads the partitions the master assigns, classifies
//! every purchase and streams the results back (an invalid record's result
//! carries the record, which the master dead-letters). It writes nothing to
//! Kafka.
//!
//! - [`config`]: flags and environment variables.
//! - [`session`]: connecting to the master (with backoff) and serving one
//!   `Session` stream: assign, revoke, results, heartbeats, leave.
//! - [`partitions`]: the one Kafka consumer and the partitions it owns.
//! - [`batch`]: per-partition batching of results, by count, encoded size,
//!   linger, and at once when nothing more is ready to read.
//! - [`backoff`]: exponential backoff with jitter between reconnection attempts.
//! - [`metrics`]: Prometheus metrics, served on `--metrics-listen`.
//! - [`run`]: the whole worker, until its shutdown token is cancelled.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod metrics;
pub mod partitions;
pub mod session;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use config::Config;

/// Runs the worker until `shutdown` is cancelled, then hands its partitions
/// back to the master (`leave`) and returns. Losing the master is not an
/// error: the worker reconnects until shutdown. Errors are only for what
/// retrying cannot fix at start (Kafka unreachable, bad client settings).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let credentials = session::Credentials::load(&config)?;
    let metrics = std::sync::Arc::new(metrics::Metrics::default());
    let http_stop = shutdown.child_token();
    // Stops the HTTP server however this function returns.
    let _http_guard = http_stop.clone().drop_guard();
    let http = match config.metrics_listen {
        Some(addr) => {
            let listener = common::http::bind(addr).await?;
            let router = metrics.clone().router();
            Some(tokio::spawn(common::http::serve(
                listener,
                router,
                http_stop.clone(),
            )))
        }
        None => None,
    };
    common::kafka::fetch_metadata(&config.kafka, None)
        .await
        .context("checking Kafka")?;
    let mut parts = partitions::Partitions::new(&config.kafka)
        .map_err(common::kafka::Error::Config)
        .context("creating the Kafka consumer")?;
    tracing::info!(
        master = %config.master,
        id = config.id.as_deref().unwrap_or("(from the master)"),
        bootstrap = config.kafka.bootstrap_servers,
        tls = credentials.tls.is_some(),
        client_certificate = config.tls_cert.is_some(),
        token = credentials.token.is_some(),
        "worker starting"
    );
    let ran = session::run(&config, &credentials, &mut parts, &metrics, &shutdown).await;
    if let Some(http) = http {
        // Stop serving even when the session loop ended with an error.
        http_stop.cancel();
        http.await.context("HTTP task")??;
    }
    ran?;
    tracing::info!("worker stopped");
    Ok(())
}
