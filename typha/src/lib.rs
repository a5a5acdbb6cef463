//! Typha: the cluster's source of truth for policy state.
//!
//! Typha replicates a versioned key/value state machine of Manul resources
//! with Raft (tikv `raft`, `sled` storage) and streams a shared snapshot plus
//! reference-counted deltas to every Felix agent.
//!
//! It refuses to know anything about dataplanes: it stores and fans out
//! validated resources, nothing else. It refuses Raft traffic and cluster
//! administration from anyone without a replica's or administrator's
//! certificate (with TLS) or the cluster's peer token (plaintext); they live
//! on a separate peer listener, any Raft message its guard finds
//! impossible or out of place, and any committed entry the model rejects.
//! With TLS it refuses a write the caller's role does not allow (`authz`:
//! admin, a node's CNI identity for its node's endpoints and IPAM, Felix
//! and read-only identities read), and records every write in its audit
//! trail (`audit`, a local file with refusals too) and, with the identity
//! and time stamped into the Raft entry, in the replicated audit history
//! (`state_audit`) that any replica serves.

pub mod api;
pub mod api_authz;
pub mod api_limits;
pub mod audit;
pub mod authz;
pub mod cluster;
pub mod fanout;
pub mod http;
pub mod kube;
pub mod listener;
pub mod node;
pub mod peer_auth;
pub mod raft_storage;
pub mod replicas;
pub mod server;
pub mod serving;
pub mod sim;
pub mod state;
pub mod state_audit;
pub mod threatfeed;
pub mod tls;
