//! When the agent resyncs its dataplane driver: a small decision core with
//! no I/O and no clock (the caller passes the time in).
//!
//! A failed batch leaves the driver out of sync (the `Driver` contract,
//! "After an error"). From then on, batches the graph computes are not
//! sent (the graph has folded their updates into its state, and the next
//! resync sends that whole state); a resync is due after a backoff that
//! starts at `min`, doubles with every failed resync and stops growing at
//! `max`. A successful resync brings the driver back in sync and resets
//! the backoff.

use std::time::{Duration, Instant};

/// What to do with a batch the graph computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    /// Send it to the driver.
    Apply,
    /// Keep it out of the driver: a resync is pending and covers it.
    Fold,
}

/// The driver's sync state as the agent sees it.
#[derive(Debug, Clone)]
pub struct DriverSync {
    min: Duration,
    max: Duration,
    /// When the next resync is due; `None` while the driver is in sync.
    due: Option<Instant>,
    /// The wait after the next failure.
    delay: Duration,
    /// Resyncs started since the driver went out of sync.
    attempts: u32,
}

impl DriverSync {
    /// In sync, with a backoff from `min` (at least 1 ms) doubling up to
    /// `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            due: None,
            delay: min,
            attempts: 0,
        }
    }

    /// Whether the driver holds what the graph last emitted.
    pub fn in_sync(&self) -> bool {
        self.due.is_none()
    }

    /// When the next resync is due, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Resyncs started since the driver went out of sync.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a computed batch goes to the driver.
    pub fn batch(&self) -> BatchAction {
        if self.in_sync() {
            BatchAction::Apply
        } else {
            BatchAction::Fold
        }
    }

    /// Whether a resync should start at `now`; if so, counts the attempt
    /// and returns its number (1 for the first since the failure).
    pub fn start(&mut self, now: Instant) -> Option<u32> {
        match self.due {
            Some(at) if now >= at => {
                self.attempts += 1;
                Some(self.attempts)
            }
            _ => None,
        }
    }

    /// A batch or a resync failed at `now`: the driver is out of sync and
    /// the next resync is due after the current backoff, which then
    /// doubles (up to `max`). Returns when the resync is due.
    pub fn failed(&mut self, now: Instant) -> Instant {
        let at = now + self.delay;
        self.due = Some(at);
        self.delay = (self.delay * 2).min(self.max);
        at
    }

    /// The resync succeeded: in sync again, backoff reset.
    pub fn resynced(&mut self) {
        self.due = None;
        self.delay = self.min;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn in_sync_batches_are_applied_and_nothing_is_due() {
        let mut s = DriverSync::new(ms(100), ms(10_000));
        let now = Instant::now();
        assert!(s.in_sync());
        assert_eq!(s.batch(), BatchAction::Apply);
        assert_eq!(s.due(), None);
        assert_eq!(s.start(now + ms(60_000)), None);
    }

    #[test]
    fn a_failure_folds_batches_until_a_resync_that_is_due_after_the_backoff() {
        let mut s = DriverSync::new(ms(100), ms(10_000));
        let t0 = Instant::now();
        assert_eq!(s.failed(t0), t0 + ms(100));
        assert!(!s.in_sync());
        assert_eq!(s.batch(), BatchAction::Fold);
        assert_eq!(s.start(t0 + ms(99)), None, "not due yet");
        assert_eq!(s.start(t0 + ms(100)), Some(1));
        s.resynced();
        assert!(s.in_sync());
        assert_eq!(s.batch(), BatchAction::Apply);
        assert_eq!(s.attempts(), 0);
    }

    #[test]
    fn failed_resyncs_double_the_backoff_up_to_the_cap_and_success_resets_it() {
        let mut s = DriverSync::new(ms(100), ms(10_000));
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for attempt in 1..=10u32 {
            let due = s.failed(now);
            waits.push((due - now).as_millis());
            now = due;
            assert_eq!(s.start(now), Some(attempt));
        }
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        s.resynced();
        assert_eq!(s.failed(now), now + ms(100), "the backoff starts over");
        assert_eq!(s.start(now + ms(100)), Some(1));
    }

    #[test]
    fn bounds_are_sane_whatever_is_passed() {
        let mut s = DriverSync::new(Duration::ZERO, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(s.failed(now), now + ms(1));
        assert_eq!(s.failed(now), now + ms(1));
    }
}
