use super::*;
use crate::driver::Driver;
use crate::null::NullDriver;
use crate::ops::{Icmp, Operation};
use crate::testutil::*;

const FRONTEND: &str = "10.0.1.1";
const API: &str = "10.0.1.2";
const DB: &str = "10.0.1.3";
const LONELY: &str = "10.0.1.9";
const OUTSIDE: &str = "192.168.5.5";
const OUTSIDE_BLOCKED: &str = "192.168.7.7";
const ELSEWHERE: &str = "10.0.2.7";

/// Two tiers (`security`, default Deny, with Log, ICMP and Pass rules;
/// `default`, default Deny) on `api`; a default-Pass tier on `db`; profiles
/// that allow; an endpoint with nothing at all.
fn driver() -> NullDriver {
    let sec_in = pid("security", "sec-in");
    let sec_out = pid("security", "sec-out");
    let api_allow = pid("default", "prod/api-allow");
    let db_audit = pid("audit", "db-audit");

    // security/sec-in, inbound: log everything, allow echo requests, pass
    // whatever comes from inside prod; the rest meets the tier's Deny.
    let log = rule("security/sec-in/inbound/0", Action::Log);
    let mut echo = rule("security/sec-in/inbound/1", Action::Allow);
    echo.protocol = Some(1);
    echo.icmp = Some(Icmp {
        icmp_type: 8,
        code: None,
    });
    let mut pass = rule("security/sec-in/inbound/2", Action::Pass);
    pass.src.ip_sets = strings(&["s:prod"]);

    // security/sec-out, outbound: deny 192.168/16 except 192.168.5/24, for
    // anything but UDP; pass the rest.
    let mut deny_out = rule("security/sec-out/outbound/0", Action::Deny);
    deny_out.not_protocol = Some(17);
    deny_out.dst.nets = vec![net("192.168.0.0/16")];
    deny_out.dst.not_nets = vec![net("192.168.5.0/24")];
    let pass_out = rule("security/sec-out/outbound/1", Action::Pass);

    // default/prod/api-allow, inbound:
    // 0: TCP from frontend AND prod to the named port http or to 9090;
    // 1: TCP to 8443 from anyone but frontend;
    // 2: UDP from source port 53.
    let mut from_frontend = rule("default/prod/api-allow/inbound/0", Action::Allow);
    from_frontend.protocol = Some(6);
    from_frontend.src.ip_sets = strings(&["s:frontend", "s:prod"]);
    from_frontend.dst.ports = ports(&[(9090, 9090)]);
    from_frontend.dst.named_port_sets = strings(&["np:api-http"]);
    let mut not_frontend = rule("default/prod/api-allow/inbound/1", Action::Allow);
    not_frontend.protocol = Some(6);
    not_frontend.dst.ports = ports(&[(8443, 8443)]);
    not_frontend.src.not_ip_sets = strings(&["s:frontend"]);
    let mut dns = rule("default/prod/api-allow/inbound/2", Action::Allow);
    dns.protocol = Some(17);
    dns.src.ports = ports(&[(53, 53)]);

    // audit/db-audit, inbound: a Log rule only; the tier passes by default.
    let audit = rule("audit/db-audit/inbound/0", Action::Log);

    let mut driver = NullDriver::new();
    driver
        .apply(&[
            net_set("s:frontend", &["10.0.1.1/32"]),
            net_set("s:prod", &["10.0.1.0/24"]),
            np_set("np:api-http", &[("10.0.1.2", 6, 8080)]),
            policy_update(sec_in.clone(), vec![log, echo, pass], Vec::new()),
            policy_update(sec_out.clone(), Vec::new(), vec![deny_out, pass_out]),
            policy_update(
                api_allow.clone(),
                vec![from_frontend, not_frontend, dns],
                Vec::new(),
            ),
            policy_update(db_audit.clone(), vec![audit], Vec::new()),
            allow_all_profile("kns.prod"),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "frontend",
                &["10.0.1.1/32"],
                Vec::new(),
                &["kns.prod"],
            )),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "api",
                &["10.0.1.2/32"],
                vec![
                    tier("security", Action::Deny, &[sec_in], &[sec_out]),
                    tier("default", Action::Deny, &[api_allow], &[]),
                ],
                &["kns.prod"],
            )),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "db",
                &["10.0.1.3/32"],
                vec![tier("audit", Action::Pass, &[db_audit], &[])],
                &["kns.prod"],
            )),
            Operation::WorkloadEndpointUpdate(wep(
                "prod",
                "lonely",
                &["10.0.1.9/32"],
                Vec::new(),
                &[],
            )),
            Operation::InSync,
        ])
        .expect("the verdict state is valid");
    driver
}

