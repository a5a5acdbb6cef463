//! `flows`: the per-packet cost of flow observations. The shared traffic
//! measurement (`manul_dataplane_conformance::traffic::measure`: two pods
//! on a node, the server's policy with `--flow-rules` non-matching rules
//! before the allowing one) with the driver's flows off and on, side by
//! side in one run: each round measures both, in alternating order, in
//! fresh namespaces. Round trips on one held connection (a TCP_RR loop)
//! are what every established packet costs; connects are new flows, each
//! logged once per side with flows on.

use std::sync::Arc;

use anyhow::Result;
use manul_dataplane_api::Driver;
use manul_dataplane_conformance::Factory;
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_conformance::traffic::{self, Dataplane, TrafficOptions, TrafficSample};
use manul_dataplane_iptables::{FlowLog, Nft, NftConfig, NftDriver};
use serde::Serialize;

use super::Cli;

fn factory(flows: Option<FlowLog>) -> Arc<Factory> {
    Arc::new(move |_ctx| {
        let config = NftConfig {
            flows,
            ..NftConfig::default()
        };
        NftDriver::with_config(Nft::default(), config)
            .map(|d| Box::new(d) as Box<dyn Driver>)
            .map_err(|e| chain(&e))
    })
}

/// Median and range of one figure over the rounds.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn figure(samples: &[TrafficSample], f: impl Fn(&TrafficSample) -> f64) -> Figure {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Figure {
        median,
        min: v.first().copied().unwrap_or(0.0),
        max: v.last().copied().unwrap_or(0.0),
    }
}

/// One configuration's figures.
#[derive(Debug, Serialize)]
pub struct Side {
    pub roundtrip_p50_us: Figure,
    pub roundtrip_p99_us: Figure,
    pub connect_p50_us: Figure,
    pub connects_per_sec: Figure,
    pub throughput_gbps: Figure,
}

fn side(samples: &[TrafficSample]) -> Side {
    Side {
        roundtrip_p50_us: figure(samples, |s| s.roundtrip.p50_us),
        roundtrip_p99_us: figure(samples, |s| s.roundtrip.p99_us),
        connect_p50_us: figure(samples, |s| s.connect.p50_us),
        connects_per_sec: figure(samples, |s| s.connects_per_sec),
        throughput_gbps: figure(samples, |s| s.throughput_bps / 1e9),
    }
}

/// Costs with flows on over flows off (above 1: flows cost more), from
/// the medians.
#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Established round trip, p50: the per-packet cost.
    pub roundtrip_p50: f64,
    pub roundtrip_p99: f64,
    /// New connection latency, p50.
    pub connect_p50: f64,
    /// Connects per second, off over on.
    pub connects_per_sec: f64,
    /// Throughput, off over on.
    pub throughput: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub rules: usize,
    pub runs: usize,
    pub options: TrafficOptions,
    pub off: Side,
    pub on: Side,
    pub on_over_off: Ratios,
    pub samples_off: Vec<TrafficSample>,
    pub samples_on: Vec<TrafficSample>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

pub fn run(cli: &Cli) -> Result<Report> {
    let off = Dataplane::Driver {
        name: "iptables".into(),
        factory: factory(None),
    };
    let on = Dataplane::Driver {
        name: "iptables+flows".into(),
        factory: factory(Some(FlowLog::default())),
    };
    let options = TrafficOptions {
        iperf_seconds: cli.iperf_seconds,
        connects: cli.connects,
        roundtrips: cli.roundtrips,
        ..TrafficOptions::default()
    };
    let rules = cli.flow_rules;
    let (mut samples_off, mut samples_on) = (Vec::new(), Vec::new());
    for round in 0..cli.runs.max(1) {
        let order = if round % 2 == 0 {
            [&off, &on]
        } else {
            [&on, &off]
        };
        for dataplane in order {
            let s = traffic::measure("fb", dataplane, rules, &options)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "flows: {:15} rr p50 {:6.1} us p99 {:6.1} us, connect p50 {:6.1} us, {:6.0} connects/s, {:6.2} Gbit/s",
                s.dataplane,
                s.roundtrip.p50_us,
                s.roundtrip.p99_us,
                s.connect.p50_us,
                s.connects_per_sec,
                s.throughput_bps / 1e9
            );
            if s.dataplane == "iptables" {
                samples_off.push(s);
            } else {
                samples_on.push(s);
            }
        }
    }
    let (a, b) = (side(&samples_off), side(&samples_on));
    let on_over_off = Ratios {
        roundtrip_p50: ratio(b.roundtrip_p50_us.median, a.roundtrip_p50_us.median),
        roundtrip_p99: ratio(b.roundtrip_p99_us.median, a.roundtrip_p99_us.median),
        connect_p50: ratio(b.connect_p50_us.median, a.connect_p50_us.median),
        connects_per_sec: ratio(a.connects_per_sec.median, b.connects_per_sec.median),
        throughput: ratio(a.throughput_gbps.median, b.throughput_gbps.median),
    };
    Ok(Report {
        rules,
        runs: cli.runs,
        options,
        off: a,
        on: b,
        on_over_off,
        samples_off,
        samples_on,
    })
}
