//! Writing the files, and what the HTML page holds.

use std::error::Error as _;
use std::fs;

use serde_json::Value;

use super::super::{DataplaneRun, HTML_FILE, JSON_FILE, ReportError, ResourceSample, Sample};
use super::{both, full_run, report};

const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// The page fetches nothing: no URL but the SVG namespace, no scripts,
/// stylesheets, images or fonts from elsewhere.
fn assert_self_contained(html: &str) {
    let rest = html.replace(SVG_NS, "");
    assert!(!rest.contains("http://"), "an http:// reference");
    assert!(!rest.contains("https://"), "an https:// reference");
    for tag in ["<script", "<link", "<img", "<iframe", "@import", "url("] {
        assert!(!rest.contains(tag), "{tag} in the page");
    }
}

#[test]
fn write_creates_the_dir_and_both_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("out");
    let r = both();
    r.write(&dir).unwrap();

    let json: Value =
        serde_json::from_str(&fs::read_to_string(dir.join(JSON_FILE)).unwrap()).unwrap();
    assert_eq!(json, r.to_json());
    let html = fs::read_to_string(dir.join(HTML_FILE)).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Two histograms, one CDF, two latency charts, two CPU and two RSS charts.
    assert_eq!(html.matches("<svg").count(), 9, "one <svg> per chart");
    assert_eq!(html.matches("</svg>").count(), 9);
    assert!(
        !html.contains("placeholder\""),
        "no placeholder with full data"
    );
    assert!(!html.contains("<?xml"), "SVG inlined without an XML prolog");
    assert_self_contained(&html);
    for text in [
        "TTFP CDF",
        "bpf: TTFP histogram",
        "iptables: CPU of Typha and Felix",
        "felix-node2",
        "typha-1",
    ] {
        assert!(html.contains(text), "{text} not in the page");
    }

    // Only the two files: no temporary file left behind. Writing again replaces them.
    r.write(&dir).unwrap();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [HTML_FILE, JSON_FILE]);
}

#[test]
fn empty_inputs_give_placeholders_not_panics() {
    for r in [
        report([]),
        report([("bpf", DataplaneRun::default())]),
        report([
            ("bpf", DataplaneRun::default()),
            ("iptables", DataplaneRun::default()),
        ]),
    ] {
        let html = r.to_html();
        assert_eq!(html.matches("<svg").count(), 0);
        assert_self_contained(&html);
        if !r.dataplanes.is_empty() {
            assert!(html.contains("bpf: no TTFP samples"));
            assert!(html.contains("no TTFP samples for a CDF"));
            assert!(html.contains("bpf: no resource samples"));
        }
    }
}

#[test]
fn degenerate_series_still_draw() {
    // One sample each, all zero, at time zero: every axis range would be empty.
    let zero = Sample {
        at_s: 0.0,
        value_ms: 0.0,
    };
    let run = DataplaneRun {
        ttfp: vec![zero],
        policy_allow: vec![zero],
        policy_deny: vec![Sample {
            at_s: f64::NAN,
            value_ms: f64::INFINITY,
        }],
        resources: vec![ResourceSample {
            at_s: 0.0,
            process: "typha-1".to_owned(),
            cpu_percent: 0.0,
            rss_bytes: 0,
        }],
        ..DataplaneRun::default()
    };
    let html = report([("bpf", run)]).to_html();
    // Histogram, CDF, latency, CPU, RSS.
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains("drawing the"), "a chart failed to draw");
}

#[test]
fn only_one_dataplane_ran() {
    let html = report([("iptables", full_run(1.0))]).to_html();
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains(">bpf<"));
}

#[test]
fn long_runs_are_thinned() {
    let mut run = full_run(1.0);
    run.ttfp = (0..20_000)
        .map(|i| Sample {
            at_s: f64::from(i) * 0.01,
            value_ms: f64::from(i % 97),
        })
        .collect();
    let html = report([("bpf", run)]).to_html();
    // The latency chart draws at most 4000 TTFP circles (plus the others and the legend).
    assert!(
        html.matches("<circle").count() < 4_100,
        "{}",
        html.matches("<circle").count()
    );
}

#[test]
fn text_from_the_run_is_escaped() {
    let mut run = full_run(1.0);
    run.failure_messages = vec!["<script>alert(1)</script> & \"quotes\"".to_owned()];
    for s in &mut run.resources {
        s.process = format!("<b onload=x>{}</b>", s.process);
    }
    let mut r = report([("<i>bpf</i>", run)]);
    r.config = serde_json::json!({"note": "</pre><script>alert(2)</script>"});
    r.machine.os = "<os>".to_owned();
    let html = r.to_html();
    assert!(!html.contains("<script"), "unescaped script");
    assert!(!html.contains("<b onload"), "unescaped process name");
    assert!(!html.contains("<i>bpf"), "unescaped dataplane name");
    assert!(!html.contains("<os>"), "unescaped machine text");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;"));
    assert!(html.contains("&lt;b onload=x&gt;typha-1&lt;/b&gt;"));
    assert_self_contained(&html);
}

#[test]
fn write_reports_where_it_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    fs::write(&file, "not a dir").unwrap();
    let err = both().write(&file.join("out")).unwrap_err();
    assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
    assert!(err.source().is_some());
}
