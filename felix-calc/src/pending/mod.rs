//! Staged policies: what the policies would do if the staged ones were
//! enforced. The calculation graph never renders a staged policy (nothing
//! of it reaches a driver); this module evaluates them instead.
//!
//! [`view`] builds the pending view (the enforced policies with each staged
//! policy applied in its tier and order, a staged `Delete` removing its
//! policy); [`pending_trace`] is the pure function that, for a packet and
//! the side of the local endpoint that judged it, gives the pending trace:
//! every policy passed (tier, kind, namespace, name, rule index, action)
//! and the verdict. It runs the reference evaluator over the pending view,
//! so enforced and pending verdicts follow one set of semantics.
//! [`PendingView`] keeps the resources the view needs from the updates
//! Felix receives and rebuilds the evaluator's state when they changed.

pub mod view;

use std::collections::BTreeMap;
use std::net::IpAddr;

use manul_model::resource::{Resource, ResourceKey};

use crate::calc::Update;
use crate::evaluator::{ClusterState, Decision, Direction, Packet, Peer, TraceError};

pub use view::{enforced_kind, pending_resources, relevant};

/// The pending verdict of one side of a packet: `None` when that side is
/// not a workload endpoint the view knows.
pub fn pending_trace(
    pending: &ClusterState,
    packet: &Packet,
    direction: Direction,
) -> Result<Option<Decision>, TraceError> {
    pending.trace_side(packet, direction)
}

/// A packet between two addresses, as a flow record has it.
pub fn packet(protocol: u8, src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Packet {
    let ports = matches!(protocol, 6 | 17 | 132 | 136);
    Packet {
        from: Peer::Ip(src),
        to: Peer::Ip(dst),
        protocol,
        src_port: ports.then_some(src_port),
        dst_port: ports.then_some(dst_port),
        icmp: None,
    }
}

/// The resources of the pending view, and its evaluator state built when
/// first needed after a change.
#[derive(Debug, Default)]
pub struct PendingView {
    resources: BTreeMap<ResourceKey, Resource>,
    state: Option<ClusterState>,
    staged: usize,
}

impl PendingView {
    pub fn new() -> PendingView {
        PendingView::default()
    }

    /// Takes one update in (resources the view does not need are ignored).
    pub fn update(&mut self, update: &Update) {
        if !relevant(update.key.kind) {
            return;
        }
        let staged = |k: &ResourceKey| enforced_kind(k.kind).is_some();
        let before = self.resources.contains_key(&update.key);
        match &update.value {
            Some(r) => {
                self.resources.insert(update.key.clone(), r.clone());
                if !before && staged(&update.key) {
                    self.staged += 1;
                }
            }
            None => {
                if self.resources.remove(&update.key).is_some() && staged(&update.key) {
                    self.staged -= 1;
                }
            }
        }
        self.state = None;
    }

    /// How many staged policies the view holds.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// The evaluator state of the pending view.
    pub fn state(&mut self) -> &ClusterState {
        self.state.get_or_insert_with(|| {
            ClusterState::from_resources_with(pending_resources(self.resources.values()), true)
        })
    }

    /// [`pending_trace`] over this view.
    pub fn trace(
        &mut self,
        packet: &Packet,
        direction: Direction,
    ) -> Result<Option<Decision>, TraceError> {
        pending_trace(self.state(), packet, direction)
    }
}

#[cfg(test)]
mod tests;
