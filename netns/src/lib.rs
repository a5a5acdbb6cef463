//! Network-namespace topologies for Manul's kernel dataplane tests, the CNI
//! plugin and a local cluster.
//!
//! What it does:
//!
//! - [`NetNs`] creates, opens and deletes named network namespaces the way
//!   `ip netns add`/`del` do (a bind mount of the namespace file on
//!   `/run/netns/NAME`), runs code inside one ([`NetNs::run`],
//!   [`NetNs::enter_current_thread`]) and writes its sysctls.
//! - Links, addresses and routes ([`create_veth`], [`add_address`],
//!   [`add_route`], [`create_bridge`], ...) over rtnetlink, and the
//!   Calico-style pod plumbing ([`plumb_pod`], dual stack with
//!   [`plumb_pod_ips`]), and a dataplane's own device with its
//!   host routes ([`create_device_veth`], [`sync_device_routes`], one
//!   netlink session for any number of routes), and which namespaces sit
//!   at the far end of a namespace's veths ([`link_peer_namespaces`]).
//! - Probes run from inside a namespace with a timeout ([`tcp_connect`],
//!   [`udp_probe`], [`ping`]) and small servers listening inside one
//!   ([`TcpServer`], [`UdpEcho`]).
//!
//! What it refuses to do:
//!
//! - It never touches the root namespace's real interfaces, addresses or
//!   routes: every function takes the namespace(s) it acts in explicitly,
//!   and the netlink socket of every operation is opened on a thread that
//!   entered that namespace first. The only host state it changes is files
//!   under `/run/netns`.
//! - It never shells out (no `ip`, no `ping`, no `sysctl`).
//! - [`cleanup_prefix`] refuses an empty prefix (it would delete every
//!   named namespace on the host), and names with `/` or `..` are rejected
//!   everywhere.
//!
//! Sockets created on a thread inside a namespace stay bound to that
//! namespace, so the servers here are served from ordinary threads.

mod device;
mod error;
mod held;
mod link;
mod ns;
mod nsid;
mod peer;
mod pod;
mod probe;
mod spoof;
pub mod testing;

pub use device::{create_device_veth, link_index_mac, sync_device_routes};
pub use error::{NetnsError, Result};
pub use held::{HeldAnswer, HeldUdp, open_udp};
pub use ipnet::IpNet;
pub use link::{
    Route, RouteInfo, RouteKind, add_address, add_neighbour, add_route, create_bridge, create_veth,
    create_wireguard, delete_link, delete_route, interface_with_address, link_exists, link_index,
    link_mac, link_mtu, link_up, list_addresses, list_routes, replace_route, set_mac, set_master,
    set_mtu,
};
pub use ns::{NETNS_RUN_DIR, NetNs, cleanup_prefix, unique_prefix};
pub use nsid::link_peer_namespaces;
pub use peer::{PEER_QUERY, PeerProbe, tcp_peer};
pub use pod::{
    CALICO_GATEWAY_V4, CALICO_GATEWAY_V6, CALICO_HOST_MAC, PodLink, plumb_pod, plumb_pod_ips,
    unplumb_pod,
};
pub use probe::{
    HeldConnection, ProbeOutcome, TCP_BANNER, TcpServer, UdpEcho, open_connection, ping,
    tcp_connect, udp_probe,
};
pub use spoof::spoofed_udp_arrives;
