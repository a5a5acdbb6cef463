//! `/metrics` (OpenMetrics for Prometheus, else the text format), `/healthz` (the process and its Raft
//! thread run: it fails once the Raft thread has stopped, however it
//! stopped) and `/readyz` (a leader that is a voter of this replica's
//! configuration is known, so writes and a consistent stream can be served;
//! a leader id that is not a member does not count). Over HTTPS when
//! configured (`--metrics-tls-*`, [`crate::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::listener::HttpLimits;
use crate::listener::slots::Slots;
use crate::node::Node;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    node: Node,
}

/// OpenMetrics for Prometheus, the text format for anyone else
/// (`manul_metrics`).
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    manul_metrics::page(&s.registry, &headers)
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.node.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Raft thread has stopped\n",
        )
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if !s.node.is_alive() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Raft thread has stopped\n".to_string(),
        );
    }
    match s.node.leader() {
        Some((id, _)) => (StatusCode::OK, format!("ready: leader {id}\n")),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader yet\n".to_string(),
        ),
    }
}

/// Serves the endpoints on `addr` (over HTTPS with `tls`); returns the
/// bound address. Over HTTP or HTTPS, at most `slots` connections at once,
/// each closed once idle, with a descriptor in reserve for when the
/// process runs out (`manul_listen::http`).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    node: Node,
    tls: Option<Arc<rustls::ServerConfig>>,
    slots: Slots,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, node });
    let task = tokio::spawn(async move {
        let limits = HttpLimits::default();
        if let Err(e) = manul_listen::http::serve(listener, app, tls, slots, limits).await {
            tracing::error!("metrics server failed: {e}");
        }
    });
    Ok((bound, task))
}
