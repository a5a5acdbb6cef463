//! Operations and the values they carry.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP set's identity: stable for a given canonical selector (or named
/// port match), so every spelling of a selector shares one set.
pub type IpSetId = String;

/// What an IP set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpSetKind {
    /// Networks (endpoint addresses as /32 or /128, network sets' CIDRs).
    Net,
    /// (address, protocol, port) triples: a named port on every endpoint a
    /// selector matches.
    NamedPort,
}

/// One member of an IP set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpSetMember {
    Net(IpNet),
    NamedPort { ip: IpAddr, protocol: u8, port: u16 },
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// What a rule matches on one side (source or destination) of a packet.
/// Every non-empty field must match; lists are ORed within themselves,
/// except `ip_sets`, which must all contain the address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Match {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub ports: Vec<PortRange>,
    pub not_ports: Vec<PortRange>,
    /// The address and port must be in one of these named-port sets (ORed
    /// with `ports`: a rule's ports list may mix numbers and names).
    pub named_port_sets: Vec<IpSetId>,
    pub not_named_port_sets: Vec<IpSetId>,
    /// The address must be in every one of these sets (a selector, a
    /// namespace selector, a service-account selector).
    pub ip_sets: Vec<IpSetId>,
    /// The address must be in none of these.
    pub not_ip_sets: Vec<IpSetId>,
}

/// An ICMP type and optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// A resolved rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// Stable id for flow logs and traces: `POLICY/DIRECTION/INDEX`.
    pub id: String,
    pub action: Action,
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<Icmp>,
    pub not_icmp: Option<Icmp>,
    pub src: Match,
    pub dst: Match,
}

/// A policy or profile: rules per direction (from the endpoint's point of
/// view: inbound is traffic to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
}

/// A policy's identity: tier and name (`NAMESPACE/NAME` for namespaced
/// policies, the v3 name for converted Kubernetes ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyId {
    pub tier: String,
    pub name: String,
}

/// The policies of one tier that apply to an endpoint, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TierPolicies {
    pub name: String,
    /// `Deny` or `Pass`: what happens when policies applied but none decided.
    pub default_action: Action,
    pub inbound: Vec<PolicyId>,
    pub outbound: Vec<PolicyId>,
}

/// A workload endpoint's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointId {
    pub namespace: String,
    pub name: String,
}

/// A pod interface on this node, with everything that applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkloadEndpoint {
    pub id: EndpointId,
    pub interface_name: String,
    pub nets: Vec<IpNet>,
    pub mac: Option<String>,
    pub tiers: Vec<TierPolicies>,
    /// Profiles in order (namespace, service account).
    pub profiles: Vec<String>,
}

/// A host interface on this node, with everything that applies to it
/// (Calico's host endpoint; its meaning per tier list is Calico's, as the
/// iptables dataplane renders it). Failsafe ports are allowed before every
/// list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostEndpoint {
    pub id: String,
    /// The interface; `*` for every interface of the node that no other
    /// host endpoint names and that is not a workload's; empty when only
    /// `expected_ips` identify it.
    pub interface_name: String,
    pub expected_ips: Vec<IpAddr>,
    /// Normal policy: traffic to and from the host itself, then the
    /// profiles, then deny.
    pub tiers: Vec<TierPolicies>,
    /// `preDNAT` policy: incoming traffic before destination NAT. No tier
    /// default and no final deny: what it leaves undecided goes on to the
    /// normal (or forward) policy; what it allows skips that.
    pub pre_dnat_tiers: Vec<TierPolicies>,
    /// `doNotTrack` policy: both directions, before connection tracking.
    /// No tier default and no final deny; what it allows is not tracked and
    /// skips the other lists.
    pub untracked_tiers: Vec<TierPolicies>,
    /// `applyOnForward` normal policy: traffic forwarded through the
    /// interface (tier defaults apply; no profiles, no final deny). Empty:
    /// forwarded traffic is not policed by this endpoint.
    pub forward_tiers: Vec<TierPolicies>,
    /// Profiles, for normal policy only.
    pub profiles: Vec<String>,
}

/// Which backends a kind of traffic may use (Kubernetes'
/// `externalTrafficPolicy` and `internalTrafficPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any of the port's `backends`, on any node.
    #[default]
    Cluster,
    /// Only the port's `local_backends`; none: the connection is rejected.
    Local,
}

/// How a new connection picks one of a port's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Balancing {
    /// Uniformly at random.
    #[default]
    Random,
    /// Maglev consistent hashing of the 5-tuple, for traffic from outside
    /// the cluster: every node builds the same lookup table, so a flow
    /// keeps its backend across nodes and when another backend goes away.
    Maglev,
}

/// One backend of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    pub ip: IpAddr,
    /// The port the backend listens on (its EndpointSlice's port of the
    /// service port's name; slices of one Service may differ).
    pub port: u16,
    /// The endpoint runs on this node.
    pub local: bool,
    /// The endpoint is ready (its EndpointSlice condition); false: a
    /// serving terminating endpoint, a backend only because its list has
    /// no ready one (KEP-1669). Drivers translate to either alike; the
    /// health-check node port counts ready local backends only, as
    /// kube-proxy does. Absent in JSON: ready.
    #[serde(default = "ready_default")]
    pub ready: bool,
}

fn ready_default() -> bool {
    true
}

/// A service port and its backends, for kube-proxy replacement. The
/// calculation graph has already chosen the backends (Kubernetes' rules:
/// ready endpoints, or when none is ready the serving terminating ones),
/// so a driver only picks among them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
    /// The port opened on every address of the node (NodePort and
    /// LoadBalancer services).
    pub node_port: Option<u16>,
    /// What traffic under the `Cluster` policy picks from, sorted. Empty:
    /// a connection is rejected at once (TCP RST, ICMP port unreachable).
    pub backends: Vec<Backend>,
    /// What traffic under the `Local` policy picks from: this node's ready
    /// endpoints, or when none is ready its serving terminating ones.
    pub local_backends: Vec<Backend>,
}

