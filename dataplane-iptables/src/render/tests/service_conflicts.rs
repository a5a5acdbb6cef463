//! Services contesting a frontend (an address, protocol and port, or a
//! node port of one family): whatever their traffic policies, families,
//! affinity or backends, every entry of the frontend, in every map, is
//! the one the first service in namespace/name order writes when it is
//! alone, as on eBPF; the same after each incremental change (the keeper
//! removed: the next one takes every entry).

use std::collections::{BTreeMap, BTreeSet};

use manul_dataplane_api::testutil::{ip, service};
use manul_dataplane_api::{Service, TrafficPolicy};

use super::services::{backend, check_steps, with};
use super::*;
use crate::render::service_claims::{Frontend, frontend_of};

/// Each frontend's entries in `rs`, as `map: element`.
fn by_frontend(rs: &Ruleset) -> BTreeMap<Frontend, BTreeSet<String>> {
    let mut out: BTreeMap<Frontend, BTreeSet<String>> = BTreeMap::new();
    for (name, def) in &rs.sets {
        for e in &def.elements {
            if let Some(f) = frontend_of(name, &e.key) {
                out.entry(f).or_default().insert(format!("{name}: {e}"));
            }
        }
    }
    out
}

/// Checks that every frontend of `state` holds what its keeper (the first
/// service by key whose rendering alone has it) writes alone; returns the
/// frontends that more than one service claims with different entries.
fn check_keepers(state: &DesiredState) -> BTreeSet<Frontend> {
    let whole = by_frontend(&render(state));
    let alone: Vec<(String, BTreeMap<Frontend, BTreeSet<String>>)> = state
        .services
        .values()
        .map(|s| {
            (
                s.name.clone(),
                by_frontend(&render(&with(std::slice::from_ref(s)))),
            )
        })
        .collect();
    let mut contested = BTreeSet::new();
    let all: BTreeSet<Frontend> = alone.iter().flat_map(|(_, m)| m.keys().copied()).collect();
    assert_eq!(
        whole.keys().copied().collect::<BTreeSet<_>>(),
        all,
        "the frontends of the whole state are those of its services"
    );
    for f in all {
        let mut claimants = alone.iter().filter(|(_, m)| m.contains_key(&f));
        let Some((keeper, want)) = claimants.next() else {
            continue;
        };
        let want = &want[&f];
        if claimants.any(|(_, m)| &m[&f] != want) {
            contested.insert(f);
        }
        assert_eq!(&whole[&f], want, "{f:?} is {keeper}'s alone");
    }
    contested
}

const EXTERNAL: &str = "192.0.2.80";
const NODE_PORT: u16 = 30090;

/// `prod/NAME`: cluster IP `cip`, external IP [`EXTERNAL`], TCP port 80
/// with node port [`NODE_PORT`], external traffic policy `policy`, `here`
/// backends on this node (10.65.0.N) and `there` on others (10.65.1.N).
fn rival(name: &str, cip: &str, policy: TrafficPolicy, here: &[u8], there: &[u8]) -> Service {
    let mut s = service("prod", name);
    s.cluster_ips = vec![ip(cip)];
    s.external_ips = vec![ip(EXTERNAL)];
    s.external_traffic = policy;
    let local: Vec<_> = here
        .iter()
        .map(|n| backend(&format!("10.65.0.{n}"), 8080, true))
        .collect();
    let mut all = local.clone();
    all.extend(
        there
            .iter()
            .map(|n| backend(&format!("10.65.1.{n}"), 8080, false)),
    );
    s.ports[0].port = 80;
    s.ports[0].node_port = Some(NODE_PORT);
    s.ports[0].backends = all;
    s.ports[0].local_backends = local;
    s
}

fn cluster(name: &str, cip: &str) -> Service {
    rival(name, cip, TrafficPolicy::Cluster, &[2], &[3])
}

