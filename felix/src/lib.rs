//! Felix: the per-node agent.
//!
//! Felix follows Typha's snapshot-plus-delta stream, keeps only what its node
//! needs, and turns updates into ordered dataplane operations with a
//! calculation graph that performs no I/O. The binary picks a dataplane driver.
//!
//! It refuses to reach into a driver's internals: drivers see only the
//! dataplane contract.

pub mod agent;
pub mod config;
pub mod configure;
pub mod flows;
pub mod http;
pub mod metrics;
pub mod observed;
pub mod programmed_services;
pub mod resync;
pub mod routes;
pub mod service_health;
pub mod status;
pub mod sync;
pub mod sync_backoff;
pub mod typha_tls;
pub mod wireguard;

/// The calculation graph and the reference evaluator live in their own
/// crate (no I/O, nothing above the model and the dataplane contract).
pub use manul_felix_calc::{calc, evaluator};
