//! The figures of the handshake benchmark, without I/O: one
//! measurement's sample, the rate from the median slice, and the medians
//! of repeated runs with their ratios.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::LatencyStats;
use super::stats::{Configuration, comparisons, median, summarise_each};

/// One measurement of one configuration in fresh namespaces.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeSample {
    pub dataplane: String,
    /// 0 for the ceilings (straight to the pod's IP).
    pub services: usize,
    /// Programming the services (and, for a driver, the pods) in ms.
    pub program_ms: f64,
    /// SYN-ACKs received from the target over the rate phase's wall time.
    pub handshakes_per_sec: f64,
    /// One over the median time per handshake of the slices (see
    /// [`Slices`]): the rate with the time other processes took left out.
    pub handshakes_per_sec_p50_slice: f64,
    /// The rate phase: SYNs sent, SYN-ACKs from the target, SYNs that got
    /// no answer within the timeout, resets from the target.
    pub sent: usize,
    pub answered: usize,
    pub lost: usize,
    pub resets: usize,
    /// SYN (`sendto` entered) to SYN-ACK (read), one SYN at a time.
    pub latency: LatencyStats,
    /// What a SYN to a port the policy denies got: `nothing`, `syn-ack`,
    /// `reset` or `stranger` (an answer from another address). A Manul
    /// driver must give `nothing`; without policy (none, kube-proxy) the
    /// server's kernel resets it.
    pub denied_port: String,
    /// The node namespace's netfilter conntrack entries after the
    /// measurement (`None` where netfilter conntrack is not loaded) and
    /// the table's limit.
    pub nf_conntrack_entries: Option<u64>,
    pub nf_conntrack_max: Option<u64>,
    /// `/proc/loadavg` (1, 5, 15 minutes) before the rate phase.
    pub load_average: [f64; 3],
}

/// Timestamps of a run of handshakes, taken at the end of the sending
/// loop's rounds (a round sends up to a window of SYNs, whose handshakes
/// run inside `sendto`, then reads the answers): a slice closes at the
/// first round end with at least `slice` answers since the last one. A
/// slice timed inside a round would time the reading alone.
#[derive(Debug, Clone)]
pub struct Slices {
    slice: usize,
    last: (Instant, usize),
    closed: Vec<(Duration, usize)>,
}

impl Slices {
    pub fn new(slice: usize, started: Instant) -> Slices {
        Slices {
            slice: slice.max(1),
            last: (started, 0),
            closed: Vec::new(),
        }
    }

    /// A round ended at `now` with `answered` answers in all so far.
    pub fn round_end(&mut self, answered: usize, now: Instant) {
        let (at, before) = self.last;
        let n = answered.saturating_sub(before);
        if n >= self.slice {
            self.closed.push((now.saturating_duration_since(at), n));
            self.last = (now, answered);
        }
    }

    /// Each closed slice's time per handshake.
    pub fn per_handshake(&self) -> Vec<Duration> {
        self.closed
            .iter()
            .map(|&(d, n)| d / u32::try_from(n).unwrap_or(u32::MAX).max(1))
            .collect()
    }

    /// One over the median time per handshake of the slices (0 without a
    /// closed slice).
    pub fn median_rate(&self) -> f64 {
        let mut secs: Vec<f64> = self
            .per_handshake()
            .iter()
            .map(Duration::as_secs_f64)
            .collect();
        let m = median(&mut secs);
        if m > 0.0 { 1.0 / m } else { 0.0 }
    }
}

/// The medians of one configuration's runs.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeSummary {
    pub dataplane: String,
    pub services: usize,
    pub runs: usize,
    pub handshakes_per_sec_p50_slice: f64,
    pub handshakes_per_sec_p50_slice_min: f64,
    pub handshakes_per_sec_p50_slice_max: f64,
    pub handshakes_per_sec: f64,
    pub handshakes_per_sec_min: f64,
    pub handshakes_per_sec_max: f64,
    /// The median of the runs' p50 and p99.
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    /// SYNs lost over SYNs sent, all runs together.
    pub lost_fraction: f64,
    pub program_ms: f64,
    /// The most netfilter conntrack entries any run left.
    pub nf_conntrack_entries_max: Option<u64>,
    pub load_average_1m: f64,
}

