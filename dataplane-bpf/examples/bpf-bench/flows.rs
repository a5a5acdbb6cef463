//! `flows`: the per-packet cost of flow observations on eBPF, off
//! (`BpfConfig::flow_observations: false`, as Felix runs without a flow
//! aggregator) and on (observations made, the conntrack scan every second
//! as Felix asks with `--flow-interval 1`), side by side in one run:
//!
//! - `BPF_PROG_TEST_RUN`: the kernel's average per packet, a new flow (a
//!   driver that never creates conntrack entries, so every packet is
//!   classified and emits its flow event) and an established one, each
//!   round measuring both drivers in alternating order;
//! - real traffic: the shared measurement
//!   (`manul_dataplane_conformance::traffic::measure`: two pods on a node,
//!   `--flow-rules` non-matching rules before the allowing one) in fresh
//!   namespaces per round, in alternating order.
//!
//! The kernel programs are the same object either way (flow events are
//! written for the flow log and the counters whatever the setting); what
//! observations add runs on the driver's own thread.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_dataplane_api::{Driver, Packet};
use manul_dataplane_bpf::frames::{ACK, SYN, frame};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook};
use manul_dataplane_conformance::Factory;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::traffic::{self, Dataplane, TrafficOptions, TrafficSample};
use manul_netns::{NetNs, create_veth, link_index, unique_prefix};
use serde_json::{Value, json};

use super::{PIN_ROOT, big_set, endpoint, flag, policy};

fn config(node: &str, on: bool) -> BpfConfig {
    let mut c = BpfConfig::new(node);
    c.pin_root = PathBuf::from(PIN_ROOT);
    c.flow_observations = on;
    if on {
        c.flow_update_interval = Some(Duration::from_secs(1));
    }
    c
}

/// Median, range and every run of one figure.
fn figure(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    json!({"median": median, "min": v.first(), "max": v.last(), "runs": v})
}

fn median_of(f: &Value) -> f64 {
    f["median"].as_f64().unwrap_or(0.0)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// `BPF_PROG_TEST_RUN` with observations off and on.
fn test_run(runs: usize, rules: usize) -> Value {
    let repeat = 200_000u32;
    let tag = unique_prefix("bf");
    let ns = NetNs::create(&tag).expect("create a network namespace");
    create_veth(&ns, "mnlbench", &ns, "peerbench").expect("veth");
    let ifindex = link_index(&ns, "mnlbench").expect("ifindex");
    let nodes: Vec<String> = ["off-new", "on-new", "off-est", "on-est"]
        .iter()
        .map(|s| format!("{tag}{}", s.replace('-', "")))
        .collect();
    let result = ns
        .run(|| {
            let mut drivers: Vec<BpfDriver> = nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let mut c = config(node, i % 2 == 1);
                    c.benchmark_no_conntrack = i < 2;
                    BpfDriver::new(c).expect("load the programs")
                })
                .collect();
            let ops = vec![
                big_set(),
                policy(rules, 0),
                endpoint("pod", "mnlbench", Ipv4Addr::new(10, 0, 0, 1)),
            ];
            for d in &mut drivers {
                d.apply(&ops).expect("apply");
            }
            let src = IpAddr::V4(Ipv4Addr::new(10, 200, 3, 7));
            let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
            let syn = frame(&Packet::tcp(src, 40000, dst, 80), SYN);
            let ack = frame(&Packet::tcp(src, 40000, dst, 80), ACK);
            // The established drivers' entry.
            for d in &mut drivers[2..] {
                d.test_run(Hook::Egress, ifindex, &syn, 1)
                    .expect("test run");
            }
            let mut ns: [Vec<f64>; 4] = Default::default();
            for round in 0..runs {
                let order: [usize; 4] = if round % 2 == 0 {
                    [0, 1, 2, 3]
                } else {
                    [1, 0, 3, 2]
                };
                for i in order {
                    let f = if i < 2 { &syn } else { &ack };
                    let r = drivers[i]
                        .test_run(Hook::Egress, ifindex, f, repeat)
                        .expect("test run");
                    assert!(r.allowed(), "the benchmark packet must be allowed");
                    ns[i].push(r.duration.as_nanos() as f64);
                }
                // Let the observing drivers' threads do their work between
                // rounds, as they would beside traffic.
                std::thread::sleep(Duration::from_millis(200));
                for d in &mut drivers {
                    d.take_flows();
                }
            }
            let [off_new, on_new, off_est, on_est] = ns.map(figure);
            json!({
                "rules": rules,
                "repeat_per_run": repeat,
                "new_flow_ns": {"off": off_new, "on": on_new},
                "established_ns": {"off": off_est, "on": on_est},
                "on_over_off": {
                    "new_flow": ratio(median_of(&on_new), median_of(&off_new)),
                    "established": ratio(median_of(&on_est), median_of(&off_est)),
                },
            })
        })
        .expect("run in the namespace");
    drop(ns);
    for node in &nodes {
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), node);
    }
    result
}

