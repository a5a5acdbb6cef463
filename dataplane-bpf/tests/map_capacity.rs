#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The service maps' configured sizes with real maps and real packets:
//! pods in network namespaces behind veths to a node namespace, the
//! driver in the node with small service maps. Checked: a sync that would
//! overflow a map is refused with an error naming the map and the numbers
//! while the services programmed before keep answering; once the cluster
//! shrinks back the driver converges from the whole state, no restart; a
//! write the kernel refuses in the middle of a sync (the map filled by
//! entries that appeared behind the driver's back) is retried from the
//! whole state and ends with exactly the desired entries; a restart with
//! other sizes creates the pinned maps anew at them, their entries copied
//! (the services keep answering before the resync). Everything
//! (namespaces, pins) is removed at the end, also on failure.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData};
use manul_dataplane_api::{
    Backend, Balancing, Driver, Operation, Service, ServicePort, TrafficPolicy,
};
use manul_dataplane_bpf::abi::{manul_svc_fe_key, manul_svc_fe_value};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, ServiceMapSizes};
use manul_dataplane_conformance::driver_thread::{DriverThread, chain};
use manul_dataplane_conformance::topology::Pod;
use manul_dataplane_conformance::{Factory, NodeContext};
use manul_netns::{ProbeOutcome, tcp_connect};

mod node;
mod rules;

use node::{Node, PIN_ROOT};
use rules::{allow_profile, pod_endpoint};

/// Every pod of the topology listens here.
const TARGET: u16 = 8080;

/// A node with a client pod `a` and a backend pod `b`.
fn setup(tag: &str) -> Node {
    Node::new(
        tag,
        &[
            ("a", Ipv4Addr::new(10, 66, 0, 2)),
            ("b", Ipv4Addr::new(10, 66, 0, 3)),
        ],
    )
}

/// Sizes the test changes between restarts.
fn sized(sizes: Arc<Mutex<(ServiceMapSizes, u32)>>) -> impl Fn(&mut BpfConfig) + Send + Sync {
    move |config| {
        let (service, conntrack) = *sizes.lock().unwrap();
        config.service_map_sizes = service;
        config.conntrack_capacity = conntrack;
    }
}

fn cluster_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 1, i)
}

/// Service `s{i}`: ClusterIP 10.96.1.i, port 80 to `b`'s 8080. It takes
/// two frontend entries (its port, and its address's entry).
fn service(i: u8, b: &Pod) -> Service {
    let backend = Backend {
        ip: IpAddr::V4(b.ip),
        port: TARGET,
        local: true,
        ready: true,
    };
    Service {
        namespace: "ns".into(),
        name: format!("s{i}"),
        cluster_ips: vec![IpAddr::V4(cluster_ip(i))],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: TrafficPolicy::Cluster,
        internal_traffic: TrafficPolicy::Cluster,
        affinity_timeout_seconds: None,
        health_check_node_port: None,
        balancing: Balancing::Random,
        ports: vec![ServicePort {
            name: "web".into(),
            protocol: 6,
            port: 80,
            node_port: None,
            local_backends: vec![backend],
            backends: vec![backend],
        }],
    }
}

/// The whole state with services `ids`, then `InSync`: what Felix sends
/// at start and after every refused batch.
fn whole_state(pods: &[&Pod], b: &Pod, ids: &[u8]) -> Vec<Operation> {
    let mut ops = vec![allow_profile()];
    ops.extend(pods.iter().map(|p| pod_endpoint(p, false)));
    ops.extend(ids.iter().map(|i| Operation::ServiceUpdate(service(*i, b))));
    ops.push(Operation::InSync);
    ops
}

/// Whether `a` reaches service `i` through its ClusterIP.
fn reaches(a: &Pod, i: u8) -> bool {
    let dst = SocketAddr::new(cluster_ip(i).into(), 80);
    matches!(
        tcp_connect(&a.netns, dst, Duration::from_millis(700)),
        Ok(ProbeOutcome::Connected)
    )
}

fn pin(pins: &str, map: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(pins).join("maps").join(map)
}

