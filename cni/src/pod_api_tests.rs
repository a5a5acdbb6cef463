//! The requests the plugin sends to the API server, against `kube`'s mock
//! service answering with the API server's JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tower_test::mock;

use super::*;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn mock_api() -> (PodApi, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (PodApi::new(Client::new(service, "default")), handle)
}

/// The next request: method, path and query, content type and body.
async fn next(
    handle: &mut Handle,
) -> (
    (Method, String, Option<String>, Value),
    mock::SendResponse<Response<Body>>,
) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request in time")
        .expect("a request");
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    ((method, uri, content_type, body), send)
}

fn respond(send: mock::SendResponse<Response<Body>>, status: u16, body: &str) {
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(body.as_bytes().to_vec()))
            .unwrap(),
    );
}

fn pod(annotations: &str, rv: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "api", "namespace": "production", "uid": "u1", "resourceVersion": "{rv}", "annotations": {{{annotations}}}}},
            "spec": {{"nodeName": "node-1", "containers": [{{"name": "main", "image": "x"}}]}},
            "status": {{"phase": "Pending"}}}}"#
    )
}

const NOT_FOUND: &str = r#"{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
 "message": "pods \"api\" not found", "reason": "NotFound", "details": {"name": "api", "kind": "pods"}, "code": 404}"#;

const CONFLICT: &str = r#"{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
 "message": "Operation cannot be fulfilled on pods \"api\": the object has been modified; please apply your changes to the latest version and try again",
 "reason": "Conflict", "details": {"name": "api", "kind": "pods"}, "code": 409}"#;

const STRATEGIC: &str = "application/strategic-merge-patch+json";
const STATUS_PATH: &str = "/api/v1/namespaces/production/pods/api/status?";
const POD_PATH: &str = "/api/v1/namespaces/production/pods/api";

#[tokio::test]
async fn add_patches_the_addresses_onto_the_pod_status_at_once() {
    let (api, mut handle) = mock_api();
    let call = tokio::spawn(async move {
        let ips: Vec<IpAddr> = vec!["10.65.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        api.record("production", "api", &ips, "c0ffee").await
    });
    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        seen,
        (
            Method::PATCH,
            STATUS_PATH.to_string(),
            Some(STRATEGIC.to_string()),
            serde_json::json!({"metadata": {"annotations": {
                "cni.projectcalico.org/containerID": "c0ffee",
                "cni.projectcalico.org/podIP": "10.65.0.7/32",
                "cni.projectcalico.org/podIPs": "10.65.0.7/32,fd00::7/128",
            }}}),
        )
    );
    respond(send, 200, &pod("", "8"));
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn add_for_a_pod_the_api_server_lacks_fails_naming_it() {
    let (api, mut handle) = mock_api();
    let call = tokio::spawn(async move {
        let ips: Vec<IpAddr> = vec!["10.65.0.7".parse().unwrap()];
        api.record("production", "api", &ips, "c0ffee").await
    });
    let (_, send) = next(&mut handle).await;
    respond(send, 404, NOT_FOUND);
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code, code::DATASTORE);
    assert!(e.msg.contains("production/api"), "{e}");
    assert!(e.details.contains("not found"), "{e}");
}

#[tokio::test]
async fn del_clears_the_addresses_at_the_version_read_and_retries_a_conflict() {
    let (api, mut handle) = mock_api();
    let call = tokio::spawn(async move { api.clear("production", "api", "c0ffee").await });
    let ours = r#""cni.projectcalico.org/containerID": "c0ffee", "cni.projectcalico.org/podIP": "10.65.0.7/32", "cni.projectcalico.org/podIPs": "10.65.0.7/32""#;
    for (rv, answer, body) in [("11", 409, CONFLICT), ("12", 200, "")] {
        let (seen, send) = next(&mut handle).await;
        assert_eq!(
            (seen.0, seen.1.as_str()),
            (Method::GET, POD_PATH),
            "DEL reads the pod first"
        );
        respond(send, 200, &pod(ours, rv));
        let (seen, send) = next(&mut handle).await;
        assert_eq!(
            seen,
            (
                Method::PATCH,
                STATUS_PATH.to_string(),
                Some(STRATEGIC.to_string()),
                serde_json::json!({"metadata": {"resourceVersion": rv, "annotations": {
                    "cni.projectcalico.org/podIP": "",
                    "cni.projectcalico.org/podIPs": "",
                }}}),
            )
        );
        let body = if body.is_empty() {
            pod("", "13")
        } else {
            body.to_string()
        };
        respond(send, answer, &body);
    }
    assert_eq!(call.await.unwrap().unwrap(), Cleared::Cleared);
}

