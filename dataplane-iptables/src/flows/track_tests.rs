use manul_dataplane_api::testutil::{
    allow_all_profile, eid, ip, pid, policy_update, rule, service, tier, wep,
};
use manul_dataplane_api::{Action, Backend, Driver, NullDriver, Operation};

use super::*;
use crate::flows::prefix::prefix;

/// A Service (10.96.0.10:8080) whose one backend is the server's port 80.
fn web() -> Operation {
    let mut svc = service("ns", "web");
    let backend = Backend {
        ip: ip("10.0.0.2"),
        port: 80,
        local: true,
        ready: true,
    };
    svc.ports[0].port = 8080;
    svc.ports[0].backends = vec![backend];
    svc.ports[0].local_backends = vec![backend];
    Operation::ServiceUpdate(svc)
}

fn index() -> FlowIndex {
    let p = pid("default", "ns/p");
    let mut null = NullDriver::new();
    null.apply(&[
        web(),
        allow_all_profile("kns.ns"),
        policy_update(
            p.clone(),
            vec![
                rule("ns/p/inbound/0", Action::Allow),
                rule("ns/p/inbound/1", Action::Deny),
            ],
            vec![],
        ),
        Operation::WorkloadEndpointUpdate(wep(
            "ns",
            "server",
            &["10.0.0.2/32"],
            vec![tier("default", Action::Deny, &[p], &[])],
            &["kns.ns"],
        )),
        Operation::WorkloadEndpointUpdate(wep(
            "ns",
            "client",
            &["10.0.0.1/32"],
            vec![],
            &["kns.ns"],
        )),
        Operation::InSync,
    ])
    .unwrap();
    FlowIndex::build(null.state())
}

fn tcp(sport: u16, dport: u16) -> FlowTuple {
    FlowTuple {
        protocol: 6,
        src: ip("10.0.0.1"),
        src_port: sport,
        dst: ip("10.0.0.2"),
        dst_port: dport,
    }
}

fn allow_rule() -> Decider {
    Decider::Rule {
        policy: Some(pid("default", "ns/p")),
        profile: None,
        rule_id: "ns/p/inbound/0".into(),
    }
}

fn deny_rule() -> Decider {
    Decider::Rule {
        policy: Some(pid("default", "ns/p")),
        profile: None,
        rule_id: "ns/p/inbound/1".into(),
    }
}

fn profile_rule() -> Decider {
    Decider::Rule {
        policy: None,
        profile: Some("kns.ns".into()),
        rule_id: "kns.ns/outbound/0".into(),
    }
}

fn record(inbound: bool, d: &Decider, tuple: FlowTuple) -> LogRecord {
    LogRecord {
        prefix: prefix(inbound, d),
        in_if: Some("caliclient".into()),
        out_if: Some("caliserver".into()),
        packet: PacketInfo { tuple, length: 60 },
        frontend: None,
    }
}

fn entry(tuple: FlowTuple, counts: FlowCounts) -> CtEntry {
    CtEntry {
        orig: tuple,
        reply_src: tuple.dst,
        reply_src_port: tuple.dst_port,
        counts: Some(counts),
        closed: false,
    }
}

fn summary(obs: &[FlowObservation]) -> Vec<(FlowPhase, Reporter, Option<String>, bool, u64)> {
    obs.iter()
        .map(|o| {
            (
                o.phase,
                o.reporter,
                o.endpoint.as_ref().map(|e| e.name.clone()),
                o.allowed,
                o.counts.packets_forward,
            )
        })
        .collect()
}

#[test]
fn a_connection_between_two_local_pods_starts_updates_and_ends_on_both_sides() {
    let index = index();
    let mut t = Tracker::new(Limits::default());
    let flow = tcp(40000, 80);
    t.log(&record(false, &profile_rule(), flow), &index, 1_000);
    t.log(&record(true, &allow_rule(), flow), &index, 1_000);
    let counts = FlowCounts {
        packets_forward: 5,
        bytes_forward: 400,
        packets_reverse: 4,
        bytes_reverse: 900,
    };
    t.dump(&[entry(flow, counts)], 2_000);
    // Closed (time-wait): its final counters, once.
    let closed = CtEntry {
        closed: true,
        ..entry(
            flow,
            FlowCounts {
                packets_forward: 7,
                ..counts
            },
        )
    };
    t.dump(&[closed], 3_000);
    t.dump(&[closed], 4_000);
    t.dump(&[], 5_000);
    let obs = t.take();
    let client = Some("client".to_string());
    let server = Some("server".to_string());
    assert_eq!(
        summary(&obs),
        vec![
            (FlowPhase::Start, Reporter::Source, client.clone(), true, 1),
            (
                FlowPhase::Start,
                Reporter::Destination,
                server.clone(),
                true,
                1
            ),
            (FlowPhase::Update, Reporter::Source, client.clone(), true, 5),
            (
                FlowPhase::Update,
                Reporter::Destination,
                server.clone(),
                true,
                5
            ),
            (FlowPhase::End, Reporter::Source, client, true, 7),
            (FlowPhase::End, Reporter::Destination, server, true, 7),
        ]
    );
    assert_eq!(obs[1].decider, allow_rule());
    assert_eq!(obs[0].decider, profile_rule());
    assert_eq!(obs[5].counts.bytes_reverse, 900);
    assert_eq!(t.live(), 0);
}

