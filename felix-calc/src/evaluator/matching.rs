//! Whether one rule matches one packet.

use std::net::IpAddr;

use manul_model::selector::{Expr, Selector};
use manul_model::v3::{Action, EndpointPort, EntityRule, Port, Protocol, Rule};

use super::state::{ClusterState, Labels, WorkloadEndpoint};

/// Something labelled at an address: the workload endpoint owning it, or a
/// network set or host endpoint containing it.
#[derive(Debug)]
pub(super) struct Labelled<'a> {
    /// How steps name it, e.g. `endpoint prod/api`.
    pub what: String,
    pub labels: &'a Labels,
    pub namespace: Option<&'a str>,
    /// Namespace labels, when namespaced.
    pub namespace_labels: Option<Labels>,
    pub service_account: Option<&'a str>,
    /// Service account labels, when it has a service account.
    pub service_account_labels: Option<Labels>,
    pub ports: &'a [EndpointPort],
}

/// One end of the packet.
#[derive(Debug)]
pub(super) struct End<'a> {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub endpoint: Option<&'a WorkloadEndpoint>,
    pub labelled: Vec<Labelled<'a>>,
}

impl<'a> End<'a> {
    pub fn new(
        state: &'a ClusterState,
        addr: IpAddr,
        port: Option<u16>,
        endpoint: Option<&'a WorkloadEndpoint>,
    ) -> End<'a> {
        let mut labelled = Vec::new();
        if let Some(ep) = endpoint {
            labelled.push(Labelled {
                what: format!("endpoint {}", ep.id()),
                labels: &ep.labels,
                namespace: Some(&ep.namespace),
                namespace_labels: Some(state.namespace_labels(&ep.namespace)),
                service_account: ep.service_account.as_deref(),
                service_account_labels: ep
                    .service_account
                    .as_deref()
                    .map(|sa| state.service_account_labels(&ep.namespace, sa)),
                ports: &ep.ports,
            });
        }
        for set in state.labelled_nets().iter().filter(|s| s.contains(addr)) {
            labelled.push(Labelled {
                what: format!("{} {}", set.kind, set.name),
                labels: &set.labels,
                namespace: set.namespace.as_deref(),
                namespace_labels: set
                    .namespace
                    .as_deref()
                    .map(|ns| state.namespace_labels(ns)),
                service_account: None,
                service_account_labels: None,
                ports: &set.ports,
            });
        }
        End {
            addr,
            port,
            endpoint,
            labelled,
        }
    }

    /// How steps name this end.
    pub fn describe(&self) -> String {
        match self.endpoint {
            Some(ep) => format!("{} ({})", ep.id(), self.addr),
            None => format!("{} (external)", self.addr),
        }
    }

    fn names(&self) -> String {
        if self.labelled.is_empty() {
            "nothing labelled".to_string()
        } else {
            self.labelled
                .iter()
                .map(|l| l.what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// The packet as rules see it.
#[derive(Debug)]
pub(super) struct Flow<'a> {
    pub protocol: u8,
    pub icmp: Option<(u8, Option<u8>)>,
    pub src: End<'a>,
    pub dst: End<'a>,
}

impl Flow<'_> {
    fn ip_version(&self) -> u8 {
        if self.src.addr.is_ipv4() { 4 } else { 6 }
    }
}

/// A protocol number as rules name it (`TCP`, `ICMPv6`, `47`).
pub(super) fn protocol_name(n: u8) -> String {
    n.to_string()
        .parse::<Protocol>()
        .map_or_else(|_| n.to_string(), |p| p.to_string())
}

/// Whether the protocol carries ports rules can match.
pub(super) fn has_ports(n: u8) -> bool {
    matches!(n, 6 | 17 | 132 | 136)
}

/// Evaluates a selector against the labels of a parent (a namespace or a
/// service account), with Calico's translation: `all()` means "has such a
/// parent", `global()` "has none", and without a parent every label is
/// absent.
fn parent_matches(expr: &Expr, parent: Option<&Labels>) -> bool {
    match expr {
        Expr::All => parent.is_some(),
        Expr::Global => parent.is_none(),
        Expr::Not(inner) => !parent_matches(inner, parent),
        Expr::And(items) => items.iter().all(|e| parent_matches(e, parent)),
        Expr::Or(items) => items.iter().any(|e| parent_matches(e, parent)),
        leaf => match parent {
            Some(labels) => leaf.matches(labels),
            None => leaf.matches(&Labels::new()),
        },
    }
}

/// Whether a policy-level selector on an endpoint's namespace or service
/// account matches.
pub(super) fn parent_selector_matches(sel: &Selector, parent: Option<&Labels>) -> bool {
    parent_matches(sel.expr(), parent)
}

/// A selector field that is set and not empty text (Calico treats `""` as
/// unset).
fn set(sel: &Option<Selector>) -> Option<&Selector> {
    sel.as_ref().filter(|s| !s.source().trim().is_empty())
}

/// Calico's combined positive selector for an entity rule.
struct Positive<'r> {
    namespace_selector: Option<&'r Selector>,
    own_namespace: Option<&'r str>,
    sa_names: &'r [String],
    sa_selector: Option<&'r Selector>,
    selector: Option<&'r Selector>,
}

