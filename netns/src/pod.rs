//! Calico-style pod plumbing: a veth pair between a node namespace and a
//! pod namespace, the pod routed through a link-local gateway that the host
//! side answers for by proxy ARP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{NetnsError, Result};
use crate::link::{
    Route, add_address, add_neighbour, create_veth, delete_link, link_index, link_mac, link_up,
    replace_route, set_mac,
};
use crate::ns::NetNs;

/// The gateway every Calico pod routes through (`169.254.1.1`), answered
/// for by the host side of its veth with proxy ARP.
pub const CALICO_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The MAC address Calico gives the host side of every pod veth.
pub const CALICO_HOST_MAC: [u8; 6] = [0xee; 6];

/// The IPv6 gateway of every Calico pod: the host side's link-local
/// address, derived from [`CALICO_HOST_MAC`].
pub const CALICO_GATEWAY_V6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// What [`plumb_pod`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLink {
    /// The host side's name, in the node namespace.
    pub host_if: String,
    /// The host side's index, in the node namespace.
    pub host_ifindex: u32,
    /// The host side's MAC ([`CALICO_HOST_MAC`]).
    pub host_mac: [u8; 6],
    /// The pod side's name, in the pod namespace.
    pub pod_if: String,
    /// The pod side's index, in the pod namespace.
    pub pod_ifindex: u32,
    /// The pod side's MAC.
    pub pod_mac: [u8; 6],
    /// The pod's first address.
    pub ip: IpAddr,
    /// All the pod's addresses, in the order given.
    pub ips: Vec<IpAddr>,
}

/// Plumbs `pod` into `node` the way Calico's CNI plugin does, for one
/// IPv4 address:
///
/// - a veth pair `host_if` (in `node`) / `pod_if` (in `pod`);
/// - pod side: `ip/32`, up, `169.254.1.1 dev POD_IF scope link`,
///   `default via 169.254.1.1 dev POD_IF`, and a permanent neighbour entry
///   `169.254.1.1 lladdr ee:ee:ee:ee:ee:ee`;
/// - host side: MAC `ee:ee:ee:ee:ee:ee`, `proxy_arp=1`,
///   `neigh.HOST_IF.proxy_delay=0`, up, and `ip/32 dev HOST_IF` in `node`;
/// - `node`: `net.ipv4.ip_forward=1`.
///
/// The static neighbour entry is the one departure from Calico's CNI
/// plugin: the kernel answers by proxy ARP only for a target it has a route
/// to through another interface, and a bare node namespace (unlike a real
/// host) has no default route, so `169.254.1.1` would stay unresolved.
/// Proxy ARP stays on for anything else the pod asks about.
///
/// On failure the pair is deleted again.
pub fn plumb_pod(
    node: &NetNs,
    pod: &NetNs,
    host_if: &str,
    pod_if: &str,
    ip: Ipv4Addr,
) -> Result<PodLink> {
    plumb_pod_ips(node, pod, host_if, pod_if, &[IpAddr::V4(ip)])
}

/// [`plumb_pod`] for any mix of IPv4 and IPv6 addresses (dual stack).
///
/// For each IPv6 address: the pod gets `ip/128` and `default via
/// fe80::ecee:eeff:feee:eeee dev POD_IF` (the host side's link-local
/// address, from its MAC) with a permanent neighbour entry for it; the node
/// gets `ip/128 dev HOST_IF` and `net.ipv6.conf.all.forwarding=1`.
/// Duplicate address detection is off on both ends so that addresses are
/// usable at once.
pub fn plumb_pod_ips(
    node: &NetNs,
    pod: &NetNs,
    host_if: &str,
    pod_if: &str,
    ips: &[IpAddr],
) -> Result<PodLink> {
    if ips.is_empty() {
        return Err(NetnsError::InvalidArgument {
            ns: pod.name().to_owned(),
            reason: format!("pod plumbing {host_if}/{pod_if} needs at least one address"),
        });
    }
    create_veth(node, host_if, pod, pod_if)?;
    match plumb_created(node, pod, host_if, pod_if, ips) {
        Ok(link) => Ok(link),
        Err(e) => {
            if let Err(cleanup) = delete_link(node, host_if) {
                tracing::warn!(netns = node.name(), ifname = host_if, error = %cleanup,
                    "could not delete a half-plumbed pod veth");
            }
            Err(e)
        }
    }
}

