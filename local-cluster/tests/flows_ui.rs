//! The flow aggregator's web UI in headless Chromium (Debian's `chromium`
//! and `chromium-driver`, over WebDriver) against a cluster with real
//! allowed and denied TCP on the eBPF dataplane: the table shows both
//! flows by their pods, the service graph's edge shows the counts of
//! connections the test made and the policies that decided them, and
//! clicking the edge filters the table to it; a node that is not a
//! workload is labelled by what it is (a host, a network by class) and
//! only a pod has an edge to itself. Without the browser the test is
//! skipped, unless CI=true: then it fails.
//!
//! With `MANUL_FLOWS_UI_SCREENSHOT=PATH` it also writes its screenshot
//! there (the edge frontend → api selected and the table filtered to it).
//!
//! WebDriver is spoken directly (the W3C protocol's handful of commands
//! this test needs, JSON over HTTP/1.1 to chromedriver on the control
//! plane's loopback): a WebDriver crate would bring a dependency tree
//! (URL parsing with ICU, a second `http`) larger than what it saves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{FRONTEND_TO_API, Stop, pod};
use manul_local_cluster::procs::spawn_in;
use manul_local_cluster::{ClusterConfig, Dataplane, FlowsConfig, LocalCluster};
use manul_netns::{NetNs, ProbeOutcome};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// chromedriver's port inside the control plane's namespace.
const DRIVER_PORT: u16 = 9515;
const FRONTEND: &str = "production/frontend";
const API: &str = "production/api";
const OTHER: &str = "production/other";

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
            "{program} is missing and CI=true: install Debian's chromium and chromium-driver (scripts/deps.sh)"
        );
        eprintln!("skipping: {program} is missing (Debian's chromium and chromium-driver)");
    }
    found
}

/// A WebDriver session with chromedriver on `127.0.0.1:port`.
struct Client {
    port: u16,
    session: String,
}

