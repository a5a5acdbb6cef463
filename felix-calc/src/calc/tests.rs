use manul_dataplane_api as dp;

use super::*;

pub(crate) fn resources(yaml: &str) -> Vec<Resource> {
    manul_model::load("test.yaml", yaml.as_bytes())
        .into_result()
        .unwrap()
        .into_iter()
        .map(|l| l.resource)
        .collect()
}

pub(crate) fn puts(yaml: &str) -> Vec<Update> {
    resources(yaml)
        .into_iter()
        .map(|r| Update {
            key: r.key(),
            value: Some(r),
        })
        .collect()
}

/// A workload endpoint in `ns`, with the namespace's profile and a named
/// port `http` (TCP 8080), as YAML ending in a document separator.
pub(crate) fn wep_in(name: &str, ns: &str, node: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  node: {node}\n  interfaceName: cali-{name}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.{ns}]\n  ports:\n  - name: http\n    protocol: TCP\n    port: 8080\n---\n"
    )
}

fn wep(name: &str, node: &str, ip: &str, labels: &str) -> String {
    wep_in(name, "production", node, ip, labels)
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels:\n    team: shop\n---\n";

/// The frontend-to-api policy with a named destination port.
pub(crate) const POLICY: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: frontend-to-api
  namespace: production
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'frontend'
    destination:
      ports: [http]
---
";

fn kinds(ops: &[dp::Operation]) -> Vec<&'static str> {
    ops.iter()
        .map(|o| match o {
            dp::Operation::IpSetUpdate { .. } => "set+",
            dp::Operation::IpSetDelta { .. } => "set~",
            dp::Operation::IpSetRemove { .. } => "set-",
            dp::Operation::PolicyUpdate { .. } => "policy+",
            dp::Operation::PolicyRemove { .. } => "policy-",
            dp::Operation::ProfileUpdate { .. } => "profile+",
            dp::Operation::ProfileRemove { .. } => "profile-",
            dp::Operation::WorkloadEndpointUpdate(_) => "wep+",
            dp::Operation::WorkloadEndpointRemove { .. } => "wep-",
            dp::Operation::HostEndpointUpdate(_) => "hep+",
            dp::Operation::HostEndpointRemove { .. } => "hep-",
            dp::Operation::ServiceUpdate(_) => "svc+",
            dp::Operation::ServiceRemove { .. } => "svc-",
            dp::Operation::NodeAddresses { .. } => "nodes",
            dp::Operation::InSync => "in-sync",
        })
        .collect()
}

#[test]
fn frontend_to_api_programs_sets_then_policy_then_endpoints() {
    let mut g = CalcGraph::new("node1");
    let state = format!(
        "{NAMESPACE}{}{}{}",
        wep("api", "node1", "10.65.0.2", "app: api"),
        wep("frontend", "node2", "10.65.1.2", "app: frontend"),
        wep("other", "node1", "10.65.0.3", "app: other"),
    );
    let ops = g.apply(puts(&state));
    // Only the profile and the two local endpoints: no policy applies yet.
    assert_eq!(kinds(&ops), ["profile+", "wep+", "wep+"], "{ops:#?}");
    let ops = g.apply(puts(POLICY));
    assert_eq!(kinds(&ops), ["set+", "set+", "policy+", "wep+"], "{ops:#?}");
    let dp::Operation::IpSetUpdate { id, members, .. } = &ops[0] else {
        panic!()
    };
    let sel_set = if id.starts_with("sel:") {
        (id, members)
    } else {
        let dp::Operation::IpSetUpdate { id, members, .. } = &ops[1] else {
            panic!()
        };
        (id, members)
    };
    assert_eq!(
        sel_set.0,
        "sel:(app == \"frontend\" && projectcalico.org/namespace == \"production\")"
    );
    assert_eq!(
        sel_set.1,
        &vec![dp::IpSetMember::Net("10.65.1.2/32".parse().unwrap())]
    );
    let dp::Operation::WorkloadEndpointUpdate(w) = &ops[3] else {
        panic!()
    };
    assert_eq!(w.id.name, "api");
    assert_eq!(w.tiers.len(), 1);
    assert_eq!(w.tiers[0].inbound[0].name, "production/frontend-to-api");
    assert!(w.tiers[0].outbound.is_empty());

    // Applying the same state again changes nothing.
    assert!(g.apply(puts(&state)).is_empty());
    assert!(g.apply(puts(POLICY)).is_empty());

    // A remote endpoint with the label joins the selector's set, and its
    // named port the named-port set: deltas only.
    let ops = g.apply(puts(&wep("other2", "node2", "10.65.1.3", "app: frontend")));
    assert_eq!(kinds(&ops), ["set~", "set~"], "{ops:#?}");

    // Deleting the policy: endpoint first, then policy, then sets.
    let key = resources(POLICY)[0].key();
    let ops = g.apply([Update { key, value: None }]);
    assert_eq!(kinds(&ops), ["wep+", "policy-", "set-", "set-"], "{ops:#?}");
}

