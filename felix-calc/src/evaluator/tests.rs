//! Table-driven tests of the reference evaluator: states built from YAML,
//! tables of packets and the verdict and decider each must get.

use std::path::PathBuf;

use manul_model::v3::Protocol;

use super::*;

// ---------------------------------------------------------------- helpers

fn state(yaml: &str) -> ClusterState {
    let out = manul_model::load("test", yaml.as_bytes());
    let loaded = match out.into_result() {
        Ok(l) => l,
        Err(errors) => panic!("fixture does not load: {errors:#?}\n{yaml}"),
    };
    ClusterState::from_resources(loaded.into_iter().map(|l| l.resource))
}

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("---\n{text}\n")
}

/// A Namespace with `kubernetes.io/metadata.name` and extra labels.
fn ns(name: &str, labels: &str) -> String {
    let sep = if labels.is_empty() { "" } else { ", " };
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: \
         {{kubernetes.io/metadata.name: {name}{sep}{labels}}}\n"
    )
}

/// A WorkloadEndpoint (pod NAME on node1) with profile `kns.NS`.
fn wep(ns: &str, name: &str, ip: &str, labels: &str) -> String {
    wep_with(ns, name, ip, labels, "")
}

/// [`wep`] plus extra `spec` lines (indented by two spaces); an extra
/// line for `node`, `pod`, `ipNetworks` or `profiles` replaces the default.
fn wep_with(ns: &str, name: &str, ip: &str, labels: &str, extra: &str) -> String {
    let defaults = [
        ("node", "node1".to_string()),
        ("pod", name.to_string()),
        ("ipNetworks", format!("[\"{ip}\"]")),
        ("profiles", format!("[kns.{ns}]")),
    ];
    let mut spec = String::new();
    for (key, value) in defaults {
        if !extra.contains(&format!("\n  {key}:")) && !extra.starts_with(&format!("  {key}:")) {
            spec.push_str(&format!("  {key}: {value}\n"));
        }
    }
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: \
         {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n{spec}{extra}"
    )
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

type Case = (
    &'static str,
    &'static str,
    &'static str,
    Verdict,
    &'static str,
);

/// Checks every `(from, to, packet, verdict, decider)` row.
fn check(s: &ClusterState, cases: &[Case]) {
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
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

use Verdict::{Allow, Deny};

// ------------------------------------------------------------------ tests

#[test]
fn no_policy_namespace_profile_allows_and_no_profile_denies() {
    let mut y = ns("a", "");
    y += &wep("a", "x", "10.0.0.1", "app: x");
    y += &wep("a", "y", "10.0.0.2", "app: y");
    // No profile at all: nothing allows it.
    y += &wep_with("a", "bare", "10.0.0.3", "", "  profiles: []\n");
    // A namespace known only through an explicit v3 profile.
    y += r#"---
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: kns.b
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply: {pcns.team: blue}
"#;
    y += &wep("b", "z", "10.0.0.4", "app: z");
    // A profile that names nothing that exists.
    y += &wep_with("a", "ghost", "10.0.0.5", "", "  profiles: [nope]\n");
    let s = state(&y);
    check(
        &s,
        &[
            ("a/x", "a/y", "tcp 80", Allow, "ingress profile kns.a#0"),
            ("a/y", "a/x", "udp 53", Allow, "ingress profile kns.a#0"),
            ("a/x", "b/z", "tcp 80", Allow, "ingress profile kns.b#0"),
            (
                "10.0.0.1",
                "10.0.0.2",
                "tcp 80",
                Allow,
                "ingress profile kns.a#0",
            ),
            ("8.8.8.8", "a/x", "icmp 8", Allow, "ingress profile kns.a#0"),
            ("a/x", "8.8.8.8", "tcp 443", Allow, "egress profile kns.a#0"),
            ("a/x", "a/bare", "tcp 80", Deny, "ingress default deny"),
            ("a/bare", "a/x", "tcp 80", Deny, "egress default deny"),
            ("a/ghost", "a/x", "tcp 80", Deny, "egress default deny"),
            ("8.8.8.8", "1.1.1.1", "tcp 80", Allow, "-"),
        ],
    );
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

fn prod_base() -> String {
    let mut y = ns("production", "team: prod");
    y += &ns("staging", "team: staging");
    y += &ns("web", "team: web");
    y += &wep("production", "frontend", "10.0.1.1", "app: frontend");
    y += &wep("production", "api", "10.0.1.2", "app: api");
    y += &wep("production", "other", "10.0.1.3", "app: other");
    y += &wep("production", "db", "10.0.1.4", "app: db");
    y += &wep("staging", "frontend", "10.0.2.1", "app: frontend");
    y += &wep("web", "frontend", "10.0.3.1", "app: frontend");
    y
}

#[test]
fn ingress_policy_allows_matching_and_default_denies_the_rest() {
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-frontend, namespace: production}
spec:
  selector: app == "api"
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == "frontend"}
    destination: {ports: [8080]}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "production/api",
                "tcp 8080",
                Allow,
                "ingress production/allow-frontend#0",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 9090",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "udp 8080",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/other",
                "production/api",
                "tcp 8080",
                Deny,
                "ingress end of tier default",
            ),
            (
                "8.8.8.8",
                "production/api",
                "tcp 8080",
                Deny,
                "ingress end of tier default",
            ),
            // Other pods in the namespace are unaffected.
            (
                "production/frontend",
                "production/other",
                "tcp 9090",
                Allow,
                "ingress profile kns.production#0",
            ),
            (
                "production/other",
                "production/db",
                "tcp 5432",
                Allow,
                "ingress profile kns.production#0",
            ),
            // The policy selects api for ingress only: its egress is open.
            (
                "production/api",
                "production/frontend",
                "tcp 80",
                Allow,
                "ingress profile kns.production#0",
            ),
            (
                "production/api",
                "1.1.1.1",
                "tcp 80",
                Allow,
                "egress profile kns.production#0",
            ),
        ],
    );
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
fn egress_policy() {
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-out, namespace: production}
spec:
  selector: app == "frontend"
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination:
      nets: [10.9.0.0/16]
      ports: [443]
  - action: Allow
    destination: {selector: app == "api"}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "10.9.1.1",
                "tcp 443",
                Allow,
                "egress production/client-out#0",
            ),
            (
                "production/frontend",
                "10.9.1.1",
                "tcp 80",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/frontend",
                "8.8.8.8",
                "tcp 443",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "udp 9",
                Allow,
                "ingress profile kns.production#0",
            ),
            (
                "production/frontend",
                "production/db",
                "tcp 5432",
                Deny,
                "egress end of tier default",
            ),
            // Ingress to the selected pod is untouched.
            (
                "8.8.8.8",
                "production/frontend",
                "tcp 443",
                Allow,
                "ingress profile kns.production#0",
            ),
            // Another namespace's frontend is not selected by a namespaced policy.
            (
                "staging/frontend",
                "8.8.8.8",
                "tcp 443",
                Allow,
                "egress profile kns.staging#0",
            ),
        ],
    );
}

