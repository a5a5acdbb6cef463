//! The service graph of a set of flow records, with no I/O: workloads as
//! nodes (grouped by namespace; a node's host and outside addresses are
//! nodes of their own), and one edge per (source, destination) with the
//! flows allowed and denied and the policies that decided them.
//!
//! A connection between two pods is reported twice, by the source's node
//! (egress policy) and by the destination's (ingress policy); only one of
//! them decided how it ended. The counts take a denial from whichever side
//! denied (a flow the source denied never reaches the destination), and an
//! allowed flow from the destination's report when the destination is a
//! pod (its ingress policy had the last word), from the source's otherwise
//! (a host or an outside address reports nothing). The policies listed are
//! those of both sides' enforced traces.

use std::collections::{BTreeMap, BTreeSet};

use manul_proto::flows::PolicyHit;
use serde::Serialize;

use crate::flow::{Endpoint, Flow, Hit};

/// A workload, a host or an outside network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GraphNode {
    /// What the flow filters take for it: `NS/WORKLOAD` for a pod's
    /// workload, the workload alone for a host or a network.
    pub id: String,
    /// `pod`, `host` or `net`.
    pub kind: String,
    /// Empty for hosts and networks.
    pub namespace: String,
    pub name: String,
    /// What the graph shows: the workload for a pod (its namespace is
    /// drawn around it), `host NODE` for a node, and a network by its
    /// class (`public network`, `private network`, `link-local`,
    /// `multicast`).
    pub label: String,
}

/// How the graph names an endpoint of `kind` called `name`.
pub fn label(kind: &str, name: &str) -> String {
    match (kind, name) {
        ("pod", name) => name.to_owned(),
        ("host", node) => format!("host {node}"),
        ("net", "pub") => "public network".to_owned(),
        ("net", "pvt") => "private network".to_owned(),
        ("net", class) => class.to_owned(),
        (kind, name) => format!("{kind} {name}"),
    }
}

/// A policy on an edge, with how many of the edge's flows each of its
/// verdicts covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgePolicy {
    /// `NS/NAME` for a namespaced policy, `TIER/NAME` for a global one or a
    /// tier's end, `profile:NAME` for a profile.
    pub name: String,
    pub kind: String,
    pub allowed: u64,
    pub denied: u64,
}

/// Flows from one node of the graph to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    /// Destination ports seen, ascending.
    pub ports: Vec<u32>,
    pub allowed: u64,
    pub denied: u64,
    pub policies: Vec<EdgePolicy>,
}

/// Nodes sorted by id; edges by (source, target).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

fn node(e: Option<&Endpoint>) -> GraphNode {
    let (id, kind, namespace, name) = match e {
        Some(e) if !e.namespace.is_empty() => (
            format!("{}/{}", e.namespace, e.workload),
            e.kind.to_string(),
            e.namespace.to_string(),
            e.workload.to_string(),
        ),
        Some(e) => (
            e.workload.to_string(),
            e.kind.to_string(),
            String::new(),
            e.workload.to_string(),
        ),
        None => (
            "unknown".into(),
            "net".into(),
            String::new(),
            "unknown".into(),
        ),
    };
    GraphNode {
        label: label(&kind, &name),
        id,
        kind,
        namespace,
        name,
    }
}

/// How the flow filters and the table name a policy.
pub fn policy_name(h: &PolicyHit) -> String {
    display(&h.kind, &h.tier, &h.namespace, &h.name)
}

/// [`policy_name`] of a stored hit.
pub fn hit_name(h: &Hit) -> String {
    display(&h.kind, &h.tier, &h.namespace, &h.name)
}

fn display(kind: &str, tier: &str, namespace: &str, name: &str) -> String {
    if kind == "Profile" {
        format!("profile:{name}")
    } else if namespace.is_empty() {
        format!("{tier}/{name}")
    } else {
        format!("{namespace}/{name}")
    }
}

/// Whether this record's allowed flows are the ones the edge counts.
fn counts_allowed(r: &Flow) -> bool {
    let dst_is_pod = r.dst.as_ref().is_some_and(|d| &*d.kind == "pod");
    if dst_is_pod {
        &*r.reporter == "dst"
    } else {
        &*r.reporter == "src"
    }
}

#[derive(Default)]
struct EdgeAcc {
    ports: BTreeSet<u32>,
    allowed: u64,
    denied: u64,
    policies: BTreeMap<(String, String), (u64, u64)>,
}

