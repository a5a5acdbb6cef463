#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Connect-time load balancing with real sockets: the test process moves
//! itself into a cgroup of its own (removed at the end, also on failure;
//! the programs are attached there, never to the host's root cgroup), so
//! every socket it opens, in any namespace, goes through the cgroup
//! programs. This binary holds one test, so nothing else runs in that
//! cgroup meanwhile.
//!
//! Checked, in a node namespace (not the root one) with pods: only the
//! node's and the pods' namespaces are translated, not a namespace of the
//! same cgroup joined to the node by a veth that is no workload
//! interface, and nothing once `manul_ctlb_netns` is emptied; a
//! host-networked process reaches a ClusterIP over TCP and UDP, and
//! `getpeername` and `recvfrom` answer with the service address; a
//! connected UDP socket (a host process's and a pod's), and an
//! established TCP connection, whose backend leaves the list get an
//! error on their next use (the socket was destroyed; no answer from the
//! old backend, which still runs), and connecting again reaches the new
//! backend; the same for IPv6 sockets and IPv6 services, with a node
//! port, session affinity and refusals besides (`ctlb6/`); then the
//! shared service cases
//! (`manul_dataplane_conformance::services`), every one: the host-process
//! cases the TC programs alone cannot pass, and the external client's
//! (its namespace in this cgroup too, but no pod's) through the TC
//! programs' node-port path; and the shared dual-stack cases.

use std::fs;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use ipnet::IpNet;
use manul_dataplane_api::{Backend, Balancing, Operation, Service, ServicePort, TrafficPolicy};
use manul_dataplane_bpf::abi::{
    MANUL_CTLB_CNT_TRANSLATED, MANUL_CTLB_NETNS_NODE, MANUL_CTLB_NETNS_POD,
};
use manul_dataplane_bpf::{CtlbConfig, cgroup2_mount};
use manul_dataplane_conformance::driver_thread::DriverThread;
use manul_dataplane_conformance::topology::{Pod, Topology};
use manul_netns::NetNs;

mod ctlb6;
mod node;
mod rules;

use node::{Node, PIN_ROOT, SharedNodes};
use rules::{allow_profile, pod_endpoint};

/// The "who" servers' ports on the backends, and the port that holds TCP
/// connections open.
const WHO_UDP: u16 = 7001;
const WHO_TCP: u16 = 7000;
const HOLD_TCP: u16 = 7002;
const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 53);
/// The node namespace's address.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 255, 1);
const DNS_PORT: u16 = 53;
const HOLD_PORT: u16 = 80;

/// This process in a cgroup of its own; moved back and the cgroup removed
/// on drop.
struct OwnCgroup {
    path: PathBuf,
    back: PathBuf,
}

