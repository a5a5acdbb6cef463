//! Conversion of Kubernetes objects into their v3 form, with Calico's
//! semantics:
//!
//! - a `networking.k8s.io/v1` NetworkPolicy becomes a v3 NetworkPolicy named
//!   `knp.default.NAME` in the `default` tier with order 1000. Its pod
//!   selector and every peer pod selector gain
//!   `projectcalico.org/orchestrator == "k8s"`; a peer's namespace selector
//!   becomes the rule's `namespaceSelector` (`{}` is `all()`; absent means
//!   the policy's own namespace); a pod and a namespace selector in one peer
//!   are ANDed, separate peers are ORed (one rule per peer); `ipBlock`
//!   becomes `nets` plus `notNets` for `except`; ports are grouped into one
//!   rule per protocol (TCP when unset), `endPort` makes a range, a port
//!   entry without a port allows the whole protocol. An absent or empty
//!   `from`/`to` matches every peer, and `policyTypes` defaults to
//!   `Ingress`, plus `Egress` when egress rules are present.
//! - a Namespace becomes the profile `kns.NAME` that allows everything and
//!   applies its labels to its pods with the prefix `pcns.` (plus
//!   `pcns.projectcalico.org/name`), which is how namespace selectors match.
//! - a Pod becomes its WorkloadEndpoint ([`pod`]), a ServiceAccount the
//!   profile `ksa.NAMESPACE.NAME` ([`service_account`]), a Node a v3 Node
//!   and, when enabled, its automatic host endpoint ([`node`]).
//! - the operator's `Installation` `default` becomes the FelixConfiguration
//!   settings Calico's operator would set from it ([`installation`]).

pub mod installation;
pub mod node;
pub mod pod;
pub mod service_account;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy as K8sNetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::resource::Resource;
use crate::selector::Selector;
use crate::v3::{
    Action, Cidr, EntityRule, NetworkPolicySpec, Object, PolicyType, Port, ProfileSpec, Protocol,
    Rule,
};

/// Prefix of the v3 names of converted Kubernetes NetworkPolicies.
pub const K8S_POLICY_PREFIX: &str = "knp.default.";
/// Prefix of the profiles that stand for namespaces.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Prefix namespace labels get when applied to their pods.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// The label carrying an endpoint's orchestrator.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The label carrying a namespace's name, on its profile's labels.
pub const NAMESPACE_NAME_LABEL: &str = "projectcalico.org/name";
/// The profile carrying a service account's labels: `ksa.NAMESPACE.NAME`.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";
/// Prefix of service-account labels in that profile's `labelsToApply`.
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// The order of converted Kubernetes policies in the default tier.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// Why a Kubernetes object cannot be converted, with the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConvertError {
    pub path: String,
    pub reason: String,
}

fn fail<T>(path: impl Into<String>, reason: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError {
        path: path.into(),
        reason: reason.into(),
    })
}

/// Converts `resource` when it is a Kubernetes kind with a v3 form:
/// NetworkPolicy and Namespace. Other kinds give `None`.
pub fn to_v3(resource: &Resource) -> Option<Result<Resource, ConvertError>> {
    match resource {
        Resource::K8sNetworkPolicy(p) => Some(network_policy(p).map(Resource::NetworkPolicy)),
        Resource::Namespace(ns) => Some(Ok(Resource::Profile(namespace_profile(ns)))),
        _ => None,
    }
}

fn quote(v: &str) -> String {
    format!("\"{v}\"")
}

/// The Calico selector text for a Kubernetes label selector (`""`, meaning
/// `all()`, when it is empty).
pub fn label_selector_text(sel: &LabelSelector, path: &str) -> Result<String, ConvertError> {
    let mut parts = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        let p = format!("{path}.matchLabels.{k}");
        if let Err(e) = names::validate_label_key(k).and(names::validate_label_value(v)) {
            return fail(p, e);
        }
        parts.push(format!("{k} == {}", quote(v)));
    }
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        if let Err(e) = names::validate_label_key(&req.key) {
            return fail(format!("{p}.key"), e);
        }
        let values = req.values.as_deref().unwrap_or_default();
        for (j, v) in values.iter().enumerate() {
            if let Err(e) = names::validate_label_value(v) {
                return fail(format!("{p}.values[{j}]"), e);
            }
        }
        let set = || {
            values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let k = &req.key;
        parts.push(match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return fail(
                    format!("{p}.values"),
                    format!("{} needs at least one value", req.operator),
                );
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return fail(
                    format!("{p}.values"),
                    format!("{} takes no values", req.operator),
                );
            }
            "In" => format!("{k} in {{{}}}", set()),
            "NotIn" => format!("{k} not in {{{}}}", set()),
            "Exists" => format!("has({k})"),
            "DoesNotExist" => format!("!has({k})"),
            other => {
                return fail(
                    format!("{p}.operator"),
                    format!("unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"),
                );
            }
        });
    }
    Ok(parts.join(" && "))
}

