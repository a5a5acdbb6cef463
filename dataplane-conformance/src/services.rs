//! Service cases (kube-proxy replacement), written once for every kernel
//! dataplane: run them with [`run_service_cases`] and a driver
//! [`Factory`].
//!
//! The topology is a node namespace with pods plumbed into it
//! Calico-style (see [`PODS`]) and one "external" client namespace
//! attached to the node by a veth ([`EXTERNAL_IP`] on the client's side,
//! [`NODE_IP`] on the node's; the node's default route points there, as a
//! node's points to its network), never the host's network. Every pod runs a
//! *who-am-I* server: on TCP [`TCP_PORT`] it writes `LOCAL PEER` (the
//! address and port it was reached on, and the client address it saw) and
//! closes; on UDP [`UDP_PORT`] it answers every datagram the same way. So
//! each answer says which backend took the connection, on which port, and
//! from which source address it came.
//!
//! The driver gets the operations written directly, as Felix's
//! calculation graph sends them ([`service_operations`]: an allow-all
//! profile, one ingress policy, the workload endpoints, the [`services`]
//! and `InSync`; the backends are already chosen, all on this node), then
//! the cases run, each a check with a name (a failed one is an error
//! naming it, [`ConformanceError::Mismatch`]):
//!
//! - `cluster-ip: every backend answers`: over [`CONNECTIONS`]
//!   connections to a ClusterIP with three backends, each one answers;
//! - `cluster-ip: targetPort`: the answers come from the backends'
//!   [`TCP_PORT`] although the client dialled the service port 80;
//! - `cluster-ip: udp on the same port`: the same service port number
//!   over UDP reaches a backend's UDP server;
//! - `cluster-ip: udp-only service` / `host process: udp-only service`:
//!   a service whose one port is UDP answers a pod and the node;
//! - `no endpoints: tcp refused at once` / `udp refused`: a service port
//!   without backends is refused (RST or ICMP port unreachable) well under
//!   [`REFUSED_WITHIN`], not left to time out;
//! - `cluster-ip: unknown port` / `protocol mismatch`: a port, or a
//!   protocol on a port, the service does not have is refused at once (as
//!   kube-proxy's nftables mode does);
//! - `hairpin`: a pod reaching a service it is the only backend of;
//! - `policy sees the client`: a backend whose ingress policy allows only
//!   the `client` pod to its real port is reached through the ClusterIP by
//!   `client` (and sees `client`'s address), not by `other`;
//! - `session affinity`: every connection from one client to a service
//!   with `sessionAffinity: ClientIP` lands on the same backend;
//! - `node port, Cluster` / `node port, Local`: the external client
//!   reaches a node port on [`NODE_IP`]; under `externalTrafficPolicy:
//!   Cluster` the backend sees a node address (masqueraded, so replies
//!   return through the node), under `Local` the client's own address;
//! - `host process`: a process in the node namespace reaches the
//!   ClusterIP and its own node port, and is refused at once by a port
//!   without backends;
//! - `load-balancer source ranges`: a load-balancer IP whose source range
//!   holds only the external client answers it and drops a pod;
//! - `load-balancer VIP on the node`: two load-balancer IPs assigned on
//!   the node itself, so a host process's connection to one has it as its
//!   source (as with a VIP-like load balancer); the one whose ranges hold
//!   the node's own address ([`NODE_IP`], sent as this node's address with
//!   [`Operation::NodeAddresses`]) answers it, as kube-proxy allows, the
//!   other drops it;
//! - `VIP as source` (`services/vip_source.rs`): a host process bound to
//!   a frontend address assigned on the node (`vip-in`'s, `vip-out`'s,
//!   and `vip-open`'s load-balancer IP without ranges and external IP)
//!   reaches a ClusterIP and a pod directly over TCP and UDP, the replies
//!   being addressed to that frontend; new connections to the same
//!   addresses are still dropped by the ranges or translated;
//! - then incremental changes (`update`, `remove`: one service's backends
//!   change, another service goes; `node address`: the node's address
//!   leaves the ranges, and its VIP is dropped) and a driver restart with the whole
//!   state again (`resync`), after which everything answers as before.
//!
//! [`run_dual_stack_cases`] is the IPv6 half, a separate call for drivers
//! that program IPv6 services: the pods also get IPv6 addresses, and a
//! service with an IPv4 and an IPv6 ClusterIP is reached over each family
//! from that family's backends; an IPv6 port without backends is refused
//! at once; IPv6 hairpin; and host processes (as kube-proxy's output
//! hook translates for them): an IPv6 ClusterIP over TCP and UDP, an IPv6
//! port without backends refused at once (TCP and UDP), the service's
//! external IP of each family, and its node port on the node's own IPv6
//! address; and `VIP as source` over IPv6 (a load-balancer IP with
//! ranges and one without).
//!
//! [`run_contested_cases`] is a third call, in its own namespaces:
//! services contesting an external IP and a node port under different
//! traffic policies (or without backends); the first by name keeps every
//! frontend, for the external client (with its own source-address
//! semantics) and for pods, and the others take them when it goes.
//!
//! [`run_local_policy_cases`] is a fourth: `Local` traffic policies with
//! backends on other nodes (internal: the local backend only; every
//! backend elsewhere: dropped, none at all: refused; external: dropped).
//!
//! [`run_flow_cases`] is a fifth, for drivers with flow observations on:
//! TCP and UDP through a ClusterIP, an external IP and a node port of
//! each family, each flow's `Start` observed with the backend pod as
//! destination and the frontend that names the Service.
//!
//! It refuses to touch anything outside the namespaces it
//! creates; they are removed when the run ends, also on failure. Needs
//! root.
//!
//! ```no_run
//! use std::sync::Arc;
//! use manul_dataplane_conformance::Factory;
//! # fn driver() -> Arc<Factory> { unimplemented!() }
//! let report = manul_dataplane_conformance::services::run_service_cases("sv", driver())?;
//! println!("{}", report.table());
//! # Ok::<(), manul_dataplane_conformance::ConformanceError>(())
//! ```

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manul_dataplane_api::{
    Action, Backend, EndpointId, Match, Operation, Policy, PolicyId, PortRange, Rule, Service,
    ServicePort, TierPolicies, TrafficPolicy, WorkloadEndpoint,
};
use manul_model::names::workload_interface_name;
use manul_netns::{
    IpNet, NetNs, Route, add_address, create_veth, link_up, plumb_pod_ips, replace_route,
};

