// SPDX-License-Identifier: Apache-2.0
/*
 * Manul's TC programs: one for the ingress hook and one for the egress hook
 * of every policed interface. They are loaded once per driver and attached
 * to every interface; all per-interface state is in maps keyed by ifindex,
 * and policy is data (rule bitmaps), so no policy or endpoint change ever
 * loads a program.
 *
 * Per packet: parse (IPv4, IPv6 without extension headers), find the
 * interface's table (no entry: drop), look up conntrack (an allowed flow
 * skips policy), otherwise classify: AND a handful of rule bitmaps found by
 * map lookups (an address is looked up in its table's address space, whose
 * class selects the table's bitmap), take the first set bit, follow Pass rules, create the
 * conntrack entry and emit one flow event.
 *
 * A host endpoint's packet goes through up to three tables (see
 * host_policy): its untracked table on every packet before conntrack;
 * for a new flow, failsafe ports, then its pre-DNAT table (ingress), then
 * its normal table if the packet is to or from the host itself, else its
 * forward table.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "manul_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Benchmarks only (set at load time): classify every packet as a new flow,
 * never creating conntrack entries. */
volatile const __u32 manul_no_ct_create = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct manul_ep_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__type(key, struct manul_addr_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct manul_class_key);
	__type(value, struct manul_bitmap);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_class SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct manul_port_key);
	__type(value, struct manul_bitmap);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct manul_proto_key);
	__type(value, struct manul_bitmap);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct manul_np_key);
	__type(value, struct manul_bitmap);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_np SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct manul_rule_key);
	__type(value, struct manul_rule_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_rule SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* BpfConfig::conntrack_capacity */
	__type(key, struct manul_ct_key);
	__type(value, struct manul_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MANUL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MANUL_META_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct manul_failsafe_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_failsafe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} manul_events SEC(".maps");

/* Per-CPU scratch for the rule bitmap being computed (keeps the stack
 * small). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_bitmap);
} manul_scratch SEC(".maps");

struct pkt {
	__u8 version;
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 tcp_flags;
	__u8 pad[3];
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u32 len;
	__u8 src[16];
	__u8 dst[16];
};

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&manul_cnt, &idx);

	if (c)
		*c += 1;
}

/* 0: parsed IP; 1: not IP (ARP...); -1: malformed. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return -1;
	p->len = skb->len;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return -1;
		if (ip->ihl < 5)
			return -1;
		p->version = 4;
		p->proto = ip->protocol;
		__builtin_memcpy(p->src, &ip->saddr, 4);
		__builtin_memcpy(p->dst, &ip->daddr, 4);
		/* Non-first fragments carry no L4 header: ports stay 0. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		p->version = 6;
		p->proto = ip6->nexthdr;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		l4 = (void *)(ip6 + 1);
	} else {
		return 1;
	}

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* UDP and SCTP both start with the two ports. */
		__u16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			return -1;
		p->sport = ports[0];
		p->dport = ports[1];
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *icmp = l4;

		if ((void *)(icmp + 8) > data_end)
			return -1;
		p->icmp_type = icmp[0];
		p->icmp_code = icmp[1];
		/* Echo request/reply: the identifier tells flows apart. */
		if ((p->proto == IPPROTO_ICMP && (icmp[0] == 8 || icmp[0] == 0)) ||
		    (p->proto == IPPROTO_ICMPV6 && (icmp[0] == 128 || icmp[0] == 129))) {
			__u16 id = *(__u16 *)(icmp + 4);

			p->sport = id;
			p->dport = id;
		}
		break;
	}
	default:
		break;
	}
	return 0;
}

static __always_inline void and_into(struct manul_bitmap *acc, const struct manul_bitmap *b)
{
	for (int i = 0; i < MANUL_BITMAP_WORDS; i++)
		acc->w[i] &= b->w[i];
}

/* Trailing zeros of a non-zero word, without branches (a branchy version
 * multiplies the verifier's states): popcount of the bits below the lowest
 * set one. */
