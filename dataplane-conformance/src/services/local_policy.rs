//! `Local` traffic policies with backends on other nodes: a service's
//! backends here are `web-a` (on this node) and `web-b` (reported as on
//! another node, although its namespace is plumbed here, so a dataplane
//! that picked it would be seen doing so):
//!
//! - `internalTrafficPolicy: Local`: a pod reaching the cluster IP gets
//!   `web-a` only, with its own address;
//! - the same policy with every backend elsewhere: the cluster IP drops
//!   (kube-proxy's semantics: no local endpoint while the service has
//!   some is a drop), and with no backend at all it refuses at once;
//! - `externalTrafficPolicy: Local` with every backend elsewhere: the
//!   external client's connections to the node port, the external IP and
//!   the load-balancer IP are dropped, while the cluster IP (`Cluster`
//!   internally) answers;
//! - the same service from inside the cluster, kube-proxy's
//!   short-circuit: a pod and a host process reaching its external IP,
//!   load-balancer IP and node port get every ready backend (`web-b`
//!   answers), the pod with its own address, the host process with the
//!   node's (kube-proxy masquerades the node's traffic there; its source
//!   is the node's already);
//! - `externalTrafficPolicy: Local` with `web-a` here and `web-b`
//!   elsewhere: the external client gets `web-a` only, with its own
//!   address, on every external frontend, while a pod gets both.
//! - a pod of another node (kube-proxy's `ClusterCIDR` detection: a
//!   source in the cluster's IP pools, [`REMOTE_POD_IP`], which the
//!   external namespace holds as the other nodes' pods would, routed to
//!   it as a routed underlay routes a node's pod block) reaching a
//!   `Local` service's node port and load-balancer IP: every backend, a
//!   backend on this node (`web-a`, and `web-b` reported elsewhere but
//!   plumbed here) seeing the pod's own address, one on another node
//!   ([`FAR_BACKEND_IP`], served in the external namespace too) seeing
//!   the node's, so its reply comes back through the node and is
//!   translated (unmasqueraded, it would go straight to the pod with the
//!   backend's address: kubernetes/kubernetes#74383; here the pod's
//!   namespace would even drop the packet from its own address); with
//!   every backend elsewhere it is let through (the external client is
//!   dropped); over IPv6 too, to a node port ([`REMOTE_POD_IP6`],
//!   [`FAR_BACKEND_IP6`]: the topology is dual stack).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use manul_dataplane_api::{Backend, Operation, Service, ServicePort, TrafficPolicy};

use super::{
    EXTERNAL_IP, NODE_IP, Outcome, REFUSED_WITHIN, SERVICE_PORT, SILENCE, ServiceReport, TCP_PORT,
    WAIT, ask_tcp, ask_tcp_from, backend_name, base_operations, finish, pod_ip, service, sock,
    start,
};
use crate::{ConformanceError, Factory};

