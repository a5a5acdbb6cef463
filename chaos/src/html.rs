//! `report.html`: one self-contained page (inline CSS and SVG, no script,
//! nothing fetched): the checks, a timeline of faults over the probe
//! results, convergence times, and each process's CPU and memory. Pure.

use std::fmt::Write as _;

use crate::report::{Report, TargetChoice};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 900.0;
const LEFT: f64 = 130.0;

fn x(t: f64, end: f64) -> f64 {
    LEFT + (W - LEFT - 10.0) * (t / end.max(1.0))
}

/// Fault bars, one row per target, and the probe outcomes per second
/// below them (green: every probe as expected; red: an unexpected allow;
/// orange: an allowed pair failed).
fn timeline(r: &Report) -> String {
    let end = r.seconds;
    let mut targets: Vec<&str> = r
        .faults
        .iter()
        .filter(|f| f.injected)
        .map(|f| f.target.as_str())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let rows = targets.len() as f64;
    let h = 30.0 + rows * 22.0 + 40.0;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}">"#);
    for (i, target) in targets.iter().enumerate() {
        let y = 20.0 + i as f64 * 22.0;
        let _ = write!(
            s,
            r##"<text x="4" y="{}" font-size="12">{}</text><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>"##,
            y + 12.0,
            esc(target),
            W - 10.0,
            y + 8.0,
            y + 8.0
        );
        for f in r
            .faults
            .iter()
            .filter(|f| f.injected && f.target == *target)
        {
            let x0 = x(f.start, end);
            let x1 = x(f.healed.unwrap_or(end), end).max(x0 + 3.0);
            let role = f
                .choice
                .as_ref()
                .and_then(|c| c.role.as_deref())
                .map(|r| format!(" (the {r})"))
                .unwrap_or_default();
            let _ = write!(
                s,
                r##"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="16" fill="#7a5cc7"><title>{}{} {:.1}-{:.1} s, Felix converged in {}</title></rect>"##,
                x1 - x0,
                esc(&f.kind),
                esc(&role),
                f.start,
                f.healed.unwrap_or(end),
                f.felix_convergence
                    .map(|c| format!("{c:.2} s"))
                    .unwrap_or_else(|| "—".into())
            );
        }
    }
    let y = 20.0 + rows * 22.0 + 6.0;
    let _ = write!(
        s,
        r#"<text x="4" y="{}" font-size="12">probes</text>"#,
        y + 12.0
    );
    for &(t, _ok, failed, _refused, allowed_denied) in &r.probes.per_second {
        let colour = if allowed_denied > 0 {
            "#d62728"
        } else if failed > 0 {
            "#ff9f1c"
        } else {
            "#2ca02c"
        };
        let x0 = x(f64::from(t), end);
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="16" fill="{colour}"/>"#,
            (x(f64::from(t) + 1.0, end) - x0).max(1.0)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="11">0 s</text><text x="{}" y="{}" font-size="11" text-anchor="end">{end:.0} s</text></svg>"#,
        h - 4.0,
        W - 10.0,
        h - 4.0
    );
    s
}

