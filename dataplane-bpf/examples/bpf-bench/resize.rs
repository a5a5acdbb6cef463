//! `resize`: what a restart with bigger maps costs (`bpfMapSize*`
//! changed), side by side in one run: the load that creates the maps anew
//! and copies a full node's entries (`--services` ClusterIP services with
//! `--backends` backends each, and `--conntrack` conntrack entries) into
//! them, against the same load on a node whose maps are empty (the
//! verifier and the new maps, nothing to copy), and a load with unchanged
//! sizes (the pinned programs adopted). The difference of the first two is
//! the copy.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use aya::maps::{HashMap, Map, MapData};
use manul_dataplane_api::{Driver, Operation};
use manul_dataplane_bpf::abi::{manul_ct_key, manul_ct_value};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, ServiceMapSizes};
use manul_netns::{NetNs, unique_prefix};
use serde_json::json;

use super::{PIN_ROOT, bench_service, flag, median};

fn config(node: &str, bigger: bool) -> BpfConfig {
    let mut c = BpfConfig::new(node);
    c.pin_root = PathBuf::from(PIN_ROOT);
    if bigger {
        let d = ServiceMapSizes::default();
        c.service_map_sizes = ServiceMapSizes {
            frontend: d.frontend * 2,
            backend: d.backend * 2,
            affinity: d.affinity * 2,
        };
        c.conntrack_capacity *= 2;
    }
    c
}

/// Fills `manul_ct` with `n` distinct entries, as connections would.
fn fill_conntrack(node: &str, n: u32) {
    let path = PathBuf::from(PIN_ROOT).join(node).join("maps/manul_ct");
    let data = MapData::from_pin(path).expect("manul_ct pinned");
    let mut ct: HashMap<MapData, manul_ct_key, manul_ct_value> =
        HashMap::try_from(Map::HashMap(data)).expect("manul_ct");
    for i in 0..n {
        let mut k = manul_ct_key {
            ifindex: 7,
            proto: 6,
            version: 4,
            port_a: (1024 + i % 60000) as u16,
            port_b: 80,
            ..manul_ct_key::default()
        };
        k.addr_a[..4].copy_from_slice(&Ipv4Addr::from(0x0a40_0000 + i / 60000).octets());
        k.addr_b[..4].copy_from_slice(&[10, 96, 0, 10]);
        ct.insert(k, manul_ct_value::default(), 0)
            .expect("a conntrack entry");
    }
}

pub fn run() {
    let services: usize = flag("--services")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let backends: usize = flag("--backends")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let conntrack: u32 = flag("--conntrack")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let runs: usize = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut ops: Vec<Operation> = (0..services)
        .map(|i| Operation::ServiceUpdate(bench_service(i, backends, 0)))
        .collect();
    ops.push(Operation::InSync);
    let (mut full, mut empty, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let tag = unique_prefix("rz");
        let ns = NetNs::create(&tag).expect("create a network namespace");
        let (a, b) = (format!("{tag}f"), format!("{tag}e"));
        ns.run(|| {
            // A full node and an empty one, both at the default sizes.
            let mut driver = BpfDriver::new(config(&a, false)).expect("load");
            driver.apply(&ops).expect("the services");
            drop(driver);
            fill_conntrack(&a, conntrack);
            drop(BpfDriver::new(config(&b, false)).expect("load"));
            // Unchanged sizes: the pinned programs adopted.
            let t = Instant::now();
            drop(BpfDriver::load(&config(&a, false)).expect("same sizes"));
            same.push(t.elapsed().as_secs_f64() * 1e3);
            // Bigger maps: created anew, the full node's entries copied.
            let t = Instant::now();
            drop(BpfDriver::load(&config(&a, true)).expect("bigger, full"));
            full.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            drop(BpfDriver::load(&config(&b, true)).expect("bigger, empty"));
            empty.push(t.elapsed().as_secs_f64() * 1e3);
        })
        .expect("run in the namespace");
        drop(ns);
        for node in [&a, &b] {
            let _ = BpfDriver::purge_node(PIN_ROOT.as_ref(), node);
        }
    }
    let copy: Vec<f64> = full.iter().zip(&empty).map(|(f, e)| f - e).collect();
    let report = json!({
        "bench": "dataplane-bpf resize",
        "services": services,
        "backends_per_service": backends,
        "frontend_entries": services * 2,
        "backend_entries": services * backends,
        "conntrack_entries": conntrack,
        "runs": runs,
        "load_resize_full_ms_median": median(full.clone()),
        "load_resize_full_ms_runs": full,
        "load_resize_empty_ms_median": median(empty.clone()),
        "load_resize_empty_ms_runs": empty,
        "copy_ms_median": median(copy.clone()),
        "copy_ms_runs": copy,
        "load_same_sizes_ms_median": median(same.clone()),
        "load_same_sizes_ms_runs": same,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
