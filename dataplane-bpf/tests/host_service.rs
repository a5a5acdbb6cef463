#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The host's service device (`manul-svc`, `bpf/manul_svc_host.h`) with
//! real sockets, in a node namespace with one pod: the driver creates the
//! veth pair and routes each cluster IP and external IP of both families
//! through it (exactly the desired ones, following service changes),
//! a host process reaches a cluster IP and its own node port, a
//! restart keeps the device and the routes, loopback's own traffic
//! passes while the programs are attached there; with the setting off a
//! start removes the pair, its routes and the loopback links (loopback
//! still carries traffic), and `purge_node` removes what a run left.
//! Over IPv6: a host process's connection through an IPv6 cluster IP is
//! reset at once when its backend leaves the list, and a new one reaches
//! the remaining backend.
//! Everything (namespaces, pins) is removed at the end, also on failure.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{Backend, Operation, Service, ServicePort};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, HOST_SERVICE_DEVICE};
use manul_dataplane_conformance::topology::Pod;
use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, ProbeOutcome, TcpServer, open_connection, tcp_connect};

mod node;
mod rules;

use node::{DualNode, Node, PIN_ROOT};
use rules::{allow_profile, endpoint, pod_endpoint};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 9);
const SECOND: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);
const FIRST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 9);
/// The second service's external IP.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const NODE_PORT: u16 = 30090;
/// A listener of the node's own on loopback.
const LOOPBACK_PORT: u16 = 7100;
const WAIT: Duration = Duration::from_secs(2);

/// The host service device's setting.
fn nat(on: bool) -> impl Fn(&mut BpfConfig) + Send + Sync + 'static {
    move |config| config.host_service_nat = on
}

fn service(name: &str, ips: Vec<IpAddr>, pod: &Pod) -> Service {
    let be = vec![Backend {
        ip: IpAddr::V4(pod.ip),
        port: 8080,
        local: true,
        ready: true,
    }];
    Service::cluster_ip(
        "ns",
        name,
        ips,
        vec![ServicePort {
            name: "http".into(),
            protocol: 6,
            port: 80,
            node_port: Some(NODE_PORT),
            local_backends: be.clone(),
            backends: be,
        }],
    )
}

/// The service `second`: a cluster IP and an external IP.
fn second(pod: &Pod) -> Service {
    let mut s = service("second", vec![IpAddr::V4(SECOND)], pod);
    s.external_ips = vec![IpAddr::V4(EXTERNAL)];
    s
}

fn base(pod: &Pod) -> Vec<Operation> {
    vec![allow_profile(), pod_endpoint(pod, false)]
}

/// The main table's routes through the device.
fn device_routes(node: &NetNs) -> BTreeSet<IpNet> {
    manul_netns::list_routes(node)
        .unwrap()
        .into_iter()
        .filter(|r| r.dev.as_deref() == Some(HOST_SERVICE_DEVICE))
        .map(|r| r.dst)
        .collect()
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(ip))
}

fn connect(node: &NetNs, ip: Ipv4Addr, port: u16) -> ProbeOutcome {
    tcp_connect(node, SocketAddr::new(ip.into(), port), WAIT).unwrap()
}

