//! Contested frontends: two services claim the same external IP and port
//! and the same node port, one under `externalTrafficPolicy: Cluster` and
//! one under `Local` (or one without backends). The first in
//! namespace/name order keeps every frontend it claims, for every source:
//! the external client reaches the keeper's backends with the keeper's
//! source-address semantics (`Cluster`: masqueraded; `Local`: the
//! client's own address), a pod reaches the keeper's backends, and a
//! keeper without backends refuses at once whatever the other has (and a
//! keeper with backends is not refused because the other has none). When
//! the keepers are removed the other services take every frontend, and
//! when they come back they keep them again.
//!
//! The pairs are [`PAIRS`], and a load-balancer IP ([`RANGED_LB_IP`])
//! whose source ranges, per address as on eBPF, are the union of its
//! services' (the keeper has none, the other allows the external client
//! only): a pod is dropped whoever keeps it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use manul_dataplane_api::{Operation, Service, TrafficPolicy};
use manul_netns::{IpNet, NetNs};

use super::{
    EXTERNAL_IP, NAMESPACE, NODE_IP, Net, Outcome, REFUSED_WITHIN, SERVICE_PORT, SILENCE,
    ServiceReport, TCP_PORT, WAIT, ask_tcp, backend_name, base_operations, finish, pod_ip, port,
    service, sock, start,
};
use crate::{ConformanceError, Factory};

/// A contested pair: `NAME-a` keeps from `NAME-b` the external IP `ip`
/// (port [`SERVICE_PORT`]) and the node port `node_port`.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    pub node_port: u16,
    /// `(policy, backend pod)` of `NAME-a` and `NAME-b` (`None`: no
    /// backends).
    pub a: (TrafficPolicy, Option<&'static str>),
    pub b: (TrafficPolicy, Option<&'static str>),
}

/// The pairs (all backends on this node): `Cluster` before `Local`,
/// `Local` before `Cluster`, no backends before `Local`, `Local` before
/// no backends.
pub const PAIRS: [Pair; 4] = [
    Pair {
        name: "cl",
        ip: Ipv4Addr::new(203, 0, 113, 20),
        node_port: 30090,
        a: (TrafficPolicy::Cluster, Some("web-a")),
        b: (TrafficPolicy::Local, Some("web-c")),
    },
    Pair {
        name: "lo",
        ip: Ipv4Addr::new(203, 0, 113, 21),
        node_port: 30091,
        a: (TrafficPolicy::Local, Some("web-b")),
        b: (TrafficPolicy::Cluster, Some("web-c")),
    },
    Pair {
        name: "no",
        ip: Ipv4Addr::new(203, 0, 113, 22),
        node_port: 30092,
        a: (TrafficPolicy::Cluster, None),
        b: (TrafficPolicy::Local, Some("web-c")),
    },
    Pair {
        name: "nb",
        ip: Ipv4Addr::new(203, 0, 113, 23),
        node_port: 30093,
        a: (TrafficPolicy::Local, Some("web-a")),
        b: (TrafficPolicy::Cluster, None),
    },
];

/// How many connections each probe opens (each must get the same result).
const TRIES: usize = 6;

/// A service of pair `i`: its own cluster IP `10.96.0.(50 + 2i [+ 1])`,
/// the pair's external IP and node port.
fn contender(i: usize, pair: &Pair, keeper: bool) -> Service {
    let (policy, backend) = if keeper { pair.a } else { pair.b };
    let n = u8::try_from(50 + 2 * i + usize::from(!keeper)).unwrap_or(u8::MAX);
    let backends: Vec<&str> = backend.into_iter().collect();
    let mut s = service(
        &format!("{}-{}", pair.name, if keeper { 'a' } else { 'b' }),
        Ipv4Addr::new(10, 96, 0, n),
        vec![port(6, Some(pair.node_port), &backends, TCP_PORT)],
    );
    s.external_ips = vec![IpAddr::V4(pair.ip)];
    s.external_traffic = policy;
    s
}

/// The load-balancer IP `rg-a` (`Cluster`, `web-a`, no source ranges)
/// keeps from `rg-b` (`Local`, `web-c`, source range: the external
/// client): the ranges are per address, the union of both services', so
/// only the external client reaches it, whoever keeps it.
pub const RANGED_LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);

/// The services of the ranged load-balancer IP: `rg-a` or `rg-b`.
fn ranged(keeper: bool) -> Service {
    let (name, n, policy, backend) = if keeper {
        ("rg-a", 60, TrafficPolicy::Cluster, "web-a")
    } else {
        ("rg-b", 61, TrafficPolicy::Local, "web-c")
    };
    let mut s = service(
        name,
        Ipv4Addr::new(10, 96, 0, n),
        vec![port(6, None, &[backend], TCP_PORT)],
    );
    s.load_balancer_ips = vec![IpAddr::V4(RANGED_LB_IP)];
    s.external_traffic = policy;
    if !keeper {
        s.load_balancer_source_ranges = vec![IpNet::from(IpAddr::V4(EXTERNAL_IP))];
    }
    s
}

/// The keepers (`*-a`) and the others (`*-b`).
pub fn contested_services() -> (Vec<Service>, Vec<Service>) {
    let side = |keeper: bool| {
        let mut out: Vec<Service> = PAIRS
            .iter()
            .enumerate()
            .map(|(i, p)| contender(i, p, keeper))
            .collect();
        out.push(ranged(keeper));
        out
    };
    (side(true), side(false))
}

/// Everything the contested cases program first (the others before the
/// keepers), ending with `InSync`.
pub fn contested_operations() -> Vec<Operation> {
    let (keepers, others) = contested_services();
    let mut ops = base_operations(false);
    ops.extend(
        others
            .into_iter()
            .chain(keepers)
            .map(Operation::ServiceUpdate),
    );
    ops.push(Operation::InSync);
    ops
}

