//! A limit on the transactional calls librdkafka can leave blocked past
//! their own timeout: each runs on a thread of its own, and one that has not
//! returned by [`STUCK_CALL`] is given up, which replaces the producer.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use tracing::warn;

use super::TRANSACTION_TIMEOUT;

/// Longest the output waits for adding the offsets to a transaction or
/// committing it, though each call is given [`super::CALL_TIMEOUT`]: librdkafka
/// can block in them far longer when the group coordinator's broker goes
/// away (19 s seen here; in one CI run the call never returned; upstream
/// confluentinc/librdkafka#5456). By then the brokers have aborted the
/// transaction, so the producer is replaced as after a fatal error.
pub(super) const STUCK_CALL: Duration = TRANSACTION_TIMEOUT;

/// Runs a transactional `call` on its own thread and waits at most
/// [`STUCK_CALL`] for it. A call still running then is left to finish on its
/// own (it holds its own reference to the client); the output gets an
/// error that [`failure`](super::failure()) counts as fatal, so the
/// producer is replaced.
pub(super) fn bounded(
    what: &str,
    call: impl FnOnce() -> KafkaResult<()> + Send + 'static,
) -> KafkaResult<()> {
    within(STUCK_CALL, call).unwrap_or_else(|| {
        warn!(
            limit = ?STUCK_CALL,
            "{what} did not return; giving the producer up (librdkafka can block past the call's timeout when the group coordinator goes away)"
        );
        Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut))
    })
}

/// `f`'s result if it returns within `limit`, run on a thread of its own.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std_mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            // The receiver is gone when the output gave up waiting.
            let _ = tx.send(f());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(limit).ok(),
        Err(e) => {
            warn!(error = %e, "could not start a thread for a transactional call");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_outlives_its_limit_is_given_up_and_a_quick_one_is_not() {
        let started = std::time::Instant::now();
        let stuck = within(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(120));
            1
        });
        assert_eq!(stuck, None);
        // Not a speed check: only that the stuck call was not waited for.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited for the stuck call: {:?}",
            started.elapsed()
        );
        assert_eq!(within(Duration::from_secs(60), || 7), Some(7));
    }
}
