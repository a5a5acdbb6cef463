//! The pod watcher against `kube`'s mock service answering with the API
//! server's JSON, proposing into a real single-voter replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::Api;
use kube::client::Body;
use manul_proto::v1::Entry;
use tower_test::mock;

use super::*;
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use crate::node::{NodeConfig, RaftMetrics};

struct Empty;

impl SnapshotSource for Empty {
    fn snapshot(&self) -> (u64, Vec<Entry>) {
        (0, Vec::new())
    }
}

async fn leader(dir: &Path) -> Node {
    let peers = BTreeMap::from([(1, "127.0.0.1:20001".to_string())]);
    let config = NodeConfig::new(1, dir.to_path_buf(), peers);
    let fanout = Fanout::new(
        FanoutConfig::default(),
        Arc::new(Empty),
        FanoutMetrics::default(),
    );
    let node = Node::start(config, fanout, RaftMetrics::default()).unwrap();
    for _ in 0..200 {
        if is_leader(&node) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sole voter did not lead");
}

/// A pod as the API server lists it (list items carry no apiVersion/kind).
fn pod(name: &str, ip: &str, rv: u32) -> String {
    format!(
        r#"{{"metadata": {{"name": "{name}", "namespace": "shop", "uid": "uid-{name}", "resourceVersion": "{rv}", "labels": {{"app": "web"}}}},
            "spec": {{"nodeName": "worker-1", "serviceAccountName": "default", "containers": [{{"name": "c", "image": "i", "ports": [{{"name": "http", "containerPort": 8080}}]}}]}},
            "status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}]}}}}"#
    )
}

fn list(items: &[String], rv: &str, cont: Option<&str>) -> Vec<u8> {
    let cont = cont.map_or(String::new(), |c| format!(r#", "continue": "{c}""#));
    format!(
        r#"{{"kind": "PodList", "apiVersion": "v1", "metadata": {{"resourceVersion": "{rv}"{cont}}}, "items": [{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn event(kind: &str, object: &str) -> String {
    // A watch stream is one JSON object per line.
    let object: serde_json::Value = serde_json::from_str(object).unwrap();
    serde_json::json!({"type": kind, "object": object}).to_string()
}

fn typed(pod: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(pod).unwrap();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Pod".into();
    v.to_string()
}

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// The next request, which must be to `/api/v1/pods` with every `query`
/// part; answered with `body` unless it is `None` (then left hanging).
async fn expect(
    handle: &mut Handle,
    query: &[&str],
    body: Option<Vec<u8>>,
) -> Option<mock::SendResponse<Response<Body>>> {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the watcher sent a request in time")
        .expect("a request");
    assert_eq!(req.uri().path(), "/api/v1/pods");
    let q = req.uri().query().unwrap_or_default().to_string();
    for part in query {
        assert!(q.split('&').any(|p| p == *part), "{part} not in {q}");
    }
    match body {
        Some(b) => {
            send.send_response(Response::builder().body(Body::from(b)).unwrap());
            None
        }
        None => Some(send),
    }
}

/// The endpoints in the store: name → (first address, revision).
fn endpoints(node: &Node) -> BTreeMap<String, (String, u64)> {
    let state = node.shared().state.read().unwrap();
    state
        .list("workloadendpoint", "")
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            let ip = v["spec"]["ipNetworks"][0].as_str().unwrap().to_string();
            (e.key.unwrap().name, (ip, e.revision))
        })
        .collect()
}

async fn settle<F: Fn(&BTreeMap<String, (String, u64)>) -> bool>(node: &Node, done: F) {
    for _ in 0..200 {
        if done(&endpoints(node)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("store did not settle: {:?}", endpoints(node));
}

fn names(m: &BTreeMap<String, (String, u64)>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn pods_list_watch_expire_and_relist_into_raft() {
    let dir = tempfile::tempdir().unwrap();
    let node = leader(dir.path()).await;
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics = KubeMetrics::default();
    let task = tokio::spawn(watch_kind(
        Api::<Lenient<Pod>>::all(client),
        Pods,
        node.clone(),
        metrics.clone(),
    ));
    let malformed = r#"{"metadata": {"name": "broken", "namespace": "shop", "resourceVersion": "90"}, "spec": {"nodeName": "worker-1", "containers": "not-a-list"}}"#;

    // The initial list, in two chunks joined by `continue`.
    expect(
        &mut handle,
        &[],
        Some(list(
            &[pod("a", "10.0.0.1", 91), malformed.to_string()],
            "",
            Some("chunk-2"),
        )),
    )
    .await;
    expect(
        &mut handle,
        &["continue=chunk-2"],
        Some(list(&[pod("b", "10.0.0.2", 92)], "100", None)),
    )
    .await;
    // The watch from the list's version: add, modify, delete, a bookmark,
    // then the version expires.
    let watch = [
        event("ADDED", &typed(&pod("c", "10.0.0.3", 101))),
        event("MODIFIED", &typed(&pod("a", "10.0.0.5", 102))),
        event("DELETED", &typed(&pod("b", "10.0.0.2", 103))),
        r#"{"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "150"}}}"#.to_string(),
        r#"{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 100 (160)", "reason": "Expired", "code": 410}}"#.to_string(),
    ]
    .join("\n");
    expect(
        &mut handle,
        &["watch=true", "resourceVersion=100"],
        Some(watch.into_bytes()),
    )
    .await;

    // The relist request comes once every event before the error is in
    // the store.
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !req.uri().query().unwrap_or_default().contains("watch=true"),
        "{:?}",
        req.uri()
    );
    let before = endpoints(&node);
    assert_eq!(
        names(&before),
        ["a", "c"],
        "b deleted, the malformed pod skipped"
    );
    assert_eq!(before["a"].0, "10.0.0.5/32");
    let revision = node.shared().state.read().unwrap().revision();

    // The relist: a unchanged, c gone, d new.
    send.send_response(
        Response::builder()
            .body(Body::from(list(
                &[pod("a", "10.0.0.5", 102), pod("d", "10.0.0.4", 170)],
                "200",
                None,
            )))
            .unwrap(),
    );
    let _hanging = expect(&mut handle, &["watch=true", "resourceVersion=200"], None).await;
    settle(&node, |m| names(m) == ["a", "d"]).await;
    let after = endpoints(&node);
    assert_eq!(
        after["a"], before["a"],
        "an unchanged endpoint is not rewritten"
    );
    assert_eq!(
        after["d"].1,
        revision + 1,
        "the relist's put and delete are one Raft entry"
    );
    assert_eq!(node.shared().state.read().unwrap().revision(), revision + 1);

    let kind = KubeMetrics::kind("pod");
    assert_eq!(metrics.objects.get_or_create(&kind).get(), 2);
    assert_eq!(metrics.relists.get_or_create(&kind).get(), 1);
    assert_eq!(metrics.conversion_errors.get_or_create(&kind).get(), 1);
    assert_eq!(metrics.watch_restarts.get_or_create(&kind).get(), 1);
    task.abort();
    node.stop();
}

/// The next request, which must be to `path` with every `query` part;
/// answered with `body` unless it is `None` (then left hanging).
async fn expect_at(
    handle: &mut Handle,
    path: &str,
    query: &[&str],
    body: Option<Vec<u8>>,
) -> Option<mock::SendResponse<Response<Body>>> {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the watcher sent a request in time")
        .expect("a request");
    assert_eq!(req.uri().path(), path);
    let q = req.uri().query().unwrap_or_default().to_string();
    for part in query {
        assert!(q.split('&').any(|p| p == *part), "{part} not in {q}");
    }
    match body {
        Some(b) => {
            send.send_response(Response::builder().body(Body::from(b)).unwrap());
            None
        }
        None => Some(send),
    }
}

fn gnp(name: &str, order: u32, rv: u32) -> String {
    format!(
        r#"{{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {{"name": "{name}", "uid": "uid-{name}", "resourceVersion": "{rv}", "generation": 1}},
            "spec": {{"order": {order}, "selector": "app == 'db'", "ingress": [{{"action": "Allow"}}]}}}}"#
    )
}

fn gnp_list(items: &[String], rv: &str) -> Vec<u8> {
    format!(
        r#"{{"kind": "GlobalNetworkPolicyList", "apiVersion": "projectcalico.org/v3", "metadata": {{"resourceVersion": "{rv}"}}, "items": [{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

/// The policies in the store: name → (order, revision).
fn policies(node: &Node) -> BTreeMap<String, (f64, u64)> {
    let state = node.shared().state.read().unwrap();
    state
        .list("globalnetworkpolicy", "")
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            let order = v["spec"]["order"].as_f64().unwrap();
            (e.key.unwrap().name, (order, e.revision))
        })
        .collect()
}

#[tokio::test]
async fn global_network_policy_crd_list_watch_and_relist_into_raft() {
    use super::calico::{CalicoObject, CalicoSource, GlobalNetworkPolicies};
    const PATH: &str = "/apis/projectcalico.org/v3/globalnetworkpolicies";
    let dir = tempfile::tempdir().unwrap();
    let node = leader(dir.path()).await;
    // A policy an earlier leader stored that the API server no longer has.
    let stale = Command {
        request_id: 0,
        op: Some(manul_proto::v1::command::Op::Writes(manul_proto::v1::WriteBatch {
            writes: vec![manul_proto::v1::Write {
                key: Some(
                    Key {
                        kind: "globalnetworkpolicy".into(),
                        namespace: String::new(),
                        name: "stale".into(),
                    }
                    .to_proto(),
                ),
                value: serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(
                    r#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "stale"}, "spec": {"order": 1, "tier": "default", "selector": "all()"}}"#,
                ).unwrap())
                .unwrap()
                .into(),
                expected_revision: None,
            }],
            deletes: Vec::new(),
        })),
        ..Default::default()
    };
    node.propose(stale).await.unwrap().result.unwrap();
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let metrics = KubeMetrics::default();
    let task = tokio::spawn(watch_kind(
        Api::<Lenient<CalicoObject<GlobalNetworkPolicies>>>::all(client),
        CalicoSource::<GlobalNetworkPolicies>::new(KubeOptions::default()),
        node.clone(),
        metrics.clone(),
    ));
    // The API server took a policy whose selector the model refuses (a
    // CRD schema cannot judge a selector): skipped, counted.
    let malformed = r#"{"metadata": {"name": "broken", "resourceVersion": "12"}, "spec": {"selector": "app == db"}}"#;
    expect_at(
        &mut handle,
        PATH,
        &[],
        Some(gnp_list(&[gnp("a", 10, 11), malformed.to_string()], "20")),
    )
    .await;
    let watch = [
        event("ADDED", &gnp("b", 20, 21)),
        event("MODIFIED", &gnp("a", 15, 22)),
        r#"{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}}"#.to_string(),
    ]
    .join("\n");
    expect_at(
        &mut handle,
        PATH,
        &["watch=true", "resourceVersion=20"],
        Some(watch.into_bytes()),
    )
    .await;
    let relist = expect_at(&mut handle, PATH, &[], None).await.unwrap();
    let before = policies(&node);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "the stale policy deleted by the first list, the malformed one skipped"
    );
    assert_eq!(before["a"].0, 15.0);
    let revision = node.shared().state.read().unwrap().revision();
    // The relist: b is gone, c is new: one Raft entry.
    relist.send_response(
        Response::builder()
            .body(Body::from(gnp_list(
                &[gnp("a", 15, 22), gnp("c", 30, 31)],
                "40",
            )))
            .unwrap(),
    );
    let _hanging = expect_at(
        &mut handle,
        PATH,
        &["watch=true", "resourceVersion=40"],
        None,
    )
    .await;
    for _ in 0..200 {
        if policies(&node).contains_key("c") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = policies(&node);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(after["a"], before["a"], "unchanged, not rewritten");
    assert_eq!(after["c"].1, revision + 1, "put and delete in one entry");
    let kind = KubeMetrics::kind("globalnetworkpolicies.projectcalico.org");
    assert_eq!(metrics.objects.get_or_create(&kind).get(), 2);
    assert_eq!(metrics.conversion_errors.get_or_create(&kind).get(), 1);
    assert_eq!(metrics.relists.get_or_create(&kind).get(), 1);
    task.abort();
    node.stop();
}

/// `(group, resource, verb)` of an API request: `/api/v1[/namespaces/NS]/R`
/// or `/apis/G/V[/namespaces/NS]/R[/NAME]`; GET with `watch=true` is
/// `watch`, GET on a collection `list`, on a name `get`.
fn api_call(req: &Request<Body>) -> (String, String, String) {
    let parts: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _v, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest.to_vec()),
        _ => panic!("not an API path: {}", req.uri()),
    };
    let rest = match rest.as_slice() {
        ["namespaces", _ns, r @ ..] if !r.is_empty() => r.to_vec(),
        r => r.to_vec(),
    };
    let watch = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (req.method().as_str(), rest.len(), watch) {
        ("GET", _, true) => "watch",
        ("GET", 1, false) => "list",
        ("GET", _, false) => "get",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", _, _) => "delete",
        (m, _, _) => panic!("unexpected method {m}"),
    };
    (group, rest[0].to_string(), verb.to_string())
}

