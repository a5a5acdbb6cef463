#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The loaded programs run with `BPF_PROG_TEST_RUN` against their real
//! maps: verdicts for allowed, denied, established and unknown-interface
//! traffic, IPv6 (past its extension headers), a policy change, map-capacity errors, flow events, GC,
//! flow observations, a restart, the service counters, a new
//! connection on a reset-marked connection's ports, and SCTP port
//! translation (its CRC32c patched, checked against the `crc32c` crate,
//! for packets of several lengths). Each test runs in a network namespace it creates (veth pairs
//! there give the programs real ifindexes) with its own pin directory, both
//! removed at the end, also on failure.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, Driver, EndpointId, FlowObservation, FlowPhase, Match, Operation, Packet, Policy,
    PolicyId, PortRange, Reporter, Rule, TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_bpf::frames::{ACK, SYN, dest_options, fragment, frame, hop_by_hop, with_ext};
use manul_dataplane_bpf::{BpfConfig, BpfDriver, Hook, SkbMeta};
use manul_netns::{NetNs, create_veth};

mod node;

/// A node for one test with two workload interfaces and another, each a
/// veth pair in its namespace ([`node::Sandbox`]).
struct Sandbox(node::Sandbox);

impl Sandbox {
    /// None when not root (and CI is not set).
    fn new(tag: &str) -> Option<Self> {
        let sb = node::Sandbox::new(tag)?;
        for (a, b) in [("mnla", "peera"), ("mnlb", "peerb"), ("other0", "peero")] {
            create_veth(&sb.ns, a, &sb.ns, b).expect("create a veth pair");
        }
        Some(Self(sb))
    }

    fn ns(&self) -> &NetNs {
        &self.0.ns
    }

    fn index(&self, name: &str) -> u32 {
        self.0.index(name)
    }

    fn config(&self) -> BpfConfig {
        let mut c = self.0.config();
        c.flow_log_interval = Duration::from_millis(50);
        c
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn web_policy(action: Action) -> Operation {
    Operation::PolicyUpdate {
        id: PolicyId {
            tier: "default".into(),
            name: "web".into(),
        },
        policy: Policy {
            inbound: vec![Rule {
                id: "default/web/inbound/0".into(),
                action,
                ip_version: None,
                protocol: Some(6),
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                src: Match {
                    nets: vec![net("10.0.0.0/24"), net("fd00::/64")],
                    ..Match::default()
                },
                dst: Match {
                    ports: vec![PortRange {
                        first: 80,
                        last: 80,
                    }],
                    ..Match::default()
                },
            }],
            outbound: vec![],
        },
    }
}

fn pod_a(rules: usize) -> Operation {
    let tier = |name: &str| TierPolicies {
        name: "default".into(),
        default_action: Action::Deny,
        inbound: vec![PolicyId {
            tier: "default".into(),
            name: name.into(),
        }],
        outbound: vec![],
    };
    Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
        id: EndpointId {
            namespace: "ns".into(),
            name: "a".into(),
        },
        interface_name: "mnla".into(),
        nets: vec![net("10.0.0.1/32"), net("fd00::1/128")],
        mac: None,
        tiers: vec![tier(if rules > 0 { "big" } else { "web" })],
        profiles: vec![],
    })
}

/// TC verdicts: 0 passes, 2 drops.
const PASS: u32 = 0;
const DROP: u32 = 2;

fn run(d: &mut BpfDriver, hook: Hook, ifindex: u32, p: Packet, flags: u8) -> u32 {
    d.test_run(hook, ifindex, &frame(&p, flags), 1)
        .expect("BPF_PROG_TEST_RUN")
        .verdict
}

