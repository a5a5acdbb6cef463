//! Whether the replicas agree on who leads, from each replica's own status
//! (pure). A fault aimed at the leader or at a follower picks its target
//! only from an agreed view: right after a heal the replicas can disagree
//! (one still follows an old leader, another knows none yet, a third
//! leads at a newer term), and a target picked from such a view can be the
//! wrong replica (a "follower" partition that cuts the real leader off).

use std::fmt;

use manul_proto::v1::ReplicaStatus;

/// The view every answering replica shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The leader's index among the replicas (0-based).
    pub leader: usize,
    pub term: u64,
}

/// Why the replicas' statuses name no settled leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSettled {
    /// Fewer than a majority of the replicas answered.
    TooFewAnswered { answered: usize, of: usize },
    /// An answering replica knows no leader (it is a candidate, or has not
    /// heard from one in its term).
    NoLeader { replica: usize, role: String },
    /// The answering replicas name different leaders or terms: each
    /// replica's (leader id, term).
    Disagree { views: Vec<(usize, u64, u64)> },
    /// The leader they agree on did not answer (or is none of them).
    LeaderSilent { id: u64 },
    /// The leader they agree on does not say it leads at their term.
    LeaderDoesNotLead {
        replica: usize,
        role: String,
        term: u64,
    },
}

impl fmt::Display for NotSettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSettled::TooFewAnswered { answered, of } => {
                write!(f, "{answered} of {of} replicas answered")
            }
            NotSettled::NoLeader { replica, role } => {
                write!(f, "typha-{} ({role}) knows no leader", replica + 1)
            }
            NotSettled::Disagree { views } => {
                write!(f, "the replicas disagree:")?;
                for (k, leader, term) in views {
                    write!(f, " typha-{} sees leader {leader} at term {term};", k + 1)?;
                }
                Ok(())
            }
            NotSettled::LeaderSilent { id } => {
                write!(f, "the agreed leader (id {id}) did not answer")
            }
            NotSettled::LeaderDoesNotLead {
                replica,
                role,
                term,
            } => write!(
                f,
                "the agreed leader typha-{} says it is {role} at term {term}",
                replica + 1
            ),
        }
    }
}

