//! A simulated Felix on a Sync stream: the server side is the fan-out's own
//! code (resume or shared snapshot, then the breadcrumbs it would queue, in
//! a queue of the configured size, ended when the client falls behind or
//! its replica restarts); the client side checks every message as a
//! watch must be: hello first, the snapshot's chunks in order, in-sync,
//! then delta batches ordered, gap-free and duplicate-free, and the state
//! it builds equal to the replicas' at each revision. A dropped stream
//! reconnects, to any replica, resuming from the last revision applied.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{Entry, EntryList, StateSnapshot, SyncMessage};
use prost::Message as _;

use super::checks::{Checks, Violation};
use super::replica::Replica;
use crate::fanout::service::{hello, in_sync, snapshot_chunk};
use crate::fanout::{Compression, NextDelta};
use crate::state::{Key, StateMachine};

/// The server's side of one stream.
#[derive(Debug)]
struct Stream {
    replica: u64,
    run: u64,
    /// Messages queued for the client.
    queue: VecDeque<SyncMessage>,
    /// Every revision up to here is queued.
    cursor: u64,
    /// Resume revision the replica has not reached yet, and since when
    /// the stream waits for it.
    waiting: Option<(u64, u64)>,
    /// The stream ends after the queue drains.
    ended: bool,
}

/// What the client has applied.
#[derive(Debug, Default)]
struct View {
    entries: BTreeMap<Key, (Bytes, u64)>,
    revision: u64,
}

/// A stream's opening, as the client saw it.
#[derive(Debug)]
enum Opening {
    Expect,
    Snapshot {
        revision: u64,
        next: u32,
        count: u32,
        entries: BTreeMap<Key, (Bytes, u64)>,
    },
    Resume(u64),
    InSync,
}

#[derive(Debug)]
pub struct Subscriber {
    pub id: u64,
    stream: Option<(Stream, Opening)>,
    view: View,
    /// Revisions moved back by a snapshot from a replica behind the
    /// client are allowed (the fan-out's documented behaviour).
    pub synced_once: bool,
    queue_len: usize,
    resume_wait_steps: u64,
    /// Streams opened with a snapshot, resumed, and ended by the fan-out.
    snapshots: u64,
    resumes: u64,
    cut: u64,
}

fn who(id: u64) -> String {
    format!("subscriber {id}")
}

fn fail<T>(id: u64, what: String) -> Result<T, Violation> {
    Err(Violation(format!("{}: {what}", who(id))))
}

fn apply_list(
    entries: &mut BTreeMap<Key, (Bytes, u64)>,
    bytes: &Bytes,
) -> Result<Vec<Entry>, String> {
    let list = EntryList::decode(bytes.clone()).map_err(|e| format!("undecodable entries: {e}"))?;
    for e in &list.entries {
        let key = Key::from_proto(&e.key.clone().unwrap_or_default());
        if e.deleted {
            entries.remove(&key);
        } else {
            entries.insert(key, (e.value.clone(), e.revision));
        }
    }
    Ok(list.entries)
}

fn hash(entries: &BTreeMap<Key, (Bytes, u64)>, revision: u64) -> String {
    let mut sm = StateMachine::new();
    sm.restore(&StateSnapshot {
        revision,
        entries: entries
            .iter()
            .map(|(k, (v, r))| Entry {
                key: Some(k.to_proto()),
                value: v.clone(),
                revision: *r,
                deleted: false,
            })
            .collect(),
        members: Vec::new(),
        ..Default::default()
    });
    sm.state_hash()
}

impl Subscriber {
    pub fn new(id: u64, queue_len: usize, resume_wait_steps: u64) -> Subscriber {
        Subscriber {
            id,
            stream: None,
            view: View::default(),
            synced_once: false,
            queue_len: queue_len.max(1),
            resume_wait_steps,
            snapshots: 0,
            resumes: 0,
            cut: 0,
        }
    }

