//! The calculation graph's view of cluster state: what each resource
//! contributes, reduced to what policy computation needs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use manul_dataplane_api as dp;
use manul_model::selector::Expr;
use manul_model::v3::{PolicyType, Rule};
use manul_model::{Resource, Selector, convert};

use super::labelindex::LabelMap;

/// A policy of any kind, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    pub id: dp::PolicyId,
    /// The namespace of a namespaced policy; None for global ones.
    pub namespace: Option<String>,
    pub order: Option<f64>,
    pub selector: Selector,
    pub namespace_selector: Option<Selector>,
    pub service_account_selector: Option<Selector>,
    pub types: Vec<PolicyType>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub pre_dnat: bool,
    pub do_not_track: bool,
    pub apply_on_forward: bool,
}

/// A workload or host endpoint, anywhere in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInput {
    pub node: String,
    /// Namespace of a workload endpoint; None for a host endpoint.
    pub namespace: Option<String>,
    pub name: String,
    pub interface_name: String,
    pub own_labels: LabelMap,
    pub profiles: Vec<String>,
    pub service_account: Option<String>,
    pub orchestrator: String,
    pub nets: Vec<IpNet>,
    pub mac: Option<String>,
    /// Named ports: (name, protocol number, port).
    pub ports: Vec<(String, u8, u16)>,
    pub expected_ips: Vec<IpAddr>,
}

impl EndpointInput {
    pub fn is_host(&self) -> bool {
        self.namespace.is_none()
    }
}

/// A Node's addresses: its BGP IPv4 and IPv6 addresses and the addresses
/// it lists (`spec.addresses`, with or without a prefix length); none that
/// is unspecified or loopback. What the cluster's other nodes send direct
/// server return from.
pub fn node_addresses(r: &Resource) -> BTreeSet<IpAddr> {
    let Resource::Node(n) = r else {
        return BTreeSet::new();
    };
    let bgp = n.spec.bgp.iter().flat_map(|b| {
        [&b.ipv4_address, &b.ipv6_address]
            .into_iter()
            .flatten()
            .map(|c| c.0.addr())
    });
    let listed = n
        .spec
        .addresses
        .iter()
        .filter_map(|a| a.address.split('/').next()?.trim().parse::<IpAddr>().ok());
    bgp.chain(listed)
        .filter(|a| !a.is_unspecified() && !a.is_loopback())
        .collect()
}

/// A NetworkSet or GlobalNetworkSet.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSetInput {
    pub namespace: Option<String>,
    pub labels: LabelMap,
    pub nets: Vec<IpNet>,
}

/// An item of the label index: what IP sets are made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// A workload (namespace, name) or host (None, name) endpoint.
    Endpoint(Option<String>, String),
    NetSet(Option<String>, String),
}

/// Orders optional orders with "unset" last.
pub fn order_key(order: Option<f64>) -> f64 {
    order.unwrap_or(f64::INFINITY)
}

/// Sorts by (order, name), unset orders last.
pub fn by_order<T>(items: &mut [(Option<f64>, String, T)]) {
    items.sort_by(|a, b| {
        order_key(a.0)
            .total_cmp(&order_key(b.0))
            .then_with(|| a.1.cmp(&b.1))
    });
}

/// The labels namespace selectors are evaluated against, for a namespace.
pub fn namespace_selector_labels(name: &str, labels: Option<&LabelMap>) -> LabelMap {
    let mut out = labels.cloned().unwrap_or_default();
    out.insert(
        manul_model::convert::NAMESPACE_NAME_LABEL.to_string(),
        name.to_string(),
    );
    out
}

/// Whether a policy-level selector over a parent's labels (a service
/// account's) matches, in Calico's translation, where the selector reads
/// `pcsa.`-prefixed labels of the endpoint: `all()` means "has such a
/// parent", `global()` "has none", and without a parent every label is
/// absent (so `a != "x"` and `!has(a)` still match).
pub fn parent_selector_matches(expr: &Expr, parent: Option<&LabelMap>) -> bool {
    match (expr, parent) {
        (Expr::All, p) => p.is_some(),
        (Expr::Global, p) => p.is_none(),
        (Expr::Not(inner), p) => !parent_selector_matches(inner, p),
        (Expr::And(items), p) => items.iter().all(|e| parent_selector_matches(e, p)),
        (Expr::Or(items), p) => items.iter().any(|e| parent_selector_matches(e, p)),
        (leaf, Some(labels)) => leaf.matches(labels),
        (leaf, None) => leaf.matches(&LabelMap::new()),
    }
}