/// A Kubernetes Service as a dataplane programs it. Headless Services and
/// Services for another proxy (`service.kubernetes.io/service-proxy-name`)
/// never reach a driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// ClusterIPs, both families.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`: external traffic, like node ports.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress` IPs: external traffic.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`: when not empty, traffic to a
    /// load-balancer IP from any other source is dropped.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// For traffic to node ports, external and load-balancer IPs.
    pub external_traffic: TrafficPolicy,
    /// For traffic to cluster IPs.
    pub internal_traffic: TrafficPolicy,
    /// `sessionAffinity: ClientIP`: a client keeps its backend for this
    /// many seconds after its last connection.
    pub affinity_timeout_seconds: Option<u32>,
    /// With `externalTrafficPolicy: Local` on a LoadBalancer Service: the
    /// node port where Felix answers a load balancer's health probe (200
    /// while the node has local backends, 503 when not).
    pub health_check_node_port: Option<u16>,
    pub balancing: Balancing,
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// A ClusterIP Service with Kubernetes' defaults: no external or
    /// load-balancer addresses, `Cluster` traffic policies, no affinity,
    /// random balancing.
    pub fn cluster_ip(
        namespace: impl Into<String>,
        name: impl Into<String>,
        cluster_ips: Vec<IpAddr>,
        ports: Vec<ServicePort>,
    ) -> Service {
        Service {
            namespace: namespace.into(),
            name: name.into(),
            cluster_ips,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            external_traffic: TrafficPolicy::Cluster,
            internal_traffic: TrafficPolicy::Cluster,
            affinity_timeout_seconds: None,
            health_check_node_port: None,
            balancing: Balancing::Random,
            ports,
        }
    }

    /// The addresses that carry external traffic (not node ports).
    pub fn external_addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.external_ips.iter().chain(&self.load_balancer_ips)
    }

    /// The load-balancer IPs that are allowed sources of themselves, as
    /// kube-proxy has it: with source ranges, when one of this node's
    /// addresses `local` (of the IP's family) lies in one of the ranges.
    /// A VIP-like load balancer's IP is often a local address of the
    /// node, and a connection from the node to it then has it as source.
    pub fn self_sourced_load_balancer_ips<'a>(
        &'a self,
        local: &'a BTreeSet<IpAddr>,
    ) -> impl Iterator<Item = IpAddr> + 'a {
        let node_in_ranges = move |v6: bool| {
            local.iter().filter(|a| a.is_ipv6() == v6).any(|a| {
                self.load_balancer_source_ranges
                    .iter()
                    .any(|r| r.contains(a))
            })
        };
        self.load_balancer_ips
            .iter()
            .copied()
            .filter(move |ip| node_in_ranges(ip.is_ipv6()))
    }
}

impl ServicePort {
    /// The backends traffic under `policy` picks from.
    pub fn backends_for(&self, policy: TrafficPolicy) -> &[Backend] {
        match policy {
            TrafficPolicy::Cluster => &self.backends,
            TrafficPolicy::Local => &self.local_backends,
        }
    }
}

/// One instruction to a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Create or replace a set with exactly these members.
    IpSetUpdate {
        id: IpSetId,
        kind: IpSetKind,
        members: Vec<IpSetMember>,
    },
    /// Change an existing set's members.
    IpSetDelta {
        id: IpSetId,
        added: Vec<IpSetMember>,
        removed: Vec<IpSetMember>,
    },
    IpSetRemove {
        id: IpSetId,
    },
    PolicyUpdate {
        id: PolicyId,
        policy: Policy,
    },
    PolicyRemove {
        id: PolicyId,
    },
    ProfileUpdate {
        id: String,
        profile: Policy,
    },
    ProfileRemove {
        id: String,
    },
    WorkloadEndpointUpdate(WorkloadEndpoint),
    WorkloadEndpointRemove {
        id: EndpointId,
    },
    HostEndpointUpdate(HostEndpoint),
    HostEndpointRemove {
        id: String,
    },
    ServiceUpdate(Service),
    ServiceRemove {
        namespace: String,
        name: String,
    },
    /// The addresses of the cluster's other nodes, replacing those given
    /// before: the only addresses of a node port a direct server return
    /// option or header may name for a driver to believe it (the frontend
    /// it names becomes the source of a backend's replies). Felix sends it
    /// whenever a node joins, leaves or changes its addresses.
    ///
    /// `local`: this node's own addresses (its Node resource's), replacing
    /// those given before. A load-balancer IP whose service's source
    /// ranges hold one of them (same family) is an allowed source of
    /// itself ([`Service::self_sourced_load_balancer_ips`]).
    ///
    /// `pools`: the CIDRs of the cluster's IP pools (every `IPPool`,
    /// disabled ones too: their pods keep their addresses), replacing
    /// those given before. A source in one of them is a pod of the
    /// cluster: reaching an `externalTrafficPolicy: Local` external
    /// frontend of this node it gets every ready backend, as kube-proxy's
    /// `ClusterCIDR` local-traffic detection gives it
    /// ([`Service::external_traffic`]).
    NodeAddresses {
        addresses: Vec<IpAddr>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        local: Vec<IpAddr>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pools: Vec<IpNet>,
    },
    /// Felix has the whole cluster state: the driver may now remove what it
    /// found from an earlier run and was not told about again.
    InSync,
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
