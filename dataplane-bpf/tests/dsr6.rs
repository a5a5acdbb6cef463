#![allow(clippy::expect_used, clippy::unwrap_used)]

//! IPv6 direct server return byte by byte: the loaded programs run with
//! `BPF_PROG_TEST_RUN` on a host interface carried for service NAT, in a
//! network namespace of the test's own that routes a pod prefix to another
//! node over that interface (`tests/external.rs` runs the same across two
//! nodes with real connections).
//!
//! As the node a client reaches: a new connection's SYN to a node port,
//! whose backend is on the other node, leaves with the client's own
//! address, the backend as its destination and a 24-byte Destination
//! Options header right after the IPv6 header (next header TCP, length 2,
//! option 0x1e of 18 bytes: the frontend's address and port, two Pad1),
//! its TCP checksum still valid; the connection's later segments go
//! without it; every UDP datagram carries it; a first packet with
//! extension headers of its own is masqueraded instead. As the backend's
//! node: a packet arriving with the header loses it (the checksum still
//! valid) and the backend's reply leaves with the frontend as its
//! source; a Destination Options header of another kind passes untouched.
//! The backend's node believes the header (and the IPv4 option) only when
//! the frontend it names is a node port at an address of a node its
//! driver was told of, or an external address's port: any other is
//! dropped and counted, with no reverse entry written, and a node taken
//! out of the set is no longer believed.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use manul_dataplane_api::{Backend, Driver, Operation, Packet, Service, ServicePort};
use manul_dataplane_bpf::frames::{ACK, SYN, dest_options, frame, with_ext};
use manul_dataplane_bpf::{BpfDriver, ExternalServiceMode, Hook};
use manul_netns::{Route, add_address, create_veth, link_index, link_up, replace_route};

mod node;
mod raw;

use node::Sandbox;

/// This node's address, the other node, a client on their network.
const NODE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
const OTHER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x100);
/// A pod on the other node (its prefix routed there).
const POD: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x70, 2, 0, 0, 0, 0, 0x10);
const NODE_PORT: u16 = 30080;
/// The other node's and a pod's IPv4 addresses, for the IPv4 option.
const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const POD4: Ipv4Addr = Ipv4Addr::new(10, 70, 2, 10);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
const UDP_NODE_PORT: u16 = 30082;
const TARGET: u16 = 8080;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const IP6: usize = 14;
const L4: usize = IP6 + 40;

/// The node: `eth0` on the nodes' network (its peer `peer0` stands for
/// the wire), the other node's pod prefix routed over it, forwarding on.
fn sandbox(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    let ns = &sb.ns;
    for key in ["all", "default"] {
        ns.set_sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0")
            .unwrap();
    }
    ns.set_sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    create_veth(ns, "eth0", ns, "peer0").unwrap();
    add_address(ns, "eth0", IpNet::new(NODE.into(), 64).unwrap()).unwrap();
    link_up(ns, "eth0").unwrap();
    link_up(ns, "peer0").unwrap();
    let route = Route::to("fd00:70:2::/64".parse().unwrap()).via(OTHER.into());
    replace_route(ns, &route).unwrap();
    Some(sb)
}

/// An IPv6 node port `node_port` (`protocol`) under `Cluster` whose one
/// backend is the pod on the other node.
fn node_port(name: &str, last: u16, protocol: u8, node_port: u16) -> Operation {
    let backends = vec![Backend {
        ip: POD.into(),
        port: TARGET,
        local: false,
        ready: true,
    }];
    let cluster_ip = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, last);
    Operation::ServiceUpdate(Service::cluster_ip(
        "ns",
        name,
        vec![cluster_ip.into()],
        vec![ServicePort {
            name: "p".into(),
            protocol,
            port: 80,
            node_port: Some(node_port),
            local_backends: vec![],
            backends,
        }],
    ))
}

/// The other node, the only one this node's driver knows.
fn other_node() -> Operation {
    Operation::NodeAddresses {
        addresses: vec![OTHER.into(), OTHER4.into()],
        local: Vec::new(),
        pools: Vec::new(),
    }
}

/// The TCP or UDP checksum of an IPv6 frame's L4 packet at `l4`
/// (pseudo header: the addresses, the L4 length, the protocol).
fn l4_checksum(f: &[u8], l4: usize, proto: u8) -> u16 {
    let len = (f.len() - l4) as u32;
    raw::internet_checksum(&[
        &f[IP6 + 8..IP6 + 40],
        &len.to_be_bytes(),
        &[0, 0, 0, proto],
        &f[l4..],
    ])
}

