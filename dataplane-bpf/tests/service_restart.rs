#![allow(clippy::expect_used, clippy::unwrap_used)]

//! A Felix restart on the eBPF dataplane with real packets: established
//! TCP connections and UDP flows through a ClusterIP, each to a known
//! backend, and a client's session affinity, while the driver is dropped
//! and a new one is built over the same pins and given the state again.
//! Unchanged services leave every connection alone (both directions keep
//! flowing), every UDP flow and the affinity on their backend, and the
//! pinned service maps hold exactly what they held (the same list ids,
//! the same Maglev table of the service's external IP); a backend removed
//! while no driver ran gets its connections reset and its flows moved at
//! the first sync, and the other backend's carry on. Everything
//! (namespaces, pins) is removed at the end, also on failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use manul_dataplane_api::{
    Backend, Balancing, Match, Operation, Service, ServicePort, TrafficPolicy,
};
use manul_dataplane_conformance::topology::Pod;

mod node;
mod rules;

use node::{Node, PIN_ROOT};
use rules::{allow_profile, backend_policy, pod_endpoint};

/// The cluster IP of the service under test, and its port (TCP and UDP).
const KEPT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const PORT: u16 = 80;
/// The cluster IP of a service with session affinity.
const STICKY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 31);
/// The port every backend's named echo servers listen on (TCP and UDP).
const ECHO: u16 = 7002;
/// The service's external IP, which picks by Maglev.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);

/// A TCP server in a pod that greets each connection with its own address
/// (so the client knows which backend it reached), then echoes every line;
/// and a UDP one that answers every datagram with its address.
struct NamedEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NamedEcho {
    fn start(pod: &Pod) -> NamedEcho {
        let ip = pod.ip;
        let (listener, udp) = pod
            .netns
            .run(move || {
                let tcp = TcpListener::bind((ip, ECHO)).unwrap();
                (tcp, UdpSocket::bind((ip, ECHO)).unwrap())
            })
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let s = s.clone();
                        conns.push(std::thread::spawn(move || serve(c, ip, &s)));
                    }
                    Err(_) => {
                        let mut buf = [0u8; 64];
                        if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                            let _ = udp.send_to(ip.to_string().as_bytes(), peer);
                        }
                    }
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        NamedEcho {
            stop,
            thread: Some(thread),
        }
    }
}

/// Greets with `ip`, then echoes what arrives until the peer closes or
/// `stop` is set.
fn serve(mut c: TcpStream, ip: Ipv4Addr, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
    if writeln!(c, "{ip}").is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for NamedEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client's connection through the ClusterIP to the backend that
/// greeted it.
struct Held {
    backend: Ipv4Addr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    seq: u32,
}

impl Held {
    /// Connects from `pod` to `ip`'s [`PORT`] and reads the greeting.
    fn open(pod: &Pod, ip: Ipv4Addr) -> Held {
        let dst = SocketAddr::new(ip.into(), PORT);
        let writer = pod
            .netns
            .run(move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
            .unwrap()
            .expect("connect through the ClusterIP");
        writer
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        writer
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut reader = BufReader::new(writer.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).expect("greeting");
        let backend = line.trim().parse().expect("a backend's address");
        Held {
            backend,
            writer,
            reader,
            seq: 0,
        }
    }

    /// Sends a line and reads it back: whether it came back in time (not
    /// when the connection was reset or closed).
    fn roundtrip(&mut self) -> bool {
        self.seq += 1;
        let message = format!("roundtrip {}\n", self.seq);
        if self.writer.write_all(message.as_bytes()).is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(n) if n > 0 && line == message)
    }
}

/// A connected UDP socket of `pod` to the cluster IP, and the backend
/// that answered its first datagram.
fn udp_flow(pod: &Pod) -> (UdpSocket, Ipv4Addr) {
    let s = pod
        .netns
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect((KEPT, PORT)).unwrap();
            s
        })
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let backend = ask(&s).expect("an answer through the ClusterIP");
    (s, backend)
}

