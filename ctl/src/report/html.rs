//! The reports as text and as self-contained HTML pages (inline CSS and
//! SVG, nothing fetched), drawn with `manul-report-html`, the scale test's
//! page and chart helpers. Every piece of text from the cluster is escaped.

use std::fmt::Write as _;

use manul_report_html::FULL;
use manul_report_html::charts::{Bar, bars};
use manul_report_html::page::{self, escape, figure, table};

use super::Window;
use super::compliance::{Change, ComplianceReport, DirectionCompliance};
use super::policy::PolicyReport;
use crate::flows::{protocol, time};

fn window_line(w: &Window) -> String {
    format!(
        "Window: {} to {}.",
        time(w.since_unix_s),
        time(w.until_unix_s)
    )
}

fn json_details(page: &mut String, value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = writeln!(
        page,
        "<details><summary>JSON</summary>\n<pre>{}</pre>\n</details>",
        escape(&text)
    );
}

/// The policy report's page.
pub fn policy_page(r: &PolicyReport) -> String {
    let mut p = page::head("Manul policy report");
    let _ = writeln!(p, "<p>{}</p>", escape(&window_line(&r.window)));
    p.push_str("<h2>Hits per policy</h2>\n");
    let rows: Vec<Bar> = r
        .policies
        .iter()
        .map(|row| Bar {
            label: row.policy.display(),
            values: vec![row.hits.flows_allowed as f64, row.hits.flows_denied as f64],
        })
        .collect();
    let chart = bars(
        "policy hits",
        "flows per policy",
        "flows",
        &["allowed", "denied"],
        &rows,
    );
    figure(
        &mut p,
        chart,
        FULL,
        "no policy decided a flow in the window",
    );
    let rule_rows: Vec<Bar> = r
        .policies
        .iter()
        .flat_map(|row| {
            row.rules.iter().map(move |rule| Bar {
                label: format!(
                    "{} {} #{}",
                    row.policy.display(),
                    rule.direction,
                    rule.index
                ),
                values: vec![
                    rule.hits.flows_allowed as f64,
                    rule.hits.flows_denied as f64,
                ],
            })
        })
        .collect();
    let chart = bars(
        "rule hits",
        "flows per rule",
        "flows",
        &["allowed", "denied"],
        &rule_rows,
    );
    figure(&mut p, chart, FULL, "no rule decided a flow in the window");
    let cells: Vec<Vec<String>> = r
        .policies
        .iter()
        .flat_map(|row| {
            row.rules.iter().map(move |rule| {
                vec![
                    format!("{} {}", row.policy.kind, row.policy.display()),
                    row.policy.tier.clone(),
                    format!("{} #{} {}", rule.direction, rule.index, rule.action),
                    rule.hits.flows_allowed.to_string(),
                    rule.hits.flows_denied.to_string(),
                    rule.hits.packets.to_string(),
                    rule.hits.bytes.to_string(),
                ]
            })
        })
        .collect();
    table(
        &mut p,
        &[
            "policy",
            "tier",
            "rule",
            "flows allowed",
            "flows denied",
            "packets",
            "bytes",
        ],
        &cells,
    );
    p.push_str("<h2>Rules never hit</h2>\n");
    let cells: Vec<Vec<String>> = r
        .rules_never_hit
        .iter()
        .map(|x| {
            vec![
                format!("{} {}", x.policy.kind, x.policy.display()),
                format!("{} #{} {}", x.direction, x.index, x.action),
            ]
        })
        .collect();
    table(&mut p, &["policy", "rule"], &cells);
    p.push_str("<h2>Policies that select nothing</h2>\n");
    let cells: Vec<Vec<String>> = r
        .policies_selecting_nothing
        .iter()
        .map(|x| vec![format!("{} {}", x.kind, x.display()), x.tier.clone()])
        .collect();
    table(&mut p, &["policy", "tier"], &cells);
    p.push_str("<h2>Endpoints no policy selects</h2>\n");
    let yes = |b: bool| if b { "open" } else { "selected" }.to_string();
    let cells: Vec<Vec<String>> = r
        .unprotected_endpoints
        .iter()
        .map(|e| {
            vec![
                format!("{}/{}", e.namespace, e.name),
                yes(e.ingress),
                yes(e.egress),
            ]
        })
        .collect();
    table(&mut p, &["endpoint", "ingress", "egress"], &cells);
    p.push_str("<h2>Other decisions</h2>\n");
    let cells: Vec<Vec<String>> = r
        .other_decisions
        .iter()
        .map(|o| {
            vec![
                format!("{} {}", o.kind, o.name),
                o.direction.clone(),
                o.action.clone(),
                o.hits.flows_allowed.to_string(),
                o.hits.flows_denied.to_string(),
            ]
        })
        .collect();
    table(
        &mut p,
        &[
            "decided by",
            "direction",
            "action",
            "flows allowed",
            "flows denied",
        ],
        &cells,
    );
    json_details(&mut p, r);
    page::end(&mut p);
    p
}