/// The name of the profile carrying account `sa`'s labels in `ns`.
pub(super) fn account_profile(ns: &str, sa: &str) -> String {
    format!("{}{ns}.{sa}", convert::SERVICE_ACCOUNT_PROFILE_PREFIX)
}

/// The normalised policy of a policy resource (Kubernetes ones converted).
pub fn policy_input(r: &Resource) -> Option<PolicyInput> {
    match r {
        Resource::NetworkPolicy(p) => {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            Some(PolicyInput {
                id: dp::PolicyId {
                    tier: p.spec.tier.clone(),
                    name: format!("{ns}/{}", p.name()),
                },
                namespace: Some(ns),
                order: p.spec.order,
                selector: p.spec.selector.clone(),
                namespace_selector: None,
                service_account_selector: p.spec.service_account_selector.clone(),
                types: p.spec.types.clone(),
                ingress: p.spec.ingress.clone(),
                egress: p.spec.egress.clone(),
                pre_dnat: false,
                do_not_track: false,
                apply_on_forward: false,
            })
        }
        Resource::GlobalNetworkPolicy(p) => Some(PolicyInput {
            id: dp::PolicyId {
                tier: p.spec.tier.clone(),
                name: p.name().to_string(),
            },
            namespace: None,
            order: p.spec.order,
            selector: p.spec.selector.clone(),
            namespace_selector: p.spec.namespace_selector.clone(),
            service_account_selector: p.spec.service_account_selector.clone(),
            types: p.spec.types.clone(),
            ingress: p.spec.ingress.clone(),
            egress: p.spec.egress.clone(),
            pre_dnat: p.spec.pre_dnat,
            do_not_track: p.spec.do_not_track,
            apply_on_forward: p.spec.apply_on_forward,
        }),
        Resource::K8sNetworkPolicy(k) => convert::network_policy(k)
            .ok()
            .and_then(|p| policy_input(&Resource::NetworkPolicy(p))),
        _ => None,
    }
}

/// The endpoint a WorkloadEndpoint or HostEndpoint describes.
pub fn endpoint_input(r: Resource) -> Option<EndpointInput> {
    match r {
        Resource::WorkloadEndpoint(w) => {
            let namespace = Some(w.metadata.namespace.unwrap_or_default());
            let s = w.spec;
            Some(EndpointInput {
                node: s.node,
                namespace,
                name: w.metadata.name.unwrap_or_default(),
                interface_name: s.interface_name,
                own_labels: w.metadata.labels.unwrap_or_default(),
                profiles: s.profiles,
                service_account: (!s.service_account_name.is_empty())
                    .then_some(s.service_account_name),
                orchestrator: if s.orchestrator.is_empty() {
                    "k8s".into()
                } else {
                    s.orchestrator
                },
                nets: s.ip_networks.iter().map(|c| c.net()).collect(),
                mac: (!s.mac.is_empty()).then_some(s.mac),
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| {
                        let proto = p.protocol.number();
                        (p.name, proto, p.port)
                    })
                    .collect(),
                expected_ips: Vec::new(),
            })
        }
        Resource::HostEndpoint(h) => {
            let s = h.spec;
            Some(EndpointInput {
                node: s.node,
                namespace: None,
                name: h.metadata.name.unwrap_or_default(),
                interface_name: s.interface_name,
                own_labels: h.metadata.labels.unwrap_or_default(),
                profiles: s.profiles,
                service_account: None,
                orchestrator: String::new(),
                nets: Vec::new(),
                mac: None,
                ports: s
                    .ports
                    .into_iter()
                    .map(|p| {
                        let proto = p.protocol.number();
                        (p.name, proto, p.port)
                    })
                    .collect(),
                expected_ips: s.expected_ips,
            })
        }
        _ => None,
    }
}
