//! A scenario's steps, run in order after its probes and matrices: open
//! a connection and keep it, change a Service's endpoints, check what the
//! open connection sees next, probe again.
//!
//! ```yaml
//! steps:
//!   # a TCP connection (or a connected UDP socket) kept open, asked which
//!   # backend answers; backend: optional, the pod that must answer
//!   - open: {name: c, from: shop/client, to: service/shop/web, protocol: tcp, port: 80,
//!            backend: shop/web-1}
//!   # the Service's EndpointSlice now lists exactly these pods
//!   - endpoints: {service: shop/web, pods: [shop/web-2]}
//!   # what the open connection sees: open (its next answer comes, from
//!   # backend when given) or reset (TCP: a RST, within within_ms of the
//!   # last change); expect for every dataplane, or bpf and iptables each
//!   - check: {name: c, bpf: reset, iptables: open, backend: shop/web-1, within_ms: 2000}
//!   # any probe, as in probes:
//!   - probe: {from: shop/client, to: service/shop/web, protocol: tcp, port: 80,
//!             expect: allow, backends: [shop/web-2], repeat: 5}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manul_local_cluster::{Dataplane, ExternalClient, LocalCluster};
use manul_netns::{HeldAnswer, HeldConnection, HeldUdp};
use serde::Deserialize;

use crate::scenario::{ProbeSpec, Protocol, Scenario, Verdict};

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Open(OpenStep),
    Endpoints(EndpointsStep),
    Check(CheckStep),
    Probe(ProbeSpec),
}

/// Opens a connection and keeps it for later checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStep {
    pub name: String,
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    /// The pod that must answer.
    #[serde(default)]
    pub backend: Option<String>,
}

/// Rewrites a Service's EndpointSlice to list exactly `pods`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsStep {
    pub service: String,
    pub pods: Vec<String>,
}

/// What an open connection must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Held {
    /// It still answers (from `backend` when given).
    Open,
    /// TCP: it is reset.
    Reset,
}

/// Checks an open connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckStep {
    pub name: String,
    /// On every dataplane.
    #[serde(default)]
    pub expect: Option<Held>,
    /// On the eBPF dataplane (with `iptables`, instead of `expect`).
    #[serde(default)]
    pub bpf: Option<Held>,
    /// On the nftables dataplane.
    #[serde(default)]
    pub iptables: Option<Held>,
    /// The pod that must answer (for open).
    #[serde(default)]
    pub backend: Option<String>,
    /// How long it may take: for reset from the last endpoints change, for
    /// open from the check's start (the first answer counts: one from
    /// another backend fails).
    #[serde(default = "two_seconds")]
    pub within_ms: u64,
}

fn two_seconds() -> u64 {
    2000
}

impl CheckStep {
    /// What is expected on `dataplane`.
    pub fn expected(&self, dataplane: Dataplane) -> Option<Held> {
        self.expect.or(match dataplane {
            Dataplane::Bpf => self.bpf,
            Dataplane::Iptables => self.iptables,
            Dataplane::Null => None,
        })
    }
}

/// What the scenario knows, for checking steps.
pub(crate) struct Known<'a> {
    pub pods: &'a BTreeSet<&'a str>,
    pub services: &'a BTreeSet<&'a str>,
}