fn parse(text: &str, path: &str) -> Result<Selector, ConvertError> {
    Selector::parse(text).map_err(|e| ConvertError {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// A pod selector: Kubernetes pods only, then the label selector.
fn pod_selector(sel: Option<&LabelSelector>, path: &str) -> Result<Selector, ConvertError> {
    let mut text = format!("{ORCHESTRATOR_LABEL} == \"k8s\"");
    if let Some(sel) = sel {
        let extra = label_selector_text(sel, path)?;
        if !extra.is_empty() {
            text = format!("{text} && {extra}");
        }
    }
    parse(&text, path)
}

fn peer_entity(peer: &NetworkPolicyPeer, path: &str) -> Result<EntityRule, ConvertError> {
    let mut e = EntityRule::default();
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return fail(path, "a peer sets either ipBlock or selectors, not both");
        }
        let cidr: Cidr = block
            .cidr
            .parse()
            .or_else(|e| fail(format!("{path}.ipBlock.cidr"), e))?;
        for (i, ex) in block.except.iter().flatten().enumerate() {
            let p = format!("{path}.ipBlock.except[{i}]");
            let ex: Cidr = ex.parse().or_else(|e| fail(&p, e))?;
            if !cidr.net().contains(&ex.net()) || ex.net() == cidr.net() {
                return fail(p, format!("{ex} is not strictly inside {cidr}"));
            }
            e.not_nets.push(ex);
        }
        e.nets.push(cidr);
        return Ok(e);
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        return fail(
            path,
            "a peer must set podSelector, namespaceSelector or ipBlock",
        );
    }
    e.selector = Some(pod_selector(
        peer.pod_selector.as_ref(),
        &format!("{path}.podSelector"),
    )?);
    if let Some(ns) = &peer.namespace_selector {
        let p = format!("{path}.namespaceSelector");
        // `{}` selects every namespace: `all()`, not an empty (unset) selector.
        let text = label_selector_text(ns, &p)?;
        let text = if text.is_empty() {
            "all()".to_string()
        } else {
            text
        };
        e.namespace_selector = Some(parse(&text, &p)?);
    }
    Ok(e)
}

/// Ports grouped by protocol, in order of first appearance; `None` means
/// every port of the protocol.
type PortGroups = Vec<(Protocol, Option<Vec<Port>>)>;

fn port_groups(ports: &[NetworkPolicyPort], path: &str) -> Result<PortGroups, ConvertError> {
    let mut groups: PortGroups = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return fail(
                    format!("{path}.protocol"),
                    format!("unsupported protocol {other:?}; use TCP, UDP or SCTP"),
                );
            }
        };
        let port = match (&p.port, p.end_port) {
            (None, Some(_)) => return fail(format!("{path}.endPort"), "endPort needs port"),
            (None, None) => None,
            (Some(IntOrString::String(name)), end) => {
                if end.is_some() {
                    return fail(
                        format!("{path}.endPort"),
                        "endPort needs a numeric port, not a named one",
                    );
                }
                if let Err(e) = names::validate_port_name(name) {
                    return fail(format!("{path}.port"), format!("{name:?}: {e}"));
                }
                Some(Port::Named(name.clone()))
            }
            (Some(IntOrString::Int(n)), end) => {
                let check = |v: i32, field: &str| {
                    u16::try_from(v).ok().filter(|v| *v >= 1).map_or_else(
                        || {
                            fail(
                                format!("{path}.{field}"),
                                format!("{v} is out of range 1-65535"),
                            )
                        },
                        Ok,
                    )
                };
                let min = check(*n, "port")?;
                let max = match end {
                    Some(e) => check(e, "endPort")?,
                    None => min,
                };
                if max < min {
                    return fail(
                        format!("{path}.endPort"),
                        format!("endPort {max} is below port {min}"),
                    );
                }
                Some(Port::Range { min, max })
            }
        };
        match groups.iter_mut().find(|(p, _)| *p == proto) {
            Some((_, all @ None)) => *all = None,
            Some((_, Some(list))) => match port {
                Some(port) => list.push(port),
                None => groups.retain_mut(|(p, l)| {
                    *p != proto || {
                        *l = None;
                        true
                    }
                }),
            },
            None => groups.push((proto, port.map(|p| vec![p]))),
        }
    }
    Ok(groups)
}