/// The graph of `records`.
pub fn build<'a>(records: impl IntoIterator<Item = &'a Flow>) -> Graph {
    let mut nodes: BTreeMap<String, GraphNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), EdgeAcc> = BTreeMap::new();
    for r in records {
        let (src, dst) = (node(r.src.as_deref()), node(r.dst.as_deref()));
        let acc = edges.entry((src.id.clone(), dst.id.clone())).or_default();
        nodes.entry(src.id.clone()).or_insert(src);
        nodes.entry(dst.id.clone()).or_insert(dst);
        acc.ports.insert(r.dst_port);
        let (allowed, denied) = if &*r.action == "allow" {
            (
                if counts_allowed(r) {
                    r.flows_started
                } else {
                    0
                },
                0,
            )
        } else {
            (0, r.flows_denied)
        };
        acc.allowed += allowed;
        acc.denied += denied;
        for h in r.enforced.iter() {
            let p = acc
                .policies
                .entry((hit_name(h), h.kind.to_string()))
                .or_default();
            // A pass hands the flow on: the policy did not decide it.
            match &*h.action {
                "allow" => p.0 += r.flows_started,
                "deny" => p.1 += r.flows_denied,
                _ => {}
            }
        }
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((source, target), acc)| GraphEdge {
                source,
                target,
                ports: acc.ports.into_iter().collect(),
                allowed: acc.allowed,
                denied: acc.denied,
                policies: acc
                    .policies
                    .into_iter()
                    .map(|((name, kind), (allowed, denied))| EdgePolicy {
                        name,
                        kind,
                        allowed,
                        denied,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intern::Interner;
    use manul_proto::flows::{FlowEndpoint, FlowRecord};

    /// The graph of `records` as the store holds them.
    fn build(records: &[FlowRecord]) -> Graph {
        let mut i = Interner::new();
        let flows: Vec<Flow> = records
            .iter()
            .map(|r| Flow::from_record(r, &mut i))
            .collect();
        super::build(&flows)
    }

    fn ep(kind: &str, ns: &str, w: &str) -> Option<FlowEndpoint> {
        Some(FlowEndpoint {
            kind: kind.into(),
            namespace: ns.into(),
            workload: w.into(),
            labels: Default::default(),
        })
    }

    fn hit(kind: &str, ns: &str, name: &str, action: &str) -> PolicyHit {
        PolicyHit {
            tier: "default".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            rule_index: None,
            action: action.into(),
        }
    }

    fn rec(reporter: &str, src: &str, dst: &str, action: &str, n: u64) -> FlowRecord {
        FlowRecord {
            reporter: reporter.into(),
            src: ep("pod", "shop", src),
            dst: ep("pod", "shop", dst),
            dst_port: 8080,
            action: action.into(),
            flows_started: if action == "allow" { n } else { 0 },
            flows_denied: if action == "deny" { n } else { 0 },
            enforced: vec![if reporter == "src" && action == "allow" {
                hit("Profile", "", "kns.shop", "allow")
            } else if action == "allow" {
                hit("NetworkPolicy", "shop", "web-to-api", "allow")
            } else {
                hit("EndOfTier", "", "default", "deny")
            }],
            ..FlowRecord::default()
        }
    }

    #[test]
    fn both_reports_of_a_connection_count_once() {
        let records = [
            // web -> api: allowed on both sides, 5 connections.
            rec("src", "web", "api", "allow", 5),
            rec("dst", "web", "api", "allow", 5),
            // other -> api: the source allowed, the destination denied 3.
            rec("src", "other", "api", "allow", 3),
            rec("dst", "other", "api", "deny", 3),
            // other -> db: denied at the source, never seen by db's node.
            rec("src", "other", "db", "deny", 2),
        ];
        let g = build(&records);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["shop/api", "shop/db", "shop/other", "shop/web"]);
        let counts: Vec<(&str, &str, u64, u64)> = g
            .edges
            .iter()
            .map(|e| (e.source.as_str(), e.target.as_str(), e.allowed, e.denied))
            .collect();
        assert_eq!(
            counts,
            [
                ("shop/other", "shop/api", 0, 3),
                ("shop/other", "shop/db", 0, 2),
                ("shop/web", "shop/api", 5, 0),
            ]
        );
        let web = &g.edges[2];
        assert_eq!(
            web.policies,
            [
                EdgePolicy {
                    name: "profile:kns.shop".into(),
                    kind: "Profile".into(),
                    allowed: 5,
                    denied: 0
                },
                EdgePolicy {
                    name: "shop/web-to-api".into(),
                    kind: "NetworkPolicy".into(),
                    allowed: 5,
                    denied: 0
                }
            ]
        );
        assert_eq!(web.ports, [8080]);
        let names: Vec<&str> = g.edges[0]
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["default/default", "profile:kns.shop"]);
    }

    #[test]
    fn hosts_and_networks_are_nodes_and_the_source_counts_towards_them() {
        let mut out = rec("src", "web", "api", "allow", 4);
        out.dst = ep("net", "", "pub");
        let g = build(&[out]);
        assert_eq!(g.nodes[0].id, "pub");
        assert_eq!(g.nodes[0].kind, "net");
        assert_eq!(g.nodes[0].label, "public network");
        assert_eq!((g.edges[0].allowed, g.edges[0].denied), (4, 0));
    }

    #[test]
    fn nodes_are_labelled_by_what_they_are() {
        let mut to_multicast = rec("src", "web", "api", "deny", 2);
        to_multicast.dst = ep("net", "", "multicast");
        let mut from_host = rec("dst", "web", "api", "allow", 1);
        from_host.src = ep("host", "", "node1");
        let mut from_link_local = rec("dst", "web", "db", "allow", 1);
        from_link_local.src = ep("net", "", "link-local");
        let g = build(&[to_multicast, from_host, from_link_local]);
        let labels: Vec<(&str, &str)> = g
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.label.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("link-local", "link-local"),
                ("multicast", "multicast"),
                ("node1", "host node1"),
                ("shop/api", "api"),
                ("shop/db", "db"),
                ("shop/web", "web"),
            ]
        );
        assert_eq!(label("net", "pvt"), "private network");
        assert!(g.edges.iter().all(|e| e.source != e.target), "{g:?}");
    }
}