use crate::{ConformanceError, DriverThread, Factory, NodeContext};

mod contested;
mod flows;
mod local_policy;
mod vip_source;
pub use contested::{
    PAIRS, Pair, RANGED_LB_IP, contested_operations, contested_services, run_contested_cases,
};
pub use flows::{
    FLOWS, FLOWS_EXT_IP, FLOWS_EXT_IP6, FLOWS_IP, FLOWS_IP6, FLOWS_NODE_PORT, flow_operations,
    flow_services, run_flow_cases,
};
pub use local_policy::{
    EXTERNAL_ELSEWHERE_EXT_IP, EXTERNAL_ELSEWHERE_IP, EXTERNAL_ELSEWHERE_LB_IP,
    EXTERNAL_ELSEWHERE_NODE_PORT, EXTERNAL_SPLIT_EXT_IP, EXTERNAL_SPLIT_IP, EXTERNAL_SPLIT_LB_IP,
    EXTERNAL_SPLIT_NODE_PORT, FAR_BACKEND_IP, INTERNAL_ELSEWHERE_IP, INTERNAL_LOCAL_IP,
    INTERNAL_NONE_IP, POOL_LB_IP, POOL_NODE_PORT, POOL6_NODE_PORT, REMOTE_POD_IP, REMOTE_POD_IP6,
    local_policy_operations, local_policy_services, run_local_policy_cases,
};
pub use vip_source::{
    VIP_OPEN_CLUSTER_IP, VIP_OPEN_EXT_IP, VIP_OPEN_IP, VIP6_OPEN_CLUSTER_IP, VIP6_OPEN_IP,
    VIP6_RANGED_CLUSTER_IP, VIP6_RANGED_IP, vip_open_service, vip6_services,
};

/// The Kubernetes namespace of every pod and service.
pub const NAMESPACE: &str = "svc";
/// The port every pod's who-am-I server listens on (TCP).
pub const TCP_PORT: u16 = 8080;
/// The port every pod's who-am-I server answers on (UDP).
pub const UDP_PORT: u16 = 5353;
/// The service port the cases dial (TCP and UDP).
pub const SERVICE_PORT: u16 = 80;
/// The node's address on the link to the external client.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The external client's address.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The node's interface towards the external client (not a workload
/// prefix).
pub const NODE_EXT_IF: &str = "ext0";
/// Connections the "every backend answers" case opens.
pub const CONNECTIONS: usize = 40;
/// A refused connection must fail within this (a dropped one would wait
/// for the connect timeout).
pub const REFUSED_WITHIN: Duration = Duration::from_millis(500);
/// How long a probe that should be dropped waits.
pub const SILENCE: Duration = Duration::from_millis(400);

/// The pods: name and address.
pub const PODS: &[(&str, [u8; 4])] = &[
    ("client", [10, 67, 0, 10]),
    ("other", [10, 67, 0, 11]),
    ("web-a", [10, 67, 0, 20]),
    ("web-b", [10, 67, 0, 21]),
    ("web-c", [10, 67, 0, 22]),
    ("guarded", [10, 67, 0, 30]),
];

/// The ClusterIPs.
pub const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
pub const STICKY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
pub const GUARDED_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
pub const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
pub const SELF_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 15);
/// A service with a UDP port only (as a DNS service has).
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 16);
/// The `web` service's node port (`externalTrafficPolicy: Cluster`).
pub const WEB_NODE_PORT: u16 = 30080;
/// The `local` service's node port (`externalTrafficPolicy: Local`).
pub const LOCAL_NODE_PORT: u16 = 30081;
/// The `local` service's load-balancer IP, open to [`EXTERNAL_IP`] only.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The `vip-in` service's load-balancer IP, assigned on the node; its
/// ranges hold [`NODE_IP`].
pub const VIP_IN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The `vip-out` service's load-balancer IP, assigned on the node; its
/// ranges hold only [`EXTERNAL_IP`].
pub const VIP_OUT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
/// The ClusterIPs of `vip-in` and `vip-out`.
pub const VIP_IN_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 17);
pub const VIP_OUT_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 18);
/// The affinity timeout of the `sticky` service.
pub const AFFINITY_SECONDS: u32 = 600;
/// The profile every pod carries (allow all, both ways).
pub const PROFILE: &str = "svc-allow";

/// A pod's IPv6 address in the dual-stack cases: `fd00:67::N` for IPv4
/// address `10.67.0.N`.
pub fn pod_ip6(name: &str) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x67,
        0,
        0,
        0,
        0,
        0,
        u16::from(pod_ip(name).octets()[3]),
    )
}

/// The node's and the external client's IPv6 addresses (dual-stack cases).
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 1);
pub const EXTERNAL_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 2);
/// The dual-stack service's ClusterIPs, and IPv6 ClusterIPs without
/// backends and for hairpin.
pub const DUAL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
pub const DUAL_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x40);
pub const EMPTY_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x41);
pub const SELF_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x42);
/// An IPv6 ClusterIP with a UDP port only (`web-b`).
pub const UDP_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x43);
/// The dual-stack service's external IPs (`Cluster` policy).
pub const DUAL_EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
pub const DUAL_EXT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x51, 0, 0, 0, 0, 0x40);
/// The dual-stack service's node port (`Cluster` policy).
pub const DUAL_NODE_PORT: u16 = 30090;

fn pod_ip(name: &str) -> Ipv4Addr {
    PODS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ip)| Ipv4Addr::from(*ip))
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(ip))
}

fn allow_all(id: &str) -> Rule {
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

/// The `guarded` pod's ingress policy: TCP to its real port from the
/// `client` pod only.
pub fn guard_policy_id() -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: format!("{NAMESPACE}/guard"),
    }
}

fn backend(name: &str, port: u16) -> Backend {
    Backend {
        ip: IpAddr::V4(pod_ip(name)),
        port,
        local: true,
        ready: true,
    }
}

