//! Typha child processes: free ports, a temporary data directory, spawning,
//! readiness, memory (from `/proc`) and `/metrics` scraping. A [`Cluster`]
//! kills its children and removes its directory when dropped, so an error
//! anywhere in a benchmark cleans up too.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use manul_typha::peer_auth::PeerToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to run the `typha` binary.
#[derive(Debug, Clone)]
pub struct TyphaOptions {
    pub binary: PathBuf,
    /// `RUST_LOG` for the children.
    pub log_filter: String,
    /// Keep the temporary directory (data and logs) at the end.
    pub keep_temp: bool,
    /// TLS on every listener and client.
    pub tls: Option<std::sync::Arc<BenchTls>>,
}

/// Development certificates for a TLS run, made once per process (every
/// replica serves the same `typha` certificate; clients present `admin`).
#[derive(Debug)]
pub struct BenchTls {
    dir: PathBuf,
}

impl Drop for BenchTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl BenchTls {
    /// Makes the certificates and installs the clients' transport.
    pub fn create() -> Result<BenchTls> {
        let dir = unique_dir().with_extension("certs");
        let set = manul_tls::dev::DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: manul_tls::dev::TYPHA_CN.into(),
            nodes: Vec::new(),
            days: 1,
        };
        manul_tls::dev::write_dev_set(&dir, &set)?;
        let settings = manul_tls::client::ClientSettings {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("admin.crt"),
            key_file: dir.join("admin.key"),
            server: manul_tls::Expected::new([manul_tls::dev::TYPHA_CN.to_string()], [], "bench")?,
        };
        crate::clients::use_transport(manul_tls::connect::Transport::Tls(settings.config()?));
        Ok(BenchTls { dir })
    }

    /// The `typha` flags that turn TLS on.
    fn args(&self) -> Vec<std::ffi::OsString> {
        let file = |name: &str| self.dir.join(name).into_os_string();
        vec![
            "--ca-file".into(),
            file("ca.crt"),
            "--server-cert-file".into(),
            file("typha.crt"),
            "--server-key-file".into(),
            file("typha.key"),
            "--client-cn".into(),
            manul_tls::dev::FELIX_CN.into(),
        ]
    }
}

/// One spawned replica.
#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    pub grpc: SocketAddr,
    /// The sync listener of the lean transport.
    pub sync: SocketAddr,
    /// The peer listener (Raft, Cluster), behind [`Cluster::token`].
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current and peak resident memory of the process.
    pub fn memory(&self) -> Result<Memory> {
        memory(self.pid())
    }

    pub async fn metrics_text(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics, "/metrics").await?;
        if status != 200 {
            bail!("GET /metrics on replica {}: HTTP {status}", self.id);
        }
        Ok(body)
    }
}

/// Spawned replicas and their temporary directory.
#[derive(Debug)]
pub struct Cluster {
    pub replicas: Vec<Replica>,
    root: PathBuf,
    keep: bool,
    /// The replicas' shared peer token.
    pub token: PeerToken,
}

/// Ports nobody listens on right now: all bound at once (so they differ),
/// then released for the children to take.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn unique_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("typha-bench-{}-{nanos}", std::process::id()))
}

