//! Wire definitions shared by Manul's processes, generated from
//! `proto/manul.proto`: the resource API (`Resources`), the Typha-to-Felix
//! stream (`Sync`), Raft cluster management (`Cluster`) and replica-to-replica
//! Raft transport (`Peer`); and from `proto/flows.proto` the flow
//! aggregator's ingest stream (`FlowIngest`) and query API (`Flows`).
//!
//! [`wire`] is the one adapter between the model's keys and resources and
//! these messages (every crate that speaks the wire already depends on the
//! model, and the model stays free of protobuf and gRPC).
//!
//! [`frame`] is the lean Sync transport's framing (the same messages,
//! length-delimited over TCP) and its client side.
//!
//! It refuses to hold other logic: no validation of its own (decoding a
//! stored value uses `manul-model`'s), no state, no I/O beyond what the
//! generated gRPC stubs and the frame reader do.

/// Version 1 of the protocols.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("manul.v1");
}

/// Flows: Felix's records to the flow aggregator and its query API.
#[allow(missing_debug_implementations, clippy::all)]
pub mod flows {
    tonic::include_proto!("manul.flows.v1");
}

pub mod frame;
pub mod wire;

/// The version clients and servers announce in their hellos.
pub const PROTOCOL_VERSION: &str = concat!("manul/", env!("CARGO_PKG_VERSION"));

/// The gRPC metadata key that carries the cluster's peer token to Typha's
/// peer listener (replication and cluster administration).
pub const PEER_TOKEN_HEADER: &str = "x-manul-peer-token";
