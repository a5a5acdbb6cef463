//! Table tests of what host endpoints get: the data files
//! `testdata/host-endpoints/*.txt` (see [`crate::datadriven`]).
//!
//! - `state NODE`: the whole cluster state as YAML; the graph of node
//!   `NODE` moves to it from its previous block's state (updates only for
//!   what changed, removals included), and must then equal a graph built
//!   from scratch. Expected: the host endpoints the driver holds, each as
//!   `hep ID IFACE profiles=[..]` followed by one line per tier of each
//!   kind (`normal`, `pre-dnat`, `untracked`, `forward`):
//!   `  KIND TIER default=ACTION in=[..] out=[..]`.
//!
//! These hold the calculation to Calico's split of a host endpoint's
//! policies (`splitTiers` in Felix's event sequencer): `doNotTrack` to the
//! untracked tiers, `preDNAT` to the pre-DNAT tiers, every other policy to
//! the normal tiers, and those with `applyOnForward` to the forward tiers
//! as well.

use std::collections::BTreeMap;
use std::path::PathBuf;

use manul_dataplane_api::{self as dp, Driver, NullDriver};

use super::golden::transition;
use super::*;
use crate::datadriven::blocks;

fn names(ids: &[dp::PolicyId]) -> String {
    ids.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(state: &dp::DesiredState) -> Vec<String> {
    let mut out = Vec::new();
    for h in state.host_endpoints.values() {
        out.push(format!(
            "hep {} {} profiles=[{}]",
            h.id,
            h.interface_name,
            h.profiles.join(",")
        ));
        for (kind, tiers) in [
            ("normal", &h.tiers),
            ("pre-dnat", &h.pre_dnat_tiers),
            ("untracked", &h.untracked_tiers),
            ("forward", &h.forward_tiers),
        ] {
            for t in tiers {
                out.push(format!(
                    "  {kind} {} default={:?} in=[{}] out=[{}]",
                    t.name,
                    t.default_action,
                    names(&t.inbound),
                    names(&t.outbound)
                ));
            }
        }
    }
    if out.is_empty() {
        out.push("no host endpoints".into());
    }
    out
}

fn build(node: &str, from: &str, to: &str, d: &mut NullDriver, g: &mut CalcGraph) {
    let mut ops = g.apply(transition(from, to));
    ops.extend(g.in_sync());
    d.apply(&ops)
        .unwrap_or_else(|e| panic!("node {node}: driver refused: {e}\n{ops:#?}"));
}

#[test]
fn tables() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/host-endpoints");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no data files in {}", dir.display());
    for path in files {
        // Per node: its graph, its driver, the state it holds.
        let mut graphs: BTreeMap<String, (CalcGraph, NullDriver, String)> = BTreeMap::new();
        for block in blocks(&path) {
            let at = format!("{}:{}", path.display(), block.line);
            let node = match block.command.split_whitespace().collect::<Vec<_>>()[..] {
                ["state", node] => node.to_string(),
                _ => panic!("{at}: unknown command {:?}", block.command),
            };
            let yaml = block.input.join("\n") + "\n";
            let (g, d, previous) = graphs.entry(node.clone()).or_insert_with(|| {
                (
                    CalcGraph::new(node.clone()),
                    NullDriver::default(),
                    String::new(),
                )
            });
            build(&node, previous, &yaml, d, g);
            *previous = yaml.clone();
            let mut fresh = (CalcGraph::new(node.clone()), NullDriver::default());
            build(&node, "", &yaml, &mut fresh.1, &mut fresh.0);
            assert_eq!(
                d.state(),
                fresh.1.state(),
                "{at}: differs from a fresh build"
            );
            let got = describe(d.state());
            assert!(
                got == block.expected,
                "{at}: expected\n{}\ngot\n{}",
                block.expected.join("\n"),
                got.join("\n")
            );
        }
    }
}
