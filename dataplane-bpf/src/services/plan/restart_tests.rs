//! A restart from the planner's side: from what a restarted driver reads
//! back ([`read_back`], as `ServiceMaps::read` gives it) of a programmed
//! state, the same services take their lists (and Maglev tables) back and
//! write, reset and clean up nothing; a backend removed during the
//! downtime is the only one gone. Every kind of list: random and Maglev
//! picks, affinity, `Local` policies, node ports, IPv6.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::{Backend, Service, TrafficPolicy};

use super::tests::{ba, maglev_service, read_back, service, services, step};
use super::*;

/// An IPv6 backend (its last group `d`).
fn backend6(d: u8) -> Backend {
    Backend {
        ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, u16::from(d))),
        port: 8080,
        local: d.is_multiple_of(2),
        ready: true,
    }
}

fn ba6(d: u8) -> BackendAddr {
    let b = backend6(d);
    BackendAddr {
        addr: b.ip,
        port: b.port,
    }
}

/// A Maglev table's list id and backends.
type Built = (u32, Vec<BackendAddr>);

/// A case: a name and its services with the backends numbered `backends`.
type Case = (&'static str, fn(&[u8]) -> BTreeMap<ServiceKey, Service>);

fn cases() -> Vec<Case> {
    vec![
        ("cluster ip", |b| {
            services(vec![service("web", [10, 96, 0, 10], b)])
        }),
        ("affinity", |b| {
            let mut s = service("sticky", [10, 96, 0, 11], b);
            s.affinity_timeout_seconds = Some(60);
            services(vec![s])
        }),
        ("maglev: cluster ip, external ip, node port", |b| {
            services(vec![maglev_service(b)])
        }),
        ("maglev with affinity", |b| {
            let mut s = maglev_service(b);
            s.affinity_timeout_seconds = Some(30);
            services(vec![s])
        }),
        ("local policies, node port", |b| {
            let mut s = service("local", [10, 96, 0, 12], b);
            s.internal_traffic = TrafficPolicy::Local;
            s.external_traffic = TrafficPolicy::Local;
            s.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12))];
            s.ports[0].node_port = Some(30012);
            services(vec![s])
        }),
        ("dual stack", |b| {
            let mut s = service("dual", [10, 96, 0, 13], b);
            s.cluster_ips
                .push(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 13)));
            let six: Vec<Backend> = b.iter().map(|d| backend6(*d)).collect();
            s.ports[0].backends.extend(six.iter().copied());
            s.ports[0]
                .local_backends
                .extend(six.iter().copied().filter(|b| b.local));
            services(vec![s])
        }),
        ("ipv6 maglev", |b| {
            let mut s = maglev_service(&[]);
            s.cluster_ips = vec![IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 14))];
            s.external_ips = vec![IpAddr::V6(Ipv6Addr::new(0xfd00, 0x2, 0, 0, 0, 0, 0, 14))];
            s.ports[0].backends = b.iter().map(|d| backend6(*d)).collect();
            s.ports[0].local_backends = s.ports[0].backends.clone();
            services(vec![s])
        }),
        ("several services, one contested cluster ip", |b| {
            let mut ports = service("ports", [10, 96, 0, 15], b);
            ports.ports.push(ports.ports[0].clone());
            ports.ports[1].name = "alt".into();
            ports.ports[1].port = 81;
            ports.ports[1].backends.truncate(1);
            ports.ports[1].local_backends.clear();
            services(vec![
                service("a-first", [10, 96, 0, 16], b),
                service("b-second", [10, 96, 0, 16], &[9]),
                service("empty", [10, 96, 0, 17], &[]),
                ports,
            ])
        }),
    ]
}

/// The list ids of `p`'s frontends, by frontend.
fn ids(p: &Programmed) -> BTreeMap<Frontend, u32> {
    p.frontends.iter().map(|(f, e)| (*f, e.id)).collect()
}

#[test]
fn the_same_services_after_a_restart_write_reset_and_clean_up_nothing() {
    for (name, svcs) in cases() {
        let svcs = svcs(&[2, 3, 4]);
        let (_, before) = step(&svcs, &Programmed::default(), true);
        assert!(!before.lists.is_empty(), "{name}");
        // Told the state in one batch with InSync, or before it.
        for in_sync in [true, false] {
            let (w, after) = step(&svcs, &read_back(&before), in_sync);
            assert!(w.is_empty(), "{name} (in sync {in_sync}): {w:?}");
            assert!(w.gone.is_empty(), "{name}: {:?}", w.gone);
            assert_eq!(after.frontends, before.frontends, "{name}");
            assert_eq!(after.ids, before.ids, "{name}");
            assert_eq!(after.lists, before.lists, "{name}");
            // Each table's id, size and what it was built from.
            let built = |p: &Programmed| -> Vec<(u32, u32, Option<Built>)> {
                p.tables
                    .iter()
                    .map(|(id, t)| (*id, t.size, t.built.clone()))
                    .collect()
            };
            assert_eq!(built(&after), built(&before), "{name}");
            // And InSync after it changes nothing either.
            let (w, _) = step(&svcs, &after, true);
            assert!(w.is_empty() && w.gone.is_empty(), "{name}: {w:?}");
        }
    }
}

