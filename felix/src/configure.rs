//! The shell around [`crate::config`]: reads the FelixConfigurations and
//! the operator's `Installation` from Typha before the dataplane starts, then follows the ones the sync client
//! routes here (they never reach the calculation graph), applies a change
//! that Calico applies live, and reports a change that needs a restart.

use std::time::Duration;

use manul_client::Client;
use manul_model::{Kind, Resource};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agent::Intervals;
use crate::calc::Update;
use crate::config::{Change, FelixConfig, Inputs, View, ignored_fields, merge, unusable_fields};

/// Reads `default` and `node.<node>` into `inputs`, trying Typha until it
/// answers or `deadline` passes (`None`: forever, as Felix does at start).
pub async fn load(
    typhas: &[String],
    node: &str,
    transport: &manul_tls::connect::Transport,
    inputs: &mut Inputs,
    deadline: Option<Duration>,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let config = manul_client::ClientConfig {
                transport: transport.clone(),
                ..manul_client::ClientConfig::default()
            };
            let client = Client::connect_with(typhas, config)
                .await
                .map_err(|e| manul_model::error::chain(&e))?;
            let mut all = client
                .list(Kind::FelixConfiguration, None)
                .await
                .map_err(|e| manul_model::error::chain(&e))?;
            all.extend(
                client
                    .list(Kind::Installation, None)
                    .await
                    .map_err(|e| manul_model::error::chain(&e))?,
            );
            Ok::<_, String>(all)
        };
        match attempt.await {
            Ok(list) => {
                for (resource, _) in list {
                    let name = resource.metadata().name.clone().unwrap_or_default();
                    set(inputs, node, &name, Some(resource));
                }
                return Ok(());
            }
            Err(e) => {
                if deadline.is_some_and(|d| started.elapsed() + backoff > d) {
                    return Err(e);
                }
                warn!(
                    "cannot read FelixConfiguration from Typha yet: {e}; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Takes a FelixConfiguration or Installation (`None`: deleted) into
/// `inputs`; returns whether it is one of this node's layers.
fn set(inputs: &mut Inputs, node: &str, name: &str, value: Option<Resource>) -> bool {
    match value {
        Some(Resource::FelixConfiguration(o)) => inputs.set_datastore(node, name, Some(o.spec)),
        Some(Resource::Installation(o)) => {
            let (taken, warning) = inputs.set_installation(name, Some(&o.spec));
            if let Some(w) = warning {
                warn!("Installation {name}: {w}");
            }
            taken
        }
        _ => false,
    }
}

/// Takes a deletion of `key` into `inputs`.
fn unset(inputs: &mut Inputs, node: &str, kind: Kind, name: &str) -> bool {
    match kind {
        Kind::FelixConfiguration => inputs.set_datastore(node, name, None),
        Kind::Installation => inputs.set_installation(name, None).0,
        _ => false,
    }
}

/// Warns about fields set in the datastore that Felix does not act on or
/// cannot use.
pub fn warn_ignored(inputs: &Inputs) {
    for (name, spec) in [("default", &inputs.global), ("node", &inputs.node)] {
        if let Some(spec) = spec {
            for (field, reason) in unusable_fields(spec) {
                warn!(
                    resource = name,
                    field, "FelixConfiguration value not used ({reason}); the next source applies"
                );
            }
            let fields = ignored_fields(spec);
            if !fields.is_empty() {
                warn!(
                    resource = name,
                    ?fields,
                    "FelixConfiguration fields accepted but not acted on"
                );
            }
        }
    }
}

/// Sets the log filter to a directive (`info`, `debug`, ...).
pub type SetLogFilter = Box<dyn Fn(&str) + Send>;

/// What a live change is applied through.
pub struct Live {
    /// Sets the log filter (`logSeverityScreen`); `None` when `RUST_LOG`
    /// overrides it.
    pub log: Option<SetLogFilter>,
    pub intervals: watch::Sender<Intervals>,
    /// The eBPF driver's flow-log interval, when it runs.
    pub flow_log_interval: Option<manul_dataplane_bpf::FlowLogInterval>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("log", &self.log.is_some())
            .field("intervals", &*self.intervals.borrow())
            .field("flow_log_interval", &self.flow_log_interval)
            .finish()
    }
}

impl Live {
    fn apply(&self, config: &FelixConfig, changes: &[Change]) {
        for c in changes {
            match c.name {
                "logSeverityScreen" => {
                    if let Some(set) = &self.log {
                        set(config.log_filter());
                    }
                }
                "iptablesRefreshInterval" | "routeRefreshInterval" => {
                    self.intervals.send_replace(intervals(config));
                }
                "flowLogsFlushInterval" => {
                    if let Some(h) = &self.flow_log_interval {
                        h.set(config.flow_logs_flush_interval.value);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The agent's refresh intervals from the configuration.
pub fn intervals(config: &FelixConfig) -> Intervals {
    Intervals {
        dataplane: config.iptables_refresh_interval.value,
        routes: config.route_refresh_interval.value,
    }
}

/// Follows FelixConfiguration and Installation updates until one needs a restart (returns
/// the settings that changed) or the sync client stops (returns empty).
pub async fn follow(
    node: String,
    mut inputs: Inputs,
    mut current: FelixConfig,
    mut updates: mpsc::UnboundedReceiver<Update>,
    live: Live,
    view: watch::Sender<View>,
) -> Vec<&'static str> {
    while let Some(u) = updates.recv().await {
        let taken = match u.value {
            Some(value) => set(&mut inputs, &node, &u.key.name, Some(value)),
            None => unset(&mut inputs, &node, u.key.kind, &u.key.name),
        };
        if !taken {
            continue;
        }
        let next = match merge(&inputs) {
            Ok(c) => c,
            Err(e) => {
                warn!("ignoring a FelixConfiguration change: {e}");
                continue;
            }
        };
        let changes = next.changes_from(&current);
        if FelixConfig::needs_restart(&changes) {
            return changes.iter().map(|c| c.name).collect();
        }
        warn_ignored(&inputs);
        if !changes.is_empty() {
            live.apply(&next, &changes);
            info!(
                settings = ?changes.iter().map(|c| c.name).collect::<Vec<_>>(),
                "applied a configuration change live"
            );
        }
        current = next;
        view.send_modify(|v| {
            let next = View {
                log_filter_override: v.log_filter_override.take(),
                dataplane: std::mem::take(&mut v.dataplane),
                ..View::new(&node, &v.run_id, &current, &inputs)
            };
            *v = next;
        });
    }
    Vec::new()
}