static __always_inline int ctz64(__u64 w)
{
	__u64 x = (w & -w) - 1;

	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (int)((x * 0x0101010101010101ULL) >> 56);
}

/* The first set bit at or after `from`, or -1. */
static __always_inline int first_set(const struct manul_bitmap *acc, __u32 from)
{
	for (int i = 0; i < MANUL_BITMAP_WORDS; i++) {
		__u64 w = acc->w[i];
		__u32 base = i * 64;

		if (base + 63 < from)
			continue;
		if (base < from)
			w &= ~((1ULL << (from - base)) - 1);
		if (w)
			return base + ctz64(w);
	}
	return -1;
}

/* The rule bitmap of the address conditions on one side: the class of the
 * address's longest prefix in the space, then the table's bitmap for it. */
static __always_inline const struct manul_bitmap *
addr_bitmap(__u32 table, __u32 space, __u8 side, const struct pkt *p, const __u8 *addr)
{
	struct manul_addr_key ak = {
		.prefixlen = MANUL_ADDR_KEY_BASE_BITS + (p->version == 4 ? 32 : 128),
		.data = { .space = space, .side = side, .version = p->version },
	};
	struct manul_class_key ck = { .table = table, .side = side };
	__u32 *cls;

	__builtin_memcpy(ak.data.addr, addr, 16);
	cls = bpf_map_lookup_elem(&manul_addr, &ak);
	if (!cls)
		return 0;
	ck.class_id = *cls;
	return bpf_map_lookup_elem(&manul_class, &ck);
}

/* The rule bitmap of the port conditions on one side. */
static __always_inline const struct manul_bitmap *
port_bitmap(__u32 table, __u8 side, const struct pkt *p, const __u8 *addr, __u16 port_net)
{
	struct manul_np_key nk = {
		.table = table,
		.side = side,
		.version = p->version,
		.proto = p->proto,
		.port = bpf_ntohs(port_net),
	};
	const struct manul_bitmap *b;
	struct manul_port_key pk = {
		.prefixlen = MANUL_PORT_KEY_BASE_BITS + 16,
		.data = { .table = table, .side = side },
	};

	__builtin_memcpy(nk.addr, addr, 16);
	b = bpf_map_lookup_elem(&manul_np, &nk);
	if (b)
		return b;
	__builtin_memcpy(pk.data.port, &port_net, 2);
	return bpf_map_lookup_elem(&manul_port, &pk);
}

struct decision {
	__s32 index;
	struct manul_rule_value rule;
};

/* One step of the walk over matching slots: the lowest set bit at or after
 * `from` decides, unless it is a Pass, which moves `from` past its tier.
 * Run by bpf_loop so that the verifier checks it once. */
struct pass_ctx {
	__u32 table;
	__u32 from;
	__s32 index;
	int result;
	struct manul_rule_value rule;
};

static long pass_step(__u32 i, void *data)
{
	struct pass_ctx *c = data;
	__u32 zero = 0;
	struct manul_bitmap *acc = bpf_map_lookup_elem(&manul_scratch, &zero);
	struct manul_rule_key rk = { .table = c->table };
	struct manul_rule_value *rv;
	int idx;

	if (!acc)
		return 1;
	idx = first_set(acc, c->from);
	if (idx < 0)
		return 1;
	rk.index = idx;
	rv = bpf_map_lookup_elem(&manul_rule, &rk);
	if (!rv)
		return 1;
	if (rv->action == MANUL_ACTION_PASS) {
		if (rv->end + 1 >= MANUL_MAX_RULES)
			return 1;
		c->from = rv->end + 1;
		return 0;
	}
	c->index = idx;
	c->rule = *rv;
	c->result = MANUL_REASON_POLICY;
	return 1;
}

/* Classifies a new flow against a table. Returns 0 with the deciding rule,
 * or a MANUL_REASON_* explaining a drop without a rule. A global function:
 * the verifier checks it once, however many tables a packet goes through
 * (a host endpoint's untracked, pre-DNAT and normal or forward ones). */
