//! Which faults a run injects and when: the CI schedule (each kind once,
//! in a fixed order) or a random one from a seed. Pure: times are offsets
//! from the start of the run.

use std::time::Duration;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the Raft leader, restart it after the fault's duration.
    KillLeader,
    /// SIGKILL a follower, restart it after the fault's duration.
    KillFollower,
    /// Cut the leader off from the other replicas, then heal.
    PartitionLeader,
    /// Cut a follower off from the other replicas, then heal.
    PartitionFollower,
    /// SIGSTOP a Felix, SIGCONT it after the fault's duration.
    StopFelix,
    /// SIGKILL a Felix and start it again at once.
    RestartFelix,
    /// Fill the small disk under one replica, free it after the fault's
    /// duration.
    FullDisk,
    /// Throttle one replica's writes to its disk, lift the limit after the
    /// fault's duration.
    SlowDisk,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::PartitionLeader,
        FaultKind::PartitionFollower,
        FaultKind::StopFelix,
        FaultKind::RestartFelix,
        FaultKind::FullDisk,
        FaultKind::SlowDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionFollower => "partition-follower",
            FaultKind::StopFelix => "stop-felix",
            FaultKind::RestartFelix => "restart-felix",
            FaultKind::FullDisk => "full-disk",
            FaultKind::SlowDisk => "slow-disk",
        }
    }
}

/// A fault to inject: when, for how long, and which node it picks when it
/// targets a Felix (an index taken modulo the node count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    #[serde(serialize_with = "secs")]
    pub at: Duration,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    pub node: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// SplitMix64: a small, well-mixed generator, so a seed means the same
/// schedule everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A duration in `lo..=hi`, in milliseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// How long after a fault heals the cluster is left alone before the
/// next one (convergence is measured in this gap).
pub const SETTLE: Duration = Duration::from_secs(4);

/// Each kind once, in a fixed order, starting at `warmup`: the CI run.
pub fn ci(warmup: Duration) -> Vec<Planned> {
    let mut at = warmup;
    FaultKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let duration = match kind {
                FaultKind::RestartFelix => Duration::ZERO,
                FaultKind::StopFelix => Duration::from_secs(5),
                _ => Duration::from_secs(4),
            };
            let p = Planned {
                kind,
                at,
                duration,
                node: i,
            };
            at += duration + SETTLE;
            p
        })
        .collect()
}

/// Random faults from `seed` until `length`, starting at `warmup`: kinds
/// drawn uniformly, each lasting 2 to 8 s (a Felix restart is immediate),
/// with a settle time after each.
pub fn random(seed: u64, warmup: Duration, length: Duration) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut at = warmup;
    loop {
        let kind = FaultKind::ALL[rng.below(FaultKind::ALL.len() as u64) as usize];
        let duration = if kind == FaultKind::RestartFelix {
            Duration::ZERO
        } else {
            rng.between(Duration::from_secs(2), Duration::from_secs(8))
        };
        let gap = rng.between(SETTLE, SETTLE * 2);
        if at + duration + gap > length {
            return out;
        }
        out.push(Planned {
            kind,
            at,
            duration,
            node: rng.below(64) as usize,
        });
        at += duration + gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ci_schedule_has_every_kind_once_without_overlap() {
        let s = ci(Duration::from_secs(5));
        assert_eq!(s.len(), FaultKind::ALL.len());
        for kind in FaultKind::ALL {
            assert_eq!(s.iter().filter(|p| p.kind == kind).count(), 1);
        }
        for w in s.windows(2) {
            assert!(w[0].at + w[0].duration + SETTLE <= w[1].at);
        }
        let end = s.last().map(|p| p.at + p.duration + SETTLE).unwrap();
        assert!(end <= Duration::from_secs(75), "{end:?}");
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_others_differ() {
        let a = random(7, Duration::from_secs(5), Duration::from_secs(600));
        assert_eq!(
            a,
            random(7, Duration::from_secs(5), Duration::from_secs(600))
        );
        assert_ne!(
            a,
            random(8, Duration::from_secs(5), Duration::from_secs(600))
        );
        assert!(a.len() > 20);
        let last = a.last().unwrap();
        assert!(last.at + last.duration <= Duration::from_secs(600));
        for kind in FaultKind::ALL {
            assert!(a.iter().any(|p| p.kind == kind), "{kind:?} never drawn");
        }
    }
}
