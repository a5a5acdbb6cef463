//! The watchers' driver: on the Raft leader only, one `kube` watcher per
//! kind feeds a [`Reconciler`] and proposes its batches through the node.
//!
//! Leadership is polled: when this node becomes leader the watchers start
//! from the keys they own in the (fully applied) store and list, so the
//! first batch reconciles whatever an earlier leader left; when it stops
//! being leader they are stopped. A failed proposal rebuilds the
//! reconciler from the store and lists again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node as K8sNode, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use manul_model::{Kind, ResourceKey};
use manul_proto::v1::{Command, Write, WriteBatch, command::Op};
use manul_proto::wire;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::calico::{self, CalicoKind, CalicoObject, CalicoSource};
use super::lenient::Lenient;
use super::metrics::KubeMetrics;
use super::reconcile::{Batch, Guarded, Reconciler, Source, WatchEvent};
use super::sources::{
    EndpointSlices, Namespaces, NetworkPolicies, Nodes, Pods, ServiceAccounts, Services,
};
use crate::node::Node;
use crate::state::Key;

/// How often leadership is checked.
const LEADER_POLL: Duration = Duration::from_millis(200);
/// The pause after a watch error or a failed proposal.
const RETRY: Duration = Duration::from_secs(1);

/// What the watchers do beyond Calico's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubeOptions {
    /// Write an automatic host endpoint per node.
    pub auto_host_endpoints: bool,
}

/// Why the Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or $KUBECONFIG)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for the API server `kubeconfig` names, or, without one, the
/// in-cluster configuration (or `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await.map_err(KubeError::Infer)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// Leader, with every committed entry applied, so the store read at start
/// holds what earlier leaders wrote.
pub(crate) fn is_leader(node: &Node) -> bool {
    let s = node.status();
    s.leader_id != 0 && s.leader_id == s.id && s.applied_index >= s.commit_index
}

/// The store's entries this source owns.
fn owned_entries<S: Source>(node: &Node, source: &S) -> Vec<(ResourceKey, Vec<u8>)> {
    let Ok(state) = node.shared().state.read() else {
        return Vec::new();
    };
    state
        .list("", "")
        .into_iter()
        .filter_map(|e| {
            let key = wire::entry_key(&e).ok()?;
            source.owns(&key).then(|| (key, e.value.to_vec()))
        })
        .collect()
}

fn store_key(k: &ResourceKey) -> Key {
    Key::from_proto(&wire::key_to_proto(k))
}

/// Every stored entry of `kind`, with its revision.
fn kind_entries(node: &Node, kind: Kind) -> Vec<(ResourceKey, Vec<u8>, u64)> {
    let Ok(state) = node.shared().state.read() else {
        return Vec::new();
    };
    state
        .list(kind.key_name(), "")
        .into_iter()
        .filter_map(|e| {
            let key = wire::entry_key(&e).ok().filter(|k| k.kind == kind)?;
            Some((key, e.value.to_vec(), e.revision))
        })
        .collect()
}

/// The Raft command for a batch: one atomic entry.
pub fn command(batch: Batch) -> Command {
    command_with(batch, Vec::new())
}

/// The Raft command for a batch and guarded writes: one atomic entry.
pub fn command_with(batch: Batch, guarded: Vec<Guarded>) -> Command {
    let guarded = guarded.into_iter().map(|g| Write {
        key: Some(store_key(&g.key).to_proto()),
        value: g.value.into(),
        expected_revision: Some(g.expected),
    });
    Command {
        request_id: 0,
        op: Some(Op::Writes(WriteBatch {
            writes: batch
                .puts
                .into_iter()
                .map(|(k, v)| Write {
                    key: Some(store_key(&k).to_proto()),
                    value: v.into(),
                    expected_revision: None,
                })
                .chain(guarded)
                .collect(),
            deletes: batch
                .deletes
                .iter()
                .map(|k| store_key(k).to_proto())
                .collect(),
        })),
        origin: None,
    }
}

fn event<K>(e: Event<Lenient<K>>) -> WatchEvent<K> {
    match e {
        Event::Apply(o) => WatchEvent::Apply(o.into_watched()),
        Event::Delete(o) => WatchEvent::Delete(o.into_watched()),
        Event::Init => WatchEvent::Init,
        Event::InitApply(o) => WatchEvent::InitApply(o.into_watched()),
        Event::InitDone => WatchEvent::InitDone,
    }
}