const TIERS: &str = r#"---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: strict}
spec: {order: 300}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: late}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.screen}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: role == "bad"}
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform.admin}
spec:
  tier: platform
  selector: app == "api"
  ingress:
  - action: Allow
    source: {selector: role == "admin"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: strict.locked}
spec:
  tier: strict
  selector: role == "locked"
  ingress:
  - action: Log
  - action: Allow
    protocol: UDP
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: production}
spec:
  selector: app == "api"
  ingress:
  - action: Allow
    source: {selector: app == "frontend"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: late.deny-all}
spec:
  tier: late
  selector: app == "api"
  ingress:
  - action: Deny
"#;

#[test]
fn tiers_pass_default_deny_and_default_action_pass() {
    let mut y = prod_base();
    y += &wep("production", "bad", "10.0.1.10", "role: bad");
    y += &wep("production", "admin", "10.0.1.11", "role: admin");
    y += &wep("production", "vault", "10.0.1.12", "role: locked");
    y += TIERS;
    let s = state(&y);
    let tiers: Vec<String> = s.tiers().into_iter().map(|t| t.name).collect();
    assert_eq!(tiers, ["security", "platform", "strict", "default", "late"]);
    check(
        &s,
        &[
            // Security denies before anything else.
            (
                "production/bad",
                "production/api",
                "tcp 8080",
                Deny,
                "ingress security.screen#0",
            ),
            (
                "production/bad",
                "production/db",
                "tcp 5432",
                Deny,
                "ingress security.screen#0",
            ),
            // Passed by security, allowed by platform.
            (
                "production/admin",
                "production/api",
                "tcp 9999",
                Allow,
                "ingress platform.admin#0",
            ),
            // Platform's defaultAction Pass hands frontends to the default tier.
            (
                "production/frontend",
                "production/api",
                "tcp 8080",
                Allow,
                "ingress production/api#0",
            ),
            // Nothing decides in the default tier: its end denies (the late tier is never reached).
            (
                "production/other",
                "production/api",
                "tcp 8080",
                Deny,
                "ingress end of tier default",
            ),
            // No policy in platform, strict or default applies to db: profile.
            (
                "production/frontend",
                "production/db",
                "tcp 5432",
                Allow,
                "ingress profile kns.production#0",
            ),
            // Log continues; the strict tier ends with Deny.
            (
                "production/frontend",
                "production/vault",
                "udp 53",
                Allow,
                "ingress strict.locked#1",
            ),
            (
                "production/frontend",
                "production/vault",
                "tcp 53",
                Deny,
                "ingress end of tier strict",
            ),
        ],
    );
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
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: after}
spec: {order: 2000000}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: before}
spec: {order: 999999}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: unordered}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: before.allow}
spec:
  tier: before
  selector: app == "api"
  ingress: [{action: Allow, protocol: UDP}, {action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: after.deny}
spec:
  tier: after
  selector: app == "api"
  ingress: [{action: Deny, protocol: UDP}, {action: Deny, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: default-pass}
spec:
  selector: app == "api"
  ingress: [{action: Pass, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: unordered.allow}
spec:
  tier: unordered
  selector: app == "api"
  ingress: [{action: Allow}]
"#;
    let s = state(&y);
    let tiers: Vec<String> = s.tiers().into_iter().map(|t| t.name).collect();
    assert_eq!(tiers, ["before", "default", "after", "unordered"]);
    check(
        &s,
        &[
            (
                "production/frontend",
                "production/api",
                "udp 1",
                Allow,
                "ingress before.allow#0",
            ),
            // TCP: default passes, after denies before unordered could allow.
            (
                "production/frontend",
                "production/api",
                "tcp 1",
                Deny,
                "ingress after.deny#1",
            ),
        ],
    );
}

#[test]
fn policy_order_then_name() {
    let mut y = prod_base();
    y += &wep("production", "blocked", "10.0.1.20", "role: blocked");
    y += &wep("production", "friend", "10.0.1.21", "role: friend");
    y += &wep("production", "svc2", "10.0.1.22", "app: svc2");
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: zz-early, namespace: production}
spec:
  order: 1
  selector: app == "api"
  ingress: [{action: Deny, source: {selector: role == "blocked"}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-deny, namespace: production}
spec:
  order: 10
  selector: app == "api"
  ingress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-allow, namespace: production}
spec:
  order: 10
  selector: app == "api"
  ingress: [{action: Allow, source: {selector: role == "friend"}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-unordered-allow, namespace: production}
spec:
  selector: app in {"api", "svc2"}
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-ordered-deny, namespace: production}
spec:
  order: 100
  selector: app == "svc2"
  ingress: [{action: Deny, protocol: TCP}]
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/blocked",
                "production/api",
                "tcp 80",
                Deny,
                "ingress production/zz-early#0",
            ),
            (
                "production/friend",
                "production/api",
                "tcp 80",
                Allow,
                "ingress production/a-allow#0",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 80",
                Deny,
                "ingress production/b-deny#0",
            ),
            // An order beats an unset order whatever the names.
            (
                "production/frontend",
                "production/svc2",
                "tcp 80",
                Deny,
                "ingress production/z-ordered-deny#0",
            ),
            (
                "production/frontend",
                "production/svc2",
                "udp 80",
                Allow,
                "ingress production/a-unordered-allow#0",
            ),
        ],
    );
}

