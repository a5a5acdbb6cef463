use manul_dataplane_api::{Driver, NullDriver, Operation};
use manul_model::ResourceKey;

use crate::calc::tests::{POLICY, puts, wep_in};
use crate::calc::{CalcGraph, Update};

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n---\n";

fn delete(key: ResourceKey) -> Update {
    Update { key, value: None }
}

/// Feeds `steps` to a graph, applying each batch to `incremental`; returns
/// the graph.
fn replay(steps: Vec<Vec<Update>>, incremental: &mut NullDriver) -> CalcGraph {
    let mut g = CalcGraph::new("node1");
    for (i, step) in steps.into_iter().enumerate() {
        let mut ops = g.apply(step);
        if i == 0 {
            ops.extend(g.in_sync());
        }
        incremental.apply(&ops).unwrap();
    }
    g
}

fn steps() -> Vec<Vec<Update>> {
    let api = puts(&wep_in(
        "api",
        "production",
        "node1",
        "10.65.0.2",
        "app: api",
    ));
    let api_key = api[0].key.clone();
    vec![
        puts(&format!(
            "{NAMESPACE}{}{}{}{POLICY}",
            wep_in("api", "production", "node1", "10.65.0.2", "app: api"),
            wep_in("fe", "production", "node2", "10.65.1.2", "app: frontend"),
            wep_in("fe2", "production", "node2", "10.65.1.3", "app: frontend"),
        )),
        // A member leaves the policy's set; another local endpoint arrives.
        puts(&format!(
            "{}{}",
            wep_in("fe2", "production", "node2", "10.65.1.3", "app: other"),
            wep_in("db", "production", "node1", "10.65.0.9", "app: api"),
        )),
        vec![delete(api_key)],
    ]
}

#[test]
fn the_whole_state_builds_what_the_batches_built() {
    let mut incremental = NullDriver::new();
    let g = replay(steps(), &mut incremental);
    let mut ops = g.whole_state();
    assert!(!ops.iter().any(|o| matches!(o, Operation::InSync)));
    ops.push(Operation::InSync);
    let mut fresh = NullDriver::new();
    fresh.apply(&ops).unwrap();
    assert_eq!(fresh.state(), incremental.state());
    assert!(fresh.ip_set_count() > 0 && fresh.policy_count() == 1);
    assert_eq!(fresh.workload_endpoint_count(), 1);
}

#[test]
fn a_stale_driver_resynced_with_the_whole_state_holds_exactly_the_graph_state() {
    // The driver refused a batch part-way through the history: it holds an
    // older state, marked stale, while the graph moved on.
    let mut reference = NullDriver::new();
    let g = replay(steps(), &mut reference);
    let mut behind = NullDriver::new();
    let mut all = steps();
    all.truncate(1);
    replay(all, &mut behind);
    behind.mark_stale();
    let mut ops = g.whole_state();
    ops.push(Operation::InSync);
    behind.apply(&ops).unwrap();
    assert_eq!(behind.state(), reference.state());
    assert_eq!(behind.stale_count(), 0);
}
