//! Bringing a cluster up, adding and removing pods, and tearing it down.
//!
//! This file holds the cluster's shape and its life (`up`, `cleanup`,
//! `Drop`); `typha` starts the control plane and writes resources through
//! it, `nodes` builds the underlay and the nodes' Felix, `pods` creates
//! Namespaces, Pods and their sandboxes through the CNI plugin.

mod disk;
mod faults;
mod flows;
mod nodes;
mod pods;
mod slow_disk;
mod typha;

use flows::FlowsState;
pub use flows::{FLOWS_PORT, FLOWS_UI_PORT, FlowsConfig};
pub use nodes::felix_revision_in;
pub use pods::{PodInfo, PodSpec};
pub use slow_disk::{SlowDisk, Throttle};
pub use typha::parse;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use manul_client::Client;
use manul_netns::{NetNs, TcpServer};
use tracing::{info, warn};

use crate::ClusterError;
use crate::procs;

/// The underlay network; the bridge holds `.1`, node N `.(10+N)`.
pub const UNDERLAY_PREFIX: [u8; 3] = [192, 168, 220];
/// The node network every node's `eth0` also has: the bridge holds `.1`,
/// node N `.(9+N)`, so `node1`'s `eth0` is at 10.0.0.10, the address the
/// quick start's HostEndpoint expects.
pub const HOST_NET_PREFIX: [u8; 3] = [10, 0, 0];
/// The pod address pool.
pub const POD_POOL: &str = "10.65.0.0/16";
/// Typha's first port (replica K listens on `PORT + K - 1`).
pub const TYPHA_PORT: u16 = 5473;
/// Typha's first peer port (Raft and cluster administration; replica K
/// listens on `PEER_PORT + K - 1`).
pub const TYPHA_PEER_PORT: u16 = 5573;
/// Every replica's sync listener (the lean Sync transport,
/// `--sync-listen`) on its own address: one port for all, as Felix's
/// `typhaSyncPort` is. Not Typha's 5475, which replica 3's client port is.
pub const TYPHA_SYNC_PORT: u16 = 5675;
/// Felix's metrics port on every node. It listens on all the node's
/// addresses (Calico's default), so a scraper in the control plane reaches
/// it over the underlay.
pub const FELIX_METRICS_PORT: u16 = 9091;
/// Typha replica K's metrics port is `TYPHA_METRICS_PORT + K - 1`, on the
/// control plane's loopback.
pub const TYPHA_METRICS_PORT: u16 = 9093;

/// A `/metrics` page a scraper in the control-plane namespace reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsTarget {
    /// `typha` or `felix`.
    pub job: &'static str,
    pub address: std::net::SocketAddr,
}

/// Which dataplane the nodes' Felix runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataplane {
    Bpf,
    Iptables,
    /// No enforcement (the null driver): for control-plane runs.
    Null,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Bpf => "bpf",
            Dataplane::Iptables => "iptables",
            Dataplane::Null => "null",
        }
    }

    pub fn parse(s: &str) -> Result<Dataplane, ClusterError> {
        match s {
            "bpf" | "ebpf" => Ok(Dataplane::Bpf),
            "iptables" | "nftables" => Ok(Dataplane::Iptables),
            "null" => Ok(Dataplane::Null),
            other => Err(ClusterError::Invalid(format!(
                "unknown dataplane {other:?}: use bpf, iptables or null"
            ))),
        }
    }
}

/// How each Felix takes its Sync stream from Typha (`typhaSyncTransport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SyncTransport {
    /// The lean transport on each replica's sync listener
    /// ([`TYPHA_SYNC_PORT`]).
    #[default]
    Tcp,
    /// The `Sync` gRPC call on each replica's client port.
    Grpc,
}

impl SyncTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTransport::Tcp => "tcp",
            SyncTransport::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Result<SyncTransport, ClusterError> {
        match s {
            "tcp" => Ok(SyncTransport::Tcp),
            "grpc" => Ok(SyncTransport::Grpc),
            other => Err(ClusterError::Invalid(format!(
                "unknown sync transport {other:?}: use tcp or grpc"
            ))),
        }
    }
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Prefix of every namespace (`NAME-cp`, `NAME-node1`, ...).
    pub name: String,
    pub nodes: usize,
    /// 1, or 3 and more (a Raft cluster).
    pub typha_replicas: usize,
    pub dataplane: Dataplane,
    /// How long the CNI plugin waits for Felix to program a new pod (0:
    /// do not wait).
    pub policy_setup_timeout: Duration,
    /// How each Felix takes its Sync stream (every replica serves both).
    pub sync_transport: SyncTransport,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "manul".into(),
            nodes: 2,
            typha_replicas: 1,
            dataplane: Dataplane::Iptables,
            policy_setup_timeout: Duration::ZERO,
            sync_transport: SyncTransport::default(),
        }
    }
}