impl OwnCgroup {
    fn enter() -> OwnCgroup {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = cgroup2_mount(&info).expect("a cgroup v2 mount");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("this process's cgroup v2")
            .trim_start_matches('/')
            .to_string();
        let path = mount.join(format!("manul-test-ctlb-{}", std::process::id()));
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap();
        let cg = OwnCgroup {
            back: mount.join(rel),
            path,
        };
        fs::write(cg.path.join("cgroup.procs"), std::process::id().to_string()).unwrap();
        cg
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = fs::write(
            self.back.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = fs::remove_dir(&self.path);
    }
}

/// A backend's servers: UDP answers every datagram with its own address;
/// TCP on [`WHO_TCP`] writes its address and closes, on [`HOLD_TCP`] holds
/// the connection until the client closes it.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(pod: &Pod) -> Servers {
        Servers::start_at(&pod.netns, IpAddr::V4(pod.ip))
    }

    /// The servers on `ip` in `netns`.
    fn start_at(netns: &NetNs, ip: IpAddr) -> Servers {
        let (udp, who, hold) = netns
            .run(move || {
                (
                    UdpSocket::bind((ip, WHO_UDP)).unwrap(),
                    TcpListener::bind((ip, WHO_TCP)).unwrap(),
                    TcpListener::bind((ip, HOLD_TCP)).unwrap(),
                )
            })
            .unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        who.set_nonblocking(true).unwrap();
        hold.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(ip.to_string().as_bytes(), peer);
                }
            }
        }));
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok((mut c, _)) = who.accept() {
                    let _ = writeln!(c, "{ip}");
                }
                if let Ok((c, _)) = hold.accept() {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn dns_service(backend: &Pod) -> Service {
    let port = |name: &str, protocol: u8, port: u16, target: u16| {
        let backends = vec![Backend {
            ip: IpAddr::V4(backend.ip),
            port: target,
            local: true,
            ready: true,
        }];
        ServicePort {
            name: name.into(),
            protocol,
            port,
            node_port: None,
            local_backends: backends.clone(),
            backends,
        }
    };
    Service {
        namespace: "ns".into(),
        name: "dns".into(),
        cluster_ips: vec![IpAddr::V4(DNS)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Cluster,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: None,
        health_check_node_port: None,
        balancing: Balancing::Random,
        ports: vec![
            port("dns", 17, DNS_PORT, WHO_UDP),
            port("dns-tcp", 6, DNS_PORT, WHO_TCP),
            port("hold", 6, HOLD_PORT, HOLD_TCP),
        ],
    }
}

/// Asks over a connected UDP socket: who answered, or the error.
fn ask(s: &UdpSocket) -> Result<IpAddr, ErrorKind> {
    s.send(b"who").map_err(|e| e.kind())?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).map_err(|e| e.kind())?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or(ErrorKind::InvalidData)
}

/// The wildcard address of `dst`'s family, port 0.
fn any_of(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// A connected UDP socket opened in `ns`.
fn connected_udp(ns: &NetNs, dst: SocketAddr) -> UdpSocket {
    ns.run(move || {
        let s = UdpSocket::bind(any_of(dst)).unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    })
    .unwrap()
}

/// Connects over TCP from `ns`: (what `getpeername` answered, the
/// backend's address the server wrote).
fn who_tcp(ns: &NetNs, dst: SocketAddr) -> (SocketAddr, IpAddr) {
    ns.run(move || {
        let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
        let peer = c.peer_addr().unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        (peer, text.trim().parse().unwrap())
    })
    .unwrap()
}

/// One unconnected datagram from `ns`: (who `recvfrom` says answered,
/// the backend's address in the answer).
fn who_udp(ns: &NetNs, dst: SocketAddr) -> (SocketAddr, IpAddr) {
    ns.run(move || {
        let s = UdpSocket::bind(any_of(dst)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"who", dst).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        (from, text.parse().unwrap())
    })
    .unwrap()
}

/// The sockets connected before the backend moves.
struct Before {
    host_udp: UdpSocket,
    pod_udp: UdpSocket,
    /// An IPv6 socket connected to the IPv4-mapped ClusterIP.
    host_udp_mapped: UdpSocket,
    host_tcp: TcpStream,
}

/// How many connects and datagrams the programs translated (their
/// pinned counters, summed over CPUs).
fn translated(maps: &Path) -> u64 {
    let data = MapData::from_pin(maps.join("manul_ctlb_cnt")).unwrap();
    let counters = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(data)).unwrap();
    counters
        .get(&MANUL_CTLB_CNT_TRANSLATED, 0)
        .unwrap()
        .iter()
        .sum()
}

/// Connects a UDP socket (IPv4 and IPv6, the IPv4-mapped address) in
/// `ns` to the DNS ClusterIP, whatever the outcome (without translation
/// the namespace may have no route to it).
fn try_connect(ns: &NetNs) {
    ns.run(|| {
        for dst in [
            SocketAddr::new(IpAddr::V4(DNS), DNS_PORT),
            SocketAddr::new(IpAddr::V6(DNS.to_ipv6_mapped()), DNS_PORT),
        ] {
            let s = UdpSocket::bind(any_of(dst)).unwrap();
            let _ = s.connect(dst);
        }
    })
    .unwrap();
}

/// Only the node's and its pods' namespaces are translated: a namespace
/// in the same cgroup that is neither (`stranger`) is not, nor, with
/// `manul_ctlb_netns` emptied, is the node's own (fail closed: the packet
/// path has it); written back, the node's is again.
fn served_namespaces_only(topo: &Topology, stranger: &NetNs, maps: &Path) {
    let before = translated(maps);
    try_connect(&topo.node);
    assert_eq!(
        translated(maps),
        before + 2,
        "the node's namespace is served"
    );
    let client = &topo.pod("ns/client").unwrap().netns;
    try_connect(client);
    assert_eq!(translated(maps), before + 4, "a pod's namespace is served");
    try_connect(stranger);
    assert_eq!(
        translated(maps),
        before + 4,
        "a namespace that is neither the node's nor a pod's is not translated"
    );

    let data = MapData::from_pin(maps.join("manul_ctlb_netns")).unwrap();
    let mut served = HashMap::<_, u64, u32>::try_from(Map::HashMap(data)).unwrap();
    let entries: Vec<(u64, u32)> = served.iter().map(Result::unwrap).collect();
    let kinds: Vec<u32> = entries.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        (
            kinds
                .iter()
                .filter(|k| **k == MANUL_CTLB_NETNS_NODE)
                .count(),
            kinds.iter().filter(|k| **k == MANUL_CTLB_NETNS_POD).count()
        ),
        (1, topo.pods.len()),
        "the node and each pod served, nothing else: {entries:?}"
    );
    for (cookie, _) in &entries {
        served.remove(cookie).unwrap();
    }
    try_connect(&topo.node);
    try_connect(client);
    let emptied = translated(maps);
    for (cookie, kind) in &entries {
        served.insert(cookie, kind, 0).unwrap();
    }
    assert_eq!(
        emptied,
        before + 4,
        "an empty manul_ctlb_netns translates nothing"
    );
    try_connect(&topo.node);
    assert_eq!(translated(maps), before + 6, "served again once written");
}

