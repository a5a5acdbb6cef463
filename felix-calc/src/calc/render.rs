//! Rendering v3 rules into the dataplane contract's resolved rules: nets
//! and numeric ports stay as they are; selectors (scoped to the policy's
//! namespace, combined with the namespace and service-account matches)
//! become IP sets, named ports become named-port sets, a `services` match
//! becomes a set of the Service's endpoints (with their ports, as a
//! destination). Rules and entity rules are destructured field by field,
//! so a field added to the model does not compile until it is rendered.

use manul_dataplane_api as dp;
use manul_model::Selector;
use manul_model::selector::Expr;
use manul_model::v3::{
    Action, EntityRule, IcmpMatch, Port, Protocol, Rule, ServiceAccountMatch, ServiceMatch,
};

/// Prefix of namespace labels copied onto namespaced items.
pub use manul_model::convert::NAMESPACE_LABEL_PREFIX as NAMESPACE_PREFIX;
/// The namespace label every namespaced item carries.
pub use manul_model::convert::pod::{NAMESPACE_LABEL, SERVICE_ACCOUNT_LABEL};
/// Prefix of service-account labels on endpoints that have one.
pub const SERVICE_ACCOUNT_PREFIX: &str = manul_model::convert::SERVICE_ACCOUNT_LABEL_PREFIX;

/// What an IP set is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetDef {
    /// Items whose effective labels match `selector`; with `named_port`
    /// (protocol number, port name), the (address, protocol, port) of
    /// that named port on each matching endpoint.
    Selected {
        selector: Selector,
        named_port: Option<(u8, String)>,
    },
    /// The addresses of a Kubernetes Service's EndpointSlices; with
    /// `ports`, the (address, protocol, port) of each slice's ports (what
    /// a destination `services` match needs).
    Service {
        namespace: String,
        name: String,
        ports: bool,
    },
}

impl SetDef {
    /// The set of items a selector matches.
    pub fn selected(selector: Selector) -> SetDef {
        SetDef::Selected {
            selector,
            named_port: None,
        }
    }

    pub fn kind(&self) -> dp::IpSetKind {
        match self {
            SetDef::Selected {
                named_port: None, ..
            }
            | SetDef::Service { ports: false, .. } => dp::IpSetKind::Net,
            SetDef::Selected {
                named_port: Some(_),
                ..
            }
            | SetDef::Service { ports: true, .. } => dp::IpSetKind::NamedPort,
        }
    }

    /// The set's id: stable for equal definitions.
    pub fn id(&self) -> dp::IpSetId {
        match self {
            SetDef::Selected {
                selector,
                named_port: None,
            } => format!("sel:{}", selector.canonical()),
            SetDef::Selected {
                selector,
                named_port: Some((proto, name)),
            } => format!("np:{proto}:{name}:{}", selector.canonical()),
            SetDef::Service {
                namespace,
                name,
                ports: false,
            } => format!("svc:{namespace}/{name}"),
            SetDef::Service {
                namespace,
                name,
                ports: true,
            } => format!("svcp:{namespace}/{name}"),
        }
    }
}

/// A selector over a parent's labels (a namespace's, a service
/// account's) rewritten over items' labels: every label gains `prefix`,
/// and `all()` becomes `all` (for namespaces, "in some namespace", so it
/// never matches global items such as GlobalNetworkSets; for service
/// accounts, `all()` itself, as in Calico's translation).
fn rename(expr: &Expr, prefix: &str, all: &Expr) -> Expr {
    let p = |l: &String| format!("{prefix}{l}");
    match expr {
        Expr::All => all.clone(),
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
        Expr::Not(e) => Expr::Not(Box::new(rename(e, prefix, all))),
        Expr::And(es) => Expr::And(es.iter().map(|e| rename(e, prefix, all)).collect()),
        Expr::Or(es) => Expr::Or(es.iter().map(|e| rename(e, prefix, all)).collect()),
    }
}

/// A `serviceAccounts` match: names and a selector over the account's
/// labels, both required when both are given.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountMatch<'a> {
    pub names: &'a [String],
    pub selector: Option<&'a Selector>,
}