#[test]
fn namespaced_selector_scope_and_namespace_selector() {
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: production}
spec:
  selector: app == "api"
  ingress:
  - action: Allow
    source: {selector: app == "frontend"}
  - action: Allow
    source:
      selector: app == "frontend"
      namespaceSelector: team == "web"
  - action: Allow
    protocol: UDP
    source: {namespaceSelector: all()}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: production}
spec:
  selector: app == "db"
  ingress:
  - action: Allow
    source: {notSelector: app == "other"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: staging-lockdown}
spec:
  namespaceSelector: projectcalico.org/name == "staging"
  selector: all()
  types: [Ingress]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-frontends}
spec:
  namespaceSelector: team == "web"
  selector: app == "frontend"
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == "frontend"}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "production/api",
                "tcp 80",
                Allow,
                "ingress production/api#0",
            ),
            (
                "staging/frontend",
                "production/api",
                "tcp 80",
                Deny,
                "ingress end of tier default",
            ),
            (
                "web/frontend",
                "production/api",
                "tcp 80",
                Allow,
                "ingress production/api#1",
            ),
            // namespaceSelector all(): any pod in any namespace, no external address.
            (
                "staging/frontend",
                "production/api",
                "udp 80",
                Allow,
                "ingress production/api#2",
            ),
            (
                "8.8.8.8",
                "production/api",
                "udp 80",
                Deny,
                "ingress end of tier default",
            ),
            // notSelector in a namespaced policy scopes to the namespace too.
            (
                "production/frontend",
                "production/db",
                "tcp 1",
                Allow,
                "ingress production/db#0",
            ),
            (
                "production/other",
                "production/db",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "staging/frontend",
                "production/db",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "8.8.8.8",
                "production/db",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            // A global policy's namespaceSelector picks the namespaces it applies in.
            (
                "production/frontend",
                "staging/frontend",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            // Global rule selectors are not namespace-scoped.
            (
                "production/frontend",
                "web/frontend",
                "tcp 1",
                Allow,
                "ingress web-frontends#0",
            ),
            (
                "production/api",
                "web/frontend",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/api",
                "production/frontend",
                "tcp 1",
                Allow,
                "ingress profile kns.production#0",
            ),
        ],
    );
}

