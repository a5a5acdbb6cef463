/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after the FIB helpers and the
 * service NAT): a packet between two workloads of this node, delivered
 * straight into the destination pod (Cilium's "BPF host routing").
 *
 * Without it such a packet is judged by the source's host-side ingress
 * program, routed by the host, and judged again by the destination's
 * host-side egress program. With it (manul_meta[MANUL_META_PEER_DELIVERY]
 * = 1), once the source's ingress allowed and translated a packet:
 *
 * 1. peer_arm: the packet's source must be routed back out of the
 *    interface it came in by (strict reverse path: a workload's own
 *    address, never a spoofed one), its destination must be routed, with
 *    a resolved neighbour, out of another interface that is a workload
 *    endpoint (manul_ep without MANUL_EP_HOST), and its TTL (hop limit)
 *    must allow forwarding. Then the destination's ifindex and the MACs
 *    the host would have used go into this CPU's manul_peer scratch.
 * 2. The ingress program tail-calls the egress program
 *    (manul_peer_prog[0]), which takes the scratch (peer_take) and runs
 *    its whole logic as the destination interface's egress: its own
 *    conntrack entry, policy, verdict, counters, flow event and reverse
 *    service translation, exactly as in the routed path.
 * 3. What that logic allows, peer_deliver sends into the destination pod
 *    (bpf_redirect_peer) with the TTL decremented, the MACs set and the
 *    mark cleared, as the host's forwarding and the veth would have;
 *    what it denies is dropped.
 *
 * Anything else takes the routed path: no scratch written (a failed
 * check), the tail call failing (an empty program array: the scratch is
 * disarmed at once), or the destination's logic ending some other way
 * (its verdict then stands for the packet, and if that is to pass, the
 * host routes it and the egress program judges it again on the
 * destination's hook). The per-CPU scratch cannot be read by another
 * packet: TC programs run with bottom halves off, and the egress program
 * consumes it before doing anything else.
 */
#ifndef MANUL_PEER_H
#define MANUL_PEER_H

#define IP4_TTL_OFF (ETH_HLEN + 8)
#define IP6_HOPLIMIT_OFF (ETH_HLEN + 7)

/* The egress program, for the tail call (written by the driver). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_peer_prog SEC(".maps");

struct peer_scratch {
	/* The destination's host-side interface. */
	__u32 ifindex;
	/* Set by the ingress just before its tail call; taken by the
	 * egress. */
	__u8 armed;
	/* The egress program is running as the destination's hook. */
	__u8 active;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct peer_scratch);
} manul_peer SEC(".maps");

static __always_inline struct peer_scratch *peer_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&manul_peer, &zero);
}

static __always_inline int peer_delivery_on(void)
{
	__u32 slot = MANUL_META_PEER_DELIVERY;
	__u64 *v = bpf_map_lookup_elem(&manul_meta, &slot);

	return v && *v == 1;
}

/* The packet's TTL (hop limit), or 0. */
static __always_inline __u8 peer_ttl(struct __sk_buff *skb, __u8 version)
{
	__u8 ttl = 0;

	if (bpf_skb_load_bytes(skb, version == 4 ? IP4_TTL_OFF : IP6_HOPLIMIT_OFF, &ttl, 1))
		return 0;
	return ttl;
}

/* Step 1, on a workload's ingress, for a packet its program allowed
 * (verdict TC_ACT_OK): 1 when the scratch is armed for the tail call,
 * 0 for the routed path. A global function: it costs handle() no stack. */
__attribute__((noinline)) int peer_arm(struct __sk_buff *skb, const struct pkt *p)
{
	struct manul_ep_value *ep;
	struct bpf_fib_lookup *f;
	struct peer_scratch *s;
	__u32 in, out;

	if (!skb || !p || (p->version != 4 && p->version != 6) || !peer_delivery_on())
		return 0;
	if (peer_ttl(skb, p->version) <= 1)
		return 0;
	in = skb->ifindex;
	/* The source: routed back out of this interface. */
	f = fib_query(skb, p->version, p->proto, p->dst, p->src, p->dport, p->sport);
	if (!f || bpf_fib_lookup(skb, f, sizeof(*f), BPF_FIB_LOOKUP_SKIP_NEIGH) !=
			  BPF_FIB_LKUP_RET_SUCCESS ||
	    f->ifindex != in)
		return 0;
	/* The destination: another workload's interface, its neighbour
	 * known. */
	f = fib_query(skb, p->version, p->proto, p->src, p->dst, p->sport, p->dport);
	if (!f || bpf_fib_lookup(skb, f, sizeof(*f), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	out = f->ifindex;
	if (out == in)
		return 0;
	ep = bpf_map_lookup_elem(&manul_ep, &out);
	if (!ep || (ep->flags & MANUL_EP_HOST))
		return 0;
	s = peer_scratch();
	if (!s)
		return 0;
	s->ifindex = out;
	__builtin_memcpy(s->smac, f->smac, ETH_ALEN);
	__builtin_memcpy(s->dmac, f->dmac, ETH_ALEN);
	s->active = 0;
	s->armed = 1;
	return 1;
}

/* After a failed tail call: the routed path. */
static __always_inline void peer_disarm(void)
{
	struct peer_scratch *s = peer_scratch();

	if (s)
		s->armed = 0;
}

/* Step 2, first thing on the egress hook: the destination's ifindex when
 * the ingress program tail-called this one, else 0. */
static __always_inline __u32 peer_take(void)
{
	struct peer_scratch *s = peer_scratch();

	if (!s)
		return 0;
	s->active = s->armed;
	s->armed = 0;
	if (!s->active)
		return 0;
	count(MANUL_CNT_PEER_JUDGED);
	return s->ifindex;
}

/* Step 3: the packet the destination's egress logic allowed, into the
 * destination pod as the host would have forwarded it. */
__attribute__((noinline)) int peer_deliver(struct __sk_buff *skb, __u32 version)
{
	struct peer_scratch *s = peer_scratch();
	__u8 ttl, next;

	if (!skb || !s)
		return TC_ACT_SHOT;
	ttl = peer_ttl(skb, version);
	if (ttl <= 1)
		return TC_ACT_SHOT;
	next = ttl - 1;
	if (version == 4) {
		/* The TTL is the high byte of its 16-bit word. */
		if (bpf_l3_csum_replace(skb, IP4_CSUM_OFF, bpf_htons((__u16)ttl << 8),
					bpf_htons((__u16)next << 8), 2) ||
		    bpf_skb_store_bytes(skb, IP4_TTL_OFF, &next, 1, 0))
			return TC_ACT_SHOT;
	} else if (bpf_skb_store_bytes(skb, IP6_HOPLIMIT_OFF, &next, 1, 0)) {
		return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, 0, s->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, s->smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	/* As the veth does for a packet crossing into another namespace. */
	skb->mark = 0;
	count(MANUL_CNT_PEER_DELIVERED);
	return bpf_redirect_peer(s->ifindex, 0);
}

/* The end of the egress logic: a verdict for the routed path as it is;
 * on the direct path, an allowed packet delivered, anything else as it
 * is (the scratch no longer active). */
static __always_inline int peer_finish(struct __sk_buff *skb, const struct pkt *p, int verdict)
{
	struct peer_scratch *s = peer_scratch();

	if (!s || !s->active)
		return verdict;
	s->active = 0;
	if (verdict != TC_ACT_OK)
		return verdict;
	return peer_deliver(skb, p->version);
}

#endif /* MANUL_PEER_H */
