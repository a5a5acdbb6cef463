//! Connect-time load balancing of IPv6 sockets, with real sockets: a node
//! namespace (not the root one) with an address of its own and no IPv6
//! route to the service range, so a host process reaches an IPv6 service
//! only if its socket was translated, and dual-stack pods. Run by
//! `connect_time_load_balancing` inside the test's own cgroup.
//!
//! Checked: a host process and a pod reach an IPv6 ClusterIP over TCP
//! (`getpeername` answers with the service) and over unconnected UDP
//! (`recvfrom` answers with the service), an external IP, and a node
//! port on the node's own IPv6 address; session affinity keeps a
//! namespace on one backend (a service without it reaches both); a
//! service without backends and a ClusterIP's unknown port are refused at
//! once (TCP and UDP); a
//! connected UDP socket (a host process's and a pod's) and a TCP
//! connection whose backend leaves get an error on their next use, and
//! connecting again reaches the new backend.

use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{Backend, Balancing, Operation, Service, ServicePort, TrafficPolicy};
use manul_dataplane_bpf::CtlbConfig;
use manul_dataplane_conformance::driver_thread::DriverThread;
use manul_netns::NetNs;

use crate::node::{DualNode, DualPod};
use crate::rules::{self, allow_profile};
use crate::{HOLD_TCP, Servers, WHO_TCP, WHO_UDP, any_of, ask, connected_udp, who_tcp, who_udp};

/// The service addresses: `dns` (moves), `sticky` (affinity), `spread`
/// (the same backends without affinity), `empty` (no backends).
const DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x35);
const STICKY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x36);
const SPREAD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x37);
const EMPTY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x38);
/// An external IP of `dns`.
const EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x97, 0, 0, 0, 0, 0, 0x35);
/// The node namespace's own IPv6 address (on `lo`).
const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x66, 0xff, 0, 0, 0, 0, 1);
const DNS_PORT: u16 = 53;
const HOLD_PORT: u16 = 80;
const WEB_PORT: u16 = 80;
const NODE_PORT: u16 = 30053;

/// The node, with an IPv6 address of its own, and its dual-stack pods.
fn build() -> DualNode {
    let mut net = DualNode::new("c6");
    manul_netns::add_address(&net.node, "lo", IpNet::from(IpAddr::V6(NODE_IP6)))
        .expect("node address");
    for (n, name) in (2u8..).zip(["web-a", "web-b", "client"]) {
        let ip4 = Ipv4Addr::new(10, 66, 1, n);
        let ip6 = Ipv6Addr::new(0xfd00, 0x66, 0, 0, 0, 0, 0, u16::from(n));
        // The driver's workload prefix, `mnl`.
        let interface = format!("mnl6{name}");
        net.add_pod(name, &interface, &[IpAddr::V4(ip4), IpAddr::V6(ip6)]);
    }
    net
}

fn endpoint(pod: &DualPod) -> Operation {
    rules::endpoint("ns6", &pod.name, &pod.interface, &pod.ips, false)
}

