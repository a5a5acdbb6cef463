//! The flow aggregator (`manul-flows`): every Felix streams its aggregated
//! flow records here (`FlowIngest`, numbered batches, acknowledged; a
//! resent batch is dropped as a duplicate), the aggregator keeps a bounded
//! window of them in memory and serves them (`Flows`: list with filters,
//! follow, statistics per policy rule). A web UI on its own listener
//! ([`web`]) shows them as a live table and a service graph ([`graph`]),
//! over a small read-only JSON API (records in the one JSON shape of
//! [`json`], which `manulctl flows -o json` prints too). With TLS ([`tls`]) the gRPC listener
//! requires a client certificate of an admitted identity.
//!
//! It is its own small service, not part of Typha: flow volume grows with
//! traffic, Typha's work with configuration, and a burst of flows must
//! never contend with Raft (its disk, its CPU, its leader's heartbeats).
//! It refuses to persist anything (a restart starts an empty window; the
//! Felixes resend what was not acknowledged) and to enforce anything.

pub mod filter;
pub mod flow;
pub mod graph;
pub mod ingest;
pub mod intern;
pub mod json;
pub mod listen;
pub mod server;
pub mod store;
pub mod tls;
pub mod web;
pub mod wire;

pub use filter::{Filter, FilterError};
pub use server::Shared;
pub use store::Store;
