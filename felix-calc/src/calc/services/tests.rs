//! The service rules, table-driven: Service and EndpointSlice YAML in, the
//! emitted dataplane Service (or none) out.

use std::net::IpAddr;

use manul_dataplane_api as dp;

use super::super::tests::{puts, resources};
use super::super::{CalcGraph, Update};

const NODE: &str = "node1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Service `shop/web`: `meta` and `spec` are YAML lines indented by two.
fn service(meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n{meta}spec:\n{spec}---\n"
    )
}

/// A ClusterIP Service `shop/web` at 10.96.0.10 with port `http` TCP 80.
fn cluster_ip(extra_spec: &str) -> String {
    service(
        "",
        &format!(
            "  clusterIP: 10.96.0.10\n  ports:\n  - {{name: http, port: 80, protocol: TCP}}\n{extra_spec}"
        ),
    )
}

/// EndpointSlice `name` of `shop/web`; `ports` and `endpoints` are YAML
/// flow lists' contents.
fn slice(name: &str, family: &str, ports: &str, endpoints: &[String]) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: {family}\nports: [{ports}]\nendpoints: [{}]\n---\n",
        endpoints.join(", ")
    )
}

const HTTP: &str = "{name: http, port: 8080, protocol: TCP}";

/// An endpoint on `node` with its conditions: `r`eady, `s`erving,
/// `t`erminating (a `-` leaves the condition unset).
fn ep(ip: &str, node: &str, conditions: &str) -> String {
    let c: Vec<String> = conditions
        .chars()
        .zip(["ready", "serving", "terminating"])
        .filter(|(c, _)| *c != '-')
        .map(|(c, n)| format!("{n}: {}", c == '1'))
        .collect();
    format!(
        "{{addresses: [{ip}], nodeName: {node}, conditions: {{{}}}}}",
        c.join(", ")
    )
}

fn backend(addr: &str, port: u16, local: bool) -> dp::Backend {
    dp::Backend {
        ip: ip(addr),
        port,
        local,
        ready: true,
    }
}

/// A serving terminating backend: one only because its list has no ready
/// endpoint.
fn terminating(addr: &str, port: u16, local: bool) -> dp::Backend {
    dp::Backend {
        ready: false,
        ..backend(addr, port, local)
    }
}

/// What the graph of node `NODE` emits for `shop/web` given `yaml`.
fn emitted(yaml: &str) -> Option<dp::Service> {
    let mut g = CalcGraph::new(NODE);
    g.apply(puts(yaml));
    emitted_by(&g)
}

fn emitted_by(g: &CalcGraph) -> Option<dp::Service> {
    g.whole_state().into_iter().find_map(|o| match o {
        dp::Operation::ServiceUpdate(s) if s.namespace == "shop" && s.name == "web" => Some(s),
        _ => None,
    })
}

type Check = Box<dyn Fn(&dp::Service)>;

