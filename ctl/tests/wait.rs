//! Online commands wait for Typha up to `--timeout`: for it to accept a
//! connection and to have a leader, and then say what they waited for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{examples, free_low_port, manulctl, text};
use manul_typha::server::{TyphaConfig, start};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_run_before_typha_starts_goes_through_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr = loopback(free_low_port());
    let server = addr.to_string();
    let policy = examples().join("frontend-to-api.yaml");
    let apply = {
        let server = server.clone();
        let policy = policy.to_str().unwrap().to_string();
        tokio::spawn(async move {
            manulctl(&server, &["--timeout", "30s", "apply", "-f", &policy]).await
        })
    };
    // Nothing listens yet: manulctl is retrying refused connections.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!apply.is_finished(), "apply gave up before Typha started");
    let typha = start(TyphaConfig::single(dir.path().to_path_buf(), addr))
        .await
        .unwrap();
    let started = Instant::now();
    let out = apply.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("NetworkPolicy production/frontend-to-api ok"),
        "{stdout}"
    );
    eprintln!(
        "apply acknowledged {:?} after Typha started",
        started.elapsed()
    );

    let out = manulctl(&server, &["get", "networkpolicy", "-n", "production"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("frontend-to-api"));
    typha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_a_leader_fails_after_the_timeout_naming_what_it_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    // Two voters, the second never started: no election can be won. A
    // port found free can be taken by another process before Typha binds
    // it: then another port is tried.
    let mut tries = 0;
    let (typha, server) = loop {
        let addr = loopback(free_low_port());
        let data = dir.path().join(format!("try-{tries}"));
        let mut config = TyphaConfig::single(data, addr);
        config
            .peers
            .insert(2, loopback(free_low_port()).to_string());
        match start(config).await {
            Ok(typha) => break (typha, addr.to_string()),
            Err(manul_typha::server::ServerError::Listen { .. }) if tries < 5 => tries += 1,
            Err(e) => panic!("{e}"),
        }
    };

    let policy = examples().join("frontend-to-api.yaml");
    let began = Instant::now();
    let out = manulctl(
        &server,
        &["--timeout", "1s", "apply", "-f", policy.to_str().unwrap()],
    )
    .await;
    let waited = began.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let want =
        format!("error: no leader elected after waiting 1s (--timeout) for Typha at {server}");
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(stderr.contains("no leader is elected yet"), "{stderr}");
    assert!(waited >= Duration::from_secs(1), "gave up after {waited:?}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));

    // Reads are linearizable: without a leader to confirm what is
    // committed, a replica does not serve its own state; the read waits
    // like the write and fails the same way.
    let began = Instant::now();
    let out = manulctl(&server, &["--timeout", "1s", "get", "gnp"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    typha.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_after_the_timeout_naming_it() {
    let server = loopback(free_low_port()).to_string();
    let began = Instant::now();
    let out = manulctl(&server, &["--timeout", "500ms", "get", "gnp"]).await;
    let waited = began.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let want =
        format!("error: cannot connect to Typha at {server} after waiting 500ms (--timeout)");
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        waited >= Duration::from_millis(500),
        "gave up after {waited:?}"
    );
}

#[tokio::test]
async fn a_bad_timeout_is_bad_input() {
    for bad in ["10h", "soon", "-1s"] {
        let flag = format!("--timeout={bad}");
        let out = manulctl("127.0.0.1:1", &[&flag, "get", "gnp"]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--timeout"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Typha's answers for "no leader to commit this" are the ones the client
/// recognises as safe to send again (they live in different crates).
#[test]
fn typhas_no_leader_answers_are_recognised_as_no_leader() {
    use manul_client::ClientError;
    use manul_typha::node::NodeError;
    let answers = [
        NodeError::NotLeader { leader: None },
        NodeError::NotLeader {
            leader: Some((2, "127.0.0.1:5474".into())),
        },
    ];
    for answer in answers {
        let status = manul_typha::api::node_status(answer);
        let e = ClientError::from_status(status, "127.0.0.1:5473");
        assert!(e.is_no_leader(), "{e}");
    }
    let e = ClientError::from_status(
        manul_typha::api::node_status(NodeError::Stopped),
        "127.0.0.1:5473",
    );
    assert!(!e.is_no_leader() && e.is_unavailable(), "{e}");
}