/// The pinned map's size.
fn max_entries(pins: &str, map: &str) -> u32 {
    MapData::from_pin(pin(pins, map))
        .and_then(|m| m.info())
        .map(|i| i.max_entries())
        .unwrap_or_else(|e| panic!("{map}: {e}"))
}

type FeMap = HashMap<MapData, manul_svc_fe_key, manul_svc_fe_value>;

fn fe_map(pins: &str) -> FeMap {
    let data = MapData::from_pin(pin(pins, "manul_svc_fe")).expect("manul_svc_fe pinned");
    HashMap::try_from(Map::HashMap(data)).expect("manul_svc_fe")
}

/// What `manul_svc_fe` holds: (address, port) of each key.
fn frontends(pins: &str) -> BTreeSet<(Ipv4Addr, u16)> {
    fe_map(pins)
        .keys()
        .map(|k| {
            let k = k.expect("key");
            (Ipv4Addr::from(k.addr.to_ne_bytes()), u16::from_be(k.port))
        })
        .collect()
}

/// The frontend entries services `ids` take.
fn expected(ids: &[u8]) -> BTreeSet<(Ipv4Addr, u16)> {
    ids.iter()
        .flat_map(|i| [(cluster_ip(*i), 80), (cluster_ip(*i), 0)])
        .collect()
}

fn small(frontend: u32) -> (ServiceMapSizes, u32) {
    (
        ServiceMapSizes {
            frontend,
            backend: 64,
            affinity: 64,
        },
        4096,
    )
}

#[test]
fn a_full_service_map_refuses_the_sync_names_the_map_and_converges_when_the_cluster_shrinks() {
    if !node::root() {
        return;
    }
    let setup = setup("cap");
    let (a, b) = (setup.pod("a"), setup.pod("b"));
    let sizes = Arc::new(Mutex::new(small(8)));
    let driver = setup.driver(sized(sizes));
    assert_eq!(max_entries(setup.name(), "manul_svc_fe"), 8);
    assert_eq!(max_entries(setup.name(), "manul_svc_be"), 64);
    assert_eq!(max_entries(setup.name(), "manul_svc_aff"), 64);
    assert_eq!(max_entries(setup.name(), "manul_ct"), 4096);

    // Four services take the 8 frontend entries exactly.
    driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2, 3]))
        .expect("four services fit");
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2, 3]));
    assert!(reaches(a, 0) && reaches(a, 3), "the four answer");

    // Two more do not fit: the batch is refused, naming the map and the
    // numbers; nothing of it is written, the four keep answering.
    let mut more = vec![
        Operation::ServiceUpdate(service(4, b)),
        Operation::ServiceUpdate(service(5, b)),
    ];
    let err = driver.apply(more.clone()).expect_err("12 entries in 8");
    println!("refused: {err}");
    assert!(
        err.to_string()
            .contains("map manul_svc_fe would need 12 entries, but holds at most 8"),
        "{err}"
    );
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2, 3]));
    assert!(reaches(a, 0) && reaches(a, 3), "the four still answer");
    assert!(!reaches(a, 4), "a service that did not fit is not served");

    // The resync from the whole state (as Felix sends it after a refused
    // batch) is refused too while the cluster is too big.
    let err = driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2, 3, 4, 5]))
        .expect_err("the resync does not fit either");
    assert!(err.to_string().contains("manul_svc_fe"), "{err}");
    assert!(reaches(a, 1), "still served after a refused resync");

    // Two of the first go: the six left fit once what leaves is deleted
    // first (together they would need 12 again).
    driver
        .apply(whole_state(&[a, b], b, &[2, 3, 4, 5]))
        .expect("the shrunk cluster converges without a restart");
    assert_eq!(frontends(setup.name()), expected(&[2, 3, 4, 5]));
    for i in [2, 3, 4, 5] {
        assert!(reaches(a, i), "s{i} answers after converging");
    }
    assert!(!reaches(a, 0), "a deleted service is gone");

    // Incremental changes go on from there: one out, one in.
    more.clear();
    more.push(Operation::ServiceRemove {
        namespace: "ns".into(),
        name: "s2".into(),
    });
    more.push(Operation::ServiceUpdate(service(6, b)));
    driver.apply(more).expect("one out, one in");
    assert_eq!(frontends(setup.name()), expected(&[3, 4, 5, 6]));
    assert!(reaches(a, 6));
    drop(driver);
}