fn dns_moves(topo: &Topology, driver: &DriverThread) {
    let pod = |n: &str| topo.pod(&format!("ns/{n}")).unwrap();
    let (a, b, client) = (pod("dns-a"), pod("dns-b"), pod("client"));
    let dns = SocketAddr::new(IpAddr::V4(DNS), DNS_PORT);

    // A host-networked process (the node namespace) reaches the ClusterIP.
    let host_udp = connected_udp(&topo.node, dns);
    assert_eq!(
        ask(&host_udp),
        Ok(IpAddr::V4(a.ip)),
        "host process over UDP"
    );
    assert_eq!(
        host_udp.peer_addr().unwrap(),
        dns,
        "getpeername answers with the service"
    );
    let a_ip = IpAddr::V4(a.ip);
    assert_eq!(
        who_tcp(&topo.node, dns),
        (dns, a_ip),
        "host process over TCP"
    );
    assert_eq!(
        who_udp(&topo.node, dns),
        (dns, a_ip),
        "an unconnected datagram's answer comes from the service"
    );
    // An IPv6 socket (not IPV6_V6ONLY) reaching the ClusterIP by its
    // IPv4-mapped address: translated from the IPv4 maps, answered with
    // the mapped service address.
    let mapped = SocketAddr::new(IpAddr::V6(DNS.to_ipv6_mapped()), DNS_PORT);
    assert_eq!(
        who_tcp(&topo.node, mapped),
        (mapped, a_ip),
        "host process, IPv6 socket to the IPv4-mapped ClusterIP over TCP"
    );
    assert_eq!(
        who_udp(&topo.node, mapped),
        (mapped, a_ip),
        "host process, IPv6 socket to the IPv4-mapped ClusterIP over UDP"
    );

    let before = Before {
        host_udp,
        pod_udp: connected_udp(&client.netns, dns),
        host_udp_mapped: connected_udp(&topo.node, mapped),
        host_tcp: topo
            .node
            .run(move || {
                TcpStream::connect_timeout(
                    &SocketAddr::new(IpAddr::V4(DNS), HOLD_PORT),
                    Duration::from_secs(1),
                )
                .unwrap()
            })
            .unwrap(),
    };
    assert_eq!(ask(&before.pod_udp), Ok(a_ip), "pod over UDP");
    assert_eq!(ask(&before.host_udp_mapped), Ok(a_ip), "IPv4-mapped UDP");
    assert_eq!(before.host_udp_mapped.peer_addr().unwrap(), mapped);
    before
        .host_tcp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    // The DNS server moves: dns-a (still running) leaves the list.
    driver
        .apply(vec![Operation::ServiceUpdate(dns_service(b))])
        .expect("move the backend");

    for (who, s, dst) in [
        ("host", &before.host_udp, dns),
        ("pod", &before.pod_udp, dns),
        ("host, IPv4-mapped", &before.host_udp_mapped, mapped),
    ] {
        // Destroyed: no longer connected (the send fails) and an
        // ECONNABORTED pending; not a timeout, not the old backend.
        let first = ask(s);
        assert!(
            first.is_err() && !matches!(first, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "{who}: the stuck socket's next use fails at once, got {first:?}"
        );
        // The application connects again and reaches the new backend
        // (a pending error, if the send did not take it, comes first).
        s.connect(dst).unwrap();
        let mut again = ask(s);
        if again.is_err() {
            again = ask(s);
        }
        assert_eq!(again, Ok(IpAddr::V4(b.ip)), "{who}: after connecting again");
    }
    let mut buf = [0u8; 8];
    let mut tcp = &before.host_tcp;
    let read = tcp.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionAborted || e.kind() == ErrorKind::ConnectionReset),
        "the TCP connection to the old backend is aborted, got {read:?}"
    );
}

