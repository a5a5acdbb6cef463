//! The Grafana dashboards and the alert rules against a real Prometheus.
//!
//! A two-node eBPF cluster runs with traffic (probes between pods, some of
//! them denied after a policy change); Prometheus (Debian's `prometheus`)
//! runs inside the cluster's control-plane namespace, scraping every Typha
//! and every Felix each second with the alert rules loaded. Every query of
//! every panel and variable of every dashboard in `deploy/dashboards/` must
//! return data, every rule must evaluate without error, `promtool check
//! rules` must pass on the rule file and `promtool check metrics` on every
//! `/metrics` page. Without root, or without Prometheus installed, the
//! tests are skipped, unless CI=true: then they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FRONTEND_TO_API, Stop, pod};
use manul_local_cluster::procs::spawn_in;
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster};
use manul_netns::{NetNs, ProbeOutcome};
use serde_json::Value;

/// Where Prometheus listens, in the control-plane namespace.
const PROMETHEUS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// What the queries' Grafana variables stand for here: a rate window of
/// ten scrapes, a range covering the whole run, every instance.
const VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "10s"),
    ("$__range", "5m"),
    ("$instance", ".+"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules_file() -> PathBuf {
    repo().join("deploy/prometheus/manul-rules.yaml")
}

/// Whether `program` runs; skips (false) or, with CI=true, fails when not.
fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is missing and CI=true: install Debian's prometheus package (scripts/deps.sh)"
        );
        eprintln!("skipping: {program} is missing (Debian's prometheus package)");
    }
    found
}

#[test]
fn alert_rules_pass_promtool() {
    if !have("promtool") {
        return;
    }
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(rules_file())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// An HTTP/1.0 GET from inside `ns`: the status code and the body.
fn get(
    ns: &NetNs,
    addr: SocketAddr,
    target: &str,
    accept: Option<&str>,
) -> Result<(u16, String), String> {
    ns.run(|| -> Result<(u16, String), String> {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        let buf = String::from_utf8(buf).map_err(|e| e.to_string())?;
        let (head, body) = buf.split_once("\r\n\r\n").ok_or("no end of headers")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        Ok((code, body.to_string()))
    })
    .map_err(|e| e.to_string())?
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an API call, checked for `"status":"success"`.
fn prometheus_api(ns: &NetNs, target: &str) -> Result<Value, String> {
    let (code, body) = get(ns, PROMETHEUS, target, None)?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{target}: {e}: {body}"))?;
    if code != 200 || v["status"] != "success" {
        return Err(format!("{target}: HTTP {code}: {body}"));
    }
    Ok(v["data"].clone())
}

/// A dashboard query as Prometheus takes it: Grafana's variables replaced,
/// `label_values(METRIC, LABEL)` (a variable's query) as a PromQL query
/// with the same series.
fn promql(query: &str) -> String {
    let mut q = query.to_string();
    for (var, value) in VARIABLES {
        q = q.replace(var, value);
    }
    assert!(
        !q.contains('$'),
        "a query uses a variable the test does not know: {query}"
    );
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (metric, label) = args.rsplit_once(',').expect("label_values(METRIC, LABEL)");
        return format!("count by ({}) ({})", label.trim(), metric.trim());
    }
    q
}

/// Every dashboard's queries (panels, also inside rows, and variables), by
/// dashboard file and panel title; checks what Grafana needs to import it.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = repo().join("deploy/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards missing in {}", dir.display());
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for field in ["uid", "title"] {
            assert!(
                d[field].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no {field}"
            );
        }
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{name}: no schemaVersion"
        );
        let variables = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: no datasource variable"
        );
        for v in &variables {
            if v["type"] == "query" {
                let q = v["query"]["query"].as_str().expect("a variable's query");
                out.push((
                    name.clone(),
                    format!("variable {}", v["name"]),
                    q.to_string(),
                ));
            }
        }
        let mut panels: Vec<Value> = d["panels"].as_array().cloned().unwrap_or_default();
        while let Some(p) = panels.pop() {
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default().to_string();
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {title}"
            );
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            for t in targets {
                let expr = t["expr"].as_str().expect("a target's expr");
                out.push((name.clone(), title.clone(), expr.to_string()));
            }
        }
    }
    out
}

