//! `report.html`: one self-contained page (inline CSS and SVG, nothing
//! fetched) with the charts, a table of the JSON figures, per-process
//! resources, failures, the machine and the configuration.
//!
//! Every piece of text from the run goes through [`escape`]; chart text is
//! escaped by the SVG backend.

use std::fmt::Write as _;

use manul_report_html::{escape, figure};

use super::charts::{self, FULL, HALF, Resource};
use super::stats::{LatencySummary, resource_summaries};
use super::text::{mib, ms, percent, utc};
use super::{DataplaneRun, Report};

/// Renders the whole page.
pub(super) fn render(report: &Report) -> String {
    let mut page = manul_report_html::page::head("Manul scale test report");
    let names: Vec<&str> = report.dataplanes.keys().map(String::as_str).collect();
    let _ = writeln!(
        page,
        "<p>Started {}. Dataplanes: {}.</p>",
        escape(&utc(report.started_unix)),
        if names.is_empty() {
            "none".to_owned()
        } else {
            escape(&names.join(", "))
        }
    );

    page.push_str("<h2>Figures</h2>\n");
    figures_table(&mut page, report);

    page.push_str("<h2>Time to first ping</h2>\n<div class=\"row\">\n");
    for (i, (name, run)) in report.dataplanes.iter().enumerate() {
        let color = charts::dataplane_color(name, i);
        let chart = charts::ttfp_histogram(name, color, run);
        figure(&mut page, chart, HALF, &format!("{name}: no TTFP samples"));
    }
    page.push_str("</div>\n<div class=\"row\">\n");
    figure(
        &mut page,
        charts::ttfp_cdf(&report.dataplanes),
        FULL,
        "no TTFP samples for a CDF",
    );
    page.push_str("</div>\n");

    page.push_str("<h2>Latency over the run</h2>\n<div class=\"row\">\n");
    for (name, run) in &report.dataplanes {
        let chart = charts::latency_over_time(name, run);
        figure(
            &mut page,
            chart,
            HALF,
            &format!("{name}: no latency samples"),
        );
    }
    page.push_str("</div>\n");

    page.push_str("<h2>Typha and Felix CPU and memory</h2>\n");
    for resource in [Resource::Cpu, Resource::Rss] {
        page.push_str("<div class=\"row\">\n");
        for (name, run) in &report.dataplanes {
            let chart = charts::resource_over_time(name, resource, &run.resources);
            figure(
                &mut page,
                chart,
                HALF,
                &format!("{name}: no resource samples"),
            );
        }
        page.push_str("</div>\n");
    }
    resources_tables(&mut page, report);
    failures(&mut page, report);

    page.push_str("<h2>Machine</h2>\n<table>\n");
    let m = &report.machine;
    for (label, value) in [
        ("CPUs", m.cpus.to_string()),
        ("CPU model", m.cpu_model.clone()),
        ("memory", mib(m.memory_bytes)),
        ("kernel", m.kernel.clone()),
        ("OS", m.os.clone()),
    ] {
        let _ = writeln!(page, "<tr><th>{label}</th><td>{}</td></tr>", escape(&value));
    }
    page.push_str("</table>\n");

    page.push_str("<h2>Configuration</h2>\n");
    pre(&mut page, &report.config);
    page.push_str("<details><summary>report.json</summary>\n");
    pre(&mut page, &report.to_json());
    page.push_str("</details>\n");
    manul_report_html::page::end(&mut page);
    page
}

