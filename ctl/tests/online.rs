//! manulctl's online commands against a real single-node Typha (in this
//! process, on a loopback port), run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{examples, manulctl, manulctl_env, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_delete_status_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, server) = common::typha(dir.path()).await;

    let ex = examples();
    let out = manulctl(&server, &["apply", "-f", ex.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("NetworkPolicy production/frontend-to-api ok"));

    // Bad input is rejected locally with exit 2 and nothing is written.
    let bad = ex.join("bad/bad-selector.yaml");
    let out = manulctl(&server, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("position 7"));

    let out = manulctl(&server, &["get", "gnp"]).await;
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    assert!(
        table.contains("security.block-threats") && table.contains("default-deny-with-dns"),
        "{table}"
    );

    let out = manulctl(
        &server,
        &[
            "get",
            "networkpolicy",
            "frontend-to-api",
            "-n",
            "production",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("selector: app == \"api\""),
        "{}",
        text(&out.stdout)
    );

    let out = manulctl(&server, &["get", "tier", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "not found is bad input");
    let out = manulctl(&server, &["get", "frobnicator"]).await;
    assert_eq!(out.status.code(), Some(2), "unknown kind");

    // Cluster administration: only on the peer listener, with the token.
    let peer = typha.peer_addr.to_string();
    let out = manulctl_env(
        &server,
        &["cluster", "status"],
        &[("MANUL_PEER_SERVER", &peer)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "no token is bad input");
    assert!(text(&out.stderr).contains("--peer-token-file"));
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-cluster-token-at-all").unwrap();
    let out = manulctl_env(
        &server,
        &[
            "cluster",
            "status",
            "--peer-token-file",
            wrong.to_str().unwrap(),
        ],
        &[("MANUL_PEER_SERVER", &peer)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "a wrong token is refused");
    assert!(
        text(&out.stderr).contains("wrong peer token"),
        "{}",
        text(&out.stderr)
    );
    let token_file = dir.path().join("peer-token");
    std::fs::write(&token_file, typha.peer_token.secret()).unwrap();
    let out = manulctl_env(
        &server,
        &["cluster", "status"],
        &[
            ("MANUL_PEER_SERVER", &peer),
            ("MANUL_PEER_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    assert!(
        status.contains("leader: 1") && status.contains("leader "),
        "{status}"
    );

    // Watch from the current revision while deleting.
    let rev = typha.node.status().applied_index;
    let watch = {
        let server = server.clone();
        tokio::spawn(async move {
            manulctl(
                &server,
                &[
                    "sync",
                    "watch",
                    "--from-revision",
                    &rev.to_string(),
                    "--count",
                    "1",
                ],
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = manulctl(&server, &["delete", "tier", "security"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let watched = tokio::time::timeout(std::time::Duration::from_secs(10), watch)
        .await
        .unwrap()
        .unwrap();
    let lines = text(&watched.stdout);
    assert!(lines.contains("resuming without a snapshot"), "{lines}");
    assert!(
        lines.contains(&format!("{} delete tier/security", rev + 1)),
        "{lines}"
    );

    let out = manulctl(&server, &["delete", "tier", "security"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "deleting what is not there is bad input"
    );
    let out = manulctl(
        &server,
        &[
            "delete",
            "-f",
            ex.join("frontend-to-api.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = manulctl(&server, &["sync", "stats", "--seconds", "0"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The examples' resources, the threat feed among them (its file is
    // absent here, so it writes no set).
    assert_eq!(stats["snapshot"]["resources"], 6);

    // No server: a clear error, exit 1, once --timeout has passed.
    let out = manulctl("127.0.0.1:1", &["--timeout", "200ms", "get", "gnp"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot connect to Typha at 127.0.0.1:1"));

    typha.shutdown().await;
}
