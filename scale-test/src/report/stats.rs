//! Summary statistics over a run's samples: nearest-rank latency percentiles
//! and per-process resource figures.
//!
//! Non-finite values (NaN, ±∞) are dropped before anything is computed, and
//! an empty input gives `None`, so nothing here can put NaN into a report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ResourceSample, Sample};

/// The values of `samples`, finite ones only, sorted ascending.
pub fn sorted_values<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<f64> {
    let mut values: Vec<f64> = samples
        .into_iter()
        .map(|s| s.value_ms)
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The nearest-rank `p`th percentile (0 < `p` ≤ 100) of ascending `sorted`:
/// the smallest value such that at least `p`% of the values are ≤ it.
///
/// `None` when `sorted` is empty or `p` is outside (0, 100]. `p = 0` is
/// treated as the minimum.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    // `p * n` first, then `/ 100`: exact for integer `p`, so p99 of 100
    // samples is rank 99, not 100 by rounding.
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Percentiles and count of one latency series, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub count: usize,
}

impl LatencySummary {
    /// Summarises the (finite) values of `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        Self::of_sorted(&sorted_values(samples))
    }

    /// Summarises already sorted, finite values.
    pub fn of_sorted(sorted: &[f64]) -> Self {
        Self {
            p50: percentile(sorted, 50.0),
            p90: percentile(sorted, 90.0),
            p99: percentile(sorted, 99.0),
            max: sorted.last().copied(),
            count: sorted.len(),
        }
    }
}

/// CPU and memory figures of one process over a run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ResourceSummary {
    /// Mean CPU use, in percent of one core; `None` without a finite sample.
    pub cpu_percent_mean: Option<f64>,
    /// Highest CPU use seen, in percent of one core.
    pub cpu_percent_max: Option<f64>,
    /// Highest resident set size seen.
    pub rss_max_bytes: u64,
    /// Number of samples taken of this process.
    pub samples: usize,
}

/// Per-process summaries of `samples`, keyed and ordered by process name.
pub fn resource_summaries(samples: &[ResourceSample]) -> BTreeMap<String, ResourceSummary> {
    #[derive(Default)]
    struct Acc {
        cpu_sum: f64,
        cpu_n: usize,
        cpu_max: Option<f64>,
        rss_max: u64,
        samples: usize,
    }
    let mut by_process: BTreeMap<&str, Acc> = BTreeMap::new();
    for s in samples {
        let acc = by_process.entry(s.process.as_str()).or_default();
        acc.samples += 1;
        acc.rss_max = acc.rss_max.max(s.rss_bytes);
        if s.cpu_percent.is_finite() {
            acc.cpu_sum += s.cpu_percent;
            acc.cpu_n += 1;
            acc.cpu_max = Some(acc.cpu_max.map_or(s.cpu_percent, |m| m.max(s.cpu_percent)));
        }
    }
    by_process
        .into_iter()
        .map(|(name, acc)| {
            let mean = (acc.cpu_n > 0)
                .then(|| acc.cpu_sum / acc.cpu_n as f64)
                .filter(|m| m.is_finite());
            let summary = ResourceSummary {
                cpu_percent_mean: mean,
                cpu_percent_max: acc.cpu_max,
                rss_max_bytes: acc.rss_max,
                samples: acc.samples,
            };
            (name.to_owned(), summary)
        })
        .collect()
}
