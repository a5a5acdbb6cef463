//! The web UI and its JSON API, on their own HTTP listener (`--ui-listen`):
//!
//! - `GET /`, `/app.js`, `/app.css`: the page (a flow table with filters
//!   and a service graph), embedded in the binary; no build step, nothing
//!   loaded from elsewhere (the Content-Security-Policy allows only this
//!   origin), and every name the page shows is set as text, never as
//!   markup (labels and names are user input).
//! - `GET /api/flows?FILTERS&limit=N`: `{"records": [...]}`, the newest
//!   `limit` matching records (default 1,000), oldest first, each as
//!   `manulctl flows -o json` prints it.
//! - `GET /api/graph?FILTERS`: the service graph of every matching record
//!   in the window ([`crate::graph`]).
//! - `GET /api/follow?FILTERS`: Server-Sent Events, one `record` event per
//!   matching record stored from now on (a `lagged` event when this
//!   follower fell behind and records were skipped).
//!
//! - `GET /healthz`: `ok` while the process serves (a probe's endpoint);
//!   `GET /metrics`: the aggregator's metrics (its listeners', see
//!   [`crate::listen`]), OpenMetrics or the text format (`manul_metrics`).
//!
//! FILTERS are those of the gRPC `FlowFilter` ([`query`]); a bad one is a
//! 400 naming it. The API reads only: it cannot write or delete records.
//! The listener is held to [`crate::listen`]'s limits
//! (`manul_listen::http`): so many connections, each closed when idle or
//! slow, a descriptor in reserve for `/healthz`; a follow stream sends a
//! keep-alive comment every half idle timeout (at most every 15 s), so an
//! open one is never idle.

pub mod query;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use manul_listen::{HttpLimits, ListenerMetrics};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::filter::Filter;
use crate::server::{DEFAULT_LIST, MAX_LIST, Shared, unix_now};

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Only this origin's script, style and images; no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The UI's routes over `shared`.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/flows", get(flows))
        .route("/api/graph", get(graph))
        .route("/api/follow", get(follow))
        .with_state(shared)
}

/// How often a follow stream sends a keep-alive comment.
#[derive(Debug, Clone, Copy)]
struct FollowKeepAlive(Duration);

/// The keep-alive of follow streams on a listener closing connections
/// idle for `idle`: half of it, at most 15 s, at least 100 ms.
fn keep_alive(idle: Duration) -> Duration {
    (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(15))
}

/// The UI's routes, `/healthz` and `/metrics` (of `registry`), follow
/// streams kept alive for a listener that closes connections idle for
/// `idle`.
pub fn app(shared: Shared, registry: Arc<Registry>, idle: Duration) -> Router {
    let probes = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/metrics",
            get(
                |State(r): State<Arc<Registry>>, headers: axum::http::HeaderMap| async move {
                    manul_metrics::page(&r, &headers)
                },
            ),
        )
        .with_state(registry);
    router(shared)
        .merge(probes)
        .layer(Extension(FollowKeepAlive(keep_alive(idle))))
}

fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    secured(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn json(value: &serde_json::Value) -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
    )
}

fn bad_request(message: String) -> Response {
    secured(
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response(),
    )
}

/// The query and its checked filter, or what is wrong with them.
fn parsed(raw: Option<String>) -> Result<(query::Query, Filter), String> {
    let q = query::parse(raw.as_deref().unwrap_or(""), unix_now()).map_err(|e| e.to_string())?;
    let f = Filter::new(q.filter.clone()).map_err(|e| e.to_string())?;
    Ok((q, f))
}

async fn flows(State(shared): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let (q, f) = match parsed(raw) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let limit = match q.limit {
        0 => DEFAULT_LIST,
        n => n.min(MAX_LIST),
    };
    let records = shared.store().list(&f, limit);
    let records: Vec<serde_json::Value> = records.iter().map(crate::json::record).collect();
    json(&serde_json::json!({ "records": records }))
}

async fn graph(State(shared): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let (_, f) = match parsed(raw) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let g = shared.store().graph(&f);
    match serde_json::to_value(&g) {
        Ok(v) => json(&v),
        Err(e) => secured((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

async fn follow(
    State(shared): State<Shared>,
    every: Option<Extension<FollowKeepAlive>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let every = every.map_or(Duration::from_secs(15), |Extension(FollowKeepAlive(d))| d);
    let (_, f) = match parsed(raw) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let events = BroadcastStream::new(shared.subscribe()).filter_map(move |r| match r {
        Ok(r) if f.matches(&r) => Some(Ok::<Event, Infallible>(
            Event::default()
                .event("record")
                .data(crate::json::record(&r.to_record()).to_string()),
        )),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            Some(Ok(Event::default().event("lagged").data(n.to_string())))
        }
    });
    secured(
        Sse::new(events)
            .keep_alive(KeepAlive::default().interval(every))
            .into_response(),
    )
}

/// Serves the UI on `listener` (over HTTPS with `tls`) within the default
/// limits until the process ends.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    let metrics = ListenerMetrics::register(&mut registry, crate::listen::METRICS_PREFIX);
    let limits = crate::listen::ListenArgs::default().web();
    let slots = limits.slots("web", &metrics);
    serve_limited(listener, shared, tls, limits, slots, Arc::new(registry)).await
}

/// Serves the UI on `listener` (over HTTPS with `tls`) within `limits`,
/// its connections holding `slots`, `/metrics` showing `registry`, until
/// the process ends.
pub async fn serve_limited(
    listener: TcpListener,
    shared: Shared,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    slots: manul_listen::Slots,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    let app = app(shared, registry, limits.idle);
    manul_listen::http::serve(listener, app, tls, slots, limits).await
}
