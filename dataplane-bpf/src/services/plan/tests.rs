use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::{Backend, Balancing, MaglevTable, Service, ServicePort, TrafficPolicy};

use super::*;

pub(super) fn v4(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 65, 0, d)
}

pub(super) fn backend(d: u8, local: bool) -> Backend {
    Backend {
        ip: IpAddr::V4(v4(d)),
        port: 8080,
        local,
        ready: true,
    }
}

pub(super) fn service(name: &str, cluster_ip: [u8; 4], backends: &[u8]) -> Service {
    let all: Vec<Backend> = backends.iter().map(|&d| backend(d, d % 2 == 0)).collect();
    Service::cluster_ip(
        "ns",
        name,
        vec![IpAddr::V4(cluster_ip.into())],
        vec![ServicePort {
            name: "http".into(),
            protocol: PROTO_TCP,
            port: 80,
            node_port: None,
            local_backends: all.iter().filter(|b| b.local).copied().collect(),
            backends: all,
        }],
    )
}

pub(super) fn services(list: Vec<Service>) -> BTreeMap<ServiceKey, Service> {
    list.into_iter()
        .map(|s| ((s.namespace.clone(), s.name.clone()), s))
        .collect()
}

pub(super) fn fe(ip: [u8; 4], port: u16) -> Frontend {
    Frontend {
        addr: IpAddr::V4(ip.into()),
        port,
        proto: PROTO_TCP,
        in_cluster: false,
    }
}

pub(super) fn ba(d: u8) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V4(v4(d)),
        port: 8080,
    }
}

/// Plans from `programmed` to `svcs` and checks that applying the writes
/// to `programmed`'s maps gives exactly the planned maps.
pub(super) fn step(
    svcs: &BTreeMap<ServiceKey, Service>,
    programmed: &Programmed,
    in_sync: bool,
) -> (Writes, Programmed) {
    let (w, next) = plan(&desired(svcs), programmed, in_sync);
    let mut fes = programmed.frontends.clone();
    // Maglev tables: id -> size.
    let mut mags: BTreeMap<u32, u32> = programmed
        .tables
        .iter()
        .map(|(id, t)| (*id, t.size))
        .collect();
    for (id, slots) in &w.tables {
        assert!(!mags.contains_key(id), "table {id} rewritten in place");
        mags.insert(*id, slots.len() as u32);
    }
    let whole = |e: &FrontendEntry, mags: &BTreeMap<u32, u32>| {
        e.maglev == 0 || (e.maglev_size > 0 && mags.get(&e.maglev) == Some(&e.maglev_size))
    };
    let mut bes: BTreeMap<(u32, u32), BackendAddr> = programmed
        .lists
        .iter()
        .flat_map(|(id, l)| (0u32..).zip(l).map(move |(i, b)| ((*id, i), *b)))
        .collect();
    for (id, i, b) in &w.backends {
        bes.insert((*id, *i), *b);
    }
    // After the backend puts and before the frontend puts, every frontend
    // still sees a complete list of its old length.
    for e in fes.values() {
        for i in 0..e.count {
            assert!(bes.contains_key(&(e.id, i)), "{e:?} lost index {i}");
        }
        assert!(whole(e, &mags), "{e:?} lost its table");
    }
    for (f, e) in &w.frontends {
        fes.insert(*f, *e);
        assert!(whole(e, &mags), "{f:?} flipped to a table not yet written");
        for i in 0..e.count {
            assert!(
                bes.contains_key(&(e.id, i)),
                "{f:?} points at a missing backend"
            );
        }
    }
    for f in &w.frontend_deletes {
        fes.remove(f);
    }
    for k in &w.backend_deletes {
        bes.remove(k);
    }
    for (id, size) in &w.table_deletes {
        assert!(
            fes.values().all(|e| e.maglev != *id),
            "table {id} deleted while named"
        );
        assert_eq!(mags.remove(id), Some(*size));
    }
    assert_eq!(fes, next.frontends);
    let planned: BTreeMap<u32, u32> = next.tables.iter().map(|(id, t)| (*id, t.size)).collect();
    assert_eq!(mags, planned);
    let planned: BTreeMap<(u32, u32), BackendAddr> = next
        .lists
        .iter()
        .flat_map(|(id, l)| (0u32..).zip(l).map(move |(i, b)| ((*id, i), *b)))
        .collect();
    assert_eq!(bes, planned);
    (w, next)
}

