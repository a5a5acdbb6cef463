//! Table-driven tests of the reference evaluator. The tables are data
//! files, `testdata/evaluator/*.txt`, read by one runner ([`tables`]) in
//! the style of raft-rs's datadriven tests: blocks of a command, its
//! input, `----`, and the expected output.
//!
//! - `state`: the cluster state as YAML documents (a line `#include NAME`
//!   stands for the text of `examples/NAME`); nothing is expected.
//! - `trace`: one packet per line, `FROM TO PACKET` (peers as `NS/NAME` or
//!   an address, packets as in [`packet`]; `#` starts a comment); expected:
//!   one `VERDICT DECIDER` line per packet ([`decider`]).
//!
//! The tests below the runner check what a table cannot (effective labels,
//! trace steps, errors) on a file's state.

use std::path::PathBuf;

use manul_model::v3::Protocol;

use super::*;
use crate::datadriven::{Block, blocks};

// ---------------------------------------------------------------- helpers

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/evaluator")
}

fn state(yaml: &str) -> ClusterState {
    let out = manul_model::load("test", yaml.as_bytes());
    let loaded = match out.into_result() {
        Ok(l) => l,
        Err(errors) => panic!("fixture does not load: {errors:#?}\n{yaml}"),
    };
    ClusterState::from_resources(loaded.into_iter().map(|l| l.resource))
}

/// The text of `examples/NAME`.
fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML of a `state` block, with its includes expanded.
fn state_yaml(block: &Block) -> String {
    let mut yaml = String::new();
    for l in &block.input {
        match l.strip_prefix("#include ") {
            Some(name) => {
                yaml += &example(name.trim());
                yaml.push('\n');
            }
            None => {
                yaml += l;
                yaml.push('\n');
            }
        }
    }
    yaml
}

/// The state of data file `name` (its `state` block).
fn table_state(name: &str) -> ClusterState {
    let path = testdata().join(format!("{name}.txt"));
    let block = blocks(&path)
        .into_iter()
        .find(|b| b.command == "state")
        .unwrap_or_else(|| panic!("{}: no state block", path.display()));
    state(&state_yaml(&block))
}

/// The decider of a trace, compactly: `ingress POLICY#RULE`,
/// `egress profile PROFILE#RULE`, `ingress end of tier TIER`,
/// `ingress default deny`, or `-` when nothing was enforced.
fn decider(t: &Trace) -> String {
    let Some(d) = &t.deciding else {
        return "-".to_string();
    };
    let what = match (&d.policy, &d.profile, &d.tier, d.rule_index) {
        (Some(p), _, _, Some(i)) => format!("{p}#{i}"),
        (_, Some(p), _, Some(i)) => format!("profile {p}#{i}"),
        (None, None, Some(t), None) => format!("end of tier {t}"),
        _ => "default deny".to_string(),
    };
    format!("{} {what}", d.direction)
}

/// An ICMP type and optional code.
type Icmp = Option<(u8, Option<u8>)>;

/// `tcp 80`, `udp 53`, `tcp` (no port), `icmp 8`, `icmp 3/4`, `47`.
fn packet(spec: &str) -> (u8, Option<u16>, Icmp) {
    let mut words = spec.split_whitespace();
    let proto: Protocol = words.next().unwrap().parse().unwrap();
    let proto = proto.number();
    match words.next() {
        None => (proto, None, None),
        Some(arg) if matches!(proto, 1 | 58) => {
            let (t, c) = match arg.split_once('/') {
                Some((t, c)) => (t.parse().unwrap(), Some(c.parse().unwrap())),
                None => (arg.parse().unwrap(), None),
            };
            (proto, None, Some((t, c)))
        }
        Some(port) => (proto, Some(port.parse().unwrap()), None),
    }
}

type Case<'a> = (&'a str, &'a str, &'a str, Verdict, &'a str);

/// Checks every `(from, to, packet, verdict, decider)` row; `context`
/// names where the rows come from.
fn check(context: &str, s: &ClusterState, cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for (from, to, pkt, want, want_decider) in cases {
        let (proto, port, icmp) = packet(pkt);
        let t = s
            .trace(
                &from.parse().unwrap(),
                &to.parse().unwrap(),
                proto,
                port,
                icmp,
            )
            .unwrap_or_else(|e| panic!("{from} -> {to} {pkt}: {e}"));
        let got = decider(&t);
        if t.verdict != *want || got != *want_decider {
            failures.push(format!(
                "{from} -> {to} {pkt}: want {want} by {want_decider:?}, got {} by {got:?}\n  {}",
                t.verdict,
                t.steps.join("\n  ")
            ));
        }
        let fast = s.verdict(
            &from.parse().unwrap(),
            &to.parse().unwrap(),
            proto,
            port,
            icmp,
        );
        assert_eq!(fast, Ok(t.verdict == Verdict::Allow));
    }
    assert!(failures.is_empty(), "{context}:\n{}", failures.join("\n"));
}

