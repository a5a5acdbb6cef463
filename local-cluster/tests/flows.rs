//! Flows end to end on the eBPF dataplane with real traffic: allowed and
//! denied connections reach `manulctl flows` through Felix and the flow
//! aggregator with the policy trace that decided them; records made while
//! the aggregator is down arrive once it is back, each once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{FRONTEND_TO_API, pod};
use manul_local_cluster::procs::program;
use manul_local_cluster::{ClusterConfig, Dataplane, FlowsConfig, LocalCluster};
use manul_netns::ProbeOutcome;
use serde_json::Value;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `manulctl flows -o json` with `args`, from the control plane.
fn flows(c: &LocalCluster, args: &[&str]) -> Vec<Value> {
    let out = Command::new(program("manulctl").unwrap())
        .args(["--netns", c.control_plane_netns()])
        .args(c.manulctl_tls_flags().split_whitespace())
        .args(["flows", "--aggregator"])
        .arg(c.flows_url().unwrap())
        .args(["-o", "json", "--last", "10000"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "manulctl flows failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `manulctl flows` until `want` holds for the records.
fn wait_for(
    c: &LocalCluster,
    args: &[&str],
    within: Duration,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let records = flows(c, args);
        if want(&records) {
            return records;
        }
        assert!(
            start.elapsed() < within,
            "no such records within {within:?}; got:\n{}",
            records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (kind, namespace, name, rule index, action).
type Hit = (String, String, String, Value, String);

fn trace(r: &Value) -> Vec<Hit> {
    r["policies"]["enforced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["namespace"].as_str().unwrap().to_owned(),
                h["name"].as_str().unwrap().to_owned(),
                h["rule_index"].clone(),
                h["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn is(r: &Value, src: &str, dst: &str, action: &str) -> bool {
    r["reporter"] == "dst"
        && r["source"]["workload"] == src
        && r["destination"]["workload"] == dst
        && r["action"] == action
        && r["dest_port"] == 8080
}

fn traffic(c: &LocalCluster, from: &str, n: usize) {
    for _ in 0..n {
        c.tcp_probe(from, "production/api", 8080, Duration::from_millis(200))
            .unwrap();
    }
}

#[test]
fn flows_reach_manulctl_with_their_policy_trace_and_survive_an_aggregator_restart() {
    if !manul_netns::testing::have_root("this test") {
        return;
    }
    let name = manul_netns::unique_prefix("lf");
    let mut c = LocalCluster::up_with_flows(
        ClusterConfig {
            name,
            nodes: 2,
            typha_replicas: 1,
            dataplane: Dataplane::Bpf,
            policy_setup_timeout: Duration::from_secs(5),
            ..ClusterConfig::default()
        },
        Some(FlowsConfig { interval_s: 1 }),
    )
    .expect("cluster up");
    c.add_pod(pod("frontend", 0)).unwrap();
    c.add_pod(pod("api", 1)).unwrap();
    c.add_pod(pod("other", 0)).unwrap();
    c.apply_yaml(FRONTEND_TO_API).unwrap();
    // Until the policy holds on api's node.
    let start = Instant::now();
    while c
        .tcp_probe(
            "production/other",
            "production/api",
            8080,
            Duration::from_millis(200),
        )
        .unwrap()
        == ProbeOutcome::Connected
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the policy did not take effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    traffic(&c, "production/frontend", 5);
    traffic(&c, "production/other", 3);

    let filter = [
        "--namespace",
        "production",
        "--to-pod",
        "api",
        "--since",
        "10m",
    ];
    let records = wait_for(&c, &filter, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| is(r, "frontend", "api", "allow"))
            && rs.iter().any(|r| is(r, "other", "api", "deny"))
    });
    let allowed = records
        .iter()
        .find(|r| is(r, "frontend", "api", "allow"))
        .unwrap();
    assert_eq!(allowed["node"], "node2", "{allowed}");
    assert_eq!(allowed["source"]["namespace"], "production");
    assert_eq!(allowed["source"]["labels"]["app"], "frontend");
    assert_eq!(
        trace(allowed),
        vec![(
            "NetworkPolicy".into(),
            "production".into(),
            "frontend-to-api".into(),
            Value::from(0),
            "allow".into()
        )],
        "{allowed}"
    );
    assert_eq!(allowed["policies"]["pending"], Value::Array(Vec::new()));
    let denied = records
        .iter()
        .find(|r| is(r, "other", "api", "deny"))
        .unwrap();
    assert_eq!(
        trace(denied),
        vec![(
            "EndOfTier".into(),
            String::new(),
            "default".into(),
            Value::Null,
            "deny".into()
        )],
        "{denied}"
    );
    // The filters narrow: only denials, only the policy's.
    let only_denied = flows(&c, &[&filter[..], &["--verdict", "denied"]].concat());
    assert!(!only_denied.is_empty());
    assert!(only_denied.iter().all(|r| r["action"] == "deny"));
    let by_policy = flows(
        &c,
        &["--policy", "production/frontend-to-api", "--since", "10m"],
    );
    assert!(!by_policy.is_empty());
    assert!(by_policy.iter().all(|r| r["action"] == "allow"));

    // The aggregator goes away; Felix keeps what it cannot send.
    c.stop_flows();
    let down_at = now();
    std::thread::sleep(Duration::from_millis(1500));
    traffic(&c, "production/other", 3);
    std::thread::sleep(Duration::from_secs(3));
    let restarted_at = now();
    c.start_flows().unwrap();
    // Denials whose interval closed while it was down come back.
    let records = wait_for(&c, &filter, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| {
            is(r, "other", "api", "deny")
                && r["end_time"].as_u64().unwrap() > down_at
                && r["end_time"].as_u64().unwrap() <= restarted_at
        })
    });
    // Each record once.
    let mut seen = HashSet::new();
    for r in &records {
        let key = (
            r["node"].to_string(),
            r["reporter"].to_string(),
            r["source"].to_string(),
            r["destination"].to_string(),
            r["dest_port"].to_string(),
            r["action"].to_string(),
            r["policies"].to_string(),
            r["start_time"].to_string(),
            r["end_time"].to_string(),
        );
        assert!(seen.insert(key), "a duplicate record: {r}");
    }
}

/// A staged policy that would deny frontend's connections to api.
const STAGED_LOCKDOWN: &str = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: api-lockdown, namespace: production}
spec:
  order: 10
  selector: app == 'api'
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == 'frontend'}
";

fn hits(r: &Value, which: &str) -> Vec<Hit> {
    r["policies"][which]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["namespace"].as_str().unwrap().to_owned(),
                h["name"].as_str().unwrap().to_owned(),
                h["rule_index"].clone(),
                h["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_staged_deny_shows_as_pending_until_promoted_then_the_flows_are_denied() {
    if !manul_netns::testing::have_root("this test") {
        return;
    }
    let name = manul_netns::unique_prefix("lp");
    let mut c = LocalCluster::up_with_flows(
        ClusterConfig {
            name,
            nodes: 2,
            typha_replicas: 1,
            dataplane: Dataplane::Bpf,
            policy_setup_timeout: Duration::from_secs(5),
            ..ClusterConfig::default()
        },
        Some(FlowsConfig { interval_s: 1 }),
    )
    .expect("cluster up");
    c.add_pod(pod("frontend", 0)).unwrap();
    c.add_pod(pod("api", 1)).unwrap();
    c.apply_yaml(FRONTEND_TO_API).unwrap();
    c.apply_yaml(STAGED_LOCKDOWN).unwrap();
    let filter = [
        "--from-pod",
        "production/frontend",
        "--to-pod",
        "api",
        "--since",
        "10m",
    ];
    // The staged deny is not enforced: frontend still connects, and its
    // records show enforced allow beside pending deny (once api's Felix
    // has the staged policy). A connection made before frontend-to-api
    // reached api's node was allowed by the namespace profile, and its
    // record says so: wait for one the policy allowed.
    let by_policy = |r: &Value| {
        is(r, "frontend", "api", "allow")
            && hits(r, "enforced")
                .first()
                .is_some_and(|h| h.2 == "frontend-to-api")
    };
    let records = {
        let start = Instant::now();
        loop {
            assert_eq!(
                c.tcp_probe(
                    "production/frontend",
                    "production/api",
                    8080,
                    Duration::from_millis(500)
                )
                .unwrap(),
                ProbeOutcome::Connected,
                "a staged policy must not be enforced"
            );
            let rs = flows(
                &c,
                &[&filter[..], &["--pending-verdict", "denied"]].concat(),
            );
            if rs.iter().any(by_policy) {
                break rs;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no record allowed by frontend-to-api with a pending deny: {:?}",
                flows(&c, &filter)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let r = records.iter().find(|r| by_policy(r)).unwrap();
    assert_eq!(r["pending_action"], "deny", "{r}");
    assert_eq!(
        hits(r, "enforced"),
        vec![(
            "NetworkPolicy".into(),
            "production".into(),
            "frontend-to-api".into(),
            Value::from(0),
            "allow".into()
        )],
        "{r}"
    );
    assert_eq!(
        hits(r, "pending"),
        vec![(
            "StagedNetworkPolicy".into(),
            "production".into(),
            "api-lockdown".into(),
            Value::from(0),
            "deny".into()
        )],
        "{r}"
    );
    // The aggregator filters on the pending trace.
    let by_pending = flows(
        &c,
        &[
            "--pending-policy",
            "production/api-lockdown",
            "--since",
            "10m",
        ],
    );
    assert!(!by_pending.is_empty());
    assert!(by_pending.iter().all(|r| r["pending_action"] == "deny"));
    // The table shows it too.
    let table = Command::new(program("manulctl").unwrap())
        .args(["--netns", c.control_plane_netns()])
        .args(c.manulctl_tls_flags().split_whitespace())
        .args(["flows", "--aggregator"])
        .arg(c.flows_url().unwrap())
        .args(filter)
        .args(["--pending-verdict", "denied"])
        .output()
        .unwrap();
    assert!(
        table.status.success(),
        "manulctl flows failed: {}",
        String::from_utf8_lossy(&table.stderr)
    );
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("production/frontend"))
        .unwrap_or_else(|| panic!("no row in:\n{table}"));
    for part in [
        "ALLOW",
        "frontend-to-api#0:allow",
        "DENY",
        "production/api-lockdown#0:deny",
    ] {
        assert!(row.contains(part), "{part} in {row}");
    }

    // Promoted: enforced, and the flows are denied by it.
    let out = Command::new(program("manulctl").unwrap())
        .args(["--netns", c.control_plane_netns(), "--server"])
        .arg(c.typha_addresses().join(","))
        .args(c.manulctl_tls_flags().split_whitespace())
        .args([
            "policy",
            "promote",
            "stagednetworkpolicy/production/api-lockdown",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promoted_at = now();
    let start = Instant::now();
    while c
        .tcp_probe(
            "production/frontend",
            "production/api",
            8080,
            Duration::from_millis(200),
        )
        .unwrap()
        == ProbeOutcome::Connected
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the promoted policy did not take effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    traffic(&c, "production/frontend", 2);
    let records = wait_for(&c, &filter, Duration::from_secs(30), |rs| {
        rs.iter().any(|r| {
            is(r, "frontend", "api", "deny") && r["end_time"].as_u64().unwrap() >= promoted_at
        })
    });
    let denied = records
        .iter()
        .rev()
        .find(|r| is(r, "frontend", "api", "deny"))
        .unwrap();
    assert_eq!(
        hits(denied, "enforced"),
        vec![(
            "NetworkPolicy".into(),
            "production".into(),
            "api-lockdown".into(),
            Value::from(0),
            "deny".into()
        )],
        "{denied}"
    );
    // Nothing is staged any more: no pending trace.
    assert_eq!(denied["policies"]["pending"], Value::Array(Vec::new()));
    assert_eq!(denied["pending_action"], Value::Null);
}
