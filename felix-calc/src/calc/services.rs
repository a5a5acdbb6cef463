//! Services for kube-proxy replacement: a Service's frontends (cluster,
//! external and load-balancer IPs, node ports, traffic policies, affinity)
//! joined with the endpoints of its EndpointSlices (matched by the
//! `kubernetes.io/service-name` label, and per port by name and protocol),
//! with Kubernetes' rules for which endpoints a node uses.
//!
//! The rules, as kube-proxy applies them:
//!
//! - Not ours: headless Services (`clusterIP: None`, or none at all),
//!   type `ExternalName`, and Services labelled
//!   `service.kubernetes.io/service-proxy-name` (they belong to another
//!   proxy) are never emitted.
//! - An endpoint is its first address (the others are fungible, as the
//!   EndpointSlice API says), of the slice's address type; `FQDN` slices
//!   and endpoints of a family the Service has no cluster IP of are
//!   ignored, as are external and load-balancer IPs of such a family.
//! - Backends: the ready endpoints (`conditions.ready`, unset = ready);
//!   when none is ready, the serving (unset = serving) terminating ones
//!   (KEP-1669). `local_backends`: the same rule over the endpoints whose
//!   `nodeName` is this node. An address and port in several slices is one
//!   backend, ready or local when any of its copies is.
//! - `externalTrafficPolicy: Local` counts only for types `NodePort` and
//!   `LoadBalancer` (for any other type the field means nothing), and the
//!   health-check node port only for `LoadBalancer` with that policy.
//!   Node ports: types `NodePort` and `LoadBalancer`.
//! - `sessionAffinity: ClientIP`: `sessionAffinityConfig.clientIP.
//!   timeoutSeconds`, 10800 when unset.
//! - Load-balancer ingress IPs with `ipMode: Proxy` are the load
//!   balancer's to proxy, not ours to capture.
//! - `loadBalancerSourceRanges` are parsed as CIDRs (spaces trimmed). A
//!   malformed one fails closed, unlike kube-proxy (which drops it and may
//!   so open the Service to every source): the valid ones are kept, and
//!   when none is valid the load-balancer IPs accept no source (the
//!   unspecified addresses `0.0.0.0/32` and `::/128`, which no packet comes
//!   from). A warning names the Service and the range.
//! - `balancing`: Calico's annotation
//!   `lb.projectcalico.org/external-traffic-strategy` decides when the
//!   Service has it (`maglev`: Maglev; any other value: random, so a
//!   Service can opt out); without it, the node's default
//!   ([`crate::calc::CalcGraph::set_default_balancing`], Felix's
//!   `serviceMaglevDefault`), random unless set.
//!
//! Topology-aware routing (hints, `trafficDistribution`) is not applied:
//! every node uses every backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use manul_dataplane_api as dp;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label that gives a Service to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Calico's annotation choosing how external traffic picks a backend.
pub const EXTERNAL_TRAFFIC_STRATEGY: &str = "lb.projectcalico.org/external-traffic-strategy";

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// A protocol name's number; None for one the dataplane does not carry.
fn protocol(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// One endpoint of a slice, as the service rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its first address.
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `nodeName` is this node.
    pub local: bool,
}

impl Endpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// What the graph keeps of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub service: String,
    /// (port name, protocol) → port.
    pub ports: BTreeMap<(String, u8), u16>,
    /// The endpoints that can be backends (a first address of the slice's
    /// address type).
    pub endpoints: Vec<Endpoint>,
    /// Every endpoint's addresses, ready or not: what a policy's
    /// `services` match selects (a backend that is starting or
    /// terminating is still the Service's).
    pub addresses: BTreeSet<IpAddr>,
}

