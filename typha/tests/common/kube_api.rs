//! A minimal Kubernetes API server on loopback for tests: the documented
//! JSON of Pods in one namespace (list, and watch from a resourceVersion,
//! streaming ADDED/MODIFIED/DELETED events) and one namespace's
//! `coordination.k8s.io/v1` Leases (get; create, 409 when it exists;
//! update, 409 when the body's resourceVersion is not the current one).
//! Every other list is empty and every other watch stays open with no
//! events. It serves what `kube`'s client sends, nothing more.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// Every pod event since the start: (resourceVersion, type, object).
    events: Vec<(u64, &'static str, Value)>,
    leases: BTreeMap<String, Value>,
    /// Lease writes the server accepted: (verb, holder).
    lease_writes: Vec<(&'static str, String)>,
}

/// The server's state.
pub struct FakeApi {
    namespace: String,
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// A pod of the fake API.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub uid: String,
    pub ip: String,
    pub peer_port: u16,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

fn ok(code: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = code;
    r
}

impl FakeApi {
    /// Serves on 127.0.0.1:`port` until the test ends.
    pub async fn start(namespace: &str, port: u16) -> Arc<FakeApi> {
        let (changed, _) = tokio::sync::watch::channel(0);
        let api = Arc::new(FakeApi {
            namespace: namespace.to_string(),
            inner: Mutex::new(Inner::default()),
            changed,
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let app = Router::new().fallback(serve).with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        api
    }

    fn pod_event(&self, inner: &mut Inner, kind: &'static str, mut pod: Value) {
        inner.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            inner.pods.remove(&name);
        } else {
            inner.pods.insert(name, pod.clone());
        }
        inner.events.push((inner.rv, kind, pod));
        self.changed.send_replace(inner.rv);
    }

    /// Adds a running pod, not ready yet.
    pub fn add_pod(&self, p: &PodSpec) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": self.namespace, "uid": p.uid,
                "labels": {"app.kubernetes.io/name": "manul-typha"}},
            "spec": {"containers": [{"name": "typha", "image": "manul",
                "ports": [{"name": "peer", "containerPort": p.peer_port}]}]},
            "status": {"phase": "Running", "podIP": p.ip,
                "conditions": [{"type": "Ready", "status": "False"}]}
        });
        let mut inner = self.inner.lock().unwrap();
        self.pod_event(&mut inner, "ADDED", pod);
    }

    /// Sets a pod's Ready condition (as the kubelet does from the probe);
    /// no event when it is unchanged.
    pub fn set_ready(&self, name: &str, ready: bool) {
        let mut inner = self.inner.lock().unwrap();
        let Some(mut pod) = inner.pods.get(name).cloned() else {
            return;
        };
        let want = if ready { "True" } else { "False" };
        if pod["status"]["conditions"][0]["status"] == want {
            return;
        }
        pod["status"]["conditions"][0]["status"] = json!(want);
        self.pod_event(&mut inner, "MODIFIED", pod);
    }

    /// Removes a pod (its deletion is complete).
    pub fn delete_pod(&self, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(pod) = inner.pods.get(name).cloned() {
            self.pod_event(&mut inner, "DELETED", pod);
        }
    }

    /// The Lease's holder, if the Lease exists.
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        inner.leases.get(name).map(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    }

    /// Lease writes accepted so far: (create | update, holder).
    pub fn lease_writes(&self) -> Vec<(&'static str, String)> {
        self.inner.lock().unwrap().lease_writes.clone()
    }

    fn list_pods(&self) -> Response {
        let inner = self.inner.lock().unwrap();
        let list = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": inner.pods.values().collect::<Vec<_>>()});
        ok(StatusCode::OK, &list)
    }

    fn events_after(&self, rv: u64) -> (u64, Vec<u8>) {
        let inner = self.inner.lock().unwrap();
        let mut out = Vec::new();
        let mut last = rv;
        for (at, kind, obj) in inner.events.iter().filter(|(at, _, _)| *at > rv) {
            out.extend(
                json!({"type": kind, "object": obj})
                    .to_string()
                    .into_bytes(),
            );
            out.push(b'\n');
            last = *at;
        }
        (last, out)
    }

    /// Streams pod events after `rv` for up to 10 s, then ends (the
    /// client watches again from the last version it saw).
    fn watch_pods(self: &Arc<FakeApi>, rv: u64) -> Response {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let state = (self.clone(), rv, self.changed.subscribe());
        let stream = futures::stream::unfold(state, move |(api, rv, mut changed)| async move {
            loop {
                let (last, bytes) = api.events_after(rv);
                if !bytes.is_empty() {
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(bytes)),
                        (api, last, changed),
                    ));
                }
                if tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
                {
                    return None;
                }
            }
        });
        Response::new(Body::from_stream(stream))
    }

    fn lease_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }

    fn lease(&self, method: &Method, name: Option<&str>, body: &[u8]) -> Response {
        let mut inner = self.inner.lock().unwrap();
        match (method.as_str(), name) {
            ("GET", Some(name)) => match inner.leases.get(name) {
                Some(l) => ok(StatusCode::OK, l),
                None => status(404, "NotFound", &format!("leases \"{name}\" not found")),
            },
            ("POST", None) => {
                let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let name = lease["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if inner.leases.contains_key(&name) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("leases \"{name}\" already exists"),
                    );
                }
                inner.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                lease["metadata"]["namespace"] = json!(self.namespace);
                lease["metadata"]["uid"] = json!(format!("lease-{}", inner.rv));
                let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
                inner.lease_writes.push(("create", holder.to_string()));
                inner.leases.insert(name, lease.clone());
                ok(StatusCode::CREATED, &lease)
            }
            ("PUT", Some(name)) => {
                let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(current) = inner.leases.get(name) else {
                    return status(404, "NotFound", &format!("leases \"{name}\" not found"));
                };
                if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                inner.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
                inner.lease_writes.push(("update", holder.to_string()));
                inner.leases.insert(name.to_string(), lease.clone());
                ok(StatusCode::OK, &lease)
            }
            _ => status(405, "MethodNotAllowed", "not served by this test server"),
        }
    }
}

fn query_value<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

async fn serve(State(api): State<Arc<FakeApi>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    let watching = query_value(&uri, "watch") == Some("true");
    let pods = format!("/api/v1/namespaces/{}/pods", api.namespace);
    if path == pods {
        if watching {
            let rv = query_value(&uri, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return api.watch_pods(rv);
        }
        return api.list_pods();
    }
    let leases = api.lease_path();
    if path == leases {
        return api.lease(&method, None, &body);
    }
    if let Some(name) = path.strip_prefix(&format!("{leases}/")) {
        return api.lease(&method, Some(name), &body);
    }
    if watching {
        let never = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return Response::new(Body::from_stream(never));
    }
    ok(
        StatusCode::OK,
        &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
    )
}

/// Writes a kubeconfig naming the server on 127.0.0.1:`port`.
pub fn write_kubeconfig(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
}
