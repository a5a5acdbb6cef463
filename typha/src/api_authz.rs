//! Authorization and audit in the write API: who the caller is (its
//! verified certificate, [`crate::authz::roles`]), the decision for every
//! key of a write ([`crate::authz::decide`], given the value stored now),
//! and the audit record of the outcome ([`crate::audit`]).
//!
//! A decision that depends on the stored value (a node's CNI identity
//! replacing or deleting an endpoint or an IPAM block) is made on this
//! replica's state after it has caught up with the leader (the read path's
//! read index), and the write is then pinned to the revision the decision
//! saw: an unconditional write becomes conditional on it, and a write
//! whose expected revision is not the one seen is refused as a conflict
//! here. So the value a write replaces is the one that was authorized,
//! even when it changes between the decision and the commit (the write
//! then fails as a conflict, as any conditional write would).

use std::sync::Arc;

use manul_model::Kind;
use manul_proto::v1::{ResourceKey, Write};
use manul_tls::PeerIdentity;
use tonic::{Request, Status};

use crate::audit::{Audit, Record, RefusalLabels};
use crate::authz::roles::RoleMap;
use crate::authz::{Caller, Change, Placement, Refusal, Role, Target, Verb, decide};
use crate::state::{ApplyError, Key, StateMachine};

/// Metadata naming the local user of a plaintext client (`manulctl` sends
/// it); ignored with TLS, where the certificate names the caller.
pub const USER_HEADER: &str = "x-manul-user";

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The write API's authorization settings and audit trail.
#[derive(Debug, Clone)]
pub struct WriteAuth {
    /// None: plaintext, no identities, every write allowed.
    roles: Option<Arc<RoleMap>>,
    audit: Audit,
}

impl WriteAuth {
    /// With TLS (`Some` roles) or without.
    pub fn new(roles: Option<RoleMap>, audit: Audit) -> WriteAuth {
        WriteAuth {
            roles: roles.map(Arc::new),
            audit,
        }
    }

    /// Plaintext, no audit file: what tests and tools embed.
    pub fn open() -> WriteAuth {
        WriteAuth::new(None, Audit::disabled(Default::default()))
    }

    /// Who made `request`: with TLS its certificate's identity; in
    /// plaintext the local user the client names in [`USER_HEADER`]
    /// (unverified: the role says so), or `plaintext client`.
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        let Some(roles) = &self.roles else {
            let mut caller = Caller::plaintext();
            if let Some(user) = request
                .metadata()
                .get(USER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|u| clip(u.trim(), 64))
                .filter(|u| !u.is_empty() && !u.chars().any(char::is_control))
            {
                caller.identity = user;
            }
            return caller;
        };
        let leaf = request.peer_certs();
        match leaf
            .as_ref()
            .and_then(|c| c.first())
            .and_then(PeerIdentity::of)
        {
            Some(id) => roles.caller(&id),
            None => Caller {
                identity: "a client without a certificate".into(),
                role: Role::Unmapped,
            },
        }
    }

    /// A trail for one write request. `forwarded`: another replica passed
    /// it on after recording it itself, so it is not recorded again.
    pub fn trail(&self, caller: Caller, verb: Verb, forwarded: bool) -> Trail {
        let recorded = !(forwarded && matches!(caller.role, Role::Replica | Role::Plaintext));
        Trail {
            audit: self.audit.clone(),
            caller,
            verb,
            recorded,
            keys: Vec::new(),
            refusals: Vec::new(),
        }
    }
}

/// The kind a stored key names.
fn kind_of(key: &ResourceKey) -> Option<Kind> {
    Kind::ALL.iter().copied().find(|k| k.key_name() == key.kind)
}

fn display_name(key: &ResourceKey) -> String {
    if key.namespace.is_empty() {
        key.name.clone()
    } else {
        format!("{}/{}", key.namespace, key.name)
    }
}

/// One write request on its way: its keys as they become known, its
/// refusals, and its audit records once it ends.
#[derive(Debug)]
pub struct Trail {
    audit: Audit,
    pub caller: Caller,
    verb: Verb,
    recorded: bool,
    keys: Vec<ResourceKey>,
    /// The refused keys (by index into `keys`) and why.
    refusals: Vec<(usize, Refusal)>,
}

impl Trail {
    /// The request's keys, for the records.
    pub fn keys(&mut self, keys: impl IntoIterator<Item = ResourceKey>) {
        self.keys = keys.into_iter().collect();
    }

    /// Whether the decision needs the stored values (and so a caught-up
    /// replica).
    pub fn needs_state(&self) -> bool {
        matches!(self.caller.role, Role::Cni(_) | Role::Felix(_))
    }

