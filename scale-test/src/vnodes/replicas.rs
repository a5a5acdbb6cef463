//! Typha replicas for the virtual-node run: real `typha` processes on
//! loopback (ports below 32768, where the kernel hands out no ephemeral
//! ports), one Raft cluster, a temporary data directory each, killed and
//! removed when dropped, also after an error.
//!
//! Replica `i` (from 0) listens on its own loopback address `127.0.0.(i+1)`,
//! so that with the lean Sync transport every replica's sync listener can
//! use the one port a client is configured with (`typhaSyncPort`), as on
//! real nodes where each replica has its own address.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One replica: its listeners and its process (gone once killed).
#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    pub grpc: SocketAddr,
    /// The lean transport's sync listener, when the run uses it.
    pub sync: Option<SocketAddr>,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// The process id, while the replica runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The Sync and resource API address, `HOST:PORT`.
    pub fn address(&self) -> String {
        self.grpc.to_string()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Its `/metrics` page.
    pub async fn metrics_text(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics, "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics on replica {}: HTTP {status}", self.id);
        }
        Ok(body)
    }
}

/// The running replicas and their directory.
#[derive(Debug)]
pub struct Replicas {
    pub replicas: Vec<Replica>,
    dir: tempfile::TempDir,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The loopback address of replica `i` (from 0).
pub fn replica_host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// A loopback port below 32768 free on every one of `hosts`, a different
/// one at each call in this process.
fn free_port(hosts: &[Ipv4Addr]) -> Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 7_000;
    for _ in 0..12_000 {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 20_000 + ((base + k * 13) % 12_000) as u16;
        if hosts.iter().all(|h| TcpListener::bind((*h, p)).is_ok()) {
            return Ok(p);
        }
    }
    bail!("no free loopback port between 20000 and 32000")
}

/// A fresh peer token: 32 bytes of the kernel's randomness, as hex.
fn random_token() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Replicas {
    /// Starts `n` replicas of `binary` that bootstrap one cluster, each
    /// serving at most `max_clients` Sync clients (and, with `lean`, the
    /// lean transport on one port shared by all), and waits until every one
    /// is ready (it knows a leader).
    pub async fn start(
        binary: &Path,
        n: usize,
        max_clients: usize,
        lean: bool,
    ) -> Result<Replicas> {
        if !binary.is_file() {
            bail!(
                "no typha binary at {} (build it with `cargo build -p manul-typha --bin typha`)",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("manul-vnodes-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let token = dir.path().join("peer-token");
        std::fs::write(&token, random_token()?)
            .with_context(|| format!("cannot write {}", token.display()))?;
        if n > 254 {
            bail!("at most 254 replicas (one loopback address each)");
        }
        let hosts: Vec<Ipv4Addr> = (0..n).map(replica_host).collect();
        let sync_port = if lean { Some(free_port(&hosts)?) } else { None };
        let mut replicas = Vec::new();
        for (i, &host) in hosts.iter().enumerate() {
            let at = |p: u16| SocketAddr::from((host, p));
            replicas.push(Replica {
                id: i as u64 + 1,
                grpc: at(free_port(&[host])?),
                sync: sync_port.map(at),
                peer: at(free_port(&[host])?),
                metrics: at(free_port(&[host])?),
                log: dir.path().join(format!("typha-{}.log", i + 1)),
                child: None,
            });
        }
        let peers = replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut all = Replicas { replicas, dir };
        for r in &mut all.replicas {
            let data = all.dir.path().join(format!("data-{}", r.id));
            let log = std::fs::File::create(&r.log)
                .with_context(|| format!("cannot create {}", r.log.display()))?;
            let mut command = Command::new(binary);
            if let Some(sync) = r.sync {
                command.arg("--sync-listen").arg(sync.to_string());
            }
            let child = command
                .arg("--node-id")
                .arg(r.id.to_string())
                .arg("--listen")
                .arg(r.grpc.to_string())
                .arg("--peer-listen")
                .arg(r.peer.to_string())
                .arg("--metrics")
                .arg(r.metrics.to_string())
                .arg("--peer-token-file")
                .arg(&token)
                .arg("--data-dir")
                .arg(&data)
                .arg("--peers")
                .arg(&peers)
                .arg("--max-connections")
                .arg(max_clients.to_string())
                .arg("--shutdown-spread-secs")
                .arg("0")
                .env(
                    "RUST_LOG",
                    std::env::var("TYPHA_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot run {}", binary.display()))?;
            r.child = Some(child);
        }
        for r in &mut all.replicas {
            wait_ready(r, Duration::from_secs(60)).await?;
        }
        Ok(all)
    }

    /// Every replica's API address, in id order.
    pub fn addresses(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::address).collect()
    }

    /// The port of every replica's lean sync listener, when they have one.
    pub fn sync_port(&self) -> Option<u16> {
        self.replicas.first().and_then(|r| r.sync).map(|a| a.port())
    }

    /// The index of the replica that leads (from each live replica's
    /// `typha_raft_is_leader`), waiting up to `within` for one.
    pub async fn leader(&self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if r.child.is_none() {
                    continue;
                }
                if let Ok(text) = r.metrics_text().await
                    && metric(&text, "typha_raft_is_leader") == Some(1.0)
                {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!("no replica leads after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs replica `i` and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let r = self
            .replicas
            .get_mut(i)
            .with_context(|| format!("no replica {i}"))?;
        if let Some(mut c) = r.child.take() {
            c.kill()
                .with_context(|| format!("cannot kill replica {}", r.id))?;
            c.wait()
                .with_context(|| format!("cannot reap replica {}", r.id))?;
        }
        Ok(())
    }

    /// Fails, with the log's tail, when a replica that should run has
    /// exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for r in &mut self.replicas {
            if let Some(c) = r.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "typha replica {} exited ({status}); its log ends with:\n{}",
                    r.id,
                    r.log_tail()
                );
            }
        }
        Ok(())
    }
}

async fn wait_ready(r: &mut Replica, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(c) = r.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "typha replica {} exited at start-up ({status}); its log ends with:\n{}",
                r.id,
                r.log_tail()
            );
        }
        if let Ok((200, _)) = http_get(r.metrics, "/readyz").await {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "typha replica {} not ready after {limit:?}; its log ends with:\n{}",
                r.id,
                r.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET: the status code and the body (with any chunk
/// framing left in: callers read whole lines of the text format).
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{addr}{path}: malformed response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("GET http://{addr}{path}: no status"))?;
    Ok((status, body.to_string()))
}

/// The sum of every sample of metric `name` (all label sets) in the text
/// format; `None` when it has none.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn metric_sums_label_sets_and_ignores_longer_names() {
        let text = "# TYPE a counter\na_total 3\na_total_x 9\nb{r=\"x\"} 1\nb{r=\"y y\"} 2\n";
        assert_eq!(metric(text, "a_total"), Some(3.0));
        assert_eq!(metric(text, "b"), Some(3.0));
        assert_eq!(metric(text, "c"), None);
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_differ() {
        let hosts = [replica_host(0), replica_host(1)];
        let a = free_port(&hosts).unwrap();
        let b = free_port(&hosts[..1]).unwrap();
        assert_ne!(a, b);
        assert!((20_000..32_768).contains(&a) && (20_000..32_768).contains(&b));
        assert_eq!(replica_host(2), Ipv4Addr::new(127, 0, 0, 3));
    }
}
