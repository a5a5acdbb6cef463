//! A minimal Kubernetes API server for tests, on loopback: pods only, with
//! the documented JSON of list, watch (from a `resourceVersion`, one event
//! per line), get, and the strategic merge patch of a pod's annotations
//! through its `status` subresource (with the `resourceVersion`
//! precondition). Every other kind lists empty and watches nothing. It is
//! what `typha --kubeconfig` and the CNI plugin talk to in tests here, where
//! no real API server can run; nothing in Manul's own code depends on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug, Default)]
struct Pods {
    version: u64,
    /// (namespace, name) → the pod, as the API server returns it.
    items: BTreeMap<(String, String), Value>,
    /// Every event so far: resource version and the event's line.
    history: Vec<(u64, String)>,
}

/// The server's pods; change them with [`FakeApi::put_pod`] and
/// [`FakeApi::delete_pod`], or through the API.
#[derive(Debug)]
pub struct FakeApi {
    pods: Mutex<Pods>,
    events: broadcast::Sender<(u64, String)>,
    /// PATCH requests served, for tests that count them.
    patches: Mutex<Vec<(String, Value)>>,
}

/// A running [`FakeApi`] and where it listens.
#[derive(Debug)]
pub struct RunningApi {
    pub api: Arc<FakeApi>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningApi {
    /// A kubeconfig naming this server (no credentials), written to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://{}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user: {{}}\n",
                self.addr
            ),
        )
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn ok(body: &Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn key_of(pod: &Value) -> (String, String) {
    let m = &pod["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&m["namespace"]), s(&m["name"]))
}

fn typed(pod: &Value) -> Value {
    let mut v = pod.clone();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Pod".into();
    v
}

impl FakeApi {
    fn new() -> FakeApi {
        FakeApi {
            pods: Mutex::new(Pods::default()),
            events: broadcast::channel(4096).0,
            patches: Mutex::new(Vec::new()),
        }
    }

    /// Starts a server on a free loopback port below 32768 (above it the
    /// kernel hands out ephemeral ports).
    pub async fn start() -> std::io::Result<RunningApi> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = std::process::id() % 6_000;
        let mut bound = None;
        for _ in 0..12_000 {
            let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = 20_000 + ((base + k * 13) % 12_000) as u16;
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                bound = Some(l);
                break;
            }
        }
        let listener = bound.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "no free loopback port between 20000 and 32000",
            )
        })?;
        let api = Arc::new(FakeApi::new());
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(serve).with_state(api.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RunningApi { api, addr, task })
    }

    fn record(&self, pods: &mut Pods, kind: &str, pod: &Value) {
        let line = format!("{}\n", json!({"type": kind, "object": typed(pod)}));
        pods.history.push((pods.version, line.clone()));
        let _ = self.events.send((pods.version, line));
    }

    /// Adds or replaces a pod (its metadata must name it); returns its new
    /// resource version.
    pub fn put_pod(&self, mut pod: Value) -> u64 {
        let Ok(mut pods) = self.pods.lock() else {
            return 0;
        };
        pods.version += 1;
        pod["metadata"]["resourceVersion"] = pods.version.to_string().into();
        let key = key_of(&pod);
        let kind = if pods.items.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        pods.items.insert(key, pod.clone());
        self.record(&mut pods, kind, &pod);
        pods.version
    }

    /// Deletes a pod, if there is one.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let Ok(mut pods) = self.pods.lock() else {
            return;
        };
        let Some(mut pod) = pods.items.remove(&(namespace.into(), name.into())) else {
            return;
        };
        pods.version += 1;
        pod["metadata"]["resourceVersion"] = pods.version.to_string().into();
        self.record(&mut pods, "DELETED", &pod);
    }

    /// The pod as the server holds it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let pods = self.pods.lock().ok()?;
        pods.items.get(&(namespace.into(), name.into())).cloned()
    }

    /// Every PATCH served: path and body.
    pub fn patches(&self) -> Vec<(String, Value)> {
        self.patches.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn list(&self) -> Response {
        let Ok(pods) = self.pods.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        let items: Vec<Value> = pods.items.values().cloned().collect();
        ok(
            &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": pods.version.to_string()}, "items": items}),
        )
    }

    fn watch(&self, from: u64) -> Response {
        let Ok(pods) = self.pods.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        // Subscribed under the lock: nothing falls between history and live.
        let live = self.events.subscribe();
        let past: Vec<(u64, String)> = pods
            .history
            .iter()
            .filter(|(v, _)| *v > from)
            .cloned()
            .collect();
        drop(pods);
        let live = tokio_stream::wrappers::BroadcastStream::new(live)
            .filter_map(|e| async move { e.ok() });
        let stream = futures::stream::iter(past)
            .chain(live)
            .filter(move |(v, _)| futures::future::ready(*v > from))
            .map(|(_, line)| Ok::<_, std::io::Error>(Bytes::from(line)));
        Response::new(Body::from_stream(stream))
    }

    fn patch_status(&self, key: (String, String), path: &str, body: &[u8]) -> Response {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "the patch is not JSON");
        };
        if let Ok(mut p) = self.patches.lock() {
            p.push((path.to_string(), patch.clone()));
        }
        let top_ok = patch
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "metadata"));
        let meta_ok = patch["metadata"].as_object().is_some_and(|o| {
            o.keys()
                .all(|k| k == "annotations" || k == "resourceVersion")
        });
        if !top_ok || !meta_ok {
            return status(
                422,
                "Invalid",
                "this server patches metadata.annotations (and checks metadata.resourceVersion) only",
            );
        }
        let Ok(mut pods) = self.pods.lock() else {
            return status(500, "InternalError", "poisoned");
        };
        let Some(mut pod) = pods.items.get(&key).cloned() else {
            return status(404, "NotFound", &format!("pods \"{}\" not found", key.1));
        };
        if let Some(want) = patch["metadata"]["resourceVersion"].as_str()
            && pod["metadata"]["resourceVersion"].as_str() != Some(want)
        {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on pods \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.1
                ),
            );
        }
        if let Some(changes) = patch["metadata"]["annotations"].as_object() {
            let annotations = &mut pod["metadata"]["annotations"];
            if !annotations.is_object() {
                *annotations = json!({});
            }
            for (k, v) in changes {
                match v {
                    Value::Null => {
                        if let Some(o) = annotations.as_object_mut() {
                            o.remove(k);
                        }
                    }
                    v => annotations[k] = v.clone(),
                }
            }
        }
        pods.version += 1;
        pod["metadata"]["resourceVersion"] = pods.version.to_string().into();
        pods.items.insert(key, pod.clone());
        self.record(&mut pods, "MODIFIED", &pod);
        ok(&typed(&pod))
    }
}

async fn serve(State(api): State<Arc<FakeApi>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let query: BTreeMap<&str, &str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let path = uri.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["api", "v1", "pods"]) => {
            if query.get("watch") == Some(&"true") || query.get("watch") == Some(&"1") {
                let from = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                api.watch(from)
            } else {
                api.list()
            }
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => match api.pod(ns, name) {
            Some(p) => ok(&typed(&p)),
            None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        (Method::PATCH, ["api", "v1", "namespaces", ns, "pods", name, "status"]) => {
            api.patch_status(((*ns).to_string(), (*name).to_string()), path, &body)
        }
        (Method::GET, _) if query.contains_key("watch") => {
            Response::new(Body::from_stream(futures::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))
        }
        (Method::GET, _) => ok(
            &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
        _ => status(405, "MethodNotAllowed", "not served by this test server"),
    }
}
