//! The scale test's report: the measurements of a run in, `report.json`,
//! `report.html` and a terminal summary out.
//!
//! This module is pure apart from [`Report::write`] and [`Machine::detect`]:
//! the run collects [`DataplaneRun`]s (one per dataplane it exercised), puts
//! them in a [`Report`] with its configuration and the machine, and asks for
//! the outputs.
//!
//! - [`Report::to_json`] gives the figures (percentiles, counts, per-process
//!   resources); an empty series gives `null`, never NaN.
//! - `report.html` is one self-contained page: SVG charts drawn with
//!   `plotters` and embedded inline, a table of the JSON figures and the
//!   configuration. It fetches nothing.
//! - [`Report::summary_text`] gives a few lines per dataplane for a terminal.
//!
//! Percentiles are nearest-rank over the sorted samples (see
//! [`stats::percentile`]).

mod charts;
mod html;
mod json;
mod machine;
pub mod stats;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use machine::Machine;
pub use stats::{LatencySummary, ResourceSummary};

/// The file [`Report::write`] puts the JSON figures in.
pub const JSON_FILE: &str = "report.json";
/// The file [`Report::write`] puts the HTML page in.
pub const HTML_FILE: &str = "report.html";

/// One latency measurement, taken at a time since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was measured, in seconds since the run started.
    pub at_s: f64,
    /// The latency, in milliseconds.
    pub value_ms: f64,
}

/// CPU and memory of one process, sampled at a time since the run started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// When it was sampled, in seconds since the run started.
    pub at_s: f64,
    /// Which process, e.g. "typha-1" or "felix-node1".
    pub process: String,
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// Everything measured on one dataplane during a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DataplaneRun {
    /// Time to first ping, one per new pod.
    pub ttfp: Vec<Sample>,
    /// Policy change until a newly allowed pair connects.
    pub policy_allow: Vec<Sample>,
    /// Policy change until a newly denied pair is blocked.
    pub policy_deny: Vec<Sample>,
    /// Denied pairs that got through during churn; anything but 0 fails the run.
    pub unexpected_allows: u64,
    /// Pods whose probe never succeeded, CNI errors, and the like.
    pub failures: u64,
    /// The first few failures' messages, then the first few unexpected
    /// allows' (which pair, when).
    pub failure_messages: Vec<String>,
    pub pods_created: u64,
    pub pods_deleted: u64,
    pub policy_updates: u64,
    /// How long this dataplane's run took, in seconds.
    pub duration_s: f64,
    /// CPU and memory of each Typha and Felix process over the run.
    pub resources: Vec<ResourceSample>,
}

/// A whole scale-test run: its configuration, machine, and each dataplane's
/// measurements keyed by dataplane name ("bpf", "iptables").
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The run's configuration, as the run wants it recorded.
    pub config: serde_json::Value,
    pub machine: Machine,
    pub dataplanes: BTreeMap<String, DataplaneRun>,
    /// When the run started, in seconds since the Unix epoch.
    pub started_unix: u64,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("creating the report directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serialising the report to JSON")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("renaming {} to {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Report {
    /// The report's figures as JSON (see the module docs for the shape).
    pub fn to_json(&self) -> serde_json::Value {
        json::report(self)
    }

    /// The self-contained HTML page with charts and tables.
    pub fn to_html(&self) -> String {
        html::render(self)
    }

    /// A few lines per dataplane, for printing at the end of a run.
    pub fn summary_text(&self) -> String {
        text::summary(self)
    }

    /// Creates `dir` if needed and writes [`JSON_FILE`] (pretty-printed) and
    /// [`HTML_FILE`] into it, each atomically (a temporary file, then rename).
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut json = serde_json::to_string_pretty(&self.to_json())
            .map_err(|source| ReportError::Json { source })?;
        json.push('\n');
        write_atomic(&dir.join(JSON_FILE), json.as_bytes())?;
        write_atomic(&dir.join(HTML_FILE), self.to_html().as_bytes())
    }
}

/// Writes `contents` to a temporary file beside `path`, syncs it, and renames
/// it over `path`, so readers see the old file or the whole new one.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .map_err(|source| ReportError::Write {
            path: tmp.clone(),
            source,
        });
    let result = written.and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| ReportError::Rename {
            from: tmp.clone(),
            to: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the error being returned is the one that matters.
        let _ = fs::remove_file(&tmp);
    }
    result
}
