//! The `Resources` gRPC service: apply, delete, get and list.
//!
//! Writes are validated with the model's loader (the same code as `manulctl
//! validate`); any problem is INVALID_ARGUMENT naming it, and nothing is
//! proposed. A batch becomes one Raft entry, so it commits whole or not at
//! all. A follower forwards writes to the leader's peer listener (with the
//! peer token; the leader validates them again); the caller is answered
//! once the entry is committed and applied. Reads are served from this
//! replica's applied state after it has caught up with the leader's commit
//! index as of the read (Raft's read index, asked of the leader): a read on
//! any replica sees every write acknowledged before it began. With no
//! leader elected, a replica serves what it has (each answer carries the
//! revision it reflects).
//!
//! With TLS every write is authorized first (`api_authz`, `authz`): the
//! caller's certificate gives it a role, and a write its role does not
//! allow is PERMISSION_DENIED naming the identity and the missing
//! permission, before anything is forwarded or proposed. Every write,
//! allowed or refused, is recorded in the audit trail (`audit`).
//!
//! In Kubernetes mode the keys the watchers own (`kube::owners`: the
//! `projectcalico.org/v3` custom resources, and what Typha converts from
//! Pods, Namespaces, Nodes and the rest) are refused with
//! PERMISSION_DENIED naming the owner, before anything is forwarded or
//! proposed: the Kubernetes API is their one source, and a write here
//! would be undone by the next relist.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use manul_model::Kind;
use manul_model::load::{MAX_LABEL_BYTES, clip};
use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::resources_server::{Resources, ResourcesServer};
use manul_proto::v1::{
    ApplyRequest, ApplyResponse, AuditRequest, AuditResponse, Command, DeleteBatch, DeleteRequest,
    DeleteResponse, GetRequest, GetResponse, ListRequest, ListResponse, Origin,
    ReplicaStatusRequest, ResourceKey, Write, WriteBatch, command::Op,
};
use manul_proto::wire;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::api_authz::{Trail, WriteAuth};
use crate::api_limits::{Problems, WriteLimits};
use crate::authz::{Caller, Role, Verb};
use crate::kube::driver::KubeOptions;
use crate::kube::owners::refuse_write;
use crate::node::{Node, NodeError};
use crate::peer_auth::PeerToken;
use crate::state::{Applied, ApplyError, Key};
use crate::state_audit::AuditFilter;

/// How long a follower waits to catch up with the leader before a read.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(3);

/// Metadata set on a forwarded request, so it is never forwarded twice.
pub const FORWARDED: &str = "x-manul-forwarded";
/// How long a write may take to commit before the caller is told its
/// outcome is unknown.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients to other replicas' peer listeners, by address, and the token
/// every call to them carries.
#[derive(Debug, Default, Clone)]
pub struct LeaderClients {
    clients: Arc<Mutex<HashMap<String, Channel>>>,
    token: Option<PeerToken>,
    dial: manul_tls::connect::Transport,
}

impl LeaderClients {
    pub fn new(token: Option<PeerToken>) -> LeaderClients {
        LeaderClients {
            clients: Arc::default(),
            token,
            dial: manul_tls::connect::Transport::Plain,
        }
    }

    /// Reach the other replicas this way (TLS) instead of plaintext.
    pub fn with_transport(mut self, dial: manul_tls::connect::Transport) -> LeaderClients {
        self.dial = dial;
        self
    }

    /// A request to another replica: carries the peer token.
    pub fn request<T>(&self, inner: T) -> Request<T> {
        let mut r = Request::new(inner);
        if let Some(t) = &self.token {
            t.attach(&mut r);
        }
        r
    }

    /// A request forwarded to the leader: carries the peer token and is
    /// marked, so it is never forwarded twice.
    pub fn forwarded<T>(&self, inner: T) -> Request<T> {
        let mut r = self.request(inner);
        r.metadata_mut()
            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        r
    }