/// `internalTrafficPolicy: Local` with `web-a` here and `web-b` elsewhere.
pub const INTERNAL_LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 60);
/// `internalTrafficPolicy: Local` with `web-b` elsewhere only.
pub const INTERNAL_ELSEWHERE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 61);
/// `internalTrafficPolicy: Local` without backends.
pub const INTERNAL_NONE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 62);
/// `externalTrafficPolicy: Local` with `web-b` elsewhere only: its
/// cluster IP, external IP and node port.
pub const EXTERNAL_ELSEWHERE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 63);
pub const EXTERNAL_ELSEWHERE_EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
pub const EXTERNAL_ELSEWHERE_NODE_PORT: u16 = 30095;
pub const EXTERNAL_ELSEWHERE_LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 60);
/// `externalTrafficPolicy: Local` with `web-a` here and `web-b`
/// elsewhere: its cluster IP, external IP, load-balancer IP and node port.
pub const EXTERNAL_SPLIT_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 64);
pub const EXTERNAL_SPLIT_EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 31);
pub const EXTERNAL_SPLIT_LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 61);
pub const EXTERNAL_SPLIT_NODE_PORT: u16 = 30096;
/// `externalTrafficPolicy: Local` with `web-a` here and a backend on
/// another node, [`FAR_BACKEND_IP`]: its cluster IP, load-balancer IP and
/// node port.
pub const POOL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 65);
pub const POOL_LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 62);
pub const POOL_NODE_PORT: u16 = 30097;
/// A pod of another node (in the external namespace, which the node
/// routes the pool's other addresses to).
pub const REMOTE_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 68, 0, 5);
/// A backend on another node (served in the external namespace).
pub const FAR_BACKEND_IP: Ipv4Addr = Ipv4Addr::new(10, 68, 0, 20);
/// The same over IPv6: a `Local` service with an IPv6 cluster IP, `web-a`
/// here and [`FAR_BACKEND_IP6`] elsewhere, and its node port.
pub const POOL_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x65);
pub const POOL6_NODE_PORT: u16 = 30098;
pub const REMOTE_POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x68, 0, 0, 0, 0, 0, 5);
pub const FAR_BACKEND_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x68, 0, 0, 0, 0, 0, 0x20);
/// The cluster's IP pools: this node's pods' and the other nodes'.
const POOLS: [&str; 4] = [
    "10.67.0.0/16",
    "10.68.0.0/16",
    "fd00:67::/64",
    "fd00:68::/64",
];
/// Connections per probe where a backend's absence is checked.
const TRIES: usize = 12;

fn pod_backend(name: &str, local: bool) -> Backend {
    Backend {
        ip: IpAddr::V4(pod_ip(name)),
        port: TCP_PORT,
        local,
        ready: true,
    }
}

/// A TCP service port: `here` on this node, `elsewhere` on others.
fn split_port(node_port: Option<u16>, here: &[&str], elsewhere: &[&str]) -> ServicePort {
    let local: Vec<Backend> = here.iter().map(|n| pod_backend(n, true)).collect();
    let mut backends = local.clone();
    backends.extend(elsewhere.iter().map(|n| pod_backend(n, false)));
    ServicePort {
        name: "http".into(),
        protocol: 6,
        port: SERVICE_PORT,
        node_port,
        backends,
        local_backends: local,
    }
}

/// The services of these cases.
pub fn local_policy_services() -> Vec<Service> {
    let internal = |name: &str, ip: Ipv4Addr, here: &[&str], elsewhere: &[&str]| {
        let mut s = service(name, ip, vec![split_port(None, here, elsewhere)]);
        s.internal_traffic = TrafficPolicy::Local;
        s
    };
    let external = |name: &str, ips: [Ipv4Addr; 3], node_port: u16, here: &[&str]| {
        let [cluster, ext, lb] = ips;
        let mut s = service(
            name,
            cluster,
            vec![split_port(Some(node_port), here, &["web-b"])],
        );
        s.external_traffic = TrafficPolicy::Local;
        s.external_ips = vec![IpAddr::V4(ext)];
        s.load_balancer_ips = vec![IpAddr::V4(lb)];
        s
    };
    vec![
        internal("itp-local", INTERNAL_LOCAL_IP, &["web-a"], &["web-b"]),
        internal("itp-elsewhere", INTERNAL_ELSEWHERE_IP, &[], &["web-b"]),
        internal("itp-none", INTERNAL_NONE_IP, &[], &[]),
        external(
            "etp-elsewhere",
            [
                EXTERNAL_ELSEWHERE_IP,
                EXTERNAL_ELSEWHERE_EXT_IP,
                EXTERNAL_ELSEWHERE_LB_IP,
            ],
            EXTERNAL_ELSEWHERE_NODE_PORT,
            &[],
        ),
        {
            let mut s = external(
                "etp-pool",
                [POOL_IP, EXTERNAL_SPLIT_EXT_IP, POOL_LB_IP],
                POOL_NODE_PORT,
                &["web-a"],
            );
            s.external_ips.clear();
            let far = Backend {
                ip: IpAddr::V4(FAR_BACKEND_IP),
                port: TCP_PORT,
                local: false,
                ready: true,
            };
            s.ports[0].backends = vec![pod_backend("web-a", true), far];
            s
        },
        {
            let backend = |ip: Ipv6Addr, local: bool| Backend {
                ip: IpAddr::V6(ip),
                port: TCP_PORT,
                local,
                ready: true,
            };
            let here = backend(super::pod_ip6("web-a"), true);
            let mut s = Service::cluster_ip(
                super::NAMESPACE,
                "etp-pool6",
                vec![IpAddr::V6(POOL_IP6)],
                vec![ServicePort {
                    name: "http".into(),
                    protocol: 6,
                    port: SERVICE_PORT,
                    node_port: Some(POOL6_NODE_PORT),
                    backends: vec![here, backend(FAR_BACKEND_IP6, false)],
                    local_backends: vec![here],
                }],
            );
            s.external_traffic = TrafficPolicy::Local;
            s
        },
        external(
            "etp-split",
            [
                EXTERNAL_SPLIT_IP,
                EXTERNAL_SPLIT_EXT_IP,
                EXTERNAL_SPLIT_LB_IP,
            ],
            EXTERNAL_SPLIT_NODE_PORT,
            &["web-a"],
        ),
    ]
}