#[test]
fn verdicts_conntrack_policy_change_and_events() {
    let Some(sb) = Sandbox::new("bt") else { return };
    let (a, b, other) = (sb.index("mnla"), sb.index("mnlb"), sb.index("other0"));
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let to_a = |sport, dport| Packet::tcp(ip("10.0.0.2"), sport, ip("10.0.0.1"), dport);

            // Inbound (to the pod) is the host-side veth's egress.
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(40000, 80), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(40000, 81), SYN), DROP);
            let outsider = Packet::tcp(ip("10.9.0.2"), 40000, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, outsider, SYN), DROP);
            // The reply of the allowed flow passes the pod's outbound side,
            // which has no policy and no profile (default deny) ...
            let reply = Packet::tcp(ip("10.0.0.1"), 80, ip("10.0.0.2"), 40000);
            assert_eq!(run(&mut d, Hook::Ingress, a, reply, SYN | ACK), PASS);
            // ... while a new outbound flow does not.
            let new_out = Packet::tcp(ip("10.0.0.1"), 5000, ip("10.0.0.2"), 80);
            assert_eq!(run(&mut d, Hook::Ingress, a, new_out, SYN), DROP);
            // IPv6, by address rules.
            let v6 = Packet::tcp(ip("fd00::2"), 40000, ip("fd00::1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, v6, SYN), PASS);
            let v6_out = Packet::tcp(ip("fd01::2"), 40000, ip("fd00::1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, v6_out, SYN), DROP);
            // A workload interface with no endpoint drops (fail closed).
            assert_eq!(run(&mut d, Hook::Egress, b, to_a(40001, 80), SYN), DROP);
            assert_eq!(run(&mut d, Hook::Ingress, b, reply, ACK), DROP);
            // An interface the driver never attached to: the program,
            // if run there, finds no endpoint either.
            assert_eq!(run(&mut d, Hook::Egress, other, to_a(40001, 80), SYN), DROP);

            // A policy change: new connections see it, the established one
            // keeps flowing (like Calico).
            let before = d.endpoint_tables(a).expect("endpoint entry");
            d.apply(&[web_policy(Action::Deny)]).expect("apply");
            assert_ne!(d.endpoint_tables(a), Some(before), "a new table version");
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(40002, 80), SYN), DROP);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(40000, 80), ACK), PASS);
            // A denied flow is re-evaluated once the policy allows it again.
            d.apply(&[web_policy(Action::Allow)]).expect("apply");
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(40002, 80), SYN), PASS);

            let ct = d.conntrack();
            let flow = ct
                .iter()
                .find(|e| {
                    // (10.9.0.2, the denied outsider, used the same ports.)
                    e.ifindex == a
                        && e.src == ip("10.0.0.2")
                        && e.src_port == 40000
                        && e.dst_port == 80
                        && e.dst == ip("10.0.0.1")
                })
                .expect("the allowed flow is tracked");
            assert!(flow.allowed);
            assert_eq!((flow.src, flow.dst_port), (ip("10.0.0.2"), 80));
            assert!(
                flow.packets_orig >= 2 && flow.packets_reply >= 1,
                "{flow:?}"
            );

            d.flush_flow_log();
            let counters = d.flow_counters();
            let web = counters.per_policy["default/web"];
            assert!(web.allowed >= 3 && web.denied >= 1, "{counters:?}");
            assert!(counters.per_policy["default/(tier default)"].denied >= 2);
            // The same figures through the contract (Felix's metrics).
            let via_trait = d.policy_counters();
            let web_row = via_trait
                .iter()
                .find(|c| c.policy == "default/web")
                .expect("a row for the policy");
            assert_eq!((web_row.allowed, web_row.denied), (web.allowed, web.denied));
            let k = d.kernel_counters();
            assert!(k.conntrack_hits >= 2 && k.no_endpoint >= 3, "{k:?}");

            // Garbage collection: nothing is idle yet; two hours later
            // everything is.
            let now = manul_dataplane_bpf::conntrack::monotonic_now();
            assert_eq!(d.gc(now).expect("gc").removed, 0);
            let stats = d.gc(now + Duration::from_secs(7200)).expect("gc");
            assert_eq!(stats.removed, stats.scanned);
            assert!(d.conntrack().is_empty());
        })
        .expect("run in the namespace");
}

#[test]
fn ipv6_extension_headers_are_skipped_to_the_l4_header() {
    let Some(sb) = Sandbox::new("bx") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let mut verdict = |f: Vec<u8>| {
                d.test_run(Hook::Egress, a, &f, 1)
                    .expect("BPF_PROG_TEST_RUN")
                    .verdict
            };
            let syn = |sport, dport| {
                frame(
                    &Packet::tcp(ip("fd00::2"), sport, ip("fd00::1"), dport),
                    SYN,
                )
            };
            // TCP to port 80 behind hop-by-hop and destination options:
            // the rule (TCP, port 80) allows it; to port 81 the tier's
            // default denies it.
            let both = [hop_by_hop(), dest_options()];
            assert_eq!(verdict(with_ext(&syn(41000, 80), &both)), PASS);
            assert_eq!(verdict(with_ext(&syn(41001, 81), &both)), DROP);
            // The first fragment carries the TCP header.
            let first = [dest_options(), fragment(0)];
            assert_eq!(verdict(with_ext(&syn(41002, 80), &first)), PASS);
            // A later fragment has no ports: no rule for port 80 matches.
            let later = [fragment(185)];
            assert_eq!(verdict(with_ext(&syn(41003, 80), &later)), DROP);
            // A header cut short, and more headers than the parser
            // follows, are malformed (dropped).
            let mut cut = with_ext(&syn(41004, 80), &[hop_by_hop()]);
            cut.truncate(14 + 40 + 6);
            assert_eq!(verdict(cut), DROP);
            let many = vec![dest_options(); 7];
            assert_eq!(verdict(with_ext(&syn(41005, 80), &many)), DROP);

            // An MLDv2 listener report (hop-by-hop, then ICMPv6 143) is
            // denied as ICMPv6, not as protocol 0.
            let report = Packet::icmp(ip("fd00::2"), ip("fd00::1"), 143, 0);
            assert_eq!(verdict(with_ext(&frame(&report, 0), &[hop_by_hop()])), DROP);
            let mut taken = Vec::new();
            take_until(&mut d, &mut taken, "the report's denial", |t| {
                t.iter()
                    .any(|o| o.phase == FlowPhase::Denied && o.tuple.protocol == 58)
            });
            assert!(
                taken.iter().all(|o| o.tuple.protocol != 0),
                "no flow of protocol 0: {taken:#?}"
            );
            let started: Vec<u16> = taken
                .iter()
                .filter(|o| o.phase == FlowPhase::Start)
                .map(|o| o.tuple.src_port)
                .collect();
            assert_eq!(started, vec![41000, 41002], "{taken:#?}");
        })
        .expect("run in the namespace");
}

