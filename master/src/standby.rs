//! What a standby replica (`--election`) serves while another leads: health
//! (`""` and the Coordinator not serving, Admin serving, so a probe or a
//! Service routes by leadership while the standby stays alive), a
//! Coordinator that refuses every worker with `unavailable` naming the
//! leader, and an Admin that answers GetRole and refuses the rest alike.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::pb::{
    self, admin_server::Admin, admin_server::AdminServer, coordinator_server::Coordinator,
    coordinator_server::CoordinatorServer, LEADER_METADATA,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::election::{Announcement, Standing};

/// The refusal a standby answers with: `unavailable`, naming the leader in
/// the message and in [`LEADER_METADATA`] when one is known.
pub fn refusal(leader: Option<&Announcement>) -> Status {
    let Some(a) = leader else {
        return Status::unavailable(
            "this master is a standby and no leader is known yet (an election is under way); \
             try again or another replica",
        );
    };
    let mut status = Status::unavailable(format!(
        "this master is a standby; the leader is at {}",
        a.leader
    ));
    if let Ok(v) = a.leader.parse() {
        status.metadata_mut().insert(LEADER_METADATA, v);
    }
    status
}

/// The standby's Coordinator: refuses every session.
#[derive(Clone)]
struct StandbyCoordinator {
    leader: watch::Receiver<Option<Announcement>>,
}

#[tonic::async_trait]
impl Coordinator for StandbyCoordinator {
    type SessionStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SessionResponse, Status>> + Send>>;

    async fn session(
        &self,
        _: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(refusal(self.leader.borrow().as_ref()))
    }
}

/// The standby's Admin: its role, and refusals naming the leader.
#[derive(Clone)]
struct StandbyAdmin {
    leader: watch::Receiver<Option<Announcement>>,
    replica: String,
    term: u64,
}

impl StandbyAdmin {
    fn refuse<T>(&self) -> Result<Response<T>, Status> {
        Err(refusal(self.leader.borrow().as_ref()))
    }
}

#[tonic::async_trait]
impl Admin for StandbyAdmin {
    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.refuse()
    }

    async fn list_assignments(
        &self,
        _: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        self.refuse()
    }

    async fn get_stats(
        &self,
        _: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.refuse()
    }

    async fn get_role(
        &self,
        _: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        Ok(Response::new(pb::GetRoleResponse {
            role: "standby".into(),
            replica: self.replica.clone(),
            leader: self
                .leader
                .borrow()
                .as_ref()
                .map(|a| a.leader.clone())
                .unwrap_or_default(),
            term: self.term,
        }))
    }
}

/// Serves the standby's services on `listener` until `until` is
/// cancelled; open connections are then cut at once (the leader's server
/// takes the listener over).
pub async fn serve(
    config: &Config,
    listener: Arc<TcpListener>,
    leader: watch::Receiver<Option<Announcement>>,
    standing: Standing,
    until: CancellationToken,
) -> anyhow::Result<()> {
    let crate::auth::Security { tls, auth } = crate::auth::Security::load(config)?;
    let refused_handshakes = auth.refused();
    let coordinator = InterceptedService::new(
        CoordinatorServer::new(StandbyCoordinator {
            leader: leader.clone(),
        }),
        auth,
    );
    let admin = AdminServer::new(StandbyAdmin {
        leader,
        replica: config.advertise(),
        term: standing.term,
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<CoordinatorServer<StandbyCoordinator>>()
        .await;
    health.set_serving::<AdminServer<StandbyAdmin>>().await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(crate::reflection_v1()?)
        .add_service(coordinator)
        .add_service(admin);
    crate::serve_router(
        router,
        listener,
        tls,
        refused_handshakes,
        health,
        until,
        Duration::ZERO,
    )
    .await
}
