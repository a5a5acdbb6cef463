//! Host protection against the real kernel, with real packets, in network
//! namespaces the tests create: a host `H` whose `eth0` (10.0.0.10) faces
//! a client `C` (10.0.0.1) and whose `eth1` (10.1.0.1) faces a server `S`
//! (10.1.0.2) that `C` reaches through `H` (forwarded traffic).
//!
//! Each test programs host endpoints with normal, forward, untracked or
//! pre-DNAT policy and checks what gets through: failsafe ports always,
//! normal policy only on traffic to and from the host, forward policy only
//! on forwarded traffic, untracked allows needing both directions, pre-DNAT
//! policy seeing the address before DNAT, and the all-interfaces endpoint
//! covering what no named one does (loopback included).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use manul_dataplane_api::{
    Action, Driver, HostEndpoint, Match, Operation, Policy, PolicyId, PortRange, Rule, TierPolicies,
};
use manul_dataplane_conformance::privileges;
use manul_dataplane_iptables::{Nft, NftDriver};
use manul_netns::{IpNet, NetNs, ProbeOutcome, TcpServer, UdpEcho};

const WAIT: Duration = Duration::from_millis(400);

struct Topology {
    host: NetNs,
    client: NetNs,
    server: NetNs,
    _servers: Vec<TcpServer>,
    _udp: Vec<UdpEcho>,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn net(ip: Ipv4Addr, len: u8) -> IpNet {
    IpNet::new(IpAddr::V4(ip), len).unwrap()
}

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// Builds the three namespaces, or `None` without root.
fn topology(tag: &str) -> Option<Topology> {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return None;
    }
    let prefix = manul_netns::unique_prefix(tag);
    let host = NetNs::create(&format!("{prefix}-h")).unwrap();
    let client = NetNs::create(&format!("{prefix}-c")).unwrap();
    let server = NetNs::create(&format!("{prefix}-s")).unwrap();
    manul_netns::create_veth(&host, "eth0", &client, "eth0").unwrap();
    manul_netns::create_veth(&host, "eth1", &server, "eth0").unwrap();
    for (ns, ifname, addr) in [
        (&host, "eth0", net(HOST, 24)),
        (&host, "eth1", net(v4(10, 1, 0, 1), 24)),
        (&client, "eth0", net(v4(10, 0, 0, 1), 24)),
        (&server, "eth0", net(SERVER, 24)),
    ] {
        manul_netns::add_address(ns, ifname, addr).unwrap();
        manul_netns::link_up(ns, ifname).unwrap();
    }
    for ns in [&host, &client, &server] {
        manul_netns::link_up(ns, "lo").unwrap();
    }
    host.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    manul_netns::add_route(
        &client,
        &manul_netns::Route::to(net(v4(10, 1, 0, 0), 24)).via(IpAddr::V4(HOST)),
    )
    .unwrap();
    manul_netns::add_route(
        &server,
        &manul_netns::Route::to(net(v4(10, 0, 0, 0), 24)).via(IpAddr::V4(v4(10, 1, 0, 1))),
    )
    .unwrap();
    let mut servers = Vec::new();
    for port in [22, 10250, 8081, 9999] {
        servers.push(
            TcpServer::start(
                &host,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            )
            .unwrap(),
        );
        servers.push(TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER), port)).unwrap());
    }
    let udp = vec![UdpEcho::start(&host, SocketAddr::new(IpAddr::V4(HOST), 5353)).unwrap()];
    Some(Topology {
        host,
        client,
        server,
        _servers: servers,
        _udp: udp,
    })
}

fn pid(name: &str) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: name.into(),
    }
}

fn rule(
    id: &str,
    action: Action,
    protocol: u8,
    dst_port: Option<u16>,
    src_port: Option<u16>,
) -> Rule {
    let ports = |p: Option<u16>| {
        p.map(|p| vec![PortRange { first: p, last: p }])
            .unwrap_or_default()
    };
    Rule {
        id: id.into(),
        action,
        ip_version: None,
        protocol: Some(protocol),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match {
            ports: ports(src_port),
            ..Match::default()
        },
        dst: Match {
            ports: ports(dst_port),
            ..Match::default()
        },
    }
}

fn allow_all(id: &str) -> Rule {
    Rule {
        protocol: None,
        ..rule(id, Action::Allow, 0, None, None)
    }
}

fn tier(inbound: &[&str], outbound: &[&str]) -> Vec<TierPolicies> {
    vec![TierPolicies {
        name: "default".into(),
        default_action: Action::Deny,
        inbound: inbound.iter().map(|n| pid(n)).collect(),
        outbound: outbound.iter().map(|n| pid(n)).collect(),
    }]
}

