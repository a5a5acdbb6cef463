//! The recorded workload: concurrent applies (conditional on a revision
//! read before, or not), gets and deletes of a few GlobalNetworkSets,
//! each worker through one replica, every call and return stamped with a
//! shared logical clock for the linearizability check.
//!
//! Each apply writes a value unique to it (the label `chaos-write`), so a
//! get says which write it saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_client::{Client, ClientError};
use manul_model::resource::{Kind, Resource, ResourceKey};

use crate::kv::{Input, Output, Recorded};
use crate::linearizability::UNKNOWN_RETURN;
use crate::schedule::Rng;

/// The keys the workload writes.
pub const KEYS: usize = 6;

/// The label that holds a write's id.
const WRITE_LABEL: &str = "chaos-write";

/// The shared record of a run's operations.
#[derive(Debug, Default)]
pub struct History {
    clock: AtomicU64,
    ops: Mutex<Vec<Recorded>>,
    next_write: AtomicU64,
}

impl History {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn push(&self, r: Recorded) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(r);
        }
    }

    pub fn operations(&self) -> Vec<Recorded> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

pub fn key_name(k: usize) -> String {
    format!("chaos-kv-{k}")
}

fn resource_key(k: usize) -> ResourceKey {
    ResourceKey {
        kind: Kind::GlobalNetworkSet,
        namespace: None,
        name: key_name(k),
    }
}

/// The GlobalNetworkSet that write `write` stores under key `k`.
fn resource(k: usize, write: u64) -> Option<Resource> {
    let yaml = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {}\n  labels: {{{WRITE_LABEL}: \"{write}\"}}\nspec:\n  nets: [\"198.51.100.{}/32\"]\n",
        key_name(k),
        write % 250
    );
    manul_local_cluster::cluster::parse(&yaml).ok()?.pop()
}

/// The write id a stored resource carries.
fn write_of(r: &Resource) -> Option<u64> {
    r.metadata().labels.as_ref()?.get(WRITE_LABEL)?.parse().ok()
}

/// What a write's error means for the history: a definite answer, or
/// nothing known (`None` means it was refused before anything was sent).
fn write_error(e: &ClientError) -> Option<Output> {
    if e.is_conflict() {
        Some(Output::Conflict)
    } else if e.is_no_leader() || e.is_invalid() {
        None
    } else {
        Some(Output::Unknown)
    }
}

/// One worker: random operations through `client` until `stop`.
pub async fn worker(client: Client, history: Arc<History>, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    // The revision this worker last saw per key, for conditional writes.
    let mut seen = [0u64; KEYS];
    while !stop.load(Ordering::Relaxed) {
        let k = rng.below(KEYS as u64) as usize;
        let roll = rng.below(100);
        let key = key_name(k);
        if roll < 40 {
            let call = history.tick();
            // A failed read observed nothing.
            if let Ok(found) = client.get(&resource_key(k)).await {
                {
                    let ret = history.tick();
                    let output = match found {
                        Some((r, revision)) => match write_of(&r) {
                            Some(write) => {
                                seen[k] = revision;
                                Output::Found { write, revision }
                            }
                            None => continue,
                        },
                        None => {
                            seen[k] = 0;
                            Output::Absent
                        }
                    };
                    history.push(Recorded {
                        key,
                        input: Input::Get,
                        output,
                        call,
                        ret,
                    });
                }
            }
        } else if roll < 85 {
            let write = history.next_write.fetch_add(1, Ordering::SeqCst) + 1;
            let Some(r) = resource(k, write) else {
                continue;
            };
            let expected = (roll >= 60).then_some(seen[k]);
            let call = history.tick();
            let result = match expected {
                Some(e) => client.apply_if(&r, e).await,
                None => client
                    .apply(std::slice::from_ref(&r))
                    .await
                    .map(|v| v.first().copied().unwrap_or(0)),
            };
            let (output, ret) = match result {
                Ok(rev) => {
                    seen[k] = rev;
                    (Some(Output::Written(rev)), history.tick())
                }
                Err(e) => {
                    let o = write_error(&e);
                    let ret = if o == Some(Output::Unknown) {
                        UNKNOWN_RETURN
                    } else {
                        history.tick()
                    };
                    (o, ret)
                }
            };
            if let Some(output) = output {
                history.push(Recorded {
                    key,
                    input: Input::Apply { write, expected },
                    output,
                    call,
                    ret,
                });
            }
        } else {
            let expected = (roll >= 93).then_some(seen[k]);
            let call = history.tick();
            let (output, ret) = match client.delete(&resource_key(k), expected).await {
                Ok(Some(rev)) => (Some(Output::Written(rev)), history.tick()),
                Ok(None) => (Some(Output::Absent), history.tick()),
                Err(e) => {
                    let o = write_error(&e);
                    let ret = if o == Some(Output::Unknown) {
                        UNKNOWN_RETURN
                    } else {
                        history.tick()
                    };
                    (o, ret)
                }
            };
            if let Some(output) = output {
                history.push(Recorded {
                    key,
                    input: Input::Delete { expected },
                    output,
                    call,
                    ret,
                });
            }
        }
        let pause = 10 + rng.below(40);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The final value of every key as `client`'s replica reads it, recorded
/// as gets (they close the history).
pub async fn final_reads(client: &Client, history: &History) -> Result<(), ClientError> {
    for k in 0..KEYS {
        let call = history.tick();
        let found = client.get(&resource_key(k)).await?;
        let ret = history.tick();
        let output = match found {
            Some((r, revision)) => match write_of(&r) {
                Some(write) => Output::Found { write, revision },
                None => continue,
            },
            None => Output::Absent,
        };
        history.push(Recorded {
            key: key_name(k),
            input: Input::Get,
            output,
            call,
            ret,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_carries_its_id_and_reads_back() {
        let r = resource(3, 4242).unwrap();
        assert_eq!(write_of(&r), Some(4242));
        assert_eq!(r.key(), resource_key(3));
    }
}