/// Probes until `want` or the deadline.
fn until(c: &LocalCluster, from: &str, to: &str, want: bool, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let got = c
            .tcp_probe(from, to, 8080, Duration::from_millis(100))
            .unwrap()
            == ProbeOutcome::Connected;
        if got == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn prometheus_config(c: &LocalCluster) -> String {
    let mut jobs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in c.metrics_targets() {
        jobs.entry(t.job)
            .or_default()
            .push(format!("\"{}\"", t.address));
    }
    let mut config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
         rule_files: [\"{}\"]\nscrape_configs:\n",
        rules_file().display()
    );
    for (job, targets) in jobs {
        config += &format!(
            "  - job_name: {job}\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
    }
    config
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !manul_netns::testing::have_root("the dashboards test")
        || !have("prometheus")
        || !have("promtool")
    {
        return;
    }
    let queries = dashboard_queries();
    let name = manul_netns::unique_prefix("ld");
    let mut c = LocalCluster::up(ClusterConfig {
        name: name.clone(),
        nodes: 2,
        typha_replicas: 1,
        dataplane: Dataplane::Bpf,
        policy_setup_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    })
    .expect("cluster up");
    for (p, node) in [("frontend", 0), ("api", 1), ("other", 0)] {
        c.add_pod(pod(p, node)).unwrap();
    }
    let (fe, api, other) = ("production/frontend", "production/api", "production/other");

    let cp = NetNs::open(c.control_plane_netns()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&c)).unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"));
    let log = work.path().join("prometheus.log");
    let _prometheus = Stop(spawn_in(&cp, cmd, &log).unwrap());
    let prometheus_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Every target scraped and up.
    let targets = c.metrics_targets();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = prometheus_api(&cp, "/api/v1/targets?state=active")
            .map(|d| {
                d["activeTargets"]
                    .as_array()
                    .map(|a| a.iter().filter(|t| t["health"] == "up").count())
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if up == targets.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{up} of {} targets up; Prometheus log:\n{}",
            targets.len(),
            prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Traffic while Prometheus scrapes: allowed flows, then a policy that
    // denies `other`, then both kinds.
    assert!(
        until(&c, fe, api, true, Duration::from_secs(10)),
        "frontend cannot reach api"
    );
    assert!(
        until(&c, other, api, true, Duration::from_secs(5)),
        "other cannot reach api"
    );
    c.apply_yaml(FRONTEND_TO_API).unwrap();
    assert!(
        until(&c, other, api, false, Duration::from_secs(10)),
        "the policy did not take effect"
    );
    for _ in 0..5 {
        assert!(until(&c, fe, api, true, Duration::from_secs(2)));
        assert!(until(&c, other, api, false, Duration::from_secs(2)));
    }

    // Every query returns data: wait for the flow counters' next export
    // and a few scrapes, then name every query that still returns nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let empty = loop {
        let mut empty = Vec::new();
        for (file, panel, query) in &queries {
            let q = promql(query);
            match prometheus_api(&cp, &format!("/api/v1/query?query={}", encode(&q))) {
                Ok(d) if d["resultType"] == "scalar" => {}
                Ok(d) if d["result"].as_array().is_some_and(|r| !r.is_empty()) => {}
                Ok(_) => empty.push(format!("{file} / {panel}: {q} returned nothing")),
                Err(e) => empty.push(format!("{file} / {panel}: {q}: {e}")),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    eprintln!("{} dashboard queries returned data", queries.len());

    // The alert rules are loaded and evaluate without error.
    let rules = prometheus_api(&cp, "/api/v1/rules").unwrap();
    let groups = rules["groups"].as_array().cloned().unwrap_or_default();
    let evaluated: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(evaluated.len() >= 8, "rules not loaded: {rules}");
    for r in evaluated {
        assert_eq!(
            r["health"], "ok",
            "rule {} does not evaluate: {r}",
            r["name"]
        );
    }

    // Every /metrics page passes promtool (which reads the text format that
    // a plain GET is served).
    for t in &targets {
        let (code, page) = get(&cp, t.address, "/metrics", None).unwrap();
        assert_eq!(code, 200, "{}", t.address);
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {} {}: {}{}",
            t.job,
            t.address,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