    /// The forward-to-leader preamble of a write: `None` when this replica
    /// leads and serves `request` itself; otherwise a channel to the
    /// leader and the request to send it there ([`LeaderClients::forwarded`]).
    /// Refused as [`route`] says.
    pub async fn to_leader<T: Clone>(
        &self,
        node: &Node,
        request: &Request<T>,
    ) -> Result<Option<(Channel, Request<T>)>, Status> {
        match route(node, request)? {
            Route::Local => Ok(None),
            Route::Forward(addr) => Ok(Some((
                self.channel(&addr).await?,
                self.forwarded(request.get_ref().clone()),
            ))),
        }
    }

    pub async fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1));
        let ch = self.dial.connect_lazy(endpoint);
        clients.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Maps node errors to gRPC statuses.
pub fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::NotLeader { leader: None } => {
            Status::unavailable("no leader is elected yet; retry shortly")
        }
        NodeError::NotLeader {
            leader: Some((id, addr)),
        } => Status::unavailable(format!(
            "this replica is not the leader; replica {id} at {addr} is"
        )),
        NodeError::Membership(m) => Status::failed_precondition(m),
        other => Status::unavailable(other.to_string()),
    }
}

/// Maps the error of a proposed write to a gRPC status. Refused before it
/// was proposed (this replica does not lead, or Raft dropped the proposal)
/// or skipped when applied, it did not happen, as [`node_status`] says; a
/// replica whose Raft thread stopped while the write waited (a failed disk
/// write stops it) may have replicated it first, and the next leader may
/// commit it, so its outcome is unknown, and a client must not send it
/// again as if nothing had happened.
pub fn proposal_status(e: NodeError) -> Status {
    match e {
        NodeError::Stopped | NodeError::Storage(_) => Status::unavailable(format!(
            "{e} before the write was committed; its outcome is unknown"
        )),
        other => node_status(other),
    }
}

/// What a replica answers when forwarding a write to the leader at `addr`
/// failed. The leader's own answer is passed on as it is. A call that
/// never reached it (no connection could be made, or the stream was
/// refused) proposed nothing: a refusal a client may retry. Any other
/// failure of the call (the connection broke, the leader was killed) may
/// come after the leader committed the write, so its outcome is unknown;
/// passed on as tonic's transport error, it would read as a refusal.
pub fn forward_failed(addr: &str, status: Status) -> Status {
    let Some(source) = std::error::Error::source(&status) else {
        return status;
    };
    let mut chain = source.to_string();
    let mut next = source.source();
    while let Some(e) = next {
        chain.push_str(": ");
        chain.push_str(&e.to_string());
        next = e.source();
    }
    let never_sent = [
        "connect error",
        "connection refused",
        "dns error",
        "refused_stream",
        "refused stream",
    ]
    .iter()
    .any(|m| chain.to_ascii_lowercase().contains(m));
    if never_sent {
        Status::unavailable(format!(
            "the leader could not be reached at {addr} ({chain}); nothing was proposed; retry shortly"
        ))
    } else {
        Status::unavailable(format!(
            "the call forwarding the write to the leader at {addr} failed ({chain}); its outcome is unknown"
        ))
    }
}

/// Where a request should go, given this replica's view of the leader.
#[derive(Debug)]
pub enum Route {
    Local,
    Forward(String),
}

/// Decides whether to serve locally or forward to the leader.
pub fn route<T>(node: &Node, request: &Request<T>) -> Result<Route, Status> {
    let status = node.status();
    if status.leader_id == node.id() {
        return Ok(Route::Local);
    }
    if request.metadata().contains_key(FORWARDED) {
        return Err(Status::unavailable(
            "forwarded to a replica that is no longer the leader; retry",
        ));
    }
    match node.leader() {
        Some((_, addr)) if !addr.is_empty() => Ok(Route::Forward(addr)),
        _ => Err(Status::unavailable(
            "no leader is elected yet; retry shortly",
        )),
    }
}

