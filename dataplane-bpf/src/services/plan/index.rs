//! The desired maps kept up to date service by service: each service's
//! [`Part`], who claims each frontend, address and source range, and the
//! [`Desired`] they add up to. A change recomputes the changed services'
//! parts and re-decides only what they touch: the frontends they claim
//! (and so the services that keep or lose them), their addresses and
//! ranges. The result is what [`super::desired`] gives for the whole
//! state (a property test checks that), and [`Touched`] tells the planner
//! which keys to diff.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use manul_dataplane_api::{Service, ServiceKey};

use super::part::{Item, Part, part};
use super::{Desired, Frontend, ListKey, Skipped, SourceRange};

/// The services a change touches and the frontends (port frontends and
/// address entries) whose entries it may change: every frontend a touched
/// service claimed or claims (so every frontend of its lists), and the
/// address entries of the changed services' addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub services: BTreeSet<ServiceKey>,
    pub frontends: BTreeSet<Frontend>,
}

/// What [`Index::update`] changed besides the desired frontends and lists.
#[derive(Debug, Default)]
pub struct Change {
    pub touched: Touched,
    /// Source ranges now asked for (written before the address entries
    /// naming them) and no longer (deleted after).
    pub ranges_added: BTreeSet<SourceRange>,
    pub ranges_removed: BTreeSet<SourceRange>,
    /// What the touched services leave out, for the log.
    pub skipped: Vec<Skipped>,
}

/// The desired maps with each service's part and claims.
#[derive(Debug, Default)]
pub struct Index {
    desired: Desired,
    parts: BTreeMap<ServiceKey, Part>,
    /// The services claiming each port frontend: the first by name keeps it.
    claimants: BTreeMap<Frontend, BTreeSet<ServiceKey>>,
    address_users: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    range_users: BTreeMap<SourceRange, BTreeSet<ServiceKey>>,
    /// This node's addresses, which the parts were computed with.
    local: BTreeSet<IpAddr>,
}

/// The smallest list key of `service`: its lists start there.
pub fn first_list(service: &ServiceKey) -> ListKey {
    ListKey {
        service: service.clone(),
        port_name: String::new(),
        proto: 0,
        port: 0,
        local: false,
        ipv6: false,
    }
}

/// Adds (`add`) or removes `key` from the users of each of `items`.
fn enroll<T: Ord + Copy>(
    users: &mut BTreeMap<T, BTreeSet<ServiceKey>>,
    items: impl Iterator<Item = T>,
    key: &ServiceKey,
    add: bool,
) {
    for item in items {
        if add {
            users.entry(item).or_default().insert(key.clone());
        } else if let Some(set) = users.get_mut(&item) {
            set.remove(key);
            if set.is_empty() {
                users.remove(&item);
            }
        }
    }
}

impl Index {
    /// The index of `services`, Maglev tables sized for `maglev_capacity`,
    /// with this node's addresses `local`.
    pub fn new(
        services: &BTreeMap<ServiceKey, Service>,
        maglev_capacity: usize,
        local: &BTreeSet<IpAddr>,
    ) -> Self {
        let mut ix = Index {
            local: local.clone(),
            ..Index::default()
        };
        ix.desired.maglev_capacity = maglev_capacity;
        for (key, svc) in services {
            let p = part(key, svc, local);
            ix.desired.add(key, &p);
            ix.enroll(key, &p, true);
            ix.parts.insert(key.clone(), p);
        }
        ix
    }

    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// This node's addresses the parts are computed with.
    pub fn local(&self) -> &BTreeSet<IpAddr> {
        &self.local
    }

    /// Takes this node's addresses as now `local`: the next
    /// [`Index::update`] computes the parts it is given with them. The
    /// caller names every service with source ranges in that update.
    pub fn set_local(&mut self, local: &BTreeSet<IpAddr>) {
        self.local = local.clone();
    }