#[test]
fn network_sets_match_by_address() {
    let mut y = prod_base();
    y += &ns("kube-system", "");
    y += &wep("kube-system", "dns", "10.0.9.53", "k8s-app: kube-dns");
    y += &ns("other", "");
    y += &wep("other", "sink", "10.0.4.1", "app: sink");
    // A pod inside a global set's range.
    y += &wep("other", "inside", "10.1.0.5", "app: inside");
    y += &example("tiers-and-sets.yaml");
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: production, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: staging, labels: {role: partner}}
spec: {nets: [192.0.3.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [192.0.4.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: internal, labels: {zone: internal}}
spec: {nets: [10.1.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: partners, namespace: other}
spec:
  selector: all()
  ingress:
  - action: Allow
    source: {selector: role == "partner"}
  - action: Allow
    protocol: UDP
    source: {selector: role == "partner", namespaceSelector: global()}
  - action: Allow
    protocol: SCTP
    source: {selector: zone == "internal", namespaceSelector: global()}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: partners, namespace: production}
spec:
  selector: app == "db"
  ingress:
  - action: Allow
    source: {selector: role == "partner"}
  - action: Allow
    protocol: UDP
    source: {selector: role == "partner", namespaceSelector: team == "staging"}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            // security.block-threats: the global set's labels, by address.
            (
                "198.51.100.5",
                "production/api",
                "tcp 80",
                Deny,
                "ingress security.block-threats#0",
            ),
            (
                "203.0.113.7",
                "production/api",
                "tcp 80",
                Deny,
                "ingress security.block-threats#0",
            ),
            (
                "production/api",
                "198.51.100.200",
                "tcp 443",
                Deny,
                "egress security.block-threats#0",
            ),
            // Passed by security; default-deny-with-dns applies in production.
            (
                "203.0.113.8",
                "production/api",
                "tcp 80",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/api",
                "kube-system/dns",
                "udp 53",
                Allow,
                "ingress profile kns.kube-system#0",
            ),
            (
                "production/api",
                "10.0.9.53",
                "udp 53",
                Allow,
                "ingress profile kns.kube-system#0",
            ),
            (
                "production/api",
                "kube-system/dns",
                "tcp 53",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/api",
                "kube-system/dns",
                "udp 54",
                Deny,
                "egress end of tier default",
            ),
            // other/partners applies to every pod in other.
            (
                "203.0.113.8",
                "other/sink",
                "icmp 8",
                Deny,
                "ingress end of tier default",
            ),
            (
                "198.51.100.5",
                "kube-system/dns",
                "udp 53",
                Deny,
                "ingress security.block-threats#0",
            ),
            (
                "203.0.113.8",
                "kube-system/dns",
                "udp 53",
                Allow,
                "ingress profile kns.kube-system#0",
            ),
            // A namespaced NetworkSet matches only rules of its namespace.
            (
                "192.0.2.9",
                "production/db",
                "tcp 5432",
                Allow,
                "ingress production/partners#0",
            ),
            (
                "192.0.3.9",
                "production/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            (
                "192.0.4.9",
                "production/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            // ... or of namespaces a namespaceSelector picks.
            (
                "192.0.3.9",
                "production/db",
                "udp 5432",
                Allow,
                "ingress production/partners#1",
            ),
            // global(): only non-namespaced sets.
            (
                "192.0.4.9",
                "other/sink",
                "udp 1",
                Allow,
                "ingress other/partners#1",
            ),
            (
                "192.0.2.9",
                "other/sink",
                "udp 1",
                Deny,
                "ingress end of tier default",
            ),
            // Calico's IP sets: a pod inside a set's range carries its labels too.
            (
                "other/inside",
                "other/sink",
                "sctp 1",
                Allow,
                "ingress other/partners#2",
            ),
            (
                "10.1.0.6",
                "other/sink",
                "sctp 1",
                Allow,
                "ingress other/partners#2",
            ),
            (
                "10.2.0.6",
                "other/sink",
                "sctp 1",
                Deny,
                "ingress end of tier default",
            ),
        ],
    );
}