#[test]
fn a_write_the_kernel_refuses_mid_sync_is_retried_from_the_whole_state() {
    if !node::root() {
        return;
    }
    let setup = setup("wrf");
    let (a, b) = (setup.pod("a"), setup.pod("b"));
    let sizes = Arc::new(Mutex::new(small(8)));
    let driver = setup.driver(sized(sizes));
    driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2]))
        .expect("three services");
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2]));

    // Two entries appear in the map behind the driver's back (another
    // writer of the pinned map): it is full, which the driver's own count
    // (6 of 8) cannot know, so the capacity check passes and the kernel
    // refuses the write itself.
    let mut fe = fe_map(setup.name());
    for last in [200u8, 201] {
        let key = manul_svc_fe_key {
            addr: u32::from_ne_bytes(Ipv4Addr::new(10, 96, 9, last).octets()),
            port: 80u16.to_be(),
            proto: 6,
            scope: 0,
        };
        let value = manul_svc_fe_value {
            id: 999,
            count: 0,
            affinity_s: 0,
            flags: 0,
            maglev: 0,
            maglev_size: 0,
        };
        fe.insert(key, value, 0).expect("a foreign entry");
    }
    drop(fe);
    let err = driver
        .apply(vec![Operation::ServiceUpdate(service(3, b))])
        .expect_err("the kernel refuses a write into the full map");
    println!("refused by the kernel: {err}");
    let text = err.to_string();
    assert!(
        text.contains("manul_svc_fe") && text.contains("cannot write a frontend"),
        "{text}"
    );
    assert!(
        !text.contains("would need"),
        "not the capacity check: {text}"
    );
    assert!(reaches(a, 0) && reaches(a, 2), "the three keep answering");
    assert!(!reaches(a, 3));

    // The resync from the whole state: the maps are read back, what
    // nobody wants (the foreign entries) is deleted before the new
    // entries are written, and the map ends holding exactly the desired
    // state.
    driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2, 3]))
        .expect("the resync converges");
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2, 3]));
    for i in 0..4 {
        assert!(reaches(a, i), "s{i} answers after the resync");
    }
    drop(driver);
}

#[test]
fn a_restart_with_other_sizes_creates_the_maps_anew_with_their_entries() {
    if !node::root() {
        return;
    }
    let setup = setup("rsz");
    let (a, b) = (setup.pod("a"), setup.pod("b"));
    let sizes = Arc::new(Mutex::new(small(8)));
    let driver = setup.driver(sized(sizes.clone()));
    let state = whole_state(&[a, b], b, &[0, 1, 2, 3]);
    driver.apply(state.clone()).expect("four services");
    assert!(reaches(a, 0) && reaches(a, 3));
    let ct = |pins: &str| {
        let data = MapData::from_pin(pin(pins, "manul_ct")).expect("manul_ct");
        let map: HashMap<
            MapData,
            manul_dataplane_bpf::abi::manul_ct_key,
            manul_dataplane_bpf::abi::manul_ct_value,
        > = HashMap::try_from(Map::HashMap(data)).expect("manul_ct");
        map.keys().count()
    };
    let tracked = ct(setup.name());
    assert!(tracked > 0, "the connections are tracked");

    // Bigger maps: created anew at the new sizes, the entries copied, so
    // the services answer right after the restart, before any resync.
    *sizes.lock().unwrap() = (
        ServiceMapSizes {
            frontend: 32,
            backend: 128,
            affinity: 256,
        },
        8192,
    );
    driver.restart().expect("restart with other sizes");
    assert_eq!(max_entries(setup.name(), "manul_svc_fe"), 32);
    assert_eq!(max_entries(setup.name(), "manul_svc_fe6"), 32);
    assert_eq!(max_entries(setup.name(), "manul_svc_be"), 128);
    assert_eq!(max_entries(setup.name(), "manul_svc_aff"), 256);
    assert_eq!(max_entries(setup.name(), "manul_ct"), 8192);
    assert!(
        !pin(setup.name(), "manul_svc_fe-resized").exists(),
        "the old map's pin is removed"
    );
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2, 3]), "copied");
    assert!(ct(setup.name()) >= tracked, "conntrack copied");
    assert!(reaches(a, 0) && reaches(a, 3), "served before the resync");
    driver.apply(state.clone()).expect("resync");
    // The new room is there: eight more services fit.
    driver
        .apply(whole_state(
            &[a, b],
            b,
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        ))
        .expect("twelve services in 32 entries");
    assert!(reaches(a, 11));

    // Smaller than what it holds: the entries that fit are copied, and
    // the resync is refused naming the map until the cluster fits.
    *sizes.lock().unwrap() = small(8);
    driver.restart().expect("restart with a smaller map");
    assert_eq!(max_entries(setup.name(), "manul_svc_fe"), 8);
    assert_eq!(frontends(setup.name()).len(), 8, "as many as fit");
    let err = driver
        .apply(whole_state(
            &[a, b],
            b,
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        ))
        .expect_err("24 entries in 8");
    assert!(err.to_string().contains("manul_svc_fe"), "{err}");
    driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2, 3]))
        .expect("the cluster shrunk to fit");
    assert_eq!(frontends(setup.name()), expected(&[0, 1, 2, 3]));
    assert!(reaches(a, 0) && reaches(a, 3));
    drop(driver);
}

