#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Services on the eBPF dataplane with real packets: pods in network
//! namespaces behind veths to a node namespace (the conformance topology),
//! ClusterIPs translated by the programs at the pods' interfaces. Each
//! backend runs a small "who" server that answers with its own address and
//! the address it saw the client at. Checked: every backend is reached,
//! replies come from the ClusterIP, the backends' policy sees the client,
//! a service without backends refuses at once (TCP and UDP), hairpin,
//! session affinity, an established connection across backend changes
//! and its reset when its backend goes, a connected UDP socket moved to
//! a live backend, checksums of a datagram that carries a full one, a
//! driver restart. Everything (namespaces, pins) is
//! removed at the end, also on failure.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{
    Backend, Balancing, Match, Operation, Service, ServicePort, TrafficPolicy,
};
use manul_dataplane_bpf::BpfConfig;
use manul_dataplane_conformance::services::{self, ServiceReport};
use manul_dataplane_conformance::topology::Pod;
use manul_dataplane_conformance::{ConformanceError, Factory};
use manul_netns::{NetNs, ProbeOutcome, open_connection, tcp_connect, udp_probe};

mod node;
mod raw;
mod rules;

use node::{Node, SharedNodes};
use raw::internet_checksum;
use rules::{allow_profile, backend_policy, pod_endpoint};

/// The "who" servers' ports on every pod.
const WHO_TCP: u16 = 7000;
const WHO_UDP: u16 = 7001;
/// The address a hairpinned connection comes from (manul_maps.h).
const HAIRPIN_SNAT: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 2);

const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SELF: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const STICKY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
const HELD: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 15);

/// A server in a pod that answers every TCP connection, and every UDP
/// datagram, with "SERVER CLIENT" (the addresses it saw).
struct Who {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Who {
    fn start(pod: &Pod) -> Who {
        let ip = pod.ip;
        let (tcp, udp) = pod
            .netns
            .run(move || {
                let tcp = TcpListener::bind((ip, WHO_TCP)).unwrap();
                let udp = UdpSocket::bind((ip, WHO_UDP)).unwrap();
                (tcp, udp)
            })
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut c, peer)) => {
                        let _ = writeln!(c, "{ip} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let s = stop.clone();
        let u = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{ip} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        Who {
            stop,
            threads: vec![t, u],
        }
    }
}

impl Drop for Who {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// (server, client) as a who server reported them.
fn parse_who(line: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let mut it = line.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Connects over TCP from `ns` to `dst`: who answered, and whom it saw.
fn who_tcp(ns: &NetNs, dst: SocketAddr) -> Option<(Ipv4Addr, Ipv4Addr)> {
    ns.run(move || {
        let c = TcpStream::connect_timeout(&dst, Duration::from_millis(500)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).ok()?;
        parse_who(&line)
    })
    .unwrap()
}

/// Asks over a connected UDP socket (it takes replies from `dst` only).
fn who_udp(ns: &NetNs, dst: SocketAddr) -> Option<(Ipv4Addr, Ipv4Addr)> {
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect(dst).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.send(b"who").ok()?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).ok()?;
        parse_who(std::str::from_utf8(&buf[..n]).ok()?)
    })
    .unwrap()
}

/// Asks the who server behind a connected UDP socket: who answered.
fn ask(s: &UdpSocket) -> Option<Ipv4Addr> {
    s.send(b"who").ok()?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).ok()?;
    parse_who(std::str::from_utf8(&buf[..n]).ok()?).map(|w| w.0)
}