impl Slice {
    /// The slice as node `node` sees it; None without a Service label.
    pub fn from_k8s(s: &EndpointSlice, node: &str) -> Option<Slice> {
        let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                // No name (unlike an empty one) or no port: not a port a
                // Service port can match.
                let name = p.name.clone()?;
                let port = u16::try_from(p.port?).ok().filter(|p| *p != 0)?;
                Some(((name, protocol(p.protocol.as_deref())?), port))
            })
            .collect();
        let family_ok = |ip: &IpAddr| match s.address_type.as_str() {
            "IPv4" => ip.is_ipv4(),
            "IPv6" => ip.is_ipv6(),
            _ => false,
        };
        let endpoints = s
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                if !family_ok(&ip) {
                    return None;
                }
                let c = e.conditions.as_ref();
                Some(Endpoint {
                    ip,
                    ready: c.and_then(|c| c.ready).unwrap_or(true),
                    serving: c.and_then(|c| c.serving).unwrap_or(true),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: e.node_name.as_deref() == Some(node),
                })
            })
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
            endpoints,
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
                out.extend(s.ports.iter().map(|((_, protocol), port)| {
                    dp::IpSetMember::NamedPort {
                        ip: *ip,
                        protocol: *protocol,
                        port: *port,
                    }
                }));
            } else {
                out.insert(dp::IpSetMember::Net(IpNet::from(*ip)));
            }
        }
    }
    out
}

/// One port of a Service's frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// What the graph keeps of a Service it proxies: everything of the
/// dataplane's Service but the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<IpNet>,
    pub external_traffic: dp::TrafficPolicy,
    pub internal_traffic: dp::TrafficPolicy,
    pub affinity_timeout_seconds: Option<u32>,
    pub health_check_node_port: Option<u16>,
    pub balancing: dp::Balancing,
    pub ports: Vec<FrontendPort>,
}

/// A port number from the API's `i32`; None for 0 or out of range.
fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Parsed addresses, sorted and deduplicated, of the families in
/// `families`; malformed ones are dropped with a warning.
fn addresses<'a>(
    what: &str,
    service: &str,
    raw: impl Iterator<Item = &'a String>,
    families: Option<&Families>,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = raw
        .filter_map(|a| match a.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(service, address = %a, "ignoring a malformed {what}");
                None
            }
        })
        .filter(|ip| families.is_none_or(|f| f.has(ip)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The IP families a Service has cluster IPs of.
#[derive(Debug, Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    fn of(ips: &[IpAddr]) -> Families {
        Families {
            v4: ips.iter().any(IpAddr::is_ipv4),
            v6: ips.iter().any(IpAddr::is_ipv6),
        }
    }

    fn has(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv4() { self.v4 } else { self.v6 }
    }
}