/// A frame for `p` with a valid L4 checksum (and a consistent UDP
/// length), then `ext` headers put in front of the L4 header.
fn checked(p: &Packet, flags: u8, ext: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut f = frame(p, flags);
    let at = if p.protocol == 6 { L4 + 16 } else { L4 + 6 };
    if p.protocol == 17 {
        let len = (f.len() - L4) as u16;
        f[L4 + 4..L4 + 6].copy_from_slice(&len.to_be_bytes());
    }
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = l4_checksum(&f, L4, p.protocol);
    f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    with_ext(&f, ext)
}

/// What a frame out of the programs is: its addresses, next header,
/// payload length, the L4 offset past a Destination Options header (if
/// any), its ports, and whether its L4 checksum holds.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: u16,
    sport: u16,
    dport: u16,
    checksum_holds: bool,
}

fn seen(f: &[u8]) -> Seen {
    assert_eq!(f[12..14], [0x86, 0xdd], "an IPv6 frame");
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap());
    let next = f[IP6 + 6];
    let (l4, proto) = if next == 60 {
        (L4 + (usize::from(f[L4 + 1]) + 1) * 8, f[L4])
    } else {
        (L4, next)
    };
    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    Seen {
        src: addr(IP6 + 8),
        dst: addr(IP6 + 24),
        next,
        payload: port(IP6 + 4),
        sport: port(l4),
        dport: port(l4 + 2),
        checksum_holds: l4_checksum(f, l4, proto) == 0,
    }
}

/// The DSR header naming `fe`:`port` before an L4 header `proto`.
fn dsr_header(proto: u8, fe: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = vec![proto, 2, 0x1e, 18];
    h.extend(fe.octets());
    h.extend(port.to_be_bytes());
    h.extend([0, 0]);
    h
}

fn run(d: &mut BpfDriver, hook: Hook, ifindex: u32, f: &[u8]) -> (u32, Vec<u8>) {
    let out = d.test_run(hook, ifindex, f, 1).expect("BPF_PROG_TEST_RUN");
    (out.verdict, out.frame)
}

#[test]
fn the_client_side_node_adds_the_header_to_the_first_packet_only() {
    let Some(sb) = sandbox("d6s") else { return };
    let ns = &sb.ns;
    let eth0 = link_index(ns, "eth0").unwrap();
    let mut config = sb.config();
    config.external_service_mode = ExternalServiceMode::Dsr;
    ns.run(move || {
        let mut d = BpfDriver::new(config).expect("load the programs");
        d.apply(&[
            node_port("tcp", 1, 6, NODE_PORT),
            node_port("udp", 2, 17, UDP_NODE_PORT),
            Operation::InSync,
        ])
        .expect("apply");
        let tcp = |port| Packet::tcp(CLIENT.into(), port, NODE.into(), NODE_PORT);

        // The SYN: to the pod, from the client, the header naming the
        // node's address and node port; TCP's checksum still holds.
        let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &checked(&tcp(40000), SYN, &[]));
        assert_eq!(verdict, TC_ACT_REDIRECT, "sent on toward the other node");
        let s = seen(&out);
        assert_eq!(
            s,
            Seen {
                src: CLIENT,
                dst: POD,
                next: 60,
                payload: 24 + 20,
                sport: 40000,
                dport: TARGET,
                checksum_holds: true,
            }
        );
        assert_eq!(out[L4..L4 + 24], dsr_header(6, NODE, NODE_PORT));

        // The connection's next segment: translated, no header.
        let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &checked(&tcp(40000), ACK, &[]));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let s = seen(&out);
        assert_eq!((s.dst, s.next, s.payload), (POD, 6, 20));
        assert!(s.checksum_holds);

        // Every UDP datagram carries it.
        let udp = Packet::udp(CLIENT.into(), 40001, NODE.into(), UDP_NODE_PORT);
        for _ in 0..2 {
            let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &checked(&udp, 0, &[]));
            assert_eq!(verdict, TC_ACT_REDIRECT);
            let s = seen(&out);
            assert_eq!((s.src, s.dst, s.next, s.dport), (CLIENT, POD, 60, TARGET));
            assert!(s.checksum_holds, "the UDP checksum holds");
            assert_eq!(out[L4..L4 + 24], dsr_header(17, NODE, UDP_NODE_PORT));
        }

        // A first packet with a Destination Options header of its own
        // cannot take the DSR one: the connection is masqueraded.
        let with_own = checked(&tcp(40002), SYN, &[dest_options()]);
        let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &with_own);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let s = seen(&out);
        assert_eq!((s.src, s.dst, s.dport), (NODE, POD, TARGET), "masqueraded");
        assert!(s.sport >= 61000, "a masquerade port");
        assert_eq!(
            out[L4..L4 + 16],
            with_own[L4..L4 + 16],
            "its own header kept"
        );
        assert!(s.checksum_holds);
        let c = d.service_counters().expect("the eBPF driver counts");
        assert_eq!(c.translated, 3, "three connections");
    })
    .expect("run in the namespace");
}