/// (what, input, expected: None = not emitted).
fn cases() -> Vec<(&'static str, String, Option<Check>)> {
    let ready_and_not = slice(
        "web-1",
        "IPv4",
        HTTP,
        &[
            ep("10.65.0.5", "node2", "1--"),
            ep("10.65.0.6", "node2", "0--"),
            ep("10.65.0.7", NODE, "---"),
        ],
    );
    vec![
        (
            "ready endpoints (unset ready = ready), at the slice's port",
            format!("{}{ready_and_not}", cluster_ip("")),
            Some(Box::new(|s| {
                assert_eq!(
                    s.ports[0].backends,
                    [
                        backend("10.65.0.5", 8080, false),
                        backend("10.65.0.7", 8080, true)
                    ]
                );
                assert_eq!(
                    s.ports[0].local_backends,
                    [backend("10.65.0.7", 8080, true)]
                );
            })),
        ),
        (
            "no ready endpoint: the serving terminating ones (unset serving = serving)",
            format!(
                "{}{}",
                cluster_ip(""),
                slice(
                    "web-1",
                    "IPv4",
                    HTTP,
                    &[
                        ep("10.65.0.5", "node2", "011"),
                        ep("10.65.0.6", "node2", "001"),
                        ep("10.65.0.7", "node2", "0-1"),
                        ep("10.65.0.8", "node2", "010"),
                    ]
                )
            ),
            Some(Box::new(|s| {
                assert_eq!(
                    s.ports[0].backends,
                    [
                        terminating("10.65.0.5", 8080, false),
                        terminating("10.65.0.7", 8080, false)
                    ]
                );
                assert!(s.ports[0].local_backends.is_empty());
            })),
        ),
        (
            "one ready endpoint anywhere: no terminating one is used",
            format!(
                "{}{}",
                cluster_ip(""),
                slice(
                    "web-1",
                    "IPv4",
                    HTTP,
                    &[
                        ep("10.65.0.5", "node2", "1--"),
                        ep("10.65.0.6", "node2", "011")
                    ]
                )
            ),
            Some(Box::new(|s| {
                assert_eq!(s.ports[0].backends, [backend("10.65.0.5", 8080, false)]);
            })),
        ),
        (
            "local backends fall back on their own: remote ready, local terminating",
            format!(
                "{}{}",
                cluster_ip(""),
                slice(
                    "web-1",
                    "IPv4",
                    HTTP,
                    &[
                        ep("10.65.1.5", "node2", "1--"),
                        ep("10.65.0.6", NODE, "011")
                    ]
                )
            ),
            Some(Box::new(|s| {
                assert_eq!(s.ports[0].backends, [backend("10.65.1.5", 8080, false)]);
                assert_eq!(
                    s.ports[0].local_backends,
                    [terminating("10.65.0.6", 8080, true)],
                    "ready: false, so the health check does not count it"
                );
            })),
        ),
        (
            "externalTrafficPolicy Local with no local endpoint: empty local backends",
            service(
                "",
                "  type: NodePort\n  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\n",
            ) + &slice("web-1", "IPv4", HTTP, &[ep("10.65.1.5", "node2", "1--")]),
            Some(Box::new(|s| {
                assert_eq!(s.external_traffic, dp::TrafficPolicy::Local);
                assert_eq!(s.ports[0].node_port, Some(30080));
                assert_eq!(s.ports[0].backends, [backend("10.65.1.5", 8080, false)]);
                assert!(s.ports[0].local_backends.is_empty());
                assert_eq!(s.health_check_node_port, None, "only LoadBalancer has one");
            })),
        ),
        (
            "headless (clusterIP None): not emitted",
            service(
                "",
                "  clusterIP: None\n  ports:\n  - {name: http, port: 80}\n",
            ) + &ready_and_not,
            None,
        ),
        (
            "no cluster IP at all: not emitted",
            service("", "  ports:\n  - {name: http, port: 80}\n"),
            None,
        ),
        (
            "ExternalName: not emitted",
            service(
                "",
                "  type: ExternalName\n  externalName: example.com\n  clusterIP: 10.96.0.10\n",
            ),
            None,
        ),
        (
            "another proxy's (service-proxy-name label, even empty): not emitted",
            service(
                "  labels: {service.kubernetes.io/service-proxy-name: ''}\n",
                "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80}\n",
            ) + &ready_and_not,
            None,
        ),
        (
            "dual-stack: both cluster IPs, each family's slices",
            service(
                "",
                "  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, 'fd00:96::10']\n  ports:\n  - {name: http, port: 80}\n",
            ) + &slice("web-4", "IPv4", HTTP, &[ep("10.65.0.5", "node2", "1--")])
                + &slice("web-6", "IPv6", HTTP, &[ep("'fd00:65::5'", NODE, "1--")]),
            Some(Box::new(|s| {
                assert_eq!(s.cluster_ips, [ip("10.96.0.10"), ip("fd00:96::10")]);
                assert_eq!(
                    s.ports[0].backends,
                    [
                        backend("10.65.0.5", 8080, false),
                        backend("fd00:65::5", 8080, true)
                    ]
                );
            })),
        ),
        (
            "single-stack: another family's slices, external IPs and address types are ignored",
            cluster_ip("  externalIPs: [192.0.2.1, '2001:db8::1']\n")
                + &slice("web-6", "IPv6", HTTP, &[ep("'fd00:65::5'", "node2", "1--")])
                + &slice("web-x", "IPv4", HTTP, &[ep("'fd00:65::6'", "node2", "1--")])
                + &slice(
                    "web-f",
                    "FQDN",
                    HTTP,
                    &[ep("db.example.com", "node2", "1--")],
                ),
            Some(Box::new(|s| {
                assert_eq!(s.external_ips, [ip("192.0.2.1")]);
                assert!(s.ports[0].backends.is_empty());
            })),
        ),
        (
            "slices of one Service with different target ports",
            cluster_ip("")
                + &slice("web-1", "IPv4", HTTP, &[ep("10.65.0.5", "node2", "1--")])
                + &slice(
                    "web-2",
                    "IPv4",
                    "{name: http, port: 9090, protocol: TCP}",
                    &[ep("10.65.0.6", "node2", "1--")],
                ),
            Some(Box::new(|s| {
                assert_eq!(
                    s.ports[0].backends,
                    [
                        backend("10.65.0.5", 8080, false),
                        backend("10.65.0.6", 9090, false)
                    ]
                );
            })),
        ),
        (
            "ports match by name and protocol; an unnamed or portless slice port matches nothing",
            service(
                "",
                "  clusterIP: 10.96.0.10\n  ports:\n  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53, protocol: TCP}\n  - {name: '', port: 80, protocol: TCP}\n",
            ) + &slice(
                "web-1",
                "IPv4",
                "{name: dns, port: 5353, protocol: UDP}, {name: dns-tcp, port: 5353, protocol: UDP}, {port: 8080, protocol: TCP}, {name: x, protocol: TCP}",
                &[ep("10.65.0.5", "node2", "1--")],
            ),
            Some(Box::new(|s| {
                let by_name = |n: &str| s.ports.iter().find(|p| p.name == n).unwrap();
                assert_eq!(by_name("dns").protocol, 17);
                assert_eq!(by_name("dns").backends, [backend("10.65.0.5", 5353, false)]);
                assert!(by_name("dns-tcp").backends.is_empty(), "UDP in the slice");
                assert!(by_name("").backends.is_empty(), "no name in the slice");
            })),
        ),
        (
            "an address in two slices is one backend, local if either copy is",
            cluster_ip("")
                + &slice("web-1", "IPv4", HTTP, &[ep("10.65.0.5", "node2", "1--")])
                + &slice("web-2", "IPv4", HTTP, &[ep("10.65.0.5", NODE, "0--")]),
            Some(Box::new(|s| {
                assert_eq!(s.ports[0].backends, [backend("10.65.0.5", 8080, true)]);
                assert_eq!(
                    s.ports[0].local_backends,
                    [backend("10.65.0.5", 8080, true)]
                );
            })),
        ),
        (
            "a ClusterIP Service: no node port, and externalTrafficPolicy means nothing",
            cluster_ip("  externalTrafficPolicy: Local\n  healthCheckNodePort: 31000\n")
                .replace("protocol: TCP}", "protocol: TCP, nodePort: 30080}"),
            Some(Box::new(|s| {
                assert_eq!(s.ports[0].node_port, None);
                assert_eq!(s.external_traffic, dp::TrafficPolicy::Cluster);
                assert_eq!(s.health_check_node_port, None);
            })),
        ),
        (
            "a LoadBalancer: node ports, ingress IPs (not ipMode Proxy), source ranges, health check",
            service(
                "",
                "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 31000\n  loadBalancerSourceRanges: [' 203.0.113.0/24 ', 198.51.100.7/32, 10.1.2.3/8]\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\nstatus:\n  loadBalancer:\n    ingress:\n    - {ip: 192.0.2.10}\n    - {ip: 192.0.2.11, ipMode: VIP}\n    - {ip: 192.0.2.12, ipMode: Proxy}\n    - {hostname: lb.example.com}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.ports[0].node_port, Some(30080));
                assert_eq!(s.load_balancer_ips, [ip("192.0.2.10"), ip("192.0.2.11")]);
                let nets: Vec<String> = s
                    .load_balancer_source_ranges
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                assert_eq!(nets, ["10.0.0.0/8", "198.51.100.7/32", "203.0.113.0/24"]);
                assert_eq!(s.external_traffic, dp::TrafficPolicy::Local);
                assert_eq!(s.health_check_node_port, Some(31000));
                assert_eq!(s.internal_traffic, dp::TrafficPolicy::Cluster);
            })),
        ),
        (
            "a LoadBalancer with externalTrafficPolicy Cluster: no health check",
            service(
                "",
                "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  healthCheckNodePort: 31000\n  ports:\n  - {name: http, port: 80, nodePort: 30080}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.external_traffic, dp::TrafficPolicy::Cluster);
                assert_eq!(s.health_check_node_port, None);
            })),
        ),
        (
            "malformed source ranges only: the load-balancer IPs accept no source",
            cluster_ip("  type: LoadBalancer\n  loadBalancerSourceRanges: [not-a-cidr]\n"),
            Some(Box::new(|s| {
                let nets: Vec<String> = s
                    .load_balancer_source_ranges
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                assert_eq!(nets, ["0.0.0.0/32", "::/128"]);
            })),
        ),
        (
            "a malformed source range beside valid ones: the valid ones alone",
            cluster_ip(
                "  type: LoadBalancer\n  loadBalancerSourceRanges: [203.0.113.0/24, 300.1.1.1/8]\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(
                    s.load_balancer_source_ranges,
                    ["203.0.113.0/24".parse::<ipnet::IpNet>().unwrap()]
                );
            })),
        ),
        (
            "internalTrafficPolicy Local",
            cluster_ip("  internalTrafficPolicy: Local\n"),
            Some(Box::new(|s| {
                assert_eq!(s.internal_traffic, dp::TrafficPolicy::Local);
                assert_eq!(s.external_traffic, dp::TrafficPolicy::Cluster);
            })),
        ),
        (
            "session affinity ClientIP: the default timeout",
            cluster_ip("  sessionAffinity: ClientIP\n"),
            Some(Box::new(|s| {
                assert_eq!(s.affinity_timeout_seconds, Some(10_800));
            })),
        ),
        (
            "session affinity ClientIP with its timeout",
            cluster_ip(
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.affinity_timeout_seconds, Some(60));
            })),
        ),
        (
            "session affinity None: no timeout, even with a config",
            cluster_ip(
                "  sessionAffinity: None\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.affinity_timeout_seconds, None);
                assert_eq!(s.balancing, dp::Balancing::Random);
            })),
        ),
        (
            "another strategy: random",
            service(
                "  annotations: {lb.projectcalico.org/external-traffic-strategy: random}\n",
                "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.balancing, dp::Balancing::Random);
            })),
        ),
        (
            "Maglev by Calico's annotation",
            service(
                "  annotations: {lb.projectcalico.org/external-traffic-strategy: maglev}\n",
                "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80}\n",
            ),
            Some(Box::new(|s| {
                assert_eq!(s.balancing, dp::Balancing::Maglev);
            })),
        ),
    ]
}