#[test]
fn nets_and_not_nets() {
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: nets, namespace: production}
spec:
  selector: app == "frontend"
  types: [Ingress, Egress]
  egress:
  - action: Allow
    destination:
      nets: [10.0.0.0/8, "fd00::/64"]
      notNets: [10.1.0.0/16]
  ingress:
  - action: Allow
    source:
      notNets: [172.16.0.0/12]
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "10.2.3.4",
                "tcp 1",
                Allow,
                "egress production/nets#0",
            ),
            (
                "production/frontend",
                "10.1.2.3",
                "tcp 1",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/frontend",
                "11.0.0.1",
                "tcp 1",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 1",
                Allow,
                "ingress profile kns.production#0",
            ),
            (
                "8.8.8.8",
                "production/frontend",
                "tcp 1",
                Allow,
                "ingress production/nets#0",
            ),
            (
                "172.16.5.5",
                "production/frontend",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
        ],
    );
}

#[test]
fn named_ports_and_port_ranges() {
    let mut y = prod_base();
    y += &wep_with(
        "production",
        "web1",
        "10.0.1.30",
        "app: web",
        "  ports:\n  - {name: http, protocol: TCP, port: 8080}\n  - {name: dns, protocol: UDP, port: 53}\n",
    );
    y += &wep_with(
        "production",
        "web2",
        "10.0.1.31",
        "app: web",
        "  ports:\n  - {name: http, protocol: TCP, port: 9090}\n",
    );
    y += &wep_with(
        "production",
        "client",
        "10.0.1.32",
        "app: client",
        "  ports:\n  - {name: src, protocol: TCP, port: 5555}\n",
    );
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: production}
spec:
  selector: app == "web"
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [http]}
  - action: Allow
    protocol: UDP
    destination: {ports: [http, "7000:7100"]}
  - action: Allow
    protocol: TCP
    source: {ports: [src]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: production}
