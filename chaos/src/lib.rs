//! Fault injection and invariant checks for Manul clusters (`manul-chaos`).
//!
//! A run brings up a local cluster of three Typha replicas (each in its own
//! network namespace, one with its data directory on a small tmpfs) and
//! Felix nodes on the eBPF dataplane with pods, keeps pod, policy and API
//! churn going, and injects faults from a schedule or a seed: SIGKILL and
//! restart of the leader or a follower, a partition cutting off the leader
//! or a follower (nftables drop rules inside the replicas' namespaces),
//! SIGSTOP/SIGCONT and SIGKILL/restart of a Felix, a full disk under a
//! replica. Throughout and at the end it checks that no acknowledged write
//! is lost, that the API's history is linearizable, that every Sync stream
//! is ordered without gaps or duplicates and builds the replicas' state,
//! that every Felix converges within 2 s of a heal, that no denied pair is
//! ever allowed (real packets), that no process panics and that memory
//! stays bounded; and writes `report.json` and `report.html`.
//!
//! The checks' cores (the linearizability checker, the key model, the
//! stream checker, the schedule, the invariants, the report page) are pure
//! and tested on their own. It refuses to inject faults outside the
//! cluster it created: every process, rule and mount it touches belongs to
//! that cluster's namespaces and work directory.

pub mod faults;
pub mod html;
pub mod invariants;
pub mod kv;
pub mod leadership;
pub mod linearizability;
pub mod minimal;
pub mod probes;
pub mod report;
pub mod run;
pub mod schedule;
pub mod scrape;
pub mod setup;
pub mod stream;
pub mod watch;
pub mod workload;

use std::path::{Path, PathBuf};

/// What can stop a run (a violated invariant does not: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("local cluster")]
    Cluster(#[from] manul_local_cluster::ClusterError),
    #[error("network namespace")]
    Netns(#[from] manul_netns::NetnsError),
    #[error("setting up the run: {0}")]
    Setup(String),
    #[error("the replicas agree on no leader to aim the fault at")]
    NoAgreedLeader,
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ChaosError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ChaosError {
        ChaosError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
