//! The dataplane contract: what Felix tells a dataplane driver.
//!
//! Felix's calculation graph turns cluster state into ordered
//! [`Operation`]s: IP sets before the policies that use them, policies and
//! profiles before the endpoints that reference them, removals in reverse. A
//! [`Driver`] applies them to a kernel (eBPF, iptables) or records them (the
//! [`null`] driver); the [`remote`] driver forwards them to a driver in
//! another process.
//!
//! It refuses to know how any dataplane works: rules here are already
//! resolved (selectors became IP set ids, named ports became per-endpoint
//! sets), so a driver needs nothing but these types.

pub mod ops;

pub use ops::*;
