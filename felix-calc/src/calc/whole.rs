//! The whole desired state as operations, for a driver resync.

use manul_dataplane_api as dp;

use super::CalcGraph;

impl CalcGraph {
    /// Every operation a driver with nothing needs to hold what the graph
    /// last emitted, in contract order (IP sets, policies, profiles,
    /// workload endpoints, host endpoints, services, the nodes'
    /// addresses when there are any), without `InSync`:
    /// what a resync sends after a failed batch, the same state that the
    /// batches emitted since start-up built. It reads what was emitted, so
    /// call it between [`CalcGraph::apply`] calls (as every call leaves
    /// nothing pending).
    pub fn whole_state(&self) -> Vec<dp::Operation> {
        let e = &self.emitted;
        let mut sets: Vec<&super::sets::SetState> = self
            .sets
            .all
            .iter()
            .flatten()
            .filter(|s| s.emitted && s.refs > 0)
            .collect();
        sets.sort_by(|a, b| a.id.cmp(&b.id));
        let mut ops = Vec::with_capacity(
            sets.len()
                + e.policies.len()
                + e.profiles.len()
                + e.workloads.len()
                + e.hosts.len()
                + e.services.len(),
        );
        for s in sets {
            let mut members: Vec<dp::IpSetMember> = s.members.keys().copied().collect();
            members.sort();
            ops.push(dp::Operation::IpSetUpdate {
                id: s.id.clone(),
                kind: s.def.kind(),
                members,
            });
        }
        ops.extend(
            e.policies
                .iter()
                .map(|(id, p)| dp::Operation::PolicyUpdate {
                    id: id.clone(),
                    policy: p.clone(),
                }),
        );
        ops.extend(
            e.profiles
                .iter()
                .map(|(id, p)| dp::Operation::ProfileUpdate {
                    id: id.clone(),
                    profile: p.clone(),
                }),
        );
        ops.extend(
            e.workloads
                .values()
                .map(|w| dp::Operation::WorkloadEndpointUpdate(w.clone())),
        );
        ops.extend(
            e.hosts
                .values()
                .map(|h| dp::Operation::HostEndpointUpdate(h.clone())),
        );
        ops.extend(
            e.services
                .values()
                .map(|s| dp::Operation::ServiceUpdate(s.clone())),
        );
        if !e.node_addresses.is_empty() || !e.local_addresses.is_empty() || !e.pools.is_empty() {
            ops.push(dp::Operation::NodeAddresses {
                addresses: e.node_addresses.iter().copied().collect(),
                local: e.local_addresses.iter().copied().collect(),
                pools: e.pools.iter().copied().collect(),
            });
        }
        ops
    }
}

#[cfg(test)]
mod tests;
