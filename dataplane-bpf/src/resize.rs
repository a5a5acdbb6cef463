//! Re-creating a pinned map at the size the configuration asks for. A
//! pinned map keeps the size it was created with, and loading adopts it by
//! its pin whatever the object declares; so before loading, each sized map
//! pinned at another size is set aside (its pin renamed to `NAME-resized`),
//! loading creates it anew at the configured size, and its entries are
//! copied into the new map (as many as fit: a smaller hash map refuses the
//! rest, a smaller LRU map evicts as it fills: which entries stay is
//! arbitrary) before the old pin is
//! removed. The programs an earlier run attached keep the old maps until
//! the new programs replace them in their links, so the old map's entries
//! stay in force until then. It refuses to resize a map whose type it does
//! not know: such a map keeps its size.

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError};

use crate::abi;
use crate::error::BpfError;

/// A map whose pin was set aside before loading.
#[derive(Debug)]
pub struct SetAside {
    name: &'static str,
    aside: PathBuf,
    pin: PathBuf,
    from: u32,
    to: u32,
}

/// What [`copy_back`] did to one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    pub map: &'static str,
    pub from: u32,
    pub to: u32,
    /// Entries copied into the new map.
    pub copied: usize,
    /// Entries the new map refused (it is smaller than they are many).
    pub dropped: usize,
}

fn aside_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-resized"))
}