fn port(protocol: u8, node_port: Option<u16>, names: &[&str], target: u16) -> ServicePort {
    let backends: Vec<Backend> = names.iter().map(|n| backend(n, target)).collect();
    ServicePort {
        name: if protocol == 17 { "dns" } else { "http" }.into(),
        protocol,
        port: SERVICE_PORT,
        node_port,
        local_backends: backends.clone(),
        backends,
    }
}

fn service(name: &str, ip: Ipv4Addr, ports: Vec<ServicePort>) -> Service {
    Service::cluster_ip(NAMESPACE, name, vec![IpAddr::V4(ip)], ports)
}

/// The services the cases use (all backends are on this node).
pub fn services() -> Vec<Service> {
    let three = ["web-a", "web-b", "web-c"];
    let mut sticky = service("sticky", STICKY_IP, vec![port(6, None, &three, TCP_PORT)]);
    sticky.affinity_timeout_seconds = Some(AFFINITY_SECONDS);
    let mut local = service(
        "local",
        LOCAL_IP,
        vec![port(6, Some(LOCAL_NODE_PORT), &["web-b"], TCP_PORT)],
    );
    local.external_traffic = TrafficPolicy::Local;
    local.load_balancer_ips = vec![IpAddr::V4(LB_IP)];
    local.load_balancer_source_ranges = vec![host(EXTERNAL_IP)];
    let vip = |name: &str, cluster_ip: Ipv4Addr, lb: Ipv4Addr, ranges: Vec<IpNet>| {
        let mut s = service(name, cluster_ip, vec![port(6, None, &["web-b"], TCP_PORT)]);
        s.load_balancer_ips = vec![IpAddr::V4(lb)];
        s.load_balancer_source_ranges = ranges;
        s
    };
    // The node's network holds the node's address.
    let node_net = IpNet::new(IpAddr::V4(NODE_IP), 24)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| host(NODE_IP));
    vec![
        service(
            "web",
            WEB_IP,
            vec![
                port(6, Some(WEB_NODE_PORT), &three, TCP_PORT),
                port(17, None, &three, UDP_PORT),
            ],
        ),
        service(
            "empty",
            EMPTY_IP,
            vec![port(6, None, &[], TCP_PORT), port(17, None, &[], UDP_PORT)],
        ),
        sticky,
        service(
            "guarded",
            GUARDED_IP,
            vec![port(6, None, &["guarded"], TCP_PORT)],
        ),
        local,
        service("self", SELF_IP, vec![port(6, None, &["web-a"], TCP_PORT)]),
        service("dns", DNS_IP, vec![port(17, None, &["web-b"], UDP_PORT)]),
        vip("vip-in", VIP_IN_CLUSTER_IP, VIP_IN_IP, vec![node_net]),
        vip(
            "vip-out",
            VIP_OUT_CLUSTER_IP,
            VIP_OUT_IP,
            vec![host(EXTERNAL_IP)],
        ),
        vip_open_service(),
    ]
}

/// This node's own address as Felix sends it: [`NODE_IP`] (no other
/// node).
pub fn node_addresses(local: Ipv4Addr) -> Operation {
    Operation::NodeAddresses {
        addresses: Vec::new(),
        local: vec![IpAddr::V4(local)],
        pools: Vec::new(),
    }
}

/// Everything the cases program, in contract order, ending with
/// [`Operation::InSync`].
pub fn service_operations() -> Vec<Operation> {
    let mut ops = base_operations(false);
    ops.extend(services().into_iter().map(Operation::ServiceUpdate));
    ops.push(node_addresses(NODE_IP));
    ops.push(Operation::InSync);
    ops
}

/// The profile, the policy and the pods' endpoints (with their IPv6
/// addresses when `dual_stack`).
fn base_operations(dual_stack: bool) -> Vec<Operation> {
    let mut ops = vec![
        Operation::ProfileUpdate {
            id: PROFILE.into(),
            profile: Policy {
                inbound: vec![allow_all(&format!("{PROFILE}/inbound/0"))],
                outbound: vec![allow_all(&format!("{PROFILE}/outbound/0"))],
            },
        },
        Operation::PolicyUpdate {
            id: guard_policy_id(),
            policy: Policy {
                inbound: vec![Rule {
                    protocol: Some(6),
                    src: Match {
                        nets: vec![host(pod_ip("client"))],
                        ..Match::default()
                    },
                    dst: Match {
                        ports: vec![PortRange {
                            first: TCP_PORT,
                            last: TCP_PORT,
                        }],
                        ..Match::default()
                    },
                    ..allow_all(&format!("{}/inbound/0", guard_policy_id().name))
                }],
                outbound: vec![],
            },
        },
    ];
    for (name, ip) in PODS {
        let tiers = if *name == "guarded" {
            vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![guard_policy_id()],
                outbound: vec![],
            }]
        } else {
            vec![]
        };
        ops.push(Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: NAMESPACE.into(),
                name: (*name).into(),
            },
            interface_name: workload_interface_name(NAMESPACE, name),
            nets: vec![host(Ipv4Addr::from(*ip))]
                .into_iter()
                .chain(dual_stack.then(|| IpNet::from(IpAddr::V6(pod_ip6(name)))))
                .collect(),
            mac: None,
            tiers,
            profiles: vec![PROFILE.into()],
        }));
    }
    ops
}

