//! A typed async client of Typha's `Resources` gRPC API, and the IPAM that
//! keeps pod addresses in the datastore on top of it.
//!
//! [`Client`] connects to any of a list of replicas (trying them in turn,
//! and moving on when one becomes unavailable), sends [`Resource`]s as the
//! JSON the model defines, and hands back typed resources with their
//! revisions. Optimistic concurrency is explicit: [`Client::apply_if`] and
//! [`Client::delete`] take the revision the caller last saw (0: the key must
//! not exist). [`ClientError`] tells a revision conflict, a missing
//! resource, an invalid write, a cluster with no leader yet and an
//! unavailable cluster apart.
//!
//! The same failover opens Typha's sync stream ([`Client::sync`]) and
//! carries cluster administration on the peer listener ([`Client::cluster`]).
//!
//! [`ipam`] allocates addresses from IP pools in per-node blocks stored as
//! `IPAMBlock` resources; its decisions are pure functions
//! ([`ipam::plan`]), its writes are compare-and-set on a block's revision.
//!
//! It refuses to validate writes itself beyond encoding them (Typha runs the
//! model's validation and is the one judge), to retry a write whose
//! expected revision no longer matches (that is the caller's decision), and
//! to know about CNI, veths or dataplanes.
//!
//! [`Resource`]: manul_model::Resource

mod client;
mod cluster;
mod error;
pub mod ipam;
mod sync;

pub use client::{Client, ClientConfig};
pub use cluster::Cluster;
pub use error::ClientError;
