#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use manul_dataplane_api::testutil::{allow_all_profile, eid, pid, policy_update, rule, tier, wep};
use manul_dataplane_api::{
    Action, Decider, FlowCounts, FlowObservation, FlowPhase, FlowTuple, Operation, Reporter,
};

use manul_proto::flows::PolicyHit;

use super::*;

fn updates(yaml: &str) -> Vec<Update> {
    manul_model::load("test.yaml", yaml.as_bytes())
        .into_result()
        .unwrap()
        .into_iter()
        .map(|l| Update {
            key: l.resource.key(),
            value: Some(l.resource),
        })
        .collect()
}

fn wep_yaml(name: &str, pod: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: prod\n  labels: {{{labels}}}\nspec:\n  node: node-a\n  pod: {pod}\n  interfaceName: mnl-{name}\n  ipNetworks: [{ip}/32]\n  profiles: [kns.prod]\n---\n"
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const WEB1: &str = "10.0.0.1";
const WEB2: &str = "10.0.0.2";
const DB: &str = "10.0.0.9";

/// web pods (a Deployment's) and a db pod; db's inbound: the `default`
/// tier's `prod/db-allow` allows TCP 5432 (rule 1, after a non-matching
/// rule 0), the tier denies the rest.
fn pipeline() -> FlowPipeline {
    let mut p = FlowPipeline::new("node-a", 15, 1000);
    let yaml = [
        wep_yaml(
            "web1",
            "web-6d4cf56db6-x2k9p",
            WEB1,
            "app: web, pod-template-hash: 6d4cf56db6, tier: fe",
        ),
        wep_yaml(
            "web2",
            "web-6d4cf56db6-q7zzw",
            WEB2,
            "app: web, pod-template-hash: 6d4cf56db6, tier: be",
        ),
        wep_yaml("db", "db", DB, "app: db"),
    ]
    .concat();
    for u in updates(&yaml) {
        p.update(&u);
    }
    let db_allow = pid("default", "prod/db-allow");
    let mut udp = rule("default/prod/db-allow/inbound/0", Action::Allow);
    udp.protocol = Some(17);
    let mut pg = rule("default/prod/db-allow/inbound/1", Action::Allow);
    pg.protocol = Some(6);
    pg.dst.ports = manul_dataplane_api::testutil::ports(&[(5432, 5432)]);
    p.applied(&[
        allow_all_profile("kns.prod"),
        policy_update(db_allow.clone(), vec![udp, pg], Vec::new()),
        Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "db",
            &[&format!("{DB}/32")],
            vec![tier("default", Action::Deny, &[db_allow], &[])],
            &["kns.prod"],
        )),
        Operation::InSync,
    ]);
    p
}

fn obs(
    phase: FlowPhase,
    src: &str,
    sport: u16,
    dport: u16,
    allowed: bool,
    counts: FlowCounts,
) -> FlowObservation {
    FlowObservation {
        phase,
        time_unix_ms: 1_000_000,
        tuple: FlowTuple {
            protocol: 6,
            src: ip(src),
            src_port: sport,
            dst: ip(DB),
            dst_port: dport,
        },
        service_frontend: None,
        reporter: Reporter::Destination,
        endpoint: Some(eid("prod", "db")),
        allowed,
        decider: if allowed {
            Decider::Rule {
                policy: Some(pid("default", "prod/db-allow")),
                profile: None,
                rule_id: "default/prod/db-allow/inbound/1".into(),
            }
        } else {
            Decider::TierDefault {
                tier: "default".into(),
            }
        },
        counts,
    }
}

fn counts(p: u64) -> FlowCounts {
    FlowCounts {
        packets_forward: p,
        bytes_forward: p * 100,
        packets_reverse: p,
        bytes_reverse: p * 10,
    }
}