/// The `Resources` service of one replica.
#[derive(Debug, Clone)]
pub struct ResourcesService {
    node: Node,
    leaders: LeaderClients,
    /// Kubernetes mode: writes to keys the watchers own are refused.
    kube: Option<KubeOptions>,
    /// Who may write what, and the audit trail.
    auth: WriteAuth,
    /// What one write request may cost.
    limits: WriteLimits,
}

impl ResourcesService {
    /// Plaintext, every write allowed, no audit file.
    pub fn new(node: Node, leaders: LeaderClients) -> ResourcesServer<ResourcesService> {
        ResourcesService::serve(
            node,
            leaders,
            None,
            WriteAuth::open(),
            WriteLimits::default(),
        )
    }

    /// The service of a replica in Kubernetes mode (with `kube`) or not.
    pub fn serve(
        node: Node,
        leaders: LeaderClients,
        kube: Option<KubeOptions>,
        auth: WriteAuth,
        limits: WriteLimits,
    ) -> ResourcesServer<ResourcesService> {
        ResourcesServer::new(ResourcesService {
            node,
            leaders,
            kube,
            auth,
            limits,
        })
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(1024 * 1024 * 1024)
    }

    async fn commit(&self, command: Command) -> Result<Applied, Status> {
        match tokio::time::timeout(COMMIT_TIMEOUT, self.node.propose(command)).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(proposal_status(e)),
            Err(_) => Err(Status::unavailable(format!(
                "the write was not committed within {COMMIT_TIMEOUT:?}; its outcome is unknown"
            ))),
        }
    }

    /// Waits until this replica has applied everything the leader had
    /// committed when the read began, so reads see every acknowledged write
    /// (linearizable reads). The leader confirms it still leads with a
    /// quorum (Raft's ReadIndex) before an index counts, whether the read
    /// is served by the leader or by a follower that asks it: a replica cut
    /// off by a partition, or one that knows no leader, refuses the read
    /// (UNAVAILABLE) instead of serving what it has.
    async fn read_index(&self) -> Result<(), Status> {
        let target = if self.node.status().leader_id == self.node.id() {
            crate::cluster::confirmed_read_index(&self.node).await?
        } else {
            let Some((_, addr)) = self.node.leader().filter(|(_, a)| !a.is_empty()) else {
                return Err(Status::unavailable(
                    "no leader is elected yet: this replica cannot serve a read that sees every acknowledged write; retry shortly or ask another replica",
                ));
            };
            let mut cluster = ClusterClient::new(self.leaders.channel(&addr).await?);
            let leader = cluster
                .replica(self.leaders.request(ReplicaStatusRequest {
                    confirm_leadership: true,
                }))
                .await?
                .into_inner();
            // The leader publishes its commit index after it has answered
            // the writes of a batch, but applies them before answering: its
            // applied revision (a Raft index, read live) covers every
            // acknowledged write even when the published commit index lags.
            leader.commit_index.max(leader.applied_revision)
        };
        let deadline = tokio::time::Instant::now() + READ_INDEX_TIMEOUT;
        while self.node.status().applied_index < target {
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable(format!(
                    "this replica has not applied the leader's index {target} within {READ_INDEX_TIMEOUT:?}; retry or ask another replica"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// The state, after catching up with the leader when `trail`'s
    /// decision reads it.
    async fn state_for(
        &self,
        trail: &Trail,
    ) -> Result<std::sync::RwLockReadGuard<'_, crate::state::StateMachine>, Status> {
        if trail.needs_state() {
            self.read_index().await?;
        }
        self.node
            .shared()
            .state
            .read()
            .map_err(|_| Status::internal("state lock poisoned"))
    }

    /// The audit trail of a write of `verb` by `request`'s caller, and
    /// the origin recorded with it (`sent` is the one a forwarding
    /// replica passed on).
    fn begin_write<T>(
        &self,
        request: &Request<T>,
        verb: Verb,
        sent: Option<&Origin>,
    ) -> (Trail, Origin) {
        let caller = self.auth.caller(request);
        let forwarded = request.metadata().contains_key(FORWARDED);
        let origin = origin_of(&caller, verb, forwarded, sent);
        (self.auth.trail(caller, verb, forwarded), origin)
    }

    async fn apply_as(
        &self,
        request: Request<ApplyRequest>,
        trail: &mut Trail,
        origin: Origin,
    ) -> Result<Response<ApplyResponse>, Status> {
        let mut batch = validate(request.get_ref(), self.limits).await?;
        trail.keys(
            batch
                .writes
                .iter()
                .filter_map(|w| w.key.clone())
                .chain(batch.deletes.iter().cloned()),
        );
        if !trail.caller.role.writes_anything() {
            if !batch.deletes.is_empty() {
                return Err(Status::permission_denied(format!(
                    "{} ({}): deletes within an apply need a role that may write anything",
                    trail.caller.identity,
                    trail.caller.role.label()
                )));
            }
            let state = self.state_for(trail).await?;
            trail.authorize_writes(&state, &mut batch.writes)?;
        }
        refuse_owned(
            self.kube,
            batch
                .writes
                .iter()
                .filter_map(|w| w.key.as_ref())
                .chain(&batch.deletes),
        )?;
        if let Route::Forward(addr) = route(&self.node, &request)? {
            // A write authorized against stored values goes on as the
            // validated batch, pinned to the revisions the decision saw.
            let mut forwarded = if trail.caller.role.writes_anything() {
                request.into_inner()
            } else {
                pinned_request(&batch)
            };
            forwarded.origin = Some(origin);
            return Self::leader(self.leaders.channel(&addr).await?)
                .apply(self.leaders.forwarded(forwarded))
                .await
                .map_err(|s| forward_failed(&addr, s));
        }
        let applied = self
            .commit(Command {
                request_id: 0,
                op: Some(Op::Writes(batch)),
                origin: Some(origin),
            })
            .await?;
        let entries = applied.result.map_err(conflict)?;
        Ok(Response::new(ApplyResponse {
            entries,
            revision: applied.revision,
        }))
    }

    async fn delete_as(
        &self,
        request: Request<DeleteRequest>,
        trail: &mut Trail,
        origin: Origin,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.get_ref();
        if req.keys.is_empty() {
            return Err(Status::invalid_argument("keys: nothing to delete"));
        }
        let keys = req
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| normalize_key(k, &format!("keys[{i}]")).map(|k| k.to_proto()))
            .collect::<Result<Vec<_>, _>>()?;
        trail.keys(keys.iter().cloned());
        let mut expected_revision = req.expected_revision;
        if !trail.caller.role.writes_anything() {
            let state = self.state_for(trail).await?;
            expected_revision = trail.authorize_delete(&state, expected_revision)?;
        }
        refuse_owned(self.kube, &keys)?;
        if let Route::Forward(addr) = route(&self.node, &request)? {
            let mut forwarded = request.into_inner();
            forwarded.expected_revision = expected_revision;
            forwarded.origin = Some(origin);
            return Self::leader(self.leaders.channel(&addr).await?)
                .delete(self.leaders.forwarded(forwarded))
                .await
                .map_err(|s| forward_failed(&addr, s));
        }
        let applied = self
            .commit(Command {
                request_id: 0,
                op: Some(Op::Deletes(DeleteBatch {
                    keys,
                    expected_revision,
                })),
                origin: Some(origin),
            })
            .await?;
        let entries = applied.result.map_err(conflict)?;
        Ok(Response::new(DeleteResponse {
            deleted: entries.into_iter().filter_map(|e| e.key).collect(),
            revision: applied.revision,
        }))
    }

    fn leader(channel: Channel) -> ResourcesClient<Channel> {
        ResourcesClient::new(channel).max_decoding_message_size(1024 * 1024 * 1024)
    }
}

fn conflict(e: ApplyError) -> Status {
    match e {
        ApplyError::Conflict { .. } => Status::failed_precondition(e.to_string()),
        ApplyError::Empty => Status::invalid_argument(e.to_string()),
    }
}

/// Normalises and checks a key from a client: a known kind (any spelling
/// `manulctl` accepts), a name, and a namespace exactly when the kind is
/// namespaced (`default` when omitted).
pub fn normalize_key(k: &ResourceKey, path: &str) -> Result<Key, Status> {
    let kind = Kind::from_cli(&k.kind).ok_or_else(|| {
        Status::invalid_argument(format!("{path}.kind: unknown kind {:?}", k.kind))
    })?;
    if k.name.is_empty() {
        return Err(Status::invalid_argument(format!("{path}.name: required")));
    }
    // No stored name or namespace holds whitespace or a control character
    // (the model's names are DNS labels and subdomains): refuse them here
    // rather than propose an entry the Raft thread would refuse to apply.
    for (field, text) in [("name", &k.name), ("namespace", &k.namespace)] {
        if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(Status::invalid_argument(format!(
                "{path}.{field}: {text:?} holds {c:?}; names have no spaces or control characters"
            )));
        }
    }
    let namespace = match (kind.namespaced(), k.namespace.as_str()) {
        (true, "") => "default".to_string(),
        (true, ns) => ns.to_string(),
        (false, "") => String::new(),
        (false, ns) => {
            return Err(Status::invalid_argument(format!(
                "{path}.namespace: {kind} is cluster-scoped; remove the namespace {ns:?}"
            )));
        }
    };
    Ok(Key {
        kind: kind.key_name().to_string(),
        namespace,
        name: k.name.clone(),
    })
}

