//! `/metrics`, `/healthz` (the agent runs) and `/readyz` (in sync with
//! Typha, and the dataplane holds what the graph computed: not ready from a
//! failed batch until the resync that follows succeeds).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::AgentStatus;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    status: watch::Receiver<AgentStatus>,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    readiness(&s.status.borrow())
}

/// `/readyz`'s answer: ready once in sync with Typha, and not while the
/// dataplane is out of sync after a failed batch.
fn readiness(st: &AgentStatus) -> (StatusCode, String) {
    if !st.in_sync {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not in sync with Typha yet\n".to_string(),
        )
    } else if st.dataplane_out_of_sync {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the dataplane refused a batch and is out of sync; resyncing it from the whole state ({} attempts so far)\n",
                st.resync_attempts
            ),
        )
    } else {
        (
            StatusCode::OK,
            format!("in sync at revision {}\n", st.revision),
        )
    }
}

/// Serves the endpoints on `addr`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    status: watch::Receiver<AgentStatus>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, status });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server failed: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_in_sync_with_typha_and_with_the_dataplane() {
        let mut st = AgentStatus::default();
        assert_eq!(readiness(&st).0, StatusCode::SERVICE_UNAVAILABLE);
        st.in_sync = true;
        st.revision = 7;
        assert_eq!(
            readiness(&st),
            (StatusCode::OK, "in sync at revision 7\n".into())
        );
        st.dataplane_out_of_sync = true;
        st.resync_attempts = 2;
        let (code, body) = readiness(&st);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("out of sync") && body.contains("2 attempts"),
            "{body}"
        );
        assert!(!st.ready());
    }
}
