//! One service's part of the desired maps, on its own: the port frontends
//! it claims (each with its list and backends), what it leaves out, the
//! address entries' flags and the source ranges it asks for. Which
//! service keeps a frontend two claim is decided when parts are put
//! together ([`super::Desired::add`]), so a part depends on its service
//! (and this node's addresses, for the source ranges) alone and is
//! recomputed only when that service (or they) change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::{Balancing, Service, ServiceKey, ServicePort, TrafficPolicy};

use super::{
    BackendAddr, Frontend, ListKey, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Skipped, SourceRange, Wanted,
    family_backends,
};
use crate::abi::{
    MANUL_SVC_FE_ADDRESS, MANUL_SVC_FE_DROP_EMPTY, MANUL_SVC_FE_EXT_CLUSTER,
    MANUL_SVC_FE_IN_CLUSTER, MANUL_SVC_FE_REJECT_UNKNOWN, MANUL_SVC_FE_SOURCE_RANGES,
};

/// A service's claim on a port frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub frontend: Frontend,
    pub wanted: Wanted,
    /// The list's backends.
    pub backends: Vec<BackendAddr>,
    /// An external frontend of a Service marked for Maglev.
    pub maglev: bool,
}

/// A claim or a part left out, in the order the service names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Claim(Claim),
    Skipped(Skipped),
}

/// One service's part of the desired maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub items: Vec<Item>,
    /// The flags this service asks of each of its addresses' entries.
    pub addresses: BTreeMap<IpAddr, u32>,
    /// Its load-balancer addresses' source ranges (with an address's own
    /// host prefix when it is its own allowed source).
    pub source_ranges: BTreeSet<SourceRange>,
}

impl Part {
    /// The port frontends this part claims.
    pub fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.items.iter().filter_map(|i| match i {
            Item::Claim(c) => Some(c),
            Item::Skipped(_) => None,
        })
    }
}

/// The flags of a port frontend: `external` (a node port, an external or a
/// load-balancer address) under `Cluster` masquerades or uses DSR; a
/// `Local` list without backends here while the port has some elsewhere
/// drops.
fn frontend_flags(port: &ServicePort, policy: TrafficPolicy, external: bool, ipv6: bool) -> u32 {
    match policy {
        TrafficPolicy::Cluster if external => MANUL_SVC_FE_EXT_CLUSTER,
        TrafficPolicy::Cluster => 0,
        TrafficPolicy::Local => {
            let here = family_backends(&port.local_backends, ipv6).is_empty();
            let anywhere = family_backends(&port.backends, ipv6).is_empty();
            let drop = if here && !anywhere {
                MANUL_SVC_FE_DROP_EMPTY
            } else {
                0
            };
            // kube-proxy's short-circuit: pods and the node itself reach
            // every ready backend of an external frontend.
            drop | if external { MANUL_SVC_FE_IN_CLUSTER } else { 0 }
        }
    }
}

