//! Wire definitions shared by Manul's processes.
//!
//! This crate will hold the `.proto` files and the types generated from them:
//! the Typha-to-Felix sync protocol, the resource write/read API and the
//! out-of-process dataplane driver API.
//!
//! It refuses to hold logic: no validation, no state, no I/O beyond what the
//! generated gRPC stubs do. Validation lives in `manul-model`.
