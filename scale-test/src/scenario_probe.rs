//! One scenario check on a running cluster: connect from a pod or an
//! external client to a pod, a Service's cluster IP or a node port, as
//! many times as asked, and compare the verdict, the source address the
//! backend saw and which backends answered with what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use manul_local_cluster::{ExternalClient, LocalCluster};
use manul_netns::{NetNs, ProbeOutcome};

use crate::scenario::{
    Check, EXTERNAL, Protocol, Reach, ResultRow, Scenario, Source, Target, Verdict,
};

/// How long one attempt waits (connect, and for TCP the server's answer).
const TIMEOUT: Duration = Duration::from_millis(500);

/// One attempt: the outcome, and for a connected TCP probe whom the
/// server saw and on which address it answered.
type Attempt = (ProbeOutcome, Option<(SocketAddr, SocketAddr)>);

fn verdict(o: ProbeOutcome) -> Verdict {
    match o {
        ProbeOutcome::Connected => Verdict::Allow,
        ProbeOutcome::Refused | ProbeOutcome::Unreachable => Verdict::Reject,
        ProbeOutcome::TimedOut => Verdict::Deny,
    }
}

/// Runs `check` and says how it went.
pub fn probe(
    c: &LocalCluster,
    sc: &Scenario,
    externals: &BTreeMap<String, ExternalClient>,
    check: Check,
) -> Result<ResultRow> {
    let (netns, client_ip, dst) = addresses(c, sc, externals, &check.from, &check.to, check.port)?;
    let dst_ip = dst.ip();
    let wanted: BTreeSet<&str> = check.backends.iter().map(String::as_str).collect();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut reached = BTreeSet::new();
    for _ in 0..check.repeat {
        let attempt = match check.protocol {
            Protocol::Tcp => {
                let p = manul_netns::tcp_peer(netns, dst, TIMEOUT)?;
                (p.outcome, p.seen)
            }
            Protocol::Udp => (manul_netns::udp_probe(netns, dst, TIMEOUT)?, None),
            Protocol::Icmp => (manul_netns::ping(netns, dst_ip, TIMEOUT)?, None),
        };
        if let Some((_, local)) = attempt.1 {
            reached.insert(local.ip());
        }
        attempts.push(attempt);
        if check.reach == Reach::Each && reached.len() >= wanted.len() {
            break;
        }
    }
    Ok(judge(c, check, client_ip, &attempts))
}

/// The namespace and address a check from `from` leaves with, and where
/// it goes (`to` on `port`).
pub fn addresses<'a>(
    c: &'a LocalCluster,
    sc: &Scenario,
    externals: &'a BTreeMap<String, ExternalClient>,
    from: &str,
    to: &str,
    port: u16,
) -> Result<(&'a NetNs, IpAddr, SocketAddr)> {
    let (netns, client_ip): (&NetNs, IpAddr) =
        match from.strip_prefix(EXTERNAL).and_then(|x| externals.get(x)) {
            Some(x) => (&x.netns, IpAddr::V4(x.ip)),
            None => {
                let pod = c.pod(from)?;
                (&pod.netns, IpAddr::V4(pod.ip))
            }
        };
    let cluster_ip = |name: &str| -> Result<IpAddr> {
        sc.services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.cluster_ip)
            .map(IpAddr::V4)
            .with_context(|| format!("service {name} has no cluster IP"))
    };
    let lb_ip = |name: &str| -> Result<IpAddr> {
        sc.services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.load_balancer_ip)
            .map(IpAddr::V4)
            .with_context(|| format!("service {name} has no load-balancer IP"))
    };
    let dst_ip = match Target::parse(to)? {
        Target::Pod(to) => IpAddr::V4(c.pod(to)?.ip),
        Target::Service(name) => cluster_ip(name)?,
        Target::LoadBalancer(name) => lb_ip(name)?,
        Target::NodePort(node, _) => IpAddr::V4(
            c.nodes()
                .get(node)
                .with_context(|| format!("no node {node}"))?
                .ip,
        ),
    };
    let dst = SocketAddr::new(dst_ip, port);
    Ok((netns, client_ip, dst))
}