    /// Streams opened with a snapshot, resumed, and ended by the fan-out.
    pub fn streams(&self) -> (u64, u64, u64) {
        (self.snapshots, self.resumes, self.cut)
    }

    pub fn revision(&self) -> u64 {
        self.view.revision
    }

    pub fn connected_to(&self) -> Option<u64> {
        self.stream.as_ref().map(|(s, _)| s.replica)
    }

    pub fn in_sync(&self) -> bool {
        matches!(self.stream, Some((_, Opening::InSync)))
    }

    /// Opens a stream to `replica`, resuming from the last applied
    /// revision.
    pub fn connect(&mut self, replica: &Replica, now: u64) {
        let resume = self.view.revision;
        self.stream = Some((
            Stream {
                replica: replica.id,
                run: replica.run,
                queue: VecDeque::new(),
                cursor: 0,
                waiting: Some((resume, now)),
                ended: false,
            },
            Opening::Expect,
        ));
    }

    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// The server's side: opens the stream (resume, or the shared
    /// snapshot) and queues the batches after its cursor, as the fan-out's
    /// client task does.
    pub fn serve(
        &mut self,
        replicas: &[Replica],
        now: u64,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(), Violation> {
        let Some((stream, _)) = self.stream.as_mut() else {
            return Ok(());
        };
        let live = replicas
            .iter()
            .find(|r| r.id == stream.replica && r.run == stream.run)
            .and_then(|r| r.live.as_ref());
        let Some(live) = live else {
            // The replica crashed or restarted: the connection is gone.
            self.stream = None;
            return Ok(());
        };
        if stream.ended {
            return Ok(());
        }
        let fanout = &live.fanout;
        if let Some((resume, since)) = stream.waiting {
            let current = fanout.current_revision();
            let waited = now.saturating_sub(since) >= self.resume_wait_steps;
            if resume > current && !waited {
                return Ok(());
            }
            stream.waiting = None;
            let replica = stream.replica;
            if resume > 0 && resume <= current && fanout.can_resume(resume) {
                stream
                    .queue
                    .push_back(hello(replica, resume, false, Compression::Identity));
                stream.queue.push_back(in_sync(resume));
                stream.cursor = resume;
                self.resumes += 1;
            } else {
                let snapshot = runtime
                    .block_on(fanout.snapshot(Compression::Identity))
                    .map_err(|s| {
                        Violation(format!(
                            "{}: snapshot failed: {}",
                            who(self.id),
                            s.message()
                        ))
                    })?;
                let revision = snapshot.revision;
                stream
                    .queue
                    .push_back(hello(replica, revision, true, Compression::Identity));
                let count = u32::try_from(snapshot.chunks.len()).unwrap_or(u32::MAX);
                for (i, chunk) in snapshot.chunks.iter().enumerate() {
                    stream
                        .queue
                        .push_back(snapshot_chunk(revision, i, count, chunk));
                }
                stream.queue.push_back(in_sync(revision));
                stream.cursor = revision;
                self.snapshots += 1;
            }
        }
        while stream.queue.len() < self.queue_len {
            match fanout.next_delta(stream.cursor, Compression::Identity) {
                NextDelta::UpToDate => break,
                NextDelta::Batch { message, last } => {
                    stream.queue.push_back(message);
                    stream.cursor = last;
                }
                NextDelta::Gone { .. } | NextDelta::EncodingFailed => {
                    stream.ended = true;
                    self.cut += 1;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The client's side: takes up to `take` messages and checks each.
    pub fn read(&mut self, take: usize, checks: &mut Checks) -> Result<(), Violation> {
        let id = self.id;
        for _ in 0..take {
            let Some((stream, opening)) = self.stream.as_mut() else {
                return Ok(());
            };
            let Some(message) = stream.queue.pop_front() else {
                if stream.ended {
                    // The fan-out ended the stream: reconnect later.
                    self.stream = None;
                }
                return Ok(());
            };
            let Some(message) = message.message else {
                return fail(id, "an empty message".into());
            };
            match (message, &mut *opening) {
                (Message::Hello(h), Opening::Expect) => {
                    if h.snapshot_follows {
                        *opening = Opening::Snapshot {
                            revision: h.revision,
                            next: 0,
                            count: 0,
                            entries: BTreeMap::new(),
                        };
                    } else if h.revision != self.view.revision {
                        return fail(
                            id,
                            format!(
                                "resumed at revision {} though it applied up to {}",
                                h.revision, self.view.revision
                            ),
                        );
                    } else {
                        *opening = Opening::Resume(h.revision);
                    }
                }
                (
                    Message::Snapshot(c),
                    Opening::Snapshot {
                        revision,
                        next,
                        count,
                        entries,
                    },
                ) => {
                    if c.revision != *revision
                        || c.index != *next
                        || (*next > 0 && c.count != *count)
                    {
                        return fail(
                            id,
                            format!(
                                "snapshot chunk {}/{} at revision {} where chunk {next} at revision {revision} was due",
                                c.index, c.count, c.revision
                            ),
                        );
                    }
                    *count = c.count;
                    *next += 1;
                    apply_list(entries, &c.entries)
                        .map_err(|e| Violation(format!("{}: {e}", who(id))))?;
                }
                (
                    Message::InSync(s),
                    Opening::Snapshot {
                        revision,
                        next,
                        count,
                        entries,
                    },
                ) => {
                    if s.revision != *revision || *next != *count {
                        return fail(
                            id,
                            format!(
                                "in-sync at {} after {next} of {count} chunks at revision {revision}",
                                s.revision
                            ),
                        );
                    }
                    self.view = View {
                        entries: std::mem::take(entries),
                        revision: *revision,
                    };
                    *opening = Opening::InSync;
                    self.synced_once = true;
                    self.check_state(checks)?;
                }
                (Message::InSync(s), Opening::Resume(r)) => {
                    if s.revision != *r {
                        return fail(
                            id,
                            format!("in-sync at {} after resuming at {r}", s.revision),
                        );
                    }
                    *opening = Opening::InSync;
                }
                (Message::Deltas(d), Opening::InSync) => {
                    let expected = self.view.revision + 1;
                    if d.first_revision != expected || d.last_revision < d.first_revision {
                        return fail(
                            id,
                            format!(
                                "a delta batch {}..={} where revision {expected} was next (a gap, a duplicate or out of order)",
                                d.first_revision, d.last_revision
                            ),
                        );
                    }
                    let applied = apply_list(&mut self.view.entries, &d.entries)
                        .map_err(|e| Violation(format!("{}: {e}", who(id))))?;
                    if let Some(e) = applied
                        .iter()
                        .find(|e| e.revision < d.first_revision || e.revision > d.last_revision)
                    {
                        return fail(
                            id,
                            format!(
                                "an entry at revision {} in the batch {}..={}",
                                e.revision, d.first_revision, d.last_revision
                            ),
                        );
                    }
                    self.view.revision = d.last_revision;
                    self.check_state(checks)?;
                }
                (Message::Ping(_), Opening::InSync) => {}
                (m, _) => {
                    let kind = match m {
                        Message::Hello(_) => "a hello",
                        Message::Snapshot(_) => "a snapshot chunk",
                        Message::InSync(_) => "an in-sync",
                        Message::Deltas(_) => "a delta batch",
                        Message::Ping(_) => "a ping",
                        Message::End(_) => "a stream end",
                    };
                    return fail(id, format!("{kind} out of place in the stream"));
                }
            }
        }
        Ok(())
    }

    /// The state the client built equals the replicas' at its revision.
    fn check_state(&self, checks: &mut Checks) -> Result<(), Violation> {
        let h = hash(&self.view.entries, self.view.revision);
        checks.state(&who(self.id), self.view.revision, &h)
    }
}
