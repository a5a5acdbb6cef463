//! `ipv6`: the per-packet cost of the parser on IPv6 with `BPF_PROG_TEST_RUN`
//! (the kernel's average per packet, a new flow: a driver that never
//! creates conntrack entries, so every packet is parsed and classified),
//! side by side in one run: IPv4, IPv6 without extension headers, and
//! IPv6 behind a hop-by-hop and a destination-options header (24 bytes
//! the parser skips), TCP SYN to port 80 allowed by one rule.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use manul_dataplane_api::Driver;
use manul_dataplane_api::{
    Action, EndpointId, Match, Operation, Packet, Policy, PolicyId, PortRange, Rule, TierPolicies,
    WorkloadEndpoint,
};
use manul_dataplane_bpf::frames::{SYN, dest_options, frame, hop_by_hop, with_ext};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook};
use manul_netns::{NetNs, create_veth, link_index, unique_prefix};
use serde_json::json;

use super::{PIN_ROOT, flag, median};

fn ops() -> Vec<Operation> {
    let id = PolicyId {
        tier: "default".into(),
        name: "web".into(),
    };
    let rule = Rule {
        id: "default/web/inbound/0".into(),
        action: Action::Allow,
        ip_version: None,
        protocol: Some(6),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match {
            ports: vec![PortRange {
                first: 80,
                last: 80,
            }],
            ..Match::default()
        },
    };
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    vec![
        Operation::PolicyUpdate {
            id: id.clone(),
            policy: Policy {
                inbound: vec![rule],
                outbound: vec![],
            },
        },
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: "bench".into(),
                name: "pod".into(),
            },
            interface_name: "mnlbench".into(),
            nets: vec![net("10.0.0.1/32"), net("fd00::1/128")],
            mac: None,
            tiers: vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![id],
                outbound: vec![],
            }],
            profiles: vec![],
        }),
        Operation::InSync,
    ]
}

pub fn run() {
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    let repeat = 200_000u32;
    let tag = unique_prefix("b6");
    let ns = NetNs::create(&tag).expect("create a network namespace");
    create_veth(&ns, "mnlbench", &ns, "peerbench").expect("veth");
    let ifindex = link_index(&ns, "mnlbench").expect("ifindex");
    let node = format!("{tag}n");
    let result = ns
        .run(|| {
            let mut cfg = BpfConfig::new(&node);
            cfg.pin_root = PathBuf::from(PIN_ROOT);
            cfg.benchmark_no_conntrack = true;
            let mut d = BpfDriver::new(cfg).expect("load");
            d.apply(&ops()).expect("apply");
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            let v4 = frame(&Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), 80), SYN);
            let v6 = frame(&Packet::tcp(ip("fd00::2"), 40000, ip("fd00::1"), 80), SYN);
            let v6_ext = with_ext(&v6, &[hop_by_hop(), dest_options()]);
            let cases = [("ipv4", v4), ("ipv6", v6), ("ipv6_hop_by_hop_dest_options", v6_ext)];
            let mut out = serde_json::Map::new();
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            let mut allowed = vec![true; cases.len()];
            // Each round measures every case, in turn. A packet the
            // programs drop is reported so (its cost is not the parser's
            // alone).
            for _ in 0..runs {
                for (i, (_, f)) in cases.iter().enumerate() {
                    let r = d.test_run(Hook::Egress, ifindex, f, repeat).expect("test run");
                    allowed[i] &= r.allowed();
                    samples[i].push(r.duration.as_nanos() as f64);
                }
            }
            for (((name, _), v), allowed) in cases.iter().zip(samples).zip(allowed) {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(0.0, f64::max);
                out.insert(
                    (*name).to_owned(),
                    json!({"allowed": allowed, "new_flow_ns_median": median(v.clone()), "min": min, "max": max, "runs": v}),
                );
            }
            json!({"repeat": repeat, "runs": runs, "per_packet": out})
        })
        .expect("run in the namespace");
    drop(ns);
    let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), &node);
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