/// `dataplane` at `services` against `against` at `against_services`:
/// rates `this / that` (above 1: faster), latency `this / that` (above 1:
/// slower).
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeRatio {
    pub dataplane: String,
    pub services: usize,
    pub against: String,
    pub against_services: usize,
    pub handshakes_per_sec_p50_slice: f64,
    pub handshakes_per_sec: f64,
    pub latency_p50: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    pub samples: Vec<HandshakeSample>,
    pub summary: Vec<HandshakeSummary>,
    pub ratios: Vec<HandshakeRatio>,
}

fn summary_of(d: &str, n: usize, of: &[&HandshakeSample]) -> HandshakeSummary {
    let col =
        |f: &dyn Fn(&HandshakeSample) -> f64| -> Vec<f64> { of.iter().map(|s| f(s)).collect() };
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut slice = col(&|s| s.handshakes_per_sec_p50_slice);
    let mut wall = col(&|s| s.handshakes_per_sec);
    let sent: usize = of.iter().map(|s| s.sent).sum();
    let lost: usize = of.iter().map(|s| s.lost).sum();
    HandshakeSummary {
        dataplane: d.to_string(),
        services: n,
        runs: of.len(),
        handshakes_per_sec_p50_slice_min: min(&slice),
        handshakes_per_sec_p50_slice_max: max(&slice),
        handshakes_per_sec_p50_slice: median(&mut slice),
        handshakes_per_sec_min: min(&wall),
        handshakes_per_sec_max: max(&wall),
        handshakes_per_sec: median(&mut wall),
        latency_p50_us: median(&mut col(&|s| s.latency.p50_us)),
        latency_p99_us: median(&mut col(&|s| s.latency.p99_us)),
        lost_fraction: if sent > 0 {
            lost as f64 / sent as f64
        } else {
            0.0
        },
        program_ms: median(&mut col(&|s| s.program_ms)),
        nf_conntrack_entries_max: of.iter().filter_map(|s| s.nf_conntrack_entries).max(),
        load_average_1m: median(&mut col(&|s| s.load_average[0])),
    }
}

fn ratio(a: &HandshakeSummary, b: &HandshakeSummary) -> HandshakeRatio {
    let div = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
    HandshakeRatio {
        dataplane: a.dataplane.clone(),
        services: a.services,
        against: b.dataplane.clone(),
        against_services: b.services,
        handshakes_per_sec_p50_slice: div(
            a.handshakes_per_sec_p50_slice,
            b.handshakes_per_sec_p50_slice,
        ),
        handshakes_per_sec: div(a.handshakes_per_sec, b.handshakes_per_sec),
        latency_p50: div(a.latency_p50_us, b.latency_p50_us),
    }
}

/// Medians per configuration (in the order first seen) and the ratios:
/// each dataplane with services at its most services against its fewest;
/// each against `baseline` at the same number of services; each
/// configuration against the first ceiling (services 0).
pub fn summarise_handshakes(samples: Vec<HandshakeSample>, baseline: &str) -> HandshakeReport {
    let summary = summarise_each(&samples, summary_of);
    let ratios = comparisons(&summary, Some(baseline))
        .into_iter()
        .map(|(a, b)| ratio(a, b))
        .collect();
    HandshakeReport {
        samples,
        summary,
        ratios,
    }
}

impl Configuration for HandshakeSample {
    fn dataplane(&self) -> &str {
        &self.dataplane
    }
    fn services(&self) -> usize {
        self.services
    }
}