/// Drains the driver's flow observations until `done` holds for
/// everything taken so far (or 10 s pass).
fn take_until(
    d: &mut BpfDriver,
    taken: &mut Vec<FlowObservation>,
    what: &str,
    done: impl Fn(&[FlowObservation]) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        taken.extend(d.take_flows());
        if done(taken) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {what} in {taken:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn flow_observations_follow_a_connection_from_start_to_end() {
    let Some(sb) = Sandbox::new("bo") else { return };
    let a = sb.index("mnla");
    let mut config = sb.config();
    // Collection every 10 s (the default), flow records every 200 ms: the
    // scan that makes updates and ends follows the records' interval.
    assert_eq!(config.gc_interval, Duration::from_secs(10));
    config.flow_update_interval = Some(Duration::from_millis(200));
    config.conntrack_timeouts.tcp_established = Duration::from_millis(600);
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let to_a = |dport| Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), dport);
            let reply = Packet::tcp(ip("10.0.0.1"), 80, ip("10.0.0.2"), 40000);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(80), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Ingress, a, reply, SYN | ACK), PASS);
            // Denied twice: the second is the same burst (and cached).
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(81), SYN), DROP);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(81), SYN), DROP);

            let pod = EndpointId {
                namespace: "ns".into(),
                name: "a".into(),
            };
            let mut taken = Vec::new();
            take_until(&mut d, &mut taken, "start and denial", |t| {
                t.iter().any(|o| o.phase == FlowPhase::Start)
                    && t.iter().any(|o| o.phase == FlowPhase::Denied)
            });
            let start = taken.iter().find(|o| o.phase == FlowPhase::Start).unwrap();
            assert_eq!(
                (start.tuple.src, start.tuple.dst, start.tuple.dst_port),
                (ip("10.0.0.2"), ip("10.0.0.1"), 80)
            );
            assert_eq!(start.reporter, Reporter::Destination);
            assert_eq!(start.endpoint.as_ref(), Some(&pod));
            assert_eq!(start.decider.rule_id(), Some("default/web/inbound/0"));
            assert!(start.allowed);
            assert!(
                start.time_unix_ms > 1_600_000_000_000,
                "Unix time: {start:?}"
            );
            let denied: Vec<_> = taken
                .iter()
                .filter(|o| o.phase == FlowPhase::Denied)
                .collect();
            assert_eq!(denied.len(), 1, "{denied:#?}");
            assert_eq!(denied[0].tuple.dst_port, 81);
            assert_eq!(
                denied[0].decider,
                manul_dataplane_api::Decider::TierDefault {
                    tier: "default".into()
                }
            );

            // More packets: an update with the conntrack entry's counters.
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(80), ACK), PASS);
            let sent = std::time::Instant::now();
            take_until(&mut d, &mut taken, "update", |t| {
                t.iter().any(|o| {
                    o.phase == FlowPhase::Update
                        && o.counts.packets_forward >= 2
                        && o.counts.packets_reverse >= 1
                })
            });
            let updated = sent.elapsed();
            // Idle past its timeout: the scan ends it, with its totals.
            take_until(&mut d, &mut taken, "end", |t| {
                t.iter().any(|o| o.phase == FlowPhase::End)
            });
            let ended = sent.elapsed();
            // Within a few scans of 200 ms, not the 10 s collection
            // interval (the end: the 600 ms timeout, then a scan).
            assert!(updated < Duration::from_secs(3), "update after {updated:?}");
            assert!(ended < Duration::from_secs(4), "end after {ended:?}");
            let end = taken.iter().find(|o| o.phase == FlowPhase::End).unwrap();
            assert_eq!(end.counts.packets_forward, 2);
            assert_eq!(end.counts.packets_reverse, 1);
            assert!(end.counts.bytes_forward > 0 && end.counts.bytes_reverse > 0);
            assert_eq!(
                taken.iter().filter(|o| o.phase == FlowPhase::End).count(),
                1,
                "one end"
            );
            assert_eq!(d.flows_dropped(), 0);
        })
        .expect("run in the namespace");
}

#[test]
fn observations_off_queue_nothing_while_events_still_count() {
    let Some(sb) = Sandbox::new("bf") else { return };
    let a = sb.index("mnla");
    let mut config = sb.config();
    config.flow_observations = false;
    config.flow_update_interval = Some(Duration::from_millis(100));
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let to_a = |dport| Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), dport);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(80), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Egress, a, to_a(81), SYN), DROP);
            // Several scans later: the events were read (the counters
            // have them), and no observation was made.
            std::thread::sleep(Duration::from_millis(500));
            d.flush_flow_log();
            let web = d.flow_counters().per_policy["default/web"];
            assert!(web.allowed >= 1, "{web:?}");
            assert!(d.take_flows().is_empty());
            assert_eq!(d.flows_dropped(), 0);
        })
        .expect("run in the namespace");
}

