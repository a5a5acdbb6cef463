//! The WireGuard device of this node, in Felix's own network namespace:
//! the kernel's when the kernel has WireGuard, otherwise a userspace
//! device over TUN (`boringtun`), run by threads of this process. Both are
//! configured with the same UAPI text ([`super::plan`]): the userspace
//! device over a socket pair that only this process holds (no socket file
//! another process could open), the kernel device through `wg`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use boringtun::device::{DeviceConfig, DeviceHandle};
use tracing::info;

use super::key::KeyPair;
use super::plan::{self, Key, Peer, PeerChange};

/// Why the device cannot be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create the userspace WireGuard device {name}: {reason}")]
    Create { name: String, reason: String },
    #[error("WireGuard device {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("WireGuard device {name} refused {what} (errno {errno})")]
    Refused {
        name: String,
        what: String,
        errno: i32,
    },
    #[error("WireGuard device {name}: {source}")]
    Link {
        name: String,
        #[source]
        source: Box<manul_netns::NetnsError>,
    },
    #[error("WireGuard device {name}: `wg` failed: {reason}")]
    Wg { name: String, reason: String },
}

/// How the device is run.
enum Backend {
    /// boringtun's device; its UAPI end.
    Userspace {
        handle: DeviceHandle,
        uapi: Option<BufReader<UnixStream>>,
    },
    /// The kernel's, configured with `wg`.
    Kernel,
}

/// A running device and the peers it was last given.
pub struct Device {
    name: String,
    backend: Backend,
    peers: BTreeMap<Key, Peer>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field(
                "backend",
                &match self.backend {
                    Backend::Userspace { .. } => "userspace",
                    Backend::Kernel => "kernel",
                },
            )
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// What the device is set up with.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub name: String,
    pub port: u16,
    pub mtu: u32,
    /// The key file (`wg` reads the private key from it).
    pub key_file: std::path::PathBuf,
}

fn current_ns(name: &str) -> Result<manul_netns::NetNs, DeviceError> {
    manul_netns::NetNs::from_path(Path::new("/proc/self/ns/net")).map_err(|source| {
        DeviceError::Link {
            name: name.to_string(),
            source: Box::new(source),
        }
    })
}

impl Device {
    /// Creates the device in this process's namespace with `key`, sets its
    /// MTU and brings it up. A device of that name left by an earlier run
    /// is removed first.
    pub fn start(settings: &DeviceSettings, key: &KeyPair) -> Result<Device, DeviceError> {
        let name = &settings.name;
        let link = |source| DeviceError::Link {
            name: name.clone(),
            source: Box::new(source),
        };
        let ns = current_ns(name)?;
        if manul_netns::link_exists(&ns, name).map_err(link)? {
            manul_netns::delete_link(&ns, name).map_err(link)?;
        }
        let backend = match manul_netns::create_wireguard(&ns, name) {
            Ok(()) => {
                info!(device = %name, "kernel WireGuard");
                wg(
                    name,
                    &[
                        "set",
                        name,
                        "listen-port",
                        &settings.port.to_string(),
                        "private-key",
                        &settings.key_file.to_string_lossy(),
                    ],
                )?;
                Backend::Kernel
            }
            Err(e) if e.errno() == Some(EOPNOTSUPP) => {
                info!(device = %name, "no WireGuard in this kernel: userspace WireGuard over TUN");
                Self::userspace(name, key, settings.port)?
            }
            Err(e) => return Err(link(e)),
        };
        manul_netns::set_mtu(&ns, name, settings.mtu).map_err(link)?;
        manul_netns::link_up(&ns, name).map_err(link)?;
        Ok(Device {
            name: name.clone(),
            backend,
            peers: BTreeMap::new(),
        })
    }

