//! Applies [`super::membership`]'s decisions: watches the Typha pods (by
//! label selector, in this pod's namespace), reads and writes the
//! `coordination.k8s.io` Lease with `resourceVersion` conditions, and
//! changes the Raft configuration through the node's conf-change path
//! (the same one `manulctl cluster` uses, with its pre-checks).
//!
//! What survives a crash at each step:
//! - before the node starts ([`prepare`]): nothing is written but the
//!   Lease. A replica that took the Lease and stopped before bootstrapping
//!   finds it held by itself at its next start and bootstraps then; if its
//!   pod is gone, another pod takes the Lease (its holder no longer exists).
//! - bootstrapping writes the single-voter configuration and fsyncs it
//!   before Raft starts: once written, a restart resumes from it.
//! - a membership change is a Raft entry: committed on a quorum's disks
//!   before it applies; one not committed when the leader dies is either
//!   committed by the next leader or dropped, and the next leader's driver
//!   decides again from what it sees.
//! - a joined replica that was never added (its cluster vanished before
//!   adding it) stops after a Lease duration without a cluster ([`run`]
//!   returns), so the kubelet restarts it and it decides again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::membership::{
    LeaseAction, LeaseView, PodView, RaftView, Settings, Start, decide_start, node_id, plan,
};
use crate::node::{MembershipChange, Node};
use crate::raft_storage::SledStorage;

/// How often the driver looks again.
const TICK: Duration = Duration::from_millis(500);
/// How long one membership change may take to commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// This replica's identity in its pod, and the membership settings.
#[derive(Debug, Clone)]
pub struct MembershipOptions {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub pod_ip: IpAddr,
    /// Selects the Typha pods of this Deployment.
    pub selector: String,
    pub lease_name: String,
    /// Voters wanted.
    pub voters: usize,
    /// This replica's peer port (also assumed for a pod declaring none).
    pub peer_port: u16,
    pub lease_duration: Duration,
}

impl MembershipOptions {
    pub fn node_id(&self) -> u64 {
        node_id(&self.pod_uid)
    }

    pub fn peer_address(&self) -> String {
        SocketAddr::new(self.pod_ip, self.peer_port).to_string()
    }

    fn settings(&self) -> Settings {
        Settings {
            me: self.pod_name.clone(),
            my_id: self.node_id(),
            voters: self.voters,
            peer_port: self.peer_port,
            renew_ms: millis(self.lease_duration) / 3,
        }
    }
}

/// Why membership could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("reading the Raft storage in {path}")]
    Storage {
        path: String,
        #[source]
        source: crate::raft_storage::StorageError,
    },
    #[error("the pod watcher stopped before listing the Typha pods")]
    WatcherStopped,
}

/// How the Raft node starts: its id, the founding peers (this replica),
/// and whether it waits to be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub start: Start,
    pub node_id: u64,
    pub peers: BTreeMap<u64, String>,
    pub join: bool,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Whether the Raft storage in `data_dir` holds a configuration (this
/// replica bootstrapped or was added before). Opens and closes it.
pub fn has_configuration(data_dir: &Path) -> Result<bool, MembershipError> {
    let dir = data_dir.join("raft");
    if !dir.exists() {
        return Ok(false);
    }
    let storage = SledStorage::open(&dir, &[]).map_err(|source| MembershipError::Storage {
        path: dir.display().to_string(),
        source,
    })?;
    let cs = storage.conf_state();
    Ok(!cs.voters.is_empty() || !cs.learners.is_empty())
}

fn pod_view(pod: &Pod) -> Option<PodView> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let peer_port = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("peer"))
            .and_then(|p| u16::try_from(p.container_port).ok())
    });
    Some(PodView {
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        ip,
        peer_port,
        ready,
        deleting: meta.deletion_timestamp.is_some(),
    })
}