fn max_entries(path: &Path) -> Result<u32, MapError> {
    MapData::from_pin(path)
        .and_then(|m| m.info())
        .map(|i| i.max_entries())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BpfError + '_ {
    move |source| BpfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `sizes` with each map already pinned in `dir` at its pinned size.
pub fn pinned_sizes(dir: &Path, sizes: &[(&'static str, u32)]) -> Vec<(&'static str, u32)> {
    sizes
        .iter()
        .map(|&(name, n)| (name, max_entries(&dir.join(name)).unwrap_or(n)))
        .collect()
}

/// Before loading: sets aside every map of `sizes` pinned in `dir` at
/// another size than asked (and whose entries it knows how to copy). A map set aside by a
/// run that stopped before copying it back is copied from again, unless
/// its pin was created anew at a wrong size again (then the older copy is
/// dropped).
pub fn set_aside(dir: &Path, sizes: &[(&'static str, u32)]) -> Result<Vec<SetAside>, BpfError> {
    let mut out = Vec::new();
    for &(name, to) in sizes {
        if !known(name) {
            continue;
        }
        let pin = dir.join(name);
        let aside = aside_path(dir, name);
        let leftover = aside.exists();
        if leftover && !pin.exists() {
            std::fs::rename(&aside, &pin).map_err(io(&aside))?;
        }
        let current = match max_entries(&pin) {
            Ok(n) => n,
            Err(_) if !pin.exists() => continue,
            Err(e) => return Err(BpfError::map(name, "read the pinned map's size", e)),
        };
        if current == to {
            if aside.exists() {
                let from = max_entries(&aside).unwrap_or(0);
                out.push(SetAside {
                    name,
                    aside,
                    pin,
                    from,
                    to,
                });
            }
            continue;
        }
        if aside.exists() {
            std::fs::remove_file(&aside).map_err(io(&aside))?;
        }
        std::fs::rename(&pin, &aside).map_err(io(&pin))?;
        tracing::info!(
            map = name,
            from = current,
            to,
            "pinned map of another size: creating it anew"
        );
        out.push(SetAside {
            name,
            aside,
            pin,
            from: current,
            to,
        });
    }
    Ok(out)
}

/// Puts every set-aside pin back where it was (loading failed: the maps
/// keep their old size, and the next load tries again).
pub fn restore(set: Vec<SetAside>) {
    for s in set {
        if !s.pin.exists()
            && let Err(e) = std::fs::rename(&s.aside, &s.pin)
        {
            tracing::warn!(map = s.name, error = %e, "cannot restore a set-aside map's pin");
        }
    }
}

/// After loading: copies each set-aside map's entries into the map now
/// pinned under its name, then removes the old pin (the kernel frees the
/// old map once no program uses it).
pub fn copy_back(set: Vec<SetAside>) -> Result<Vec<Resized>, BpfError> {
    let mut out = Vec::new();
    for s in set {
        let old = MapData::from_pin(&s.aside)
            .map_err(|e| BpfError::map(s.name, "open the set-aside map", e))?;
        let new =
            MapData::from_pin(&s.pin).map_err(|e| BpfError::map(s.name, "open the new map", e))?;
        let (copied, dropped) =
            copy(s.name, old, new).map_err(|e| BpfError::map(s.name, "copy its entries", e))?;
        std::fs::remove_file(&s.aside).map_err(io(&s.aside))?;
        tracing::info!(
            map = s.name,
            from = s.from,
            to = s.to,
            copied,
            dropped,
            "map created anew at its configured size"
        );
        out.push(Resized {
            map: s.name,
            from: s.from,
            to: s.to,
            copied,
            dropped,
        });
    }
    Ok(out)
}

/// The maps [`copy`] knows the keys and values of.
fn known(name: &str) -> bool {
    matches!(
        name,
        "manul_ct"
            | "manul_addr"
            | "manul_svc_fe"
            | "manul_svc_fe6"
            | "manul_svc_be"
            | "manul_svc_be6"
            | "manul_svc_aff"
            | "manul_svc_aff6"
            | "manul_ctlb_aff"
            | "manul_ctlb_aff6"
    )
}

/// Copies every entry of `old` into `new`: (copied, refused).
fn copy(name: &str, old: MapData, new: MapData) -> Result<(usize, usize), MapError> {
    use abi::*;
    match name {
        "manul_ct" => hash::<manul_ct_key, manul_ct_value>(old, new),
        "manul_addr" => trie::<manul_addr_data, u32>(old, new),
        "manul_svc_fe" => hash::<manul_svc_fe_key, manul_svc_fe_value>(old, new),
        "manul_svc_fe6" => hash::<manul_svc_fe6_key, manul_svc_fe_value>(old, new),
        "manul_svc_be" => hash::<manul_svc_be_key, manul_svc_be_value>(old, new),
        "manul_svc_be6" => hash::<manul_svc_be_key, manul_svc_be6_value>(old, new),
        "manul_svc_aff" => hash::<manul_svc_aff_key, manul_svc_aff_value>(old, new),
        "manul_svc_aff6" => hash::<manul_svc_aff6_key, manul_svc_aff6_value>(old, new),
        "manul_ctlb_aff" => hash::<manul_ctlb_aff_key, manul_svc_aff_value>(old, new),
        "manul_ctlb_aff6" => hash::<manul_ctlb_aff_key, manul_svc_aff6_value>(old, new),
        _ => Ok((0, 0)),
    }
}

fn hash<K: aya::Pod, V: aya::Pod>(old: MapData, new: MapData) -> Result<(usize, usize), MapError> {
    // The key and value sizes are checked, not the kind of hash map: an
    // LRU map is read and written alike.
    let old: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(old))?;
    let mut new: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(new))?;
    let (mut copied, mut dropped) = (0, 0);
    for (k, v) in old.iter().flatten() {
        match new.insert(k, v, 0) {
            Ok(()) => copied += 1,
            Err(_) => dropped += 1,
        }
    }
    Ok((copied, dropped))
}

fn trie<K: aya::Pod, V: aya::Pod>(old: MapData, new: MapData) -> Result<(usize, usize), MapError> {
    let old: LpmTrie<MapData, K, V> = LpmTrie::try_from(Map::LpmTrie(old))?;
    let mut new: LpmTrie<MapData, K, V> = LpmTrie::try_from(Map::LpmTrie(new))?;
    let (mut copied, mut dropped) = (0, 0);
    for (k, v) in old.iter().flatten() {
        match new.insert(&k, v, 0) {
            Ok(()) => copied += 1,
            Err(_) => dropped += 1,
        }
    }
    Ok((copied, dropped))
}