#[test]
fn the_host_service_device_follows_the_cluster_ips_and_goes_with_the_setting() {
    if !node::root() {
        return;
    }
    let setup = Node::new("hs", &[("b", Ipv4Addr::new(10, 69, 0, 2))]);
    let node = setup.ns();
    let pod = setup.pod("b");
    // The node's own address, on a link of its own.
    manul_netns::create_veth(node, "ext0", node, "ext1").unwrap();
    manul_netns::add_address(node, "ext0", IpNet::new(NODE_IP.into(), 24).unwrap()).unwrap();
    manul_netns::link_up(node, "ext0").unwrap();
    manul_netns::link_up(node, "ext1").unwrap();
    let _own = TcpServer::start(
        node,
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), LOOPBACK_PORT),
    )
    .expect("a loopback listener");
    let _own6 = TcpServer::start(
        node,
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), LOOPBACK_PORT),
    )
    .expect("an IPv6 loopback listener");

    let driver = setup.driver(nat(true));
    let mut ops = base(pod);
    let dual = service("first", vec![IpAddr::V4(FIRST), IpAddr::V6(FIRST6)], pod);
    ops.push(Operation::ServiceUpdate(dual));
    ops.push(Operation::InSync);
    driver.apply(ops.clone()).expect("apply");
    assert!(manul_netns::link_exists(node, HOST_SERVICE_DEVICE).unwrap());
    assert!(manul_netns::link_exists(node, "manul-svc-p").unwrap());
    assert_eq!(
        manul_netns::link_mac(node, HOST_SERVICE_DEVICE).unwrap(),
        manul_dataplane_bpf::HOST_SERVICE_MAC
    );
    assert_eq!(
        node.get_sysctl("net.ipv4.conf.manul-svc.accept_local")
            .unwrap(),
        "1"
    );
    assert_eq!(
        device_routes(node),
        BTreeSet::from([host(FIRST), IpNet::from(IpAddr::V6(FIRST6))])
    );
    assert_eq!(connect(node, FIRST, 80), ProbeOutcome::Connected);
    assert_eq!(connect(node, NODE_IP, NODE_PORT), ProbeOutcome::Connected);
    assert_eq!(
        connect(node, Ipv4Addr::LOCALHOST, LOOPBACK_PORT),
        ProbeOutcome::Connected,
        "loopback's own traffic"
    );
    assert_eq!(
        tcp_connect(
            node,
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), LOOPBACK_PORT),
            WAIT
        )
        .unwrap(),
        ProbeOutcome::Connected,
        "loopback's own IPv6 traffic"
    );

    // The cluster IP changes: the routes follow; the old one is gone.
    driver
        .apply(vec![
            Operation::ServiceRemove {
                namespace: "ns".into(),
                name: "first".into(),
            },
            Operation::ServiceUpdate(second(pod)),
        ])
        .expect("change");
    assert_eq!(
        device_routes(node),
        BTreeSet::from([host(SECOND), host(EXTERNAL)])
    );
    assert_eq!(connect(node, EXTERNAL, 80), ProbeOutcome::Connected);
    assert_eq!(connect(node, SECOND, 80), ProbeOutcome::Connected);
    assert_ne!(connect(node, FIRST, 80), ProbeOutcome::Connected);

    // A restart keeps the device and its routes.
    driver.restart().expect("restart");
    assert_eq!(
        device_routes(node),
        BTreeSet::from([host(SECOND), host(EXTERNAL)])
    );
    assert_eq!(connect(node, SECOND, 80), ProbeOutcome::Connected);
    drop(driver);

    // Off: a start removes the pair, its routes and the loopback links.
    let off = setup.driver(nat(false));
    let mut ops = base(pod);
    ops.push(Operation::ServiceUpdate(second(pod)));
    ops.push(Operation::InSync);
    off.apply(ops.clone()).expect("apply, setting off");
    assert!(!manul_netns::link_exists(node, HOST_SERVICE_DEVICE).unwrap());
    assert!(!manul_netns::link_exists(node, "manul-svc-p").unwrap());
    assert!(device_routes(node).is_empty());
    assert_ne!(connect(node, SECOND, 80), ProbeOutcome::Connected);
    assert_eq!(
        connect(node, Ipv4Addr::LOCALHOST, LOOPBACK_PORT),
        ProbeOutcome::Connected,
        "loopback after the setting went off"
    );
    drop(off);

    // On again, then purged (from inside the node's namespace).
    let on = setup.driver(nat(true));
    on.apply(ops).expect("apply");
    assert_eq!(connect(node, SECOND, 80), ProbeOutcome::Connected);
    drop(on);
    let pins = setup.name().to_string();
    node.run(move || BpfDriver::purge_node(PIN_ROOT.as_ref(), &pins))
        .unwrap()
        .expect("purge");
    assert!(!manul_netns::link_exists(node, HOST_SERVICE_DEVICE).unwrap());
    assert_eq!(
        connect(node, Ipv4Addr::LOCALHOST, LOOPBACK_PORT),
        ProbeOutcome::Connected,
        "loopback after the purge"
    );
    drop(setup);
}