#[test]
fn observations_become_records_with_workloads_and_the_policy_trace() {
    let mut p = pipeline();
    p.observe(vec![
        obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)),
        obs(FlowPhase::Start, WEB2, 40001, 5432, true, counts(1)),
        obs(FlowPhase::Update, WEB1, 40000, 5432, true, counts(5)),
        obs(FlowPhase::End, WEB1, 40000, 5432, true, counts(7)),
        obs(FlowPhase::Denied, WEB1, 40002, 22, false, counts(3)),
        obs(FlowPhase::Denied, "192.0.2.7", 40003, 22, false, counts(1)),
    ]);
    assert_eq!(p.flush_if_due(1014), None, "the interval is not over");
    let records = p.flush_if_due(1015).unwrap();
    assert_eq!(p.stats.trace_mismatches, 0);
    assert_eq!(records.len(), 3, "{records:#?}");

    let allowed = records.iter().find(|r| r.action == "allow").unwrap();
    let src = allowed.src.as_ref().unwrap();
    assert_eq!(
        (
            src.kind.as_str(),
            src.namespace.as_str(),
            src.workload.as_str()
        ),
        ("pod", "prod", "web-*")
    );
    // Only the labels both web pods have.
    assert_eq!(src.labels.get("app").map(String::as_str), Some("web"));
    assert!(!src.labels.contains_key("tier"));
    assert_eq!(allowed.dst.as_ref().unwrap().workload, "db");
    assert_eq!(
        (
            allowed.reporter.as_str(),
            allowed.dst_port,
            allowed.protocol
        ),
        ("dst", 5432, 6)
    );
    assert_eq!((allowed.start_unix_s, allowed.end_unix_s), (1000, 1015));
    assert_eq!(
        (
            allowed.flows_started,
            allowed.flows_completed,
            allowed.num_flows
        ),
        (2, 1, 2)
    );
    // web1's totals (7) plus web2's start (1): counters never counted twice.
    assert_eq!((allowed.packets_forward, allowed.bytes_forward), (8, 800));
    let trace: Vec<_> = allowed
        .enforced
        .iter()
        .map(|h| {
            (
                h.tier.as_str(),
                h.kind.as_str(),
                h.namespace.as_str(),
                h.name.as_str(),
                h.rule_index,
                h.action.as_str(),
            )
        })
        .collect();
    assert_eq!(
        trace,
        vec![(
            "default",
            "NetworkPolicy",
            "prod",
            "db-allow",
            Some(1),
            "allow"
        )]
    );
    assert!(
        allowed.pending.is_empty(),
        "no staged policies: no pending trace"
    );

    let denied = records
        .iter()
        .find(|r| r.action == "deny" && r.src.as_ref().unwrap().kind == "pod")
        .unwrap();
    assert_eq!((denied.flows_denied, denied.packets_forward), (1, 3));
    let end = &denied.enforced[0];
    assert_eq!(
        (
            end.kind.as_str(),
            end.name.as_str(),
            end.rule_index,
            end.action.as_str()
        ),
        ("EndOfTier", "default", None, "deny")
    );
    let outside = records
        .iter()
        .find(|r| r.src.as_ref().unwrap().kind == "net")
        .unwrap();
    assert_eq!(outside.src.as_ref().unwrap().workload, "pub");
    // The next interval starts where this one ended, empty.
    assert_eq!(p.flush_if_due(1030), Some(Vec::new()));
}

#[test]
fn a_pods_link_local_and_multicast_traffic_is_the_pods_not_a_network_loop() {
    // What a pod's kernel sends on its own: an IPv6 multicast listener
    // report from its link-local address (or the unspecified one) to
    // ff02::16, denied at the pod's egress; and the host's, arriving at
    // the pod. Neither address is a workload's: the reporting side is the
    // reporting endpoint, the other side the address's class.
    let mut p = pipeline();
    let mld = |src: &str, dst: &str, reporter: Reporter, allowed: bool| FlowObservation {
        phase: if allowed {
            FlowPhase::Start
        } else {
            FlowPhase::Denied
        },
        time_unix_ms: 1_000_000,
        tuple: FlowTuple {
            protocol: 0,
            src: ip(src),
            src_port: 0,
            dst: ip(dst),
            dst_port: 0,
        },
        service_frontend: None,
        reporter,
        endpoint: Some(eid("prod", "db")),
        allowed,
        decider: Decider::NoMatch,
        counts: counts(1),
    };
    let out = p.enrich(&mld(
        "fe80::1c2d:3eff:fe4f:5a6b",
        "ff02::16",
        Reporter::Source,
        false,
    ));
    assert_eq!(
        (
            out.src.kind.as_str(),
            out.src.namespace.as_str(),
            out.src.workload.as_str()
        ),
        ("pod", "prod", "db")
    );
    assert_eq!(
        (out.dst.kind.as_str(), out.dst.workload.as_str()),
        ("net", "multicast")
    );
    let dad = p.enrich(&mld("::", "ff02::16", Reporter::Source, false));
    assert_eq!(dad.src.workload, "db");
    let inbound = p.enrich(&mld("fe80::1", "ff02::16", Reporter::Destination, true));
    assert_eq!(
        (inbound.src.kind.as_str(), inbound.src.workload.as_str()),
        ("net", "link-local")
    );
    assert_eq!(
        (inbound.dst.kind.as_str(), inbound.dst.workload.as_str()),
        ("pod", "db")
    );
    // The side that did not report keeps its address's meaning.
    let far = p.enrich(&mld(
        "198.51.100.4",
        "ff02::16",
        Reporter::Destination,
        true,
    ));
    assert_eq!(far.src.workload, "pub");
}

