//! Services: the rendering of a few services (`services.nft` is the golden
//! whole-table script of [`cluster`]; `MANUL_UPDATE_GOLDEN=1` rewrites it),
//! the traffic policies, ports without backends, and the incremental
//! change one service's update makes.

use std::path::PathBuf;

use manul_dataplane_api::testutil::{ip, service};
use manul_dataplane_api::{Backend, Service, ServiceKey, ServicePort, TrafficPolicy};

use super::*;
use crate::names::ServiceObject;

pub(super) fn backend(addr: &str, port: u16, local: bool) -> Backend {
    Backend {
        ip: ip(addr),
        port,
        local,
        ready: true,
    }
}

/// A dual-stack ClusterIP with a node port, TCP and UDP on port 53, two
/// backends per family (one of them on another node).
fn web() -> Service {
    let mut s = service("prod", "web");
    s.cluster_ips = vec![ip("10.96.0.10"), ip("fd00:96::10")];
    let backends = vec![
        backend("10.65.0.2", 8080, true),
        backend("10.65.1.3", 8080, false),
        backend("fd00:65::2", 8080, true),
    ];
    let local: Vec<Backend> = backends.iter().copied().filter(|b| b.local).collect();
    s.ports = vec![
        ServicePort {
            name: "dns-tcp".into(),
            protocol: 6,
            port: 53,
            node_port: Some(30053),
            backends: backends.clone(),
            local_backends: local.clone(),
        },
        ServicePort {
            name: "dns-udp".into(),
            protocol: 17,
            port: 53,
            node_port: None,
            backends,
            local_backends: local,
        },
    ];
    s
}

/// A LoadBalancer service with `externalTrafficPolicy: Local`, source
/// ranges, an external IP and session affinity.
fn edge() -> Service {
    let mut s = service("prod", "edge");
    s.cluster_ips = vec![ip("10.96.0.20")];
    s.external_ips = vec![ip("192.0.2.50")];
    s.load_balancer_ips = vec![ip("198.51.100.10")];
    s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    s.external_traffic = TrafficPolicy::Local;
    s.affinity_timeout_seconds = Some(10800);
    s.ports[0].node_port = Some(30443);
    s.ports[0].port = 443;
    s.ports[0].backends = vec![
        backend("10.65.0.7", 8443, true),
        backend("10.65.1.8", 8443, false),
    ];
    s.ports[0].local_backends = vec![backend("10.65.0.7", 8443, true)];
    s
}

/// A service whose endpoints are all gone.
fn gone() -> Service {
    let mut s = service("prod", "gone");
    s.cluster_ips = vec![ip("10.96.0.30")];
    s.ports[0].node_port = Some(30080);
    s.ports[0].backends.clear();
    s.ports[0].local_backends.clear();
    s
}

pub(super) fn with(services: &[Service]) -> DesiredState {
    let mut s = DesiredState::default();
    for svc in services {
        s.services
            .insert((svc.namespace.clone(), svc.name.clone()), svc.clone());
    }
    s
}

