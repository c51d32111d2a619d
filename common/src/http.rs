//! The small HTTP server of `--metrics-listen` (Prometheus `/metrics`, and
//! on the master the live page), shared by the master and the worker: plain
//! HTTP/1.1 with axum, apart from the gRPC port, stopped by the same
//! cancellation token.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long open HTTP connections may take to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the HTTP address")?;
    info!(listen = %addr, "HTTP (metrics) serving");
    let stop = shutdown.clone();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        done = &mut server => return done.context("HTTP server task")?.context("HTTP server"),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(done) => done.context("HTTP server task")?.context("HTTP server"),
        Err(_) => {
            warn!("HTTP connections still open after the drain timeout; closing them");
            server.abort();
            Ok(())
        }
    }
}

/// A 200 response with `body` as `content_type`, never cached.
pub fn body(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into(),
    )
        .into_response()
}

/// A Prometheus text exposition.
pub fn metrics(text: String) -> Response {
    body(crate::metrics::CONTENT_TYPE, text)
}

/// 503 with a reason, for a scrape the process cannot answer right now.
pub fn unavailable(why: &'static str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}
