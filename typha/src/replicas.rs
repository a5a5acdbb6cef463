//! `typha` replicas as child processes on loopback, for benchmarks and
//! scale tests: one Raft cluster sharing a fresh peer token, listeners on
//! loopback ports below 32768 (where the kernel hands out no ephemeral
//! ports), a temporary directory for data and logs, readiness (ready and
//! serving Sync clients), `/metrics` scraping and `/proc` memory.
//!
//! [`Replicas`] kills its children and removes its directory when dropped,
//! also after an error. It listens nowhere but on loopback, and it does
//! not build or find the binary: the caller names it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::peer_auth::PeerToken;

/// Why replicas could not be run or asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicasError {
    #[error("no typha binary at {}", .0.display())]
    NoBinary(PathBuf),
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the peer token")]
    Token(#[source] crate::peer_auth::TokenError),
    #[error("at most 254 replicas on their own addresses (one loopback address each)")]
    TooMany,
    #[error("no free loopback port between 20000 and 32000")]
    NoPort,
    #[error("no replica {0}")]
    NoReplica(u64),
    #[error("typha replica {id} exited ({status}); its log ends with:\n{log}")]
    Exited {
        id: u64,
        status: ExitStatus,
        log: String,
    },
    #[error("typha replica {id} not ready after {limit:?}; its log ends with:\n{log}")]
    NotReady {
        id: u64,
        limit: Duration,
        log: String,
    },
    #[error("no replica leads after {0:?}")]
    NoLeader(Duration),
    #[error("GET http://{addr}{path}: {reason}")]
    Http {
        addr: SocketAddr,
        path: String,
        reason: String,
    },
    #[error("no {field} in {path}")]
    Proc { field: &'static str, path: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReplicasError {
    let what = what.into();
    move |source| ReplicasError::Io { what, source }
}

/// Where the replicas' lean Sync transport listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncListen {
    /// No sync listener (gRPC Sync only).
    None,
    /// A port of its own on each replica.
    PerReplica,
    /// One port on every replica's address (needs [`Options::own_addresses`]),
    /// as a client configured with one `typhaSyncPort` expects.
    Shared,
}

/// How to run the replicas.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub replicas: usize,
    /// Each replica's `--max-connections` (and per listener).
    pub max_connections: usize,
    /// Replica `i` (from 0) on its own address `127.0.0.(i+1)`
    /// ([`replica_host`]); otherwise all on 127.0.0.1.
    pub own_addresses: bool,
    pub sync: SyncListen,
    /// More flags for every replica (TLS, say).
    pub extra_args: Vec<OsString>,
    /// `RUST_LOG` for the children.
    pub log_filter: String,
    /// Keep the directory (data and logs) at the end, and say where.
    pub keep_dir: bool,
}

impl Options {
    /// `replicas` replicas of `binary` on 127.0.0.1 with a sync listener
    /// each, logging warnings.
    pub fn new(binary: impl Into<PathBuf>, replicas: usize, max_connections: usize) -> Options {
        Options {
            binary: binary.into(),
            replicas,
            max_connections,
            own_addresses: false,
            sync: SyncListen::PerReplica,
            extra_args: Vec::new(),
            log_filter: "warn".into(),
            keep_dir: false,
        }
    }
}

/// One replica: its listeners and its process (gone once killed).
#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    /// The Sync and resource API listener.
    pub grpc: SocketAddr,
    /// The lean transport's sync listener, when it has one.
    pub sync: Option<SocketAddr>,
    /// The peer listener (Raft, Cluster), behind [`Replicas::token`].
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub peak_rss: u64,
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

    /// The last 20 lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Its current and peak resident memory (a killed replica: an error).
    pub fn memory(&self) -> Result<Memory, ReplicasError> {
        let pid = self.pid().ok_or(ReplicasError::NoReplica(self.id))?;
        memory(pid)
    }

    /// Its `/metrics` page.
    pub async fn metrics_text(&self) -> Result<String, ReplicasError> {
        let (status, body) = http_get(self.metrics, "/metrics").await?;
        if status != 200 {
            return Err(ReplicasError::Http {
                addr: self.metrics,
                path: "/metrics".into(),
                reason: format!("HTTP {status}"),
            });
        }
        Ok(body)
    }

    fn exited(&mut self) -> Result<(), ReplicasError> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait().map_err(io("wait for a replica"))?
        {
            return Err(ReplicasError::Exited {
                id: self.id,
                status,
                log: self.log_tail(),
            });
        }
        Ok(())
    }
}

/// The running replicas and their directory.
#[derive(Debug)]
pub struct Replicas {
    pub replicas: Vec<Replica>,
    /// The replicas' shared peer token.
    pub token: PeerToken,
    /// Removed when dropped (`None`: kept).
    dir: Option<tempfile::TempDir>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The directory goes with `dir`, after the children.
    }
}

/// The loopback address of replica `i` (from 0) on its own address.
pub fn replica_host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// A loopback port below 32768 free on every one of `hosts`, a different
/// one at each call in this process.
pub fn free_port(hosts: &[Ipv4Addr]) -> Result<u16, ReplicasError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id() % 7_000;
    for _ in 0..12_000 {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 20_000 + ((base + k * 13) % 12_000) as u16;
        if hosts.iter().all(|h| TcpListener::bind((*h, p)).is_ok()) {
            return Ok(p);
        }
    }
    Err(ReplicasError::NoPort)
}