    fn userspace(name: &str, key: &KeyPair, port: u16) -> Result<Backend, DeviceError> {
        let (ours, theirs) = UnixStream::pair().map_err(|source| DeviceError::Io {
            name: name.to_string(),
            what: "create the UAPI socket pair",
            source,
        })?;
        let config = DeviceConfig {
            n_threads: 2,
            use_connected_socket: true,
            // One queue: a queue left attached would take a share of the
            // packets and never be read.
            use_multi_queue: false,
            // The device owns this end from now on.
            uapi_fd: theirs.into_raw_fd(),
        };
        let handle = DeviceHandle::new(name, config).map_err(|e| DeviceError::Create {
            name: name.to_string(),
            reason: format!("{e:?}"),
        })?;
        ours.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|source| DeviceError::Io {
                name: name.to_string(),
                what: "set the UAPI timeout",
                source,
            })?;
        let mut backend = Backend::Userspace {
            handle,
            uapi: Some(BufReader::new(ours)),
        };
        uapi(
            name,
            &mut backend,
            &plan::uapi_device(key.private(), port),
            "the private key and port",
        )?;
        Ok(backend)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is the kernel's device.
    pub fn is_kernel(&self) -> bool {
        matches!(self.backend, Backend::Kernel)
    }

    /// Brings the device's peers to `want`.
    pub fn set_peers(&mut self, want: &BTreeMap<Key, Peer>) -> Result<(), DeviceError> {
        for change in plan::diff(&self.peers, want) {
            if self.is_kernel() {
                self.wg_change(&change)?;
            } else {
                let what = match &change {
                    PeerChange::Remove(k) => format!("removing peer {}", super::key::encode(k)),
                    PeerChange::Add(k, _) => format!("adding peer {}", super::key::encode(k)),
                };
                uapi(
                    &self.name,
                    &mut self.backend,
                    &plan::uapi_peer(&change),
                    &what,
                )?;
            }
            match change {
                PeerChange::Remove(k) => {
                    self.peers.remove(&k);
                }
                PeerChange::Add(k, p) => {
                    self.peers.insert(k, p);
                }
            }
        }
        Ok(())
    }

    fn wg_change(&self, change: &PeerChange) -> Result<(), DeviceError> {
        match change {
            PeerChange::Remove(k) => wg(
                &self.name,
                &["set", &self.name, "peer", &super::key::encode(k), "remove"],
            ),
            PeerChange::Add(k, p) => {
                let ips: Vec<String> = p
                    .allowed_ips
                    .iter()
                    .map(|n| n.trunc().to_string())
                    .collect();
                wg(
                    &self.name,
                    &[
                        "set",
                        &self.name,
                        "peer",
                        &super::key::encode(k),
                        "endpoint",
                        &p.endpoint.to_string(),
                        "persistent-keepalive",
                        &p.keepalive.to_string(),
                        "allowed-ips",
                        &ips.join(","),
                    ],
                )
            }
        }
    }
}

/// Runs `wg` (wireguard-tools) on the kernel device.
fn wg(name: &str, args: &[&str]) -> Result<(), DeviceError> {
    let out = std::process::Command::new("wg")
        .args(args)
        .output()
        .map_err(|e| DeviceError::Wg {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DeviceError::Wg {
            name: name.to_string(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Drop for Device {
    /// Stops the userspace device and waits for its threads, so its TUN
    /// descriptors are closed (and the interface gone) before Felix
    /// executes itself again on a restart: they are not close-on-exec.
    fn drop(&mut self) {
        if let Backend::Userspace { handle, uapi } = &mut self.backend {
            // The device stops when its UAPI socket hangs up.
            drop(uapi.take());
            handle.wait();
        }
    }
}

/// "Operation not supported": the kernel's answer to a link kind it lacks.
const EOPNOTSUPP: i32 = 95;

/// Sends one UAPI request to the userspace device and checks its answer.
fn uapi(name: &str, backend: &mut Backend, request: &str, what: &str) -> Result<(), DeviceError> {
    let Backend::Userspace {
        uapi: Some(uapi), ..
    } = backend
    else {
        return Ok(());
    };
    let io = |what: &'static str| {
        move |source| DeviceError::Io {
            name: name.to_string(),
            what,
            source,
        }
    };
    uapi.get_mut()
        .write_all(request.as_bytes())
        .map_err(io("send a UAPI request"))?;
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        let n = uapi
            .read_line(&mut line)
            .map_err(io("read a UAPI answer"))?;
        if n == 0 || line == "\n" {
            break;
        }
        answer.push_str(&line);
    }
    match plan::uapi_errno(&answer) {
        Some(0) => Ok(()),
        errno => Err(DeviceError::Refused {
            name: name.to_string(),
            what: what.to_string(),
            errno: errno.unwrap_or(-1),
        }),
    }
}
