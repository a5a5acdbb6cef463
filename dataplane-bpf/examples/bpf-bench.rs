//! eBPF dataplane benchmarks, printing one JSON object:
//!
//! - per-packet cost with `BPF_PROG_TEST_RUN` (kernel-measured average over
//!   `repeat` runs): a new flow (a driver that never creates conntrack
//!   entries) and an established flow, with 10, 100 and 1,000 rules; the
//!   deciding rule is the last one and names an IP set of 10,000 members;
//! - enforcement latency: a policy change until `apply` returns (the
//!   kernel maps hold the new table and the endpoint points at it), and an
//!   endpoint add (table shared, entry written, programs attached).
//!
//! With `traffic` as its first argument it runs the shared real-traffic
//! benchmark instead (`manul_dataplane_conformance::traffic`: iperf3
//! throughput, new-connection latency and rate, established round trips,
//! against a baseline without a dataplane), with the `BpfDriver`, and prints
//! its report.
//!
//! With `flows` it measures flow observations off and on side by side
//! (`BPF_PROG_TEST_RUN` and real traffic; see `bpf-bench/flows.rs`).
//!
//! With `ipv6` it measures the parser's per-packet cost on IPv4, IPv6 and
//! IPv6 behind extension headers side by side (see `bpf-bench/ipv6.rs`).
//!
//! With `svc-path` it measures a new connection's first packet to a
//! ClusterIP against one straight to the pod, at 10 and 10,000 services
//! (`BPF_PROG_TEST_RUN`, one run per call; see `bpf-bench/svc_path.rs`).
//!
//! Needs root (and `iperf3` for `traffic` and `flows`). Everything runs in network
//! namespaces it creates, with pins under /sys/fs/bpf/manul-bench, removed
//! at the end.
//!
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench [-- --runs N]`
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- traffic [--runs 3] [--rule-counts 10,100,1000]`
//!
//! With `services` it measures service programming instead: a snapshot
//! of `--services` ClusterIP services with `--backends` backends each
//! (every `ServiceUpdate` and `InSync` in one `apply`, into a fresh
//! driver) and `--changes` single backend changes (one `ServiceUpdate`
//! each), `--runs` times, until `apply` returns (the kernel maps hold
//! them; services are map data, no program is loaded for them); then a
//! restart: the driver dropped, a new one built over the same pins, and
//! the same services (with their changes) told again in one `apply`.
//!
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- services [--services 10000] [--backends 10] [--changes 50] [--runs 3] [--host-service-nat on|off]`
//! (`--host-service-nat off`: without the host's service device, whose
//! route per cluster IP the snapshot writes too)
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- flows [--runs 6]`
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- ipv6 [--runs 5]`
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- svc-path [--calls 5000]`
//!
//! With `sctp-patch` it measures what patching SCTP's CRC32c for a port
//! rewrite costs a packet, beside the same flow without a port change
//! (`BPF_PROG_TEST_RUN`, one run per call; see `bpf-bench/sctp_patch.rs`).
//!
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- sctp-patch [--calls 5000]`
//!
//! With `resize` it measures a restart with bigger maps: the load that
//! creates them anew and copies a full node's entries, beside the same on
//! an empty node (see `bpf-bench/resize.rs`).
//!
//! `cargo run --release -p manul-dataplane-bpf --example bpf-bench -- resize [--services 10000] [--backends 10] [--conntrack 200000] [--runs 3]`

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "bpf-bench/flows.rs"]
mod flows;
#[path = "bpf-bench/ipv6.rs"]
mod ipv6;
#[path = "bpf-bench/resize.rs"]
mod resize;
#[path = "bpf-bench/sctp_patch.rs"]
mod sctp_patch;
#[path = "bpf-bench/svc_path.rs"]
mod svc_path;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use manul_dataplane_api::{
    Action, Driver, EndpointId, IpSetKind, IpSetMember, Match, Operation, Packet, Policy, PolicyId,
    PortRange, Rule, TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_bpf::frames::{SYN, frame};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook};
use manul_dataplane_conformance::Factory;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::traffic::{self, Dataplane, TrafficOptions};
use manul_netns::{NetNs, create_veth, link_index, unique_prefix};

const PIN_ROOT: &str = "/sys/fs/bpf/manul-bench";
const SET_MEMBERS: u32 = 10_000;

fn pid() -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: "bench".into(),
    }
}

/// `n` rules: n-1 that do not match the benchmark packet (each with its own
/// network and port), then one allowing TCP/80 from the big set.
fn policy(n: usize, salt: u16) -> Operation {
    let mut inbound: Vec<Rule> = (0..n - 1)
        .map(|i| Rule {
            id: format!("default/bench/inbound/{i}"),
            action: Action::Allow,
            ip_version: None,
            protocol: Some(6),
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: Match {
                nets: vec![IpNet::V4(
                    Ipv4Net::new(
                        Ipv4Addr::new(10, 1 + (i / 250) as u8, (i % 250) as u8, 0),
                        24,
                    )
                    .unwrap(),
                )],
                ..Match::default()
            },
            dst: Match {
                ports: vec![PortRange {
                    first: 1000 + i as u16 + salt,
                    last: 1000 + i as u16 + salt,
                }],
                ..Match::default()
            },
        })
        .collect();
    inbound.push(Rule {
        id: format!("default/bench/inbound/{}", n - 1),
        action: Action::Allow,
        ip_version: None,
        protocol: Some(6),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match {
            ip_sets: vec!["big".into()],
            ..Match::default()
        },
        dst: Match {
            ports: vec![PortRange {
                first: 80,
                last: 80,
            }],
            ..Match::default()
        },
    });
    Operation::PolicyUpdate {
        id: pid(),
        policy: Policy {
            inbound,
            outbound: vec![],
        },
    }
}

fn big_set() -> Operation {
    Operation::IpSetUpdate {
        id: "big".into(),
        kind: IpSetKind::Net,
        members: (0..SET_MEMBERS)
            .map(|i| {
                let a = Ipv4Addr::new(
                    10,
                    200 + (i / 65536) as u8,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                );
                IpSetMember::Net(IpNet::V4(Ipv4Net::new(a, 32).unwrap()))
            })
            .collect(),
    }
}

fn endpoint(name: &str, interface: &str, ip: Ipv4Addr) -> Operation {
    Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
        id: EndpointId {
            namespace: "bench".into(),
            name: name.into(),
        },
        interface_name: interface.into(),
        nets: vec![IpNet::V4(Ipv4Net::new(ip, 32).unwrap())],
        mac: None,
        tiers: vec![TierPolicies {
            name: "default".into(),
            default_action: Action::Deny,
            inbound: vec![pid()],
            outbound: vec![],
        }],
        profiles: vec![],
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The shared real-traffic benchmark with the eBPF driver.
fn traffic_mode() {
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let rule_counts: Vec<usize> = flag("--rule-counts")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = nodes.clone();
    let factory: Arc<Factory> = Arc::new(move |ctx| {
        seen.lock().unwrap().push(ctx.node.clone());
        let mut config = BpfConfig::new(&ctx.node);
        config.pin_root = PathBuf::from(PIN_ROOT);
        BpfDriver::new(config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    });
    let dataplane = Dataplane::Driver {
        name: "bpf".into(),
        factory,
    };
    let report = traffic::run_traffic_benchmark_with(
        "bt",
        &dataplane,
        &rule_counts,
        runs,
        &TrafficOptions::default(),
        &mut |s| {
            eprintln!(
                "traffic: {} rules {:>5}: {:6.2} Gbit/s, connect p50 {:6.1} us p99 {:6.1} us, {:6.0} connects/s, rr p50 {:5.1} us",
                s.dataplane,
                s.rules.map_or("-".to_string(), |r| r.to_string()),
                s.throughput_bps / 1e9,
                s.connect.p50_us,
                s.connect.p99_us,
                s.connects_per_sec,
                s.roundtrip.p50_us,
            );
        },
    );
    for node in nodes.lock().unwrap().iter() {
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), node);
    }
    let report = report.expect("traffic benchmark");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// Service `i` of the `services` mode: cluster IP 10.96.0.0 + i + 1, TCP
/// port 80, `backends` backends in 10.64.0.0/10 on port 8080 (on other
/// nodes); `generation` > 0 moves its first backend, as one EndpointSlice
/// change would. The same state as `iptables-bench services`.
fn bench_service(i: usize, backends: usize, generation: u32) -> manul_dataplane_api::Service {
    use manul_dataplane_api::{Backend, Service, ServicePort};
    let v4 = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (i * backends) as u32 * 4;
    let backends: Vec<Backend> = (0..backends)
        .map(|b| Backend {
            ip: v4(if b == 0 && generation > 0 {
                u32::from(Ipv4Addr::new(10, 200, 0, 0)) + generation
            } else {
                base + b as u32 + 1
            }),
            port: 8080,
            local: false,
            ready: true,
        })
        .collect();
    Service::cluster_ip(
        "bench",
        format!("svc-{i}"),
        vec![v4(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)],
        vec![ServicePort {
            name: "http".into(),
            protocol: 6,
            port: 80,
            node_port: None,
            backends,
            local_backends: vec![],
        }],
    )
}

/// Service programming: the snapshot (every `ServiceUpdate` and `InSync`
/// in one `apply`) into a fresh driver, then one backend change at a
/// time, each until `apply` returns (the maps hold it), then the resync
/// of a restarted driver (a new one over the same pins) with the same
/// services.
fn services_mode() {
    let services: usize = flag("--services")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let backends: usize = flag("--backends")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let changes: usize = flag("--changes").and_then(|s| s.parse().ok()).unwrap_or(50);
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    // The host's service device (a route per cluster IP), on by default.
    let host_service_nat = match flag("--host-service-nat").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => panic!("--host-service-nat takes on or off, not {other}"),
    };
    assert!(
        services > 0 && backends > 0 && changes > 0,
        "counts must be positive"
    );
    let mut ops: Vec<Operation> = (0..services)
        .map(|i| Operation::ServiceUpdate(bench_service(i, backends, 0)))
        .collect();
    ops.push(Operation::InSync);
    let mut snapshot = Vec::new();
    let mut change = Vec::new();
    let mut restart = Vec::new();
    let mut nodes = Vec::new();
    for run in 0..runs.max(1) {
        let tag = unique_prefix("bs");
        let ns = NetNs::create(&tag).expect("create a network namespace");
        let node = format!("{tag}n");
        nodes.push(node.clone());
        ns.run(|| {
            let mut config = BpfConfig::new(&node);
            config.pin_root = PathBuf::from(PIN_ROOT);
            config.host_service_nat = host_service_nat;
            let mut driver = BpfDriver::new(config.clone()).expect("load");
            let t = Instant::now();
            driver.apply(&ops).expect("the snapshot");
            snapshot.push(t.elapsed().as_secs_f64() * 1e3);
            let mut now = ops.clone();
            for k in 0..changes {
                let i = (k * 7919 + run) % services;
                let op = Operation::ServiceUpdate(bench_service(
                    i,
                    backends,
                    (run * changes + k) as u32 + 1,
                ));
                let t = Instant::now();
                driver
                    .apply(std::slice::from_ref(&op))
                    .expect("a backend change");
                change.push(t.elapsed().as_secs_f64() * 1e3);
                now[i] = op;
            }
            drop(driver);
            let mut driver = BpfDriver::new(config).expect("restart");
            let t = Instant::now();
            driver.apply(&now).expect("the resync after a restart");
            restart.push(t.elapsed().as_secs_f64() * 1e3);
        })
        .expect("run in the namespace");
        drop(ns);
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), &node);
    }
    let mut sorted_snapshot = snapshot.clone();
    sorted_snapshot.sort_by(f64::total_cmp);
    let mut sorted_restart = restart.clone();
    sorted_restart.sort_by(f64::total_cmp);
    change.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "bench": "dataplane-bpf services",
        "services": services,
        "backends_per_service": backends,
        "host_service_nat": host_service_nat,
        "runs": runs,
        "snapshot_ms_runs": snapshot,
        "snapshot_ms_median": percentile(&sorted_snapshot, 0.5),
        "backend_changes": change.len(),
        "backend_change_ms_p50": percentile(&change, 0.5),
        "backend_change_ms_p99": percentile(&change, 0.99),
        "backend_change_ms_max": change.last().copied().unwrap_or_default(),
        "restart_resync_ms_runs": restart,
        "restart_resync_ms_median": percentile(&sorted_restart, 0.5),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("traffic") {
        traffic_mode();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("services") {
        services_mode();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("flows") {
        flows::run();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("ipv6") {
        ipv6::run();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("svc-path") {
        svc_path::run();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("sctp-patch") {
        sctp_patch::run();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("resize") {
        resize::run();
        return;
    }
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    let repeat = 200_000u32;
    let tag = unique_prefix("bb");
    let ns = NetNs::create(&tag).expect("create a network namespace");
    create_veth(&ns, "mnlbench", &ns, "peerbench").expect("veth");
    for i in 0..50 {
        create_veth(&ns, &format!("mnlep{i}"), &ns, &format!("peerep{i}")).expect("veth");
    }
    let ifindex = link_index(&ns, "mnlbench").expect("ifindex");
    let nodes = [format!("{tag}n"), format!("{tag}e")];
    let result = ns
        .run(|| {
            let mut new_cfg = BpfConfig::new(&nodes[0]);
            new_cfg.pin_root = PathBuf::from(PIN_ROOT);
            new_cfg.benchmark_no_conntrack = true;
            let mut est_cfg = new_cfg.clone();
            est_cfg.node = nodes[1].clone();
            est_cfg.benchmark_no_conntrack = false;
            let mut fresh = BpfDriver::new(new_cfg).expect("load (new-flow driver)");
            let mut tracked = BpfDriver::new(est_cfg).expect("load (conntrack driver)");
            let src = IpAddr::V4(Ipv4Addr::new(10, 200, 3, 7));
            let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
            let mut per_packet = Vec::new();
            let mut change = Vec::new();
            for rules in [10usize, 100, 1000] {
                let ops = vec![
                    big_set(),
                    policy(rules, 0),
                    endpoint("pod", "mnlbench", Ipv4Addr::new(10, 0, 0, 1)),
                ];
                fresh.apply(&ops).expect("apply");
                tracked.apply(&ops).expect("apply");
                let f = frame(&Packet::tcp(src, 40000, dst, 80), SYN);
                let mut new_ns = Vec::new();
                let mut est_ns = Vec::new();
                for _ in 0..runs {
                    let r = fresh.test_run(Hook::Egress, ifindex, &f, repeat).expect("test run");
                    assert!(r.allowed(), "the benchmark packet must be allowed");
                    new_ns.push(r.duration.as_nanos() as f64);
                    tracked.test_run(Hook::Egress, ifindex, &f, 1).expect("test run");
                    let r = tracked.test_run(Hook::Egress, ifindex, &f, repeat).expect("test run");
                    assert!(r.allowed());
                    est_ns.push(r.duration.as_nanos() as f64);
                }
                per_packet.push(serde_json::json!({
                    "rules": rules,
                    "set_members": SET_MEMBERS,
                    "new_flow_ns_median": median(new_ns.clone()),
                    "new_flow_ns_runs": new_ns,
                    "established_ns_median": median(est_ns.clone()),
                    "established_ns_runs": est_ns,
                }));

                // Policy change -> kernel maps (new table written, endpoint
                // flipped, old table deleted).
                let mut lat = Vec::new();
                for i in 0..100u16 {
                    let op = policy(rules, 1 + i % 2);
                    let t = Instant::now();
                    tracked.apply(std::slice::from_ref(&op)).expect("apply");
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat.sort_by(f64::total_cmp);
                change.push(serde_json::json!({
                    "rules": rules,
                    "set_members": SET_MEMBERS,
                    "p50_ms": percentile(&lat, 0.5),
                    "p99_ms": percentile(&lat, 0.99),
                }));
            }
            // IP set change (one member added) with 10 rules naming it.
            tracked.apply(&[policy(10, 0)]).expect("apply");
            let mut set_lat = Vec::new();
            for i in 0..50u32 {
                let member = IpSetMember::Net(IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::new(10, 250, 0, i as u8), 32).unwrap(),
                ));
                let t = Instant::now();
                tracked
                    .apply(&[Operation::IpSetDelta {
                        id: "big".into(),
                        added: vec![member],
                        removed: vec![],
                    }])
                    .expect("apply");
                set_lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            set_lat.sort_by(f64::total_cmp);
            // Endpoint add: its table is shared with the existing pod.
            let mut ep_lat = Vec::new();
            for i in 0..50u8 {
                let op = endpoint(&format!("ep{i}"), &format!("mnlep{i}"), Ipv4Addr::new(10, 0, 1, i));
                let t = Instant::now();
                tracked.apply(&[op]).expect("apply");
                ep_lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ep_lat.sort_by(f64::total_cmp);
            let ratio = |i: usize, key: &str| {
                per_packet[i][key].as_f64().unwrap_or(0.0)
            };
            serde_json::json!({
                "bench": "dataplane-bpf",
                "repeat_per_run": repeat,
                "runs": runs,
                "per_packet": per_packet,
                "ratio_new_1000_vs_new_10": ratio(2, "new_flow_ns_median") / ratio(0, "new_flow_ns_median"),
                "ratio_established_vs_new_10": ratio(0, "established_ns_median") / ratio(0, "new_flow_ns_median"),
                "policy_change_to_maps": change,
                "ip_set_member_add_to_maps": {"set_members": SET_MEMBERS, "rules": 10, "p50_ms": percentile(&set_lat, 0.5), "p99_ms": percentile(&set_lat, 0.99)},
                "endpoint_add_to_enforced": {"p50_ms": percentile(&ep_lat, 0.5), "p99_ms": percentile(&ep_lat, 0.99)},
                "kernel_events_lost_new_flow_driver": fresh.kernel_counters().events_lost,
            })
        })
        .expect("run in the namespace");
    drop(ns);
    for node in &nodes {
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), node);
    }
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