#[test]
fn capacity_errors_keep_the_previous_state() {
    let Some(sb) = Sandbox::new("bc") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0)])
                .expect("apply");
            let tables = d.endpoint_tables(a);
            let big = Operation::PolicyUpdate {
                id: PolicyId {
                    tier: "default".into(),
                    name: "big".into(),
                },
                policy: Policy {
                    inbound: (0..1100)
                        .map(|i| Rule {
                            id: format!("default/big/inbound/{i}"),
                            action: Action::Deny,
                            ip_version: None,
                            protocol: Some(17),
                            not_protocol: None,
                            icmp: None,
                            not_icmp: None,
                            src: Match::default(),
                            dst: Match::default(),
                        })
                        .collect(),
                    outbound: vec![],
                },
            };
            let err = d.apply(&[big, pod_a(1100)]).expect_err("too many rules");
            let text = format!("{err}");
            assert!(text.contains("exceed the table limit"), "{text}");
            // Nothing changed: the old table is enforced, and the refused
            // batch is not part of the desired state.
            assert_eq!(d.endpoint_tables(a), tables);
            assert_eq!(d.desired().policy_count(), 1);
            let p = Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, p, SYN), PASS);
            // And the driver keeps working.
            d.apply(&[web_policy(Action::Deny)]).expect("apply");
            let p = Packet::tcp(ip("10.0.0.2"), 40001, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, p, SYN), DROP);
        })
        .expect("run in the namespace");
}

#[test]
fn a_restart_adopts_pinned_state_until_in_sync() {
    let Some(sb) = Sandbox::new("br") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let established = Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), 80);
            let mut d = BpfDriver::new(config.clone()).expect("load the programs");
            assert!(!d.programs_adopted(), "nothing was pinned before");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            assert_eq!(run(&mut d, Hook::Egress, a, established, SYN), PASS);
            let tables = d.endpoint_tables(a);
            drop(d);

            // The new driver finds the pinned maps: the endpoint, its table
            // and the connection are still there before it is told anything.
            // And it adopts the pinned programs (no verifier pass), which
            // still report their events through the ring they write to.
            let mut d = BpfDriver::new(config).expect("restart");
            assert!(d.programs_adopted());
            assert_eq!(d.endpoint_tables(a), tables);
            assert_eq!(run(&mut d, Hook::Egress, a, established, ACK), PASS);
            let fresh = Packet::tcp(ip("10.0.0.2"), 40001, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, fresh, SYN), PASS);
            let denied = Packet::tcp(ip("10.0.0.2"), 40002, ip("10.0.0.1"), 81);
            assert_eq!(run(&mut d, Hook::Egress, a, denied, SYN), DROP);
            let start = std::time::Instant::now();
            loop {
                d.flush_flow_log();
                // Named once the policies are sent again: "(unknown)" until
                // then.
                let counters = d.flow_counters();
                if counters.per_policy.values().any(|c| c.denied >= 1) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no denial event from the adopted programs: {counters:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }

            // Felix resends only the policy (the endpoint is gone), then
            // InSync: the stale endpoint entry and tables are removed, so
            // the interface drops (fail closed).
            d.apply(&[web_policy(Action::Allow), Operation::InSync])
                .expect("apply");
            assert_eq!(d.endpoint_tables(a), None);
            let later = Packet::tcp(ip("10.0.0.2"), 40003, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, later, SYN), DROP);
        })
        .expect("run in the namespace");
}

#[test]
fn pinned_programs_are_adopted_only_with_the_maps_they_use() {
    let Some(sb) = Sandbox::new("bq") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config.clone()).expect("load the programs");
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let pin_dir = d.pin_dir().to_path_buf();
            drop(d);
            // The endpoint map is purged and created again: the pinned
            // programs still read the old one, so they must not be adopted.
            std::fs::remove_file(pin_dir.join("maps/manul_ep")).expect("unpin manul_ep");
            let mut d = BpfDriver::new(config.clone()).expect("restart");
            assert!(
                !d.programs_adopted(),
                "programs adopted with another manul_ep"
            );
            // Fresh programs on the fresh map: no endpoint entry, so the
            // interface drops (fail closed) until the endpoint is sent again.
            assert_eq!(d.endpoint_tables(a), None);
            let p = Packet::tcp(ip("10.0.0.2"), 40000, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, p, SYN), DROP);
            d.apply(&[web_policy(Action::Allow), pod_a(0), Operation::InSync])
                .expect("apply");
            let p = Packet::tcp(ip("10.0.0.2"), 40001, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, p, SYN), PASS);
            drop(d);
            // Those programs were pinned in turn: the next start adopts them.
            let d = BpfDriver::new(config).expect("restart");
            assert!(d.programs_adopted());
        })
        .expect("run in the namespace");
}

