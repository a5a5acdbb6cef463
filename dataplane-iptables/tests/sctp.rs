#![allow(clippy::expect_used, clippy::unwrap_used)]

//! SCTP through a ClusterIP on the nftables dataplane, with real packets
//! over IPv4 and IPv6: a client pod and a backend pod in network
//! namespaces behind veths to a node namespace running the driver, the
//! backend listening on another port than the service's. The kernel's NAT
//! rewrites SCTP's ports and recomputes its CRC32c itself (`nf_nat`'s
//! SCTP support, `CONFIG_NF_CT_PROTO_SCTP`); the test kernel may have no
//! SCTP stack (`CONFIG_IP_SCTP`), so client and backend speak SCTP over
//! raw sockets (an INIT with its CRC32c, and the backend's answer to it):
//! the INIT arrives at the backend's port with a valid CRC32c from the
//! client's address, and the answer comes back from the ClusterIP's port
//! with a valid CRC32c; from the node itself (masqueraded, its source
//! port made random) both ports rewritten, the CRC32c valid both ways.
//! Everything (namespaces, the driver's table, which lives in the node
//! namespace) is removed at the end, also on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, Backend, EndpointId, Match, Operation, Policy, Rule, Service, ServicePort,
    WorkloadEndpoint,
};
use manul_dataplane_conformance::driver_thread::DriverThread;
use manul_dataplane_conformance::{NodeContext, privileges};
use manul_netns::{
    NetNs, Route, add_address, create_bridge, link_up, plumb_pod_ips, replace_route, unique_prefix,
};
use nix::sys::socket::SockProtocol;

mod common;
// The eBPF dataplane's raw-socket helpers (SCTP packets with their
// CRC32c, raw sockets in a namespace), shared rather than copied.
#[path = "../../dataplane-bpf/tests/raw/mod.rs"]
mod raw;

use raw::{crc_holds, raw_socket, receive, sctp_packet, send_to};

const PROTO_SCTP: u8 = 132;
/// The service's port, and the port its backend listens on.
const PORT: u16 = 9000;
const TARGET: u16 = 9001;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 40);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 3, 0, 0, 0, 0, 0x40);
/// The node's own addresses.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x91, 0, 0, 0, 0, 0, 1);
/// (name, IPv4, IPv6) of the pods.
const CLIENT: (&str, Ipv4Addr, Ipv6Addr) = (
    "a",
    Ipv4Addr::new(10, 67, 0, 2),
    Ipv6Addr::new(0xfd00, 0x67, 0, 0, 0, 0, 0, 2),
);
const BACKEND: (&str, Ipv4Addr, Ipv6Addr) = (
    "b",
    Ipv4Addr::new(10, 67, 0, 11),
    Ipv6Addr::new(0xfd00, 0x67, 0, 0, 0, 0, 0, 0x11),
);

fn open(id: &str) -> Rule {
    Rule {
        id: id.into(),
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match::default(),
    }
}

fn endpoint(name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Operation {
    Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
        id: EndpointId {
            namespace: "ns".into(),
            name: name.into(),
        },
        interface_name: format!("mnlsc{name}"),
        nets: vec![
            IpNet::new(v4.into(), 32).unwrap(),
            IpNet::new(v6.into(), 128).unwrap(),
        ],
        mac: None,
        tiers: vec![],
        profiles: vec!["open".into()],
    })
}

/// What one exchange showed: the INIT as the backend got it (source,
/// source port, destination port, CRC32c held) and the answer as the
/// client got it (source, source port, CRC32c held; None: no answer).
type Seen = ((IpAddr, u16, u16, bool), Option<(IpAddr, u16, bool)>);

/// Sends an SCTP INIT from the client (source port `sport`) to
/// `frontend:PORT`; the backend answers with an INIT ACK to whoever it
/// saw (address and port). None: the backend got nothing within a second.
fn exchange(client: &NetNs, backend: &NetNs, frontend: IpAddr, sport: u16) -> Option<Seen> {
    let v6 = frontend.is_ipv6();
    let tag = 0x6e00_0000 | u32::from(sport);
    let at_backend = raw_socket(backend, v6, SockProtocol::Sctp);
    let out = raw_socket(client, v6, SockProtocol::Sctp);
    send_to(&out, &sctp_packet(sport, PORT, 0, 1, tag), frontend);
    let deadline = Instant::now() + Duration::from_secs(1);
    let (src, from_port, dport, held) = loop {
        if Instant::now() > deadline {
            return None;
        }
        let Some((src, l4)) = receive(&at_backend, v6) else {
            continue;
        };
        if l4.len() >= 32 && l4[12] == 1 && l4[16..20] == tag.to_be_bytes() {
            let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
            break (src, port(0), port(2), crc_holds(&l4));
        }
    };
    send_to(
        &at_backend,
        &sctp_packet(dport, from_port, tag, 2, tag),
        src,
    );
    let seen = (src, from_port, dport, held);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Some((from, l4)) = receive(&out, v6) else {
            continue;
        };
        if l4.len() >= 32 && l4[12] == 2 && l4[4..8] == tag.to_be_bytes() {
            let answer = (from, u16::from_be_bytes([l4[0], l4[1]]), crc_holds(&l4));
            return Some((seen, Some(answer)));
        }
    }
    Some((seen, None))
}

