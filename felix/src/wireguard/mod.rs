//! Transparent encryption between nodes with WireGuard, as Calico does it
//! (`wireguardEnabled`).
//!
//! - Each node has a key pair; the private key stays on the node
//!   ([`key`]: a file, mode 0600, kept across restarts) and the public key
//!   goes on its Node resource ([`publish`]: the annotation
//!   `projectcalico.org/WireguardPublicKey`).
//! - Every Felix learns the other nodes' keys, addresses and pod blocks
//!   through Typha's stream; [`crate::routes::RouteCalc`] turns them into
//!   the device's peers (pure) and routes the blocks of each peer through
//!   the WireGuard interface, so pod traffic to other nodes leaves the node
//!   only as UDP to the peer's WireGuard port.
//! - [`device`] runs the interface: the kernel's WireGuard when the kernel
//!   has it, otherwise a userspace one over TUN (`boringtun`). Its MTU is
//!   the underlay's less 60 bytes (IPv4) or 80 (IPv6) unless
//!   `wireguardMTU` is set.
//! - Decrypted traffic reaches a pod through the pod's interface like any
//!   other, so the dataplane's policy applies to it unchanged. The
//!   interface's name must not start with a workload prefix (those are
//!   policed fail-closed as pods).
//!
//! It does not encrypt host-to-host traffic (`wireguardHostEncryptionEnabled`)
//! or IPv6 pod traffic, and in Kubernetes mode it does not write the Node
//! (Typha's node watcher owns it there).

pub mod device;
pub mod key;
pub mod plan;
pub mod publish;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::FelixConfig;
use crate::routes::{RouteCalc, RouteChange, Tunnel};
use device::{Device, DeviceError, DeviceSettings};
use key::KeyPair;

/// This node's WireGuard: its key, its device once started, and the
/// publisher's wake-up.
#[derive(Debug)]
pub struct Wireguard {
    interface: String,
    port: u16,
    mtu: u32,
    keepalive: u16,
    key_file: PathBuf,
    key: KeyPair,
    device: Option<Device>,
    publish: Arc<Notify>,
}

/// Why WireGuard cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum WireguardError {
    #[error(
        "wireguardInterfaceName {name:?} starts with the workload prefix {prefix:?}: it would be policed as a pod"
    )]
    WorkloadName { name: String, prefix: String },
    #[error(transparent)]
    Key(#[from] key::KeyError),
}

impl Wireguard {
    /// Reads (or creates) the key and checks the settings; nothing is
    /// created in the kernel yet.
    pub fn new(config: &FelixConfig, publish: Arc<Notify>) -> Result<Wireguard, WireguardError> {
        let interface = config.wireguard_interface_name.value.clone();
        if let Some(prefix) = config
            .interface_prefix
            .value
            .iter()
            .find(|p| interface.starts_with(p.as_str()))
        {
            return Err(WireguardError::WorkloadName {
                name: interface,
                prefix: prefix.clone(),
            });
        }
        let key_file = PathBuf::from(&config.wireguard_private_key_file.value);
        let key = key::load_or_create(&key_file)?;
        info!(public_key = %key.public_base64(), "WireGuard key pair");
        Ok(Wireguard {
            interface,
            port: config.wireguard_listening_port.value,
            mtu: config.wireguard_mtu.value,
            keepalive: u16::try_from(config.wireguard_keep_alive.value.as_secs())
                .unwrap_or(u16::MAX),
            key_file,
            key,
            device: None,
            publish,
        })
    }

    /// The public key as published.
    pub fn public_key(&self) -> String {
        self.key.public_base64()
    }

    /// What routing needs to know.
    pub fn tunnel(&self) -> Tunnel {
        Tunnel {
            interface: self.interface.clone(),
            port: self.port,
            keepalive: self.keepalive,
            public_key: *self.key.public(),
        }
    }

    /// Brings the device in line with `calc`: asks for the key to be
    /// published when the Node lacks it, starts the device once this
    /// node's address is known (for the MTU), and sets its peers. Returns
    /// the route changes starting the device causes.
    pub fn sync(&mut self, calc: &mut RouteCalc) -> Result<Vec<RouteChange>, DeviceError> {
        if !calc.own_key_published(&self.key.public_base64()) {
            self.publish.notify_one();
        }
        let mut changes = Vec::new();
        if self.device.is_none() {
            let Some(mtu) = self.device_mtu(calc) else {
                return Ok(changes);
            };
            let settings = DeviceSettings {
                name: self.interface.clone(),
                port: self.port,
                mtu,
                key_file: self.key_file.clone(),
            };
            let device = Device::start(&settings, &self.key)?;
            info!(device = %self.interface, mtu, port = self.port, kernel = device.is_kernel(), "WireGuard device up");
            self.device = Some(device);
            changes = calc.set_tunnel_up(true);
        }
        if let Some(device) = self.device.as_mut() {
            device.set_peers(&calc.peers())?;
        }
        Ok(changes)
    }

    /// The device's MTU, once it can be known.
    fn device_mtu(&self, calc: &RouteCalc) -> Option<u32> {
        if self.mtu != 0 {
            return Some(self.mtu);
        }
        let address = calc.own_address()?;
        let underlay = manul_netns::NetNs::from_path(std::path::Path::new("/proc/self/ns/net"))
            .and_then(|ns| {
                let name = manul_netns::interface_with_address(&ns, address)?;
                name.map(|n| manul_netns::link_mtu(&ns, &n)).transpose()
            });
        let underlay = match underlay {
            Ok(Some(mtu)) => mtu,
            Ok(None) => {
                warn!(%address, "no interface holds this node's address; taking an underlay MTU of 1500");
                1500
            }
            Err(e) => {
                warn!(%address, "cannot read the underlay's MTU ({e}); taking 1500");
                1500
            }
        };
        Some(plan::mtu(0, underlay, address.is_ipv6()))
    }
}