#[test]
fn a_backend_removed_while_down_is_the_only_one_gone() {
    for (name, svcs) in cases() {
        let (_, before) = step(&svcs(&[2, 3, 4]), &Programmed::default(), true);
        let fewer = svcs(&[3, 4]);
        for in_sync in [true, false] {
            let (w, after) = step(&fewer, &read_back(&before), in_sync);
            // Every list keeps its id; each that held 2 lost it, and only it.
            assert_eq!(ids(&after), ids(&before), "{name}");
            let want: BTreeMap<u32, BTreeSet<BackendAddr>> = before
                .lists
                .iter()
                .filter_map(|(id, l)| {
                    let gone: BTreeSet<BackendAddr> = l
                        .iter()
                        .copied()
                        .filter(|b| *b == ba(2) || *b == ba6(2))
                        .collect();
                    (!gone.is_empty()).then_some((*id, gone))
                })
                .collect();
            assert!(!want.is_empty(), "{name}: no list held backend 2");
            assert_eq!(w.gone, want, "{name} (in sync {in_sync})");
        }
    }
}

#[test]
fn a_list_a_kept_frontend_names_is_replaced() {
    // An external IP removed during the downtime: before InSync its
    // frontend is kept as it is, so the list it names cannot change under
    // it; the service moves to a new list (`step` checks that no frontend
    // ever points at a missing index), and InSync removes the old one.
    let svcs = |b: &[u8], external: bool| {
        let mut s = service("web", [10, 96, 0, 10], b);
        if external {
            s.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))];
        }
        services(vec![s])
    };
    let (_, before) = step(&svcs(&[2, 3, 4], true), &Programmed::default(), true);
    let old = before.ids.values().copied().collect::<Vec<_>>();
    assert_eq!(old.len(), 1);
    let (w, during) = step(&svcs(&[2], false), &read_back(&before), false);
    assert!(w.gone.is_empty(), "{:?}", w.gone);
    let cluster = Frontend {
        addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        port: 80,
        proto: PROTO_TCP,
        in_cluster: false,
    };
    assert_ne!(during.frontends[&cluster].id, old[0]);
    let (w, _) = step(&svcs(&[2], false), &during, true);
    assert_eq!(
        w.gone.get(&old[0]),
        Some(&[ba(2), ba(3), ba(4)].into_iter().collect())
    );
}

mod sequences {
    use proptest::prelude::*;

    use super::*;

    /// One service: cluster IP (from a pool of three, so names contend
    /// for frontends), backends, affinity, Maglev.
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

    /// The services of `state`, without backend `removed`.
    fn build(state: &[Option<ServiceState>], removed: Option<u8>) -> BTreeMap<ServiceKey, Service> {
        services(
            state
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                .map(|(i, (ip, backends, affinity, maglev))| {
                    let b: Vec<u8> = backends
                        .iter()
                        .copied()
                        .filter(|d| Some(*d) != removed)
                        .collect();
                    let mut svc = service(&format!("s{i}"), [10, 96, 0, *ip], &b);
                    svc.affinity_timeout_seconds = affinity.then_some(10);
                    if *maglev {
                        svc.balancing = manul_dataplane_api::Balancing::Maglev;
                        svc.external_ips = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, *ip))];
                    }
                    svc
                })
                .collect(),
        )
    }

    proptest! {
        /// From any programmed state (reached through an earlier one, so
        /// ids are not in name order), a restart told the same services
        /// writes and cleans up nothing, and one told them without a
        /// backend loses exactly that backend from the lists that held it
        /// (ids kept).
        #[test]
        fn a_restart_disturbs_only_a_removed_backend(
            earlier in state(),
            now in state(),
            removed in prop::option::of(2u8..8),
            in_sync in any::<bool>(),
        ) {
            let (_, p) = step(&build(&earlier, None), &Programmed::default(), true);
            let (_, before) = step(&build(&now, None), &p, true);
            let (w, after) = step(&build(&now, removed), &read_back(&before), in_sync);
            let want: BTreeMap<u32, BTreeSet<BackendAddr>> = before
                .lists
                .iter()
                .filter_map(|(id, l)| {
                    let gone: BTreeSet<BackendAddr> = l
                        .iter()
                        .copied()
                        .filter(|b| removed.is_some_and(|r| *b == ba(r)))
                        .collect();
                    (!gone.is_empty()).then_some((*id, gone))
                })
                .collect();
            prop_assert_eq!(&w.gone, &want);
            prop_assert_eq!(ids(&after), ids(&before));
            if removed.is_none() {
                prop_assert!(w.is_empty(), "{:?}", w);
            }
        }
    }
}