#[test]
fn sctp_target_port_through_a_cluster_ip_over_both_families() {
    if !privileges().expect("privileges: CI=true needs root") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let prefix = unique_prefix("nsc");
    let node = NetNs::create(&format!("{prefix}-node")).expect("node namespace");
    let mut pods = Vec::new();
    for (i, (name, v4, v6)) in [CLIENT, BACKEND].into_iter().enumerate() {
        let ns = NetNs::create(&format!("{prefix}-{i}")).expect("pod namespace");
        plumb_pod_ips(
            &node,
            &ns,
            &format!("mnlsc{name}"),
            "eth0",
            &[v4.into(), v6.into()],
        )
        .expect("pod plumbing");
        pods.push(ns);
    }
    // The node's own addresses, and a route to the services (as a
    // default route would give).
    for key in ["all", "default"] {
        node.set_sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0")
            .unwrap();
    }
    create_bridge(&node, "svc0").expect("bridge");
    link_up(&node, "svc0").expect("bridge up");
    add_address(&node, "svc0", IpNet::new(NODE.into(), 24).unwrap()).expect("address");
    add_address(&node, "svc0", IpNet::new(NODE6.into(), 64).unwrap()).expect("address");
    for net in ["10.96.0.0/16", "fd00:96::/32"] {
        replace_route(&node, &Route::to(net.parse().unwrap()).dev("svc0")).expect("route");
    }
    let driver = DriverThread::start(
        &node,
        NodeContext {
            node: prefix.clone(),
        },
        common::nft_factory(),
    )
    .expect("driver");
    let backends: Vec<Backend> = [IpAddr::V4(BACKEND.1), IpAddr::V6(BACKEND.2)]
        .into_iter()
        .map(|ip| Backend {
            ip,
            port: TARGET,
            local: true,
            ready: true,
        })
        .collect();
    driver
        .apply(vec![
            Operation::ProfileUpdate {
                id: "open".into(),
                profile: Policy {
                    inbound: vec![open("open/in")],
                    outbound: vec![open("open/out")],
                },
            },
            endpoint(CLIENT.0, CLIENT.1, CLIENT.2),
            endpoint(BACKEND.0, BACKEND.1, BACKEND.2),
            Operation::ServiceUpdate(Service::cluster_ip(
                "ns",
                "assoc",
                vec![VIP.into(), VIP6.into()],
                vec![ServicePort {
                    name: "sctp".into(),
                    protocol: PROTO_SCTP,
                    port: PORT,
                    node_port: None,
                    local_backends: backends.clone(),
                    backends,
                }],
            )),
            Operation::InSync,
        ])
        .expect("apply");

    for (frontend, client) in [
        (IpAddr::V4(VIP), IpAddr::V4(CLIENT.1)),
        (IpAddr::V6(VIP6), IpAddr::V6(CLIENT.2)),
    ] {
        for sport in [20_001, 20_002] {
            assert_eq!(
                exchange(&pods[0], &pods[1], frontend, sport),
                Some(((client, sport, TARGET, true), Some((frontend, PORT, true)))),
                "{frontend}: (the INIT at the backend, the answer at the client)"
            );
        }
    }
    // The node itself (a host process, not a pod): masqueraded with a
    // random source port (`masquerade fully-random`), both ports
    // rewritten and the CRC32c recomputed by the kernel.
    for (frontend, node_addr) in [
        (IpAddr::V4(VIP), IpAddr::V4(NODE)),
        (IpAddr::V6(VIP6), IpAddr::V6(NODE6)),
    ] {
        let mut moved = 0;
        for sport in 20_100..20_104 {
            let seen = exchange(&node, &pods[1], frontend, sport);
            let Some(((src, from_port, dport, held), answer)) = seen else {
                panic!("{frontend}: the node's INIT from port {sport} lost");
            };
            assert_eq!(
                (src, dport, held, answer),
                (node_addr, TARGET, true, Some((frontend, PORT, true))),
                "{frontend}: the node's INIT from port {sport}, masqueraded to {from_port}"
            );
            moved += usize::from(from_port != sport);
        }
        assert!(moved > 0, "{frontend}: no source port was rewritten");
    }
    drop(driver);
}
