//! The JSON figures and the terminal summary.

use serde_json::Value;

use super::super::{DataplaneRun, Sample};
use super::{both, full_run, report};

const LATENCY_KEYS: [&str; 5] = ["p50", "p90", "p99", "max", "count"];

fn assert_latency(v: &Value, what: &str) {
    for key in LATENCY_KEYS {
        assert!(v.get(key).is_some(), "{what} lacks {key}: {v}");
    }
}

#[test]
fn shape_has_every_documented_key() {
    let j = both().to_json();
    for key in ["config", "machine", "dataplanes", "started_unix"] {
        assert!(j.get(key).is_some(), "missing {key}");
    }
    assert_eq!(j["config"]["nodes"], 3);
    for key in ["cpus", "memory_bytes", "kernel", "os", "cpu_model"] {
        assert!(j["machine"].get(key).is_some(), "machine lacks {key}");
    }
    let dataplanes = j["dataplanes"].as_object().unwrap();
    assert_eq!(dataplanes.keys().collect::<Vec<_>>(), ["bpf", "iptables"]);
    for (name, d) in dataplanes {
        assert_latency(&d["ttfp_ms"], name);
        assert_latency(&d["policy_enforce_ms"], name);
        assert_latency(&d["policy_enforce_ms"]["allow"], name);
        assert_latency(&d["policy_enforce_ms"]["deny"], name);
        for key in [
            "unexpected_allows",
            "failures",
            "failure_messages",
            "pods_created",
            "pods_deleted",
            "policy_updates",
            "duration_s",
            "resources",
        ] {
            assert!(d.get(key).is_some(), "{name} lacks {key}");
        }
        let typha = &d["resources"]["typha-1"];
        for key in ["cpu_percent_mean", "cpu_percent_max", "rss_max_bytes"] {
            assert!(typha[key].is_number(), "{name} typha-1 {key}: {typha}");
        }
        assert!(d["resources"]["felix-node2"].is_object());
    }
}

#[test]
fn figures_are_right() {
    let j = both().to_json();
    let bpf = &j["dataplanes"]["bpf"];
    // TTFP values are 0.1 * 1..=100.
    assert_eq!(bpf["ttfp_ms"]["p50"].as_f64(), Some(0.1 * 50.0));
    assert_eq!(bpf["ttfp_ms"]["p90"].as_f64(), Some(0.1 * 90.0));
    assert_eq!(bpf["ttfp_ms"]["p99"].as_f64(), Some(0.1 * 99.0));
    assert_eq!(bpf["ttfp_ms"]["max"].as_f64(), Some(0.1 * 100.0));
    assert_eq!(bpf["ttfp_ms"]["count"], 100);
    // allow 0.2 * 1..=20 and deny 0.3 * 1..=30, combined.
    let policy = &bpf["policy_enforce_ms"];
    assert_eq!(policy["count"], 50);
    assert_eq!(policy["allow"]["count"], 20);
    assert_eq!(policy["deny"]["count"], 30);
    assert_eq!(policy["max"].as_f64(), Some(0.1 * 3.0 * 30.0));
    assert_eq!(policy["allow"]["p99"].as_f64(), Some(0.2 * 20.0));
    assert_eq!(bpf["failures"], 1);
    assert_eq!(bpf["unexpected_allows"], 0);
    assert_eq!(bpf["pods_created"], 101);
    // typha-1 CPU 10..=19 over 10 s; RSS grows 4 KiB a second.
    let typha = &bpf["resources"]["typha-1"];
    assert_eq!(typha["cpu_percent_mean"].as_f64(), Some(14.5));
    assert_eq!(typha["cpu_percent_max"].as_f64(), Some(19.0));
    assert_eq!(typha["rss_max_bytes"], (50u64 << 20) + 9 * 4096);
}

#[test]
fn empty_series_are_null_and_nothing_is_nan() {
    let mut broken = DataplaneRun {
        duration_s: f64::NAN,
        ..DataplaneRun::default()
    };
    broken.policy_deny.push(Sample {
        at_s: 1.0,
        value_ms: f64::NAN,
    });
    let j = report([("bpf", DataplaneRun::default()), ("iptables", broken)]).to_json();
    for name in ["bpf", "iptables"] {
        let d = &j["dataplanes"][name];
        for series in [
            &d["ttfp_ms"],
            &d["policy_enforce_ms"],
            &d["policy_enforce_ms"]["allow"],
            &d["policy_enforce_ms"]["deny"],
        ] {
            for key in ["p50", "p90", "p99", "max"] {
                assert!(series[key].is_null(), "{name} {key}: {series}");
            }
            assert_eq!(series["count"], 0);
        }
        assert!(d["resources"].as_object().unwrap().is_empty());
    }
    assert!(j["dataplanes"]["iptables"]["duration_s"].is_null());
    let text = serde_json::to_string_pretty(&j).unwrap();
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, j);
}

#[test]
fn summary_text_has_a_line_per_dataplane() {
    let text = both().summary_text();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "bpf: TTFP p50 5.0 ms p99 9.9 ms (n=100), policy p99 9.0 ms (n=50), \
         unexpected allows 0, failures 1"
    );
    assert!(text.contains("\niptables: TTFP p50 25.0 ms"), "{text}");
    assert!(
        text.contains("  typha-1: CPU mean 14.5% max 19.0%, RSS max 50.0 MiB"),
        "{text}"
    );
    assert!(
        text.contains("  failure: pod p-17: no reply in 10 s"),
        "{text}"
    );

    let empty = report([("bpf", DataplaneRun::default())]).summary_text();
    assert_eq!(
        empty,
        "bpf: TTFP p50 n/a p99 n/a (n=0), policy p99 n/a (n=0), unexpected allows 0, failures 0\n"
    );
    assert_eq!(report([]).summary_text(), "no dataplane ran\n");
    // Sub-millisecond figures keep two decimals.
    let fast = report([("bpf", full_run(0.001))]).summary_text();
    assert!(
        fast.starts_with("bpf: TTFP p50 0.05 ms p99 0.10 ms"),
        "{fast}"
    );
}