fn local(name: &str, cip: &str) -> Service {
    rival(name, cip, TrafficPolicy::Local, &[4, 5], &[6])
}

/// Every conflict kind: `(what, services)`; the first by name keeps.
fn cases() -> Vec<(&'static str, Vec<Service>)> {
    let mut out = vec![
        (
            "Cluster keeper, Local loser",
            vec![cluster("a", "10.96.0.50"), local("b", "10.96.0.51")],
        ),
        (
            "Local keeper, Cluster loser",
            vec![local("a", "10.96.0.50"), cluster("b", "10.96.0.51")],
        ),
        (
            "Local keeper without local backends (rejects), Cluster loser",
            vec![
                rival("a", "10.96.0.50", TrafficPolicy::Local, &[], &[7]),
                cluster("b", "10.96.0.51"),
            ],
        ),
        (
            "keeper without backends (rejects), Local loser",
            vec![
                rival("a", "10.96.0.50", TrafficPolicy::Cluster, &[], &[]),
                local("b", "10.96.0.51"),
            ],
        ),
        (
            "Local keeper, loser without backends",
            vec![
                local("a", "10.96.0.50"),
                rival("b", "10.96.0.51", TrafficPolicy::Cluster, &[], &[]),
            ],
        ),
    ];
    // internalTrafficPolicy: one cluster IP, Local first, and Local
    // without local backends first.
    let mut internal = local("a", "10.96.0.50");
    internal.internal_traffic = TrafficPolicy::Local;
    out.push((
        "internalTrafficPolicy Local keeper of a cluster IP",
        vec![internal.clone(), cluster("b", "10.96.0.50")],
    ));
    let mut internal_empty = rival("a", "10.96.0.50", TrafficPolicy::Cluster, &[], &[7]);
    internal_empty.internal_traffic = TrafficPolicy::Local;
    out.push((
        "internalTrafficPolicy Local keeper without local backends",
        vec![internal_empty, local("b", "10.96.0.50")],
    ));
    let mut internal_loser = local("b", "10.96.0.50");
    internal_loser.internal_traffic = TrafficPolicy::Local;
    out.push((
        "internalTrafficPolicy Local loser",
        vec![cluster("a", "10.96.0.50"), internal_loser],
    ));
    // One service's cluster IP is another's external IP (Local).
    let ext_on_cip = |name: &str| {
        let mut s = local(name, "10.96.0.52");
        s.external_ips = vec![ip("10.96.0.51")];
        s
    };
    out.push((
        "a Local external IP keeping another's cluster IP",
        vec![ext_on_cip("a"), cluster("b", "10.96.0.51")],
    ));
    out.push((
        "a cluster IP keeping another's Local external IP",
        vec![cluster("a", "10.96.0.51"), ext_on_cip("b")],
    ));
    // Session affinity (chains) against data.
    let sticky = |mut s: Service| {
        s.affinity_timeout_seconds = Some(60);
        s
    };
    out.push((
        "affinity keeper, Local loser",
        vec![sticky(cluster("a", "10.96.0.50")), local("b", "10.96.0.51")],
    ));
    out.push((
        "Cluster keeper, affinity Local loser",
        vec![cluster("a", "10.96.0.50"), sticky(local("b", "10.96.0.51"))],
    ));
    // Families: an IPv4-only keeper of the IPv4 node port; the
    // dual-stack loser keeps its IPv6 node port.
    let mut dual = local("b", "10.96.0.51");
    dual.cluster_ips.push(ip("fd00:96::51"));
    dual.ports[0]
        .backends
        .push(backend("fd00:65::4", 8080, true));
    dual.ports[0]
        .local_backends
        .push(backend("fd00:65::4", 8080, true));
    out.push((
        "IPv4 Cluster keeper, dual-stack Local loser",
        vec![cluster("a", "10.96.0.50"), dual],
    ));
    // A shared load-balancer IP, the loser with source ranges.
    let lb = |mut s: Service, ranges: bool| {
        s.load_balancer_ips = vec![ip("198.51.100.80")];
        if ranges {
            s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
        }
        s
    };
    out.push((
        "load-balancer IP: keeper without source ranges, Local loser with",
        vec![
            lb(cluster("a", "10.96.0.50"), false),
            lb(local("b", "10.96.0.51"), true),
        ],
    ));
    out
}

