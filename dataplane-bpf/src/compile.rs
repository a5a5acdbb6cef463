//! The policy compiler: contract state in, rule tables out. No I/O.
//!
//! One table judges one hook of one endpoint (or one [`Stage`] of a host
//! endpoint's policy): the endpoint's tiers (each tier's policies' rules in
//! order, then a tier-default sentinel), then its profiles' rules, then a
//! final no-match sentinel, numbered 0..N ("slots").
//! Log rules take no slot. The kernel finds the slots whose conditions hold
//! for a packet as the AND of a few bitmaps found by lookups, takes the
//! lowest, and follows Pass slots to the end of their tier or profile (see
//! ARCHITECTURE.md, "eBPF dataplane design"). This module computes those
//! bitmaps: for every key the kernel can look up, the set of slots whose
//! conditions of that kind hold for every packet that lands on that key.
//!
//! - Addresses (one trie per side, in the table's address space, see
//!   [`crate::space`]): every prefix a rule of the table names (nets,
//!   not-nets, members of its IP sets) plus a root. A packet's address
//!   lands on its longest inserted prefix P, and the address is inside an
//!   inserted prefix Q exactly when Q contains P, so each condition is
//!   evaluated on P; prefixes inside the same items share a class, and the
//!   table holds one bitmap per class ([`AddrRules::bitmap`]).
//! - Ports (one trie per side): every port range and not-port range cut into
//!   aligned blocks, plus the whole range. The port is in a range exactly
//!   when the range covers the longest matching block.
//! - Named ports (one hash per side): every (address, protocol, port) triple
//!   of a named-port set the table names, evaluated exactly; a triple found
//!   there replaces the port-trie lookup.
//! - Protocols (one trie): IP version, then each protocol a rule names, then
//!   each ICMP type and code; a field not inserted means "none of those a
//!   rule names".

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, DesiredState, IpSet, IpSetMember, Match, Policy, PolicyId, PortRange, Rule,
    TierPolicies,
};

use crate::bitmap::{Bitmap, MAX_SLOTS};

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Which rules of a policy a table uses: from the endpoint's point of view,
/// inbound is traffic to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn rules(self, policy: &Policy) -> &[Rule] {
        match self {
            Direction::Inbound => &policy.inbound,
            Direction::Outbound => &policy.outbound,
        }
    }

    fn tier_policies(self, tier: &TierPolicies) -> &[PolicyId] {
        match self {
            Direction::Inbound => &tier.inbound,
            Direction::Outbound => &tier.outbound,
        }
    }
}

/// Which of an endpoint's policies a table holds, which decides how it
/// ends (Calico's eBPF semantics for host endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// A workload's policy, or a host endpoint's normal tiers: each tier
    /// ends with its default action, then the profiles, then Deny.
    Normal,
    /// A host endpoint's applyOnForward tiers, for traffic forwarded
    /// through the host: each tier ends with its default action; traffic
    /// no tier decided is allowed (there are no profiles).
    Forward,
    /// A host endpoint's preDNAT tiers: a tier without a verdict passes to
    /// the next one, and no verdict at all leaves the packet to the normal
    /// or forward table ([`SlotAction::Next`]).
    PreDnat,
    /// A host endpoint's doNotTrack tiers: as [`Stage::PreDnat`], the
    /// tracked path goes on when they give no verdict.
    Untracked,
}

impl Stage {
    /// Whether a tier without a verdict applies its default action (else
    /// it passes to the next tier).
    fn tier_defaults(self) -> bool {
        matches!(self, Stage::Normal | Stage::Forward)
    }

    /// The action of the final no-match slot.
    fn no_match(self) -> SlotAction {
        match self {
            Stage::Normal => SlotAction::Deny,
            Stage::Forward => SlotAction::Allow,
            Stage::PreDnat | Stage::Untracked => SlotAction::Next,
        }
    }
}

/// Everything that decides a table's shape: endpoints with equal specs share
/// one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSpec {
    pub stage: Stage,
    pub direction: Direction,
    /// Tiers with at least one policy for the direction: name, default
    /// action (Deny or Pass), policies in order.
    pub tiers: Vec<(String, Action, Vec<PolicyId>)>,
    pub profiles: Vec<String>,
}

impl TableSpec {
    /// The spec of one direction of an endpoint's normal policy.
    pub fn new(direction: Direction, tiers: &[TierPolicies], profiles: &[String]) -> Self {
        Self {
            stage: Stage::Normal,
            direction,
            tiers: tiers
                .iter()
                .filter(|t| !direction.tier_policies(t).is_empty())
                .map(|t| {
                    (
                        t.name.clone(),
                        t.default_action,
                        direction.tier_policies(t).to_vec(),
                    )
                })
                .collect(),
            profiles: profiles.to_vec(),
        }
    }

