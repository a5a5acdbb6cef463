//! The figures: latency percentiles of one series, one measurement's
//! sample, and the medians of repeated runs with their ratios to the
//! baseline and to the fewest rules; for the services and handshake
//! benchmarks, the samples summarised per configuration (a dataplane and
//! a number of services) and the pairs of configurations they compare.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TrafficOptions;

/// Latency percentiles of one series, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub samples: usize,
    /// Attempts that timed out or failed (not in the percentiles).
    pub failures: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

impl LatencyStats {
    /// Nearest-rank percentiles of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [Duration], failures: usize) -> LatencyStats {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let pct = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            us(samples[rank.clamp(1, samples.len()) - 1])
        };
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64
        };
        LatencyStats {
            samples: samples.len(),
            failures,
            p50_us: pct(50.0),
            p90_us: pct(90.0),
            p99_us: pct(99.0),
            mean_us: mean,
            max_us: samples.last().map(|d| us(*d)).unwrap_or(0.0),
        }
    }
}

/// One measurement: one configuration, fresh namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// The driver's name, `none` for the baseline.
    pub dataplane: String,
    /// Non-matching rules before the allowing one; `None` for the baseline
    /// (nothing programmed).
    pub rules: Option<usize>,
    /// Whether a connection the policy does not allow was stopped (always
    /// false for the baseline; a driver that does not enforce is an error).
    pub enforced: bool,
    /// How long programming the state took (through the driver thread).
    pub program_ms: f64,
    /// iperf3, receiver side.
    pub throughput_bps: f64,
    /// iperf3's TCP retransmits, sender side.
    pub retransmits: Option<u64>,
    /// New TCP connections: handshake latency.
    pub connect: LatencyStats,
    /// New TCP connections per second, one after another.
    pub connects_per_sec: f64,
    /// Request/response round trips on one established connection.
    pub roundtrip: LatencyStats,
}

/// `this / reference` for each figure: above 1 is more throughput or
/// rate, and more latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub throughput: f64,
    pub connect_p50: f64,
    pub connect_p99: f64,
    pub connects_per_sec: f64,
    pub roundtrip_p50: f64,
    pub roundtrip_p99: f64,
}

/// The medians over repeated runs of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    pub dataplane: String,
    pub rules: Option<usize>,
    pub runs: usize,
    pub throughput_gbps: f64,
    /// Lowest and highest run, to show the spread.
    pub throughput_gbps_range: (f64, f64),
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
    pub connects_per_sec: f64,
    pub connects_per_sec_range: (f64, f64),
    pub roundtrip_p50_us: f64,
    pub roundtrip_p99_us: f64,
    /// Against the baseline (no dataplane), when it was measured.
    pub vs_baseline: Option<Ratios>,
    /// Against the fewest rules measured with the same dataplane.
    pub vs_fewest_rules: Option<Ratios>,
}

/// A whole benchmark: every sample and the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub dataplane: String,
    pub rule_counts: Vec<usize>,
    pub runs: usize,
    pub options: TrafficOptions,
    pub summary: Vec<TrafficSummary>,
    pub samples: Vec<TrafficSample>,
}

