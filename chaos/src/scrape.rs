//! Reads one gauge from a process's Prometheus metrics listener: a plain
//! HTTP/1.1 GET of `/metrics`, and the pure parse of its text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of the sample named exactly `name` (no labels) in a
/// Prometheus text exposition.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// `name`'s value at `addr` (run from a task in the namespace that reaches
/// it), or `None` when it does not answer within `timeout` or has no such
/// gauge.
pub async fn read_gauge(addr: SocketAddr, name: &str, timeout: Duration) -> Option<f64> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        gauge(&text, name)
    };
    tokio::time::timeout(timeout, fetch).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_is_found_by_its_exact_name() {
        let text = "# HELP typha_raft_snapshot_index Index of the last Raft snapshot\n# TYPE typha_raft_snapshot_index gauge\ntypha_raft_snapshot_index 20004\ntypha_raft_snapshot_index_total 3\nother{a=\"b\"} 1\n";
        assert_eq!(gauge(text, "typha_raft_snapshot_index"), Some(20004.0));
        assert_eq!(gauge(text, "typha_raft"), None);
        assert_eq!(gauge("x notanumber\n", "x"), None);
    }
}