fn traffic_side_by_side(runs: usize, rules: usize, options: &TrafficOptions) -> Value {
    // The nodes the runs made, whose pins are removed at the end.
    let nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let factory = |on: bool| -> Arc<Factory> {
        let seen = nodes.clone();
        Arc::new(move |ctx| {
            seen.lock().unwrap().push(ctx.node.clone());
            BpfDriver::new(config(&ctx.node, on))
                .map(|d| Box::new(d) as Box<dyn Driver>)
                .map_err(|e| chain(&e))
        })
    };
    let off = Dataplane::Driver {
        name: "bpf".into(),
        factory: factory(false),
    };
    let on = Dataplane::Driver {
        name: "bpf+flows".into(),
        factory: factory(true),
    };
    let (mut samples_off, mut samples_on): (Vec<TrafficSample>, Vec<TrafficSample>) =
        (Vec::new(), Vec::new());
    for round in 0..runs {
        let order = if round % 2 == 0 {
            [&off, &on]
        } else {
            [&on, &off]
        };
        for dataplane in order {
            let s = traffic::measure("bf", dataplane, rules, options).expect("measure");
            eprintln!(
                "flows: {:10} rr p50 {:6.1} us p99 {:6.1} us, connect p50 {:6.1} us, {:6.0} connects/s, {:6.2} Gbit/s",
                s.dataplane,
                s.roundtrip.p50_us,
                s.roundtrip.p99_us,
                s.connect.p50_us,
                s.connects_per_sec,
                s.throughput_bps / 1e9
            );
            if s.dataplane == "bpf" {
                samples_off.push(s);
            } else {
                samples_on.push(s);
            }
        }
    }
    for node in nodes.lock().unwrap().iter() {
        let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), node);
    }
    let side = |v: &[TrafficSample]| {
        json!({
            "roundtrip_p50_us": figure(v.iter().map(|s| s.roundtrip.p50_us).collect()),
            "roundtrip_p99_us": figure(v.iter().map(|s| s.roundtrip.p99_us).collect()),
            "connect_p50_us": figure(v.iter().map(|s| s.connect.p50_us).collect()),
            "connects_per_sec": figure(v.iter().map(|s| s.connects_per_sec).collect()),
            "throughput_gbps": figure(v.iter().map(|s| s.throughput_bps / 1e9).collect()),
        })
    };
    let (a, b) = (side(&samples_off), side(&samples_on));
    let m = |side: &Value, k: &str| median_of(&side[k]);
    json!({
        "rules": rules,
        "runs": runs,
        "options": options,
        "on_over_off": {
            "roundtrip_p50": ratio(m(&b, "roundtrip_p50_us"), m(&a, "roundtrip_p50_us")),
            "roundtrip_p99": ratio(m(&b, "roundtrip_p99_us"), m(&a, "roundtrip_p99_us")),
            "connect_p50": ratio(m(&b, "connect_p50_us"), m(&a, "connect_p50_us")),
            "connects_per_sec_off_over_on": ratio(m(&a, "connects_per_sec"), m(&b, "connects_per_sec")),
            "throughput_off_over_on": ratio(m(&a, "throughput_gbps"), m(&b, "throughput_gbps")),
        },
        "off": a,
        "on": b,
    })
}

/// `bpf-bench flows [--runs 6] [--flow-rules 10] [--connects 1000]
/// [--roundtrips 5000] [--iperf-seconds 2] [--no-traffic]`.
pub fn run() {
    let num =
        |name: &str, default: usize| flag(name).and_then(|s| s.parse().ok()).unwrap_or(default);
    let runs = num("--runs", 6).max(1);
    let rules = num("--flow-rules", 10);
    let test_run = test_run(runs, rules);
    let traffic = if std::env::args().any(|a| a == "--no-traffic") {
        Value::Null
    } else {
        let options = TrafficOptions {
            iperf_seconds: num("--iperf-seconds", 2) as u32,
            connects: num("--connects", 1000),
            roundtrips: num("--roundtrips", 5000),
            ..TrafficOptions::default()
        };
        traffic_side_by_side(runs, rules, &options)
    };
    let report = json!({
        "bench": "dataplane-bpf flows",
        "test_run": test_run,
        "traffic": traffic,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
