//! The master's state and its rules, as a plain struct: who is connected,
//! who owns which partition under which generation, how far each partition
//! is notified, and the counters. Every method takes one event (a hello, a
//! worker message, a closed stream, a clock tick, new partitions) and returns
//! the [`Effects`] to carry out; [`crate::actor`] owns the one instance and
//! does the I/O. Nothing here blocks or talks to the network.
//!
//! Moving a partition from a live worker is two steps: `revoke` to the
//! owner (state REVOKING, its results still count), then, on its
//! `revoke_ack`, `leave` or death, `assign` to the next owner under a new
//! generation from the master's position. A dead worker's partitions are
//! reassigned at once.
//!
//! A rewind ([`Coordinator::rewind`]) follows an aborted Kafka transaction:
//! every position goes back to the last committed offset and every partition
//! is assigned again under a new generation, as after a restart, so nothing
//! the aborted transaction held is lost and nothing after it is skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::classify::Kind;
use common::pb::{self, session_response::Body};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::assignment;
use crate::error::{Error, Result};

/// Identifies one `Session` stream (a worker id may come back on a new one).
pub type SessionId = u64;

/// Fixed settings the rules need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The input topic.
    pub topic: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub revoke_timeout: Duration,
    pub max_batch_records: u32,
    /// Most workers at once (`--max-workers`); `None`: no limit.
    pub max_workers: Option<usize>,
}

/// What a worker says in `hello`, plus where it connects from.
#[derive(Debug, Clone, Default)]
pub struct Hello {
    /// Empty: the master picks one.
    pub worker_id: String,
    pub peer: String,
    pub version: String,
    pub host: String,
}

/// Where a worker is on one partition, under one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub partition: i32,
    pub generation: u64,
    /// Every result before this offset is already on the stream.
    pub next_offset: i64,
}

/// What the worker made of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    NoPurchase,
    Purchase(Kind, pb::PurchaseSummary),
    Invalid(Box<Invalid>),
}

/// An invalid record as read, and why it is invalid: what its dead letter
/// needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalid {
    /// The reason's stable code, e.g. `bad_folio`.
    pub code: String,
    /// The reason in words.
    pub detail: String,
    /// Kafka's key and value; `None` is a Kafka null.
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The record's headers, in order (`None`: a null header value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One record's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub offset: i64,
    /// The Kafka record's timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    pub outcome: Outcome,
}

/// Results of consecutive records of one partition, in offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub partition: i32,
    pub generation: u64,
    pub records: Vec<Record>,
}

/// A worker's message after `hello`, already checked by the gRPC adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMsg {
    Heartbeat(Vec<Progress>),
    Results(Batch),
    RevokeAck(Progress),
    Leave(Vec<Progress>),
}

/// One customer notification to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: Kind,
    pub purchase: pb::PurchaseSummary,
    pub partition: i32,
    pub offset: i64,
    pub worker: Arc<str>,
    pub timestamp_ms: i64,
}

/// One invalid record to write to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub record: Box<Invalid>,
}

/// What the caller must do after an event, in this order: send the
/// messages, close the sessions (with the error to report, if any), hand
/// the notifications to the console and, with the dead letters, to the
/// transactional output.
#[derive(Debug, Default)]
pub struct Effects {
    pub messages: Vec<(SessionId, pb::SessionResponse)>,
    pub closed: Vec<(SessionId, Option<Error>)>,
    pub notifications: Vec<Notification>,
    pub dead_letters: Vec<DeadLetter>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.closed.is_empty()
            && self.notifications.is_empty()
            && self.dead_letters.is_empty()
    }
}

/// Counters since the master started (GetStats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted under a current generation and not duplicates; the
    /// sum of the four outcome counters.
    pub records_processed: u64,
    pub notifications_short: u64,
    pub notifications_long: u64,
    pub no_purchase: u64,
    pub invalid: u64,
    pub duplicates_suppressed: u64,
    pub stale_batches_rejected: u64,
    /// Times the membership or the partitions changed and something moved.
    pub rebalances: u64,
}

/// Who holds a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Unassigned,
    Assigned {
        owner: Arc<str>,
        generation: u64,
    },
    /// Revoked from `owner`; waiting for its acknowledgement.
    Revoking {
        owner: Arc<str>,
        generation: u64,
        since: Instant,
    },
}

impl Ownership {
    /// `(owner, generation)` unless unassigned.
    pub fn holder(&self) -> Option<(&Arc<str>, u64)> {
        match self {
            Ownership::Unassigned => None,
            Ownership::Assigned { owner, generation }
            | Ownership::Revoking {
                owner, generation, ..
            } => Some((owner, *generation)),
        }
    }

    fn state(&self) -> pb::AssignmentState {
        match self {
            Ownership::Unassigned => pb::AssignmentState::Unassigned,
            Ownership::Assigned { .. } => pb::AssignmentState::Assigned,
            Ownership::Revoking { .. } => pb::AssignmentState::Revoking,
        }
    }
}

#[derive(Debug)]
struct Partition {
    /// Next offset to notify: everything before it is notified.
    next_offset: i64,
    /// Where this master started it (a rewind goes back here when nothing
    /// was ever committed for it).
    start: i64,
    ownership: Ownership,
}

#[derive(Debug)]
struct Worker {
    session: SessionId,
    peer: String,
    version: String,
    host: String,
    connected_at_ms: i64,
    last_seen: Instant,
    last_seen_ms: i64,
    records_processed: u64,
}

/// A point-in-time view for the Admin service.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub topic: String,
    pub workers: Vec<pb::WorkerInfo>,
    pub assignments: Vec<pb::PartitionAssignment>,
    pub stats: Stats,
}

