//! The run's report: what was injected and when, what the probes saw,
//! how long convergence took, each check's outcome, each process's CPU and
//! memory. Written as `report.json` and a self-contained `report.html`
//! (`html.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::ChaosError;
use crate::invariants::Invariant;
use crate::probes::ProbeResult;

/// One injected fault.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultRecord {
    pub kind: String,
    pub target: String,
    /// Seconds since the start of the run.
    pub start: f64,
    pub healed: Option<f64>,
    /// Seconds from the heal until every Felix had the leader's revision
    /// at the heal (`None`: not within the bound).
    pub felix_convergence: Option<f64>,
    /// Seconds from the heal until every allowed pair connected again.
    pub allowed_recovery: Option<f64>,
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
