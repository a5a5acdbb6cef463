#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Packets between two pods of one node delivered straight into the
//! destination pod (`bpf/manul_peer.h`), with real packets in the
//! conformance topology: the direct path is taken (counted, and the frame
//! arrives as the host would have forwarded it: TTL decremented, the
//! host's MAC as source, the pod's as destination), the destination's
//! inbound policy still judges on it (a denied connection and a denied
//! ICMP packet are judged there and never delivered), both interfaces
//! keep their own conntrack entries and the destination its flow record,
//! a packet with a spoofed source is dropped before it, and with the switch
//! off every packet is routed by the host; IPv6 takes it too, its hop
//! limit decremented. Everything (namespaces, pins)
//! is removed at the end, also on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{Driver, EndpointId, Match, Operation, Reporter};
use manul_dataplane_bpf::{BpfDriver, KernelCounters};
use manul_dataplane_conformance::topology::Pod;
use manul_model::names::workload_interface_name;
use manul_netns::{ProbeOutcome, TcpServer, link_index, link_mac, tcp_connect};
use nix::sys::socket::SockProtocol;

mod node;
mod raw;
mod rules;

use node::{DualNode, Node};
use raw::internet_checksum;
use rules::{allow_profile, backend_policy, endpoint, pod_endpoint};

const PORT: u16 = 8080;
const WAIT: Duration = Duration::from_millis(400);
/// The host side's MAC of every pod's veth (Calico's).
const HOST_MAC: [u8; 6] = [0xee; 6];

fn id(pod: &Pod) -> EndpointId {
    EndpointId {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    }
}

/// B accepts only A; A and C are open.
fn operations(a: &Pod, b: &Pod, c: &Pod) -> Vec<Operation> {
    let only_a = Match {
        nets: vec![IpNet::new(a.ip.into(), 32).unwrap()],
        ..Match::default()
    };
    vec![
        backend_policy(only_a),
        allow_profile(),
        pod_endpoint(a, false),
        pod_endpoint(b, true),
        pod_endpoint(c, false),
        Operation::InSync,
    ]
}

fn connect(from: &Pod, to: &Pod) -> ProbeOutcome {
    tcp_connect(&from.netns, SocketAddr::new(to.ip.into(), PORT), WAIT).unwrap()
}

/// Sends an ICMP echo reply (which the receiver's kernel ignores: no
/// answer) from pod `from`'s namespace with source `src`, through a raw
/// socket that writes the whole IP header.
fn echo_reply(from: &Pod, src: Ipv4Addr, dst: Ipv4Addr) {
    let mut icmp = vec![0u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"peer");
    let sum = internet_checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&(20 + icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = internet_checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&icmp);
    let fd = raw::raw_socket(&from.netns, false, SockProtocol::Raw);
    raw::send_to(&fd, &ip, IpAddr::V4(dst));
}

/// What `f` adds to the counters.
fn delta(d: &BpfDriver, f: impl FnOnce()) -> (KernelCounters, KernelCounters) {
    let before = d.kernel_counters();
    f();
    // Give a dropped packet's retransmissions and the counters time.
    std::thread::sleep(Duration::from_millis(50));
    (before, d.kernel_counters())
}