#[test]
fn map_sizes_of_zero_or_beyond_the_limit_are_refused_naming_the_setting() {
    let mut config = BpfConfig::new("n");
    config.service_map_sizes.frontend = 0;
    let err = config.validate().expect_err("0 frontends").to_string();
    assert!(
        err.contains("bpfMapSizeNATFrontend") && err.contains(" 0 "),
        "{err}"
    );
    config.service_map_sizes.frontend = 8;
    config.conntrack_capacity = u32::MAX;
    let err = config.validate().expect_err("4 Gi entries").to_string();
    assert!(err.contains("bpfMapSizeConntrack"), "{err}");
    config.conntrack_capacity = 1024;
    assert!(config.validate().is_ok());
    // The driver refuses to start on it, before touching the kernel.
    config.service_map_sizes.backend = 0;
    let err = BpfDriver::load(&config).expect_err("refused").to_string();
    assert!(err.contains("bpfMapSizeNATBackend"), "{err}");
}

#[test]
fn the_early_load_keeps_the_pinned_sizes_and_start_resizes_to_the_configured_ones() {
    if !node::root() {
        return;
    }
    let setup = setup("pre");
    let (a, b) = (setup.pod("a"), setup.pod("b"));
    let sizes = Arc::new(Mutex::new(small(8)));
    let driver = setup.driver(sized(sizes));
    driver
        .apply(whole_state(&[a, b], b, &[0, 1]))
        .expect("two services");
    drop(driver);

    // Felix's early load, with the sizes it knows before the datastore's
    // (here 16 frontends): the pinned map keeps its 8; then `start` with
    // the configuration (16) loads again and creates the map anew.
    let seen = Arc::new(Mutex::new(None));
    let pins = setup.name().to_string();
    let seen_in = seen.clone();
    let early: Arc<Factory> = Arc::new(move |_: &NodeContext| {
        let mut config = node::config(&pins);
        (config.service_map_sizes, config.conntrack_capacity) = small(16);
        let loaded = BpfDriver::preload(&config).map_err(|e| chain(&e))?;
        *seen_in.lock().unwrap() = Some(max_entries(&pins, "manul_svc_fe"));
        BpfDriver::start(config, loaded)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let driver = DriverThread::start(setup.ns(), setup.pins.context(), early).expect("driver");
    assert_eq!(*seen.lock().unwrap(), Some(8), "the early load resized");
    assert_eq!(max_entries(setup.name(), "manul_svc_fe"), 16);
    assert_eq!(frontends(setup.name()), expected(&[0, 1]), "copied");
    assert!(reaches(a, 0) && reaches(a, 1), "served before the resync");
    driver
        .apply(whole_state(&[a, b], b, &[0, 1, 2, 3, 4, 5]))
        .expect("six services in 16 entries");
    assert!(reaches(a, 5));
    drop(driver);
}
