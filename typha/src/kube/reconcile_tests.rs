#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Node, Pod};
use manul_model::{Kind, ResourceKey};

use super::*;
use crate::kube::sources::{Nodes, Pods, ServiceAccounts};

fn at(ns: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.map(str::to_string),
        name: name.to_string(),
    }
}

/// A running pod in `shop` on `worker-1` with `ip` (or none), in `phase`.
fn pod(name: &str, ip: Option<&str>, phase: &str) -> Watched<Pod> {
    let status = match ip {
        Some(ip) => format!(r#"{{"phase": "{phase}", "podIP": "{ip}"}}"#),
        None => format!(r#"{{"phase": "{phase}"}}"#),
    };
    let json = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "namespace": "shop", "labels": {{"app": "web"}}}},
            "spec": {{"nodeName": "worker-1", "containers": [{{"name": "c", "image": "i"}}]}},
            "status": {status}}}"#
    );
    Watched::ok(at(Some("shop"), name), serde_json::from_str(&json).unwrap())
}

fn running(name: &str, ip: &str) -> Watched<Pod> {
    pod(name, Some(ip), "Running")
}

fn malformed(name: &str) -> Watched<Pod> {
    Watched {
        at: at(Some("shop"), name),
        body: Err("spec.containers: invalid type: string, expected a sequence".into()),
    }
}

fn node(name: &str, ip: &str) -> Watched<Node> {
    let json = format!(
        r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}"}},
            "status": {{"addresses": [{{"type": "InternalIP", "address": "{ip}"}}]}}}}"#
    );
    Watched::ok(at(None, name), serde_json::from_str(&json).unwrap())
}

/// The store's content after the pods were written by an earlier leader.
fn stored_pods(pods: &[Watched<Pod>]) -> Vec<(ResourceKey, Vec<u8>)> {
    let mut r = Reconciler::new(Pods, []);
    for p in pods {
        r.handle(WatchEvent::Apply(p.clone()));
    }
    r.stored().clone().into_iter().collect()
}

/// One line per event: the batch (`put KEY`, `del KEY`) or `-`, and
/// `skip NAME` for each skipped object.
fn run<S: Source>(r: &mut Reconciler<S>, events: Vec<WatchEvent<S::Object>>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| {
            let step = r.handle(e);
            let mut parts: Vec<String> = Vec::new();
            if let Some(b) = &step.batch {
                for (k, v) in &b.puts {
                    // Every value is a resource the store accepts.
                    let decoded = manul_model::stored::decode(v).unwrap();
                    assert_eq!(&decoded.key(), k);
                    parts.push(format!("put {k}"));
                }
                parts.extend(b.deletes.iter().map(|k| format!("del {k}")));
            }
            parts.extend(step.skipped.iter().map(|s| format!("skip {}", s.at)));
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        })
        .collect()
}

struct Case {
    name: &'static str,
    store: Vec<(ResourceKey, Vec<u8>)>,
    events: Vec<WatchEvent<Pod>>,
    expect: &'static [&'static str],
}

#[test]
fn pod_event_sequences_give_the_recorded_batches() {
    use WatchEvent::*;
    let cases = vec![
        Case {
            name: "initial list into an empty store: one batch at the end",
            store: vec![],
            events: vec![
                Init,
                InitApply(running("a", "10.0.0.1")),
                InitApply(running("b", "10.0.0.2")),
                InitDone,
            ],
            expect: &[
                "-",
                "-",
                "-",
                "put workloadendpoint/shop/a, put workloadendpoint/shop/b, put clusterinformation/default",
            ],
        },
        Case {
            name: "a new leader's list: unchanged keys are not rewritten, vanished ones deleted with the puts",
            store: stored_pods(&[running("a", "10.0.0.1"), running("gone", "10.0.0.9")]),
            events: vec![
                Init,
                InitApply(running("a", "10.0.0.1")),
                InitApply(running("b", "10.0.0.2")),
                InitDone,
            ],
            expect: &[
                "-",
                "-",
                "-",
                "put workloadendpoint/shop/b, put clusterinformation/default, del workloadendpoint/shop/gone",
            ],
        },
        Case {
            name: "add, modify, no-op, delete, delete again",
            store: vec![],
            events: vec![
                Apply(running("a", "10.0.0.1")),
                Apply(running("a", "10.0.0.7")),
                Apply(running("a", "10.0.0.7")),
                Delete(running("a", "10.0.0.7")),
                Delete(running("a", "10.0.0.7")),
            ],
            expect: &[
                "put workloadendpoint/shop/a",
                "put workloadendpoint/shop/a",
                "-",
                "del workloadendpoint/shop/a",
                "-",
            ],
        },
        Case {
            name: "a pod gets its endpoint once it has an address and loses it when it finishes",
            store: vec![],
            events: vec![
                Apply(pod("job", None, "Pending")),
                Apply(pod("job", Some("10.0.0.3"), "Running")),
                Apply(pod("job", Some("10.0.0.3"), "Succeeded")),
                Delete(pod("job", Some("10.0.0.3"), "Succeeded")),
            ],
            expect: &[
                "-",
                "put workloadendpoint/shop/job",
                "del workloadendpoint/shop/job",
                "-",
            ],
        },
        Case {
            name: "relist after 410: changes and deletions land in one batch, nothing before it",
            store: stored_pods(&[running("a", "10.0.0.1"), running("b", "10.0.0.2")]),
            events: vec![
                Init,
                InitApply(running("a", "10.0.0.1")),
                InitApply(running("b", "10.0.0.2")),
                InitDone,
                Init,
                InitApply(running("a", "10.0.0.5")),
                InitApply(running("c", "10.0.0.6")),
                InitDone,
            ],
            expect: &[
                "-",
                "-",
                "-",
                "put clusterinformation/default",
                "-",
                "-",
                "-",
                "put workloadendpoint/shop/a, put workloadendpoint/shop/c, del workloadendpoint/shop/b",
            ],
        },
        Case {
            name: "a malformed object is skipped and counted; its last good endpoint stays",
            store: vec![],
            events: vec![
                Apply(running("a", "10.0.0.1")),
                Apply(running("a", "10.0.0.300")),
                Apply(malformed("a")),
                Init,
                InitApply(malformed("a")),
                InitApply(running("b", "10.0.0.2")),
                InitDone,
                Apply(malformed("new")),
            ],
            expect: &[
                "put workloadendpoint/shop/a",
                "skip shop/a",
                "skip shop/a",
                "-",
                "skip shop/a",
                "-",
                "put workloadendpoint/shop/b, put clusterinformation/default",
                "skip shop/new",
            ],
        },
        Case {
            name: "a malformed object's delete still removes its endpoint",
            store: stored_pods(&[running("a", "10.0.0.1")]),
            events: vec![Delete(malformed("a"))],
            expect: &["del workloadendpoint/shop/a"],
        },
    ];
    for case in cases {
        let mut r = Reconciler::new(Pods, case.store);
        let got = run(&mut r, case.events);
        assert_eq!(got, case.expect, "{}", case.name);
    }
}

