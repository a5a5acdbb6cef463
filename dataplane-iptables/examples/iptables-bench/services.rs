//! The `services` benchmark: a snapshot of services into a fresh table,
//! then one service's backend change at a time (the driver writes those
//! over netlink), and the same changes through `nft` for comparison.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use manul_dataplane_api::{Backend, Driver, Operation, Service, ServicePort};
use manul_dataplane_conformance::driver_thread::chain;
use manul_dataplane_iptables::{Nft, NftDriver, NftStats, Phases, names, render, script};
use manul_netns::NetNs;
use serde::Serialize;

use super::{Cli, Stats, driver_err, ms};

#[derive(Debug, Serialize)]
pub struct Report {
    services: usize,
    backends_per_service: usize,
    /// Chains and rules in the rendered table.
    nft_chains: usize,
    nft_rules: usize,
    /// The size of the whole-table `nft -f` script.
    full_script_bytes: usize,
    /// The snapshot (every `ServiceUpdate` and `InSync`) into a fresh
    /// table, in one `apply`.
    snapshot_apply: Stats,
    /// Of the last snapshot: preparing the script (render) and `nft`.
    snapshot_prepare_ms: f64,
    snapshot_nft_ms: f64,
    /// Of every snapshot, phase by phase (see `Phases`): which one grew.
    snapshot_phases: PhaseStats,
    /// One `ServiceUpdate` replacing one backend of one service.
    backend_change: Stats,
    /// How many of them the driver wrote over netlink (element changes)
    /// rather than through `nft`.
    backend_change_netlink: usize,
    /// Of each change: preparing the change, and netlink (or `nft`)
    /// applying it.
    backend_change_prepare: Stats,
    backend_change_nft: Stats,
    /// Of each change, phase by phase.
    backend_change_phases: PhaseStats,
    /// The bytes of the batch (or script) one change writes (last change).
    backend_change_script_bytes: usize,
    /// The same changes written the way every batch other than a service
    /// change is: render the whole state, diff it with the previous
    /// rendering, `nft -f` the script (outside the driver, on the same
    /// table; the contract check is left out).
    whole_state_change: Stats,
    whole_state_change_prepare: Stats,
    /// Outside the driver: rendering the whole state, and diffing two
    /// whole rendered states that differ by one backend.
    render_whole: Stats,
    diff_whole: Stats,
    /// `nft` alone on the same table: one verdict-map element added or
    /// deleted again, and an empty transaction.
    nft_only_map_element: Stats,
    nft_only_noop: Stats,
    /// Outside the driver, on the same table: one cluster-IP element
    /// added in one batch and deleted in the next, over netlink; each
    /// batch on a socket of its own (closed after it), or all on one
    /// socket kept open (as the driver sends them).
    netlink_socket_per_batch: Stats,
    netlink_kept_socket: Stats,
    stats_after: Counters,
}

/// The driver's write phases (`Phases`) over several writes.
#[derive(Debug, Serialize)]
struct PhaseStats {
    render: Stats,
    diff: Stats,
    compile: Stats,
    encode: Stats,
    kernel: Stats,
}

impl PhaseStats {
    fn of(all: &[Phases]) -> PhaseStats {
        let each = |f: fn(&Phases) -> std::time::Duration| {
            Stats::of(all.iter().map(|p| f(p).as_secs_f64() * 1e3).collect())
        };
        PhaseStats {
            render: each(|p| p.render),
            diff: each(|p| p.diff),
            compile: each(|p| p.compile),
            encode: each(|p| p.encode),
            kernel: each(|p| p.kernel),
        }
    }
}

#[derive(Debug, Serialize)]
struct Counters {
    full_writes: u64,
    incremental_writes: u64,
    netlink_writes: u64,
}

