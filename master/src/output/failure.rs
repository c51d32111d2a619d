//! What a failed transactional call means: retried, the transaction
//! aborted, the producer replaced, or the master stopped with an [`Error`].
//! [`Output::retrying`] owns the retry policy, [`Output::fail`] what
//! follows when retrying cannot help.

use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Links, Output, TRANSACTION_TIMEOUT};

/// First wait before a retry; it doubles up to [`RETRY_MAX`].
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Retries of a retriable failure once the master is stopping (unbounded
/// before: the queue fills and the workers wait).
const STOPPING_ATTEMPTS: u32 = 5;

/// Why the output stopped the master.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "fenced: another master started with transactional.id {id} and took over; this \
         instance stops without committing anything more ({detail})"
    )]
    Fenced { id: String, detail: String },
    #[error(
        "the transactional producer (transactional.id {id}) failed: {detail}; a restarted \
         master resumes from the last committed offsets"
    )]
    Fatal { id: String, detail: String },
    #[error(
        "the last transaction was not committed ({0}); a restarted master resumes from the \
         last committed offsets"
    )]
    NotCommitted(String),
    #[error("creating the transactional producer: {0}")]
    Create(#[source] KafkaError),
}

/// Result alias for the output.
pub type Result<T> = std::result::Result<T, Error>;

/// How a failed call is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Retry,
    Abort,
    Fatal,
}

/// How librdkafka classifies `e`.
pub(super) fn failure(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(rd) if rd.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(rd) if rd.txn_requires_abort() => Failure::Abort,
        KafkaError::Transaction(rd) if rd.is_retriable() => Failure::Retry,
        // The commit first flushes; only a timeout fails it, which
        // committing again (flushing again) retries.
        KafkaError::Flush(_) => Failure::Retry,
        // Anything else (a call in the wrong state) is a bug or worse:
        // stopping is the one safe answer.
        _ => Failure::Fatal,
    }
}

impl Output {
    /// Calls `call` until it succeeds or fails in a way retrying cannot fix.
    pub(super) fn retrying(
        &self,
        what: &str,
        stopping: &CancellationToken,
        mut call: impl FnMut(&Self) -> KafkaResult<()>,
    ) -> std::result::Result<(), (Failure, KafkaError)> {
        let mut delay = RETRY_FIRST;
        let mut attempt = 1;
        let started = std::time::Instant::now();
        loop {
            let e = match call(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match failure(&e) {
                // The brokers have aborted the transaction by now.
                Failure::Retry if started.elapsed() >= TRANSACTION_TIMEOUT => {
                    warn!(error = %e, attempt, took = ?started.elapsed(), "{what} still failing after the transaction timeout; giving the transaction up");
                    return Err((Failure::Abort, e));
                }
                Failure::Retry if !stopping.is_cancelled() || attempt < STOPPING_ATTEMPTS => {
                    warn!(error = %e, attempt, retry_in = ?delay, "{what} failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(RETRY_MAX);
                    attempt += 1;
                }
                // Stopping and still failing: give the transaction up.
                Failure::Retry => return Err((Failure::Abort, e)),
                kind => return Err((kind, e)),
            }
        }
    }

    /// Aborts the transaction, or replaces the producer when the failure
    /// is fatal.
    pub(super) fn fail(&mut self, kind: Failure, e: &KafkaError, to: &Links<'_>) -> Result<()> {
        match kind {
            Failure::Fatal => self.replace(e, to),
            Failure::Abort | Failure::Retry => self.abort(e, to),
        }
    }

    /// What a failure of the producer means for the master.
    pub(super) fn fatal(&self, e: &KafkaError) -> Error {
        let mut detail = e.to_string();
        let mut codes = vec![e.rdkafka_error_code()];
        if let Some((code, text)) = self.producer.client().fatal_error() {
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            codes.push(Some(code));
        }
        let fenced = codes.iter().flatten().any(|c| {
            matches!(
                c,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        });
        let id = self.id.clone();
        if fenced {
            Error::Fenced { id, detail }
        } else {
            Error::Fatal { id, detail }
        }
    }
}