/// Everything these cases program, ending with `InSync`.
pub fn local_policy_operations() -> Vec<Operation> {
    let mut ops = base_operations(true);
    ops.extend(
        local_policy_services()
            .into_iter()
            .map(Operation::ServiceUpdate),
    );
    ops.push(Operation::NodeAddresses {
        addresses: Vec::new(),
        local: Vec::new(),
        pools: POOLS.iter().filter_map(|p| p.parse().ok()).collect(),
    });
    ops.push(Operation::InSync);
    ops
}

/// The topology of [`super::run_service_cases`] with
/// [`local_policy_services`]; `Ok` when every check passed.
pub fn run_local_policy_cases(
    tag: &str,
    factory: Arc<Factory>,
) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, true, factory, local_policy_operations())?;
    let mut report = ServiceReport::default();
    let client = net.pod("client")?;
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut wrong = Vec::new();
    for _ in 0..12 {
        match ask_tcp(client, sock(INTERNAL_LOCAL_IP, SERVICE_PORT), WAIT)? {
            Outcome::Answered(a) => {
                *seen.entry(backend_name(a.backend.ip())).or_default() += 1;
                if a.peer != IpAddr::V4(pod_ip("client")) {
                    wrong.push(format!("peer {}", a.peer));
                }
            }
            other => wrong.push(format!("{other:?}")),
        }
    }
    report.check(
        "internalTrafficPolicy Local: the local backend only",
        seen.keys().eq(["web-a"]) && wrong.is_empty(),
        format!("answers per backend {seen:?}, otherwise {wrong:?}"),
    );
    let elsewhere = ask_tcp(client, sock(INTERNAL_ELSEWHERE_IP, SERVICE_PORT), SILENCE)?;
    report.check(
        "internalTrafficPolicy Local: backends elsewhere only, dropped",
        elsewhere == Outcome::Silent,
        format!("{elsewhere:?}"),
    );
    let none = ask_tcp(client, sock(INTERNAL_NONE_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "internalTrafficPolicy Local: no backends, refused at once",
        matches!(none, Outcome::Refused(d) if d < REFUSED_WITHIN),
        format!("{none:?}"),
    );
    let elsewhere = [
        ("node port", sock(NODE_IP, EXTERNAL_ELSEWHERE_NODE_PORT)),
        ("external IP", sock(EXTERNAL_ELSEWHERE_EXT_IP, SERVICE_PORT)),
        (
            "load-balancer IP",
            sock(EXTERNAL_ELSEWHERE_LB_IP, SERVICE_PORT),
        ),
    ];
    for (case, dst) in elsewhere {
        let got = ask_tcp(&net.external, dst, SILENCE)?;
        report.check(
            &format!("externalTrafficPolicy Local: backends elsewhere only, {case} dropped"),
            got == Outcome::Silent,
            format!("{dst} from {EXTERNAL_IP}: {got:?}"),
        );
    }
    let cluster = ask_tcp(client, sock(EXTERNAL_ELSEWHERE_IP, SERVICE_PORT), WAIT)?;
    report.check(
        "externalTrafficPolicy Local: backends elsewhere only, cluster IP answers",
        cluster
            .answer()
            .is_some_and(|a| backend_name(a.backend.ip()) == "web-b"),
        format!("{cluster:?}"),
    );
    // kube-proxy's short-circuit: from inside the cluster, every ready
    // backend; a pod keeps its address, the node's traffic comes from
    // the node.
    for (who, from, peer) in [
        ("pod", client, IpAddr::V4(pod_ip("client"))),
        ("host process", &net.node, IpAddr::V4(NODE_IP)),
    ] {
        for (case, dst) in elsewhere {
            let got = ask_tcp(from, dst, WAIT)?;
            report.check(
                &format!("externalTrafficPolicy Local: {who} to the {case}, a remote backend"),
                got.answer()
                    .is_some_and(|a| backend_name(a.backend.ip()) == "web-b" && a.peer == peer),
                format!("{dst}: {got:?} (want web-b, seeing {peer})"),
            );
        }
    }
    let split = [
        ("node port", sock(NODE_IP, EXTERNAL_SPLIT_NODE_PORT)),
        ("external IP", sock(EXTERNAL_SPLIT_EXT_IP, SERVICE_PORT)),
        ("load-balancer IP", sock(EXTERNAL_SPLIT_LB_IP, SERVICE_PORT)),
    ];
    for (case, dst) in split {
        let seen = answers(&net.external, dst)?;
        report.check(
            &format!("externalTrafficPolicy Local: external client to the {case}, local only"),
            seen.iter().all(|a| {
                a.is_some_and(|a| {
                    backend_name(a.backend.ip()) == "web-a" && a.peer == IpAddr::V4(EXTERNAL_IP)
                })
            }),
            format!("{dst}: {seen:?} (want web-a seeing {EXTERNAL_IP})"),
        );
        let seen = answers(client, dst)?;
        let names: std::collections::BTreeSet<String> = seen
            .iter()
            .flatten()
            .map(|a| backend_name(a.backend.ip()))
            .collect();
        report.check(
            &format!("externalTrafficPolicy Local: pod to the {case}, every backend"),
            names.iter().eq(["web-a", "web-b"]) && seen.iter().all(Option::is_some),
            format!("{dst}: {seen:?}"),
        );
    }
    remote_pod(&net, &mut report)?;
    finish(report)
}