    /// Decides every key against `state`: PERMISSION_DENIED naming each
    /// refused key, or the revisions the writes are pinned to.
    fn decide<'w>(
        &mut self,
        state: &StateMachine,
        written: &dyn Fn(usize) -> (Placement, Option<&'w [u8]>),
    ) -> Result<Vec<u64>, Status> {
        let mut stored_revisions = Vec::with_capacity(self.keys.len());
        for (i, key) in self.keys.iter().enumerate() {
            let Some(kind) = kind_of(key) else {
                return Err(Status::invalid_argument(format!(
                    "unknown kind {:?}",
                    key.kind
                )));
            };
            let stored = state.get(&Key::from_proto(key));
            stored_revisions.push(stored.as_ref().map_or(0, |e| e.revision));
            let (placement, value) = written(i);
            let target = Target {
                verb: self.verb,
                kind,
                name: display_name(key),
                written: placement,
                change: Change::of(kind, stored.as_ref().map(|e| &e.value[..]), value),
                stored: stored.map_or(Placement::Absent, |e| Placement::of(kind, &e.value)),
            };
            if let Err(r) = decide(&self.caller, &target) {
                self.refusals.push((i, r));
            }
        }
        if self.refusals.is_empty() {
            return Ok(stored_revisions);
        }
        self.audit
            .metrics
            .refusals
            .get_or_create(&RefusalLabels {
                role: self.caller.role.label(),
                verb: self.verb.as_str(),
            })
            .inc();
        let message: Vec<String> = self.refusals.iter().map(|(_, r)| r.to_string()).collect();
        tracing::info!(identity = %self.caller.identity, role = self.caller.role.label(), "write refused: {}", message.join("; "));
        Err(Status::permission_denied(message.join("\n")))
    }