#[test]
fn set_member_changes_are_written_in_place() {
    let Some(sb) = Sandbox::new("bs") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            let member = |s: &str| manul_dataplane_api::IpSetMember::Net(net(s));
            let Operation::PolicyUpdate { id, mut policy } = web_policy(Action::Allow) else {
                unreachable!()
            };
            policy.inbound[0].src.nets.clear();
            policy.inbound[0].src.ip_sets = vec!["clients".into()];
            d.apply(&[
                Operation::IpSetUpdate {
                    id: "clients".into(),
                    kind: manul_dataplane_api::IpSetKind::Net,
                    members: vec![member("10.0.0.2/32")],
                },
                Operation::PolicyUpdate { id, policy },
                pod_a(0),
            ])
            .expect("apply");
            let from = |src: &str, sport| Packet::tcp(ip(src), sport, ip("10.0.0.1"), 80);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.2", 1), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.3", 2), SYN), DROP);
            let tables = d.endpoint_tables(a);
            let delta = |added: Vec<_>, removed: Vec<_>| Operation::IpSetDelta {
                id: "clients".into(),
                added,
                removed,
            };
            d.apply(&[delta(
                vec![member("10.0.0.0/30")],
                vec![member("10.0.0.2/32")],
            )])
            .expect("apply");
            // Same table: the members were written in place.
            assert_eq!(d.endpoint_tables(a), tables);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.3", 3), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.2", 4), SYN), PASS);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.5", 5), SYN), DROP);
            d.apply(&[delta(vec![], vec![member("10.0.0.0/30")])])
                .expect("apply");
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.3", 6), SYN), DROP);
            assert_eq!(run(&mut d, Hook::Egress, a, from("10.0.0.2", 7), SYN), DROP);
        })
        .expect("run in the namespace");
}

/// A Service on cluster IP `vip` port 80 with these backends (port 8080).
fn svc(name: &str, vip: &str, backends: &[&str], affinity: Option<u32>) -> Operation {
    let backends: Vec<manul_dataplane_api::Backend> = backends
        .iter()
        .map(|b| manul_dataplane_api::Backend {
            ip: ip(b),
            port: 8080,
            local: true,
            ready: true,
        })
        .collect();
    Operation::ServiceUpdate(manul_dataplane_api::Service {
        namespace: "ns".into(),
        name: name.into(),
        cluster_ips: vec![ip(vip)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic: manul_dataplane_api::TrafficPolicy::Cluster,
        internal_traffic: manul_dataplane_api::TrafficPolicy::Cluster,
        affinity_timeout_seconds: affinity,
        health_check_node_port: None,
        balancing: manul_dataplane_api::Balancing::Random,
        ports: vec![manul_dataplane_api::ServicePort {
            name: "http".into(),
            protocol: 6,
            port: 80,
            node_port: None,
            local_backends: backends.clone(),
            backends,
        }],
    })
}

#[test]
fn service_counters_count_translations_misses_hairpins_and_affinity() {
    let Some(sb) = Sandbox::new("bs") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[
                web_policy(Action::Allow),
                pod_a(0),
                svc("web", "10.96.0.50", &["10.0.0.2"], Some(60)),
                svc("empty", "10.96.0.51", &[], None),
                svc("self", "10.96.0.52", &["10.0.0.1"], None),
                Operation::InSync,
            ])
            .expect("apply");
            let zero = d.service_counters().expect("the eBPF driver counts");
            assert_eq!(zero, manul_dataplane_api::ServiceCounters::default());
            // Pod a's outbound traffic is the host-side veth's ingress.
            let to = |vip| Packet::tcp(ip("10.0.0.1"), 40000, ip(vip), 80);
            run(&mut d, Hook::Ingress, a, to("10.96.0.50"), SYN);
            run(&mut d, Hook::Ingress, a, to("10.96.0.51"), SYN);
            run(&mut d, Hook::Ingress, a, to("10.96.0.52"), SYN);
            let c = d.service_counters().expect("the eBPF driver counts");
            assert_eq!(
                c,
                manul_dataplane_api::ServiceCounters {
                    translated: 2,
                    rejected_no_backend: 1,
                    hairpin: 1,
                    reset: 0,
                    dsr_untrusted_dropped: 0,
                    affinity_entries: 1,
                }
            );
        })
        .expect("run in the namespace");
}

/// An IPv4 frame's destination address.
fn destination(frame: &[u8]) -> IpAddr {
    assert_eq!(frame[12..14], [0x08, 0x00], "an IPv4 frame");
    IpAddr::from(<[u8; 4]>::try_from(&frame[30..34]).expect("an IPv4 header"))
}

#[test]
fn a_syn_on_a_reset_connections_ports_opens_a_new_connection() {
    let Some(sb) = Sandbox::new("br") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[
                web_policy(Action::Allow),
                pod_a(0),
                svc("web", "10.96.0.50", &["10.0.0.2"], None),
                Operation::InSync,
            ])
            .expect("apply");
            // Pod a's outbound traffic is the host-side veth's ingress:
            // where each packet goes once the program is done with it.
            let send = |d: &mut BpfDriver, port: u16, flags: u8| {
                let p = Packet::tcp(ip("10.0.0.1"), port, ip("10.96.0.50"), 80);
                let out = d
                    .test_run(Hook::Ingress, a, &frame(&p, flags), 1)
                    .expect("BPF_PROG_TEST_RUN");
                destination(&out.frame)
            };
            assert_eq!(send(&mut d, 40001, SYN), ip("10.0.0.2"));
            assert_eq!(send(&mut d, 40002, SYN), ip("10.0.0.2"));
            // The backend leaves: both connections' entries are marked
            // for a reset.
            d.apply(&[svc("web", "10.96.0.50", &["10.0.0.3"], None)])
                .expect("apply");
            // The old connection's next packet is answered with a RST
            // (back to the client).
            assert_eq!(send(&mut d, 40002, ACK), ip("10.0.0.1"));
            let c = d.service_counters().expect("the eBPF driver counts");
            assert_eq!((c.reset, c.translated), (1, 2));
            // A client reusing the first connection's source port opens a
            // new connection: it reaches the live backend, not the reset.
            assert_eq!(send(&mut d, 40001, SYN), ip("10.0.0.3"));
            assert_eq!(send(&mut d, 40001, ACK), ip("10.0.0.3"));
            let c = d.service_counters().expect("the eBPF driver counts");
            assert_eq!((c.reset, c.translated), (1, 3));
        })
        .expect("run in the namespace");
}

