//! The pod conversion from the API server's JSON, reading a data
//! directory's configuration without keeping it open, and the Lease's
//! reads and conditional writes against `kube`'s mock service answering
//! with the API server's JSON (404, 409 Conflict).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use crate::node::{NodeConfig, RaftMetrics};

struct Empty;

impl SnapshotSource for Empty {
    fn snapshot(&self) -> (u64, Vec<manul_proto::v1::Entry>) {
        (0, Vec::new())
    }
}

#[test]
fn a_pod_from_the_api_servers_json() {
    let json = r#"{"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "manul-typha-7d9f-abcde", "namespace": "manul-system",
            "uid": "0b6c0d3e-5f0e-4f55-9a55-0a1b2c3d4e5f", "resourceVersion": "812",
            "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "typha", "image": "manul",
            "ports": [{"name": "sync", "containerPort": 5473}, {"name": "peer", "containerPort": 5474}]}]},
        "status": {"phase": "Running", "podIP": "10.0.1.7",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}}"#;
    let pod: Pod = serde_json::from_str(json).unwrap();
    let v = pod_view(&pod).unwrap();
    assert_eq!(
        v,
        PodView {
            name: "manul-typha-7d9f-abcde".into(),
            uid: "0b6c0d3e-5f0e-4f55-9a55-0a1b2c3d4e5f".into(),
            ip: Some("10.0.1.7".parse().unwrap()),
            peer_port: Some(5474),
            ready: true,
            deleting: true,
        }
    );

    let pending = r#"{"metadata": {"name": "p", "uid": "u"},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}"#;
    let v = pod_view(&serde_json::from_str(pending).unwrap()).unwrap();
    assert_eq!(
        (v.ip, v.ready, v.deleting, v.peer_port),
        (None, false, false, None)
    );

    let nameless = r#"{"metadata": {"uid": "u"}}"#;
    assert_eq!(pod_view(&serde_json::from_str(nameless).unwrap()), None);
}

#[tokio::test]
async fn a_data_directory_with_a_configuration_is_resumed_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!has_configuration(dir.path()).unwrap(), "no directory yet");
    let fanout = || {
        Fanout::new(
            FanoutConfig::default(),
            Arc::new(Empty),
            FanoutMetrics::default(),
        )
    };

    // A replica that joined and was never added has storage but no
    // configuration.
    let mut config = NodeConfig::new(7, dir.path().to_path_buf(), BTreeMap::new());
    config.join = true;
    let node = Node::start(config, fanout(), RaftMetrics::default()).unwrap();
    node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node);
    assert!(
        !has_configuration(dir.path()).unwrap(),
        "joined, never added"
    );

    // A bootstrapped replica has one, and its node opens the storage again
    // after the check closed it.
    let other = tempfile::tempdir().unwrap();
    let peers = BTreeMap::from([(7, "127.0.0.1:20007".to_string())]);
    let node = Node::start(
        NodeConfig::new(7, other.path().to_path_buf(), peers),
        fanout(),
        RaftMetrics::default(),
    )
    .unwrap();
    node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node);
    assert!(has_configuration(other.path()).unwrap());
    let mut config = NodeConfig::new(7, other.path().to_path_buf(), BTreeMap::new());
    config.join = true;
    let node = Node::start(config, fanout(), RaftMetrics::default()).unwrap();
    for _ in 0..100 {
        if node.status().leader_id == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.status().voters, vec![7], "resumed as the sole voter");
    assert_eq!(node.status().leader_id, 7);
    node.stop();
}

mod lease {
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    use super::*;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn options() -> MembershipOptions {
        MembershipOptions {
            namespace: "manul-system".into(),
            pod_name: "typha-a".into(),
            pod_uid: "uid-a".into(),
            pod_ip: "10.0.0.1".parse().unwrap(),
            selector: "app.kubernetes.io/name=manul-typha".into(),
            lease_name: "manul-typha-bootstrap".into(),
            voters: 3,
            peer_port: 5474,
            lease_duration: Duration::from_secs(15),
        }
    }