    /// The spec of one direction of a host endpoint's forward, pre-DNAT
    /// or untracked tiers; `None` when no tier has a policy for the
    /// direction (the kernel skips the stage).
    pub fn stage(stage: Stage, direction: Direction, tiers: &[TierPolicies]) -> Option<Self> {
        let spec = Self {
            stage,
            ..Self::new(direction, tiers, &[])
        };
        (stage != Stage::Normal && !spec.tiers.is_empty()).then_some(spec)
    }

    /// The policies, profiles and sets this spec's table reads.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyId> {
        self.tiers.iter().flat_map(|(_, _, p)| p.iter())
    }
}

/// What a slot does when it is the lowest matching one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotAction {
    Allow,
    Deny,
    /// Skip to the slot after `Slot::end`.
    Pass,
    /// No verdict: the next stage of a host endpoint's policy decides.
    Next,
}

/// Where a slot comes from (flow events, and the oracle comparison).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SlotKind {
    Policy { policy: PolicyId, rule_id: String },
    Profile { profile: String, rule_id: String },
    TierDefault { tier: String },
    NoMatch,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    pub action: SlotAction,
    /// For Pass: the last slot of the tier or profile it ends.
    pub end: u32,
    pub kind: SlotKind,
}

/// A key of an address trie: the root, or an inserted prefix (truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpEntry {
    Root,
    Net(IpNet),
}

/// An aligned block of ports: `first` with the low `16 - prefix_len` bits
/// free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBlock {
    pub first: u16,
    pub prefix_len: u8,
}

impl PortBlock {
    pub fn last(&self) -> u16 {
        let free = 16 - u32::from(self.prefix_len);
        (u32::from(self.first) | ((1u32 << free) - 1)) as u16
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last()
    }

    fn inside(&self, range: &PortRange) -> bool {
        range.first <= self.first && self.last() <= range.last
    }
}

/// A key of the protocol trie: each field known only if the ones before it
/// are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtoEntry {
    pub version: u8,
    pub proto: Option<u8>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

impl ProtoEntry {
    /// How many key bytes after the table id are inside the prefix.
    pub fn known_bytes(&self) -> u8 {
        1 + u8::from(self.proto.is_some())
            + u8::from(self.icmp_type.is_some())
            + u8::from(self.icmp_code.is_some())
    }
}

/// An exact named-port triple.
pub type Triple = (IpAddr, u8, u16);

/// A compiled table: the slots, every bitmap the kernel looks up by port
/// and protocol, and the slots' address conditions. Address bitmaps are not
/// part of the table: the prefixes live in the table's address space
/// ([`crate::space`]), which gives each a class, and the table has one
/// bitmap per class ([`AddrRules::bitmap`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledTable {
    pub slots: Vec<Slot>,
    /// Indexed by side: 0 source, 1 destination.
    pub addr: [AddrRules; 2],
    pub port: [Vec<(PortBlock, Bitmap)>; 2],
    pub named: [Vec<(Triple, Bitmap)>; 2],
    pub proto: Vec<(ProtoEntry, Bitmap)>,
}

impl CompiledTable {
    /// How many map entries writing this table takes, class bitmaps and
    /// address entries aside.
    pub fn entry_count(&self) -> usize {
        self.slots.len()
            + self.port.iter().map(Vec::len).sum::<usize>()
            + self.named.iter().map(Vec::len).sum::<usize>()
            + self.proto.len()
    }
}

/// What an address condition names: a network (truncated) or an IP set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrItem {
    Net(IpNet),
    Set(String),
}

/// The address conditions of one slot on one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrMatch {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub sets: Vec<String>,
    pub not_sets: Vec<String>,
}

/// The address conditions of one side of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrRules {
    /// Slots without address conditions on this side (always set).
    pub base: Bitmap,
    /// The other slots, with their conditions.
    pub conditional: Vec<(usize, AddrMatch)>,
}

impl AddrRules {
    /// Every network and set the conditions name: the items of the
    /// table's address space on this side.
    pub fn items(&self) -> BTreeSet<AddrItem> {
        let mut out = BTreeSet::new();
        for (_, m) in &self.conditional {
            out.extend(m.nets.iter().chain(&m.not_nets).copied().map(AddrItem::Net));
            out.extend(m.sets.iter().chain(&m.not_sets).cloned().map(AddrItem::Set));
        }
        out
    }

