#![allow(clippy::expect_used, clippy::unwrap_used)]

//! External traffic to services across two nodes with real packets: node
//! ports reached by a client on the nodes' network, each node a namespace
//! running its own eBPF driver, pods plumbed Calico-style and routed to
//! the other node over that network (a routed underlay, no tunnel).
//!
//! Under `externalTrafficPolicy: Cluster`, in SNAT mode (the default) the
//! backend on the other node sees the first node's address and the reply
//! returns through it; in DSR mode the backend sees the client's own
//! address and its node answers the client directly (the SYN-ACK leaves
//! the second node's interface: its MAC, the first node's address). A
//! `Local` node port without a local backend drops (the connection times
//! out, it is not refused); UDP works both ways. The network is dual
//! stack: the same node ports over IPv6 (Local keeps the client; Cluster
//! masquerades to the node's IPv6 address in SNAT mode, to a local and to
//! a remote backend, and in DSR mode keeps the client, the frontend
//! carried to the backend's node in a Destination Options header that
//! node takes off before the pod sees the packet), and IPv6
//! load-balancer addresses whose source ranges allow the client, or
//! refuse it. SCTP node ports over both families (raw sockets: the kernel
//! needs no SCTP stack): `Local` kept, `Cluster` masqueraded to a backend
//! on another port (in DSR mode too: no SCTP packet carries the DSR
//! option or header), every packet with a valid CRC32c where it arrives.
//! A pod of node 2 reaching node 1's `Local` node port (a source in the
//! cluster's IP pools: from inside the cluster) gets both backends, both
//! families, in both modes: node 1's sees the pod's own address, node
//! 2's (the client pod itself here) sees node 1's, masqueraded so the
//! reply comes back through node 1 (in DSR mode too: a backend that is
//! the client is never sent the client's own address).
//! Every namespace and pin is removed at the end, also on failure.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{Backend, HostEndpoint, Operation, Service, ServicePort, TrafficPolicy};
use manul_dataplane_bpf::ExternalServiceMode;
use manul_dataplane_conformance::NodeContext;
use manul_dataplane_conformance::driver_thread::DriverThread;
use manul_netns::{
    NetNs, ProbeOutcome, Route, TCP_BANNER, TcpServer, add_address, create_bridge, create_veth,
    link_mac, link_up, plumb_pod_ips, replace_route, set_master, tcp_connect, tcp_peer,
    unique_prefix,
};

mod node;
mod raw;
mod rules;

use node::Pins;
use rules::{allow_profile, endpoint};

const NODE1: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
/// A pod on node 1 and one on node 2.
const POD1: Ipv4Addr = Ipv4Addr::new(10, 70, 1, 10);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 70, 2, 10);
/// The same over IPv6.
const NODE1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
const NODE2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
const CLIENT_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x100);
const POD1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x70, 1, 0, 0, 0, 0, 0x10);
const POD2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x70, 2, 0, 0, 0, 0, 0x10);
/// IPv6 load-balancer addresses (routed to node 1 by the client): one
/// whose source ranges hold the client, one whose do not.
const LB_ALLOWED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const LB_REFUSED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
/// Node ports: `Cluster` to the pod on node 2, `Local` with its only
/// backend on node 2, UDP `Cluster` to node 2, `Cluster` to the pod on
/// node 1.
const REMOTE: u16 = 30080;
const LOCAL_ELSEWHERE: u16 = 30081;
const REMOTE_UDP: u16 = 30082;
const HERE: u16 = 30083;
/// A UDP node port picking by Maglev between both pods (`Cluster`).
const MAGLEV: u16 = 30084;
/// A `Local` node port with a backend on each node.
const LOCAL_BOTH: u16 = 30085;
/// The cluster's IP pools (both nodes' pods).
const POOLS: [&str; 2] = ["10.70.0.0/16", "fd00:70::/32"];
/// The client ports of the Maglev flows.
const MAGLEV_PORTS: std::ops::Range<u16> = 21_000..21_060;
const WAIT: Duration = Duration::from_secs(2);

