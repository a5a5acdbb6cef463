//! The Maglev figure of `BENCHMARKS.md`: the fraction of the surviving
//! backends' flows that move when one of N backends goes away, for each of
//! the N in turn (over the table's slots), and over 100,000 flows hashed
//! with the dataplanes' flow hash (`maglev::flow_hash`, as the eBPF
//! program computes it) when the first backend goes, with the flows'
//! spread over the backends (fewest and most per backend against the
//! mean), as one JSON object on stdout.
//!
//! `cargo run -p manul-dataplane-api --example maglev-bench -- [--backends N]`
//! (the figure is a property of the table, the same in any build profile).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use manul_dataplane_api::Backend;
use manul_dataplane_api::maglev::{MaglevTable, flow_hash, remapped_fraction};

/// Flows hashed for the per-flow figures.
const FLOWS: u32 = 100_000;

fn main() {
    let mut n: u32 = 100;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse::<u32>())) {
            ("--backends", Some(Ok(v))) if v >= 2 => n = v,
            _ => {
                eprintln!("usage: maglev-bench [--backends N (at least 2)]");
                std::process::exit(2);
            }
        }
    }
    let all: Vec<Backend> = (0..n)
        .map(|i| Backend {
            ip: IpAddr::V4(Ipv4Addr::from(0x0a41_0000 + i)),
            port: 8080,
            local: false,
            ready: true,
        })
        .collect();
    let started = Instant::now();
    let before = MaglevTable::build(&all);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut fractions: Vec<f64> = (0..all.len())
        .map(|gone| {
            let mut rest = all.clone();
            rest.remove(gone);
            remapped_fraction(&before, &MaglevTable::build(&rest))
        })
        .collect();
    fractions.sort_by(f64::total_cmp);
    // Flows from 1,000 clients × 100 ports to a node port.
    let frontend = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let flows: Vec<u64> = (0..FLOWS)
        .map(|i| {
            let client = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i / 100));
            flow_hash(client, frontend, 20_000 + (i % 100) as u16, 30_080, 6)
        })
        .collect();
    let mut per_backend = vec![0u32; all.len()];
    for h in &flows {
        if let Some(i) = before.index(*h) {
            per_backend[i as usize] += 1;
        }
    }
    let fair = f64::from(FLOWS) / all.len() as f64;
    let fewest = per_backend.iter().min().copied().unwrap_or(0);
    let most = per_backend.iter().max().copied().unwrap_or(0);
    let after = MaglevTable::build(&all[1..]);
    let gone = all[0];
    let (mut surviving, mut moved) = (0u32, 0u32);
    for h in &flows {
        let (Some(b), Some(a)) = (before.lookup(*h), after.lookup(*h)) else {
            continue;
        };
        if (b.ip, b.port) != (gone.ip, gone.port) {
            surviving += 1;
            moved += u32::from((a.ip, a.port) != (b.ip, b.port));
        }
    }
    let flows_moved = f64::from(moved) / f64::from(surviving.max(1));
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    println!(
        "{{\"bench\":\"maglev-remap\",\"backends\":{n},\"table_size\":{},\"removals\":{},\"remapped_fraction_mean\":{mean:.5},\"remapped_fraction_median\":{:.5},\"remapped_fraction_max\":{:.5},\"flows\":{FLOWS},\"flows_remapped_fraction\":{flows_moved:.5},\"flows_per_backend_min_ratio\":{:.3},\"flows_per_backend_max_ratio\":{:.3},\"build_ms\":{build_ms:.3},\"profile\":\"{}\"}}",
        before.size(),
        fractions.len(),
        fractions[fractions.len() / 2],
        fractions[fractions.len() - 1],
        f64::from(fewest) / fair,
        f64::from(most) / fair,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
