//! What the local cluster's kernel tests share: the `production` pods
//! they run, the policy they enforce, and a child process stopped when a
//! test ends, however it ends. Each test file uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use manul_local_cluster::PodSpec;
use manul_local_cluster::procs::stop_child;

/// A pod `name` in namespace `production` on `node`, labelled
/// `app=name`, serving TCP 8080 named `http`.
pub fn pod(name: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: "production".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        node,
        tcp_ports: vec![(8080, Some("http".into()))],
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// frontend may reach api on its `http` port; api is isolated otherwise.
pub const FRONTEND_TO_API: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: frontend-to-api, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'frontend'}
    destination: {ports: [http]}
";

/// Stops its child process when dropped.
pub struct Stop(pub Child);

impl Drop for Stop {
    fn drop(&mut self) {
        stop_child(&mut self.0, Duration::from_secs(5));
    }
}
