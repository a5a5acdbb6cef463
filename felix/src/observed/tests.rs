use std::sync::{Arc, Mutex};

use manul_dataplane_api::{
    ConntrackUsage, Driver, DriverError, NullDriver, Operation, PolicyCounter, ServiceCounters,
};

use super::{BatchObserver, Observed};

/// A driver that answers every query with something recognisable.
struct Answering(NullDriver);

impl Driver for Answering {
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        self.0.apply(batch)
    }
    fn mark_stale(&mut self) {
        self.0.mark_stale();
    }
    fn name(&self) -> &'static str {
        "answering"
    }
    fn refresh(&mut self) -> Result<bool, DriverError> {
        Ok(true)
    }
    fn policy_counters(&self) -> Vec<PolicyCounter> {
        vec![PolicyCounter {
            policy: "default/p".into(),
            allowed: 1,
            denied: 2,
        }]
    }
    fn conntrack_usage(&self) -> Option<ConntrackUsage> {
        Some(ConntrackUsage {
            entries: 3,
            capacity: 4,
        })
    }
    fn service_counters(&self) -> Option<ServiceCounters> {
        Some(ServiceCounters {
            translated: 5,
            ..ServiceCounters::default()
        })
    }
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<&'static str>>>);

impl BatchObserver for Log {
    fn applied(&mut self, _: &[Operation]) {
        self.0.lock().unwrap().push("applied");
    }
    fn mark_stale(&mut self) {
        self.0.lock().unwrap().push("stale");
    }
}

#[test]
fn every_query_reaches_the_wrapped_driver() {
    let mut d = Observed::new(Box::new(Answering(NullDriver::new())), Log::default());
    assert_eq!(d.name(), "answering");
    assert!(d.refresh().unwrap());
    assert_eq!(d.policy_counters().len(), 1);
    assert_eq!(d.conntrack_usage().map(|u| u.entries), Some(3));
    assert_eq!(d.service_counters().map(|s| s.translated), Some(5));
}

#[test]
fn the_observer_sees_taken_batches_refusals_and_resyncs() {
    let log = Log::default();
    let mut d = Observed::new(Box::new(Answering(NullDriver::new())), log.clone());
    d.apply(&[Operation::InSync]).unwrap();
    // Removing a policy nobody programmed breaks the contract: refused.
    let refused = [Operation::PolicyRemove {
        id: manul_dataplane_api::PolicyId {
            tier: "default".into(),
            name: "missing".into(),
        },
    }];
    assert!(d.apply(&refused).is_err());
    d.mark_stale();
    assert_eq!(*log.0.lock().unwrap(), ["applied", "stale", "stale"]);
}
