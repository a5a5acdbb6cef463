//! The operator's `Installation` as FelixConfiguration settings: what
//! Calico's operator sets for Felix from it. Only
//! `spec.calicoNetwork.linuxDataplane` reaches Felix: `BPF` turns
//! `bpfEnabled` on, `Iptables` and `Nftables` turn it off (Manul's
//! non-eBPF dataplane is nftables); `VPP` is not a dataplane Manul has,
//! so it sets nothing and says so.
//!
//! Only the Installation named `default` counts, as for the operator.

use crate::operator::{InstallationSpec, LinuxDataplane};
use crate::v3::FelixConfigurationSpec;

/// The name of the Installation the operator (and Felix) reads.
pub const INSTALLATION_NAME: &str = "default";

/// The settings `spec` gives Felix, and a warning for a value it cannot
/// act on.
pub fn felix_settings(spec: &InstallationSpec) -> (FelixConfigurationSpec, Option<String>) {
    let dataplane = spec.calico_network.as_ref().and_then(|n| n.linux_dataplane);
    let mut out = FelixConfigurationSpec::default();
    let warning = match dataplane {
        None => None,
        Some(LinuxDataplane::Bpf) => {
            out.bpf_enabled = Some(true);
            None
        }
        Some(LinuxDataplane::Iptables | LinuxDataplane::Nftables) => {
            out.bpf_enabled = Some(false);
            None
        }
        Some(LinuxDataplane::Vpp) => Some(
            "spec.calicoNetwork.linuxDataplane: VPP is not a dataplane Manul has; \
             FelixConfiguration `bpfEnabled` decides"
                .to_string(),
        ),
    };
    (out, warning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::CalicoNetworkSpec;

    fn with(dataplane: Option<LinuxDataplane>) -> InstallationSpec {
        InstallationSpec {
            calico_network: Some(CalicoNetworkSpec {
                linux_dataplane: dataplane,
                ..CalicoNetworkSpec::default()
            }),
            ..InstallationSpec::default()
        }
    }

    #[test]
    fn linux_dataplane_sets_bpf_enabled() {
        let cases = [
            (Some(LinuxDataplane::Bpf), Some(true), false),
            (Some(LinuxDataplane::Iptables), Some(false), false),
            (Some(LinuxDataplane::Nftables), Some(false), false),
            (Some(LinuxDataplane::Vpp), None, true),
            (None, None, false),
        ];
        for (dataplane, bpf, warns) in cases {
            let (spec, warning) = felix_settings(&with(dataplane));
            assert_eq!(spec.bpf_enabled, bpf, "{dataplane:?}");
            assert_eq!(warning.is_some(), warns, "{dataplane:?}");
            assert_eq!(
                FelixConfigurationSpec {
                    bpf_enabled: None,
                    ..spec
                },
                FelixConfigurationSpec::default(),
                "only bpfEnabled is set"
            );
        }
        let (spec, warning) = felix_settings(&InstallationSpec::default());
        assert_eq!((spec.bpf_enabled, warning), (None, None));
    }
}