/// The JSON figures, one column per dataplane.
fn figures_table(page: &mut String, report: &Report) {
    struct Figures<'a> {
        run: &'a DataplaneRun,
        ttfp: LatencySummary,
        policy: LatencySummary,
        allow: LatencySummary,
        deny: LatencySummary,
    }
    let columns: Vec<Figures<'_>> = report
        .dataplanes
        .values()
        .map(|run| Figures {
            run,
            ttfp: LatencySummary::of(&run.ttfp),
            policy: LatencySummary::of(run.policy_allow.iter().chain(&run.policy_deny)),
            allow: LatencySummary::of(&run.policy_allow),
            deny: LatencySummary::of(&run.policy_deny),
        })
        .collect();
    if columns.is_empty() {
        page.push_str("<p>No dataplane ran.</p>\n");
        return;
    }
    type Cell = fn(&Figures<'_>) -> (String, bool);
    let rows: [(&str, Cell); 20] = [
        ("TTFP p50", |f| (ms(f.ttfp.p50), false)),
        ("TTFP p90", |f| (ms(f.ttfp.p90), false)),
        ("TTFP p99", |f| (ms(f.ttfp.p99), false)),
        ("TTFP max", |f| (ms(f.ttfp.max), false)),
        ("TTFP samples", |f| (f.ttfp.count.to_string(), false)),
        ("policy enforce p50", |f| (ms(f.policy.p50), false)),
        ("policy enforce p90", |f| (ms(f.policy.p90), false)),
        ("policy enforce p99", |f| (ms(f.policy.p99), false)),
        ("policy enforce max", |f| (ms(f.policy.max), false)),
        ("policy enforce samples", |f| {
            (f.policy.count.to_string(), false)
        }),
        ("new allow p99", |f| (ms(f.allow.p99), false)),
        ("new allow samples", |f| (f.allow.count.to_string(), false)),
        ("new deny p99", |f| (ms(f.deny.p99), false)),
        ("new deny samples", |f| (f.deny.count.to_string(), false)),
        ("unexpected allows", |f| {
            (
                f.run.unexpected_allows.to_string(),
                f.run.unexpected_allows > 0,
            )
        }),
        ("failures", |f| {
            (f.run.failures.to_string(), f.run.failures > 0)
        }),
        ("pods created", |f| (f.run.pods_created.to_string(), false)),
        ("pods deleted", |f| (f.run.pods_deleted.to_string(), false)),
        ("policy updates", |f| {
            (f.run.policy_updates.to_string(), false)
        }),
        ("duration", |f| {
            (format!("{:.1} s", f.run.duration_s), false)
        }),
    ];
    page.push_str("<table>\n<thead><tr><th></th>");
    for name in report.dataplanes.keys() {
        let _ = write!(page, "<th>{}</th>", escape(name));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for (label, cell) in rows {
        let _ = write!(page, "<tr><th>{label}</th>");
        for column in &columns {
            let (value, bad) = cell(column);
            let class = if bad { " class=\"bad\"" } else { "" };
            let _ = write!(page, "<td{class}>{}</td>", escape(&value));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n");
}

/// Per-process CPU and memory figures, one table per dataplane.
fn resources_tables(page: &mut String, report: &Report) {
    for (name, run) in &report.dataplanes {
        let summaries = resource_summaries(&run.resources);
        if summaries.is_empty() {
            continue;
        }
        let _ = writeln!(page, "<h3>{}: by process</h3>", escape(name));
        page.push_str(
            "<table>\n<thead><tr><th>process</th><th>CPU mean</th><th>CPU max</th>\
             <th>RSS max</th><th>samples</th></tr></thead>\n<tbody>\n",
        );
        for (process, r) in summaries {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&process),
                percent(r.cpu_percent_mean),
                percent(r.cpu_percent_max),
                mib(r.rss_max_bytes),
                r.samples
            );
        }
        page.push_str("</tbody>\n</table>\n");
    }
}

/// The failure messages each dataplane kept, if any.
fn failures(page: &mut String, report: &Report) {
    let any = report
        .dataplanes
        .values()
        .any(|r| r.failures > 0 || !r.failure_messages.is_empty());
    if !any {
        return;
    }
    page.push_str("<h2>Failures</h2>\n");
    for (name, run) in &report.dataplanes {
        if run.failures == 0 && run.failure_messages.is_empty() {
            continue;
        }
        let _ = writeln!(
            page,
            "<h3>{}: {} failures</h3>\n<ul>",
            escape(name),
            run.failures
        );
        for message in &run.failure_messages {
            let _ = writeln!(page, "<li><code>{}</code></li>", escape(message));
        }
        page.push_str("</ul>\n");
    }
}

/// Appends `value` pretty-printed in a `<pre>`.
fn pre(page: &mut String, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| e.to_string());
    let _ = writeln!(page, "<pre>{}</pre>", escape(&text));
}
