//! Waiting for Felix: once its dataplane has programmed an endpoint, Felix
//! writes `<endpoint_status_dir>/<namespace>.<pod>.json` with at least
//! `{"namespace", "name", "interface", "revision"}`, the revision being the
//! WorkloadEndpoint's (or a later one). ADD polls for a file whose revision
//! reaches the one its own write returned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How often the status file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// What Felix reports for a programmed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EndpointStatus {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub interface: String,
    pub revision: u64,
}

/// The status file of pod `namespace/pod`.
pub fn status_path(dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    dir.join(format!("{namespace}.{pod}.json"))
}

/// Whether the file at `path` reports the endpoint programmed at
/// `revision` or later. A missing, partial or foreign file is "not yet".
pub fn programmed(path: &Path, namespace: &str, pod: &str, revision: u64) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    match serde_json::from_slice::<EndpointStatus>(&bytes) {
        Ok(s) => s.namespace == namespace && s.name == pod && s.revision >= revision,
        Err(_) => false,
    }
}

/// Why the wait ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Felix did not report {namespace}/{pod} programmed at revision {revision} or later in {path} within {timeout:?}"
)]
pub struct WaitTimeout {
    pub namespace: String,
    pub pod: String,
    pub revision: u64,
    pub path: PathBuf,
    pub timeout: Duration,
}

/// Polls until the endpoint is reported programmed at `revision` or later,
/// for at most `timeout`; returns how long it took.
pub async fn wait_programmed(
    dir: &Path,
    namespace: &str,
    pod: &str,
    revision: u64,
    timeout: Duration,
) -> Result<Duration, WaitTimeout> {
    let path = status_path(dir, namespace, pod);
    let start = Instant::now();
    loop {
        if programmed(&path, namespace, pod, revision) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                namespace: namespace.into(),
                pod: pod.into(),
                revision,
                path,
                timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_matching_revision_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_path(dir.path(), "production", "api");
        assert_eq!(path.file_name().unwrap(), "production.api.json");
        let cases = [
            (None, 10, false),
            (Some("{\"namespace\":\"production\",\"na"), 10, false),
            (
                Some(r#"{"namespace":"production","name":"api","interface":"mnl1","revision":9}"#),
                10,
                false,
            ),
            (
                Some(r#"{"namespace":"production","name":"api","interface":"mnl1","revision":10}"#),
                10,
                true,
            ),
            (
                Some(r#"{"namespace":"production","name":"api","revision":12,"extra":1}"#),
                10,
                true,
            ),
            (
                Some(r#"{"namespace":"staging","name":"api","revision":12}"#),
                10,
                false,
            ),
        ];
        for (content, revision, want) in cases {
            match content {
                Some(c) => std::fs::write(&path, c).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            assert_eq!(
                programmed(&path, "production", "api", revision),
                want,
                "{content:?}"
            );
        }
    }

    #[tokio::test]
    async fn waiting_ends_when_felix_reports_or_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let e = wait_programmed(dir.path(), "ns", "p", 5, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("ns/p"), "{e}");
        let path = status_path(dir.path(), "ns", "p");
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            std::fs::write(
                &path,
                r#"{"namespace":"ns","name":"p","interface":"x","revision":5}"#,
            )
            .unwrap();
        });
        let took = wait_programmed(dir.path(), "ns", "p", 5, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(took >= Duration::from_millis(25), "{took:?}");
        writer.await.unwrap();
    }
}
