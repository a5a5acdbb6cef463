//! Which flow-event destinations can be a translated service connection's
//! backend, so that the flow-event thread looks up the service NAT (one
//! system call or more per event) for those alone. No I/O.
//!
//! Every backend the service maps name is in the set; a backend that left
//! them stays for [`REMOVED_GRACE_MS`] (a connection translated to it just
//! before may still have its start event in the ring buffer); while the
//! service maps are being written every destination may be one.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// How long a backend that left the service maps still counts, in
/// milliseconds: far longer than an event waits in the ring buffer.
pub const REMOVED_GRACE_MS: u64 = 60_000;

#[derive(Debug)]
pub struct ServiceBackends {
    current: HashSet<(IpAddr, u16)>,
    /// Backends that left the maps, and when (milliseconds).
    removed: HashMap<(IpAddr, u16), u64>,
    /// The maps are being written (or were never read): any destination
    /// may be a backend.
    changing: bool,
}

impl Default for ServiceBackends {
    fn default() -> Self {
        Self {
            current: HashSet::new(),
            removed: HashMap::new(),
            changing: true,
        }
    }
}

impl ServiceBackends {
    /// The service maps are about to be written.
    pub fn begin_change(&mut self) {
        self.changing = true;
    }

    /// The service maps now name exactly `backends` (address and port), at
    /// `now_ms`.
    pub fn set(&mut self, backends: impl IntoIterator<Item = (IpAddr, u16)>, now_ms: u64) {
        let next: HashSet<(IpAddr, u16)> = backends.into_iter().collect();
        for gone in self.current.difference(&next) {
            self.removed.insert(*gone, now_ms);
        }
        for back in &next {
            self.removed.remove(back);
        }
        self.removed
            .retain(|_, at| now_ms.saturating_sub(*at) < REMOVED_GRACE_MS);
        self.current = next;
        self.changing = false;
    }

    /// Whether a connection to `addr`:`port` may have been translated by
    /// the service NAT.
    pub fn may_be_translated(&self, addr: IpAddr, port: u16) -> bool {
        self.changing
            || self.current.contains(&(addr, port))
            || self.removed.contains_key(&(addr, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last: u8, port: u16) -> (IpAddr, u16) {
        (IpAddr::from([10, 0, 0, last]), port)
    }

    #[test]
    fn destinations_that_may_be_translated() {
        // Steps: (backends set at a time, or None: a change begins), then
        // the destinations checked and whether each may be translated.
        type Step = (
            Option<(Vec<(IpAddr, u16)>, u64)>,
            Vec<((IpAddr, u16), bool)>,
        );
        let steps: Vec<Step> = vec![
            // Never set: anything may be.
            (None, vec![(at(1, 80), true), (at(9, 9), true)]),
            (
                Some((vec![at(1, 80), at(2, 80)], 1_000)),
                vec![(at(1, 80), true), (at(1, 81), false), (at(3, 80), false)],
            ),
            // 10.0.0.1:80 leaves: kept for the grace period.
            (
                Some((vec![at(2, 80)], 2_000)),
                vec![(at(1, 80), true), (at(2, 80), true)],
            ),
            (None, vec![(at(7, 7), true)]),
            (
                Some((vec![at(2, 80)], 2_000 + REMOVED_GRACE_MS - 1)),
                vec![(at(1, 80), true), (at(7, 7), false)],
            ),
            (
                Some((vec![at(2, 80)], 2_000 + REMOVED_GRACE_MS)),
                vec![(at(1, 80), false), (at(2, 80), true)],
            ),
            // Back again, then gone again: the grace restarts.
            (
                Some((vec![at(1, 80)], 100_000)),
                vec![(at(1, 80), true), (at(2, 80), true)],
            ),
            (
                Some((vec![], 100_000 + REMOVED_GRACE_MS)),
                vec![(at(1, 80), true), (at(2, 80), false)],
            ),
        ];
        let mut b = ServiceBackends::default();
        for (i, (change, checks)) in steps.into_iter().enumerate() {
            match change {
                None => b.begin_change(),
                Some((backends, now)) => b.set(backends, now),
            }
            for ((addr, port), want) in checks {
                assert_eq!(
                    b.may_be_translated(addr, port),
                    want,
                    "step {i}: {addr}:{port}"
                );
            }
        }
    }
}