#[test]
fn every_entry_of_a_contested_frontend_is_the_keepers() {
    for (what, services) in cases() {
        let state = with(&services);
        let contested = check_keepers(&state);
        assert!(!contested.is_empty(), "{what}: nothing contested");
    }
}

#[test]
fn a_cluster_keeper_leaves_no_pod_or_node_entries_to_a_local_loser() {
    let rs = render(&with(&[
        cluster("a", "10.96.0.50"),
        local("b", "10.96.0.51"),
    ]));
    let contested = |map: &str, prefix: &str| -> Vec<String> {
        rs.sets[map]
            .elements
            .iter()
            .map(ToString::to_string)
            .filter(|e| e.starts_with(prefix))
            .collect()
    };
    let ext = format!("{EXTERNAL} . 6 . 80 ");
    let np = format!("6 . {NODE_PORT} ");
    for map in ["mnl-svc-xpod4", "mnl-svc-xnode4"] {
        assert_eq!(contested(map, &ext), Vec::<String>::new(), "{map}");
    }
    for map in ["mnl-np-xpod4", "mnl-np-xnode4"] {
        assert_eq!(contested(map, &np), Vec::<String>::new(), "{map}");
    }
    assert_eq!(
        contested("mnl-svc-ips4", &ext),
        vec![format!("{ext}: goto mnl-pick4-ext-2")]
    );
    assert_eq!(
        contested("mnl-svc-nodeports4", &np),
        vec![format!("{np}: goto mnl-pick4-npext-2")]
    );
    // The keeper's two backends only: none of the loser's, at any index.
    assert_eq!(
        contested("mnl-npbe4-tcp", &np),
        vec![
            format!("{np}. 0 : 10.65.0.2 . 8080"),
            format!("{np}. 1 : 10.65.1.3 . 8080"),
        ]
    );
}

#[test]
fn a_keeper_without_backends_is_not_overridden_by_a_loser_with_some() {
    let rs = render(&with(&[
        rival("a", "10.96.0.50", TrafficPolicy::Cluster, &[], &[]),
        local("b", "10.96.0.51"),
    ]));
    let np = format!("6 . {NODE_PORT} ");
    let any = |map: &str| {
        rs.sets[map]
            .elements
            .iter()
            .any(|e| e.to_string().starts_with(&np))
    };
    assert!(any("mnl-noep-nodeports4"));
    for map in [
        "mnl-svc-nodeports4",
        "mnl-np-xpod4",
        "mnl-np-xnode4",
        "mnl-npbe4-tcp",
    ] {
        assert!(!any(map), "{map}");
    }
}

#[test]
fn a_service_claiming_one_frontend_twice_keeps_its_first_claim() {
    // Its own cluster IP listed again as an external IP, under Local: the
    // cluster IP's entry, not the external pod and node entries.
    let mut s = local("a", "10.96.0.50");
    s.external_ips = vec![ip("10.96.0.50")];
    let rs = render(&with(&[s]));
    let on = |map: &str| -> Vec<String> {
        rs.sets[map]
            .elements
            .iter()
            .map(ToString::to_string)
            .filter(|e| e.starts_with("10.96.0.50 "))
            .collect()
    };
    assert_eq!(
        on("mnl-svc-ips4"),
        vec!["10.96.0.50 . 6 . 80 : goto mnl-pick4-cip-3"]
    );
    assert!(on("mnl-svc-xpod4").is_empty());
    assert!(on("mnl-svc-xnode4").is_empty());
}