/// A UDP server in a pod answering each datagram with the address it saw
/// the client at and its own ("CLIENT SERVER").
struct UdpWho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpWho {
    fn start(ns: &NetNs, ip: IpAddr) -> UdpWho {
        let socket = ns
            .run(move || UdpSocket::bind((ip, UDP_PORT)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{} {ip}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        UdpWho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpWho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks the UDP who server behind `dst` over a connected socket (which
/// takes replies from `dst` only): the client address it saw.
fn udp_who(ns: &NetNs, dst: SocketAddr) -> Option<IpAddr> {
    let any = if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    udp_ask(ns, any.parse().unwrap(), dst).map(|(client, _)| client)
}

/// Asks the UDP who server behind `dst` from `from`: the client address
/// it saw and its own.
fn udp_ask(ns: &NetNs, from: SocketAddr, dst: SocketAddr) -> Option<(IpAddr, IpAddr)> {
    udp_ask_sized(ns, from, dst, &[3])
        .into_iter()
        .next()
        .flatten()
}

/// Asks the UDP who server behind `dst` from `from` over one connected
/// socket (one flow), once per datagram size in `sizes` (bytes of
/// payload): what each answer said (the client address the server saw
/// and its own), in order.
fn udp_ask_sized(
    ns: &NetNs,
    from: SocketAddr,
    dst: SocketAddr,
    sizes: &[usize],
) -> Vec<Option<(IpAddr, IpAddr)>> {
    let sizes = sizes.to_vec();
    ns.run(move || {
        let Ok(s) = UdpSocket::bind(from).and_then(|s| s.connect(dst).map(|()| s)) else {
            return vec![None; sizes.len()];
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        sizes
            .iter()
            .map(|&size| {
                let ask = vec![b'w'; size];
                for _ in 0..3 {
                    s.send(&ask).ok()?;
                    let mut buf = [0u8; 96];
                    if let Ok(n) = s.recv(&mut buf) {
                        let text = std::str::from_utf8(&buf[..n]).ok()?;
                        let (client, server) = text.split_once(' ')?;
                        return Some((client.parse().ok()?, server.parse().ok()?));
                    }
                }
                None
            })
            .collect()
    })
    .unwrap()
}

/// Connects from the client to `dst` while capturing its interface: the
/// peer probe's result and the source MAC of the SYN-ACK that came from
/// `dst` (which node's interface answered).
fn probe_with_syn_ack(
    client: &NetNs,
    dst: SocketAddr,
) -> (manul_netns::PeerProbe, Option<[u8; 6]>) {
    let capture = raw::capture_socket(client);
    let probe = tcp_peer(client, dst, WAIT).unwrap();
    let mac = raw::capture(&capture, Duration::from_secs(1), |f| {
        let (src, tcp) = tcp_of_frame(f)?;
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let syn_ack = src == dst.ip() && sport == dst.port() && tcp[13] & 0x12 == 0x12;
        syn_ack.then(|| f[6..12].try_into().ok()).flatten()
    });
    (probe, mac)
}

/// The source address and TCP header of an Ethernet frame carrying TCP
/// over IPv4 or IPv6 (without extension headers).
fn tcp_of_frame(f: &[u8]) -> Option<(IpAddr, &[u8])> {
    let ip = f.get(14..)?;
    let (src, tcp) = match f.get(12..14)? {
        [0x08, 0x00] => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != 6 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            (IpAddr::from(src), ip.get(ihl..)?)
        }
        [0x86, 0xdd] => {
            if *ip.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            (IpAddr::from(src), ip.get(40..)?)
        }
        _ => return None,
    };
    (tcp.len() >= 20).then_some((src, tcp))
}

/// A pod's IPv6 address.
fn six(pod: Ipv4Addr) -> Ipv6Addr {
    if pod == POD1 { POD1_6 } else { POD2_6 }
}

/// A dual-stack node port service with one backend pod (both of its
/// addresses), `local` on the node told; its IPv6 cluster IP ends like
/// its IPv4 one.
fn node_port(
    name: &str,
    cluster_ip: Ipv4Addr,
    protocol: u8,
    node_port: u16,
    policy: TrafficPolicy,
    backend: Ipv4Addr,
    local: bool,
) -> Service {
    let target = if protocol == 17 { UDP_PORT } else { TCP_PORT };
    let backends: Vec<Backend> = [IpAddr::V4(backend), IpAddr::V6(six(backend))]
        .into_iter()
        .map(|ip| Backend {
            ip,
            port: target,
            local,
            ready: true,
        })
        .collect();
    let cluster_ip6 = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, cluster_ip.octets()[3].into());
    let mut svc = Service::cluster_ip(
        "ns",
        name,
        vec![IpAddr::V4(cluster_ip), IpAddr::V6(cluster_ip6)],
        vec![ServicePort {
            name: "p".into(),
            protocol,
            port: 80,
            node_port: Some(node_port),
            local_backends: if local { backends.clone() } else { vec![] },
            backends,
        }],
    );
    svc.external_traffic = policy;
    svc
}

/// An IPv6 load-balancer address `lb` of a `Local` service whose backend
/// is the pod on node 1, with `ranges` as its source ranges.
fn load_balancer(name: &str, cluster_ip: Ipv4Addr, lb: Ipv6Addr, ranges: &str, n: u8) -> Service {
    let mut svc = node_port(name, cluster_ip, 6, 0, TrafficPolicy::Local, POD1, n == 1);
    for p in &mut svc.ports {
        p.node_port = None;
    }
    svc.load_balancer_ips = vec![IpAddr::V6(lb)];
    svc.load_balancer_source_ranges = vec![ranges.parse().unwrap()];
    svc
}

/// A `Local` TCP node port to both pods, on node `n`.
fn local_both(n: u8) -> Service {
    let mut svc = node_port(
        "local-both",
        Ipv4Addr::new(10, 96, 0, 10),
        6,
        LOCAL_BOTH,
        TrafficPolicy::Local,
        POD2,
        n == 2,
    );
    let pod1 = node_port("", POD1, 6, 0, TrafficPolicy::Local, POD1, n == 1);
    for (p, q) in svc.ports.iter_mut().zip(pod1.ports) {
        p.backends.extend(q.backends);
        p.local_backends.extend(q.local_backends);
    }
    svc
}

/// A UDP node port to both pods that picks by Maglev.
fn maglev_service(n: u8) -> Service {
    let mut svc = node_port(
        "maglev",
        Ipv4Addr::new(10, 96, 0, 9),
        17,
        MAGLEV,
        TrafficPolicy::Cluster,
        POD2,
        n == 2,
    );
    let pod1 = node_port("", POD1, 17, 0, TrafficPolicy::Cluster, POD1, n == 1);
    for (p, q) in svc.ports.iter_mut().zip(pod1.ports) {
        p.backends.extend(q.backends);
        p.local_backends.extend(q.local_backends);
    }
    svc.balancing = manul_dataplane_api::Balancing::Maglev;
    svc
}

/// The backend dataplane-api's Maglev table and flow hash give each IPv6
/// flow from the client's `MAGLEV_PORTS` to the node port (frontend ::).
fn maglev_predicted() -> Vec<IpAddr> {
    use manul_dataplane_api::maglev::{MaglevTable, flow_hash};
    let list: Vec<Backend> = [POD1_6, POD2_6]
        .into_iter()
        .map(|ip| Backend {
            ip: ip.into(),
            port: UDP_PORT,
            local: false,
            ready: true,
        })
        .collect();
    let table = MaglevTable::build(&list);
    MAGLEV_PORTS
        .map(|p| {
            let h = flow_hash(CLIENT_6.into(), Ipv6Addr::UNSPECIFIED.into(), p, MAGLEV, 17);
            table.lookup(h).expect("a backend").ip
        })
        .collect()
}

/// What node `n` (1 or 2) is told: its pod's endpoint and the services,
/// with backends local where they are on node `n`.
fn operations(n: u8, pod_if: &str, pod: Ipv4Addr) -> Vec<Operation> {
    let on = |ip: Ipv4Addr| (ip == POD1) == (n == 1);
    vec![
        allow_profile(),
        endpoint(
            "ns",
            &format!("pod{n}"),
            pod_if,
            &[pod.into(), six(pod).into()],
            false,
        ),
        Operation::ServiceUpdate(node_port(
            "remote",
            Ipv4Addr::new(10, 96, 0, 1),
            6,
            REMOTE,
            TrafficPolicy::Cluster,
            POD2,
            on(POD2),
        )),
        Operation::ServiceUpdate(node_port(
            "local-elsewhere",
            Ipv4Addr::new(10, 96, 0, 2),
            6,
            LOCAL_ELSEWHERE,
            TrafficPolicy::Local,
            POD2,
            on(POD2),
        )),
        Operation::ServiceUpdate(node_port(
            "remote-udp",
            Ipv4Addr::new(10, 96, 0, 3),
            17,
            REMOTE_UDP,
            TrafficPolicy::Cluster,
            POD2,
            on(POD2),
        )),
        Operation::ServiceUpdate(node_port(
            "here",
            Ipv4Addr::new(10, 96, 0, 4),
            6,
            HERE,
            TrafficPolicy::Cluster,
            POD1,
            on(POD1),
        )),
        Operation::ServiceUpdate(maglev_service(n)),
        Operation::ServiceUpdate(local_both(n)),
        // The client's /120 is allowed at one address, and only a
        // range without it at the other.
        Operation::ServiceUpdate(load_balancer(
            "lb-allowed",
            Ipv4Addr::new(10, 96, 0, 7),
            LB_ALLOWED,
            "fd00:77::100/120",
            n,
        )),
        Operation::ServiceUpdate(load_balancer(
            "lb-refused",
            Ipv4Addr::new(10, 96, 0, 8),
            LB_REFUSED,
            "fd00:1234::/64",
            n,
        )),
        node_addresses(if n == 1 { &[2] } else { &[1] }),
        Operation::InSync,
    ]
}

/// The addresses of nodes `nodes` (1, 2), both families: the other nodes
/// a node's driver believes a DSR option or header of.
fn node_addresses(nodes: &[u8]) -> Operation {
    let addresses = nodes
        .iter()
        .flat_map(|n| match n {
            1 => [IpAddr::V4(NODE1), IpAddr::V6(NODE1_6)],
            _ => [IpAddr::V4(NODE2), IpAddr::V6(NODE2_6)],
        })
        .collect();
    Operation::NodeAddresses {
        addresses,
        local: Vec::new(),
        pools: POOLS.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

/// The drivers, the namespaces and the nodes' pins; dropped in that
/// order.
struct Cluster {
    drivers: Vec<DriverThread>,
    namespaces: Vec<NetNs>,
    pins: Vec<Pins>,
}

impl Cluster {
    fn ns(&self, i: usize) -> &NetNs {
        &self.namespaces[i]
    }
}

const UL: usize = 0;
const N1: usize = 1;
const N2: usize = 2;
const CL: usize = 3;
const P1: usize = 4;
const P2: usize = 5;

/// Builds the underlay bridge, two nodes, the client and a pod per node,
/// and starts a driver per node in `mode`.
fn build(tag: &str, mode: ExternalServiceMode) -> Cluster {
    let prefix = unique_prefix(tag);
    let mut c = Cluster {
        drivers: vec![],
        namespaces: vec![],
        pins: ["n1", "n2"].map(|n| Pins(format!("{prefix}-{n}"))).into(),
    };
    for name in ["ul", "n1", "n2", "cl", "p1", "p2"] {
        let ns = NetNs::create(&format!("{prefix}-{name}")).expect("namespace");
        // IPv6 addresses usable at once (no duplicate detection).
        for key in ["all", "default"] {
            ns.set_sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0")
                .unwrap();
        }
        c.namespaces.push(ns);
    }
    let ul = c.ns(UL);
    create_bridge(ul, "br0").unwrap();
    link_up(ul, "br0").unwrap();
    for (i, port, ip, ip6) in [
        (N1, "n1", NODE1, NODE1_6),
        (N2, "n2", NODE2, NODE2_6),
        (CL, "cl", CLIENT, CLIENT_6),
    ] {
        let ns = c.ns(i);
        create_veth(ns, "eth0", ul, port).unwrap();
        set_master(ul, port, "br0").unwrap();
        link_up(ul, port).unwrap();
        add_address(ns, "eth0", IpNet::new(ip.into(), 24).unwrap()).unwrap();
        add_address(ns, "eth0", IpNet::new(ip6.into(), 64).unwrap()).unwrap();
        link_up(ns, "eth0").unwrap();
        ns.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
        ns.set_sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    }
    plumb_pod_ips(
        c.ns(N1),
        c.ns(P1),
        "mnlp1",
        "eth0",
        &[POD1.into(), POD1_6.into()],
    )
    .unwrap();
    plumb_pod_ips(
        c.ns(N2),
        c.ns(P2),
        "mnlp2",
        "eth0",
        &[POD2.into(), POD2_6.into()],
    )
    .unwrap();
    let route = |to: &str, via: IpAddr| Route::to(to.parse().unwrap()).via(via);
    replace_route(c.ns(N1), &route("10.70.2.0/24", NODE2.into())).unwrap();
    replace_route(c.ns(N2), &route("10.70.1.0/24", NODE1.into())).unwrap();
    replace_route(c.ns(N1), &route("fd00:70:2::/64", NODE2_6.into())).unwrap();
    replace_route(c.ns(N2), &route("fd00:70:1::/64", NODE1_6.into())).unwrap();
    // The load-balancer addresses are announced by node 1.
    replace_route(c.ns(CL), &route("fd00:99::/64", NODE1_6.into())).unwrap();

    for (i, n, pod_if, pod) in [(N1, 1u8, "mnlp1", POD1), (N2, 2u8, "mnlp2", POD2)] {
        let pins = c.pins[usize::from(n) - 1].name().to_string();
        let factory = node::factory(&pins, move |config| config.external_service_mode = mode);
        let driver =
            DriverThread::start(c.ns(i), NodeContext { node: pins }, factory).expect("driver");
        driver.apply(operations(n, pod_if, pod)).expect("apply");
        c.drivers.push(driver);
    }
    c
}

/// The probes both modes share; returns the cluster for mode checks.
struct Servers {
    _tcp: Vec<TcpServer>,
    _udp: Vec<UdpWho>,
}

fn servers(c: &Cluster) -> Servers {
    let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let at = |ip: Ipv6Addr| SocketAddr::new(IpAddr::V6(ip), TCP_PORT);
    Servers {
        _tcp: vec![
            TcpServer::start(c.ns(P1), any(TCP_PORT)).unwrap(),
            TcpServer::start(c.ns(P2), any(TCP_PORT)).unwrap(),
            TcpServer::start(c.ns(P1), at(POD1_6)).unwrap(),
            TcpServer::start(c.ns(P2), at(POD2_6)).unwrap(),
        ],
        _udp: vec![
            UdpWho::start(c.ns(P2), POD2.into()),
            UdpWho::start(c.ns(P2), POD2_6.into()),
            UdpWho::start(c.ns(P1), POD1_6.into()),
        ],
    }
}

/// The client address the backend saw and the backend, over a few
/// connections (each masqueraded one gets its own port).
fn seen(c: &Cluster, node: impl Into<IpAddr>, port: u16) -> Vec<(IpAddr, SocketAddr)> {
    let node = node.into();
    (0..4)
        .map(|_| {
            let p = tcp_peer(c.ns(CL), SocketAddr::new(node, port), WAIT).unwrap();
            assert_eq!(p.outcome, ProbeOutcome::Connected, "{node}:{port}");
            let (peer, local) = p.seen.expect("the server answered");
            (peer.ip(), local)
        })
        .collect()
}

/// Whether a TCP connection from the client to `dst` times out (dropped,
/// neither refused nor answered).
fn times_out(c: &Cluster, dst: SocketAddr) -> bool {
    let started = Instant::now();
    let out = tcp_connect(c.ns(CL), dst, Duration::from_millis(600)).unwrap();
    out == ProbeOutcome::TimedOut && started.elapsed() >= Duration::from_millis(500)
}

/// A `Local` node port on a node without a local backend drops: the
/// connection times out, it is not refused; the backend's own node serves
/// it and keeps the client's address. Over both families.
fn local_policy_checks(c: &Cluster) {
    let families = [
        (
            IpAddr::V4(NODE1),
            IpAddr::V4(NODE2),
            IpAddr::V4(CLIENT),
            IpAddr::V4(POD2),
        ),
        (
            IpAddr::V6(NODE1_6),
            IpAddr::V6(NODE2_6),
            IpAddr::V6(CLIENT_6),
            IpAddr::V6(POD2_6),
        ),
    ];
    for (node1, node2, client, pod2) in families {
        assert!(
            times_out(c, SocketAddr::new(node1, LOCAL_ELSEWHERE)),
            "Local without a local backend, {node1}"
        );
        for (peer, backend) in seen(c, node2, LOCAL_ELSEWHERE) {
            assert_eq!(peer, client, "Local keeps the client's address");
            assert_eq!(backend, SocketAddr::new(pod2, TCP_PORT));
        }
    }
    pool_checks(c);
}

/// A pod of node 2 reaching node 1's `Local` node port: both backends;
/// node 1's sees the pod, node 2's (the pod itself) node 1's address.
fn pool_checks(c: &Cluster) {
    for (node1, pod1, pod2) in [
        (IpAddr::V4(NODE1), IpAddr::V4(POD1), IpAddr::V4(POD2)),
        (IpAddr::V6(NODE1_6), IpAddr::V6(POD1_6), IpAddr::V6(POD2_6)),
    ] {
        let dst = SocketAddr::new(node1, LOCAL_BOTH);
        let mut backends = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let p = tcp_peer(c.ns(P2), dst, WAIT).unwrap();
            assert_eq!(p.outcome, ProbeOutcome::Connected, "pod 2 to {dst}");
            let (peer, backend) = p.seen.expect("the server answered");
            let want = if backend.ip() == pod1 { pod2 } else { node1 };
            assert_eq!(peer.ip(), want, "pod 2 to {dst}, answered by {backend}");
            backends.insert(backend.ip());
        }
        assert_eq!(backends, [pod1, pod2].into_iter().collect(), "{dst}");
    }
}

/// IPv6 external traffic under `Cluster`. In SNAT mode masqueraded to the
/// node's IPv6 address toward a backend on the other node (the reply
/// returns through the node) and toward a local one; UDP too. In DSR
/// mode the backend, local or on the other node, sees the client, and a
/// remote backend's node answers the client itself. IPv6 load-balancer
/// addresses: the one whose source ranges hold the client serves it
/// (`Local`, the client kept), the other drops it.
fn ipv6_checks(c: &Cluster, mode: ExternalServiceMode) {
    let dsr = mode == ExternalServiceMode::Dsr;
    let client = IpAddr::V6(CLIENT_6);
    let (via1, via2) = if dsr {
        (client, client)
    } else {
        (IpAddr::V6(NODE1_6), IpAddr::V6(NODE2_6))
    };
    let answering = link_mac(c.ns(if dsr { N2 } else { N1 }), "eth0").unwrap();
    for (peer, backend) in seen(c, NODE1_6, REMOTE) {
        assert_eq!(peer, via1, "{mode:?}: the source the remote backend saw");
        assert_eq!(backend, SocketAddr::new(POD2_6.into(), TCP_PORT));
    }
    let (probe, mac) = probe_with_syn_ack(c.ns(CL), SocketAddr::new(NODE1_6.into(), REMOTE));
    assert_eq!(probe.outcome, ProbeOutcome::Connected);
    assert_eq!(
        mac,
        Some(answering),
        "{mode:?}: the SYN-ACK's interface (SNAT: node 1's; DSR: node 2's)"
    );
    for (peer, backend) in seen(c, NODE1_6, HERE) {
        assert_eq!(peer, via1, "{mode:?}: the source a local backend saw");
        assert_eq!(backend, SocketAddr::new(POD1_6.into(), TCP_PORT));
    }
    for (peer, backend) in seen(c, NODE2_6, HERE) {
        assert_eq!(peer, via2, "{mode:?}: node 2 to node 1's pod");
        assert_eq!(backend, SocketAddr::new(POD1_6.into(), TCP_PORT));
    }
    assert_eq!(
        udp_who(c.ns(CL), SocketAddr::new(NODE1_6.into(), REMOTE_UDP)),
        Some(via1),
        "{mode:?}: udp over IPv6 through node 1"
    );
    for (peer, backend) in seen(c, LB_ALLOWED, 80) {
        assert_eq!(
            peer,
            IpAddr::V6(CLIENT_6),
            "Local keeps the client's address"
        );
        assert_eq!(backend, SocketAddr::new(POD1_6.into(), TCP_PORT));
    }
    assert!(
        times_out(c, SocketAddr::new(LB_REFUSED.into(), 80)),
        "a client outside the source ranges was let in"
    );
    // Maglev over IPv6: each flow on the backend the table predicts.
    let got: Vec<IpAddr> = MAGLEV_PORTS
        .map(|p| {
            let from = SocketAddr::new(CLIENT_6.into(), p);
            let to = SocketAddr::new(NODE1_6.into(), MAGLEV);
            udp_ask(c.ns(CL), from, to).expect("every flow answered").1
        })
        .collect();
    let want = maglev_predicted();
    assert_eq!(
        got, want,
        "the kernel's IPv6 Maglev picks differ from the table's"
    );
    assert!(want.contains(&IpAddr::V6(POD1_6)) && want.contains(&IpAddr::V6(POD2_6)));
}

#[test]
fn node_port_to_another_node_masquerades_in_snat_mode() {
    if !node::root() {
        return;
    }
    let c = build("xs", ExternalServiceMode::Snat);
    let _servers = servers(&c);
    let node1_mac = link_mac(c.ns(N1), "eth0").unwrap();

    // Cluster, backend on node 2: the backend sees node 1's address, and
    // the reply returns through node 1.
    for (peer, backend) in seen(&c, NODE1, REMOTE) {
        assert_eq!(peer, IpAddr::V4(NODE1), "masqueraded to node 1's address");
        assert_eq!(backend, SocketAddr::new(POD2.into(), TCP_PORT));
    }
    let (probe, mac) = probe_with_syn_ack(c.ns(CL), SocketAddr::new(NODE1.into(), REMOTE));
    assert_eq!(probe.outcome, ProbeOutcome::Connected);
    assert_eq!(mac, Some(node1_mac), "the SYN-ACK came back through node 1");

    // Cluster, backend on node 1: masqueraded too (as kube-proxy does).
    for (peer, backend) in seen(&c, NODE1, HERE) {
        assert_eq!(peer, IpAddr::V4(NODE1));
        assert_eq!(backend, SocketAddr::new(POD1.into(), TCP_PORT));
    }
    // Node 2 reaches node 1's pod the same way.
    for (peer, backend) in seen(&c, NODE2, HERE) {
        assert_eq!(peer, IpAddr::V4(NODE2), "masqueraded to node 2's address");
        assert_eq!(backend, SocketAddr::new(POD1.into(), TCP_PORT));
    }

    // UDP, backend on node 2: answered from the node port.
    assert_eq!(
        udp_who(c.ns(CL), SocketAddr::new(NODE1.into(), REMOTE_UDP)),
        Some(IpAddr::V4(NODE1)),
        "udp through node 1, masqueraded"
    );

    local_policy_checks(&c);
    ipv6_checks(&c, ExternalServiceMode::Snat);
}

#[test]
fn node_port_to_another_node_keeps_the_client_in_dsr_mode() {
    if !node::root() {
        return;
    }
    let c = build("xd", ExternalServiceMode::Dsr);
    let _servers = servers(&c);
    let node2_mac = link_mac(c.ns(N2), "eth0").unwrap();

    // Cluster, backend on node 2: the backend sees the client, and node
    // 2 answers it directly, from node 1's address and node port.
    for (peer, backend) in seen(&c, NODE1, REMOTE) {
        assert_eq!(peer, IpAddr::V4(CLIENT), "DSR keeps the client's address");
        assert_eq!(backend, SocketAddr::new(POD2.into(), TCP_PORT));
    }
    let (probe, mac) = probe_with_syn_ack(c.ns(CL), SocketAddr::new(NODE1.into(), REMOTE));
    assert_eq!(probe.outcome, ProbeOutcome::Connected);
    assert_eq!(
        mac,
        Some(node2_mac),
        "the SYN-ACK came from node 2's interface"
    );

    // A local backend sees the client too.
    for (peer, backend) in seen(&c, NODE1, HERE) {
        assert_eq!(peer, IpAddr::V4(CLIENT));
        assert_eq!(backend, SocketAddr::new(POD1.into(), TCP_PORT));
    }

    // UDP: every datagram carries the frontend; the answer comes from
    // the node port and the backend saw the client.
    assert_eq!(
        udp_who(c.ns(CL), SocketAddr::new(NODE1.into(), REMOTE_UDP)),
        Some(IpAddr::V4(CLIENT)),
        "udp with DSR"
    );

    local_policy_checks(&c);
    ipv6_checks(&c, ExternalServiceMode::Dsr);
    sctp_checks(&c);
}

/// The IPv6 DSR header in a frame: the TCP SYN from `src` to `dst` whose
/// only extension header is a Destination Options header (24 bytes: next
/// header TCP, length 2, option 0x1e of 18 bytes, then two Pad1), and the
/// frontend it names.
fn dsr6_header_of(f: &[u8], src: Ipv6Addr, dst: SocketAddr) -> Option<SocketAddr> {
    let ip = f.get(14..)?;
    if f.get(12..14)? != [0x86, 0xdd] || *ip.get(6)? != 60 {
        return None;
    }
    let (s, d): ([u8; 16], [u8; 16]) = (
        ip.get(8..24)?.try_into().ok()?,
        ip.get(24..40)?.try_into().ok()?,
    );
    let h = ip.get(40..64)?;
    let tcp = ip.get(64..84)?;
    let to = SocketAddr::new(IpAddr::from(d), u16::from_be_bytes([tcp[2], tcp[3]]));
    let syn = tcp[13] & 0x12 == 0x02;
    if Ipv6Addr::from(s) != src
        || to != dst
        || !syn
        || h[..4] != [6, 2, 0x1e, 18]
        || h[22..] != [0, 0]
    {
        return None;
    }
    let fe: [u8; 16] = h[4..20].try_into().ok()?;
    Some(SocketAddr::new(
        IpAddr::from(fe),
        u16::from_be_bytes([h[20], h[21]]),
    ))
}

/// The TCP SYN from `src` to `dst` in a frame, as a pod gets it: whether
/// TCP follows the IPv6 header directly (no extension header left).
fn plain_syn6(f: &[u8], src: Ipv6Addr, dst: SocketAddr) -> Option<bool> {
    let ip = f.get(14..)?;
    if f.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    let (s, d): ([u8; 16], [u8; 16]) = (
        ip.get(8..24)?.try_into().ok()?,
        ip.get(24..40)?.try_into().ok()?,
    );
    if Ipv6Addr::from(s) != src || Ipv6Addr::from(d) != dst.ip() {
        return None;
    }
    let next = *ip.get(6)?;
    // With a header still there, the TCP header is 24 bytes further.
    let tcp = ip.get(if next == 6 { 40 } else { 64 }..)?;
    let syn = tcp.get(13)? & 0x12 == 0x02;
    (syn && u16::from_be_bytes([tcp[2], tcp[3]]) == dst.port()).then_some(next == 6)
}

/// A TCP connection from the client to `dst` carrying data both ways:
/// the server's banner, then `rounds` chunks of 4 KiB written and echoed
/// back whole (every segment after the SYN goes without the DSR header).
fn echoes(ns: &NetNs, dst: SocketAddr, rounds: usize) -> bool {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&dst, WAIT).ok()?;
        s.set_read_timeout(Some(WAIT)).ok()?;
        let mut banner = vec![0u8; TCP_BANNER.len()];
        s.read_exact(&mut banner).ok()?;
        if banner != TCP_BANNER {
            return None;
        }
        for round in 0..rounds {
            let chunk: Vec<u8> = (0..4096).map(|i| (i * 7 + round) as u8).collect();
            s.write_all(&chunk).ok()?;
            let mut back = vec![0u8; chunk.len()];
            s.read_exact(&mut back).ok()?;
            if back != chunk {
                return None;
            }
        }
        Some(())
    })
    .unwrap()
    .is_some()
}

/// IPv6 direct server return, on the wire: the SYN leaves node 1 for the
/// pod on node 2 with the client's own address and a Destination Options
/// header naming the frontend (node 1's address and node port); the pod
/// gets it without the header, from the client; the SYN-ACK reaches the
/// client from node 2's interface with the frontend as its source; the
/// connection then carries data both ways. UDP: every datagram of a
/// flow answered from the frontend, the backend seeing the client, a
/// full-size one too (sent without the header, which would not fit the
/// route, once the flow's first datagram carried it); a flow whose first
/// datagram is full-size is masqueraded instead (the header would not
/// fit), and still answered.
#[test]
fn ipv6_node_port_to_another_node_carries_the_frontend_in_a_destination_option() {
    if !node::root() {
        return;
    }
    let c = build("x6", ExternalServiceMode::Dsr);
    let _servers = servers(&c);
    let node2_mac = link_mac(c.ns(N2), "eth0").unwrap();
    let frontend = SocketAddr::new(NODE1_6.into(), REMOTE);
    let backend = SocketAddr::new(POD2_6.into(), TCP_PORT);

    let on_node2 = raw::capture_socket(c.ns(N2));
    let in_pod = raw::capture_socket(c.ns(P2));
    let (probe, mac) = probe_with_syn_ack(c.ns(CL), frontend);
    assert_eq!(probe.outcome, ProbeOutcome::Connected);
    let (peer, local) = probe.seen.expect("the server answered");
    assert_eq!(peer.ip(), IpAddr::V6(CLIENT_6), "the pod saw the client");
    assert_eq!(local, backend);
    assert_eq!(
        mac,
        Some(node2_mac),
        "the SYN-ACK came from node 2's interface"
    );
    assert_eq!(
        raw::capture(&on_node2, Duration::from_secs(1), |f| dsr6_header_of(
            f, CLIENT_6, backend
        )),
        Some(frontend),
        "node 2 got the SYN with the DSR header naming the frontend"
    );
    assert_eq!(
        raw::capture(&in_pod, Duration::from_secs(1), |f| plain_syn6(
            f, CLIENT_6, backend
        )),
        Some(true),
        "the pod got the SYN from the client with no extension header"
    );

    assert!(echoes(c.ns(CL), frontend, 64), "data both ways over DSR");

    let udp = SocketAddr::new(NODE1_6.into(), REMOTE_UDP);
    let client = IpAddr::V6(CLIENT_6);
    let pod2 = IpAddr::V6(POD2_6);
    // 1452 bytes of payload: a 1500-byte packet, the route's MTU.
    let full = 1500 - 40 - 8;
    let from = |port| SocketAddr::new(CLIENT_6.into(), port);
    assert_eq!(
        udp_ask_sized(c.ns(CL), from(22_001), udp, &[3, 100, full, 3]),
        vec![Some((client, pod2)); 4],
        "a flow's datagrams, small and full-size, keep the client and are answered"
    );
    assert_eq!(
        udp_ask_sized(c.ns(CL), from(22_002), udp, &[full, 3]),
        vec![Some((IpAddr::V6(NODE1_6), pod2)); 2],
        "a flow whose first datagram cannot carry the header is masqueraded"
    );
}

/// SCTP node ports: `Local` with its backend on node 1 listening on the
/// node port, `Cluster` to the pod on node 2 listening on another port.
const SCTP_HERE: u16 = 31001;
const SCTP_REMOTE: u16 = 31002;
/// The port the `Cluster` SCTP node port's backend listens on.
const SCTP_TARGET: u16 = 9000;
/// The masquerade's port range (`MANUL_SNAT_PORT_MIN..=MAX`).
const SNAT_PORTS: std::ops::RangeInclusive<u16> = 61000..=65535;

/// An SCTP node port `port` whose backend listens on `target`.
fn sctp_node_port(
    name: &str,
    cluster_ip: Ipv4Addr,
    port: u16,
    target: u16,
    policy: TrafficPolicy,
    backend: Ipv4Addr,
    local: bool,
) -> Service {
    let mut svc = node_port(name, cluster_ip, 132, port, policy, backend, local);
    for p in &mut svc.ports {
        for b in p.backends.iter_mut().chain(p.local_backends.iter_mut()) {
            b.port = target;
        }
    }
    svc
}

/// What one SCTP exchange through a node showed: the INIT as the backend
/// got it (source, source port, destination port, whether its CRC32c
/// held) and the answer as the client got it (source, source port,
/// CRC32c held; None: no answer).
#[derive(Debug, PartialEq, Eq)]
struct SctpSeen {
    at_backend: (IpAddr, u16, u16, bool),
    answer: Option<(IpAddr, u16, bool)>,
}

/// Sends an SCTP INIT from the client (source port `sport`) to
/// `node:port`; the pod in `backend_ns` answers what it gets. None: the
/// pod got nothing within a second.
fn sctp_through_node(
    c: &Cluster,
    backend_ns: usize,
    node: IpAddr,
    port: u16,
    sport: u16,
) -> Option<SctpSeen> {
    use nix::sys::socket::SockProtocol;
    let v6 = node.is_ipv6();
    let tag = 0x5c00_0000 | u32::from(sport);
    let backend = raw::raw_socket(c.ns(backend_ns), v6, SockProtocol::Sctp);
    let client = raw::raw_socket(c.ns(CL), v6, SockProtocol::Sctp);
    raw::send_to(&client, &raw::sctp_packet(sport, port, 0, 1, tag), node);
    let deadline = Instant::now() + Duration::from_secs(1);
    let (src, from_port, dport, held) = loop {
        if Instant::now() > deadline {
            return None;
        }
        let Some((src, l4)) = raw::receive(&backend, v6) else {
            continue;
        };
        if l4.len() >= 32 && l4[12] == 1 && l4[16..20] == tag.to_be_bytes() {
            let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
            break (src, port(0), port(2), raw::crc_holds(&l4));
        }
    };
    raw::send_to(
        &backend,
        &raw::sctp_packet(dport, from_port, tag, 2, tag),
        src,
    );
    let at_backend = (src, from_port, dport, held);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Some((from, l4)) = raw::receive(&client, v6) else {
            continue;
        };
        if l4.len() >= 32 && l4[12] == 2 && l4[4..8] == tag.to_be_bytes() {
            let answer = (
                from,
                u16::from_be_bytes([l4[0], l4[1]]),
                raw::crc_holds(&l4),
            );
            return Some(SctpSeen {
                at_backend,
                answer: Some(answer),
            });
        }
    }
    Some(SctpSeen {
        at_backend,
        answer: None,
    })
}

/// SCTP at host interfaces, over both families, the services given to
/// both nodes first: a `Local` node port keeps the client's address and
/// the port, both ways; a `Cluster` one to a backend on the other node
/// listening on another port has the client masqueraded to node 1's
/// address and a port of the masquerade range, the destination port
/// translated, and the answer translated back to the node port: every
/// packet with a valid CRC32c where it arrives. The same in DSR mode (no
/// SCTP packet would carry the DSR option or header: masqueraded).
fn sctp_checks(c: &Cluster) {
    for (n, driver) in (1u8..).zip(&c.drivers) {
        let on = |ip: Ipv4Addr| (ip == POD1) == (n == 1);
        driver
            .apply(vec![
                Operation::ServiceUpdate(sctp_node_port(
                    "sctp-here",
                    Ipv4Addr::new(10, 96, 0, 5),
                    SCTP_HERE,
                    SCTP_HERE,
                    TrafficPolicy::Local,
                    POD1,
                    on(POD1),
                )),
                Operation::ServiceUpdate(sctp_node_port(
                    "sctp-remote",
                    Ipv4Addr::new(10, 96, 0, 6),
                    SCTP_REMOTE,
                    SCTP_TARGET,
                    TrafficPolicy::Cluster,
                    POD2,
                    on(POD2),
                )),
            ])
            .expect("apply");
    }
    let families = [
        (IpAddr::V4(NODE1), IpAddr::V4(CLIENT)),
        (IpAddr::V6(NODE1_6), IpAddr::V6(CLIENT_6)),
    ];
    for (i, (node, client)) in families.into_iter().enumerate() {
        let sport = 40_001 + 10 * i as u16;
        assert_eq!(
            sctp_through_node(c, P1, node, SCTP_HERE, sport),
            Some(SctpSeen {
                at_backend: (client, sport, SCTP_HERE, true),
                answer: Some((node, SCTP_HERE, true)),
            }),
            "sctp to a Local node port on {node}"
        );
        let remote = sctp_through_node(c, P2, node, SCTP_REMOTE, sport + 1)
            .unwrap_or_else(|| panic!("sctp to {node}:{SCTP_REMOTE} lost"));
        let (src, from_port, dport, held) = remote.at_backend;
        assert_eq!(
            (src, dport, held),
            (node, SCTP_TARGET, true),
            "sctp masqueraded to the backend's port: {remote:?}"
        );
        assert!(SNAT_PORTS.contains(&from_port), "{remote:?}");
        assert_eq!(
            remote.answer,
            Some((node, SCTP_REMOTE, true)),
            "the answer through node 1"
        );
    }
}

/// SCTP at host interfaces in SNAT mode (see `sctp_checks`).
#[test]
fn sctp_node_ports_translate_ports_and_masquerade() {
    if !node::root() {
        return;
    }
    let c = build("xp", ExternalServiceMode::Snat);
    sctp_checks(&c);
}

/// A UDP datagram from `src` to `dst` as an IPv4 raw socket with
/// `IPPROTO_RAW` sends it (the kernel fills in the length and header
/// checksum), with the DSR option naming `frontend` when there is one.
fn udp4_packet(src: SocketAddr, dst: SocketAddr, frontend: Option<SocketAddr>) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 addresses");
    };
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend(s.octets());
    p.extend(d.octets());
    if let Some(fe) = frontend {
        let IpAddr::V4(a) = fe.ip() else {
            panic!("an IPv4 frontend");
        };
        p[0] = 0x47;
        p.extend([0x9e, 8]);
        p.extend(fe.port().to_be_bytes());
        p.extend(a.octets());
    }
    p.extend(src.port().to_be_bytes());
    p.extend(dst.port().to_be_bytes());
    p.extend(9u16.to_be_bytes());
    p.extend([0, 0, b'w']);
    p
}

