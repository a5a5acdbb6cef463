//! A Manul cluster on one machine, for the main job, the scale test, the
//! reachability probe and chaos runs.
//!
//! Layout (every piece a network namespace the cluster creates):
//!
//! - `NAME-cp`: the control plane and underlay: a bridge `br0` at
//!   `192.168.220.1/24`, where a single Typha listens (port 5473, its
//!   sync listener of the lean transport on 5675), and
//!   `10.0.0.1/24` on the node network;
//! - `NAME-tK`: with three or more replicas, one per replica, its `eth0`
//!   on the bridge at `192.168.220.(1+K)` (ports `5473+K-1`, sync port
//!   5675, peer ports
//!   `5573+K-1`, metrics `9093+K-1`), so that cutting replicas apart is a
//!   matter of drop rules between namespaces ([`cluster::LocalCluster::partition_typha`]);
//! - `NAME-nodeN`: one per node, `eth0` at `192.168.220.(10+N)/24` and
//!   `10.0.0.(9+N)/24` (so `node1`'s `eth0` is the quick start's
//!   HostEndpoint at 10.0.0.10) on the bridge, running one `felix` (`--netns`) with the chosen dataplane and
//!   `--program-routes`, so pods on other nodes are reached by direct
//!   routing via their node's address; its metrics listen on port 9091 of
//!   all the node's addresses, Typha's on the control plane's loopback
//!   ([`LocalCluster::metrics_targets`]);
//! - `NAME-pK`: one per pod, wired into its node by the `manul-cni` plugin
//!   (which allocates its address from the IPPool `10.65.0.0/16`, writes its
//!   WorkloadEndpoint and creates the veth pair);
//! - with [`LocalCluster::up_with_flows`], the flow aggregator
//!   (`manul-flows`) in the control plane at `192.168.220.1:7443` (TLS),
//!   which every Felix streams its flow records to, with its web UI at
//!   `http://192.168.220.1:7444/`;
//! - `NAME-xK`: external clients ([`external`]), on the bridge at
//!   `192.168.220.(200+K)/24` with no Felix: machines outside the cluster.
//!
//! With the FelixConfiguration `wireguardEnabled` ([`wireguard::enable`])
//! pod traffic between nodes goes through each node's WireGuard interface;
//! each node keeps its key in its work directory.
//!
//! It refuses to touch the root namespace's network: nothing is attached
//! to or routed through it. Everything is removed on drop, also on failure
//! and panics; [`LocalCluster::cleanup`] removes what a killed run left
//! behind (processes in the cluster's namespaces, then the namespaces, and
//! a replica's small tmpfs, [`cluster::SmallDisk`], and slow disk,
//! [`cluster::SlowDisk`]: its file system, loop device and cgroup).

pub mod cluster;
pub mod external;
pub mod procs;
pub mod wireguard;

pub use cluster::{
    ClusterConfig, Dataplane, Disks, FLOWS_PORT, FLOWS_UI_PORT, FlowsConfig, LocalCluster,
    MetricsTarget, PodInfo, PodSpec, SlowDisk, SmallDisk, SyncTransport, Throttle,
};
pub use external::ExternalClient;

use std::path::Path;

/// What can go wrong running a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("network namespaces: {0}")]
    Netns(String),
    #[error("cannot find the cluster's programs: {0}")]
    Binaries(String),
    #[error("cannot start a process: {0}")]
    Spawn(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Typha: {0}")]
    Typha(String),
    #[error("{what} did not become ready in {secs} s; last log lines:\n{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("the CNI plugin failed for pod {pod}: {message}")]
    Cni { pod: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
}

impl ClusterError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