impl<'r> Positive<'r> {
    /// The positive selector, when the rule has one.
    fn of(e: &'r EntityRule, policy_ns: Option<&'r str>) -> Option<Positive<'r>> {
        let sa = e
            .service_accounts
            .as_ref()
            .filter(|m| !m.names.is_empty() || set(&m.selector).is_some());
        let namespace_selector = set(&e.namespace_selector);
        let selector = set(&e.selector);
        let active = sa.is_some()
            || selector.is_some()
            || namespace_selector.is_some()
            || (policy_ns.is_some() && set(&e.not_selector).is_some());
        active.then(|| Positive {
            namespace_selector,
            own_namespace: if namespace_selector.is_none() {
                policy_ns
            } else {
                None
            },
            sa_names: sa.map_or(&[], |m| m.names.as_slice()),
            sa_selector: sa.and_then(|m| set(&m.selector)),
            selector,
        })
    }

    fn matches(&self, l: &Labelled<'_>) -> bool {
        if let Some(ns_sel) = self.namespace_selector
            && !parent_matches(ns_sel.expr(), l.namespace_labels.as_ref())
        {
            return false;
        }
        if let Some(ns) = self.own_namespace
            && l.namespace != Some(ns)
        {
            return false;
        }
        if !self.sa_names.is_empty()
            && !l
                .service_account
                .is_some_and(|sa| self.sa_names.iter().any(|n| n == sa))
        {
            return false;
        }
        if let Some(sa_sel) = self.sa_selector {
            let empty = Labels::new();
            if !sa_sel.matches(l.service_account_labels.as_ref().unwrap_or(&empty)) {
                return false;
            }
        }
        self.selector.is_none_or(|s| s.matches(l.labels))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.namespace_selector {
            parts.push(format!("namespaceSelector {s}"));
        }
        if let Some(ns) = self.own_namespace {
            parts.push(format!("namespace {ns}"));
        }
        if !self.sa_names.is_empty() {
            parts.push(format!("serviceAccounts {}", self.sa_names.join(", ")));
        }
        if let Some(s) = self.sa_selector {
            parts.push(format!("serviceAccounts selector {s}"));
        }
        if let Some(s) = self.selector {
            parts.push(format!("selector {s}"));
        }
        parts.join(" && ")
    }
}