spec:
  selector: app == "api"
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: ["8000:8100", 443]}
  - action: Allow
    protocol: UDP
    destination: {notPorts: [22, "1000:2000"]}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            // http is 8080 on web1 and 9090 on web2.
            (
                "production/frontend",
                "production/web1",
                "tcp 8080",
                Allow,
                "ingress production/web#0",
            ),
            (
                "production/frontend",
                "production/web1",
                "tcp 9090",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/web2",
                "tcp 9090",
                Allow,
                "ingress production/web#0",
            ),
            (
                "production/frontend",
                "production/web2",
                "tcp 8080",
                Deny,
                "ingress end of tier default",
            ),
            // The named port carries its protocol: http is TCP.
            (
                "production/frontend",
                "production/web1",
                "udp 8080",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/web1",
                "udp 7050",
                Allow,
                "ingress production/web#1",
            ),
            // The source port is unknown in a plain trace.
            (
                "production/client",
                "production/web1",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 8000",
                Allow,
                "ingress production/api#0",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 8100",
                Allow,
                "ingress production/api#0",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 443",
                Allow,
                "ingress production/api#0",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 8101",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 7999",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "udp 23",
                Allow,
                "ingress production/api#1",
            ),
            (
                "production/frontend",
                "production/api",
                "udp 22",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "udp 1500",
                Deny,
                "ingress end of tier default",
            ),
            // No port given: rules with ports do not match.
            (
                "production/frontend",
                "production/api",
                "tcp",
                Deny,
                "ingress end of tier default",
            ),
        ],
    );
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
fn icmp_and_protocols() {
    let mut y = prod_base();
    y += &wep_with("production", "v6", "fd00::7", "app: v6", "");
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api, namespace: production}
spec:
  selector: app == "api"
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
  - action: Allow
    protocol: ICMP
    icmp: {type: 3, code: 4}
  - action: Deny
    protocol: ICMP
    notICMP: {type: 0}
  - action: Allow
    protocol: ICMP
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: production}
spec:
  selector: app == "db"
  ingress:
  - action: Allow
    notProtocol: UDP
  - action: Allow
    protocol: 47
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: v6, namespace: production}
spec:
  selector: app == "v6"
  ingress:
  - action: Allow
    ipVersion: 6
    protocol: ICMPv6
    icmp: {type: 128}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "production/api",
                "icmp 8",
                Allow,
                "ingress production/api#0",
            ),
            (
                "production/frontend",
                "production/api",
                "icmp 8/3",
                Allow,
                "ingress production/api#0",
            ),
            (
                "production/frontend",
                "production/api",
                "icmp 3/4",
                Allow,
                "ingress production/api#1",
            ),
            (
                "production/frontend",
                "production/api",
                "icmp 3/1",
                Deny,
                "ingress production/api#2",
            ),
            (
                "production/frontend",
                "production/api",
                "icmp 3",
                Deny,
                "ingress production/api#2",
            ),
            (
                "production/frontend",
                "production/api",
                "icmp 0",
                Allow,
                "ingress production/api#3",
            ),
            // ICMP without a type matches no type rule.
            (
                "production/frontend",
                "production/api",
                "icmp",
                Allow,
                "ingress production/api#3",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 8",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/db",
                "tcp 1",
                Allow,
                "ingress production/db#0",
            ),
            (
                "production/frontend",
                "production/db",
                "icmp 8",
                Allow,
                "ingress production/db#0",
            ),
            (
                "production/frontend",
                "production/db",
                "udp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/db",
                "47",
                Allow,
                "ingress production/db#0",
            ),
            (
                "fd00::1",
                "production/v6",
                "icmpv6 128",
                Allow,
                "ingress production/v6#0",
            ),
            (
                "fd00::1",
                "production/v6",
                "icmpv6 129",
                Deny,
                "ingress end of tier default",
            ),
        ],
    );
}

const K8S_EXTRA: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: web}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: data}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: locked}
spec:
  podSelector: {}
  ingress: []
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: either, namespace: web}
spec:
  podSelector: {matchLabels: {role: backend}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: frontend}}
    - podSelector: {matchLabels: {role: admin}}
    ports:
    - {port: http}
    - {protocol: UDP, port: 5000, endPort: 5010}
"#;