__attribute__((noinline)) int classify(__u32 table, __u32 space, const struct pkt *p,
				       struct decision *d)
{
	__u32 zero = 0;
	struct manul_bitmap *acc = bpf_map_lookup_elem(&manul_scratch, &zero);
	const struct manul_bitmap *b;
	struct manul_proto_key prk = {
		.prefixlen = MANUL_PROTO_KEY_BASE_BITS + 32,
		.data = { .table = table },
	};
	__u16 sport, dport;

	if (!acc || !p || !d)
		return MANUL_REASON_NO_TABLE;
	prk.data.version = p->version;
	prk.data.proto = p->proto;
	prk.data.icmp_type = p->icmp_type;
	prk.data.icmp_code = p->icmp_code;
	sport = p->sport;
	dport = p->dport;
	/* ICMP "ports" are only conntrack identifiers: rules see port 0. */
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		sport = 0;
		dport = 0;
	}

	b = bpf_map_lookup_elem(&manul_proto, &prk);
	if (!b)
		return MANUL_REASON_NO_TABLE;
	__builtin_memcpy(acc, b, sizeof(*acc));

	b = addr_bitmap(table, space, MANUL_SIDE_SRC, p, p->src);
	if (!b)
		return MANUL_REASON_NO_TABLE;
	and_into(acc, b);

	b = addr_bitmap(table, space, MANUL_SIDE_DST, p, p->dst);
	if (!b)
		return MANUL_REASON_NO_TABLE;
	and_into(acc, b);

	b = port_bitmap(table, MANUL_SIDE_SRC, p, p->src, sport);
	if (!b)
		return MANUL_REASON_NO_TABLE;
	and_into(acc, b);

	b = port_bitmap(table, MANUL_SIDE_DST, p, p->dst, dport);
	if (!b)
		return MANUL_REASON_NO_TABLE;
	and_into(acc, b);

	{
		struct pass_ctx c = { .table = table, .result = MANUL_REASON_NO_RULE };

		bpf_loop(MANUL_MAX_PASSES, pass_step, &c, 0);
		if (c.result == MANUL_REASON_POLICY) {
			d->index = c.index;
			d->rule = c.rule;
		}
		return c.result;
	}
}

/* Orders the flow's endpoints; returns 1 when the packet's source is `a`. */
static __always_inline int ct_key(struct manul_ct_key *k, __u32 ifindex, const struct pkt *p)
{
	int src_first = 0, decided = 0;

	for (int i = 0; i < 16; i++) {
		if (!decided && p->src[i] != p->dst[i]) {
			src_first = p->src[i] < p->dst[i];
			decided = 1;
		}
	}
	if (!decided)
		src_first = bpf_ntohs(p->sport) <= bpf_ntohs(p->dport);
	k->ifindex = ifindex;
	k->proto = p->proto;
	k->version = p->version;
	if (src_first) {
		__builtin_memcpy(k->addr_a, p->src, 16);
		__builtin_memcpy(k->addr_b, p->dst, 16);
		k->port_a = p->sport;
		k->port_b = p->dport;
	} else {
		__builtin_memcpy(k->addr_a, p->dst, 16);
		__builtin_memcpy(k->addr_b, p->src, 16);
		k->port_a = p->dport;
		k->port_b = p->sport;
	}
	return src_first;
}

static __always_inline __u8 tcp_bits(const struct pkt *p, int fwd)
{
	__u8 f = p->tcp_flags, bits = 0;

	if (p->proto != IPPROTO_TCP)
		return 0;
	if (f & 0x02) /* SYN */
		bits |= fwd ? MANUL_TCP_SYN_FWD : MANUL_TCP_SYN_REV;
	if (f & 0x01) /* FIN */
		bits |= fwd ? MANUL_TCP_FIN_FWD : MANUL_TCP_FIN_REV;
	if (f & 0x04) /* RST */
		bits |= MANUL_TCP_RST;
	if ((f & 0x10) && !fwd) /* ACK from the responder */
		bits |= MANUL_TCP_ACK_REV;
	return bits;
}

