//! The flow aggregator (`manul-flows`) in the control plane, on the
//! bridge's address, over TLS with the development certificates (Felix
//! presents its own, `manulctl flows` the administrator's), its web UI
//! beside it, and what Felix needs to stream to it.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{LocalCluster, UNDERLAY_PREFIX, tail};
use crate::ClusterError;
use crate::procs::{self, program, spawn_in};

/// The aggregator's port on the control plane's bridge address.
pub const FLOWS_PORT: u16 = 7443;
/// Its web UI's port, on the same address.
pub const FLOWS_UI_PORT: u16 = 7444;

/// How the cluster runs the flow aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowsConfig {
    /// Felix's aggregation interval (`--flow-interval`), seconds.
    pub interval_s: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig { interval_s: 15 }
    }
}

#[derive(Debug)]
pub(super) struct FlowsState {
    pub(super) config: FlowsConfig,
    pub(super) child: Option<Child>,
    pub(super) starts: u32,
}

impl LocalCluster {
    /// The aggregator's URL (TLS), as Felix and `manulctl flows
    /// --aggregator` (from the control plane's namespace, with
    /// [`Self::manulctl_tls_flags`]) reach it; `None` without one.
    pub fn flows_url(&self) -> Option<String> {
        self.flows.as_ref()?;
        let [a, b, c] = UNDERLAY_PREFIX;
        Some(format!("https://{a}.{b}.{c}.1:{FLOWS_PORT}"))
    }

    /// The aggregator's web UI (plain HTTP), as a browser in the control
    /// plane's namespace reaches it; `None` without one.
    pub fn flows_ui_url(&self) -> Option<String> {
        self.flows.as_ref()?;
        let [a, b, c] = UNDERLAY_PREFIX;
        Some(format!("http://{a}.{b}.{c}.1:{FLOWS_UI_PORT}/"))
    }

    /// Felix's flags for the aggregator, if the cluster runs one.
    pub(super) fn felix_flow_args(&self) -> Vec<String> {
        match (&self.flows, self.flows_url()) {
            (Some(f), Some(url)) => vec![
                "--flow-aggregator".into(),
                url,
                "--flow-interval".into(),
                f.config.interval_s.to_string(),
            ],
            _ => Vec::new(),
        }
    }

    /// Starts the aggregator (a no-op without one) and waits until it
    /// listens.
    pub fn start_flows(&mut self) -> Result<(), ClusterError> {
        let Some(url) = self.flows_url() else {
            return Ok(());
        };
        let listen = url.trim_start_matches("https://").to_owned();
        let [a, b, c] = UNDERLAY_PREFIX;
        let ui_listen = format!("{a}.{b}.{c}.1:{FLOWS_UI_PORT}");
        let certs = self.certs_dir();
        // One log per start: a restart does not truncate the last one.
        let starts = self.flows.as_ref().map_or(0, |f| f.starts);
        let log = self.work.path().join(format!("flows-{starts}.log"));
        let mut cmd = Command::new(program("manul-flows")?);
        cmd.args(["--listen", &listen, "--ui-listen", &ui_listen])
            .arg("--ca-file")
            .arg(certs.join("ca.crt"))
            .arg("--server-cert-file")
            .arg(certs.join("flows.crt"))
            .arg("--server-key-file")
            .arg(certs.join("flows.key"))
            .env(
                "RUST_LOG",
                std::env::var("MANUL_FLOWS_LOG").unwrap_or_else(|_| "info".into()),
            );
        let child = spawn_in(&self.cp, cmd, &log)?;
        if let Some(f) = self.flows.as_mut() {
            f.child = Some(child);
            f.starts += 1;
        }
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|e| ClusterError::Invalid(format!("{listen}: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let up = manul_netns::tcp_connect(&self.cp, addr, Duration::from_millis(200))
                .is_ok_and(|o| o == manul_netns::ProbeOutcome::Connected);
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::NotReady {
                    what: "the flow aggregator".into(),
                    secs: 15,
                    log: tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the aggregator (Felix keeps its records until it is back).
    pub fn stop_flows(&mut self) {
        if let Some(child) = self.flows.as_mut().and_then(|f| f.child.as_mut()) {
            procs::stop_child(child, Duration::from_secs(3));
        }
        if let Some(f) = self.flows.as_mut() {
            f.child = None;
        }
    }
}
