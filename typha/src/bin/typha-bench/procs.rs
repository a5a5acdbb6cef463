//! Typha for the benchmarks: the replicas as child processes
//! ([`manul_typha::replicas`], which kills them and removes their directory
//! when dropped, so an error anywhere in a benchmark cleans up too), with
//! TLS when asked, and a process's CPU time from `/proc`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use manul_typha::replicas::{Options, Replicas};
pub use manul_typha::replicas::{memory, metric};

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

fn unique_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("typha-bench-{}-{nanos}", std::process::id()))
}

/// Starts `n` replicas on 127.0.0.1 (a single-node cluster for 1), each
/// with a sync listener of its own and room for `max_connections`
/// clients, and waits until each is ready and serves Sync clients.
pub async fn start(opts: &TyphaOptions, n: usize, max_connections: usize) -> Result<Replicas> {
    let mut options = Options::new(&opts.binary, n, max_connections);
    options.log_filter.clone_from(&opts.log_filter);
    options.keep_dir = opts.keep_temp;
    options.extra_args = opts.tls.as_ref().map(|t| t.args()).unwrap_or_default();
    Replicas::start(&options).await.with_context(|| {
        format!(
            "cannot run typha (build it with `cargo build --release -p manul-typha --bin typha`, or pass --typha {})",
            opts.binary.display()
        )
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
