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

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use manul_dataplane_api::{Backend, Operation, Service, ServicePort, TrafficPolicy};

use super::{
    EXTERNAL_IP, NODE_IP, Outcome, REFUSED_WITHIN, SERVICE_PORT, SILENCE, ServiceReport, TCP_PORT,
    WAIT, ask_tcp, backend_name, base_operations, finish, pod_ip, service, sock, start,
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
    let mut ops = base_operations(false);
    ops.extend(
        local_policy_services()
            .into_iter()
            .map(Operation::ServiceUpdate),
    );
    ops.push(Operation::InSync);
    ops
}

/// The topology of [`super::run_service_cases`] with
/// [`local_policy_services`]; `Ok` when every check passed.
pub fn run_local_policy_cases(
    tag: &str,
    factory: Arc<Factory>,
) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, false, factory, local_policy_operations())?;
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
    finish(report)
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
        assert_eq!(null.state().services.len(), local_policy_services().len());
    }
}