    /// The slots whose address conditions hold for an address whose
    /// longest inserted prefix lies inside exactly the items of `sig`
    /// (sorted; the root's is empty).
    pub fn bitmap(&self, sig: &[AddrItem]) -> Bitmap {
        let has = |item: AddrItem| sig.binary_search(&item).is_ok();
        let mut b = self.base;
        for (i, m) in &self.conditional {
            let holds = (m.nets.is_empty() || m.nets.iter().any(|n| has(AddrItem::Net(*n))))
                && !m.not_nets.iter().any(|n| has(AddrItem::Net(*n)))
                && m.sets.iter().all(|s| has(AddrItem::Set(s.clone())))
                && !m.not_sets.iter().any(|s| has(AddrItem::Set(s.clone())));
            if holds {
                b.set(*i);
            }
        }
        b
    }
}

/// Why a table cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{slots} rule slots (rules plus tier and final sentinels) exceed the table limit of {max}"
    )]
    TooManyRules { slots: usize, max: usize },
    #[error("policy {0} is missing")]
    MissingPolicy(PolicyId),
    #[error("profile {0:?} is missing")]
    MissingProfile(String),
}

/// A rule with its sets resolved.
struct Resolved<'a> {
    rule: &'a Rule,
    sides: [ResolvedMatch<'a>; 2],
}

struct ResolvedMatch<'a> {
    m: &'a Match,
    named: Vec<Option<&'a IpSet>>,
    not_named: Vec<Option<&'a IpSet>>,
}

impl<'a> ResolvedMatch<'a> {
    fn new(m: &'a Match, state: &'a DesiredState) -> Self {
        let get = |ids: &'a [String]| ids.iter().map(|id| state.ip_sets.get(id)).collect();
        Self {
            m,
            named: get(&m.named_port_sets),
            not_named: get(&m.not_named_port_sets),
        }
    }

    fn has_ip_conditions(&self) -> bool {
        !(self.m.nets.is_empty()
            && self.m.not_nets.is_empty()
            && self.m.ip_sets.is_empty()
            && self.m.not_ip_sets.is_empty())
    }

    fn has_port_conditions(&self) -> bool {
        !(self.m.ports.is_empty()
            && self.m.not_ports.is_empty()
            && self.m.named_port_sets.is_empty()
            && self.m.not_named_port_sets.is_empty())
    }

    /// The port conditions for a port in `block` whose triple is in no
    /// named-port set.
    fn port_holds(&self, block: &PortBlock) -> bool {
        (self.m.ports.is_empty() && self.m.named_port_sets.is_empty()
            || self.m.ports.iter().any(|r| block.inside(r)))
            && !self.m.not_ports.iter().any(|r| block.inside(r))
    }

    /// The port conditions for an exact triple.
    fn triple_holds(&self, (ip, proto, port): Triple) -> bool {
        let in_named =
            |set: &Option<&IpSet>| set.is_some_and(|s| s.contains_named_port(ip, proto, port));
        (self.m.ports.is_empty() && self.m.named_port_sets.is_empty()
            || self.m.ports.iter().any(|r| r.contains(port))
            || self.named.iter().any(in_named))
            && !self.m.not_ports.iter().any(|r| r.contains(port))
            && !self.not_named.iter().any(in_named)
    }
}

impl Resolved<'_> {
    fn proto_holds(&self, e: &ProtoEntry) -> bool {
        let r = self.rule;
        let icmp_matches = |icmp: &manul_dataplane_api::Icmp| {
            matches!(e.proto, Some(ICMP | ICMPV6))
                && e.icmp_type == Some(icmp.icmp_type)
                && icmp.code.is_none_or(|c| e.icmp_code == Some(c))
        };
        r.ip_version.is_none_or(|v| v == e.version)
            && r.protocol.is_none_or(|p| e.proto == Some(p))
            && r.not_protocol.is_none_or(|p| e.proto != Some(p))
            && r.icmp.as_ref().is_none_or(icmp_matches)
            && !r.not_icmp.as_ref().is_some_and(icmp_matches)
    }
}

