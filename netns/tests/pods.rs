//! Two pods plumbed Calico-style into one node namespace reach each other
//! with ICMP, TCP and UDP; refused, unreachable and dropped traffic are told
//! apart.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Cleanup, have_root};
use manul_netns::{
    CALICO_GATEWAY_V4, CALICO_HOST_MAC, HeldAnswer, IpNet, NetNs, ProbeOutcome, Route, RouteKind,
    TcpServer, UdpEcho, link_exists, link_up, list_addresses, list_routes, open_connection,
    open_udp, ping, plumb_pod, replace_route, tcp_connect, tcp_peer, udp_probe, unplumb_pod,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 3);
const T: Duration = Duration::from_secs(2);

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn pods_on_one_node_reach_each_other() {
    if !have_root("pods_on_one_node_reach_each_other") {
        return;
    }
    let cleanup = Cleanup::new("mt");
    let node = NetNs::create(&cleanup.name("node")).unwrap();
    let pod_a = NetNs::create(&cleanup.name("a")).unwrap();
    let pod_b = NetNs::create(&cleanup.name("b")).unwrap();

    let link_a = plumb_pod(&node, &pod_a, "calia", "eth0", A).unwrap();
    let link_b = plumb_pod(&node, &pod_b, "calib", "eth0", B).unwrap();
    assert_eq!(link_a.host_mac, CALICO_HOST_MAC);
    assert_ne!(link_a.pod_mac, CALICO_HOST_MAC);
    assert_ne!(link_a.host_ifindex, link_b.host_ifindex);
    assert_eq!(link_a.ip, IpAddr::V4(A));

    // What the pod side looks like.
    let addresses = list_addresses(&pod_a, "eth0").unwrap();
    assert!(
        addresses.contains(&"10.65.0.2/32".parse::<IpNet>().unwrap()),
        "{addresses:?}"
    );
    let routes = list_routes(&pod_a).unwrap();
    assert!(routes.iter().any(|r| r.dst == "0.0.0.0/0".parse().unwrap()
        && r.via == Some(IpAddr::V4(CALICO_GATEWAY_V4))
        && r.dev.as_deref() == Some("eth0")));
    assert!(
        routes
            .iter()
            .any(|r| r.dst == "169.254.1.1/32".parse().unwrap()
                && r.scope_link
                && r.dev.as_deref() == Some("eth0"))
    );
    // And the node side.
    assert!(
        list_routes(&node)
            .unwrap()
            .iter()
            .any(|r| r.dst == "10.65.0.3/32".parse().unwrap() && r.dev.as_deref() == Some("calib"))
    );
    assert_eq!(node.get_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        node.get_sysctl("net.ipv4.conf.calia.proxy_arp").unwrap(),
        "1"
    );
    assert_eq!(
        node.get_sysctl("net.ipv4.neigh.calia.proxy_delay").unwrap(),
        "0"
    );

    // ICMP both ways.
    assert_eq!(ping(&pod_a, B.into(), T).unwrap(), ProbeOutcome::Connected);
    assert_eq!(ping(&pod_b, A.into(), T).unwrap(), ProbeOutcome::Connected);

    // TCP: connected, refused, a held connection that echoes.
    let server = TcpServer::start(&pod_b, sock(B, 8080)).unwrap();
    assert_eq!(
        tcp_connect(&pod_a, sock(B, 8080), T).unwrap(),
        ProbeOutcome::Connected
    );
    assert_eq!(
        tcp_connect(&pod_a, sock(B, 8081), T).unwrap(),
        ProbeOutcome::Refused
    );
    let mut held = open_connection(&pod_a, sock(B, 8080), T).unwrap();
    assert!(held.roundtrip(T).unwrap());
    assert!(held.roundtrip(T).unwrap());
    assert_eq!(held.local_addr().unwrap().ip(), IpAddr::V4(A));
    // The server says whom it saw, and on which address.
    let seen = tcp_peer(&pod_a, sock(B, 8080), T).unwrap();
    assert_eq!(seen.outcome, ProbeOutcome::Connected);
    let (peer, local) = seen.seen.unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(A));
    assert_eq!(local, sock(B, 8080));
    assert_eq!(
        tcp_peer(&pod_a, sock(B, 8081), T).unwrap(),
        manul_netns::PeerProbe {
            outcome: ProbeOutcome::Refused,
            seen: None
        }
    );
    assert!(server.accepted() >= 2);
    // A held connection is asked the same, as often as wanted.
    let client = held.local_addr().unwrap();
    for _ in 0..2 {
        assert_eq!(
            held.ask(T).unwrap(),
            HeldAnswer::Answered(client, sock(B, 8080))
        );
    }
    assert!(held.roundtrip(T).unwrap());

    // UDP: echoed, refused.
    let echo = UdpEcho::start(&pod_b, sock(B, 5353)).unwrap();
    assert_eq!(
        udp_probe(&pod_a, sock(B, 5353), T).unwrap(),
        ProbeOutcome::Connected
    );
    // A connected UDP socket asks from one port every time.
    let udp = open_udp(&pod_a, sock(B, 5353)).unwrap();
    let HeldAnswer::Answered(first, local) = udp.ask(T).unwrap() else {
        panic!("no answer over udp");
    };
    assert_eq!((first.ip(), local), (IpAddr::V4(A), sock(B, 5353)));
    assert_eq!(udp.ask(T).unwrap(), HeldAnswer::Answered(first, local));
    assert_eq!(
        udp_probe(&pod_a, sock(B, 5354), T).unwrap(),
        ProbeOutcome::Refused
    );

    // The server going away ends the held connection.
    drop(server);
    assert!(matches!(
        held.ask(Duration::from_millis(500)).unwrap(),
        HeldAnswer::Closed | HeldAnswer::Reset
    ));
    assert!(!held.roundtrip(Duration::from_millis(500)).unwrap());
    drop(echo);
    assert_eq!(
        udp.ask(Duration::from_millis(500)).unwrap(),
        HeldAnswer::Reset
    );
    assert_eq!(
        udp_probe(&pod_a, sock(B, 5353), T).unwrap(),
        ProbeOutcome::Refused
    );

    // Unplumbing is idempotent and takes the pod side with it.
    unplumb_pod(&node, "calib").unwrap();
    unplumb_pod(&node, "calib").unwrap();
    assert!(!link_exists(&node, "calib").unwrap());
    assert!(!link_exists(&pod_b, "eth0").unwrap());
    assert!(link_exists(&pod_a, "eth0").unwrap());
}