fn hep(id: &str, iface: &str) -> HostEndpoint {
    HostEndpoint {
        id: id.into(),
        interface_name: iface.into(),
        expected_ips: vec![],
        tiers: vec![],
        pre_dnat_tiers: vec![],
        untracked_tiers: vec![],
        forward_tiers: vec![],
        profiles: vec![],
    }
}

fn policy(name: &str, inbound: Vec<Rule>, outbound: Vec<Rule>) -> Operation {
    Operation::PolicyUpdate {
        id: pid(name),
        policy: Policy { inbound, outbound },
    }
}

/// Programs `ops` (then in-sync) with the default configuration (Calico's
/// failsafe ports) inside the host namespace.
fn program(t: &Topology, mut ops: Vec<Operation>) {
    ops.push(Operation::InSync);
    t.host
        .run(|| {
            let mut d = NftDriver::new(Nft::default()).expect("driver");
            d.apply(&ops).expect("apply");
        })
        .unwrap();
}

fn tcp(from: &NetNs, to: Ipv4Addr, port: u16) -> bool {
    manul_netns::tcp_connect(from, SocketAddr::new(IpAddr::V4(to), port), WAIT)
        .unwrap()
        .reached()
}

impl Topology {
    /// Whether the client reaches the host's TCP `port`.
    fn to_host(&self, port: u16) -> bool {
        tcp(&self.client, HOST, port)
    }

    /// Whether the client reaches the server's TCP `port`, forwarded by
    /// the host.
    fn through_host(&self, port: u16) -> bool {
        tcp(&self.client, SERVER, port)
    }
}

fn udp(from: &NetNs, to: Ipv4Addr, port: u16) -> bool {
    manul_netns::udp_probe(from, SocketAddr::new(IpAddr::V4(to), port), WAIT)
        .unwrap()
        .reached()
}