#[test]
fn every_service_rule() {
    for (what, yaml, check) in cases() {
        let got = emitted(&yaml);
        match (check, got) {
            (None, None) => {}
            (None, Some(s)) => panic!("{what}: emitted {s:#?}"),
            (Some(_), None) => panic!("{what}: not emitted"),
            (Some(check), Some(s)) => {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&s)));
                if run.is_err() {
                    panic!("{what}: {s:#?}");
                }
            }
        }
    }
}

fn kinds(ops: &[dp::Operation]) -> Vec<String> {
    ops.iter()
        .map(|o| match o {
            dp::Operation::ServiceUpdate(s) => format!("svc+ {}", s.name),
            dp::Operation::ServiceRemove { name, .. } => format!("svc- {name}"),
            o => format!("{o:?}"),
        })
        .collect()
}

#[test]
fn changes_are_incremental_and_a_change_of_nothing_emits_nothing() {
    let mut g = CalcGraph::new(NODE);
    let other = cluster_ip("").replace("name: web\n", "name: api\n");
    let web_slice = |eps: &[String]| slice("web-1", "IPv4", HTTP, eps);
    let state = cluster_ip("") + &other + &web_slice(&[ep("10.65.0.5", "node2", "1--")]);
    assert_eq!(kinds(&g.apply(puts(&state))), ["svc+ api", "svc+ web"]);

    // A slice change re-emits its Service only.
    let ops = g.apply(puts(&web_slice(&[
        ep("10.65.0.5", "node2", "1--"),
        ep("10.65.0.6", NODE, "1--"),
    ])));
    assert_eq!(kinds(&ops), ["svc+ web"]);

    // The same slice again, the same Service again, a change only to what
    // the graph does not read (a label, a not-ready endpoint's second
    // address): nothing.
    assert!(
        g.apply(puts(&web_slice(&[
            ep("10.65.0.5", "node2", "1--"),
            ep("10.65.0.6", NODE, "1--"),
        ])))
        .is_empty()
    );
    assert!(g.apply(puts(&cluster_ip(""))).is_empty());
    let relabelled = service(
        "  labels: {team: shop}\n",
        "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n",
    );
    assert!(g.apply(puts(&relabelled)).is_empty());

    // A slice moved to another Service re-emits both.
    let moved = web_slice(&[ep("10.65.0.5", "node2", "1--")])
        .replace("service-name: web", "service-name: api");
    assert_eq!(kinds(&g.apply(puts(&moved))), ["svc+ api", "svc+ web"]);

    // Handed to another proxy, made headless: removed; back: emitted.
    let other_proxy = service(
        "  labels: {service.kubernetes.io/service-proxy-name: other}\n",
        "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n",
    );
    assert_eq!(kinds(&g.apply(puts(&other_proxy))), ["svc- web"]);
    assert!(g.apply(puts(&other_proxy)).is_empty());
    assert_eq!(kinds(&g.apply(puts(&cluster_ip("")))), ["svc+ web"]);

    // Deleting the slice and the Service.
    let key = resources(&moved)[0].key();
    assert_eq!(kinds(&g.apply([Update { key, value: None }])), ["svc+ api"]);
    let key = resources(&cluster_ip(""))[0].key();
    assert_eq!(kinds(&g.apply([Update { key, value: None }])), ["svc- web"]);
    assert_eq!(emitted_by(&g), None);
}

