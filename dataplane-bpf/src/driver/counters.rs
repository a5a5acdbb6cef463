//! The kernel's packet counters, and running a program on a frame with
//! `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};

use super::BpfDriver;
use crate::abi;
use crate::error::BpfError;
use crate::loader::Hook;

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The TC verdict: 0 (`TC_ACT_OK`) passes, 2 (`TC_ACT_SHOT`) drops.
    pub verdict: u32,
    /// The kernel's average time per repetition.
    pub duration: Duration,
    /// The frame as the program left it (translated, or turned into a
    /// refusal).
    pub frame: Vec<u8>,
    /// The packet's `skb->mark` as the program left it.
    pub mark: u32,
}

/// What a packet carries besides its frame, for
/// [`BpfDriver::test_run_skb`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkbMeta {
    /// `skb->mark`.
    pub mark: u32,
    /// `skb->ingress_ifindex`: the interface the packet entered the host
    /// by (0: sent by the host).
    pub ingress_ifindex: u32,
}

impl TestRunOutcome {
    pub fn allowed(&self) -> bool {
        self.verdict == 0
    }
}

/// Kernel-side counters (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    pub packets: u64,
    pub conntrack_hits: u64,
    pub new_allowed: u64,
    pub new_denied: u64,
    pub denied_cached: u64,
    pub no_endpoint: u64,
    pub no_table: u64,
    pub not_ip: u64,
    pub events_lost: u64,
    pub neighbour_discovery: u64,
    /// Packets a host endpoint's untracked (doNotTrack) table allowed or
    /// denied (no flow events: they have no flow state).
    pub untracked_allowed: u64,
    pub untracked_denied: u64,
    /// New connections to a service frontend translated to a backend.
    pub service_nat: u64,
    /// New connections to a frontend without backends, rejected (TCP RST,
    /// ICMP port unreachable) or dropped (other protocols): NAT misses.
    pub service_rejected: u64,
    /// New connections from a pod to a service it backs.
    pub service_hairpin: u64,
    /// Packets of TCP connections whose backend was removed, answered with
    /// a RST.
    pub service_reset: u64,
    /// External connections masqueraded to a node address.
    pub service_snat: u64,
    /// External connections sent to a backend on another node with direct
    /// server return.
    pub service_dsr: u64,
    /// New connections to a `Local` policy's frontend without a backend
    /// on this node (while the service has some elsewhere), dropped.
    pub service_local_dropped: u64,
    /// New external connections dropped because no masquerade port was
    /// free.
    pub service_snat_full: u64,
    /// SCTP the programs cannot translate, dropped: a fragment (with more
    /// to come) whose port would change (its CRC32c covers bytes not in
    /// it).
    pub service_untranslatable: u64,
    /// Packets carrying the DSR option or IPv6 DSR header naming a
    /// frontend no other node sends, dropped.
    pub dsr_untrusted: u64,
    /// Packets between two workloads of this node judged by the
    /// destination's egress logic in the source's program run
    /// ([`BpfConfig::peer_delivery`](crate::BpfConfig)), whatever its
    /// verdict.
    pub peer_judged: u64,
    /// Of those, the ones it allowed, delivered straight into the
    /// destination pod.
    pub peer_delivered: u64,
    /// Packets from a pod whose source was none of its endpoint's
    /// addresses, dropped at its interface.
    pub spoofed: u64,
}

impl BpfDriver {
    /// The other nodes' addresses the programs take a DSR option or header
    /// from (`manul_dsr_node`).
    pub fn dsr_nodes(&self) -> std::collections::BTreeSet<std::net::IpAddr> {
        self.services.dsr_nodes()
    }