/// The dual-stack cases' services: `dual` (an IPv4 and an IPv6
/// ClusterIP, an external IP of each family and a node port, `web-a` and `web-b` in
/// both families), `empty6` (IPv6, no backends, TCP and UDP), `self6`
/// (IPv6, `web-a` only) and `udp6` (IPv6, UDP only, `web-b`).
pub fn dual_stack_services() -> Vec<Service> {
    let both = |names: &[&str]| -> Vec<Backend> {
        let mut out: Vec<Backend> = names.iter().map(|n| backend(n, TCP_PORT)).collect();
        out.extend(names.iter().map(|n| Backend {
            ip: IpAddr::V6(pod_ip6(n)),
            port: TCP_PORT,
            local: true,
            ready: true,
        }));
        out
    };
    let port6 = |backends: Vec<Backend>| ServicePort {
        name: "http".into(),
        protocol: 6,
        port: SERVICE_PORT,
        node_port: None,
        local_backends: backends.clone(),
        backends,
    };
    let udp6 = |backends: Vec<Backend>| ServicePort {
        name: "dns".into(),
        protocol: 17,
        ..port6(backends)
    };
    let mut dual = service("dual", DUAL_IP, vec![port6(both(&["web-a", "web-b"]))]);
    dual.cluster_ips.push(IpAddr::V6(DUAL_IP6));
    dual.external_ips = vec![IpAddr::V4(DUAL_EXT_IP), IpAddr::V6(DUAL_EXT_IP6)];
    dual.ports[0].node_port = Some(DUAL_NODE_PORT);
    let mut empty = service("empty6", DUAL_IP, vec![port6(vec![]), udp6(vec![])]);
    empty.cluster_ips = vec![IpAddr::V6(EMPTY_IP6)];
    let mut hairpin = service("self6", DUAL_IP, vec![port6(both(&["web-a"]))]);
    hairpin.cluster_ips = vec![IpAddr::V6(SELF_IP6)];
    let mut dns = service(
        "udp6",
        DUAL_IP,
        vec![udp6(vec![Backend {
            ip: IpAddr::V6(pod_ip6("web-b")),
            port: UDP_PORT,
            local: true,
            ready: true,
        }])],
    );
    dns.cluster_ips = vec![IpAddr::V6(UDP_IP6)];
    let mut all = vec![dual, empty, hairpin, dns];
    all.extend(vip6_services());
    all
}

/// Everything the dual-stack cases program, ending with
/// [`Operation::InSync`].
pub fn dual_stack_operations() -> Vec<Operation> {
    let mut ops = base_operations(true);
    ops.extend(
        dual_stack_services()
            .into_iter()
            .map(Operation::ServiceUpdate),
    );
    ops.push(Operation::InSync);
    ops
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ConformanceError + '_ {
    move |e| ConformanceError::Setup(format!("{what}: {e}"))
}

/// What a who-am-I server said: where it was reached and whom it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The backend's address and the port it was reached on.
    pub backend: SocketAddr,
    /// The source address the backend saw.
    pub peer: IpAddr,
}

impl FromStr for Answer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let backend = parts
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| format!("bad answer {s:?}"))?;
        let peer: SocketAddr = parts
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| format!("bad answer {s:?}"))?;
        Ok(Answer {
            backend,
            peer: peer.ip(),
        })
    }
}

/// What one probe got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered(Answer),
    /// Refused (RST or ICMP port unreachable) after this long.
    Refused(Duration),
    /// Nothing within the timeout, or another error.
    Silent,
}

impl Outcome {
    pub(crate) fn answer(self) -> Option<Answer> {
        match self {
            Outcome::Answered(a) => Some(a),
            _ => None,
        }
    }
}

/// A TCP connection from `ns` to `dst`: the server's answer, a refusal,
/// or silence.
pub fn ask_tcp(
    ns: &NetNs,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Outcome, ConformanceError> {
    ask_tcp_from(ns, None, dst, timeout)
}

/// [`ask_tcp`] from the source address `from` (bound before connecting)
/// when given.
pub fn ask_tcp_from(
    ns: &NetNs,
    from: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Outcome, ConformanceError> {
    ns.run(move || {
        let started = Instant::now();
        let connected = match from {
            None => TcpStream::connect_timeout(&dst, timeout),
            Some(src) => connect_from(src, dst, timeout),
        };
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Outcome::Refused(started.elapsed());
            }
            Err(_) => return Outcome::Silent,
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let mut text = String::new();
        match stream.read_to_string(&mut text) {
            Ok(_) => text
                .parse()
                .map(Outcome::Answered)
                .unwrap_or(Outcome::Silent),
            Err(_) => Outcome::Silent,
        }
    })
    .map_err(setup("tcp probe"))
}

/// A TCP socket bound to `src` (any port) connected to `dst`.
fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&dst.into(), timeout)?;
    Ok(socket.into())
}

/// A UDP datagram from `ns` to `dst` and its answer.
pub fn ask_udp(
    ns: &NetNs,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Outcome, ConformanceError> {
    ask_udp_from(ns, None, dst, timeout)
}

/// [`ask_udp`] from the source address `from` when given.
pub fn ask_udp_from(
    ns: &NetNs,
    from: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Outcome, ConformanceError> {
    ns.run(move || -> io::Result<Outcome> {
        let started = Instant::now();
        let any = if dst.is_ipv6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let socket = UdpSocket::bind(SocketAddr::new(from.unwrap_or(any), 0))?;
        // Connect-time load balancing refuses at connect.
        match socket.connect(dst) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Ok(Outcome::Refused(started.elapsed()));
            }
            other => other?,
        }
        socket.set_read_timeout(Some(timeout))?;
        // A host process's datagram rejected on the output hook (the
        // nftables dataplane, as kube-proxy) fails at send (EPERM).
        match socket.send(b"who") {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Ok(Outcome::Refused(started.elapsed()));
            }
            other => other?,
        };
        let mut buf = [0u8; 256];
        match socket.recv(&mut buf) {
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n])
                .parse()
                .map(Outcome::Answered)
                .unwrap_or(Outcome::Silent)),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                Ok(Outcome::Refused(started.elapsed()))
            }
            Err(_) => Ok(Outcome::Silent),
        }
    })
    .map_err(setup("udp probe"))?
    .map_err(setup("udp probe"))
}

