//! The reference evaluator ("policy trace").
//!
//! Given the whole cluster state as a list of resources, a source and a
//! destination (each a workload endpoint or an IP address), a protocol and a
//! port, [`ClusterState::trace`] says whether Calico's semantics allow the
//! packet, which tier, policy or profile and which rule decided, and every
//! step on the way. It is deliberately simple and independent of the
//! calculation graph, which is tested against it: it favours obviously
//! correct over fast (every query re-reads the whole state).
//!
//! # Semantics
//!
//! **Endpoints.** Workload endpoints, named `NAMESPACE/NAME` where `NAME` is
//! the WorkloadEndpoint's name or its `spec.pod` (an exact WorkloadEndpoint
//! name wins; a pod with several endpoints is ambiguous). An IP that is one
//! of a workload endpoint's `ipNetworks` *is* that endpoint (with that
//! address); any other IP is an external address, and no policy is enforced
//! for it. **Host endpoints are not enforcement points here**: traffic to or
//! from a host endpoint's IP is evaluated as external on that side (its
//! `expectedIPs` and labels still take part in rule selectors, as in Calico's
//! IP sets). Policies with `doNotTrack` or `preDNAT` apply only to host
//! endpoints and are therefore skipped (listed in [`ClusterState::notes`]).
//!
//! **Effective labels** of a workload endpoint: the `labelsToApply` of its
//! profiles (an earlier profile wins over a later one), overridden by its
//! own labels, overridden by `projectcalico.org/namespace: NS` and
//! `projectcalico.org/orchestrator: ORCH` (`spec.orchestrator`, or `k8s`).
//! A Kubernetes Namespace becomes the profile `kns.NS` through
//! [`manul_model::convert::namespace_profile`] (replacing a v3 Profile of the
//! same name). A namespaced NetworkSet gets `projectcalico.org/namespace` and
//! the labels of profile `kns.NS` (as Calico does), a host endpoint those of
//! its profiles; a GlobalNetworkSet has only its own labels.
//!
//! **Namespace labels** (what `namespaceSelector` sees): the Namespace's
//! labels, or, without a Namespace resource, the `pcns.`-stripped
//! `labelsToApply` of profile `kns.NS`; plus `projectcalico.org/name: NS`.
//! **Service account labels** (what `serviceAccounts.selector` and a
//! policy's `serviceAccountSelector` see): the `pcsa.`-stripped
//! `labelsToApply` of profile `ksa.NS.SA` when present (usually empty),
//! plus `projectcalico.org/name: SA`.
//!
//! **Which policies apply** to an endpoint for a direction: its `types`
//! include the direction; a NetworkPolicy (v3, or Kubernetes converted by
//! [`manul_model::convert::network_policy`]) must be in the endpoint's
//! namespace; a GlobalNetworkPolicy's `namespaceSelector`, when set, must
//! match the endpoint's namespace labels (`all()` means "any namespace",
//! `global()` "no namespace", as in Calico's translation); a
//! `serviceAccountSelector` must match the endpoint's service account labels
//! (`all()` meaning "has a service account"); and the `selector` must match
//! the effective labels.
//!
//! **Order.** Tiers by ascending `order`, unset last, ties by name. The
//! `default` tier always exists; without an order of its own (a Tier
//! resource named `default` with `order` set) it has Calico's order
//! [`DEFAULT_TIER_ORDER`] (1,000,000), so tiers with a larger or unset order
//! come after it. A tier that policies name but no Tier resource defines
//! sorts as unset order with `defaultAction: Deny`. Within a tier, policies
//! by ascending `order` (unset last), ties by name, where the name of a
//! namespaced policy is `NAMESPACE/NAME` (Calico's v1 key) and that of a
//! global one `NAME`.
//!
//! **Per endpoint and direction.** Rules in order: `Allow` accepts, `Deny`
//! drops, `Pass` skips the rest of the tier, `Log` continues. A tier in
//! which at least one policy applies and nothing decided (no `Pass`) ends
//! with its `defaultAction` (`Deny`, or `Pass` to continue). After the
//! tiers, the endpoint's profiles (`spec.profiles`, in order; a missing
//! profile has no rules): `Allow`/`Deny` decide, `Pass` moves to the next
//! profile, `Log` continues. No verdict at all drops. Traffic from A to B is
//! A's egress (when A is an endpoint) then B's ingress (when B is an
//! endpoint); both must allow. Between two external addresses nothing is
//! enforced (allow, with no deciding step).
//!
//! **Rule matches** (all set fields must match): `ipVersion`; `protocol` and
//! `notProtocol` by number; `icmp`/`notICMP` type and code (a packet whose
//! ICMP type, or code when the rule names one, is not given matches
//! neither); `source`/`destination` against the packet's source and
//! destination, whatever the direction:
//!
//! - `nets` (some contains the address), `notNets` (none does);
//! - selectors are evaluated like Calico's IP sets: the **labelled things
//!   at an address** are the workload endpoint that owns it plus every
//!   NetworkSet, GlobalNetworkSet and host endpoint whose nets (expected
//!   IPs) contain it. The positive match is Calico's combined selector:
//!   `selector` and `serviceAccounts` (names against the endpoint's
//!   `serviceAccountName`, selector against the service account labels),
//!   scoped, when any of `selector`, `serviceAccounts`, `notSelector` or
//!   `namespaceSelector` is set, by `namespaceSelector` (the thing's
//!   namespace labels, `all()` = any namespace, `global()` = not
//!   namespaced) or, in a namespaced policy without one, to the policy's
//!   namespace. It matches when some labelled thing at the address
//!   satisfies all of it. `notSelector` (never namespace-scoped, as in
//!   Calico) matches when no labelled thing at the address matches it. So
//!   a pod whose IP lies inside a network set's CIDR is matched by that
//!   set's labels too, exactly as in Calico's dataplane;
//! - `ports`/`notPorts`: numbers and ranges against the packet's port on
//!   that side; a named port matches when a workload or host endpoint at
//!   the address that satisfies the positive selector (or any, without one)
//!   declares that name with the packet's protocol and port. Ports only
//!   match TCP, UDP, SCTP and UDPLite packets, and an unknown port (the
//!   source port, unless [`Packet::src_port`] is given) matches neither
//!   `ports` nor `notPorts`;
//! - `services`: the addresses of the Service's EndpointSlices (label
//!   `kubernetes.io/service-name`) in its namespace (default: the
//!   policy's; none for a global policy or a profile), whether ready or
//!   not; as a destination, the address with one of the ports of the
//!   slice it is in. A Service without slices matches nothing;
//! - `http` matches are layer 7, and Manul runs no application-layer
//!   proxy: a rule with one matches nothing (fail closed), except a `Deny`
//!   rule, whose layer-4 part decides (it denies at least what it names).
//!
//! Profile rules are evaluated as global rules (no namespace scoping).

