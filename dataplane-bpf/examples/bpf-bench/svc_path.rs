//! `svc-path`: what the eBPF programs cost a new connection's first
//! packet through a ClusterIP, with `BPF_PROG_TEST_RUN` (the kernel's own
//! time of one run per call, a new flow every call), side by side in one
//! run for 10 and 10,000 services (the services and pods of the shared
//! `service-connections` benchmark, `traffic::service_operations`):
//!
//! - a SYN from the client pod to the tested service's cluster IP, leaving
//!   the pod (its host-side interface's ingress hook): a NAT miss, the
//!   frontend lookups, the backend pick, both NAT entries written, the
//!   rewrite, then a conntrack miss, the client's policy and a conntrack
//!   entry;
//! - the same SYN straight to the server pod's IP: the same without the
//!   service translation (a frontend lookup that misses);
//! - the service SYN again on its own entries (an established NAT and
//!   conntrack hit), for scale.
//!
//! Every call uses a fresh source port, so the first two are new flows;
//! the two kinds alternate so that drift spreads over both. The
//! difference of their medians is the service translation's cost per new
//! connection.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use manul_dataplane_api::{Driver, Operation, Packet};
use manul_dataplane_bpf::frames::{SYN, frame};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook};
use manul_dataplane_conformance::traffic::{
    self, CLIENT, CLIENT_IP, CONNECT_PORT, SERVER, SERVER_IP,
};
use manul_netns::{NetNs, create_veth, link_index, unique_prefix};
use serde_json::json;

use super::{PIN_ROOT, flag, median, percentile};

/// The destination address of an IPv4 frame built by `frames::frame`.
fn frame_dst(f: &[u8]) -> Option<[u8; 4]> {
    f.get(30..34).and_then(|b| b.try_into().ok())
}

fn driver(node: &str, services: usize) -> BpfDriver {
    let mut cfg = BpfConfig::new(node);
    cfg.pin_root = PathBuf::from(PIN_ROOT);
    let mut d = BpfDriver::new(cfg).expect("load the programs");
    let mut ops = traffic::bench_operations(0);
    let in_sync = ops.pop();
    ops.extend(traffic::service_operations(services));
    ops.extend(in_sync);
    let ops: Vec<Operation> = ops;
    d.apply(&ops).expect("apply");
    d
}

pub fn run() {
    let calls: usize = flag("--calls").and_then(|s| s.parse().ok()).unwrap_or(5000);
    let tag = unique_prefix("bs");
    let ns = NetNs::create(&tag).expect("create a network namespace");
    let client_if = traffic::pod_interface(CLIENT);
    let server_if = traffic::pod_interface(SERVER);
    create_veth(&ns, &client_if, &ns, "peerc").expect("veth");
    create_veth(&ns, &server_if, &ns, "peers").expect("veth");
    let ifindex = link_index(&ns, &client_if).expect("ifindex");
    let mut nodes = Vec::new();
    let result = ns
        .run(|| {
            let mut rows = Vec::new();
            for (i, services) in [10usize, 10_000].into_iter().enumerate() {
                let node = format!("{tag}{i}");
                nodes.push(node.clone());
                let mut d = driver(&node, services);
                let vip = traffic::tested_service(services);
                let pod = SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT);
                let syn = |to: SocketAddr, sport: u16| {
                    frame(
                        &Packet::tcp(IpAddr::V4(CLIENT_IP), sport, to.ip(), to.port()),
                        SYN,
                    )
                };
                let mut to_service = Vec::with_capacity(calls);
                let mut to_pod = Vec::with_capacity(calls);
                for c in 0..calls {
                    let sport = 1024 + c as u16;
                    let r = d
                        .test_run(Hook::Ingress, ifindex, &syn(vip, sport), 1)
                        .expect("test run");
                    assert!(r.allowed(), "the SYN to the service must pass");
                    assert_eq!(
                        frame_dst(&r.frame),
                        Some(SERVER_IP.octets()),
                        "the SYN must be translated to the server"
                    );
                    to_service.push(r.duration.as_nanos() as f64);
                    let r = d
                        .test_run(
                            Hook::Ingress,
                            ifindex,
                            &syn(pod, sport.wrapping_add(30_000)),
                            1,
                        )
                        .expect("test run");
                    assert!(r.allowed(), "the SYN to the pod must pass");
                    to_pod.push(r.duration.as_nanos() as f64);
                }
                let again = syn(vip, 1024);
                let established = d
                    .test_run(Hook::Ingress, ifindex, &again, 100_000)
                    .expect("test run")
                    .duration
                    .as_nanos() as f64;
                to_service.sort_by(f64::total_cmp);
                to_pod.sort_by(f64::total_cmp);
                let (s50, p50) = (median(to_service.clone()), median(to_pod.clone()));
                rows.push(json!({
                    "services": services,
                    "calls": calls,
                    "new_to_service_ns_p50": s50,
                    "new_to_service_ns_p90": percentile(&to_service, 0.9),
                    "new_to_pod_ns_p50": p50,
                    "new_to_pod_ns_p90": percentile(&to_pod, 0.9),
                    "service_translation_ns": s50 - p50,
                    "established_to_service_ns": established,
                }));
                drop(d);
            }
            rows
        })
        .expect("enter the namespace");
    for node in &nodes {
        if let Err(e) = BpfDriver::purge_node(PIN_ROOT.as_ref(), node) {
            eprintln!("svc-path: removing the pins of {node}: {e}");
        }
    }
    drop(ns);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "benchmark": "bpf-bench svc-path", "rows": result }))
            .unwrap()
    );
}
