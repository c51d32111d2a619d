//! The producer replaced in-process after librdkafka gave it up (a fatal
//! error that is not a fencing), as a restart of the master would.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use tracing::{error, info, warn};

use super::failure::RETRY_FIRST;
use super::{create, Error, Links, Output, Result, TRANSACTION_TIMEOUT};

/// Longest wait between attempts to replace a failed producer.
const REPLACE_RETRY_MAX: Duration = Duration::from_secs(10);

impl Output {
    /// Replaces a producer librdkafka gave up on, as a restarted master
    /// would: a new client under the same `transactional.id` (which fences
    /// the old one and settles its last transaction, committed or aborted),
    /// then the committed offsets read back from Kafka and a rewind to
    /// them. Fenced by another master, or stopping: the master stops.
    pub(super) fn replace(&mut self, cause: &KafkaError, to: &Links<'_>) -> Result<()> {
        let error = self.fatal(cause);
        // Fenced: by the brokers, when the transaction outlived its timeout
        // (they bump the producer's epoch as they abort it), or else by
        // another master that took the id over, which keeps it.
        let taken_over =
            matches!(error, Error::Fenced { .. }) && self.opened.elapsed() < TRANSACTION_TIMEOUT;
        if taken_over || to.stopping.is_cancelled() {
            error!(%error, "stopping the master");
            return Err(error);
        }
        warn!(
            %error,
            transactional_id = %self.id,
            "replacing the transactional producer; the partitions start over from the offsets committed in Kafka"
        );

        let refused = std::mem::take(
            &mut *self
                .producer
                .context()
                .refused
                .lock()
                .expect("refused set poisoned"),
        );
        let mut delay = RETRY_FIRST;
        let mut attempt = 1;
        loop {
            if to.stopping.is_cancelled() {
                error!(%error, "stopping the master");
                return Err(error);
            }
            match self.reinit(refused.clone()) {
                Ok(committed) => {
                    info!(attempt, committed = ?committed, "transactional producer replaced");
                    self.committed = committed;
                    to.view
                        .send_modify(|v| v.committed.clone_from(&self.committed));
                    self.publish_rewind(to.rewinds);
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Fenced { .. } = e {
                        error!(error = %e, "stopping the master");
                        return Err(e);
                    }
                    warn!(error = %e, attempt, retry_in = ?delay, "replacing the transactional producer failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(REPLACE_RETRY_MAX);
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of [`Self::replace`]: the new producer, its first
    /// transaction begun, and the committed offsets.
    fn reinit(&mut self, refused: HashSet<(i32, i64)>) -> Result<BTreeMap<i32, i64>> {
        self.producer = Arc::new(create(&self.args, &self.id, &self.topics.dlq, refused)?);
        if let Err(e) = self.init_transactions() {
            return Err(self.fatal(&e));
        }
        let partitions: Vec<i32> = self.partitions.iter().copied().collect();
        let committed = (self.read_committed)(&partitions)
            .map_err(|e| Error::NotCommitted(format!("reading the committed offsets back: {e}")))?;
        self.producer
            .begin_transaction()
            .map_err(|e| self.fatal(&e))?;
        self.opened = std::time::Instant::now();
        Ok(committed)
    }
}
