//! The Kubernetes side of the plugin (`datastore_type: kubernetes`): it
//! records the pod's addresses on the Pod, as Calico's plugin does in its
//! Kubernetes datastore mode, so the pod watcher can write the endpoint
//! without waiting for the kubelet's status update.
//!
//! ADD patches the annotations `cni.projectcalico.org/podIP`, `podIPs`
//! and `containerID` through the Pod's `status` subresource with a
//! strategic merge patch (what Calico sends; the subresource keeps the
//! plugin's rights to "patch pods/status"). DEL reads the Pod and, when the
//! annotations are this container's, sets `podIP` and `podIPs` to `""`
//! (Calico's "network down"), guarded by the Pod's `resourceVersion`; a
//! Pod that is gone or belongs to a newer container is left alone.
//!
//! The patch bodies are built without I/O ([`record_patch`],
//! [`clear_patch`]).

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use manul_model::convert::pod::{CONTAINER_ID_ANNOTATION, POD_IP_ANNOTATION, POD_IPS_ANNOTATION};
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::error::{CniError, code};

/// How many times DEL reads and patches again after a conflicting write.
const CLEAR_ATTEMPTS: u32 = 5;

/// The annotations' text for `ips`: each as a host network (`/32`,
/// `/128`), comma-separated, as Calico writes them.
fn ip_text(ips: &[IpAddr]) -> Vec<String> {
    ips.iter().map(|ip| IpNet::from(*ip).to_string()).collect()
}

/// The patch ADD sends: the pod's addresses and container.
pub fn record_patch(ips: &[IpAddr], container_id: &str) -> Value {
    let texts = ip_text(ips);
    json!({
        "metadata": {
            "annotations": {
                CONTAINER_ID_ANNOTATION: container_id,
                POD_IP_ANNOTATION: texts.first().cloned().unwrap_or_default(),
                POD_IPS_ANNOTATION: texts.join(","),
            }
        }
    })
}

/// The patch DEL sends: no addresses any more, only if the Pod is still at
/// `resource_version`.
pub fn clear_patch(resource_version: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {
                POD_IP_ANNOTATION: "",
                POD_IPS_ANNOTATION: "",
            }
        }
    })
}

/// What DEL did to the Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    /// The addresses were taken off the Pod.
    Cleared,
    /// The Pod is gone.
    Gone,
    /// The Pod's annotations name another container (a newer sandbox).
    OtherContainer,
    /// The Pod carries no addresses of this plugin.
    Nothing,
}

/// The Pod API of one namespace's pods, through one client.
#[derive(Clone)]
pub struct PodApi {
    client: Client,
}

impl std::fmt::Debug for PodApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodApi")
    }
}

fn api_error(what: String, e: &kube::Error) -> CniError {
    let code = match e {
        kube::Error::Api(s) if s.code == 404 => code::DATASTORE,
        kube::Error::Api(s) if s.code == 409 || s.code == 429 || s.code >= 500 => {
            code::TRY_AGAIN_LATER
        }
        kube::Error::Api(_) => code::DATASTORE,
        _ => code::TRY_AGAIN_LATER,
    };
    CniError::caused(code, what, e)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl PodApi {
    /// Through `client` (a test's mock service, or [`PodApi::connect`]).
    pub fn new(client: Client) -> PodApi {
        PodApi { client }
    }

    /// A client for the API server the kubeconfig at `path` names.
    pub async fn connect(path: &Path) -> Result<PodApi, CniError> {
        let invalid = |e: &(dyn std::error::Error + 'static)| {
            CniError::caused(
                code::INVALID_CONFIG,
                format!("\"kubernetes.kubeconfig\" {}", path.display()),
                e,
            )
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| invalid(&e))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| invalid(&e))?;
        let client = Client::try_from(config).map_err(|e| invalid(&e))?;
        Ok(PodApi::new(client))
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// ADD: records `ips` and `container_id` on pod `namespace/name`.
    pub async fn record(
        &self,
        namespace: &str,
        name: &str,
        ips: &[IpAddr],
        container_id: &str,
    ) -> Result<(), CniError> {
        let patch = record_patch(ips, container_id);
        self.pods(namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|e| {
                api_error(
                    format!("cannot record the addresses on pod {namespace}/{name}"),
                    &e,
                )
            })?;
        debug!(%namespace, pod = %name, "addresses recorded on the pod");
        Ok(())
    }

    /// DEL: takes this container's addresses off pod `namespace/name`.
    pub async fn clear(
        &self,
        namespace: &str,
        name: &str,
        container_id: &str,
    ) -> Result<Cleared, CniError> {
        let api = self.pods(namespace);
        let failed = |e: &kube::Error| {
            api_error(
                format!("cannot take the addresses off pod {namespace}/{name}"),
                e,
            )
        };
        for _ in 0..CLEAR_ATTEMPTS {
            let Some(pod) = api.get_opt(name).await.map_err(|e| failed(&e))? else {
                return Ok(Cleared::Gone);
            };
            let annotations = pod.metadata.annotations.clone().unwrap_or_default();
            let ours = annotations.get(CONTAINER_ID_ANNOTATION);
            if ours.is_some_and(|id| !id.is_empty() && id != container_id) {
                info!(%namespace, pod = %name, "the pod's addresses belong to another container; leaving them");
                return Ok(Cleared::OtherContainer);
            }
            let has = |k: &str| annotations.get(k).is_some_and(|v| !v.is_empty());
            if !has(POD_IP_ANNOTATION) && !has(POD_IPS_ANNOTATION) {
                return Ok(Cleared::Nothing);
            }
            let version = pod.metadata.resource_version.clone().unwrap_or_default();
            let patch = clear_patch(&version);
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => return Ok(Cleared::Cleared),
                Err(e) if is_status(&e, 404) => return Ok(Cleared::Gone),
                Err(e) if is_status(&e, 409) => {
                    debug!(%namespace, pod = %name, "the pod changed; reading it again");
                }
                Err(e) => return Err(failed(&e)),
            }
        }
        Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("cannot take the addresses off pod {namespace}/{name}"),
            format!("it changed under every one of {CLEAR_ATTEMPTS} attempts"),
        ))
    }
}

#[cfg(test)]
#[path = "pod_api_tests.rs"]
mod tests;
