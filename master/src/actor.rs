//! The task that owns the [`Coordinator`]: it takes commands from the gRPC
//! handlers and the metadata watcher through one bounded channel, applies
//! them in order, sends `welcome` / `assign` / `revoke` down each session's
//! bounded response channel, hands notifications to the console at once and,
//! with the dead letters, to the transactional output; every commit interval
//! it hands the output a checkpoint of positions to commit with them.
//!
//! Everything it sends the output carries its epoch. When the output aborts
//! a transaction it publishes a [`Rewind`] with a new epoch: the actor
//! rewinds the coordinator to the committed offsets, and the output drops
//! whatever older-epoch messages are still queued.
//!
//! When it is busy the channel fills, the session handlers wait to send,
//! and HTTP/2 flow control pushes back on the workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::coordinator::{now_ms, Coordinator, Effects, SessionId, Snapshot, WorkerMsg};
use crate::error::{Error, Result};
use crate::messages::{Accepted, Command, OutputMsg, ResponseTx, Rewind};
use crate::metrics::Metrics;
use crate::notifier::{Notice, Notices};
use crate::output;

/// Capacity of the command channel into the actor.
pub const COMMAND_CAPACITY: usize = 64;

/// Responses a session may have queued: one `welcome`, then `assign` and
/// `revoke`, at most one of each per partition per rebalance, read by the
/// worker as they come. A worker that lets this fill is ended.
fn response_capacity(partitions: usize) -> usize {
    (2 * partitions + 16).max(256)
}

/// Asks the actor for a snapshot of the coordinator (Admin service,
/// metrics, live page).
pub async fn snapshot(commands: &mpsc::Sender<Command>) -> Result<Snapshot> {
    let (reply, snapshot) = oneshot::channel();
    commands
        .send(Command::Snapshot(reply))
        .await
        .map_err(|_| Error::ShuttingDown)?;
    snapshot.await.map_err(|_| Error::ShuttingDown)
}

struct Session {
    responses: ResponseTx,
    cancel: CancellationToken,
    in_flight: Arc<AtomicUsize>,
}

/// An output the actor feeds is gone; nothing more can be notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    #[error("the console stopped before the coordinator")]
    Console,
    #[error("the transactional output stopped before the coordinator")]
    Output,
}

/// Where the actor's output goes.
pub struct Sinks {
    /// The console: notifications as soon as they are accepted.
    pub console: mpsc::Sender<Notices>,
    /// The transactional output: notifications, dead letters, checkpoints.
    pub output: mpsc::Sender<OutputMsg>,
    /// Room in bytes in the output's queue ([`output::QUEUE_BYTES`]).
    pub output_room: Arc<Semaphore>,
    /// Rewinds published by the output after an aborted transaction.
    pub rewinds: watch::Receiver<Rewind>,
    /// What the Prometheus metrics count beyond the coordinator's stats.
    pub metrics: Arc<Metrics>,
}