#[test]
fn counts_follow_the_objects_relists_and_errors() {
    use WatchEvent::*;
    let mut r = Reconciler::new(Pods, []);
    run(
        &mut r,
        vec![
            Init,
            InitApply(running("a", "10.0.0.1")),
            InitApply(pod("pending", None, "Pending")),
            InitDone,
            Apply(malformed("x")),
            Init,
            InitApply(running("a", "10.0.0.1")),
            InitDone,
        ],
    );
    assert_eq!(
        r.counts(),
        Counts {
            objects: 1,
            relists: 1,
            conversion_errors: 1
        }
    );
}

#[test]
fn keys_the_watcher_does_not_own_are_never_touched() {
    use WatchEvent::*;
    let foreign = vec![
        (
            ResourceKey {
                kind: Kind::Profile,
                namespace: None,
                name: "kns.shop".into(),
            },
            b"{}".to_vec(),
        ),
        (
            ResourceKey {
                kind: Kind::Profile,
                namespace: None,
                name: "ksa.shop.gone".into(),
            },
            b"{}".to_vec(),
        ),
    ];
    let mut r = Reconciler::new(ServiceAccounts, foreign);
    let sa = serde_json::from_str(
        r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "shop"}}"#,
    )
    .unwrap();
    let got = run(
        &mut r,
        vec![
            Init,
            InitApply(Watched::ok(at(Some("shop"), "api"), sa)),
            InitDone,
        ],
    );
    assert_eq!(
        got,
        [
            "-",
            "-",
            "put profile/ksa.shop.api, del profile/ksa.shop.gone"
        ]
    );
}

#[test]
fn automatic_host_endpoints_follow_the_setting() {
    use WatchEvent::*;
    let mut on = Reconciler::new(
        Nodes {
            auto_host_endpoints: true,
        },
        [],
    );
    let got = run(
        &mut on,
        vec![Init, InitApply(node("worker-1", "192.0.2.1")), InitDone],
    );
    assert_eq!(
        got,
        [
            "-",
            "-",
            "put hostendpoint/worker-1-auto-hep, put profile/projectcalico-default-allow, put node/worker-1"
        ]
    );
    // Deleting a node leaves the profile the other nodes' endpoints use.
    let got = run(&mut on, vec![Delete(node("worker-1", "192.0.2.1"))]);
    assert_eq!(
        got,
        ["del hostendpoint/worker-1-auto-hep, del node/worker-1"]
    );
    let got = run(&mut on, vec![Apply(node("worker-1", "192.0.2.1"))]);
    assert_eq!(
        got,
        ["put hostendpoint/worker-1-auto-hep, put node/worker-1"]
    );
    // Turned off: the next leader's list deletes the automatic endpoints.
    let mut off = Reconciler::new(Nodes::default(), on.stored().clone());
    let got = run(
        &mut off,
        vec![Init, InitApply(node("worker-1", "192.0.2.1")), InitDone],
    );
    assert_eq!(
        got,
        [
            "-",
            "-",
            "del hostendpoint/worker-1-auto-hep, del profile/projectcalico-default-allow"
        ]
    );
}