/// One v3 rule per peer and protocol group.
fn rules(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    ingress: bool,
    path: &str,
) -> Result<Vec<Rule>, ConvertError> {
    let peer_field = if ingress { "from" } else { "to" };
    let mut entities = Vec::new();
    for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
        entities.push(peer_entity(peer, &format!("{path}.{peer_field}[{i}]"))?);
    }
    if entities.is_empty() {
        entities.push(EntityRule::default());
    }
    let groups = port_groups(ports.unwrap_or_default(), &format!("{path}.ports"))?;
    let mut out = Vec::new();
    for peer in entities {
        let mut base = Rule::action(Action::Allow);
        if ingress {
            base.source = peer;
        } else {
            base.destination = peer;
        }
        if groups.is_empty() {
            out.push(base);
            continue;
        }
        for (proto, ports) in &groups {
            let mut r = base.clone();
            r.protocol = Some(*proto);
            r.destination.ports = ports.clone().unwrap_or_default();
            out.push(r);
        }
    }
    Ok(out)
}

/// Converts a Kubernetes NetworkPolicy into its v3 form.
pub fn network_policy(np: &K8sNetworkPolicy) -> Result<Object<NetworkPolicySpec>, ConvertError> {
    let name = np.metadata.name.as_deref().unwrap_or_default();
    let spec = np.spec.clone().unwrap_or_default();
    let selector = pod_selector(spec.pod_selector.as_ref(), "spec.podSelector")?;
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        ingress.extend(rules(
            r.from.as_deref(),
            r.ports.as_deref(),
            true,
            &format!("spec.ingress[{i}]"),
        )?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        egress.extend(rules(
            r.to.as_deref(),
            r.ports.as_deref(),
            false,
            &format!("spec.egress[{i}]"),
        )?);
    }
    let types = match &spec.policy_types {
        Some(t) if !t.is_empty() => {
            let mut types = Vec::new();
            for (i, t) in t.iter().enumerate() {
                let ty = match t.as_str() {
                    "Ingress" => PolicyType::Ingress,
                    "Egress" => PolicyType::Egress,
                    other => {
                        return fail(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?}; use Ingress or Egress"),
                        );
                    }
                };
                if types.contains(&ty) {
                    return fail(
                        format!("spec.policyTypes[{i}]"),
                        format!("{t} is listed twice"),
                    );
                }
                types.push(ty);
            }
            types
        }
        _ => {
            let mut t = vec![PolicyType::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push(PolicyType::Egress);
            }
            t
        }
    };
    // Rules of a direction the policy does not apply to are never used.
    if !types.contains(&PolicyType::Ingress) {
        ingress.clear();
    }
    if !types.contains(&PolicyType::Egress) {
        egress.clear();
    }
    let metadata = ObjectMeta {
        name: Some(format!("{K8S_POLICY_PREFIX}{name}")),
        namespace: np.metadata.namespace.clone(),
        labels: np.metadata.labels.clone(),
        annotations: np.metadata.annotations.clone(),
        uid: np.metadata.uid.clone(),
        ..ObjectMeta::default()
    };
    Ok(Object {
        metadata,
        spec: NetworkPolicySpec {
            tier: crate::v3::DEFAULT_TIER.to_string(),
            order: Some(K8S_POLICY_ORDER),
            selector,
            types,
            ingress,
            egress,
            service_account_selector: None,
            performance_hints: Vec::new(),
        },
    })
}

/// The profile standing for a namespace.
pub fn namespace_profile(ns: &Namespace) -> Object<ProfileSpec> {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = ns
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{NAMESPACE_LABEL_PREFIX}{NAMESPACE_NAME_LABEL}"),
        name.to_string(),
    );
    Object::new(
        &format!("{NAMESPACE_PROFILE_PREFIX}{name}"),
        None,
        ProfileSpec {
            ingress: vec![Rule::action(Action::Allow)],
            egress: vec![Rule::action(Action::Allow)],
            labels_to_apply: labels,
        },
    )
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