/// A Typha replica whose data directory is a small tmpfs of its own (for
/// filling the disk under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmallDisk {
    /// The replica, 0-based.
    pub replica: usize,
    /// The tmpfs's size.
    pub mib: u64,
}

/// The replicas' special disks, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disks {
    pub small: Option<SmallDisk>,
    pub slow: Option<SlowDisk>,
}

/// A running Typha replica.
#[derive(Debug)]
struct Replica {
    /// Its own namespace (clusters of three and more replicas).
    netns: Option<NetNs>,
    child: Child,
}

/// A node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its `eth0`'s address on the node network ([`HOST_NET_PREFIX`]).
    pub host_ip: Ipv4Addr,
    pub netns: NetNs,
    pub status_dir: PathBuf,
    pub log: PathBuf,
    pub felix: Child,
}

/// A running local cluster. Dropping it stops every process and removes
/// every namespace.
#[derive(Debug)]
pub struct LocalCluster {
    config: ClusterConfig,
    // Field order is drop order.
    pods: BTreeMap<String, PodInfo>,
    /// Servers listening in node namespaces ([`Self::host_listen`]).
    host_servers: Vec<TcpServer>,
    nodes: Vec<Node>,
    typhas: Vec<Replica>,
    /// The mounted tmpfs of [`SmallDisk`], unmounted on drop.
    small_disk: Option<(PathBuf, SmallDisk)>,
    /// The loop device of [`SlowDisk`], unmounted and detached on drop.
    slow_disk: Option<slow_disk::Mounted>,
    /// The flow aggregator, when the cluster runs one.
    flows: Option<FlowsState>,
    client: Option<Client>,
    runtime: Option<tokio::runtime::Runtime>,
    namespaces: BTreeSet<String>,
    work: tempfile::TempDir,
    cp: NetNs,
    pod_counter: AtomicU64,
}

fn netns_err(e: manul_netns::NetnsError) -> ClusterError {
    ClusterError::Netns(e.to_string())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl LocalCluster {
    /// Stops the processes of a cluster named `name` and removes its
    /// namespaces (what a killed run left behind). Returns how many
    /// namespaces were removed.
    pub fn cleanup(name: &str) -> Result<usize, ClusterError> {
        let prefix = format!("{name}-");
        if let Ok(entries) = std::fs::read_dir(manul_netns::NETNS_RUN_DIR) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    procs::stop_processes_in(&e.path(), Duration::from_secs(2));
                }
            }
        }
        let removed = manul_netns::cleanup_prefix(&prefix).map_err(netns_err)?;
        remove_bpf_pins(&prefix);
        disk::unmount_leftovers(&prefix);
        slow_disk::remove_leftovers(&prefix);
        Ok(removed)
    }

    /// Builds the cluster and waits until Typha and every Felix are ready.
    pub fn up(config: ClusterConfig) -> Result<LocalCluster, ClusterError> {
        Self::start(config, Disks::default(), None)
    }

    /// [`Self::up`], with one replica's data directory on a small tmpfs.
    pub fn up_with(
        config: ClusterConfig,
        small_disk: Option<SmallDisk>,
    ) -> Result<LocalCluster, ClusterError> {
        Self::start(
            config,
            Disks {
                small: small_disk,
                slow: None,
            },
            None,
        )
    }

    /// [`Self::up`], with one replica's data directory on a small tmpfs
    /// and another's (or the same one's) on a disk a fault can slow down.
    pub fn up_with_disks(
        config: ClusterConfig,
        disks: Disks,
    ) -> Result<LocalCluster, ClusterError> {
        Self::start(config, disks, None)
    }

    /// [`Self::up`], with the flow aggregator in the control plane and
    /// every Felix streaming flow records to it when `flows` is set.
    pub fn up_with_flows(
        config: ClusterConfig,
        flows: Option<FlowsConfig>,
    ) -> Result<LocalCluster, ClusterError> {
        Self::start(config, Disks::default(), flows)
    }

    fn start(
        config: ClusterConfig,
        disks: Disks,
        flows: Option<FlowsConfig>,
    ) -> Result<LocalCluster, ClusterError> {
        if disks
            .small
            .is_some_and(|d| d.replica >= config.typha_replicas || d.mib == 0)
        {
            return Err(ClusterError::Invalid(
                "the small disk must name one of the replicas and a size".into(),
            ));
        }
        if disks
            .slow
            .is_some_and(|d| d.replica >= config.typha_replicas || d.mib == 0)
            || disks
                .small
                .zip(disks.slow)
                .is_some_and(|(a, b)| a.replica == b.replica)
        {
            return Err(ClusterError::Invalid(
                "the slow disk must name a size and one of the replicas, not the small disk's"
                    .into(),
            ));
        }
        if config.nodes == 0 || config.nodes > 200 {
            return Err(ClusterError::Invalid("nodes must be 1..=200".into()));
        }
        if config.typha_replicas != 1 && config.typha_replicas < 3 {
            return Err(ClusterError::Invalid(
                "Typha runs 1 replica, or 3 or more".into(),
            ));
        }
        let removed = Self::cleanup(&config.name)?;
        if removed > 0 {
            warn!(
                removed,
                "removed namespaces of an earlier run named {}", config.name
            );
        }
        let cp = NetNs::create(&format!("{}-cp", config.name)).map_err(netns_err)?;
        let work = tempfile::Builder::new()
            .prefix(&format!("{}-", config.name))
            .tempdir()
            .map_err(|e| ClusterError::io(Path::new("temporary directory"), e))?;
        let mut cluster = LocalCluster {
            config,
            pods: BTreeMap::new(),
            host_servers: Vec::new(),
            nodes: Vec::new(),
            flows: flows.map(|config| FlowsState {
                config,
                child: None,
                starts: 0,
            }),
            typhas: Vec::new(),
            small_disk: None,
            slow_disk: None,
            client: None,
            runtime: None,
            namespaces: BTreeSet::new(),
            work,
            cp,
            pod_counter: AtomicU64::new(0),
        };
        cluster.underlay()?;
        cluster.make_certs()?;
        cluster.start_typha(disks)?;
        cluster.start_flows()?;
        cluster.seed()?;
        for i in 1..=cluster.config.nodes {
            cluster.start_node(i)?;
        }
        cluster.wait_nodes_ready()?;
        info!(
            nodes = cluster.config.nodes,
            dataplane = cluster.config.dataplane.as_str(),
            "cluster up"
        );
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Where the cluster keeps logs and state.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Keeps the working directory (logs) after the cluster goes.
    pub fn keep_work_dir(&mut self) -> PathBuf {
        let path = self.work.path().to_path_buf();
        let fresh = tempfile::tempdir();
        if let Ok(fresh) = fresh {
            let old = std::mem::replace(&mut self.work, fresh);
            let _ = old.keep();
        }
        path
    }
}