/// Runs until `shutdown` is cancelled (or an output fails), then ends
/// every session with `unavailable` and sends the final checkpoint.
pub async fn run(
    core: Coordinator,
    mut commands: mpsc::Receiver<Command>,
    sinks: Sinks,
    liveness_every: Duration,
    commit_every: Duration,
    shutdown: CancellationToken,
) -> std::result::Result<(), Gone> {
    let Sinks {
        console,
        output,
        output_room,
        mut rewinds,
        metrics,
    } = sinks;
    let mut actor = Actor {
        core,
        sessions: HashMap::new(),
        console,
        output,
        output_room,
        epoch: rewinds.borrow_and_update().epoch,
        metrics,
    };
    let mut liveness = tokio::time::interval(liveness_every);
    liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checkpoint = tokio::time::interval(commit_every);
    checkpoint.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let result = loop {
        // Ticks first: they fire at most once per interval, so they cannot
        // starve the commands, and a flood of results cannot delay commits.
        let step = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = liveness.tick() => actor.expire().await,
            _ = checkpoint.tick() => actor.checkpoint().await,
            changed = rewinds.changed() => match changed {
                Ok(()) => {
                    let rewind = rewinds.borrow_and_update().clone();
                    actor.rewind(rewind).await
                }
                Err(_) => Err(Gone::Output),
            },
            command = commands.recv() => match command {
                Some(command) => actor.handle(command).await,
                None => break Ok(()),
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };

    for (_, s) in actor.sessions.drain() {
        let _ = s.responses.try_send(Err(Error::ShuttingDown.into()));
        s.cancel.cancel();
    }
    info!("coordinator stopped; final checkpoint");
    result?;
    actor.checkpoint().await
}

struct Actor {
    core: Coordinator,
    sessions: HashMap<SessionId, Session>,
    console: mpsc::Sender<Notices>,
    output: mpsc::Sender<OutputMsg>,
    output_room: Arc<Semaphore>,
    /// The output's epoch this actor works in (see [`Rewind`]).
    epoch: u64,
    metrics: Arc<Metrics>,
}

impl Actor {
    /// Hands the output the current positions, to commit with everything
    /// sent before them.
    async fn checkpoint(&mut self) -> std::result::Result<(), Gone> {
        self.output
            .send(OutputMsg::Checkpoint {
                epoch: self.epoch,
                positions: self.core.positions(),
            })
            .await
            .map_err(|_| Gone::Output)
    }

    /// The output aborted a transaction: start over from the committed
    /// offsets, in the new epoch.
    async fn rewind(&mut self, rewind: Rewind) -> std::result::Result<(), Gone> {
        if rewind.epoch <= self.epoch {
            return Ok(());
        }
        warn!(
            epoch = rewind.epoch,
            committed = ?rewind.committed,
            "transaction aborted: every partition starts over from its last committed offset"
        );
        self.epoch = rewind.epoch;
        let fx = self.core.rewind(&rewind.committed);
        self.apply(fx).await
    }

    /// Ends the sessions of silent workers.
    async fn expire(&mut self) -> std::result::Result<(), Gone> {
        // A worker whose message waits in the queue (or whose reader waits
        // for room in it) was heard from: a busy master must not take its
        // own backlog for a worker's silence.
        for (&session, s) in &self.sessions {
            if s.in_flight.load(Ordering::Acquire) > 0 {
                self.core.touch(session);
            }
        }
        let fx = self.core.expire();
        self.apply(fx).await
    }

    async fn handle(&mut self, command: Command) -> std::result::Result<(), Gone> {
        let fx = match command {
            Command::Hello {
                hello,
                cancel,
                in_flight,
                reply,
            } => match self.core.hello(hello) {
                Ok((session, worker, fx)) => {
                    let (responses, rx) =
                        mpsc::channel(response_capacity(self.core.partition_count()));
                    let s = Session {
                        responses,
                        cancel,
                        in_flight,
                    };
                    self.sessions.insert(session, s);
                    // If the handler is already gone, the response channel is
                    // closed and `apply` ends the session like any other.
                    let _ = reply.send(Ok(Accepted {
                        session,
                        worker,
                        responses: rx,
                    }));
                    fx
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
            },
            Command::Message { session, msg } => {
                if let Some(s) = self.sessions.get(&session) {
                    s.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                if let WorkerMsg::Results(batch) = &msg {
                    self.metrics
                        .batch_records
                        .observe(batch.records.len() as f64);
                }
                self.core.message(session, msg)
            }
            Command::Closed { session, reason } => self.core.closed(session, &reason),
            Command::Failed { session, error } => self.core.fail(session, error),
            Command::AddPartitions(positions) => self.core.add_partitions(positions),
            Command::Leaders(leaders) => {
                self.core.set_leaders(leaders);
                return Ok(());
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.core.snapshot());
                return Ok(());
            }
        };
        self.apply(fx).await
    }

    /// Carries out effects; a session whose response channel is full is
    /// ended, which may produce more effects (its partitions move).
    async fn apply(&mut self, mut fx: Effects) -> std::result::Result<(), Gone> {
        loop {
            let mut more = Effects::default();
            for (session, msg) in fx.messages {
                let Some(s) = self.sessions.get(&session) else {
                    continue;
                };
                if s.responses.try_send(Ok(msg)).is_err() {
                    let worker = self.core.worker_of(session).unwrap_or_default();
                    warn!(
                        session,
                        worker, "worker does not read its responses (channel full or closed)"
                    );
                    let again = self.core.fail(session, Error::SlowReader(worker));
                    more.messages.extend(again.messages);
                    more.closed.extend(again.closed);
                }
            }
            for (session, error) in fx.closed {
                if let Some(s) = self.sessions.remove(&session) {
                    if let Some(e) = error {
                        let _ = s.responses.try_send(Err(e.into()));
                    }
                    s.cancel.cancel();
                }
            }
            if !fx.notifications.is_empty() || !fx.dead_letters.is_empty() {
                let now = now_ms();
                self.metrics.notified(&fx.notifications, now);
                self.metrics.dead_lettered(&fx.dead_letters);
                let notices: Notices = fx
                    .notifications
                    .into_iter()
                    .map(|n| Notice::new(n, now))
                    .collect();
                // The console first: it is the low-latency view.
                if !notices.is_empty() {
                    self.console
                        .send(notices.clone())
                        .await
                        .map_err(|_| Gone::Console)?;
                }
                let weight = output::weight(&notices, &fx.dead_letters);
                let room = self
                    .output_room
                    .clone()
                    .acquire_many_owned(weight)
                    .await
                    .map_err(|_| Gone::Output)?;
                self.output
                    .send(OutputMsg::Records {
                        epoch: self.epoch,
                        notices,
                        dead_letters: fx.dead_letters,
                        room,
                    })
                    .await
                    .map_err(|_| Gone::Output)?;
            }
            if more.is_empty() {
                return Ok(());
            }
            fx = more;
        }
    }
}