#[test]
fn a_cluster_ip_gets_a_frontend_with_its_backend_list() {
    let svcs = services(vec![service("web", [10, 96, 0, 10], &[2, 3, 4])]);
    let (w, next) = step(&svcs, &Programmed::default(), true);
    let entry = next.frontends[&fe([10, 96, 0, 10], 80)];
    assert_eq!(entry.count, 3);
    assert_eq!(next.lists[&entry.id], vec![ba(2), ba(3), ba(4)]);
    assert_eq!(w.backends.len(), 3);
    // The port's frontend, then the cluster IP's address entry.
    assert_eq!(
        w.frontends.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        vec![
            fe([10, 96, 0, 10], 80),
            Frontend::address(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)))
        ]
    );
    assert_eq!(
        next.frontends[&Frontend::address(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)))].flags,
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_REJECT_UNKNOWN
    );
    // The same services again: nothing to write.
    let (w, again) = step(&svcs, &next, true);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(again, next);
}

#[test]
fn a_backend_change_rewrites_the_list_in_place_and_reports_what_went_away() {
    let (_, first) = step(
        &services(vec![service("web", [10, 96, 0, 10], &[2, 3, 4])]),
        &Programmed::default(),
        true,
    );
    let id = first.frontends[&fe([10, 96, 0, 10], 80)].id;
    // Shrink: 2, 4 (index 1 changes, index 2 goes).
    let (w, second) = step(
        &services(vec![service("web", [10, 96, 0, 10], &[2, 4])]),
        &first,
        true,
    );
    assert_eq!(w.backends, vec![(id, 1, ba(4))]);
    assert_eq!(w.backend_deletes, vec![(id, 2)]);
    assert_eq!(
        w.frontends,
        vec![(
            fe([10, 96, 0, 10], 80),
            FrontendEntry {
                id,
                count: 2,
                affinity_s: 0,
                flags: 0,
                maglev: 0,
                maglev_size: 0,
            }
        )]
    );
    assert_eq!(w.gone[&id].iter().copied().collect::<Vec<_>>(), vec![ba(3)]);
    // Empty: the frontend stays, with no backends (rejects).
    let (w, third) = step(
        &services(vec![service("web", [10, 96, 0, 10], &[])]),
        &second,
        true,
    );
    assert_eq!(third.frontends[&fe([10, 96, 0, 10], 80)].count, 0);
    assert_eq!(w.backend_deletes.len(), 2);
}

#[test]
fn removing_a_service_deletes_its_frontends_and_lists() {
    let (_, first) = step(
        &services(vec![
            service("web", [10, 96, 0, 10], &[2, 3]),
            service("db", [10, 96, 0, 11], &[5]),
        ]),
        &Programmed::default(),
        true,
    );
    let (w, second) = step(
        &services(vec![service("db", [10, 96, 0, 11], &[5])]),
        &first,
        false,
    );
    // The address entry goes first.
    assert_eq!(
        w.frontend_deletes,
        vec![
            Frontend::address(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
            fe([10, 96, 0, 10], 80)
        ]
    );
    assert_eq!(w.backend_deletes.len(), 2);
    assert_eq!(second.frontends.len(), 2);
    assert_eq!(second.lists.len(), 1);
}

#[test]
fn cluster_ips_follow_the_internal_policy_and_external_ips_the_external_one() {
    let mut svc = service("web", [10, 96, 0, 10], &[2, 3, 4, 5]);
    svc.internal_traffic = TrafficPolicy::Local;
    svc.external_traffic = TrafficPolicy::Cluster;
    svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];
    svc.affinity_timeout_seconds = Some(30);
    let (_, p) = step(&services(vec![svc]), &Programmed::default(), true);
    let internal = p.frontends[&fe([10, 96, 0, 10], 80)];
    let external = p.frontends[&fe([192, 0, 2, 1], 80)];
    assert_ne!(internal.id, external.id);
    assert_eq!(p.lists[&internal.id], vec![ba(2), ba(4)]);
    assert_eq!(p.lists[&external.id], vec![ba(2), ba(3), ba(4), ba(5)]);
    assert_eq!((internal.affinity_s, external.affinity_s), (30, 30));
    // Only a cluster IP refuses ports no service has there.
    let flags = |a: [u8; 4]| p.frontends[&Frontend::address(a.into())].flags;
    assert_eq!(
        flags([10, 96, 0, 10]),
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_REJECT_UNKNOWN
    );
    assert_eq!(flags([192, 0, 2, 1]), crate::abi::MANUL_SVC_FE_ADDRESS);
}