#[test]
fn kubernetes_network_policies() {
    let mut y = ns("web", "team: web");
    y += &ns("other", "team: other");
    y += &ns("data", "");
    y += &ns("locked", "");
    y += &wep("data", "db", "10.5.0.1", "role: db");
    y += &wep("data", "frontend", "10.5.0.2", "role: frontend");
    y += &wep("web", "frontend", "10.6.0.1", "role: frontend");
    y += &wep_with(
        "web",
        "backend",
        "10.6.0.2",
        "role: backend",
        "  ports:\n  - {name: http, protocol: TCP, port: 8080}\n",
    );
    y += &wep("web", "admin", "10.6.0.3", "role: admin");
    y += &wep("other", "frontend", "10.7.0.1", "role: frontend");
    y += &wep("locked", "box", "10.8.0.1", "app: box");
    y += &wep("locked", "box2", "10.8.0.2", "app: box");
    y += &example("k8s-networkpolicy.yaml");
    y += K8S_EXTRA;
    let s = state(&y);
    assert!(s.notes().is_empty(), "{:?}", s.notes());
    let db = "data/knp.default.db-ingress";
    check(
        &s,
        &[
            // Namespace and pod selector ANDed in one peer.
            (
                "web/frontend",
                "data/db",
                "tcp 5432",
                Allow,
                "ingress data/knp.default.db-ingress#0",
            ),
            (
                "web/admin",
                "data/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            (
                "other/frontend",
                "data/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            (
                "data/frontend",
                "data/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            (
                "web/frontend",
                "data/db",
                "tcp 5433",
                Deny,
                "ingress end of tier default",
            ),
            (
                "web/frontend",
                "data/db",
                "udp 5432",
                Deny,
                "ingress end of tier default",
            ),
            (
                "8.8.8.8",
                "data/db",
                "tcp 5432",
                Deny,
                "ingress end of tier default",
            ),
            // ipBlock with except, on egress.
            (
                "data/db",
                "10.2.0.1",
                "tcp 80",
                Allow,
                "egress data/knp.default.db-ingress#0",
            ),
            (
                "data/db",
                "10.1.0.1",
                "tcp 80",
                Deny,
                "egress end of tier default",
            ),
            (
                "data/db",
                "8.8.8.8",
                "tcp 80",
                Deny,
                "egress end of tier default",
            ),
            // Egress-only policy: ingress to web/frontend stays open.
            (
                "other/frontend",
                "web/frontend",
                "tcp 80",
                Allow,
                "ingress profile kns.web#0",
            ),
            (
                "web/frontend",
                "data/frontend",
                "udp 9",
                Allow,
                "ingress profile kns.data#0",
            ),
            (
                "web/frontend",
                "other/frontend",
                "udp 9",
                Deny,
                "egress end of tier default",
            ),
            // Empty ingress list: deny all ingress, egress open.
            (
                "locked/box2",
                "locked/box",
                "tcp 80",
                Deny,
                "ingress end of tier default",
            ),
            (
                "web/admin",
                "locked/box",
                "icmp 8",
                Deny,
                "ingress end of tier default",
            ),
            (
                "locked/box",
                "web/admin",
                "tcp 80",
                Allow,
                "ingress profile kns.web#0",
            ),
            // Peers ORed, named port, port range.
            (
                "web/frontend",
                "web/backend",
                "tcp 8080",
                Deny,
                "egress end of tier default",
            ),
            (
                "web/admin",
                "web/backend",
                "tcp 8080",
                Allow,
                "ingress web/knp.default.either#2",
            ),
            (
                "web/admin",
                "web/backend",
                "tcp 8081",
                Deny,
                "ingress end of tier default",
            ),
            (
                "web/admin",
                "web/backend",
                "udp 5010",
                Allow,
                "ingress web/knp.default.either#3",
            ),
            (
                "web/admin",
                "web/backend",
                "udp 5011",
                Deny,
                "ingress end of tier default",
            ),
        ],
    );
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
fn frontend_to_api_example() {
    let mut y = ns("production", "");
    y += &wep("production", "frontend", "10.0.1.1", "app: frontend");
    y += &wep("production", "api", "10.0.1.2", "app: api");
    y += &wep("production", "other", "10.0.1.3", "app: other");
    y += &example("frontend-to-api.yaml");
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/frontend",
                "production/api",
                "tcp 8080",
                Allow,
                "ingress production/frontend-to-api#0",
            ),
            (
                "production/other",
                "production/api",
                "tcp 8080",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/api",
                "tcp 9090",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/api",
                "1.1.1.1",
                "tcp 443",
                Allow,
                "egress production/frontend-to-api#0",
            ),
            (
                "production/api",
                "1.1.1.1",
                "tcp 80",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/api",
                "production/frontend",
                "tcp 80",
                Deny,
                "egress end of tier default",
            ),
            // The host endpoint's address is external here (not enforced).
            (
                "10.0.0.10",
                "production/frontend",
                "tcp 80",
                Allow,
                "ingress profile kns.production#0",
            ),
        ],
    );
}