/// The policy report as text.
pub fn policy_text(r: &PolicyReport) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}", window_line(&r.window));
    let _ = writeln!(t, "\nHits per policy (flows allowed/denied):");
    for row in &r.policies {
        let _ = writeln!(
            t,
            "  {} {} [{}] {}/{} ({} endpoints)",
            row.policy.kind,
            row.policy.display(),
            row.policy.tier,
            row.hits.flows_allowed,
            row.hits.flows_denied,
            row.endpoints_selected
        );
        for rule in &row.rules {
            let _ = writeln!(
                t,
                "    {} #{} {}: {}/{}",
                rule.direction,
                rule.index,
                rule.action,
                rule.hits.flows_allowed,
                rule.hits.flows_denied
            );
        }
    }
    let _ = writeln!(t, "\nRules never hit: {}", r.rules_never_hit.len());
    for x in &r.rules_never_hit {
        let _ = writeln!(
            t,
            "  {} {} {} #{} {}",
            x.policy.kind,
            x.policy.display(),
            x.direction,
            x.index,
            x.action
        );
    }
    let _ = writeln!(
        t,
        "\nPolicies that select nothing: {}",
        r.policies_selecting_nothing.len()
    );
    for x in &r.policies_selecting_nothing {
        let _ = writeln!(t, "  {} {}", x.kind, x.display());
    }
    let _ = writeln!(
        t,
        "\nEndpoints no policy selects: {}",
        r.unprotected_endpoints.len()
    );
    for e in &r.unprotected_endpoints {
        let dirs: Vec<&str> = [("ingress", e.ingress), ("egress", e.egress)]
            .into_iter()
            .filter(|(_, open)| *open)
            .map(|(d, _)| d)
            .collect();
        let _ = writeln!(
            t,
            "  {}/{} (open: {})",
            e.namespace,
            e.name,
            dirs.join(", ")
        );
    }
    t
}

