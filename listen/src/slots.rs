//! How many connections each listener holds at once, so that no kind of
//! connection can take every file descriptor: a connection holds a slot
//! until it closes, and a listener with no free slot stops accepting (the
//! kernel's backlog holds newcomers) instead of accepting and failing.
//! Each gRPC listener's share is also bounded by the process's
//! RLIMIT_NOFILE, less [`RESERVED_FDS`] for everything else the process
//! opens (a store, peers, the HTTP listeners), so the HTTP listener
//! (`/readyz`) still gets descriptors when a flood fills the gRPC
//! listeners.
//!
//! An accept loop takes the slot of its next connection before it
//! accepts it, so a full listener leaves newcomers in the kernel's backlog:
//! while it waits, that slot is neither free nor counted as a connection
//! (listeners that share slots, such as Typha's client and sync listeners,
//! each hold one so).
//!
//! Metrics, named after the process (`PREFIX` is `typha`, `felix` or
//! `flows`): `PREFIX_listener_connections{listener}` (open connections),
//! `PREFIX_listener_full_total{listener}` (times a listener had to wait
//! for a free slot before accepting) and
//! `PREFIX_listener_accept_errors_total{listener}` (accepts that failed,
//! such as for want of a file descriptor; each failure is followed by a
//! 50 ms wait, so this grows by at most 20 a second per listener).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the gRPC listeners' shares: a store's files,
/// connections to peers and to the Kubernetes API, the HTTP listeners'
/// connections, logs.
pub const RESERVED_FDS: u64 = 128;

/// Connections an HTTP (metrics, health) listener holds at once, unless
/// configured otherwise.
pub const METRICS_CONNECTIONS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// The listeners' metrics.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// The accept errors' metric name, for the log.
    accept_errors_name: String,
    connections: Family<ListenerLabel, Gauge>,
    full: Family<ListenerLabel, Counter>,
    accept_errors: Family<ListenerLabel, Counter>,
}

impl ListenerMetrics {
    /// Registers `PREFIX_listener_connections`,
    /// `PREFIX_listener_full_total` and
    /// `PREFIX_listener_accept_errors_total` in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str) -> ListenerMetrics {
        let m = ListenerMetrics {
            accept_errors_name: format!("{prefix}_listener_accept_errors_total"),
            ..ListenerMetrics::default()
        };
        registry.register(
            format!("{prefix}_listener_connections"),
            "Connections open on each listener",
            m.connections.clone(),
        );
        registry.register(
            format!("{prefix}_listener_full"),
            "Times a listener had no free connection slot and waited before accepting",
            m.full.clone(),
        );
        registry.register(
            format!("{prefix}_listener_accept_errors"),
            "Accepts that failed on each listener (out of file descriptors and the like)",
            m.accept_errors.clone(),
        );
        m
    }
}

/// The connection slots of one listener.
#[derive(Debug, Clone)]
pub struct Slots {
    /// The listener's name in the metrics and logs.
    name: &'static str,
    free: Arc<Semaphore>,
    max: usize,
    open: Gauge,
    full: Counter,
    accept_errors: Counter,
    /// The accept errors' metric name, for the log.
    accept_errors_name: Arc<str>,
    /// Whether the listener is known full (logged once per episode).
    waiting: Arc<std::sync::atomic::AtomicBool>,
    /// Whether its accepts are failing (logged once per episode).
    failing: Arc<std::sync::atomic::AtomicBool>,
}

/// A free slot taken by an accept loop before it accepts: not yet a
/// connection (not counted in `PREFIX_listener_connections`), but no other
/// connection can have it.
#[derive(Debug)]
pub struct Free {
    permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Free {
    /// The slot of the connection just accepted.
    pub fn open(self) -> Slot {
        self.open.inc();
        Slot {
            _permit: self.permit,
            open: self.open,
        }
    }
}

/// One connection's slot: freed when the connection is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Slots {
    /// `max` slots (at least 1) for the listener named `listener` in the
    /// metrics.
    pub fn new(listener: &'static str, max: usize, metrics: &ListenerMetrics) -> Slots {
        let label = ListenerLabel { listener };
        Slots {
            name: listener,
            free: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            open: metrics.connections.get_or_create(&label).clone(),
            full: metrics.full.get_or_create(&label).clone(),
            accept_errors: metrics.accept_errors.get_or_create(&label).clone(),
            accept_errors_name: Arc::from(metrics.accept_errors_name.as_str()),
            waiting: Arc::default(),
            failing: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A free slot, waiting for one when there is none; it counts as an
    /// open connection once [`Free::open`].
    pub async fn acquire(&self) -> Free {
        use std::sync::atomic::Ordering;
        let permit = match self.free.clone().try_acquire_owned() {
            Ok(p) => {
                self.waiting.store(false, Ordering::Relaxed);
                p
            }
            Err(_) => {
                self.full.inc();
                if !self.waiting.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        listener = self.name,
                        max = self.max,
                        "a listener holds its most connections; waiting for one to close before accepting more"
                    );
                }
                match self.free.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return std::future::pending().await,
                }
            }
        };
        Free {
            permit,
            open: self.open.clone(),
        }
    }
}

impl Slots {
    /// Counts a failed accept; the first of a run of them is logged.
    pub fn accept_failed(&self, error: &std::io::Error) {
        use std::sync::atomic::Ordering;
        self.accept_errors.inc();
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(listener = self.name, "accept failed again: {error}");
        } else {
            tracing::warn!(
                listener = self.name,
                "accept failed: {error}; retrying every 50 ms (counted in {})",
                self.accept_errors_name
            );
        }
    }

    /// An accept succeeded: the next failure is logged again.
    pub fn accepted(&self) {
        use std::sync::atomic::Ordering;
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(listener = self.name, "accepting again after failed accepts");
        }
    }
}

/// The process's soft RLIMIT_NOFILE, when it can be read.
pub fn nofile() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Each of `listeners` gRPC listeners' share of `wanted` connections,
/// given the descriptor limit `nofile`: at most `(nofile - RESERVED_FDS) /
/// listeners`, at least 8.
pub fn share(wanted: usize, nofile: Option<u64>, listeners: u64) -> usize {
    let Some(nofile) = nofile else {
        return wanted;
    };
    let budget = nofile.saturating_sub(RESERVED_FDS) / listeners.max(1);
    wanted
        .min(usize::try_from(budget).unwrap_or(usize::MAX))
        .max(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_leaves_descriptors_for_everything_else() {
        assert_eq!(share(4096, Some(1_048_576), 2), 4096);
        assert_eq!(share(4096, Some(1024), 2), 448);
        assert_eq!(share(4096, Some(256), 2), 64);
        assert_eq!(share(4096, Some(64), 2), 8);
        assert_eq!(share(100, None, 2), 100);
    }

    #[tokio::test]
    async fn a_slot_is_held_until_dropped() {
        let metrics = ListenerMetrics::default();
        let slots = Slots::new("client", 2, &metrics);
        let a = slots.acquire().await.open();
        let free = slots.acquire().await;
        let label = ListenerLabel { listener: "client" };
        assert_eq!(metrics.connections.get_or_create(&label).get(), 1);
        let _b = free.open();
        assert_eq!(metrics.connections.get_or_create(&label).get(), 2);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await.open() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let _c = waiting.await.unwrap();
        assert_eq!(metrics.full.get_or_create(&label).get(), 1);
        assert_eq!(metrics.connections.get_or_create(&label).get(), 2);
    }
}
