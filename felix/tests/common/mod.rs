//! What the `felix` binary tests share: the process, a loopback port, an
//! HTTP GET, writes to Typha and reading `/config`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Child;
use std::time::{Duration, Instant};

use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ApplyItem, ApplyRequest};

/// A running `felix`, killed when dropped.
pub struct Felix(pub Child);

impl Drop for Felix {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port below 32768 (above it the kernel hands out
/// ephemeral ports), a different one at each call.
pub fn port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 6_000;
    loop {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 20_000 + ((base + k * 13) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// GET `path` on a loopback port: the status code and the body.
pub use manul_listen::testing::http_get as get;

/// A client of Typha's API once `typha` leads (it is a single voter).
pub async fn api_client(
    typha: &manul_typha::server::Running,
    addr: std::net::SocketAddr,
) -> ResourcesClient<tonic::transport::Channel> {
    loop {
        if typha.node.status().leader_id == 1
            && let Ok(c) = ResourcesClient::connect(format!("http://{addr}")).await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies YAML documents through Typha's API.
pub async fn apply(api: &mut ResourcesClient<tonic::transport::Channel>, docs: &[String]) {
    let items = docs
        .iter()
        .map(|d| ApplyItem {
            document: d.clone().into_bytes().into(),
            origin: "test".into(),
            expected_revision: None,
        })
        .collect();
    api.apply(ApplyRequest {
        items,
        deletes: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The `/config` document, when Felix serves one (the body may be chunked:
/// the JSON object is between its first `{` and its last `}`).
pub async fn config(port: u16) -> Option<serde_json::Value> {
    let (code, body) = get(port, "/config").await?;
    (code == 200).then_some(())?;
    let (a, b) = (body.find('{')?, body.rfind('}')?);
    serde_json::from_str(&body[a..=b]).ok()
}

/// The `/config` document once `check` holds for it (30 s at most).
pub async fn config_where(
    port: u16,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Some(v) = config(port).await {
            if check(&v) {
                return v;
            }
            last = v.to_string();
        }
        assert!(Instant::now() < deadline, "{what} never held: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (value, source) of a setting in a `/config` document.
pub fn setting(v: &serde_json::Value, name: &str) -> (String, String) {
    let s = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"));
    (
        s["value"].as_str().unwrap().to_string(),
        s["source"].as_str().unwrap().to_string(),
    )
}