/// In Kubernetes mode, PERMISSION_DENIED naming the owner of every key
/// the watchers own among `keys`.
pub fn refuse_owned<'a>(
    kube: Option<KubeOptions>,
    keys: impl IntoIterator<Item = &'a ResourceKey>,
) -> Result<(), Status> {
    let Some(opts) = kube else { return Ok(()) };
    let refused: Vec<String> = keys
        .into_iter()
        .filter_map(|k| refuse_write(&wire::key_from_proto(k).ok()?, opts))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Status::permission_denied(refused.join("\n")))
    }
}

/// A request holding `batch`'s validated values, one item each, with
/// their expected revisions.
fn pinned_request(batch: &WriteBatch) -> ApplyRequest {
    ApplyRequest {
        items: batch
            .writes
            .iter()
            .map(|w| manul_proto::v1::ApplyItem {
                document: w.value.clone(),
                origin: w
                    .key
                    .as_ref()
                    .map(|k| Key::from_proto(k).to_string())
                    .unwrap_or_default(),
                expected_revision: w.expected_revision,
            })
            .collect(),
        deletes: batch.deletes.clone(),
        origin: None,
    }
}

/// The origin a write's Raft entry carries: the one a replica that
/// forwarded the request stamped (only a replica's, or any in plaintext,
/// where the peer listener's token is the only check), else this
/// replica's stamp of `caller` now.
pub fn origin_of(caller: &Caller, verb: Verb, forwarded: bool, sent: Option<&Origin>) -> Origin {
    match sent {
        Some(o) if forwarded && matches!(caller.role, Role::Replica | Role::Plaintext) => o.clone(),
        _ => crate::audit::stamp(&caller.identity, caller.role.label(), verb.as_str()),
    }
}

