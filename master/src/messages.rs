//! The messages the master's tasks send each other: what the gRPC handlers
//! and the metadata watcher ask the actor ([`Command`]), what the actor
//! hands the transactional output ([`OutputMsg`]), what the output publishes
//! back ([`Rewind`]) and how it reads the committed offsets again
//! ([`ReadCommitted`]), and what the offsets side shows the Admin service,
//! the metrics and the live page ([`OffsetsView`]).
//!
//! It imports none of the tasks (actor, output, offsets, metrics, live,
//! admin, service): each of them imports it, so none needs another's module
//! to talk to it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use common::pb;
use rdkafka::error::KafkaResult;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::assignment::Leaders;
use crate::coordinator::{DeadLetter, Hello, SessionId, Snapshot, WorkerMsg};
use crate::error::{Error, Result};
use crate::notifier::Notices;

/// A session's response channel (gRPC stream items).
pub type ResponseTx = mpsc::Sender<std::result::Result<pb::SessionResponse, tonic::Status>>;
/// The receiving end, which becomes the session's response stream.
pub type ResponseRx = mpsc::Receiver<std::result::Result<pb::SessionResponse, tonic::Status>>;

/// What the actor can be asked.
#[derive(Debug)]
pub enum Command {
    /// A new session said hello. `reply` gets the session id, the worker
    /// id and the response channel (`welcome` already queued), or why it
    /// was refused.
    Hello {
        hello: Hello,
        /// Cancelled when the actor ends the session, so its reader stops.
        cancel: CancellationToken,
        /// Messages of this session read from the network and not yet
        /// applied (the reader adds, the actor subtracts).
        in_flight: Arc<AtomicUsize>,
        reply: oneshot::Sender<Result<Accepted>>,
    },
    /// A checked message on a live session.
    Message { session: SessionId, msg: WorkerMsg },
    /// The session's request stream ended or broke.
    Closed { session: SessionId, reason: String },
    /// The session broke the protocol; it ends with this error.
    Failed { session: SessionId, error: Error },
    /// New partitions of the input topic, at their start positions.
    AddPartitions(BTreeMap<i32, i64>),
    /// The input partitions' leaders changed (a preference for the next rebalance).
    Leaders(Leaders),
    /// The Admin service's view.
    Snapshot(oneshot::Sender<Snapshot>),
}

/// A session the actor accepted.
#[derive(Debug)]
pub struct Accepted {
    pub session: SessionId,
    pub worker: Arc<str>,
    pub responses: ResponseRx,
}

/// What the coordinator hands the output, in order.
#[derive(Debug)]
pub enum OutputMsg {
    /// The output of one accepted batch, read under `epoch`. `room` is its
    /// share of [`crate::output::QUEUE_BYTES`], given back once it is
    /// written.
    Records {
        epoch: u64,
        notices: Notices,
        dead_letters: Vec<DeadLetter>,
        room: OwnedSemaphorePermit,
    },
    /// Commit what came before, with these positions (next offset to read,
    /// per partition) as the group's offsets.
    Checkpoint {
        epoch: u64,
        positions: BTreeMap<i32, i64>,
    },
}

impl OutputMsg {
    /// The epoch the message was sent in (see [`Rewind`]).
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            OutputMsg::Records { epoch, .. } | OutputMsg::Checkpoint { epoch, .. } => *epoch,
        }
    }
}

/// Published when a transaction was aborted: from `epoch` on, the
/// coordinator starts over from `committed` (partitions absent: from where
/// the master started them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewind {
    pub epoch: u64,
    pub committed: BTreeMap<i32, i64>,
}

/// Reads the group's committed offsets of the given partitions back from
/// Kafka (blocking); partitions with none are absent.
pub type ReadCommitted = Box<dyn FnMut(&[i32]) -> KafkaResult<BTreeMap<i32, i64>> + Send + 'static>;

/// What the offsets side knows, for GetStats.
#[derive(Debug, Clone, Default)]
pub struct OffsetsView {
    /// Offset committed for the group, per partition (absent: none yet).
    pub committed: BTreeMap<i32, i64>,
    /// Last high watermark fetched, per partition (absent: unknown).
    pub high_watermarks: BTreeMap<i32, i64>,
}