fn plumb_created(
    node: &NetNs,
    pod: &NetNs,
    host_if: &str,
    pod_if: &str,
    ips: &[IpAddr],
) -> Result<PodLink> {
    let has_v4 = ips.iter().any(IpAddr::is_ipv4);
    let has_v6 = ips.iter().any(IpAddr::is_ipv6);

    // Before the links come up, so that link-local addresses skip DAD.
    if has_v6 {
        pod.set_sysctl(
            &sysctl_key(pod, "net/ipv6/conf", pod_if, "accept_dad")?,
            "0",
        )?;
        node.set_sysctl(
            &sysctl_key(node, "net/ipv6/conf", host_if, "accept_dad")?,
            "0",
        )?;
    }
    set_mac(node, host_if, CALICO_HOST_MAC)?;

    // Pod side.
    for ip in ips {
        add_address(pod, pod_if, IpNet::from(*ip))?;
    }
    link_up(pod, pod_if)?;
    if has_v4 {
        let gateway32 = IpNet::V4(Ipv4Net::from(CALICO_GATEWAY_V4));
        replace_route(pod, &Route::to(gateway32).dev(pod_if).scope_link())?;
        replace_route(
            pod,
            &Route::to(IpNet::V4(Ipv4Net::default()))
                .via(IpAddr::V4(CALICO_GATEWAY_V4))
                .dev(pod_if),
        )?;
        add_neighbour(pod, pod_if, IpAddr::V4(CALICO_GATEWAY_V4), CALICO_HOST_MAC)?;
    }
    if has_v6 {
        replace_route(
            pod,
            &Route::to(IpNet::V6(Ipv6Net::default()))
                .via(IpAddr::V6(CALICO_GATEWAY_V6))
                .dev(pod_if),
        )?;
        add_neighbour(pod, pod_if, IpAddr::V6(CALICO_GATEWAY_V6), CALICO_HOST_MAC)?;
    }

    // Host side.
    if has_v4 {
        node.set_sysctl(
            &sysctl_key(node, "net/ipv4/conf", host_if, "proxy_arp")?,
            "1",
        )?;
        node.set_sysctl(
            &sysctl_key(node, "net/ipv4/neigh", host_if, "proxy_delay")?,
            "0",
        )?;
        node.set_sysctl("net.ipv4.ip_forward", "1")?;
    }
    if has_v6 {
        node.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
    }
    link_up(node, host_if)?;
    for ip in ips {
        replace_route(node, &Route::to(IpNet::from(*ip)).dev(host_if).scope_link())?;
    }

    Ok(PodLink {
        host_if: host_if.to_owned(),
        host_ifindex: link_index(node, host_if)?,
        host_mac: link_mac(node, host_if)?,
        pod_if: pod_if.to_owned(),
        pod_ifindex: link_index(pod, pod_if)?,
        pod_mac: link_mac(pod, pod_if)?,
        ip: ips[0],
        ips: ips.to_vec(),
    })
}

/// Removes what [`plumb_pod`] made, from the node side: deleting the host
/// veth deletes the pod side and every route through it. An absent
/// interface is fine (idempotent).
pub fn unplumb_pod(node: &NetNs, host_if: &str) -> Result<()> {
    match delete_link(node, host_if) {
        Ok(()) | Err(NetnsError::LinkNotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A per-interface sysctl key in slash form, so that interface names with
/// dots stay whole.
fn sysctl_key(ns: &NetNs, prefix: &str, ifname: &str, leaf: &str) -> Result<String> {
    if ifname.is_empty() || ifname.contains('/') {
        return Err(NetnsError::InvalidArgument {
            ns: ns.name().to_owned(),
            reason: format!("bad interface name {ifname:?}"),
        });
    }
    Ok(format!("{prefix}/{ifname}/{leaf}"))
}
