//! Percentiles and resource summaries.

use super::super::stats::{LatencySummary, percentile, resource_summaries, sorted_values};
use super::super::text::utc;
use super::super::{ResourceSample, Sample};
use super::samples;

#[test]
fn nearest_rank_percentiles() {
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    let cases: &[(&str, &[f64], f64, Option<f64>)] = &[
        ("empty p50", &[], 50.0, None),
        ("empty p99", &[], 99.0, None),
        ("one sample p50", &[7.5], 50.0, Some(7.5)),
        ("one sample p99", &[7.5], 99.0, Some(7.5)),
        ("one sample p0", &[7.5], 0.0, Some(7.5)),
        ("two samples p50", &[1.0, 2.0], 50.0, Some(1.0)),
        ("two samples p51", &[1.0, 2.0], 51.0, Some(2.0)),
        ("four samples p50", &[1.0, 2.0, 3.0, 4.0], 50.0, Some(2.0)),
        ("four samples p75", &[1.0, 2.0, 3.0, 4.0], 75.0, Some(3.0)),
        ("four samples p76", &[1.0, 2.0, 3.0, 4.0], 76.0, Some(4.0)),
        ("four samples p100", &[1.0, 2.0, 3.0, 4.0], 100.0, Some(4.0)),
        ("hundred p50", &hundred, 50.0, Some(50.0)),
        ("hundred p90", &hundred, 90.0, Some(90.0)),
        ("hundred p99", &hundred, 99.0, Some(99.0)),
        ("hundred p99.5", &hundred, 99.5, Some(100.0)),
        ("hundred p100", &hundred, 100.0, Some(100.0)),
        ("p above 100", &[1.0], 101.0, None),
        ("negative p", &[1.0], -1.0, None),
        ("NaN p", &[1.0], f64::NAN, None),
    ];
    for (name, sorted, p, want) in cases {
        assert_eq!(percentile(sorted, *p), *want, "{name}");
    }
}

#[test]
fn sorted_values_drops_non_finite_and_sorts() {
    let samples: Vec<Sample> = [3.0, f64::NAN, 1.0, f64::INFINITY, 2.0, f64::NEG_INFINITY]
        .into_iter()
        .map(|value_ms| Sample {
            at_s: 0.0,
            value_ms,
        })
        .collect();
    assert_eq!(sorted_values(&samples), vec![1.0, 2.0, 3.0]);
}

#[test]
fn latency_summary_empty_one_and_many() {
    let empty = LatencySummary::of(&[]);
    assert_eq!(empty, LatencySummary::default());
    assert_eq!(empty.p50, None);
    assert_eq!(empty.count, 0);

    let one = LatencySummary::of(&[Sample {
        at_s: 1.0,
        value_ms: 4.0,
    }]);
    assert_eq!(
        one,
        LatencySummary {
            p50: Some(4.0),
            p90: Some(4.0),
            p99: Some(4.0),
            max: Some(4.0),
            count: 1
        }
    );

    let many = LatencySummary::of(&samples(100, 1.0));
    assert_eq!(many.p50, Some(50.0));
    assert_eq!(many.p90, Some(90.0));
    assert_eq!(many.p99, Some(99.0));
    assert_eq!(many.max, Some(100.0));
    assert_eq!(many.count, 100);
}

#[test]
fn resource_summaries_per_process() {
    let s = |process: &str, cpu_percent: f64, rss_bytes: u64| ResourceSample {
        at_s: 0.0,
        process: process.to_owned(),
        cpu_percent,
        rss_bytes,
    };
    let summaries = resource_summaries(&[
        s("typha-1", 10.0, 100),
        s("felix-node1", f64::NAN, 10),
        s("typha-1", 30.0, 300),
        s("typha-1", f64::NAN, 200),
    ]);
    let names: Vec<&str> = summaries.keys().map(String::as_str).collect();
    assert_eq!(names, ["felix-node1", "typha-1"]);
    let typha = &summaries["typha-1"];
    assert_eq!(typha.cpu_percent_mean, Some(20.0));
    assert_eq!(typha.cpu_percent_max, Some(30.0));
    assert_eq!(typha.rss_max_bytes, 300);
    assert_eq!(typha.samples, 3);
    let felix = &summaries["felix-node1"];
    assert_eq!(felix.cpu_percent_mean, None);
    assert_eq!(felix.cpu_percent_max, None);
    assert_eq!(felix.rss_max_bytes, 10);
    assert!(resource_summaries(&[]).is_empty());
}

#[test]
fn utc_timestamps() {
    for (unix, want) in [
        (0, "1970-01-01 00:00:00 UTC"),
        (951_782_400, "2000-02-29 00:00:00 UTC"),
        (1_700_000_000, "2023-11-14 22:13:20 UTC"),
        (4_107_542_399, "2100-02-28 23:59:59 UTC"),
    ] {
        assert_eq!(utc(unix), want, "{unix}");
    }
}
