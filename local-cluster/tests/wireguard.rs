//! WireGuard between two nodes on the real kernel: once
//! `wireguardEnabled` is set, a capture on node1's underlay link sees only
//! UDP to or from the WireGuard port between the nodes, never a pod's
//! plaintext (which the same capture sees on the pod's own interface),
//! while pods on the two nodes still reach each other and a deny policy
//! still denies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use manul_local_cluster::wireguard::{self, PORT};
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec};
use manul_netns::{NetNs, ProbeOutcome};
use socket2::{Domain, Protocol, Socket, Type};

const MARKER: &[u8] = b"manul-plaintext-marker-7f3a";

fn pod(name: &str, app: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: "wg".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        node,
        tcp_ports: vec![(8080, None)],
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// Every frame seen on any interface of a namespace, until stopped.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl Capture {
    fn start(ns: &NetNs) -> Capture {
        // ETH_P_ALL, in network byte order.
        let all = i32::from(0x0003u16.to_be());
        let socket = ns
            .run(|| Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(all))))
            .unwrap()
            .expect("an AF_PACKET socket (needs root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            let mut s = &socket;
            while !flag.load(Ordering::SeqCst) {
                if let Ok(n) = s.read(&mut buf) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        });
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// What was seen between the two nodes' underlay interfaces.
#[derive(Debug, Default)]
struct Underlay {
    wireguard: usize,
    arp: usize,
    other: Vec<String>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sorts the Ethernet frames exchanged between `macs` (node to node).
fn underlay(frames: &[Vec<u8>], macs: [[u8; 6]; 2]) -> Underlay {
    let mut out = Underlay::default();
    for f in frames {
        if f.len() < 14 {
            continue;
        }
        let (dst, src) = (&f[0..6], &f[6..12]);
        let between = (dst == macs[0] && src == macs[1]) || (dst == macs[1] && src == macs[0]);
        if !between {
            continue;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        let ip = &f[14..];
        match ethertype {
            0x0806 => out.arp += 1,
            0x0800 if ip.len() >= 28 && ip[9] == 17 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let sport = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
                let dport = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
                if sport == PORT || dport == PORT {
                    out.wireguard += 1;
                } else {
                    out.other.push(format!("UDP {sport} -> {dport}"));
                }
            }
            0x0800 if ip.len() >= 20 => out.other.push(format!(
                "IPv4 protocol {} {}.{}.{}.{} -> {}.{}.{}.{}",
                ip[9], ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19]
            )),
            t => out.other.push(format!("ethertype {t:#06x}")),
        }
    }
    out
}

/// Sends the marker from pod `from` to a sink in pod `to`, a few times.
fn send_marker(from: &NetNs, to: &NetNs, to_ip: std::net::Ipv4Addr, port: u16) {
    let listener = to
        .run(|| TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    let sink = std::thread::spawn(move || {
        let mut got = 0;
        for _ in 0..5 {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).unwrap();
            assert!(contains(&buf, MARKER), "the sink received the marker");
            got += 1;
        }
        got
    });
    let target = SocketAddr::new(IpAddr::V4(to_ip), port);
    for _ in 0..5 {
        let mut c = from
            .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))
            .unwrap()
            .expect("pod-to-pod connection through the tunnel");
        for _ in 0..20 {
            c.write_all(MARKER).unwrap();
        }
    }
    assert_eq!(sink.join().unwrap(), 5);
}

#[test]
fn pod_traffic_between_nodes_is_encrypted_and_still_policed() {
    if !manul_netns::testing::have_root("this test") {
        return;
    }
    let mut c = LocalCluster::up(ClusterConfig {
        name: "mnlwg".into(),
        nodes: 2,
        typha_replicas: 1,
        dataplane: Dataplane::Iptables,
        policy_setup_timeout: Duration::from_secs(10),
        ..ClusterConfig::default()
    })
    .unwrap();
    c.add_pod(pod("client", "client", 0)).unwrap();
    c.add_pod(pod("server", "server", 1)).unwrap();
    wireguard::enable(&c, Duration::from_secs(60)).unwrap();

    // Connectivity through the tunnel.
    let start = Instant::now();
    while c
        .tcp_probe("wg/client", "wg/server", 8080, Duration::from_millis(200))
        .unwrap()
        != ProbeOutcome::Connected
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "client cannot reach server through WireGuard"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let node1 = &c.nodes()[0];
    let node2 = &c.nodes()[1];
    let routes = manul_netns::list_routes(&node1.netns).unwrap();
    let server = c.pod("wg/server").unwrap();
    assert!(
        routes.iter().any(|r| r.dst.contains(&IpAddr::V4(server.ip))
            && r.dev.as_deref() == Some(wireguard::INTERFACE)),
        "node1 routes the server's block through {}: {routes:?}",
        wireguard::INTERFACE
    );
    let macs = [
        manul_netns::link_mac(&node1.netns, "eth0").unwrap(),
        manul_netns::link_mac(&node2.netns, "eth0").unwrap(),
    ];

    // The capture sees node1's interfaces: the pod's veth (plaintext) and
    // the underlay (only WireGuard).
    let capture = Capture::start(&node1.netns);
    let client = c.pod("wg/client").unwrap();
    send_marker(&client.netns, &server.netns, server.ip, 9000);
    let frames = capture.finish();
    let seen = underlay(&frames, macs);
    assert!(
        seen.wireguard > 0,
        "WireGuard packets between the nodes: {seen:?}"
    );
    assert!(
        seen.other.is_empty(),
        "only WireGuard between the nodes, found {:?}",
        seen.other
    );
    let with_marker: Vec<&Vec<u8>> = frames.iter().filter(|f| contains(f, MARKER)).collect();
    let log = std::fs::read_to_string(&node1.log).unwrap();
    let backend = if log.contains("kernel WireGuard") {
        "kernel"
    } else {
        "userspace"
    };
    assert!(log.contains("WireGuard device up"), "{log}");
    eprintln!(
        "{backend} WireGuard; between the nodes: {} WireGuard packets, {} ARP, nothing else; \
         {} of {} frames carry the plaintext, all on the pods' side",
        seen.wireguard,
        seen.arp,
        with_marker.len(),
        frames.len()
    );
    assert!(
        !with_marker.is_empty(),
        "the capture sees the plaintext on the pod's interface"
    );
    assert!(
        with_marker
            .iter()
            .all(|f| { f.len() < 12 || !(macs.contains(&f[0..6].try_into().unwrap())) }),
        "no frame to or from an underlay interface carries the plaintext"
    );

    // Policy applies to the decrypted traffic at the server's interface.
    c.apply_yaml(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-client, namespace: wg}
spec:
  selector: app == 'server'
  ingress:
  - action: Deny
    source: {selector: app == 'client'}
",
    )
    .unwrap();
    let start = Instant::now();
    while c
        .tcp_probe("wg/client", "wg/server", 8080, Duration::from_millis(200))
        .unwrap()
        == ProbeOutcome::Connected
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the deny policy is not enforced on traffic from the tunnel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still encrypted, still only WireGuard on the underlay.
    assert!(wireguard::encrypted(&c).unwrap());
}
