#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Anti-spoofing at a workload's interface, with real packets between
//! dual-stack pods of one node: a pod sending as another pod (whom the
//! destination admits) is dropped and counted, over IPv4 and IPv6, while
//! the real pod's datagrams arrive (IPv6 included, so neighbour discovery
//! still works); after an endpoint's address changes, its old address is
//! no longer its own and its new one is. Everything (namespaces, pins) is
//! removed at the end, also on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use manul_dataplane_api::{Driver, Match, Operation};
use manul_dataplane_bpf::BpfDriver;
use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, spoofed_udp_arrives};

mod node;
mod rules;

use node::DualNode;
use rules::{allow_profile, backend_policy};

const WAIT: Duration = Duration::from_millis(400);
const PORT: u16 = 5400;

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 69, 0, d))
}

fn v6(d: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x69, 0, 0, 0, 0, 0, u16::from(d)))
}

fn endpoint(name: &str, ips: &[IpAddr], guarded: bool) -> Operation {
    let interface = workload_interface_name("ns", name);
    rules::endpoint("ns", name, &interface, ips, guarded)
}

/// Sends a datagram from `from` with source `src`; whether it arrived at
/// `dst` in `to`, and whether the spoofed counter rose meanwhile (the pods'
/// own multicast listener reports from link-local addresses are dropped
/// and counted too, so a rise is exact only where a drop is expected).
fn send(d: &BpfDriver, from: &NetNs, src: IpAddr, to: &NetNs, dst: IpAddr) -> (bool, bool) {
    let before = d.kernel_counters().spoofed;
    let arrived = spoofed_udp_arrives(
        from,
        SocketAddr::new(src, 41000),
        to,
        SocketAddr::new(dst, PORT),
        WAIT,
    )
    .expect("send a datagram");
    (arrived, d.kernel_counters().spoofed > before)
}

#[test]
fn a_pod_sending_as_another_pod_is_dropped_and_counted() {
    if !node::root() {
        return;
    }
    let mut s = DualNode::new("as");
    // a and c are open; b admits only a (both of its addresses).
    let only_a = Match {
        nets: vec![IpNet::from(v4(2)), IpNet::from(v6(2))],
        ..Match::default()
    };
    let mut ops = vec![backend_policy(only_a), allow_profile()];
    // c gets a second IPv4 address in its namespace: its endpoint moves
    // to it later.
    for (name, d) in [("a", 2u8), ("b", 3), ("c", 4)] {
        let mut ips = vec![v4(d), v6(d)];
        if name == "c" {
            ips.push(v4(14));
        }
        s.add_pod(name, &workload_interface_name("ns", name), &ips);
        ops.push(endpoint(name, &[v4(d), v6(d)], name == "b"));
    }
    ops.push(Operation::InSync);
    let (a, b, c) = (&s.pods[0].netns, &s.pods[1].netns, &s.pods[2].netns);
    let config = s.pins.config();
    let node = &s.node;
    node.run(move || {
        let mut d = BpfDriver::new(config).expect("load the programs");
        d.apply(&ops).expect("apply");
        for (ip, name) in [(v4 as fn(u8) -> IpAddr, "IPv4"), (v6, "IPv6")] {
            assert!(send(&d, a, ip(2), b, ip(3)).0, "{name}: a as itself");
            assert_eq!(
                send(&d, c, ip(2), b, ip(3)),
                (false, true),
                "{name}: c as a"
            );
            assert!(!send(&d, c, ip(4), b, ip(3)).0, "{name}: b denies c");
        }
        // c's endpoint moves to its second address: the first is no
        // longer its own.
        d.apply(&[endpoint("c", &[v4(14), v6(4)], false)])
            .expect("move c");
        assert_eq!(
            send(&d, c, v4(4), a, v4(2)),
            (false, true),
            "c's old address"
        );
        assert!(send(&d, c, v4(14), a, v4(2)).0, "c's new address");
        assert!(send(&d, c, v6(4), a, v6(2)).0, "c's IPv6 address");
    })
    .expect("run in the node namespace");
}