/// A pod of another node reaching `Local` services' node ports and
/// load-balancer IP (see the module's description).
fn remote_pod(net: &super::Net, report: &mut ServiceReport) -> Result<(), ConformanceError> {
    let ext = &net.external;
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    let v6 = |a: Ipv6Addr| IpAddr::V6(a);
    for (ip, len) in [
        (v4(REMOTE_POD_IP), 32),
        (v4(FAR_BACKEND_IP), 32),
        (v6(REMOTE_POD_IP6), 128),
        (v6(FAR_BACKEND_IP6), 128),
    ] {
        let host = manul_netns::IpNet::new(ip, len)
            .map_err(|e| ConformanceError::Setup(format!("remote pod address: {e}")))?;
        manul_netns::add_address(ext, "eth0", host)
            .map_err(|e| ConformanceError::Setup(format!("remote pod address: {e}")))?;
    }
    let _far = super::WhoAmI::start(ext, v4(FAR_BACKEND_IP))?;
    let _far6 = super::WhoAmI::start(ext, v6(FAR_BACKEND_IP6))?;
    let six = std::net::SocketAddr::new(v6(super::NODE_IP6), POOL6_NODE_PORT);
    for (case, dst, pod, node, far, here) in [
        (
            "node port",
            sock(NODE_IP, POOL_NODE_PORT),
            v4(REMOTE_POD_IP),
            v4(NODE_IP),
            v4(FAR_BACKEND_IP),
            v4(pod_ip("web-a")),
        ),
        (
            "load-balancer IP",
            sock(POOL_LB_IP, SERVICE_PORT),
            v4(REMOTE_POD_IP),
            v4(NODE_IP),
            v4(FAR_BACKEND_IP),
            v4(pod_ip("web-a")),
        ),
        (
            "IPv6 node port",
            six,
            v6(REMOTE_POD_IP6),
            v6(super::NODE_IP6),
            v6(FAR_BACKEND_IP6),
            v6(super::pod_ip6("web-a")),
        ),
    ] {
        let seen = (0..TRIES)
            .map(|_| Ok(ask_tcp_from(ext, Some(pod), dst, WAIT)?.answer()))
            .collect::<Result<Vec<_>, ConformanceError>>()?;
        let here = seen
            .iter()
            .flatten()
            .filter(|a| a.backend.ip() == here)
            .collect::<Vec<_>>();
        let there = seen
            .iter()
            .flatten()
            .filter(|a| a.backend.ip() == far)
            .collect::<Vec<_>>();
        report.check(
            &format!(
                "externalTrafficPolicy Local: another node's pod to the {case}, every backend"
            ),
            seen.iter().all(Option::is_some) && !here.is_empty() && !there.is_empty(),
            format!("{dst} from {pod}: {seen:?}"),
        );
        report.check(
            &format!(
                "externalTrafficPolicy Local: another node's pod to the {case}, its address here"
            ),
            !here.is_empty() && here.iter().all(|a| a.peer == pod),
            format!("{dst} from {pod}: web-a saw {here:?} (want {pod})"),
        );
        report.check(
            &format!("externalTrafficPolicy Local: another node's pod to the {case}, the node's elsewhere"),
            !there.is_empty() && there.iter().all(|a| a.peer == node),
            format!("{dst} from {pod}: {far} saw {there:?} (want {node})"),
        );
    }
    let pod = v4(REMOTE_POD_IP);
    let dst = sock(NODE_IP, EXTERNAL_ELSEWHERE_NODE_PORT);
    let got = ask_tcp_from(ext, Some(pod), dst, WAIT)?;
    report.check(
        "externalTrafficPolicy Local: another node's pod to a node port with backends elsewhere only",
        got.answer()
            .is_some_and(|a| backend_name(a.backend.ip()) == "web-b" && a.peer == pod),
        format!("{dst} from {pod}: {got:?} (want web-b seeing {pod})"),
    );
    // The external client (no pool address) still gets the local backend
    // only.
    let seen = answers(ext, sock(NODE_IP, POOL_NODE_PORT))?;
    report.check(
        "externalTrafficPolicy Local: external client beside pools, local only",
        seen.iter().all(|a| {
            a.is_some_and(|a| {
                backend_name(a.backend.ip()) == "web-a" && a.peer == IpAddr::V4(EXTERNAL_IP)
            })
        }),
        format!("{seen:?}"),
    );
    Ok(())
}

/// [`TRIES`] connections from `ns` to `dst`: each one's answer (`None`:
/// refused or silent).
fn answers(
    ns: &manul_netns::NetNs,
    dst: std::net::SocketAddr,
) -> Result<Vec<Option<super::Answer>>, ConformanceError> {
    (0..TRIES)
        .map(|_| Ok(ask_tcp(ns, dst, WAIT)?.answer()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_policy_operations_follow_the_contract() {
        use manul_dataplane_api::{Driver as _, NullDriver};
        let mut null = NullDriver::new();
        null.apply(&local_policy_operations()).expect("contract");
        assert_eq!(null.state().pools.len(), POOLS.len());
        assert_eq!(null.state().services.len(), local_policy_services().len());
    }
}