/// Who answers a datagram on a connected socket.
fn ask(s: &UdpSocket) -> Option<Ipv4Addr> {
    s.send(b"who").ok()?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// The backend a series of new connections from `pod` to the affinity
/// service reaches: always the same one.
fn sticky(pod: &Pod) -> Ipv4Addr {
    let reached: BTreeSet<Ipv4Addr> = (0..6).map(|_| Held::open(pod, STICKY).backend).collect();
    assert_eq!(reached.len(), 1, "affinity: {reached:?}");
    reached.into_iter().next().unwrap()
}

/// The service at [`KEPT`] (and [`EXTERNAL`], by Maglev), TCP and UDP,
/// with `backends`; and the one at [`STICKY`] with session affinity.
fn services(backends: &[&Pod]) -> [Service; 2] {
    let backends: Vec<Backend> = backends
        .iter()
        .map(|p| Backend {
            ip: IpAddr::V4(p.ip),
            port: ECHO,
            local: true,
            ready: true,
        })
        .collect();
    let port = |name: &str, protocol: u8| ServicePort {
        name: name.into(),
        protocol,
        port: PORT,
        node_port: None,
        local_backends: backends.clone(),
        backends: backends.clone(),
    };
    let kept = Service {
        namespace: "ns".into(),
        name: "kept".into(),
        cluster_ips: vec![IpAddr::V4(KEPT)],
        external_ips: vec![IpAddr::V4(EXTERNAL)],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Cluster,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: None,
        health_check_node_port: None,
        balancing: Balancing::Maglev,
        ports: vec![port("echo", 6), port("echo-udp", 17)],
    };
    let sticky = Service {
        name: "sticky".into(),
        cluster_ips: vec![IpAddr::V4(STICKY)],
        external_ips: vec![],
        affinity_timeout_seconds: Some(60),
        balancing: Balancing::Random,
        ports: vec![port("echo", 6)],
        ..kept.clone()
    };
    [kept, sticky]
}

/// The whole state as a restarted Felix's first batch: policy, the
/// endpoints, the service, in sync.
fn snapshot(client: &Pod, all: &[&Pod], backends: &[&Pod]) -> Vec<Operation> {
    let mut ops = vec![
        backend_policy(Match::default()),
        allow_profile(),
        pod_endpoint(client, false),
    ];
    ops.extend(all.iter().map(|b| pod_endpoint(b, true)));
    ops.extend(services(backends).into_iter().map(Operation::ServiceUpdate));
    ops.push(Operation::InSync);
    ops
}

/// What the pinned service maps hold: frontends, backends and Maglev
/// slots, as raw fields.
#[derive(Debug, PartialEq, Eq)]
struct Pinned {
    fe: BTreeSet<(u32, u16, u8, [u32; 6])>,
    be: BTreeSet<(u32, u32, u32, u16)>,
    mag: BTreeSet<(u32, u32, [u8; 16], u16)>,
}

impl Pinned {
    /// Each Maglev table's id and slot count.
    fn tables(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for (table, ..) in &self.mag {
            *out.entry(*table).or_default() += 1;
        }
        out
    }
}

/// Every entry of pinned hash map `name` of node `node`.
fn entries<K: aya::Pod, V: aya::Pod>(node: &str, name: &str) -> Vec<(K, V)> {
    let path = Path::new(PIN_ROOT).join(node).join("maps").join(name);
    let data = MapData::from_pin(&path).expect("a pinned service map");
    let map: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(data)).expect("a hash map");
    map.iter().map(|e| e.expect("an entry")).collect()
}

fn pinned(node: &str) -> Pinned {
    use manul_dataplane_bpf::abi;
    let fe = entries::<abi::manul_svc_fe_key, abi::manul_svc_fe_value>(node, "manul_svc_fe");
    let be = entries::<abi::manul_svc_be_key, abi::manul_svc_be_value>(node, "manul_svc_be");
    let mag = entries::<abi::manul_svc_mag_key, abi::manul_svc_be6_value>(node, "manul_svc_mag");
    Pinned {
        fe: fe
            .iter()
            .map(|(k, v)| {
                let value = [
                    v.id,
                    v.count,
                    v.affinity_s,
                    v.flags,
                    v.maglev,
                    v.maglev_size,
                ];
                (k.addr, k.port, k.proto, value)
            })
            .collect(),
        be: be
            .iter()
            .map(|(k, v)| (k.id, k.index, v.addr, v.port))
            .collect(),
        mag: mag
            .iter()
            .map(|(k, v)| (k.table, k.slot, v.addr, v.port))
            .collect(),
    }
}