#[test]
fn denied_packets_fold_into_one_burst_per_tuple_and_decider() {
    let index = index();
    let mut t = Tracker::new(Limits::default());
    for _ in 0..3 {
        t.log(&record(true, &deny_rule(), tcp(40001, 9090)), &index, 1_000);
    }
    let default = Decider::TierDefault {
        tier: "default".into(),
    };
    t.log(&record(true, &default, tcp(40002, 7070)), &index, 1_000);
    t.flush_denied(1_500);
    let obs = t.take();
    assert_eq!(obs.len(), 2);
    assert_eq!((obs[0].phase, obs[0].allowed), (FlowPhase::Denied, false));
    assert_eq!(obs[0].decider, deny_rule());
    assert_eq!(
        (obs[0].counts.packets_forward, obs[0].counts.bytes_forward),
        (3, 180)
    );
    assert_eq!(obs[0].endpoint, Some(eid("ns", "server")));
    assert_eq!(obs[1].decider, default);
    assert_eq!(t.live(), 0);
}

#[test]
fn connections_missing_from_dumps_end_after_grace_and_service_frontends_show() {
    let index = index();
    let mut t = Tracker::new(Limits::default());
    let never_confirmed = tcp(40003, 80);
    t.log(&record(true, &allow_rule(), never_confirmed), &index, 1_000);
    t.dump(&[], 1_500);
    assert_eq!(t.live(), 1, "still within its grace period");
    t.dump(&[], 3_500);
    assert_eq!(t.live(), 0);
    let backend = tcp(40004, 80);
    t.log(&record(true, &allow_rule(), backend), &index, 4_000);
    let via_service = CtEntry {
        orig: FlowTuple {
            dst: ip("10.96.0.10"),
            dst_port: 8080,
            ..backend
        },
        reply_src: backend.dst,
        reply_src_port: backend.dst_port,
        counts: None,
        closed: false,
    };
    t.dump(&[via_service], 4_100);
    t.dump(&[], 4_200);
    let obs = t.take();
    let phases: Vec<FlowPhase> = obs.iter().map(|o| o.phase).collect();
    use FlowPhase::*;
    assert_eq!(phases, vec![Start, End, Start, Update, End]);
    assert_eq!(obs[3].service_frontend, Some((ip("10.96.0.10"), 8080)));
    assert_eq!(obs[4].service_frontend, Some((ip("10.96.0.10"), 8080)));
}

/// Without destroy events: a connection seen in a dump and gone from the
/// next ends with the last dump's counters; one in a closing state that
/// still expects a packet (last-ack) goes on; one opened and gone between
/// two dumps ends after the grace period with its first packet's counts.
#[test]
fn vanished_connections_end_with_the_last_counters_seen() {
    let index = index();
    let mut t = Tracker::new(Limits::default());
    let seen = tcp(40010, 80);
    let between = tcp(40011, 80);
    t.log(&record(true, &allow_rule(), seen), &index, 1_000);
    let counts = FlowCounts {
        packets_forward: 9,
        bytes_forward: 700,
        packets_reverse: 8,
        bytes_reverse: 1_200,
    };
    // Last-ack: not `closed` (the final ack is still to come).
    t.dump(&[entry(seen, counts)], 2_000);
    t.log(&record(true, &allow_rule(), between), &index, 2_500);
    t.dump(&[], 3_000);
    assert_eq!(t.live(), 1, "the one never seen is within its grace");
    t.dump(&[], 5_000);
    assert_eq!(t.live(), 0);
    let obs = t.take();
    let ends: Vec<(u16, u64, FlowCounts)> = obs
        .iter()
        .filter(|o| o.phase == FlowPhase::End)
        .map(|o| (o.tuple.src_port, o.time_unix_ms, o.counts))
        .collect();
    let first = FlowCounts {
        packets_forward: 1,
        bytes_forward: 60,
        ..FlowCounts::default()
    };
    assert_eq!(ends, vec![(40010, 3_000, counts), (40011, 5_000, first)]);
}

