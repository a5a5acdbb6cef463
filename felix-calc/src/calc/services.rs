//! Services for kube-proxy replacement: a Service's cluster IPs and ports,
//! joined with the ready addresses of its EndpointSlices (matched by the
//! `kubernetes.io/service-name` label and by port name).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use manul_dataplane_api as dp;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn protocol(p: Option<&str>) -> u8 {
    match p.unwrap_or("TCP") {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
    }
}

/// What the graph keeps of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub service: String,
    /// Port name → (protocol, port).
    pub ports: BTreeMap<String, (u8, u16)>,
    pub ready: BTreeSet<IpAddr>,
    /// Every endpoint's addresses, ready or not: what a policy's
    /// `services` match selects (a backend that is starting or
    /// terminating is still the Service's).
    pub addresses: BTreeSet<IpAddr>,
}

impl Slice {
    pub fn from_k8s(s: &EndpointSlice) -> Option<Slice> {
        let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((
                    p.name.clone().unwrap_or_default(),
                    (protocol(p.protocol.as_deref()), port),
                ))
            })
            .collect();
        let ready = s
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        let addresses = s
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        Some(Slice {
            service,
            ports,
            ready,
            addresses,
        })
    }
}

/// The members of a policy's `services` match over a Service's slices:
/// every address (a source match), or with `ports` each address with each
/// of its slice's ports (a destination match).
pub fn policy_members<'a>(
    slices: impl Iterator<Item = &'a Slice>,
    ports: bool,
) -> BTreeSet<dp::IpSetMember> {
    let mut out = BTreeSet::new();
    for s in slices {
        for ip in &s.addresses {
            if ports {
                out.extend(
                    s.ports
                        .values()
                        .map(|(protocol, port)| dp::IpSetMember::NamedPort {
                            ip: *ip,
                            protocol: *protocol,
                            port: *port,
                        }),
                );
            } else {
                out.insert(dp::IpSetMember::Net(ipnet::IpNet::from(*ip)));
            }
        }
    }
    out
}

/// The dataplane form of a Service, given the slices that belong to it.
pub fn desired(namespace: &str, name: &str, svc: &Service, slices: &[&Slice]) -> dp::Service {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let name = p.name.clone().unwrap_or_default();
            let proto = protocol(p.protocol.as_deref());
            let mut backends = BTreeSet::new();
            let default_target = match &p.target_port {
                Some(IntOrString::Int(t)) => u16::try_from(*t).unwrap_or(port),
                _ => port,
            };
            for s in slices {
                if let Some((sp, tp)) = s.ports.get(&name)
                    && *sp == proto
                {
                    backends.extend(s.ready.iter().map(|ip| dp::Backend {
                        ip: *ip,
                        port: *tp,
                        local: false,
                    }));
                }
            }
            let _ = default_target;
            Some(dp::ServicePort {
                name,
                protocol: proto,
                port,
                node_port: None,
                backends: backends.into_iter().collect(),
                local_backends: Vec::new(),
            })
        })
        .collect();
    dp::Service {
        namespace: namespace.to_string(),
        name: name.to_string(),
        cluster_ips,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        external_traffic: dp::TrafficPolicy::Cluster,
        internal_traffic: dp::TrafficPolicy::Cluster,
        affinity_timeout_seconds: None,
        health_check_node_port: None,
        balancing: dp::Balancing::Random,
        ports,
    }
}