#[test]
fn locality_is_this_nodes() {
    let yaml = cluster_ip("")
        + &slice(
            "web-1",
            "IPv4",
            HTTP,
            &[
                ep("10.65.0.5", "node2", "1--"),
                ep("10.65.0.6", NODE, "1--"),
            ],
        );
    let mut g = CalcGraph::new("node2");
    g.apply(puts(&yaml));
    let s = emitted_by(&g).unwrap();
    assert_eq!(
        s.ports[0].backends,
        [
            backend("10.65.0.5", 8080, true),
            backend("10.65.0.6", 8080, false)
        ]
    );
    assert_eq!(
        s.ports[0].local_backends,
        [backend("10.65.0.5", 8080, true)]
    );
}

#[test]
fn the_nodes_default_balancing_applies_without_the_annotation() {
    let ports = "  clusterIP: 10.96.0.10\n  ports:\n  - {name: http, port: 80}\n";
    for (annotations, want) in [
        ("", dp::Balancing::Maglev),
        (
            "  annotations: {lb.projectcalico.org/external-traffic-strategy: random}\n",
            dp::Balancing::Random,
        ),
        (
            "  annotations: {lb.projectcalico.org/external-traffic-strategy: maglev}\n",
            dp::Balancing::Maglev,
        ),
    ] {
        let mut g = CalcGraph::new(NODE);
        g.set_default_balancing(dp::Balancing::Maglev);
        g.apply(puts(&service(annotations, ports)));
        let s = emitted_by(&g).expect("emitted");
        assert_eq!(s.balancing, want, "{annotations}");
    }
}

