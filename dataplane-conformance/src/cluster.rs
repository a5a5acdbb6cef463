//! The datastore side of the suite: resources in, Felix's calculation
//! graph, operations out (the same path the agent takes), plus the null
//! driver as the reference for every verdict.

use std::collections::BTreeMap;

use manul_dataplane_api::{NullDriver, Operation, Packet};
use manul_felix_calc::calc::{CalcGraph, Update};
use manul_model::resource::{Resource, ResourceKey};

use crate::ConformanceError;

/// Loads YAML resources.
pub fn parse(yaml: &str) -> Result<Vec<Resource>, ConformanceError> {
    manul_model::load::load("conformance", yaml.as_bytes())
        .into_result()
        .map(|loaded| loaded.into_iter().map(|l| l.resource).collect())
        .map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            ConformanceError::Setup(format!("bad scenario YAML: {}", text.join("; ")))
        })
}

/// The cluster as the suite sees it.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    resources: BTreeMap<ResourceKey, Resource>,
    graph: CalcGraph,
    oracle: NullDriver,
}

impl Cluster {
    pub fn new(node: &str) -> Cluster {
        Cluster {
            node: node.to_string(),
            resources: BTreeMap::new(),
            graph: CalcGraph::new(node.to_string()),
            oracle: NullDriver::new(),
        }
    }

    fn feed(
        &mut self,
        updates: Vec<Update>,
        in_sync: bool,
    ) -> Result<Vec<Operation>, ConformanceError> {
        let mut ops = self.graph.apply(updates);
        if in_sync {
            ops.extend(self.graph.in_sync());
        }
        manul_dataplane_api::Driver::apply(&mut self.oracle, &ops).map_err(|e| {
            ConformanceError::Setup(format!("the calculation graph broke the contract: {e}"))
        })?;
        Ok(ops)
    }

    /// Makes `wanted` the set of resources in the `scope` group: adds and
    /// changes what is new, deletes what is gone. Returns the operations.
    pub fn set(
        &mut self,
        scope: &mut BTreeMap<ResourceKey, Resource>,
        wanted: Vec<Resource>,
        in_sync: bool,
    ) -> Result<Vec<Operation>, ConformanceError> {
        let wanted: BTreeMap<ResourceKey, Resource> =
            wanted.into_iter().map(|r| (r.key(), r)).collect();
        let mut updates = Vec::new();
        for key in scope.keys() {
            if !wanted.contains_key(key) {
                self.resources.remove(key);
                updates.push(Update {
                    key: key.clone(),
                    value: None,
                });
            }
        }
        for (key, r) in &wanted {
            if scope.get(key) != Some(r) {
                self.resources.insert(key.clone(), r.clone());
                updates.push(Update {
                    key: key.clone(),
                    value: Some(r.clone()),
                });
            }
        }
        *scope = wanted;
        self.feed(updates, in_sync)
    }

    /// Everything again from a new graph, as a restarted agent sends it:
    /// the whole state, then in-sync.
    pub fn resync(&mut self) -> Result<Vec<Operation>, ConformanceError> {
        self.graph = CalcGraph::new(self.node.clone());
        self.oracle = NullDriver::new();
        let updates = self
            .resources
            .iter()
            .map(|(k, r)| Update {
                key: k.clone(),
                value: Some(r.clone()),
            })
            .collect();
        self.feed(updates, true)
    }

    /// The reference verdict.
    pub fn oracle_allows(&self, packet: &Packet) -> bool {
        self.oracle.state().verdict(packet).allowed
    }
}
