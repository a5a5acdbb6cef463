//! The watchers' reconcile core: watch events in, batches of puts and
//! deletes to propose out. No I/O, no clock.
//!
//! One [`Reconciler`] per watched kind. It starts from the keys the watcher
//! owns in the store (with their values) and keeps that view current as it
//! hands out batches, so an unchanged object is never written again. A
//! relist (`Init`, `InitApply`..., `InitDone`) is buffered and ends in one
//! batch holding its puts and the deletes of every owned key the API server
//! no longer has: the store never passes through a state where objects
//! vanish and come back. An object that cannot be converted is skipped and
//! counted; the keys it produced before are left as they were.
//!
//! The caller proposes each batch; when a proposal fails, the view no
//! longer matches the store, so it rebuilds the reconciler from the store
//! and relists.

use std::collections::{BTreeMap, BTreeSet};

use manul_model::convert::ConvertError;
use manul_model::{Kind, Resource, ResourceKey};

/// A watch event, as `kube::runtime::watcher::Event` gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    /// An object was added or changed.
    Apply(Watched<K>),
    /// An object was deleted.
    Delete(Watched<K>),
    /// A (re)list starts.
    Init,
    /// One object of the list.
    InitApply(Watched<K>),
    /// The list is complete.
    InitDone,
}

/// Where an object lives: its namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A watched object: where it lives, and its body, or why the body could
/// not be read (a malformed object still has a name).
#[derive(Debug, Clone, PartialEq)]
pub struct Watched<K> {
    pub at: ObjectRef,
    pub body: Result<K, String>,
}

impl<K> Watched<K> {
    /// A well-formed object.
    pub fn ok(at: ObjectRef, body: K) -> Watched<K> {
        Watched { at, body: Ok(body) }
    }
}

/// What one watched kind turns into in the store.
pub trait Source {
    /// The Kubernetes type watched.
    type Object;
    /// The kind's name in metrics and logs (`pod`, `node`, ...).
    fn kind(&self) -> &'static str;
    /// Every key an object at `at` can produce, whether it produces them
    /// now or not (a finished pod produces none of them).
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey>;
    /// The resources the object produces now; each key must be one of
    /// [`Source::keys_of`].
    fn convert(&self, object: &Self::Object) -> Result<Vec<Resource>, ConvertError>;
    /// Whether `key` in the store belongs to this watcher.
    fn owns(&self, key: &ResourceKey) -> bool;
    /// Resources the watcher writes whatever the API server holds (owned,
    /// written with every list, never deleted by an object's deletion).
    fn constant(&self) -> Vec<Resource> {
        Vec::new()
    }
    /// Writes of keys the watcher does not own that a completed list adds
    /// to its Raft entry, from what the watcher holds after the list
    /// (`owned`) and the store (`read` gives a kind's stored entries with
    /// their revisions); each applies only if its key still has the
    /// revision read, else the whole entry is refused and the watcher
    /// lists again.
    fn after_list(
        &self,
        owned: &BTreeMap<ResourceKey, Vec<u8>>,
        read: &dyn Fn(Kind) -> Vec<(ResourceKey, Vec<u8>, u64)>,
    ) -> Vec<Guarded> {
        let _ = (owned, read);
        Vec::new()
    }
}

/// A write that applies only while its key has revision `expected` (0:
/// absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub key: ResourceKey,
    pub value: Vec<u8>,
    pub expected: u64,
}

/// Writes to propose as one atomic Raft entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Keys with their new value (the resource's JSON), in key order.
    pub puts: Vec<(ResourceKey, Vec<u8>)>,
    /// Keys to delete, in key order.
    pub deletes: Vec<ResourceKey>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// An object that was skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub at: ObjectRef,
    pub reason: String,
}

/// What one event produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The batch to propose, when the event changes the store.
    pub batch: Option<Batch>,
    /// Objects that could not be converted (log them by name).
    pub skipped: Vec<Skipped>,
}

/// Running totals for one kind, read by the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects the API server has, as last seen.
    pub objects: usize,
    /// Lists after the first one.
    pub relists: u64,
    /// Objects that could not be converted.
    pub conversion_errors: u64,
}

#[derive(Debug, Default)]
struct Relist {
    produced: BTreeMap<ResourceKey, Vec<u8>>,
    /// Owned keys of objects that failed to convert: left as they are.
    keep: BTreeSet<ResourceKey>,
    objects: BTreeSet<ObjectRef>,
}

/// The reconcile state of one watched kind.
#[derive(Debug)]
pub struct Reconciler<S: Source> {
    source: S,
    stored: BTreeMap<ResourceKey, Vec<u8>>,
    objects: BTreeSet<ObjectRef>,
    relist: Option<Relist>,
    listed: bool,
    counts: Counts,
}