static __always_inline void emit(__u32 ifindex, __u8 hook, const struct pkt *p, __u32 table,
				 __u8 verdict, __u8 reason, const struct decision *d)
{
	struct manul_event *e = bpf_ringbuf_reserve(&manul_events, sizeof(*e), 0);

	if (!e) {
		count(MANUL_CNT_EVENTS_LOST);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->table = table;
	e->hook = hook;
	e->verdict = verdict;
	e->reason = reason;
	e->proto = p->proto;
	e->version = p->version;
	e->reserved = 0;
	e->reserved2 = 0;
	if (d) {
		e->rule_index = d->index;
		e->policy = d->rule.policy;
		e->rule = d->rule.rule;
		e->kind = d->rule.kind;
	} else {
		e->rule_index = 0;
		e->policy = 0;
		e->rule = 0;
		e->kind = MANUL_RULE_NO_MATCH;
	}
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->sport = bpf_ntohs(p->sport);
	e->dport = bpf_ntohs(p->dport);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int is_neighbour_discovery(const struct pkt *p)
{
	return p->version == 6 && p->proto == IPPROTO_ICMPV6 && p->icmp_type >= 133 &&
	       p->icmp_type <= 137;
}

/* Whether the endpoint-to-host action drops a workload's traffic to its
 * own host. */
static __always_inline int to_host_dropped(void)
{
	__u32 slot = MANUL_META_TO_HOST_DROP;
	__u64 *v = bpf_map_lookup_elem(&manul_meta, &slot);

	return v && *v == 1;
}

/* Whether the FIB has no unicast route out for `to` (a local, broadcast
 * or multicast address), looked up as a packet from `from` arriving on
 * the interface. Needs forwarding enabled, as on any node. */
static __always_inline int fib_local(struct __sk_buff *skb, const struct pkt *p, const __u8 *from,
				     const __u8 *to, __u16 from_port, __u16 to_port)
{
	struct bpf_fib_lookup f = {};

	f.ifindex = skb->ifindex;
	f.l4_protocol = p->proto;
	f.sport = from_port;
	f.dport = to_port;
	if (p->version == 4) {
		f.family = 2; /* AF_INET */
		__builtin_memcpy(&f.ipv4_src, from, 4);
		__builtin_memcpy(&f.ipv4_dst, to, 4);
	} else {
		f.family = 10; /* AF_INET6 */
		__builtin_memcpy(f.ipv6_src, from, 16);
		__builtin_memcpy(f.ipv6_dst, to, 16);
	}
	return bpf_fib_lookup(skb, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* Whether the packet is for this host rather than forwarded. */
static __always_inline int to_local_host(struct __sk_buff *skb, const struct pkt *p)
{
	return fib_local(skb, p, p->src, p->dst, p->sport, p->dport);
}

/* Whether a leaving packet was sent by this host rather than forwarded:
 * its source is one of the host's addresses. */
static __always_inline int from_local_host(struct __sk_buff *skb, const struct pkt *p)
{
	return fib_local(skb, p, p->dst, p->src, p->dport, p->sport);
}

/* Whether a new flow on a host endpoint is to (its ingress, for the host)
 * or from (its egress) a failsafe port. */
static __always_inline int failsafe(struct __sk_buff *skb, __u8 hook, const struct pkt *p)
{
	struct manul_failsafe_key k = {
		.outbound = hook == MANUL_HOOK_EGRESS,
		.proto = p->proto,
		.port = bpf_ntohs(p->dport),
	};

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 0;
	if (!bpf_map_lookup_elem(&manul_failsafe, &k))
		return 0;
	/* Inbound: only what is for the host itself, not forwarded traffic. */
	return k.outbound || to_local_host(skb, p);
}

/* Whether a packet belongs to a failsafe flow in either direction (to a
 * failsafe port of its direction, or from one of the other direction: a
 * reply). Such packets skip the untracked table, so that doNotTrack policy
 * cannot cut a node off either; the tracked path judges them as usual. */
static __always_inline int failsafe_packet(__u8 hook, const struct pkt *p)
{
	__u8 out = hook == MANUL_HOOK_EGRESS;
	struct manul_failsafe_key to = { .outbound = out, .proto = p->proto,
					 .port = bpf_ntohs(p->dport) };
	struct manul_failsafe_key reply = { .outbound = !out, .proto = p->proto,
					    .port = bpf_ntohs(p->sport) };

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 0;
	return bpf_map_lookup_elem(&manul_failsafe, &to) ||
	       bpf_map_lookup_elem(&manul_failsafe, &reply);
}

/* What a remembered denial is checked against: every table a new flow on
 * this hook may consult, mixed (the normal table's id alone when there is
 * no other). Table ids are never reused, so a change to any of them
 * re-evaluates the flow. */
static __always_inline __u32 hook_generation(const struct manul_ep_value *ep, __u32 h)
{
	return ep->table[h] ^ (ep->stage_table[h][MANUL_STAGE_PRE_DNAT] * 0x9e3779b1u) ^
	       (ep->stage_table[h][MANUL_STAGE_FORWARD] * 0x85ebca77u);
}

/* A new flow on a host endpoint, failsafe ports aside: the pre-DNAT
 * table (arriving traffic; a verdict there is final), then the normal
 * table for traffic to or from the host itself, or the forward table for
 * traffic forwarded through it (none: allowed). Sets *table to the table
 * that decided. */
static __always_inline int host_policy(struct __sk_buff *skb, const struct manul_ep_value *ep,
				       __u8 hook, const struct pkt *p, struct decision *d,
				       __u32 *table)
{
	__u32 h = hook & 1;
	__u32 t = ep->stage_table[h][MANUL_STAGE_PRE_DNAT];
	__u32 s = ep->stage_space[h][MANUL_STAGE_PRE_DNAT];
	int rc, local;

	if (t && hook == MANUL_HOOK_INGRESS) {
		*table = t;
		rc = classify(t, s, p, d);
		if (rc != MANUL_REASON_POLICY || d->rule.action != MANUL_ACTION_NEXT)
			return rc;
	}
	local = hook == MANUL_HOOK_INGRESS ? to_local_host(skb, p) : from_local_host(skb, p);
	if (local) {
		t = ep->table[h];
		s = ep->space[h];
	} else {
		t = ep->stage_table[h][MANUL_STAGE_FORWARD];
		s = ep->stage_space[h][MANUL_STAGE_FORWARD];
		if (!t) {
			*table = 0;
			return MANUL_REASON_FORWARD_UNPOLICED;
		}
	}
	*table = t;
	return classify(t, s, p, d);
}

/* The untracked table's verdict on any packet of a host endpoint:
 * TC_ACT_OK or TC_ACT_SHOT when it decides, -1 when the tracked path goes
 * on. */
static __always_inline int untracked(const struct manul_ep_value *ep, __u8 hook,
				     const struct pkt *p)
{
	__u32 h = hook & 1;
	__u32 t = ep->stage_table[h][MANUL_STAGE_UNTRACKED];
	struct decision d = {};
	int rc;

	if (!t || failsafe_packet(hook, p))
		return -1;
	rc = classify(t, ep->stage_space[h][MANUL_STAGE_UNTRACKED], p, &d);
	if (rc == MANUL_REASON_POLICY && d.rule.action == MANUL_ACTION_NEXT)
		return -1;
	if (rc == MANUL_REASON_POLICY && d.rule.action == MANUL_ACTION_ALLOW) {
		count(MANUL_CNT_UNTRACKED_ALLOWED);
		return TC_ACT_OK;
	}
	count(MANUL_CNT_UNTRACKED_DENIED);
	return TC_ACT_SHOT;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 hook)
{
	__u32 ifindex = skb->ifindex;
	struct manul_ep_value *ep;
	struct pkt p = {};
	struct manul_ct_key k = {};
	struct manul_ct_value *ct;
	struct decision d = {};
	__u32 table, space, generation, decided;
	__u32 h = hook & 1;
	__u64 now;
	int rc, fwd, host;

	count(MANUL_CNT_PACKETS);
	ep = bpf_map_lookup_elem(&manul_ep, &ifindex);
	if (!ep) {
		count(MANUL_CNT_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}
	/* Read together: one manul_ep update flips them all. */
	table = ep->table[h];
	space = ep->space[h];
	host = ep->flags & MANUL_EP_HOST;
	rc = parse(skb, &p);
	if (rc == 1) {
		/* ARP and other non-IP traffic of a programmed endpoint. */
		count(MANUL_CNT_NOT_IP);
		return table ? TC_ACT_OK : TC_ACT_SHOT;
	}
	if (rc < 0 || !table) {
		count(MANUL_CNT_NO_TABLE);
		return TC_ACT_SHOT;
	}
	if (is_neighbour_discovery(&p)) {
		count(MANUL_CNT_ND_ALLOWED);
		return TC_ACT_OK;
	}
	if (host) {
		rc = untracked(ep, hook, &p);
		if (rc >= 0)
			return rc;
	}

	now = bpf_ktime_get_ns();
	generation = hook_generation(ep, h);
	fwd = ct_key(&k, ifindex, &p);
	ct = bpf_map_lookup_elem(&manul_ct, &k);
	if (ct) {
		if (ct->state == MANUL_CT_ALLOWED) {
			int dir = (fwd == ct->orig_is_a) ? 0 : 1;

			count(MANUL_CNT_CT_HIT);
			ct->last_seen_ns = now;
			__sync_fetch_and_add(&ct->packets[dir], 1);
			__sync_fetch_and_add(&ct->bytes[dir], p.len);
			ct->tcp_flags |= tcp_bits(&p, dir == 0);
			return TC_ACT_OK;
		}
		if (ct->state == MANUL_CT_DENIED && ct->table == generation) {
			count(MANUL_CNT_DENIED_CACHED);
			ct->last_seen_ns = now;
			return TC_ACT_SHOT;
		}
	}

	decided = table;
	if (host && failsafe(skb, hook, &p))
		rc = MANUL_REASON_FAILSAFE;
	else if (host)
		rc = host_policy(skb, ep, hook, &p, &d, &decided);
	else
		rc = classify(table, space, &p, &d);
	{
		struct manul_ct_value v = {
			.created_ns = now,
			.last_seen_ns = now,
			.table = generation,
			.rule_index = d.index,
			.orig_is_a = fwd,
			.hook = hook,
		};
		int allowed = rc == MANUL_REASON_FAILSAFE || rc == MANUL_REASON_FORWARD_UNPOLICED ||
			      (rc == MANUL_REASON_POLICY && d.rule.action == MANUL_ACTION_ALLOW);

		/* From a workload (its host-side ingress) to its own host. */
		if (allowed && hook == MANUL_HOOK_INGRESS && !host && to_host_dropped() &&
		    to_local_host(skb, &p)) {
			allowed = 0;
			rc = MANUL_REASON_TO_HOST;
		}
		v.state = allowed ? MANUL_CT_ALLOWED : MANUL_CT_DENIED;
		if (allowed) {
			v.packets[0] = 1;
			v.bytes[0] = p.len;
			v.tcp_flags = tcp_bits(&p, 1);
		}
		if (!manul_no_ct_create)
			bpf_map_update_elem(&manul_ct, &k, &v, BPF_ANY);
		emit(ifindex, hook, &p, decided, allowed ? MANUL_VERDICT_ALLOW : MANUL_VERDICT_DENY,
		     rc, rc == MANUL_REASON_POLICY ? &d : 0);
		if (allowed) {
			count(MANUL_CNT_NEW_ALLOWED);
			return TC_ACT_OK;
		}
		count(MANUL_CNT_NEW_DENIED);
		return TC_ACT_SHOT;
	}
}

SEC("classifier")
int manul_ingress(struct __sk_buff *skb)
{
	return handle(skb, MANUL_HOOK_INGRESS);
}

SEC("classifier")
int manul_egress(struct __sk_buff *skb)
{
	return handle(skb, MANUL_HOOK_EGRESS);
}
