#![allow(clippy::expect_used, clippy::unwrap_used)]

//! Host protection with real packets: a node namespace whose `eth0` leads
//! to an outside namespace, and a pod behind the node. A host endpoint
//! named `*` (so it covers `eth0`, but not loopback or the pod's veth)
//! carries normal, pre-DNAT, untracked and forward policy; TCP connections
//! from outside show which one decided, failsafe ports stay open, pod
//! traffic through the host follows the forward policy only, and a named
//! host endpoint takes `eth0` over from `*` and gives it back. Everything
//! (namespaces, pins) is removed at the end, also on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, Driver, HostEndpoint, Match, Operation, Policy, PortRange, Rule, TierPolicies,
};
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_netns::{
    NetNs, Route, TcpServer, add_address, add_route, create_veth, link_index, link_up,
    plumb_pod_ips, tcp_connect, unique_prefix,
};

mod node;
mod rules;

use node::Pins;
use rules::{allow_profile, endpoint, pid};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);
const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x10);
const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x20);
const POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2);
/// A failsafe port of this test's configuration.
const FAILSAFE: u16 = 2222;

/// The namespaces and the pin directory; dropped pod first, then the
/// outside, the node, the pins.
struct Topology {
    pod: NetNs,
    outside: NetNs,
    node: NetNs,
    pins: Pins,
}

impl Topology {
    fn new() -> Option<Self> {
        if !node::root() {
            return None;
        }
        let prefix = unique_prefix("bh");
        let node = NetNs::create(&format!("{prefix}-n")).expect("node namespace");
        let outside = NetNs::create(&format!("{prefix}-o")).expect("outside namespace");
        let pod = NetNs::create(&format!("{prefix}-p")).expect("pod namespace");
        create_veth(&node, "eth0", &outside, "ext0").expect("eth0");
        // Addresses usable at once (no duplicate address detection).
        node.set_sysctl("net.ipv6.conf.eth0.accept_dad", "0")
            .unwrap();
        outside
            .set_sysctl("net.ipv6.conf.ext0.accept_dad", "0")
            .unwrap();
        add_address(&node, "eth0", IpNet::new(NODE_IP.into(), 24).unwrap()).unwrap();
        add_address(&outside, "ext0", IpNet::new(OUTSIDE_IP.into(), 24).unwrap()).unwrap();
        add_address(&node, "eth0", IpNet::new(NODE_IP6.into(), 64).unwrap()).unwrap();
        add_address(
            &outside,
            "ext0",
            IpNet::new(OUTSIDE_IP6.into(), 64).unwrap(),
        )
        .unwrap();
        link_up(&node, "eth0").unwrap();
        link_up(&outside, "ext0").unwrap();
        plumb_pod_ips(
            &node,
            &pod,
            "mnlp",
            "eth0",
            &[POD_IP.into(), POD_IP6.into()],
        )
        .expect("pod plumbing");
        for (to, via) in [
            ("10.65.0.0/16", IpAddr::from(NODE_IP)),
            ("fd00:65::/64", IpAddr::from(NODE_IP6)),
        ] {
            add_route(&outside, &Route::to(to.parse().unwrap()).via(via)).unwrap();
        }
        Some(Self {
            pod,
            outside,
            node,
            pins: Pins(prefix),
        })
    }

    fn node(&self) -> &NetNs {
        &self.node
    }

    fn outside(&self) -> &NetNs {
        &self.outside
    }

    fn pod(&self) -> &NetNs {
        &self.pod
    }

    fn config(&self) -> BpfConfig {
        let mut c = node::config(self.pins.name());
        c.failsafe = vec![(false, 6, FAILSAFE)];
        c
    }
}

fn ports(list: &[u16]) -> Vec<PortRange> {
    list.iter()
        .map(|&p| PortRange { first: p, last: p })
        .collect()
}

