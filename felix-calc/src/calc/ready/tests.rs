use manul_dataplane_api::{Driver, NullDriver, Operation};

use crate::calc::tests::{POLICY, puts, wep_in};
use crate::calc::{CalcGraph, Update};

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n---\n";

fn first() -> Vec<Update> {
    puts(&format!(
        "{NAMESPACE}{}{}{POLICY}",
        wep_in("api", "production", "node1", "10.65.0.2", "app: api"),
        wep_in("fe", "production", "node2", "10.65.1.2", "app: frontend"),
    ))
}

fn second() -> Vec<Update> {
    puts(&wep_in(
        "fe2",
        "production",
        "node2",
        "10.65.1.3",
        "app: frontend",
    ))
}

#[test]
fn updates_are_computed_on_ready_and_committed_on_advance() {
    let mut g = CalcGraph::new("node1");
    assert!(g.committed(), "nothing emitted yet");
    for u in first() {
        g.update(u);
    }
    let ready = g.ready();
    assert!(!ready.ops.is_empty());
    assert!(!ready.is_whole());
    assert!(!g.committed(), "emitted, not yet held by the dataplane");
    g.advance(&ready);
    assert!(g.committed());
    let empty = g.ready();
    assert!(empty.ops.is_empty(), "nothing new: {:?}", empty.ops);
    g.advance(&empty);
    assert!(g.committed());
}

#[test]
fn a_batch_after_one_the_dataplane_refused_commits_nothing_until_a_resync() {
    let mut g = CalcGraph::new("node1");
    let mut driver = NullDriver::new();
    g.extend_and_advance(first(), &mut driver);
    // The dataplane refuses this batch: it is not advanced.
    for u in second() {
        g.update(u);
    }
    let refused = g.ready();
    assert!(!refused.ops.is_empty());
    // A later batch applies on top of the refused one: advancing it does
    // not commit.
    for u in puts(&wep_in(
        "fe3",
        "production",
        "node2",
        "10.65.1.4",
        "app: frontend",
    )) {
        g.update(u);
    }
    let later = g.ready();
    assert!(!later.ops.is_empty());
    g.advance(&later);
    assert!(!g.committed());
    // The whole state brings a fresh dataplane to what the graph emitted.
    let whole = g.resync();
    assert!(whole.is_whole());
    driver.mark_stale();
    let mut ops = whole.ops.clone();
    ops.push(Operation::InSync);
    driver.apply(&ops).unwrap();
    g.advance(&whole);
    assert!(g.committed());
    let mut fresh = NullDriver::new();
    fresh.apply(&ops).unwrap();
    assert_eq!(driver.state(), fresh.state());
}

#[test]
fn resync_folds_in_updates_not_yet_computed() {
    let mut folded = CalcGraph::new("node1");
    for u in first().into_iter().chain(second()) {
        folded.update(u);
    }
    let whole = folded.resync();
    assert!(folded.ready().ops.is_empty(), "the resync computed them");
    let mut batched = CalcGraph::new("node1");
    let _ = batched.apply(first());
    let _ = batched.apply(second());
    assert_eq!(whole.ops, batched.whole_state());
}

impl CalcGraph {
    /// Takes `updates` in, applies the batch to `driver` and commits it.
    fn extend_and_advance(&mut self, updates: Vec<Update>, driver: &mut NullDriver) {
        for u in updates {
            self.update(u);
        }
        let ready = self.ready();
        driver.apply(&ready.ops).unwrap();
        self.advance(&ready);
        assert!(self.committed());
    }
}
