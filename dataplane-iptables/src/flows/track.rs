//! The pure core of nftables flow observations: log records and conntrack
//! entries in, [`FlowObservation`]s out. No I/O; time is passed in.
//!
//! - A log record of an allowing decider is a connection's `Start` on one
//!   side (the policy only sees a connection's first packet: established
//!   packets are accepted before it), with the Service frontend its
//!   conntrack entry names (carried by the record), or else the one the
//!   connection's first packet was logged with before DNAT (a record with
//!   the prefix [`FRONTEND`], [`Tracker::frontend_logged`]), matched by
//!   protocol, client address and port, the policy record's destination
//!   one of the state's backends. The connection is then followed under
//!   its tuple as policy saw it.
//! - A log record of a denying decider joins a burst: one `Denied`
//!   observation per tuple, side and decider, with its packets and bytes,
//!   at each [`Tracker::flush_denied`].
//! - A conntrack dump gives each followed connection's counters (`Update`)
//!   and its service frontend, and its `End`: a TCP entry in time-wait or
//!   close carries its final counters (the kernel keeps it 120 s and
//!   10 s); a connection seen in an earlier dump and missing from this
//!   one ends with the counters of the last dump it was in; one never
//!   seen in a dump (gone before it, or never confirmed) ends once
//!   missing past a grace period, with its start's counts (its first
//!   packet). No destroy events are read: an `End` comes at the first
//!   dump after the close.
//!
//! Queued observations are bounded; what does not fit is counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use manul_dataplane_api::verdict::Decider;
use manul_dataplane_api::{
    EndpointId, FlowCounts, FlowObservation, FlowPhase, FlowTuple, Reporter,
};

use super::packet::PacketInfo;
use super::prefix::{FRONTEND, FlowIndex, parse_prefix};

/// One nflog record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub prefix: String,
    /// The interfaces the packet came in and goes out through.
    pub in_if: Option<String>,
    pub out_if: Option<String>,
    pub packet: PacketInfo,
    /// The Service frontend the connection came through, when the record
    /// carried its conntrack entry and it was translated.
    pub frontend: Option<(IpAddr, u16)>,
}

/// One conntrack entry: its original direction, who answers (after
/// destination NAT), and its counters when accounting is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    /// As the client sent it (the frontend as destination).
    pub orig: FlowTuple,
    /// The reply's source: the backend that answers.
    pub reply_src: IpAddr,
    pub reply_src_port: u16,
    pub counts: Option<FlowCounts>,
    /// A TCP connection that is over (time-wait or close): the kernel
    /// keeps the entry a while, but its counters are final. Other closing
    /// states (fin-wait, close-wait, last-ack) still expect a packet.
    pub closed: bool,
}

impl CtEntry {
    /// The tuple as policy saw it: after destination NAT, before source NAT.
    pub fn policy_tuple(&self) -> FlowTuple {
        FlowTuple {
            dst: self.reply_src,
            dst_port: self.reply_src_port,
            ..self.orig
        }
    }

    /// The frontend the client addressed, when it was translated.
    pub fn frontend(&self) -> Option<(IpAddr, u16)> {
        let policy = self.policy_tuple();
        (policy.dst != self.orig.dst || policy.dst_port != self.orig.dst_port)
            .then_some((self.orig.dst, self.orig.dst_port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Side {
    reporter: Reporter,
    endpoint: Option<EndpointId>,
    decider: Decider,
}

#[derive(Debug, Clone)]
struct Live {
    sides: Vec<Side>,
    frontend: Option<(IpAddr, u16)>,
    counts: FlowCounts,
    started_ms: u64,
    /// Seen in a dump (so it was confirmed).
    seen: bool,
}

/// A connection's protocol, client address and client port.
type Client = (u8, IpAddr, u16);

type BurstKey = (FlowTuple, Reporter, Option<EndpointId>, Decider);

#[derive(Debug, Clone, Copy, Default)]
struct Burst {
    packets: u64,
    bytes: u64,
}

/// Limits of a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Observations queued until taken.
    pub queue: usize,
    /// Connections followed at once.
    pub connections: usize,
    /// How long a connection never seen in a dump is kept (a connection
    /// whose first packet another side dropped is never confirmed).
    pub grace_ms: u64,
    /// Frontends of new translated connections (logged before DNAT) kept
    /// for their policy records at most, and for how long.
    pub frontends: usize,
    pub frontends_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue: 65_536,
            connections: 262_144,
            grace_ms: 2_000,
            frontends: 65_536,
            frontends_ms: 10_000,
        }
    }
}

/// Followed connections, denied bursts and queued observations.
#[derive(Debug, Default)]
pub struct Tracker {
    limits: Limits,
    live: HashMap<FlowTuple, Live>,
    denied: HashMap<BurstKey, Burst>,
    /// Frontends of new translated connections by protocol, client
    /// address and port (what DNAT leaves and policy sees before SNAT),
    /// with when they came.
    frontends: HashMap<Client, ((IpAddr, u16), u64)>,
    out: VecDeque<FlowObservation>,
    dropped: u64,
    /// Log records whose prefix the index did not know.
    pub unknown: u64,
}

impl Tracker {
    pub fn new(limits: Limits) -> Tracker {
        Tracker {
            limits,
            ..Tracker::default()
        }
    }

