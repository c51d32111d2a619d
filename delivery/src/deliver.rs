//! The retry policy, in one place: a transient failure is tried again after
//! an exponential delay with jitter, bounded by `--max-attempts` and
//! `--retry-for`; a permanent failure, or a transient one past those bounds,
//! ends as a dead letter with its reason. Every attempt first takes a token
//! from the `--max-per-second` bucket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::email::{Failure, Mailer};
use crate::metrics::Metrics;
use crate::notice::Notice;

/// The channel label of e-mail.
pub const EMAIL: &str = "email";

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    pub retry_for: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

/// How a notification ended.
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

/// Sends notifications under the policy and the rate limit.
#[derive(Clone)]
pub struct Deliverer {
    mailer: Mailer,
    policy: Policy,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    metrics: Metrics,
}

impl Deliverer {
    pub fn new(
        mailer: Mailer,
        policy: Policy,
        max_per_second: Option<std::num::NonZeroU32>,
        metrics: Metrics,
    ) -> Self {
        let limiter = max_per_second.map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        Self {
            mailer,
            policy,
            limiter,
            metrics,
        }
    }

    /// Delivers `n` by e-mail, retrying transient failures.
    pub async fn deliver(&self, n: &Notice) -> Outcome {
        let message = match self.mailer.message(n) {
            Ok(m) => m,
            Err(f) => {
                self.metrics.failure(EMAIL, f.reason());
                return dead(f, 0);
            }
        };
        let started = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_jitter()
            .with_max_times(self.policy.max_attempts.saturating_sub(1) as usize)
            .build();
        let mut attempts = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            attempts += 1;
            let failure = match self.mailer.send(message.clone()).await {
                Ok(()) => return Outcome::Delivered { attempts },
                Err(f) => f,
            };
            self.metrics.failure(EMAIL, failure.reason());
            let Failure::Transient { reason, detail } = failure else {
                return dead(failure, attempts);
            };
            match delays.next() {
                Some(delay) if started.elapsed() + delay <= self.policy.retry_for => {
                    tracing::debug!(folio = %n.folio, reason, ?delay, attempts, "transient failure, retrying");
                    self.metrics.retry(EMAIL);
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
        Failure::Permanent { reason, detail } | Failure::Transient { reason, detail } => {
            Outcome::DeadLetter {
                reason,
                detail,
                attempts,
            }
        }
    }
}