/// The same over IPv6 (`IPPROTO_RAW` implies the header included), the
/// DSR header a Destination Options header of 24 bytes.
fn udp6_packet(src: SocketAddr, dst: SocketAddr, frontend: Option<SocketAddr>) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv6 addresses");
    };
    let mut ext = vec![];
    if let Some(fe) = frontend {
        let IpAddr::V6(a) = fe.ip() else {
            panic!("an IPv6 frontend");
        };
        ext.extend([17, 2, 0x1e, 18]);
        ext.extend(a.octets());
        ext.extend(fe.port().to_be_bytes());
        ext.extend([0, 0]);
    }
    let mut udp = vec![];
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend(9u16.to_be_bytes());
    udp.extend([0, 0, b'w']);
    let pseudo_len = (udp.len() as u32).to_be_bytes();
    let sum =
        raw::internet_checksum(&[&s.octets(), &d.octets(), &pseudo_len, &[0, 0, 0, 17], &udp]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let next = if ext.is_empty() { 17 } else { 60 };
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(((ext.len() + udp.len()) as u16).to_be_bytes());
    p.extend([next, 64]);
    p.extend(s.octets());
    p.extend(d.octets());
    p.extend(ext);
    p.extend(udp);
    p
}

/// Sends a UDP datagram from the client straight to `dst` (a pod),
/// carrying the DSR option or header naming `frontend` when there is
/// one, and gives the source of the answer the client got, if any.
fn answer_to_forged(c: &Cluster, dst: SocketAddr, frontend: Option<SocketAddr>) -> Option<IpAddr> {
    let v6 = dst.is_ipv6();
    let (client, sport) = if v6 {
        (IpAddr::V6(CLIENT_6), 23_001)
    } else {
        (IpAddr::V4(CLIENT), 23_002)
    };
    let src = SocketAddr::new(client, sport);
    let packet = if v6 {
        udp6_packet(src, dst, frontend)
    } else {
        udp4_packet(src, dst, frontend)
    };
    let raw = raw::raw_socket(c.ns(CL), v6, nix::sys::socket::SockProtocol::Raw);
    c.ns(CL)
        .run(move || {
            let answers = UdpSocket::bind(src).unwrap();
            answers
                .set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            raw::send_to(&raw, &packet, dst.ip());
            let mut buf = [0u8; 64];
            answers.recv_from(&mut buf).ok().map(|(_, from)| from.ip())
        })
        .unwrap()
}