impl<S: Source> Reconciler<S> {
    /// A reconciler for `source`, starting from the store's entries (only
    /// the keys the source owns are kept).
    pub fn new(source: S, store: impl IntoIterator<Item = (ResourceKey, Vec<u8>)>) -> Self {
        let stored = store.into_iter().filter(|(k, _)| source.owns(k)).collect();
        Reconciler {
            source,
            stored,
            objects: BTreeSet::new(),
            relist: None,
            listed: false,
            counts: Counts::default(),
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn counts(&self) -> Counts {
        Counts {
            objects: self.objects.len(),
            ..self.counts
        }
    }

    /// The owned keys and values as the reconciler believes the store holds
    /// them after every batch it handed out.
    pub fn stored(&self) -> &BTreeMap<ResourceKey, Vec<u8>> {
        &self.stored
    }

    /// The object's resources as keys and values, or why it cannot be
    /// converted.
    fn produce(&self, w: &Watched<S::Object>) -> Result<BTreeMap<ResourceKey, Vec<u8>>, String> {
        let body = w.body.as_ref().map_err(Clone::clone)?;
        let resources = self.source.convert(body).map_err(|e| e.to_string())?;
        let allowed = self.source.keys_of(&w.at);
        let mut out = BTreeMap::new();
        for r in resources {
            let key = r.key();
            if !allowed.contains(&key) || !self.source.owns(&key) {
                return Err(format!(
                    "converts to {key}, which is not the object's to write"
                ));
            }
            let value = serde_json::to_vec(&r).map_err(|e| format!("{key}: {e}"))?;
            out.insert(key, value);
        }
        Ok(out)
    }

    fn skip(&mut self, at: &ObjectRef, reason: String, step: &mut Step) {
        self.counts.conversion_errors += 1;
        step.skipped.push(Skipped {
            at: at.clone(),
            reason,
        });
    }

    /// Applies `batch` to the view and wraps it, unless it is empty.
    fn commit(&mut self, mut batch: Batch) -> Option<Batch> {
        batch.puts.sort_by(|a, b| a.0.cmp(&b.0));
        batch.deletes.sort();
        for (k, v) in &batch.puts {
            self.stored.insert(k.clone(), v.clone());
        }
        for k in &batch.deletes {
            self.stored.remove(k);
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Handles one event.
    pub fn handle(&mut self, event: WatchEvent<S::Object>) -> Step {
        let mut step = Step::default();
        match event {
            WatchEvent::Apply(w) => {
                self.objects.insert(w.at.clone());
                match self.produce(&w) {
                    Ok(produced) => {
                        let mut batch = Batch::default();
                        for k in self.source.keys_of(&w.at) {
                            if !produced.contains_key(&k) && self.stored.contains_key(&k) {
                                batch.deletes.push(k);
                            }
                        }
                        for (k, v) in produced {
                            if self.stored.get(&k) != Some(&v) {
                                batch.puts.push((k, v));
                            }
                        }
                        step.batch = self.commit(batch);
                    }
                    Err(reason) => self.skip(&w.at, reason, &mut step),
                }
            }
            WatchEvent::Delete(w) => {
                self.objects.remove(&w.at);
                let deletes = self
                    .source
                    .keys_of(&w.at)
                    .into_iter()
                    .filter(|k| self.stored.contains_key(k))
                    .collect();
                step.batch = self.commit(Batch {
                    puts: Vec::new(),
                    deletes,
                });
            }
            WatchEvent::Init => {
                if self.listed {
                    self.counts.relists += 1;
                }
                self.listed = true;
                self.relist = Some(Relist::default());
            }
            WatchEvent::InitApply(w) => {
                let result = self.produce(&w);
                match result {
                    Ok(produced) => {
                        let relist = self.relist.get_or_insert_with(Relist::default);
                        relist.objects.insert(w.at.clone());
                        relist.produced.extend(produced);
                    }
                    Err(reason) => {
                        let keep: Vec<ResourceKey> = self
                            .source
                            .keys_of(&w.at)
                            .into_iter()
                            .filter(|k| self.stored.contains_key(k))
                            .collect();
                        let relist = self.relist.get_or_insert_with(Relist::default);
                        relist.objects.insert(w.at.clone());
                        relist.keep.extend(keep);
                        self.skip(&w.at, reason, &mut step);
                    }
                }
            }
            WatchEvent::InitDone => {
                let mut relist = self.relist.take().unwrap_or_default();
                for r in self.source.constant() {
                    let key = r.key();
                    match serde_json::to_vec(&r) {
                        Ok(v) if self.source.owns(&key) => {
                            relist.produced.insert(key, v);
                        }
                        Ok(_) => self.skip(
                            &ObjectRef {
                                namespace: None,
                                name: key.to_string(),
                            },
                            format!("{key} is not the watcher's to write"),
                            &mut step,
                        ),
                        Err(e) => self.skip(
                            &ObjectRef {
                                namespace: None,
                                name: key.to_string(),
                            },
                            e.to_string(),
                            &mut step,
                        ),
                    }
                }
                let mut batch = Batch::default();
                for k in self.stored.keys() {
                    if !relist.produced.contains_key(k) && !relist.keep.contains(k) {
                        batch.deletes.push(k.clone());
                    }
                }
                for (k, v) in relist.produced {
                    if self.stored.get(&k) != Some(&v) {
                        batch.puts.push((k, v));
                    }
                }
                self.objects = relist.objects;
                step.batch = self.commit(batch);
            }
        }
        step
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
