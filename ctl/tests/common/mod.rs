//! What the online CLI tests share: a single-node Typha in this process on
//! a loopback port, and the real `manulctl` binary run against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use manul_typha::server::Running;

pub mod flows;

/// The repository's `examples/`.
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

pub async fn manulctl(server: &str, args: &[&str]) -> Output {
    manulctl_env(server, args, &[]).await
}

/// Like [`manulctl`], with more environment variables.
pub async fn manulctl_env(server: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manulctl"));
    cmd.args(args)
        .envs(env.iter().copied())
        .env("MANUL_SERVER", server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts a single-node Typha with its data in `dir` and waits until it
/// leads; returns it and its address.
pub async fn typha(dir: &std::path::Path) -> (Running, String) {
    let typha =
        manul_typha::server::start_single_loopback(dir.to_path_buf(), Duration::from_secs(10))
            .await
            .unwrap();
    let addr = typha.local_addr.to_string();
    (typha, addr)
}

/// A loopback port below 32768 that nothing listens on right now (the
/// kernel's ephemeral ports start at 32768).
pub fn free_low_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..4000 {
        let n = std::process::id().wrapping_mul(7919) + NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (n % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}