#[test]
fn connect_time_load_balancing() {
    if !node::root() {
        return;
    }
    let cgroup = OwnCgroup::enter();
    let ctlb = CtlbConfig {
        udp: true,
        cgroup: Some(cgroup.path.clone()),
    };

    // The DNS server that moves.
    let pods = [("dns-a", 2), ("dns-b", 3), ("client", 4)]
        .map(|(name, d)| (name, Ipv4Addr::new(10, 66, 0, d)));
    let setup = Node::new("cl", &pods);
    let (prefix, topo) = (setup.name(), &setup.topo);
    // The node's own address (host processes send from it).
    manul_netns::add_address(
        &topo.node,
        "lo",
        IpNet::new(IpAddr::V4(NODE_IP), 32).unwrap(),
    )
    .expect("node address");
    // A namespace in the test's cgroup that is neither the node's nor a
    // pod's, joined to the node (before the driver looks for pods) by a veth that is no workload interface.
    let stranger = NetNs::create(&format!("{prefix}-x")).expect("stranger namespace");
    manul_netns::create_veth(&topo.node, &format!("{prefix}x"), &stranger, "eth0")
        .expect("stranger's veth");
    let servers: Vec<Servers> = ["dns-a", "dns-b"]
        .iter()
        .map(|n| Servers::start(topo.pod(&format!("ns/{n}")).unwrap()))
        .collect();
    let config = ctlb.clone();
    let driver = setup.driver(move |c| c.connect_time_lb = Some(config.clone()));
    let mut ops = vec![allow_profile()];
    ops.extend(topo.pods.values().map(|p| pod_endpoint(p, false)));
    ops.push(Operation::ServiceUpdate(dns_service(
        topo.pod("ns/dns-a").unwrap(),
    )));
    ops.push(Operation::InSync);
    driver.apply(ops).expect("program");
    let maps = PathBuf::from(PIN_ROOT).join(prefix).join("maps");
    served_namespaces_only(topo, &stranger, &maps);
    dns_moves(topo, &driver);
    drop(stranger);
    drop(driver);
    drop(servers);
    drop(setup);

    // The same over IPv6, and more: a node port, affinity, refusals.
    ctlb6::ipv6_services(&ctlb);

    // The shared service cases, host processes included.
    let nodes = SharedNodes::default();
    let factory = nodes.factory(move |config| config.connect_time_lb = Some(ctlb.clone()));
    let result = manul_dataplane_conformance::services::run_service_cases("cs", factory.clone());
    // The shared dual-stack cases, every one of which must pass.
    let dual = manul_dataplane_conformance::services::run_dual_stack_cases("c2", factory.clone());
    // The shared Local traffic policy cases: a pod's and a host process's
    // sockets to a Local service's external frontends take every backend.
    let local = manul_dataplane_conformance::services::run_local_policy_cases("cl", factory);
    nodes.purge();
    match result {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("service cases: {e}"),
    }
    match dual {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("dual-stack cases: {e}"),
    }
    match local {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("local policy cases: {e}"),
    }
    drop(cgroup);
}