#[test]
fn the_backends_node_takes_the_header_off_and_answers_from_the_frontend() {
    let Some(sb) = sandbox("d6r") else { return };
    let ns = &sb.ns;
    let eth0 = link_index(ns, "eth0").unwrap();
    let mut config = sb.config();
    config.external_service_mode = ExternalServiceMode::Dsr;
    ns.run(move || {
        let mut d = BpfDriver::new(config).expect("load the programs");
        // Any node port makes the host interfaces carried for service
        // NAT.
        d.apply(&[
            node_port("tcp", 1, 6, NODE_PORT),
            node_port("udp", 2, 17, NODE_PORT),
            other_node(),
            Operation::InSync,
        ])
        .expect("apply");
        // From a client of another node's node port (fd00:77::2), to a
        // pod here (in this sandbox the pod's prefix is not routed here,
        // which the programs do not look at).
        let fe = OTHER;
        for (proto, sport) in [(6u8, 40000u16), (17, 40001)] {
            let p = Packet::with_ports(proto, CLIENT.into(), sport, POD.into(), TARGET);
            let f = checked(&p, SYN, &[(60, dsr_header(0, fe, NODE_PORT))]);
            let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &f);
            assert_eq!(verdict, TC_ACT_OK);
            let plain = checked(&p, SYN, &[]);
            assert_eq!(
                out, plain,
                "proto {proto}: the header taken off, nothing else"
            );
            // The backend's reply leaves from the frontend.
            let reply = Packet::with_ports(proto, POD.into(), TARGET, CLIENT.into(), sport);
            let (verdict, out) = run(&mut d, Hook::Egress, eth0, &checked(&reply, SYN | ACK, &[]));
            assert_eq!(verdict, TC_ACT_OK);
            let s = seen(&out);
            assert_eq!(
                (s.src, s.sport, s.dst, s.dport),
                (fe, NODE_PORT, CLIENT, sport)
            );
            assert!(
                s.checksum_holds,
                "proto {proto}: the reply's checksum holds"
            );
        }
        // A Destination Options header of another kind: untouched, and
        // its flow's reply leaves as it is.
        let p = Packet::tcp(CLIENT.into(), 40002, POD.into(), TARGET);
        let f = checked(&p, SYN, &[dest_options()]);
        let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &f);
        assert_eq!((verdict, &out), (TC_ACT_OK, &f));
        let reply = checked(
            &Packet::tcp(POD.into(), TARGET, CLIENT.into(), 40002),
            ACK,
            &[],
        );
        let (verdict, out) = run(&mut d, Hook::Egress, eth0, &reply);
        assert_eq!((verdict, &out), (TC_ACT_OK, &reply));
    })
    .expect("run in the namespace");
}

/// An IPv4 node port `node_port` (`protocol`) under `Cluster` whose one
/// backend is the pod on the other node.
fn node_port4(name: &str, protocol: u8, node_port: u16) -> Operation {
    let backends = vec![Backend {
        ip: POD4.into(),
        port: TARGET,
        local: false,
        ready: true,
    }];
    Operation::ServiceUpdate(Service::cluster_ip(
        "ns",
        name,
        vec![Ipv4Addr::new(10, 96, 0, 9).into()],
        vec![ServicePort {
            name: "p".into(),
            protocol,
            port: 80,
            node_port: Some(node_port),
            local_backends: vec![],
            backends,
        }],
    ))
}

