//! The dataplane contract: what Felix tells a dataplane driver.
//!
//! Felix's calculation graph turns cluster state into ordered
//! [`Operation`]s: IP sets before the policies that use them, policies and
//! profiles before the endpoints that reference them, removals in reverse. A
//! [`Driver`] applies them to a kernel (eBPF, iptables) or records them (the
//! [`null`] driver); the [`remote`] driver forwards them to a driver in
//! another process. Every driver holds the [`desired`] state it was told;
//! `contract` holds the checks on what operations carry.
//!
//! It refuses to know how any dataplane works: rules here are already
//! resolved (selectors became IP set ids, named ports became per-endpoint
//! sets), so a driver needs nothing but these types.
//!
//! [`verdict`] is the reference for how a dataplane judges a packet given
//! the state it was told about; the null driver implements it in software.

mod contract;
pub mod desired;
pub mod driver;
pub mod flows;
pub mod frontends;
pub mod maglev;
pub mod null;
pub mod ops;
pub mod remote;
pub mod verdict;

/// Builders of operations, rules and endpoints for tests: this crate's
/// and, with the `testing` feature, the drivers'.
#[cfg(any(test, feature = "testing"))]
pub mod testutil;

pub use desired::{DesiredState, IpSet, ServiceKey};
pub use driver::{
    ConntrackUsage, ContractViolation, Driver, DriverError, MapUsage, PolicyCounter,
    ServiceCounters, chain,
};
pub use flows::{FlowCounts, FlowObservation, FlowPhase, FlowQueue, FlowTuple, Reporter};
pub use frontends::{Frontend, FrontendKind, ServiceFrontends, protocol_name, service_at};
pub use maglev::MaglevTable;
pub use null::NullDriver;
pub use ops::*;
pub use remote::{RemoteDriver, RemoteOptions, ServeHandle, serve, serve_connection, serve_with};
pub use verdict::{Decider, Packet, SideVerdict, TraceStep, Verdict};