fn port_list(ports: &[Port]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClusterState {
    /// `None` when `rule` matches the flow, else why not.
    pub(super) fn rule_mismatch(
        &self,
        rule: &Rule,
        policy_ns: Option<&str>,
        flow: &Flow<'_>,
    ) -> Option<String> {
        if rule.http.is_some() && rule.action != Action::Deny {
            return Some(
                "http match: layer 7 needs an application-layer proxy, so the rule matches nothing"
                    .to_string(),
            );
        }
        if let Some(v) = rule.ip_version
            && v != flow.ip_version()
        {
            return Some(format!("ipVersion {v}, packet is IPv{}", flow.ip_version()));
        }
        if let Some(p) = rule.protocol
            && p.number() != flow.protocol
        {
            return Some(format!(
                "protocol {p}, packet is {}",
                protocol_name(flow.protocol)
            ));
        }
        if let Some(p) = rule.not_protocol
            && p.number() == flow.protocol
        {
            return Some(format!("notProtocol {p}"));
        }
        let is_icmp = matches!(flow.protocol, 1 | 58);
        if let Some(m) = &rule.icmp {
            let Some((t, c)) = flow.icmp.filter(|_| is_icmp) else {
                return Some("icmp match, packet has no ICMP type".to_string());
            };
            if m.icmp_type.is_some_and(|mt| mt != t) {
                return Some(format!(
                    "icmp type {}, packet type {t}",
                    m.icmp_type.unwrap_or_default()
                ));
            }
            if let Some(mc) = m.code
                && c != Some(mc)
            {
                return Some(format!("icmp code {mc}, packet code {c:?}"));
            }
        }
        if let Some(m) = &rule.not_icmp {
            let Some((t, c)) = flow.icmp.filter(|_| is_icmp) else {
                return Some("notICMP match, packet has no ICMP type".to_string());
            };
            if m.code.is_some() && c.is_none() {
                return Some("notICMP code, packet has no ICMP code".to_string());
            }
            let type_hit = m.icmp_type.is_none_or(|mt| mt == t);
            let code_hit = m.code.is_none_or(|mc| c == Some(mc));
            if type_hit && code_hit {
                return Some(format!("notICMP matches type {t}"));
            }
        }
        self.entity_mismatch("source", &rule.source, policy_ns, flow, &flow.src, false)
            .or_else(|| {
                self.entity_mismatch(
                    "destination",
                    &rule.destination,
                    policy_ns,
                    flow,
                    &flow.dst,
                    true,
                )
            })
    }

    fn entity_mismatch(
        &self,
        side: &str,
        e: &EntityRule,
        policy_ns: Option<&str>,
        flow: &Flow<'_>,
        end: &End<'_>,
        is_destination: bool,
    ) -> Option<String> {
        let addr = end.addr;
        if !e.nets.is_empty() && !e.nets.iter().any(|n| n.net().contains(&addr)) {
            let nets: Vec<String> = e.nets.iter().map(ToString::to_string).collect();
            return Some(format!("{side} {addr} not in nets {}", nets.join(", ")));
        }
        if let Some(n) = e.not_nets.iter().find(|n| n.net().contains(&addr)) {
            return Some(format!("{side} {addr} in notNets {n}"));
        }
        let positive = Positive::of(e, policy_ns);
        if let Some(pos) = &positive
            && !end.labelled.iter().any(|l| pos.matches(l))
        {
            return Some(format!(
                "{side} ({}) does not match {}",
                end.names(),
                pos.describe()
            ));
        }
        if let Some(not) = set(&e.not_selector)
            && let Some(l) = end.labelled.iter().find(|l| not.matches(l.labels))
        {
            return Some(format!("{side} {} matches notSelector {not}", l.what));
        }
        if let Some(svc) = &e.services {
            let ns = if svc.namespace.is_empty() {
                policy_ns
            } else {
                Some(svc.namespace.as_str())
            };
            let backends = ns.and_then(|ns| self.services.get(&(ns.to_string(), svc.name.clone())));
            let hit = backends.is_some_and(|b| {
                if is_destination {
                    end.port
                        .is_some_and(|p| b.sockets.contains(&(addr, flow.protocol, p)))
                } else {
                    b.addresses.contains(&addr)
                }
            });
            if !hit {
                return Some(format!(
                    "{side} is not a backend of service {}/{}",
                    ns.unwrap_or("?"),
                    svc.name
                ));
            }
        }
        for (field, ports, want) in [("ports", &e.ports, true), ("notPorts", &e.not_ports, false)] {
            if ports.is_empty() {
                continue;
            }
            if !has_ports(flow.protocol) {
                return Some(format!(
                    "{side} {field}, but {} has no ports",
                    protocol_name(flow.protocol)
                ));
            }
            let Some(port) = end.port else {
                return Some(format!("{side} {field}, but the {side} port is unknown"));
            };
            let hit = ports
                .iter()
                .any(|p| self.port_matches(p, port, flow.protocol, end, positive.as_ref()));
            if hit != want {
                return Some(if want {
                    format!("{side} port {port} not in ports {}", port_list(ports))
                } else {
                    format!("{side} port {port} in notPorts {}", port_list(ports))
                });
            }
        }
        None
    }

    fn port_matches(
        &self,
        p: &Port,
        port: u16,
        protocol: u8,
        end: &End<'_>,
        positive: Option<&Positive<'_>>,
    ) -> bool {
        match p {
            Port::Range { min, max } => (*min..=*max).contains(&port),
            Port::Named(name) => end.labelled.iter().any(|l| {
                positive.is_none_or(|pos| pos.matches(l))
                    && l.ports.iter().any(|ep| {
                        ep.name == *name && ep.protocol.number() == protocol && ep.port == port
                    })
            }),
        }
    }
}