/// Checks the steps; returns the probes among them and the opens (as
/// probes expecting allow), named for their errors, for the checks every
/// probe gets.
pub(crate) fn check(steps: &[Step], known: &Known) -> Result<Vec<(String, ProbeSpec)>> {
    let mut probes = Vec::new();
    let mut opened: BTreeMap<&str, Protocol> = BTreeMap::new();
    let pod = |what: &str, p: &str| -> Result<()> {
        if !known.pods.contains(p) {
            bail!("{what}: {p} is not a pod of the scenario");
        }
        Ok(())
    };
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Open(o) => {
                let what = format!("steps[{i}].open");
                if o.name.is_empty() {
                    bail!("{what}: an empty name");
                }
                if o.protocol == Protocol::Icmp {
                    bail!("{what}: protocol must be tcp or udp");
                }
                if opened.insert(&o.name, o.protocol).is_some() {
                    bail!("{what}: {} is opened twice", o.name);
                }
                if let Some(b) = &o.backend {
                    pod(&what, b)?;
                }
                probes.push((
                    what,
                    ProbeSpec {
                        from: o.from.clone(),
                        to: o.to.clone(),
                        protocol: o.protocol,
                        port: o.port,
                        expect: Verdict::Allow,
                        source: None,
                        backends: Vec::new(),
                        reach: crate::scenario::Reach::Any,
                        repeat: None,
                        backend_port: None,
                    },
                ));
            }
            Step::Endpoints(e) => {
                let what = format!("steps[{i}].endpoints");
                if !known.services.contains(e.service.as_str()) {
                    bail!("{what}: unknown service {}", e.service);
                }
                for p in &e.pods {
                    pod(&what, p)?;
                }
            }
            Step::Check(c) => {
                let what = format!("steps[{i}].check");
                let Some(protocol) = opened.get(c.name.as_str()) else {
                    bail!("{what}: no earlier open step is named {:?}", c.name);
                };
                match (c.expect, c.bpf, c.iptables) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                    (Some(_), _, _) => bail!("{what}: expect, or bpf and iptables, not both"),
                    _ => bail!("{what}: needs expect, or both bpf and iptables"),
                }
                let all = [c.expect, c.bpf, c.iptables];
                if *protocol == Protocol::Udp && all.contains(&Some(Held::Reset)) {
                    bail!("{what}: {} is UDP: reset is for TCP", c.name);
                }
                if let Some(b) = &c.backend {
                    if !all.contains(&Some(Held::Open)) {
                        bail!("{what}: backend is for expect open");
                    }
                    pod(&what, b)?;
                }
                if !(1..=60_000).contains(&c.within_ms) {
                    bail!("{what}: within_ms is 1..=60000");
                }
            }
            Step::Probe(p) => probes.push((format!("steps[{i}].probe"), p.clone())),
        }
    }
    Ok(probes)
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    /// The step, in words.
    pub what: String,
    pub ok: bool,
    /// What it saw.
    pub note: String,
}

/// How long one question on a held connection waits.
const ASK: Duration = Duration::from_millis(300);
/// Between questions.
const PAUSE: Duration = Duration::from_millis(50);

enum Conn {
    Tcp(HeldConnection),
    Udp(HeldUdp),
}

impl Conn {
    fn ask(&mut self, timeout: Duration) -> Result<HeldAnswer> {
        Ok(match self {
            Conn::Tcp(c) => c.ask(timeout)?,
            Conn::Udp(u) => u.ask(timeout)?,
        })
    }
}

/// What a step run needs of the scenario's run.
pub(crate) struct Env<'a> {
    pub cluster: &'a LocalCluster,
    pub scenario: &'a Scenario,
    pub externals: &'a BTreeMap<String, ExternalClient>,
    pub external_ips: &'a BTreeMap<String, Ipv4Addr>,
    pub terminating: &'a BTreeSet<String>,
    pub dataplane: Dataplane,
}

/// Runs the steps in order.
pub(crate) fn run(env: &Env, interrupted: &AtomicBool) -> Result<Vec<StepRow>> {
    let c = env.cluster;
    let mut held: BTreeMap<String, Conn> = BTreeMap::new();
    let mut changed: Option<Instant> = None;
    let mut rows = Vec::new();
    for step in &env.scenario.steps {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        match step {
            Step::Open(o) => {
                let (netns, _, dst) = crate::scenario_probe::addresses(
                    c,
                    env.scenario,
                    env.externals,
                    &o.from,
                    &o.to,
                    o.port,
                )?;
                let what = format!(
                    "open {}: {} -> {} {:?} {}",
                    o.name, o.from, o.to, o.protocol, o.port
                );
                let mut conn = match o.protocol {
                    Protocol::Udp => Conn::Udp(manul_netns::open_udp(netns, dst)?),
                    _ => match manul_netns::open_connection(netns, dst, Duration::from_secs(1)) {
                        Ok(conn) => Conn::Tcp(conn),
                        Err(e) => {
                            rows.push(StepRow {
                                what,
                                ok: false,
                                note: format!("not opened: {e}"),
                            });
                            continue;
                        }
                    },
                };
                let answer = conn.ask(Duration::from_secs(1))?;
                let (ok, note) = match answer {
                    HeldAnswer::Answered(_, local) => {
                        let by = pod_name(c, local.ip());
                        let ok = o.backend.as_ref().is_none_or(|b| *b == by);
                        (ok, format!("answered by {by}"))
                    }
                    other => (false, format!("no answer: {other:?}")),
                };
                rows.push(StepRow { what, ok, note });
                held.insert(o.name.clone(), conn);
            }
            Step::Endpoints(e) => {
                let s = env
                    .scenario
                    .services
                    .iter()
                    .find(|s| s.name == e.service)
                    .with_context(|| format!("no service {}", e.service))?;
                let ranges = s.source_ranges(env.external_ips)?;
                let only: BTreeSet<String> = e.pods.iter().cloned().collect();
                let slice: Vec<_> =
                    crate::scenario_services::resources(s, c, env.terminating, ranges, Some(&only))
                        .into_iter()
                        .filter(|r| matches!(r, manul_model::Resource::EndpointSlice(_)))
                        .collect();
                changed = Some(Instant::now());
                let revision = c.apply(slice)?;
                crate::scenario::settle(c, revision)?;
                rows.push(StepRow {
                    what: format!("endpoints {}: {}", e.service, e.pods.join(", ")),
                    ok: true,
                    note: format!(
                        "every node applied it in {} ms",
                        changed.map_or(0, |t| t.elapsed().as_millis())
                    ),
                });
            }
            Step::Check(check) => {
                let Some(conn) = held.get_mut(&check.name) else {
                    bail!("check {}: not open", check.name);
                };
                let Some(expect) = check.expected(env.dataplane) else {
                    bail!(
                        "check {}: nothing expected on {}",
                        check.name,
                        env.dataplane.as_str()
                    );
                };
                rows.push(run_check(c, check, expect, conn, changed)?);
            }
            Step::Probe(p) => {
                let row = crate::scenario_probe::probe(
                    c,
                    env.scenario,
                    env.externals,
                    crate::scenario::check_of(p),
                )?;
                let what = format!(
                    "probe {} -> {} {:?} {}: expect {}",
                    row.from,
                    row.to,
                    row.protocol,
                    row.port,
                    format!("{:?}", row.expected).to_lowercase()
                );
                let mut note = format!("{:?}", row.actual).to_lowercase();
                if !row.note.is_empty() {
                    note = format!("{note}; {}", row.note);
                }
                rows.push(StepRow {
                    what,
                    ok: row.ok,
                    note,
                });
            }
        }
    }
    Ok(rows)
}