/// The master's state.
#[derive(Debug)]
pub struct Coordinator {
    settings: Settings,
    partitions: BTreeMap<i32, Partition>,
    workers: BTreeMap<Arc<str>, Worker>,
    sessions: HashMap<SessionId, Arc<str>>,
    next_session: SessionId,
    /// The last generation handed out (see [`next_generation`]).
    last_generation: u64,
    /// Leader broker of each partition, a preference of [`assignment::balance`].
    leaders: assignment::Leaders,
    stats: Stats,
}

impl Coordinator {
    /// Starts with every partition unassigned at the given position.
    pub fn new(settings: Settings, positions: BTreeMap<i32, i64>) -> Self {
        let partitions = positions
            .into_iter()
            .map(|(p, next_offset)| {
                (
                    p,
                    Partition {
                        next_offset,
                        start: next_offset,
                        ownership: Ownership::Unassigned,
                    },
                )
            })
            .collect();
        Self {
            settings,
            partitions,
            workers: BTreeMap::new(),
            sessions: HashMap::new(),
            next_session: 1,
            last_generation: 0,
            leaders: assignment::Leaders::new(),
            stats: Stats::default(),
        }
    }

    /// The partitions' leaders as the metadata shows them now. Nothing
    /// moves: the next rebalance prefers them.
    pub fn set_leaders(&mut self, leaders: assignment::Leaders) {
        self.leaders = leaders;
    }

    /// A new session says hello: welcome it and give it a fair share.
    /// Refused if another live session already uses the worker id.
    pub fn hello(&mut self, hello: Hello) -> Result<(SessionId, Arc<str>, Effects)> {
        let id: Arc<str> = if hello.worker_id.is_empty() {
            uuid::Uuid::new_v4().to_string().into()
        } else {
            hello.worker_id.into()
        };
        if let Some(old) = self.workers.get(&id) {
            return Err(Error::DuplicateWorker {
                worker: id.to_string(),
                peer: old.peer.clone(),
                timeout: self.settings.heartbeat_timeout,
            });
        }
        if let Some(max) = self.settings.max_workers {
            if self.workers.len() >= max {
                return Err(Error::TooManyWorkers {
                    worker: id.to_string(),
                    max,
                });
            }
        }
        let session = self.next_session;
        self.next_session += 1;
        info!(worker = %id, session, peer = %hello.peer, version = %hello.version, host = %hello.host, "worker joined");
        self.workers.insert(
            id.clone(),
            Worker {
                session,
                peer: hello.peer,
                version: hello.version,
                host: hello.host,
                connected_at_ms: now_ms(),
                last_seen: Instant::now(),
                last_seen_ms: now_ms(),
                records_processed: 0,
            },
        );
        self.sessions.insert(session, id.clone());

        let mut fx = Effects::default();
        fx.messages.push((
            session,
            response(Body::Welcome(pb::Welcome {
                worker_id: id.to_string(),
                heartbeat_interval_ms: u32::try_from(self.settings.heartbeat_interval.as_millis())
                    .unwrap_or(u32::MAX),
                topic: self.settings.topic.clone(),
                max_batch_records: self.settings.max_batch_records,
            })),
        ));
        self.rebalance(&mut fx, true);
        Ok((session, id, fx))
    }