#[test]
fn the_next_service_takes_every_entry_when_the_keeper_goes() {
    for (what, services) in cases() {
        let [a, b] = services.as_slice() else {
            panic!("{what}: two services");
        };
        let mut b2 = b.clone();
        b2.ports[0].local_backends.truncate(1);
        b2.ports[0].backends.truncate(1);
        let steps: Vec<Vec<(&str, Option<Service>)>> = vec![
            vec![("a", None)],
            vec![("a", Some(a.clone()))],
            vec![("b", Some(b2))],
            vec![("a", None), ("b", Some(b.clone()))],
            vec![("a", Some(a.clone())), ("b", None)],
        ];
        let mut state = with(&[a.clone(), b.clone()]);
        for step in steps {
            state = check_steps(state, std::slice::from_ref(&step));
            check_keepers(&state);
        }
        let alone = by_frontend(&render(&with(std::slice::from_ref(a))));
        assert_eq!(by_frontend(&render(&state)), alone, "{what}");
    }
}

/// `prod/NAME` with load-balancer IP 198.51.100.80 and `ranges`.
fn balanced(name: &str, cip: &str, ranges: &[&str]) -> Service {
    let mut s = cluster(name, cip);
    s.load_balancer_ips = vec![ip("198.51.100.80")];
    s.load_balancer_source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    s
}

