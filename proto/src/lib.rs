//! Wire definitions shared by Manul's processes, generated from
//! `proto/manul.proto`: the resource API (`Resources`), the Typha-to-Felix
//! stream (`Sync`), Raft cluster management (`Cluster`) and replica-to-replica
//! Raft transport (`Peer`).
//!
//! It refuses to hold logic: no validation, no state, no I/O beyond what the
//! generated gRPC stubs do. Validation lives in `manul-model`.

#![allow(missing_debug_implementations, clippy::all)]

/// Version 1 of the protocols.
pub mod v1 {
    tonic::include_proto!("manul.v1");
}

/// The version clients and servers announce in their hellos.
pub const PROTOCOL_VERSION: &str = concat!("manul/", env!("CARGO_PKG_VERSION"));
