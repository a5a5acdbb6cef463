//! The `Cluster` gRPC service: status of every replica, and membership
//! changes (add a learner, promote it, remove a member), forwarded to the
//! leader when received by a follower. Served only on the peer listener,
//! behind the peer token. The leader refuses a change raft would refuse
//! (see `node::guard::check_change`) before proposing it.

use std::sync::Arc;
use std::time::Duration;

use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::cluster_server::{Cluster, ClusterServer};
use manul_proto::v1::{
    AddLearnerRequest, Member, MemberRequest, MembershipResponse, ReplicaStatus,
    ReplicaStatusRequest, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::api::{LeaderClients, node_status};
use crate::fanout::Fanout;
use crate::node::{MembershipChange, Node};

/// The `Cluster` service of one replica.
#[derive(Debug, Clone)]
pub struct ClusterService {
    node: Node,
    fanout: Arc<Fanout>,
    leaders: LeaderClients,
}

impl ClusterService {
    pub fn new(node: Node, fanout: Arc<Fanout>, leaders: LeaderClients) -> ClusterServer<Self> {
        ClusterServer::new(ClusterService {
            node,
            fanout,
            leaders,
        })
    }

    fn local(&self) -> ReplicaStatus {
        let st = self.node.status();
        let (hash, resources, applied) = self
            .node
            .shared()
            .state
            .read()
            .map(|sm| (sm.state_hash(), sm.len() as u64, sm.revision()))
            .unwrap_or_default();
        ReplicaStatus {
            id: self.node.id(),
            address: self.node.address_of(self.node.id()).unwrap_or_default(),
            role: st.role,
            term: st.term,
            leader_id: st.leader_id,
            commit_index: st.commit_index,
            applied_revision: applied,
            state_hash: hash,
            resources,
            sync_clients: self.fanout.connections() as u64,
        }
    }

    fn members(&self) -> Vec<Member> {
        let st = self.node.status();
        let addrs = self.node.addresses();
        let addr = |id: &u64| addrs.get(id).cloned().unwrap_or_default();
        let mut out: Vec<Member> = st
            .voters
            .iter()
            .map(|id| Member {
                id: *id,
                address: addr(id),
                learner: false,
            })
            .chain(st.learners.iter().map(|id| Member {
                id: *id,
                address: addr(id),
                learner: true,
            }))
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }

    async fn client(&self, addr: &str) -> Result<ClusterClient<tonic::transport::Channel>, Status> {
        Ok(ClusterClient::new(self.leaders.channel(addr).await?))
    }

    async fn change(&self, change: MembershipChange) -> Result<MembershipResponse, Status> {
        let members = tokio::time::timeout(
            crate::api::COMMIT_TIMEOUT,
            self.node.change_membership(change),
        )
        .await
        .map_err(|_| Status::unavailable("the membership change was not committed in time"))?
        .map_err(node_status)?;
        Ok(MembershipResponse { members })
    }
}

fn check_id(id: u64) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument("id: replica ids start at 1"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let me = self.local();
        let members = self.members();
        let mut replicas = vec![me.clone()];
        for m in &members {
            if m.id == me.id {
                continue;
            }
            let status = async {
                let mut c = self.client(&m.address).await?;
                let r = tokio::time::timeout(
                    Duration::from_secs(1),
                    c.replica(self.leaders.request(ReplicaStatusRequest::default())),
                )
                .await
                .map_err(|_| Status::deadline_exceeded("no answer within 1s"))??;
                Ok::<_, Status>(r.into_inner())
            }
            .await;
            replicas.push(status.unwrap_or_else(|_| ReplicaStatus {
                id: m.id,
                address: m.address.clone(),
                role: "unreachable".into(),
                ..ReplicaStatus::default()
            }));
        }
        Ok(Response::new(StatusResponse { members, replicas }))
    }

    async fn replica(
        &self,
        request: Request<ReplicaStatusRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        if !request.get_ref().confirm_leadership {
            return Ok(Response::new(self.local()));
        }
        let index = confirmed_read_index(&self.node).await?;
        let mut status = self.local();
        status.commit_index = status.commit_index.max(index);
        Ok(Response::new(status))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let req = request.get_ref();
        check_id(req.id)?;
        if req.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "address: {:?} is not HOST:PORT with a numeric host",
                req.address
            )));
        }
        if let Some((leader, forwarded)) = self.leaders.to_leader(&self.node, &request).await? {
            return ClusterClient::new(leader).add_learner(forwarded).await;
        }
        let change = MembershipChange::AddLearner {
            id: req.id,
            address: req.address.clone(),
        };
        Ok(Response::new(self.change(change).await?))
    }

    async fn promote(
        &self,
        request: Request<MemberRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        check_id(request.get_ref().id)?;
        if let Some((leader, forwarded)) = self.leaders.to_leader(&self.node, &request).await? {
            return ClusterClient::new(leader).promote(forwarded).await;
        }
        let id = request.get_ref().id;
        Ok(Response::new(
            self.change(MembershipChange::Promote { id }).await?,
        ))
    }

    async fn remove(
        &self,
        request: Request<MemberRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        check_id(request.get_ref().id)?;
        if let Some((leader, forwarded)) = self.leaders.to_leader(&self.node, &request).await? {
            return ClusterClient::new(leader).remove(forwarded).await;
        }
        let id = request.get_ref().id;
        Ok(Response::new(
            self.change(MembershipChange::Remove { id }).await?,
        ))
    }
}

/// How long a leader waits for a quorum to confirm it before a read fails.
pub(crate) const READ_CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// This replica's leadership confirmed by a quorum (Raft's ReadIndex): the
/// index a linearizable read must wait for, or UNAVAILABLE when this
/// replica does not lead or no quorum answered in time.
pub(crate) async fn confirmed_read_index(node: &Node) -> Result<u64, Status> {
    match tokio::time::timeout(READ_CONFIRM_TIMEOUT, node.read_index()).await {
        Ok(Ok(index)) => Ok(index),
        Ok(Err(e)) => Err(Status::unavailable(format!(
            "this replica cannot confirm its leadership for a read: {e}"
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "no quorum confirmed this replica's leadership within {READ_CONFIRM_TIMEOUT:?}; retry"
        ))),
    }
}
