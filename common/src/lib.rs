//! Shared by every Cyberday notifier process.
//!
//! - [`record`]: the purchase record as the producer writes it (JSON in `DataTopic`).
//! - [`classify`]: the one validation and classification rule (no purchase,
//!   short, long, invalid with a reason).
//! - [`notify`]: the Spanish notification text for short and long purchases
//!   (the console line, the e-mail subject and HTML part).
//! - [`pb`]: the generated gRPC code of `proto/cyberday/v1` and its
//!   descriptor set for server reflection.
//! - [`cli`]: flags every binary shares (bootstrap servers, topic, `-X`
//!   librdkafka passthrough and options file, log format), each with an environment variable.
//! - [`kafka`]: the librdkafka settings that carry our delivery semantics,
//!   written out once, and small admin helpers (reachability, topic creation).
//! - [`metrics`]: Prometheus metrics on `prometheus-client`: shared histogram
//!   bounds, scrape-time families, the text exposition format.
//! - [`http`]: the `--metrics-listen` HTTP server (axum) and its responses.
//! - [`security`]: master/worker TLS from PEM files (mutual TLS) and the
//!   shared worker token (constant-time comparison).
//! - [`runtime`]: the tokio runtime of master and worker, with few allocator arenas.
//! - [`shutdown`]: SIGTERM / Ctrl-C to one cancellation token; a second signal exits.
//! - [`telemetry`]: tracing set-up; logs go to stderr, never stdout.

pub mod classify;
pub mod cli;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod pb;
pub mod record;
pub mod runtime;
pub mod security;
pub mod shutdown;
pub mod telemetry;
