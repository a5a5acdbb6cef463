//! Flow observations: what a driver that sees connections reports to Felix.
//!
//! A driver reports what its kernel saw, per connection and per burst of
//! denied packets, with the verdict and the rule that decided as the kernel
//! knows them. It refuses to know anything about workloads beyond the
//! endpoint it programmed: Felix enriches an observation (both endpoints'
//! namespace, workload and labels, the full enforced policy trace and the
//! staged policies' pending one) from its own state, aggregates per
//! interval and ships the result to the flow aggregator.
//!
//! Counters are cumulative for the connection (the last observation of a
//! connection carries its totals), so a lost `Update` costs precision, never
//! a double count.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ops::EndpointId;
use crate::verdict::Decider;

/// Where in its life a connection was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowPhase {
    /// A new connection was allowed.
    Start,
    /// An allowed connection is still alive (periodic, with counters).
    Update,
    /// An allowed connection ended (closed or timed out), with its totals.
    End,
    /// Packets of a connection that was denied (one observation per burst:
    /// the driver may fold repeated denials of one 5-tuple together).
    Denied,
}

/// Which side of the connection the reporting endpoint is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The local endpoint sent the connection's first packet (its outbound
    /// policy judged it).
    Source,
    /// The local endpoint received it (its inbound policy judged it).
    Destination,
}

/// The connection as policy saw it: after service translation, so `dst`
/// is the backend, and [`FlowObservation::service`] holds the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowTuple {
    /// IP protocol number.
    pub protocol: u8,
    pub src: IpAddr,
    /// 0 for protocols without ports.
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

/// Packets and bytes in each direction, from the connection's start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowCounts {
    /// From the connection's source to its destination.
    pub packets_forward: u64,
    pub bytes_forward: u64,
    /// Replies.
    pub packets_reverse: u64,
    pub bytes_reverse: u64,
}

/// One observation of one connection by one endpoint's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowObservation {
    pub phase: FlowPhase,
    /// Unix time of the observation, in milliseconds.
    pub time_unix_ms: u64,
    pub tuple: FlowTuple,
    /// The service frontend (address and port) the client addressed, when
    /// the connection was translated to a backend.
    pub service_frontend: Option<(IpAddr, u16)>,
    pub reporter: Reporter,
    /// The local endpoint whose policy judged it, when the driver knows it
    /// (a workload endpoint; `None` for host endpoints and traffic no
    /// endpoint policed).
    pub endpoint: Option<EndpointId>,
    pub allowed: bool,
    /// What decided, as the kernel recorded it: a rule's id (the same ids
    /// [`crate::Rule::id`] carries), a tier default, or no match.
    pub decider: Decider,
    pub counts: FlowCounts,
}

/// The bounded queue behind [`crate::Driver::take_flows`]: a driver pushes
/// observations as it makes them and Felix drains them. When it is full
/// the newest observation is dropped and counted (the queue never grows
/// past its capacity, and what it holds stays in order).
#[derive(Debug, Clone)]
pub struct FlowQueue {
    items: std::collections::VecDeque<FlowObservation>,
    capacity: usize,
    dropped: u64,
}

impl FlowQueue {
    /// The default capacity: a few seconds of a busy node's connections.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    pub fn new(capacity: usize) -> FlowQueue {
        FlowQueue {
            items: std::collections::VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Queues `obs`, or drops and counts it when the queue is full.
    pub fn push(&mut self, obs: FlowObservation) {
        if self.items.len() >= self.capacity {
            self.dropped += 1;
        } else {
            self.items.push_back(obs);
        }
    }

    /// Everything queued, oldest first.
    pub fn take(&mut self) -> Vec<FlowObservation> {
        self.items.drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Observations dropped since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Default for FlowQueue {
    fn default() -> Self {
        FlowQueue::new(FlowQueue::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(port: u16) -> FlowObservation {
        FlowObservation {
            phase: FlowPhase::Start,
            time_unix_ms: 1,
            tuple: FlowTuple {
                protocol: 6,
                src: IpAddr::from([10, 0, 0, 1]),
                src_port: port,
                dst: IpAddr::from([10, 0, 0, 2]),
                dst_port: 80,
            },
            service_frontend: None,
            reporter: Reporter::Source,
            endpoint: None,
            allowed: true,
            decider: Decider::NotAnEndpoint,
            counts: FlowCounts::default(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_it() {
        let mut q = FlowQueue::new(2);
        for port in 1..=5 {
            q.push(obs(port));
        }
        assert_eq!(q.dropped(), 3);
        let got: Vec<u16> = q.take().iter().map(|o| o.tuple.src_port).collect();
        assert_eq!(got, vec![1, 2]);
        assert!(q.is_empty());
        q.push(obs(9));
        assert_eq!(q.len(), 1);
        assert_eq!(q.dropped(), 3);
    }
}
