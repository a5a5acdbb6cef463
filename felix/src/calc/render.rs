//! Rendering v3 rules into the dataplane contract's resolved rules: nets
//! and numeric ports stay as they are; selectors (scoped to the policy's
//! namespace, combined with the namespace and service-account matches)
//! become IP sets, named ports become named-port sets.

use manul_dataplane_api as dp;
use manul_model::Selector;
use manul_model::selector::Expr;
use manul_model::v3::{Action, EntityRule, Port, Protocol, Rule};

/// The namespace label every namespaced item carries.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label carrying an endpoint's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// Prefix of namespace labels copied onto namespaced items.
pub const NAMESPACE_PREFIX: &str = "pcns.";

/// What an IP set is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    /// Items whose effective labels match this selector are members.
    pub selector: Selector,
    /// For a named-port set: the protocol number and port name.
    pub named_port: Option<(u8, String)>,
}

impl SetDef {
    pub fn kind(&self) -> dp::IpSetKind {
        if self.named_port.is_some() {
            dp::IpSetKind::NamedPort
        } else {
            dp::IpSetKind::Net
        }
    }

    /// The set's id: stable for equal definitions.
    pub fn id(&self) -> dp::IpSetId {
        match &self.named_port {
            None => format!("sel:{}", self.selector.canonical()),
            Some((proto, name)) => format!("np:{proto}:{name}:{}", self.selector.canonical()),
        }
    }
}

/// A namespace selector rewritten over items' labels: every label gains
/// `prefix`, and `all()` means "in some namespace" (Calico's translation),
/// so it never matches global items such as GlobalNetworkSets.
fn rename(expr: &Expr, prefix: &str) -> Expr {
    let p = |l: &String| format!("{prefix}{l}");
    match expr {
        Expr::All => Expr::Has(NAMESPACE_LABEL.to_string()),
        Expr::Global => Expr::Global,
        Expr::Eq { label, value } => Expr::Eq {
            label: p(label),
            value: value.clone(),
        },
        Expr::Ne { label, value } => Expr::Ne {
            label: p(label),
            value: value.clone(),
        },
        Expr::In { label, values } => Expr::In {
            label: p(label),
            values: values.clone(),
        },
        Expr::NotIn { label, values } => Expr::NotIn {
            label: p(label),
            values: values.clone(),
        },
        Expr::Has(l) => Expr::Has(p(l)),
        Expr::NotHas(l) => Expr::NotHas(p(l)),
        Expr::Contains { label, value } => Expr::Contains {
            label: p(label),
            value: value.clone(),
        },
        Expr::StartsWith { label, value } => Expr::StartsWith {
            label: p(label),
            value: value.clone(),
        },
        Expr::EndsWith { label, value } => Expr::EndsWith {
            label: p(label),
            value: value.clone(),
        },
        Expr::Not(e) => Expr::Not(Box::new(rename(e, prefix))),
        Expr::And(es) => Expr::And(es.iter().map(|e| rename(e, prefix)).collect()),
        Expr::Or(es) => Expr::Or(es.iter().map(|e| rename(e, prefix)).collect()),
    }
}

fn quote(v: &str) -> String {
    if v.contains('"') {
        format!("'{v}'")
    } else {
        format!("\"{v}\"")
    }
}

