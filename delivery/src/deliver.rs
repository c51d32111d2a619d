//! The channels (e-mail, webhook, or both) and the retry policy, in one
//! place: a transient failure is tried again after an exponential delay
//! with jitter (or the provider's `Retry-After`, when longer), bounded by
//! `--max-attempts` and `--retry-for`; a permanent failure, or a transient
//! one past those bounds, ends as a dead letter with its reason. Every
//! attempt first takes a token from its channel's `--max-per-second` bucket.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::email::Mailer;
use crate::metrics::Metrics;
use crate::notice::Notice;
use crate::webhook::Webhook;

/// The channel label of e-mail.
pub const EMAIL: &str = "email";
/// The channel label of the webhook.
pub const WEBHOOK: &str = "webhook";

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying: SMTP 4xx (421 included), HTTP 408/429/5xx, a
    /// timeout, a lost connection; `retry_after` when the provider said.
    Transient {
        reason: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: SMTP 5xx, HTTP 4xx, an address that is not one.
    Permanent { reason: String, detail: String },
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::Transient { reason, .. } | Failure::Permanent { reason, .. } => reason,
        }
    }
}

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    pub retry_for: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

/// How a notification ended on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider acknowledged it after `attempts` attempts.
    Delivered { attempts: u32 },
    /// Not deliverable: to the dead-letter topic with `reason`.
    DeadLetter {
        reason: String,
        detail: String,
        attempts: u32,
    },
}

/// One channel with its own token bucket.
#[derive(Clone)]
struct Channel<T> {
    sender: T,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// Sends notifications on every configured channel, under the policy.
#[derive(Clone)]
pub struct Deliverer {
    email: Option<Channel<Mailer>>,
    webhook: Option<Channel<Webhook>>,
    policy: Policy,
    metrics: Metrics,
}

impl Deliverer {
    pub fn new(
        email: Option<Mailer>,
        webhook: Option<Webhook>,
        policy: Policy,
        max_per_second: Option<NonZeroU32>,
        metrics: Metrics,
    ) -> Self {
        let limiter =
            || max_per_second.map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        Self {
            email: email.map(|sender| Channel {
                sender,
                limiter: limiter(),
            }),
            webhook: webhook.map(|sender| Channel {
                sender,
                limiter: limiter(),
            }),
            policy,
            metrics,
        }
    }

    /// Delivers `n` on every channel (e-mail first), each to its own end.
    pub async fn deliver(&self, n: &Notice) -> Vec<(&'static str, Outcome)> {
        let mut outcomes = Vec::with_capacity(2);
        if let Some(c) = &self.email {
            let outcome = match c.sender.message(n) {
                Ok(message) => {
                    self.retry(EMAIL, n, c.limiter.as_deref(), || {
                        c.sender.send(message.clone())
                    })
                    .await
                }
                Err(f) => {
                    self.metrics.failure(EMAIL, f.reason());
                    dead(f, 0)
                }
            };
            outcomes.push((EMAIL, outcome));
        }
        if let Some(c) = &self.webhook {
            let body = Webhook::body(n);
            let outcome = self
                .retry(WEBHOOK, n, c.limiter.as_deref(), || {
                    c.sender.send(&n.folio, &body)
                })
                .await;
            outcomes.push((WEBHOOK, outcome));
        }
        outcomes
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the policy
    /// says stop.
    async fn retry<F, Fut>(
        &self,
        channel: &'static str,
        n: &Notice,
        limiter: Option<&DefaultDirectRateLimiter>,
        mut attempt: F,
    ) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let started = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_jitter()
            .with_max_times(self.policy.max_attempts.saturating_sub(1) as usize)
            .build();
        let mut attempts = 0;
        loop {
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            attempts += 1;
            let failure = match attempt().await {
                Ok(()) => return Outcome::Delivered { attempts },
                Err(f) => f,
            };
            self.metrics.failure(channel, failure.reason());
            let Failure::Transient {
                reason,
                detail,
                retry_after,
            } = failure
            else {
                return dead(failure, attempts);
            };
            let next = delays
                .next()
                .map(|d| retry_after.map_or(d, |after| after.max(d)));
            match next {
                Some(delay) if started.elapsed() + delay <= self.policy.retry_for => {
                    tracing::debug!(folio = %n.folio, channel, reason, ?delay, attempts, "transient failure, retrying");
                    self.metrics.retry(channel);
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    return Outcome::DeadLetter {
                        reason: "retries_exhausted".into(),
                        detail: format!("last failure {reason}: {detail}"),
                        attempts,
                    }
                }
            }
        }
    }
}

fn dead(f: Failure, attempts: u32) -> Outcome {
    match f {
        Failure::Permanent { reason, detail } | Failure::Transient { reason, detail, .. } => {
            Outcome::DeadLetter {
                reason,
                detail,
                attempts,
            }
        }
    }
}
