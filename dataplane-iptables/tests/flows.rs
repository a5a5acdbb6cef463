//! Flow observations on the kernel: two pods on a node (network namespaces
//! the test creates), the driver with flows on, real connections allowed
//! and denied; the observations name the right deciding rules, endpoints
//! and counts; then the shared flow cases through services of both
//! families.
//!
//! Each says where the driver found a connection's Service frontend on
//! this kernel: the log records' conntrack entries (`NFULA_CT`) or, on a
//! kernel without `CONFIG_NETFILTER_NETLINK_GLUE_CT`, the log of each
//! translated connection's first packet before DNAT. With
//! `MANUL_REQUIRE_GLUE_CT=1` (set where the kernel is known to have it,
//! as `scripts/kernel-vm.sh` does) the second is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manul_dataplane_api::testutil::{eid, pid, rule};
use manul_dataplane_api::verdict::Decider;
use manul_dataplane_api::{
    Action, Driver, FlowObservation, FlowPhase, IpSetKind, IpSetMember, Match, Operation, Policy,
    PortRange, Reporter, TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::{Factory, privileges};
use manul_dataplane_iptables::{FlowLog, FrontendSource, Nft, NftConfig, NftDriver};
use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, TcpServer, open_connection, plumb_pod, tcp_connect};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 67, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 67, 0, 20);
const ALLOWED: u16 = 8080;
const DENIED_BY_RULE: u16 = 9090;
const DENIED_BY_DEFAULT: u16 = 7070;

fn port(p: u16) -> Vec<PortRange> {
    vec![PortRange { first: p, last: p }]
}

fn operations() -> Vec<Operation> {
    let policy = pid("default", "flows/server");
    let tcp_to = |id: &str, action, p| manul_dataplane_api::Rule {
        protocol: Some(6),
        dst: Match {
            ports: port(p),
            ..Match::default()
        },
        ..rule(id, action)
    };
    let endpoint = |name: &str, ip: Ipv4Addr, tiers| {
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: eid("flows", name),
            interface_name: workload_interface_name("flows", name),
            nets: vec![format!("{ip}/32").parse().unwrap()],
            mac: None,
            tiers,
            profiles: vec!["kns.flows".into()],
        })
    };
    vec![
        Operation::IpSetUpdate {
            id: "sel:client".into(),
            kind: IpSetKind::Net,
            members: vec![IpSetMember::Net(format!("{CLIENT}/32").parse().unwrap())],
        },
        Operation::ProfileUpdate {
            id: "kns.flows".into(),
            profile: Policy {
                inbound: vec![],
                outbound: vec![rule("kns.flows/outbound/0", Action::Allow)],
            },
        },
        Operation::PolicyUpdate {
            id: policy.clone(),
            policy: Policy {
                inbound: vec![
                    manul_dataplane_api::Rule {
                        src: Match {
                            ip_sets: vec!["sel:client".into()],
                            ..Match::default()
                        },
                        ..tcp_to("flows/server/inbound/0", Action::Allow, ALLOWED)
                    },
                    tcp_to("flows/server/inbound/1", Action::Deny, DENIED_BY_RULE),
                ],
                outbound: vec![],
            },
        },
        endpoint("client", CLIENT, vec![]),
        endpoint(
            "server",
            SERVER,
            vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![policy],
                outbound: vec![],
            }],
        ),
        Operation::InSync,
    ]
}

/// Says which source the driver used and, with `MANUL_REQUIRE_GLUE_CT=1`,
/// fails unless it was the log records' own conntrack entries.
fn check_frontend_source(source: Option<FrontendSource>) {
    let source = source.expect("flows are on: the driver has a frontend source");
    eprintln!("frontend source: {source:?}");
    if std::env::var("MANUL_REQUIRE_GLUE_CT").as_deref() == Ok("1") {
        assert_eq!(
            source,
            FrontendSource::LogRecords,
            "MANUL_REQUIRE_GLUE_CT=1 but the kernel refused to attach conntrack entries \
             to log records (NFULA_CT): the log before DNAT was used instead"
        );
    }
}

fn server_rule(index: usize) -> Decider {
    Decider::Rule {
        policy: Some(pid("default", "flows/server")),
        profile: None,
        rule_id: format!("flows/server/inbound/{index}"),
    }
}