    /// A message on a live session.
    pub fn message(&mut self, session: SessionId, msg: WorkerMsg) -> Effects {
        let mut fx = Effects::default();
        let Some(id) = self.sessions.get(&session).cloned() else {
            // Already closed (timed out, or left): make sure it stops.
            fx.closed.push((session, None));
            return fx;
        };
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_seen = Instant::now();
            w.last_seen_ms = now_ms();
        }
        match msg {
            WorkerMsg::Heartbeat(progress) => {
                for p in progress {
                    self.advance(&id, p);
                }
            }
            WorkerMsg::Results(batch) => self.results(&id, batch, &mut fx),
            WorkerMsg::RevokeAck(p) => self.revoke_ack(&id, p, &mut fx),
            WorkerMsg::Leave(progress) => {
                for p in progress {
                    self.advance(&id, p);
                }
                info!(worker = %id, session, "worker left");
                self.remove(&id, None, &mut fx);
            }
        }
        fx
    }

    /// Counts as hearing from the session's worker now (a message of it is
    /// queued, not yet applied).
    pub fn touch(&mut self, session: SessionId) {
        if let Some(w) = self
            .sessions
            .get(&session)
            .and_then(|id| self.workers.get_mut(id))
        {
            w.last_seen = Instant::now();
        }
    }

    /// The session's stream ended or broke.
    pub fn closed(&mut self, session: SessionId, reason: &str) -> Effects {
        let mut fx = Effects::default();
        match self.sessions.get(&session).cloned() {
            Some(id) => {
                warn!(worker = %id, session, reason, "worker session ended");
                self.remove(&id, None, &mut fx);
            }
            None => fx.closed.push((session, None)),
        }
        fx
    }

    /// The session must end with `error` (a protocol violation, or a worker
    /// that does not read its responses).
    pub fn fail(&mut self, session: SessionId, error: Error) -> Effects {
        let mut fx = Effects::default();
        match self.sessions.get(&session).cloned() {
            Some(id) => {
                warn!(worker = %id, session, %error, "ending worker session");
                self.remove(&id, Some(error), &mut fx);
            }
            None => fx.closed.push((session, None)),
        }
        fx
    }

    /// Clock tick: ends the sessions of workers silent for longer than the
    /// heartbeat timeout, or slower than the revoke timeout to acknowledge.
    pub fn expire(&mut self) -> Effects {
        let now = Instant::now();
        let mut dead: Vec<(Arc<str>, Error)> = Vec::new();
        for (id, w) in &self.workers {
            let silent = now.saturating_duration_since(w.last_seen);
            if silent >= self.settings.heartbeat_timeout {
                dead.push((
                    id.clone(),
                    Error::HeartbeatTimeout {
                        worker: id.to_string(),
                        silent,
                        timeout: self.settings.heartbeat_timeout,
                    },
                ));
            }
        }
        for (&partition, p) in &self.partitions {
            if let Ownership::Revoking { owner, since, .. } = &p.ownership {
                let late = now.saturating_duration_since(*since) >= self.settings.revoke_timeout;
                if late && !dead.iter().any(|(id, _)| id == owner) {
                    dead.push((
                        owner.clone(),
                        Error::RevokeTimeout {
                            worker: owner.to_string(),
                            partition,
                            timeout: self.settings.revoke_timeout,
                        },
                    ));
                }
            }
        }
        let mut fx = Effects::default();
        for (id, error) in dead {
            warn!(worker = %id, %error, "worker declared dead");
            self.remove(&id, Some(error), &mut fx);
        }
        fx
    }

    /// New partitions of the input topic, at their start positions.
    pub fn add_partitions(&mut self, positions: BTreeMap<i32, i64>) -> Effects {
        let mut added = false;
        for (p, next_offset) in positions {
            if let std::collections::btree_map::Entry::Vacant(e) = self.partitions.entry(p) {
                info!(partition = p, next_offset, "new partition");
                e.insert(Partition {
                    next_offset,
                    start: next_offset,
                    ownership: Ownership::Unassigned,
                });
                added = true;
            }
        }
        let mut fx = Effects::default();
        if added {
            self.rebalance(&mut fx, true);
        }
        fx
    }

    /// An aborted transaction took back everything after `committed` (the
    /// offsets of the last committed transaction; a partition absent from it
    /// goes back to where this master started it). Every position returns
    /// there, and every partition is assigned again under a new generation:
    /// its owner, told by an `assign`, starts over from that offset, and
    /// results of the old generations still on the way are fenced. A
    /// partition being revoked is no longer read by its owner; it goes to
    /// its next owner at once.
    pub fn rewind(&mut self, committed: &BTreeMap<i32, i64>) -> Effects {
        let mut fx = Effects::default();
        for (&partition, part) in self.partitions.iter_mut() {
            part.next_offset = committed.get(&partition).copied().unwrap_or(part.start);
            match &part.ownership {
                Ownership::Assigned { owner, generation } => {
                    let (owner, old) = (owner.clone(), *generation);
                    let session = self.workers[&owner].session;
                    let topic = &self.settings.topic;
                    let generation = grant(
                        &mut fx,
                        topic,
                        &mut self.last_generation,
                        partition,
                        part,
                        owner.clone(),
                        session,
                    );
                    info!(worker = %owner, partition, old_generation = old, generation, start_offset = part.next_offset, "rewound: assigned again from the last committed offset");
                }
                Ownership::Revoking { .. } => part.ownership = Ownership::Unassigned,
                Ownership::Unassigned => {}
            }
        }
        self.rebalance(&mut fx, false);
        fx
    }

    /// Next offset to notify, per partition (what a commit would write).
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.next_offset))
            .collect()
    }

    /// Partitions of the input topic known so far.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Who holds `partition`, if anyone.
    pub fn ownership(&self, partition: i32) -> Option<&Ownership> {
        self.partitions.get(&partition).map(|p| &p.ownership)
    }

    /// The worker id of a live session.
    pub fn worker_of(&self, session: SessionId) -> Option<String> {
        self.sessions.get(&session).map(|id| id.to_string())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The view the Admin service serves.
    pub fn snapshot(&self) -> Snapshot {
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| pb::WorkerInfo {
                worker_id: id.to_string(),
                peer: w.peer.clone(),
                version: w.version.clone(),
                host: w.host.clone(),
                partitions: self
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.ownership.holder().is_some_and(|(o, _)| o == id))
                    .map(|(n, _)| *n)
                    .collect(),
                connected_at_ms: w.connected_at_ms,
                last_heartbeat_ms: w.last_seen_ms,
                records_processed: w.records_processed,
            })
            .collect();
        let assignments = self
            .partitions
            .iter()
            .map(|(n, p)| {
                let (owner, generation) = p
                    .ownership
                    .holder()
                    .map_or((String::new(), 0), |(o, g)| (o.to_string(), g));
                pb::PartitionAssignment {
                    partition: *n,
                    owner,
                    generation,
                    state: p.ownership.state() as i32,
                    next_offset: p.next_offset,
                }
            })
            .collect();
        Snapshot {
            topic: self.settings.topic.clone(),
            workers,
            assignments,
            stats: self.stats.clone(),
        }
    }

    /// True when `worker` holds `partition` under `generation` (assigned or
    /// being revoked): only then do its results and progress count.
    fn is_current(&self, worker: &str, partition: i32, generation: u64) -> bool {
        self.partitions
            .get(&partition)
            .and_then(|p| p.ownership.holder())
            .is_some_and(|(o, g)| &**o == worker && g == generation)
    }

    /// Moves the partition's position forward to the worker's progress; the
    /// stream is ordered, so every result before it was already applied.
    fn advance(&mut self, worker: &str, p: Progress) {
        if !self.is_current(worker, p.partition, p.generation) {
            debug!(
                worker,
                partition = p.partition,
                generation = p.generation,
                "progress for a generation not held; ignored"
            );
            return;
        }
        let part = self.partitions.get_mut(&p.partition).expect("checked");
        part.next_offset = part.next_offset.max(p.next_offset);
    }

    fn results(&mut self, worker: &Arc<str>, batch: Batch, fx: &mut Effects) {
        if !self.is_current(worker, batch.partition, batch.generation) {
            self.stats.stale_batches_rejected += 1;
            let holder = self
                .partitions
                .get(&batch.partition)
                .and_then(|p| p.ownership.holder())
                .map(|(o, g)| format!("{o}@{g}"));
            warn!(
                worker = %worker,
                partition = batch.partition,
                generation = batch.generation,
                records = batch.records.len(),
                current = holder.as_deref().unwrap_or("none"),
                "stale results batch rejected"
            );
            return;
        }
        let part = self.partitions.get_mut(&batch.partition).expect("checked");
        let mut accepted = 0u64;
        for r in batch.records {
            if r.offset < part.next_offset {
                self.stats.duplicates_suppressed += 1;
                continue;
            }
            part.next_offset = r.offset + 1;
            accepted += 1;
            match r.outcome {
                Outcome::NoPurchase => self.stats.no_purchase += 1,
                Outcome::Invalid(record) => {
                    self.stats.invalid += 1;
                    fx.dead_letters.push(DeadLetter {
                        partition: batch.partition,
                        offset: r.offset,
                        record,
                    });
                }
                Outcome::Purchase(kind, purchase) => {
                    match kind {
                        Kind::Short => self.stats.notifications_short += 1,
                        Kind::Long => self.stats.notifications_long += 1,
                    }
                    fx.notifications.push(Notification {
                        kind,
                        purchase,
                        partition: batch.partition,
                        offset: r.offset,
                        worker: worker.clone(),
                        timestamp_ms: r.timestamp_ms,
                    });
                }
            }
        }
        self.stats.records_processed += accepted;
        if let Some(w) = self.workers.get_mut(worker) {
            w.records_processed += accepted;
        }
    }

    fn revoke_ack(&mut self, worker: &Arc<str>, p: Progress, fx: &mut Effects) {
        let Some(part) = self.partitions.get_mut(&p.partition) else {
            warn!(worker = %worker, partition = p.partition, "revoke_ack for an unknown partition; ignored");
            return;
        };
        match &part.ownership {
            Ownership::Revoking {
                owner, generation, ..
            } if owner == worker && *generation == p.generation => {
                part.next_offset = part.next_offset.max(p.next_offset);
                info!(worker = %worker, partition = p.partition, generation = p.generation, next_offset = part.next_offset, "revocation acknowledged");
                part.ownership = Ownership::Unassigned;
                self.rebalance(fx, false);
            }
            _ => {
                warn!(worker = %worker, partition = p.partition, generation = p.generation, "revoke_ack for a partition not being revoked from this worker; ignored");
            }
        }
    }

    /// Forgets a worker, ends its session and gives its partitions to the
    /// others at once.
    fn remove(&mut self, id: &Arc<str>, error: Option<Error>, fx: &mut Effects) {
        let Some(w) = self.workers.remove(id) else {
            return;
        };
        self.sessions.remove(&w.session);
        fx.closed.push((w.session, error));
        for part in self.partitions.values_mut() {
            if part.ownership.holder().is_some_and(|(o, _)| o == id) {
                part.ownership = Ownership::Unassigned;
            }
        }
        self.rebalance(fx, true);
    }

    /// Moves toward the balanced assignment: revokes from owners above their
    /// share, assigns unowned partitions. Partitions being revoked wait for
    /// their acknowledgement.
    fn rebalance(&mut self, fx: &mut Effects, membership_changed: bool) {
        let live: Vec<Arc<str>> = self.workers.keys().cloned().collect();
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        let current: BTreeMap<i32, Arc<str>> = self
            .partitions
            .iter()
            .filter_map(|(n, p)| match &p.ownership {
                Ownership::Assigned { owner, .. } => Some((*n, owner.clone())),
                _ => None,
            })
            .collect();
        let target = assignment::balance(&all, &live, &current, &self.leaders);

        let mut moved = false;
        for (&partition, part) in self.partitions.iter_mut() {
            let want = target.get(&partition);
            match &part.ownership {
                Ownership::Assigned { owner, generation } if want != Some(owner) => {
                    let session = self.workers[owner].session;
                    info!(worker = %owner, partition, generation, "revoking");
                    fx.messages.push((
                        session,
                        response(Body::Revoke(pb::Revoke {
                            topic: self.settings.topic.clone(),
                            partition,
                            generation: *generation,
                        })),
                    ));
                    part.ownership = Ownership::Revoking {
                        owner: owner.clone(),
                        generation: *generation,
                        since: Instant::now(),
                    };
                    moved = true;
                }
                Ownership::Unassigned => {
                    let Some(owner) = want else { continue };
                    let session = self.workers[owner].session;
                    let topic = &self.settings.topic;
                    let generation = grant(
                        fx,
                        topic,
                        &mut self.last_generation,
                        partition,
                        part,
                        owner.clone(),
                        session,
                    );
                    info!(worker = %owner, partition, generation, start_offset = part.next_offset, "assigned");
                    moved = true;
                }
                _ => {}
            }
        }
        if moved && membership_changed {
            self.stats.rebalances += 1;
        }
    }
}