/// What a probe should get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This pod answers, having seen the client's own address (`Some(true)`),
    /// another one (`Some(false)`: masqueraded), or either (`None`).
    From(&'static str, Option<bool>),
    /// Refused at once.
    Refused,
}

/// Probes `dst` from `ns` [`TRIES`] times; every outcome must be `want`.
fn expect(
    report: &mut ServiceReport,
    case: &str,
    ns: &NetNs,
    client: Ipv4Addr,
    dst: (Ipv4Addr, u16),
    want: Want,
) -> Result<(), ConformanceError> {
    let mut seen = Vec::new();
    let mut passed = true;
    for _ in 0..TRIES {
        let got = ask_tcp(ns, sock(dst.0, dst.1), WAIT)?;
        passed &= match (want, got) {
            (Want::Refused, Outcome::Refused(d)) => d < REFUSED_WITHIN,
            (Want::From(pod, own), Outcome::Answered(a)) => {
                backend_name(a.backend.ip()) == pod
                    && a.backend.port() == TCP_PORT
                    && own.is_none_or(|own| (a.peer == IpAddr::V4(client)) == own)
            }
            _ => false,
        };
        seen.push(match got {
            Outcome::Answered(a) => format!("{} saw {}", backend_name(a.backend.ip()), a.peer),
            other => format!("{other:?}"),
        });
    }
    seen.dedup();
    report.check(
        case,
        passed,
        format!("{}:{} want {want:?}, got {seen:?}", dst.0, dst.1),
    );
    Ok(())
}

/// The probes of one state: each pair's frontends from the external
/// client and from a pod, answered as the keepers (`keepers`) or the
/// others alone would.
fn probe_all(
    net: &Net,
    report: &mut ServiceReport,
    stage: &str,
    keepers: bool,
) -> Result<(), ConformanceError> {
    let pod = net.pod("client")?;
    for pair in &PAIRS {
        let (policy, backend) = if keepers { pair.a } else { pair.b };
        let (outside, inside) = match backend {
            Some(b) => (
                Want::From(b, Some(policy == TrafficPolicy::Local)),
                // A pod's source address is not compared: the dataplanes
                // differ in masquerading pods' external traffic, not in
                // its backends.
                Want::From(b, None),
            ),
            None => (Want::Refused, Want::Refused),
        };
        let case = |probe: &str| format!("contested {stage}: {} {probe}", pair.name);
        let ext = &net.external;
        let node_port = (NODE_IP, pair.node_port);
        expect(
            report,
            &case("node port"),
            ext,
            EXTERNAL_IP,
            node_port,
            outside,
        )?;
        let ip = (pair.ip, SERVICE_PORT);
        expect(report, &case("external IP"), ext, EXTERNAL_IP, ip, outside)?;
        let from_pod = &case("external IP from a pod");
        expect(report, from_pod, pod, pod_ip("client"), ip, inside)?;
    }
    // The ranged load-balancer IP: the external client only.
    let (backend, local) = if keepers {
        ("web-a", false)
    } else {
        ("web-c", true)
    };
    let lb = (RANGED_LB_IP, SERVICE_PORT);
    let case = |probe: &str| format!("contested {stage}: rg {probe}");
    let ext = &net.external;
    let want = Want::From(backend, Some(local));
    expect(report, &case("in range"), ext, EXTERNAL_IP, lb, want)?;
    let outside = ask_tcp(pod, sock(lb.0, lb.1), SILENCE)?;
    report.check(
        &case("pod out of range dropped"),
        outside == Outcome::Silent,
        format!("{outside:?}"),
    );
    Ok(())
}

/// The topology of [`super::run_service_cases`] with the pairs of
/// [`contested_services`] (the others programmed before the keepers):
/// every frontend goes to its keeper; the keepers removed (one batch), to
/// the others, with their own source-address semantics; the keepers back,
/// to them again. `Ok` when every check passed.
pub fn run_contested_cases(
    tag: &str,
    factory: Arc<Factory>,
) -> Result<ServiceReport, ConformanceError> {
    let net = start(tag, false, factory, contested_operations())?;
    let driver = net
        .driver
        .as_ref()
        .ok_or_else(|| ConformanceError::Setup("no driver".into()))?;
    let mut report = ServiceReport::default();
    probe_all(&net, &mut report, "first", true)?;
    let (keepers, _) = contested_services();
    driver.apply(
        keepers
            .iter()
            .map(|s| Operation::ServiceRemove {
                namespace: NAMESPACE.into(),
                name: s.name.clone(),
            })
            .collect(),
    )?;
    probe_all(&net, &mut report, "keepers removed", false)?;
    driver.apply(keepers.into_iter().map(Operation::ServiceUpdate).collect())?;
    probe_all(&net, &mut report, "keepers back", true)?;
    finish(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contested_operations_follow_the_contract() {
        use manul_dataplane_api::{Driver as _, NullDriver};
        let mut null = NullDriver::new();
        null.apply(&contested_operations()).expect("contract");
        assert_eq!(null.state().services.len(), 2 * PAIRS.len() + 2);
        let (keepers, others) = contested_services();
        for (a, b) in keepers.iter().zip(&others) {
            assert!(a.name < b.name, "{} keeps", a.name);
            assert_eq!(a.external_ips, b.external_ips);
            assert_eq!(a.load_balancer_ips, b.load_balancer_ips);
            assert_eq!(a.ports[0].node_port, b.ports[0].node_port);
            assert_ne!(a.cluster_ips, b.cluster_ips);
        }
    }
}
