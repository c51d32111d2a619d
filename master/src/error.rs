//! The master's errors, and the one place that turns them into gRPC statuses.

use std::time::Duration;

/// What can go wrong in a worker's session or an operator's call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A session must open with `hello`.
    #[error("the first message of a session must be hello")]
    HelloExpected,
    /// The worker opened a stream but said nothing.
    #[error("no hello within {0:?} of opening the session")]
    HelloTimeout(Duration),
    /// The stream ended before `hello`.
    #[error("the session ended before hello")]
    NoHello,
    /// `hello` a second time on one session.
    #[error("hello was already received on this session")]
    DuplicateHello,
    /// Another session of this worker id is still live; its partitions stay
    /// with it until it leaves or misses its heartbeats.
    #[error(
        "worker id {worker} already has a live session (from {peer}); use another --id, \
         or retry once the old session has ended (at most the heartbeat timeout, {timeout:?})"
    )]
    DuplicateWorker {
        worker: String,
        peer: String,
        timeout: Duration,
    },
    /// `--max-workers` workers are already connected.
    #[error(
        "worker {worker} refused: the master already has its maximum of workers \
         (--max-workers {max}); retry later, or raise MASTER_MAX_WORKERS"
    )]
    TooManyWorkers { worker: String, max: usize },
    /// A message that names a different worker than its session's.
    #[error("message from worker {got} on the session of worker {session}")]
    WrongWorker { got: String, session: String },
    /// A message that breaks the protocol (see coordinator.proto).
    #[error("{0}")]
    InvalidArgument(String),
    /// A message over `--max-message-bytes`.
    #[error(
        "{0}; the master's --max-message-bytes (MASTER_MAX_MESSAGE_BYTES) limits a message, \
         keep the worker's --max-message-bytes at or under it"
    )]
    TooLarge(String),
    /// The worker missed its heartbeats.
    #[error("no message from worker {worker} for {silent:?} (heartbeat timeout {timeout:?}); its partitions were reassigned")]
    HeartbeatTimeout {
        worker: String,
        silent: Duration,
        timeout: Duration,
    },
    /// The worker did not acknowledge a revocation in time.
    #[error("worker {worker} did not acknowledge the revocation of partition {partition} within {timeout:?}; its partitions were reassigned")]
    RevokeTimeout {
        worker: String,
        partition: i32,
        timeout: Duration,
    },
    /// The worker does not read what the master sends.
    #[error("worker {0} does not read its session's responses; its partitions were reassigned")]
    SlowReader(String),
    /// The master is stopping.
    #[error("the master is shutting down")]
    ShuttingDown,
}

/// Result alias for the master's library code.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::HelloExpected
            | Error::NoHello
            | Error::WrongWorker { .. }
            | Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::HelloTimeout(_) => tonic::Status::deadline_exceeded(message),
            Error::TooLarge(_) => tonic::Status::out_of_range(message),
            Error::DuplicateHello => tonic::Status::failed_precondition(message),
            Error::DuplicateWorker { .. } => tonic::Status::already_exists(message),
            Error::TooManyWorkers { .. } => tonic::Status::resource_exhausted(message),
            Error::HeartbeatTimeout { .. } | Error::RevokeTimeout { .. } | Error::SlowReader(_) => {
                tonic::Status::aborted(message)
            }
            Error::ShuttingDown => tonic::Status::unavailable(message),
        }
    }
}
