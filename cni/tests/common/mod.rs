//! What the plugin tests share: the root check, namespaces removed even on
//! failure, a Typha and a tokio runtime living inside a node namespace, and
//! the real `manul-cni` binary run there.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use std::process::{Command, Stdio};
use std::time::Duration;

use manul_client::Client;
use manul_model::Resource;
use manul_netns::NetNs;
use manul_typha::server::Running;

#[allow(unused_imports)]
pub use manul_netns::testing::{Cleanup, have_root};

/// Runs `body` on a multi-threaded runtime whose threads all live in `ns`
/// (threads inherit the namespace of the thread that creates them), so
/// Typha's listener, the client and every `manul-cni` child are there.
pub fn in_netns<F>(ns: &NetNs, body: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    ns.run(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(body)
    })
    .unwrap()
}

/// A single-node Typha on this namespace's loopback; waits until it leads.
pub async fn typha(dir: &std::path::Path) -> (Running, String) {
    let typha =
        manul_typha::server::start_single_loopback(dir.to_path_buf(), Duration::from_secs(10))
            .await
            .unwrap();
    let addr = typha.local_addr.to_string();
    (typha, addr)
}

pub fn resource(yaml: &str) -> Resource {
    let out = manul_model::load("test", yaml.as_bytes());
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    out.resources.into_iter().next().unwrap().resource
}

pub const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default
spec:
  cidr: 10.65.0.0/24
  blockSize: 26
";

pub const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: production
  labels: {app: api}
spec:
  containers:
  - name: main
    image: x
    ports:
    - {name: http, containerPort: 8080}
";

/// The pool and the pod, written as an API server would.
pub async fn seed(addr: &str) -> Client {
    let client = Client::connect(&[addr]).await.unwrap();
    client
        .apply(&[resource(POOL), resource(POD)])
        .await
        .unwrap();
    client
}

/// The network configuration for Typha at `addr`.
pub fn conf(addr: &str, timeout_ms: u64, status_dir: &std::path::Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "manul",
        "type": "manul-cni",
        "typha": [addr],
        "nodename": "node-1",
        "policy_setup_timeout_ms": timeout_ms,
        "endpoint_status_dir": status_dir,
        "log_level": "debug",
    })
    .to_string()
}

/// One plugin run's outcome.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `manul-cni` with `vars` and `stdin`, from a thread of the current
/// runtime (so in its namespace).
pub async fn cni(vars: Vec<(&'static str, String)>, stdin: String) -> Run {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_manul-cni"))
            .env_clear()
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The `CNI_*` variables for `command` on container `id` of pod
/// `namespace/pod` in `netns`.
pub fn vars(
    command: &str,
    id: &str,
    netns: Option<&std::path::Path>,
    pod: Option<(&str, &str)>,
) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ];
    if let Some(ns) = netns {
        v.push(("CNI_NETNS", ns.display().to_string()));
    }
    if let Some((ns, name)) = pod {
        v.push((
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
        ));
    }
    v
}
