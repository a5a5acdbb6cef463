//! The JSON this plugin prints on success: the ADD result (CNI 1.0, or the
//! 0.3/0.4 form with an IP `version`) and the VERSION answer.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::SUPPORTED_VERSIONS;

/// An interface the plugin created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The namespace it lives in; absent for the host side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned to one of the interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    /// "4" or "6", only in pre-1.0 results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: usize,
}

/// A route in the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteConfig {
    pub dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The ADD (and CHECK-less) result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteConfig>,
    pub dns: serde_json::Map<String, serde_json::Value>,
}

/// The VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionResult {
    pub fn new(cni_version: &str) -> VersionResult {
        VersionResult {
            cni_version: cni_version.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What ADD reports for a Calico-style pod: the host veth, the pod's
/// interface (in `sandbox`) with `ip/32` (or `/128`) and a default route
/// through the link-local `gateway`.
#[allow(clippy::too_many_arguments)]
pub fn pod_result(
    cni_version: &str,
    legacy: bool,
    host: (&str, [u8; 6]),
    pod: (&str, [u8; 6]),
    sandbox: &str,
    ip: IpAddr,
    gateway: IpAddr,
) -> CniResult {
    let (version, default) = match ip {
        IpAddr::V4(_) => ("4", IpNet::V4(ipnet::Ipv4Net::default())),
        IpAddr::V6(_) => ("6", IpNet::V6(ipnet::Ipv6Net::default())),
    };
    CniResult {
        cni_version: cni_version.to_string(),
        interfaces: vec![
            Interface {
                name: host.0.to_string(),
                mac: format_mac(host.1),
                sandbox: None,
            },
            Interface {
                name: pod.0.to_string(),
                mac: format_mac(pod.1),
                sandbox: Some(sandbox.to_string()),
            },
        ],
        ips: vec![IpConfig {
            version: legacy.then(|| version.to_string()),
            address: IpNet::from(ip),
            gateway: Some(gateway),
            interface: 1,
        }],
        routes: vec![RouteConfig {
            dst: default,
            gw: Some(gateway),
        }],
        dns: serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn add_result_has_interfaces_ips_and_routes() {
        let r = pod_result(
            "1.0.0",
            false,
            ("mnl0123456789ab", [0xee; 6]),
            ("eth0", [2, 0, 0, 0, 0, 1]),
            "/var/run/netns/pod",
            "10.65.0.1".parse().unwrap(),
            "169.254.1.1".parse().unwrap(),
        );
        let v = serde_json::to_value(&r).unwrap();
        let want = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "mnl0123456789ab", "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [{"address": "10.65.0.1/32", "gateway": "169.254.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {}
        });
        assert_eq!(v, want);
    }

    #[test]
    fn legacy_results_carry_the_ip_version() {
        let r = pod_result(
            "0.3.1",
            true,
            ("h", [0; 6]),
            ("eth0", [0; 6]),
            "/x",
            "10.65.0.1".parse().unwrap(),
            "169.254.1.1".parse().unwrap(),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["cniVersion"], "0.3.1");
    }

    #[test]
    fn version_lists_what_is_supported() {
        let v = serde_json::to_value(VersionResult::new("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
        );
    }
}