/// Runs one kind's watcher until the task is aborted.
pub async fn watch_kind<S>(
    api: Api<Lenient<S::Object>>,
    source: S,
    node: Node,
    metrics: KubeMetrics,
) where
    S: Source + Clone + Send + 'static,
    S::Object: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let label = KubeMetrics::kind(source.kind());
    loop {
        let mut reconciler = Reconciler::new(source.clone(), owned_entries(&node, &source));
        let before = reconciler.counts();
        let mut seen = before;
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        loop {
            let next = match stream.try_next().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    metrics.watch_restarts.get_or_create(&label).inc();
                    tracing::warn!(kind = source.kind(), error = %e, "watch failed; listing again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let next = event(next);
            let listed = matches!(next, WatchEvent::InitDone);
            let step = reconciler.handle(next);
            for s in &step.skipped {
                tracing::warn!(kind = source.kind(), object = %s.at, reason = %s.reason, "skipped an object that cannot be converted");
            }
            let counts = reconciler.counts();
            metrics
                .objects
                .get_or_create(&label)
                .set(i64::try_from(counts.objects).unwrap_or(i64::MAX));
            metrics
                .relists
                .get_or_create(&label)
                .inc_by(counts.relists - seen.relists);
            metrics
                .conversion_errors
                .get_or_create(&label)
                .inc_by(counts.conversion_errors - seen.conversion_errors);
            seen = counts;
            let guarded = if listed {
                source.after_list(reconciler.stored(), &|kind| kind_entries(&node, kind))
            } else {
                Vec::new()
            };
            let batch = match step.batch {
                None if !guarded.is_empty() => Some(Batch::default()),
                b => b,
            };
            if let Some(batch) = batch {
                let (puts, deletes) = (batch.puts.len() + guarded.len(), batch.deletes.len());
                let mut command = command_with(batch, guarded);
                command.origin = Some(crate::audit::stamp(
                    &format!("typha kubernetes watcher {}", source.kind()),
                    "typha",
                    "apply",
                ));
                match node.propose(command).await.map(|a| a.result) {
                    Ok(Ok(_)) => {
                        metrics.batches.get_or_create(&label).inc();
                        tracing::debug!(kind = source.kind(), puts, deletes, "proposed");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(kind = source.kind(), error = %e, "batch not applied; reconciling again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(kind = source.kind(), error = %e, "proposal failed; reconciling again");
                        break;
                    }
                }
            }
        }
        // The view no longer matches the store: start over from it.
        metrics.watch_restarts.get_or_create(&label).inc();
        tokio::time::sleep(RETRY).await;
    }
}

/// Starts the watcher of one `projectcalico.org/v3` CRD kind.
fn spawn_calico<M: CalicoKind + Clone + std::fmt::Debug>(
    set: &mut JoinSet<()>,
    client: &Client,
    node: &Node,
    metrics: &KubeMetrics,
    opts: KubeOptions,
) {
    set.spawn(watch_kind(
        Api::<Lenient<CalicoObject<M>>>::all(client.clone()),
        CalicoSource::<M>::new(opts),
        node.clone(),
        metrics.clone(),
    ));
}

/// Starts every kind's watcher.
fn start(client: &Client, node: &Node, metrics: &KubeMetrics, opts: KubeOptions) -> JoinSet<()> {
    let mut set = JoinSet::new();
    spawn_calico::<calico::NetworkPolicies>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::GlobalNetworkPolicies>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::StagedNetworkPolicies>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::StagedGlobalNetworkPolicies>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::StagedKubernetesNetworkPolicies>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::Tiers>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::HostEndpoints>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::NetworkSets>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::GlobalNetworkSets>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::GlobalThreatFeeds>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::Profiles>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::IpPools>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::FelixConfigurations>(&mut set, client, node, metrics, opts);
    spawn_calico::<calico::Installations>(&mut set, client, node, metrics, opts);
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<Pod>>::all(client.clone()),
        Pods,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<Namespace>>::all(client.clone()),
        Namespaces,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<ServiceAccount>>::all(client.clone()),
        ServiceAccounts,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<NetworkPolicy>>::all(client.clone()),
        NetworkPolicies,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<Service>>::all(client.clone()),
        Services,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<EndpointSlice>>::all(client.clone()),
        EndpointSlices,
        n,
        m,
    ));
    let (n, m) = (node.clone(), metrics.clone());
    set.spawn(watch_kind(
        Api::<Lenient<K8sNode>>::all(client.clone()),
        Nodes {
            auto_host_endpoints: opts.auto_host_endpoints,
        },
        n,
        m,
    ));
    set
}

/// Runs the watchers whenever this node leads, until `stop` turns true.
pub async fn run(
    client: Client,
    node: Node,
    metrics: KubeMetrics,
    opts: KubeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut running: Option<JoinSet<()>> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let leading = is_leader(&node);
        match (&running, leading) {
            (None, true) => {
                tracing::info!("leader: starting the Kubernetes watchers");
                running = Some(start(&client, &node, &metrics, opts));
            }
            (Some(_), false) if node.status().leader_id != node.id() => {
                tracing::info!("no longer leader: stopping the Kubernetes watchers");
                running = None;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(LEADER_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