impl Configuration for HandshakeSummary {
    fn dataplane(&self) -> &str {
        &self.dataplane
    }
    fn services(&self) -> usize {
        self.services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_slice_leaves_a_stall_out() {
        let t0 = Instant::now();
        let mut s = Slices::new(8, t0);
        let mut now = t0;
        // Rounds of 8 answers taking 80 µs (10 µs a handshake); the third
        // stalled for 1 ms.
        for k in 1..=5 {
            now += Duration::from_micros(if k == 3 { 1080 } else { 80 });
            s.round_end(8 * k, now);
        }
        let d = s.per_handshake();
        assert_eq!(d.len(), 5);
        assert_eq!(d[2], Duration::from_micros(135));
        assert!((s.median_rate() - 100_000.0).abs() < 1e-6);
        // Rounds with fewer answers than a slice add up into one.
        let mut short = Slices::new(8, t0);
        short.round_end(5, t0 + Duration::from_micros(50));
        assert_eq!(short.median_rate(), 0.0);
        short.round_end(10, t0 + Duration::from_micros(200));
        assert_eq!(short.per_handshake(), [Duration::from_micros(20)]);
    }

    fn sample(d: &str, n: usize, rate: f64, p50: f64, lost: usize) -> HandshakeSample {
        HandshakeSample {
            dataplane: d.into(),
            services: n,
            program_ms: 1.0,
            handshakes_per_sec: rate * 0.9,
            handshakes_per_sec_p50_slice: rate,
            sent: 1000,
            answered: 1000 - lost,
            lost,
            resets: 0,
            latency: LatencyStats {
                samples: 10,
                p50_us: p50,
                p99_us: p50 * 2.0,
                ..LatencyStats::default()
            },
            denied_port: "nothing".into(),
            nf_conntrack_entries: (d == "kp").then_some(n as u64),
            nf_conntrack_max: Some(262_144),
            load_average: [1.0, 1.0, 1.0],
        }
    }

    #[test]
    fn medians_and_ratios() {
        let report = summarise_handshakes(
            vec![
                sample("none", 0, 100_000.0, 10.0, 0),
                sample("ebpf", 10, 80_000.0, 12.0, 0),
                sample("kp", 10, 75_000.0, 13.0, 0),
                sample("ebpf", 10_000, 78_000.0, 12.5, 10),
                sample("kp", 10_000, 20_000.0, 50.0, 0),
                sample("ebpf", 10_000, 82_000.0, 11.5, 0),
                sample("kp", 10_000, 30_000.0, 40.0, 0),
                sample("none", 0, 90_000.0, 10.0, 0),
            ],
            "kp",
        );
        assert_eq!(report.summary.len(), 5);
        let none = &report.summary[0];
        assert_eq!((none.dataplane.as_str(), none.runs), ("none", 2));
        assert_eq!(none.handshakes_per_sec_p50_slice, 95_000.0);
        let ebpf = &report.summary[3];
        assert_eq!((ebpf.dataplane.as_str(), ebpf.services), ("ebpf", 10_000));
        assert_eq!(ebpf.handshakes_per_sec_p50_slice, 80_000.0);
        assert_eq!(ebpf.handshakes_per_sec_p50_slice_min, 78_000.0);
        assert_eq!(ebpf.handshakes_per_sec_p50_slice_max, 82_000.0);
        assert!((ebpf.lost_fraction - 10.0 / 2000.0).abs() < 1e-12);
        let kp = &report.summary[4];
        assert_eq!(kp.nf_conntrack_entries_max, Some(10_000));
        let find = |d: &str, n: usize, against: &str, m: usize| {
            report
                .ratios
                .iter()
                .find(|r| {
                    r.dataplane == d
                        && r.services == n
                        && r.against == against
                        && r.against_services == m
                })
                .cloned()
        };
        let vs_kp = find("ebpf", 10_000, "kp", 10_000).expect("against kube-proxy");
        assert!((vs_kp.handshakes_per_sec_p50_slice - 80_000.0 / 25_000.0).abs() < 1e-9);
        assert!((vs_kp.latency_p50 - 12.0 / 45.0).abs() < 1e-9);
        let flat = find("ebpf", 10_000, "ebpf", 10).expect("10k over 10");
        assert!((flat.handshakes_per_sec_p50_slice - 1.0).abs() < 1e-9);
        let ceiling = find("kp", 10_000, "none", 0).expect("against the ceiling");
        assert!((ceiling.handshakes_per_sec_p50_slice - 25_000.0 / 95_000.0).abs() < 1e-9);
        // The baseline is not compared with itself, the ceiling not with
        // itself.
        assert!(find("kp", 10, "kp", 10).is_none());
        assert!(find("none", 0, "none", 0).is_none());
    }
}