fn cluster() -> DesiredState {
    let mut s = with(&[web(), edge(), gone()]);
    s.pools = ["10.65.0.0/16", "fd00:65::/64"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    s
}

fn elements(rs: &Ruleset, map: &str) -> Vec<String> {
    let mut out: Vec<String> = rs.sets[map]
        .elements
        .iter()
        .map(ToString::to_string)
        .collect();
    out.sort();
    out
}

fn obj(kind: ServiceObject, v6: bool, body: &str) -> String {
    names::service_object(kind, v6, body)
}

#[test]
fn the_whole_table_matches_the_golden_script() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/render/tests/services.nft");
    let got = crate::script::full(&render(&cluster()));
    if std::env::var_os("MANUL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        got == want,
        "the rendering differs from {} (MANUL_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn texts(rs: &Ruleset, chain: &str) -> Vec<String> {
    rs.chains[chain].iter().map(|r| r.text.clone()).collect()
}

#[test]
fn cluster_ips_and_node_ports_per_family() {
    let rs = render(&with(&[web()]));
    assert!(
        elements(&rs, "mnl-svc-ips4")
            .contains(&"10.96.0.10 . 6 . 53 : goto mnl-pick4-cip-2".to_string())
    );
    assert!(
        elements(&rs, "mnl-svc-ips6")
            .contains(&"fd00:96::10 . 6 . 53 : goto mnl-pick6-cip-1".to_string())
    );
    assert_eq!(
        elements(&rs, "mnl-svc-nodeports4"),
        vec!["6 . 30053 : goto mnl-pick4-npext-2"]
    );
    assert_eq!(
        elements(&rs, "mnl-svc-nodeports6"),
        vec!["6 . 30053 : goto mnl-pick6-npext-1"]
    );
    // The backends are data: two IPv4 ones per port, one IPv6 one.
    // One backend map per protocol.
    assert_eq!(
        elements(&rs, "mnl-be4-tcp"),
        vec![
            "10.96.0.10 . 6 . 53 . 0 : 10.65.0.2 . 8080",
            "10.96.0.10 . 6 . 53 . 1 : 10.65.1.3 . 8080",
        ]
    );
    assert_eq!(
        elements(&rs, "mnl-be4-udp"),
        vec![
            "10.96.0.10 . 17 . 53 . 0 : 10.65.0.2 . 8080",
            "10.96.0.10 . 17 . 53 . 1 : 10.65.1.3 . 8080",
        ]
    );
    assert!(elements(&rs, "mnl-be4-sctp").is_empty());
    assert_eq!(
        elements(&rs, "mnl-be6-udp"),
        vec!["fd00:96::10 . 17 . 53 . 0 : fd00:65::2 . 8080"]
    );
    assert_eq!(
        elements(&rs, "mnl-be6-tcp"),
        vec!["fd00:96::10 . 6 . 53 . 0 : fd00:65::2 . 8080"]
    );
    assert_eq!(
        elements(&rs, "mnl-npbe4-tcp"),
        vec![
            "6 . 30053 . 0 : 10.65.0.2 . 8080",
            "6 . 30053 . 1 : 10.65.1.3 . 8080"
        ]
    );
    assert_eq!(
        elements(&rs, "mnl-hairpin4"),
        vec!["10.65.0.2 . 10.65.0.2", "10.65.1.3 . 10.65.1.3"]
    );
    // Cluster traffic is masqueraded only when it did not come from a pod;
    // external traffic under the Cluster policy always. Each protocol
    // picks from its own map.
    assert_eq!(
        texts(&rs, "mnl-pick4-cip-2"),
        vec![
            "jump mnl-masq-non-pod",
            "meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @mnl-be4-tcp",
            "meta l4proto udp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @mnl-be4-udp",
            "meta l4proto sctp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @mnl-be4-sctp",
        ]
    );
    assert_eq!(
        texts(&rs, "mnl-pick6-npext-1"),
        vec![
            "jump mnl-mark-masq",
            "meta l4proto tcp dnat ip6 to meta l4proto . th dport . numgen random mod 1 map @mnl-npbe6-tcp",
            "meta l4proto udp dnat ip6 to meta l4proto . th dport . numgen random mod 1 map @mnl-npbe6-udp",
            "meta l4proto sctp dnat ip6 to meta l4proto . th dport . numgen random mod 1 map @mnl-npbe6-sctp",
        ]
    );
    // No chain of its own.
    assert!(!rs.chains.keys().any(|c| c.contains("prod/web")));
    // A single-stack service has no node port in the other family.
    let mut v4 = web();
    v4.cluster_ips.truncate(1);
    let rs = render(&with(&[v4]));
    assert!(elements(&rs, "mnl-svc-nodeports6").is_empty());
    assert!(elements(&rs, "mnl-be6-tcp").is_empty());
    assert!(!rs.chains.contains_key("mnl-pick6-cip-1"));
}

#[test]
fn no_backends_is_a_reject_not_a_chain() {
    let rs = render(&with(&[gone()]));
    assert_eq!(
        elements(&rs, "mnl-noep-ips4"),
        vec!["10.96.0.30 . 6 . 80 : goto mnl-svc-reject".to_string()]
    );
    assert_eq!(
        elements(&rs, "mnl-noep-nodeports4"),
        vec!["6 . 30080 : goto mnl-svc-reject".to_string()]
    );
    assert!(elements(&rs, "mnl-svc-ips4").is_empty());
    assert!(!rs.chains.keys().any(|c| c.contains("prod/gone")));
    assert_eq!(
        rs.chains["mnl-svc-reject"]
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>(),
        vec!["meta l4proto tcp reject with tcp reset", "reject"]
    );
}

#[test]
fn local_policies_use_local_backends() {
    let mut edge = edge();
    edge.affinity_timeout_seconds = None;
    let rs = render(&with(&[edge.clone()]));
    let ips = elements(&rs, "mnl-svc-ips4");
    for e in [
        "10.96.0.20 . 6 . 443 : goto mnl-pick4-cip-2",
        "192.0.2.50 . 6 . 443 : goto mnl-pick4-loc-1",
        "198.51.100.10 . 6 . 443 : goto mnl-pick4-loc-1",
    ] {
        assert!(ips.contains(&e.to_string()), "{ips:?}");
    }
    // Pods and the node itself reach the cluster backends.
    assert!(
        elements(&rs, "mnl-svc-xpod4")
            .contains(&"192.0.2.50 . 6 . 443 : goto mnl-pick4-pod-2".to_string())
    );
    assert!(
        elements(&rs, "mnl-svc-xnode4")
            .contains(&"192.0.2.50 . 6 . 443 : goto mnl-pick4-node-2".to_string())
    );
    assert_eq!(
        elements(&rs, "mnl-np-xpod4"),
        vec!["6 . 30443 : goto mnl-pick4-nppod-2"]
    );
    assert_eq!(
        elements(&rs, "mnl-svc-nodeports4"),
        vec!["6 . 30443 : goto mnl-pick4-nploc-1"]
    );
    let be4 = elements(&rs, "mnl-be4-tcp");
    for e in [
        "192.0.2.50 . 6 . 443 . 0 : 10.65.0.7 . 8443",
        "192.0.2.50 . 6 . 443 . 16777216 : 10.65.0.7 . 8443",
        "192.0.2.50 . 6 . 443 . 16777217 : 10.65.1.8 . 8443",
    ] {
        assert!(be4.contains(&e.to_string()), "{be4:?}");
    }
    assert!(!be4.contains(&"192.0.2.50 . 6 . 443 . 1 : 10.65.1.8 . 8443".to_string()));
    assert_eq!(
        texts(&rs, "mnl-pick4-node-2")[..2],
        [
            "jump mnl-mark-masq",
            "meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 offset 16777216 map @mnl-be4-tcp",
        ]
    );
    assert_eq!(
        texts(&rs, "mnl-pick4-loc-1")[0],
        "meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @mnl-be4-tcp"
    );
    // No local backend while there are some elsewhere: external traffic
    // from outside the cluster is dropped (as kube-proxy does), cluster
    // traffic not, and pods and the node itself still reach the backends
    // elsewhere (kube-proxy's short-circuit).
    let mut none = edge.clone();
    none.ports[0].local_backends.clear();
    let rs = render(&with(&[none.clone()]));
    assert!(
        elements(&rs, "mnl-noep-ips4")
            .contains(&"198.51.100.10 . 6 . 443 : goto mnl-svc-no-local-ext".to_string())
    );
    assert!(
        elements(&rs, "mnl-noep-nodeports4")
            .contains(&"6 . 30443 : goto mnl-svc-no-local-ext".to_string())
    );
    assert_eq!(texts(&rs, "mnl-svc-no-local"), ["drop"]);
    assert_eq!(
        texts(&rs, "mnl-svc-no-local-ext"),
        [
            "iifname \"mnl*\" return",
            "fib saddr type local return",
            "ip saddr @mnl-pools4 return",
            "ip6 saddr @mnl-pools6 return",
            "drop"
        ]
    );
    assert!(
        !elements(&rs, "mnl-svc-ips4")
            .iter()
            .any(|e| e.starts_with("198.51.100.10 "))
    );
    for (map, e) in [
        (
            "mnl-svc-xpod4",
            "198.51.100.10 . 6 . 443 : goto mnl-pick4-pod-2",
        ),
        (
            "mnl-svc-xnode4",
            "198.51.100.10 . 6 . 443 : goto mnl-pick4-node-2",
        ),
        ("mnl-np-xpod4", "6 . 30443 : goto mnl-pick4-nppod-2"),
        ("mnl-np-xnode4", "6 . 30443 : goto mnl-pick4-npnode-2"),
    ] {
        assert!(
            elements(&rs, map).contains(&e.to_string()),
            "{map}: {:?}",
            elements(&rs, map)
        );
    }
    // With affinity, through the external chain.
    let mut sticky = none.clone();
    sticky.affinity_timeout_seconds = Some(60);
    let rs3 = render(&with(&[sticky]));
    assert!(
        elements(&rs3, "mnl-svc-ips4")
            .iter()
            .any(|e| e.starts_with("198.51.100.10 . 6 . 443 : goto mnl-ext4-"))
    );
    // No backend at all: rejected.
    let mut nothing = none.clone();
    nothing.ports[0].backends.clear();
    let rs2 = render(&with(&[nothing.clone()]));
    assert!(
        elements(&rs2, "mnl-noep-nodeports4")
            .contains(&"6 . 30443 : goto mnl-svc-reject".to_string())
    );
    // internalTrafficPolicy Local without a local backend: the cluster IP
    // is dropped while there are backends elsewhere, else rejected.
    for (svc, verdict) in [(&none, "mnl-svc-no-local"), (&nothing, "mnl-svc-reject")] {
        let mut internal = svc.clone();
        internal.internal_traffic = TrafficPolicy::Local;
        assert!(
            elements(&render(&with(&[internal])), "mnl-noep-ips4")
                .contains(&format!("10.96.0.20 . 6 . 443 : goto {verdict}"))
        );
    }
    assert!(
        elements(&rs, "mnl-svc-ips4")
            .contains(&"10.96.0.20 . 6 . 443 : goto mnl-pick4-cip-2".to_string())
    );
    // internalTrafficPolicy Local: the cluster IP picks a local backend.
    none.internal_traffic = TrafficPolicy::Local;
    none.ports[0].local_backends = vec![backend("10.65.0.7", 8443, true)];
    let rs = render(&with(&[none]));
    assert!(
        elements(&rs, "mnl-svc-ips4")
            .contains(&"10.96.0.20 . 6 . 443 : goto mnl-pick4-cip-1".to_string())
    );
    assert_eq!(
        elements(&rs, "mnl-be4-tcp")
            .iter()
            .filter(|e| e.starts_with("10.96.0.20 "))
            .collect::<Vec<_>>(),
        vec!["10.96.0.20 . 6 . 443 . 0 : 10.65.0.7 . 8443"]
    );
}

/// A service with session affinity keeps kube-proxy's chains: affinity
/// sets are per backend.
#[test]
fn affinity_services_keep_chains_with_local_policies() {
    let rs = render(&with(&[edge()]));
    let body = "prod/edge/tcp/443";
    let ext = obj(ServiceObject::External, false, body);
    let svc = obj(ServiceObject::Cluster, false, body);
    let svl = obj(ServiceObject::Local, false, body);
    let texts: Vec<&str> = rs.chains[&ext].iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            format!("iifname \"mnl*\" goto {svc}").as_str(),
            "fib saddr type local jump mnl-mark-masq",
            format!("fib saddr type local goto {svc}").as_str(),
            format!("ip saddr @mnl-pools4 meta mark set meta mark | 0x00080000 goto {svc}")
                .as_str(),
            format!("goto {svl}").as_str(),
        ]
    );
    assert!(rs.chains[&svl].last().unwrap().text.contains("mod 1 vmap"));
    // Both the external IP and the load-balancer IP go there.
    let ips = elements(&rs, "mnl-svc-ips4");
    for addr in ["192.0.2.50", "198.51.100.10"] {
        assert!(
            ips.contains(&format!("{addr} . 6 . 443 : goto {ext}")),
            "{ips:?}"
        );
    }
    // Source ranges guard the load-balancer IP only.
    assert_eq!(elements(&rs, "mnl-lb-ranged4"), vec!["198.51.100.10"]);
    assert_eq!(
        elements(&rs, "mnl-lb-src4"),
        vec!["198.51.100.10 . 203.0.113.0/24"]
    );
    assert!(
        rs.chains["mnl-svc-filter"]
            .iter()
            .any(|r| r.text == "ip daddr @mnl-lb-ranged4 ip daddr . ip saddr != @mnl-lb-src4 drop")
    );
    // No local backend while there are some elsewhere: external traffic
    // is dropped, cluster traffic not.
    let mut none = edge();
    none.ports[0].local_backends.clear();
    let rs = render(&with(&[none.clone()]));
    assert!(
        elements(&rs, "mnl-noep-ips4")
            .contains(&"198.51.100.10 . 6 . 443 : goto mnl-svc-no-local-ext".to_string())
    );
    assert!(
        elements(&rs, "mnl-noep-nodeports4")
            .contains(&"6 . 30443 : goto mnl-svc-no-local-ext".to_string())
    );
    assert!(elements(&rs, "mnl-svc-ips4").contains(&format!("10.96.0.20 . 6 . 443 : goto {svc}")));
    // Pods and the node itself still reach the backends elsewhere,
    // through the external chain.
    assert!(
        elements(&rs, "mnl-svc-ips4").contains(&format!("198.51.100.10 . 6 . 443 : goto {ext}"))
    );
    assert!(elements(&rs, "mnl-svc-nodeports4").contains(&format!("6 . 30443 : goto {ext}")));
    assert!(
        rs.chains[&ext]
            .iter()
            .any(|r| r.text == format!("iifname \"mnl*\" goto {svc}"))
    );
    // internalTrafficPolicy Local: the cluster IP goes to the local chain.
    none.internal_traffic = TrafficPolicy::Local;
    none.ports[0].local_backends = vec![backend("10.65.0.7", 8443, true)];
    let rs = render(&with(&[none]));
    assert!(elements(&rs, "mnl-svc-ips4").contains(&format!("10.96.0.20 . 6 . 443 : goto {svl}")));
    assert!(rs.chains[&svl][0].text.ends_with("jump mnl-masq-non-pod"));
}