/// Sends one UDP datagram to `frontend:port` from a raw socket in
/// `client` (its checksum is complete, not left to offload) and captures
/// it as `backend` receives it: its destination, destination port, and
/// whether its IP and UDP checksums verify.
fn full_checksum_datagram(
    client: &Pod,
    backend: &Pod,
    frontend: Ipv4Addr,
    port: u16,
) -> Option<(Ipv4Addr, u16, bool, bool)> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
    };
    use std::os::fd::AsRawFd;

    const SPORT: u16 = 40000;
    let capture = raw::capture_socket(&backend.netns);
    let payload = b"checksum";
    let mut udp = Vec::new();
    udp.extend_from_slice(&SPORT.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo = |src: Ipv4Addr, dst: Ipv4Addr, len: usize| {
        let mut p = Vec::new();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    };
    let sum = internet_checksum(&[&pseudo(client.ip, frontend, udp.len()), &udp]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    client
        .netns
        .run(move || {
            let s = socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Udp,
            )
            .unwrap();
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(frontend, 0));
            sendto(s.as_raw_fd(), &udp, &to, MsgFlags::empty()).unwrap();
        })
        .unwrap();
    raw::capture(&capture, Duration::from_secs(2), |f| {
        if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] {
            return None;
        }
        let iph = &f[14..];
        let ihl = usize::from(iph[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([iph[2], iph[3]]));
        if iph[9] != 17 || iph.len() < total || total < ihl + 8 {
            return None;
        }
        let src = Ipv4Addr::new(iph[12], iph[13], iph[14], iph[15]);
        let dst = Ipv4Addr::new(iph[16], iph[17], iph[18], iph[19]);
        let l4 = &iph[ihl..total];
        if src != client.ip || u16::from_be_bytes([l4[0], l4[1]]) != SPORT {
            return None;
        }
        let ip_ok = internet_checksum(&[&iph[..ihl]]) == 0;
        let udp_ok = internet_checksum(&[&pseudo(src, dst, l4.len()), l4]) == 0;
        Some((dst, u16::from_be_bytes([l4[2], l4[3]]), ip_ok, udp_ok))
    })
}

