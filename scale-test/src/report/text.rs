//! The terminal summary and the number and time formatting shared with the
//! HTML page.

use std::fmt::Write as _;

use super::Report;
use super::stats::{LatencySummary, resource_summaries};

/// How many failure messages the terminal summary repeats per dataplane.
const MESSAGES_SHOWN: usize = 3;

/// A few lines per dataplane, e.g.
/// `bpf: TTFP p50 1.8 ms p99 6.2 ms (n=600), policy p99 12.0 ms (n=200), unexpected allows 0, failures 0`
/// followed by one line per process and the first failure messages.
pub(super) fn summary(report: &Report) -> String {
    if report.dataplanes.is_empty() {
        return "no dataplane ran\n".to_owned();
    }
    let mut out = String::new();
    for (name, run) in &report.dataplanes {
        let ttfp = LatencySummary::of(&run.ttfp);
        let policy = LatencySummary::of(run.policy_allow.iter().chain(&run.policy_deny));
        let _ = writeln!(
            out,
            "{name}: TTFP p50 {} p99 {} (n={}), policy p99 {} (n={}), unexpected allows {}, failures {}",
            ms(ttfp.p50),
            ms(ttfp.p99),
            ttfp.count,
            ms(policy.p99),
            policy.count,
            run.unexpected_allows,
            run.failures,
        );
        for (process, r) in resource_summaries(&run.resources) {
            let _ = writeln!(
                out,
                "  {process}: CPU mean {} max {}, RSS max {}",
                percent(r.cpu_percent_mean),
                percent(r.cpu_percent_max),
                mib(r.rss_max_bytes),
            );
        }
        for message in run.failure_messages.iter().take(MESSAGES_SHOWN) {
            let _ = writeln!(out, "  failure: {}", message.trim());
        }
        let more = run.failure_messages.len().saturating_sub(MESSAGES_SHOWN);
        if more > 0 {
            let _ = writeln!(out, "  ... and {more} more failure messages in the report");
        }
    }
    out
}

/// A latency in milliseconds for people: "1.8 ms", "0.42 ms", or "n/a".
pub(super) fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() && v.abs() < 1.0 => format!("{v:.2} ms"),
        Some(v) if v.is_finite() => format!("{v:.1} ms"),
        _ => "n/a".to_owned(),
    }
}

/// A CPU percentage for people: "12.3%" or "n/a".
pub(super) fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1}%"),
        _ => "n/a".to_owned(),
    }
}

/// Bytes as MiB with one decimal: "52.1 MiB".
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Seconds since the Unix epoch as a UTC timestamp, "2025-01-31 12:00:00 UTC".
pub(super) fn utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