/// Compiles one table.
pub fn compile(state: &DesiredState, spec: &TableSpec) -> Result<CompiledTable, CompileError> {
    let mut slots = Vec::new();
    // Rules by slot, None for sentinels (which match everything).
    let mut rules: Vec<Option<Resolved<'_>>> = Vec::new();
    for (tier, default, policies) in &spec.tiers {
        let start = slots.len();
        for id in policies {
            let policy = state
                .policies
                .get(id)
                .ok_or_else(|| CompileError::MissingPolicy(id.clone()))?;
            for rule in spec.direction.rules(policy) {
                let kind = SlotKind::Policy {
                    policy: id.clone(),
                    rule_id: rule.id.clone(),
                };
                push_rule(state, &mut slots, &mut rules, rule, kind);
            }
        }
        if spec.stage.tier_defaults() && *default != Action::Pass {
            slots.push(Slot {
                action: SlotAction::Deny,
                end: 0,
                kind: SlotKind::TierDefault { tier: tier.clone() },
            });
            rules.push(None);
        }
        close_group(&mut slots, start);
    }
    for name in &spec.profiles {
        let profile = state
            .profiles
            .get(name)
            .ok_or_else(|| CompileError::MissingProfile(name.clone()))?;
        let start = slots.len();
        for rule in spec.direction.rules(profile) {
            let kind = SlotKind::Profile {
                profile: name.clone(),
                rule_id: rule.id.clone(),
            };
            push_rule(state, &mut slots, &mut rules, rule, kind);
        }
        close_group(&mut slots, start);
    }
    slots.push(Slot {
        action: spec.stage.no_match(),
        end: 0,
        kind: SlotKind::NoMatch,
    });
    rules.push(None);
    if slots.len() > MAX_SLOTS {
        return Err(CompileError::TooManyRules {
            slots: slots.len(),
            max: MAX_SLOTS,
        });
    }

    let mut table = CompiledTable {
        slots,
        ..CompiledTable::default()
    };
    for side in 0..2 {
        table.addr[side] = addr_rules(&rules, side);
        table.port[side] = port_entries(&rules, side);
        table.named[side] = named_entries(&rules, side);
    }
    table.proto = proto_entries(&rules);
    Ok(table)
}

fn push_rule<'a>(
    state: &'a DesiredState,
    slots: &mut Vec<Slot>,
    rules: &mut Vec<Option<Resolved<'a>>>,
    rule: &'a Rule,
    kind: SlotKind,
) {
    let Some(action) = rule_action(rule) else {
        return;
    };
    slots.push(Slot {
        action,
        end: 0,
        kind,
    });
    rules.push(Some(Resolved {
        rule,
        sides: [
            ResolvedMatch::new(&rule.src, state),
            ResolvedMatch::new(&rule.dst, state),
        ],
    }));
}

fn rule_action(rule: &Rule) -> Option<SlotAction> {
    match rule.action {
        Action::Allow => Some(SlotAction::Allow),
        Action::Deny => Some(SlotAction::Deny),
        Action::Pass => Some(SlotAction::Pass),
        Action::Log => None,
    }
}

/// Points the Pass slots of a tier or profile at its last slot.
fn close_group(slots: &mut [Slot], start: usize) {
    let Some(last) = slots.len().checked_sub(1) else {
        return;
    };
    for slot in &mut slots[start..] {
        if slot.action == SlotAction::Pass {
            slot.end = last as u32;
        }
    }
}

/// A bitmap with the bits of every slot set whose condition holds, where
/// `holds` is asked only for rules that have conditions of this kind.
fn bitmap_where<'a>(
    rules: &'a [Option<Resolved<'a>>],
    base: &Bitmap,
    conditional: &[usize],
    holds: impl Fn(&Resolved<'a>) -> bool,
) -> Bitmap {
    let mut b = *base;
    for &i in conditional {
        if let Some(Some(r)) = rules.get(i)
            && holds(r)
        {
            b.set(i);
        }
    }
    b
}