fn service(name: &str, ip: Ipv4Addr, ports: Vec<ServicePort>, affinity: Option<u32>) -> Service {
    Service {
        namespace: "ns".into(),
        name: name.into(),
        cluster_ips: vec![IpAddr::V4(ip)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Cluster,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: affinity,
        health_check_node_port: None,
        balancing: Balancing::Random,
        ports,
    }
}

fn port(name: &str, protocol: u8, port: u16, target: u16, backends: &[&Pod]) -> ServicePort {
    let backends: Vec<Backend> = backends
        .iter()
        .map(|p| Backend {
            ip: IpAddr::V4(p.ip),
            port: target,
            local: true,
            ready: true,
        })
        .collect();
    ServicePort {
        name: name.into(),
        protocol,
        port,
        node_port: None,
        local_backends: backends.clone(),
        backends,
    }
}

#[test]
fn cluster_ips_with_real_packets() {
    if !node::root() {
        return;
    }
    let pods = [("a", 2), ("c", 3), ("b1", 11), ("b2", 12), ("b3", 13)]
        .map(|(name, d)| (name, Ipv4Addr::new(10, 65, 0, d)));
    let setup = Node::new("sv", &pods);
    let pod = |n: &str| setup.pod(n);
    let (a, c) = (pod("a"), pod("c"));
    let backends = [pod("b1"), pod("b2"), pod("b3")];
    let _who: Vec<Who> = [a, c]
        .iter()
        .chain(&backends)
        .map(|p| Who::start(p))
        .collect();

    let driver = setup.driver(|_| {});

    // Backends accept only client A. (A hairpinned connection is judged
    // by the pod's egress policy only: it never leaves the pod's
    // interface.)
    let only_a = Match {
        nets: vec![IpNet::new(a.ip.into(), 32).unwrap()],
        ..Match::default()
    };
    let web = service(
        "web",
        WEB,
        vec![
            port("who", 6, 80, WHO_TCP, &backends),
            port("who-udp", 17, 53, WHO_UDP, &backends),
        ],
        None,
    );
    let mut ops = vec![
        backend_policy(only_a),
        allow_profile(),
        pod_endpoint(a, false),
        pod_endpoint(c, false),
    ];
    ops.extend(backends.iter().map(|b| pod_endpoint(b, true)));
    ops.push(Operation::ServiceUpdate(web.clone()));
    ops.push(Operation::ServiceUpdate(service(
        "empty",
        EMPTY,
        vec![
            port("tcp", 6, 80, WHO_TCP, &[]),
            port("udp", 17, 53, WHO_UDP, &[]),
        ],
        None,
    )));
    ops.push(Operation::ServiceUpdate(service(
        "self",
        SELF,
        vec![port("who", 6, 80, WHO_TCP, &[backends[0]])],
        None,
    )));
    ops.push(Operation::ServiceUpdate(service(
        "sticky",
        STICKY,
        vec![port("who", 6, 80, WHO_TCP, &backends)],
        Some(60),
    )));
    ops.push(Operation::ServiceUpdate(service(
        "held",
        HELD,
        vec![port("echo", 6, 8080, 8080, &[backends[0]])],
        None,
    )));
    ops.push(Operation::ServiceUpdate(service(
        "dns",
        DNS,
        vec![port("dns", 17, 53, WHO_UDP, &[backends[0]])],
        None,
    )));
    ops.push(Operation::InSync);
    driver.apply(ops.clone()).expect("apply");

    // Each backend is reached through the ClusterIP; each saw client A.
    let to_web = SocketAddr::new(WEB.into(), 80);
    let mut reached = BTreeSet::new();
    for _ in 0..60 {
        let (server, client) = who_tcp(&a.netns, to_web).expect("a reaches the ClusterIP");
        assert_eq!(client, a.ip, "the backend saw the client's address");
        reached.insert(server);
        if reached.len() == backends.len() {
            break;
        }
    }
    let all: BTreeSet<Ipv4Addr> = backends.iter().map(|b| b.ip).collect();
    assert_eq!(reached, all, "every backend reached");

    // UDP: a connected socket gets its answer from the ClusterIP.
    let (server, client) =
        who_udp(&a.netns, SocketAddr::new(WEB.into(), 53)).expect("udp through the ClusterIP");
    assert!(all.contains(&server));
    assert_eq!(client, a.ip);

    // The backends' ingress policy judges the client: C is denied.
    assert_eq!(
        who_tcp(&c.netns, to_web),
        None,
        "c passed the backends' policy"
    );
    assert_eq!(who_udp(&c.netns, SocketAddr::new(WEB.into(), 53)), None);

    // No backends: refused at once, not left to time out.
    let started = Instant::now();
    let outcome = tcp_connect(
        &a.netns,
        SocketAddr::new(EMPTY.into(), 80),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        outcome,
        ProbeOutcome::Refused,
        "tcp to a service without backends"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let outcome = udp_probe(
        &a.netns,
        SocketAddr::new(EMPTY.into(), 53),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        outcome,
        ProbeOutcome::Refused,
        "udp to a service without backends"
    );

    // Hairpin: b1 reaches the service it backs and gets itself, from the
    // hairpin address.
    let b1 = backends[0];
    assert_eq!(
        who_tcp(&b1.netns, SocketAddr::new(SELF.into(), 80)),
        Some((b1.ip, HAIRPIN_SNAT)),
        "hairpin"
    );

    // Session affinity: one client keeps its backend.
    let sticky: BTreeSet<Ipv4Addr> = (0..12)
        .map(|_| {
            who_tcp(&a.netns, SocketAddr::new(STICKY.into(), 80))
                .expect("sticky")
                .0
        })
        .collect();
    assert_eq!(sticky.len(), 1, "affinity: {sticky:?}");

    // An established connection keeps its backend when the list changes
    // around it, and is reset when its backend leaves the list.
    let mut held = open_connection(
        &a.netns,
        SocketAddr::new(HELD.into(), 8080),
        Duration::from_secs(2),
    )
    .expect("held connection through the ClusterIP");
    assert!(held.roundtrip(Duration::from_secs(2)).unwrap());
    let held_backends = |list: &[&Pod]| {
        vec![Operation::ServiceUpdate(service(
            "held",
            HELD,
            vec![port("echo", 6, 8080, 8080, list)],
            None,
        ))]
    };
    driver
        .apply(held_backends(&backends))
        .expect("add backends");
    for _ in 0..5 {
        assert!(
            held.roundtrip(Duration::from_secs(2)).unwrap(),
            "the established connection lost its backend"
        );
    }
    driver
        .apply(held_backends(&[c]))
        .expect("replace the backend");
    let started = Instant::now();
    assert!(
        !held.roundtrip(Duration::from_secs(3)).unwrap(),
        "a connection to a removed backend still passes data"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not reset at once: {:?}",
        started.elapsed()
    );
    // New connections go to the new backend.
    assert_eq!(
        tcp_connect(
            &a.netns,
            SocketAddr::new(HELD.into(), 8080),
            Duration::from_secs(2)
        )
        .unwrap(),
        ProbeOutcome::Connected
    );
    held.close();

    // A connected UDP socket whose backend went away is answered by the
    // new one (its flow is forgotten), from the ClusterIP.
    let (server, socket) = a
        .netns
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect((DNS, 53)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            s
        })
        .map(|s| (ask(&s), s))
        .unwrap();
    assert_eq!(server, Some(backends[0].ip));
    driver
        .apply(vec![Operation::ServiceUpdate(service(
            "dns",
            DNS,
            vec![port("dns", 17, 53, WHO_UDP, &[backends[1]])],
            None,
        ))])
        .expect("move the dns backend");
    assert_eq!(
        ask(&socket),
        Some(backends[1].ip),
        "udp flow stuck on a removed backend"
    );
    drop(socket);

    // A datagram with a full checksum (as from a NIC, where a local
    // socket's carries a partial one the kernel trusts) reaches the
    // backend translated with both checksums right.
    let seen = full_checksum_datagram(a, backends[1], DNS, 53);
    assert_eq!(
        seen,
        Some((backends[1].ip, WHO_UDP, true, true)),
        "translated datagram (destination, port, IP checksum, UDP checksum)"
    );

    // A restarted driver keeps translating what the earlier run
    // programmed until it is told the state again.
    driver.restart().expect("restart");
    let (server, _) = who_tcp(&a.netns, to_web).expect("after a restart, before the resync");
    assert!(all.contains(&server));
    driver.apply(ops).expect("resync");
    let (server, _) = who_tcp(&a.netns, to_web).expect("after the resync");
    assert!(all.contains(&server));

    // Removing the service stops the translation.
    driver
        .apply(vec![Operation::ServiceRemove {
            namespace: "ns".into(),
            name: "web".into(),
        }])
        .expect("remove");
    assert_eq!(
        who_tcp(&a.netns, to_web),
        None,
        "a removed service still answers"
    );
    drop(driver);
}

/// A shared case runner of `manul_dataplane_conformance` (its name tag
/// and an eBPF driver factory: its report, or the cases that failed).
type SharedCases = fn(&str, Arc<Factory>) -> Result<ServiceReport, ConformanceError>;

/// Runs shared cases against eBPF drivers pinning under
/// [`node::PIN_ROOT`] (`configure` adjusts each node's configuration),
/// removes the pins of every node it made a driver for, and fails on any
/// failed case.
fn run_shared(tag: &str, run: SharedCases, configure: fn(&mut BpfConfig)) {
    if !node::root() {
        return;
    }
    let nodes = SharedNodes::default();
    let result = run(tag, nodes.factory(configure));
    nodes.purge();
    match result {
        Ok(report) => println!("{}", report.table()),
        Err(ConformanceError::Mismatch(failed)) => panic!("failed: {failed:#?}"),
        Err(e) => panic!("{e}"),
    }
}

/// The shared dual-stack cases: a service with an IPv4 and an IPv6
/// ClusterIP reached over each family, an IPv6 port without backends
/// refused at once, IPv6 hairpin. Every case must pass.
#[test]
fn shared_dual_stack_cases() {
    run_shared("s6b", services::run_dual_stack_cases, |_| {});
}

/// The shared flow cases: TCP and UDP through a ClusterIP, an external IP
/// and a node port of each family, each observed with the backend pod as
/// destination and the frontend that names the Service (flow
/// observations on; updates every 200 ms).
#[test]
fn shared_flow_cases() {
    run_shared("sfb", services::run_flow_cases, |config| {
        config.flow_observations = true;
        config.flow_update_interval = Some(Duration::from_millis(200));
    });
}

/// The shared contested-frontend cases: services contesting an external
/// IP and a node port under different traffic policies (or without
/// backends); the first keeps every frontend, the other takes them when
/// it goes. Every case must pass.
#[test]
fn shared_contested_frontend_cases() {
    run_shared("scb", services::run_contested_cases, |_| {});
}

/// The shared `Local` traffic policy cases: the local backend only;
/// dropped when every backend is elsewhere. Every case must pass.
#[test]
fn shared_local_policy_cases() {
    run_shared("slb", services::run_local_policy_cases, |_| {});
}

/// The shared service cases (`manul_dataplane_conformance::services`),
/// host processes included (through `manul-svc` and loopback). Every case
/// must pass.
#[test]
fn shared_service_cases() {
    run_shared("svb", services::run_service_cases, |_| {});
}

/// The external IP of the Maglev case's Service.
const MAGLEV_LB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The node's and the external client's addresses on their link.
const MAGLEV_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const MAGLEV_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client ports the Maglev case's flows come from.
const MAGLEV_PORTS: std::ops::Range<u16> = 20_000..20_400;

/// A Service marked for Maglev: a ClusterIP and an external IP, UDP 53 to
/// the who servers of `backends`.
fn maglev_service(backends: &[&Pod]) -> Service {
    let mut svc = service(
        "lb",
        Ipv4Addr::new(10, 96, 0, 50),
        vec![port("dns", 17, 53, WHO_UDP, backends)],
        None,
    );
    svc.external_ips = vec![IpAddr::V4(MAGLEV_LB)];
    svc.balancing = Balancing::Maglev;
    svc
}

/// For each client port, the backend that answered a datagram from it to
/// the external IP (a fresh socket per port, bound to it).
fn maglev_round(ext: &NetNs) -> Vec<Option<Ipv4Addr>> {
    ext.run(|| {
        MAGLEV_PORTS
            .map(|p| {
                let s = UdpSocket::bind((MAGLEV_CLIENT, p)).ok()?;
                s.connect((MAGLEV_LB, 53)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                ask(&s)
            })
            .collect()
    })
    .unwrap()
}

/// What dataplane-api's table and flow hash say each client port gets.
fn maglev_predicted(backends: &[&Pod]) -> Vec<Ipv4Addr> {
    use manul_dataplane_api::maglev::{MaglevTable, flow_hash};
    let list: Vec<Backend> = backends
        .iter()
        .map(|p| Backend {
            ip: IpAddr::V4(p.ip),
            port: WHO_UDP,
            local: true,
            ready: true,
        })
        .collect();
    let table = MaglevTable::build(&list);
    MAGLEV_PORTS
        .map(|p| {
            let h = flow_hash(MAGLEV_CLIENT.into(), MAGLEV_LB.into(), p, 53, 17);
            match table.lookup(h).map(|b| b.ip) {
                Some(IpAddr::V4(ip)) => ip,
                other => panic!("no IPv4 backend for port {p}: {other:?}"),
            }
        })
        .collect()
}

/// Maglev for external traffic with real packets: an external client
/// sends UDP from many ports to a Service's external IP; each flow lands
/// on the backend dataplane-api's table and flow hash predict (so the
/// program hashes as every node does), spread over all ten backends. One
/// backend goes: on the same node its flows move to the backend the new
/// table gives them and the others keep theirs (their NAT entries); on a
/// fresh node programmed with the nine (as where an upstream balancer
/// sends a flow next), every flow takes the new table's slot, which moves
/// only a small fraction of the surviving backends' flows.
#[test]
fn maglev_external_ip_with_real_packets() {
    if !node::root() {
        return;
    }
    let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let pods: Vec<(&str, Ipv4Addr)> = (0..10u8)
        .map(|i| {
            (
                names[usize::from(i)].as_str(),
                Ipv4Addr::new(10, 66, 0, 20 + i),
            )
        })
        .collect();
    let setup = Node::new("mg", &pods);
    let ext = NetNs::create(&format!("{}-ext", setup.name())).expect("external namespace");
    manul_netns::create_veth(setup.ns(), "ext0", &ext, "eth0").expect("external veth");
    for (ns, ifname, ip) in [
        (setup.ns(), "ext0", MAGLEV_NODE),
        (&ext, "eth0", MAGLEV_CLIENT),
    ] {
        manul_netns::add_address(ns, ifname, IpNet::new(ip.into(), 24).unwrap()).unwrap();
        manul_netns::link_up(ns, ifname).unwrap();
    }
    manul_netns::replace_route(
        &ext,
        &manul_netns::Route::to(IpNet::V4(Default::default())).via(MAGLEV_NODE.into()),
    )
    .expect("external default route");
    let pods: Vec<&Pod> = names.iter().map(|n| setup.pod(n)).collect();
    let _who: Vec<Who> = pods.iter().map(|p| Who::start(p)).collect();

    let ops = |backends: &[&Pod]| {
        let mut ops = vec![allow_profile()];
        ops.extend(pods.iter().map(|p| pod_endpoint(p, false)));
        ops.push(Operation::ServiceUpdate(maglev_service(backends)));
        ops.push(Operation::InSync);
        ops
    };
    let driver = setup.driver(|_| {});
    driver.apply(ops(&pods)).expect("apply");

    // Every flow lands where the table says, spread over all backends.
    let first = maglev_round(&ext);
    let want = maglev_predicted(&pods);
    let got: Vec<Ipv4Addr> = first
        .iter()
        .map(|b| b.expect("every flow answered"))
        .collect();
    assert_eq!(got, want, "the kernel's picks differ from the table's");
    let mut per_backend: std::collections::BTreeMap<Ipv4Addr, usize> = Default::default();
    for b in &got {
        *per_backend.entry(*b).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 10, "{per_backend:?}");
    assert!(per_backend.values().all(|n| *n >= 15), "{per_backend:?}");

    // One backend goes (m3).
    let gone = pods[3].ip;
    let nine: Vec<&Pod> = pods.iter().copied().filter(|p| p.ip != gone).collect();
    driver.apply(ops(&nine)).expect("remove a backend");
    let after = maglev_predicted(&nine);
    let same_node = maglev_round(&ext);
    for (i, (before, now)) in got.iter().zip(&same_node).enumerate() {
        let want = if *before == gone { after[i] } else { *before };
        assert_eq!(*now, Some(want), "port {}", MAGLEV_PORTS.start + i as u16);
    }
    drop(driver);

    // A fresh node (no NAT entries) with the nine: the new table decides.
    setup.pins.purge().expect("purge");
    let driver = setup.driver(|_| {});
    driver.apply(ops(&nine)).expect("apply the nine");
    let fresh: Vec<Ipv4Addr> = maglev_round(&ext)
        .into_iter()
        .map(|b| b.expect("every flow answered on the fresh node"))
        .collect();
    assert_eq!(
        fresh, after,
        "the fresh node's picks differ from the table's"
    );
    let survivors: Vec<usize> = (0..got.len()).filter(|i| got[*i] != gone).collect();
    let moved = survivors.iter().filter(|i| fresh[**i] != got[**i]).count();
    let fraction = moved as f64 / survivors.len() as f64;
    println!(
        "{{\"maglev_real_flows\":{},\"surviving\":{},\"moved\":{moved},\"fraction\":{fraction:.4}}}",
        got.len(),
        survivors.len()
    );
    assert!(fraction < 0.05, "{moved} of {} moved", survivors.len());
    drop(driver);
    drop(ext);
}
