//! Felix's HTTP endpoints: `/metrics`, `/healthz` and `/liveness` (the
//! agent runs), `/readyz` and `/readiness` (in sync with Typha, and the
//! dataplane holds what the graph computed: not ready from a failed batch
//! until the resync that follows succeeds), and `/config` (the effective
//! configuration and where each value came from), `/services` (with
//! `/config`: every Service the dataplane driver holds, with its frontends
//! and the backends each selects, as JSON; `manulctl services` prints it).
//! A listener serves a
//! chosen subset: the local debug listener (`--metrics`) all of them,
//! Calico's Prometheus listener the metrics, its health listener the
//! health checks. With `--metrics-tls-cert`/`--metrics-tls-key` every one
//! of them is HTTPS (`manul_tls::https`: the certificate reloads when its
//! files change; no client certificate is asked for).
//!
//! Every listener is held to [`Limits`] (`manul_listen::http`): at most
//! `--metrics-max-connections` connections at once (32; past them the
//! listener waits before accepting), each closed after
//! `--metrics-idle-timeout-secs` without a request (10) and when its TLS
//! handshake or a request's head takes longer than
//! `--metrics-handshake-timeout-secs` (10); a failed accept waits 50 ms
//! and is counted in `felix_listener_accept_errors_total{listener}`, and
//! each listener keeps a descriptor in reserve so that its probes are
//! answered when Felix is out of file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use manul_listen::{HttpLimits, ListenerMetrics};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::AgentStatus;
use crate::config::View;

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub status: watch::Receiver<AgentStatus>,
    /// The effective configuration, when `/config` is served.
    pub config: Option<watch::Receiver<View>>,
    /// The Services the driver holds, when `/services` is served.
    pub services: Option<crate::programmed_services::ProgrammedServices>,
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub metrics: bool,
    pub health: bool,
    pub config: bool,
}

impl Endpoints {
    pub const ALL: Endpoints = Endpoints {
        metrics: true,
        health: true,
        config: true,
    };
}

/// OpenMetrics for Prometheus, the text format for anyone else
/// (`manul_metrics`).
async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    manul_metrics::page(&s.registry, &headers)
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
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