use Verdict::{Allow, Deny};

// ------------------------------------------------------------------ tests

/// Runs every data file: each `trace` block against the state of the
/// `state` block before it.
#[test]
fn tables() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no data files in {}",
        testdata().display()
    );
    for path in files {
        let mut current = None;
        for block in blocks(&path) {
            let at = format!("{}:{}", path.display(), block.line);
            match block.command.as_str() {
                "state" => {
                    assert!(block.expected.is_empty(), "{at}: a state expects nothing");
                    current = Some(state(&state_yaml(&block)));
                }
                "trace" => {
                    let s = current
                        .as_ref()
                        .unwrap_or_else(|| panic!("{at}: trace before any state"));
                    let packets: Vec<Vec<&str>> = block
                        .input
                        .iter()
                        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                        .map(|l| l.splitn(3, ' ').collect())
                        .collect();
                    assert_eq!(
                        packets.len(),
                        block.expected.len(),
                        "{at}: one expected line per packet"
                    );
                    let cases: Vec<Case<'_>> = packets
                        .iter()
                        .zip(&block.expected)
                        .map(|(p, want)| {
                            assert_eq!(p.len(), 3, "{at}: want FROM TO PACKET, got {p:?}");
                            let (verdict, decider) = want.split_once(' ').unwrap_or((want, ""));
                            let verdict = match verdict {
                                "allow" => Allow,
                                "deny" => Deny,
                                other => panic!("{at}: unknown verdict {other:?}"),
                            };
                            (p[0], p[1], p[2], verdict, decider)
                        })
                        .collect();
                    check(&at, s, &cases);
                }
                other => panic!("{at}: unknown command {other:?}"),
            }
        }
    }
}