/// The selector over items' effective labels that a rule side's
/// `selector`, `namespaceSelector` and `serviceAccounts` amount to, for a
/// policy in `namespace` (None: global), following Calico's translation:
/// as soon as the side names peers at all (`scoped` — any of selector,
/// namespaceSelector, serviceAccounts or notSelector is set), a namespaced
/// policy's side is limited to its own namespace unless a
/// namespaceSelector says otherwise. None when the side does not constrain
/// peers by labels.
pub fn scoped_selector(
    selector: Option<&Selector>,
    namespace_selector: Option<&Selector>,
    service_account_names: &[String],
    namespace: Option<&str>,
    scoped: bool,
) -> Option<Selector> {
    if !scoped {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(s) = selector {
        parts.push(s.canonical().to_string());
    }
    match (namespace_selector, namespace) {
        (Some(ns), _) => parts.push(rename(ns.expr(), NAMESPACE_PREFIX).to_string()),
        (None, Some(ns)) => parts.push(format!("{NAMESPACE_LABEL} == {}", quote(ns))),
        (None, None) => {}
    }
    if !service_account_names.is_empty() {
        let names: Vec<String> = service_account_names.iter().map(|n| quote(n)).collect();
        parts.push(format!(
            "{SERVICE_ACCOUNT_LABEL} in {{{}}}",
            names.join(", ")
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let text = parts
        .iter()
        .map(|p| format!("({p})"))
        .collect::<Vec<_>>()
        .join(" && ");
    // Every part is a canonical selector or built from validated names, so
    // this parses; fall back to matching nothing rather than everything.
    Some(Selector::parse(&text).unwrap_or_else(|_| never()))
}

fn never() -> Selector {
    Selector::parse("!all()").unwrap_or_else(|_| Selector::all())
}

fn action(a: Action) -> dp::Action {
    match a {
        Action::Allow => dp::Action::Allow,
        Action::Deny => dp::Action::Deny,
        Action::Log => dp::Action::Log,
        Action::Pass => dp::Action::Pass,
    }
}

fn icmp(i: Option<manul_model::v3::IcmpMatch>) -> Option<dp::Icmp> {
    i.and_then(|i| {
        i.icmp_type.map(|t| dp::Icmp {
            icmp_type: t,
            code: i.code,
        })
    })
}

/// Renders one side of a rule, adding the sets it needs to `sets`.
fn side(
    e: &EntityRule,
    protocol: Option<Protocol>,
    namespace: Option<&str>,
    sets: &mut Vec<SetDef>,
) -> dp::Match {
    let mut m = dp::Match {
        nets: e.nets.iter().map(|c| c.net()).collect(),
        not_nets: e.not_nets.iter().map(|c| c.net()).collect(),
        ..dp::Match::default()
    };
    let names = e
        .service_accounts
        .as_ref()
        .map(|s| s.names.clone())
        .unwrap_or_default();
    // An empty selector string is the same as no selector (Calico).
    let set = |s: &Option<Selector>| s.clone().filter(|s| !s.source().trim().is_empty());
    let (selector, namespace_selector, not_selector) = (
        set(&e.selector),
        set(&e.namespace_selector),
        set(&e.not_selector),
    );
    let names_peers = selector.is_some()
        || namespace_selector.is_some()
        || not_selector.is_some()
        || e.service_accounts.is_some();
    let scoped = scoped_selector(
        selector.as_ref(),
        namespace_selector.as_ref(),
        &names,
        namespace,
        names_peers,
    );
    if let Some(sel) = &scoped {
        let def = SetDef {
            selector: sel.clone(),
            named_port: None,
        };
        m.ip_sets.push(def.id());
        sets.push(def);
    }
    // notSelector is not limited to the namespace (Calico's translation).
    if let Some(not) = &not_selector {
        let def = SetDef {
            selector: not.clone(),
            named_port: None,
        };
        m.not_ip_sets.push(def.id());
        sets.push(def);
    }
    let proto = protocol.map_or(6, Protocol::number);
    let port_selector = scoped.clone().unwrap_or_else(Selector::all);
    for (ports, ranges, named) in [
        (&e.ports, &mut m.ports, &mut m.named_port_sets),
        (&e.not_ports, &mut m.not_ports, &mut m.not_named_port_sets),
    ] {
        for p in ports {
            match p {
                Port::Range { min, max } => ranges.push(dp::PortRange {
                    first: *min,
                    last: *max,
                }),
                Port::Named(name) => {
                    let def = SetDef {
                        selector: port_selector.clone(),
                        named_port: Some((proto, name.clone())),
                    };
                    named.push(def.id());
                    sets.push(def);
                }
            }
        }
    }
    m
}

/// Renders a rule; `id` names it in flow logs and traces.
pub fn rule(r: &Rule, id: String, namespace: Option<&str>, sets: &mut Vec<SetDef>) -> dp::Rule {
    dp::Rule {
        id,
        action: action(r.action),
        ip_version: r.ip_version,
        protocol: r.protocol.map(Protocol::number),
        not_protocol: r.not_protocol.map(Protocol::number),
        icmp: icmp(r.icmp),
        not_icmp: icmp(r.not_icmp),
        src: side(&r.source, r.protocol, namespace, sets),
        dst: side(&r.destination, r.protocol, namespace, sets),
    }
}

/// Renders a policy's or profile's rule lists.
pub fn rules(
    owner: &str,
    ingress: &[Rule],
    egress: &[Rule],
    namespace: Option<&str>,
    sets: &mut Vec<SetDef>,
) -> dp::Policy {
    dp::Policy {
        inbound: ingress
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, format!("{owner}/ingress/{i}"), namespace, sets))
            .collect(),
        outbound: egress
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, format!("{owner}/egress/{i}"), namespace, sets))
            .collect(),
    }
}