/// The backend's node believes a DSR option or header only when the
/// frontend it names is one another node sends: a client that sends one
/// straight to a pod, naming an address of its choice (or a cluster IP),
/// gets no answer (node 2 drops it), where the same datagram without it
/// is answered by the pod; the real path through node 1 works; and once
/// node 2 is told node 1 is no longer a node, node 1's DSR connections
/// are dropped there, until it is told again.
#[test]
fn forged_dsr_frontends_are_dropped_and_a_removed_node_is_not_believed() {
    if !node::root() {
        return;
    }
    let c = build("xf", ExternalServiceMode::Dsr);
    let _servers = servers(&c);
    let route = |to: &str, via: IpAddr| Route::to(to.parse().unwrap()).via(via);
    replace_route(c.ns(CL), &route("10.70.2.0/24", NODE2.into())).unwrap();
    replace_route(c.ns(CL), &route("fd00:70:2::/64", NODE2_6.into())).unwrap();

    for (pod, forged) in [
        (
            SocketAddr::new(POD2.into(), UDP_PORT),
            [
                // An address of the client's choice, the node port's
                // port; a cluster IP and port (not external).
                SocketAddr::new(Ipv4Addr::new(192, 168, 77, 50).into(), REMOTE_UDP),
                SocketAddr::new(Ipv4Addr::new(10, 96, 0, 3).into(), 53),
            ],
        ),
        (
            SocketAddr::new(POD2_6.into(), UDP_PORT),
            [
                SocketAddr::new(
                    "fd00:77::50".parse::<Ipv6Addr>().unwrap().into(),
                    REMOTE_UDP,
                ),
                SocketAddr::new(CLIENT_6.into(), 53),
            ],
        ),
    ] {
        assert_eq!(
            answer_to_forged(&c, pod, None),
            Some(pod.ip()),
            "{pod}: a datagram without the option is answered by the pod"
        );
        for fe in forged {
            assert_eq!(
                answer_to_forged(&c, pod, Some(fe)),
                None,
                "{pod}: a datagram naming {fe} is dropped, not answered from it"
            );
        }
    }

    // The real thing, both families, through node 1.
    let via_node1 = [
        SocketAddr::new(NODE1.into(), REMOTE_UDP),
        SocketAddr::new(NODE1_6.into(), REMOTE_UDP),
    ];
    for fe in via_node1 {
        assert!(udp_who(c.ns(CL), fe).is_some(), "{fe}: DSR through node 1");
    }
    // Node 2 no longer counts node 1 as a node: its DSR is dropped.
    c.drivers[1]
        .apply(vec![node_addresses(&[])])
        .expect("apply");
    for fe in via_node1 {
        assert_eq!(udp_who(c.ns(CL), fe), None, "{fe}: node 1 not believed");
        assert!(
            times_out(&c, SocketAddr::new(fe.ip(), REMOTE)),
            "{fe}: a TCP connection through node 1 is dropped at node 2"
        );
    }
    c.drivers[1]
        .apply(vec![node_addresses(&[1])])
        .expect("apply");
    for fe in via_node1 {
        assert!(udp_who(c.ns(CL), fe).is_some(), "{fe}: believed again");
    }
}

