//! The Kubernetes datastore: on the Raft leader, watchers list and watch the
//! Kubernetes API and propose what the objects convert to.
//!
//! - [`reconcile`]: the pure core, watch events to batches of puts and
//!   deletes (a relist ends in one batch that also deletes what vanished);
//! - [`sources`]: what each watched kind becomes and which keys it owns;
//! - [`calico`]: the `projectcalico.org/v3` kinds served as CRDs, stored
//!   as the model loads them;
//! - [`owners`]: which watcher owns each key, and the write API's refusal
//!   of owned keys;
//! - [`driver`]: `kube` watchers on the leader, proposing through the node;
//! - [`ipam`]: what a list of pods records in the IPAM blocks, so IPAM
//!   survives losing every replica;
//! - [`lenient`]: objects that may fail to decode, so one bad object is
//!   skipped instead of failing a list;
//! - [`metrics`]: the `typha_k8s_*` metrics;
//! - [`membership`]: Raft membership for a Deployment, pure decisions
//!   (which pod bootstraps, who joins, is promoted, is removed), and
//!   [`membership_driver`], which observes the pods and the Lease and
//!   applies them.
//! - [`testing`]: a minimal pods API server on loopback, for tests.
pub mod calico;
pub mod driver;
pub mod ipam;
pub mod lenient;
pub mod membership;
pub mod membership_driver;
pub mod metrics;
pub mod owners;
pub mod reconcile;
pub mod sources;
pub mod testing;