async fn config(State(s): State<HttpState>) -> impl IntoResponse {
    let Some(rx) = &s.config else {
        return (StatusCode::NOT_FOUND, "no configuration\n".to_string()).into_response();
    };
    let view = rx.borrow().clone();
    match serde_json::to_string_pretty(&view) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn services(State(s): State<HttpState>) -> impl IntoResponse {
    let Some(services) = &s.services else {
        return (StatusCode::NOT_FOUND, "no services\n".to_string()).into_response();
    };
    match serde_json::to_string_pretty(&services.frontends()) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The prefix of Felix's listener metrics
/// (`felix_listener_accept_errors_total` and the like).
pub const METRICS_PREFIX: &str = "felix";

/// What a listener's connections may hold, and where it is counted.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The listener's name in the metrics (`listener` label).
    pub name: &'static str,
    pub http: HttpLimits,
    /// Registered with [`METRICS_PREFIX`]: `felix_listener_*`.
    pub metrics: ListenerMetrics,
}

impl Limits {
    /// The default limits, counted in metrics nobody registered.
    pub fn unregistered(name: &'static str) -> Limits {
        Limits {
            name,
            http: HttpLimits::default(),
            metrics: ListenerMetrics::default(),
        }
    }
}

/// Serves `endpoints` on `addr`, over HTTPS with `tls`, within the default
/// limits; returns the bound address.
pub async fn serve_with(
    addr: SocketAddr,
    endpoints: Endpoints,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<SocketAddr> {
    serve_limited(addr, endpoints, state, tls, Limits::unregistered("metrics")).await
}

/// Serves `endpoints` on `addr`, over HTTPS with `tls`, within `limits`;
/// returns the bound address.
pub async fn serve_limited(
    addr: SocketAddr,
    endpoints: Endpoints,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut app = Router::new();
    if endpoints.metrics {
        app = app.route("/metrics", get(metrics));
    }
    if endpoints.health {
        app = app
            .route("/healthz", get(healthz))
            .route("/liveness", get(healthz))
            .route("/readyz", get(readyz))
            .route("/readiness", get(readyz));
    }
    if endpoints.config {
        app = app
            .route("/config", get(config))
            .route("/services", get(services));
    }
    let app = app.with_state(state);
    let slots = limits.http.slots(limits.name, &limits.metrics);
    let https = tls.is_some();
    tokio::spawn(async move {
        if let Err(e) = manul_listen::http::serve(listener, app, tls, slots, limits.http).await {
            tracing::error!(%bound, https, "HTTP server failed: {e}");
        }
    });
    Ok(bound)
}

/// Serves metrics and health on `addr`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    status: watch::Receiver<AgentStatus>,
) -> std::io::Result<SocketAddr> {
    let endpoints = Endpoints {
        config: false,
        ..Endpoints::ALL
    };
    serve_with(
        addr,
        endpoints,
        HttpState {
            registry,
            status,
            config: None,
            services: None,
        },
        None,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server TLS configuration for 127.0.0.1 (`felix-metrics`), issued
    /// by a new development CA whose certificate is written to `ca.crt` in
    /// `dir`.
    fn dev_tls(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
        let ca = manul_tls::dev::DevCa::new("test CA", 1).unwrap();
        manul_tls::dev::write_atomic(&dir.join("ca.crt"), &ca.cert_pem(), 0o644).unwrap();
        let leaf = manul_tls::dev::Leaf {
            common_name: "felix-metrics".into(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            server: true,
            days: 1,
            ..Default::default()
        };
        let (cert, key) =
            manul_tls::dev::write_pair(dir, "metrics", &ca.issue(&leaf).unwrap()).unwrap();
        manul_tls::https::HttpsSettings {
            cert_file: cert,
            key_file: key,
        }
        .config()
        .unwrap()
    }

    #[tokio::test]
    async fn metrics_and_health_are_served_over_https() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dev_tls(dir.path());
        let mut registry = Registry::default();
        crate::metrics::FelixMetrics::register(&mut registry);
        let (_tx, status) = watch::channel(AgentStatus::default());
        let state = HttpState {
            registry: Arc::new(registry),
            status,
            config: None,
            services: None,
        };
        let addr = serve_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Endpoints::ALL,
            state,
            Some(tls),
        )
        .await
        .unwrap();
        let ca_file = dir.path().join("ca.crt");
        let get = |path| manul_tls::https::get(addr, "127.0.0.1", &ca_file, path);
        let (code, body) = get("/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("felix_"), "{body}");
        assert_eq!(get("/healthz").await.unwrap(), (200, "ok\n".to_string()));
        assert_eq!(get("/readyz").await.unwrap().0, 503);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_https_silent_handshakes_are_closed_and_the_slots_held() {
        use manul_listen::testing::{closed_between, silent};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let tls = dev_tls(dir.path());
        let mut registry = Registry::default();
        let metrics = ListenerMetrics::register(&mut registry, METRICS_PREFIX);
        let (_tx, status) = watch::channel(AgentStatus::default());
        let state = HttpState {
            registry: Arc::new(registry),
            status,
            config: None,
            services: None,
        };
        let limits = Limits {
            name: "health",
            http: HttpLimits {
                max_connections: 2,
                idle: Duration::from_secs(5),
                handshake: Duration::from_millis(500),
                streaming: false,
            },
            metrics,
        };
        let addr = serve_limited(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Endpoints::ALL,
            state,
            Some(tls),
            limits,
        )
        .await
        .unwrap();
        // Two fill the slots and are closed at the handshake timeout; the
        // third waits in the backlog, then is closed as late again.
        let mut flood = silent(addr.port(), 3).await;
        let ca_file = dir.path().join("ca.crt");
        let asked = std::time::Instant::now();
        let probe = tokio::spawn(async move {
            manul_tls::https::get(addr, "127.0.0.1", &ca_file, "/healthz").await
        });
        let past = flood.split_off(2);
        let ms = Duration::from_millis;
        closed_between("in the slots", flood, ms(400), ms(1500)).await;
        closed_between("in the backlog", past, ms(900), ms(2500)).await;
        assert_eq!(probe.await.unwrap().unwrap(), (200, "ok\n".to_string()));
        assert!(asked.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn services_lists_the_programmed_frontends_and_backends_as_json() {
        use manul_dataplane_api::testutil::service;
        use manul_dataplane_api::{Operation, ServiceFrontends, TrafficPolicy};
        let programmed = crate::programmed_services::ProgrammedServices::new();
        let mut registry = Registry::default();
        programmed.register_metrics(&mut registry);
        let mut web = service("shop", "web");
        web.load_balancer_ips = vec!["192.0.2.7".parse().unwrap()];
        web.external_traffic = TrafficPolicy::Local;
        web.affinity_timeout_seconds = Some(600);
        web.ports[0].local_backends.clear();
        programmed.applied(&[Operation::ServiceUpdate(web.clone())]);
        let (_tx, status) = watch::channel(AgentStatus::default());
        let state = HttpState {
            registry: Arc::new(registry),
            status,
            config: None,
            services: Some(programmed),
        };
        let body = |r: axum::response::Response| async move {
            assert_eq!(r.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let json = body(services(State(state.clone())).await.into_response()).await;
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["namespace"], "shop");
        assert_eq!(value[0]["affinityTimeoutSeconds"], 600);
        assert_eq!(value[0]["externalTrafficPolicy"], "Local");
        let fe = &value[0]["frontends"];
        assert_eq!(fe[0]["kind"], "ClusterIp");
        assert_eq!(fe[0]["address"], "10.96.0.10");
        assert_eq!(fe[0]["protocol"], "TCP");
        assert_eq!(fe[0]["port"], 80);
        assert_eq!(fe[0]["backends"][0]["ip"], "10.0.0.1");
        assert_eq!(fe[0]["backends"][0]["port"], 8080);
        // The LB IP under Local with no local backend selects none.
        assert_eq!(fe[1]["kind"], "LoadBalancerIp");
        assert_eq!(fe[1]["trafficPolicy"], "Local");
        assert_eq!(fe[1]["backends"], serde_json::json!([]));
        let parsed: Vec<ServiceFrontends> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, vec![web.with_frontends()]);
        let text = body(
            metrics(State(state), HeaderMap::new())
                .await
                .into_response(),
        )
        .await;
        assert!(text.contains("felix_services 1"), "{text}");
        assert!(text.contains("felix_service_frontends 2"), "{text}");
        assert!(text.contains("felix_service_backends 1"), "{text}");
    }

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
