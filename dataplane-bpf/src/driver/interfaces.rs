//! Attaching both programs to interfaces: the endpoints' interfaces, every
//! workload-prefixed one (which drops until its endpoint is programmed),
//! and the links an earlier run pinned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{BpfDriver, is_workload_interface};
use crate::error::BpfError;
use crate::loader::{self, Hook};

impl BpfDriver {
    /// Replaces the program in every link an earlier run pinned whose
    /// interface still exists (atomically: the interface is never without a
    /// program), so that the tables it finds keep being enforced by this
    /// run's programs.
    pub(super) fn adopt_links(&mut self) {
        let names = interfaces();
        for (ifindex, _, path) in self.dirs.pinned_links() {
            let Some(name) = names.get(&ifindex) else {
                loader::unpin(&path);
                continue;
            };
            if self.attached.contains(&ifindex) {
                continue;
            }
            if let Err(e) = self.attach(name.clone(), ifindex) {
                tracing::warn!(interface = %name, error = %e, "cannot adopt a pinned link");
            }
        }
    }

    pub(super) fn attach(&mut self, interface: String, ifindex: u32) -> Result<(), BpfError> {
        if self.attached.contains(&ifindex) {
            return Ok(());
        }
        for hook in Hook::BOTH {
            loader::attach(&mut self.programs, &self.dirs, &interface, ifindex, hook)?;
        }
        self.attached.insert(ifindex);
        Ok(())
    }

    pub(super) fn detach(&mut self, ifindex: u32) {
        for hook in Hook::BOTH {
            loader::unpin(&self.dirs.link(ifindex, hook));
        }
        self.attached.remove(&ifindex);
    }

    /// After a batch: attaches to its endpoints' interfaces, detaches from
    /// those it says, then attaches to new workload interfaces.
    pub(super) fn settle_attachments(
        &mut self,
        attach: &[(String, u32)],
        detach: &[u32],
    ) -> Vec<BpfError> {
        let mut errors = Vec::new();
        for (name, ix) in attach {
            if let Err(e) = self.attach(name.clone(), *ix) {
                errors.push(e);
            }
        }
        for ix in detach {
            self.detach(*ix);
        }
        errors.extend(self.attach_workload_interfaces());
        errors.extend(self.sync_service_interfaces());
        errors
    }

    /// Attaches to every workload-prefixed interface not attached yet: with
    /// no endpoint entry, the programs drop its traffic (fail closed).
    /// Felix may call this when it sees a new interface.
    pub fn attach_workload_interfaces(&mut self) -> Vec<BpfError> {
        if self.config.workload_prefixes.is_empty() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (ix, name) in interfaces() {
            if is_workload_interface(&self.config.workload_prefixes, &name)
                && !self.attached.contains(&ix)
                && let Err(e) = self.attach(name, ix)
            {
                errors.push(e);
            }
        }
        errors
    }

    /// The host interfaces the programs carry for service NAT only (node
    /// ports, external and load-balancer addresses reached from outside
    /// the node): while a service has such a frontend, every interface
    /// but loopback, the workload-prefixed ones and those a workload
    /// endpoint names. On them the programs
    /// translate service traffic and pass everything else untouched; an
    /// interface with an endpoint entry is judged by it as before. When no
    /// service needs them, the entries go and the links attached only for
    /// them are removed.
    pub(super) fn sync_service_interfaces(&mut self) -> Vec<BpfError> {
        let needed = self.desired.state().services.values().any(|s| {
            !s.external_ips.is_empty()
                || !s.load_balancer_ips.is_empty()
                || s.ports.iter().any(|p| p.node_port.is_some())
        });
        let state = self.desired.state();
        let want: BTreeSet<u32> = if needed {
            interfaces()
                .into_iter()
                .filter(|(_, name)| {
                    !super::host_svc::is_own_or_loopback(name)
                        && !is_workload_interface(&self.config.workload_prefixes, name)
                        && !state
                            .workload_endpoints
                            .values()
                            .any(|ep| &ep.interface_name == name)
                })
                .map(|(ix, _)| ix)
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut errors = Vec::new();
        // Entries before links (a link without an entry drops), links
        // removed before entries.
        let both: BTreeSet<u32> = want.union(&self.service_only).copied().collect();
        if let Err(e) = self.services.set_interfaces(&both) {
            errors.push(e);
            return errors;
        }
        let names = interfaces();
        for ix in &want {
            if let Some(name) = names.get(ix)
                && let Err(e) = self.attach(name.clone(), *ix)
            {
                errors.push(e);
            }
        }
        let gone: Vec<u32> = self
            .service_only
            .iter()
            .filter(|ix| {
                // Not one the programs stay on for other reasons: an
                // endpoint's, or a workload-prefixed one (which drops).
                !want.contains(ix)
                    && self.maps.ep.get(ix, 0).is_err()
                    && !names
                        .get(ix)
                        .is_some_and(|n| is_workload_interface(&self.config.workload_prefixes, n))
            })
            .copied()
            .collect();
        for ix in gone {
            self.detach(ix);
        }
        if let Err(e) = self.services.set_interfaces(&want) {
            errors.push(e);
        }
        self.service_only = want;
        errors
    }

    /// After InSync: removes the links an earlier run pinned that this one
    /// did not attach again.
    pub(super) fn unpin_stale_links(&mut self) {
        for (ix, _, path) in self.dirs.pinned_links() {
            if !self.attached.contains(&ix) {
                loader::unpin(&path);
            }
        }
    }
}

/// The interfaces of the calling thread's network namespace.
fn interfaces() -> HashMap<u32, String> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .filter_map(|i| Some((i.index(), i.name().to_str().ok()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The same, by name.
pub(super) fn by_name() -> BTreeMap<String, u32> {
    interfaces()
        .into_iter()
        .map(|(ix, name)| (name, ix))
        .collect()
}