/// A pod's who-am-I servers (TCP and UDP), each on its own thread; stopped
/// on drop.
struct WhoAmI {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl WhoAmI {
    fn start(ns: &NetNs, ip: IpAddr) -> Result<WhoAmI, ConformanceError> {
        let (tcp, udp) = ns
            .run(move || -> io::Result<(TcpListener, UdpSocket)> {
                let tcp = TcpListener::bind(SocketAddr::new(ip, TCP_PORT))?;
                tcp.set_nonblocking(true)?;
                let udp = UdpSocket::bind(SocketAddr::new(ip, UDP_PORT))?;
                udp.set_read_timeout(Some(Duration::from_millis(20)))?;
                Ok((tcp, udp))
            })
            .map_err(setup("who-am-I server"))?
            .map_err(setup("who-am-I server"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("svc-whoami-tcp".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match tcp.accept() {
                            Ok((mut conn, peer)) => {
                                let local = conn.local_addr().map(|a| a.to_string());
                                let _ = conn.set_nonblocking(false);
                                let _ = writeln!(
                                    conn,
                                    "{} {peer}",
                                    local.unwrap_or_else(|_| "?".into())
                                );
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })
                .map_err(setup("who-am-I thread"))?
        };
        let udp_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("svc-whoami-udp".into())
                .spawn(move || {
                    let local = udp
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| "?".into());
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                            let _ = udp.send_to(format!("{local} {peer}").as_bytes(), peer);
                        }
                    }
                })
                .map_err(setup("who-am-I thread"))?
        };
        Ok(WhoAmI {
            stop,
            threads: vec![tcp_thread, udp_thread],
        })
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The namespaces and servers; removed on drop (the driver first).
struct Net {
    driver: Option<DriverThread>,
    servers: Vec<WhoAmI>,
    pods: Vec<(String, NetNs)>,
    external: NetNs,
    node: NetNs,
}

impl Net {
    /// The topology; with `dual_stack`, every pod, the node's external
    /// link and the external client also get IPv6 addresses.
    fn build(prefix: &str, dual_stack: bool) -> Result<Net, ConformanceError> {
        let node = NetNs::create(&format!("{prefix}-node")).map_err(setup("node namespace"))?;
        let external =
            NetNs::create(&format!("{prefix}-ext")).map_err(setup("external namespace"))?;
        let mut net = Net {
            driver: None,
            servers: Vec::new(),
            pods: Vec::new(),
            external,
            node,
        };
        create_veth(&net.node, NODE_EXT_IF, &net.external, "eth0")
            .map_err(setup("external veth"))?;
        let link = |ns: &NetNs, ifname: &str, ip: Ipv4Addr| -> Result<(), ConformanceError> {
            let net24 = IpNet::new(IpAddr::V4(ip), 24).map_err(setup("external address"))?;
            add_address(ns, ifname, net24).map_err(setup("external address"))?;
            link_up(ns, ifname).map_err(setup("external link"))
        };
        if dual_stack {
            // Before the links come up: a link-local address made while
            // DAD is on stays tentative for a second or two, and until it
            // is not the node sends no neighbour solicitation for a
            // packet it forwards (a pod's reply to the external side).
            for (ns, ifname) in [(&net.node, NODE_EXT_IF), (&net.external, "eth0")] {
                ns.set_sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")
                    .map_err(setup("external IPv6"))?;
            }
        }
        link(&net.node, NODE_EXT_IF, NODE_IP)?;
        link(&net.external, "eth0", EXTERNAL_IP)?;
        replace_route(
            &net.external,
            &Route::to(IpNet::V4(Default::default())).via(IpAddr::V4(NODE_IP)),
        )
        .map_err(setup("external default route"))?;
        // The node's default route leads to the external side, as a
        // node's leads to its network: a host process resolves a route to
        // a ClusterIP before the output hook translates it.
        replace_route(
            &net.node,
            &Route::to(IpNet::V4(Default::default())).via(IpAddr::V4(EXTERNAL_IP)),
        )
        .map_err(setup("node default route"))?;
        if dual_stack {
            for (ns, ifname, ip, via) in [
                (&net.node, NODE_EXT_IF, NODE_IP6, EXTERNAL_IP6),
                (&net.external, "eth0", EXTERNAL_IP6, NODE_IP6),
            ] {
                let net64 = IpNet::new(IpAddr::V6(ip), 64).map_err(setup("external IPv6"))?;
                add_address(ns, ifname, net64).map_err(setup("external IPv6"))?;
                replace_route(
                    ns,
                    &Route::to(IpNet::V6(Default::default())).via(IpAddr::V6(via)),
                )
                .map_err(setup("IPv6 default route"))?;
            }
        }
        for (i, (name, ip)) in PODS.iter().enumerate() {
            let mut ips = vec![IpAddr::V4(Ipv4Addr::from(*ip))];
            if dual_stack {
                ips.push(IpAddr::V6(pod_ip6(name)));
            }
            let ns = NetNs::create(&format!("{prefix}-{i}")).map_err(setup("pod namespace"))?;
            plumb_pod_ips(
                &net.node,
                &ns,
                &workload_interface_name(NAMESPACE, name),
                "eth0",
                &ips,
            )
            .map_err(setup("pod plumbing"))?;
            for ip in ips {
                net.servers.push(WhoAmI::start(&ns, ip)?);
            }
            net.pods.push(((*name).to_string(), ns));
        }
        Ok(net)
    }

    fn pod(&self, name: &str) -> Result<&NetNs, ConformanceError> {
        self.pods
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ns)| ns)
            .ok_or_else(|| ConformanceError::Setup(format!("no pod {name}")))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The driver stops before its namespace goes; the servers before
        // theirs.
        self.driver.take();
        self.servers.clear();
    }
}

/// One checked expectation.
#[derive(Debug, Clone)]
pub struct Check {
    pub case: String,
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct ServiceReport {
    pub checks: Vec<Check>,
}

impl ServiceReport {
    /// A readable table of every check.
    pub fn table(&self) -> String {
        self.checks
            .iter()
            .map(|c| {
                format!(
                    "{:<40} {:<4} {}\n",
                    c.case,
                    if c.passed { "ok" } else { "FAIL" },
                    c.detail
                )
            })
            .collect()
    }

    fn check(&mut self, case: &str, passed: bool, detail: String) {
        self.checks.push(Check {
            case: case.into(),
            passed,
            detail,
        });
    }
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn backend_name(addr: IpAddr) -> String {
    PODS.iter()
        .find(|(name, ip)| {
            IpAddr::V4(Ipv4Addr::from(*ip)) == addr || IpAddr::V6(pod_ip6(name)) == addr
        })
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| addr.to_string())
}

const WAIT: Duration = Duration::from_secs(2);

/// The topology in namespaces named after `manul_netns::unique_prefix(tag)`
/// (with IPv6 addresses too when `dual_stack`), with the driver `factory`
/// builds running in the node namespace and `operations` applied.
fn start(
    tag: &str,
    dual_stack: bool,
    factory: Arc<Factory>,
    operations: Vec<Operation>,
) -> Result<Net, ConformanceError> {
    let prefix = manul_netns::unique_prefix(tag);
    let mut net = Net::build(&prefix, dual_stack)?;
    let driver = DriverThread::start(
        &net.node,
        NodeContext {
            node: prefix.clone(),
        },
        factory,
    )?;
    driver.apply(operations)?;
    net.driver = Some(driver);
    Ok(net)
}

/// Builds the topology in namespaces named after
/// `manul_netns::unique_prefix(tag)` (keep `tag` to 2 characters), starts
/// the driver `factory` builds in the node namespace, programs
/// [`service_operations`] and runs every case. `Ok` when every check
/// passed (the report lists them); otherwise
/// [`ConformanceError::Mismatch`] with the failed ones (the table is
/// printed to stderr).
pub fn run_service_cases(
    tag: &str,
    factory: Arc<Factory>,
) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, false, factory, service_operations())?;
    let mut report = ServiceReport::default();
    run_cases(&net, &mut report)?;
    run_changes(&net, &mut report)?;
    finish(report)
}