#[test]
fn pods_of_one_node_are_delivered_past_the_host_and_judged_on_the_way() {
    if !node::root() {
        return;
    }
    let v4 = |d| Ipv4Addr::new(10, 67, 0, d);
    let setup = Node::new("pr", &[("a", v4(2)), ("b", v4(3)), ("c", v4(4))]);
    let (a, b, c) = (setup.pod("a"), setup.pod("b"), setup.pod("c"));
    let host_b = link_index(setup.ns(), &b.interface).unwrap();
    let host_a = link_index(setup.ns(), &a.interface).unwrap();
    let b_mac = link_mac(&b.netns, "eth0").unwrap();
    let config = setup.pins.config();
    let ops = operations(a, b, c);

    setup
        .ns()
        .run(move || {
            let mut d = BpfDriver::new(config.clone()).expect("load the programs");
            d.apply(&ops).expect("apply");
            // The host learns both pods' neighbours on the first
            // connection (routed: no neighbour entry yet).
            assert_eq!(connect(a, b), ProbeOutcome::Connected, "warm-up");

            // A to B: every packet of the connection, both ways, judged
            // by the destination's logic and delivered straight in.
            let capture = raw::capture_socket(&b.netns);
            let (before, after) = delta(&d, || {
                assert_eq!(connect(a, b), ProbeOutcome::Connected, "A reaches B");
            });
            let judged = after.peer_judged - before.peer_judged;
            let delivered = after.peer_delivered - before.peer_delivered;
            assert!(delivered >= 3, "SYN, SYN-ACK and ACK at least: {delivered}");
            assert_eq!(judged, delivered, "nothing denied");
            // The SYN as B received it: forwarded once, between the
            // host's MAC and B's.
            let syn = raw::capture(&capture, Duration::from_secs(1), |f| {
                let ip = f.get(14..34)?;
                let tcp = f.get(34..54)?;
                let syn = ip[9] == 6
                    && ip[12..16] == a.ip.octets()
                    && u16::from_be_bytes([tcp[2], tcp[3]]) == PORT
                    && tcp[13] & 0x12 == 0x02;
                syn.then(|| (f[0..6].to_vec(), f[6..12].to_vec(), ip[8]))
            })
            .expect("B captures the SYN");
            assert_eq!(syn, (b_mac.to_vec(), HOST_MAC.to_vec(), 63));

            // Both interfaces' own conntrack entries, the destination's
            // with its reply direction counted.
            let entries = d.conntrack();
            let of = |ifindex: u32| {
                entries
                    .iter()
                    .filter(|e| {
                        e.ifindex == ifindex
                            && e.src == IpAddr::V4(a.ip)
                            && e.dst == IpAddr::V4(b.ip)
                            && e.dst_port == PORT
                    })
                    .count()
            };
            assert_eq!(of(host_a), 2, "A's entries (warm-up and this one)");
            assert_eq!(of(host_b), 2, "B's entries");
            assert!(entries.iter().all(|e| e.ifindex != host_b
                || e.src != IpAddr::V4(a.ip)
                || (e.allowed && e.packets_orig >= 2 && e.packets_reply >= 1)));
            // B's flow record: its inbound policy allowed A.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut flows = Vec::new();
            while Instant::now() < deadline
                && !flows
                    .iter()
                    .any(|f: &manul_dataplane_api::FlowObservation| {
                        f.endpoint == Some(id(b))
                            && f.reporter == Reporter::Destination
                            && f.allowed
                    })
            {
                flows.extend(d.take_flows());
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                flows.iter().any(|f| f.endpoint == Some(id(b))
                    && f.reporter == Reporter::Destination
                    && f.allowed
                    && f.tuple.src == IpAddr::V4(a.ip)),
                "B's flow record: {flows:?}"
            );

            // C to B: B's inbound policy denies it on the direct path,
            // and nothing is delivered.
            let (before, after) = delta(&d, || {
                assert_ne!(connect(c, b), ProbeOutcome::Connected, "B denies C");
            });
            assert!(after.peer_judged > before.peer_judged, "judged on the way");
            assert_eq!(
                after.peer_delivered, before.peer_delivered,
                "never delivered"
            );
            assert!(after.new_denied > before.new_denied, "denied as a new flow");
            assert!(
                d.conntrack()
                    .iter()
                    .any(|e| e.ifindex == host_b && e.src == IpAddr::V4(c.ip) && !e.allowed),
                "B's denied entry"
            );
            // The same with a packet of another protocol, C's own
            // source: judged by B's logic, denied.
            // (The counters are the node's: a late packet of the denied
            // connection above may add to them too.)
            let (before, after) = delta(&d, || echo_reply(c, c.ip, b.ip));
            assert!(after.peer_judged > before.peer_judged, "judged on the way");
            assert_eq!(after.peer_delivered, before.peer_delivered);
            assert!(after.new_denied > before.new_denied, "denied as a new flow");

            // C sending as A (whom B admits): not C's address, so it is
            // dropped at C's interface before any path is chosen.
            let (before, after) = delta(&d, || echo_reply(c, a.ip, b.ip));
            assert_eq!(after.peer_judged, before.peer_judged, "spoofed: not direct");
            assert!(after.spoofed > before.spoofed, "dropped as spoofed");

            // The switch off: every packet routed by the host again.
            drop(d);
            let mut off = config.clone();
            off.peer_delivery = false;
            let d = BpfDriver::new(off).expect("load the programs");
            let (before, after) = delta(&d, || {
                assert_eq!(connect(a, b), ProbeOutcome::Connected, "routed");
            });
            assert_eq!(after.peer_judged, before.peer_judged);
            assert!(
                after.new_allowed >= before.new_allowed + 2,
                "both ends judged"
            );
        })
        .expect("run in the node namespace");
}

#[test]
fn ipv6_between_pods_of_one_node_is_delivered_with_its_hop_limit_decremented() {
    if !node::root() {
        return;
    }
    let mut s = DualNode::new("p6");
    let v6 = |d: u16| Ipv6Addr::new(0xfd00, 0x67, 0, 0, 0, 0, 0, d);
    let mut ops = vec![allow_profile()];
    for (name, d) in [("a", 2u8), ("b", 3u8)] {
        let ips = [
            IpAddr::V4(Ipv4Addr::new(10, 68, 0, d)),
            IpAddr::V6(v6(u16::from(d))),
        ];
        let interface = workload_interface_name("ns", name);
        s.add_pod(name, &interface, &ips);
        ops.push(endpoint("ns", name, &interface, &ips, false));
    }
    ops.push(Operation::InSync);
    let (a, b) = (&s.pods[0].netns, &s.pods[1].netns);
    let server = SocketAddr::new(IpAddr::V6(v6(3)), PORT);
    let _listener = TcpServer::start(b, server).expect("server");
    let b_mac = s.pods[1].link.pod_mac;
    let config = s.pins.config();
    let node = &s.node;
    node.run(move || {
        let mut d = BpfDriver::new(config).expect("load the programs");
        d.apply(&ops).expect("apply");
        let connect = || tcp_connect(a, server, WAIT).unwrap();
        // The host resolves both pods' neighbours on the routed first.
        assert_eq!(connect(), ProbeOutcome::Connected, "warm-up");
        let capture = raw::capture_socket(b);
        let (before, after) = delta(&d, || {
            assert_eq!(connect(), ProbeOutcome::Connected, "A reaches B over IPv6");
        });
        let delivered = after.peer_delivered - before.peer_delivered;
        assert!(delivered >= 3, "SYN, SYN-ACK and ACK at least: {delivered}");
        assert_eq!(after.peer_judged - before.peer_judged, delivered);
        let syn = raw::capture(&capture, Duration::from_secs(1), |f| {
            let ip = f.get(14..54)?;
            let tcp = f.get(54..74)?;
            let syn = f[12..14] == [0x86, 0xdd]
                && ip[6] == 6
                && u16::from_be_bytes([tcp[2], tcp[3]]) == PORT
                && tcp[13] & 0x12 == 0x02;
            syn.then(|| (f[0..6].to_vec(), f[6..12].to_vec(), ip[7]))
        })
        .expect("B captures the SYN");
        assert_eq!(syn, (b_mac.to_vec(), HOST_MAC.to_vec(), 63));
    })
    .expect("run in the node namespace");
}
