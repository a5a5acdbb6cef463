//! The Maglev figure of `BENCHMARKS.md`: the fraction of the surviving
//! backends' flows that move when one of N backends goes away, for each of
//! the N in turn, as one JSON object on stdout.
//!
//! `cargo run -p manul-dataplane-api --example maglev-bench -- [--backends N]`
//! (the figure is a property of the table, the same in any build profile).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use manul_dataplane_api::Backend;
use manul_dataplane_api::maglev::{MaglevTable, remapped_fraction};

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
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    println!(
        "{{\"bench\":\"maglev-remap\",\"backends\":{n},\"table_size\":{},\"removals\":{},\"remapped_fraction_mean\":{mean:.5},\"remapped_fraction_median\":{:.5},\"remapped_fraction_max\":{:.5},\"build_ms\":{build_ms:.3},\"profile\":\"{}\"}}",
        before.size(),
        fractions.len(),
        fractions[fractions.len() / 2],
        fractions[fractions.len() - 1],
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
