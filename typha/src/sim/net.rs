//! The simulated network between replicas: every Raft message goes through
//! a queue where the seed decides its fate (dropped, duplicated, delayed,
//! hence reordered) and partitions cut pairs of replicas until they heal.
//! No I/O.

use std::collections::BTreeSet;

use raft::prelude::Message;

use super::rng::Rng;

/// How hostile the network is, drawn per seed.
#[derive(Debug, Clone)]
pub struct NetFaults {
    /// Per million messages.
    pub drop: u64,
    pub duplicate: u64,
    /// Delivery delay in steps, uniform in `1..=max_delay`.
    pub max_delay: u64,
}

impl NetFaults {
    pub fn draw(rng: &mut Rng) -> NetFaults {
        NetFaults {
            drop: rng.below(150_000),
            duplicate: rng.below(50_000),
            max_delay: rng.between(1, 20),
        }
    }

    /// A quiet network: the final phase, to let the cluster converge.
    pub fn quiet() -> NetFaults {
        NetFaults {
            drop: 0,
            duplicate: 0,
            max_delay: 2,
        }
    }
}

#[derive(Debug)]
struct InFlight {
    at: u64,
    seq: u64,
    msg: Message,
}

/// What happened to a message handed to the network.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// Dropped: lost, or the link is cut.
    Dropped,
}

/// Messages in flight and the cut links.
#[derive(Debug, Default)]
pub struct Net {
    queue: Vec<InFlight>,
    seq: u64,
    /// Cut links, (from, to): messages either way are dropped.
    cut: BTreeSet<(u64, u64)>,
}

impl Net {
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn cut(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn has_cuts(&self) -> bool {
        !self.cut.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Hands `msg` to the network at step `now`.
    pub fn send(&mut self, now: u64, msg: Message, faults: &NetFaults, rng: &mut Rng) -> Sent {
        if self.is_cut(msg.from, msg.to) || rng.chance(faults.drop) {
            return Sent::Dropped;
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + rng.between(1, faults.max_delay);
            self.seq += 1;
            self.queue.push(InFlight {
                at,
                seq: self.seq,
                msg: msg.clone(),
            });
        }
        Sent::Queued
    }

    /// The messages due at step `now`, in (due step, send order) order;
    /// those on a link cut meanwhile are dropped (returned apart, so a
    /// snapshot's sender can be told).
    pub fn due(&mut self, now: u64) -> (Vec<Message>, Vec<Message>) {
        let mut due: Vec<InFlight> = Vec::new();
        let mut kept = Vec::with_capacity(self.queue.len());
        for m in self.queue.drain(..) {
            if m.at <= now {
                due.push(m);
            } else {
                kept.push(m);
            }
        }
        self.queue = kept;
        due.sort_by_key(|m| (m.at, m.seq));
        let (lost, delivered): (Vec<_>, Vec<_>) = due
            .into_iter()
            .map(|m| m.msg)
            .partition(|m| self.cut.contains(&(m.from, m.to)));
        (delivered, lost)
    }
}