/// Opens connections from `client` until one reached each of `backends`.
fn one_per_backend(client: &Pod, backends: &[&Pod]) -> Vec<Held> {
    let mut held: Vec<Held> = Vec::new();
    for _ in 0..64 {
        if held.len() == backends.len() {
            break;
        }
        let c = Held::open(client, KEPT);
        if !held.iter().any(|h| h.backend == c.backend) {
            held.push(c);
        }
    }
    held.sort_by_key(|h| h.backend);
    let reached: Vec<Ipv4Addr> = held.iter().map(|h| h.backend).collect();
    let mut want: Vec<Ipv4Addr> = backends.iter().map(|b| b.ip).collect();
    want.sort();
    assert_eq!(reached, want, "a connection to every backend");
    held
}

#[test]
fn established_connections_survive_a_restart() {
    if !node::root() {
        return;
    }
    let pods =
        [("a", 2), ("b1", 11), ("b2", 12)].map(|(name, d)| (name, Ipv4Addr::new(10, 67, 0, d)));
    let setup = Node::new("rs", &pods);
    let a = setup.pod("a");
    let backends = [setup.pod("b1"), setup.pod("b2")];
    let _echo: Vec<NamedEcho> = backends.iter().map(|p| NamedEcho::start(p)).collect();

    let driver = setup.driver(|_| {});
    let both = snapshot(a, &backends, &backends);
    driver.apply(both.clone()).expect("apply");

    let programmed = pinned(setup.name());
    assert!(!programmed.mag.is_empty(), "no Maglev table");
    let mut held = one_per_backend(a, &backends);
    for h in &mut held {
        assert!(h.roundtrip(), "to {} before the restart", h.backend);
    }
    // UDP flows, at least four on each backend (each socket a flow).
    let mut flows: Vec<(UdpSocket, Ipv4Addr)> = Vec::new();
    for _ in 0..64 {
        let on = |b: &Pod| flows.iter().filter(|f| f.1 == b.ip).count();
        if backends.iter().all(|b| on(b) >= 4) {
            break;
        }
        flows.push(udp_flow(a));
    }
    for b in backends {
        assert!(
            flows.iter().filter(|f| f.1 == b.ip).count() >= 4,
            "flows to {}",
            b.ip
        );
    }
    let stuck = sticky(a);

    // The same services after a restart: nothing is disturbed.
    driver.restart().expect("restart");
    for h in &mut held {
        assert!(h.roundtrip(), "to {} before the resync", h.backend);
    }
    driver.apply(both.clone()).expect("resync");
    for h in &mut held {
        for _ in 0..3 {
            assert!(
                h.roundtrip(),
                "the connection to {} did not survive a restart with the same services",
                h.backend
            );
        }
    }
    let now = pinned(setup.name());
    assert!(
        now == programmed,
        "the service maps changed across a restart with the same services: \
         frontends {:?} -> {:?}, backends {:?} -> {:?}, Maglev tables {:?} -> {:?}",
        programmed.fe,
        now.fe,
        programmed.be,
        now.be,
        programmed.tables(),
        now.tables()
    );
    for (s, backend) in &flows {
        assert_eq!(ask(s), Some(*backend), "a UDP flow moved across a restart");
    }
    assert_eq!(sticky(a), stuck, "the client's affinity was lost");
    // New connections still reach both.
    drop(one_per_backend(a, &backends));

    // b2 removed while no driver ran: its connection is reset at the
    // first sync (at once), b1's carries on.
    driver.restart().expect("restart");
    driver
        .apply(snapshot(a, &backends, &backends[..1]))
        .expect("resync without b2");
    let (kept, gone) = held.split_at_mut(1);
    let started = Instant::now();
    assert!(
        !gone[0].roundtrip(),
        "the connection to the removed backend {} still passes data",
        gone[0].backend
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not reset at once: {:?}",
        started.elapsed()
    );
    for _ in 0..3 {
        assert!(
            kept[0].roundtrip(),
            "the connection to the surviving backend {} was cut",
            kept[0].backend
        );
    }
    // Its UDP flows are answered by the survivor, whose own stay.
    for (s, _) in &flows {
        assert_eq!(
            ask(s),
            Some(backends[0].ip),
            "a UDP flow to the removed backend"
        );
    }
    assert_eq!(sticky(a), backends[0].ip);
    // New connections go to the survivor.
    for _ in 0..8 {
        assert_eq!(Held::open(a, KEPT).backend, backends[0].ip);
    }
    drop(held);
    drop(driver);
}