    fn push(&mut self, o: FlowObservation) {
        if self.out.len() >= self.limits.queue {
            self.dropped += 1;
        } else {
            self.out.push_back(o);
        }
    }

    /// Observations dropped because the queue was full, or connections not
    /// followed because too many were.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Connections followed.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// A translated connection's first packet at `now_ms`, logged before
    /// DNAT: its destination is the frontend, for the connection's policy
    /// records that carry none (they follow it in the same group). Kept
    /// `Limits::frontends_ms` (a newer connection from the same client
    /// address and port replaces it); what does not fit is counted as
    /// dropped.
    pub fn frontend_logged(&mut self, packet: &PacketInfo, now_ms: u64) {
        let t = packet.tuple;
        let key = (t.protocol, t.src, t.src_port);
        if self.frontends.len() >= self.limits.frontends && !self.frontends.contains_key(&key) {
            self.expire_frontends(now_ms);
            if self.frontends.len() >= self.limits.frontends {
                self.dropped += 1;
                return;
            }
        }
        self.frontends.insert(key, ((t.dst, t.dst_port), now_ms));
    }

    /// Forgets logged frontends older than `Limits::frontends_ms`.
    pub fn expire_frontends(&mut self, now_ms: u64) {
        let keep = self.limits.frontends_ms;
        self.frontends
            .retain(|_, (_, at)| at.saturating_add(keep) > now_ms);
    }

    /// The logged frontend of a policy record's connection: the same
    /// protocol, client address and port, a destination translated to
    /// one of the state's backends.
    fn logged_frontend(&self, tuple: &FlowTuple, index: &FlowIndex) -> Option<(IpAddr, u16)> {
        let (frontend, _) = self
            .frontends
            .get(&(tuple.protocol, tuple.src, tuple.src_port))?;
        let translated = *frontend != (tuple.dst, tuple.dst_port)
            && frontend.0.is_ipv4() == tuple.dst.is_ipv4()
            && index.is_backend(tuple.protocol, tuple.dst, tuple.dst_port);
        translated.then_some(*frontend)
    }