/// Watches the Typha pods; the receiver holds `None` until the first list
/// is complete, then every pod seen.
pub fn watch_pods(
    client: Client,
    opts: &MembershipOptions,
) -> (watch::Receiver<Option<Vec<PodView>>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let api: Api<Pod> = Api::namespaced(client, &opts.namespace);
    let config = watcher::Config::default().labels(&opts.selector);
    let task = tokio::spawn(async move {
        let mut pods: BTreeMap<String, PodView> = BTreeMap::new();
        let mut listing: BTreeMap<String, PodView> = BTreeMap::new();
        let mut synced = false;
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Err(e) => {
                    tracing::warn!(error = %e, "Typha pod watch failed; retrying");
                    continue;
                }
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(p)) => {
                    if let Some(v) = pod_view(&p) {
                        listing.insert(v.name.clone(), v);
                    }
                }
                Ok(Event::InitDone) => {
                    pods = std::mem::take(&mut listing);
                    synced = true;
                }
                Ok(Event::Apply(p)) => {
                    if let Some(v) = pod_view(&p) {
                        pods.insert(v.name.clone(), v);
                    }
                }
                Ok(Event::Delete(p)) => {
                    if let Some(name) = &p.metadata.name {
                        pods.remove(name);
                    }
                }
            }
            if synced {
                let list = pods.values().cloned().collect();
                if tx.send(Some(list)).is_err() {
                    return;
                }
            }
        }
    });
    (rx, task)
}

/// The Lease as last read, with the local time its version was first seen.
struct LeaseClient {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
    seen: Option<(String, i64)>,
}

impl LeaseClient {
    fn new(client: Client, opts: &MembershipOptions) -> LeaseClient {
        LeaseClient {
            api: Api::namespaced(client, &opts.namespace),
            name: opts.lease_name.clone(),
            me: opts.pod_name.clone(),
            duration: opts.lease_duration,
            seen: None,
        }
    }

