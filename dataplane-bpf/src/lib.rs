//! The eBPF dataplane: TC programs on workload and host interfaces, loaded
//! with `aya`, that enforce policy from maps, track connections and emit flow
//! events.
//!
//! It refuses to depend on `felix`: it implements the dataplane contract only,
//! and a policy change must never need a program load.