    /// What the services leave out, once (for the log).
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.desired.skipped)
    }

    fn enroll(&mut self, key: &ServiceKey, p: &Part, add: bool) {
        enroll(
            &mut self.claimants,
            p.claims().map(|c| c.frontend),
            key,
            add,
        );
        enroll(
            &mut self.address_users,
            p.addresses.keys().copied(),
            key,
            add,
        );
        enroll(
            &mut self.range_users,
            p.source_ranges.iter().copied(),
            key,
            add,
        );
    }

    /// Takes each changed service as it is now (`None`: removed) and
    /// brings the desired maps to the state with them.
    pub fn update<'a>(
        &mut self,
        changes: impl IntoIterator<Item = (&'a ServiceKey, Option<&'a Service>)>,
    ) -> Change {
        let mut change = Change::default();
        let mut changed = BTreeSet::new();
        let mut claimed = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        let mut ranges = BTreeSet::new();
        for (key, svc) in changes {
            if !changed.insert(key.clone()) {
                continue;
            }
            let old = self.parts.remove(key);
            let new = svc.map(|s| part(key, s, &self.local));
            for (p, add) in [(&old, false), (&new, true)] {
                let Some(p) = p else { continue };
                self.enroll(key, p, add);
                claimed.extend(p.claims().map(|c| c.frontend));
                addresses.extend(p.addresses.keys().copied());
                ranges.extend(p.source_ranges.iter().copied());
            }
            if let Some(p) = new {
                self.parts.insert(key.clone(), p);
            }
        }
        // The services that keep or lose a frontend a changed one claims.
        let mut services = changed.clone();
        for f in &claimed {
            if let Some(w) = self.desired.frontends.get(f) {
                services.insert(w.list.service.clone());
            }
            if let Some(s) = self.claimants.get(f).and_then(BTreeSet::first) {
                services.insert(s.clone());
            }
        }
        let mut frontends = claimed;
        for s in &services {
            if let Some(p) = self.parts.get(s) {
                frontends.extend(p.claims().map(|c| c.frontend));
            }
        }
        self.redecide(&services, &frontends);
        for s in &services {
            let Some(p) = self.parts.get(s) else { continue };
            for item in &p.items {
                match item {
                    Item::Skipped(skip) if changed.contains(s) => change.skipped.push(skip.clone()),
                    Item::Skipped(_) => {}
                    Item::Claim(c) => change.skipped.extend(self.desired.conflict(s, c)),
                }
            }
        }
        for a in &addresses {
            let flags = self.address_users.get(a).map(|users| {
                users
                    .iter()
                    .filter_map(|u| self.parts.get(u)?.addresses.get(a))
                    .fold(0, |acc, f| acc | f)
            });
            match flags {
                Some(f) => self.desired.addresses.insert(*a, f),
                None => self.desired.addresses.remove(a),
            };
            frontends.insert(Frontend::address(*a));
        }
        for r in ranges {
            let used = self.range_users.contains_key(&r);
            if used && self.desired.source_ranges.insert(r) {
                change.ranges_added.insert(r);
            } else if !used && self.desired.source_ranges.remove(&r) {
                change.ranges_removed.insert(r);
            }
        }
        change.touched = Touched {
            services,
            frontends,
        };
        change
    }

    /// Decides again the frontends and lists of `services` (`frontends`:
    /// every frontend they claimed or claim): each frontend goes to the
    /// first service by name that claims it, and within it to its first
    /// claim, as [`Desired::add`] decides over the whole state.
    fn redecide(&mut self, services: &BTreeSet<ServiceKey>, frontends: &BTreeSet<Frontend>) {
        let d = &mut self.desired;
        for f in frontends {
            if d.frontends
                .get(f)
                .is_some_and(|w| services.contains(&w.list.service))
            {
                d.frontends.remove(f);
                d.maglev.remove(f);
            }
        }
        for s in services {
            let stale: Vec<ListKey> = d
                .lists
                .range(first_list(s)..)
                .take_while(|(k, _)| k.service == *s)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                d.lists.remove(&k);
            }
            let Some(p) = self.parts.get(s) else { continue };
            for c in p.claims() {
                // An in-cluster twin follows its port frontend's keeper
                // (decided just before it: a part lists the twin after).
                if c.frontend.in_cluster {
                    if d.keeps_twin(s, c) {
                        d.take(c);
                    }
                    continue;
                }
                let first = self.claimants.get(&c.frontend).and_then(BTreeSet::first);
                if first != Some(s) || d.frontends.contains_key(&c.frontend) {
                    continue;
                }
                d.take(c);
            }
        }
    }
}