/// Hands `partition` to `owner` (its session `session`) under a fresh
/// generation, from the partition's next offset: queues the `assign` and
/// records the ownership; returns the generation.
fn grant(
    fx: &mut Effects,
    topic: &str,
    last_generation: &mut u64,
    partition: i32,
    part: &mut Partition,
    owner: Arc<str>,
    session: SessionId,
) -> u64 {
    let generation = next_generation(last_generation);
    fx.messages.push((
        session,
        assign(topic, partition, part.next_offset, generation),
    ));
    part.ownership = Ownership::Assigned { owner, generation };
    generation
}

/// The next generation after `last`: the wall-clock millisecond of the
/// assignment, bumped to stay strictly increasing. Unique and increasing for
/// the life of the master, as the protocol requires, and also across
/// restarts (unless the clock goes back), so a worker's state from before a
/// restart never matches a new assignment.
fn next_generation(last: &mut u64) -> u64 {
    *last = (*last).max(now_ms().max(0) as u64) + 1;
    *last
}

/// The `assign` pushed to a worker: read `partition` from `start_offset`
/// under `generation`.
fn assign(topic: &str, partition: i32, start_offset: i64, generation: u64) -> pb::SessionResponse {
    response(Body::Assign(pb::Assign {
        topic: topic.to_owned(),
        partition,
        start_offset,
        generation,
    }))
}

