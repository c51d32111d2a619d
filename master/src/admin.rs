//! The `Admin` gRPC service (operators, read-only): an adapter over a
//! snapshot from the coordinator actor and the offsets view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::pb::{self, admin_server::Admin};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::coordinator::Snapshot;
use crate::messages::{Command, OffsetsView};

/// The Admin service.
#[derive(Clone)]
pub struct AdminService {
    commands: mpsc::Sender<Command>,
    offsets: watch::Receiver<OffsetsView>,
    /// Callers the Coordinator service refused (see [`crate::auth`]).
    auth_refused: Arc<AtomicU64>,
    /// What GetRole answers.
    role: pb::GetRoleResponse,
}

impl AdminService {
    pub fn new(
        commands: mpsc::Sender<Command>,
        offsets: watch::Receiver<OffsetsView>,
        auth_refused: Arc<AtomicU64>,
        role: pb::GetRoleResponse,
    ) -> Self {
        Self {
            commands,
            offsets,
            auth_refused,
            role,
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, Status> {
        Ok(crate::actor::snapshot(&self.commands).await?)
    }
}

/// Per-partition stats: owner and generation from the coordinator, offsets
/// from Kafka (as [`crate::metrics::partition_lags`] reads them). Lag is 0
/// while either offset is unknown.
pub fn partition_stats(snapshot: &Snapshot, offsets: &OffsetsView) -> Vec<pb::PartitionStats> {
    snapshot
        .assignments
        .iter()
        .zip(crate::metrics::partition_lags(snapshot, offsets))
        .map(|(a, l)| pb::PartitionStats {
            partition: a.partition,
            owner: a.owner.clone(),
            generation: a.generation,
            committed_offset: l.committed,
            high_watermark: l.high_watermark,
            lag: l.committed_lag.unwrap_or(0),
        })
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let s = self.snapshot().await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: s.workers,
        }))
    }

    async fn list_assignments(
        &self,
        _: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        let s = self.snapshot().await?;
        Ok(Response::new(pb::ListAssignmentsResponse {
            topic: s.topic,
            assignments: s.assignments,
        }))
    }

    async fn get_stats(
        &self,
        _: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let s = self.snapshot().await?;
        let partitions = partition_stats(&s, &self.offsets.borrow());
        let c = &s.stats;
        Ok(Response::new(pb::GetStatsResponse {
            records_processed: c.records_processed,
            notifications_short: c.notifications_short,
            notifications_long: c.notifications_long,
            no_purchase: c.no_purchase,
            invalid: c.invalid,
            duplicates_suppressed: c.duplicates_suppressed,
            stale_batches_rejected: c.stale_batches_rejected,
            workers: s.workers.len() as u32,
            rebalances: c.rebalances,
            partitions,
            auth_refused: self.auth_refused.load(Ordering::Relaxed),
        }))
    }

    async fn get_role(
        &self,
        _: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        Ok(Response::new(self.role.clone()))
    }
}
