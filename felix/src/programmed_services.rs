//! The Services the dataplane driver holds, for `/services` and the
//! service metrics.
//!
//! [`ServiceRecordingDriver`] wraps the driver and follows what it took:
//! a `ServiceUpdate` or `ServiceRemove` in a batch the driver applied
//! changes the record; a refused batch changes nothing. Like a driver, the
//! record goes stale at a resync (and after a refused batch) and the next
//! `InSync` drops the Services that were not sent again, so it shows what
//! the kernel is programmed with, never what the graph merely computed.
//!
//! Metrics, computed at each scrape from the record:
//! `felix_services` (Services programmed), `felix_service_frontends`
//! (address, protocol and port triples a connection can target: each
//! ClusterIP, external IP and load-balancer IP times the Service's ports,
//! plus one per node port) and `felix_service_backends` (distinct
//! backends, address, port and protocol, over all Services). With a
//! driver that counts service NAT (eBPF), the totals the agent last read:
//! `felix_service_nat_connections`, `felix_service_no_backend_rejects`
//! (NAT misses), `felix_service_hairpin_connections`,
//! `felix_service_backend_resets`, `felix_service_dsr_untrusted_drops`
//! (forged direct server return options, dropped) and
//! `felix_service_affinity_entries`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use manul_dataplane_api::{Operation, Service, ServiceCounters, ServiceFrontends, ServiceKey};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
struct Record {
    services: BTreeMap<ServiceKey, Service>,
    /// Not sent again since the driver went stale.
    stale: std::collections::BTreeSet<ServiceKey>,
    /// The driver's service NAT totals last read (eBPF only).
    counters: Option<ServiceCounters>,
}

/// The Services the driver holds; cloned handles share them.
#[derive(Debug, Clone, Default)]
pub struct ProgrammedServices {
    record: Arc<Mutex<Record>>,
}

impl ProgrammedServices {
    pub fn new() -> ProgrammedServices {
        ProgrammedServices::default()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic elsewhere while holding the lock leaves a record that is
        // still whole (every change is one map operation).
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a batch the driver applied.
    pub fn applied(&self, batch: &[Operation]) {
        let mut r = self.lock();
        for op in batch {
            match op {
                Operation::ServiceUpdate(svc) => {
                    let key = (svc.namespace.clone(), svc.name.clone());
                    r.stale.remove(&key);
                    r.services.insert(key, svc.clone());
                }
                Operation::ServiceRemove { namespace, name } => {
                    let key = (namespace.clone(), name.clone());
                    r.stale.remove(&key);
                    r.services.remove(&key);
                }
                Operation::InSync => {
                    let stale = std::mem::take(&mut r.stale);
                    for key in stale {
                        r.services.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }

    /// Keeps the driver's service NAT totals for the next scrape (the
    /// agent reads them periodically).
    pub fn observe_counters(&self, counters: Option<ServiceCounters>) {
        self.lock().counters = counters;
    }

    /// The driver went stale: what is not sent again before the next
    /// `InSync` goes.
    pub fn mark_stale(&self) {
        let mut r = self.lock();
        r.stale = r.services.keys().cloned().collect();
    }

    /// Every Service with its frontends, by namespace and name.
    pub fn frontends(&self) -> Vec<ServiceFrontends> {
        self.lock()
            .services
            .values()
            .map(Service::with_frontends)
            .collect()
    }

    /// (Services, frontends, backends), as the metrics count them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let r = self.lock();
        let frontends = r
            .services
            .values()
            .map(|s| {
                let addresses = s.cluster_ips.len() + s.external_addresses().count();
                addresses * s.ports.len() + s.ports.iter().filter(|p| p.node_port.is_some()).count()
            })
            .sum();
        let backends = r.services.values().map(Service::backend_count).sum();
        (r.services.len(), frontends, backends)
    }

    /// Registers the service metrics, read from this record at each
    /// scrape.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ServiceMetrics(self.clone())));
    }
}

#[derive(Debug)]
struct ServiceMetrics(ProgrammedServices);

impl Collector for ServiceMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (services, frontends, backends) = self.0.counts();
        let counters = self.0.lock().counters;
        let gauges = [
            (
                "felix_services",
                "Services programmed in the dataplane",
                services,
            ),
            (
                "felix_service_frontends",
                "Service frontends programmed: each cluster, external and load-balancer IP times the Service's ports, plus one per node port",
                frontends,
            ),
            (
                "felix_service_backends",
                "Distinct service backends (address, port, protocol) programmed, summed over Services",
                backends,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        // Drivers that count service NAT (eBPF) only.
        let Some(c) = counters else { return Ok(()) };
        let totals = [
            (
                "felix_service_nat_connections",
                "New connections to a service frontend translated to a backend",
                c.translated,
            ),
            (
                "felix_service_no_backend_rejects",
                "New connections to a service frontend without backends, rejected at once (NAT misses)",
                c.rejected_no_backend,
            ),
            (
                "felix_service_hairpin_connections",
                "New connections from a pod to a Service it backs",
                c.hairpin,
            ),
            (
                "felix_service_backend_resets",
                "Packets of TCP connections whose backend was removed, answered with a reset",
                c.reset,
            ),
            (
                "felix_service_dsr_untrusted_drops",
                "Packets carrying a direct server return option or header naming a frontend no other node sends, dropped (forged)",
                c.dsr_untrusted_dropped,
            ),
        ];
        for (name, help, value) in totals {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauge = ConstGauge::new(c.affinity_entries as i64);
        let metric = encoder.encode_descriptor(
            "felix_service_affinity_entries",
            "Entries in the session affinity map (clients pinned to a backend)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        Ok(())
    }
}

/// A driver whose taken batches the Service record follows.
pub type ServiceRecordingDriver = crate::observed::Observed<ProgrammedServices>;

impl crate::observed::BatchObserver for ProgrammedServices {
    fn applied(&mut self, batch: &[Operation]) {
        ProgrammedServices::applied(self, batch);
    }

    fn mark_stale(&mut self) {
        ProgrammedServices::mark_stale(self);
    }
}

#[cfg(test)]
mod tests;