    fn lease_json(holder: &str, rv: &str) -> String {
        format!(
            r#"{{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {{"name": "manul-typha-bootstrap", "namespace": "manul-system", "resourceVersion": "{rv}"}},
                "spec": {{"holderIdentity": "{holder}", "leaseDurationSeconds": 15,
                    "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 2}}}}"#
        )
    }

    const CONFLICT: &str = r#"{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Operation cannot be fulfilled on leases.coordination.k8s.io \"manul-typha-bootstrap\": the object has been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "manul-typha-bootstrap", "group": "coordination.k8s.io", "kind": "leases"}, "code": 409}"#;

    /// The next request: its method, path and body; answered with `status`
    /// and `body`.
    async fn answer(handle: &mut Handle, status: u16, body: &str) -> (String, String, Vec<u8>) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .expect("a request in time")
            .expect("a request");
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap().to_vec();
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(body.as_bytes().to_vec()))
                .unwrap(),
        );
        (method, path, bytes)
    }

    #[tokio::test]
    async fn taking_the_lease_is_conditional_on_the_read_version() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let mut lease = LeaseClient::new(client, &options());

        // Read: held by a gone pod, version 41.
        let reading = tokio::spawn(async move {
            let read = lease.read().await.unwrap().unwrap();
            (lease, read)
        });
        let (method, path, _) = answer(&mut handle, 200, &lease_json("typha-old", "41")).await;
        assert_eq!(method, "GET");
        assert_eq!(
            path,
            "/apis/coordination.k8s.io/v1/namespaces/manul-system/leases/manul-typha-bootstrap"
        );
        let (mut lease, (object, view)) = reading.await.unwrap();
        assert_eq!(view.holder.as_deref(), Some("typha-old"));
        assert_eq!(view.duration_ms, 15_000);

        // Another writer got there first: the update is refused, a lost race.
        let writing = tokio::spawn(async move {
            let won = lease.write(LeaseAction::Take, Some(object.clone())).await;
            (lease, object, won)
        });
        let (method, _, body) = answer(&mut handle, 409, CONFLICT).await;
        assert_eq!(method, "PUT");
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["metadata"]["resourceVersion"], "41", "{sent}");
        assert_eq!(sent["spec"]["holderIdentity"], "typha-a");
        assert_eq!(sent["spec"]["leaseTransitions"], 3);
        let (mut lease, object, won) = writing.await.unwrap();
        assert!(!won.unwrap(), "a 409 is a lost race, not an error");

        // Accepted: the new version is what this replica observed now.
        let writing = tokio::spawn(async move {
            let won = lease.write(LeaseAction::Take, Some(object)).await;
            (lease, won)
        });
        answer(&mut handle, 200, &lease_json("typha-a", "42")).await;
        let (lease, won) = writing.await.unwrap();
        assert!(won.unwrap());
        assert_eq!(lease.seen.as_ref().map(|(rv, _)| rv.as_str()), Some("42"));
    }

    #[tokio::test]
    async fn no_lease_reads_as_none_and_is_created_held_by_this_pod() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let mut lease = LeaseClient::new(client, &options());
        let not_found = r#"{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "leases.coordination.k8s.io \"manul-typha-bootstrap\" not found", "reason": "NotFound",
            "details": {"name": "manul-typha-bootstrap", "group": "coordination.k8s.io", "kind": "leases"}, "code": 404}"#;
        let reading = tokio::spawn(async move {
            let read = lease.read().await.unwrap();
            (lease, read)
        });
        answer(&mut handle, 404, not_found).await;
        let (mut lease, read) = reading.await.unwrap();
        assert!(read.is_none());

        let writing = tokio::spawn(async move { lease.write(LeaseAction::Create, None).await });
        let (method, path, body) = answer(&mut handle, 201, &lease_json("typha-a", "1")).await;
        assert_eq!(method, "POST");
        assert_eq!(
            path,
            "/apis/coordination.k8s.io/v1/namespaces/manul-system/leases"
        );
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["metadata"]["name"], "manul-typha-bootstrap");
        assert_eq!(sent["spec"]["holderIdentity"], "typha-a");
        assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
        assert!(writing.await.unwrap().unwrap());
    }
}