fn find(
    obs: &[FlowObservation],
    phase: FlowPhase,
    reporter: Reporter,
    dst_port: u16,
) -> Option<&FlowObservation> {
    obs.iter()
        .find(|o| o.phase == phase && o.reporter == reporter && o.tuple.dst_port == dst_port)
}

/// A node namespace with the client and server pods plumbed in.
fn pods(tag: &str) -> (NetNs, NetNs, NetNs) {
    let prefix = manul_netns::unique_prefix(tag);
    let node = NetNs::create(&format!("{prefix}-n")).expect("node");
    let client = NetNs::create(&format!("{prefix}-c")).expect("client");
    let server = NetNs::create(&format!("{prefix}-s")).expect("server");
    for (ns, name, ip) in [(&client, "client", CLIENT), (&server, "server", SERVER)] {
        plumb_pod(
            &node,
            ns,
            &workload_interface_name("flows", name),
            "eth0",
            ip,
        )
        .expect("plumb");
    }
    (node, client, server)
}

#[test]
fn allowed_and_denied_connections_are_observed_with_their_rules_and_counts() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let (node, client, server) = pods("fl");
    let _echo =
        TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER), ALLOWED)).expect("echo");
    const ROUNDTRIPS: u64 = 20;
    let (obs, dropped) = node
        .run(|| {
            let config = NftConfig {
                flows: Some(FlowLog {
                    group: 20,
                    update_interval: Duration::ZERO,
                }),
                ..NftConfig::default()
            };
            let mut driver = NftDriver::with_config(Nft::default(), config).expect("driver");
            check_frontend_source(driver.flow_frontend_source());
            // Whatever was loaded before the driver started (on a fresh
            // kernel, not even conntrack), its table is written: counters
            // are on.
            assert_eq!(driver.flow_accounting(), Some(true));
            driver.apply(&operations()).expect("apply");
            let mut held = open_connection(
                &client,
                SocketAddr::new(IpAddr::V4(SERVER), ALLOWED),
                Duration::from_secs(2),
            )
            .expect("connect to the allowed port");
            // The start shows (nflog hands records over in batches, each at
            // most 10 ms late); then, the connection alive, an update.
            let mut obs = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline
                && find(&obs, FlowPhase::Start, Reporter::Destination, ALLOWED).is_none()
            {
                std::thread::sleep(Duration::from_millis(20));
                obs.extend(driver.take_flows());
            }
            for _ in 0..ROUNDTRIPS {
                assert!(held.roundtrip(Duration::from_secs(2)).expect("roundtrip"));
            }
            obs.extend(driver.take_flows());
            held.close();
            for p in [DENIED_BY_RULE, DENIED_BY_DEFAULT] {
                let outcome = tcp_connect(
                    &client,
                    SocketAddr::new(IpAddr::V4(SERVER), p),
                    Duration::from_millis(300),
                )
                .expect("probe");
                assert!(!outcome.reached(), "port {p} got through: {outcome:?}");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline
                && find(&obs, FlowPhase::End, Reporter::Destination, ALLOWED).is_none()
            {
                std::thread::sleep(Duration::from_millis(200));
                obs.extend(driver.take_flows());
            }
            std::thread::sleep(Duration::from_millis(300));
            obs.extend(driver.take_flows());
            (obs, driver.flows_dropped())
        })
        .expect("run in the node");
    for o in &obs {
        eprintln!("{}", serde_json::to_string(o).unwrap());
    }
    assert_eq!(dropped, 0);
    let server_ep = Some(eid("flows", "server"));
    let client_ep = Some(eid("flows", "client"));

    let start =
        find(&obs, FlowPhase::Start, Reporter::Destination, ALLOWED).expect("server's start");
    assert!(start.allowed);
    assert_eq!(start.decider, server_rule(0));
    assert_eq!(start.endpoint, server_ep);
    assert_eq!(start.tuple.src, IpAddr::V4(CLIENT));
    assert_eq!(start.tuple.protocol, 6);
    let client_start =
        find(&obs, FlowPhase::Start, Reporter::Source, ALLOWED).expect("client's start");
    assert_eq!(client_start.endpoint, client_ep);
    assert_eq!(
        client_start.decider,
        Decider::Rule {
            policy: None,
            profile: Some("kns.flows".into()),
            rule_id: "kns.flows/outbound/0".into()
        }
    );
    let update = obs
        .iter()
        .rev()
        .find(|o| {
            o.phase == FlowPhase::Update
                && o.reporter == Reporter::Destination
                && o.tuple.dst_port == ALLOWED
        })
        .expect("an update");
    assert!(
        update.counts.packets_reverse >= ROUNDTRIPS,
        "{:?}",
        update.counts
    );
    assert!(update.time_unix_ms >= start.time_unix_ms);
    let end = find(&obs, FlowPhase::End, Reporter::Destination, ALLOWED).expect("the end");
    assert_eq!(end.tuple, start.tuple);
    // The handshake, the round trips and the close: each round trip is a
    // request and a reply.
    assert!(end.counts.packets_forward > ROUNDTRIPS, "{:?}", end.counts);
    assert!(end.counts.packets_reverse > ROUNDTRIPS, "{:?}", end.counts);
    assert!(
        end.counts.bytes_forward > 40 * ROUNDTRIPS,
        "{:?}",
        end.counts
    );
    assert!(
        end.counts.bytes_reverse > 40 * ROUNDTRIPS,
        "{:?}",
        end.counts
    );
    assert!(find(&obs, FlowPhase::End, Reporter::Source, ALLOWED).is_some());

    let denied = find(
        &obs,
        FlowPhase::Denied,
        Reporter::Destination,
        DENIED_BY_RULE,
    )
    .expect("the denial by rule");
    assert!(!denied.allowed);
    assert_eq!(denied.decider, server_rule(1));
    assert_eq!(denied.endpoint, server_ep);
    assert!(denied.counts.packets_forward >= 1);
    let by_default = find(
        &obs,
        FlowPhase::Denied,
        Reporter::Destination,
        DENIED_BY_DEFAULT,
    )
    .expect("the denial by the tier's default");
    assert_eq!(
        by_default.decider,
        Decider::TierDefault {
            tier: "default".into()
        }
    );
    for p in [DENIED_BY_RULE, DENIED_BY_DEFAULT] {
        assert!(
            find(&obs, FlowPhase::Start, Reporter::Destination, p).is_none(),
            "a denied connection to {p} started"
        );
    }
}