/// `loadBalancerSourceRanges`, failing closed on a malformed one (see the
/// module documentation).
fn source_ranges(service: &str, raw: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut malformed = false;
    for r in raw {
        match r.trim().parse::<IpNet>() {
            Ok(net) => out.push(net.trunc()),
            Err(_) => {
                malformed = true;
                tracing::warn!(
                    service,
                    range = %r,
                    "malformed loadBalancerSourceRanges entry: the load-balancer IPs accept only the valid ranges, and no source when none is valid"
                );
            }
        }
    }
    if malformed && out.is_empty() {
        out.push(IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        out.push(IpNet::from(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }
    out.sort();
    out.dedup();
    out
}

impl Frontend {
    /// The frontend of Service `namespace/name`; None when it is not this
    /// proxy's (headless, `ExternalName`, another proxy's, or without a
    /// cluster IP that parses).
    pub fn from_k8s(
        namespace: &str,
        name: &str,
        svc: &Service,
        default_balancing: dp::Balancing,
    ) -> Option<Frontend> {
        let labels = svc.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
            return None;
        }
        let spec = svc.spec.as_ref()?;
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            return None;
        }
        let headless = |ip: &String| ip.trim() == "None";
        if spec.cluster_ip.iter().any(headless) || spec.cluster_ips.iter().flatten().any(headless) {
            return None;
        }
        let id = format!("{namespace}/{name}");
        let cluster_ips = addresses(
            "cluster IP",
            &id,
            spec.cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter()),
            None,
        );
        if cluster_ips.is_empty() {
            return None;
        }
        let families = Families::of(&cluster_ips);
        let external_kind = kind == "NodePort" || kind == "LoadBalancer";
        let external_local =
            external_kind && spec.external_traffic_policy.as_deref() == Some("Local");
        let lb_ips: Vec<String> = svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.clone())
            .collect();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(FrontendPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: protocol(p.protocol.as_deref())?,
                    port: port_number(p.port)?,
                    node_port: p.node_port.filter(|_| external_kind).and_then(port_number),
                })
            })
            .collect();
        let affinity_timeout_seconds =
            (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|t| *t > 0)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
            });
        let balancing = match svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXTERNAL_TRAFFIC_STRATEGY))
        {
            Some(v) if v.trim().eq_ignore_ascii_case("maglev") => dp::Balancing::Maglev,
            Some(_) => dp::Balancing::Random,
            None => default_balancing,
        };
        let local = |on: bool| {
            if on {
                dp::TrafficPolicy::Local
            } else {
                dp::TrafficPolicy::Cluster
            }
        };
        Some(Frontend {
            external_ips: addresses(
                "external IP",
                &id,
                spec.external_ips.iter().flatten(),
                Some(&families),
            ),
            load_balancer_ips: addresses(
                "load-balancer ingress IP",
                &id,
                lb_ips.iter(),
                Some(&families),
            ),
            load_balancer_source_ranges: source_ranges(
                &id,
                spec.load_balancer_source_ranges
                    .as_deref()
                    .unwrap_or_default(),
            ),
            external_traffic: local(external_local),
            internal_traffic: local(spec.internal_traffic_policy.as_deref() == Some("Local")),
            affinity_timeout_seconds,
            health_check_node_port: spec
                .health_check_node_port
                .filter(|_| external_local && kind == "LoadBalancer")
                .and_then(port_number),
            balancing,
            cluster_ips,
            ports,
        })
    }

    /// The dataplane form of Service `namespace/name`, given the slices
    /// that belong to it.
    pub fn desired(&self, namespace: &str, name: &str, slices: &[&Slice]) -> dp::Service {
        let families = Families::of(&self.cluster_ips);
        let ports = self
            .ports
            .iter()
            .map(|p| {
                let (backends, local_backends) = backends(p, slices, &families);
                dp::ServicePort {
                    name: p.name.clone(),
                    protocol: p.protocol,
                    port: p.port,
                    node_port: p.node_port,
                    backends,
                    local_backends,
                }
            })
            .collect();
        dp::Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            cluster_ips: self.cluster_ips.clone(),
            external_ips: self.external_ips.clone(),
            load_balancer_ips: self.load_balancer_ips.clone(),
            load_balancer_source_ranges: self.load_balancer_source_ranges.clone(),
            external_traffic: self.external_traffic,
            internal_traffic: self.internal_traffic,
            affinity_timeout_seconds: self.affinity_timeout_seconds,
            health_check_node_port: self.health_check_node_port,
            balancing: self.balancing,
            ports,
        }
    }
}

/// A port's backends and local backends, sorted (see the module
/// documentation for the rules).
fn backends(
    port: &FrontendPort,
    slices: &[&Slice],
    families: &Families,
) -> (Vec<dp::Backend>, Vec<dp::Backend>) {
    // (address, port) → (ready, serving and terminating, local), its
    // copies merged.
    let mut all: BTreeMap<(IpAddr, u16), (bool, bool, bool)> = BTreeMap::new();
    for s in slices {
        let Some(target) = s.ports.get(&(port.name.clone(), port.protocol)) else {
            continue;
        };
        for e in s.endpoints.iter().filter(|e| families.has(&e.ip)) {
            let m = all.entry((e.ip, *target)).or_default();
            m.0 |= e.ready;
            m.1 |= e.serving_terminating();
            m.2 |= e.local;
        }
    }
    let pick = |only_local: bool| -> Vec<dp::Backend> {
        let candidates = || all.iter().filter(|(_, e)| !only_local || e.2);
        let ready = candidates().any(|(_, e)| e.0);
        candidates()
            .filter(|(_, e)| if ready { e.0 } else { e.1 })
            .map(|((ip, port), e)| dp::Backend {
                ip: *ip,
                port: *port,
                local: e.2,
                ready: e.0,
            })
            .collect()
    };
    (pick(false), pick(true))
}

#[cfg(test)]
mod tests;
