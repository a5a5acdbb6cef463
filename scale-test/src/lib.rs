//! The time-to-first-ping scale test, the README's main job and the
//! reachability-matrix probe, all on a local cluster
//! (`manul-local-cluster`: nodes and pods as network namespaces).
//!
//! It refuses to touch the host's own network: every link, address and route
//! it makes lives in namespaces the local cluster creates and removes.

pub mod mainjob;
pub mod probe;
pub mod report;
pub mod run;
pub mod sampler;
pub mod scenario;
pub mod scenario_probe;
pub mod scenario_services;