/// One line per process of `pick(sample)` over time.
fn chart(r: &Report, title: &str, unit: &str, pick: fn(&(f64, f64, f64)) -> f64) -> String {
    const COLOURS: [&str; 8] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let h = 220.0;
    let max = r
        .processes
        .iter()
        .flat_map(|p| p.samples.iter().map(pick))
        .fold(1e-9, f64::max);
    let mut s = format!(
        r#"<h3>{}</h3><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}">"#,
        esc(title),
        h + 20.0
    );
    let _ = write!(
        s,
        r#"<text x="4" y="14" font-size="11">{max:.1} {unit}</text><text x="4" y="{h}" font-size="11">0</text>"#
    );
    for (i, p) in r.processes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = p
            .samples
            .iter()
            .map(|smp| {
                format!(
                    "{:.1},{:.1}",
                    x(smp.0, r.seconds),
                    h - (h - 10.0) * pick(smp) / max
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            points.join(" "),
            W - 120.0,
            14.0 + 13.0 * i as f64,
            esc(&p.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>manul-chaos report</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
         .ok{color:#2ca02c}.bad{color:#d62728;font-weight:bold}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>manul-chaos: {}</h1><p>mode {}, seed {}, {} nodes, {:.0} s, {} faults</p>",
        if r.ok {
            "<span class=ok>every invariant held</span>"
        } else {
            "<span class=bad>invariants violated</span>"
        },
        esc(&r.mode),
        r.seed.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
        r.nodes,
        r.seconds,
        r.faults.len()
    );
    s.push_str("<h2>Invariants</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>");
    for i in &r.invariants {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
            esc(&i.name),
            if i.ok { "ok" } else { "bad" },
            if i.ok { "held" } else { "VIOLATED" },
            esc(&i.detail)
        );
    }
    s.push_str("</table><h2>Timeline</h2>");
    s.push_str(&timeline(r));
    s.push_str("<h2>Faults and convergence</h2><table><tr><th>fault</th><th>target</th><th>chosen from (each replica: role, leader id, term, commit, applied)</th><th>start (s)</th><th>healed (s)</th><th>Felix at the leader's revision (s)</th><th>allowed pairs again (s)</th></tr>");
    let secs = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
    for f in &r.faults {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.kind),
            if f.injected {
                esc(&f.target)
            } else {
                "<span class=bad>not injected</span>".into()
            },
            f.choice.as_ref().map(choice).unwrap_or_default(),
            f.start,
            secs(f.healed),
            secs(f.felix_convergence),
            secs(f.allowed_recovery)
        );
    }
    let p = &r.probes;
    let _ = write!(
        s,
        "</table><h2>Probes</h2><p>{} denied probes, <b>{} unexpected allows</b>; {} allowed probes, {} failed, over {} pairs.</p>",
        p.denied_probes,
        p.unexpected_allows,
        p.allowed_probes,
        p.allowed_failures,
        p.pairs.len()
    );
    let h = &r.history;
    let _ = write!(
        s,
        "<h2>API history</h2><p>{} operations ({} applies, {} gets, {} deletes; {} of unknown outcome, {} conflicts).</p><table><tr><th>key</th><th>verdict</th></tr>",
        h.operations, h.applies, h.gets, h.deletes, h.unknown, h.conflicts
    );
    for (k, v) in &h.verdicts {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table><h2>Sync streams and replicas</h2><table><tr><th>replica</th><th>connections</th><th>snapshots</th><th>resumes</th><th>batches</th><th>revision</th><th>stream's state hash</th><th>violations</th></tr>");
    for st in &r.streams {
        let _ = write!(
            s,
            "<tr><td>typha-{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            st.replica + 1,
            st.connections,
            st.snapshots,
            st.resumes,
            st.batches,
            st.revision,
            esc(&st.state_hash),
            st.violations.len()
        );
    }
    s.push_str(
        "</table><table><tr><th>replica</th><th>applied revision</th><th>state hash</th></tr>",
    );
    for rep in &r.replicas {
        let _ = write!(
            s,
            "<tr><td>typha-{}</td><td>{}</td><td><code>{}</code></td></tr>",
            rep.replica + 1,
            rep.applied_revision,
            esc(&rep.state_hash)
        );
    }
    s.push_str("</table><h2>Processes</h2>");
    s.push_str(&chart(r, "CPU", "% of a core", |smp| smp.1));
    s.push_str(&chart(r, "Resident memory", "MiB", |smp| smp.2));
    s.push_str("<table><tr><th>process</th><th>growth (MiB/h, fitted)</th></tr>");
    for p in &r.processes {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.growth_mib_per_hour
                .map(|g| format!("{g:.1}"))
                .unwrap_or_else(|| "—".into())
        );
    }
    s.push_str("</table><h2>Events</h2><table><tr><th>t (s)</th><th>event</th></tr>");
    for e in &r.events {
        let _ = write!(s, "<tr><td>{:.2}</td><td>{}</td></tr>", e.t, esc(&e.what));
    }
    s.push_str("</table></body></html>\n");
    s
}

/// How a target was chosen: the agreed view and the target's role in it
/// (or why there was none), then each replica's status.
fn choice(c: &TargetChoice) -> String {
    let mut s = match (&c.leader, c.term, &c.role) {
        (Some(leader), Some(term), Some(role)) => format!(
            "{} leader {} at term {term}, agreed after {:.2} s",
            if role == "leader" {
                "the"
            } else {
                "a follower of the"
            },
            esc(leader),
            c.waited
        ),
        _ => format!(
            "<span class=bad>no agreed leader after {:.2} s</span>: {}",
            c.waited,
            esc(c.not_settled.as_deref().unwrap_or(""))
        ),
    };
    for st in &c.statuses {
        if st.answered {
            let _ = write!(
                s,
                "<br>{}: {}, {}, {}, {}, {}",
                esc(&st.replica),
                esc(&st.role),
                st.leader_id,
                st.term,
                st.commit_index,
                st.applied_revision
            );
        } else {
            let _ = write!(s, "<br>{}: no answer", esc(&st.replica));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Invariant;
    use crate::report::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_text() {
        let r = Report {
            mode: "ci".into(),
            seed: Some(3),
            nodes: 2,
            seconds: 60.0,
            ok: false,
            invariants: vec![Invariant::new("probe <x>", &["bad".into()], String::new())],
            faults: vec![
                FaultRecord {
                    kind: "kill-leader".into(),
                    target: "typha-1".into(),
                    injected: true,
                    choice: Some(TargetChoice {
                        waited: 0.3,
                        polls: 4,
                        settled: true,
                        not_settled: None,
                        leader: Some("typha-1".into()),
                        term: Some(7),
                        role: Some("leader".into()),
                        statuses: vec![
                            SeenStatus {
                                replica: "typha-1".into(),
                                answered: true,
                                id: 1,
                                role: "leader".into(),
                                leader_id: 1,
                                term: 7,
                                commit_index: 120,
                                applied_revision: 118,
                            },
                            SeenStatus {
                                replica: "typha-2".into(),
                                ..SeenStatus::default()
                            },
                        ],
                    }),
                    start: 5.0,
                    healed: Some(9.0),
                    convergence_target: Some(118),
                    felix_convergence: Some(0.4),
                    allowed_recovery: Some(0.0),
                },
                FaultRecord {
                    kind: "partition-follower".into(),
                    target: String::new(),
                    injected: false,
                    choice: Some(TargetChoice {
                        waited: 5.0,
                        polls: 40,
                        settled: false,
                        not_settled: Some("typha-3 (candidate) knows no leader".into()),
                        leader: None,
                        term: None,
                        role: None,
                        statuses: vec![],
                    }),
                    start: 20.0,
                    healed: None,
                    convergence_target: None,
                    felix_convergence: None,
                    allowed_recovery: None,
                },
            ],
            events: vec![],
            probes: ProbeSummary::default(),
            history: HistorySummary::default(),
            streams: vec![],
            replicas: vec![],
            processes: vec![ProcessSeries {
                name: "typha-1".into(),
                samples: vec![(1.0, 5.0, 30.0), (2.0, 6.0, 31.0)],
                growth_mib_per_hour: None,
            }],
            logs: None,
        };
        let page = render(&r);
        assert!(page.contains("probe &lt;x&gt;"));
        assert!(page.contains("the leader typha-1 at term 7, agreed after 0.30 s"));
        assert!(page.contains("<br>typha-1: leader, 1, 7, 120, 118<br>typha-2: no answer"));
        assert!(page.contains("not injected"));
        assert!(
            page.contains(
                "no agreed leader after 5.00 s</span>: typha-3 (candidate) knows no leader"
            )
        );
        // The fault that was not injected has no bar.
        assert_eq!(page.matches("fill=\"#7a5cc7\"").count(), 1);
        assert!(page.contains("VIOLATED"));
        assert!(page.contains("<svg") && page.contains("polyline"));
        assert!(!page.contains("<script"));
        assert!(!page.contains("src="));
    }
}