#[test]
fn a_node_port_is_a_frontend_on_address_zero_with_the_external_list() {
    let mut svc = service("web", [10, 96, 0, 10], &[2, 3, 4, 5]);
    svc.external_traffic = TrafficPolicy::Local;
    svc.ports[0].node_port = Some(30080);
    let (_, p) = step(&services(vec![svc]), &Programmed::default(), true);
    let node_port = p.frontends[&fe([0, 0, 0, 0], 30080)];
    let cluster = p.frontends[&fe([10, 96, 0, 10], 80)];
    assert_eq!(p.lists[&node_port.id], vec![ba(2), ba(4)]);
    assert_eq!(p.lists[&cluster.id], vec![ba(2), ba(3), ba(4), ba(5)]);
    // No address entry for 0.0.0.0: only the node-port lookup at a host
    // interface, for the node's own addresses, reaches it.
    assert!(
        !p.frontends
            .contains_key(&Frontend::address(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    );
    assert!(!p.frontends.contains_key(&fe([10, 96, 0, 10], 30080)));
}

#[test]
fn external_frontends_under_cluster_are_flagged_for_masquerade_or_dsr() {
    use crate::abi::{MANUL_SVC_FE_DROP_EMPTY, MANUL_SVC_FE_EXT_CLUSTER, MANUL_SVC_FE_IN_CLUSTER};
    let mut svc = service("web", [10, 96, 0, 10], &[2, 3]);
    svc.ports[0].node_port = Some(30080);
    svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];
    svc.load_balancer_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))];
    let (_, p) = step(&services(vec![svc.clone()]), &Programmed::default(), true);
    for external in [
        fe([0, 0, 0, 0], 30080),
        fe([192, 0, 2, 1], 80),
        fe([192, 0, 2, 9], 80),
    ] {
        assert_eq!(p.frontends[&external].flags, MANUL_SVC_FE_EXT_CLUSTER);
    }
    // A cluster IP is never masqueraded here.
    assert_eq!(p.frontends[&fe([10, 96, 0, 10], 80)].flags, 0);

    // Local: only the in-cluster flag while this node has a backend;
    // with none here but some elsewhere, new connections drop; with none
    // anywhere, refused.
    svc.external_traffic = TrafficPolicy::Local;
    let (_, p) = step(&services(vec![svc.clone()]), &Programmed::default(), true);
    assert_eq!(
        p.frontends[&fe([0, 0, 0, 0], 30080)].flags,
        MANUL_SVC_FE_IN_CLUSTER
    );
    svc.ports[0].local_backends.clear();
    let (_, p) = step(&services(vec![svc.clone()]), &Programmed::default(), true);
    let node_port = p.frontends[&fe([0, 0, 0, 0], 30080)];
    assert_eq!(
        (node_port.count, node_port.flags),
        (0, MANUL_SVC_FE_DROP_EMPTY | MANUL_SVC_FE_IN_CLUSTER)
    );
    svc.ports[0].backends.clear();
    let (_, p) = step(&services(vec![svc]), &Programmed::default(), true);
    assert_eq!(
        p.frontends[&fe([0, 0, 0, 0], 30080)].flags,
        MANUL_SVC_FE_IN_CLUSTER
    );
}

fn twin(f: Frontend) -> Frontend {
    Frontend {
        in_cluster: true,
        ..f
    }
}

/// kube-proxy's short-circuit, as map data: every external frontend of a
/// `Local` service (node port, external and load-balancer address) has an
/// in-cluster twin with the `Cluster` list (the cluster IP's), never
/// masqueraded; a `Cluster` service has none, nor does a cluster IP.
#[test]
fn local_external_frontends_have_an_in_cluster_twin_with_every_backend() {
    use crate::abi::{MANUL_SVC_FE_DROP_EMPTY, MANUL_SVC_FE_IN_CLUSTER};
    let mut svc = service("web", [10, 96, 0, 10], &[2, 3]);
    svc.ports[0].node_port = Some(30080);
    svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];
    svc.load_balancer_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))];
    let (_, cluster) = step(&services(vec![svc.clone()]), &Programmed::default(), true);
    assert!(cluster.frontends.keys().all(|f| !f.in_cluster));

    // Every backend elsewhere: the port entries drop, their twins answer.
    svc.external_traffic = TrafficPolicy::Local;
    svc.ports[0].local_backends.clear();
    let d = desired(&services(vec![svc.clone()]));
    let cluster_ip = &d.frontends[&fe([10, 96, 0, 10], 80)];
    assert!(!cluster_ip.list.local);
    assert!(!d.frontends.contains_key(&twin(fe([10, 96, 0, 10], 80))));
    for external in [
        fe([0, 0, 0, 0], 30080),
        fe([192, 0, 2, 1], 80),
        fe([192, 0, 2, 9], 80),
    ] {
        let w = &d.frontends[&external];
        assert!(w.list.local);
        assert_eq!(w.flags, MANUL_SVC_FE_DROP_EMPTY | MANUL_SVC_FE_IN_CLUSTER);
        let t = &d.frontends[&twin(external)];
        assert_eq!(t.list, cluster_ip.list, "{external:?}");
        assert_eq!(t.flags, 0, "{external:?}");
        assert_eq!(d.lists[&t.list].len(), 2);
    }
    // Written to the map under their own key, sharing the cluster list.
    let (_, p) = step(&services(vec![svc]), &Programmed::default(), true);
    let twin_entry = p.frontends[&twin(fe([192, 0, 2, 1], 80))];
    let cluster_entry = p.frontends[&fe([10, 96, 0, 10], 80)];
    assert_eq!(
        (twin_entry.id, twin_entry.count),
        (cluster_entry.id, cluster_entry.count)
    );
}

