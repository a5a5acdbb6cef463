//! How long the sync client waits before it asks a replica again (no I/O,
//! no clock: the caller sleeps what it is told).
//!
//! After a failure the wait starts at `min` and doubles up to `max`; once
//! the stream is in sync it starts again from at most 100 ms. A refusal
//! that carries the server's retry hint (a replica that does not serve
//! yet for want of a Raft leader: it lasts about an election) waits the
//! hint instead (within `min..=max`) and does not double, for at most
//! [`HINTED_RETRIES`] refusals in a row: enough to ride out a cluster's
//! first election without adding seconds of backoff to it, few enough
//! that a cluster with no quorum for long is not asked several times a
//! second by every Felix.

use std::time::Duration;

/// Hinted refusals in a row that are retried at the hint; past them the
/// ordinary doubling resumes.
pub const HINTED_RETRIES: u32 = 15;

/// The client's reconnection backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    hinted: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            hinted: 0,
        }
    }

    /// How long to wait after a lost or refused stream; `hint` is the
    /// server's retry hint, when it gave one.
    pub fn after_failure(&mut self, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint
            && self.hinted < HINTED_RETRIES
        {
            self.hinted += 1;
            return hint.clamp(self.min, self.max);
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The stream is in sync: the next failure waits little again.
    pub fn in_sync(&mut self) {
        self.next = Duration::from_millis(100).clamp(self.min, self.max);
        self.hinted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn failures_double_and_being_in_sync_starts_small_again() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let waits: Vec<_> = (0..6).map(|_| b.after_failure(None)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000].map(|m| m * MS));
        b.in_sync();
        assert_eq!(b.after_failure(None), 100 * MS);
    }

    #[test]
    fn hinted_refusals_wait_the_hint_without_doubling_for_a_while() {
        let mut b = Backoff::new(100 * MS, 5000 * MS);
        // A failure before: the doubling has started.
        assert_eq!(b.after_failure(None), 100 * MS);
        for _ in 0..HINTED_RETRIES {
            assert_eq!(b.after_failure(Some(200 * MS)), 200 * MS);
        }
        // Refused with the hint for too long: the ordinary doubling goes
        // on where it was.
        assert_eq!(b.after_failure(Some(200 * MS)), 200 * MS);
        assert_eq!(b.after_failure(Some(200 * MS)), 400 * MS);
        assert_eq!(b.after_failure(Some(200 * MS)), 800 * MS);
        // In sync again: hints count from zero.
        b.in_sync();
        assert_eq!(b.after_failure(Some(200 * MS)), 200 * MS);
        // A hint outside the bounds is held to them.
        assert_eq!(b.after_failure(Some(MS)), 100 * MS);
        assert_eq!(b.after_failure(Some(60_000 * MS)), 5000 * MS);
    }
}