/// An IPv4 frame's source address and port (TCP or UDP).
fn source(frame: &[u8]) -> (IpAddr, u16) {
    assert_eq!(frame[12..14], [0x08, 0x00], "an IPv4 frame");
    let addr = IpAddr::from(<[u8; 4]>::try_from(&frame[26..30]).expect("an IPv4 header"));
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let port = u16::from_be_bytes([frame[14 + ihl], frame[15 + ihl]]);
    (addr, port)
}

#[test]
fn the_service_mark_is_the_programs_own_and_only_skips_the_reverse_lookup() {
    let Some(sb) = Sandbox::new("bm") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&[
                web_policy(Action::Allow),
                pod_a(0),
                svc("web", "10.96.0.50", &["10.0.0.2"], None),
                Operation::InSync,
            ])
            .expect("apply");
            let mark = manul_dataplane_bpf::abi::MANUL_MARK_SVC_FWD;
            let kube_masq = 0x4000;
            let ingress = |d: &mut BpfDriver, p: Packet, meta: SkbMeta| {
                d.test_run_skb(Hook::Ingress, a, &frame(&p, SYN), meta)
                    .expect("BPF_PROG_TEST_RUN")
            };
            // Pod a's packet to the service (the host-side veth's
            // ingress): translated forward and marked, other bits kept.
            let syn = Packet::tcp(ip("10.0.0.1"), 80, ip("10.96.0.50"), 80);
            let out = ingress(
                &mut d,
                syn,
                SkbMeta {
                    mark: kube_masq,
                    ingress_ifindex: a,
                },
            );
            assert_eq!(destination(&out.frame), ip("10.0.0.2"));
            assert_eq!(out.mark, kube_masq | mark);
            // A pod's packet arriving with the bit set (as if the pod had
            // set it) loses it: only the program sets it.
            let direct = Packet::tcp(ip("10.0.0.1"), 81, ip("10.0.0.3"), 80);
            let out = ingress(
                &mut d,
                direct,
                SkbMeta {
                    mark: kube_masq | mark,
                    ingress_ifindex: a,
                },
            );
            assert_eq!(out.mark, kube_masq);

            // The backend's reply to pod a (the host-side veth's egress),
            // allowed by a's inbound policy (port 80 from 10.0.0.0/24): its
            // source goes back to the frontend ...
            let reply = Packet::tcp(ip("10.0.0.2"), 8080, ip("10.0.0.1"), 80);
            let egress = |d: &mut BpfDriver, meta: SkbMeta| {
                d.test_run_skb(Hook::Egress, a, &frame(&reply, SYN | ACK), meta)
                    .expect("BPF_PROG_TEST_RUN")
            };
            let out = egress(&mut d, SkbMeta::default());
            assert_eq!(out.verdict, PASS);
            assert_eq!(source(&out.frame), (ip("10.96.0.50"), 80));
            // ... also when the host sent it with the bit (the egress
            // believes it only on a forwarded packet) ...
            let out = egress(
                &mut d,
                SkbMeta {
                    mark,
                    ingress_ifindex: 0,
                },
            );
            assert_eq!(source(&out.frame), (ip("10.96.0.50"), 80));
            // ... while a forwarded packet carrying the bit skips the
            // reverse lookup: what a false mark could do is leave a reply
            // untranslated, never let it past policy or conntrack (it is
            // judged and counted as the same flow's reply).
            let before = d.conntrack();
            let out = egress(
                &mut d,
                SkbMeta {
                    mark,
                    ingress_ifindex: a,
                },
            );
            assert_eq!(out.verdict, PASS);
            assert_eq!(source(&out.frame), (ip("10.0.0.2"), 8080));
            let packets = |ct: &[manul_dataplane_bpf::ConntrackEntry]| {
                ct.iter()
                    .filter(|e| e.ifindex == a)
                    .map(|e| e.packets_orig + e.packets_reply)
                    .sum::<u64>()
            };
            assert_eq!(packets(&d.conntrack()), packets(&before) + 1);
            // A reply the pod's inbound policy denies (port 81) is dropped
            // whatever the mark says.
            let denied = Packet::tcp(ip("10.0.0.2"), 8080, ip("10.0.0.1"), 81);
            let out = d
                .test_run_skb(
                    Hook::Egress,
                    a,
                    &frame(&denied, SYN | ACK),
                    SkbMeta {
                        mark,
                        ingress_ifindex: a,
                    },
                )
                .expect("BPF_PROG_TEST_RUN");
            assert_eq!(out.verdict, DROP);
        })
        .expect("run in the namespace");
}

