//! Fault injection for Manul clusters: leader kills, partitions, restarts and
//! slow clients, followed by invariant checks.
//!
//! It refuses to inject faults outside the local cluster it was given.
