//! The calculation graph's view of cluster state: what each resource
//! contributes, reduced to what policy computation needs.

use std::net::IpAddr;

use ipnet::IpNet;
use manul_dataplane_api as dp;
use manul_model::Selector;
use manul_model::selector::Expr;
use manul_model::v3::{PolicyType, Rule};

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