fn direction_cells(d: &DirectionCompliance) -> [String; 4] {
    [
        if d.default_deny {
            format!("yes ({})", d.default_deny_by.join(", "))
        } else {
            "NO".to_string()
        },
        d.unselected_endpoints.join(", "),
        d.allowed_by_policy
            .iter()
            .map(|e| format!("{} #{}: {} on {}", e.policy, e.rule, e.peer, e.ports))
            .collect::<Vec<_>>()
            .join("; "),
        d.observed_allowed
            .iter()
            .map(|o| {
                format!(
                    "{} {}/{} ({} flows)",
                    o.peer,
                    o.port,
                    protocol(o.protocol),
                    o.flows
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ]
}

fn change_cells(c: &Change) -> Vec<String> {
    let name = if c.namespace.is_empty() {
        c.name.clone()
    } else {
        format!("{}/{}", c.namespace, c.name)
    };
    vec![
        time(c.unix_millis / 1000),
        c.revision.to_string(),
        format!("{} ({})", c.identity, c.role),
        format!("{} {}", c.action, c.kind),
        name,
    ]
}

/// The compliance report's page.
pub fn compliance_page(r: &ComplianceReport) -> String {
    let mut p = page::head("Manul compliance report");
    let _ = writeln!(p, "<p>{}</p>", escape(&window_line(&r.window)));
    let rows: Vec<Bar> = r
        .namespaces
        .iter()
        .map(|n| Bar {
            label: n.namespace.clone(),
            values: vec![
                n.ingress
                    .observed_allowed
                    .iter()
                    .map(|o| o.flows as f64)
                    .sum(),
                n.egress
                    .observed_allowed
                    .iter()
                    .map(|o| o.flows as f64)
                    .sum(),
            ],
        })
        .collect();
    let chart = bars(
        "allowed flows",
        "allowed flows per namespace",
        "flows",
        &["in", "out"],
        &rows,
    );
    figure(&mut p, chart, FULL, "no allowed flows in the window");
    let rows: Vec<Bar> = r
        .namespaces
        .iter()
        .map(|n| Bar {
            label: n.namespace.clone(),
            values: vec![n.changes.len() as f64],
        })
        .collect();
    let chart = bars(
        "policy changes",
        "policy changes per namespace",
        "changes",
        &["changes"],
        &rows,
    );
    figure(&mut p, chart, FULL, "no policy changes in the window");
    p.push_str("<h2>Default deny</h2>\n");
    let cells: Vec<Vec<String>> = r
        .namespaces
        .iter()
        .map(|n| {
            let yes =
                |d: &DirectionCompliance| if d.default_deny { "yes" } else { "NO" }.to_string();
            vec![
                n.namespace.clone(),
                n.endpoints.to_string(),
                yes(&n.ingress),
                yes(&n.egress),
            ]
        })
        .collect();
    table(
        &mut p,
        &[
            "namespace",
            "endpoints",
            "ingress default deny",
            "egress default deny",
        ],
        &cells,
    );
    for n in &r.namespaces {
        let _ = writeln!(p, "<h2>Namespace {}</h2>", escape(&n.namespace));
        let mut cells = Vec::new();
        for (dir, d) in [("in", &n.ingress), ("out", &n.egress)] {
            let [deny, open, rules, seen] = direction_cells(d);
            cells.push(vec![dir.to_string(), deny, open, rules, seen]);
        }
        table(
            &mut p,
            &[
                "direction",
                "default deny",
                "endpoints no policy selects",
                "allowed by policy",
                "seen allowed",
            ],
            &cells,
        );
        if !n.changes.is_empty() {
            let cells: Vec<Vec<String>> = n.changes.iter().map(change_cells).collect();
            table(
                &mut p,
                &["time", "revision", "who", "change", "name"],
                &cells,
            );
        }
    }
    p.push_str("<h2>Cluster-wide policy changes</h2>\n");
    let cells: Vec<Vec<String>> = r.cluster_changes.iter().map(change_cells).collect();
    table(
        &mut p,
        &["time", "revision", "who", "change", "name"],
        &cells,
    );
    json_details(&mut p, r);
    page::end(&mut p);
    p
}

/// The compliance report as text.
pub fn compliance_text(r: &ComplianceReport) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}", window_line(&r.window));
    for n in &r.namespaces {
        let _ = writeln!(t, "\nnamespace {} ({} endpoints)", n.namespace, n.endpoints);
        for (dir, d) in [("in", &n.ingress), ("out", &n.egress)] {
            let [deny, open, rules, seen] = direction_cells(d);
            let _ = writeln!(t, "  {dir}: default deny {deny}");
            if !open.is_empty() {
                let _ = writeln!(t, "    no policy selects: {open}");
            }
            if !rules.is_empty() {
                let _ = writeln!(t, "    allowed by policy: {rules}");
            }
            if !seen.is_empty() {
                let _ = writeln!(t, "    seen allowed: {seen}");
            }
        }
        for c in &n.changes {
            let _ = writeln!(t, "  change: {}", change_cells(c).join(" "));
        }
    }
    if !r.cluster_changes.is_empty() {
        let _ = writeln!(t, "\ncluster-wide policy changes:");
        for c in &r.cluster_changes {
            let _ = writeln!(t, "  {}", change_cells(c).join(" "));
        }
    }
    t
}