#[test]
fn services_join_endpoint_slices() {
    let mut g = CalcGraph::new("node1");
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  clusterIP: 10.96.0.10\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n";
    let ops = g.apply(puts(svc));
    let [dp::Operation::ServiceUpdate(s)] = &ops[..] else {
        panic!("{ops:#?}")
    };
    assert_eq!(
        s.cluster_ips,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(s.ports[0].backends.is_empty());
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n- addresses: [10.65.0.5]\n  conditions: {ready: true}\n- addresses: [10.65.0.6]\n  conditions: {ready: false}\nports:\n- name: http\n  port: 8080\n  protocol: TCP\n";
    let ops = g.apply(puts(slice));
    let [dp::Operation::ServiceUpdate(s)] = &ops[..] else {
        panic!("{ops:#?}")
    };
    assert_eq!(
        s.ports[0].backends,
        vec![dp::Backend {
            ip: "10.65.0.5".parse().unwrap(),
            port: 8080,
            local: false,
            ready: true,
        }],
        "only ready backends, at the slice's port"
    );
    assert!(g.apply(puts(slice)).is_empty());
    let key = resources(svc)[0].key();
    let ops = g.apply([Update { key, value: None }]);
    assert!(
        matches!(&ops[..], [dp::Operation::ServiceRemove { .. }]),
        "{ops:#?}"
    );
}

/// The deltas for set `id` in `ops`: (added, removed).
fn deltas_of(ops: &[dp::Operation], id: &str) -> (Vec<String>, Vec<String>) {
    let mut out = (Vec::new(), Vec::new());
    for o in ops {
        if let dp::Operation::IpSetDelta {
            id: d,
            added,
            removed,
        } = o
            && d == id
        {
            out.0.extend(added.iter().map(|m| format!("{m:?}")));
            out.1.extend(removed.iter().map(|m| format!("{m:?}")));
        }
    }
    out
}

#[test]
fn a_label_change_moves_an_endpoint_between_sets_and_an_address_change_moves_its_members() {
    let mut g = CalcGraph::new("node1");
    let two_sets = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: two-sets
  namespace: production
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    source:
      selector: role == 'a'
  - action: Allow
    source:
      selector: role == 'b'
---
";
    let state = format!(
        "{NAMESPACE}{}{}{two_sets}",
        wep("api", "node1", "10.65.0.2", "app: api"),
        wep("peer", "node2", "10.65.1.2", "role: a"),
    );
    g.apply(puts(&state));
    let set_a = "sel:(role == \"a\" && projectcalico.org/namespace == \"production\")";
    let set_b = "sel:(role == \"b\" && projectcalico.org/namespace == \"production\")";
    let net = |ip: &str| format!("{:?}", dp::IpSetMember::Net(ip.parse().unwrap()));

    // Same address, new label: it leaves a and joins b, nothing else.
    let ops = g.apply(puts(&wep("peer", "node2", "10.65.1.2", "role: b")));
    assert_eq!(kinds(&ops), ["set~", "set~"], "{ops:#?}");
    assert_eq!(deltas_of(&ops, set_a), (vec![], vec![net("10.65.1.2/32")]));
    assert_eq!(deltas_of(&ops, set_b), (vec![net("10.65.1.2/32")], vec![]));

    // Same label, new address: b swaps the member.
    let ops = g.apply(puts(&wep("peer", "node2", "10.65.1.9", "role: b")));
    assert_eq!(kinds(&ops), ["set~"], "{ops:#?}");
    assert_eq!(
        deltas_of(&ops, set_b),
        (vec![net("10.65.1.9/32")], vec![net("10.65.1.2/32")])
    );

    // New label and new address at once, then back: both sets stay exact.
    let ops = g.apply(puts(&wep("peer", "node2", "10.65.1.2", "role: a")));
    assert_eq!(deltas_of(&ops, set_b), (vec![], vec![net("10.65.1.9/32")]));
    assert_eq!(deltas_of(&ops, set_a), (vec![net("10.65.1.2/32")], vec![]));

    // An unchanged endpoint emits nothing.
    assert!(
        g.apply(puts(&wep("peer", "node2", "10.65.1.2", "role: a")))
            .is_empty()
    );
}

#[test]
fn a_services_match_is_a_set_of_the_services_endpoints_that_follows_its_slices() {
    let mut g = CalcGraph::new("node1");
    let policy = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-web, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    source: {services: {name: web}}
  egress:
  - action: Allow
    destination: {services: {name: db, namespace: data}}
---
";
    let yaml = format!(
        "{NAMESPACE}{}{policy}",
        wep("api", "node1", "10.65.0.2", "app: api")
    );
    let ops = g.apply(puts(&yaml));
    // Services that have no slices yet: empty sets, so the rules match
    // nothing (never everything).
    let sets: Vec<(&str, usize)> = ops
        .iter()
        .filter_map(|o| match o {
            dp::Operation::IpSetUpdate { id, members, .. } => Some((id.as_str(), members.len())),
            _ => None,
        })
        .collect();
    assert_eq!(sets, vec![("svc:production/web", 0), ("svcp:data/db", 0)]);
    let slice = |name: &str, ns: &str, svc: &str, ips: &str, ports: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nendpoints: [{ips}]\nports: [{ports}]\n"
        )
    };
    let web = slice(
        "web-1",
        "production",
        "web",
        "{addresses: [10.65.0.7]}, {addresses: [10.65.0.8], conditions: {ready: false}}",
        "{name: http, port: 8080, protocol: TCP}",
    );
    let ops = g.apply(puts(&web));
    let (added, removed) = deltas_of(&ops, "svc:production/web");
    assert_eq!(added, vec!["Net(10.65.0.7/32)", "Net(10.65.0.8/32)"]);
    assert!(removed.is_empty());
    let db = slice(
        "db-1",
        "data",
        "db",
        "{addresses: [10.65.1.3]}",
        "{name: pg, port: 5432, protocol: TCP}, {name: metrics, port: 9187, protocol: TCP}",
    );
    let ops = g.apply(puts(&db));
    let (added, _) = deltas_of(&ops, "svcp:data/db");
    assert_eq!(
        added,
        vec![
            "NamedPort { ip: 10.65.1.3, protocol: 6, port: 5432 }",
            "NamedPort { ip: 10.65.1.3, protocol: 6, port: 9187 }"
        ]
    );
    // A backend leaves: its address leaves the set.
    let ops = g.apply(puts(
        &web.replace(", {addresses: [10.65.0.8], conditions: {ready: false}}", ""),
    ));
    assert_eq!(
        deltas_of(&ops, "svc:production/web"),
        (vec![], vec!["Net(10.65.0.8/32)".to_string()])
    );
    // The slice goes: the set empties.
    let key = resources(&web)[0].key();
    let ops = g.apply([Update { key, value: None }]);
    assert_eq!(
        deltas_of(&ops, "svc:production/web"),
        (vec![], vec!["Net(10.65.0.7/32)".to_string()])
    );
}