impl Replicas {
    /// Starts the replicas, which bootstrap one cluster (a single replica
    /// is a cluster of one), and waits until every one is ready and serves
    /// Sync clients.
    pub async fn start(opts: &Options) -> Result<Replicas, ReplicasError> {
        if !opts.binary.is_file() {
            return Err(ReplicasError::NoBinary(opts.binary.clone()));
        }
        let n = opts.replicas;
        if opts.own_addresses && n > 254 {
            return Err(ReplicasError::TooMany);
        }
        let dir = tempfile::Builder::new()
            .prefix("manul-typha-replicas-")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        let token = PeerToken::generate().map_err(ReplicasError::Token)?;
        let token_file = dir.path().join("peer-token");
        std::fs::write(&token_file, token.secret())
            .map_err(io(format!("write {}", token_file.display())))?;
        let hosts: Vec<Ipv4Addr> = (0..n)
            .map(|i| {
                if opts.own_addresses {
                    replica_host(i)
                } else {
                    Ipv4Addr::LOCALHOST
                }
            })
            .collect();
        let shared = match opts.sync {
            SyncListen::Shared => Some(free_port(&hosts)?),
            _ => None,
        };
        let mut replicas = Vec::with_capacity(n);
        for (i, &host) in hosts.iter().enumerate() {
            let at = |p: u16| SocketAddr::from((host, p));
            let sync = match opts.sync {
                SyncListen::None => None,
                SyncListen::PerReplica => Some(at(free_port(&[host])?)),
                SyncListen::Shared => shared.map(at),
            };
            replicas.push(Replica {
                id: i as u64 + 1,
                grpc: at(free_port(&[host])?),
                sync,
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
        let mut all = Replicas {
            replicas,
            token,
            dir: None,
        };
        for r in &mut all.replicas {
            let data = dir.path().join(format!("data-{}", r.id));
            let log =
                std::fs::File::create(&r.log).map_err(io(format!("create {}", r.log.display())))?;
            let mut command = Command::new(&opts.binary);
            if let Some(sync) = r.sync {
                command.arg("--sync-listen").arg(sync.to_string());
            }
            let max = opts.max_connections.to_string();
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
                .arg(&token_file)
                .arg("--data-dir")
                .arg(&data)
                .arg("--peers")
                .arg(&peers)
                .arg("--max-connections")
                .arg(&max)
                .arg("--max-connections-per-listener")
                .arg(&max)
                .arg("--shutdown-spread-secs")
                .arg("0")
                .args(&opts.extra_args)
                .env("RUST_LOG", &opts.log_filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(io(format!("run {}", opts.binary.display())))?;
            r.child = Some(child);
        }
        if opts.keep_dir {
            let kept = dir.keep();
            tracing::info!("the replicas' data and logs are kept in {}", kept.display());
        } else {
            all.dir = Some(dir);
        }
        for r in &mut all.replicas {
            wait_ready(r, Duration::from_secs(60)).await?;
        }
        Ok(all)
    }

    /// Replica `id` (from 1).
    pub fn replica(&self, id: u64) -> Result<&Replica, ReplicasError> {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .ok_or(ReplicasError::NoReplica(id))
    }

    /// Every replica's API address, in id order.
    pub fn addresses(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::address).collect()
    }

    /// The port of every replica's lean sync listener, when they share one.
    pub fn sync_port(&self) -> Option<u16> {
        let first = self.replicas.first()?.sync?.port();
        self.replicas
            .iter()
            .all(|r| r.sync.map(|s| s.port()) == Some(first))
            .then_some(first)
    }

    /// The index of the replica that leads (from each live replica's
    /// `typha_raft_is_leader`), waiting up to `within` for one.
    pub async fn leader(&self, within: Duration) -> Result<usize, ReplicasError> {
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
                return Err(ReplicasError::NoLeader(within));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the replica at index `i` and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<(), ReplicasError> {
        let r = self
            .replicas
            .get_mut(i)
            .ok_or(ReplicasError::NoReplica(i as u64 + 1))?;
        if let Some(mut c) = r.child.take() {
            c.kill().map_err(io(format!("kill replica {}", r.id)))?;
            c.wait().map_err(io(format!("reap replica {}", r.id)))?;
        }
        Ok(())
    }

    /// Fails, with the log's tail, when a replica that should run has
    /// exited.
    pub fn check_alive(&mut self) -> Result<(), ReplicasError> {
        self.replicas.iter_mut().try_for_each(Replica::exited)
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn wait_ready(r: &mut Replica, limit: Duration) -> Result<(), ReplicasError> {
    let start = Instant::now();
    loop {
        r.exited()?;
        // Ready (a leader is known), and serving Sync clients (it has
        // applied what it knows committed since).
        if let Ok((200, _)) = http_get(r.metrics, "/readyz").await
            && let Ok((200, metrics)) = http_get(r.metrics, "/metrics").await
            && metrics.lines().any(|l| l == "typha_serving 1")
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(ReplicasError::NotReady {
                id: r.id,
                limit,
                log: r.log_tail(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Current and peak resident memory of process `pid`, from `/proc`.
pub fn memory(pid: u32) -> Result<Memory, ReplicasError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io(format!("read {path}")))?;
    let field = |name: &'static str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .ok_or(ReplicasError::Proc {
                field: name,
                path: path.clone(),
            })
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak_rss: field("VmHWM:")?,
    })
}

/// A plain HTTP/1.1 GET (ten seconds at most): the status code and the
/// body, chunk framing removed.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), ReplicasError> {
    let failed = |reason: String| ReplicasError::Http {
        addr,
        path: path.to_string(),
        reason,
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| failed("malformed response".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| failed("no status".into()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        let _ = write!(out, "{}", &after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
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
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
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

    #[test]
    fn a_missing_binary_is_named() {
        let opts = Options::new("/nonexistent/typha", 1, 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(Replicas::start(&opts)).unwrap_err();
        assert_eq!(err.to_string(), "no typha binary at /nonexistent/typha");
    }
}
