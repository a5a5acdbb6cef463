//! Connect-time load balancing (Calico's `bpfConnectTimeLoadBalancing`):
//! `bpf/manul_ctlb.c`'s cgroup programs give a socket its service backend
//! when it connects (TCP, connected UDP) or sends a datagram (unconnected
//! UDP), and answer `getpeername` and `recvmsg` with the service address;
//! IPv4 sockets from the IPv4 service maps, IPv6 ones from the IPv6 maps
//! (`bpf/manul_ctlb6.h`).
//! They read the same frontend and backend maps as the TC programs, so a
//! service change is still map writes only.
//!
//! A socket connected to a backend keeps it; when the backend leaves its
//! list, [`ConnectTimeLb::reap`] finds the connected sockets that were
//! given it (`manul_ctlb_conn`, `manul_ctlb_conn6`) and destroys them with `bpf_sock_destroy`
//! from a TCP and a UDP socket iterator run in each network namespace
//! until all are gone: a connected UDP socket stuck on a DNS server that
//! moved gets an error (`ECONNABORTED`, and it is no longer connected) and
//! the application connects again, to a live backend.
//!
//! - `object.rs` (no I/O): the kfunc placeholder aimed at the kernel's
//!   `bpf_sock_destroy`;
//! - `maps.rs`: the programs' own maps, both families, and what the
//!   driver keeps in them;
//! - `cgroup.rs`: which cgroup the programs attach to;
//! - `netns.rs`: the namespaces a socket may live in, their cookies, and
//!   which are the pods'.
//!
//! The programs translate only the sockets of the network namespaces the
//! node serves (`manul_ctlb_netns`, by namespace cookie): the driver's own
//! (the node's: host-networked processes), written before the programs
//! are attached, and its pods' (the namespaces at the far end of its
//! workload interfaces), written by [`ConnectTimeLb::serve_pods`] when the
//! workload interfaces change. A process of another namespace that
//! shares the cgroup (a container with a network of its own that is no
//! pod of this node) is left to the packet path, as traffic from another
//! machine is: its connect to a node port takes the node-port path. An
//! empty map (before the first write, or after it was lost) translates
//! nothing: every service packet is then the TC programs' to translate,
//! as without connect-time load balancing.
//!
//! The programs are attached with pinned links
//! (`PIN_ROOT/NODE/links/ctlb_*`; other programs of the cgroup keep
//! running beside them) that outlive the process; a new run attaches its programs before it
//! removes the old links, so no connection goes untranslated meanwhile.

mod cgroup;
mod maps;
mod netns;
mod object;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, Iter};
use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;

use crate::abi;
use crate::error::BpfError;
use crate::loader::PinDirs;

use maps::Gone;
use maps::{CtlbMaps, node_addresses};

pub use cgroup::{MOUNT_POINT as CGROUP_MOUNT_POINT, cgroup2_mount};

/// The cgroup and iterator programs, compiled by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/manul_ctlb.o"));

/// The cgroup programs and the hooks they attach to (their link pins are
/// `ctlb_HOOK`).
const CGROUP_PROGRAMS: [(&str, &str); 8] = [
    ("manul_ctlb_connect4", "connect4"),
    ("manul_ctlb_sendmsg4", "sendmsg4"),
    ("manul_ctlb_recvmsg4", "recvmsg4"),
    ("manul_ctlb_getpeername4", "getpeername4"),
    ("manul_ctlb_connect6", "connect6"),
    ("manul_ctlb_sendmsg6", "sendmsg6"),
    ("manul_ctlb_recvmsg6", "recvmsg6"),
    ("manul_ctlb_getpeername6", "getpeername6"),
];

/// The program that forgets released sockets (`cgroup/sock_release`).
const RELEASE: (&str, &str) = ("manul_ctlb_release", "sock_release");

/// The socket iterators and their kernel iterator names.
const ITERATORS: [(&str, &str); 2] = [
    ("manul_ctlb_reap_tcp", "tcp"),
    ("manul_ctlb_reap_udp", "udp"),
];

/// How to run connect-time load balancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlbConfig {
    /// Translate UDP too (`Enabled`); otherwise TCP only (`TCP`).
    pub udp: bool,
    /// The cgroup (v2) the programs attach to; `None`: the root of the
    /// cgroup v2 hierarchy (mounted at [`CGROUP_MOUNT_POINT`] if the node
    /// has none), so that every process of the node gets it.
    pub cgroup: Option<PathBuf>,
}

