//! The run's report: what was injected and when, what the probes saw,
//! how long convergence took, each check's outcome, each process's CPU and
//! memory. Written as `report.json` and a self-contained `report.html`
//! (`html.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::ChaosError;
use crate::invariants::Invariant;
use crate::probes::ProbeResult;

/// One planned fault: injected, or (a leader or follower fault whose
/// replicas agreed on no leader in time) not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultRecord {
    pub kind: String,
    /// What it hit ("typha-2", "felix-node1"); empty when not injected.
    pub target: String,
    pub injected: bool,
    /// For a leader or follower fault: how its target was chosen.
    pub choice: Option<TargetChoice>,
    /// Seconds since the start of the run.
    pub start: f64,
    pub healed: Option<f64>,
    /// The revision every Felix had to reach: the newest any replica had
    /// applied just after the heal.
    pub convergence_target: Option<u64>,
    /// Seconds from the heal until every Felix had the leader's revision
    /// at the heal (`None`: not within the bound).
    pub felix_convergence: Option<f64>,
    /// Seconds from the heal until every allowed pair connected again.
    pub allowed_recovery: Option<f64>,
}

/// One replica's own status as read before a target was chosen (`answered`
/// false: it did not answer in time, and the rest is zero).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeenStatus {
    /// "typha-1" ...
    pub replica: String,
    pub answered: bool,
    /// Its Raft id.
    pub id: u64,
    pub role: String,
    /// The Raft id of the leader it sees (0: none).
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_revision: u64,
}

impl SeenStatus {
    pub fn of(statuses: &[Option<manul_proto::v1::ReplicaStatus>]) -> Vec<SeenStatus> {
        statuses
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let replica = format!("typha-{}", k + 1);
                match s {
                    Some(s) => SeenStatus {
                        replica,
                        answered: true,
                        id: s.id,
                        role: s.role.clone(),
                        leader_id: s.leader_id,
                        term: s.term,
                        commit_index: s.commit_index,
                        applied_revision: s.applied_revision,
                    },
                    None => SeenStatus {
                        replica,
                        ..SeenStatus::default()
                    },
                }
            })
            .collect()
    }
}

/// How a leader or follower fault's target was chosen: from the replicas'
/// statuses once every answering one agreed on the leader and term.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetChoice {
    /// Seconds spent polling until the replicas agreed (or gave up).
    pub waited: f64,
    pub polls: u32,
    pub settled: bool,
    /// Why they did not agree (at the last poll), when they did not.
    pub not_settled: Option<String>,
    /// The agreed leader ("typha-2") and term.
    pub leader: Option<String>,
    pub term: Option<u64>,
    /// The target's role in that view: "leader" or "follower".
    pub role: Option<String>,
    /// The statuses of the last poll, which the choice was made from.
    pub statuses: Vec<SeenStatus>,
}

/// Something that happened (a fault, a crash, a churn error).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub t: f64,
    pub what: String,
}

/// One process's samples: seconds, CPU (percent of a core), RSS (MiB).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessSeries {
    pub name: String,
    pub samples: Vec<(f64, f64, f64)>,
    /// The fitted growth in MiB per hour: over the second half of a
    /// Felix's longest life, over a Typha replica's longest life after its
    /// warm-up (`None`: no life long enough).
    pub growth_mib_per_hour: Option<f64>,
}

/// One replica's stream, as the watcher on it saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    pub replica: usize,
    pub connections: u64,
    pub snapshots: u64,
    pub resumes: u64,
    pub batches: u64,
    pub revision: u64,
    pub state_hash: String,
    pub violations: Vec<String>,
}

/// One replica at the end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaFinal {
    pub replica: usize,
    pub applied_revision: u64,
    pub state_hash: String,
}

/// The recorded API history.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistorySummary {
    pub operations: usize,
    pub applies: usize,
    pub gets: usize,
    pub deletes: usize,
    pub unknown: usize,
    pub conflicts: usize,
    /// Each key's verdict.
    pub verdicts: BTreeMap<String, String>,
}

/// The probes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProbeSummary {
    pub denied_probes: usize,
    pub unexpected_allows: usize,
    pub allowed_probes: usize,
    pub allowed_failures: usize,
    pub pairs: Vec<String>,
    /// Per second of the run: allowed connected, allowed failed, denied
    /// refused, denied connected.
    pub per_second: Vec<(u32, u32, u32, u32, u32)>,
}

impl ProbeSummary {
    pub fn of(results: &[ProbeResult], pairs: Vec<String>) -> ProbeSummary {
        let mut s = ProbeSummary {
            pairs,
            ..ProbeSummary::default()
        };
        let mut seconds: BTreeMap<u32, (u32, u32, u32, u32)> = BTreeMap::new();
        for r in results {
            let b = seconds.entry(r.t as u32).or_default();
            match (r.allowed, r.connected) {
                (true, true) => b.0 += 1,
                (true, false) => {
                    b.1 += 1;
                    s.allowed_failures += 1;
                }
                (false, false) => b.2 += 1,
                (false, true) => {
                    b.3 += 1;
                    s.unexpected_allows += 1;
                }
            }
            if r.allowed {
                s.allowed_probes += 1;
            } else {
                s.denied_probes += 1;
            }
        }
        s.per_second = seconds
            .into_iter()
            .map(|(t, (a, b, c, d))| (t, a, b, c, d))
            .collect();
        s
    }
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub mode: String,
    pub seed: Option<u64>,
    pub nodes: usize,
    pub seconds: f64,
    pub ok: bool,
    pub invariants: Vec<Invariant>,
    pub faults: Vec<FaultRecord>,
    pub events: Vec<Event>,
    pub probes: ProbeSummary,
    pub history: HistorySummary,
    pub streams: Vec<StreamSummary>,
    pub replicas: Vec<ReplicaFinal>,
    pub processes: Vec<ProcessSeries>,
    /// Where the cluster's logs were kept, when they were.
    pub logs: Option<String>,
}

impl Report {
    /// Writes `report.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ChaosError> {
        std::fs::create_dir_all(dir).map_err(|e| ChaosError::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| ChaosError::Setup(format!("report: {e}")))?;
        let path = dir.join("report.json");
        std::fs::write(&path, json).map_err(|e| ChaosError::io(&path, e))?;
        let path = dir.join("report.html");
        std::fs::write(&path, crate::html::render(self)).map_err(|e| ChaosError::io(&path, e))?;
        Ok(())
    }
}