/// SCTP's IP protocol number.
const SCTP: u8 = 132;

/// An SCTP frame from `src:sport` to `dst:dport`: an IPv4 or IPv6 header
/// and an SCTP packet of `len` bytes (the common header, then bytes that
/// count up) with its CRC32c, followed by `pad` zero bytes of Ethernet
/// padding the IP header does not count.
fn sctp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, len: usize, pad: usize) -> Vec<u8> {
    let mut sctp = Vec::with_capacity(len);
    sctp.extend(sport.to_be_bytes());
    sctp.extend(dport.to_be_bytes());
    sctp.extend(0x1234_5678u32.to_be_bytes());
    sctp.extend([0; 4]);
    sctp.extend((12..len).map(|i| (i * 31 + len) as u8));
    let crc = crc32c::crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend([0x08, 0x00, 0x45, 0]);
            f.extend(u16::try_from(20 + len).unwrap().to_be_bytes());
            f.extend([0, 1, 0x40, 0, 64, SCTP, 0, 0]);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend(u16::try_from(len).unwrap().to_be_bytes());
            f.extend([SCTP, 64]);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        _ => panic!("one family"),
    }
    f.extend(sctp);
    f.extend(vec![0; pad]);
    f
}

/// An SCTP frame's addresses, ports, its SCTP packet (as long as its IP
/// header says, past IPv6 extension headers) and whether its CRC32c
/// holds.
#[derive(Debug)]
struct SctpSeen {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    packet: Vec<u8>,
    crc_holds: bool,
}

fn sctp_seen(frame: &[u8]) -> SctpSeen {
    let (src, dst, l4, end) = match frame[12..14] {
        [0x08, 0x00] => {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            let src = <[u8; 4]>::try_from(&frame[26..30]).unwrap();
            let dst = <[u8; 4]>::try_from(&frame[30..34]).unwrap();
            (IpAddr::from(src), IpAddr::from(dst), 14 + ihl, 14 + total)
        }
        [0x86, 0xdd] => {
            let payload = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
            let src = <[u8; 16]>::try_from(&frame[22..38]).unwrap();
            let dst = <[u8; 16]>::try_from(&frame[38..54]).unwrap();
            // Extension headers (hop-by-hop, destination options: length
            // in 8-byte units past the first 8).
            let (mut next, mut at) = (frame[20], 54);
            while next != SCTP {
                next = frame[at];
                at += (usize::from(frame[at + 1]) + 1) * 8;
            }
            (IpAddr::from(src), IpAddr::from(dst), at, 54 + payload)
        }
        _ => panic!("not IP: {frame:?}"),
    };
    let packet = frame[l4..end].to_vec();
    let mut zeroed = packet.clone();
    zeroed[8..12].fill(0);
    SctpSeen {
        src,
        dst,
        sport: u16::from_be_bytes([packet[0], packet[1]]),
        dport: u16::from_be_bytes([packet[2], packet[3]]),
        crc_holds: packet[8..12] == crc32c::crc32c(&zeroed).to_le_bytes(),
        packet,
    }
}

/// A dual-stack SCTP service on port 80 whose backends listen on 8080.
fn sctp_service(name: &str, vips: [&str; 2], backends: [&str; 2]) -> Operation {
    let backends: Vec<manul_dataplane_api::Backend> = backends
        .iter()
        .map(|b| manul_dataplane_api::Backend {
            ip: ip(b),
            port: 8080,
            local: true,
            ready: true,
        })
        .collect();
    let mut svc = manul_dataplane_api::Service::cluster_ip(
        "ns",
        name,
        vips.iter().map(|v| ip(v)).collect(),
        vec![manul_dataplane_api::ServicePort {
            name: "sctp".into(),
            protocol: SCTP,
            port: 80,
            node_port: None,
            local_backends: backends.clone(),
            backends,
        }],
    );
    svc.affinity_timeout_seconds = None;
    Operation::ServiceUpdate(svc)
}

/// Pod a, open both ways; "assoc", an SCTP service backed by pod b
/// (10.0.0.2, fd00::2), and "self", one backed by pod a itself.
fn sctp_service_and_pod() -> Vec<Operation> {
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
                namespace: "ns".into(),
                name: "a".into(),
            },
            interface_name: "mnla".into(),
            nets: vec![net("10.0.0.1/32"), net("fd00::1/128")],
            mac: None,
            tiers: vec![],
            profiles: vec!["open".into()],
        }),
        sctp_service(
            "assoc",
            ["10.96.0.60", "fd00:96::60"],
            ["10.0.0.2", "fd00::2"],
        ),
        sctp_service(
            "self",
            ["10.96.0.63", "fd00:96::63"],
            ["10.0.0.1", "fd00::1"],
        ),
        Operation::InSync,
    ]
}