fn run_cases(net: &Net, report: &mut ServiceReport) -> Result<(), ConformanceError> {
    let client = net.pod("client")?;
    let three: Vec<IpAddr> = ["web-a", "web-b", "web-c"]
        .iter()
        .map(|n| IpAddr::V4(pod_ip(n)))
        .collect();

    // Every backend answers, on its target port.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut wrong_port = Vec::new();
    let mut silent = 0;
    for _ in 0..CONNECTIONS {
        match ask_tcp(client, sock(WEB_IP, SERVICE_PORT), WAIT)?.answer() {
            Some(a) => {
                *seen.entry(backend_name(a.backend.ip())).or_default() += 1;
                if a.backend.port() != TCP_PORT || !three.contains(&a.backend.ip()) {
                    wrong_port.push(a.backend.to_string());
                }
            }
            None => silent += 1,
        }
    }
    report.check(
        "cluster-ip: every backend answers",
        seen.len() == 3 && silent == 0,
        format!("answers per backend {seen:?}, {silent} unanswered"),
    );
    report.check(
        "cluster-ip: targetPort",
        wrong_port.is_empty() && !seen.is_empty(),
        format!("answers not from a backend's port {TCP_PORT}: {wrong_port:?}"),
    );

    let udp = ask_udp(client, sock(WEB_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "cluster-ip: udp on the same port",
        udp.answer()
            .is_some_and(|a| three.contains(&a.backend.ip()) && a.backend.port() == UDP_PORT),
        format!("{udp:?}"),
    );

    // A service with only a UDP port, from a pod and from the node.
    for (case, from) in [
        ("cluster-ip: udp-only service", client),
        ("host process: udp-only service", &net.node),
    ] {
        let dns = ask_udp(from, sock(DNS_IP, SERVICE_PORT), WAIT)?;
        report.check(
            case,
            dns.answer()
                .is_some_and(|a| a.backend == sock(pod_ip("web-b"), UDP_PORT)),
            format!("{dns:?}"),
        );
    }

    // No endpoints: refused at once, not dropped.
    let tcp = ask_tcp(client, sock(EMPTY_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "no endpoints: tcp refused at once",
        matches!(tcp, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{tcp:?}"),
    );
    let udp = ask_udp(client, sock(EMPTY_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "no endpoints: udp refused",
        matches!(udp, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{udp:?}"),
    );

    // A port or protocol the service does not have: refused at once.
    let unknown = ask_tcp(client, sock(STICKY_IP, SERVICE_PORT + 1), WAIT)?;
    report.check(
        "cluster-ip: unknown port refused at once",
        matches!(unknown, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{unknown:?}"),
    );
    let mismatch = ask_udp(client, sock(STICKY_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "cluster-ip: protocol mismatch refused",
        matches!(mismatch, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{mismatch:?}"),
    );

    // Hairpin: the only backend reaches its own service.
    let hairpin = ask_tcp(net.pod("web-a")?, sock(SELF_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "hairpin",
        hairpin
            .answer()
            .is_some_and(|a| a.backend == sock(pod_ip("web-a"), TCP_PORT)),
        format!("{hairpin:?}"),
    );

    // The backend's ingress policy judges the client's address and the
    // real port.
    let allowed = ask_tcp(client, sock(GUARDED_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "policy sees the client: allowed client",
        allowed
            .answer()
            .is_some_and(|a| a.peer == IpAddr::V4(pod_ip("client"))),
        format!("{allowed:?}"),
    );
    let denied = ask_tcp(net.pod("other")?, sock(GUARDED_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "policy sees the client: other client denied",
        denied == Outcome::Silent,
        format!("{denied:?}"),
    );

    // Session affinity: one backend per client.
    for name in ["client", "other"] {
        let ns = net.pod(name)?;
        let mut backends = std::collections::BTreeSet::new();
        let mut silent = 0;
        for _ in 0..12 {
            match ask_tcp(ns, sock(STICKY_IP, SERVICE_PORT), WAIT)?.answer() {
                Some(a) => {
                    backends.insert(backend_name(a.backend.ip()));
                }
                None => silent += 1,
            }
        }
        report.check(
            &format!("session affinity ({name})"),
            backends.len() == 1 && silent == 0,
            format!("backends {backends:?}, {silent} unanswered"),
        );
    }

    // Node ports from outside the node.
    let cluster = ask_tcp(&net.external, sock(NODE_IP, WEB_NODE_PORT), WAIT)?;
    report.check(
        "node port, Cluster: masqueraded",
        cluster
            .answer()
            .is_some_and(|a| three.contains(&a.backend.ip()) && a.peer != IpAddr::V4(EXTERNAL_IP)),
        format!("{cluster:?}"),
    );
    let local = ask_tcp(&net.external, sock(NODE_IP, LOCAL_NODE_PORT), WAIT)?;
    report.check(
        "node port, Local: the client's address",
        local.answer().is_some_and(|a| {
            a.backend == sock(pod_ip("web-b"), TCP_PORT) && a.peer == IpAddr::V4(EXTERNAL_IP)
        }),
        format!("{local:?}"),
    );

    // Host processes: DNAT on the output hook.
    let from_node = ask_tcp(&net.node, sock(WEB_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "host process: cluster IP",
        from_node
            .answer()
            .is_some_and(|a| three.contains(&a.backend.ip())),
        format!("{from_node:?}"),
    );
    let own_port = ask_tcp(&net.node, sock(NODE_IP, WEB_NODE_PORT), WAIT)?;
    report.check(
        "host process: its own node port",
        own_port
            .answer()
            .is_some_and(|a| three.contains(&a.backend.ip())),
        format!("{own_port:?}"),
    );
    let refused = ask_tcp(&net.node, sock(EMPTY_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "host process: no endpoints refused at once",
        matches!(refused, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{refused:?}"),
    );

    // Load-balancer source ranges.
    let inside = ask_tcp(&net.external, sock(LB_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "load-balancer source ranges: in range",
        inside
            .answer()
            .is_some_and(|a| a.backend == sock(pod_ip("web-b"), TCP_PORT)),
        format!("{inside:?}"),
    );
    let outside = ask_tcp(client, sock(LB_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "load-balancer source ranges: out of range dropped",
        outside == Outcome::Silent,
        format!("{outside:?}"),
    );

    // VIPs assigned on the node: a host process's connection to one has
    // it as its source.
    for vip in [VIP_IN_IP, VIP_OUT_IP] {
        add_address(&net.node, NODE_EXT_IF, host(vip)).map_err(setup("VIP on the node"))?;
    }
    let own = ask_tcp(&net.node, sock(VIP_IN_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "load-balancer VIP on the node: node in range",
        own.answer()
            .is_some_and(|a| a.backend == sock(pod_ip("web-b"), TCP_PORT)),
        format!("{own:?}"),
    );
    let other = ask_tcp(&net.node, sock(VIP_OUT_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "load-balancer VIP on the node: node out of range dropped",
        other == Outcome::Silent,
        format!("{other:?}"),
    );
    vip_source::run_v4(net, report)
}

/// The dual-stack cases, in their own namespaces (pods with an IPv4 and
/// an IPv6 address): a service with an IPv4 and an IPv6 ClusterIP is
/// reached over each family from that family's backends, every backend
/// answering and seeing the client's own address; an IPv6 port without
/// backends is refused at once; IPv6 hairpin. A separate call from
/// [`run_service_cases`], for drivers that program IPv6 services.
pub fn run_dual_stack_cases(
    tag: &str,
    factory: Arc<Factory>,
) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, true, factory, dual_stack_operations())?;
    let mut report = ServiceReport::default();
    let client = net.pod("client")?;
    for (family, dst, client_ip, backends) in [
        (
            "IPv4",
            SocketAddr::new(IpAddr::V4(DUAL_IP), SERVICE_PORT),
            IpAddr::V4(pod_ip("client")),
            [IpAddr::V4(pod_ip("web-a")), IpAddr::V4(pod_ip("web-b"))],
        ),
        (
            "IPv6",
            SocketAddr::new(IpAddr::V6(DUAL_IP6), SERVICE_PORT),
            IpAddr::V6(pod_ip6("client")),
            [IpAddr::V6(pod_ip6("web-a")), IpAddr::V6(pod_ip6("web-b"))],
        ),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        let mut wrong = Vec::new();
        let mut silent = 0;
        for _ in 0..20 {
            match ask_tcp(client, dst, WAIT)?.answer() {
                Some(a) => {
                    seen.insert(a.backend.ip());
                    if !backends.contains(&a.backend.ip())
                        || a.backend.port() != TCP_PORT
                        || a.peer != client_ip
                    {
                        wrong.push(a);
                    }
                }
                None => silent += 1,
            }
        }
        report.check(
            &format!("dual stack: {family} ClusterIP"),
            seen.len() == 2 && wrong.is_empty() && silent == 0,
            format!("backends {seen:?}, unexpected {wrong:?}, {silent} unanswered"),
        );
    }
    let empty = ask_tcp(
        client,
        SocketAddr::new(IpAddr::V6(EMPTY_IP6), SERVICE_PORT),
        WAIT,
    )?;
    report.check(
        "dual stack: IPv6 no endpoints refused at once",
        matches!(empty, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{empty:?}"),
    );
    let hairpin = ask_tcp(
        net.pod("web-a")?,
        SocketAddr::new(IpAddr::V6(SELF_IP6), SERVICE_PORT),
        WAIT,
    )?;
    report.check(
        "dual stack: IPv6 hairpin",
        hairpin
            .answer()
            .is_some_and(|a| a.backend == SocketAddr::new(IpAddr::V6(pod_ip6("web-a")), TCP_PORT)),
        format!("{hairpin:?}"),
    );
    run_dual_stack_host_cases(&net, &mut report)?;
    vip_source::run_v6(&net, &mut report)?;
    finish(report)
}

/// Host processes (the node namespace's own sockets) reaching the
/// dual-stack services: an IPv6 ClusterIP over TCP (every connection
/// answered by an IPv6 backend) and over UDP, an IPv6 port without
/// backends refused at once over TCP and UDP, the external IP of each
/// family and the node's own IPv6 node port (as kube-proxy's output hook
/// translates for host processes).
fn run_dual_stack_host_cases(
    net: &Net,
    report: &mut ServiceReport,
) -> Result<(), ConformanceError> {
    let v6 = |ip: Ipv6Addr| SocketAddr::new(IpAddr::V6(ip), SERVICE_PORT);
    let backends6 = [IpAddr::V6(pod_ip6("web-a")), IpAddr::V6(pod_ip6("web-b"))];
    let backends4 = [IpAddr::V4(pod_ip("web-a")), IpAddr::V4(pod_ip("web-b"))];
    let mut seen = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    let mut silent = 0;
    for _ in 0..12 {
        match ask_tcp(&net.node, v6(DUAL_IP6), WAIT)?.answer() {
            Some(a) => {
                seen.insert(a.backend.ip());
                if !backends6.contains(&a.backend.ip()) || a.backend.port() != TCP_PORT {
                    wrong.push(a);
                }
            }
            None => silent += 1,
        }
    }
    report.check(
        "host process: IPv6 cluster IP",
        !seen.is_empty() && wrong.is_empty() && silent == 0,
        format!("backends {seen:?}, unexpected {wrong:?}, {silent} unanswered"),
    );
    let udp = ask_udp(&net.node, v6(UDP_IP6), WAIT)?;
    report.check(
        "host process: IPv6 udp-only service",
        udp.answer()
            .is_some_and(|a| a.backend == SocketAddr::new(IpAddr::V6(pod_ip6("web-b")), UDP_PORT)),
        format!("{udp:?}"),
    );
    let tcp = ask_tcp(&net.node, v6(EMPTY_IP6), WAIT)?;
    report.check(
        "host process: IPv6 no endpoints tcp refused at once",
        matches!(tcp, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{tcp:?}"),
    );
    let udp = ask_udp(&net.node, v6(EMPTY_IP6), WAIT)?;
    report.check(
        "host process: IPv6 no endpoints udp refused",
        matches!(udp, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{udp:?}"),
    );
    for (case, dst, backends) in [
        (
            "host process: IPv4 external IP",
            sock(DUAL_EXT_IP, SERVICE_PORT),
            backends4,
        ),
        (
            "host process: IPv6 external IP",
            v6(DUAL_EXT_IP6),
            backends6,
        ),
        (
            "host process: its own IPv6 node port",
            SocketAddr::new(IpAddr::V6(NODE_IP6), DUAL_NODE_PORT),
            backends6,
        ),
    ] {
        let ext = ask_tcp(&net.node, dst, WAIT)?;
        report.check(
            case,
            ext.answer().is_some_and(|a| {
                backends.contains(&a.backend.ip()) && a.backend.port() == TCP_PORT
            }),
            format!("{ext:?}"),
        );
    }
    Ok(())
}

fn finish(report: ServiceReport) -> Result<ServiceReport, ConformanceError> {
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("[{}] {}", c.case, c.detail))
        .collect();
    if failed.is_empty() {
        Ok(report)
    } else {
        eprintln!("{}", report.table());
        Err(ConformanceError::Mismatch(failed))
    }
}

/// Every backend that answers `count` connections from `ns` to `dst`, and
/// how many went unanswered.
fn backends_reached(
    ns: &NetNs,
    dst: SocketAddr,
    count: usize,
) -> Result<(std::collections::BTreeSet<String>, usize), ConformanceError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut silent = 0;
    for _ in 0..count {
        match ask_tcp(ns, dst, WAIT)?.answer() {
            Some(a) => {
                seen.insert(backend_name(a.backend.ip()));
            }
            None => silent += 1,
        }
    }
    Ok((seen, silent))
}

/// Changes after the first programming: a service's backends change and
/// another service goes (incremental updates), then the driver restarts
/// and gets the whole state again (a resync).
fn run_changes(net: &Net, report: &mut ServiceReport) -> Result<(), ConformanceError> {
    let driver = net
        .driver
        .as_ref()
        .ok_or_else(|| ConformanceError::Setup("no driver".into()))?;
    let client = net.pod("client")?;
    let mut web = services()
        .into_iter()
        .find(|s| s.name == "web")
        .ok_or_else(|| ConformanceError::Setup("no web service".into()))?;
    for p in &mut web.ports {
        let target = if p.protocol == 17 { UDP_PORT } else { TCP_PORT };
        p.backends = vec![backend("web-c", target)];
        p.local_backends = p.backends.clone();
    }
    driver.apply(vec![
        Operation::ServiceUpdate(web),
        Operation::ServiceRemove {
            namespace: NAMESPACE.into(),
            name: "self".into(),
        },
    ])?;
    let (seen, silent) = backends_reached(client, sock(WEB_IP, SERVICE_PORT), 12)?;
    report.check(
        "update: only the remaining backend answers",
        seen.len() == 1 && seen.contains("web-c") && silent == 0,
        format!("backends {seen:?}, {silent} unanswered"),
    );
    let removed = ask_tcp(net.pod("web-a")?, sock(SELF_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "remove: a removed service is not served",
        removed.answer().is_none(),
        format!("{removed:?}"),
    );
    // The node's address moves out of `vip-in`'s ranges: its VIP no
    // longer takes the node's own connections.
    driver.apply(vec![node_addresses(Ipv4Addr::new(203, 0, 113, 1))])?;
    let moved = ask_tcp(&net.node, sock(VIP_IN_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "node address: out of range, its VIP dropped",
        moved == Outcome::Silent,
        format!("{moved:?}"),
    );

    driver.restart()?;
    driver.apply(service_operations())?;
    let (seen, silent) = backends_reached(client, sock(WEB_IP, SERVICE_PORT), CONNECTIONS)?;
    report.check(
        "resync: every backend answers again",
        seen.len() == 3 && silent == 0,
        format!("backends {seen:?}, {silent} unanswered"),
    );
    let back = ask_tcp(net.pod("web-a")?, sock(SELF_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "resync: the removed service is back",
        back.answer()
            .is_some_and(|a| a.backend == sock(pod_ip("web-a"), TCP_PORT)),
        format!("{back:?}"),
    );
    let empty = ask_tcp(client, sock(EMPTY_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "resync: no endpoints still refused at once",
        matches!(empty, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{empty:?}"),
    );
    let own = ask_tcp(&net.node, sock(VIP_IN_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "resync: the node's VIP in range answers again",
        own.answer()
            .is_some_and(|a| a.backend == sock(pod_ip("web-b"), TCP_PORT)),
        format!("{own:?}"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_follow_the_contract() {
        use manul_dataplane_api::{Driver as _, NullDriver};
        let mut null = NullDriver::new();
        null.apply(&service_operations()).expect("contract");
        assert_eq!(null.state().services.len(), services().len());
        let empty = &null.state().services[&(NAMESPACE.to_string(), "empty".to_string())];
        assert!(empty.ports.iter().all(|p| p.backends.is_empty()));
    }

    #[test]
    fn dual_stack_operations_follow_the_contract() {
        use manul_dataplane_api::{Driver as _, NullDriver};
        let mut null = NullDriver::new();
        null.apply(&dual_stack_operations()).expect("contract");
        let dual = &null.state().services[&(NAMESPACE.to_string(), "dual".to_string())];
        assert_eq!(dual.cluster_ips.len(), 2);
        assert_eq!(pod_ip6("web-a"), "fd00:67::14".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn answers_parse() {
        let a: Answer = "10.67.0.20:8080 10.67.0.10:40000".parse().expect("parse");
        assert_eq!(a.backend, sock(Ipv4Addr::new(10, 67, 0, 20), 8080));
        assert_eq!(a.peer, IpAddr::V4(Ipv4Addr::new(10, 67, 0, 10)));
        assert!("garbage".parse::<Answer>().is_err());
    }
}