fn lb_sets(rs: &Ruleset) -> (Vec<String>, Vec<String>) {
    let of = |name: &str| {
        rs.sets[name]
            .elements
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    (of("mnl-lb-ranged4"), of("mnl-lb-src4"))
}

#[test]
fn source_ranges_are_per_address_the_union_of_every_service_naming_it() {
    // As on eBPF: both services' ranges guard the address (every port),
    // whoever keeps its frontends; overlapping ranges are merged (the
    // kernel refuses overlaps in one set), an IPv6 range left out.
    let a = balanced("a", "10.96.0.50", &["203.0.113.0/25", "10.1.0.0/16"]);
    let b = balanced(
        "b",
        "10.96.0.51",
        &["203.0.113.128/25", "10.0.0.0/8", "fd00::/8"],
    );
    let (ranged, src) = lb_sets(&render(&with(&[a.clone(), b.clone()])));
    assert_eq!(ranged, ["198.51.100.80"]);
    assert_eq!(
        src,
        [
            "198.51.100.80 . 10.0.0.0/8",
            "198.51.100.80 . 203.0.113.0/24"
        ]
    );
    // A keeper without ranges does not open the address to every source.
    let open = balanced("a", "10.96.0.50", &[]);
    let (ranged, src) = lb_sets(&render(&with(&[open.clone(), b.clone()])));
    assert_eq!(ranged, ["198.51.100.80"]);
    assert_eq!(
        src,
        [
            "198.51.100.80 . 10.0.0.0/8",
            "198.51.100.80 . 203.0.113.128/25"
        ]
    );
    // Ranges of the other family only: the address drops every source.
    let v6 = balanced("c", "10.96.0.52", &["fd00::/8"]);
    let (ranged, src) = lb_sets(&render(&with(&[v6])));
    assert_eq!(ranged, ["198.51.100.80"]);
    assert!(src.is_empty());
    // Incrementally, the union follows each change.
    let mut narrower = b.clone();
    narrower.load_balancer_source_ranges = vec!["203.0.113.128/26".parse().unwrap()];
    let state = check_steps(
        with(&[a.clone(), b.clone()]),
        &[
            vec![("b", Some(narrower))],
            vec![("a", Some(open))],
            vec![("b", None)],
            vec![("b", Some(b)), ("a", Some(a))],
            vec![("a", None), ("b", None)],
        ],
    );
    let (ranged, src) = lb_sets(&render(&state));
    assert!(ranged.is_empty() && src.is_empty());
}

#[test]
fn an_ipv6_only_service_leaves_the_ipv4_node_port_to_an_ipv4_one() {
    // As on eBPF: node ports are open in the families of the cluster IPs,
    // so the IPv6-only `a` (first by name) has the IPv6 node port only.
    let mut v6 = local("a", "10.96.0.50");
    v6.cluster_ips = vec![ip("fd00:96::50")];
    v6.external_ips.clear();
    v6.ports[0].backends = vec![backend("fd00:65::4", 8080, true)];
    v6.ports[0].local_backends = v6.ports[0].backends.clone();
    let v4 = cluster("b", "10.96.0.51");
    let state = with(&[v6.clone(), v4]);
    assert!(check_keepers(&state).is_empty(), "nothing contested");
    let rs = render(&state);
    let np = |map: &str| -> Vec<String> {
        rs.sets[map]
            .elements
            .iter()
            .map(ToString::to_string)
            .filter(|e| e.starts_with(&format!("6 . {NODE_PORT} ")))
            .collect()
    };
    assert_eq!(
        np("mnl-svc-nodeports4"),
        [format!("6 . {NODE_PORT} : goto mnl-pick4-npext-2")]
    );
    assert_eq!(
        np("mnl-svc-nodeports6"),
        [format!("6 . {NODE_PORT} : goto mnl-pick6-nploc-1")]
    );
    // Alone, it has no IPv4 node port either.
    let alone = render(&with(&[v6]));
    assert!(alone.sets["mnl-svc-nodeports4"].elements.is_empty());
    assert!(alone.sets["mnl-noep-nodeports4"].elements.is_empty());
}

#[test]
fn a_load_balancer_ip_is_its_own_source_when_this_node_is_in_its_ranges() {
    let ranged = |ranges: &[&str]| {
        let mut s = balanced("a", "10.96.0.50", ranges);
        s.load_balancer_ips.push(ip("2001:db8::80"));
        s
    };
    // (ranges, this node's addresses, the IPv4 and IPv6 source elements)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            &["203.0.113.0/24"],
            &["10.0.0.1"],
            &["198.51.100.80 . 203.0.113.0/24"],
            &[],
        ),
        (
            &["203.0.113.0/24"],
            &["203.0.113.7"],
            &[
                "198.51.100.80 . 198.51.100.80/32",
                "198.51.100.80 . 203.0.113.0/24",
            ],
            &[],
        ),
        // Family by family: an IPv6 node address in an IPv6 range opens
        // the IPv6 load-balancer IP to itself only.
        (
            &["203.0.113.0/24", "fd00::/64"],
            &["10.0.0.1", "fd00::1"],
            &["198.51.100.80 . 203.0.113.0/24"],
            &[
                "2001:db8::80 . 2001:db8::80/128",
                "2001:db8::80 . fd00::/64",
            ],
        ),
        // No node address known: the ranges alone.
        (
            &["203.0.113.0/24"],
            &[],
            &["198.51.100.80 . 203.0.113.0/24"],
            &[],
        ),
    ];
    for (ranges, local, want4, want6) in cases {
        let mut state = with(&[ranged(ranges)]);
        state.local_addresses = local.iter().map(|a| ip(a)).collect();
        let rs = render(&state);
        let of = |name: &str| -> Vec<String> {
            rs.sets[name]
                .elements
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(of("mnl-lb-src4"), *want4, "{ranges:?} {local:?}");
        assert_eq!(of("mnl-lb-src6"), *want6, "{ranges:?} {local:?}");
    }
    // Incrementally with this node in range, as the whole render.
    let mut state = with(&[]);
    state.local_addresses = [ip("203.0.113.7")].into_iter().collect();
    check_steps(
        state,
        &[
            vec![("a", Some(ranged(&["203.0.113.0/24"])))],
            vec![("a", Some(ranged(&["203.0.114.0/24"])))],
            vec![("a", None)],
        ],
    );
}