#[test]
fn affinity_is_a_timeout_set_per_backend() {
    let rs = render(&with(&[edge()]));
    let body = "prod/edge/tcp/443/10.65.0.7/8443";
    let aff = obj(ServiceObject::Affinity, false, &format!("{body}/10800s"));
    let sep = obj(ServiceObject::Backend, false, body);
    assert_eq!(rs.sets[&aff].timeout, Some(10800));
    assert!(rs.sets[&aff].elements.is_empty());
    let svc = obj(ServiceObject::Cluster, false, "prod/edge/tcp/443");
    assert!(
        rs.chains[&svc]
            .iter()
            .any(|r| r.text == format!("ip saddr @{aff} goto {sep}"))
    );
    assert!(
        rs.chains[&sep]
            .iter()
            .any(|r| r.text == format!("update @{aff} {{ ip saddr }}"))
    );
    let script = crate::script::full(&rs);
    assert!(script.contains(&format!(
        "add set inet manul {aff} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s;"
    )));
    // The packet path fills it: the refresh does not count its elements.
    let mut observed = crate::nft::Observed::default();
    for (name, rules) in &rs.chains {
        observed.chains.insert(
            name.clone(),
            rules.iter().map(|r| r.comment.clone()).collect(),
        );
    }
    for (name, _, rules) in &rs.base {
        observed.chains.insert(
            name.to_string(),
            rules.iter().map(|r| r.comment.clone()).collect(),
        );
    }
    for (name, def) in &rs.sets {
        observed.sets.insert(name.clone(), def.elements.len());
    }
    observed.sets.insert(aff.clone(), 3);
    assert_eq!(crate::driver::difference(&rs, &observed), None);
    observed.sets.insert("mnl-svc-ips4".into(), 0);
    assert!(crate::driver::difference(&rs, &observed).is_some());
}

