//! Loading the programs and attaching them: bpffs, the per-node pin
//! directories, TCX links pinned so that they outlive the process, and the
//! programs pinned too, so that a restart adopts them instead of running
//! the verifier again.

use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, ProgramArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use sha2::{Digest, Sha256};

use crate::error::BpfError;

/// The kernel programs, compiled by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/manul_tc.o"));

const BPFFS: &str = "/sys/fs/bpf";

/// Which TC hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Packets arriving on the interface (from the pod, for a workload).
    Ingress,
    /// Packets leaving through the interface (to the pod, for a workload).
    Egress,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    pub fn index(self) -> usize {
        match self {
            Hook::Ingress => 0,
            Hook::Egress => 1,
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Hook::Ingress => "manul_ingress",
            Hook::Egress => "manul_egress",
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// Mounts bpffs at `/sys/fs/bpf` when `pin_root` is under it and it is not
/// mounted yet (as Calico does).
pub fn ensure_bpffs(pin_root: &Path) -> Result<(), BpfError> {
    if !pin_root.starts_with(BPFFS) {
        return Ok(());
    }
    let mounted = nix::sys::statfs::statfs(BPFFS)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).map_err(|source| BpfError::Io {
        path: BPFFS.into(),
        source,
    })?;
    nix::mount::mount(
        Some("bpffs"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| BpfError::Mount {
        path: BPFFS.into(),
        source,
    })
}

/// The per-node pin directories.
#[derive(Debug, Clone)]
pub struct PinDirs {
    pub node: PathBuf,
    pub maps: PathBuf,
    pub links: PathBuf,
    /// The loaded programs, pinned under a name carrying the digest of
    /// what they were loaded from (see [`load`]).
    pub programs: PathBuf,
}

impl PinDirs {
    pub fn create(pin_root: &Path, node: &str) -> Result<Self, BpfError> {
        if node.is_empty() || node.contains('/') || node == "." || node == ".." {
            return Err(BpfError::Config(format!(
                "node name {node:?} cannot name a pin directory"
            )));
        }
        let node_dir = pin_root.join(node);
        let dirs = Self {
            maps: node_dir.join("maps"),
            links: node_dir.join("links"),
            programs: node_dir.join("programs"),
            node: node_dir,
        };
        for path in [&dirs.maps, &dirs.links, &dirs.programs] {
            std::fs::create_dir_all(path).map_err(|source| BpfError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(dirs)
    }

    /// Where the link of one hook of one interface is pinned.
    pub fn link(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.links.join(format!("{ifindex}_{}", hook.label()))
    }

    /// Pinned links: (ifindex, hook, path).
    pub fn pinned_links(&self) -> Vec<(u32, Hook, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.links) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (index, hook) = name.split_once('_')?;
                let hook = match hook {
                    "ingress" => Hook::Ingress,
                    "egress" => Hook::Egress,
                    _ => return None,
                };
                Some((index.parse().ok()?, hook, e.path()))
            })
            .collect()
    }
}

/// Both programs, loaded in the kernel.
#[derive(Debug)]
pub struct Programs {
    ingress: SchedClassifier,
    egress: SchedClassifier,
    /// Whether the programs were an earlier run's, adopted from their pins
    /// (no verifier pass).
    pub adopted: bool,
}

impl Programs {
    pub fn get(&mut self, hook: Hook) -> &mut SchedClassifier {
        match hook {
            Hook::Ingress => &mut self.ingress,
            Hook::Egress => &mut self.egress,
        }
    }
}

/// Loads the object with its maps pinned (or adopted) in `dirs.maps`, then
/// the programs: the pinned ones of an earlier run when they were loaded
/// from the same object with the same settings (their pin names carry the
/// digest of both) and use exactly the maps pinned now; otherwise both
/// through the verifier, then pinned under the new digest (other digests'
/// pins are removed; the kernel frees such a program once no link holds
/// it). `sizes`: each sized map and its size ([`crate::BpfConfig::map_sizes`]);
/// a pinned map of another size is created anew at it, its entries copied
/// over ([`crate::resize`]).
pub fn load(
    dirs: &PinDirs,
    sizes: &[(&'static str, u32)],
    no_ct_create: bool,
) -> Result<(Ebpf, Programs, Map), BpfError> {
    let flag: u32 = u32::from(no_ct_create);
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(&dirs.maps)
        .override_global("manul_no_ct_create", &flag, true);
    for (name, n) in sizes {
        loader.map_max_entries(name, *n);
    }
    let aside = crate::resize::set_aside(&dirs.maps, sizes)?;
    let mut ebpf = match loader.load(OBJECT) {
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
    let digest = digest(sizes, no_ct_create);
    match adopt(dirs, &ebpf, &digest) {
        Ok((programs, events)) => {
            link_peer_program(&mut ebpf, &programs)?;
            return Ok((ebpf, programs, events));
        }
        Err(why) => tracing::info!(%why, "loading the programs (verifier)"),
    }
    load_programs(&mut ebpf)?;
    let programs = pin_programs(dirs, &mut ebpf, &digest)?;
    link_peer_program(&mut ebpf, &programs)?;
    let events = ebpf
        .take_map("manul_events")
        .ok_or(BpfError::Missing("manul_events"))?;
    Ok((ebpf, programs, events))
}

/// Names the egress program to the ingress program's tail call
/// (`manul_peer_prog[0]`, pinned with the other maps): a packet between two
/// workloads of this node is judged by the destination's egress logic and
/// delivered into its pod (`bpf/manul_peer.h`). Written after every load
/// or adoption, so the entry is always the egress program in use.
fn link_peer_program(ebpf: &mut Ebpf, programs: &Programs) -> Result<(), BpfError> {
    let map = ebpf
        .map_mut("manul_peer_prog")
        .ok_or(BpfError::Missing("manul_peer_prog"))?;
    let mut array = ProgramArray::try_from(map)
        .map_err(|e| BpfError::map("manul_peer_prog", "unexpected map type", e))?;
    let fd = programs
        .egress
        .fd()
        .map_err(|e| BpfError::program(Hook::Egress.program(), "its descriptor", e))?;
    array
        .set(0, fd, 0)
        .map_err(|e| BpfError::map("manul_peer_prog", "store the egress program", e))
}

/// What the programs are loaded from: the object and the settings that
/// change what the kernel holds (map sizes, the conntrack flag).
fn digest(sizes: &[(&'static str, u32)], no_ct_create: bool) -> String {
    let mut h = Sha256::new();
    h.update(OBJECT);
    for (name, n) in sizes {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(n.to_le_bytes());
    }
    h.update([u8::from(no_ct_create)]);
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `PROGRAM-DIGEST` (bpffs refuses names with dots).
fn program_pin(dirs: &PinDirs, hook: Hook, digest: &str) -> PathBuf {
    dirs.programs.join(format!("{}-{digest}", hook.program()))
}

/// An earlier run's programs, when both are pinned under `digest` and use
/// the very maps pinned now (a pinned map replaced since, or a map purged
/// and created again, makes them unusable: they would read the old ones).
fn adopt(dirs: &PinDirs, ebpf: &Ebpf, digest: &str) -> Result<(Programs, Map), String> {
    // The kernel keeps a map's name to 15 bytes.
    let kernel_name = |name: &str| name.chars().take(15).collect::<String>();
    let mut pinned = std::collections::HashMap::new();
    for (name, _) in ebpf.maps() {
        let path = dirs.maps.join(name);
        if path.exists() {
            let id = MapData::from_pin(&path)
                .and_then(|m| m.info())
                .map_err(|e| format!("map {name}: {e}"))?
                .id();
            pinned.insert(kernel_name(name), id);
        }
    }
    let open = |hook: Hook| -> Result<(SchedClassifier, Vec<u32>), String> {
        let path = program_pin(dirs, hook, digest);
        if !path.exists() {
            return Err(format!("no {} pinned for this object", hook.program()));
        }
        let program =
            SchedClassifier::from_pin(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ids = program
            .info()
            .and_then(|i| i.map_ids())
            .map_err(|e| format!("{}: {e}", hook.program()))?
            .unwrap_or_default();
        // Each map the program uses that has a pin must be that pin's map.
        for id in &ids {
            let info = aya::maps::MapInfo::from_id(*id)
                .map_err(|e| format!("{}: map {id}: {e}", hook.program()))?;
            let name = info.name_as_str().unwrap_or_default();
            if pinned.get(name).is_some_and(|pin| pin != id) {
                return Err(format!(
                    "the pinned {} uses another {name} than the one pinned",
                    hook.program()
                ));
            }
        }
        Ok((program, ids))
    };
    let (ingress, ingress_maps) = open(Hook::Ingress)?;
    let (egress, egress_maps) = open(Hook::Egress)?;
    let events = |ids: &[u32]| {
        ids.iter().copied().find(|id| {
            aya::maps::MapInfo::from_id(*id).is_ok_and(|i| i.name_as_str() == Some("manul_events"))
        })
    };
    let id = match (events(&ingress_maps), events(&egress_maps)) {
        (Some(a), Some(b)) if a == b => a,
        _ => return Err("the pinned programs do not share one event ring".into()),
    };
    let events = MapData::from_id(id)
        .map(Map::RingBuf)
        .map_err(|e| format!("manul_events: {e}"))?;
    Ok((
        Programs {
            ingress,
            egress,
            adopted: true,
        },
        events,
    ))
}

/// Pins both freshly loaded programs under `digest` (removing other pins)
/// and opens them from their pins.
fn pin_programs(dirs: &PinDirs, ebpf: &mut Ebpf, digest: &str) -> Result<Programs, BpfError> {
    if let Ok(entries) = std::fs::read_dir(&dirs.programs) {
        for e in entries.filter_map(Result::ok) {
            unpin(&e.path());
        }
    }
    let mut open = |hook: Hook| -> Result<SchedClassifier, BpfError> {
        let path = program_pin(dirs, hook, digest);
        program(ebpf, hook)?
            .pin(&path)
            .map_err(|e| BpfError::Link {
                path: path.clone(),
                what: "pin the program",
                source: Box::new(e),
            })?;
        SchedClassifier::from_pin(&path)
            .map_err(|e| BpfError::program(hook.program(), "open from its pin", e))
    };
    let ingress = open(Hook::Ingress)?;
    let egress = open(Hook::Egress)?;
    Ok(Programs {
        ingress,
        egress,
        adopted: false,
    })
}

/// Loads both programs into the kernel, each on its own thread: the
/// verifier's passes over the two programs are independent and take most
/// of a fresh start (0.7 s each on ci-2c), so on two cores they overlap.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let mut programs: Vec<(Hook, &mut SchedClassifier)> = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let Some(hook) = Hook::BOTH.into_iter().find(|h| h.program() == name) else {
            continue;
        };
        let classifier: &mut SchedClassifier = program
            .try_into()
            .map_err(|e| BpfError::program(hook.program(), "not a TC program", e))?;
        programs.push((hook, classifier));
    }
    for hook in Hook::BOTH {
        if !programs.iter().any(|(h, _)| *h == hook) {
            return Err(BpfError::Missing(hook.program()));
        }
    }
    std::thread::scope(|scope| {
        let loading: Vec<_> = programs
            .into_iter()
            .map(|(hook, program)| {
                scope.spawn(move || {
                    program
                        .load()
                        .map_err(|e| BpfError::program(hook.program(), "load (verifier)", e))
                })
            })
            .collect();
        loading
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(BpfError::Config(
                        "a program's loading thread panicked".into(),
                    ))
                })
            })
            .collect::<Result<Vec<()>, BpfError>>()
    })?;
    Ok(())
}

pub fn program(ebpf: &mut Ebpf, hook: Hook) -> Result<&mut SchedClassifier, BpfError> {
    let name = hook.program();
    ebpf.program_mut(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::program(name, "not a TC program", e))
}

/// Attaches `hook`'s program to an interface (TCX) and pins the link. If a
/// link from an earlier run is pinned there, the program is replaced in it
/// atomically (no moment without a program).
pub fn attach(
    programs: &mut Programs,
    dirs: &PinDirs,
    interface: &str,
    ifindex: u32,
    hook: Hook,
) -> Result<(), BpfError> {
    let path = dirs.link(ifindex, hook);
    let prog = programs.get(hook);
    if path.exists() {
        let replaced = PinnedLink::from_pin(&path)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .and_then(|pinned| {
                let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                // The pin keeps the link (and the attachment) alive.
                drop(prog.take_link(id));
                Ok(())
            });
        match replaced {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "replacing a pinned link failed; attaching anew");
                unpin(&path);
            }
        }
    }
    let id = prog
        .attach(interface, hook.attach_type())
        .map_err(|e| BpfError::program(hook.program(), format!("attach to {interface}"), e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| BpfError::program(hook.program(), "take the link", e))?;
    let fd_link = FdLink::try_from(link).map_err(|e| BpfError::Link {
        path: path.clone(),
        what: "not a TCX link",
        source: Box::new(e),
    })?;
    fd_link.pin(&path).map_err(|e| BpfError::Link {
        path: path.clone(),
        what: "pin",
        source: Box::new(e),
    })?;
    Ok(())
}

/// Removes a link's pin: the kernel detaches it once no process holds it.
pub fn unpin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a pinned link");
    }
}