#[test]
fn a_graph_without_services_emits_none() {
    let yaml = cluster_ip("") + &slice("web-1", "IPv4", HTTP, &[ep("10.65.0.5", NODE, "1--")]);
    let mut g = CalcGraph::new(NODE).without_services();
    let ops = g.apply(puts(&yaml));
    assert!(
        !ops.iter()
            .any(|o| matches!(o, dp::Operation::ServiceUpdate(_))),
        "{ops:?}"
    );
    assert_eq!(emitted_by(&g), None);
    // The same input does emit it with services on.
    assert!(emitted(&yaml).is_some());
}

/// Switching to kube-proxy: a driver that holds an earlier run's Services
/// (stale, as after a restart) is resynced from a graph without services,
/// and its `InSync` removes them all.
#[test]
fn leaving_services_to_kube_proxy_removes_those_programmed() {
    use dp::Driver as _;
    let yaml = cluster_ip("") + &slice("web-1", "IPv4", HTTP, &[ep("10.65.0.5", NODE, "1--")]);
    let mut driver = dp::NullDriver::new();
    let mut with = CalcGraph::new(NODE);
    with.apply(puts(&yaml));
    let mut ops = with.whole_state();
    ops.push(dp::Operation::InSync);
    driver.apply(&ops).unwrap();
    assert_eq!(driver.state().services.len(), 1);

    driver.mark_stale();
    let mut without = CalcGraph::new(NODE).without_services();
    without.apply(puts(&yaml));
    let mut ops = without.whole_state();
    ops.push(dp::Operation::InSync);
    driver.apply(&ops).unwrap();
    assert!(driver.state().services.is_empty());
}