/// The cluster IP of [`hairpin_operations`]' Service.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 77);

/// [`operations`], the server allowed as a source too, and a Service
/// (`CLUSTER_IP`:80) whose one backend is the server's allowed port.
fn hairpin_operations() -> Vec<Operation> {
    let mut ops = operations();
    let in_sync = ops.pop();
    assert_eq!(in_sync, Some(Operation::InSync));
    let backend = manul_dataplane_api::Backend {
        ip: IpAddr::V4(SERVER),
        port: ALLOWED,
        local: true,
        ready: true,
    };
    ops.extend([
        Operation::IpSetDelta {
            id: "sel:client".into(),
            added: vec![IpSetMember::Net(format!("{SERVER}/32").parse().unwrap())],
            removed: vec![],
        },
        Operation::ServiceUpdate(manul_dataplane_api::Service::cluster_ip(
            "flows",
            "server",
            vec![IpAddr::V4(CLUSTER_IP)],
            vec![manul_dataplane_api::ServicePort {
                name: "http".into(),
                protocol: 6,
                port: 80,
                node_port: None,
                backends: vec![backend],
                local_backends: vec![backend],
            }],
        )),
        Operation::InSync,
    ]);
    ops
}

/// Through a cluster IP from another pod and from the backend itself
/// (hairpin: masqueraded in postrouting, after policy logged it), each
/// side's start names the frontend; a connection straight to the backend
/// from the other pod names none.
#[test]
fn hairpin_and_direct_connections_name_the_frontend_only_when_dialled() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let (node, client, server) = pods("fh");
    let _echo =
        TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER), ALLOWED)).expect("echo");
    let frontend = SocketAddr::new(IpAddr::V4(CLUSTER_IP), 80);
    let direct = SocketAddr::new(IpAddr::V4(SERVER), ALLOWED);
    let obs = node
        .run(|| {
            let config = NftConfig {
                flows: Some(FlowLog {
                    group: 22,
                    update_interval: Duration::from_secs(60),
                }),
                ..NftConfig::default()
            };
            // Hairpin traffic is masqueraded to a node address: the node
            // gets one.
            let status = std::process::Command::new("ip")
                .args(["addr", "add", "192.0.2.1/32", "dev", "lo"])
                .status();
            assert!(status.expect("ip").success(), "a node address");
            let mut driver = NftDriver::with_config(Nft::default(), config).expect("driver");
            check_frontend_source(driver.flow_frontend_source());
            driver.apply(&hairpin_operations()).expect("apply");
            let mut obs = Vec::new();
            for (from, to) in [(&client, frontend), (&server, frontend), (&client, direct)] {
                let mut c = open_connection(from, to, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
                assert!(c.roundtrip(Duration::from_secs(2)).expect("roundtrip"));
                c.close();
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                obs.extend(driver.take_flows());
                let starts = obs.iter().filter(|o| o.phase == FlowPhase::Start).count();
                if starts >= 6 {
                    break;
                }
            }
            assert_eq!(driver.flows_dropped(), 0);
            obs
        })
        .expect("run in the node");
    let starts: Vec<&FlowObservation> =
        obs.iter().filter(|o| o.phase == FlowPhase::Start).collect();
    for o in &starts {
        eprintln!("{}", serde_json::to_string(o).unwrap());
    }
    let named = Some((IpAddr::V4(CLUSTER_IP), 80));
    // Each connection by its client and side, in the order made: both
    // sides of each, the service's two first.
    let mut seen = Vec::new();
    for o in &starts {
        assert_eq!(o.tuple.dst, IpAddr::V4(SERVER), "{o:?}");
        assert_eq!(o.tuple.dst_port, ALLOWED, "{o:?}");
        let key = (o.tuple.src, o.tuple.src_port);
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    assert_eq!(seen.len(), 3, "{starts:?}");
    for (n, key) in seen.iter().enumerate() {
        let sides: Vec<&&FlowObservation> = starts
            .iter()
            .filter(|o| (o.tuple.src, o.tuple.src_port) == *key)
            .collect();
        let reporters: HashSet<Reporter> = sides.iter().map(|o| o.reporter).collect();
        assert_eq!(reporters.len(), 2, "connection {n}: {sides:?}");
        let want = if n < 2 { named } else { None };
        for o in sides {
            assert_eq!(o.service_frontend, want, "connection {n}: {o:?}");
        }
    }
    assert_eq!(seen[0].0, IpAddr::V4(CLIENT));
    assert_eq!(seen[1].0, IpAddr::V4(SERVER));
}

/// The shared flow cases (`manul_dataplane_conformance::services`) with
/// flows on: TCP and UDP through a ClusterIP, an external IP and a node
/// port of each family, each observed with the backend pod as destination
/// and the frontend that names the Service.
#[test]
fn flows_through_services_name_their_frontend() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    // Every driver the cases start says where it finds frontends.
    let sources: Arc<Mutex<Vec<Option<FrontendSource>>>> = Arc::default();
    let seen = Arc::clone(&sources);
    let factory: Arc<Factory> = Arc::new(move |_ctx| {
        let config = NftConfig {
            flows: Some(FlowLog {
                group: 21,
                update_interval: Duration::ZERO,
            }),
            ..NftConfig::default()
        };
        let driver = NftDriver::with_config(Nft::default(), config).map_err(|e| chain(&e))?;
        seen.lock().unwrap().push(driver.flow_frontend_source());
        Ok(Box::new(driver) as Box<dyn Driver>)
    });
    match manul_dataplane_conformance::services::run_flow_cases("sf", factory) {
        Ok(report) => println!("{}", report.table()),
        Err(e) => panic!("{e}"),
    }
    let sources = sources.lock().unwrap().clone();
    assert!(!sources.is_empty(), "no driver was started");
    for source in sources {
        check_frontend_source(source);
    }
}