/// The IPv6 case's node address, cluster IP and backends.
const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 1);
const HELD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x99);
const BACKENDS6: [(&str, Ipv4Addr, Ipv6Addr); 2] = [
    (
        "b1",
        Ipv4Addr::new(10, 69, 0, 11),
        Ipv6Addr::new(0xfd00, 0x69, 0, 0, 0, 0, 0, 0x11),
    ),
    (
        "b2",
        Ipv4Addr::new(10, 69, 0, 12),
        Ipv6Addr::new(0xfd00, 0x69, 0, 0, 0, 0, 0, 0x12),
    ),
];

/// The IPv6 service `held6` with the backends `names` (port 80 to 8080).
fn held6(names: &[&str]) -> Operation {
    let be: Vec<Backend> = BACKENDS6
        .iter()
        .filter(|(n, _, _)| names.contains(n))
        .map(|(_, _, ip6)| Backend {
            ip: IpAddr::V6(*ip6),
            port: 8080,
            local: true,
            ready: true,
        })
        .collect();
    Operation::ServiceUpdate(Service::cluster_ip(
        "ns",
        "held6",
        vec![IpAddr::V6(HELD6)],
        vec![ServicePort {
            name: "echo".into(),
            protocol: 6,
            port: 80,
            node_port: None,
            local_backends: be.clone(),
            backends: be,
        }],
    ))
}

#[test]
fn an_ipv6_host_connection_is_reset_when_its_backend_goes() {
    if !node::root() {
        return;
    }
    let mut setup = DualNode::new("h6");
    let node = &setup.node;
    // The node's own IPv6 address (host processes send from it).
    node.set_sysctl("net.ipv6.conf.default.accept_dad", "0")
        .unwrap();
    manul_netns::create_veth(node, "ext0", node, "ext1").unwrap();
    manul_netns::add_address(node, "ext0", IpNet::new(NODE_IP6.into(), 64).unwrap()).unwrap();
    manul_netns::link_up(node, "ext0").unwrap();
    manul_netns::link_up(node, "ext1").unwrap();
    let mut ops = vec![allow_profile()];
    // Pods and their echo servers (removed before the node).
    let mut servers = Vec::new();
    for (name, ip, ip6) in BACKENDS6 {
        let interface = workload_interface_name("ns", name);
        let ips = [IpAddr::V4(ip), IpAddr::V6(ip6)];
        let pod = setup.add_pod(name, &interface, &ips);
        let server =
            TcpServer::start(&pod.netns, SocketAddr::new(IpAddr::V6(ip6), 8080)).expect("server");
        ops.push(endpoint("ns", name, &interface, &ips, false));
        servers.push(server);
    }
    ops.push(held6(&["b1"]));
    ops.push(Operation::InSync);
    let node = &setup.node;
    let driver = setup.driver(nat(true));
    driver.apply(ops).expect("apply");
    let to = SocketAddr::new(IpAddr::V6(HELD6), 80);
    let mut held =
        open_connection(node, to, WAIT).expect("a host connection through the IPv6 cluster IP");
    assert!(held.roundtrip(WAIT).unwrap());
    // Another backend joins: the connection keeps its own.
    driver.apply(vec![held6(&["b1", "b2"])]).expect("add b2");
    for _ in 0..3 {
        assert!(
            held.roundtrip(WAIT).unwrap(),
            "the connection lost its backend"
        );
    }
    // Its backend goes: reset at once; a new connection reaches b2.
    driver.apply(vec![held6(&["b2"])]).expect("remove b1");
    let started = Instant::now();
    assert!(
        !held.roundtrip(Duration::from_secs(3)).unwrap(),
        "a host connection to a removed backend still passes data"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not reset at once: {:?}",
        started.elapsed()
    );
    held.close();
    assert_eq!(servers[1].accepted(), 0, "b2 has had no connection yet");
    let mut again = open_connection(node, to, WAIT).expect("a new host connection");
    assert!(again.roundtrip(WAIT).unwrap());
    assert_eq!(servers[1].accepted(), 1, "the new connection went to b2");
    again.close();
    drop(driver);
    drop(servers);
    drop(setup);
}
