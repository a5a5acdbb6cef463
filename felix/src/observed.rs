//! A driver whose batches something else follows: the health-check node
//! ports ([`crate::service_health`]) and the record of programmed Services
//! ([`crate::programmed_services`]) both learn what the dataplane holds
//! from the batches the driver took, never from what the graph computed.
//!
//! [`Observed`] forwards every [`Driver`] method to the driver it wraps, in
//! one place, so a method added to the trait is forwarded once for every
//! observer.

use manul_dataplane_api::{
    ConntrackUsage, Driver, DriverError, FlowObservation, Operation, PolicyCounter, ServiceCounters,
};

/// What follows a driver's batches.
pub trait BatchObserver: Send {
    /// The driver took `batch`.
    fn applied(&mut self, batch: &[Operation]);
    /// The driver refused a batch: it is out of sync until a resync.
    fn failed(&mut self) {
        self.mark_stale();
    }
    /// The driver went stale: a whole state follows, and what it does not
    /// send again goes at its `InSync`.
    fn mark_stale(&mut self);
}

/// `inner`, with `observer` told about every batch it takes or refuses.
pub struct Observed<O> {
    inner: Box<dyn Driver>,
    observer: O,
}

impl<O> Observed<O> {
    pub fn new(inner: Box<dyn Driver>, observer: O) -> Observed<O> {
        Observed { inner, observer }
    }

    /// What follows the batches.
    pub fn observer(&self) -> &O {
        &self.observer
    }
}

impl<O> std::fmt::Debug for Observed<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner.name())
            .field("observer", &std::any::type_name::<O>())
            .finish()
    }
}

impl<O: BatchObserver> Driver for Observed<O> {
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        let result = self.inner.apply(batch);
        match &result {
            Ok(()) => self.observer.applied(batch),
            Err(_) => self.observer.failed(),
        }
        result
    }

    fn mark_stale(&mut self) {
        self.inner.mark_stale();
        self.observer.mark_stale();
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn refresh(&mut self) -> Result<bool, DriverError> {
        self.inner.refresh()
    }

    fn policy_counters(&self) -> Vec<PolicyCounter> {
        self.inner.policy_counters()
    }

    fn conntrack_usage(&self) -> Option<ConntrackUsage> {
        self.inner.conntrack_usage()
    }

    fn service_counters(&self) -> Option<ServiceCounters> {
        self.inner.service_counters()
    }

    fn map_usage(&self) -> Vec<manul_dataplane_api::MapUsage> {
        self.inner.map_usage()
    }

    fn take_flows(&mut self) -> Vec<FlowObservation> {
        self.inner.take_flows()
    }

    fn flows_dropped(&self) -> u64 {
        self.inner.flows_dropped()
    }

    fn flow_events_lost(&self) -> u64 {
        self.inner.flow_events_lost()
    }
}

#[cfg(test)]
mod tests;