    /// One log record at `now_ms`.
    pub fn log(&mut self, record: &LogRecord, index: &FlowIndex, now_ms: u64) {
        if record.prefix == FRONTEND {
            self.frontend_logged(&record.packet, now_ms);
            return;
        }
        let Some((inbound, hash)) = parse_prefix(&record.prefix) else {
            return;
        };
        let Some((decider, allowed)) = index.decider(hash) else {
            self.unknown += 1;
            return;
        };
        let (reporter, iface) = if inbound {
            (Reporter::Destination, &record.out_if)
        } else {
            (Reporter::Source, &record.in_if)
        };
        let endpoint = iface.as_deref().and_then(|i| index.endpoint(i)).cloned();
        let tuple = record.packet.tuple;
        if !allowed {
            let burst = self
                .denied
                .entry((tuple, reporter, endpoint, decider.clone()))
                .or_default();
            burst.packets += 1;
            burst.bytes += record.packet.length;
            return;
        }
        let side = Side {
            reporter,
            endpoint: endpoint.clone(),
            decider: decider.clone(),
        };
        let frontend = record
            .frontend
            .or_else(|| self.logged_frontend(&tuple, index));
        let counts = FlowCounts {
            packets_forward: 1,
            bytes_forward: record.packet.length,
            ..FlowCounts::default()
        };
        let full = self.live.len() >= self.limits.connections;
        match self.live.get_mut(&tuple) {
            Some(live) => {
                if live.sides.iter().any(|s| s.reporter == reporter) {
                    // The same side again: a new connection reusing the
                    // tuple before the old entry was seen to end.
                    live.sides.retain(|s| s.reporter != reporter);
                }
                live.sides.push(side);
                live.frontend = live.frontend.or(frontend);
            }
            None if full => self.dropped += 1,
            None => {
                self.live.insert(
                    tuple,
                    Live {
                        sides: vec![side],
                        frontend,
                        counts,
                        started_ms: now_ms,
                        seen: false,
                    },
                );
            }
        }
        self.push(FlowObservation {
            phase: FlowPhase::Start,
            time_unix_ms: now_ms,
            tuple,
            service_frontend: frontend,
            reporter,
            endpoint,
            allowed: true,
            decider: decider.clone(),
            counts,
        });
    }

    fn emit(&mut self, phase: FlowPhase, tuple: FlowTuple, live: &Live, now_ms: u64) {
        for side in &live.sides {
            self.push(FlowObservation {
                phase,
                time_unix_ms: now_ms,
                tuple,
                service_frontend: live.frontend,
                reporter: side.reporter,
                endpoint: side.endpoint.clone(),
                allowed: true,
                decider: side.decider.clone(),
                counts: live.counts,
            });
        }
    }

    fn note(live: &mut Live, entry: &CtEntry) {
        live.seen = true;
        live.frontend = entry.frontend();
        if let Some(c) = entry.counts {
            live.counts = c;
        }
    }

    /// A whole conntrack dump: an `Update` for every followed connection in
    /// it, an `End` for every closed one, and for every one missing that
    /// was seen before or is past its grace period.
    pub fn dump(&mut self, entries: &[CtEntry], now_ms: u64) {
        let mut present = HashSet::new();
        let mut closed = HashSet::new();
        for entry in entries {
            let tuple = entry.policy_tuple();
            if let Some(live) = self.live.get_mut(&tuple) {
                Self::note(live, entry);
                if entry.closed {
                    closed.insert(tuple);
                } else {
                    present.insert(tuple);
                }
            }
        }
        let grace = self.limits.grace_ms;
        let mut ended = Vec::new();
        let mut updated = Vec::new();
        for (tuple, live) in &self.live {
            if present.contains(tuple) {
                updated.push(*tuple);
            } else if closed.contains(tuple)
                || live.seen
                || live.started_ms.saturating_add(grace) <= now_ms
            {
                ended.push(*tuple);
            }
        }
        updated.sort();
        ended.sort();
        for tuple in updated {
            if let Some(live) = self.live.get(&tuple).cloned() {
                self.emit(FlowPhase::Update, tuple, &live, now_ms);
            }
        }
        for tuple in ended {
            if let Some(live) = self.live.remove(&tuple) {
                self.emit(FlowPhase::End, tuple, &live, now_ms);
            }
        }
    }

    /// One `Denied` observation per burst gathered since the last flush.
    pub fn flush_denied(&mut self, now_ms: u64) {
        let mut bursts: Vec<(BurstKey, Burst)> = self.denied.drain().collect();
        bursts.sort_by_key(|a| (a.0.0, a.0.1));
        for ((tuple, reporter, endpoint, decider), burst) in bursts {
            self.push(FlowObservation {
                phase: FlowPhase::Denied,
                time_unix_ms: now_ms,
                tuple,
                service_frontend: None,
                reporter,
                endpoint,
                allowed: false,
                decider,
                counts: FlowCounts {
                    packets_forward: burst.packets,
                    bytes_forward: burst.bytes,
                    ..FlowCounts::default()
                },
            });
        }
    }

    /// Everything queued, oldest first.
    pub fn take(&mut self) -> Vec<FlowObservation> {
        self.out.drain(..).collect()
    }
}

#[cfg(test)]
#[path = "track_tests.rs"]
mod tests;
