//! The deletions a sync can make before any of its writes, so that a
//! cluster that shrank back within a map's capacity converges even when
//! its new entries and its old ones would not fit together: the
//! frontends no longer wanted (they leave either way, and no frontend
//! that stays depends on them), then the backend lists and Maglev tables
//! that no frontend names once those are gone and no new frontend entry
//! names either. Everything else keeps its order ([`Writes`]). Used only
//! when a sync in its usual order would not fit: it walks every
//! programmed frontend.

use std::collections::BTreeSet;

use super::{Programmed, Writes};

/// Splits `w` into the deletions made first and the rest.
pub fn split(w: Writes, programmed: &Programmed) -> (Writes, Writes) {
    let leaving: BTreeSet<_> = w.frontend_deletes.iter().copied().collect();
    let staying = programmed
        .frontends
        .iter()
        .filter(|(f, _)| !leaving.contains(f))
        .map(|(_, e)| e)
        .chain(w.frontends.iter().map(|(_, e)| e));
    let (mut lists, mut tables) = (BTreeSet::new(), BTreeSet::new());
    for e in staying {
        lists.insert(e.id);
        tables.insert(e.maglev);
    }
    let Writes {
        backends,
        tables: new_tables,
        frontends,
        frontend_deletes,
        backend_deletes,
        table_deletes,
        gone,
    } = w;
    let (early_backends, late_backends) = backend_deletes
        .into_iter()
        .partition(|(id, _)| !lists.contains(id));
    let (early_tables, late_tables) = table_deletes
        .into_iter()
        .partition(|(id, _)| !tables.contains(id));
    let early = Writes {
        frontend_deletes,
        backend_deletes: early_backends,
        table_deletes: early_tables,
        ..Writes::default()
    };
    let late = Writes {
        backends,
        tables: new_tables,
        frontends,
        frontend_deletes: Vec::new(),
        backend_deletes: late_backends,
        table_deletes: late_tables,
        gone,
    };
    (early, late)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::{BackendAddr, Frontend, FrontendEntry, Programmed, Writes};
    use super::split;

    fn fe(last: u8, port: u16) -> Frontend {
        Frontend {
            addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, last)),
            port,
            proto: 6,
            in_cluster: false,
        }
    }

    fn entry(id: u32, maglev: u32) -> FrontendEntry {
        FrontendEntry {
            id,
            count: 1,
            affinity_s: 0,
            flags: 0,
            maglev,
            maglev_size: u32::from(maglev != 0),
        }
    }

    fn backend(last: u8) -> BackendAddr {
        BackendAddr {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port: 80,
        }
    }

    #[test]
    fn leaving_frontends_and_what_only_they_name_go_first() {
        // Programmed: a (list 1, table 7) stays and is rewritten to list 3;
        // b (list 2, table 8) leaves; c keeps list 4, shrunk in place.
        let programmed = Programmed {
            frontends: BTreeMap::from([
                (fe(1, 80), entry(1, 7)),
                (fe(2, 80), entry(2, 8)),
                (fe(3, 80), entry(4, 0)),
            ]),
            ..Programmed::default()
        };
        let w = Writes {
            backends: vec![(3, 0, backend(9))],
            frontends: vec![(fe(1, 80), entry(3, 7)), (fe(3, 80), entry(4, 0))],
            frontend_deletes: vec![fe(2, 80)],
            backend_deletes: vec![(1, 0), (2, 0), (2, 1), (4, 1)],
            table_deletes: vec![(7, 4), (8, 4)],
            gone: BTreeMap::from([(2, [backend(2)].into())]),
            ..Writes::default()
        };
        let (early, late) = split(w, &programmed);
        assert_eq!(early.frontend_deletes, vec![fe(2, 80)]);
        // List 1 is still named by a until its rewrite, list 4 by c.
        assert_eq!(early.backend_deletes, vec![(2, 0), (2, 1)]);
        assert_eq!(early.table_deletes, vec![(8, 4)]);
        assert!(early.backends.is_empty() && early.frontends.is_empty());
        assert!(early.gone.is_empty());
        assert_eq!(late.backends, vec![(3, 0, backend(9))]);
        assert_eq!(late.frontends.len(), 2);
        assert!(late.frontend_deletes.is_empty());
        assert_eq!(late.backend_deletes, vec![(1, 0), (4, 1)]);
        assert_eq!(late.table_deletes, vec![(7, 4)]);
        assert_eq!(late.gone.len(), 1);
    }

    #[test]
    fn nothing_leaving_leaves_the_writes_whole() {
        let programmed = Programmed {
            frontends: BTreeMap::from([(fe(1, 80), entry(1, 0))]),
            ..Programmed::default()
        };
        let w = Writes {
            backends: vec![(2, 0, backend(1))],
            frontends: vec![(fe(1, 80), entry(2, 0))],
            backend_deletes: vec![(1, 0)],
            ..Writes::default()
        };
        let (early, late) = split(w, &programmed);
        assert!(early.is_empty());
        assert_eq!(late.backend_deletes, vec![(1, 0)]);
    }
}