/// Validates every item and builds one write batch, or explains the
/// problems (as many as `limits` lets a refusal list: past them
/// validation stops).
/// Requests whose items hold more than this many bytes are validated on a
/// blocking thread: validating megabytes takes the CPU for long enough to
/// hold up the other requests a runtime worker would serve meanwhile.
const VALIDATE_INLINE_BYTES: usize = 64 * 1024;

/// [`write_batch`], off the runtime's workers for a large request.
async fn validate(request: &ApplyRequest, limits: WriteLimits) -> Result<WriteBatch, Status> {
    let bytes: usize = request.items.iter().map(|i| i.document.len()).sum();
    if bytes <= VALIDATE_INLINE_BYTES {
        return write_batch(request, &limits);
    }
    // The documents are reference-counted: the copy is cheap.
    let request = request.clone();
    tokio::task::spawn_blocking(move || write_batch(&request, &limits))
        .await
        .map_err(|e| Status::internal(format!("validation stopped: {e}")))?
}

pub fn write_batch(request: &ApplyRequest, limits: &WriteLimits) -> Result<WriteBatch, Status> {
    if request.items.is_empty() {
        return Err(Status::invalid_argument("items: nothing to apply"));
    }
    let mut problems = Problems::new(*limits);
    let mut writes = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in request.items.iter().enumerate() {
        if problems.room() == 0 {
            problems.stopped();
            break;
        }
        let origin = if item.origin.is_empty() {
            format!("items[{i}]")
        } else {
            clip(&item.origin, MAX_LABEL_BYTES)
        };
        let outcome = manul_model::load::load_limited(&origin, &item.document, problems.room());
        for e in &outcome.errors {
            problems.push(&e.to_string());
        }
        for loaded in outcome.resources {
            let key = loaded.resource.key();
            if !seen.insert(key.clone()) {
                problems.push(&format!("{origin}: {key} appears twice in one request"));
                continue;
            }
            match serde_json::to_vec(&loaded.resource) {
                Ok(value) => writes.push(Write {
                    key: Some(wire::key_to_proto(&key)),
                    value: value.into(),
                    expected_revision: item.expected_revision,
                }),
                Err(e) => problems.push(&format!("{origin}: {key}: cannot encode: {e}")),
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.into_status());
    }
    if writes.is_empty() {
        return Err(Status::invalid_argument(
            "items: no resources in the request",
        ));
    }
    let mut deletes = Vec::new();
    for (i, k) in request.deletes.iter().enumerate() {
        let key = normalize_key(k, &format!("deletes[{i}]"))?;
        let proto = key.to_proto();
        let written = writes.iter().any(|w| w.key.as_ref() == Some(&proto));
        if written || deletes.contains(&proto) {
            return Err(Status::invalid_argument(format!(
                "deletes[{i}]: {key} is written or deleted twice in one request"
            )));
        }
        deletes.push(proto);
    }
    Ok(WriteBatch { writes, deletes })
}

#[tonic::async_trait]
impl Resources for ResourcesService {
    #[tracing::instrument(name = "resources.apply", skip_all)]
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let sent = request.get_ref().origin.as_ref();
        let (mut trail, origin) = self.begin_write(&request, Verb::Apply, sent);
        let result = self.apply_as(request, &mut trail, origin).await;
        trail.finish(result.as_ref().map(|r| r.get_ref().revision));
        result
    }

    #[tracing::instrument(name = "resources.delete", skip_all)]
    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let sent = request.get_ref().origin.as_ref();
        let (mut trail, origin) = self.begin_write(&request, Verb::Delete, sent);
        let result = self.delete_as(request, &mut trail, origin).await;
        trail.finish(result.as_ref().map(|r| r.get_ref().revision));
        result
    }

    #[tracing::instrument(name = "resources.get", skip_all)]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request
            .get_ref()
            .key
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("key: required"))?;
        let key = normalize_key(key, "key")?;
        self.read_index().await?;
        let sm = self
            .node
            .shared()
            .state
            .read()
            .map_err(|_| Status::internal("state lock poisoned"))?;
        let entry = sm
            .get(&key)
            .ok_or_else(|| Status::not_found(format!("{key} not found")))?;
        Ok(Response::new(GetResponse {
            entry: Some(entry),
            revision: sm.revision(),
        }))
    }

    #[tracing::instrument(name = "resources.list", skip_all)]
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = request.get_ref();
        let kind = if req.kind.is_empty() {
            String::new()
        } else {
            Kind::from_cli(&req.kind)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("kind: unknown kind {:?}", req.kind))
                })?
                .key_name()
                .to_string()
        };
        self.read_index().await?;
        let sm = self
            .node
            .shared()
            .state
            .read()
            .map_err(|_| Status::internal("state lock poisoned"))?;
        Ok(Response::new(ListResponse {
            entries: sm.list(&kind, &req.namespace),
            revision: sm.revision(),
        }))
    }

    #[tracing::instrument(name = "resources.audit", skip_all)]
    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditResponse>, Status> {
        let req = request.get_ref();
        let kind = if req.kind.is_empty() {
            String::new()
        } else {
            Kind::from_cli(&req.kind)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("kind: unknown kind {:?}", req.kind))
                })?
                .key_name()
                .to_string()
        };
        let filter = AuditFilter {
            since_unix_millis: req.since_unix_millis,
            kind,
            namespace: req.namespace.clone(),
            identity: req.identity.clone(),
            after_revision: req.after_revision,
            limit: if req.limit == 0 {
                1000
            } else {
                req.limit as usize
            },
        };
        self.read_index().await?;
        let sm = self
            .node
            .shared()
            .state
            .read()
            .map_err(|_| Status::internal("state lock poisoned"))?;
        Ok(Response::new(AuditResponse {
            events: sm.audit().query(&filter),
            revision: sm.revision(),
            oldest_retained: sm.audit().oldest_retained(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, namespace: &str, name: &str) -> ResourceKey {
        ResourceKey {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn owned_keys_are_refused_only_in_kubernetes_mode() {
        let keys = [
            key("globalnetworkpolicy", "", "default.x"),
            key("ipamblock", "", "10-65-0-0-26"),
            key("workloadendpoint", "shop", "web"),
        ];
        assert!(refuse_owned(None, &keys).is_ok());
        let refused = refuse_owned(Some(KubeOptions::default()), &keys).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let lines: Vec<&str> = refused.message().lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with(
            "GlobalNetworkPolicy default.x is owned by the Kubernetes API in Kubernetes mode: apply it with kubectl"
        ));
        assert!(lines[1].starts_with("WorkloadEndpoint shop/web is owned by the Kubernetes API"));
        assert!(refuse_owned(Some(KubeOptions::default()), &keys[1..2]).is_ok());
    }

    #[test]
    fn keys_with_spaces_or_control_characters_are_refused_before_raft() {
        for (k, message) in [
            (
                key("globalnetworkpolicy", "", "a\0b"),
                "key.name: \"a\\0b\" holds '\\0'",
            ),
            (
                key("networkpolicy", "a b", "x"),
                "key.namespace: \"a b\" holds ' '",
            ),
            (key("globalnetworkpolicy", "", ""), "key.name: required"),
        ] {
            let refused = normalize_key(&k, "key").unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert!(
                refused.message().starts_with(message),
                "{}",
                refused.message()
            );
        }
        let ok = normalize_key(&key("networkpolicy", "", "default.x"), "key").unwrap();
        assert_eq!(ok.namespace, "default");
    }

    #[test]
    fn a_forwarded_write_whose_call_broke_has_an_unknown_outcome() {
        let broke = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let s = forward_failed("10.0.0.1:5473", broke);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("outcome is unknown"), "{s:?}");
        // Never reached: a refusal the client may retry.
        let refused = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error: connection refused",
        )));
        let s = forward_failed("10.0.0.1:5473", refused);
        assert!(
            s.message().starts_with("the leader could not be reached"),
            "{s:?}"
        );
        // The leader's own answer goes on as it is.
        let conflict = Status::failed_precondition("revision conflict on x");
        let s = forward_failed("10.0.0.1:5473", conflict.clone());
        assert_eq!(
            (s.code(), s.message()),
            (conflict.code(), conflict.message())
        );
    }

    #[test]
    fn a_write_whose_replica_stopped_has_an_unknown_outcome() {
        let s = proposal_status(NodeError::Stopped);
        assert!(s.message().contains("outcome is unknown"), "{s:?}");
        let s = proposal_status(NodeError::NotLeader { leader: None });
        assert!(s.message().starts_with("no leader is elected yet"), "{s:?}");
    }
}