#[test]
fn a_service_update_changes_only_that_service() {
    let config = NftConfig::default();
    let key: ServiceKey = ("prod".into(), "web".into());
    let update = |web2: &Service| {
        let state = cluster();
        let (programmed, mut claims) = render_indexed(&state, &config);
        let before = web();
        let changes: Vec<service_change::Change<'_>> = vec![(&key, Some(&before), Some(web2))];
        let change = service_change::render_changes(
            &programmed,
            &mut claims,
            &changes,
            &config,
            &Default::default(),
        );
        (programmed, change)
    };
    // One backend replaced: elements alone, of the maps that hold it.
    let mut moved = web();
    for p in &mut moved.ports {
        p.backends[1] = backend("10.65.1.9", 8080, false);
    }
    let (programmed, change) = update(&moved);
    let sets = crate::script::element_changes(&programmed, &change.old, &change.new).unwrap();
    let owned: Vec<(&str, bool, Vec<String>)> = sets
        .iter()
        .map(|c| {
            let mut texts: Vec<String> = c.elements.iter().map(ToString::to_string).collect();
            texts.sort();
            (c.set, c.add, texts)
        })
        .collect();
    let touched: Vec<(&str, bool, Vec<&str>)> = owned
        .iter()
        .map(|(s, a, t)| (*s, *a, t.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        touched,
        vec![
            (
                "mnl-be4-tcp",
                false,
                vec!["10.96.0.10 . 6 . 53 . 1 : 10.65.1.3 . 8080"]
            ),
            (
                "mnl-be4-tcp",
                true,
                vec!["10.96.0.10 . 6 . 53 . 1 : 10.65.1.9 . 8080"]
            ),
            (
                "mnl-be4-udp",
                false,
                vec!["10.96.0.10 . 17 . 53 . 1 : 10.65.1.3 . 8080"]
            ),
            (
                "mnl-be4-udp",
                true,
                vec!["10.96.0.10 . 17 . 53 . 1 : 10.65.1.9 . 8080"]
            ),
            ("mnl-hairpin4", false, vec!["10.65.1.3 . 10.65.1.3"]),
            ("mnl-hairpin4", true, vec!["10.65.1.9 . 10.65.1.9"]),
            (
                "mnl-npbe4-tcp",
                false,
                vec!["6 . 30053 . 1 : 10.65.1.3 . 8080"]
            ),
            (
                "mnl-npbe4-tcp",
                true,
                vec!["6 . 30053 . 1 : 10.65.1.9 . 8080"]
            ),
        ]
    );
    // One backend removed: a pick chain for one backend is written with
    // the entries that name it, the one for two goes with its last user.
    let mut fewer = web();
    for p in &mut fewer.ports {
        p.backends.remove(1);
    }
    let (programmed, change) = update(&fewer);
    assert!(crate::script::element_changes(&programmed, &change.old, &change.new).is_none());
    let script = crate::script::incremental(&change.old, &change.new);
    let pos = |needle: &str| {
        script
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from {script}"))
    };
    assert!(pos("add chain inet manul mnl-pick4-cip-1") < pos("goto mnl-pick4-cip-1"));
    assert!(pos("goto mnl-pick4-cip-1") < pos("delete chain inet manul mnl-pick4-cip-2"));
}

#[test]
fn a_new_affinity_timeout_is_a_new_set_removed_after_its_rules() {
    let old = render(&with(&[edge()]));
    let mut longer = edge();
    longer.affinity_timeout_seconds = Some(60);
    let new = render(&with(&[longer]));
    let script = crate::script::incremental(&old, &new);
    let pos = |needle: &str| {
        script
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from {script}"))
    };
    let body = "prod/edge/tcp/443/10.65.0.7/8443";
    let old_set = obj(ServiceObject::Affinity, false, &format!("{body}/10800s"));
    let new_set = obj(ServiceObject::Affinity, false, &format!("{body}/60s"));
    let sep = obj(ServiceObject::Backend, false, body);
    assert!(
        pos(&format!("add set inet manul {new_set} "))
            < pos(&format!("flush chain inet manul {sep}"))
    );
    assert!(
        pos(&format!("flush chain inet manul {sep}"))
            < pos(&format!("delete set inet manul {old_set}"))
    );
}

#[test]
fn conflicting_claims_keep_the_first_service() {
    // Another service claims web's ClusterIP, protocol and port, and its
    // node port, and has an ICMP port, which is not rendered.
    let mut twin = web();
    twin.name = "zz-twin".into();
    twin.ports[1].protocol = 1;
    let rs = render(&with(&[web(), twin]));
    let ips: Vec<String> = elements(&rs, "mnl-svc-ips4")
        .into_iter()
        .filter(|e| e.starts_with("10.96.0.10 . 6 . 53 "))
        .collect();
    assert_eq!(ips, vec!["10.96.0.10 . 6 . 53 : goto mnl-pick4-cip-2"]);
    assert_eq!(
        elements(&rs, "mnl-svc-nodeports4"),
        vec!["6 . 30053 : goto mnl-pick4-npext-2"]
    );
    assert!(
        !elements(&rs, "mnl-be4-tcp")
            .iter()
            .any(|e| e.contains(" . 1 . 53 "))
    );
}

#[test]
fn cluster_ips_no_port_matched_are_rejected_after_dnat() {
    let rs = render(&cluster());
    assert_eq!(
        elements(&rs, "mnl-cluster-ips4"),
        vec!["10.96.0.10", "10.96.0.20", "10.96.0.30"]
    );
    assert_eq!(elements(&rs, "mnl-cluster-ips6"), vec!["fd00:96::10"]);
    // External and load-balancer IPs are not cluster IPs.
    assert!(!elements(&rs, "mnl-cluster-ips4").contains(&"198.51.100.10".to_string()));
    let post: Vec<&str> = rs.chains["mnl-svc-post-dnat"]
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(
        post,
        vec![
            "ip daddr @mnl-cluster-ips4 goto mnl-svc-reject",
            "ip6 daddr @mnl-cluster-ips6 goto mnl-svc-reject",
        ]
    );
    let hooks: Vec<&str> = rs
        .base
        .iter()
        .filter(|(name, ..)| name.starts_with("mnl-svc-post-dnat"))
        .map(|(_, spec, _)| *spec)
        .collect();
    assert!(
        hooks.iter().all(|h| h.contains("priority -90;")),
        "{hooks:?}"
    );
    assert_eq!(hooks.len(), 2);
}

/// Applies `steps` one after another, each as a batch of service changes
/// rendered on their own, and checks every step against rendering the
/// whole state and diffing it: the same script, the same table after.
fn check_changes_match_whole_render(steps: &[Vec<(&str, Option<Service>)>]) {
    check_steps(with(&[web(), edge(), gone()]), steps);
}

/// [`check_changes_match_whole_render`] from `state` (services in
/// namespace `prod`); returns the state after the last step.
pub(super) fn check_steps(
    state: DesiredState,
    steps: &[Vec<(&str, Option<Service>)>],
) -> DesiredState {
    check_steps_with(&NftConfig::default(), state, steps)
}

/// [`check_steps`] under `config`.
fn check_steps_with(
    config: &NftConfig,
    mut state: DesiredState,
    steps: &[Vec<(&str, Option<Service>)>],
) -> DesiredState {
    let config = config.clone();
    let (mut programmed, mut claims) = render_indexed(&state, &config);
    for (n, step) in steps.iter().enumerate() {
        let before = state.clone();
        for (name, svc) in step {
            let key = ("prod".to_string(), name.to_string());
            match svc {
                Some(s) => state.services.insert(key, s.clone()),
                None => state.services.remove(&key),
            };
        }
        let keys: Vec<ServiceKey> = step
            .iter()
            .map(|(name, _)| ("prod".to_string(), name.to_string()))
            .collect();
        let changes: Vec<service_change::Change<'_>> = keys
            .iter()
            .map(|k| (k, before.services.get(k), state.services.get(k)))
            .collect();
        let change = service_change::render_changes(
            &programmed,
            &mut claims,
            &changes,
            &config,
            &state.local_addresses,
        );
        let script = crate::script::incremental(&change.old, &change.new);
        let (whole, whole_claims) = render_indexed(&state, &config);
        assert_eq!(
            script,
            crate::script::incremental(&programmed, &whole),
            "step {n}"
        );
        service_change::fold(&mut programmed, change);
        assert_eq!(programmed, whole, "step {n}");
        assert_eq!(claims, whole_claims, "step {n}");
    }
    state
}

#[test]
fn service_changes_rendered_alone_match_the_whole_render() {
    let mut web2 = web();
    for p in &mut web2.ports {
        p.backends = vec![
            backend("10.65.0.9", 8080, true),
            backend("fd00:65::2", 8080, true),
        ];
        p.local_backends = p.backends.clone();
    }
    let mut edge2 = edge();
    edge2.affinity_timeout_seconds = Some(60);
    edge2.ports[0].local_backends.clear();
    let mut revived = gone();
    revived.ports[0].backends = vec![backend("10.65.2.2", 80, false)];
    // Claims the address and port of `edge`'s external IP, and the node
    // port of `gone`: `b-rival` sorts first, `z-rival` last.
    let rival = |name: &str| {
        let mut s = service("prod", name);
        s.cluster_ips = vec![ip("10.96.0.40")];
        s.external_ips = vec![ip("192.0.2.50")];
        s.ports[0].port = 443;
        s.ports[0].node_port = Some(30080);
        s
    };
    let steps = [
        vec![("web", Some(web2))],
        vec![("edge", Some(edge2)), ("gone", Some(revived))],
        vec![("z-rival", Some(rival("z-rival")))],
        vec![("b-rival", Some(rival("b-rival")))],
        vec![("edge", None), ("gone", None)],
        vec![("b-rival", None)],
        vec![("edge", Some(edge())), ("gone", Some(gone()))],
        vec![("web", None), ("z-rival", None)],
    ];
    check_changes_match_whole_render(&steps);
    // With flows on, the chains that pick a backend log first.
    check_steps_with(&flows_on(), with(&[web(), edge(), gone()]), &steps);
}

fn flows_on() -> NftConfig {
    NftConfig {
        flows: Some(crate::flows::FlowLog::default()),
        ..NftConfig::default()
    }
}

/// With flows on, every chain that picks a backend (the shared pick
/// chains, an affinity service's backend chains) logs the connection's
/// first packet before anything else, before DNAT; with flows off none
/// does.
#[test]
fn chains_picking_a_backend_log_the_frontend_first_with_flows_on() {
    let mut sticky = edge();
    sticky.affinity_timeout_seconds = Some(60);
    let state = with(&[web(), sticky, gone()]);
    let log = crate::flows::prefix::frontend_log_statement(crate::flows::FlowLog::default().group);
    let on = render_indexed(&state, &flows_on()).0;
    let off = render_indexed(&state, &NftConfig::default()).0;
    let picking = |rs: &Ruleset| -> Vec<String> {
        rs.chains
            .iter()
            .filter(|(_, rules)| rules.iter().any(|r| r.text.contains("numgen random")))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let chains = picking(&on);
    assert!(
        chains
            .iter()
            .any(|c| c.starts_with(service_pick::PICK_PREFIX)),
        "{chains:?}"
    );
    assert!(
        chains
            .iter()
            .any(|c| !c.starts_with(service_pick::PICK_PREFIX)),
        "{chains:?}"
    );
    assert_eq!(chains, picking(&off));
    for chain in &chains {
        assert_eq!(on.chains[chain][0].text, log, "{chain}");
        assert_eq!(
            on.chains[chain].len(),
            off.chains[chain].len() + 1,
            "{chain}"
        );
    }
    let logging: Vec<&String> = on
        .chains
        .iter()
        .filter(|(_, rules)| rules.iter().any(|r| r.text.contains("mnl:s")))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(logging, chains.iter().collect::<Vec<_>>());
    assert!(
        off.chains
            .values()
            .flatten()
            .all(|r| !r.text.contains("mnl:s"))
    );
}

/// [`cluster`], a service like [`edge`] without affinity (its
/// `Local` policy as data) with an SCTP port, and an IP set of named
/// ports, both families.
fn cluster_and_named_ports() -> DesiredState {
    use manul_dataplane_api::{IpSet, IpSetKind, IpSetMember};
    let mut data = edge();
    data.name = "edge-data".into();
    data.affinity_timeout_seconds = None;
    data.cluster_ips = vec![ip("10.96.0.40")];
    data.external_ips = vec![ip("192.0.2.60")];
    data.load_balancer_ips = vec![ip("198.51.100.20")];
    data.ports[0].node_port = Some(30444);
    let mut sctp = data.ports[0].clone();
    sctp.name = "sctp".into();
    sctp.protocol = 132;
    sctp.port = 9;
    sctp.node_port = None;
    data.ports.push(sctp);
    let mut state = with(&[web(), edge(), gone(), data]);
    state.ip_sets.insert(
        "sel:app == 'web'".into(),
        IpSet {
            kind: IpSetKind::NamedPort,
            members: [
                IpSetMember::NamedPort {
                    ip: ip("10.65.0.2"),
                    protocol: 6,
                    port: 8080,
                },
                IpSetMember::NamedPort {
                    ip: ip("fd00:65::2"),
                    protocol: 132,
                    port: 9,
                },
            ]
            .into_iter()
            .collect(),
        },
    );
    state
}

/// Every element the netlink writer sends for [`cluster_and_named_ports`],
/// one line each: the set, the element as nft writes it, and the whole
/// netlink message that adds it alone (hex).
fn encoded_lines(rs: &Ruleset) -> Vec<String> {
    let (_, changes) = crate::script::full_split(rs);
    let mut lines = Vec::new();
    for change in &changes {
        for e in &change.elements {
            let one = crate::elements::SetChange {
                set: change.set,
                type_: change.type_,
                add: true,
                elements: vec![*e],
            };
            let batch = crate::elements::batch(&[one], 1).unwrap();
            lines.push(format!(
                "{}\t{}\t{}",
                change.set,
                e,
                hex::encode(&batch.bytes)
            ));
        }
    }
    lines.sort();
    lines
}

/// The elements the netlink writer encodes are the bytes the string path
/// (render to text, parse the text back) sent: `services.elements` was
/// written by that path (`MANUL_UPDATE_GOLDEN=1` rewrites it).
#[test]
fn encoded_elements_match_the_golden_encoding() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/render/tests/services.elements");
    let got = encoded_lines(&render(&cluster_and_named_ports())).join("\n") + "\n";
    if std::env::var_os("MANUL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        got.lines().count() > 50,
        "too few elements to compare: {got}"
    );
    assert!(
        got == want,
        "the encoding differs from {} (MANUL_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// The whole render merges the claimed elements a set at a time
/// (`services::merge`): it must keep what adding them one by one in the
/// same order keeps (of one map key, the first element; a set's elements
/// once each), into an empty map and into one holding elements already.
#[test]
fn merging_a_set_at_a_time_keeps_what_adding_one_by_one_keeps() {
    use crate::element::{Element, Value, Verb};
    let key = |n: u16| {
        vec![
            Value::Addr(ip("10.96.0.1")),
            Value::Proto(6),
            Value::Port(n),
        ]
    };
    let map = "mnl-svc-ips4";
    let set = "mnl-cluster-ips4";
    // Keys out of order, some twice with other verdicts.
    let entries: Vec<Element> = [(9, "a"), (3, "b"), (9, "c"), (1, "d"), (3, "e"), (5, "f")]
        .into_iter()
        .map(|(port, chain)| Element::verdict(key(port), Verb::Goto, chain))
        .collect();
    let members: Vec<Element> = ["10.96.0.3", "10.96.0.1", "10.96.0.3"]
        .into_iter()
        .map(|a| Element::key(vec![Value::Addr(ip(a))]))
        .collect();
    for held in [None, Some(Element::verdict(key(3), Verb::Goto, "held"))] {
        let mut start = crate::render::services::empty_maps();
        if let Some(e) = &held {
            crate::render::services::add(&mut start, map, e.clone());
        }
        let mut one_by_one = start.clone();
        for e in entries.clone() {
            crate::render::services::add(&mut one_by_one, map, e);
        }
        for e in members.clone() {
            crate::render::services::add(&mut one_by_one, set, e);
        }
        let mut merged = start;
        crate::render::services::merge(&mut merged, map, entries.clone());
        crate::render::services::merge(&mut merged, set, members.clone());
        assert_eq!(merged, one_by_one, "held: {held:?}");
        let kept: Vec<String> = merged[map]
            .elements
            .iter()
            .filter_map(|e| match &e.data {
                Some(crate::element::Data::Verdict(_, chain)) => Some(chain.clone()),
                _ => None,
            })
            .collect();
        let expected = if held.is_some() {
            ["d", "held", "f", "a"]
        } else {
            ["d", "b", "f", "a"]
        };
        assert_eq!(kept, expected);
        assert_eq!(merged[set].elements.len(), 2);
    }
}

/// Pods of other nodes (sources in the cluster's IP pools, arriving at no
/// workload interface) reach a `Local` external frontend as this node's
/// pods do, marked to be masqueraded when they leave through no workload
/// interface (a backend elsewhere).
#[test]
fn pool_sources_reach_local_external_frontends_masqueraded_off_node() {
    let mut state = with(&[edge()]);
    state.pools = [
        "10.65.0.0/17",
        "10.65.128.0/17",
        "10.65.1.0/24",
        "10.70.0.0/16",
        "fd00:65::/64",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .collect();
    let rs = render(&state);
    // Aggregated: an interval set refuses overlapping elements.
    assert_eq!(
        elements(&rs, "mnl-pools4"),
        ["10.65.0.0/16", "10.70.0.0/16"]
    );
    assert_eq!(elements(&rs, "mnl-pools6"), ["fd00:65::/64"]);
    // Looked up after this node's pods and the node itself, before the
    // frontends' own maps.
    let services = texts(&rs, "mnl-services");
    let at = |t: &str| {
        services
            .iter()
            .position(|r| r == t)
            .unwrap_or_else(|| panic!("{t} in {services:?}"))
    };
    let pool = at("iifname != \"mnl*\" ip saddr @mnl-pools4 jump mnl-svc-xpool4");
    assert!(
        at("fib saddr type local ip daddr . meta l4proto . th dport vmap @mnl-svc-xnode4") < pool
    );
    assert!(pool < at("ip daddr . meta l4proto . th dport vmap @mnl-svc-ips4"));
    assert!(at("iifname != \"mnl*\" ip6 saddr @mnl-pools6 jump mnl-svc-xpool6") > 0);
    assert_eq!(
        texts(&rs, "mnl-svc-xpool4"),
        [
            "iifname \"mnl*\" return",
            "fib saddr type local return",
            "meta mark set meta mark | 0x00080000 ip daddr . meta l4proto . th dport vmap @mnl-svc-xpod4",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta mark set meta mark | 0x00080000 meta l4proto . th dport vmap @mnl-np-xpod4",
            "meta mark set meta mark & 0xfff7ffff",
        ]
    );
    assert_eq!(
        texts(&rs, "mnl-masq-off-node"),
        [
            "meta mark set meta mark & 0xfff7ffff",
            "oifname \"mnl*\" return",
            "masquerade fully-random",
        ]
    );
    let masq = texts(&rs, "mnl-masquerading");
    let jump = masq
        .iter()
        .position(|r| r == "meta mark & 0x00080000 != 0 jump mnl-masq-off-node")
        .expect("jump");
    assert_eq!(masq[jump + 1], "meta mark & 0x00040000 == 0 return");
    // With several workload prefixes every one of them returns in the
    // chain (this node's pods take the jump).
    let config = NftConfig {
        workload_prefixes: vec!["cali".into(), "tap".into()],
        ..NftConfig::default()
    };
    let rs = render_with(&state, &config);
    assert!(
        texts(&rs, "mnl-services")
            .contains(&"ip saddr @mnl-pools4 jump mnl-svc-xpool4".to_string())
    );
    assert_eq!(
        texts(&rs, "mnl-svc-xpool4")[..3],
        [
            "iifname \"cali*\" return",
            "iifname \"tap*\" return",
            "fib saddr type local return",
        ]
    );
    assert_eq!(
        texts(&rs, "mnl-masq-off-node")[1..3],
        ["oifname \"cali*\" return", "oifname \"tap*\" return"]
    );
    // Without pools the sets are empty and the rules stay (no source
    // matches them).
    let rs = render(&with(&[edge()]));
    assert!(elements(&rs, "mnl-pools4").is_empty());
    assert!(
        texts(&rs, "mnl-services")
            .contains(&"iifname != \"mnl*\" ip saddr @mnl-pools4 jump mnl-svc-xpool4".to_string())
    );
}

/// A change of the pools renders the whole state (it comes with the
/// nodes' addresses); services changed alone after it keep the pool sets
/// as the whole render has them.
#[test]
fn service_changes_keep_the_pools() {
    let mut edge2 = edge();
    edge2.ports[0].local_backends.clear();
    let state = check_steps(
        cluster(),
        &[vec![("edge", Some(edge2))], vec![("edge", None)]],
    );
    let rs = render(&state);
    assert_eq!(elements(&rs, "mnl-pools4"), ["10.65.0.0/16"]);
}
