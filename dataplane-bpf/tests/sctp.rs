#![allow(clippy::expect_used, clippy::unwrap_used)]

//! SCTP services on the eBPF dataplane with real packets, over IPv4 and
//! IPv6: dual-stack pods in network namespaces behind veths to a node
//! namespace, ClusterIPs translated by the programs at the pods'
//! interfaces. The kernel needs no SCTP stack: the client and the backends
//! speak SCTP over raw sockets (an INIT with its CRC32c, and the backend's
//! answer to it), so every packet is checked as it arrives: which backend
//! got it, at which port, from which client, whether its CRC32c still
//! holds, and that the answer comes back from the ClusterIP.
//!
//! Checked: one service with TCP, UDP and SCTP on the same port, each
//! protocol reaching the backends over both families; every backend
//! reached over SCTP; the backends' policy judging the real client (a
//! client it does not allow reaches none); an SCTP port whose backends
//! listen on another port (SCTP's checksum covers the ports, so the
//! programs patch it): the INIT arrives at the backend's port and the
//! answer comes back from the ClusterIP's, each with a valid CRC32c; a
//! port no service has at the ClusterIP refused with an ICMP port
//! unreachable. Everything (namespaces, pins) is removed at the end, also
//! on failure.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{Backend, Match, Operation, Service, ServicePort};
use manul_dataplane_conformance::driver_thread::DriverThread;
use manul_netns::{ProbeOutcome, TcpServer, UdpEcho, tcp_connect, udp_probe};
use nix::sys::socket::SockProtocol;
use node::{DualNode, DualPod as Pod};
use raw::{crc_holds, raw_socket, receive, sctp_packet, send_to};
use rules::{allow_profile, backend_policy};

mod node;
mod raw;
mod rules;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;
/// The service port of every protocol, and the backends' port.
const PORT: u16 = 9000;
/// The port the `moved` service's backends listen on.
const OTHER_PORT: u16 = 9001;
/// A port no service has at the ClusterIPs.
const NO_PORT: u16 = 9002;

/// (name, IPv4, IPv6) of the pods.
const PODS: [(&str, [u8; 4], u16); 4] = [
    ("a", [10, 66, 0, 2], 2),
    ("c", [10, 66, 0, 3], 3),
    ("b1", [10, 66, 0, 11], 0x11),
    ("b2", [10, 66, 0, 12], 0x12),
];
const ASSOC: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 30);
const ASSOC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 1, 0, 0, 0, 0, 0x30);
const MOVED: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 31);
const MOVED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 1, 0, 0, 0, 0, 0x31);

/// The host-side interface of pod `name`.
fn host_if(name: &str) -> String {
    format!("sct{name}")
}

fn ip6(d: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x66, 0, 0, 0, 0, 0, d)
}

/// The node, its pods' servers and the driver; dropped driver first, then
/// the servers, then the namespaces, then the pins.
struct Setup {
    driver: Option<DriverThread>,
    servers: Vec<(TcpServer, UdpEcho)>,
    net: DualNode,
}

impl Setup {
    fn pod(&self, name: &str) -> &Pod {
        self.net.pod(name)
    }
}

/// What one SCTP exchange through a frontend showed.
#[derive(Debug, PartialEq, Eq)]
struct Exchange {
    /// The backend that got the INIT, the port it got it on, the client
    /// address it saw, and whether the CRC32c held there.
    backend: String,
    backend_port: u16,
    client_seen: IpAddr,
    crc_at_backend: bool,
    /// Where the answer came from as the client got it, and whether its
    /// CRC32c held there (None: no answer).
    answer: Option<(IpAddr, u16, bool)>,
}