    /// Authorizes the writes of an apply against `state` and pins each to
    /// the revision the decision saw.
    pub fn authorize_writes(
        &mut self,
        state: &StateMachine,
        writes: &mut [Write],
    ) -> Result<(), Status> {
        if self.caller.role.writes_anything() {
            return Ok(());
        }
        let placements: Vec<Placement> = writes
            .iter()
            .map(|w| {
                let kind = w.key.as_ref().and_then(kind_of);
                kind.map_or(Placement::NoNode, |k| Placement::of(k, &w.value))
            })
            .collect();
        let seen = self.decide(state, &|i| {
            (placements[i].clone(), Some(&writes[i].value[..]))
        })?;
        for (w, seen) in writes.iter_mut().zip(seen) {
            match w.expected_revision {
                None => w.expected_revision = Some(seen),
                Some(r) if r != seen => return Err(conflict(w.key.as_ref(), r, seen)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Authorizes a delete of `self`'s keys against `state`; returns the
    /// expected revision to delete with.
    pub fn authorize_delete(
        &mut self,
        state: &StateMachine,
        expected: Option<u64>,
    ) -> Result<Option<u64>, Status> {
        if self.caller.role.writes_anything() {
            return Ok(expected);
        }
        let seen = self.decide(state, &|_| (Placement::Absent, None))?;
        let Some(first) = seen.first().copied() else {
            return Ok(expected);
        };
        match expected {
            Some(r) => match seen.iter().zip(&self.keys).find(|(s, _)| **s != r) {
                Some((s, k)) => Err(conflict(Some(k), r, *s)),
                None => Ok(expected),
            },
            None if seen.iter().all(|s| *s == first) => Ok(Some(first)),
            None => Err(Status::invalid_argument(format!(
                "{} may delete several keys at once only with an expected revision they all have",
                self.caller.identity
            ))),
        }
    }

    /// Records the request's outcome: `Ok(revision)` applied, or the error
    /// it ended with.
    pub fn finish(self, outcome: Result<u64, &Status>) {
        if !self.recorded {
            return;
        }
        let time = crate::audit::now();
        let denied = !self.refusals.is_empty();
        let record =
            |key: Option<&ResourceKey>, outcome: &'static str, reason: String, revision| {
                let kind = key.and_then(kind_of).map_or_else(
                    || key.map(|k| k.kind.clone()).unwrap_or_default(),
                    |k| k.to_string(),
                );
                Record {
                    time: time.clone(),
                    identity: self.caller.identity.clone(),
                    role: self.caller.role.label(),
                    verb: self.verb.as_str(),
                    kind,
                    namespace: key.map(|k| k.namespace.clone()).unwrap_or_default(),
                    name: key.map(|k| k.name.clone()).unwrap_or_default(),
                    outcome,
                    reason,
                    revision,
                }
            };
        if self.keys.is_empty() {
            let (outcome, reason, revision) = match outcome {
                Ok(r) => ("applied", String::new(), Some(r)),
                Err(s) => ("failed", s.message().to_string(), None),
            };
            self.audit.record(record(None, outcome, reason, revision));
            return;
        }
        for (i, key) in self.keys.iter().enumerate() {
            let r = match (&outcome, denied) {
                (_, true) => {
                    let reason = self.refusals.iter().find(|(j, _)| *j == i).map_or_else(
                        || "not written: another key of the request was refused".to_string(),
                        |(_, r)| r.to_string(),
                    );
                    record(Some(key), "denied", reason, None)
                }
                (Ok(rev), false) => record(Some(key), "applied", String::new(), Some(*rev)),
                (Err(s), false) => record(Some(key), "failed", s.message().to_string(), None),
            };
            self.audit.record(r);
        }
    }
}

/// The conflict the commit would report, reported before proposing.
fn conflict(key: Option<&ResourceKey>, expected: u64, actual: u64) -> Status {
    let e = ApplyError::Conflict {
        key: key
            .map(|k| Key::from_proto(k).to_string())
            .unwrap_or_default(),
        expected,
        actual,
    };
    Status::failed_precondition(e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use manul_proto::v1::command::Op;
    use manul_proto::v1::{Command, WriteBatch};

    use super::*;
    use crate::audit::AuthzMetrics;
    use crate::authz::Scope;

    fn wep_key(name: &str) -> ResourceKey {
        ResourceKey {
            kind: "workloadendpoint".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn wep(name: &str, node: &str, expected: Option<u64>) -> Write {
        Write {
            key: Some(wep_key(name)),
            value: format!(r#"{{"kind":"WorkloadEndpoint","spec":{{"node":"{node}"}}}}"#)
                .into_bytes()
                .into(),
            expected_revision: expected,
        }
    }

    /// A state holding `a` on n1 at revision 5 and `b` on n1 at 6.
    fn state() -> StateMachine {
        let mut sm = StateMachine::new();
        for (index, name) in [(5, "a"), (6, "b")] {
            let c = Command {
                request_id: 0,
                op: Some(Op::Writes(WriteBatch {
                    writes: vec![wep(name, "n1", None)],
                    deletes: Vec::new(),
                })),
                ..Default::default()
            };
            sm.apply(index, &c).result.unwrap();
        }
        sm
    }

    fn cni_trail(verb: Verb) -> (Trail, AuthzMetrics) {
        let metrics = AuthzMetrics::default();
        let auth = WriteAuth::new(
            Some(RoleMap::new(&Default::default()).unwrap()),
            Audit::disabled(metrics.clone()),
        );
        let caller = Caller {
            identity: "spiffe://manul/node/n1/cni".into(),
            role: Role::Cni(Scope::Node("n1".into())),
        };
        (auth.trail(caller, verb, false), metrics)
    }

    #[test]
    fn writes_are_pinned_to_the_revisions_the_decision_saw() {
        let sm = state();
        let (mut trail, _) = cni_trail(Verb::Apply);
        let mut writes = vec![
            wep("a", "n1", None),
            wep("new", "n1", None),
            wep("b", "n1", Some(6)),
        ];
        trail.keys(writes.iter().filter_map(|w| w.key.clone()));
        trail.authorize_writes(&sm, &mut writes).unwrap();
        let pinned: Vec<_> = writes.iter().map(|w| w.expected_revision).collect();
        assert_eq!(pinned, [Some(5), Some(0), Some(6)]);

        // An expected revision that is not the stored one is a conflict
        // before anything is proposed.
        let (mut trail, _) = cni_trail(Verb::Apply);
        let mut stale = vec![wep("a", "n1", Some(4))];
        trail.keys(stale.iter().filter_map(|w| w.key.clone()));
        let e = trail.authorize_writes(&sm, &mut stale).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().starts_with("revision conflict on"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn a_refusal_is_counted_and_names_every_refused_key() {
        let sm = state();
        let (mut trail, metrics) = cni_trail(Verb::Apply);
        let mut writes = vec![
            wep("a", "n2", None),
            wep("c", "n1", None),
            wep("d", "n3", None),
        ];
        trail.keys(writes.iter().filter_map(|w| w.key.clone()));
        let e = trail.authorize_writes(&sm, &mut writes).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let lines: Vec<&str> = e.message().lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("WorkloadEndpoint default/a: it is on node n2"));
        assert!(lines[1].contains("WorkloadEndpoint default/d: it is on node n3"));
        let counted = metrics
            .refusals
            .get_or_create(&RefusalLabels {
                role: "cni",
                verb: "apply",
            })
            .get();
        assert_eq!(counted, 1);
    }

    #[test]
    fn deletes_are_pinned_too() {
        let sm = state();
        let (mut trail, _) = cni_trail(Verb::Delete);
        trail.keys([wep_key("a")]);
        assert_eq!(trail.authorize_delete(&sm, None).unwrap(), Some(5));
        let (mut trail, _) = cni_trail(Verb::Delete);
        trail.keys([wep_key("a")]);
        let e = trail.authorize_delete(&sm, Some(6)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        // Keys at different revisions need an expected revision.
        let (mut trail, _) = cni_trail(Verb::Delete);
        trail.keys([wep_key("a"), wep_key("b")]);
        let e = trail.authorize_delete(&sm, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
