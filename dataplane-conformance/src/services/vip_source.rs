//! Host processes whose source is a frontend address assigned on the node
//! (a load-balancer VIP or an external IP, as with a VIP-like load
//! balancer: a process bound to it, or a route that picks it as source).
//! Such a process reaches a ClusterIP (backends on this node) and a pod
//! directly, over TCP and UDP; the replies are addressed to the frontend
//! address, and must reach the process as the replies they are (kube-proxy
//! gets this from conntrack, which finds the reply before any DNAT): for
//! a VIP whose service has source ranges (the node's address in them or
//! not) and for one without, and for an external IP. A new connection to
//! the same addresses must still be translated and source-range-checked:
//! a pod (also the one the host reached from the VIPs) is dropped at the
//! ranged VIP, translated at the open one, and so is the external client.
//!
//! The IPv4 half runs in [`super::run_service_cases`] (its `vip-in` and
//! `vip-out` services and [`vip_open_service`]), the IPv6 half in
//! [`super::run_dual_stack_cases`] ([`vip6_services`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use manul_dataplane_api::{Backend, Service, ServicePort};
use manul_netns::{IpNet, add_address, list_addresses};

use super::{
    DUAL_IP6, EXTERNAL_IP6, NAMESPACE, NODE_EXT_IF, Net, Outcome, SERVICE_PORT, SILENCE,
    ServiceReport, TCP_PORT, UDP_IP6, UDP_PORT, VIP_IN_IP, VIP_OUT_IP, WAIT, WEB_IP, ask_tcp,
    ask_tcp_from, ask_udp_from, pod_ip, pod_ip6, setup,
};
use crate::ConformanceError;

/// The `vip-open` service's load-balancer IP (no source ranges) and
/// external IP, both assigned on the node in the cases.
pub const VIP_OPEN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
pub const VIP_OPEN_EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 14);
/// The `vip-open` service's ClusterIP.
pub const VIP_OPEN_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 19);
/// IPv6 load-balancer IPs assigned on the node: `vip6-ranged`'s (its
/// ranges hold only [`EXTERNAL_IP6`]) and `vip6-open`'s (none).
pub const VIP6_RANGED_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x51, 0, 0, 0, 0, 0x41);
pub const VIP6_OPEN_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x51, 0, 0, 0, 0, 0x42);
/// Their ClusterIPs.
pub const VIP6_RANGED_CLUSTER_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x44);
pub const VIP6_OPEN_CLUSTER_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x45);

/// A service of `web-b` (TCP, [`SERVICE_PORT`] to [`TCP_PORT`]) with one
/// ClusterIP.
fn web_b(name: &str, cluster_ip: IpAddr) -> Service {
    let ip = match cluster_ip {
        IpAddr::V4(_) => IpAddr::V4(pod_ip("web-b")),
        IpAddr::V6(_) => IpAddr::V6(pod_ip6("web-b")),
    };
    let backends = vec![Backend {
        ip,
        port: TCP_PORT,
        local: true,
        ready: true,
    }];
    let port = ServicePort {
        name: "http".into(),
        protocol: 6,
        port: SERVICE_PORT,
        node_port: None,
        local_backends: backends.clone(),
        backends,
    };
    Service::cluster_ip(NAMESPACE, name, vec![cluster_ip], vec![port])
}

/// `vip-open`: a load-balancer IP without source ranges and an external
/// IP.
pub fn vip_open_service() -> Service {
    let mut s = web_b("vip-open", IpAddr::V4(VIP_OPEN_CLUSTER_IP));
    s.load_balancer_ips = vec![IpAddr::V4(VIP_OPEN_IP)];
    s.external_ips = vec![IpAddr::V4(VIP_OPEN_EXT_IP)];
    s
}

/// `vip6-ranged` (source ranges: [`EXTERNAL_IP6`] only) and `vip6-open`
/// (none).
pub fn vip6_services() -> Vec<Service> {
    let mut ranged = web_b("vip6-ranged", IpAddr::V6(VIP6_RANGED_CLUSTER_IP));
    ranged.load_balancer_ips = vec![IpAddr::V6(VIP6_RANGED_IP)];
    ranged.load_balancer_source_ranges = vec![IpNet::from(IpAddr::V6(EXTERNAL_IP6))];
    let mut open = web_b("vip6-open", IpAddr::V6(VIP6_OPEN_CLUSTER_IP));
    open.load_balancer_ips = vec![IpAddr::V6(VIP6_OPEN_IP)];
    vec![ranged, open]
}