/// A TCP rule matching destination (or, with `source`, source) ports.
fn tcp(id: &str, action: Action, list: &[u16], source: bool) -> Rule {
    let m = Match {
        ports: ports(list),
        ..Match::default()
    };
    let (src, dst) = if source {
        (m, Match::default())
    } else {
        (Match::default(), m)
    };
    Rule {
        id: id.into(),
        action,
        ip_version: None,
        protocol: Some(6),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src,
        dst,
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

fn policy(name: &str, inbound: Vec<Rule>, outbound: Vec<Rule>) -> Operation {
    Operation::PolicyUpdate {
        id: pid(name),
        policy: Policy { inbound, outbound },
    }
}

fn host_endpoint(id: &str, interface: &str, with_policy: bool) -> HostEndpoint {
    let t = |i: &[&str], o: &[&str]| if with_policy { tier(i, o) } else { vec![] };
    HostEndpoint {
        id: id.into(),
        interface_name: interface.into(),
        expected_ips: vec![IpAddr::V4(NODE_IP)],
        tiers: t(&["normal"], &[]),
        pre_dnat_tiers: t(&["pre-dnat"], &[]),
        untracked_tiers: t(&["untracked"], &["untracked"]),
        forward_tiers: t(&["forward"], &[]),
        profiles: vec![],
    }
}

/// Normal: 8080, 8082 and 8086 to the host. Pre-DNAT: 8082 denied, 8083
/// allowed. Untracked: 8086 denied, 8085 allowed both ways. Forward: port
/// 80 inbound (so the pod's 81 falls to the tier's default Deny); nothing
/// outbound (pod traffic leaving is not policed).
fn state() -> Vec<Operation> {
    vec![
        policy(
            "normal",
            vec![tcp("normal/0", Action::Allow, &[8080, 8082, 8086], false)],
            vec![],
        ),
        policy(
            "pre-dnat",
            vec![
                tcp("pre-dnat/0", Action::Deny, &[8082], false),
                tcp("pre-dnat/1", Action::Allow, &[8083], false),
            ],
            vec![],
        ),
        policy(
            "untracked",
            vec![
                tcp("untracked/0", Action::Deny, &[8086], false),
                tcp("untracked/1", Action::Allow, &[8085], false),
            ],
            vec![tcp("untracked/out/0", Action::Allow, &[8085], true)],
        ),
        policy(
            "forward",
            vec![tcp("forward/0", Action::Allow, &[80], false)],
            vec![],
        ),
        allow_profile(),
        endpoint("ns", "p", "mnlp", &[POD_IP.into(), POD_IP6.into()], false),
        Operation::HostEndpointUpdate(host_endpoint("all", "*", true)),
        Operation::InSync,
    ]
}

fn reached(from: &NetNs, ip: impl Into<IpAddr>, port: u16) -> bool {
    tcp_connect(
        from,
        SocketAddr::new(ip.into(), port),
        Duration::from_millis(400),
    )
    .expect("probe")
    .reached()
}

/// Waits (briefly) for `want`: a closed flow may still be remembered.
fn settles(from: &NetNs, ip: Ipv4Addr, port: u16, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if reached(from, ip, port) == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn host_endpoint_stages_with_real_traffic() {
    let Some(topo) = Topology::new() else { return };
    let node = topo.node();
    let host_ports = [8080, 8081, 8082, 8083, 8085, 8086, FAILSAFE];
    let servers = |ns: &NetNs, ips: [IpAddr; 2], ports: &[u16]| -> Vec<TcpServer> {
        ips.iter()
            .flat_map(|&ip| ports.iter().map(move |&p| SocketAddr::new(ip, p)))
            .map(|a| TcpServer::start(ns, a).unwrap())
            .collect()
    };
    let _host_servers = servers(node, [NODE_IP.into(), NODE_IP6.into()], &host_ports);
    let _pod_servers = servers(topo.pod(), [POD_IP.into(), POD_IP6.into()], &[80, 81]);
    let _outside_servers = servers(
        topo.outside(),
        [OUTSIDE_IP.into(), OUTSIDE_IP6.into()],
        &[9090],
    );
    let eth0 = link_index(node, "eth0").unwrap();
    let lo = link_index(node, "lo").unwrap();
    let config = topo.config();

    let (driver_tx, driver_rx) = std::sync::mpsc::channel::<Vec<Operation>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The driver lives on a thread inside the node namespace.
    let driver = std::thread::spawn({
        let node = NetNs::open(node.name()).unwrap();
        move || {
            node.run(move || {
                let mut d = BpfDriver::new(config).expect("load the programs");
                for batch in driver_rx {
                    d.apply(&batch).expect("apply");
                    let stages = d.endpoint_stage_tables(eth0);
                    let conntrack = d.conntrack();
                    let counters = d.kernel_counters();
                    done_tx
                        .send((
                            d.endpoint_tables(eth0),
                            d.endpoint_tables(lo),
                            stages,
                            conntrack,
                            counters,
                        ))
                        .unwrap();
                }
            })
            .unwrap()
        }
    });
    let apply = |ops: Vec<Operation>| {
        driver_tx.send(ops).unwrap();
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap()
    };

    let (eth0_tables, lo_tables, stages, _, _) = apply(state());
    assert!(eth0_tables.is_some(), "`*` did not program eth0");
    assert!(lo_tables.is_none(), "`*` programmed loopback");
    let stages = stages.unwrap();
    // Ingress: untracked, pre-DNAT, forward; egress: untracked only.
    assert!(stages[0].iter().all(|&t| t != 0), "{stages:?}");
    assert_eq!(
        (stages[1][0] != 0, stages[1][1], stages[1][2]),
        (true, 0, 0)
    );

    let out = topo.outside();
    // Normal policy for traffic to the host; failsafe whatever it says.
    assert!(reached(out, NODE_IP, 8080), "normal allow");
    assert!(!reached(out, NODE_IP, 8081), "normal default deny");
    assert!(reached(out, NODE_IP, FAILSAFE), "failsafe port");
    // Pre-DNAT decides first: its deny beats the normal allow, its allow
    // the normal default deny.
    assert!(!reached(out, NODE_IP, 8082), "pre-DNAT deny");
    assert!(reached(out, NODE_IP, 8083), "pre-DNAT allow");
    // Untracked: a deny beats the normal allow; an allow (both ways) needs
    // no normal policy and leaves no conntrack entry.
    assert!(!reached(out, NODE_IP, 8086), "untracked deny");
    assert!(reached(out, NODE_IP, 8085), "untracked allow");
    // Forwarded traffic: the forward tiers, not the normal ones.
    assert!(reached(out, POD_IP, 80), "forward allow");
    assert!(!reached(out, POD_IP, 81), "forward tier default");
    // The pod's own traffic out through eth0: no outbound forward policy.
    assert!(
        reached(topo.pod(), OUTSIDE_IP, 9090),
        "pod egress through the host"
    );
    // The same over IPv6 (the FIB lookups of both families).
    assert!(reached(out, NODE_IP6, 8080), "IPv6 normal allow");
    assert!(!reached(out, NODE_IP6, 8081), "IPv6 normal default deny");
    assert!(!reached(out, NODE_IP6, 8082), "IPv6 pre-DNAT deny");
    assert!(reached(out, NODE_IP6, 8083), "IPv6 pre-DNAT allow");
    assert!(!reached(out, NODE_IP6, 8086), "IPv6 untracked deny");
    assert!(reached(out, NODE_IP6, 8085), "IPv6 untracked allow");
    assert!(reached(out, POD_IP6, 80), "IPv6 forward allow");
    assert!(!reached(out, POD_IP6, 81), "IPv6 forward tier default");
    assert!(reached(topo.pod(), OUTSIDE_IP6, 9090), "IPv6 pod egress");

    let (_, _, _, conntrack, counters) = apply(vec![]);
    let on_eth0 = |port: u16| {
        conntrack
            .iter()
            .any(|e| e.ifindex == eth0 && (e.dst_port == port || e.src_port == port))
    };
    assert!(on_eth0(8080) && on_eth0(80) && on_eth0(FAILSAFE));
    assert!(
        !on_eth0(8085),
        "an untracked allow created a conntrack entry"
    );
    assert!(counters.untracked_allowed > 0 && counters.untracked_denied > 0);

    // A named host endpoint without policy takes eth0 over: only the
    // failsafe port stays open (and forwarded traffic, unpoliced).
    let (eth0_tables, _, stages, _, _) = apply(vec![Operation::HostEndpointUpdate(host_endpoint(
        "eth0", "eth0", false,
    ))]);
    assert!(eth0_tables.is_some(), "the named endpoint lost eth0");
    assert_eq!(stages, Some([[0; 3]; 2]));
    assert!(
        settles(out, NODE_IP, 8083, false),
        "8083 open without policy"
    );
    assert!(reached(out, NODE_IP, FAILSAFE), "failsafe without policy");
    assert!(
        reached(out, POD_IP, 81),
        "forwarded traffic without forward policy"
    );

    // Removed again: `*` covers eth0 once more; the normal policy changes
    // in the same batch.
    let (eth0_tables, _, _, _, _) = apply(vec![
        Operation::HostEndpointRemove { id: "eth0".into() },
        policy(
            "normal",
            vec![tcp("normal/0", Action::Allow, &[8081], false)],
            vec![],
        ),
    ]);
    assert!(eth0_tables.is_some(), "`*` did not take eth0 back");
    assert!(settles(out, NODE_IP, 8081, true), "the new normal policy");
    assert!(settles(out, NODE_IP, 8080, false), "the old normal policy");
    assert!(!reached(out, POD_IP, 81), "forward policy back");

    drop(driver_tx);
    driver.join().unwrap();
}
