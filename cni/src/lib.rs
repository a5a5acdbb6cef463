//! The Manul CNI plugin (CNI spec 1.0; 0.3.x and 0.4.0 results too):
//! addresses from the node's IPAM blocks in the datastore, a Calico-style
//! veth pair and routes, the pod's endpoint, and an optional wait until
//! Felix reports the endpoint programmed. With Manul's own datastore the
//! plugin writes the WorkloadEndpoint to Typha; in Kubernetes mode
//! (`datastore_type: kubernetes`) it records the pod's addresses on the
//! Pod instead and Typha's pod watcher writes the endpoint.
//!
//! - [`config`]: the network configuration (stdin) and `CNI_*` environment.
//! - [`pod_api`]: the Pod's address annotations through the API server.
//! - [`plugin`]: ADD (undoing its earlier steps when a later one fails),
//!   DEL (idempotent), and CHECK ([`check`]).
//! - [`endpoint`]: the WorkloadEndpoint built from the stored Pod (no I/O).
//! - [`status`]: polling Felix's endpoint status files.
//! - [`result`], [`error`]: the JSON printed on stdout.
//!
//! It refuses to program policy itself (Felix does; the plugin only waits
//! for it when asked), to do IPAM other than the datastore's (an `ipam`
//! section naming another plugin is an error), to invent a pod the
//! datastore does not have, to write a WorkloadEndpoint in Kubernetes mode
//! (the pod watcher owns them there), and to touch any interface but the
//! pod's veth.

pub mod check;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod plugin;
pub mod pod_api;
pub mod result;
pub mod status;
pub mod tls;

pub use config::{CniEnv, Command, Datastore, NetConf};
pub use error::{CniError, code};
pub use plugin::Plugin;

/// The VERSION answer, in the version stdin asks for (when supported).
pub fn version(stdin: &[u8]) -> String {
    let answer = result::VersionResult::new(&config::version_of(stdin));
    serde_json::to_string(&answer).unwrap_or_default()
}

/// Runs ADD, DEL or CHECK; returns what to print on stdout (ADD's result).
pub async fn run(plugin: &Plugin) -> Result<Option<String>, CniError> {
    match plugin.env.command {
        Command::Add => {
            let result = plugin.add().await?;
            serde_json::to_string(&result)
                .map(Some)
                .map_err(|e| CniError::caused(code::IO_FAILURE, "cannot encode the result", &e))
        }
        Command::Del => plugin.del().await.map(|()| None),
        Command::Check => plugin.check().await.map(|()| None),
        Command::Version => Ok(Some(version(
            format!("{{\"cniVersion\":\"{}\"}}", plugin.conf.cni_version).as_bytes(),
        ))),
    }
}
