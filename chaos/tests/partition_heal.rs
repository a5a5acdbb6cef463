//! A replica cut off by a real partition (drop rules between the replicas'
//! namespaces, so its peers' packets vanish rather than being refused) and
//! then healed: every replica must agree on one leader soon after the
//! heal, whichever replica was cut off. Before each Raft call had a
//! deadline sized to its batch and a failed call dropped its connection,
//! the leader's queue to a cut-off replica waited behind one call for ten
//! seconds and then on TCP's backed-off retransmissions of the old
//! connection: 0.6 to 2.5 s after a 4 s cut here (0.3 s now), and in a
//! chaos run on a loaded machine more than 9 s, while the healed replica
//! knew no leader. The cut here lasts 7 s, past the first retransmissions
//! a loaded machine's TCP makes. Needs root (namespaces, nftables) and the
//! workspace's programs; fails, rather than skips, without root when
//! `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use manul_chaos::leadership::{self, Agreed};
use manul_chaos::{faults, setup};
use manul_client::Client;
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster};

/// How soon after a heal the replicas must agree again: an election
/// timeout (1 s) and the one call a peer's queue may still be waiting on
/// (1 s), with slack for a loaded machine.
const AFTER_HEAL: Duration = Duration::from_secs(3);
const CUT: Duration = Duration::from_secs(7);

fn agreed_within(
    rt: &tokio::runtime::Runtime,
    peers: &[Client],
    within: Duration,
) -> Result<(Agreed, Duration), String> {
    let begin = Instant::now();
    let peers: Vec<manul_client::Cluster> = peers.iter().map(|p| p.cluster(None)).collect();
    loop {
        let p = peers.clone();
        let statuses = setup::on(rt, async move { faults::statuses(&p).await }).unwrap();
        match leadership::agreed(&statuses) {
            Ok(a) => return Ok((a, begin.elapsed())),
            Err(why) if begin.elapsed() >= within => {
                return Err(format!("not agreed after {:?}: {why}", begin.elapsed()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_healed_replica_hears_the_leader_within_seconds() {
    if !manul_netns::testing::have_root("partitioning Typha replicas") {
        return;
    }
    let name = manul_netns::unique_prefix("cp");
    let c = LocalCluster::up(ClusterConfig {
        name,
        nodes: 1,
        typha_replicas: 3,
        dataplane: Dataplane::Bpf,
        policy_setup_timeout: Duration::ZERO,
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    let rt = setup::runtime(&c).unwrap();
    let admin = setup::admin_config(&c).unwrap();
    let peers = setup::clients(&rt, &c.typha_peer_addresses(), &admin).unwrap();
    let others = |k: usize| -> Vec<usize> { (0..3).filter(|&o| o != k).collect() };

    // The leader first (it steps down and the others elect a new one),
    // then a follower (the leader keeps a majority), each healed after
    // CUT; the replicas must agree within AFTER_HEAL of every heal.
    let mut took = Vec::new();
    for round in ["leader", "follower"] {
        let (before, _) = agreed_within(&rt, &peers, Duration::from_secs(10)).unwrap();
        let k = match round {
            "leader" => before.leader,
            _ => (before.leader + 1) % 3,
        };
        c.partition_typha(k, &others(k)).unwrap();
        std::thread::sleep(CUT);
        c.heal_partitions().unwrap();
        let (after, t) = agreed_within(&rt, &peers, AFTER_HEAL)
            .unwrap_or_else(|e| panic!("{round} typha-{} healed: {e}", k + 1));
        if round == "leader" {
            assert_ne!(after.leader, k, "the cut-off leader still leads");
        }
        took.push((round, t));
    }
    eprintln!("agreed after each heal: {took:?}");
}