/// On a host endpoint's interface (no service translation there) the
/// backend's node handles the DSR option and header the same way: from
/// node 1 they are taken off, the pod sees the client and its replies
/// leave from the frontend, both families; a client's forged one is
/// dropped.
#[test]
fn a_host_endpoints_interface_takes_dsr_off_under_the_same_rule() {
    if !node::root() {
        return;
    }
    let c = build("xh", ExternalServiceMode::Dsr);
    let _servers = servers(&c);
    c.drivers[1]
        .apply(vec![Operation::HostEndpointUpdate(HostEndpoint {
            id: "n2-eth0".into(),
            interface_name: "eth0".into(),
            expected_ips: vec![],
            tiers: vec![],
            pre_dnat_tiers: vec![],
            untracked_tiers: vec![],
            forward_tiers: vec![],
            profiles: vec!["allow".into()],
        })])
        .expect("apply");
    let route = |to: &str, via: IpAddr| Route::to(to.parse().unwrap()).via(via);
    replace_route(c.ns(CL), &route("10.70.2.0/24", NODE2.into())).unwrap();
    replace_route(c.ns(CL), &route("fd00:70:2::/64", NODE2_6.into())).unwrap();

    for (peer, backend) in seen(&c, NODE1, REMOTE) {
        assert_eq!(peer, IpAddr::V4(CLIENT), "the pod saw the client");
        assert_eq!(backend, SocketAddr::new(POD2.into(), TCP_PORT));
    }
    for node in [IpAddr::V4(NODE1), IpAddr::V6(NODE1_6)] {
        let client = if node.is_ipv4() {
            IpAddr::V4(CLIENT)
        } else {
            IpAddr::V6(CLIENT_6)
        };
        assert_eq!(
            udp_who(c.ns(CL), SocketAddr::new(node, REMOTE_UDP)),
            Some(client),
            "{node}: UDP over DSR, answered from the frontend"
        );
        assert!(
            echoes(c.ns(CL), SocketAddr::new(node, REMOTE), 8),
            "{node}: TCP over DSR"
        );
    }
    for (pod, fe) in [
        (
            SocketAddr::new(POD2.into(), UDP_PORT),
            SocketAddr::new(Ipv4Addr::new(192, 168, 77, 50).into(), REMOTE_UDP),
        ),
        (
            SocketAddr::new(POD2_6.into(), UDP_PORT),
            SocketAddr::new(CLIENT_6.into(), 53),
        ),
    ] {
        assert_eq!(answer_to_forged(&c, pod, None), Some(pod.ip()));
        assert_eq!(answer_to_forged(&c, pod, Some(fe)), None, "{fe}: dropped");
    }
}