fn by_policy(tier: &str, name: &str, rule_id: &str) -> Decider {
    Decider::Rule {
        policy: Some(pid(tier, name)),
        profile: None,
        rule_id: rule_id.to_owned(),
    }
}

fn by_profile(profile: &str, rule_id: &str) -> Decider {
    Decider::Rule {
        policy: None,
        profile: Some(profile.to_owned()),
        rule_id: rule_id.to_owned(),
    }
}

fn tier_default(tier: &str) -> Decider {
    Decider::TierDefault {
        tier: tier.to_owned(),
    }
}

#[test]
fn verdict_table() {
    let driver = driver();
    let tcp =
        |src: &str, sport: u16, dst: &str, dport: u16| Packet::tcp(ip(src), sport, ip(dst), dport);
    let udp =
        |src: &str, sport: u16, dst: &str, dport: u16| Packet::udp(ip(src), sport, ip(dst), dport);
    let icmp = |src: &str, dst: &str, ty: u8| Packet::icmp(ip(src), ip(dst), ty, 0);
    let api_in = "kns.prod/inbound/0";
    let prod_out = "kns.prod/outbound/0";
    let table: Vec<(&str, Packet, bool, Decider)> = vec![
        (
            "frontend to api's named port: Log, Pass, then the AND of two sets and the named port",
            tcp(FRONTEND, 40000, API, 8080),
            true,
            by_policy(
                "default",
                "prod/api-allow",
                "default/prod/api-allow/inbound/0",
            ),
        ),
        (
            "frontend to api's numeric port 9090 (ports ORed with named ports)",
            tcp(FRONTEND, 40000, API, 9090),
            true,
            by_policy(
                "default",
                "prod/api-allow",
                "default/prod/api-allow/inbound/0",
            ),
        ),
        (
            "frontend to 8081: no rule in default matches: the default tier denies",
            tcp(FRONTEND, 40000, API, 8081),
            false,
            tier_default("default"),
        ),
        (
            "db to api's named port: in s:prod but not in s:frontend, so the AND fails",
            tcp(DB, 40000, API, 8080),
            false,
            tier_default("default"),
        ),
        (
            "the named-port set holds (api, TCP, 8080) only: UDP to 8080 does not match",
            udp(FRONTEND, 40000, API, 8080),
            false,
            tier_default("default"),
        ),
        (
            "db to 8443: not in s:frontend (not_ip_sets)",
            tcp(DB, 40000, API, 8443),
            true,
            by_policy(
                "default",
                "prod/api-allow",
                "default/prod/api-allow/inbound/1",
            ),
        ),
        (
            "frontend to 8443: in s:frontend, so not_ip_sets excludes it",
            tcp(FRONTEND, 40000, API, 8443),
            false,
            tier_default("default"),
        ),
        (
            "source port 53 matches src.ports",
            udp(DB, 53, API, 5000),
            true,
            by_policy(
                "default",
                "prod/api-allow",
                "default/prod/api-allow/inbound/2",
            ),
        ),
        (
            "source port 54 does not, and the destination port is not what src.ports looks at",
            udp(DB, 54, API, 53),
            false,
            tier_default("default"),
        ),
        (
            "echo request from outside: allowed by ICMP type before the Pass",
            icmp(OUTSIDE, API, 8),
            true,
            by_policy("security", "sec-in", "security/sec-in/inbound/1"),
        ),
        (
            "echo reply from outside: wrong ICMP type, not in prod: the security tier denies",
            icmp(OUTSIDE, API, 0),
            false,
            tier_default("security"),
        ),
        (
            "TCP from outside to api: the security tier denies before the default tier",
            tcp(OUTSIDE, 40000, API, 8080),
            false,
            tier_default("security"),
        ),
        (
            "api out to 192.168.7.7 over TCP: denied by nets",
            tcp(API, 40000, OUTSIDE_BLOCKED, 443),
            false,
            by_policy("security", "sec-out", "security/sec-out/outbound/0"),
        ),
        (
            "api out to 192.168.5.5: excluded by not_nets, Pass, no outbound policy in default, profile allows",
            tcp(API, 40000, OUTSIDE, 443),
            true,
            by_profile("kns.prod", prod_out),
        ),
        (
            "api out to 192.168.7.7 over UDP: not_protocol excludes it",
            udp(API, 40000, OUTSIDE_BLOCKED, 53),
            true,
            by_profile("kns.prod", prod_out),
        ),
        (
            "api to frontend: api's outbound passes, frontend has no tiers, its profile allows",
            tcp(API, 40000, FRONTEND, 80),
            true,
            by_profile("kns.prod", api_in),
        ),
        (
            "anything to db: the audit tier logs, passes by default, the profile allows",
            tcp(OUTSIDE, 40000, DB, 5432),
            true,
            by_profile("kns.prod", api_in),
        ),
        (
            "to an endpoint with no tiers and no profiles: no verdict at all",
            tcp(FRONTEND, 40000, LONELY, 80),
            false,
            Decider::NoMatch,
        ),
        (
            "from an endpoint with nothing: dropped on the way out",
            tcp(LONELY, 40000, OUTSIDE, 80),
            false,
            Decider::NoMatch,
        ),
        (
            "neither side local: not policed",
            tcp(OUTSIDE, 40000, ELSEWHERE, 80),
            true,
            Decider::NotAnEndpoint,
        ),
    ];
    let mut failures = Vec::new();
    for (name, packet, allowed, decider) in &table {
        let verdict = driver.verdict(packet);
        if verdict.allowed != *allowed || verdict.deciding.as_ref() != Some(decider) {
            failures.push(format!(
                "{name}: expected allowed={allowed} by {decider:?}, got allowed={} by {:?}\n  {}",
                verdict.allowed,
                verdict.deciding,
                verdict.steps.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_trace_shows_log_pass_and_both_sides() {
    let driver = driver();
    let verdict = driver.verdict(&Packet::tcp(ip(FRONTEND), 40000, ip(API), 8080));
    assert!(verdict.allowed);
    let steps = verdict.steps.join("\n");
    let log = steps
        .find("rule \"security/sec-in/inbound/0\": match, Log")
        .expect("the Log rule is in the trace");
    let pass = steps
        .find("rule \"security/sec-in/inbound/2\": match, Pass")
        .expect("the Pass rule is in the trace");
    let next = steps
        .find("tier \"security\": passed to the next tier")
        .expect("the Pass moved on");
    assert!(log < pass && pass < next, "{steps}");
    // Both sides were judged: the frontend's outbound by its profile.
    let outbound = verdict.outbound.expect("the source is local");
    assert_eq!(outbound.endpoint, eid("prod", "frontend"));
    assert!(outbound.allowed);
    assert_eq!(
        outbound.decider,
        by_profile("kns.prod", "kns.prod/outbound/0")
    );
    let inbound = verdict.inbound.expect("the destination is local");
    assert_eq!(inbound.endpoint, eid("prod", "api"));
    assert_eq!(
        verdict.deciding.as_ref().and_then(Decider::rule_id),
        Some("default/prod/api-allow/inbound/0")
    );

    // A drop on the way out stops there: the destination is not judged.
    let verdict = driver.verdict(&Packet::tcp(ip(LONELY), 1, ip(API), 9090));
    assert!(!verdict.allowed);
    assert!(verdict.outbound.is_some() && verdict.inbound.is_none());
    assert!(
        verdict
            .steps
            .iter()
            .any(|s| s.contains("dropped leaving prod/lonely"))
    );

    // The default tier has no outbound policy for api: it is skipped.
    let verdict = driver.verdict(&Packet::tcp(ip(API), 1, ip(OUTSIDE), 443));
    assert!(
        verdict
            .steps
            .iter()
            .any(|s| s.contains("tier \"default\" has no outbound policies: skipped")),
        "{:#?}",
        verdict.steps
    );
}

#[test]
fn set_and_endpoint_changes_change_verdicts() {
    let mut driver = driver();
    let packet = Packet::tcp(ip(DB), 40000, ip(API), 8080);
    assert!(!driver.verdict(&packet).allowed);
    // db joins s:frontend: the AND of both sets now holds.
    driver
        .apply(&[Operation::IpSetDelta {
            id: "s:frontend".to_owned(),
            added: vec![crate::ops::IpSetMember::Net(net("10.0.1.3/32"))],
            removed: Vec::new(),
        }])
        .expect("delta");
    assert!(driver.verdict(&packet).allowed);
    // api goes away: its address is no longer policed inbound.
    driver
        .apply(&[Operation::WorkloadEndpointRemove {
            id: eid("prod", "api"),
        }])
        .expect("remove");
    let verdict = driver.verdict(&Packet::tcp(ip(OUTSIDE), 1, ip(API), 1));
    assert!(verdict.allowed);
    assert_eq!(verdict.deciding, Some(Decider::NotAnEndpoint));
}

#[test]
fn ip_version_and_icmp_code_conditions() {
    let mut v6 = rule("t/p/inbound/0", Action::Allow);
    v6.ip_version = Some(6);
    let mut unreachable = rule("t/p/inbound/1", Action::Allow);
    unreachable.protocol = Some(1);
    unreachable.icmp = Some(Icmp {
        icmp_type: 3,
        code: Some(4),
    });
    let mut not_echo = rule("t/p/inbound/2", Action::Deny);
    not_echo.protocol = Some(1);
    not_echo.not_icmp = Some(Icmp {
        icmp_type: 8,
        code: None,
    });
    let mut driver = NullDriver::new();
    driver
        .apply(&[
            policy_update(pid("t", "p"), vec![v6, unreachable, not_echo], Vec::new()),
            Operation::WorkloadEndpointUpdate(wep(
                "ns",
                "dual",
                &["10.0.0.1/32", "fd00::1/128"],
                vec![tier("t", Action::Deny, &[pid("t", "p")], &[])],
                &[],
            )),
        ])
        .expect("valid");
    let judge = |p: Packet| {
        let v = driver.verdict(&p);
        (
            v.allowed,
            v.deciding.and_then(|d| d.rule_id().map(str::to_owned)),
        )
    };
    let rid = |s: &str| Some(s.to_owned());
    assert_eq!(
        judge(Packet::tcp(ip("fd00::9"), 1, ip("fd00::1"), 80)),
        (true, rid("t/p/inbound/0"))
    );
    assert_eq!(
        judge(Packet::icmp(ip("10.9.9.9"), ip("10.0.0.1"), 3, 4)),
        (true, rid("t/p/inbound/1"))
    );
    assert_eq!(
        judge(Packet::icmp(ip("10.9.9.9"), ip("10.0.0.1"), 3, 1)),
        (false, rid("t/p/inbound/2"))
    );
    assert_eq!(
        judge(Packet::icmp(ip("10.9.9.9"), ip("10.0.0.1"), 8, 0)),
        (false, None)
    );
    assert_eq!(
        judge(Packet::tcp(ip("10.9.9.9"), 1, ip("10.0.0.1"), 80)),
        (false, None)
    );
}

#[test]
fn the_longest_prefix_owns_an_address_and_profiles_pass_on() {
    let mut driver = NullDriver::new();
    driver
        .apply(&[
            profile_update(
                "deny-all",
                vec![rule("deny-all/inbound/0", Action::Deny)],
                Vec::new(),
            ),
            profile_update(
                "pass-then-deny",
                vec![
                    rule("pass-then-deny/inbound/0", Action::Pass),
                    rule("pass-then-deny/inbound/1", Action::Deny),
                ],
                Vec::new(),
            ),
            allow_all_profile("allow"),
            Operation::WorkloadEndpointUpdate(wep(
                "ns",
                "wide",
                &["10.0.0.0/24"],
                Vec::new(),
                &["deny-all"],
            )),
            Operation::WorkloadEndpointUpdate(wep(
                "ns",
                "narrow",
                &["10.0.0.5/32"],
                Vec::new(),
                &["pass-then-deny", "allow"],
            )),
        ])
        .expect("valid");
    let verdict = driver.verdict(&Packet::tcp(ip("192.168.0.1"), 1, ip("10.0.0.5"), 80));
    assert!(verdict.allowed, "{:#?}", verdict.steps);
    assert_eq!(
        verdict.deciding,
        Some(by_profile("allow", "allow/inbound/0"))
    );
    assert!(
        verdict
            .steps
            .iter()
            .any(|s| s.contains("inside 2 workload endpoints"))
    );
    let verdict = driver.verdict(&Packet::tcp(ip("192.168.0.1"), 1, ip("10.0.0.6"), 80));
    assert!(!verdict.allowed);
    assert_eq!(
        verdict.inbound.map(|side| side.endpoint),
        Some(eid("ns", "wide"))
    );
}

#[test]
fn verdicts_serialise() {
    let verdict = driver().verdict(&Packet::tcp(ip(FRONTEND), 1, ip(API), 8080));
    let json = serde_json::to_string(&verdict).expect("encode");
    let back: Verdict = serde_json::from_str(&json).expect("decode");
    assert_eq!(back, verdict);
}

/// (inbound, tier, policy or profile name, rule index, action).
type Hit = (bool, Option<String>, Option<String>, Option<u32>, Action);

#[test]
fn the_trace_names_every_policy_that_gave_a_verdict() {
    let driver = driver();
    let summary = |v: &Verdict| -> Vec<Hit> {
        v.trace
            .iter()
            .map(|s| {
                (
                    s.inbound,
                    s.tier.clone(),
                    s.policy
                        .as_ref()
                        .map(|p| p.name.clone())
                        .or_else(|| s.profile.clone()),
                    s.rule_index,
                    s.action,
                )
            })
            .collect()
    };
    // frontend (profile only) to api: frontend's profile allows it out;
    // api's security tier passes it (rule 2, after the Log rule 0, which
    // is not in the trace), its default tier allows it (rule 0).
    let v = driver.verdict(&Packet::tcp(ip(FRONTEND), 40000, ip(API), 8080));
    assert_eq!(
        summary(&v),
        vec![
            (false, None, Some("kns.prod".into()), Some(0), Action::Allow),
            (
                true,
                Some("security".into()),
                Some("sec-in".into()),
                Some(2),
                Action::Pass
            ),
            (
                true,
                Some("default".into()),
                Some("prod/api-allow".into()),
                Some(0),
                Action::Allow
            ),
        ]
    );
    // To a port nothing allows: the default tier's end denies it.
    let v = driver.verdict(&Packet::tcp(ip(FRONTEND), 40000, ip(API), 8081));
    assert_eq!(
        summary(&v).last(),
        Some(&(true, Some("default".into()), None, None, Action::Deny))
    );
    // db's audit tier gives no verdict and passes by default, then the
    // profile allows.
    let v = driver.verdict(&Packet::tcp(ip(FRONTEND), 40000, ip(DB), 5432));
    assert_eq!(
        summary(&v)[1..],
        [
            (true, Some("audit".into()), None, None, Action::Pass),
            (true, None, Some("kns.prod".into()), Some(0), Action::Allow),
        ]
    );
}