#[test]
fn dropped_traffic_times_out_and_rejected_traffic_is_unreachable() {
    if !have_root("dropped_traffic_times_out_and_rejected_traffic_is_unreachable") {
        return;
    }
    let cleanup = Cleanup::new("mt");
    let node = NetNs::create(&cleanup.name("node")).unwrap();
    let pod = NetNs::create(&cleanup.name("a")).unwrap();
    plumb_pod(&node, &pod, "calia", "eth0", A).unwrap();
    // The node needs an address to source ICMP errors from.
    manul_netns::create_bridge(&node, "dummy0").unwrap();
    manul_netns::add_address(&node, "dummy0", "10.65.255.1/32".parse().unwrap()).unwrap();

    let dropped = Ipv4Addr::new(10, 65, 9, 9);
    let rejected = Ipv4Addr::new(10, 65, 9, 10);
    replace_route(
        &node,
        &Route::to(IpNet::from(IpAddr::V4(dropped))).kind(RouteKind::Blackhole),
    )
    .unwrap();
    replace_route(
        &node,
        &Route::to(IpNet::from(IpAddr::V4(rejected))).kind(RouteKind::Prohibit),
    )
    .unwrap();
    let short = Duration::from_millis(300);
    // Rejections first: they depend on ICMP errors, which the kernel
    // rate-limits per destination (about one a second after a short burst).
    let pause = || std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        tcp_connect(&pod, sock(rejected, 80), T).unwrap(),
        ProbeOutcome::Unreachable
    );
    pause();
    assert_eq!(
        udp_probe(&pod, sock(rejected, 53), T).unwrap(),
        ProbeOutcome::Unreachable
    );
    pause();
    assert_eq!(
        ping(&pod, rejected.into(), T).unwrap(),
        ProbeOutcome::Unreachable
    );

    assert_eq!(
        tcp_connect(&pod, sock(dropped, 80), short).unwrap(),
        ProbeOutcome::TimedOut
    );
    assert_eq!(
        udp_probe(&pod, sock(dropped, 53), short).unwrap(),
        ProbeOutcome::TimedOut
    );
    assert_eq!(
        ping(&pod, dropped.into(), short).unwrap(),
        ProbeOutcome::TimedOut
    );

    // Loopback inside a fresh namespace works (lo is up).
    link_up(&pod, "lo").unwrap();
    assert_eq!(
        ping(&pod, Ipv4Addr::LOCALHOST.into(), T).unwrap(),
        ProbeOutcome::Connected
    );
}

#[test]
fn dual_stack_pods_reach_each_other() {
    if !have_root("dual_stack_pods_reach_each_other") {
        return;
    }
    let cleanup = Cleanup::new("mt");
    let node = NetNs::create(&cleanup.name("node")).unwrap();
    let pod_a = NetNs::create(&cleanup.name("a")).unwrap();
    let pod_b = NetNs::create(&cleanup.name("b")).unwrap();
    let a6: IpAddr = "fd00:65::2".parse().unwrap();
    let b6: IpAddr = "fd00:65::3".parse().unwrap();
    let link = manul_netns::plumb_pod_ips(&node, &pod_a, "calia", "eth0", &[A.into(), a6]).unwrap();
    assert_eq!(link.ips, vec![IpAddr::V4(A), a6]);
    manul_netns::plumb_pod_ips(&node, &pod_b, "calib", "eth0", &[B.into(), b6]).unwrap();
    assert!(
        list_routes(&pod_a)
            .unwrap()
            .iter()
            .any(|r| r.dst == "::/0".parse().unwrap()
                && r.via == Some(IpAddr::V6(manul_netns::CALICO_GATEWAY_V6)))
    );

    assert_eq!(ping(&pod_a, b6, T).unwrap(), ProbeOutcome::Connected);
    assert_eq!(ping(&pod_b, a6, T).unwrap(), ProbeOutcome::Connected);
    assert_eq!(ping(&pod_a, B.into(), T).unwrap(), ProbeOutcome::Connected);
    let server = TcpServer::start(&pod_b, SocketAddr::new(b6, 8080)).unwrap();
    assert_eq!(
        tcp_connect(&pod_a, SocketAddr::new(b6, 8080), T).unwrap(),
        ProbeOutcome::Connected
    );
    assert_eq!(
        tcp_connect(&pod_a, SocketAddr::new(b6, 8081), T).unwrap(),
        ProbeOutcome::Refused
    );
    let mut held = open_connection(&pod_a, SocketAddr::new(b6, 8080), T).unwrap();
    assert!(held.roundtrip(T).unwrap());
    let _echo = UdpEcho::start(&pod_b, SocketAddr::new(b6, 5353)).unwrap();
    assert_eq!(
        udp_probe(&pod_a, SocketAddr::new(b6, 5353), T).unwrap(),
        ProbeOutcome::Connected
    );
    drop(server);
}
