//! Flow records through services: a driver with flow observations on
//! (`Driver::take_flows`) names the frontend each translated connection
//! came through, so that Felix's records name the Service
//! ([`manul_dataplane_api::service_at`]).
//!
//! One dual-stack Service, [`FLOWS`], has an IPv4 and an IPv6 ClusterIP,
//! an external IP of each family and a node port, on TCP and UDP, with
//! `web-a` as its one backend (`externalTrafficPolicy: Cluster`, so the
//! external client is masqueraded). For each family, each kind of
//! frontend and each protocol, one connection (TCP) or one exchange of
//! datagrams (UDP) goes through it (from the `client` pod to the
//! ClusterIP; from the external client to the external IP and the node
//! port on the node's address); then the flow's `Start` observation (the
//! first a driver makes of a connection, so a record of a short
//! connection names its Service too) must have the backend pod as
//! destination (its address and target port), the source the backend saw
//! or the client's own, the frontend that was addressed, and that frontend
//! must name the Service's namespace, name and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manul_dataplane_api::{
    Backend, FlowObservation, FlowPhase, Operation, Service, ServicePort, TrafficPolicy, service_at,
};
use manul_netns::NetNs;

use super::{
    EXTERNAL_IP, EXTERNAL_IP6, NAMESPACE, NODE_IP, NODE_IP6, Outcome, SERVICE_PORT, ServiceReport,
    TCP_PORT, UDP_PORT, WAIT, ask_tcp, ask_udp, base_operations, finish, pod_ip, pod_ip6, start,
};
use crate::{ConformanceError, Factory};

/// The Service's name.
pub const FLOWS: &str = "flows";
/// Its ClusterIPs, external IPs and node port (TCP and UDP).
pub const FLOWS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
pub const FLOWS_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x50);
pub const FLOWS_EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
pub const FLOWS_EXT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x51, 0, 0, 0, 0, 0x50);
pub const FLOWS_NODE_PORT: u16 = 30090;
/// How long the observations of a flow may take to come.
const OBSERVED_WITHIN: Duration = Duration::from_secs(10);

/// The backend, `web-a`, in `family` (4 or 6).
fn web_a(family: u8) -> IpAddr {
    if family == 4 {
        IpAddr::V4(pod_ip("web-a"))
    } else {
        IpAddr::V6(pod_ip6("web-a"))
    }
}

/// The [`FLOWS`] Service.
pub fn flow_services() -> Vec<Service> {
    let port = |protocol: u8, target: u16| {
        let backends: Vec<Backend> = [4, 6]
            .into_iter()
            .map(|family| Backend {
                ip: web_a(family),
                port: target,
                local: true,
                ready: true,
            })
            .collect();
        ServicePort {
            name: if protocol == 17 { "dns" } else { "http" }.into(),
            protocol,
            port: SERVICE_PORT,
            node_port: Some(FLOWS_NODE_PORT),
            local_backends: backends.clone(),
            backends,
        }
    };
    let mut svc = Service::cluster_ip(
        NAMESPACE,
        FLOWS,
        vec![IpAddr::V4(FLOWS_IP), IpAddr::V6(FLOWS_IP6)],
        vec![port(6, TCP_PORT), port(17, UDP_PORT)],
    );
    svc.external_ips = vec![IpAddr::V4(FLOWS_EXT_IP), IpAddr::V6(FLOWS_EXT_IP6)];
    svc.external_traffic = TrafficPolicy::Cluster;
    vec![svc]
}

/// Everything the flow cases program (the dual-stack pods and
/// [`flow_services`]), ending with [`Operation::InSync`].
pub fn flow_operations() -> Vec<Operation> {
    let mut ops = base_operations(true);
    ops.extend(flow_services().into_iter().map(Operation::ServiceUpdate));
    ops.push(Operation::InSync);
    ops
}

/// One flow to check: where it goes and what its records must say.
struct Case {
    name: String,
    protocol: u8,
    /// The address and port dialled: the frontend.
    frontend: SocketAddr,
    backend: SocketAddr,
    /// The client's own address: the source policy sees where the
    /// masquerade comes after it (nftables), besides the one the backend
    /// saw.
    client: IpAddr,
}