/// Sends an SCTP INIT from `client` (source port `sport`) to
/// `frontend:port`; the backend that gets it answers with an INIT ACK to
/// whoever it saw. None: no backend got it within a second.
fn sctp_exchange(
    setup: &Setup,
    client: &Pod,
    frontend: IpAddr,
    port: u16,
    sport: u16,
) -> Option<Exchange> {
    let v6 = frontend.is_ipv6();
    let tag = 0x4d00_0000 | u32::from(sport);
    let backends: Vec<(&str, OwnedFd)> = setup
        .net
        .pods
        .iter()
        .filter(|p| p.name.starts_with('b'))
        .map(|p| {
            (
                p.name.as_str(),
                raw_socket(&p.netns, v6, SockProtocol::Sctp),
            )
        })
        .collect();
    let out = raw_socket(&client.netns, v6, SockProtocol::Sctp);
    send_to(&out, &sctp_packet(sport, port, 0, 1, tag), frontend);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        for (name, fd) in &backends {
            let Some((src, l4)) = receive(fd, v6) else {
                continue;
            };
            if l4.len() < 32 || l4[12] != 1 || l4[16..20] != tag.to_be_bytes() {
                continue;
            }
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            let answer = sctp_packet(dport, sport, tag, 2, tag ^ 0xffff);
            send_to(fd, &answer, src);
            return Some(Exchange {
                backend: name.to_string(),
                backend_port: dport,
                client_seen: src,
                crc_at_backend: crc_holds(&l4),
                answer: answer_at(&out, v6, sport, tag),
            });
        }
    }
    None
}

/// The INIT ACK with verification tag `tag` to port `sport`, as the
/// client's socket gets it: its source, source port, and whether its
/// CRC32c holds.
fn answer_at(fd: &OwnedFd, v6: bool, sport: u16, tag: u32) -> Option<(IpAddr, u16, bool)> {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Some((src, l4)) = receive(fd, v6) else {
            continue;
        };
        if l4.len() < 32 || l4[12] != 2 || l4[2..4] != sport.to_be_bytes() {
            continue;
        }
        if l4[4..8] != tag.to_be_bytes() {
            continue;
        }
        return Some((src, u16::from_be_bytes([l4[0], l4[1]]), crc_holds(&l4)));
    }
    None
}

/// Whether `client` gets an ICMP (ICMPv6) port unreachable from
/// `frontend` for an SCTP INIT to `frontend:port`.
fn sctp_refused(client: &Pod, frontend: IpAddr, port: u16, sport: u16) -> bool {
    let v6 = frontend.is_ipv6();
    let icmp = raw_socket(
        &client.netns,
        v6,
        if v6 {
            SockProtocol::IcmpV6
        } else {
            SockProtocol::Icmp
        },
    );
    let out = raw_socket(&client.netns, v6, SockProtocol::Sctp);
    send_to(&out, &sctp_packet(sport, port, 0, 1, 7), frontend);
    let (kind, code) = if v6 { (1, 4) } else { (3, 3) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Some((src, l4)) = receive(&icmp, v6) else {
            continue;
        };
        if src == frontend && l4.len() >= 8 && l4[0] == kind && l4[1] == code {
            return true;
        }
    }
    false
}

fn endpoint(pod: &Pod, backend: bool) -> Operation {
    rules::endpoint("ns", &pod.name, &pod.interface, &pod.ips, backend)
}

/// A port of `protocol` to the backends b1 and b2 (both families) on
/// `target`.
fn port(name: &str, protocol: u8, target: u16, setup: &Setup) -> ServicePort {
    let backends: Vec<Backend> = ["b1", "b2"]
        .iter()
        .flat_map(|n| {
            let p = setup.pod(n);
            [p.ip(false), p.ip(true)]
        })
        .map(|ip| Backend {
            ip,
            port: target,
            local: true,
            ready: true,
        })
        .collect();
    ServicePort {
        name: name.into(),
        protocol,
        port: PORT,
        node_port: None,
        local_backends: backends.clone(),
        backends,
    }
}

fn service(name: &str, ips: [IpAddr; 2], ports: Vec<ServicePort>) -> Service {
    let mut svc = Service::cluster_ip("ns", name, ips.to_vec(), ports);
    svc.affinity_timeout_seconds = None;
    svc
}

