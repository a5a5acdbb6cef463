//! The shared service cases (`manul_dataplane_conformance::services`)
//! against the iptables (nftables) driver, on the real kernel in network
//! namespaces the cases create.

mod common;

use std::process::Command;

use manul_dataplane_api::Driver;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::privileges;
use manul_dataplane_conformance::services::{
    run_contested_cases, run_dual_stack_cases, run_local_policy_cases, run_service_cases,
};
use manul_dataplane_iptables::{Nft, NftDriver};

#[test]
fn service_cases() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory = common::nft_factory();
    match run_service_cases("sv", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn dual_stack_cases() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory = common::nft_factory();
    match run_dual_stack_cases("s6", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}

/// Services contesting an external IP and a node port, one under
/// `externalTrafficPolicy: Cluster` and one under `Local` (or without
/// backends): the first keeps every frontend for every source, with its
/// own source-address semantics; removed, the other takes them.
#[test]
fn contested_frontend_cases() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory = common::nft_factory();
    match run_contested_cases("sc", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}

/// `Local` traffic policies with backends on other nodes: the local
/// backend only; dropped when every backend is elsewhere.
#[test]
fn local_policy_cases() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let factory = common::nft_factory();
    match run_local_policy_cases("sl", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
}

/// One service through every kind of change, each written as an
/// incremental transaction the kernel must accept, with a clean refresh
/// after each, also when the affinity sets hold clients (the packet path
/// fills them).
#[test]
fn every_kind_of_service_change_is_accepted_by_the_kernel() {
    use manul_dataplane_api::testutil::{ip, service};
    use manul_dataplane_api::{Backend, Operation, TrafficPolicy};
    use manul_dataplane_iptables::Refresh;
    use manul_netns::NetNs;

    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let ns = NetNs::create(&manul_netns::unique_prefix("svck")).expect("namespace");
    ns.run(|| {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        let backend = |a: &str| Backend {
            ip: ip(a),
            port: 8080,
            local: true,
            ready: true,
        };
        let mut svc = service("prod", "web");
        svc.cluster_ips = vec![ip("10.96.0.10"), ip("fd00:96::10")];
        svc.load_balancer_ips = vec![ip("198.51.100.10")];
        svc.ports[0].node_port = Some(30080);
        let mut steps = vec![("first", svc.clone())];
        let mut s = svc.clone();
        s.ports[0].backends = vec![backend("10.0.0.1"), backend("10.0.0.2"), backend("fd00::2")];
        s.ports[0].local_backends = s.ports[0].backends.clone();
        steps.push(("more backends, both families", s.clone()));
        // As many backends as before: element changes alone (netlink).
        s.ports[0].backends[1] = backend("10.0.0.4");
        s.ports[0].local_backends = s.ports[0].backends.clone();
        steps.push(("a backend replaced", s.clone()));
        s.affinity_timeout_seconds = Some(10800);
        steps.push(("affinity on", s.clone()));
        s.affinity_timeout_seconds = Some(60);
        steps.push(("affinity timeout changed", s.clone()));
        s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
        s.external_traffic = TrafficPolicy::Local;
        s.internal_traffic = TrafficPolicy::Local;
        steps.push(("Local policies, source ranges", s.clone()));
        s.ports[0].local_backends.clear();
        steps.push(("no local backends", s.clone()));
        s.ports[0].backends.clear();
        steps.push(("no backends at all", s.clone()));
        s.affinity_timeout_seconds = None;
        s.ports[0].backends = vec![backend("10.0.0.3")];
        s.ports[0].local_backends = s.ports[0].backends.clone();
        steps.push(("affinity off, a new backend", s));
        let mut first = true;
        for (what, svc) in steps {
            let mut batch = vec![Operation::ServiceUpdate(svc)];
            if first {
                batch.push(Operation::InSync);
                first = false;
            }
            d.apply(&batch)
                .unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
            // What the packet path adds to affinity sets is no drift.
            let listing = Command::new("nft")
                .args(["list", "sets", "inet"])
                .output()
                .expect("nft list sets");
            let listing = String::from_utf8_lossy(&listing.stdout).to_string();
            let mut filled = 0;
            for set in listing
                .lines()
                .filter_map(|l| l.trim().strip_prefix("set mnl-aff4-"))
                .filter_map(|l| l.split_whitespace().next())
            {
                let out = Command::new("nft")
                    .args([
                        "add",
                        "element",
                        "inet",
                        "manul",
                        &format!("mnl-aff4-{set}"),
                        "{ 192.0.2.9 }",
                    ])
                    .output()
                    .expect("nft add element");
                assert!(out.status.success(), "{what}: {out:?}");
                filled += 1;
            }
            // Affinity with backends to pick from: sets to fill (with
            // no local backend, the cluster backends that pods and the
            // node itself still reach through the external chain).
            let with_sets = [
                "affinity on",
                "affinity timeout changed",
                "Local policies, source ranges",
                "no local backends",
            ];
            assert_eq!(
                filled > 0,
                with_sets.contains(&what),
                "{what}: {filled} sets"
            );
            assert_eq!(d.refresh().expect("refresh"), Refresh::Clean, "{what}");
        }
        // Another service claiming the same address, port and node port
        // does not fail the transaction; its source ranges are merged
        // with the first's for the address (203.0.112.0/23 replaces the
        // first's 203.0.113.0/24 in the set, in one transaction).
        let mut twin = svc.clone();
        twin.name = "twin".into();
        twin.load_balancer_source_ranges = vec![
            "203.0.112.0/24".parse().unwrap(),
            "198.18.0.0/15".parse().unwrap(),
        ];
        d.apply(&[Operation::ServiceUpdate(twin)])
            .unwrap_or_else(|e| panic!("conflicting service: {}", chain(&e)));
        assert_eq!(d.refresh().expect("refresh"), Refresh::Clean, "conflict");
        let listing = Command::new("nft")
            .args(["list", "set", "inet", "manul", "mnl-lb-src4"])
            .output()
            .expect("nft list set");
        let listing = String::from_utf8_lossy(&listing.stdout).to_string();
        assert!(
            listing.contains("198.51.100.10 . 203.0.112.0/23")
                && listing.contains("198.51.100.10 . 198.18.0.0/15"),
            "{listing}"
        );
        d.apply(&[Operation::ServiceRemove {
            namespace: "prod".into(),
            name: "twin".into(),
        }])
        .unwrap_or_else(|e| panic!("remove the twin: {}", chain(&e)));
        d.apply(&[Operation::ServiceRemove {
            namespace: "prod".into(),
            name: "web".into(),
        }])
        .unwrap_or_else(|e| panic!("remove: {}", chain(&e)));
        assert_eq!(
            d.refresh().expect("refresh"),
            Refresh::Clean,
            "after removal"
        );
        let stats = d.stats();
        assert_eq!(stats.repairs, 0);
        assert!(stats.incremental_writes >= 8, "{stats:?}");
        assert!(stats.netlink_writes >= 1, "{stats:?}");
        d.remove_all().expect("remove the table");
    })
    .expect("run in namespace");
}

/// A netlink element batch is one transaction: when one of its messages
/// is refused (deleting an element that is not there), nothing of it is
/// applied, and the error names the message.
#[test]
fn a_refused_element_batch_leaves_the_table_as_it_was() {
    use manul_dataplane_iptables::element::{Element, Value};
    use manul_dataplane_iptables::elements::{SetChange, batch};
    use manul_dataplane_iptables::{NftError, netlink};
    use manul_netns::NetNs;

    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let ns = NetNs::create(&manul_netns::unique_prefix("svnl")).expect("namespace");
    ns.run(|| {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        d.apply(&[manul_dataplane_api::Operation::InSync])
            .expect("in sync");
        let list = || {
            let out = Command::new("nft")
                .args(["list", "set", "inet", "manul", "mnl-cluster-ips4"])
                .output()
                .expect("nft list set");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let addr = |a: &str| Element::key(vec![Value::Addr(a.parse().expect("an address"))]);
        let (e1, e2, e3) = (addr("10.96.0.1"), addr("10.96.0.2"), addr("10.96.0.3"));
        let add = |e| SetChange {
            set: "mnl-cluster-ips4",
            type_: "ipv4_addr",
            add: true,
            elements: vec![e],
        };
        netlink::apply(&batch(&[add(&e1)], 1).unwrap()).expect("a good batch");
        assert!(list().contains("10.96.0.1"), "{}", list());
        let refused = batch(
            &[
                add(&e2),
                SetChange {
                    set: "mnl-cluster-ips4",
                    type_: "ipv4_addr",
                    add: false,
                    elements: vec![&e3],
                },
            ],
            10,
        )
        .unwrap();
        match netlink::apply(&refused) {
            Err(NftError::Refused { stderr }) => {
                assert!(
                    stderr.contains("deleting 1 elements of mnl-cluster-ips4"),
                    "{stderr}"
                );
            }
            other => panic!("not refused: {other:?}"),
        }
        let now = list();
        assert!(
            now.contains("10.96.0.1") && !now.contains("10.96.0.2"),
            "{now}"
        );
        d.remove_all().expect("remove the table");
    })
    .expect("run in namespace");
}

/// The whole table as one netlink batch (`full_write`): with services,
/// it is written from the driver's process (not through `nft -f`), and a
/// later whole-table batch the kernel refuses (one element naming a chain
/// that does not exist) applies nothing: the table is as it was.
#[test]
fn a_refused_whole_table_batch_leaves_the_table_as_it_was() {
    use manul_dataplane_api::testutil::{ip, service};
    use manul_dataplane_api::{Backend, DesiredState, Operation};
    use manul_dataplane_iptables::full_write::{self, FullWriteError};
    use manul_dataplane_iptables::render::{NftConfig, render_with};
    use manul_netns::NetNs;

    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let ns = NetNs::create(&manul_netns::unique_prefix("svfw")).expect("namespace");
    ns.run(|| {
        let mut d = NftDriver::new(Nft::default()).expect("driver");
        let mut svc = service("prod", "dns");
        svc.cluster_ips = vec![ip("10.96.0.53")];
        svc.ports[0].protocol = 17;
        svc.ports[0].port = 53;
        svc.ports[0].backends = vec![Backend {
            ip: ip("10.0.0.53"),
            port: 5353,
            local: true,
            ready: true,
        }];
        svc.ports[0].local_backends = svc.ports[0].backends.clone();
        d.apply(&[Operation::ServiceUpdate(svc.clone()), Operation::InSync])
            .unwrap_or_else(|e| panic!("in sync: {}", chain(&e)));
        // The empty table at the start was one such batch.
        assert!(d.stats().netlink_full_writes >= 1, "{:?}", d.stats());
        let list = || {
            let out = Command::new("nft")
                .args(["list", "table", "inet", "manul"])
                .output()
                .expect("nft list table");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let before = list();
        assert!(
            before.contains("10.96.0.53 . udp . 53 . 0 : 10.0.0.53 . 5353"),
            "{before}"
        );

        // The same state plus a second service, and one entry that names
        // a chain the table does not have.
        let mut state = DesiredState::default();
        let mut other = svc.clone();
        other.name = "other".into();
        other.cluster_ips = vec![ip("10.96.0.54")];
        for s in [svc, other] {
            state
                .services
                .insert((s.namespace.clone(), s.name.clone()), s);
        }
        let mut rs = render_with(&state, &NftConfig::default());
        let bad = manul_dataplane_iptables::element::Element::verdict(
            {
                use manul_dataplane_iptables::element::Value;
                vec![
                    Value::Addr("10.96.0.99".parse().expect("an address")),
                    Value::Proto(6),
                    Value::Port(80),
                ]
            },
            manul_dataplane_iptables::element::Verb::Goto,
            "mnl-no-such-chain",
        );
        rs.sets
            .get_mut("mnl-svc-ips4")
            .expect("the cluster IP map")
            .elements
            .insert(bad.clone());
        match full_write::write(
            &Nft::default(),
            &mut manul_dataplane_iptables::netlink::Writer::default(),
            &rs,
            1000,
        ) {
            Err(FullWriteError::Kernel(e)) => {
                let text = manul_dataplane_api::chain(&e);
                assert!(text.contains("elements of mnl-svc-ips4"), "{text}");
            }
            other => panic!("not refused by the kernel: {other:?}"),
        }
        assert_eq!(list(), before);

        // Without the bad entry, the same batch is taken whole.
        rs.sets
            .get_mut("mnl-svc-ips4")
            .expect("the cluster IP map")
            .elements
            .remove(&bad);
        let written = full_write::write(
            &Nft::default(),
            &mut manul_dataplane_iptables::netlink::Writer::default(),
            &rs,
            2000,
        )
        .expect("the batch");
        assert!(written.messages > 10, "{written:?}");
        let after = list();
        assert!(
            after.contains("10.96.0.54 . udp . 53 . 0 : 10.0.0.53 . 5353"),
            "{after}"
        );
        d.remove_all().expect("remove the table");
    })
    .expect("run in namespace");
}