/// What a ClusterRole in `file` grants, as `(group, resource, verb)`.
fn granted(file: &str, role: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: serde_json::Value = serde::Deserialize::deserialize(de).unwrap();
        if doc["kind"] != "ClusterRole" || doc["metadata"]["name"] != role {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// Every watcher the leader starts, against a mock API server that lists
/// nothing and leaves watches open: the calls they make are exactly what
/// Typha's ClusterRole grants, no more, no less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_role_grants_exactly_the_calls_the_watchers_make() {
    let dir = tempfile::tempdir().unwrap();
    let node = leader(dir.path()).await;
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(
        client,
        node.clone(),
        KubeMetrics::default(),
        KubeOptions {
            auto_host_endpoints: true,
        },
        stopped,
    ));
    let mut calls = std::collections::BTreeSet::new();
    let mut hanging = Vec::new();
    // Every watcher lists and then watches; wait until the calls stop
    // growing for a while.
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await;
        let Ok(Some((req, send))) = next else {
            break;
        };
        let call = api_call(&req);
        if call.2 == "watch" {
            hanging.push(send);
        } else {
            let body = r#"{"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}"#;
            send.send_response(
                Response::builder()
                    .body(Body::from(body.as_bytes().to_vec()))
                    .unwrap(),
            );
        }
        calls.insert(call);
    }
    let role = granted(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/base/typha/rbac.yaml"
        ),
        "manul-typha",
    );
    assert_eq!(
        calls, role,
        "the calls the watchers made (left) and what the manul-typha ClusterRole grants (right)"
    );
    let _ = stop.send(true);
    drop(hanging);
    task.abort();
    node.stop();
}