#[test]
fn a_service_account_selector_reads_the_accounts_labels() {
    let mut g = CalcGraph::new("node1");
    let yaml = format!(
        "{NAMESPACE}{}{}apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: ksa.production.gold-sa}}
spec:
  labelsToApply: {{pcsa.tier: gold}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: gold-only, namespace: production}}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    source: {{serviceAccounts: {{names: [gold-sa, other-sa], selector: \"tier == 'gold'\"}}}}
",
        wep("api", "node1", "10.65.0.2", "app: api"),
        wep("client", "node2", "10.65.0.3", "app: client").replace(
            "profiles: [kns.production]",
            "profiles: [kns.production, ksa.production.gold-sa]\n  serviceAccountName: gold-sa"
        ),
    );
    let ops = g.apply(puts(&yaml));
    let set = ops
        .iter()
        .find_map(|o| match o {
            dp::Operation::IpSetUpdate { id, members, .. } if id.contains("serviceaccount") => {
                Some((id.clone(), members.clone()))
            }
            _ => None,
        })
        .expect("a set for the service account match");
    assert_eq!(
        set.0,
        "sel:(projectcalico.org/namespace == \"production\" && projectcalico.org/serviceaccount in {\"gold-sa\", \"other-sa\"} && pcsa.tier == \"gold\")"
    );
    assert_eq!(format!("{:?}", set.1), "[Net(10.65.0.3/32)]");
    // The account's labels change: the client leaves the set.
    let ops = g.apply(puts(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: ksa.production.gold-sa}\nspec:\n  labelsToApply: {pcsa.tier: silver}\n",
    ));
    assert_eq!(
        deltas_of(&ops, &set.0),
        (vec![], vec!["Net(10.65.0.3/32)".to_string()])
    );
}

#[test]
fn a_layer7_rule_matches_nothing_but_a_layer7_deny_keeps_its_layer4_part() {
    let mut g = CalcGraph::new("node1");
    let yaml = format!(
        "{NAMESPACE}{}apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: l7, namespace: production}}
spec:
  selector: app == 'api'
  ingress:
  - action: Deny
    protocol: TCP
    http: {{methods: [DELETE]}}
  - action: Allow
    http: {{methods: [GET]}}
",
        wep("api", "node1", "10.65.0.2", "app: api"),
    );
    let ops = g.apply(puts(&yaml));
    let policy = ops
        .iter()
        .find_map(|o| match o {
            dp::Operation::PolicyUpdate { policy, .. } => Some(policy.clone()),
            _ => None,
        })
        .expect("the policy");
    assert!(policy.inbound[0].src.ip_sets.is_empty(), "{policy:#?}");
    assert_eq!(policy.inbound[0].protocol, Some(6));
    assert_eq!(
        policy.inbound[1].src.ip_sets,
        vec!["sel:!(all())".to_string()]
    );
}

#[test]
fn staged_policies_never_reach_the_driver() {
    let mut g = CalcGraph::new("node1");
    let state = format!(
        "{NAMESPACE}{}{}",
        wep("api", "node1", "10.65.0.2", "app: api"),
        wep("frontend", "node2", "10.65.1.2", "app: frontend"),
    );
    g.apply(puts(&state));
    let staged = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-down, namespace: production}
spec:
  selector: app == 'api'
  ingress: [{action: Deny, source: {selector: app == 'frontend'}}]
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: deny-all}
spec: {selector: all(), egress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: default-deny, namespace: production}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: frontend-to-api, namespace: production}
spec: {stagedAction: Delete}
";
    assert!(g.apply(puts(staged)).is_empty());
    // With an enforced policy of the same name as a staged Delete, the
    // enforced one is programmed as ever.
    let ops = g.apply(puts(POLICY));
    assert_eq!(kinds(&ops), ["set+", "set+", "policy+", "wep+"], "{ops:#?}");
    let deletes: Vec<Update> = resources(staged)
        .into_iter()
        .map(|r| Update {
            key: r.key(),
            value: None,
        })
        .collect();
    assert!(g.apply(deletes).is_empty());
}
