//! Connections to the gRPC client listener with TLS that never finish
//! their TLS handshake, against a real `typha` process on loopback: each
//! holds a slot of the listener's pool, and counts in
//! `typha_listener_connections{listener="client"}`, from its accept (as the
//! lean sync listener's do), until the 10 s TLS handshake timeout closes
//! it; one that finished its handshake and sends no HTTP/2 preface is
//! closed after the handshake timeout; then every slot is free again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::SERIAL;
use common::tls_typha::{TlsTypha, felix_tls};
use manul_listen::testing::{closed_between, no_tls_handshakes, until_closed, wait_metric_eq};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_connections_count_from_their_accept_until_closed() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let typha = TlsTypha::start(tmp.path(), false).await;
    let open = "typha_listener_connections{listener=\"client\"}";
    let grpc = format!("127.0.0.1:{}", typha.port);

    // Connected, never a ClientHello; a ClientHello's first bytes only.
    let no_tls = no_tls_handshakes(&grpc, 4).await;
    // Each counts while its TLS handshake is still under way.
    wait_metric_eq(typha.metrics_port, open, 4.0, Duration::from_secs(1)).await;
    // TLS done (HTTP/2 offered), then no preface: counted too.
    let stream = felix_tls(&typha.certs)
        .connect_stream("127.0.0.1", typha.port, b"h2")
        .await
        .unwrap();
    let no_preface = vec![until_closed(stream)];
    wait_metric_eq(typha.metrics_port, open, 5.0, Duration::from_secs(1)).await;

    closed_between(
        "TLS-done, no preface",
        no_preface,
        Duration::from_millis(1800),
        Duration::from_secs(4),
    )
    .await;
    closed_between(
        "no TLS handshake",
        no_tls,
        Duration::from_secs(8),
        Duration::from_secs(12),
    )
    .await;
    wait_metric_eq(typha.metrics_port, open, 0.0, Duration::from_secs(2)).await;
}