fn response(body: Body) -> pb::SessionResponse {
    pb::SessionResponse { body: Some(body) }
}

/// Wall-clock ms since the epoch, for operators (ListWorkers) and latency.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB_TIMEOUT: Duration = Duration::from_secs(3);

    fn settings() -> Settings {
        Settings {
            topic: "T".into(),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: HB_TIMEOUT,
            revoke_timeout: Duration::from_secs(30),
            max_batch_records: 500,
            max_workers: None,
        }
    }

    /// A coordinator with partitions `0..n`, all starting at offset 100·p.
    fn master(n: i32) -> Coordinator {
        Coordinator::new(
            settings(),
            (0..n).map(|p| (p, 100 * i64::from(p))).collect(),
        )
    }

    fn join(c: &mut Coordinator, id: &str) -> (SessionId, Effects) {
        let (session, worker, fx) = c
            .hello(Hello {
                worker_id: id.into(),
                peer: "127.0.0.1:1".into(),
                ..Hello::default()
            })
            .unwrap();
        assert_eq!(&*worker, id);
        (session, fx)
    }

    fn assigns(fx: &Effects, session: SessionId) -> Vec<pb::Assign> {
        fx.messages
            .iter()
            .filter(|(s, _)| *s == session)
            .filter_map(|(_, m)| match &m.body {
                Some(Body::Assign(a)) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    fn revokes(fx: &Effects, session: SessionId) -> Vec<pb::Revoke> {
        fx.messages
            .iter()
            .filter(|(s, _)| *s == session)
            .filter_map(|(_, m)| match &m.body {
                Some(Body::Revoke(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn generation_of(c: &Coordinator, partition: i32) -> u64 {
        c.ownership(partition).unwrap().holder().unwrap().1
    }

    fn purchase(folio: &str) -> pb::PurchaseSummary {
        pb::PurchaseSummary {
            nombre: "Ana".into(),
            folio: folio.into(),
            taps: 3.5,
            ..Default::default()
        }
    }

    /// A batch of SHORT purchases at `offsets`.
    fn shorts(
        partition: i32,
        generation: u64,
        offsets: impl IntoIterator<Item = i64>,
    ) -> WorkerMsg {
        WorkerMsg::Results(Batch {
            partition,
            generation,
            records: offsets
                .into_iter()
                .map(|offset| Record {
                    offset,
                    timestamp_ms: 1,
                    outcome: Outcome::Purchase(Kind::Short, purchase(&format!("ABC-{offset:04}"))),
                })
                .collect(),
        })
    }

    fn progress(partition: i32, generation: u64, next_offset: i64) -> Progress {
        Progress {
            partition,
            generation,
            next_offset,
        }
    }

    #[test]
    fn welcome_first_then_every_partition_with_its_own_generation() {
        let mut c = master(4);
        let (s, fx) = join(&mut c, "a");
        let Some(Body::Welcome(w)) = &fx.messages[0].1.body else {
            panic!("first message is not welcome: {:?}", fx.messages)
        };
        assert_eq!(
            (
                w.worker_id.as_str(),
                w.heartbeat_interval_ms,
                w.topic.as_str(),
                w.max_batch_records
            ),
            ("a", 500, "T", 500)
        );
        let a = assigns(&fx, s);
        assert_eq!(
            a.iter().map(|a| a.partition).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            a.iter().map(|a| a.start_offset).collect::<Vec<_>>(),
            [0, 100, 200, 300]
        );
        let mut gens: Vec<u64> = a.iter().map(|a| a.generation).collect();
        gens.dedup();
        assert_eq!(gens.len(), 4, "generations are unique");
        assert!(a.iter().all(|a| a.topic == "T"));
        assert_eq!(c.stats().rebalances, 1);
    }

    #[test]
    fn a_restarted_master_never_reuses_a_generation() {
        let mut before = master(3);
        join(&mut before, "a");
        let newest = (0..3).map(|p| generation_of(&before, p)).max().unwrap();
        // Generations run ahead of the clock by at most the assignments made
        // within one millisecond; any real restart takes longer than that.
        std::thread::sleep(Duration::from_millis(10));
        let mut after = master(3);
        join(&mut after, "a");
        assert!((0..3).all(|p| generation_of(&after, p) > newest));
    }

    #[test]
    fn an_empty_worker_id_gets_one_and_a_live_id_is_refused() {
        let mut c = master(2);
        let (_, id, fx) = c.hello(Hello::default()).unwrap();
        assert_eq!(id.len(), 36, "a uuid: {id}");
        let Some(Body::Welcome(w)) = &fx.messages[0].1.body else {
            panic!()
        };
        assert_eq!(w.worker_id, &*id);

        let (a, _) = join(&mut c, "a");
        let refused = c.hello(Hello {
            worker_id: "a".into(),
            ..Hello::default()
        });
        assert!(matches!(refused, Err(Error::DuplicateWorker { ref worker, .. }) if worker == "a"));
        // Once the old session is gone, the id is free again.
        c.message(a, WorkerMsg::Leave(vec![]));
        join(&mut c, "a");
    }

    #[test]
    fn a_worker_over_max_workers_is_refused_until_one_leaves() {
        let mut c = Coordinator::new(
            Settings {
                max_workers: Some(2),
                ..settings()
            },
            (0..4).map(|p| (p, 0)).collect(),
        );
        let (a, _) = join(&mut c, "a");
        join(&mut c, "b");
        let refused = c.hello(Hello {
            worker_id: "c".into(),
            ..Hello::default()
        });
        let Err(e) = refused else {
            panic!("a third worker was accepted")
        };
        assert_eq!(
            e,
            Error::TooManyWorkers {
                worker: "c".into(),
                max: 2
            }
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-workers 2"),
            "{}",
            status.message()
        );
        assert_eq!(c.snapshot().workers.len(), 2);
        c.message(a, WorkerMsg::Leave(vec![]));
        join(&mut c, "c");
    }

    #[test]
    fn stale_generations_are_rejected_and_never_notified() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        let g0 = generation_of(&c, 0);

        let fx = c.message(a, shorts(0, g0 + 100, [0, 1]));
        assert!(fx.notifications.is_empty());
        // A batch for a partition the master does not know.
        let fx = c.message(a, shorts(7, g0, [0]));
        assert!(fx.notifications.is_empty());
        // Partition 1's generation used for partition 0.
        let g1 = generation_of(&c, 1);
        let fx = c.message(a, shorts(0, g1, [0]));
        assert!(fx.notifications.is_empty());
        assert_eq!(c.stats().stale_batches_rejected, 3);
        assert_eq!(c.stats().records_processed, 0);
        assert_eq!(c.positions()[&0], 0, "a stale batch moves nothing");

        let fx = c.message(a, shorts(0, g0, [0, 1]));
        assert_eq!(fx.notifications.len(), 2);
        assert_eq!(c.stats().stale_batches_rejected, 3);
    }

    #[test]
    fn another_workers_batch_for_my_generation_is_stale() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        let (b, _) = join(&mut c, "b");
        // `a` has both (b's join revoked one); find a partition `a` holds assigned.
        let (p, g) = (0..2)
            .find_map(|p| match c.ownership(p).unwrap() {
                Ownership::Assigned { owner, generation } if &**owner == "a" => {
                    Some((p, *generation))
                }
                _ => None,
            })
            .unwrap();
        let fx = c.message(b, shorts(p, g, [0]));
        assert!(fx.notifications.is_empty());
        assert_eq!(c.stats().stale_batches_rejected, 1);
        let _ = a;
    }

    #[test]
    fn duplicate_offsets_are_suppressed_and_counted() {
        let mut c = master(1);
        let (a, _) = join(&mut c, "a");
        let g = generation_of(&c, 0);
        let fx = c.message(a, shorts(0, g, 0..5));
        assert_eq!(
            fx.notifications
                .iter()
                .map(|n| n.offset)
                .collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(fx
            .notifications
            .iter()
            .all(|n| &*n.worker == "a" && n.partition == 0));
        let fx = c.message(a, shorts(0, g, 3..8));
        assert_eq!(
            fx.notifications
                .iter()
                .map(|n| n.offset)
                .collect::<Vec<_>>(),
            [5, 6, 7]
        );
        let s = c.stats();
        assert_eq!(s.duplicates_suppressed, 2);
        assert_eq!(s.records_processed, 8);
        assert_eq!(s.notifications_short, 8);
        assert_eq!(c.positions()[&0], 8);
    }

    #[test]
    fn outcomes_are_counted_apart() {
        let mut c = master(1);
        let (a, _) = join(&mut c, "a");
        let g = generation_of(&c, 0);
        let outcomes = [
            Outcome::NoPurchase,
            Outcome::Invalid(Box::new(Invalid {
                code: "bad_folio".into(),
                detail: "folio must look like ABC-1234".into(),
                key: None,
                value: Some(b"{}".to_vec()),
                headers: vec![("h".into(), None)],
            })),
            Outcome::Purchase(Kind::Long, purchase("LNG-0001")),
            Outcome::Purchase(Kind::Short, purchase("SHT-0001")),
            Outcome::NoPurchase,
        ];
        let records = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| Record {
                offset: 10 + i as i64,
                timestamp_ms: 7,
                outcome,
            })
            .collect();
        let fx = c.message(
            a,
            WorkerMsg::Results(Batch {
                partition: 0,
                generation: g,
                records,
            }),
        );
        assert_eq!(
            fx.notifications
                .iter()
                .map(|n| (n.kind, n.offset, n.purchase.folio.as_str()))
                .collect::<Vec<_>>(),
            [(Kind::Long, 12, "LNG-0001"), (Kind::Short, 13, "SHT-0001")]
        );
        let [letter] = &fx.dead_letters[..] else {
            panic!("{:?}", fx.dead_letters)
        };
        assert_eq!((letter.partition, letter.offset), (0, 11));
        assert_eq!(letter.record.code, "bad_folio");
        assert_eq!(letter.record.value.as_deref(), Some(&b"{}"[..]));
        let s = c.stats().clone();
        assert_eq!(
            (
                s.records_processed,
                s.no_purchase,
                s.invalid,
                s.notifications_long,
                s.notifications_short
            ),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(c.snapshot().workers[0].records_processed, 5);
    }

    #[test]
    fn a_move_is_revoke_then_ack_then_assign_under_a_new_generation() {
        let mut c = master(4);
        let (a, _) = join(&mut c, "a");
        let old: Vec<u64> = (0..4).map(|p| generation_of(&c, p)).collect();
        let (b, fx) = join(&mut c, "b");

        // `a` is asked to give up two partitions; `b` gets nothing yet.
        let revoked = revokes(&fx, a);
        assert_eq!(
            revoked.iter().map(|r| r.partition).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(revoked[1].generation, old[3]);
        assert!(assigns(&fx, b).is_empty());
        let view = c.snapshot();
        assert_eq!(
            view.assignments[3].state,
            pb::AssignmentState::Revoking as i32
        );
        assert_eq!(view.assignments[3].owner, "a");

        // Results still draining from `a` before its ack are accepted.
        let fx = c.message(a, shorts(3, old[3], [300, 301]));
        assert_eq!(fx.notifications.len(), 2);
        // A heartbeat from `a` moves nothing.
        let fx = c.message(a, WorkerMsg::Heartbeat(vec![progress(3, old[3], 302)]));
        assert!(fx.messages.is_empty());
        assert_eq!(c.positions()[&3], 302);

        // The ack (past an offset without a record) hands it to `b`.
        let fx = c.message(a, WorkerMsg::RevokeAck(progress(3, old[3], 305)));
        let given = assigns(&fx, b);
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].partition, 3);
        assert_eq!(given[0].start_offset, 305);
        assert!(given[0].generation > *old.iter().max().unwrap());
        assert!(revokes(&fx, a).is_empty());

        // A zombie batch from `a` for the moved partition is fenced.
        let fx = c.message(a, shorts(3, old[3], [305]));
        assert!(fx.notifications.is_empty());
        assert_eq!(c.stats().stale_batches_rejected, 1);
        let fx = c.message(b, shorts(3, given[0].generation, [305]));
        assert_eq!(fx.notifications.len(), 1);

        // Partition 2 is still waiting for its ack.
        assert!(matches!(c.ownership(2), Some(Ownership::Revoking { .. })));
        let fx = c.message(a, WorkerMsg::RevokeAck(progress(2, old[2], 200)));
        assert_eq!(assigns(&fx, b)[0].partition, 2);
        // Balanced: two each.
        let view = c.snapshot();
        assert_eq!(view.workers[0].partitions, [0, 1]);
        assert_eq!(view.workers[1].partitions, [2, 3]);
        assert_eq!(c.stats().rebalances, 2);
    }

    #[test]
    fn a_wrong_ack_changes_nothing() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        let g = generation_of(&c, 0);
        let fx = c.message(a, WorkerMsg::RevokeAck(progress(0, g, 50)));
        assert!(fx.messages.is_empty());
        assert!(matches!(c.ownership(0), Some(Ownership::Assigned { .. })));
        assert_eq!(c.positions()[&0], 0);
    }

    #[test]
    fn progress_moves_forward_only_and_only_for_the_holder() {
        let mut c = master(1);
        let (a, _) = join(&mut c, "a");
        let g = generation_of(&c, 0);
        c.message(a, WorkerMsg::Heartbeat(vec![progress(0, g, 40)]));
        assert_eq!(c.positions()[&0], 40);
        c.message(a, WorkerMsg::Heartbeat(vec![progress(0, g, 10)]));
        assert_eq!(c.positions()[&0], 40);
        c.message(a, WorkerMsg::Heartbeat(vec![progress(0, g + 1, 90)]));
        assert_eq!(c.positions()[&0], 40);
        // Records before the position are duplicates.
        let fx = c.message(a, shorts(0, g, [39, 40]));
        assert_eq!(fx.notifications.len(), 1);
        assert_eq!(c.stats().duplicates_suppressed, 1);
    }

    #[test]
    fn leave_moves_partitions_at_once_from_where_they_stopped() {
        let mut c = master(4);
        let (a, _) = join(&mut c, "a");
        let (b, fx) = join(&mut c, "b");
        let revoked = revokes(&fx, a);
        let kept: Vec<(i32, u64)> = [0, 1].iter().map(|&p| (p, generation_of(&c, p))).collect();
        let mut stops: Vec<Progress> = kept
            .iter()
            .map(|&(p, g)| progress(p, g, 1000 + i64::from(p)))
            .collect();
        stops.extend(
            revoked
                .iter()
                .map(|r| progress(r.partition, r.generation, 2000 + i64::from(r.partition))),
        );

        let fx = c.message(a, WorkerMsg::Leave(stops));
        assert_eq!(fx.closed.len(), 1);
        assert_eq!(fx.closed[0], (a, None));
        let mut given: Vec<(i32, i64)> = assigns(&fx, b)
            .iter()
            .map(|x| (x.partition, x.start_offset))
            .collect();
        given.sort();
        assert_eq!(given, [(0, 1000), (1, 1001), (2, 2002), (3, 2003)]);
        assert_eq!(c.snapshot().workers.len(), 1);
        // Anything later on the closed session is told to stop.
        let fx = c.message(a, WorkerMsg::Heartbeat(vec![]));
        assert_eq!(fx.closed, [(a, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_is_dead_after_the_heartbeat_timeout() {
        let mut c = master(4);
        let (a, _) = join(&mut c, "a");
        let ga = generation_of(&c, 0);
        let (b, fx) = join(&mut c, "b");
        for r in revokes(&fx, a) {
            c.message(
                a,
                WorkerMsg::RevokeAck(progress(
                    r.partition,
                    r.generation,
                    100 * i64::from(r.partition),
                )),
            );
        }
        c.message(a, shorts(0, ga, [0, 1, 2]));

        tokio::time::advance(Duration::from_secs(2)).await;
        c.message(b, WorkerMsg::Heartbeat(vec![]));
        assert!(c.expire().is_empty(), "nobody is late yet");

        tokio::time::advance(Duration::from_millis(1500)).await;
        c.message(b, WorkerMsg::Heartbeat(vec![]));
        let fx = c.expire();
        assert_eq!(fx.closed.len(), 1);
        assert_eq!(fx.closed[0].0, a);
        assert!(matches!(
            fx.closed[0].1,
            Some(Error::HeartbeatTimeout { .. })
        ));
        // No revoke to a dead worker: `b` gets its partitions at once.
        assert!(revokes(&fx, a).is_empty());
        let given = assigns(&fx, b);
        assert_eq!(
            given.iter().map(|x| x.partition).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(
            given[0].start_offset, 3,
            "from the dead worker's last result"
        );
        assert_eq!(given[1].start_offset, 100);
        // Its late results are fenced.
        c.message(a, shorts(0, ga, [3]));
        assert_eq!(
            c.stats().stale_batches_rejected,
            0,
            "closed session: not even counted"
        );
        let fx = c.message(b, shorts(0, ga, [3]));
        assert!(fx.notifications.is_empty());
        assert_eq!(c.stats().stale_batches_rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_message_counts_as_hearing_from_the_worker() {
        let mut c = master(1);
        let (a, _) = join(&mut c, "a");
        tokio::time::advance(Duration::from_millis(2900)).await;
        // The actor saw a message of `a` waiting behind its own backlog.
        c.touch(a);
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert!(c.expire().is_empty());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(c.expire().closed.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_never_acknowledges_is_dead_after_the_revoke_timeout() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        let (b, fx) = join(&mut c, "b");
        assert_eq!(revokes(&fx, a).len(), 1);
        for _ in 0..29 {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.message(a, WorkerMsg::Heartbeat(vec![]));
            c.message(b, WorkerMsg::Heartbeat(vec![]));
            assert!(c.expire().is_empty());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        c.message(a, WorkerMsg::Heartbeat(vec![]));
        c.message(b, WorkerMsg::Heartbeat(vec![]));
        let fx = c.expire();
        assert!(
            matches!(fx.closed[..], [(s, Some(Error::RevokeTimeout { partition: 1, .. }))] if s == a)
        );
        assert_eq!(assigns(&fx, b).len(), 2);
    }

    #[test]
    fn a_broken_stream_moves_its_partitions_at_once() {
        let mut c = master(3);
        let (a, _) = join(&mut c, "a");
        let (b, fx) = join(&mut c, "b");
        let [r] = &revokes(&fx, a)[..] else { panic!() };
        let fx = c.message(
            a,
            WorkerMsg::RevokeAck(progress(r.partition, r.generation, 250)),
        );
        let [given] = &assigns(&fx, b)[..] else {
            panic!()
        };
        c.message(b, shorts(given.partition, given.generation, [250, 251]));

        let fx = c.closed(b, "connection reset");
        assert_eq!(fx.closed, [(b, None)]);
        let [back] = &assigns(&fx, a)[..] else {
            panic!("{fx:?}")
        };
        assert_eq!((back.partition, back.start_offset), (given.partition, 252));
        assert!(back.generation > given.generation);
        assert_eq!(c.snapshot().workers[0].partitions, [0, 1, 2]);
    }

    #[test]
    fn new_partitions_are_assigned_from_their_start() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        let fx = c.add_partitions([(1, 999), (2, 5), (3, 0)].into());
        let given = assigns(&fx, a);
        assert_eq!(
            given
                .iter()
                .map(|x| (x.partition, x.start_offset))
                .collect::<Vec<_>>(),
            [(2, 5), (3, 0)],
            "known partitions keep their position"
        );
        assert_eq!(c.positions().len(), 4);
    }

    #[test]
    fn a_rewind_goes_back_to_the_committed_offsets_under_new_generations() {
        let mut c = master(3);
        let (a, _) = join(&mut c, "a");
        let (b, fx) = join(&mut c, "b");
        let [revoked] = &revokes(&fx, a)[..] else {
            panic!("{fx:?}")
        };
        let moving = revoked.partition;
        let kept: Vec<i32> = (0..3).filter(|p| *p != moving).collect();
        let old: BTreeMap<i32, u64> = (0..3).map(|p| (p, generation_of(&c, p))).collect();
        for &p in &kept {
            let from = 100 * i64::from(p);
            c.message(a, shorts(p, old[&p], from..from + 10));
        }
        assert_eq!(c.stats().records_processed, 20);

        // Only the first kept partition ever had a commit.
        let committed: BTreeMap<i32, i64> = [(kept[0], 100 * i64::from(kept[0]) + 4)].into();
        let fx = c.rewind(&committed);
        let expected: BTreeMap<i32, i64> = (0..3)
            .map(|p| (p, committed.get(&p).copied().unwrap_or(100 * i64::from(p))))
            .collect();
        assert_eq!(c.positions(), expected);

        // The owner starts its partitions over, under new generations; the
        // partition that was being revoked goes to `b` at once.
        let again = assigns(&fx, a);
        assert_eq!(
            again
                .iter()
                .map(|x| (x.partition, x.start_offset))
                .collect::<Vec<_>>(),
            kept.iter().map(|p| (*p, expected[p])).collect::<Vec<_>>()
        );
        let newest = *old.values().max().unwrap();
        assert!(again.iter().all(|x| x.generation > newest));
        assert!(revokes(&fx, a).is_empty());
        let [given] = &assigns(&fx, b)[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(
            (given.partition, given.start_offset),
            (moving, expected[&moving])
        );
        assert!(given.generation > newest);

        // What was on the way under the old generations is fenced, and the
        // old owner's late ack changes nothing.
        let p = kept[0];
        let fx = c.message(a, shorts(p, old[&p], expected[&p] + 10..expected[&p] + 12));
        assert!(fx.notifications.is_empty());
        assert_eq!(c.stats().stale_batches_rejected, 1);
        c.message(
            a,
            WorkerMsg::RevokeAck(progress(moving, old[&moving], expected[&moving] + 50)),
        );
        assert_eq!(c.positions()[&moving], expected[&moving]);

        // The new generation's results, from the committed offset, are
        // notified again: not duplicates, nothing skipped.
        let new_generation = again[0].generation;
        let fx = c.message(a, shorts(p, new_generation, expected[&p]..expected[&p] + 2));
        assert_eq!(
            fx.notifications
                .iter()
                .map(|n| n.offset)
                .collect::<Vec<_>>(),
            [expected[&p], expected[&p] + 1]
        );
        assert_eq!(c.stats().duplicates_suppressed, 0);
        let fx = c.message(b, shorts(moving, given.generation, [expected[&moving]]));
        assert_eq!(fx.notifications.len(), 1);
    }

    #[test]
    fn without_workers_everything_waits_unassigned() {
        let mut c = master(2);
        let (a, _) = join(&mut c, "a");
        c.closed(a, "gone");
        let view = c.snapshot();
        assert!(view.workers.is_empty());
        assert!(view
            .assignments
            .iter()
            .all(|x| x.state == pb::AssignmentState::Unassigned as i32 && x.owner.is_empty()));
        let (b, fx) = join(&mut c, "b");
        assert_eq!(assigns(&fx, b).len(), 2);
    }
}