/// A contested external frontend's twin is its keeper's: a `Local` loser
/// writes none while a `Cluster` service keeps the frontend, and takes it
/// with the frontend when the keeper goes (incrementally as over the
/// whole state).
#[test]
fn an_in_cluster_twin_follows_its_frontends_keeper() {
    let ext = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut keeper = service("a-cluster", [10, 96, 0, 10], &[2]);
    keeper.external_ips = vec![ext];
    let mut local = service("b-local", [10, 96, 0, 11], &[3]);
    local.external_ips = vec![ext];
    local.external_traffic = TrafficPolicy::Local;
    local.ports[0].local_backends.clear();
    let both = services(vec![keeper.clone(), local.clone()]);
    let d = desired(&both);
    assert_eq!(
        d.frontends[&fe([192, 0, 2, 1], 80)].list.service.1,
        "a-cluster"
    );
    assert!(!d.frontends.contains_key(&twin(fe([192, 0, 2, 1], 80))));

    let maps = |d: &Desired| (d.frontends.clone(), d.lists.clone());
    let mut ix = super::index::Index::new(&both, 0, &BTreeSet::new());
    assert_eq!(maps(ix.desired()), maps(&d));
    let gone = (keeper.namespace.clone(), keeper.name.clone());
    let change = ix.update([(&gone, None)]);
    assert!(
        change
            .touched
            .frontends
            .contains(&twin(fe([192, 0, 2, 1], 80)))
    );
    let only_local = desired(&services(vec![local.clone()]));
    assert_eq!(maps(ix.desired()), maps(&only_local));
    let t = &only_local.frontends[&twin(fe([192, 0, 2, 1], 80))];
    assert_eq!(t.list.service.1, "b-local");
    assert!(!t.list.local);

    // The keeper back: the twin goes with the frontend.
    let back = (keeper.namespace.clone(), keeper.name.clone());
    ix.update([(&back, Some(&keeper))]);
    assert_eq!(maps(ix.desired()), maps(&d));
}