fn expect(cases: &[(&str, bool, bool)]) {
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, want, got)| want != got)
        .map(|(what, want, got)| format!("{what}: expected {want}, got {got}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn normal_policy_guards_the_host_forward_policy_the_traffic_through_it() {
    let Some(t) = topology("iphn") else { return };
    // Before any host endpoint, everything gets through.
    assert!(t.to_host(8081));
    let mut eth0 = hep("node1-eth0", "eth0");
    eth0.tiers = tier(&["host"], &["host"]);
    eth0.forward_tiers = tier(&["forward"], &[]);
    program(
        &t,
        vec![
            policy(
                "host",
                vec![rule("host/in/0", Action::Allow, 6, Some(10250), None)],
                vec![allow_all("host/out/0")],
            ),
            policy(
                "forward",
                vec![
                    rule("forward/in/0", Action::Deny, 6, Some(9999), None),
                    allow_all("forward/in/1"),
                ],
                vec![],
            ),
            Operation::HostEndpointUpdate(eth0),
        ],
    );
    expect(&[
        ("failsafe TCP 22 to the host", true, t.to_host(22)),
        ("allowed TCP 10250 to the host", true, t.to_host(10250)),
        ("TCP 8081 to the host", false, t.to_host(8081)),
        // Normal policy does not apply to forwarded traffic...
        ("forwarded TCP 8081", true, t.through_host(8081)),
        // ...forward (applyOnForward) policy does.
        ("forwarded TCP 9999", false, t.through_host(9999)),
    ]);
    // The host's own connections out through eth0 (egress allowed): the
    // client refuses it (nothing listens there), so the SYN left.
    let out = manul_netns::tcp_connect(
        &t.host,
        SocketAddr::new(IpAddr::V4(v4(10, 0, 0, 1)), 8081),
        WAIT,
    )
    .unwrap();
    assert_eq!(out, ProbeOutcome::Refused);
}

#[test]
fn untracked_policy_needs_both_directions_and_skips_normal_policy() {
    let Some(t) = topology("iphu") else { return };
    // Normal policy denies everything (no policy, no profile); untracked
    // policy allows UDP 5353 in, and (second round) its replies out.
    let mut eth0 = hep("node1-eth0", "eth0");
    eth0.untracked_tiers = tier(&["raw"], &[]);
    let inbound_only = vec![
        policy(
            "raw",
            vec![rule("raw/in/0", Action::Allow, 17, Some(5353), None)],
            vec![],
        ),
        Operation::HostEndpointUpdate(eth0.clone()),
    ];
    program(&t, inbound_only);
    // The request is allowed untracked; the reply is a new flow to the
    // tracked rules, which deny it.
    expect(&[
        (
            "UDP 5353, reply not allowed",
            false,
            udp(&t.client, HOST, 5353),
        ),
        ("failsafe TCP 22", true, t.to_host(22)),
    ]);
    eth0.untracked_tiers = tier(&["raw"], &["raw"]);
    program(
        &t,
        vec![
            policy(
                "raw",
                vec![rule("raw/in/0", Action::Allow, 17, Some(5353), None)],
                vec![rule("raw/out/0", Action::Allow, 17, None, Some(5353))],
            ),
            Operation::HostEndpointUpdate(eth0),
        ],
    );
    expect(&[
        (
            "UDP 5353 both ways untracked",
            true,
            udp(&t.client, HOST, 5353),
        ),
        ("TCP 8081 (normal policy)", false, t.to_host(8081)),
        ("failsafe TCP 22", true, t.to_host(22)),
    ]);
}

#[test]
fn pre_dnat_policy_sees_the_address_before_dnat_and_failsafe_comes_first() {
    let Some(t) = topology("iphd") else { return };
    // Another table forwards host port 30080 to the server's 8081, as a
    // NodePort would.
    t.host
        .run(|| {
            let out = Command::new("sh")
                .args([
                    "-c",
                    "nft -f - <<'EOF'\ntable ip other-nat {\n chain pre { type nat hook prerouting priority dstnat; policy accept; tcp dport 30080 dnat to 10.1.0.2:8081\n }\n}\nEOF",
                ])
                .output()
                .expect("nft");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
        .unwrap();
    expect(&[("NodePort-style DNAT", true, t.to_host(30080))]);
    let mut eth0 = hep("node1-eth0", "eth0");
    // Normal policy allows 10250 and 30080 in; pre-DNAT policy denies
    // 30080 (before DNAT, so it sees that port), allows 8081 (so normal
    // policy never judges it) and denies all other TCP, failsafe ports
    // excepted.
    eth0.tiers = tier(&["host"], &[]);
    eth0.pre_dnat_tiers = tier(&["pre-dnat"], &[]);
    program(
        &t,
        vec![
            policy(
                "host",
                vec![
                    rule("host/in/0", Action::Allow, 6, Some(10250), None),
                    rule("host/in/1", Action::Allow, 6, Some(30080), None),
                ],
                vec![],
            ),
            policy(
                "pre-dnat",
                vec![
                    rule("pre-dnat/in/0", Action::Deny, 6, Some(30080), None),
                    rule("pre-dnat/in/1", Action::Allow, 6, Some(8081), None),
                    rule("pre-dnat/in/2", Action::Allow, 6, Some(10250), None),
                    rule("pre-dnat/in/3", Action::Deny, 6, None, None),
                ],
                vec![],
            ),
            Operation::HostEndpointUpdate(eth0),
        ],
    );
    expect(&[
        ("pre-DNAT deny of the NodePort", false, t.to_host(30080)),
        (
            "pre-DNAT allow, normal policy skipped",
            true,
            t.to_host(8081),
        ),
        ("both allow", true, t.to_host(10250)),
        ("failsafe before pre-DNAT deny", true, t.to_host(22)),
        ("pre-DNAT deny of the rest", false, t.to_host(9999)),
        // Forwarded traffic to the server directly is not pre-DNAT denied
        // on 8081 (allowed) and has no forward policy.
        ("forwarded TCP 8081", true, t.through_host(8081)),
    ]);
}

#[test]
fn the_all_interfaces_endpoint_covers_every_interface_no_named_one_does() {
    let Some(t) = topology("iphw") else { return };
    let mut all = hep("node1-auto-hep", "*");
    all.tiers = tier(&["host"], &[]);
    let mut eth1 = hep("node1-eth1", "eth1");
    eth1.profiles = vec!["allow-all".into()];
    program(
        &t,
        vec![
            policy(
                "host",
                vec![rule("host/in/0", Action::Allow, 6, Some(10250), None)],
                vec![],
            ),
            Operation::ProfileUpdate {
                id: "allow-all".into(),
                profile: Policy {
                    inbound: vec![allow_all("allow-all/in")],
                    outbound: vec![allow_all("allow-all/out")],
                },
            },
            Operation::HostEndpointUpdate(all),
            Operation::HostEndpointUpdate(eth1),
        ],
    );
    expect(&[
        ("eth0 (all interfaces): TCP 10250", true, t.to_host(10250)),
        ("eth0 (all interfaces): TCP 8081", false, t.to_host(8081)),
        ("eth0 (all interfaces): failsafe 22", true, t.to_host(22)),
        (
            "eth1 (named, allow-all): TCP 8081",
            true,
            tcp(&t.server, v4(10, 1, 0, 1), 8081),
        ),
        // No forward policy on either: forwarded traffic is not policed.
        ("forwarded TCP 8081", true, t.through_host(8081)),
        // Loopback is one of the host's interfaces: no egress policy.
        (
            "loopback TCP 8081",
            false,
            tcp(&t.host, Ipv4Addr::LOCALHOST, 8081),
        ),
    ]);
}