/// Slots without conditions of a kind (always set) and those with.
fn split(
    rules: &[Option<Resolved<'_>>],
    has: impl Fn(&Resolved<'_>) -> bool,
) -> (Bitmap, Vec<usize>) {
    let mut base = Bitmap::default();
    let mut conditional = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        match r {
            Some(r) if has(r) => conditional.push(i),
            _ => base.set(i),
        }
    }
    (base, conditional)
}

fn addr_rules(rules: &[Option<Resolved<'_>>], side: usize) -> AddrRules {
    let (base, conditional) = split(rules, |r| r.sides[side].has_ip_conditions());
    let conditional = conditional
        .into_iter()
        .filter_map(|i| {
            let Some(Some(r)) = rules.get(i) else {
                return None;
            };
            let m = r.sides[side].m;
            let trunc = |nets: &[IpNet]| nets.iter().map(IpNet::trunc).collect();
            Some((
                i,
                AddrMatch {
                    nets: trunc(&m.nets),
                    not_nets: trunc(&m.not_nets),
                    sets: m.ip_sets.clone(),
                    not_sets: m.not_ip_sets.clone(),
                },
            ))
        })
        .collect();
    AddrRules { base, conditional }
}

fn port_entries(rules: &[Option<Resolved<'_>>], side: usize) -> Vec<(PortBlock, Bitmap)> {
    let (base, conditional) = split(rules, |r| r.sides[side].has_port_conditions());
    let mut blocks: BTreeSet<PortBlock> = BTreeSet::new();
    blocks.insert(PortBlock {
        first: 0,
        prefix_len: 0,
    });
    for &i in &conditional {
        let Some(Some(r)) = rules.get(i) else {
            continue;
        };
        let m = r.sides[side].m;
        for range in m.ports.iter().chain(&m.not_ports) {
            blocks.extend(range_blocks(range));
        }
    }
    blocks
        .into_iter()
        .map(|b| {
            (
                b,
                bitmap_where(rules, &base, &conditional, |r| r.sides[side].port_holds(&b)),
            )
        })
        .collect()
}

/// Cuts an inclusive range into the fewest aligned blocks.
pub fn range_blocks(range: &PortRange) -> Vec<PortBlock> {
    let mut out = Vec::new();
    let mut first = u32::from(range.first);
    let last = u32::from(range.last);
    while first <= last {
        let mut free = if first == 0 {
            16
        } else {
            first.trailing_zeros().min(16)
        };
        while first + (1 << free) - 1 > last {
            free -= 1;
        }
        out.push(PortBlock {
            first: first as u16,
            prefix_len: (16 - free) as u8,
        });
        first += 1 << free;
    }
    out
}

fn named_entries(rules: &[Option<Resolved<'_>>], side: usize) -> Vec<(Triple, Bitmap)> {
    let (base, conditional) = split(rules, |r| r.sides[side].has_port_conditions());
    let mut triples: BTreeSet<Triple> = BTreeSet::new();
    for &i in &conditional {
        let Some(Some(r)) = rules.get(i) else {
            continue;
        };
        let s = &r.sides[side];
        for set in s.named.iter().chain(&s.not_named).flatten() {
            triples.extend(set.members.iter().filter_map(|m| match m {
                IpSetMember::NamedPort { ip, protocol, port } => Some((*ip, *protocol, *port)),
                IpSetMember::Net(_) => None,
            }));
        }
    }
    triples
        .into_iter()
        .map(|t| {
            (
                t,
                bitmap_where(rules, &base, &conditional, |r| {
                    r.sides[side].triple_holds(t)
                }),
            )
        })
        .collect()
}

fn proto_entries(rules: &[Option<Resolved<'_>>]) -> Vec<(ProtoEntry, Bitmap)> {
    let (base, conditional) = split(rules, |r| {
        let r = r.rule;
        r.ip_version.is_some()
            || r.protocol.is_some()
            || r.not_protocol.is_some()
            || r.icmp.is_some()
            || r.not_icmp.is_some()
    });
    let mut protos: BTreeSet<u8> = BTreeSet::new();
    let mut icmps: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
    for &i in &conditional {
        let Some(Some(r)) = rules.get(i) else {
            continue;
        };
        let r = r.rule;
        protos.extend(r.protocol.iter().chain(&r.not_protocol));
        for icmp in r.icmp.iter().chain(&r.not_icmp) {
            protos.extend([ICMP, ICMPV6]);
            let codes = icmps.entry(icmp.icmp_type).or_default();
            codes.extend(icmp.code);
        }
    }
    let mut entries = Vec::new();
    for version in [4u8, 6] {
        entries.push(ProtoEntry {
            version,
            proto: None,
            icmp_type: None,
            icmp_code: None,
        });
        for &p in &protos {
            entries.push(ProtoEntry {
                version,
                proto: Some(p),
                icmp_type: None,
                icmp_code: None,
            });
            if p != ICMP && p != ICMPV6 {
                continue;
            }
            for (&t, codes) in &icmps {
                entries.push(ProtoEntry {
                    version,
                    proto: Some(p),
                    icmp_type: Some(t),
                    icmp_code: None,
                });
                for &c in codes {
                    entries.push(ProtoEntry {
                        version,
                        proto: Some(p),
                        icmp_type: Some(t),
                        icmp_code: Some(c),
                    });
                }
            }
        }
    }
    entries
        .into_iter()
        .map(|e| {
            (
                e,
                bitmap_where(rules, &base, &conditional, |r| r.proto_holds(&e)),
            )
        })
        .collect()
}

#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
