//! The eBPF dataplane: TC programs on workload and host interfaces, loaded
//! with `aya`, that enforce policy from maps, track connections and emit flow
//! events.
//!
//! - `bpf/manul_tc.c` (compiled by `build.rs` with clang) holds the kernel
//!   programs; `bpf/manul_maps.h` is the one definition of every map key and
//!   value, read by bindgen for the Rust side ([`abi`]).
//! - [`compile`] (no I/O) turns the contract's desired state into rule
//!   tables: bitmaps the kernel ANDs to classify a new flow in a constant
//!   number of lookups; [`space`] keeps each table's address prefixes and
//!   their classes up to date incrementally; [`model`] is the same lookup
//!   in userspace.
//! - A batch is planned without I/O (`batch.rs`: which tables to compile,
//!   then every map write and delete in order, as values) against the
//!   driver's bookkeeping (`ledger.rs`), and carried out through a small
//!   map-writing trait (`write.rs`) by `program.rs`, which also fails closed
//!   after a write that stops part-way. The pinned maps (`maps.rs`)
//!   implement the trait, and so does an in-memory fake in the tests, so
//!   failures, undo and id reuse are tested without root.
//! - `driver/` is [`BpfDriver`]: loading, attaching to interfaces,
//!   counters and `BPF_PROG_TEST_RUN`, conntrack and flow events.
//! - `services` turns the desired services into frontend and backend map
//!   entries (a pure plan, then ordered writes); the programs translate a
//!   pod's connections to a service (TCP, UDP and SCTP, IPv4 and IPv6)
//!   before policy, so policy sees the real endpoints. A sync that would
//!   overflow a service map is refused whole (the previous state stays).
//! - [`resize`] creates a pinned map anew when the configuration gives it
//!   another size (conntrack, the service maps), its entries copied.
//! - `ctlb` is connect-time load balancing (`bpf/manul_ctlb.c`, an object
//!   of its own, loaded only when configured): cgroup programs give sockets
//!   their backend at `connect`/`sendmsg` from the same maps, for pods and
//!   host-networked processes, IPv4 and IPv6 sockets (an IPv6 socket's
//!   IPv4-mapped destination from the IPv4 maps), and socket iterators
//!   destroy the connected sockets of backends that left their lists.
//!
//! It refuses to depend on `felix`: it implements the dataplane contract
//! only, and a policy or service change must never need a program load.

pub mod abi;
mod batch;
pub mod bitmap;
pub mod compile;
pub mod conntrack;
mod ctlb;
mod driver;
mod error;
pub mod events;
pub mod flow_track;
pub mod frames;
mod keys;
mod ledger;
mod loader;
mod maps;
pub mod model;
mod plan;
mod program;
pub mod resize;
pub mod service_backends;
mod services;
pub mod space;
#[cfg(test)]
mod testing;
mod write;

pub use conntrack::{ConntrackEntry, ConntrackTimeouts, GcStats};
pub use ctlb::{CGROUP_MOUNT_POINT, CtlbConfig, CtlbCounters, cgroup2_mount};
pub use driver::{
    BpfConfig, BpfDriver, ExternalServiceMode, HOST_SERVICE_DEVICE, HOST_SERVICE_MAC,
    HOST_SERVICE_PEER, KernelCounters, LoadedPrograms, MAX_MAP_SIZE, ServiceMapSizes, SkbMeta,
    TestRunOutcome, check_map_size,
};
pub use error::BpfError;
pub use events::{FlowCounters, FlowLogInterval, PolicyCounts};
pub use loader::Hook;