#[test]
fn networks_are_named_by_their_class() {
    for (addr, class) in [
        ("8.8.8.8", "pub"),
        ("2001:db8::1", "pub"),
        ("10.1.2.3", "pvt"),
        ("100.64.0.1", "pvt"),
        ("127.0.0.1", "pvt"),
        ("fd00::1", "pvt"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "link-local"),
        ("fe80::1", "link-local"),
        ("::", "link-local"),
        ("224.0.0.251", "multicast"),
        ("255.255.255.255", "multicast"),
        ("ff02::16", "multicast"),
    ] {
        assert_eq!(network_class(ip(addr)), class, "{addr}");
    }
}

#[test]
fn a_kernel_verdict_the_state_does_not_explain_keeps_the_kernels_rule() {
    let mut p = pipeline();
    // The kernel says rule 0 allowed TCP 5432 (say, before a policy
    // change the copy already has): the trace is the kernel's rule alone.
    let mut o = obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1));
    o.decider = Decider::Rule {
        policy: Some(pid("default", "prod/db-allow")),
        profile: None,
        rule_id: "default/prod/db-allow/inbound/0".into(),
    };
    let e = p.enrich(&o);
    assert_eq!(p.stats.trace_mismatches, 1);
    assert_eq!(e.enforced.len(), 1);
    assert_eq!(e.enforced[0].rule_index, Some(0));
}

/// The sync's view of `pipeline()`'s policy (the pending view evaluates
/// resources, not the driver's batches): the namespace's profile and
/// `prod/db-allow`.
const ENFORCED: &str = r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-allow, namespace: prod}
spec:
  order: 100
  selector: app == 'db'
  ingress:
  - {action: Allow, protocol: UDP}
  - {action: Allow, protocol: TCP, destination: {ports: [5432]}}
"#;

/// A staged policy that would deny web's connections to db.
const STAGED_LOCKDOWN: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: db-lockdown, namespace: prod}
spec:
  order: 10
  selector: app == 'db'
  ingress: [{action: Deny, protocol: TCP, source: {selector: app == 'web'}}]
"#;

fn hits(h: &[PolicyHit]) -> Vec<(&str, &str, &str, Option<u32>, &str)> {
    h.iter()
        .map(|h| {
            (
                h.kind.as_str(),
                h.namespace.as_str(),
                h.name.as_str(),
                h.rule_index,
                h.action.as_str(),
            )
        })
        .collect()
}