#[test]
fn no_policy_namespace_profile_allows_and_no_profile_denies() {
    let s = table_state("no_policy_namespace_profile_allows_and_no_profile_denies");
    // Effective labels: profile labels, own labels, namespace, orchestrator.
    let z = s.find_endpoint("b", "z").unwrap();
    assert_eq!(z.labels.get("pcns.team").map(String::as_str), Some("blue"));
    assert_eq!(z.labels.get("app").map(String::as_str), Some("z"));
    assert_eq!(
        z.labels
            .get("projectcalico.org/namespace")
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(
        z.labels
            .get("projectcalico.org/orchestrator")
            .map(String::as_str),
        Some("k8s")
    );
    assert_eq!(
        s.namespace_labels("b").get("team").map(String::as_str),
        Some("blue")
    );
}

#[test]
fn ingress_policy_allows_matching_and_default_denies_the_rest() {
    let s = table_state("ingress_policy_allows_matching_and_default_denies_the_rest");
    let t = s
        .trace(
            &Peer::endpoint("production", "frontend"),
            &Peer::endpoint("production", "api"),
            6,
            Some(8080),
            None,
        )
        .unwrap();
    let d = t.deciding.clone().unwrap();
    assert_eq!(d.direction, Direction::Ingress);
    assert_eq!(d.endpoint, "production/api");
    assert_eq!(d.tier.as_deref(), Some("default"));
    assert_eq!(d.policy.as_deref(), Some("production/allow-frontend"));
    assert_eq!(d.profile, None);
    assert_eq!(d.rule_index, Some(0));
    assert!(
        t.steps
            .iter()
            .any(|l| l.starts_with("egress of production/frontend"))
    );
    assert!(
        t.steps
            .iter()
            .any(|l| l.starts_with("ingress of production/api"))
    );
}

#[test]
fn tiers_pass_default_deny_and_default_action_pass() {
    let s = table_state("tiers_pass_default_deny_and_default_action_pass");
    let tiers: Vec<String> = s.tiers().into_iter().map(|t| t.name).collect();
    assert_eq!(tiers, ["security", "platform", "strict", "default", "late"]);
    let t = s
        .trace(
            &"production/frontend".parse().unwrap(),
            &"production/vault".parse().unwrap(),
            17,
            Some(53),
            None,
        )
        .unwrap();
    assert!(
        t.steps.iter().any(|l| l.contains("rule 0 (Log): matches")),
        "{:#?}",
        t.steps
    );
    assert!(
        t.steps
            .iter()
            .any(|l| l.contains("Pass at rule 1 of policy security.screen"))
    );
}

#[test]
fn tier_order_unset_sorts_last_and_default_tier_is_a_million() {
    let s = table_state("tier_order_unset_sorts_last_and_default_tier_is_a_million");
    let tiers: Vec<String> = s.tiers().into_iter().map(|t| t.name).collect();
    assert_eq!(tiers, ["before", "default", "after", "unordered"]);
}

#[test]
fn named_ports_and_port_ranges() {
    let s = table_state("named_ports_and_port_ranges");
    // A named source port resolves against the source endpoint.
    let trace_src = |from: &str, src_port| {
        s.trace_packet(&Packet {
            from: from.parse().unwrap(),
            to: "production/web1".parse().unwrap(),
            protocol: 6,
            src_port: Some(src_port),
            dst_port: Some(1),
            icmp: None,
        })
        .unwrap()
    };
    let t = trace_src("production/client", 5555);
    assert_eq!(t.verdict, Allow, "{:#?}", t.steps);
    assert_eq!(decider(&t), "ingress production/web#2");
    assert_eq!(trace_src("production/client", 5556).verdict, Deny);
    assert_eq!(trace_src("production/frontend", 5555).verdict, Deny);
}

#[test]
fn kubernetes_network_policies() {
    let s = table_state("kubernetes_network_policies");
    assert!(s.notes().is_empty(), "{:?}", s.notes());
    let db = "data/knp.default.db-ingress";
    let t = s
        .trace(
            &"web/frontend".parse().unwrap(),
            &"data/db".parse().unwrap(),
            6,
            Some(5432),
            None,
        )
        .unwrap();
    assert_eq!(t.deciding.unwrap().policy.as_deref(), Some(db));
}

#[test]
fn peers_addresses_and_errors() {
    let s = table_state("peers_addresses_and_errors");
    // An endpoint's address stands for it; so does its pod name.
    let by_ip = s
        .trace(
            &"10.0.1.1".parse().unwrap(),
            &"10.0.1.2".parse().unwrap(),
            6,
            Some(1),
            None,
        )
        .unwrap();
    let by_name = s
        .trace(
            &"production/frontend".parse().unwrap(),
            &"production/api".parse().unwrap(),
            6,
            Some(1),
            None,
        )
        .unwrap();
    assert_eq!(by_ip, by_name);
    assert_eq!(
        s.find_endpoint("dual", "d-eth0").unwrap().addresses.len(),
        2
    );
    // Families: IPv4 first, IPv6 when the other end needs it.
    let t = s
        .trace(
            &"dual/d-eth0".parse().unwrap(),
            &"dual/v6only".parse().unwrap(),
            6,
            Some(1),
            None,
        )
        .unwrap();
    assert!(t.steps[0].contains("fd00::5"), "{}", t.steps[0]);
    assert_eq!(t.verdict, Allow);
    let t = s
        .trace(
            &"dual/d-eth0".parse().unwrap(),
            &"production/api".parse().unwrap(),
            6,
            Some(1),
            None,
        )
        .unwrap();
    assert!(t.steps[0].contains("10.0.5.1"), "{}", t.steps[0]);

    let err = |from: &str, to: &str, proto: u8, port: Option<u16>, icmp| {
        s.trace(
            &from.parse().unwrap(),
            &to.parse().unwrap(),
            proto,
            port,
            icmp,
        )
        .unwrap_err()
    };
    let e = err("production/nope", "production/api", 6, None, None);
    assert_eq!(e, TraceError::UnknownEndpoint("production/nope".into()));
    assert!(e.to_string().contains("production/nope"), "{e}");
    assert!(matches!(
        err("staging/api", "production/api", 6, None, None),
        TraceError::UnknownEndpoint(n) if n == "staging/api"
    ));
    assert!(matches!(
        err("dual/p", "production/api", 6, None, None),
        TraceError::AmbiguousEndpoint { .. }
    ));
    assert!(s.find_endpoint("dual", "p-eth1").is_ok());
    assert!(matches!(
        err("dual/v6only", "production/api", 6, None, None),
        TraceError::NoCommonFamily { .. }
    ));
    assert!(matches!(
        err("dual/v6only", "8.8.8.8", 6, None, None),
        TraceError::NoAddress { .. }
    ));
    assert!(matches!(
        err("production/api", "8.8.8.8", 1, Some(80), None),
        TraceError::InvalidPacket(_)
    ));
    assert!(matches!(
        err("production/api", "8.8.8.8", 6, None, Some((8, None))),
        TraceError::InvalidPacket(_)
    ));
    assert!("nope".parse::<Peer>().is_err());
    assert!("a/b/c".parse::<Peer>().is_err());
    assert_eq!(
        "fd00::1".parse::<Peer>(),
        Ok(Peer::Ip("fd00::1".parse().unwrap()))
    );
    assert_eq!("ns/pod".parse::<Peer>(), Ok(Peer::endpoint("ns", "pod")));
}

#[test]
fn host_only_policies_are_left_out() {
    let s = table_state("host_only_policies_are_left_out");
    assert_eq!(s.notes().len(), 1, "{:?}", s.notes());
}