impl AccountMatch<'_> {
    /// Whether it constrains peers at all (Calico ignores `{}`).
    pub fn is_set(&self) -> bool {
        !self.names.is_empty() || self.selector.is_some()
    }
}

/// The selector over items' effective labels that a rule side's
/// `selector`, `namespaceSelector` and `serviceAccounts` amount to, for a
/// policy in `namespace` (None: global), following Calico's translation:
/// as soon as the side names peers at all (`scoped` — any of selector,
/// namespaceSelector, serviceAccounts or notSelector is set), a namespaced
/// policy's side is limited to its own namespace unless a
/// namespaceSelector says otherwise. Service accounts become
/// `projectcalico.org/serviceaccount in {NAMES}` and the account
/// selector over the `pcsa.`-prefixed labels endpoints carry. None when
/// the side does not constrain peers by labels.
pub fn scoped_selector(
    selector: Option<&Selector>,
    namespace_selector: Option<&Selector>,
    accounts: AccountMatch<'_>,
    namespace: Option<&str>,
    scoped: bool,
) -> Option<Selector> {
    if !scoped {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(s) = selector {
        parts.push(s.expr().clone());
    }
    match (namespace_selector, namespace) {
        (Some(ns), _) => parts.push(rename(
            ns.expr(),
            NAMESPACE_PREFIX,
            &Expr::Has(NAMESPACE_LABEL.to_string()),
        )),
        (None, Some(ns)) => parts.push(Expr::Eq {
            label: NAMESPACE_LABEL.to_string(),
            value: ns.to_string(),
        }),
        (None, None) => {}
    }
    if !accounts.names.is_empty() {
        let mut values = accounts.names.to_vec();
        values.sort();
        values.dedup();
        parts.push(Expr::In {
            label: SERVICE_ACCOUNT_LABEL.to_string(),
            values,
        });
    }
    if let Some(sel) = accounts.selector {
        parts.push(rename(sel.expr(), SERVICE_ACCOUNT_PREFIX, &Expr::All));
    }
    if parts.is_empty() {
        return None;
    }
    Some(Selector::from_expr(Expr::and(parts)))
}

fn action(a: Action) -> dp::Action {
    match a {
        Action::Allow => dp::Action::Allow,
        Action::Deny => dp::Action::Deny,
        Action::Log => dp::Action::Log,
        Action::Pass => dp::Action::Pass,
    }
}

/// An ICMP match in the contract's form; Err when it cannot be expressed
/// (a code without a type, which validation refuses).
fn icmp(i: Option<IcmpMatch>) -> Result<Option<dp::Icmp>, ()> {
    match i {
        None => Ok(None),
        Some(IcmpMatch {
            icmp_type: Some(t),
            code,
        }) => Ok(Some(dp::Icmp { icmp_type: t, code })),
        // `icmp: {}` constrains nothing beyond the protocol.
        Some(IcmpMatch {
            icmp_type: None,
            code: None,
        }) => Ok(None),
        Some(IcmpMatch {
            icmp_type: None,
            code: Some(_),
        }) => Err(()),
    }
}

/// A selector field that is set and not empty text (Calico treats `""` as
/// unset).
fn given(s: &Option<Selector>) -> Option<&Selector> {
    s.as_ref().filter(|s| !s.source().trim().is_empty())
}

/// Renders one side of a rule, adding the sets it needs to `sets`. Every
/// field of the entity rule is destructured: a new field does not compile
/// until it is rendered here.
fn side(
    e: &EntityRule,
    is_destination: bool,
    protocol: Option<Protocol>,
    namespace: Option<&str>,
    sets: &mut Vec<SetDef>,
) -> dp::Match {
    let EntityRule {
        nets,
        selector,
        namespace_selector,
        services,
        ports,
        not_nets,
        not_selector,
        not_ports,
        service_accounts,
    } = e;
    let mut m = dp::Match {
        nets: nets.iter().map(|c| c.net()).collect(),
        not_nets: not_nets.iter().map(|c| c.net()).collect(),
        ..dp::Match::default()
    };
    let accounts = match service_accounts {
        Some(ServiceAccountMatch { names, selector }) => AccountMatch {
            names,
            selector: given(selector),
        },
        None => AccountMatch::default(),
    };
    let (selector, namespace_selector, not_selector) = (
        given(selector),
        given(namespace_selector),
        given(not_selector),
    );
    let names_peers = selector.is_some()
        || namespace_selector.is_some()
        || not_selector.is_some()
        || accounts.is_set();
    let scoped = scoped_selector(
        selector,
        namespace_selector,
        accounts,
        namespace,
        names_peers,
    );
    if let Some(sel) = &scoped {
        let def = SetDef::selected(sel.clone());
        m.ip_sets.push(def.id());
        sets.push(def);
    }
    // notSelector is not limited to the namespace (Calico's translation).
    if let Some(not) = not_selector {
        let def = SetDef::selected(not.clone());
        m.not_ip_sets.push(def.id());
        sets.push(def);
    }
    if let Some(ServiceMatch {
        name,
        namespace: svc_namespace,
    }) = services
    {
        // The Service's namespace defaults to the policy's; a global
        // policy or profile must name one, else the rule matches nothing.
        let def = match (svc_namespace.as_str(), namespace) {
            ("", None) => SetDef::selected(Selector::none()),
            ("", Some(ns)) | (ns, _) => SetDef::Service {
                namespace: ns.to_string(),
                name: name.clone(),
                ports: is_destination,
            },
        };
        if is_destination && matches!(def, SetDef::Service { .. }) {
            // Address and port together, from the Service's own ports
            // (validation refuses ports beside a destination Service).
            m.named_port_sets.push(def.id());
        } else {
            m.ip_sets.push(def.id());
        }
        sets.push(def);
    }
    let proto = protocol.map_or(6, Protocol::number);
    let port_selector = scoped.clone().unwrap_or_else(Selector::all);
    for (ports, ranges, named) in [
        (ports, &mut m.ports, &mut m.named_port_sets),
        (not_ports, &mut m.not_ports, &mut m.not_named_port_sets),
    ] {
        for p in ports {
            match p {
                Port::Range { min, max } => ranges.push(dp::PortRange {
                    first: *min,
                    last: *max,
                }),
                Port::Named(name) => {
                    let def = SetDef::Selected {
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

/// Makes `m` match nothing: the address must be in a set no item joins.
fn match_nothing(m: &mut dp::Match, sets: &mut Vec<SetDef>) {
    let def = SetDef::selected(Selector::none());
    m.ip_sets.push(def.id());
    sets.push(def);
}

/// Renders a rule; `id` names it in flow logs and traces. Every field of
/// the rule is destructured: a new field does not compile until it is
/// rendered here. A field the dataplanes cannot express makes the rule
/// match nothing (fail closed):
///
/// - `http` (layer 7) needs an application-layer proxy, which Manul does
///   not run: an Allow, Pass or Log rule with it matches nothing; a Deny
///   rule keeps its layer-4 part, so it denies at least what it names;
/// - an ICMP code without a type (refused by validation).
pub fn rule(r: &Rule, id: String, namespace: Option<&str>, sets: &mut Vec<SetDef>) -> dp::Rule {
    let Rule {
        action: act,
        ip_version,
        protocol,
        icmp: icmp_match,
        not_protocol,
        not_icmp,
        source,
        destination,
        http,
        metadata: _,
    } = r;
    let (icmp_match, not_icmp) = (icmp(*icmp_match), icmp(*not_icmp));
    let mut out = dp::Rule {
        id,
        action: action(*act),
        ip_version: *ip_version,
        protocol: protocol.map(Protocol::number),
        not_protocol: not_protocol.map(Protocol::number),
        icmp: icmp_match.unwrap_or_default(),
        not_icmp: not_icmp.unwrap_or_default(),
        src: side(source, false, *protocol, namespace, sets),
        dst: side(destination, true, *protocol, namespace, sets),
    };
    let layer7 = http.is_some() && *act != Action::Deny;
    if layer7 || icmp_match.is_err() || not_icmp.is_err() {
        match_nothing(&mut out.src, sets);
    }
    out
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