#[test]
fn staged_policies_give_the_pending_trace_beside_the_enforced_one() {
    let mut p = pipeline();
    for u in updates(ENFORCED) {
        p.update(&u);
    }
    // Policies but nothing staged: no pending trace.
    let e = p.enrich(&obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)));
    assert!(e.pending.is_empty() && e.pending_allowed.is_none(), "{e:?}");

    for u in updates(STAGED_LOCKDOWN) {
        p.update(&u);
    }
    assert_eq!(p.staged_policies(), 1);
    p.observe(vec![
        obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)),
        obs(FlowPhase::Denied, WEB1, 40002, 22, false, counts(1)),
        obs(FlowPhase::Start, "192.0.2.7", 40003, 5432, true, counts(1)),
    ]);
    let records = p.flush_if_due(1015).unwrap();
    assert_eq!(p.stats.pending_errors, 0);
    let from = |w: &str, port: u32| {
        records
            .iter()
            .find(|r| r.src.as_ref().unwrap().workload == w && r.dst_port == port)
            .unwrap()
    };
    // Enforced allow, pending deny: the staged policy's rule 0.
    let web = from("web-*", 5432);
    assert_eq!(web.action, "allow");
    assert_eq!(
        hits(&web.enforced),
        vec![("NetworkPolicy", "prod", "db-allow", Some(1), "allow")]
    );
    assert_eq!(web.pending_action, "deny");
    assert_eq!(
        hits(&web.pending),
        vec![(
            "StagedNetworkPolicy",
            "prod",
            "db-lockdown",
            Some(0),
            "deny"
        )]
    );
    // Denied either way; the staged policy denies it first.
    let ssh = from("web-*", 22);
    assert_eq!(
        (ssh.action.as_str(), ssh.pending_action.as_str()),
        ("deny", "deny")
    );
    assert_eq!(hits(&ssh.pending)[0].2, "db-lockdown");
    // A client the staged policy does not select: the enforced policies'
    // verdict in the pending trace too.
    let outside = from("pub", 5432);
    assert_eq!(outside.pending_action, "allow");
    assert_eq!(
        hits(&outside.pending),
        vec![("NetworkPolicy", "prod", "db-allow", Some(1), "allow")]
    );

    // The staged policy removed: no pending trace again.
    let mut gone = updates(STAGED_LOCKDOWN);
    gone[0].value = None;
    p.update(&gone[0]);
    let e = p.enrich(&obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)));
    assert!(e.pending.is_empty() && e.pending_allowed.is_none(), "{e:?}");
}

#[test]
fn a_staged_delete_and_a_tier_end_in_the_pending_trace() {
    let mut p = pipeline();
    for u in updates(ENFORCED) {
        p.update(&u);
    }
    // Deleting db-allow would leave db's TCP 5432 to the tier's end.
    let delete = "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: db-allow, namespace: prod}\nspec: {stagedAction: Delete}\n";
    for u in updates(delete) {
        p.update(&u);
    }
    let e = p.enrich(&obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)));
    assert!(e.allowed);
    assert_eq!(
        e.pending_allowed,
        Some(true),
        "no policy applies: the profile"
    );
    assert_eq!(
        hits(&e.pending),
        vec![("Profile", "", "kns.prod", Some(0), "allow")]
    );
    // Replacing it with a version that allows only UDP would leave TCP
    // 5432 to the end of the tier, which denies.
    let udp_only = "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: db-allow, namespace: prod}\nspec:\n  selector: app == 'db'\n  ingress: [{action: Allow, protocol: UDP}]\n";
    for u in updates(udp_only) {
        p.update(&u);
    }
    let e = p.enrich(&obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1)));
    assert_eq!(e.pending_allowed, Some(false));
    assert_eq!(
        hits(&e.pending),
        vec![("EndOfTier", "", "default", None, "deny")]
    );
}

#[test]
fn a_service_frontend_of_either_family_or_a_node_port_names_the_service() {
    let mut p = pipeline();
    let mut svc = manul_dataplane_api::testutil::service("prod", "db");
    svc.cluster_ips.push(ip("fd00::10"));
    svc.external_ips = vec![ip("2001:db8::7")];
    svc.ports[0].port = 5432;
    svc.ports[0].node_port = Some(30432);
    p.applied(&[Operation::ServiceUpdate(svc)]);
    let mut named = |frontend: (&str, u16)| {
        let mut o = obs(FlowPhase::Start, WEB1, 40000, 5432, true, counts(1));
        o.service_frontend = Some((ip(frontend.0), frontend.1));
        p.enrich(&o).service
    };
    let db = Some(("prod".to_owned(), "db".to_owned(), 5432));
    assert_eq!(named(("10.96.0.10", 5432)), db);
    assert_eq!(named(("fd00::10", 5432)), db);
    assert_eq!(named(("2001:db8::7", 5432)), db);
    assert_eq!(named(("fd00:192::1", 30432)), db);
    assert_eq!(named(("fd00::10", 30432)), None);
}