/// The pod that has `ip`, or the address itself.
fn pod_name(c: &LocalCluster, ip: IpAddr) -> String {
    c.pods()
        .find(|p| IpAddr::V4(p.ip) == ip)
        .map_or_else(|| ip.to_string(), |p| p.key())
}

fn judge(c: &LocalCluster, check: Check, client: IpAddr, attempts: &[Attempt]) -> ResultRow {
    let verdicts: Vec<Verdict> = attempts.iter().map(|a| verdict(a.0)).collect();
    let actual = verdicts
        .iter()
        .copied()
        .find(|v| *v != check.expect)
        .unwrap_or(check.expect);
    let verdict_ok = match check.expect {
        // Deny: never reached (no answer or refused).
        Verdict::Deny => verdicts.iter().all(|v| *v != Verdict::Allow),
        _ => verdicts.iter().all(|v| *v == check.expect),
    };
    let actual = if check.expect == Verdict::Deny && verdict_ok {
        Verdict::Deny
    } else {
        actual
    };
    let mut problems = Vec::new();
    let mut sources = BTreeSet::new();
    let mut backends = Vec::new();
    let asked = check.source.is_some()
        || !check.backends.is_empty()
        || check.reach != Reach::Any
        || check.backend_port.is_some();
    if check.protocol == Protocol::Tcp && actual == Verdict::Allow {
        for (_, seen) in attempts {
            match seen {
                Some((peer, local)) => {
                    sources.insert(peer.ip());
                    backends.push(pod_name(c, local.ip()));
                }
                None if asked => problems.push("a server did not say whom it saw".to_string()),
                None => {}
            }
        }
    }
    let node_ips: BTreeSet<IpAddr> = c
        .nodes()
        .iter()
        .flat_map(|n| [IpAddr::V4(n.ip), IpAddr::V4(n.host_ip)])
        .collect();
    let source_ok = |ip: &IpAddr| match check.source {
        None => true,
        Some(Source::Client) => *ip == client,
        Some(Source::Node) => node_ips.contains(ip),
    };
    if let Some(bad) = sources.iter().find(|ip| !source_ok(ip)) {
        problems.push(format!(
            "the backend saw {bad}, not {}",
            match check.source {
                Some(Source::Client) => format!("the client's {client}"),
                _ => "a node's address".to_string(),
            }
        ));
    }
    let distinct: BTreeSet<&str> = backends.iter().map(String::as_str).collect();
    if !check.backends.is_empty() {
        let wanted: BTreeSet<&str> = check.backends.iter().map(String::as_str).collect();
        if let Some(other) = distinct.iter().find(|b| !wanted.contains(*b)) {
            problems.push(format!("{other} answered, not one of the listed backends"));
        }
        if check.reach == Reach::Each && verdict_ok {
            let missing: Vec<&&str> = wanted.difference(&distinct).collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{missing:?} never answered in {} connections",
                    attempts.len()
                ));
            }
        }
    }
    if let Some(port) = check.backend_port
        && let Some((_, local)) = attempts
            .iter()
            .filter_map(|a| a.1)
            .find(|(_, local)| local.port() != port)
    {
        problems.push(format!("{local} answered, not port {port}"));
    }
    if check.reach == Reach::Same && distinct.len() > 1 {
        problems.push("more than one backend answered".to_string());
    }
    let mut note = String::new();
    if !backends.is_empty() && asked {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for b in &backends {
            *counts.entry(b).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(b, n)| format!("{b} x{n}")).collect();
        let sources: Vec<String> = sources.iter().map(ToString::to_string).collect();
        note = format!(
            "answered by {}; source {}",
            counts.join(", "),
            sources.join(", ")
        );
    }
    if !problems.is_empty() {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&problems.join("; "));
    }
    ResultRow {
        from: check.from,
        to: check.to,
        protocol: check.protocol,
        port: check.port,
        expected: check.expect,
        actual,
        ok: verdict_ok && problems.is_empty(),
        note,
    }
}