#[test]
fn a_load_balancer_address_with_source_ranges_is_flagged_with_its_ranges() {
    let mut svc = service("web", [10, 96, 0, 10], &[2]);
    let lb = Ipv4Addr::new(192, 0, 2, 9);
    svc.load_balancer_ips = vec![IpAddr::V4(lb)];
    svc.load_balancer_source_ranges = vec![
        "198.51.100.7/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let d = desired(&services(vec![svc]));
    assert!(d.frontends.contains_key(&fe([192, 0, 2, 9], 80)));
    assert_eq!(
        d.addresses[&IpAddr::V4(lb)],
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_SOURCE_RANGES
    );
    // The range truncated to its network; the IPv6 one cannot match an
    // IPv4 client.
    let ranges: Vec<SourceRange> = d.source_ranges.into_iter().collect();
    assert_eq!(
        ranges,
        vec![(IpAddr::V4(lb), "198.51.100.0/24".parse().unwrap())]
    );
    // The cluster IP has no such flag.
    assert_eq!(
        d.addresses[&IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_REJECT_UNKNOWN
    );
}

#[test]
fn what_the_program_cannot_carry_is_skipped_and_said() {
    let mut svc = service("web", [10, 96, 0, 10], &[2]);
    // DCCP.
    let mut dccp = svc.ports[0].clone();
    dccp.protocol = 33;
    svc.ports.push(dccp);
    let other = service("other", [10, 96, 0, 10], &[7]);
    let d = desired(&services(vec![svc, other]));
    assert_eq!(d.frontends.len(), 1);
    let list = &d.frontends[&fe([10, 96, 0, 10], 80)].list;
    // "ns/other" sorts first and keeps the contested frontend.
    assert_eq!(list.service, ("ns".to_string(), "other".to_string()));
    let kinds: Vec<&str> = d
        .skipped
        .iter()
        .map(|s| match s {
            Skipped::Protocol { .. } => "protocol",
            Skipped::Conflict { .. } => "conflict",
        })
        .collect();
    assert_eq!(kinds, vec!["conflict", "protocol"]);
    assert!(d.skipped.iter().all(|s| !s.to_string().is_empty()));
    // The cluster IP still refuses the protocol it could not program.
    assert_eq!(
        d.addresses[&IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_REJECT_UNKNOWN
    );
}

/// A dual-stack service with a node port, an IPv6 external and an IPv6
/// load-balancer address with source ranges: each IPv6 frontend (the
/// node port on ::) gets the IPv6 list of its policy, and the IPv6 ranges
/// go to the IPv6 load-balancer address.
#[test]
fn ipv6_node_ports_external_and_load_balancer_addresses_are_frontends() {
    let ip6 = |d: u16| Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, d);
    let b6 = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2);
    let (ext6, lb6) = (ip6(0x20), ip6(0x30));
    let mut svc = service("web", [10, 96, 0, 10], &[2, 3]);
    svc.cluster_ips.push(IpAddr::V6(ip6(10)));
    svc.external_ips.push(IpAddr::V6(ext6));
    svc.load_balancer_ips.push(IpAddr::V6(lb6));
    svc.load_balancer_source_ranges = vec![
        "2001:db8:1::7/48".parse().unwrap(),
        "198.51.100.0/24".parse().unwrap(),
    ];
    svc.external_traffic = TrafficPolicy::Local;
    svc.ports[0].node_port = Some(30080);
    let remote6 = Backend {
        ip: IpAddr::V6(b6),
        port: 8080,
        local: false,
        ready: true,
    };
    svc.ports[0].backends.push(remote6);
    let d = desired(&services(vec![svc]));
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    let at = |addr: IpAddr, port: u16| Frontend {
        addr,
        port,
        proto: PROTO_TCP,
        in_cluster: false,
    };
    let node6 = &d.frontends[&at(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 30080)];
    assert!(node6.list.ipv6 && node6.list.local);
    // Local, and the only IPv6 backend is elsewhere: dropped, not refused
    // (from outside; pods and the node take the twin, with it).
    assert_eq!(
        node6.flags,
        crate::abi::MANUL_SVC_FE_DROP_EMPTY | crate::abi::MANUL_SVC_FE_IN_CLUSTER
    );
    assert!(d.lists[&node6.list].is_empty());
    let twin6 = &d.frontends[&twin(at(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 30080))];
    assert_eq!(
        d.lists[&twin6.list],
        vec![BackendAddr {
            addr: IpAddr::V6(b6),
            port: 8080
        }]
    );
    for addr in [ext6, lb6] {
        let w = &d.frontends[&at(IpAddr::V6(addr), 80)];
        assert_eq!(w.list, node6.list);
        assert_eq!(
            d.frontends[&twin(at(IpAddr::V6(addr), 80))].list,
            twin6.list
        );
    }
    // The IPv4 node port is still there, with the IPv4 list.
    assert!(!d.frontends[&fe([0, 0, 0, 0], 30080)].list.ipv6);
    // No address entry for ::; the load-balancer address is flagged with
    // its IPv6 range only.
    assert!(!d.addresses.contains_key(&IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    assert_eq!(
        d.addresses[&IpAddr::V6(lb6)],
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_SOURCE_RANGES
    );
    // Only the IPv6 range: the IPv4 one cannot match its clients.
    let ranges: Vec<SourceRange> = d.source_ranges.into_iter().collect();
    assert_eq!(
        ranges,
        vec![(IpAddr::V6(lb6), "2001:db8:1::/48".parse().unwrap())]
    );
}

/// An IPv4-only service gets no IPv6 node port.
#[test]
fn a_single_stack_ipv4_service_has_no_ipv6_node_port() {
    let mut svc = service("web", [10, 96, 0, 10], &[2]);
    svc.ports[0].node_port = Some(30080);
    let d = desired(&services(vec![svc]));
    assert!(d.frontends.keys().all(|f| f.addr.is_ipv4()));
}

/// An IPv6-only service gets no IPv4 node port (as on nftables), so it
/// does not take an IPv4 service's node port.
#[test]
fn a_single_stack_ipv6_service_has_no_ipv4_node_port() {
    let mut v6 = service("a-v6", [10, 96, 0, 10], &[2]);
    v6.cluster_ips = vec![IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 10))];
    v6.ports[0].node_port = Some(30080);
    let mut v4 = service("b-v4", [10, 96, 0, 11], &[3]);
    v4.ports[0].node_port = Some(30080);
    let d = desired(&services(vec![v6, v4]));
    let node4 = Frontend {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 30080,
        proto: PROTO_TCP,
        in_cluster: false,
    };
    assert_eq!(d.frontends[&node4].list.service.1, "b-v4");
    assert!(d.frontends.contains_key(&Frontend {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ..node4
    }));
}

#[test]
fn an_ipv6_cluster_ip_gets_its_familys_backends_in_a_list_of_its_own() {
    let ip6 = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 10);
    let b6 = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2);
    let mut svc = service("web", [10, 96, 0, 10], &[2]);
    svc.cluster_ips.push(IpAddr::V6(ip6));
    let six = Backend {
        ip: IpAddr::V6(b6),
        port: 8080,
        local: true,
        ready: true,
    };
    svc.ports[0].backends.push(six);
    svc.ports[0].local_backends.push(six);
    let d = desired(&services(vec![svc]));
    let f6 = Frontend {
        addr: IpAddr::V6(ip6),
        port: 80,
        proto: PROTO_TCP,
        in_cluster: false,
    };
    let l4 = &d.frontends[&fe([10, 96, 0, 10], 80)].list;
    let l6 = &d.frontends[&f6].list;
    assert!(!l4.ipv6 && l6.ipv6);
    assert_eq!(d.lists[l4], vec![ba(2)]);
    assert_eq!(
        d.lists[l6],
        vec![BackendAddr {
            addr: IpAddr::V6(b6),
            port: 8080
        }]
    );
    assert_eq!(
        d.addresses[&IpAddr::V6(ip6)],
        crate::abi::MANUL_SVC_FE_ADDRESS | crate::abi::MANUL_SVC_FE_REJECT_UNKNOWN
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    // Both lists get ids of their own, and their backends are written.
    let (w, p) = plan(&d, &Programmed::default(), true);
    assert_ne!(
        p.frontends[&fe([10, 96, 0, 10], 80)].id,
        p.frontends[&f6].id
    );
    assert!(w.backends.iter().any(|(_, _, b)| b.addr == IpAddr::V6(b6)));
}