/// SCTP through a ClusterIP whose backend listens on another port, over
/// both families: the INIT's destination port rewritten with its CRC32c
/// patched, and the answer's source port rewritten back, for SCTP packets
/// of several lengths (a bare common header, odd lengths, one in a
/// padded frame, one past IPv6 extension headers), each checked against
/// the `crc32c` crate; the rest of the packet untouched; the same for a
/// pod reaching a service it backs (hairpin). A fragment with more to
/// come, whose CRC covers bytes not in it, is dropped.
#[test]
fn sctp_port_translation_patches_the_crc32c() {
    let Some(sb) = Sandbox::new("bc") else { return };
    let a = sb.index("mnla");
    let config = sb.config();
    sb.ns()
        .run(move || {
            let mut d = BpfDriver::new(config).expect("load the programs");
            d.apply(&sctp_service_and_pod()).expect("apply");
            let lengths = [12usize, 13, 16, 33, 64, 255, 256, 1000, 1452, 3000];
            let mut sport = 30_000;
            for (client, vip, backend) in [
                (ip("10.0.0.1"), ip("10.96.0.60"), ip("10.0.0.2")),
                (ip("fd00::1"), ip("fd00:96::60"), ip("fd00::2")),
            ] {
                for (len, pad, ext) in lengths
                    .iter()
                    .map(|&l| (l, 0, false))
                    .chain([(12, 14, false), (40, 0, true)])
                {
                    if ext && vip.is_ipv4() {
                        continue;
                    }
                    sport += 1;
                    let case = format!("{vip}, {len} bytes, pad {pad}, ext {ext}");
                    let mut init = sctp_frame(client, sport, vip, 80, len, pad);
                    if ext {
                        init = with_ext(&init, &[hop_by_hop(), dest_options()]);
                    }
                    let sent = sctp_seen(&init);
                    let out = d
                        .test_run(Hook::Ingress, a, &init, 1)
                        .expect("BPF_PROG_TEST_RUN");
                    assert_eq!(out.verdict, PASS, "{case}");
                    let got = sctp_seen(&out.frame);
                    assert_eq!(
                        (got.src, got.dst, got.sport, got.dport, got.crc_holds),
                        (client, backend, sport, 8080, true),
                        "{case}: the INIT as it leaves for the backend"
                    );
                    assert_eq!(got.packet[4..8], sent.packet[4..8], "{case}");
                    assert_eq!(got.packet[12..], sent.packet[12..], "{case}");

                    // The backend's answer, to pod a: from the ClusterIP.
                    let answer = sctp_frame(backend, 8080, client, sport, len, pad);
                    let out = d
                        .test_run(Hook::Egress, a, &answer, 1)
                        .expect("BPF_PROG_TEST_RUN");
                    assert_eq!(out.verdict, PASS, "{case}");
                    let got = sctp_seen(&out.frame);
                    assert_eq!(
                        (got.src, got.dst, got.sport, got.dport, got.crc_holds),
                        (vip, client, 80, sport, true),
                        "{case}: the answer as pod a gets it"
                    );
                }
            }
            assert_eq!(d.kernel_counters().service_untranslatable, 0);

            // Hairpin: pod a reaching the service it backs, on another
            // port. Its INIT comes back to it from the hairpin address,
            // its answer goes back to it from the ClusterIP.
            for (client, vip, hairpin) in [
                (ip("10.0.0.1"), ip("10.96.0.63"), ip("169.254.1.2")),
                (ip("fd00::1"), ip("fd00:96::63"), ip("fd6d:6e6c::2")),
            ] {
                let out = d
                    .test_run(
                        Hook::Ingress,
                        a,
                        &sctp_frame(client, 30_500, vip, 80, 100, 0),
                        1,
                    )
                    .expect("BPF_PROG_TEST_RUN");
                assert_ne!(out.verdict, DROP, "{vip}");
                let got = sctp_seen(&out.frame);
                assert_eq!(
                    (got.src, got.dst, got.sport, got.dport, got.crc_holds),
                    (hairpin, client, 30_500, 8080, true),
                    "{vip}: the hairpin INIT as pod a gets it"
                );
                let answer = sctp_frame(client, 8080, hairpin, 30_500, 100, 0);
                let out = d
                    .test_run(Hook::Ingress, a, &answer, 1)
                    .expect("BPF_PROG_TEST_RUN");
                assert_ne!(out.verdict, DROP, "{vip}");
                let got = sctp_seen(&out.frame);
                assert_eq!(
                    (got.src, got.dst, got.sport, got.dport, got.crc_holds),
                    (vip, client, 80, 30_500, true),
                    "{vip}: the hairpin answer as pod a gets it"
                );
            }

            // First fragments with more to come: the CRC covers the
            // fragments after them. Dropped and counted, over both
            // families.
            let mut v4 = sctp_frame(ip("10.0.0.1"), 31_000, ip("10.96.0.60"), 80, 64, 0);
            v4[20] = 0x20; // more fragments, offset 0
            let v6 = with_ext(
                &sctp_frame(ip("fd00::1"), 31_001, ip("fd00:96::60"), 80, 64, 0),
                &[fragment(0)],
            );
            for f in [v4, v6] {
                let out = d
                    .test_run(Hook::Ingress, a, &f, 1)
                    .expect("BPF_PROG_TEST_RUN");
                assert_eq!(out.verdict, DROP);
            }
            assert_eq!(d.kernel_counters().service_untranslatable, 2);
        })
        .expect("run in the namespace");
}
