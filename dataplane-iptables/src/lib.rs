//! The iptables dataplane: Linux netfilter, programmed through nftables.
//!
//! It renders per-endpoint, per-tier, per-policy and per-profile chains,
//! dispatch maps and IP sets into one table, `inet manul`, and writes them
//! as one atomic transaction per batch, holding only what changed (or the
//! whole table): one nf_tables netlink batch sent from this process, the
//! table's structure compiled by `nft --check` (`compiled.rs`) and the
//! set and map elements, rendered as data (`element.rs`), encoded here
//! without a text round trip (`elements.rs`, `full_write.rs`), sent on
//! one netlink socket kept open (`netlink.rs`), or `nft -f` where that
//! writer does not apply. A batch
//! that changes only services renders only those services, and when what
//! changed is set and map elements alone (a backend moved, a service
//! added or removed) it is element messages alone: `nft` would list the
//! table before writing anything. A periodic
//! [`NftDriver::refresh`] reads the table back and rewrites it if someone
//! else changed it.
//!
//! Why nftables rather than `iptables-restore` + `ipset restore`: one
//! transaction covers sets and rules together (no window where a rule names
//! a set not yet written), the table is ours alone (other software's tables
//! are never read or flushed), dispatch is a verdict map lookup instead of
//! a chain of interface matches, and interval sets hold CIDRs and
//! concatenated sets hold named ports natively. The `iptables` command on
//! current distributions is itself a front end to the same nf_tables
//! kernel API.
//!
//! Semantics are those of `manul_dataplane_api::verdict`, plus connection
//! tracking: established and related packets are accepted before any
//! policy, so policy applies to new flows.
//!
//! Host endpoints get Calico's host protection (`render/host.rs`): normal
//! policy on traffic to and from the host, `applyOnForward` policy on
//! traffic forwarded through the interface, untracked (`doNotTrack`)
//! policy at raw priority before connection tracking, pre-DNAT policy on
//! ingress just before destination NAT, failsafe ports first everywhere,
//! and an all-interfaces endpoint (`*`) for every interface no named one
//! covers.
//!
//! Services replace kube-proxy (`render/services.rs`) with its
//! nftables-mode semantics: verdict maps by address, protocol and port
//! and by node port, masquerade where kube-proxy masquerades, the `Local`
//! traffic policies, immediate rejection of ports without backends,
//! load-balancer source ranges and session affinity through sets with a
//! timeout. Backends are data (`render/service_pick.rs`): maps from a
//! frontend and a random index to a backend, read by pick chains shared
//! by every service port with as many backends; only a service with
//! session affinity gets kube-proxy's chain per service port and per
//! backend. Policy runs after DNAT, on the real endpoints. Balancing is
//! random (Maglev is not implemented here). After a change of the
//! services, the UDP conntrack entries of backends that went away are
//! deleted, as kube-proxy deletes them (`stale_udp`); TCP connections keep
//! their backend, as with kube-proxy.
//!
//! It refuses to depend on `felix`, to flush or read tables it does not
//! own, and to act outside the calling thread's network namespace. A host
//! endpoint without an interface name (matched by `expectedIPs` alone) is
//! not rendered, nor is untracked policy on the all-interfaces endpoint
//! (Calico ignores it too).

pub mod compiled;
pub mod driver;
pub mod element;
pub mod elements;
pub mod flows;
pub mod full_write;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod render;
pub mod script;
pub mod stale_udp;

pub use driver::{NftDriver, NftStats, Phases, Refresh, WriteTiming};
pub use flows::{FlowLog, FrontendSource};
pub use nft::{Nft, NftError};
pub use render::{EndpointToHost, Failsafe, NftConfig};