/// An IPv4 frame's header checksum made right.
fn ip4_checksummed(mut f: Vec<u8>) -> Vec<u8> {
    let len = usize::from(f[14] & 0x0f) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = raw::internet_checksum(&[&f[14..14 + len]]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

/// IPv4 frame `f` with the DSR option naming `fe`:`port` after its
/// header.
fn with_option(f: &[u8], fe: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = f[..34].to_vec();
    out.extend([0x9e, 8]);
    out.extend(port.to_be_bytes());
    out.extend(fe.octets());
    out.extend(&f[34..]);
    out[14] = 0x47;
    let total = u16::from_be_bytes([out[16], out[17]]) + 8;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    ip4_checksummed(out)
}

/// The backend's node believes a DSR option or header only when the
/// frontend it names is one another node sends: a node port at an address
/// of a node the driver was told of, with this protocol and port. Any
/// other (an address of the sender's choice, a node's address with a port
/// that is no node port, a node no longer in the set) drops the packet,
/// counted, and writes no reverse entry (the reply leaves as it is).
#[test]
fn the_backends_node_drops_a_frontend_no_node_sends() {
    let Some(sb) = sandbox("d6u") else { return };
    let ns = &sb.ns;
    let eth0 = link_index(ns, "eth0").unwrap();
    let mut config = sb.config();
    config.external_service_mode = ExternalServiceMode::Dsr;
    ns.run(move || {
        let mut d = BpfDriver::new(config).expect("load the programs");
        d.apply(&[
            node_port("udp", 2, 17, NODE_PORT),
            node_port4("udp4", 17, NODE_PORT),
            other_node(),
            Operation::InSync,
        ])
        .expect("apply");
        assert_eq!(
            d.dsr_nodes(),
            [OTHER.into(), OTHER4.into()].into_iter().collect(),
            "the node set is in the map"
        );
        let untrusted = |d: &BpfDriver| d.kernel_counters().dsr_untrusted;
        let mut sport = 41000;
        let mut dropped = |d: &mut BpfDriver, fe: Ipv6Addr, port: u16| {
            sport += 1;
            let p = Packet::udp(CLIENT.into(), sport, POD.into(), TARGET);
            let before = untrusted(d);
            let f = checked(&p, 0, &[(60, dsr_header(0, fe, port))]);
            let (verdict, _) = run(d, Hook::Ingress, eth0, &f);
            assert_eq!(verdict, TC_ACT_SHOT, "{fe} port {port}: dropped");
            assert_eq!(untrusted(d), before + 1, "{fe} port {port}: counted");
            let reply = checked(
                &Packet::udp(POD.into(), TARGET, CLIENT.into(), sport),
                0,
                &[],
            );
            let (verdict, out) = run(d, Hook::Egress, eth0, &reply);
            assert_eq!(
                (verdict, &out),
                (TC_ACT_OK, &reply),
                "{fe} port {port}: the reply leaves from the pod"
            );
        };
        // A client naming an address of its own choice, or a node's
        // address with a port that is no node port of this protocol.
        dropped(&mut d, CLIENT, NODE_PORT);
        dropped(&mut d, OTHER, NODE_PORT + 1);
        dropped(&mut d, NODE, NODE_PORT);
        // The real one is believed...
        let p = Packet::udp(CLIENT.into(), 42000, POD.into(), TARGET);
        let f = checked(&p, 0, &[(60, dsr_header(0, OTHER, NODE_PORT))]);
        let (verdict, out) = run(&mut d, Hook::Ingress, eth0, &f);
        assert_eq!((verdict, out), (TC_ACT_OK, checked(&p, 0, &[])));
        // ...until the node leaves the set: one map write, no load.
        d.apply(&[Operation::NodeAddresses {
            addresses: vec![OTHER4.into()],
            local: Vec::new(),
            pools: Vec::new(),
        }])
        .expect("apply");
        assert_eq!(d.dsr_nodes(), [OTHER4.into()].into_iter().collect());
        dropped(&mut d, OTHER, NODE_PORT);

        // IPv4: the option naming the other node's node port is taken
        // off; one naming an address of the client's choice drops.
        let p = Packet::udp(CLIENT4.into(), 43000, POD4.into(), TARGET);
        let plain = ip4_checksummed(frame(&p, 0));
        let (verdict, out) = run(
            &mut d,
            Hook::Ingress,
            eth0,
            &with_option(&plain, OTHER4, NODE_PORT),
        );
        assert_eq!((verdict, &out), (TC_ACT_OK, &plain), "the option taken off");
        let before = untrusted(&d);
        let p = Packet::udp(CLIENT4.into(), 43001, POD4.into(), TARGET);
        let plain = ip4_checksummed(frame(&p, 0));
        for (fe, port) in [
            (CLIENT4, NODE_PORT),
            (OTHER4, NODE_PORT + 1),
            (Ipv4Addr::new(10, 96, 0, 9), 80),
        ] {
            let (verdict, _) = run(&mut d, Hook::Ingress, eth0, &with_option(&plain, fe, port));
            assert_eq!(verdict, TC_ACT_SHOT, "{fe}:{port}: dropped");
        }
        assert_eq!(untrusted(&d), before + 3, "each counted");
        let c = d.service_counters().expect("the eBPF driver counts");
        assert_eq!(c.dsr_untrusted_dropped, untrusted(&d), "exported");
    })
    .expect("run in the namespace");
}