#[test]
fn sctp_is_programmed_whatever_port_the_backends_listen_on() {
    // The backends' port is the service's, then another (8080, not 80):
    // the programs patch SCTP's CRC32c for a port rewrite.
    for port in [8080, 80] {
        let mut svc = service("assoc", [10, 96, 0, 20], &[2, 3]);
        svc.ports[0].protocol = PROTO_SCTP;
        svc.ports[0].port = port;
        let d = desired(&services(vec![svc]));
        let f = Frontend {
            addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20)),
            port,
            proto: PROTO_SCTP,
            in_cluster: false,
        };
        let backends: Vec<u16> = d.lists[&d.frontends[&f].list]
            .iter()
            .map(|b| b.port)
            .collect();
        assert_eq!(backends, vec![8080, 8080]);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    }
}

#[test]
fn an_earlier_runs_frontends_stay_until_in_sync_and_keep_their_lists() {
    // What the maps hold after a restart: read back, every frontend adopted.
    let (_, before) = step(
        &services(vec![
            service("web", [10, 96, 0, 10], &[2, 3]),
            service("gone", [10, 96, 0, 12], &[6]),
        ]),
        &Programmed::default(),
        true,
    );
    let adopted = read_back(&before);
    let web = services(vec![service("web", [10, 96, 0, 10], &[2, 3])]);
    let (w, during) = step(&web, &adopted, false);
    // web takes its list back (nothing written); "gone" is kept until in
    // sync.
    let old_id = adopted.frontends[&fe([10, 96, 0, 10], 80)].id;
    let new_id = during.frontends[&fe([10, 96, 0, 10], 80)].id;
    assert_eq!(old_id, new_id);
    assert!(w.is_empty(), "{w:?}");
    assert!(w.gone.is_empty());
    assert!(during.frontends.contains_key(&fe([10, 96, 0, 12], 80)));
    assert_eq!(during.lists.len(), 2);
    let (w, after) = step(&web, &during, true);
    assert_eq!(
        w.frontend_deletes,
        vec![
            Frontend::address(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 12))),
            fe([10, 96, 0, 12], 80)
        ]
    );
    assert_eq!(after.frontends.len(), 2);
    assert_eq!(after.lists.len(), 1);
}

/// What the maps hold as a restarted driver reads them back (a list
/// without backends has no entry).
pub(super) fn read_back(p: &Programmed) -> Programmed {
    Programmed {
        frontends: p.frontends.clone(),
        lists: p
            .lists
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(id, l)| (*id, l.clone()))
            .collect(),
        ids: BTreeMap::new(),
        next_id: p
            .lists
            .keys()
            .copied()
            .chain(p.frontends.values().map(|e| e.id))
            .max()
            .map_or(1, |m| m + 1),
        adopted: p.frontends.keys().copied().collect(),
        tables: p
            .tables
            .iter()
            .map(|(id, t)| {
                // The slots are the table this run built (capacity 0).
                let digest = t
                    .built
                    .as_ref()
                    .map(|(_, list)| table_digest(&diff::table_slots(list, 0)));
                let info = TableInfo {
                    size: t.size,
                    built: None,
                    digest,
                };
                (*id, info)
            })
            .collect(),
        next_table: p.tables.keys().max().map_or(1, |m| m + 1),
    }
}

mod sequences {
    use proptest::prelude::*;

    use super::*;