impl Cluster {
    /// Spawns `n` replicas (a single-node cluster for 1; otherwise every
    /// replica lists all as peers) and waits until each reports ready and serves Sync clients.
    pub async fn start(opts: &TyphaOptions, n: usize, max_connections: usize) -> Result<Cluster> {
        if !opts.binary.is_file() {
            bail!(
                "no typha binary at {} (build it with `cargo build --release -p manul-typha --bin typha`, or pass --typha PATH)",
                opts.binary.display()
            );
        }
        let root = unique_dir();
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let mut cluster = Cluster {
            replicas: Vec::new(),
            root,
            keep: opts.keep_temp,
            token: PeerToken::generate()?,
        };
        let token_file = cluster.root.join("peer-token");
        std::fs::write(&token_file, cluster.token.secret())
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        let ports = free_ports(4 * n)?;
        let grpc: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], ports[4 * i])))
            .collect();
        let peer: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], ports[4 * i + 2])))
            .collect();
        let peers = peer
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        for (i, &listen) in grpc.iter().enumerate() {
            let id = i as u64 + 1;
            let metrics = SocketAddr::from(([127, 0, 0, 1], ports[4 * i + 1]));
            let sync = SocketAddr::from(([127, 0, 0, 1], ports[4 * i + 3]));
            let dir = cluster.root.join(format!("replica-{id}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let log = dir.join("typha.log");
            let log_file =
                File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let child = Command::new(&opts.binary)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--peer-listen")
                .arg(peer[i].to_string())
                .arg("--sync-listen")
                .arg(sync.to_string())
                .arg("--peer-token-file")
                .arg(&token_file)
                .arg("--metrics")
                .arg(metrics.to_string())
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--peers")
                .arg(&peers)
                .arg("--max-connections")
                .arg(max_connections.to_string())
                .arg("--max-connections-per-listener")
                .arg(max_connections.to_string())
                .arg("--shutdown-spread-secs")
                .arg("0")
                .args(opts.tls.as_ref().map(|t| t.args()).unwrap_or_default())
                .env("RUST_LOG", &opts.log_filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("cannot run {}", opts.binary.display()))?;
            cluster.replicas.push(Replica {
                id,
                grpc: listen,
                sync,
                peer: peer[i],
                metrics,
                log,
                child,
            });
        }
        for r in &mut cluster.replicas {
            wait_ready(r, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    pub fn replica(&self, id: u64) -> Result<&Replica> {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .with_context(|| format!("no replica {id}"))
    }

    /// Fails (with the log's tail) when a child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for r in &mut self.replicas {
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "typha replica {} exited ({status}); its log ends with:\n{}",
                    r.id,
                    log_tail(&r.log)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        if self.keep {
            eprintln!("kept {}", self.root.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("cannot remove {}: {e}", self.root.display());
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn wait_ready(r: &mut Replica, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = r.child.try_wait()? {
            bail!(
                "typha replica {} exited at start-up ({status}); its log ends with:\n{}",
                r.id,
                log_tail(&r.log)
            );
        }
        // Ready (a leader is known), and serving Sync clients (it has
        // applied what it knows committed since).
        if let Ok((200, _)) = http_get(r.metrics, "/readyz").await
            && let Ok((200, metrics)) = http_get(r.metrics, "/metrics").await
            && metrics.lines().any(|l| l == "typha_serving 1")
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "typha replica {} not ready after {limit:?}; its log ends with:\n{}",
                r.id,
                log_tail(&r.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub peak_rss: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Result<u64> {
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
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak_rss: field("VmHWM:")?,
    })
}

/// A process's CPU time so far, in user space and in the kernel.
#[derive(Debug, Clone, Copy)]
pub struct CpuSplit {
    pub user: f64,
    pub system: f64,
}

impl std::ops::Sub for CpuSplit {
    type Output = CpuSplit;
    fn sub(self, earlier: CpuSplit) -> CpuSplit {
        CpuSplit {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// User and system CPU seconds of process `pid`, from `/proc/PID/stat`.
pub fn cpu_split(pid: u32) -> Result<CpuSplit> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15; USER_HZ is 100 on Linux.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("malformed {path}"))
    };
    Ok(CpuSplit {
        user: tick(11)? / 100.0,
        system: tick(12)? / 100.0,
    })
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
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

/// The sum of every sample of a metric (all label sets) in the text format.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_label_sets() {
        let text = "# TYPE a counter\na_total 3\na_total_x 9\nb{r=\"x\"} 1\nb{r=\"y y\"} 2\n";
        assert_eq!(metric(text, "a_total"), Some(3.0));
        assert_eq!(metric(text, "b"), Some(3.0));
        assert_eq!(metric(text, "c"), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