#[tokio::test]
async fn del_leaves_a_newer_container_a_bare_pod_and_a_gone_pod_alone() {
    let cases = [
        (
            pod(
                r#""cni.projectcalico.org/containerID": "newer", "cni.projectcalico.org/podIP": "10.65.0.9/32""#,
                "5",
            ),
            200,
            Cleared::OtherContainer,
        ),
        (pod("", "5"), 200, Cleared::Nothing),
        (
            pod(
                r#""cni.projectcalico.org/containerID": "c0ffee", "cni.projectcalico.org/podIP": "", "cni.projectcalico.org/podIPs": """#,
                "5",
            ),
            200,
            Cleared::Nothing,
        ),
        (NOT_FOUND.to_string(), 404, Cleared::Gone),
    ];
    for (answer, status, want) in cases {
        let (api, mut handle) = mock_api();
        let call = tokio::spawn(async move { api.clear("production", "api", "c0ffee").await });
        let (seen, send) = next(&mut handle).await;
        assert_eq!(seen.0, Method::GET);
        respond(send, status, &answer);
        assert_eq!(call.await.unwrap().unwrap(), want, "{answer}");
        let more = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
        assert!(
            !matches!(more, Ok(Some(_))),
            "nothing but the read was sent"
        );
    }
}

/// `pods` or `pods/status` and the verb, from a request of this plugin.
fn call(method: &Method, uri: &str) -> (String, String) {
    let path = uri.split('?').next().unwrap_or_default();
    let resource = if path.ends_with("/status") {
        "pods/status"
    } else {
        "pods"
    };
    let verb = match *method {
        Method::GET => "get",
        Method::PATCH => "patch",
        ref m => panic!("unexpected method {m}"),
    };
    (resource.to_string(), verb.to_string())
}

/// ADD and DEL against the mock: the calls they make are exactly what the
/// plugin's ClusterRole grants (core group, no more, no less).
#[tokio::test]
async fn the_cluster_role_grants_exactly_the_calls_add_and_del_make() {
    let mut calls = std::collections::BTreeSet::new();
    let (api, mut handle) = mock_api();
    let add = tokio::spawn(async move {
        let ips: Vec<IpAddr> = vec!["10.65.0.7".parse().unwrap()];
        api.record("production", "api", &ips, "c0ffee").await
    });
    let ((method, uri, _, _), send) = next(&mut handle).await;
    calls.insert(call(&method, &uri));
    respond(send, 200, &pod("", "8"));
    add.await.unwrap().unwrap();

    let (api, mut handle) = mock_api();
    let del = tokio::spawn(async move { api.clear("production", "api", "c0ffee").await });
    let ours = r#""cni.projectcalico.org/containerID": "c0ffee", "cni.projectcalico.org/podIP": "10.65.0.7/32""#;
    let ((method, uri, _, _), send) = next(&mut handle).await;
    calls.insert(call(&method, &uri));
    respond(send, 200, &pod(ours, "9"));
    let ((method, uri, _, _), send) = next(&mut handle).await;
    calls.insert(call(&method, &uri));
    respond(send, 200, &pod("", "10"));
    del.await.unwrap().unwrap();

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/base/cni/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(de).unwrap();
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            assert_eq!(
                rule["apiGroups"],
                serde_json::json!([""]),
                "core group only"
            );
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    granted.insert((
                        r.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    assert_eq!(
        calls, granted,
        "the calls ADD and DEL made (left), the ClusterRole (right)"
    );
}