/// A port of a service: (name, protocol, port, target, node port).
type PortSpec = (&'static str, u8, u16, u16, Option<u16>);

fn service6(
    name: &str,
    ip: Ipv6Addr,
    backends: &[Ipv6Addr],
    affinity: Option<u32>,
    ports: &[PortSpec],
) -> Service {
    Service {
        namespace: "ns6".into(),
        name: name.into(),
        cluster_ips: vec![IpAddr::V6(ip)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Cluster,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: affinity,
        health_check_node_port: None,
        balancing: Balancing::Random,
        ports: ports
            .iter()
            .map(|&(name, protocol, port, target, node_port)| {
                let backends: Vec<Backend> = backends
                    .iter()
                    .map(|ip| Backend {
                        ip: IpAddr::V6(*ip),
                        port: target,
                        local: true,
                        ready: true,
                    })
                    .collect();
                ServicePort {
                    name: name.into(),
                    protocol,
                    port,
                    node_port,
                    local_backends: backends.clone(),
                    backends,
                }
            })
            .collect(),
    }
}

/// `dns` on `backend`: DNS over UDP and TCP (the TCP port also a node
/// port) and a port that holds TCP connections.
fn dns_service(backend: Ipv6Addr) -> Service {
    let mut dns = service6(
        "dns",
        DNS6,
        &[backend],
        None,
        &[
            ("dns", 17, DNS_PORT, WHO_UDP, None),
            ("dns-tcp", 6, DNS_PORT, WHO_TCP, Some(NODE_PORT)),
            ("hold", 6, HOLD_PORT, HOLD_TCP, None),
        ],
    );
    dns.external_ips = vec![IpAddr::V6(EXTERNAL6)];
    dns
}

fn services(net: &DualNode) -> Vec<Service> {
    let both = [net.pod("web-a").v6(), net.pod("web-b").v6()];
    let web: &[PortSpec] = &[("web", 6, WEB_PORT, WHO_TCP, None)];
    vec![
        dns_service(net.pod("web-a").v6()),
        service6("sticky", STICKY6, &both, Some(600), web),
        service6("spread", SPREAD6, &both, None, web),
        service6(
            "empty",
            EMPTY6,
            &[],
            None,
            &[
                ("web", 6, WEB_PORT, WHO_TCP, None),
                ("dns", 17, DNS_PORT, WHO_UDP, None),
            ],
        ),
    ]
}

/// How a TCP connect and a UDP connect and send from `ns` to `dst` end,
/// and how long the slower took.
fn refused(ns: &NetNs, tcp: SocketAddr, udp: SocketAddr) -> (ErrorKind, ErrorKind, Duration) {
    ns.run(move || {
        let started = Instant::now();
        let t = TcpStream::connect_timeout(&tcp, Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.kind());
        let s = UdpSocket::bind(any_of(udp)).unwrap();
        let u = s.connect(udp).and_then(|()| s.send(b"who").map(|_| ()));
        let u = u.map_err(|e| e.kind());
        (
            t.err().unwrap_or(ErrorKind::Other),
            u.err().unwrap_or(ErrorKind::Other),
            started.elapsed(),
        )
    })
    .unwrap()
}

fn reach(net: &DualNode) {
    let (a, client) = (net.pod("web-a"), net.pod("client"));
    let a_ip = IpAddr::V6(a.v6());
    let dns = SocketAddr::new(IpAddr::V6(DNS6), DNS_PORT);
    for (who, ns) in [("host process", &net.node), ("pod", &client.netns)] {
        assert_eq!(
            who_tcp(ns, dns),
            (dns, a_ip),
            "{who}: TCP to the IPv6 ClusterIP; getpeername answers with it"
        );
        assert_eq!(
            who_udp(ns, dns),
            (dns, a_ip),
            "{who}: a datagram's answer comes from the IPv6 service"
        );
    }
    let external = SocketAddr::new(IpAddr::V6(EXTERNAL6), DNS_PORT);
    assert_eq!(
        who_tcp(&net.node, external),
        (external, a_ip),
        "host process: an IPv6 external IP"
    );
    let node_port = SocketAddr::new(IpAddr::V6(NODE_IP6), NODE_PORT);
    assert_eq!(
        who_tcp(&net.node, node_port),
        (node_port, a_ip),
        "host process: the node port on the node's own IPv6 address"
    );
}

fn affinity(net: &DualNode) {
    let backends = [
        IpAddr::V6(net.pod("web-a").v6()),
        IpAddr::V6(net.pod("web-b").v6()),
    ];
    let sticky = SocketAddr::new(IpAddr::V6(STICKY6), WEB_PORT);
    let spread = SocketAddr::new(IpAddr::V6(SPREAD6), WEB_PORT);
    for (who, ns) in [
        ("host process", &net.node),
        ("pod", &net.pod("client").netns),
    ] {
        let seen: std::collections::BTreeSet<IpAddr> =
            (0..12).map(|_| who_tcp(ns, sticky).1).collect();
        assert_eq!(seen.len(), 1, "{who}: affinity keeps one backend: {seen:?}");
        assert!(backends.iter().any(|b| seen.contains(b)), "{who}: {seen:?}");
        let seen: std::collections::BTreeSet<IpAddr> =
            (0..30).map(|_| who_tcp(ns, spread).1).collect();
        assert_eq!(
            seen,
            backends.into_iter().collect(),
            "{who}: without affinity both backends answer"
        );
    }
}

fn refusals(net: &DualNode) {
    let empty_tcp = SocketAddr::new(IpAddr::V6(EMPTY6), WEB_PORT);
    let empty_udp = SocketAddr::new(IpAddr::V6(EMPTY6), DNS_PORT);
    // A port the ClusterIP does not have.
    let unknown = SocketAddr::new(IpAddr::V6(DNS6), 81);
    for (who, ns) in [
        ("host process", &net.node),
        ("pod", &net.pod("client").netns),
    ] {
        for (what, tcp, udp) in [
            ("no backends", empty_tcp, empty_udp),
            ("unknown port", unknown, unknown),
        ] {
            let (t, u, took) = refused(ns, tcp, udp);
            assert_eq!(
                (t, u),
                (ErrorKind::ConnectionRefused, ErrorKind::ConnectionRefused),
                "{who}, {what}: TCP and UDP refused"
            );
            assert!(
                took < Duration::from_millis(500),
                "{who}, {what}: refused at once, took {took:?}"
            );
        }
    }
}

/// The sockets connected before the backend moves.
struct Before {
    host_udp: UdpSocket,
    pod_udp: UdpSocket,
    host_tcp: TcpStream,
    pod_tcp: TcpStream,
}

fn dns_moves(net: &DualNode, driver: &DriverThread) {
    let (a, b, client) = (net.pod("web-a"), net.pod("web-b"), net.pod("client"));
    let dns = SocketAddr::new(IpAddr::V6(DNS6), DNS_PORT);
    let hold = SocketAddr::new(IpAddr::V6(DNS6), HOLD_PORT);
    let held = |ns: &NetNs| {
        let c = ns
            .run(move || TcpStream::connect_timeout(&hold, Duration::from_secs(1)).unwrap())
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c
    };
    let before = Before {
        host_udp: connected_udp(&net.node, dns),
        pod_udp: connected_udp(&client.netns, dns),
        host_tcp: held(&net.node),
        pod_tcp: held(&client.netns),
    };
    for (who, s) in [("host", &before.host_udp), ("pod", &before.pod_udp)] {
        assert_eq!(ask(s), Ok(IpAddr::V6(a.v6())), "{who}: connected UDP");
        assert_eq!(s.peer_addr().unwrap(), dns, "{who}: getpeername");
    }
    for (who, s) in [("host", &before.host_tcp), ("pod", &before.pod_tcp)] {
        assert_eq!(s.peer_addr().unwrap(), hold, "{who}: getpeername");
    }

    // The DNS server moves: web-a (still running) leaves the list.
    let mut moved = services(net);
    moved[0] = dns_service(b.v6());
    driver
        .apply(moved.into_iter().map(Operation::ServiceUpdate).collect())
        .expect("move the backend");

    for (who, s) in [("host", &before.host_udp), ("pod", &before.pod_udp)] {
        // Destroyed: the next use fails at once (not a timeout, not the
        // old backend's answer).
        let first = ask(s);
        assert!(
            first.is_err() && !matches!(first, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "{who}: the stuck IPv6 socket's next use fails at once, got {first:?}"
        );
        s.connect(dns).unwrap();
        let mut again = ask(s);
        if again.is_err() {
            again = ask(s);
        }
        assert_eq!(
            again,
            Ok(IpAddr::V6(b.v6())),
            "{who}: after connecting again"
        );
    }
    for (who, s) in [("host", &before.host_tcp), ("pod", &before.pod_tcp)] {
        let mut buf = [0u8; 8];
        let mut tcp = s;
        let read = tcp.read(&mut buf);
        assert!(
            matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionAborted || e.kind() == ErrorKind::ConnectionReset),
            "{who}: the TCP connection to the old backend is aborted, got {read:?}"
        );
    }
    // New connections reach the new backend.
    assert_eq!(who_tcp(&net.node, dns), (dns, IpAddr::V6(b.v6())));
}

/// The IPv6 scenario with connect-time load balancing `ctlb`, in
/// namespaces of its own; everything removed at the end, also on failure.
pub fn ipv6_services(ctlb: &CtlbConfig) {
    let net = build();
    let servers: Vec<Servers> = net
        .pods
        .iter()
        .filter(|p| p.name != "client")
        .map(|p| Servers::start_at(&p.netns, IpAddr::V6(p.v6())))
        .collect();
    let config = ctlb.clone();
    let driver = net.driver(move |c| c.connect_time_lb = Some(config.clone()));
    let mut ops = vec![allow_profile()];
    ops.extend(net.pods.iter().map(endpoint));
    ops.extend(services(&net).into_iter().map(Operation::ServiceUpdate));
    ops.push(Operation::InSync);
    driver.apply(ops).expect("program");
    reach(&net);
    affinity(&net);
    refusals(&net);
    dns_moves(&net, &driver);
    drop(driver);
    drop(servers);
    drop(net);
}