mod eval;
mod matching;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use state::{
    ClusterState, DEFAULT_TIER_ORDER, LabelledNets, Policy, ServiceBackends, Tier, WorkloadEndpoint,
};

/// One end of a traffic flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A workload endpoint by namespace and name (its WorkloadEndpoint name
    /// or its pod's name).
    Endpoint { namespace: String, name: String },
    /// An address: a workload endpoint's address, or an external one.
    Ip(IpAddr),
}

impl Peer {
    /// A workload endpoint peer.
    pub fn endpoint(namespace: &str, name: &str) -> Peer {
        Peer::Endpoint {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Endpoint { namespace, name } => write!(f, "{namespace}/{name}"),
            Peer::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a peer given as text is not `NAMESPACE/NAME` or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither NAMESPACE/NAME nor an IP address")]
pub struct PeerParseError(pub String);

impl FromStr for Peer {
    type Err = PeerParseError;

    /// `NAMESPACE/NAME` or an IPv4/IPv6 address.
    fn from_str(s: &str) -> Result<Peer, PeerParseError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Peer::Ip(ip));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Peer::endpoint(ns, name))
            }
            _ => Err(PeerParseError(s.to_string())),
        }
    }
}

/// The outcome for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// A policy direction, from the endpoint's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// What decided one direction at one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub direction: Direction,
    /// The endpoint, as `NAMESPACE/NAME` (its WorkloadEndpoint name).
    pub endpoint: String,
    /// The tier, when a policy rule or a tier's default action decided.
    pub tier: Option<String>,
    /// The policy (`NAMESPACE/NAME` or `NAME`), when one of its rules decided.
    pub policy: Option<String>,
    /// The profile, when one of its rules decided.
    pub profile: Option<String>,
    /// The index of the deciding rule in the policy's or profile's rule
    /// list for the direction.
    pub rule_index: Option<usize>,
    /// A sentence saying why.
    pub reason: String,
    /// Every policy that applied, in the order they were evaluated, with
    /// what each did; then the profile that decided, if one did.
    pub passed: Vec<PolicyStep>,
}

/// One policy (or profile) a packet passed on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStep {
    /// Empty for a profile.
    pub tier: String,
    /// The policy's kind (a staged kind in a pending view), or `Profile`.
    pub kind: manul_model::Kind,
    pub namespace: Option<String>,
    /// The name without its namespace.
    pub name: String,
    /// The rule that matched (Allow, Deny or Pass), if one did.
    pub rule_index: Option<usize>,
    /// Its action; `None` when no rule matched (on to the next policy).
    pub action: Option<manul_model::v3::Action>,
}

/// The result of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub verdict: Verdict,
    /// Every step, in order, one line each.
    pub steps: Vec<String>,
    /// The decision of the last direction evaluated: the one that denied,
    /// or, when allowed, the destination's ingress (or the source's egress
    /// when the destination is external). `None` when neither end is a
    /// workload endpoint.
    pub deciding: Option<Decision>,
}

/// A packet to trace. [`ClusterState::trace`] covers the common case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub from: Peer,
    pub to: Peer,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port; unknown when `None` (rules on source ports then match
    /// neither `ports` nor `notPorts`).
    pub src_port: Option<u16>,
    /// Destination port; unknown when `None`.
    pub dst_port: Option<u16>,
    /// ICMP type and optional code.
    pub icmp: Option<(u8, Option<u8>)>,
}

/// Why a trace cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("unknown endpoint {0}: no WorkloadEndpoint or pod of that name in that namespace")]
    UnknownEndpoint(String),
    #[error("endpoint {name} is ambiguous: pod {name} has endpoints {candidates}")]
    AmbiguousEndpoint { name: String, candidates: String },
    #[error("endpoint {endpoint} has no {family} address")]
    NoAddress { endpoint: String, family: String },
    #[error("{from} and {to} have no IP version in common")]
    NoCommonFamily { from: String, to: String },
    #[error("invalid packet: {0}")]
    InvalidPacket(String),
}