#[test]
fn sctp_tcp_and_udp_on_one_port_over_both_families() {
    if !node::root() {
        return;
    }
    let mut setup = Setup {
        driver: None,
        servers: Vec::new(),
        net: DualNode::new("sc"),
    };
    for (name, v4, d6) in PODS {
        let (v4, v6) = (Ipv4Addr::from(v4), ip6(d6));
        let pod = setup
            .net
            .add_pod(name, &host_if(name), &[v4.into(), v6.into()]);
        if name.starts_with('b') {
            for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
                let at = SocketAddr::new(ip, PORT);
                setup.servers.push((
                    TcpServer::start(&pod.netns, at).expect("tcp server"),
                    UdpEcho::start(&pod.netns, at).expect("udp echo"),
                ));
            }
        }
    }

    let driver = setup.net.driver(|_| {});
    // The backends accept client A only.
    let a = setup.pod("a");
    let only_a = Match {
        nets: vec![
            IpNet::new(a.v4().into(), 32).unwrap(),
            IpNet::new(a.v6().into(), 128).unwrap(),
        ],
        ..Match::default()
    };
    let mut ops = vec![backend_policy(only_a), allow_profile()];
    ops.extend(
        setup
            .net
            .pods
            .iter()
            .map(|p| endpoint(p, p.name.starts_with('b'))),
    );
    ops.push(Operation::ServiceUpdate(service(
        "assoc",
        [ASSOC.into(), ASSOC6.into()],
        vec![
            port("tcp", PROTO_TCP, PORT, &setup),
            port("udp", PROTO_UDP, PORT, &setup),
            port("sctp", PROTO_SCTP, PORT, &setup),
        ],
    )));
    ops.push(Operation::ServiceUpdate(service(
        "moved",
        [MOVED.into(), MOVED6.into()],
        vec![port("sctp", PROTO_SCTP, OTHER_PORT, &setup)],
    )));
    ops.push(Operation::InSync);
    driver.apply(ops).expect("apply");
    setup.driver = Some(driver);

    let (a, c) = (setup.pod("a"), setup.pod("c"));
    let backends: BTreeSet<String> = ["b1", "b2"].map(String::from).into();
    for (family, frontend, moved) in [
        ("IPv4", IpAddr::V4(ASSOC), IpAddr::V4(MOVED)),
        ("IPv6", IpAddr::V6(ASSOC6), IpAddr::V6(MOVED6)),
    ] {
        let v6 = frontend.is_ipv6();
        // TCP and UDP on the service's port.
        let to = SocketAddr::new(frontend, PORT);
        assert_eq!(
            tcp_connect(&a.netns, to, Duration::from_secs(2)).unwrap(),
            ProbeOutcome::Connected,
            "{family}: tcp to the ClusterIP"
        );
        assert_eq!(
            udp_probe(&a.netns, to, Duration::from_secs(2)).unwrap(),
            ProbeOutcome::Connected,
            "{family}: udp to the ClusterIP"
        );

        // SCTP on the same port: every backend reached, each exchange
        // translated both ways with its CRC32c intact.
        let mut reached = BTreeSet::new();
        for sport in 20_000..20_040 {
            let x = sctp_exchange(&setup, a, frontend, PORT, sport)
                .unwrap_or_else(|| panic!("{family}: sctp from port {sport} reached no backend"));
            assert_eq!(
                (x.backend_port, x.client_seen, x.crc_at_backend),
                (PORT, a.ip(v6), true),
                "{family}: the INIT as the backend got it"
            );
            assert_eq!(
                x.answer,
                Some((frontend, PORT, true)),
                "{family}: the answer as the client got it"
            );
            reached.insert(x.backend);
            if reached == backends {
                break;
            }
        }
        assert_eq!(reached, backends, "{family}: every backend reached");

        // The backends' policy judges the real client: C reaches none.
        assert_eq!(
            sctp_exchange(&setup, c, frontend, PORT, 21_000),
            None,
            "{family}: c passed the backends' policy"
        );

        // Backends on another port: the INIT arrives at the backend's
        // port, the answer comes back from the ClusterIP's port, each
        // with its CRC32c patched; every backend reached.
        let mut reached = BTreeSet::new();
        for sport in 22_000..22_040 {
            let x = sctp_exchange(&setup, a, moved, PORT, sport)
                .unwrap_or_else(|| panic!("{family}: sctp from port {sport} reached no backend"));
            assert_eq!(
                (x.backend_port, x.client_seen, x.crc_at_backend),
                (OTHER_PORT, a.ip(v6), true),
                "{family}: the INIT as the backend on another port got it"
            );
            assert_eq!(
                x.answer,
                Some((moved, PORT, true)),
                "{family}: the answer from the backend on another port"
            );
            reached.insert(x.backend);
            if reached == backends && sport >= 22_004 {
                break;
            }
        }
        assert_eq!(reached, backends, "{family}: every backend on another port");

        // A port no service has at the ClusterIP: refused at once, and
        // no backend gets the packet.
        assert!(
            sctp_refused(a, moved, NO_PORT, 22_100),
            "{family}: sctp to a port no service has"
        );
        assert_eq!(
            sctp_exchange(&setup, a, moved, NO_PORT, 22_101),
            None,
            "{family}: sctp to a port no service has was delivered"
        );
    }
}