fn cases() -> Vec<(Case, bool)> {
    let mut out = Vec::new();
    for family in [4u8, 6] {
        let (cluster, ext, node, pod, outside): (IpAddr, IpAddr, IpAddr, IpAddr, IpAddr) =
            if family == 4 {
                (
                    FLOWS_IP.into(),
                    FLOWS_EXT_IP.into(),
                    NODE_IP.into(),
                    pod_ip("client").into(),
                    EXTERNAL_IP.into(),
                )
            } else {
                (
                    FLOWS_IP6.into(),
                    FLOWS_EXT_IP6.into(),
                    NODE_IP6.into(),
                    pod_ip6("client").into(),
                    EXTERNAL_IP6.into(),
                )
            };
        for (kind, addr, port, external) in [
            ("ClusterIP", cluster, SERVICE_PORT, false),
            ("external IP", ext, SERVICE_PORT, true),
            ("node port", node, FLOWS_NODE_PORT, true),
        ] {
            for (protocol, target) in [(6u8, TCP_PORT), (17, UDP_PORT)] {
                let proto = if protocol == 6 { "tcp" } else { "udp" };
                out.push((
                    Case {
                        name: format!("flows: IPv{family} {kind} {proto}"),
                        protocol,
                        frontend: SocketAddr::new(addr, port),
                        backend: SocketAddr::new(web_a(family), target),
                        client: if external { outside } else { pod },
                    },
                    external,
                ));
            }
        }
    }
    out
}

/// Whether `obs` is of the case's flow: from the client (or `peer`, the
/// source its backend saw) to the backend.
fn of_flow(obs: &FlowObservation, case: &Case, peer: IpAddr) -> bool {
    obs.tuple.protocol == case.protocol
        && (obs.tuple.src == peer || obs.tuple.src == case.client)
        && obs.tuple.dst == case.backend.ip()
}

/// Whether `obs` is the case's `Start` with the backend as destination,
/// naming the Service.
fn names_the_service(obs: &FlowObservation, case: &Case, peer: IpAddr) -> bool {
    let services = flow_services();
    obs.phase == FlowPhase::Start
        && of_flow(obs, case, peer)
        && obs.tuple.dst_port == case.backend.port()
        && obs.service_frontend == Some((case.frontend.ip(), case.frontend.port()))
        && obs
            .service_frontend
            .and_then(|(a, p)| service_at(&services, a, p, obs.tuple.protocol))
            .is_some_and(|(s, p)| {
                s.namespace == NAMESPACE && s.name == FLOWS && p.port == SERVICE_PORT
            })
}

/// Builds the dual-stack topology in namespaces named after
/// `manul_netns::unique_prefix(tag)`, starts the driver `factory` builds
/// (with flow observations on, updates frequent) and programs
/// [`flow_operations`]; then each family, frontend kind and protocol:
/// the flow is answered by `web-a`, and its `Start` observation names its
/// frontend and Service with the backend as destination. The external client
/// reaches the external IPs and node port from outside the node.
pub fn run_flow_cases(tag: &str, factory: Arc<Factory>) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, true, factory, flow_operations())?;
    let driver = net
        .driver
        .as_ref()
        .ok_or_else(|| ConformanceError::Setup("no driver".into()))?;
    let mut report = ServiceReport::default();
    let mut seen: Vec<FlowObservation> = Vec::new();
    for (case, external) in cases() {
        let from: &NetNs = if external {
            &net.external
        } else {
            net.pod("client")?
        };
        let outcome = if case.protocol == 6 {
            ask_tcp(from, case.frontend, WAIT)?
        } else {
            ask_udp(from, case.frontend, WAIT)?
        };
        let Outcome::Answered(answer) = outcome else {
            report.check(&case.name, false, format!("not answered: {outcome:?}"));
            continue;
        };
        if answer.backend != case.backend {
            report.check(
                &case.name,
                false,
                format!("answered by {} instead of {}", answer.backend, case.backend),
            );
            continue;
        }
        let deadline = Instant::now() + OBSERVED_WITHIN;
        let found = loop {
            seen.extend(driver.take_flows()?);
            if seen
                .iter()
                .any(|o| names_the_service(o, &case, answer.peer))
            {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // Distinct observations only: updates repeat every interval.
        let mut observed: Vec<String> = Vec::new();
        for o in seen.iter().filter(|o| of_flow(o, &case, answer.peer)) {
            let line = format!("{:?} {} {:?}", o.phase, o.tuple.src, o.service_frontend);
            if !observed.contains(&line) {
                observed.push(line);
            }
        }
        report.check(
            &case.name,
            found,
            format!(
                "from {} to {} via {}: observations {observed:?}",
                answer.peer, case.backend, case.frontend
            ),
        );
    }
    finish(report)
}