#[test]
fn unknown_prefixes_and_a_full_queue_are_counted() {
    let index = index();
    let mut t = Tracker::new(Limits {
        queue: 1,
        ..Limits::default()
    });
    let mut stale = record(true, &allow_rule(), tcp(1, 2));
    stale.prefix = "mnl:i:0011223344556677".into();
    t.log(&stale, &index, 0);
    assert_eq!(t.unknown, 1);
    t.log(&record(true, &allow_rule(), tcp(1, 80)), &index, 0);
    t.log(&record(true, &allow_rule(), tcp(2, 80)), &index, 0);
    assert_eq!(t.dropped(), 1);
    assert_eq!(t.take().len(), 1);
}

/// The record of a translated connection's first packet, logged before
/// DNAT: `backend`'s client to the frontend 10.96.0.10:8080.
fn frontend_record(backend: FlowTuple) -> LogRecord {
    LogRecord {
        prefix: FRONTEND.into(),
        in_if: Some("caliclient".into()),
        out_if: None,
        packet: PacketInfo {
            tuple: FlowTuple {
                dst: ip("10.96.0.10"),
                dst_port: 8080,
                ..backend
            },
            length: 60,
        },
        frontend: None,
    }
}

#[test]
fn a_start_names_the_frontend_its_record_or_the_log_before_dnat_gave() {
    let index = index();
    let frontend = Some((ip("10.96.0.10"), 8080));
    let mut t = Tracker::new(Limits {
        frontends: 2,
        ..Limits::default()
    });
    // The record carried its conntrack entry: both sides name it.
    let carried = tcp(40010, 80);
    let mut out = record(false, &profile_rule(), carried);
    out.frontend = frontend;
    t.log(&out, &index, 1_000);
    let mut inbound = record(true, &allow_rule(), carried);
    inbound.frontend = frontend;
    t.log(&inbound, &index, 1_000);
    // Records without one: the log before DNAT of the same protocol,
    // client address and port names it for both sides, and is no start
    // itself; one of another client port does not, nor does one whose
    // policy records' destination is not a backend (the same client port
    // to elsewhere), nor one of another protocol.
    let logged = tcp(40011, 80);
    t.log(&frontend_record(logged), &index, 2_000);
    t.log(&frontend_record(tcp(40012, 80)), &index, 2_000);
    t.log(&record(false, &profile_rule(), logged), &index, 2_005);
    t.log(&record(true, &allow_rule(), logged), &index, 2_005);
    t.log(&record(true, &allow_rule(), tcp(40013, 80)), &index, 2_005);
    t.log(&record(true, &allow_rule(), tcp(40012, 81)), &index, 2_005);
    let mut udp = tcp(40011, 80);
    udp.protocol = 17;
    t.log(&record(true, &allow_rule(), udp), &index, 2_005);
    assert_eq!(t.unknown, 0);
    // A full map counts what it drops until its entries expire; a newer
    // connection from a client port already kept replaces it.
    t.log(&frontend_record(tcp(40015, 80)), &index, 2_010);
    assert_eq!(t.dropped(), 1);
    t.log(&frontend_record(logged), &index, 2_010);
    assert_eq!(t.dropped(), 1);
    t.log(&frontend_record(tcp(40015, 80)), &index, 12_000);
    assert_eq!(t.dropped(), 1);
    t.log(&record(true, &allow_rule(), tcp(40015, 80)), &index, 12_001);
    type Start = (u8, u16, u16, Option<(IpAddr, u16)>);
    let starts: Vec<Start> = t
        .take()
        .iter()
        .map(|o| {
            (
                o.tuple.protocol,
                o.tuple.src_port,
                o.tuple.dst_port,
                o.service_frontend,
            )
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            (6, 40010, 80, frontend),
            (6, 40010, 80, frontend),
            (6, 40011, 80, frontend),
            (6, 40011, 80, frontend),
            (6, 40013, 80, None),
            (6, 40012, 81, None),
            (17, 40011, 80, None),
            (6, 40015, 80, frontend),
        ]
    );
    // Expired entries go.
    t.expire_frontends(30_000);
    t.log(&record(true, &allow_rule(), tcp(40015, 80)), &index, 30_001);
    assert_eq!(t.take()[0].service_frontend, None);
}