#[test]
fn service_accounts_and_services() {
    let mut y = prod_base();
    y += &wep_with(
        "production",
        "sa-pod",
        "10.0.1.40",
        "",
        "  serviceAccountName: builder\n",
    );
    y += &wep_with(
        "production",
        "sa-api",
        "10.0.1.41",
        "",
        "  serviceAccountName: api-sa\n",
    );
    y += r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: by-sa, namespace: production}
spec:
  selector: app == "db"
  ingress:
  - action: Allow
    source: {serviceAccounts: {names: [builder]}}
  - action: Allow
    protocol: UDP
    source: {serviceAccounts: {selector: projectcalico.org/name == "api-sa"}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: sa-selected, namespace: production}
spec:
  selector: all()
  serviceAccountSelector: projectcalico.org/name == "api-sa"
  ingress:
  - action: Allow
    protocol: UDP
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: to-svc, namespace: production}
spec:
  selector: app == "other"
  types: [Egress]
  egress:
  - action: Allow
    destination: {services: {name: api}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-x1
  namespace: production
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
endpoints:
- addresses: ["10.0.1.2"]
ports:
- {name: http, protocol: TCP, port: 8080}
"#;
    let s = state(&y);
    check(
        &s,
        &[
            (
                "production/sa-pod",
                "production/db",
                "tcp 1",
                Allow,
                "ingress production/by-sa#0",
            ),
            (
                "production/frontend",
                "production/db",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/sa-api",
                "production/db",
                "udp 1",
                Allow,
                "ingress production/by-sa#1",
            ),
            (
                "production/frontend",
                "production/db",
                "udp 1",
                Deny,
                "ingress end of tier default",
            ),
            // serviceAccountSelector picks the endpoints a policy applies to.
            (
                "production/frontend",
                "production/sa-api",
                "tcp 1",
                Deny,
                "ingress end of tier default",
            ),
            (
                "production/frontend",
                "production/sa-api",
                "udp 1",
                Allow,
                "ingress production/sa-selected#0",
            ),
            (
                "production/frontend",
                "production/sa-pod",
                "tcp 1",
                Allow,
                "ingress profile kns.production#0",
            ),
            // services: the EndpointSlice's addresses and ports.
            (
                "production/other",
                "production/api",
                "tcp 8080",
                Allow,
                "ingress profile kns.production#0",
            ),
            (
                "production/other",
                "production/api",
                "tcp 8081",
                Deny,
                "egress end of tier default",
            ),
            (
                "production/other",
                "production/db",
                "tcp 8080",
                Deny,
                "egress end of tier default",
            ),
        ],
    );
}

#[test]
fn peers_addresses_and_errors() {
    let mut y = prod_base();
    y += &ns("dual", "");
    y += &wep_with(
        "dual",
        "d-eth0",
        "10.0.5.1",
        "",
        "  ipNetworks: [10.0.5.1/32, \"fd00::5/128\"]\n",
    );
    y += &wep("dual", "v6only", "fd00::6", "");
    y += &wep_with("dual", "p-eth0", "10.0.5.3", "", "  pod: p\n");
    y += &wep_with("dual", "p-eth1", "10.0.5.4", "", "  pod: p\n");
    let s = state(&y);
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
    let mut y = prod_base();
    y += r#"---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pre-dnat}
spec:
  preDNAT: true
  applyOnForward: true
  selector: all()
  ingress: [{action: Deny}]
"#;
    let s = state(&y);
    assert_eq!(s.notes().len(), 1, "{:?}", s.notes());
    check(
        &s,
        &[(
            "8.8.8.8",
            "production/api",
            "tcp 1",
            Allow,
            "ingress profile kns.production#0",
        )],
    );
}