/// Where the eBPF dataplane pins its maps, per node (`--bpf-pin-name`).
const BPF_PIN_ROOT: &str = "/sys/fs/bpf/manul";

/// Removes the eBPF pins of the cluster's nodes (bpffs is shared by every
/// namespace, so they outlive the node namespaces).
fn remove_bpf_pins(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(BPF_PIN_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix)
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            warn!("cannot remove {}: {err}", e.path().display());
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Pods first (their namespaces), then the agents, Typha, and the
        // node and control-plane namespaces (with anything still in them).
        self.pods.clear();
        self.host_servers.clear();
        for node in &mut self.nodes {
            if let Ok(pid) = i32::try_from(node.felix.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
            procs::stop_child(&mut node.felix, Duration::from_secs(3));
        }
        if let Some(child) = self.flows.as_mut().and_then(|f| f.child.as_mut()) {
            procs::stop_child(child, Duration::from_secs(3));
        }
        for typha in &mut self.typhas {
            // A stopped (SIGSTOP) replica cannot act on SIGTERM.
            if let Ok(pid) = i32::try_from(typha.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
            procs::stop_child(&mut typha.child, Duration::from_secs(3));
        }
        self.client = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        for node in &self.nodes {
            procs::stop_processes_in(node.netns.path(), Duration::from_secs(1));
        }
        procs::stop_processes_in(self.cp.path(), Duration::from_secs(1));
        for typha in &self.typhas {
            if let Some(ns) = &typha.netns {
                procs::stop_processes_in(ns.path(), Duration::from_secs(1));
            }
        }
        self.typhas.clear();
        if let Some((path, _)) = self.small_disk.take() {
            disk::unmount(&path);
        }
        drop(self.slow_disk.take());
        self.nodes.clear();
        remove_bpf_pins(&format!("{}-", self.config.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataplane_names() {
        assert_eq!(Dataplane::parse("bpf").unwrap(), Dataplane::Bpf);
        assert_eq!(Dataplane::parse("iptables").unwrap(), Dataplane::Iptables);
        assert!(Dataplane::parse("ipvs").is_err());
    }
}