/// One family's case: the VIPs used as sources (a name for each), the
/// services and pod they reach, and the ranged and open VIPs new
/// connections are tried at.
struct Family {
    name: &'static str,
    vips: Vec<(&'static str, IpAddr)>,
    /// A ClusterIP's TCP and UDP frontends and the backends of each.
    tcp: SocketAddr,
    tcp_backends: Vec<IpAddr>,
    udp: SocketAddr,
    udp_backends: Vec<IpAddr>,
    /// The pod reached directly.
    pod: IpAddr,
    ranged: IpAddr,
    open: IpAddr,
    open_backend: IpAddr,
}

/// The IPv4 half: the VIPs of `vip-in` (the node's address in its
/// ranges), `vip-out` (not) and `vip-open` (no ranges), and `vip-open`'s
/// external IP.
pub(super) fn run_v4(net: &Net, report: &mut ServiceReport) -> Result<(), ConformanceError> {
    let three = ["web-a", "web-b", "web-c"].map(|n| IpAddr::V4(pod_ip(n)));
    run(
        net,
        report,
        &Family {
            name: "IPv4",
            vips: vec![
                ("vip-in", IpAddr::V4(VIP_IN_IP)),
                ("vip-out", IpAddr::V4(VIP_OUT_IP)),
                ("vip-open", IpAddr::V4(VIP_OPEN_IP)),
                ("external IP", IpAddr::V4(VIP_OPEN_EXT_IP)),
            ],
            tcp: SocketAddr::new(IpAddr::V4(WEB_IP), SERVICE_PORT),
            tcp_backends: three.to_vec(),
            udp: SocketAddr::new(IpAddr::V4(WEB_IP), SERVICE_PORT),
            udp_backends: three.to_vec(),
            pod: IpAddr::V4(pod_ip("web-a")),
            ranged: IpAddr::V4(VIP_OUT_IP),
            open: IpAddr::V4(VIP_OPEN_IP),
            open_backend: IpAddr::V4(pod_ip("web-b")),
        },
    )
}

/// The IPv6 half: the VIPs of `vip6-ranged` and `vip6-open`.
pub(super) fn run_v6(net: &Net, report: &mut ServiceReport) -> Result<(), ConformanceError> {
    let web_b = IpAddr::V6(pod_ip6("web-b"));
    run(
        net,
        report,
        &Family {
            name: "IPv6",
            vips: vec![
                ("vip6-ranged", IpAddr::V6(VIP6_RANGED_IP)),
                ("vip6-open", IpAddr::V6(VIP6_OPEN_IP)),
            ],
            tcp: SocketAddr::new(IpAddr::V6(DUAL_IP6), SERVICE_PORT),
            tcp_backends: vec![IpAddr::V6(pod_ip6("web-a")), web_b],
            udp: SocketAddr::new(IpAddr::V6(UDP_IP6), SERVICE_PORT),
            udp_backends: vec![web_b],
            pod: IpAddr::V6(pod_ip6("web-a")),
            ranged: IpAddr::V6(VIP6_RANGED_IP),
            open: IpAddr::V6(VIP6_OPEN_IP),
            open_backend: web_b,
        },
    )
}

fn run(net: &Net, report: &mut ServiceReport, f: &Family) -> Result<(), ConformanceError> {
    // Some are there already (an earlier case assigned them).
    let there = list_addresses(&net.node, NODE_EXT_IF).map_err(setup("node addresses"))?;
    for (_, vip) in &f.vips {
        let vip = IpNet::from(*vip);
        if !there.contains(&vip) {
            add_address(&net.node, NODE_EXT_IF, vip).map_err(setup("VIP on the node"))?;
        }
    }
    let family = f.name;
    for (name, vip) in &f.vips {
        let from = Some(*vip);
        let tcp = ask_tcp_from(&net.node, from, f.tcp, WAIT)?;
        report.check(
            &format!("{family} {name} as source: cluster IP, tcp"),
            tcp.answer().is_some_and(|a| {
                f.tcp_backends.contains(&a.backend.ip()) && a.backend.port() == TCP_PORT
            }),
            format!("{tcp:?}"),
        );
        let udp = ask_udp_from(&net.node, from, f.udp, WAIT)?;
        report.check(
            &format!("{family} {name} as source: cluster IP, udp"),
            udp.answer().is_some_and(|a| {
                f.udp_backends.contains(&a.backend.ip()) && a.backend.port() == UDP_PORT
            }),
            format!("{udp:?}"),
        );
        let direct = ask_tcp_from(&net.node, from, SocketAddr::new(f.pod, TCP_PORT), WAIT)?;
        report.check(
            &format!("{family} {name} as source: a pod, tcp"),
            direct
                .answer()
                .is_some_and(|a| a.backend == SocketAddr::new(f.pod, TCP_PORT) && a.peer == *vip),
            format!("{direct:?}"),
        );
        let direct = ask_udp_from(&net.node, from, SocketAddr::new(f.pod, UDP_PORT), WAIT)?;
        report.check(
            &format!("{family} {name} as source: a pod, udp"),
            direct
                .answer()
                .is_some_and(|a| a.backend == SocketAddr::new(f.pod, UDP_PORT) && a.peer == *vip),
            format!("{direct:?}"),
        );
    }
    // New connections to the same addresses: translated and
    // source-range-checked as before.
    // `web-a` too, whose interface tracks the host's connections from the
    // VIPs: their entries are no way in.
    let client = net.pod("client")?;
    for name in ["client", "web-a"] {
        let dropped = ask_tcp(
            net.pod(name)?,
            SocketAddr::new(f.ranged, SERVICE_PORT),
            SILENCE,
        )?;
        report.check(
            &format!("{family} VIP as source, then {name} to a ranged VIP: dropped"),
            dropped == Outcome::Silent,
            format!("{dropped:?}"),
        );
    }
    // (A dataplane may masquerade either: kube-proxy does.)
    for (who, ns) in [("a pod", client), ("the external client", &net.external)] {
        let open = ask_tcp(ns, SocketAddr::new(f.open, SERVICE_PORT), WAIT)?;
        report.check(
            &format!("{family} VIP as source, then {who} to an open VIP: translated"),
            open.answer()
                .is_some_and(|a| a.backend == SocketAddr::new(f.open_backend, TCP_PORT)),
            format!("{open:?}"),
        );
    }
    Ok(())
}
