//! Health-check node ports: for every Service the dataplane is told about
//! with a `health_check_node_port` (a LoadBalancer Service with
//! `externalTrafficPolicy: Local`), Felix listens on that port on the
//! node's addresses and answers any HTTP request as kube-proxy does, so a
//! cloud load balancer sends the Service's traffic only to nodes that have
//! a backend for it:
//!
//! - `200` while the node has ready local backends for the Service (the
//!   distinct addresses of its ports' `local_backends` that are ready)
//!   and the dataplane holds what Felix computed, `503` otherwise;
//! - a JSON body `{"service":{"namespace":..,"name":..},
//!   "localEndpoints":N,"serviceProxyHealthy":bool}`, N being that count.
//!
//! [`HealthCheckedDriver`] wraps the driver: what a batch the driver took
//! says about Services is what the listeners follow (opened, moved to
//! another port, closed with the Service), and the driver's own sync state
//! is `serviceProxyHealthy` (false from start-up and after a refused batch,
//! until a batch with `InSync` is taken). A resync closes the listeners of
//! Services it does not send again, as a driver drops stale items.
//!
//! As in kube-proxy, a node whose only local endpoints are terminating
//! answers 503 (the load balancer drains it), although its dataplane
//! still sends the Service's traffic to them while they serve (KEP-1669).
//!
//! A port that cannot be bound (in use) is logged and tried again with the
//! next batch; the other Services are served meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use manul_dataplane_api::{Operation, Service};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// A Service's (namespace, name).
type Key = (String, String);