impl From<NftStats> for Counters {
    fn from(s: NftStats) -> Self {
        Counters {
            full_writes: s.full_writes,
            incremental_writes: s.incremental_writes,
            netlink_writes: s.netlink_writes,
        }
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Service `i`: cluster IP 10.96.0.0 + i, TCP port 80, backends in
/// 10.64.0.0/10 on port 8080; `generation` moves its first backend.
fn service(i: usize, backends: usize, generation: u32) -> Service {
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

fn snapshot(cli: &Cli) -> Vec<Operation> {
    let mut ops: Vec<Operation> = (0..cli.services)
        .map(|i| Operation::ServiceUpdate(service(i, cli.backends, 0)))
        .collect();
    ops.push(Operation::InSync);
    ops
}

fn nft_err(e: manul_dataplane_iptables::NftError) -> anyhow::Error {
    anyhow::anyhow!(chain(&e))
}

/// One element added then deleted, `pairs` times, timing each batch:
/// first with a socket per batch, then on one socket kept open,
/// alternating the two every pair so both see the same load.
fn socket_side_by_side(pairs: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    use manul_dataplane_iptables::element::{Element, Value};
    use manul_dataplane_iptables::elements::{SetChange, batch};
    use manul_dataplane_iptables::netlink;
    let element = Element::key(vec![Value::Addr(v4(u32::from(Ipv4Addr::new(
        10, 255, 255, 254,
    ))))]);
    let change = |add| SetChange {
        set: "mnl-cluster-ips4",
        type_: "ipv4_addr",
        add,
        elements: vec![&element],
    };
    let mut writer = netlink::Writer::default();
    let (mut per_batch, mut kept) = (Vec::new(), Vec::new());
    let mut seq = 1_000_000;
    for _ in 0..pairs {
        for own_socket in [true, false] {
            for add in [true, false] {
                let b = batch(&[change(add)], seq).map_err(|e| anyhow::anyhow!(chain(&e)))?;
                seq += 4;
                let started = Instant::now();
                if own_socket {
                    netlink::apply(&b).map_err(nft_err)?;
                    per_batch.push(ms(started));
                } else {
                    writer.apply(&b).map_err(nft_err)?;
                    kept.push(ms(started));
                }
            }
        }
    }
    eprintln!(
        "services: element batch p50 {:.2} ms on a socket per batch, {:.2} ms on a kept socket",
        Stats::of(per_batch.clone()).median_ms,
        Stats::of(kept.clone()).median_ms
    );
    Ok((per_batch, kept))
}

pub fn run(cli: &Cli) -> Result<Report> {
    if cli.services == 0 || cli.backends == 0 || cli.changes == 0 {
        bail!("--services, --backends and --changes must be positive");
    }
    let ops = snapshot(cli);
    let reps = cli.full_repetitions.max(1);
    let mut snapshot_times = Vec::new();
    let mut snapshot_phases = Vec::new();
    for r in 0..reps {
        let ns = NetNs::create(&format!("{}-s", manul_netns::unique_prefix("ib")))
            .context("creating a namespace")?;
        let last = r + 1 == reps;
        let result = ns
            .run(|| -> Result<Option<Report>> {
                let mut driver = NftDriver::new(Nft::default()).map_err(driver_err)?;
                let started = Instant::now();
                driver.apply(&ops).map_err(driver_err)?;
                let took = ms(started);
                let split = driver.last_write();
                let p = split.phases;
                eprintln!(
                    "services: snapshot in {took:.0} ms: render {:.0}, diff {:.0}, compile {:.0}, encode {:.0}, kernel {:.0} ms",
                    p.render.as_secs_f64() * 1e3,
                    p.diff.as_secs_f64() * 1e3,
                    p.compile.as_secs_f64() * 1e3,
                    p.encode.as_secs_f64() * 1e3,
                    p.kernel.as_secs_f64() * 1e3,
                );
                snapshot_times.push(took);
                snapshot_phases.push(split.phases);
                if !last {
                    return Ok(None);
                }
                measure(cli, driver, split).map(Some)
            })
            .context("running in the benchmark namespace")??;
        drop(ns);
        if let Some(mut report) = result {
            report.snapshot_apply = Stats::of(snapshot_times);
            report.snapshot_phases = PhaseStats::of(&snapshot_phases);
            return Ok(report);
        }
    }
    bail!("no repetition ran")
}

fn measure(
    cli: &Cli,
    mut driver: NftDriver,
    split: manul_dataplane_iptables::WriteTiming,
) -> Result<Report> {
    let mut change = Vec::new();
    let mut prepare = Vec::new();
    let mut nft_time = Vec::new();
    let mut phases = Vec::new();
    let mut script_bytes = 0;
    let mut netlink = 0;
    for k in 0..cli.changes {
        let i = (k * 7919) % cli.services;
        let op = Operation::ServiceUpdate(service(i, cli.backends, k as u32 + 1));
        let before = driver.stats().incremental_writes;
        let started = Instant::now();
        driver.apply(&[op]).map_err(driver_err)?;
        change.push(ms(started));
        if driver.stats().incremental_writes != before + 1 {
            bail!("a backend change wrote no incremental transaction");
        }
        let split = driver.last_write();
        prepare.push(split.prepare.as_secs_f64() * 1e3);
        nft_time.push(split.nft.as_secs_f64() * 1e3);
        phases.push(split.phases);
        script_bytes = split.script_bytes;
        netlink += usize::from(split.netlink);
    }
    eprintln!(
        "services: backend change p50 {:.1} ms",
        Stats::of(change.clone()).median_ms
    );

    let nft = Nft::default();
    let mut whole_change = Vec::new();
    let mut whole_prepare = Vec::new();
    let mut state = driver.state().clone();
    let mut rendered = render::render(&state);
    for k in 0..cli.changes {
        let i = (k * 7919 + 1) % cli.services;
        let svc = service(i, cli.backends, 1_000 + k as u32);
        let started = Instant::now();
        state
            .services
            .insert((svc.namespace.clone(), svc.name.clone()), svc);
        let new = render::render(&state);
        let script = script::incremental(&rendered, &new);
        whole_prepare.push(ms(started));
        nft.apply(&script).map_err(nft_err)?;
        whole_change.push(ms(started));
        rendered = new;
    }
    // Back to what the driver holds, so its refresh finds it clean.
    let held = render::render(driver.state());
    nft.apply(&script::incremental(&rendered, &held))
        .map_err(nft_err)?;
    eprintln!(
        "services: whole-state change p50 {:.1} ms",
        Stats::of(whole_change.clone()).median_ms
    );

    let state = driver.state().clone();
    let rs = render::render(&state);
    let full_script_bytes = script::full(&rs).len();
    let nft_rules = rs.chains.values().map(Vec::len).sum();
    let nft_chains = rs.chains.len();
    let mut render_whole = Vec::new();
    let mut diff_whole = Vec::new();
    let mut changed = state.clone();
    let svc = service(0, cli.backends, 1_000_000);
    changed
        .services
        .insert((svc.namespace.clone(), svc.name.clone()), svc);
    let rs_changed = render::render(&changed);
    for _ in 0..5 {
        let started = Instant::now();
        std::hint::black_box(render::render(&state));
        render_whole.push(ms(started));
        let started = Instant::now();
        std::hint::black_box(script::incremental(&rs, &rs_changed));
        diff_whole.push(ms(started));
    }

    let mut nft_element = Vec::new();
    let mut nft_noop = Vec::new();
    for k in 0..cli.changes.max(2) / 2 * 2 {
        let verb = if k.is_multiple_of(2) { "add" } else { "delete" };
        let line = format!(
            "{verb} element inet {} mnl-svc-ips4 {{ 10.255.0.1 . 6 . 80 : goto {} }}\n",
            names::TABLE,
            render::services::REJECT,
        );
        let started = Instant::now();
        nft.apply(&line).map_err(nft_err)?;
        nft_element.push(ms(started));
        let started = Instant::now();
        nft.apply(&format!("add table inet {}\n", names::TABLE))
            .map_err(nft_err)?;
        nft_noop.push(ms(started));
    }
    let (per_batch, kept) = socket_side_by_side(cli.changes.max(2))?;
    if driver.refresh().map_err(driver_err)? != manul_dataplane_iptables::Refresh::Clean {
        bail!("the refresh found the table changed");
    }
    Ok(Report {
        services: cli.services,
        backends_per_service: cli.backends,
        nft_chains,
        nft_rules,
        full_script_bytes,
        snapshot_apply: Stats::of(Vec::new()),
        snapshot_prepare_ms: split.prepare.as_secs_f64() * 1e3,
        snapshot_nft_ms: split.nft.as_secs_f64() * 1e3,
        snapshot_phases: PhaseStats::of(&[]),
        backend_change: Stats::of(change),
        backend_change_netlink: netlink,
        backend_change_prepare: Stats::of(prepare),
        backend_change_nft: Stats::of(nft_time),
        backend_change_phases: PhaseStats::of(&phases),
        backend_change_script_bytes: script_bytes,
        whole_state_change: Stats::of(whole_change),
        whole_state_change_prepare: Stats::of(whole_prepare),
        render_whole: Stats::of(render_whole),
        diff_whole: Stats::of(diff_whole),
        nft_only_map_element: Stats::of(nft_element),
        nft_only_noop: Stats::of(nft_noop),
        netlink_socket_per_batch: Stats::of(per_batch),
        netlink_kept_socket: Stats::of(kept),
        stats_after: driver.stats().into(),
    })
}
