//! The report's JSON figures (`report.json`).
//!
//! Shape, per dataplane: `ttfp_ms` and `policy_enforce_ms` (allow and deny
//! combined, with `allow` and `deny` broken out) as `{p50, p90, p99, max,
//! count}`, the counters, and `resources` keyed by process. Missing values
//! are `null`; `serde_json` turns any non-finite float into `null` too, so
//! the output never holds NaN.

use serde_json::{Value, json};

use super::stats::{LatencySummary, resource_summaries};
use super::{DataplaneRun, Report};

/// The whole report as JSON.
pub(super) fn report(report: &Report) -> Value {
    let dataplanes: serde_json::Map<String, Value> = report
        .dataplanes
        .iter()
        .map(|(name, run)| (name.clone(), dataplane(run)))
        .collect();
    json!({
        "started_unix": report.started_unix,
        "config": report.config,
        "machine": report.machine,
        "dataplanes": dataplanes,
    })
}

/// The figures of one dataplane.
pub(super) fn dataplane(run: &DataplaneRun) -> Value {
    let ttfp = LatencySummary::of(&run.ttfp);
    let allow = LatencySummary::of(&run.policy_allow);
    let deny = LatencySummary::of(&run.policy_deny);
    let both = LatencySummary::of(run.policy_allow.iter().chain(&run.policy_deny));
    let mut policy = latency(&both);
    if let Value::Object(map) = &mut policy {
        map.insert("allow".to_owned(), latency(&allow));
        map.insert("deny".to_owned(), latency(&deny));
    }
    let resources: serde_json::Map<String, Value> = resource_summaries(&run.resources)
        .into_iter()
        .map(|(process, r)| {
            let value = json!({
                "cpu_percent_mean": r.cpu_percent_mean,
                "cpu_percent_max": r.cpu_percent_max,
                "rss_max_bytes": r.rss_max_bytes,
                "samples": r.samples,
            });
            (process, value)
        })
        .collect();
    json!({
        "ttfp_ms": latency(&ttfp),
        "policy_enforce_ms": policy,
        "unexpected_allows": run.unexpected_allows,
        "failures": run.failures,
        "failure_messages": run.failure_messages,
        "pods_created": run.pods_created,
        "pods_deleted": run.pods_deleted,
        "policy_updates": run.policy_updates,
        "duration_s": run.duration_s,
        "resources": resources,
    })
}

fn latency(s: &LatencySummary) -> Value {
    json!({
        "p50": s.p50,
        "p90": s.p90,
        "p99": s.p99,
        "max": s.max,
        "count": s.count,
    })
}