    /// The cluster's IP pools the programs hold (`manul_pool`).
    pub fn pools(&self) -> std::collections::BTreeSet<ipnet::IpNet> {
        self.services.pools()
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        let c = self.maps.counters();
        let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        KernelCounters {
            packets: at(abi::MANUL_CNT_PACKETS),
            conntrack_hits: at(abi::MANUL_CNT_CT_HIT),
            new_allowed: at(abi::MANUL_CNT_NEW_ALLOWED),
            new_denied: at(abi::MANUL_CNT_NEW_DENIED),
            denied_cached: at(abi::MANUL_CNT_DENIED_CACHED),
            no_endpoint: at(abi::MANUL_CNT_NO_ENDPOINT),
            no_table: at(abi::MANUL_CNT_NO_TABLE),
            not_ip: at(abi::MANUL_CNT_NOT_IP),
            events_lost: at(abi::MANUL_CNT_EVENTS_LOST),
            neighbour_discovery: at(abi::MANUL_CNT_ND_ALLOWED),
            untracked_allowed: at(abi::MANUL_CNT_UNTRACKED_ALLOWED),
            untracked_denied: at(abi::MANUL_CNT_UNTRACKED_DENIED),
            service_nat: at(abi::MANUL_CNT_SVC_NAT),
            service_rejected: at(abi::MANUL_CNT_SVC_REJECT),
            service_hairpin: at(abi::MANUL_CNT_SVC_HAIRPIN),
            service_reset: at(abi::MANUL_CNT_SVC_RESET),
            service_snat: at(abi::MANUL_CNT_SVC_SNAT),
            service_dsr: at(abi::MANUL_CNT_SVC_DSR),
            service_local_dropped: at(abi::MANUL_CNT_SVC_LOCAL_DROP),
            service_snat_full: at(abi::MANUL_CNT_SVC_SNAT_FULL),
            service_untranslatable: at(abi::MANUL_CNT_SVC_UNTRANSLATABLE),
            dsr_untrusted: at(abi::MANUL_CNT_DSR_UNTRUSTED),
            peer_judged: at(abi::MANUL_CNT_PEER_JUDGED),
            peer_delivered: at(abi::MANUL_CNT_PEER_DELIVERED),
            spoofed: at(abi::MANUL_CNT_SPOOFED),
        }
    }

    /// Runs a hook's program on an Ethernet frame with `BPF_PROG_TEST_RUN`,
    /// as if it arrived on (or left by) interface `ifindex`, which must
    /// exist in the calling thread's network namespace. The program uses
    /// the real maps: conntrack entries and events are created as usual.
    pub fn test_run(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, BpfError> {
        self.run_skb(hook, ifindex, frame, SkbMeta::default(), repeat)
    }

    /// [`Self::test_run`] once, on a packet carrying `meta` (its mark, the
    /// interface it entered the host by).
    pub fn test_run_skb(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        meta: SkbMeta,
    ) -> Result<TestRunOutcome, BpfError> {
        self.run_skb(hook, ifindex, frame, meta, 1)
    }

    fn run_skb(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        meta: SkbMeta,
        repeat: u32,
    ) -> Result<TestRunOutcome, BpfError> {
        let ctx = skb_context(ifindex, meta);
        let mut ctx_out = vec![0u8; ctx.len()];
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.programs.get(hook);
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ctx_out: Some(&mut ctx_out),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| BpfError::program(hook.program(), "BPF_PROG_TEST_RUN", e))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutcome {
            verdict: r.return_value,
            duration: r.duration,
            frame: out,
            mark: skb_field(&ctx_out, std::mem::offset_of!(abi::__sk_buff, mark)),
        })
    }
}

/// A `struct __sk_buff` context with `ifindex` and `meta` set.
fn skb_context(ifindex: u32, meta: SkbMeta) -> Vec<u8> {
    let mut ctx = vec![0u8; std::mem::size_of::<abi::__sk_buff>()];
    for (at, value) in [
        (std::mem::offset_of!(abi::__sk_buff, ifindex), ifindex),
        (std::mem::offset_of!(abi::__sk_buff, mark), meta.mark),
        (
            std::mem::offset_of!(abi::__sk_buff, ingress_ifindex),
            meta.ingress_ifindex,
        ),
    ] {
        ctx[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }
    ctx
}

/// A `u32` field of a `struct __sk_buff` context (0 if short).
fn skb_field(ctx: &[u8], at: usize) -> u32 {
    ctx.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_ne_bytes)
}
