//! One `typha` process on loopback serving clients over TLS with the
//! development certificates, for tests of its listeners: the flags that
//! give a process its server identity, the certificates, a Felix's
//! client transport, and the process killed when dropped, even on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_listen::testing::metric;
use manul_tls::Expected;
use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;

use super::free_port;

/// Adds the flags that make `cmd`'s `typha` serve with the CA, server
/// certificate and key in `certs` (`ca.crt`, `typha.crt`, `typha.key`).
pub fn tls_server_args<'a>(cmd: &'a mut Command, certs: &Path) -> &'a mut Command {
    cmd.arg("--ca-file")
        .arg(certs.join("ca.crt"))
        .arg("--server-cert-file")
        .arg(certs.join("typha.crt"))
        .arg("--server-key-file")
        .arg(certs.join("typha.key"))
}

/// Writes the development set in `certs`: a Typha for 127.0.0.1 named
/// `manul-typha`, and the node `node1`'s Felix.
pub fn dev_certs(certs: &Path) {
    manul_tls::dev::write_dev_set(
        certs,
        &manul_tls::dev::DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: "manul-typha".into(),
            nodes: vec!["node1".into()],
            days: 1,
        },
    )
    .unwrap();
}

/// The transport of `node1`'s Felix, with the certificates in `certs`.
pub fn felix_tls(certs: &Path) -> Transport {
    transport(certs, "felix-node1", "manul-typha")
}

/// The transport of the client whose certificate and key are `who.crt`
/// and `who.key` in `certs`, expecting a Typha named `typha_cn`.
pub fn transport(certs: &Path, who: &str, typha_cn: &str) -> Transport {
    let settings = ClientSettings {
        ca_file: certs.join("ca.crt"),
        cert_file: certs.join(format!("{who}.crt")),
        key_file: certs.join(format!("{who}.key")),
        server: Expected::new([typha_cn.to_string()], [], "test").unwrap(),
    };
    Transport::Tls(settings.config().unwrap())
}

/// A `typha` process serving over TLS; killed when dropped.
pub struct TlsTypha {
    child: Child,
    pub certs: PathBuf,
    /// The gRPC client listener's port.
    pub port: u16,
    pub metrics_port: u16,
    /// The lean Sync listener's port, when started with one.
    pub sync_port: Option<u16>,
}

impl Drop for TlsTypha {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsTypha {
    /// Starts a one-node `typha` with its data and the development
    /// certificates under `dir`, a handshake timeout of 2 s, and a lean
    /// Sync listener when `sync` is set; returns once it serves.
    pub async fn start(dir: &Path, sync: bool) -> TlsTypha {
        let certs = dir.join("certs");
        dev_certs(&certs);
        let port = free_port();
        let peer_port = free_port();
        let metrics_port = free_port();
        let sync_port = sync.then(free_port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
        cmd.args(["--node-id", "1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--peer-listen", &format!("127.0.0.1:{peer_port}")])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")]);
        if let Some(p) = sync_port {
            cmd.args(["--sync-listen", &format!("127.0.0.1:{p}")]);
        }
        cmd.arg("--data-dir").arg(dir.join("data"));
        tls_server_args(&mut cmd, &certs)
            .args(["--client-cn", "manul-felix"])
            .args(["--handshake-timeout-secs", "2"])
            .args(["--shutdown-spread-secs", "0"])
            .env(
                "RUST_LOG",
                std::env::var("TYPHA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        let typha = TlsTypha {
            child: cmd.spawn().unwrap(),
            certs,
            port,
            metrics_port,
            sync_port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(metrics_port, "typha_serving").await != Some(1.0) {
            assert!(Instant::now() < deadline, "typha does not serve");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        typha
    }
}