/// Where an element is found.
enum Locator<'a> {
    Css(&'a str),
    Id(&'a str),
}

/// The key W3C WebDriver names an element reference by (the web element
/// identifier).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver command: `method` on `path` with `body`; the answer's
/// `value`, or the WebDriver error it reports.
async fn command(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // chromedriver may keep the connection open after its answer: read
    // the answer's length, not to the end of the stream.
    let raw = tokio::time::timeout(COMMAND_TIMEOUT, read_answer(&mut s))
        .await
        .map_err(|_| format!("{method} {path}: no answer within {COMMAND_TIMEOUT:?}"))??;
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let value = v["value"].clone();
    if head.starts_with("HTTP/1.1 200") {
        Ok(value)
    } else {
        Err(format!(
            "{method} {path}: {}: {}",
            value["error"], value["message"]
        ))
    }
}

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 answer: its head and its body by `Content-Length`, by
/// chunks up to the last one, or to the end of the stream.
async fn read_answer(s: &mut tokio::net::TcpStream) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let body = &raw[end + 4..];
        if head.contains("transfer-encoding: chunked") {
            if body.ends_with(b"0\r\n\r\n") {
                return Ok(raw);
            }
            continue;
        }
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        if length.is_some_and(|len| body.len() >= len) {
            return Ok(raw);
        }
    }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Client {
    async fn new(port: u16, capabilities: Value) -> Result<Client, String> {
        let v = command(
            port,
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": capabilities}})),
        )
        .await?;
        let session = v["sessionId"].as_str().ok_or("no session id")?.to_owned();
        Ok(Client { port, session })
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        command(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    async fn title(&self) -> Result<String, String> {
        Ok(self
            .cmd("GET", "/title", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn find(&self, l: Locator<'_>) -> Result<Element<'_>, String> {
        let css = match l {
            Locator::Css(c) => c.to_owned(),
            Locator::Id(id) => format!("#{id}"),
        };
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        let id = v[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element reference in {v}"))?
            .to_owned();
        Ok(Element { client: self, id })
    }

    async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let v = self.cmd("GET", "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or("no screenshot")?)
            .map_err(|e| e.to_string())
    }

    async fn close(self) -> Result<(), String> {
        command(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await
        .map(drop)
    }
}

/// An element of the page.
struct Element<'a> {
    client: &'a Client,
    id: String,
}

impl Element<'_> {
    async fn click(&self) -> Result<(), String> {
        self.client
            .cmd(
                "POST",
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await
            .map(drop)
    }

    async fn text(&self) -> Result<String, String> {
        let v = self
            .client
            .cmd("GET", &format!("/element/{}/text", self.id), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }
}

/// The table's rows as the page shows them, cell texts by column class.
async fn rows(b: &Client) -> Vec<BTreeMap<String, String>> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#flow-rows tr')].map(tr =>
               Object.fromEntries([...tr.children].map(td => [td.classList[0], td.textContent])));",
            Vec::new(),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// The graph edge's label text (`✓N✗M`), or none while it is not drawn.
async fn edge_label(b: &Client, source: &str, target: &str) -> Option<String> {
    let v = b
        .execute(
            "const g = [...document.querySelectorAll('#graph g.edge')]
               .find(g => g.dataset.source === arguments[0] && g.dataset.target === arguments[1]);
             return g ? g.querySelector('.edge-label').textContent : null;",
            vec![json!(source), json!(target)],
        )
        .await
        .unwrap();
    v.as_str().map(str::to_owned)
}

/// The graph's nodes as drawn: id to (kind, label).
async fn graph_nodes(b: &Client) -> BTreeMap<String, (String, String)> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#graph g.node')].map(g =>
               [g.dataset.id, g.classList[1], g.querySelector('text').firstChild.nodeValue]);",
            Vec::new(),
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = serde_json::from_value(v).unwrap();
    rows.into_iter()
        .map(|(id, kind, label)| (id, (kind, label)))
        .collect()
}

/// The graph's edges as drawn: (source, target).
async fn graph_edges(b: &Client) -> Vec<(String, String)> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#graph g.edge')].map(g =>
               [g.dataset.source, g.dataset.target]);",
            Vec::new(),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Polls `check` every 250 ms until it returns something, for `within`.
async fn wait<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is(row: &BTreeMap<String, String>, src: &str, dst: &str, verdict: &str) -> bool {
    row["source"] == src && row["destination"] == dst && row["verdict"] == verdict
}

/// Clicks the edge `source` → `target` (its label) with live updates off,
/// so the graph is not redrawn under the click.
async fn click_edge(b: &Client, source: &str, target: &str) {
    let css =
        format!("#graph g.edge[data-source=\"{source}\"][data-target=\"{target}\"] .edge-label");
    // A refresh already on its way may redraw the graph once more.
    let mut last = None;
    for _ in 0..5 {
        match b.find(Locator::Css(&css)).await {
            Ok(e) => match e.click().await {
                Ok(()) => return,
                Err(err) => last = Some(err.to_string()),
            },
            Err(err) => last = Some(err.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("cannot click the edge {source} → {target}: {last:?}");
}

async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The edge panel's counts and policy names, once it shows `source` →
/// `target`.
async fn edge_detail(b: &Client, source: &str, target: &str) -> (u64, u64, Vec<String>) {
    wait("the edge's details", Duration::from_secs(10), || async {
        let shown = text(b, "#edge-detail .edge-source").await == source
            && text(b, "#edge-detail .edge-target").await == target;
        shown.then_some(())
    })
    .await;
    let allowed = text(b, "#edge-detail .edge-allowed").await.parse().unwrap();
    let denied = text(b, "#edge-detail .edge-denied").await.parse().unwrap();
    let names = b
        .execute(
            "return [...document.querySelectorAll('#edge-detail li.policy')].map(li => li.dataset.name);",
            Vec::new(),
        )
        .await
        .unwrap();
    (allowed, denied, serde_json::from_value(names).unwrap())
}

/// Waits until every row of the table is `source` → `target` (and there
/// is one).
async fn table_is_filtered_to(
    b: &Client,
    source: &str,
    target: &str,
) -> Vec<BTreeMap<String, String>> {
    wait(
        "the table filtered to the edge",
        Duration::from_secs(10),
        || async {
            let rs = rows(b).await;
            let only = !rs.is_empty()
                && rs
                    .iter()
                    .all(|r| r["source"] == source && r["destination"] == target);
            only.then_some(rs)
        },
    )
    .await
}

#[test]
fn the_web_ui_shows_real_flows_and_a_graph_edge_filters_the_table() {
    if !manul_netns::testing::have_root("the flows UI test")
        || !have("chromium")
        || !have("chromedriver")
    {
        return;
    }
    let name = manul_netns::unique_prefix("lu");
    let mut c = LocalCluster::up_with_flows(
        ClusterConfig {
            name,
            nodes: 2,
            typha_replicas: 1,
            dataplane: Dataplane::Bpf,
            policy_setup_timeout: Duration::from_secs(5),
            ..ClusterConfig::default()
        },
        Some(FlowsConfig { interval_s: 1 }),
    )
    .expect("cluster up");
    c.add_pod(pod("frontend", 0)).unwrap();
    c.add_pod(pod("api", 1)).unwrap();
    c.add_pod(pod("other", 0)).unwrap();
    c.apply_yaml(FRONTEND_TO_API).unwrap();
    let start = Instant::now();
    while c
        .tcp_probe(OTHER, API, 8080, Duration::from_millis(200))
        .unwrap()
        == ProbeOutcome::Connected
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the policy did not take effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let o = c
            .tcp_probe(FRONTEND, API, 8080, Duration::from_millis(500))
            .unwrap();
        assert_eq!(o, ProbeOutcome::Connected);
    }
    for _ in 0..3 {
        let o = c
            .tcp_probe(OTHER, API, 8080, Duration::from_millis(200))
            .unwrap();
        assert_ne!(o, ProbeOutcome::Connected);
    }

    // The browser runs in the control plane, where the UI listens.
    let cp = NetNs::open(c.control_plane_netns()).unwrap();
    let work = c.work_dir().to_path_buf();
    let mut driver = Command::new("chromedriver");
    driver.arg(format!("--port={DRIVER_PORT}"));
    let _driver = Stop(spawn_in(&cp, driver, &work.join("chromedriver.log")).unwrap());
    let url = c.flows_ui_url().unwrap();
    let screenshot = c
        .block_on(async move {
            let caps = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                                "--disable-dev-shm-usage", "--window-size=1500,900"]},
            });
            let b = wait("chromedriver", Duration::from_secs(15), || {
                let caps = caps.clone();
                async move { Client::new(DRIVER_PORT, caps).await.ok() }
            })
            .await;
            b.goto(&url).await.unwrap();
            assert_eq!(b.title().await.unwrap(), "Manul flows");

            // The table: the allowed and the denied flow, by their pods.
            wait("the allowed and the denied flow in the table", Duration::from_secs(30), || async {
                let rs = rows(&b).await;
                (rs.iter().any(|r| is(r, FRONTEND, API, "ALLOW"))
                    && rs.iter().any(|r| is(r, OTHER, API, "DENY")))
                .then_some(())
            })
            .await;
            // The graph: frontend → api with the five connections made, all
            // allowed (once every interval has arrived).
            wait("the edge frontend → api with 5 allowed", Duration::from_secs(30), || async {
                (edge_label(&b, FRONTEND, API).await.as_deref() == Some("✓5✗0")).then_some(())
            })
            .await;
            let other = edge_label(&b, OTHER, API).await.unwrap();
            assert!(other.contains('✗') && !other.ends_with("✗0"), "{other}");

            // Live updates off, then click the edge: the table shows it only.
            b.find(Locator::Id("live")).await.unwrap().click().await.unwrap();
            click_edge(&b, FRONTEND, API).await;
            let rs = table_is_filtered_to(&b, FRONTEND, API).await;
            assert!(rs.iter().any(|r| r["verdict"] == "ALLOW" && r["side"] == "dst"
                && r["policies"].contains("production/frontend-to-api#0:allow")), "{rs:?}");
            assert!(rs.iter().all(|r| r["verdict"] == "ALLOW"), "{rs:?}");
            assert_eq!(
                text(&b, "#edge-filter-text").await,
                format!("{FRONTEND} → {API}")
            );
            let (allowed, denied, policies) = edge_detail(&b, FRONTEND, API).await;
            assert_eq!((allowed, denied), (5, 0));
            assert!(policies.contains(&"production/frontend-to-api".to_string()), "{policies:?}");
            let png = b.screenshot().await.unwrap();
            // A node that is not a workload is named by what it is (a host, or a
            // network by class: the pods' own IPv6 neighbour discovery and
            // multicast listener reports go from link-local addresses to
            // multicast groups), and only a pod has an edge to itself.
            let nodes = graph_nodes(&b).await;
            for (kind, label) in nodes.values() {
                if kind != "pod" {
                    assert!(
                        label.starts_with("host ")
                            || ["public network", "private network", "link-local", "multicast"]
                                .contains(&label.as_str()),
                        "{nodes:?}"
                    );
                }
            }
            for (source, target) in graph_edges(&b).await {
                assert!(
                    source != target || nodes[&source].0 == "pod",
                    "{source} → {target}: {nodes:?}"
                );
            }

            // The denied edge: at least the three denials made, decided by the
            // end of the default tier.
            click_edge(&b, OTHER, API).await;
            let rs = table_is_filtered_to(&b, OTHER, API).await;
            assert!(rs.iter().any(|r| r["verdict"] == "DENY"
                && r["policies"].contains("default/default(end):deny")), "{rs:?}");
            let (_, denied, policies) = edge_detail(&b, OTHER, API).await;
            assert!(denied >= 3, "{denied}");
            assert!(policies.contains(&"default/default".to_string()), "{policies:?}");
            assert!(!policies.contains(&"production/frontend-to-api".to_string()), "{policies:?}");

            // Clearing the edge shows every flow again.
            b.find(Locator::Id("edge-filter-clear")).await.unwrap().click().await.unwrap();
            wait("every flow again", Duration::from_secs(10), || async {
                let rs = rows(&b).await;
                (rs.iter().any(|r| is(r, FRONTEND, API, "ALLOW"))
                    && rs.iter().any(|r| is(r, OTHER, API, "DENY")))
                .then_some(())
            })
            .await;
            b.close().await.unwrap();
            png
        })
        .unwrap();
    assert_eq!(&screenshot[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    if let Ok(path) = std::env::var("MANUL_FLOWS_UI_SCREENSHOT") {
        std::fs::write(&path, &screenshot).unwrap();
    }
}
