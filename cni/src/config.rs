//! The plugin's inputs: the network configuration on stdin and the `CNI_*`
//! environment variables, checked before anything is touched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{CniError, code};

/// The CNI versions this plugin speaks; results use the request's version.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version errors are reported in when the request's is unknown.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// The `type` this plugin answers to.
pub const PLUGIN_TYPE: &str = "manul-cni";

/// Top-level keys CNI runtimes may add that this plugin accepts and ignores.
const RUNTIME_KEYS: &[&str] = &["args", "capabilities", "runtimeConfig", "prevResult", "dns"];

/// The network configuration (stdin).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Typha replicas (`HOST:PORT`), tried in turn.
    #[serde(default)]
    pub typha: Vec<String>,
    /// TLS towards Typha: the CA its certificate must chain to, this
    /// plugin's certificate and key (its identity), and the common name or
    /// URI SAN Typha's certificate must carry (Felix's `TyphaCAFile`,
    /// `TyphaCertFile`, `TyphaKeyFile`, `TyphaCN`, `TyphaURISAN`); see
    /// `crate::tls`.
    #[serde(default)]
    pub typha_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub typha_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub typha_key_file: Option<PathBuf>,
    #[serde(default)]
    pub typha_cn: Option<String>,
    #[serde(default)]
    pub typha_uri_san: Option<String>,
    /// This node's name; the hostname when absent.
    #[serde(default)]
    pub nodename: Option<String>,
    /// How long ADD waits for Felix to report the endpoint programmed;
    /// 0 does not wait.
    #[serde(default)]
    pub policy_setup_timeout_ms: u64,
    /// Where Felix writes `NAMESPACE.POD.json` once an endpoint is
    /// programmed; required when waiting.
    #[serde(default)]
    pub endpoint_status_dir: Option<PathBuf>,
    /// `error`, `warn` (default), `info`, `debug` or `trace`; logs go to
    /// stderr.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Must be absent or `{"type": "manul-ipam"}`: the plugin allocates
    /// from the datastore itself.
    #[serde(default)]
    pub ipam: Option<serde_json::Value>,
    /// `kubernetes` when the pods live in a Kubernetes API server (as in
    /// Calico's conflist); absent for Manul's own datastore. Checked into
    /// [`NetConf::datastore`].
    #[serde(default)]
    pub datastore_type: Option<serde_json::Value>,
    /// Calico's `{"kubeconfig": PATH}`; checked into [`NetConf::datastore`].
    #[serde(default)]
    pub kubernetes: Option<serde_json::Value>,
    /// Where the pods live, from `datastore_type` and `kubernetes`.
    #[serde(skip)]
    pub datastore: Datastore,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Where the pods live, and so who writes their WorkloadEndpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Datastore {
    /// Manul's own datastore (the local cluster): the Pod is read from
    /// Typha and the plugin writes the WorkloadEndpoint.
    #[default]
    Typha,
    /// A Kubernetes API server, reached with this kubeconfig: the plugin
    /// records the pod's addresses on the Pod (annotations) and Typha's pod
    /// watcher alone writes the WorkloadEndpoint.
    Kubernetes { kubeconfig: PathBuf },
}

/// The value of `datastore_type` that selects Kubernetes.
pub const DATASTORE_KUBERNETES: &str = "kubernetes";

/// Reads `datastore_type` and `kubernetes`; every error names its field.
fn datastore(
    kind: Option<&serde_json::Value>,
    kubernetes: Option<&serde_json::Value>,
) -> Result<Datastore, CniError> {
    let invalid = |msg: String| Err(CniError::new(code::INVALID_CONFIG, msg, ""));
    let kubernetes_mode = match kind {
        None => false,
        Some(serde_json::Value::String(s)) if s == DATASTORE_KUBERNETES => true,
        Some(other) => {
            return invalid(format!(
                "\"datastore_type\" must be \"{DATASTORE_KUBERNETES}\" (or absent for Manul's own datastore), not {other}"
            ));
        }
    };
    let Some(section) = kubernetes else {
        return if kubernetes_mode {
            invalid(
                "\"datastore_type\": \"kubernetes\" needs \"kubernetes\": {\"kubeconfig\": PATH}"
                    .into(),
            )
        } else {
            Ok(Datastore::Typha)
        };
    };
    let Some(fields) = section.as_object() else {
        return invalid(format!(
            "\"kubernetes\" must be an object like {{\"kubeconfig\": PATH}}, not {section}"
        ));
    };
    if let Some(key) = fields.keys().find(|k| k.as_str() != "kubeconfig") {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!("\"kubernetes.{key}\" is not supported"),
            "only \"kubernetes.kubeconfig\" is read; the API server and credentials come from that file",
        ));
    }
    let kubeconfig = match fields.get("kubeconfig") {
        Some(serde_json::Value::String(p)) if !p.is_empty() => PathBuf::from(p),
        Some(serde_json::Value::String(_)) | None => {
            return invalid(
                "\"kubernetes.kubeconfig\" must name the plugin's kubeconfig file".into(),
            );
        }
        Some(other) => {
            return invalid(format!(
                "\"kubernetes.kubeconfig\" must be a path (a string), not {other}"
            ));
        }
    };
    if !kubernetes_mode {
        return invalid(
            "\"kubernetes\" is set but \"datastore_type\" is not \"kubernetes\"; set both or neither".into(),
        );
    }
    Ok(Datastore::Kubernetes { kubeconfig })
}