    /// A service state: for each of four names, absent or (cluster IP
    /// from a pool of three, so names contend for frontends, backends from
    /// a pool of six, affinity).
    /// One service: cluster IP, backends, affinity, Maglev.
    type ServiceState = (u8, Vec<u8>, bool, bool);

    fn state() -> impl Strategy<Value = Vec<Option<ServiceState>>> {
        prop::collection::vec(
            prop::option::of((
                0u8..3,
                prop::collection::btree_set(2u8..8, 0..6).prop_map(|s| s.into_iter().collect()),
                any::<bool>(),
                any::<bool>(),
            )),
            4,
        )
    }

    proptest! {
        /// Every step's writes, applied in order, never leave a frontend
        /// pointing at a missing backend and end exactly at the plan; an
        /// in-sync step ends at exactly the desired frontends and lists,
        /// also after a restart.
        #[test]
        fn every_sequence_of_changes_is_written_safely(
            steps in prop::collection::vec((state(), any::<bool>(), any::<bool>()), 1..8)
        ) {
            let mut programmed = Programmed::default();
            for (state, in_sync, restart) in steps {
                if restart {
                    programmed = read_back(&programmed);
                }
                let svcs = services(
                    state
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                        .map(|(i, (ip, backends, affinity, maglev))| {
                            let mut svc = service(&format!("s{i}"), [10, 96, 0, *ip], backends);
                            svc.affinity_timeout_seconds = affinity.then_some(10);
                            if *maglev {
                                svc.balancing = Balancing::Maglev;
                                svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, *ip))];
                            }
                            svc
                        })
                        .collect(),
                );
                let (_, next) = step(&svcs, &programmed, in_sync);
                if in_sync {
                    let d = desired(&svcs);
                    let want: BTreeSet<Frontend> = d
                        .frontends
                        .keys()
                        .copied()
                        .chain(d.addresses.keys().map(|a| Frontend::address(*a)))
                        .collect();
                    prop_assert_eq!(next.frontends.keys().copied().collect::<BTreeSet<_>>(), want);
                    prop_assert_eq!(next.lists.len(), d.lists.len());
                    for (f, Wanted { list, .. }) in &d.frontends {
                        let e = next.frontends[f];
                        prop_assert_eq!(&next.lists[&e.id], &d.lists[list]);
                        prop_assert_eq!(e.count as usize, d.lists[list].len());
                        let maglev = d.maglev.contains(f) && e.count > 0;
                        prop_assert_eq!(e.maglev != 0, maglev);
                    }
                    // No table outlives the frontends naming it.
                    let named: BTreeSet<u32> = next.frontends.values().map(|e| e.maglev).collect();
                    for id in next.tables.keys() {
                        prop_assert!(named.contains(id));
                    }
                }
                programmed = next;
            }
        }
    }
}

/// A Service marked for Maglev, with a cluster IP, an external IP and a
/// node port.
pub(super) fn maglev_service(backends: &[u8]) -> Service {
    let mut svc = service("lb", [10, 96, 0, 10], backends);
    svc.balancing = Balancing::Maglev;
    svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))];
    svc.ports[0].node_port = Some(30080);
    svc
}

#[test]
fn maglev_tables_serve_external_frontends_only_and_are_replaced_whole() {
    let svcs = services(vec![maglev_service(&[2, 3, 4])]);
    let (w, first) = step(&svcs, &Programmed::default(), true);
    let cluster = first.frontends[&fe([10, 96, 0, 10], 80)];
    let external = first.frontends[&fe([192, 0, 2, 9], 80)];
    let node_port = first.frontends[&fe([0, 0, 0, 0], 30080)];
    assert_eq!(
        (cluster.maglev, cluster.maglev_size),
        (0, 0),
        "a cluster IP picks at random"
    );
    assert_ne!(external.maglev, 0);
    assert_eq!(
        (node_port.maglev, node_port.maglev_size),
        (external.maglev, external.maglev_size),
        "one list, one table"
    );
    // The table is dataplane-api's, slot for slot.
    let want = MaglevTable::build(&[backend(2, false), backend(3, false), backend(4, false)]);
    assert_eq!(w.tables.len(), 1);
    let (_, slots) = &w.tables[0];
    assert_eq!(slots.len(), want.size());
    assert_eq!(external.maglev_size as usize, want.size());
    for (slot, b) in slots.iter().enumerate() {
        let i = want.slots()[slot] as usize;
        assert_eq!(b.addr, want.backends()[i].ip);
    }

    // The same backends again: nothing written.
    let (w, same) = step(&svcs, &first, true);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(same.tables, first.tables);

    // A backend goes: a new table, the old one deleted after the flip.
    let fewer = services(vec![maglev_service(&[2, 4])]);
    let (w, second) = step(&fewer, &first, true);
    let flipped = second.frontends[&fe([192, 0, 2, 9], 80)];
    assert_ne!(flipped.maglev, external.maglev);
    assert_eq!(
        w.table_deletes,
        vec![(external.maglev, external.maglev_size)]
    );

    // No backends: no table, the frontend refuses.
    let (w, third) = step(&services(vec![maglev_service(&[])]), &second, true);
    assert_eq!(third.frontends[&fe([192, 0, 2, 9], 80)].maglev, 0);
    assert!(third.tables.is_empty());
    assert_eq!(w.table_deletes.len(), 1);
}