/// The leader, when leadership is settled: a majority of the replicas
/// answered, every one that answered names the same leader id at the same
/// term, and that leader answered and says it leads at that term.
/// `statuses[k]` is replica `k`'s own status (`None`: no answer).
pub fn agreed(statuses: &[Option<ReplicaStatus>]) -> Result<Agreed, NotSettled> {
    let answered: Vec<(usize, &ReplicaStatus)> = statuses
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
        .collect();
    if answered.len() < statuses.len() / 2 + 1 {
        return Err(NotSettled::TooFewAnswered {
            answered: answered.len(),
            of: statuses.len(),
        });
    }
    if let Some((k, s)) = answered.iter().find(|(_, s)| s.leader_id == 0) {
        return Err(NotSettled::NoLeader {
            replica: *k,
            role: s.role.clone(),
        });
    }
    let (_, first) = answered[0];
    if answered
        .iter()
        .any(|(_, s)| (s.leader_id, s.term) != (first.leader_id, first.term))
    {
        return Err(NotSettled::Disagree {
            views: answered
                .iter()
                .map(|(k, s)| (*k, s.leader_id, s.term))
                .collect(),
        });
    }
    let (id, term) = (first.leader_id, first.term);
    let Some((leader, s)) = answered.iter().find(|(_, s)| s.id == id) else {
        return Err(NotSettled::LeaderSilent { id });
    };
    if s.role != "leader" {
        return Err(NotSettled::LeaderDoesNotLead {
            replica: *leader,
            role: s.role.clone(),
            term: s.term,
        });
    }
    Ok(Agreed {
        leader: *leader,
        term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replica `id`'s status: its role, the leader it sees, its term.
    fn s(id: u64, role: &str, leader_id: u64, term: u64) -> Option<ReplicaStatus> {
        Some(ReplicaStatus {
            id,
            role: role.into(),
            leader_id,
            term,
            ..ReplicaStatus::default()
        })
    }

    /// A case: its name, the statuses, the verdict.
    type Case = (
        &'static str,
        Vec<Option<ReplicaStatus>>,
        Result<Agreed, NotSettled>,
    );

    #[test]
    fn a_leader_only_when_every_answer_agrees() {
        let settled = |leader, term| Ok(Agreed { leader, term });
        let cases: Vec<Case> = vec![
            (
                "all three agree on replica 2 at term 5",
                vec![
                    s(1, "follower", 2, 5),
                    s(2, "leader", 2, 5),
                    s(3, "follower", 2, 5),
                ],
                settled(1, 5),
            ),
            (
                "one silent, the other two agree",
                vec![s(1, "leader", 1, 4), None, s(3, "follower", 1, 4)],
                settled(0, 4),
            ),
            (
                "ids need not be index + 1",
                vec![s(7, "follower", 9, 2), s(9, "leader", 9, 2), None],
                settled(1, 2),
            ),
            (
                "only one answered",
                vec![None, s(2, "leader", 2, 5), None],
                Err(NotSettled::TooFewAnswered { answered: 1, of: 3 }),
            ),
            (
                "nobody answered",
                vec![None, None, None],
                Err(NotSettled::TooFewAnswered { answered: 0, of: 3 }),
            ),
            (
                "a candidate knows no leader",
                vec![
                    s(1, "follower", 2, 5),
                    s(2, "leader", 2, 5),
                    s(3, "candidate", 0, 6),
                ],
                Err(NotSettled::NoLeader {
                    replica: 2,
                    role: "candidate".into(),
                }),
            ),
            (
                // Just after a leader partition heals: the old leader
                // (replica 1) has not heard from the new one yet.
                "an old leader at an older term beside the new one",
                vec![
                    s(1, "leader", 1, 3),
                    s(2, "follower", 3, 4),
                    s(3, "leader", 3, 4),
                ],
                Err(NotSettled::Disagree {
                    views: vec![(0, 1, 3), (1, 3, 4), (2, 3, 4)],
                }),
            ),
            (
                "a follower still on the old term with the old leader",
                vec![
                    s(1, "follower", 1, 3),
                    s(2, "leader", 2, 4),
                    s(3, "follower", 2, 4),
                ],
                Err(NotSettled::Disagree {
                    views: vec![(0, 1, 3), (1, 2, 4), (2, 2, 4)],
                }),
            ),
            (
                "same leader id, different terms",
                vec![
                    s(1, "follower", 2, 4),
                    s(2, "leader", 2, 5),
                    s(3, "follower", 2, 5),
                ],
                Err(NotSettled::Disagree {
                    views: vec![(0, 2, 4), (1, 2, 5), (2, 2, 5)],
                }),
            ),
            (
                "the agreed leader did not answer",
                vec![s(1, "follower", 3, 5), s(2, "follower", 3, 5), None],
                Err(NotSettled::LeaderSilent { id: 3 }),
            ),
            (
                "the agreed leader is no replica",
                vec![
                    s(1, "follower", 8, 5),
                    s(2, "follower", 8, 5),
                    s(3, "follower", 8, 5),
                ],
                Err(NotSettled::LeaderSilent { id: 8 }),
            ),
            (
                "the agreed leader says it follows",
                vec![
                    s(1, "follower", 2, 5),
                    s(2, "follower", 2, 5),
                    s(3, "follower", 2, 5),
                ],
                Err(NotSettled::LeaderDoesNotLead {
                    replica: 1,
                    role: "follower".into(),
                    term: 5,
                }),
            ),
        ];
        for (name, statuses, want) in cases {
            assert_eq!(agreed(&statuses), want, "{name}");
        }
    }

    #[test]
    fn why_it_is_not_settled_reads_as_a_sentence() {
        let e = agreed(&[s(1, "leader", 1, 3), s(2, "follower", 3, 4), None]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the replicas disagree: typha-1 sees leader 1 at term 3; typha-2 sees leader 3 at term 4;"
        );
    }
}
