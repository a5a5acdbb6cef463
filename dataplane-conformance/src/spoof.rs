//! Source spoofing: a pod sending with another pod's address as source must
//! not be judged as that pod. The destination's policy allows only the
//! impersonated pod; the spoofed datagram must not arrive, while the real
//! pod's does (so the check can see arrivals at all).

use std::net::{IpAddr, SocketAddr};

use crate::ConformanceError;
use crate::topology::{DENY_WAIT, Topology};

/// The UDP port the spoofed datagrams go to (no pod server uses it).
pub const SINK_PORT: u16 = 5400;

/// api admits UDP to [`SINK_PORT`] from frontend only.
pub const FRONTEND_ONLY: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: frontend-to-api, namespace: production}
spec:
  selector: app == 'api'
  ingress:
  - action: Allow
    protocol: UDP
    source: {selector: app == 'frontend'}
    destination: {ports: [5400]}
"#;

/// `(sender, claimed source pod, destination, expected to arrive)`.
pub const EXPECT: &[(&str, &str, &str, bool)] = &[
    (
        "production/frontend",
        "production/frontend",
        "production/api",
        true,
    ),
    (
        "production/other",
        "production/frontend",
        "production/api",
        false,
    ),
];

/// Sends each datagram of [`EXPECT`]; the mismatches, described.
pub fn check(topo: &Topology) -> Result<Vec<String>, ConformanceError> {
    let mut failures = Vec::new();
    for (index, &(sender, claimed, to, expected)) in EXPECT.iter().enumerate() {
        let (from, as_pod, to_pod) = (topo.pod(sender)?, topo.pod(claimed)?, topo.pod(to)?);
        let port = 41000 + u16::try_from(index).unwrap_or(0);
        let src = SocketAddr::new(IpAddr::V4(as_pod.ip), port);
        let dst = SocketAddr::new(IpAddr::V4(to_pod.ip), SINK_PORT);
        let arrived =
            manul_netns::spoofed_udp_arrives(&from.netns, src, &to_pod.netns, dst, DENY_WAIT)
                .map_err(|e| {
                    ConformanceError::Setup(format!("spoofed datagram {sender} as {claimed}: {e}"))
                })?;
        if arrived != expected {
            failures.push(format!(
                "[source spoofing] {sender} sending as {claimed} to {to}: expected {}, the datagram {}",
                if expected { "arrival" } else { "a drop" },
                if arrived { "arrived" } else { "was dropped" }
            ));
        }
    }
    Ok(failures)
}
