//! The time-to-first-ping scale test, the README's main job and the
//! reachability-matrix probe, all on a local cluster
//! (`manul-local-cluster`: nodes and pods as network namespaces); and
//! virtual nodes (`vnodes`): many simulated Felix in one process against
//! Typha replicas on loopback.
//!
//! It refuses to touch the host's own network: every link, address and route
//! it makes lives in namespaces the local cluster creates and removes, and
//! the virtual nodes' servers listen on loopback only.

pub mod mainjob;
pub mod probe;
pub mod report;
pub mod run;
pub mod sampler;
pub mod scenario;
pub mod scenario_probe;
pub mod scenario_services;
pub mod scenario_steps;
pub mod vnodes;
