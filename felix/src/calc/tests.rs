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
        vec!["10.65.0.5".parse::<std::net::IpAddr>().unwrap()],
        "only ready backends"
    );
    assert_eq!(s.ports[0].target_port, 8080);
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