#[test]
fn an_earlier_runs_tables_stay_until_in_sync_and_are_kept_where_their_slots_match() {
    let svcs = services(vec![maglev_service(&[2, 3])]);
    let (_, first) = step(&svcs, &Programmed::default(), true);
    let old = first.frontends[&fe([192, 0, 2, 9], 80)].maglev;
    let adopted = read_back(&first);
    // Told about nothing yet: the adopted frontends keep their table.
    let (w, during) = step(&BTreeMap::new(), &adopted, false);
    assert!(w.table_deletes.is_empty());
    assert!(during.tables.contains_key(&old));
    // The state again: the table holds what the backends give, so it is
    // kept (nothing written).
    let (w, after) = step(&svcs, &during, true);
    assert_eq!(after.frontends[&fe([192, 0, 2, 9], 80)].maglev, old);
    assert!(w.is_empty(), "{w:?}");
    // A table whose slots are not what the backends give (another
    // capacity, a slot changed or missing) is replaced: a fresh table,
    // the earlier run's deleted once no frontend names it.
    for digest in [None, Some(1)] {
        let mut adopted = read_back(&first);
        if let Some(t) = adopted.tables.get_mut(&old) {
            t.digest = digest;
        }
        let (w, after) = step(&svcs, &adopted, true);
        let new = after.frontends[&fe([192, 0, 2, 9], 80)].maglev;
        assert_ne!(new, old);
        assert_eq!(w.table_deletes.len(), 1);
        assert_eq!(w.table_deletes[0].0, old);
        assert!(w.gone.is_empty(), "the list is kept: {:?}", w.gone);
    }
}

#[test]
fn a_capacity_pins_the_table_size() {
    let mut d = desired(&services(vec![maglev_service(&[2, 3])]));
    d.maglev_capacity = 100;
    let (_, p) = plan(&d, &Programmed::default(), true);
    assert_eq!(
        p.frontends[&fe([192, 0, 2, 9], 80)].maglev_size,
        manul_dataplane_api::maglev::table_size(100)
    );
}

#[test]
fn a_load_balancer_ip_is_its_own_source_when_this_node_is_in_its_ranges() {
    let lb4: IpAddr = "192.0.2.9".parse().unwrap();
    let lb6: IpAddr = "2001:db8:9::9".parse().unwrap();
    let r4: ipnet::IpNet = "10.0.0.0/24".parse().unwrap();
    let r6: ipnet::IpNet = "fd00::/64".parse().unwrap();
    let own = |ip: IpAddr| (ip, ipnet::IpNet::from(ip));
    // (ranges, this node's addresses, the source ranges wanted)
    let cases: Vec<(Vec<ipnet::IpNet>, Vec<&str>, Vec<SourceRange>)> = vec![
        // The node outside every range: the ranges alone.
        (vec![r4], vec!["10.0.1.1"], vec![(lb4, r4)]),
        (vec![r4], vec![], vec![(lb4, r4)]),
        // Inside: the address's own host prefix joins them.
        (vec![r4], vec!["10.0.0.1"], vec![(lb4, r4), own(lb4)]),
        // Per family: an IPv6 node address opens the IPv6 address only.
        (
            vec![r4, r6],
            vec!["10.0.1.1", "fd00::1"],
            vec![(lb4, r4), (lb6, r6), own(lb6)],
        ),
        (
            vec![r4, r6],
            vec!["10.0.0.1", "fd00::1"],
            vec![(lb4, r4), own(lb4), (lb6, r6), own(lb6)],
        ),
        // No ranges: no entry at all (every source is allowed).
        (vec![], vec!["10.0.0.1"], vec![]),
    ];
    for (ranges, local, want) in cases {
        let mut svc = service("web", [10, 96, 0, 10], &[2]);
        svc.load_balancer_ips = vec![lb4, lb6];
        svc.load_balancer_source_ranges = ranges.clone();
        let local: BTreeSet<IpAddr> = local.iter().map(|a| a.parse().unwrap()).collect();
        let d = desired_with(&services(vec![svc]), &local);
        let want: BTreeSet<SourceRange> = want.into_iter().collect();
        assert_eq!(d.source_ranges, want, "ranges {ranges:?}, node {local:?}");
    }
}
