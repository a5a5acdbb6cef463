//! Operations and the values they carry.

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

/// A service port and its backends, for kube-proxy replacement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
    pub target_port: u16,
    pub backends: Vec<IpAddr>,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
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
    /// Felix has the whole cluster state: the driver may now remove what it
    /// found from an earlier run and was not told about again.
    InSync,
}
