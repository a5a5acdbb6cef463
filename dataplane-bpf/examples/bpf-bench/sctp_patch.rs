//! `sctp-patch`: what patching SCTP's CRC32c for a port rewrite costs a
//! packet, with `BPF_PROG_TEST_RUN` (the kernel's own time of one run per
//! call, a fresh frame every call), side by side in one run: an
//! established SCTP flow from a pod through a ClusterIP whose backend
//! listens on another port (destination port rewritten, CRC32c patched:
//! `bpf/manul_sctp.h`) against one through a ClusterIP whose backend
//! keeps the port (address rewritten only), for SCTP packets of several
//! lengths (the patch multiplies once per bit set in the length, plus
//! once). Each translated frame's CRC32c is checked against the `crc32c`
//! crate. The two kinds alternate so that drift spreads over both; the
//! difference of their medians is the patch's cost.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, Backend, Driver, EndpointId, Match, Operation, Policy, Rule, Service, ServicePort,
    WorkloadEndpoint,
};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook};
use manul_netns::{NetNs, create_veth, link_index, unique_prefix};
use serde_json::json;

use super::{PIN_ROOT, flag, median, percentile};

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const BACKEND: [u8; 4] = [10, 0, 0, 2];
/// The ClusterIP whose backend listens on another port, and the one
/// whose backend keeps it.
const MOVED: [u8; 4] = [10, 96, 0, 61];
const KEPT: [u8; 4] = [10, 96, 0, 62];
const PORT: u16 = 9000;
const TARGET: u16 = 9001;

/// An Ethernet frame with an IPv4 SCTP packet of `len` bytes from the
/// client's `sport` to `dst:PORT`, with its CRC32c.
fn sctp_frame(dst: [u8; 4], sport: u16, len: usize) -> Vec<u8> {
    let mut sctp = Vec::with_capacity(len);
    sctp.extend(sport.to_be_bytes());
    sctp.extend(PORT.to_be_bytes());
    sctp.extend(0x1234_5678u32.to_be_bytes());
    sctp.extend([0; 4]);
    sctp.extend((12..len).map(|i| i as u8));
    let crc = crc32c::crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    let mut f = vec![
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0,
    ];
    f.extend(u16::try_from(20 + len).unwrap().to_be_bytes());
    f.extend([0, 1, 0x40, 0, 64, 132, 0, 0]);
    f.extend(CLIENT);
    f.extend(dst);
    f.extend(sctp);
    f
}

/// A translated frame's destination port and whether its CRC32c holds.
fn seen(frame: &[u8]) -> (u16, bool) {
    let sctp = &frame[34..];
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    (
        u16::from_be_bytes([sctp[2], sctp[3]]),
        sctp[8..12] == crc32c::crc32c(&zeroed).to_le_bytes(),
    )
}

fn operations() -> Vec<Operation> {
    let open = |id: &str| Rule {
        id: id.into(),
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match::default(),
    };
    let service = |name: &str, vip: [u8; 4], target: u16| {
        let backends = vec![Backend {
            ip: IpAddr::from(BACKEND),
            port: target,
            local: true,
            ready: true,
        }];
        let mut svc = Service::cluster_ip(
            "bench",
            name,
            vec![IpAddr::from(vip)],
            vec![ServicePort {
                name: "sctp".into(),
                protocol: 132,
                port: PORT,
                node_port: None,
                local_backends: backends.clone(),
                backends,
            }],
        );
        svc.affinity_timeout_seconds = None;
        Operation::ServiceUpdate(svc)
    };
    vec![
        Operation::ProfileUpdate {
            id: "open".into(),
            profile: Policy {
                inbound: vec![open("open/in")],
                outbound: vec![open("open/out")],
            },
        },
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: "bench".into(),
                name: "client".into(),
            },
            interface_name: "mnlsctp".into(),
            nets: vec![IpNet::new(IpAddr::from(CLIENT), 32).unwrap()],
            mac: None,
            tiers: vec![],
            profiles: vec!["open".into()],
        }),
        service("moved", MOVED, TARGET),
        service("kept", KEPT, PORT),
        Operation::InSync,
    ]
}

pub fn run() {
    let calls: usize = flag("--calls").and_then(|s| s.parse().ok()).unwrap_or(5000);
    let node = unique_prefix("bp");
    let ns = NetNs::create(&node).expect("create a network namespace");
    create_veth(&ns, "mnlsctp", &ns, "peersctp").expect("veth");
    let ifindex = link_index(&ns, "mnlsctp").expect("ifindex");
    let pins = node.clone();
    let result = ns
        .run(move || {
            let mut cfg = BpfConfig::new(&pins);
            cfg.pin_root = PathBuf::from(PIN_ROOT);
            let mut d = BpfDriver::new(cfg).expect("load the programs");
            d.apply(&operations()).expect("apply");
            let mut rows = Vec::new();
            // Bits set in the length: 1 (64), 6 (1452), 11 (3071).
            for (i, len) in [64usize, 1452, 3071].into_iter().enumerate() {
                let sport = 20_000 + i as u16;
                let mut patched = Vec::with_capacity(calls);
                let mut unpatched = Vec::with_capacity(calls);
                for c in 0..=calls {
                    for (vip, want, times) in
                        [(MOVED, TARGET, &mut patched), (KEPT, PORT, &mut unpatched)]
                    {
                        let r = d
                            .test_run(Hook::Ingress, ifindex, &sctp_frame(vip, sport, len), 1)
                            .expect("test run");
                        assert!(r.allowed(), "the SCTP packet must pass");
                        assert_eq!(seen(&r.frame), (want, true), "translated, CRC32c valid");
                        // The first call opens the flow.
                        if c > 0 {
                            times.push(r.duration.as_nanos() as f64);
                        }
                    }
                }
                patched.sort_by(f64::total_cmp);
                unpatched.sort_by(f64::total_cmp);
                let (p50, u50) = (median(patched.clone()), median(unpatched.clone()));
                rows.push(json!({
                    "sctp_bytes": len,
                    "length_bits_set": len.count_ones(),
                    "calls": calls,
                    "port_rewritten_ns_p50": p50,
                    "port_rewritten_ns_p10": percentile(&patched, 0.1),
                    "port_rewritten_ns_p90": percentile(&patched, 0.9),
                    "port_kept_ns_p50": u50,
                    "port_kept_ns_p10": percentile(&unpatched, 0.1),
                    "port_kept_ns_p90": percentile(&unpatched, 0.9),
                    "crc_patch_ns": p50 - u50,
                    "ratio_p50": p50 / u50,
                }));
            }
            drop(d);
            rows
        })
        .expect("enter the namespace");
    if let Err(e) = BpfDriver::purge_node(PIN_ROOT.as_ref(), &node) {
        eprintln!("sctp-patch: removing the pins of {node}: {e}");
    }
    drop(ns);
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({ "benchmark": "bpf-bench sctp-patch", "rows": result })
        )
        .unwrap()
    );
}