#[derive(Debug)]
struct Check {
    port: u16,
    local_endpoints: usize,
    /// Not sent again since the driver went stale.
    stale: bool,
    /// One server per address; empty while the port cannot be bound.
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Check {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    checks: BTreeMap<Key, Check>,
    /// The driver holds what Felix computed.
    healthy: bool,
}

/// The health-check listeners and what they answer; cloned handles share
/// them.
#[derive(Debug, Clone)]
pub struct ServiceHealth {
    addresses: Vec<IpAddr>,
    runtime: Handle,
    state: Arc<Mutex<Table>>,
}

impl ServiceHealth {
    /// Listeners on `addresses` (the node's; `0.0.0.0` for all of its
    /// IPv4 ones, `::` for all of its IPv6 ones), run on `runtime`.
    pub fn new(addresses: Vec<IpAddr>, runtime: Handle) -> ServiceHealth {
        ServiceHealth {
            addresses,
            runtime,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ports listened on now, by Service.
    pub fn ports(&self) -> BTreeMap<Key, u16> {
        self.lock()
            .checks
            .iter()
            .filter(|(_, c)| !c.servers.is_empty())
            .map(|(k, c)| (k.clone(), c.port))
            .collect()
    }

    /// Follows a batch the driver took.
    pub fn applied(&self, batch: &[Operation]) {
        let mut state = self.lock();
        for op in batch {
            match op {
                Operation::ServiceUpdate(s) => self.update(&mut state, s),
                Operation::ServiceRemove { namespace, name }
                    if state
                        .checks
                        .remove(&(namespace.clone(), name.clone()))
                        .is_some() =>
                {
                    info!(namespace, name, "health check closed");
                }
                Operation::InSync => {
                    state.checks.retain(|(namespace, name), c| {
                        if c.stale {
                            info!(namespace, name, "health check closed (not resent)");
                        }
                        !c.stale
                    });
                    state.healthy = true;
                }
                _ => {}
            }
        }
        // Ports that could not be bound before: again.
        let keys: Vec<Key> = state
            .checks
            .iter()
            .filter(|(_, c)| c.servers.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.listen(&mut state, key);
        }
    }

    /// The driver refused a batch: not healthy until the next `InSync`.
    pub fn failed(&self) {
        self.lock().healthy = false;
    }

    /// The driver went stale: what a resync does not send again goes at
    /// its `InSync`.
    pub fn mark_stale(&self) {
        for c in self.lock().checks.values_mut() {
            c.stale = true;
        }
    }

    fn update(&self, state: &mut Table, s: &Service) {
        let key = (s.namespace.clone(), s.name.clone());
        let Some(port) = s.health_check_node_port else {
            if state.checks.remove(&key).is_some() {
                info!(namespace = key.0, name = key.1, "health check closed");
            }
            return;
        };
        let local: BTreeSet<IpAddr> = s
            .ports
            .iter()
            .flat_map(|p| p.local_backends.iter().filter(|b| b.ready).map(|b| b.ip))
            .collect();
        match state.checks.get_mut(&key) {
            Some(c) if c.port == port => {
                c.local_endpoints = local.len();
                c.stale = false;
            }
            _ => {
                // New, or moved: the old listeners close first.
                state.checks.remove(&key);
                state.checks.insert(
                    key.clone(),
                    Check {
                        port,
                        local_endpoints: local.len(),
                        stale: false,
                        servers: Vec::new(),
                    },
                );
                self.listen(state, key);
            }
        }
    }

    /// Binds Service `key`'s port on every address; all or none.
    fn listen(&self, state: &mut Table, key: Key) {
        let Some(check) = state.checks.get_mut(&key) else {
            return;
        };
        let _entered = self.runtime.enter();
        let mut servers = Vec::new();
        for ip in &self.addresses {
            let addr = SocketAddr::new(*ip, check.port);
            let listener = bind(addr).and_then(tokio::net::TcpListener::from_std);
            match listener {
                Ok(l) => {
                    let app = Router::new()
                        .fallback(answer)
                        .with_state((key.clone(), self.clone()));
                    servers.push(self.runtime.spawn(async move {
                        if let Err(e) = axum::serve(l, app).await {
                            error!(%addr, "health check server stopped: {e}");
                        }
                    }));
                }
                Err(e) => {
                    error!(
                        namespace = key.0,
                        name = key.1,
                        %addr,
                        "cannot listen for the health check (tried again with the next batch): {e}"
                    );
                    for s in servers {
                        s.abort();
                    }
                    return;
                }
            }
        }
        info!(
            namespace = key.0,
            name = key.1,
            port = check.port,
            "health check open"
        );
        check.servers = servers;
    }

    /// (status, body) for Service `key` now.
    fn status(&self, key: &Key) -> (StatusCode, String) {
        let state = self.lock();
        let count = state.checks.get(key).map_or(0, |c| c.local_endpoints);
        let healthy = state.healthy;
        let body = serde_json::json!({
            "service": {"namespace": key.0, "name": key.1},
            "localEndpoints": count,
            "serviceProxyHealthy": healthy,
        });
        let code = if count > 0 && healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body.to_string())
    }
}

/// A non-blocking listener on `addr`; an IPv6 one takes IPv6 alone, so
/// `0.0.0.0` and `::` can share a port.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

async fn answer(State((key, health)): State<(Key, ServiceHealth)>) -> impl IntoResponse {
    let (code, body) = health.status(&key);
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// A driver whose taken batches the health checks follow.
pub type HealthCheckedDriver = crate::observed::Observed<ServiceHealth>;

impl crate::observed::BatchObserver for ServiceHealth {
    fn applied(&mut self, batch: &[Operation]) {
        ServiceHealth::applied(self, batch);
    }

    fn failed(&mut self) {
        ServiceHealth::failed(self);
        ServiceHealth::mark_stale(self);
    }

    fn mark_stale(&mut self) {
        ServiceHealth::mark_stale(self);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use manul_dataplane_api::Backend;
    use manul_dataplane_api::testutil::{ip, service};

    /// `shop/web` with health-check port 30500 and these local backends
    /// (address, ready).
    fn lb(local: &[(&str, bool)]) -> Service {
        let mut s = service("shop", "web");
        s.health_check_node_port = Some(30500);
        let backends: Vec<Backend> = local
            .iter()
            .map(|(a, ready)| Backend {
                ip: ip(a),
                port: 8080,
                local: true,
                ready: *ready,
            })
            .collect();
        s.ports[0].backends = backends.clone();
        s.ports[0].local_backends = backends;
        s
    }

    /// (status, localEndpoints) after `batch` (no address: nothing binds).
    fn answer(batch: &[Operation]) -> (StatusCode, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let health = ServiceHealth::new(Vec::new(), rt.handle().clone());
        health.applied(batch);
        let (code, body) = health.status(&("shop".into(), "web".into()));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["serviceProxyHealthy"], true, "{body}");
        (code, body["localEndpoints"].clone())
    }

    #[test]
    fn only_ready_local_endpoints_make_the_node_healthy() {
        let ready = lb(&[("10.65.0.5", true), ("10.65.0.6", false)]);
        assert_eq!(
            answer(&[Operation::ServiceUpdate(ready), Operation::InSync]),
            (StatusCode::OK, serde_json::json!(1)),
            "the terminating one is not counted"
        );
        // KEP-1669: the node's only endpoints are terminating; the
        // dataplane still uses them, the load balancer is told to drain.
        let terminating = lb(&[("10.65.0.6", false), ("10.65.0.7", false)]);
        assert_eq!(
            answer(&[Operation::ServiceUpdate(terminating), Operation::InSync]),
            (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!(0))
        );
    }
}