    fn observe(&mut self, lease: &Lease, now: i64) -> LeaseView {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed = match &self.seen {
            Some((seen, at)) if *seen == rv => *at,
            _ => {
                self.seen = Some((rv, now));
                now
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(millis(self.duration), |s| i64::from(s.max(1)) * 1000);
        LeaseView {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration_ms: duration,
            observed_ms: observed,
        }
    }

    /// Reads the Lease: the object (for a conditional update) and its view.
    async fn read(&mut self) -> Result<Option<(Lease, LeaseView)>, kube::Error> {
        let now = now_ms();
        Ok(self.api.get_opt(&self.name).await?.map(|l| {
            let view = self.observe(&l, now);
            (l, view)
        }))
    }

    /// Applies `action`; `Ok(false)` when another writer won the race.
    async fn write(
        &mut self,
        action: LeaseAction,
        current: Option<Lease>,
    ) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let result = match (action, current) {
            (LeaseAction::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.me.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (action, Some(mut lease)) => {
                // The read resourceVersion stays in the body: the API
                // server refuses the update (409) if the Lease changed.
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if action == LeaseAction::Take {
                    spec.holder_identity = Some(self.me.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(now);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(l) => {
                self.observe(&l, now_ms());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

async fn synced_pods(
    pods: &mut watch::Receiver<Option<Vec<PodView>>>,
) -> Result<Vec<PodView>, MembershipError> {
    let list = pods
        .wait_for(Option::is_some)
        .await
        .map_err(|_| MembershipError::WatcherStopped)?;
    Ok(list.clone().unwrap_or_default())
}

/// Decides, before the Raft node starts, how it starts: resume from its
/// data, join, or (having taken the Lease) bootstrap. Retries API errors
/// until it can decide.
pub async fn prepare(
    client: Client,
    opts: &MembershipOptions,
    data_dir: &Path,
    pods: &mut watch::Receiver<Option<Vec<PodView>>>,
) -> Result<StartPlan, MembershipError> {
    let has_data = has_configuration(data_dir)?;
    let mut lease = LeaseClient::new(client, opts);
    let start = loop {
        let list = synced_pods(pods).await?;
        let read = match lease.read().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, lease = %opts.lease_name, "cannot read the Lease; retrying");
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        let view = read.as_ref().map(|(_, v)| v.clone());
        match decide_start(has_data, &opts.pod_name, &list, view.as_ref(), now_ms()) {
            Start::Acquire => {
                let action = match &read {
                    None => LeaseAction::Create,
                    Some(_) => LeaseAction::Take,
                };
                match lease.write(action, read.map(|(l, _)| l)).await {
                    Ok(true) => break Start::Acquire,
                    Ok(false) => tracing::info!("another replica took the Lease first"),
                    Err(e) => tracing::warn!(error = %e, "cannot write the Lease; retrying"),
                }
                tokio::time::sleep(TICK).await;
            }
            other => break other,
        }
    };
    let id = opts.node_id();
    tracing::info!(id, ?start, pod = %opts.pod_name, "Raft membership decided how this replica starts");
    Ok(StartPlan {
        start,
        node_id: id,
        peers: BTreeMap::from([(id, opts.peer_address())]),
        join: start != Start::Acquire,
    })
}

fn raft_view(node: &Node) -> RaftView {
    let s = node.status();
    RaftView {
        voters: s.voters,
        learners: s.learners,
        matched: s.matched,
        committed: s.commit_index,
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop.
    Stopped,
    /// This replica waited a Lease duration to be added, and no cluster is
    /// visible: it must restart to decide again.
    NoClusterToJoin,
    /// The pod watcher ended.
    WatcherStopped,
}

/// One leader step: the Lease, then at most one membership change.
async fn lead(
    node: &Node,
    settings: &Settings,
    lease: &mut LeaseClient,
    pods: &[PodView],
) -> Result<(), String> {
    let read = lease
        .read()
        .await
        .map_err(|e| format!("reading the Lease: {e}"))?;
    let view = read.as_ref().map(|(_, v)| v.clone());
    let p = plan(settings, pods, view.as_ref(), &raft_view(node), now_ms());
    if let Some(holder) = &p.lease_conflict {
        tracing::error!(%holder, "the Lease is held by a live pod outside this Raft cluster");
    }
    if let Some(action) = p.lease {
        match lease.write(action, read.map(|(l, _)| l)).await {
            Ok(true) => tracing::debug!(?action, "Lease written"),
            Ok(false) => tracing::info!(?action, "the Lease changed meanwhile; reading again"),
            Err(e) => return Err(format!("writing the Lease: {e}")),
        }
    }
    if let Some(change) = p.change {
        tracing::info!(?change, "changing the Raft membership");
        let done = tokio::time::timeout(CHANGE_TIMEOUT, node.change_membership(change.clone()))
            .await
            .map_err(|_| format!("{change:?} not committed within {CHANGE_TIMEOUT:?}"))?;
        done.map_err(|e| format!("{change:?}: {e}"))?;
        if let MembershipChange::Remove { id } = change {
            tracing::info!(id, "removed a member whose pod is gone");
        }
    }
    Ok(())
}

/// Runs membership until `stop`: on the leader, holds the Lease and changes
/// the configuration as [`plan`] says; on a replica never added, gives up
/// after a Lease duration without a cluster.
pub async fn run(
    client: Client,
    node: Node,
    opts: MembershipOptions,
    mut pods: watch::Receiver<Option<Vec<PodView>>>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let settings = opts.settings();
    let mut lease = LeaseClient::new(client, &opts);
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return Ended::Stopped;
        }
        let list = match synced_pods(&mut pods).await {
            Ok(l) => l,
            Err(_) => return Ended::WatcherStopped,
        };
        let status = node.status();
        let leading = status.leader_id == status.id && status.applied_index >= status.commit_index;
        if leading {
            if let Err(e) = lead(&node, &settings, &mut lease, &list).await {
                tracing::warn!("membership step failed: {e}");
            }
        } else if status.voters.is_empty()
            && status.learners.is_empty()
            && started.elapsed() >= opts.lease_duration
        {
            let view = match lease.read().await {
                Ok(r) => r.map(|(_, v)| v),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the Lease");
                    continue;
                }
            };
            if decide_start(false, &opts.pod_name, &list, view.as_ref(), now_ms()) == Start::Acquire
            {
                tracing::warn!(
                    "not added to any cluster and none is visible: restarting to decide again"
                );
                return Ended::NoClusterToJoin;
            }
        }
    }
}

#[cfg(test)]
#[path = "membership_driver_tests.rs"]
mod tests;