/// The median of `values` (sorted in place); 0 when there are none.
pub(super) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A measured configuration: a dataplane with a number of services (0
/// for the ceiling, no dataplane in the way).
pub(super) trait Configuration {
    fn dataplane(&self) -> &str;
    fn services(&self) -> usize;
}

/// `summary_of` each configuration's samples, in the order the
/// configurations are first seen.
pub(super) fn summarise_each<S: Configuration, T>(
    samples: &[S],
    summary_of: impl Fn(&str, usize, &[&S]) -> T,
) -> Vec<T> {
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for s in samples {
        let k = (s.dataplane(), s.services());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .map(|&(d, n)| {
            let of: Vec<&S> = samples
                .iter()
                .filter(|s| s.dataplane() == d && s.services() == n)
                .collect();
            summary_of(d, n, &of)
        })
        .collect()
}

/// The pairs of summaries to compare, each as (this, against): each
/// dataplane with services at its most services against its fewest; each
/// other dataplane against `baseline` (none: the last dataplane with
/// services) at the same number of services; each configuration against
/// the first ceiling (services 0).
pub(super) fn comparisons<'a, S: Configuration>(
    summary: &'a [S],
    baseline: Option<&str>,
) -> Vec<(&'a S, &'a S)> {
    let find = |d: &str, n: usize| {
        summary
            .iter()
            .find(|s| s.dataplane() == d && s.services() == n)
    };
    // Dataplanes with services, and their service counts; the ceilings
    // (services 0) apart.
    let mut dataplanes: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for s in summary.iter().filter(|s| s.services() > 0) {
        if !dataplanes.contains(&s.dataplane()) {
            dataplanes.push(s.dataplane());
        }
        if !counts.contains(&s.services()) {
            counts.push(s.services());
        }
    }
    counts.sort_unstable();
    let mut pairs = Vec::new();
    if let (Some(&few), Some(&many)) = (counts.first(), counts.last())
        && few != many
    {
        for d in &dataplanes {
            if let (Some(a), Some(b)) = (find(d, many), find(d, few)) {
                pairs.push((a, b));
            }
        }
    }
    if let Some(baseline) = baseline.or(dataplanes.last().copied()) {
        for n in &counts {
            for d in dataplanes.iter().filter(|d| **d != baseline) {
                if let (Some(a), Some(b)) = (find(d, *n), find(baseline, *n)) {
                    pairs.push((a, b));
                }
            }
        }
    }
    if let Some(ceiling) = summary.iter().find(|s| s.services() == 0) {
        for s in summary.iter().filter(|s| !std::ptr::eq(*s, ceiling)) {
            pairs.push((s, ceiling));
        }
    }
    pairs
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

fn ratios(this: &TrafficSummary, reference: &TrafficSummary) -> Ratios {
    Ratios {
        throughput: ratio(this.throughput_gbps, reference.throughput_gbps),
        connect_p50: ratio(this.connect_p50_us, reference.connect_p50_us),
        connect_p99: ratio(this.connect_p99_us, reference.connect_p99_us),
        connects_per_sec: ratio(this.connects_per_sec, reference.connects_per_sec),
        roundtrip_p50: ratio(this.roundtrip_p50_us, reference.roundtrip_p50_us),
        roundtrip_p99: ratio(this.roundtrip_p99_us, reference.roundtrip_p99_us),
    }
}

/// Medians per configuration (dataplane and rule count, baseline first,
/// then by rule count) with their ratios to the baseline and to the
/// fewest rules of the same dataplane.
pub fn summarise(samples: &[TrafficSample]) -> Vec<TrafficSummary> {
    let mut keys: Vec<(Option<usize>, String)> = samples
        .iter()
        .map(|s| (s.rules, s.dataplane.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<TrafficSummary> = keys
        .into_iter()
        .map(|(rules, dataplane)| {
            let mine: Vec<&TrafficSample> = samples
                .iter()
                .filter(|s| s.rules == rules && s.dataplane == dataplane)
                .collect();
            let col = |f: &dyn Fn(&TrafficSample) -> f64| -> Vec<f64> {
                mine.iter().map(|s| f(s)).collect()
            };
            let mut gbps = col(&|s| s.throughput_bps / 1e9);
            let mut cps = col(&|s| s.connects_per_sec);
            let range = |v: &[f64]| {
                (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                )
            };
            TrafficSummary {
                dataplane,
                rules,
                runs: mine.len(),
                throughput_gbps_range: range(&gbps),
                throughput_gbps: median(&mut gbps),
                connect_p50_us: median(&mut col(&|s| s.connect.p50_us)),
                connect_p99_us: median(&mut col(&|s| s.connect.p99_us)),
                connects_per_sec_range: range(&cps),
                connects_per_sec: median(&mut cps),
                roundtrip_p50_us: median(&mut col(&|s| s.roundtrip.p50_us)),
                roundtrip_p99_us: median(&mut col(&|s| s.roundtrip.p99_us)),
                vs_baseline: None,
                vs_fewest_rules: None,
            }
        })
        .collect();
    let baseline = out.iter().find(|s| s.rules.is_none()).cloned();
    let fewest: Vec<TrafficSummary> = out.iter().filter(|s| s.rules.is_some()).fold(
        Vec::<TrafficSummary>::new(),
        |mut acc, s| {
            // Sorted by rule count: the first per dataplane is the fewest.
            if !acc.iter().any(|a| a.dataplane == s.dataplane) {
                acc.push(s.clone());
            }
            acc
        },
    );
    for s in &mut out {
        if s.rules.is_some() {
            s.vs_baseline = baseline.as_ref().map(|b| ratios(s, b));
            s.vs_fewest_rules = fewest
                .iter()
                .find(|f| f.dataplane == s.dataplane)
                .map(|f| ratios(s, f));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_summary() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = LatencyStats::from_samples(&mut v, 2);
        assert_eq!((s.p50_us, s.p99_us, s.failures), (50.0, 99.0, 2));
        let sample = |rules: Option<usize>, bps: f64, p50: f64| TrafficSample {
            dataplane: if rules.is_some() { "x" } else { "none" }.into(),
            rules,
            enforced: rules.is_some(),
            program_ms: 0.0,
            throughput_bps: bps,
            retransmits: None,
            connect: LatencyStats {
                p50_us: p50,
                ..LatencyStats::default()
            },
            connects_per_sec: 1e6 / p50,
            roundtrip: LatencyStats::default(),
        };
        let sum = summarise(&[
            sample(None, 10e9, 50.0),
            sample(Some(10), 8e9, 60.0),
            sample(Some(1000), 8e9, 120.0),
        ]);
        assert_eq!(sum.len(), 3);
        assert!(sum[0].rules.is_none());
        let last = sum[2].vs_fewest_rules.clone().expect("ratios");
        assert!((last.connect_p50 - 2.0).abs() < 1e-9);
        let base = sum[1].vs_baseline.clone().expect("ratios");
        assert!((base.throughput - 0.8).abs() < 1e-9);
    }
}