/// How late a connection's start is at most: nflog's flush timeout and
/// the reader's drain interval (10 ms each) and this test's polling, with
/// room for a loaded machine.
const START_BOUND: Duration = Duration::from_millis(100);

/// How often [`starts_come_promptly_while_connections_keep_coming_and_after_a_pause`]'s
/// driver dumps conntrack: connections end at a dump, and the test waits
/// for every end.
const DUMP_INTERVAL: Duration = Duration::from_millis(200);

/// When the server's starts were first taken, and which connections
/// ended, by client port.
#[derive(Default)]
struct Seen {
    starts: HashMap<u16, Instant>,
    ends: HashSet<u16>,
}

impl Seen {
    fn take(&mut self, driver: &mut NftDriver) {
        let now = Instant::now();
        for o in driver.take_flows() {
            if o.reporter != Reporter::Destination || o.tuple.dst_port != ALLOWED {
                continue;
            }
            match o.phase {
                FlowPhase::Start => {
                    self.starts.entry(o.tuple.src_port).or_insert(now);
                }
                FlowPhase::End => {
                    self.ends.insert(o.tuple.src_port);
                }
                _ => {}
            }
        }
    }
}

/// Connections keep coming (the reader drains on its interval rather than
/// waiting on the socket), then one comes after a pause (the reader
/// waits again): every connection's start and end is observed, each start
/// within [`START_BOUND`] of its handshake, nothing dropped. Ends come
/// from the conntrack dumps ([`DUMP_INTERVAL`] here), each connection
/// closed (time-wait) when one reads it.
#[test]
fn starts_come_promptly_while_connections_keep_coming_and_after_a_pause() {
    if !privileges().expect("privileges") {
        eprintln!("skipped: needs root (set CI=true to make this a failure)");
        return;
    }
    let (node, client, server) = pods("fp");
    let _echo =
        TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER), ALLOWED)).expect("echo");
    let dst = SocketAddr::new(IpAddr::V4(SERVER), ALLOWED);
    // One connection: its client port and when its handshake was done.
    let connect = || {
        let held = open_connection(&client, dst, Duration::from_secs(2)).expect("connect");
        let port = held.local_addr().expect("local address").port();
        (port, Instant::now())
    };
    let (busy, paused, seen, dropped) = node
        .run(|| {
            let config = NftConfig {
                flows: Some(FlowLog {
                    update_interval: DUMP_INTERVAL,
                    ..FlowLog::default()
                }),
                ..NftConfig::default()
            };
            let mut driver = NftDriver::with_config(Nft::default(), config).expect("driver");
            driver.apply(&operations()).expect("apply");
            let mut seen = Seen::default();
            let stop = AtomicBool::new(false);
            let busy = std::thread::scope(|s| {
                let load = s.spawn(|| {
                    let mut made = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        made.push(connect());
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    made
                });
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(2));
                    seen.take(&mut driver);
                }
                stop.store(true, Ordering::Relaxed);
                load.join().expect("the connecting thread")
            });
            // The last connections' starts, still polled as often.
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until && busy.iter().any(|(p, _)| !seen.starts.contains_key(p)) {
                std::thread::sleep(Duration::from_millis(2));
                seen.take(&mut driver);
            }
            // The reader goes back to waiting on its sockets.
            std::thread::sleep(Duration::from_millis(500));
            seen.take(&mut driver);
            let paused = connect();
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until && !seen.starts.contains_key(&paused.0) {
                std::thread::sleep(Duration::from_millis(2));
                seen.take(&mut driver);
            }
            // Every connection ends (each closed as it was made).
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until
                && busy
                    .iter()
                    .chain([&paused])
                    .any(|(p, _)| !seen.ends.contains(p))
            {
                std::thread::sleep(Duration::from_millis(50));
                seen.take(&mut driver);
            }
            (busy, paused, seen, driver.flows_dropped())
        })
        .expect("run in the node");
    assert!(busy.len() >= 100, "only {} connections", busy.len());
    assert_eq!(dropped, 0);
    let late = |(port, made): &(u16, Instant)| {
        let at = seen
            .starts
            .get(port)
            .unwrap_or_else(|| panic!("no start for port {port}"));
        at.saturating_duration_since(*made)
    };
    let worst = busy.iter().map(late).max().expect("connections");
    eprintln!(
        "{} connections while busy: latest start {worst:?}; after a pause {:?}",
        busy.len(),
        late(&paused)
    );
    assert!(worst <= START_BOUND, "a start came {worst:?} late");
    assert!(late(&paused) <= START_BOUND, "{:?}", late(&paused));
    for (port, _) in busy.iter().chain([&paused]) {
        assert!(seen.ends.contains(port), "no end for port {port}");
    }
}