/// The part of service `key`: a cluster IP uses the internal traffic
/// policy's list, an external or load-balancer address the external
/// one's, a node port (address 0.0.0.0 for a service with an IPv4
/// cluster IP or none, :: for one with an IPv6 cluster IP) the external
/// one's too; and the service addresses
/// (not 0.0.0.0 or ::: a node port has no address entry). Each
/// frontend's list holds its family's backends (SCTP's too, on any port:
/// the programs patch its CRC32c for a port rewrite).
///
/// `local`: this node's addresses. A load-balancer IP whose service's
/// ranges hold one of them (of its family) is an allowed source of itself
/// (a VIP assigned on the node, connected to from the node), as with
/// kube-proxy: its own host prefix joins its ranges.
pub fn part(key: &ServiceKey, svc: &Service, local: &BTreeSet<IpAddr>) -> Part {
    let mut p = Part::default();
    // (address, policy, external)
    let mut frontends: Vec<(IpAddr, TrafficPolicy, bool)> = svc
        .cluster_ips
        .iter()
        .map(|ip| (*ip, svc.internal_traffic, false))
        .chain(
            svc.external_ips
                .iter()
                .map(|ip| (*ip, svc.external_traffic, true)),
        )
        .collect();
    for ip in &svc.load_balancer_ips {
        frontends.push((*ip, svc.external_traffic, true));
        if svc.load_balancer_source_ranges.is_empty() {
            continue;
        }
        *p.addresses.entry(*ip).or_insert(MANUL_SVC_FE_ADDRESS) |= MANUL_SVC_FE_SOURCE_RANGES;
        // A range of the other family cannot match a client of this
        // address's.
        for range in &svc.load_balancer_source_ranges {
            if range.addr().is_ipv6() == ip.is_ipv6() {
                p.source_ranges.insert((*ip, range.trunc()));
            }
        }
    }
    for ip in svc.self_sourced_load_balancer_ips(local) {
        p.source_ranges.insert((ip, ipnet::IpNet::from(ip)));
    }
    // Node ports are open in the families of the cluster IPs (IPv4 for a
    // service without any), as on nftables.
    let ipv6_node_port = svc.cluster_ips.iter().any(IpAddr::is_ipv6);
    let ipv4_node_port = svc.cluster_ips.is_empty() || svc.cluster_ips.iter().any(IpAddr::is_ipv4);
    for port in &svc.ports {
        if ![PROTO_TCP, PROTO_UDP, PROTO_SCTP].contains(&port.protocol) {
            p.items.push(Item::Skipped(Skipped::Protocol {
                service: key.clone(),
                proto: port.protocol,
            }));
            continue;
        }
        // A node port: address 0.0.0.0 (::) in the map, which the
        // program looks up only for packets to the node's own addresses
        // arriving at a host interface.
        let unspecified = [
            ipv4_node_port.then_some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ipv6_node_port.then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ];
        let node_port = port.node_port.into_iter().flat_map(|p| {
            unspecified
                .into_iter()
                .flatten()
                .map(move |ip| (ip, svc.external_traffic, true, p))
        });
        let targets = frontends
            .iter()
            .map(|(ip, policy, external)| (*ip, *policy, *external, port.port))
            .chain(node_port);
        for (addr, policy, external, number) in targets {
            let ipv6 = addr.is_ipv6();
            let cluster_ip = svc.cluster_ips.contains(&addr);
            if !addr.is_unspecified() {
                let flags = p.addresses.entry(addr).or_insert(MANUL_SVC_FE_ADDRESS);
                if cluster_ip {
                    *flags |= MANUL_SVC_FE_REJECT_UNKNOWN;
                }
            }
            let frontend = Frontend {
                addr,
                port: number,
                proto: port.protocol,
                in_cluster: false,
            };
            let backends = family_backends(port.backends_for(policy), ipv6);
            let list = ListKey {
                service: key.clone(),
                port_name: port.name.clone(),
                proto: port.protocol,
                port: port.port,
                local: policy == TrafficPolicy::Local,
                ipv6,
            };
            let affinity_s = svc.affinity_timeout_seconds.unwrap_or(0);
            let maglev = external && svc.balancing == Balancing::Maglev;
            p.items.push(Item::Claim(Claim {
                frontend,
                wanted: Wanted {
                    list: list.clone(),
                    affinity_s,
                    flags: frontend_flags(port, policy, external, ipv6),
                },
                backends,
                maglev,
            }));
            // Its in-cluster twin, right after it: the `Cluster` list
            // (the cluster IP's under `internalTrafficPolicy: Cluster`),
            // neither masqueraded nor sent with DSR (a pod keeps its
            // address, the node's is its own).
            if external && policy == TrafficPolicy::Local {
                p.items.push(Item::Claim(Claim {
                    frontend: Frontend {
                        in_cluster: true,
                        ..frontend
                    },
                    wanted: Wanted {
                        list: ListKey {
                            local: false,
                            ..list
                        },
                        affinity_s,
                        flags: frontend_flags(port, TrafficPolicy::Cluster, false, ipv6),
                    },
                    backends: family_backends(port.backends_for(TrafficPolicy::Cluster), ipv6),
                    maglev,
                }));
            }
        }
    }
    p
}
