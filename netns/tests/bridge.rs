//! Two node namespaces on one bridge (the underlay), a pod on each, pod
//! /32s routed via the other node's underlay address.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Cleanup, have_root};
use manul_netns::{
    IpNet, NetNs, ProbeOutcome, Route, TcpServer, UdpEcho, add_address, create_bridge, create_veth,
    delete_route, link_index, link_mac, link_up, list_routes, open_connection, ping, plumb_pod,
    replace_route, set_master, set_mtu, tcp_connect, udp_probe,
};

const T: Duration = Duration::from_secs(2);
const NODE1: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 2);
const POD1: Ipv4Addr = Ipv4Addr::new(10, 65, 1, 2);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 65, 2, 2);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attach(fabric: &NetNs, node: &NetNs, port: &str, addr: Ipv4Addr) {
    create_veth(node, "eth0", fabric, port).unwrap();
    set_master(fabric, port, "br0").unwrap();
    link_up(fabric, port).unwrap();
    add_address(node, "eth0", IpNet::new(addr.into(), 24).unwrap()).unwrap();
    link_up(node, "eth0").unwrap();
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_a_bridge() {
    if !have_root("pods_on_two_nodes_reach_each_other_over_a_bridge") {
        return;
    }
    let cleanup = Cleanup::new("mb");
    let fabric = NetNs::create(&cleanup.name("fabric")).unwrap();
    let node1 = NetNs::create(&cleanup.name("node1")).unwrap();
    let node2 = NetNs::create(&cleanup.name("node2")).unwrap();
    let pod1 = NetNs::create(&cleanup.name("pod1")).unwrap();
    let pod2 = NetNs::create(&cleanup.name("pod2")).unwrap();

    create_bridge(&fabric, "br0").unwrap();
    attach(&fabric, &node1, "n1", NODE1);
    attach(&fabric, &node2, "n2", NODE2);
    set_mtu(&node1, "eth0", 1400).unwrap();
    assert_ne!(
        link_mac(&node1, "eth0").unwrap(),
        link_mac(&node2, "eth0").unwrap()
    );
    assert!(link_index(&fabric, "n1").unwrap() > 0);

    // The underlay works.
    assert_eq!(
        ping(&node1, NODE2.into(), T).unwrap(),
        ProbeOutcome::Connected
    );

    plumb_pod(&node1, &pod1, "cali1", "eth0", POD1).unwrap();
    plumb_pod(&node2, &pod2, "cali2", "eth0", POD2).unwrap();
    let to_pod2 = Route::to(net("10.65.2.2/32")).via(NODE2.into()).dev("eth0");
    let to_pod1 = Route::to(net("10.65.1.2/32")).via(NODE1.into()).dev("eth0");
    manul_netns::add_route(&node1, &to_pod2).unwrap();
    manul_netns::add_route(&node2, &to_pod1).unwrap();
    assert!(
        manul_netns::add_route(&node1, &to_pod2).is_err(),
        "add is not replace"
    );

    let routes = list_routes(&node1).unwrap();
    assert!(
        routes.iter().any(|r| r.dst == net("10.65.2.2/32")
            && r.via == Some(IpAddr::V4(NODE2))
            && r.dev.as_deref() == Some("eth0")
            && !r.onlink),
        "{routes:?}"
    );

    // Pod to pod, across nodes: ICMP, TCP, UDP.
    assert_eq!(
        ping(&pod1, POD2.into(), T).unwrap(),
        ProbeOutcome::Connected
    );
    assert_eq!(
        ping(&pod2, POD1.into(), T).unwrap(),
        ProbeOutcome::Connected
    );
    let server = TcpServer::start(&pod2, SocketAddr::new(POD2.into(), 0)).unwrap();
    let port = server.local_addr().port();
    assert_ne!(port, 0);
    assert_eq!(
        tcp_connect(&pod1, SocketAddr::new(POD2.into(), port), T).unwrap(),
        ProbeOutcome::Connected
    );
    let mut held = open_connection(&pod1, SocketAddr::new(POD2.into(), port), T).unwrap();
    assert!(held.roundtrip(T).unwrap());
    let echo = UdpEcho::start(&pod1, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).unwrap();
    let udp_port = echo.local_addr().port();
    assert_eq!(
        udp_probe(&pod2, SocketAddr::new(POD1.into(), udp_port), T).unwrap(),
        ProbeOutcome::Connected
    );

    // Replacing the route (now onlink) keeps the connection working.
    replace_route(&node1, &to_pod2.clone().onlink()).unwrap();
    assert!(
        list_routes(&node1)
            .unwrap()
            .iter()
            .any(|r| r.dst == net("10.65.2.2/32") && r.onlink)
    );
    assert!(held.roundtrip(T).unwrap());

    // Without the route, node1 answers "network unreachable" and the held
    // connection stops passing data; putting it back heals it.
    delete_route(&node1, net("10.65.2.2/32")).unwrap();
    assert!(delete_route(&node1, net("10.65.2.2/32")).is_err());
    assert_eq!(
        ping(&pod1, POD2.into(), T).unwrap(),
        ProbeOutcome::Unreachable
    );
    assert!(!held.roundtrip(Duration::from_millis(300)).unwrap());
    replace_route(&node1, &to_pod2).unwrap();
    assert!(held.roundtrip(Duration::from_secs(5)).unwrap());
    assert_eq!(
        ping(&pod1, POD2.into(), T).unwrap(),
        ProbeOutcome::Connected
    );
}