/// What the programs counted since they were loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtlbCounters {
    /// Connects and datagrams given a backend.
    pub translated: u64,
    /// Refused: no backend, or a port the cluster IP does not have.
    pub rejected: u64,
    /// Sockets destroyed because their backend left its list.
    pub destroyed: u64,
}

/// The loaded programs and their maps.
pub struct ConnectTimeLb {
    ebpf: Ebpf,
    maps: CtlbMaps,
    counters: PerCpuArray<MapData, u64>,
    /// Whether the iterators loaded (the kernel has `bpf_sock_destroy`).
    reaping: bool,
    cgroup: PathBuf,
    /// The cookie of the driver's (the node's) network namespace.
    node_netns: u64,
    /// The workload interfaces (name, index) the pods' namespaces were
    /// last found for.
    served_for: Option<BTreeSet<(String, u32)>>,
}

impl std::fmt::Debug for ConnectTimeLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectTimeLb")
            .field("cgroup", &self.cgroup)
            .field("reaping", &self.reaping)
            .finish_non_exhaustive()
    }
}

fn pin_path(dirs: &PinDirs, hook: &str) -> PathBuf {
    dirs.links.join(format!("ctlb_{hook}"))
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

impl ConnectTimeLb {
    /// Loads the programs (their maps pinned beside the TC programs', the
    /// service maps adopted from them: load those first) and attaches the
    /// cgroup programs, replacing an earlier run's links. `sizes`: the
    /// service maps' sizes (its affinity maps take `affinity`; a pinned one
    /// of another size is created anew, see [`crate::resize`]).
    pub fn start(
        dirs: &PinDirs,
        config: &CtlbConfig,
        sizes: crate::driver::ServiceMapSizes,
    ) -> Result<Self, BpfError> {
        let cgroup = cgroup::resolve(config.cgroup.as_deref())?;
        let btf = Btf::from_sys_fs().ok();
        let kfunc = btf.as_ref().and_then(|b| {
            b.id_by_type_name_kind("bpf_sock_destroy", BtfKind::Func)
                .ok()
        });
        let (patched, replaced) = object::patch_kfunc(OBJECT, kfunc.unwrap_or(0));
        if replaced == 0 {
            return Err(BpfError::Config(
                "the connect-time object has no bpf_sock_destroy call to aim".into(),
            ));
        }
        let (buf, start) = object::aligned(&patched);
        let udp = u32::from(config.udp);
        // The service maps are the TC object's pins (adopted whatever
        // this declares); named all the same so that both agree.
        let sized = [
            ("manul_svc_fe", sizes.frontend),
            ("manul_svc_fe6", sizes.frontend),
            ("manul_svc_be", sizes.backend),
            ("manul_svc_be6", sizes.backend),
            ("manul_ctlb_aff", sizes.affinity),
            ("manul_ctlb_aff6", sizes.affinity),
        ];
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(&dirs.maps)
            .override_global("manul_ctlb_udp", &udp, true);
        for (name, n) in sized {
            loader.map_max_entries(name, n);
        }
        let aside = crate::resize::set_aside(&dirs.maps, &sized[4..])?;
        let mut ebpf = match loader.load(&buf[start..start + patched.len()]) {
            Ok(ebpf) => ebpf,
            Err(source) => {
                crate::resize::restore(aside);
                return Err(BpfError::Load {
                    pin_dir: dirs.maps.clone(),
                    source: Box::new(source),
                });
            }
        };
        crate::resize::copy_back(aside)?;
        for (name, _) in CGROUP_PROGRAMS {
            program(&mut ebpf, name)?
                .load()
                .map_err(|e| BpfError::program(name, "load (verifier)", e))?;
        }
        release_program(&mut ebpf)?
            .load()
            .map_err(|e| BpfError::program(RELEASE.0, "load (verifier)", e))?;
        let reaping = match (&btf, kfunc) {
            (Some(btf), Some(_)) => ITERATORS.iter().all(|(name, kind)| {
                let loaded = ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut Iter>::try_from(p).ok())
                    .map(|p| p.load(kind, btf));
                match loaded {
                    Some(Ok(())) => true,
                    Some(Err(e)) => {
                        tracing::warn!(program = name, error = %e, "socket iterator not loaded: sockets of removed backends are not destroyed");
                        false
                    }
                    None => false,
                }
            }),
            _ => {
                tracing::warn!("the kernel has no bpf_sock_destroy: sockets of removed backends are not destroyed");
                false
            }
        };
        let node_netns = netns::cookie_here().map_err(|e| BpfError::CtlbNamespaces {
            what: "read the node's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+)",
            source: Box::new(e),
        })?;
        let mut lb = Self {
            maps: CtlbMaps::take(&mut ebpf)?,
            counters: ebpf
                .take_map("manul_ctlb_cnt")
                .ok_or(BpfError::Missing("manul_ctlb_cnt"))?
                .try_into()
                .map_err(|e| BpfError::map("manul_ctlb_cnt", "unexpected map type", e))?,
            ebpf,
            reaping,
            cgroup,
            node_netns,
            served_for: None,
        };
        // Host processes are served from the first translated connect;
        // pods' namespaces an earlier run wrote stay until the first
        // serve_pods.
        lb.maps.serve(node_netns, abi::MANUL_CTLB_NETNS_NODE)?;
        lb.attach(dirs)?;
        tracing::info!(
            cgroup = %lb.cgroup.display(),
            udp = config.udp,
            destroys_sockets = lb.reaping,
            "connect-time load balancing attached"
        );
        Ok(lb)
    }

    /// Removes the links an earlier run pinned (connect-time load
    /// balancing turned off): the kernel detaches them.
    pub fn remove_links(dirs: &PinDirs) {
        for (_, hook) in CGROUP_PROGRAMS.iter().chain([&RELEASE]) {
            crate::loader::unpin(&pin_path(dirs, hook));
        }
    }

    fn attach(&mut self, dirs: &PinDirs) -> Result<(), BpfError> {
        let cg = File::open(&self.cgroup).map_err(|source| BpfError::Io {
            path: self.cgroup.clone(),
            source,
        })?;
        let at = format!("attach to {}", self.cgroup.display());
        // A link (kernel 5.7+) always lets other programs attach too; its
        // flags must be 0 (`Single`).
        let mode = CgroupAttachMode::Single;
        for (name, hook) in CGROUP_PROGRAMS {
            let path = pin_path(dirs, hook);
            // An earlier run's link keeps translating until ours is in.
            let old = take_pin(&path);
            let prog = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&cg, mode)
                .map_err(|e| BpfError::program(name, at.clone(), e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| BpfError::program(name, "take the link", e))?;
            pin(FdLink::try_from(link), &path)?;
            drop(old);
        }
        let (name, hook) = RELEASE;
        let path = pin_path(dirs, hook);
        let old = take_pin(&path);
        let prog = release_program(&mut self.ebpf)?;
        let id = prog
            .attach(&cg, mode)
            .map_err(|e| BpfError::program(name, at.clone(), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| BpfError::program(name, "take the link", e))?;
        pin(FdLink::try_from(link), &path)?;
        drop(old);
        Ok(())
    }

    /// Makes `manul_ctlb_local` and `manul_ctlb_local6` (where node ports
    /// are reached) hold the calling thread's namespace's addresses but
    /// loopback ones.
    pub fn set_local_addresses(&mut self) -> Result<(), BpfError> {
        let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| {
                        let a = a.address?;
                        a.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (v4, v6) = node_addresses(addrs);
        self.maps.set_local(&v4, &v6)
    }

    /// Makes the namespaces served the node's own and its pods': those at
    /// the far end of `workloads` (the node's workload interfaces that
    /// exist, name and index), when these changed since the last call.
    /// On an error the namespaces served stay as they were (a pod's not
    /// yet served is left to the packet path) and the next call looks
    /// again.
    pub fn serve_pods(&mut self, workloads: BTreeSet<(String, u32)>) -> Result<(), BpfError> {
        if self.served_for.as_ref() == Some(&workloads) {
            return Ok(());
        }
        let names: BTreeSet<String> = workloads.iter().map(|(n, _)| n.clone()).collect();
        let pods = netns::pod_cookies(&names).map_err(|e| BpfError::CtlbNamespaces {
            what: "find the pods' network namespaces",
            source: Box::new(e),
        })?;
        let mut want = BTreeMap::from([(self.node_netns, abi::MANUL_CTLB_NETNS_NODE)]);
        for cookie in pods {
            want.entry(cookie).or_insert(abi::MANUL_CTLB_NETNS_POD);
        }
        self.maps.set_served(&want)?;
        tracing::debug!(
            workload_interfaces = workloads.len(),
            pod_namespaces = want.len() - 1,
            "connect-time load balancing serves the node's and its pods' namespaces"
        );
        self.served_for = Some(workloads);
        Ok(())
    }

    /// After backends left their lists (`gone`: list id → backends):
    /// forgets the namespaces' affinity to them, and destroys the
    /// connected sockets (of either family) that were given them, visiting
    /// namespaces until none is left. Returns how many sockets were
    /// destroyed.
    pub fn reap(&mut self, gone: &Gone) -> usize {
        if gone.is_empty() {
            return 0;
        }
        self.maps.forget_affinity(gone);
        // Connected sockets (live ones: released ones are gone from the
        // maps) whose backend left.
        let listed = if self.reaping {
            self.maps.list_victims(gone)
        } else {
            0
        };
        let destroyed = if listed > 0 { self.sweep(listed) } else { 0 };
        self.maps.forget_sockets(gone);
        destroyed
    }

    /// Runs the iterators in each candidate namespace until the kill list
    /// is empty, then clears what is left (sockets closed meanwhile).
    fn sweep(&mut self, listed: usize) -> usize {
        let before = self.counters().destroyed;
        let paths = netns::candidates();
        let maps = &self.maps;
        let ebpf = &mut self.ebpf;
        let visited = netns::visit_each(&paths, || {
            for (name, _) in ITERATORS {
                if let Err(e) = run_iterator(ebpf, name) {
                    tracing::warn!(program = name, error = %e, "socket iterator failed");
                }
            }
            maps.victims_left()
        });
        let left = self.maps.clear_victims();
        let destroyed = self.counters().destroyed.saturating_sub(before);
        tracing::debug!(
            listed,
            destroyed,
            not_found = left,
            namespaces = visited,
            "sockets of removed backends destroyed"
        );
        usize::try_from(destroyed).unwrap_or(usize::MAX)
    }

    /// What the programs counted (summed over CPUs).
    pub fn counters(&self) -> CtlbCounters {
        let read = |i: u32| {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        CtlbCounters {
            translated: read(abi::MANUL_CTLB_CNT_TRANSLATED),
            rejected: read(abi::MANUL_CTLB_CNT_REJECTED),
            destroyed: read(abi::MANUL_CTLB_CNT_DESTROYED),
        }
    }
}

/// An earlier run's link at `path`, held open while its pin is removed
/// (it keeps working until dropped).
fn take_pin(path: &std::path::Path) -> Option<PinnedLink> {
    let old = PinnedLink::from_pin(path).ok();
    if old.is_some() {
        crate::loader::unpin(path);
    }
    old
}

/// Pins a new link at `path`.
fn pin(
    link: Result<FdLink, aya::programs::links::LinkError>,
    path: &std::path::Path,
) -> Result<(), BpfError> {
    let link = link.map_err(|e| BpfError::Link {
        path: path.to_path_buf(),
        what: "not an fd link",
        source: boxed(e),
    })?;
    link.pin(path).map_err(|e| BpfError::Link {
        path: path.to_path_buf(),
        what: "pin",
        source: boxed(e),
    })?;
    Ok(())
}

fn release_program(ebpf: &mut Ebpf) -> Result<&mut CgroupSock, BpfError> {
    let name = RELEASE.0;
    ebpf.program_mut(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::program(name, "not a cgroup socket program", e))
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, BpfError> {
    ebpf.program_mut(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::program(name, "not a cgroup socket-address program", e))
}

/// Runs one socket iterator over the calling thread's namespace: a link,
/// an iterator file read to its end (the program runs per socket), both
/// dropped.
fn run_iterator(ebpf: &mut Ebpf, name: &'static str) -> Result<(), BpfError> {
    let prog: &mut Iter = ebpf
        .program_mut(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::program(name, "not an iterator", e))?;
    let id = prog
        .attach()
        .map_err(|e| BpfError::program(name, "attach", e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| BpfError::program(name, "take the link", e))?;
    let mut file = link.into_file().map_err(|e| BpfError::Link {
        path: PathBuf::from(name),
        what: "create the iterator",
        source: boxed(e),
    })?;
    let mut sink = Vec::new();
    file.read_to_end(&mut sink).map_err(|source| BpfError::Io {
        path: PathBuf::from(name),
        source,
    })?;
    Ok(())
}