/// The version to report errors in, read leniently from a configuration
/// that may not parse.
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| DEFAULT_VERSION.to_string())
}

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

impl NetConf {
    /// Decodes and checks the configuration.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let mut conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::caused(code::DECODE, "cannot decode the network configuration", &e)
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("CNI version {:?} is not supported", conf.cni_version),
                format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        let invalid = |msg: String| Err(CniError::new(code::INVALID_CONFIG, msg, ""));
        if conf.name.is_empty() {
            return invalid("the network configuration needs a name".into());
        }
        if conf.typha.is_empty() || conf.typha.iter().any(String::is_empty) {
            return invalid("\"typha\" must list at least one Typha address (HOST:PORT)".into());
        }
        if conf.policy_setup_timeout_ms > 0 && conf.endpoint_status_dir.is_none() {
            return invalid(
                "\"policy_setup_timeout_ms\" needs \"endpoint_status_dir\" (where Felix reports programmed endpoints)"
                    .into(),
            );
        }
        if let Some(level) = &conf.log_level
            && !LOG_LEVELS.contains(&level.as_str())
        {
            return invalid(format!(
                "\"log_level\" {level:?} is not one of {}",
                LOG_LEVELS.join(", ")
            ));
        }
        if let Some(ipam) = &conf.ipam {
            let kind = ipam.get("type").and_then(|t| t.as_str());
            if kind != Some("manul-ipam") {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "\"ipam\" is not supported",
                    format!(
                        "{PLUGIN_TYPE} allocates addresses from the datastore itself; remove \"ipam\" or set it to {{\"type\": \"manul-ipam\"}}, not {ipam}"
                    ),
                ));
            }
        }
        conf.datastore = datastore(conf.datastore_type.as_ref(), conf.kubernetes.as_ref())?;
        Ok(conf)
    }

    /// Whether the pods live in a Kubernetes API server.
    pub fn kubernetes(&self) -> bool {
        matches!(self.datastore, Datastore::Kubernetes { .. })
    }

    /// Top-level keys neither this plugin nor CNI runtimes define (likely
    /// typos); the caller logs them.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.other
            .keys()
            .map(String::as_str)
            .filter(|k| !RUNTIME_KEYS.contains(k))
            .collect()
    }

    /// The node name: configured, else the hostname.
    pub fn node_name(&self) -> Result<String, CniError> {
        if let Some(n) = self.nodename.as_ref().filter(|n| !n.is_empty()) {
            return Ok(n.clone());
        }
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .find(|s| !s.is_empty())
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "no \"nodename\" configured and the hostname is unknown",
                    "",
                )
            })
    }

    /// How long ADD waits for Felix; `None`: not at all.
    pub fn policy_setup_timeout(&self) -> Option<Duration> {
        (self.policy_setup_timeout_ms > 0)
            .then(|| Duration::from_millis(self.policy_setup_timeout_ms))
    }

    /// Whether results carry an explicit IP `version` (before CNI 1.0).
    pub fn legacy_result(&self) -> bool {
        self.cni_version.starts_with("0.")
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// The pod's network namespace; may be empty for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
    pub path: Vec<PathBuf>,
}

fn bad_env(msg: String) -> CniError {
    CniError::new(code::INVALID_ENV, msg, "")
}

/// Parses `CNI_ARGS`: `K=V` pairs separated by `;`.
pub fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(bad_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE"))),
        }
    }
    Ok(out)
}

fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl CniEnv {
    /// Reads and checks the environment through `var` (for example
    /// `|k| std::env::var(k).ok()`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(bad_env(format!(
                    "CNI_COMMAND {other:?} is not ADD, DEL, CHECK or VERSION"
                )));
            }
            None => return Err(bad_env("CNI_COMMAND is not set".into())),
        };
        let path = get("CNI_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        if command == Command::Version {
            return Ok(CniEnv {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: BTreeMap::new(),
                path,
            });
        }
        let container_id =
            get("CNI_CONTAINERID").ok_or_else(|| bad_env("CNI_CONTAINERID is not set".into()))?;
        if !valid_container_id(&container_id) {
            return Err(bad_env(format!(
                "CNI_CONTAINERID {container_id:?} may only hold letters, digits, '_', '.' and '-'"
            )));
        }
        let netns = get("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(bad_env("CNI_NETNS is not set".into()));
        }
        let ifname = get("CNI_IFNAME").ok_or_else(|| bad_env("CNI_IFNAME is not set".into()))?;
        if !valid_ifname(&ifname) {
            return Err(bad_env(format!(
                "CNI_IFNAME {ifname:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
            )));
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The pod (`K8S_POD_NAMESPACE`, `K8S_POD_NAME` in `CNI_ARGS`), if given.
    pub fn pod(&self) -> Option<(&str, &str)> {
        let ns = self
            .args
            .get("K8S_POD_NAMESPACE")
            .filter(|s| !s.is_empty())?;
        let name = self.args.get("K8S_POD_NAME").filter(|s| !s.is_empty())?;
        Some((ns, name))
    }

    /// The pod, required (ADD and CHECK).
    pub fn required_pod(&self) -> Result<(&str, &str), CniError> {
        self.pod()
            .ok_or_else(|| bad_env("CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME".into()))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