/// Asks the held connection until it shows what is expected or time is
/// up.
fn run_check(
    c: &LocalCluster,
    check: &CheckStep,
    expect: Held,
    conn: &mut Conn,
    changed: Option<Instant>,
) -> Result<StepRow> {
    let start = Instant::now();
    let within = Duration::from_millis(check.within_ms);
    let since = match expect {
        Held::Reset => changed.unwrap_or(start),
        Held::Open => start,
    };
    let deadline = since + within;
    let what = format!(
        "check {}: {}{}, within {} ms",
        check.name,
        match expect {
            Held::Open => "open",
            Held::Reset => "reset",
        },
        match (expect, &check.backend) {
            (Held::Open, Some(b)) => format!(" (answered by {b})"),
            _ => String::new(),
        },
        check.within_ms
    );
    let tcp = matches!(conn, Conn::Tcp(_));
    let mut seen: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = conn.ask(ASK.min(left.max(Duration::from_millis(1))))?;
        let after = since.elapsed().as_millis();
        let (done, ok, note) = match (expect, answer) {
            (Held::Reset, HeldAnswer::Reset) => {
                (true, true, format!("reset {after} ms after the change"))
            }
            (Held::Open, HeldAnswer::Answered(_, local)) => {
                let by = pod_name(c, local.ip());
                let ok = check.backend.as_ref().is_none_or(|b| *b == by);
                (true, ok, format!("answered by {by} after {after} ms"))
            }
            (_, HeldAnswer::Answered(_, local)) => {
                seen.push(pod_name(c, local.ip()));
                (false, false, String::new())
            }
            (_, HeldAnswer::Closed) => (true, false, format!("closed after {after} ms")),
            (Held::Open, HeldAnswer::Reset) if tcp => {
                (true, false, format!("reset after {after} ms"))
            }
            (_, HeldAnswer::Reset | HeldAnswer::Silent) => (false, false, String::new()),
        };
        if done {
            return Ok(StepRow { what, ok, note });
        }
        if Instant::now() >= deadline {
            seen.dedup();
            let note = if seen.is_empty() {
                format!("nothing in {} ms", check.within_ms)
            } else {
                format!(
                    "answered by {} until {} ms had passed",
                    seen.join(", then "),
                    check.within_ms
                )
            };
            return Ok(StepRow {
                what,
                ok: false,
                note,
            });
        }
        std::thread::sleep(PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The pod that has `ip`, or the address itself.
fn pod_name(c: &LocalCluster, ip: IpAddr) -> String {
    c.pods()
        .find(|p| IpAddr::V4(p.ip) == ip)
        .map_or_else(|| ip.to_string(), |p| p.key())
}

#[cfg(test)]
#[path = "scenario_steps_tests.rs"]
mod tests;
