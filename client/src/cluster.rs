//! Cluster administration on Typha's peer listener: replica status and
//! membership changes (any replica forwards a change to the leader).
//!
//! The peer listener admits holders of the cluster's peer token (sent as
//! gRPC metadata, [`manul_proto::PEER_TOKEN_HEADER`]) or, with TLS, an
//! administrator's certificate; a [`Client`] for it connects to the peer
//! addresses, not the resource API's.

use manul_proto::v1 as pb;
use manul_proto::v1::cluster_client::ClusterClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{Client, MAX_MESSAGE};
use crate::error::ClientError;

/// Adds the peer token, when there is one, to every request.
#[derive(Debug, Clone)]
struct Token(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(manul_proto::PEER_TOKEN_HEADER, token.clone());
        }
        Ok(request)
    }
}

/// The cluster API of the replicas a [`Client`] talks to, with the peer
/// token (`None`: the TLS certificate is the credential).
#[derive(Debug, Clone)]
pub struct Cluster {
    client: Client,
    token: Token,
}

impl Client {
    /// The cluster administration API over this client's replicas, which
    /// must be peer listeners.
    pub fn cluster(&self, token: Option<AsciiMetadataValue>) -> Cluster {
        Cluster {
            client: self.clone(),
            token: Token(token),
        }
    }
}

impl Cluster {
    fn api(&self, channel: Channel) -> ClusterClient<InterceptedService<Channel, Token>> {
        ClusterClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Every replica's view: members, role, term, leader, commit and
    /// applied revisions, state hash.
    pub async fn status(&self) -> Result<pb::StatusResponse, ClientError> {
        self.client
            .call_on(|channel| {
                let mut api = self.api(channel);
                async move { api.status(pb::StatusRequest {}).await }
            })
            .await
    }

    /// The answering replica's own view only (role, term, the leader it
    /// follows, commit and applied revisions, state hash), without asking
    /// the other members as [`Cluster::status`] does: it answers at once
    /// even while a peer is unreachable.
    pub async fn replica(&self) -> Result<pb::ReplicaStatus, ClientError> {
        self.client
            .call_on(|channel| {
                let mut api = self.api(channel);
                async move { api.replica(pb::ReplicaStatusRequest::default()).await }
            })
            .await
    }

    /// Adds a replica as a non-voting learner; returns the members.
    pub async fn add_learner(
        &self,
        id: u64,
        address: &str,
    ) -> Result<pb::MembershipResponse, ClientError> {
        let request = pb::AddLearnerRequest {
            id,
            address: address.to_owned(),
        };
        self.client
            .call_on(|channel| {
                let (mut api, request) = (self.api(channel), request.clone());
                async move { api.add_learner(request).await }
            })
            .await
    }

    /// Promotes a caught-up learner to a voter; returns the members.
    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse, ClientError> {
        self.client
            .call_on(|channel| {
                let mut api = self.api(channel);
                async move { api.promote(pb::MemberRequest { id }).await }
            })
            .await
    }

    /// Removes a member; returns the members.
    pub async fn remove(&self, id: u64) -> Result<pb::MembershipResponse, ClientError> {
        self.client
            .call_on(|channel| {
                let mut api = self.api(channel);
                async move { api.remove(pb::MemberRequest { id }).await }
            })
            .await
    }
}
