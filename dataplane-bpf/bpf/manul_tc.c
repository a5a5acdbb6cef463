// SPDX-License-Identifier: Apache-2.0
/*
 * Manul's TC programs: one for the ingress hook and one for the egress hook
 * of every policed interface. They are loaded once per driver and attached
 * to every interface; all per-interface state is in maps keyed by ifindex,
 * and policy is data (rule bitmaps), so no policy or endpoint change ever
 * loads a program.
 *
 * Per packet: parse (IPv4, IPv6 past its extension headers), find the
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
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct manul_src_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_src SEC(".maps");

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

#include "manul_svc_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct manul_nat_key);
	__type(value, struct manul_nat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_svc_aff_key);
	__type(value, struct manul_svc_aff_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_aff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_if SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct manul_svc_src_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_src SEC(".maps");

/* Flow events: 88 bytes each with the ring's header, so 4 MiB hold about
 * 47,000, a node's 10,000 new connections a second (two events each when
 * both ends are local) for over two seconds of the reader not running.
 * A full ring loses the event (MANUL_CNT_EVENTS_LOST); the conntrack
 * scans recover an allowed connection's start. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} manul_events SEC(".maps");

/* Per-CPU scratch for the rule bitmap being computed (keeps the stack
 * small). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_bitmap);
} manul_scratch SEC(".maps");

/* Per-CPU scratch for a new flow's conntrack entry: the stack of handle()
 * is shared with classify's chain and the service NAT's subprograms
 * (512 bytes in all). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_ct_value);
} manul_ct_scratch SEC(".maps");

/* Per-CPU scratch for a conntrack key looked up beside handle()'s own
 * (ct_reply). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_ct_key);
} manul_ct_key_scratch SEC(".maps");

/* Per-CPU scratch for a manul_src lookup key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manul_src_key);
} manul_src_scratch SEC(".maps");

struct pkt {
	__u8 version;
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 tcp_flags;
	/* 1: a first fragment with more to come (a checksum over the L4
	 * packet covers bytes that are not here). */
	__u8 frag;
	__u8 pad[2];
	__u32 l4_off; /* from the start of the frame */
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

/* IPv6 extension headers the parser skips (RFC 8200 section 4): hop-by-hop
 * options, routing, fragment and destination options. At most this many
 * before the L4 header (each once, destination options twice, and one to
 * spare); a packet with more is malformed. */
#define MANUL_NEXTHDR_HOP 0
#define MANUL_NEXTHDR_ROUTING 43
#define MANUL_NEXTHDR_FRAGMENT 44
#define MANUL_NEXTHDR_DEST 60
#define MANUL_IPV6_EXT_MAX 6

static __always_inline int ipv6_ext(__u8 nh)
{
	return nh == MANUL_NEXTHDR_HOP || nh == MANUL_NEXTHDR_ROUTING ||
	       nh == MANUL_NEXTHDR_FRAGMENT || nh == MANUL_NEXTHDR_DEST;
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
		p->frag = !!(ip->frag_off & bpf_htons(0x2000));
		l4 = (void *)ip + ip->ihl * 4;
		p->l4_off = sizeof(*eth) + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__u32 off = sizeof(*eth) + sizeof(*ip6);
		__u8 nh = ip6->nexthdr;

		p->version = 6;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		l4 = (void *)(ip6 + 1);
		/* Extension headers before the L4 header are skipped, a bounded
		 * number of them; more is malformed. */
#pragma unroll
		for (int i = 0; i < MANUL_IPV6_EXT_MAX; i++) {
			__u8 *h = l4;
			__u32 hlen;

			if (!ipv6_ext(nh))
				break;
			/* Every extension header is at least 8 bytes. */
			if ((void *)(h + 8) > data_end)
				return -1;
			if (nh == MANUL_NEXTHDR_FRAGMENT) {
				/* A non-first fragment carries no L4 header:
				 * ports stay 0. */
				if (*(__u16 *)(h + 2) & bpf_htons(0xfff8)) {
					p->proto = h[0];
					return 0;
				}
				p->frag = h[3] & 1;
				hlen = 8;
			} else {
				hlen = ((__u32)h[1] + 1) * 8;
			}
			nh = h[0];
			l4 += hlen;
			off += hlen;
		}
		if (ipv6_ext(nh))
			return -1;
		p->proto = nh;
		p->l4_off = off;
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

/* Whether the packet (either family) goes the reply way of a connection
 * its interface's conntrack allowed: one its other side opened.
 * Conntrack before any translation, as netfilter's: a pod's packet to a
 * frontend address may be the reply of a host process's connection from
 * that address (a VIP assigned on the node) to the pod. */
static __attribute__((noinline)) int ct_reply(struct __sk_buff *skb, const struct pkt *p)
{
	__u32 zero = 0;
	struct manul_ct_key *k = bpf_map_lookup_elem(&manul_ct_key_scratch, &zero);
	struct manul_ct_value *ct;
	int fwd;

	if (!k || !skb || !p)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	fwd = ct_key(k, skb->ifindex, p);
	ct = bpf_map_lookup_elem(&manul_ct, k);
	return ct && ct->state == MANUL_CT_ALLOWED && fwd != ct->orig_is_a;
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

/* Whether a packet from a workload's pod, as the pod sent it (before any
 * translation here), has one of its endpoint's addresses as source
 * (manul_src); fails closed. */
static __always_inline int source_owned(__u32 ifindex, const struct pkt *p)
{
	__u32 zero = 0;
	struct manul_src_key *k = bpf_map_lookup_elem(&manul_src_scratch, &zero);

	if (!k)
		return 0;
	k->prefixlen = MANUL_SRC_KEY_BASE_BITS + (p->version == 4 ? 32 : 128);
	k->data.ifindex = ifindex;
	k->data.version = p->version;
	k->data.pad[0] = 0;
	k->data.pad[1] = 0;
	k->data.pad[2] = 0;
	__builtin_memcpy(k->data.addr, p->src, 16);
	return bpf_map_lookup_elem(&manul_src, k) != 0;
}

/* Whether the endpoint-to-host action drops a workload's traffic to its
 * own host. */
static __always_inline int to_host_dropped(void)
{
	__u32 slot = MANUL_META_TO_HOST_DROP;
	__u64 *v = bpf_map_lookup_elem(&manul_meta, &slot);

	return v && *v == 1;
}

/* Per-CPU scratch for FIB lookups (64 bytes the stack cannot spare). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_fib_lookup);
} manul_fib_scratch SEC(".maps");

static __always_inline struct bpf_fib_lookup *fib_scratch(void)
{
	__u32 zero = 0;
	struct bpf_fib_lookup *f = bpf_map_lookup_elem(&manul_fib_scratch, &zero);

	if (f)
		__builtin_memset(f, 0, sizeof(*f));
	return f;
}

/* The FIB scratch set up for a packet of IP `version` from `from` to `to`
 * (4 or 16 address bytes; ports in network order) arriving on the
 * interface, or NULL (never: the scratch is always there). */
static __always_inline struct bpf_fib_lookup *fib_query(struct __sk_buff *skb, __u8 version,
							__u8 proto, const void *from,
							const void *to, __u16 from_port,
							__u16 to_port)
{
	struct bpf_fib_lookup *f = fib_scratch();

	if (!f)
		return 0;
	f->ifindex = skb->ifindex;
	f->l4_protocol = proto;
	f->sport = from_port;
	f->dport = to_port;
	if (version == 4) {
		f->family = 2; /* AF_INET */
		__builtin_memcpy(&f->ipv4_src, from, 4);
		__builtin_memcpy(&f->ipv4_dst, to, 4);
	} else {
		f->family = 10; /* AF_INET6 */
		__builtin_memcpy(f->ipv6_src, from, 16);
		__builtin_memcpy(f->ipv6_dst, to, 16);
	}
	return f;
}

/* Whether the FIB has no unicast route out for `to` (a local, broadcast
 * or multicast address), looked up as a packet from `from` arriving on
 * the interface. Needs forwarding enabled, as on any node. Without the
 * scratch (never): not local. */
static __always_inline int fib_local(struct __sk_buff *skb, const struct pkt *p, const __u8 *from,
				     const __u8 *to, __u16 from_port, __u16 to_port)
{
	struct bpf_fib_lookup *f = fib_query(skb, p->version, p->proto, from, to, from_port,
					     to_port);

	if (!f)
		return 0;
	return bpf_fib_lookup(skb, f, sizeof(*f), 0) == BPF_FIB_LKUP_RET_NOT_FWDED;
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

#include "manul_svc_maglev.h"

/* The protocols the service NAT translates. */
static __always_inline int svc_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

#include "manul_sctp.h"

/*
 * Services (kube-proxy replacement), IPv4 TCP, UDP and SCTP, on workload
 * interfaces (IPv6: manul_svc6.h). From a pod (the ingress hook), before policy: a packet to a
 * frontend (manul_svc_fe) is translated to its connection's backend (the
 * forward manul_nat entry, or a backend picked now), so the pod's egress
 * policy and, on the backend's interface, its ingress policy judge the real
 * endpoints, and the backend sees the client's address. To a pod (the
 * egress hook), after policy: a reply from a backend is translated back to
 * the frontend (the reverse entry). A frontend without backends rejects a
 * new connection at once. A pod reaching a service it backs (hairpin) gets
 * its connection from MANUL_HAIRPIN_SNAT_V4, both directions redirected on
 * its own interface.
 *
 * SCTP's checksum is a CRC32c over the SCTP packet only (no pseudo
 * header): an address rewrite leaves it valid, a port rewrite (a
 * targetPort, a masquerade port, and back) patches it (manul_sctp.h).
 * SCTP is never sent with DSR (its option rides on TCP's SYN and on
 * every UDP datagram): in DSR mode it is masqueraded toward another
 * node. A fragment whose port would change (its CRC covers bytes not
 * in it) is dropped (MANUL_CNT_SVC_UNTRANSLATABLE), never let through
 * to the service address.
 */

#define IP4_CSUM_OFF (ETH_HLEN + 10)
#define IP4_SRC_OFF (ETH_HLEN + 12)
#define IP4_DST_OFF (ETH_HLEN + 16)
#define NS_PER_S 1000000000ULL
/* A UDP flow idle this long picks a backend again. */
#define NAT_UDP_IDLE_NS (60 * NS_PER_S)
/* A TCP SYN (without ACK) of a connection whose entry is idle this long
 * is a new connection reusing the port: it picks a backend again. */
#define NAT_SYN_IDLE_NS (5 * NS_PER_S)

/* What the service NAT does to a packet once policy allowed it. */
enum svc_after {
	SVC_NONE = 0,
	/* A reply to a client on this interface: source back to the
	 * frontend. */
	SVC_REVERSE = 1,
	/* Hairpin, from the pod: source to the hairpin address, straight
	 * back into the pod. */
	SVC_HAIRPIN_FWD = 2,
	/* Hairpin reply: source back to the frontend, destination back to
	 * the pod, straight back into the pod. */
	SVC_HAIRPIN_REV = 3,
	/* A local backend's reply to a masqueraded external connection:
	 * destination back to the client (manul_svc_ext.h). */
	SVC_SNAT_REV = 4,
	/* A backend's reply to a host process: source back to the frontend,
	 * into the host through its service device (manul_svc_host.h). */
	SVC_HOST_REV = 5,
};

/* svc_in's `host` for a packet of the host itself on its service device
 * (manul_svc_host.h); 1 is a host interface carried for service NAT. */
#define SVC_FROM_HOST 2

struct svc_nat {
	/* the frontend (SVC_REVERSE, SVC_HAIRPIN_REV), the client
	 * (SVC_SNAT_REV) */
	__u32 addr;
	__u16 port;
	__u8 after; /* enum svc_after */
	__u8 pad;
};

/* The verdict on a packet policy allowed, after the service NAT's last
 * step (`n->after`), for either family: REWRITE(is_src, old address, new
 * address, old port, new port) is the family's rewrite (nonzero: failed),
 * `src` and `dst` the packet's addresses, `back` the address n->port goes
 * with (the frontend; SVC_SNAT_REV: the client), `snat` the hairpin
 * source, each as REWRITE takes them. Expands to a switch that returns. */
#define SVC_AFTER(REWRITE, src, dst, back, snat)                                                 \
	switch (n->after) {                                                                      \
	case SVC_REVERSE:                                                                        \
		return REWRITE(1, src, back, p->sport, n->port) ? TC_ACT_SHOT : TC_ACT_OK;       \
	case SVC_HAIRPIN_FWD:                                                                    \
		if (REWRITE(1, src, snat, p->sport, p->sport))                                   \
			return TC_ACT_SHOT;                                                      \
		return back_to_pod(skb, 0);                                                      \
	case SVC_HAIRPIN_REV:                                                                    \
		/* src: the pod, the reply's sender and its destination. */                     \
		if (REWRITE(1, src, back, p->sport, n->port) ||                                  \
		    REWRITE(0, snat, src, p->dport, p->dport))                                   \
			return TC_ACT_SHOT;                                                      \
		return back_to_pod(skb, 0);                                                      \
	case SVC_SNAT_REV:                                                                       \
		/* A local backend's reply to a masqueraded connection. */                      \
		return REWRITE(0, dst, back, p->dport, n->port) ? TC_ACT_SHOT : TC_ACT_OK;       \
	default:                                                                                 \
		return TC_ACT_SHOT;                                                              \
	}

/* An IPv4 address of a struct pkt, as the IPv4 rewrite takes it. */
static __always_inline __u32 addr4(const __u8 *a)
{
	__u32 x;

	__builtin_memcpy(&x, a, 4);
	return x;
}

/* The offset of a TCP or UDP packet's checksum, and the flag a UDP one's
 * patch needs (a zero result is sent as 0xffff). */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

static __always_inline __u64 l4_mangled(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Rewrites the source or destination port of a TCP or UDP packet of
 * either family, with its checksum. */
static __always_inline int rewrite_port(struct __sk_buff *skb, const struct pkt *p, int is_src,
					__u16 old_port, __u16 new_port)
{
	if (old_port == new_port)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old_port, new_port, l4_mangled(p) | 2))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &new_port, 2, 0))
		return -1;
	return 0;
}

/* Rewrites the source or destination address and port of an IPv4 TCP,
 * UDP or SCTP packet, with its checksums (-1: not rewritten). `addrs`: the old address in the high
 * half, the new in the low; `ports` likewise (all network order). A
 * global function: each call costs the caller no stack (the verifier's
 * 512-byte limit spans the caller and classify). */
static __always_inline int rewrite_here(struct __sk_buff *skb, const struct pkt *p, int is_src,
					__u32 old_addr, __u32 new_addr, __u16 old_port,
					__u16 new_port)
{
	if (p->proto == IPPROTO_SCTP) {
		/* No pseudo header in SCTP's CRC: the address needs the IP
		 * header checksum only; a port its CRC32c patched. */
		if (sctp_rewrite_port(skb, p, is_src, old_port, new_port))
			return -1;
		if (old_addr != new_addr &&
		    (bpf_l3_csum_replace(skb, IP4_CSUM_OFF, old_addr, new_addr, 4) ||
		     bpf_skb_store_bytes(skb, is_src ? IP4_SRC_OFF : IP4_DST_OFF, &new_addr, 4, 0)))
			return -1;
		return 0;
	}
	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, l4_csum_off(p), old_addr, new_addr,
					BPF_F_PSEUDO_HDR | l4_mangled(p) | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, IP4_CSUM_OFF, old_addr, new_addr, 4))
			return -1;
		if (bpf_skb_store_bytes(skb, is_src ? IP4_SRC_OFF : IP4_DST_OFF, &new_addr, 4, 0))
			return -1;
	}
	return rewrite_port(skb, p, is_src, old_port, new_port);
}

__attribute__((noinline)) int svc_rewrite(struct __sk_buff *skb, const struct pkt *p, __u32 is_src,
					  __u64 addrs, __u32 ports)
{
	if (!skb || !p)
		return -1;
	return rewrite_here(skb, p, is_src, addrs >> 32, addrs & 0xffffffff, ports >> 16,
			    ports & 0xffff);
}

static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, int is_src,
				   __u32 old_addr, __u32 new_addr, __u16 old_port, __u16 new_port)
{
	return svc_rewrite(skb, p, is_src, ((__u64)old_addr << 32) | new_addr,
			   ((__u32)old_port << 16) | new_port);
}

static __always_inline int svc_host_deliver(struct __sk_buff *skb);

/* Swaps the frame's MAC addresses and hands it to the pod behind the
 * interface (the peer of the host-side veth), past routing; on a host
 * interface (`host`), sends it back out of the interface it came in by;
 * on the host's service device (SVC_FROM_HOST, manul_svc_host.h), into
 * the host through its ingress. */
static __always_inline int back_to_pod(struct __sk_buff *skb, int host)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	if (host == SVC_FROM_HOST)
		return svc_host_deliver(skb);
	if (host)
		return bpf_redirect(skb->ifindex, 0);
	return bpf_redirect_peer(skb->ifindex, 0);
}

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Turns the TCP header of a segment carrying `payload` bytes into the
 * header of the RST that refuses it (RFC 9293 3.10.7.1): ports swapped,
 * no options, checksum 0 (the caller sums it over its family's pseudo
 * header). Either family's reject uses it. */
static __always_inline void rst_header(struct tcphdr *tcp, __u32 payload)
{
	__u32 seq, ack;
	__u16 port, flags;

	if (tcp->ack) {
		seq = tcp->ack_seq;
		ack = 0;
		flags = bpf_htons(0x5004); /* data offset 5, RST */
	} else {
		seq = 0;
		ack = bpf_htonl(bpf_ntohl(tcp->seq) + payload + tcp->syn + tcp->fin);
		flags = bpf_htons(0x5014); /* data offset 5, RST ACK */
	}
	port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	tcp->seq = seq;
	tcp->ack_seq = ack;
	((__u16 *)tcp)[6] = flags;
	tcp->window = 0;
	tcp->check = 0;
	tcp->urg_ptr = 0;
}

/* Turns a TCP segment to a frontend without backends, or of a connection
 * whose backend is gone, into the RST that refuses it, from the
 * frontend, sent back into the pod. */
static __always_inline int reject_tcp(struct __sk_buff *skb, int host)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);
	__u32 addr, payload;
	struct {
		__u32 src;
		__u32 dst;
		__u8 zero;
		__u8 proto;
		__u16 len;
	} pseudo;
	__s64 sum;

	if ((void *)(tcp + 1) > data_end || ip->ihl != 5 || tcp->rst)
		return TC_ACT_SHOT;
	payload = bpf_ntohs(ip->tot_len);
	if (payload < sizeof(*ip) + tcp->doff * 4)
		return TC_ACT_SHOT;
	payload -= sizeof(*ip) + tcp->doff * 4;
	rst_header(tcp, payload);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*tcp));
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = 64;
	ip->tos = 0;
	ip->check = 0;
	if (bpf_skb_change_tail(skb, sizeof(*eth) + sizeof(*ip) + sizeof(*tcp), 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_SHOT;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
	pseudo.src = ip->saddr;
	pseudo.dst = ip->daddr;
	pseudo.zero = 0;
	pseudo.proto = IPPROTO_TCP;
	pseudo.len = bpf_htons(sizeof(*tcp));
	sum = bpf_csum_diff(0, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	tcp->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)tcp, sizeof(*tcp), (__u32)sum));
	return back_to_pod(skb, host);
}

/* Turns a UDP datagram to a frontend without backends into an ICMP port
 * unreachable carrying its IP header and first 8 bytes, from the
 * frontend, sent back into the pod. */
static __always_inline int reject_udp(struct __sk_buff *skb, int host)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct iphdr *orig;
	__u8 *icmp;

	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return TC_ACT_SHOT;
	/* Room for the new IP and ICMP headers in front of the original IP
	 * header, of which 28 bytes are kept. */
	if (bpf_skb_adjust_room(skb, sizeof(*ip) + 8, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, sizeof(*eth) + 2 * sizeof(*ip) + 16, 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	orig = (void *)(icmp + 8);
	if ((void *)orig + sizeof(*orig) + 8 > data_end)
		return TC_ACT_SHOT;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(2 * sizeof(*ip) + 16);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = orig->daddr;
	ip->daddr = orig->saddr;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
	__builtin_memset(icmp, 0, 8);
	icmp[0] = 3; /* destination unreachable */
	icmp[1] = 3; /* port unreachable */
	*(__u16 *)(icmp + 2) = csum_fold(bpf_csum_diff(0, 0, (__be32 *)icmp, 8 + sizeof(*orig) + 8, 0));
	return back_to_pod(skb, host);
}

/* Refuses a new connection (IPv4): a TCP RST, else an ICMP port
 * unreachable. */
static __always_inline int reject(struct __sk_buff *skb, const struct pkt *p, int host)
{
	if (p->proto == IPPROTO_TCP)
		return reject_tcp(skb, host);
	return reject_udp(skb, host);
}

/* Whether a client's affinity entry, last used at *ts, still holds for
 * frontend `fe`; if so it is used now. Both families' pick. */
static __always_inline int affinity_holds(const struct manul_svc_fe_value *fe, __u64 *ts,
					  __u64 now)
{
	if (now - *ts >= (__u64)fe->affinity_s * NS_PER_S)
		return 0;
	*ts = now;
	return 1;
}

/* Whether a forward entry last seen at `last_seen` still names the
 * connection this packet is of (either family's). */
/* TCP's SYN without ACK: a connection's first packet. */
static __always_inline int tcp_syn_only(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02;
}

static __always_inline int nat_current(__u64 last_seen, const struct pkt *p, __u64 now)
{
	__u64 idle = now - last_seen;

	if (p->proto == IPPROTO_UDP)
		return idle < NAT_UDP_IDLE_NS;
	/* TCP's SYN without ACK */
	if (tcp_syn_only(p))
		return idle < NAT_SYN_IDLE_NS;
	return 1;
}

/* A NAT entry marked for a reset (its backend left) met by a TCP packet:
 * 1 to answer with a RST. A SYN without ACK opens a new connection on
 * the old one's ports (a client reusing a source port): it gets a fresh
 * entry and a live backend, not the old connection's reset. */
static __always_inline int nat_reset(__u8 flags, const struct pkt *p)
{
	return (flags & MANUL_NAT_RESET) && p->proto == IPPROTO_TCP && !tcp_syn_only(p);
}

/* The backend for a new connection: the client's affinity entry while it
 * holds, else the frontend's Maglev slot for the flow when it has a table,
 * else one at random (remembered when the frontend has affinity).
 * `frontend`: the frontend's address as keyed (0 for a node port). */
static __always_inline int svc_pick(const struct manul_svc_fe_value *fe, const struct pkt *p,
				    __u32 frontend, __u64 now, struct manul_svc_be_value *out)
{
	struct manul_svc_aff_key ak = { .id = fe->id };
	struct manul_svc_be_key bk = { .id = fe->id };
	struct manul_svc_aff_value *av;
	struct manul_svc_be_value *be;
	struct manul_svc_be6_value *slot;

	__builtin_memcpy(&ak.client, p->src, 4);
	if (fe->affinity_s) {
		av = bpf_map_lookup_elem(&manul_svc_aff, &ak);
		if (av && affinity_holds(fe, &av->ts_ns, now)) {
			out->addr = av->addr;
			out->port = av->port;
			return 0;
		}
	}
	if (!fe->count)
		return -1;
	slot = maglev_slot(fe, maglev_flow_hash(p->src, frontend, 0, 0, 0, p->sport, p->dport,
						 p->proto));
	if (slot) {
		__builtin_memcpy(&out->addr, slot->addr, 4);
		out->port = slot->port;
	} else {
		bk.index = bpf_get_prandom_u32() % fe->count;
		be = bpf_map_lookup_elem(&manul_svc_be, &bk);
		if (!be)
			return -1;
		out->addr = be->addr;
		out->port = be->port;
	}
	if (fe->affinity_s) {
		struct manul_svc_aff_value nv = { .ts_ns = now, .addr = out->addr, .port = out->port };

		bpf_map_update_elem(&manul_svc_aff, &ak, &nv, BPF_ANY);
	}
	return 0;
}

#include "manul_dsr_trust.h"
#include "manul_pool.h"
#include "manul_svc_ext.h"
#include "manul_svc6.h"
#include "manul_svc_host.h"

/* A packet from a pod, before policy, or (`host`) one arriving at a host
 * interface that the programs carry for service NAT only. Returns -1 to
 * go on (with *p describing the translated packet), or a TC verdict. On a
 * host interface a node port (frontend address 0) is looked up for a
 * packet to one of the node's own addresses (the FIB's verdict), and
 * there is no hairpin. */
static __always_inline int svc_in(struct __sk_buff *skb, struct pkt *p, struct svc_nat *n,
				  __u64 now, int host)
{
	struct manul_svc_fe_key fk = {};
	struct manul_nat_key key = { .sport = p->sport, .dport = p->dport, .proto = p->proto };
	struct manul_svc_be_value be = {};
	struct manul_svc_fe_value *fe;
	struct manul_nat_value *nv;
	/* The connection's forward entry (the masquerade or DSR it has). */
	const struct manul_nat_value *ent;
	__u32 src, dst, hairpin, reject_unknown;
	int rc;

	if (p->version == 6) {
		rc = svc6_in(skb, p, n, now, host);
		if (rc == SVC6_NEW)
			rc = svc6_new(skb, p, now, host);
		if (rc == SVC6_TRANSLATE)
			rc = svc6_translate(skb, p, n, host);
		return rc == SVC6_REFUSE ? svc6_refuse(skb, p, host) : rc;
	}
	if (p->version != 4 || !svc_proto(p->proto))
		return -1;
	__builtin_memcpy(&src, p->src, 4);
	__builtin_memcpy(&dst, p->dst, 4);
	key.src = src;
	key.dst = dst;
	/* A reply to a masqueraded external connection. */
	rc = ext_snat_reply(skb, p, n, host, now);
	if (rc < 0)
		return TC_ACT_SHOT;
	if (rc > 0)
		return host ? TC_ACT_OK : -1;
	if (!host && dst == bpf_htonl(MANUL_HAIRPIN_SNAT_V4)) {
		/* A reply of a hairpinned connection: policy sees it as the
		 * reply of the pod's connection to itself. */
		key.dir = MANUL_NAT_REV;
		nv = bpf_map_lookup_elem(&manul_nat, &key);
		if (!nv || !(nv->flags & MANUL_NAT_HAIRPIN))
			return -1;
		n->after = SVC_HAIRPIN_REV;
		n->addr = nv->addr;
		n->port = nv->port;
		__builtin_memcpy(p->dst, p->src, 4);
		return -1;
	}
	/* A service address at all? */
	fk.addr = dst;
	fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
	fk.port = p->dport;
	fk.proto = p->proto;
	/* A pod's packet to a frontend address is first the reply of a
	 * connection the node tracks from that address (svc_tracked_reply),
	 * wherever it would otherwise be dropped, refused or taken as a new
	 * connection: an established connection's packets pay nothing. */
	if (fe) {
		if (fe->flags & MANUL_SVC_FE_SOURCE_RANGES) {
			struct manul_svc_src_key sk = {
				.prefixlen = 64,
				.data = { .lb = dst, .client = src },
			};

			if (!bpf_map_lookup_elem(&manul_svc_src, &sk)) {
				if (!host && svc_tracked_reply(skb, p, &key, n))
					return -1;
				count(MANUL_CNT_SVC_SOURCE_DENIED);
				return TC_ACT_SHOT;
			}
		}
		reject_unknown = fe->flags & MANUL_SVC_FE_REJECT_UNKNOWN;
		fk.addr = dst;
		fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
		if (!fe) {
			/* Not a port of the frontend's (the reply of a
			 * host process's connection from a VIP?), or a
			 * cluster IP's port or protocol no service has. */
			if (!host && svc_tracked_reply(skb, p, &key, n))
				return -1;
			if (!reject_unknown)
				return -1;
			count(MANUL_CNT_SVC_REJECT);
			return reject(skb, p, host);
		}
	} else {
		/* A pod's packet to no service: a reply to a host process? */
		if (!host) {
			svc_host_reply(&key, n);
			if (n->after)
				return -1;
		}
		/* A node port, on the node's own addresses only (a pod's
		 * too: kube-proxy translates them in prerouting). */
		fk.addr = 0;
		fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
		if (!fe || !to_local_host(skb, p))
			return -1;
	}
	key.dir = MANUL_NAT_FWD;
	nv = bpf_map_lookup_elem(&manul_nat, &key);
	if (nv && nat_reset(nv->flags, p)) {
		/* Its backend is gone: reset the connection. */
		bpf_map_delete_elem(&manul_nat, &key);
		count(MANUL_CNT_SVC_RESET);
		return reject_tcp(skb, host);
	}
	/* A reset-marked entry met by a SYN: a new connection replaces it. */
	if (nv && !(nv->flags & MANUL_NAT_RESET) && nat_current(nv->last_seen_ns, p, now)) {
		nv->last_seen_ns = now;
		be.addr = nv->addr;
		be.port = nv->port;
		hairpin = nv->flags & MANUL_NAT_HAIRPIN;
		ent = nv;
	} else {
		/* Built in per-CPU scratch: the stack is the verifier's
		 * scarcest resource here. */
		__u32 slot = 0;
		struct manul_nat_value *v;

		/* No connection of the frontend's: the reply of one the
		 * node tracks, before a new one? */
		if (!host && svc_tracked_reply(skb, p, &key, n))
			return -1;
		v = bpf_map_lookup_elem(&manul_nat_scratch, &slot);
		if (!v)
			return TC_ACT_SHOT;
		__builtin_memset(v, 0, sizeof(*v));
		/* From inside the cluster (a pod here, the node itself, a
		 * pod of another node at a host interface) to a Local
		 * external frontend: every ready backend. */
		if ((fe->flags & MANUL_SVC_FE_IN_CLUSTER) && (host != 1 || from_pool(p))) {
			struct manul_svc_fe_value *in;

			fk.scope = MANUL_SVC_FE_SCOPE_IN_CLUSTER;
			in = bpf_map_lookup_elem(&manul_svc_fe, &fk);
			if (in)
				fe = in;
			if (host == 1)
				v->flags = MANUL_NAT_POOL;
		}
		v->created_ns = now;
		v->last_seen_ns = now;
		v->id = fe->id;

		if (svc_pick(fe, p, fk.addr, now, &be)) {
			if (fe->flags & MANUL_SVC_FE_DROP_EMPTY) {
				/* Local policy, no backend here: dropped. */
				count(MANUL_CNT_SVC_LOCAL_DROP);
				return TC_ACT_SHOT;
			}
			count(MANUL_CNT_SVC_REJECT);
			return reject(skb, p, host);
		}
		hairpin = !host && be.addr == src;
		if (hairpin)
			v->flags = MANUL_NAT_HAIRPIN;
		if (host == SVC_FROM_HOST)
			v->flags = MANUL_NAT_FROM_HOST;
		v->addr = be.addr;
		v->port = be.port;
		/* A host process's own node port: not masqueraded (it is the
		 * node already; its reply comes back through HOST_REV). A pod
		 * of another node: as Cluster's, but to a backend elsewhere
		 * only. */
		if (host == 1 &&
		    ((fe->flags & MANUL_SVC_FE_EXT_CLUSTER) || (v->flags & MANUL_NAT_POOL)) &&
		    svc_ext_new(skb, p, &be, v, now))
			return TC_ACT_SHOT;
		if (bpf_map_update_elem(&manul_nat, &key, v, BPF_ANY))
			return TC_ACT_SHOT;
		key.src = be.addr;
		key.dst = hairpin ? bpf_htonl(MANUL_HAIRPIN_SNAT_V4) : src;
		key.sport = be.port;
		key.dport = p->sport;
		key.dir = host == SVC_FROM_HOST ? MANUL_NAT_HOST_REV : MANUL_NAT_REV;
		v->addr = dst;
		v->port = p->dport;
		/* DSR: the backend's node writes the reverse entry. */
		if (!(v->flags & MANUL_NAT_DSR) &&
		    bpf_map_update_elem(&manul_nat, &key, v, BPF_ANY))
			return TC_ACT_SHOT;
		/* The forward entry's flags, for what follows. */
		v->addr = be.addr;
		v->port = be.port;
		ent = v;
		count(MANUL_CNT_SVC_NAT);
		if (hairpin)
			count(MANUL_CNT_SVC_HAIRPIN);
	}
	if (rewrite(skb, p, 0, dst, be.addr, p->dport, be.port))
		return TC_ACT_SHOT;
	/* Masqueraded or DSR: the rest in manul_svc_ext.h. */
	if (host && (ent->flags & (MANUL_NAT_SNAT | MANUL_NAT_DSR)))
		return svc_ext_send(skb, p, ent, dst, p->dport);
	__builtin_memcpy(p->dst, &be.addr, 4);
	p->dport = be.port;
	if (hairpin)
		n->after = SVC_HAIRPIN_FWD;
	else if (!host)
		skb->mark |= MANUL_MARK_SVC_FWD;
	return -1;
}

/* A packet to a pod, before policy: is it a backend's reply to a client
 * here? */
static __always_inline void svc_to_pod(const struct pkt *p, struct svc_nat *n)
{
	struct manul_nat_key key = {
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.dir = MANUL_NAT_REV,
	};
	struct manul_nat_value *nv;

	if (p->version == 6) {
		svc6_to_pod(p, n);
		return;
	}
	if (p->version != 4 || !svc_proto(p->proto))
		return;
	__builtin_memcpy(&key.src, p->src, 4);
	__builtin_memcpy(&key.dst, p->dst, 4);
	nv = bpf_map_lookup_elem(&manul_nat, &key);
	if (!nv || (nv->flags & MANUL_NAT_HAIRPIN))
		return;
	n->after = SVC_REVERSE;
	n->addr = nv->addr;
	n->port = nv->port;
}

/* The verdict on a packet policy allowed, after the service NAT's last
 * step. */
static __always_inline int svc_after(struct __sk_buff *skb, const struct pkt *p,
				     const struct svc_nat *n)
{
	__u32 src, snat = bpf_htonl(MANUL_HAIRPIN_SNAT_V4);

	if (n->after == SVC_NONE)
		return TC_ACT_OK;
	if (p->version == 6)
		return svc6_after(skb, p, n);
	if (n->after == SVC_HOST_REV)
		return svc_host_reverse(skb, p, n);
	src = addr4(p->src);
#define REWRITE4(is_src, old, new, old_port, new_port)                                           \
	rewrite(skb, p, is_src, old, new, old_port, new_port)
	SVC_AFTER(REWRITE4, src, addr4(p->dst), n->addr, snat)
#undef REWRITE4
}

/* A packet arriving at a host endpoint's interface (which translates no
 * service) with the DSR option or header: believed, taken off and the
 * connection's REV entry written, or dropped and counted, as on an
 * interface carried for service NAT (dsr_trusted). 1 when it was taken
 * off (parse the packet again), 0 when there is none, -1 to drop. */
static __attribute__((noinline)) int dsr_host_in(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct svc6_scratch *s;

	if (!skb || !p)
		return -1;
	if (p->version == 4)
		return dsr_take_option(skb, p, now);
	s = svc6_scratch();
	if (p->version != 6 || !s)
		return 0;
	return svc6_dsr_take(skb, p, s, now);
}

/* A packet leaving a host endpoint's interface: a backend's reply on a
 * connection whose REV entry a DSR option or header wrote (MANUL_NAT_DSR)
 * gets its source back to the frontend after policy (n->after); nothing
 * else is translated there. */
static __attribute__((noinline)) int dsr_host_reply(const struct pkt *p, struct svc_nat *n)
{
	struct manul_nat_key key = {};
	struct manul_nat_value *nv;
	struct svc6_scratch *s;
	struct manul_nat6_value *nv6;

	if (!p || !n || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return 0;
	if (p->version == 4) {
		__builtin_memcpy(&key.src, p->src, 4);
		__builtin_memcpy(&key.dst, p->dst, 4);
		key.sport = p->sport;
		key.dport = p->dport;
		key.proto = p->proto;
		key.dir = MANUL_NAT_REV;
		nv = bpf_map_lookup_elem(&manul_nat, &key);
		if (!nv || !(nv->flags & MANUL_NAT_DSR))
			return 0;
		n->after = SVC_REVERSE;
		n->addr = nv->addr;
		n->port = nv->port;
		return 0;
	}
	s = svc6_scratch();
	if (p->version != 6 || !s)
		return 0;
	nat6_key_of(s, p, MANUL_NAT_REV);
	nv6 = bpf_map_lookup_elem(&manul_nat6, &s->key);
	if (!nv6 || !(nv6->flags & MANUL_NAT_DSR))
		return 0;
	n->after = SVC_REVERSE;
	addr6_copy(s->frontend, nv6->addr);
	n->port = nv6->port;
	return 0;
}

/* A host interface the programs carry for service NAT only (in
 * manul_svc_if, without an endpoint entry): arriving packets to a
 * frontend are translated to their backend, leaving replies translated
 * back; everything else passes untouched, as without the programs. No
 * policy and no conntrack here: the backend's interface judges the flow. */
static __always_inline int svc_host(struct __sk_buff *skb, __u8 hook)
{
	struct pkt p = {};
	struct svc_nat n = {};
	__u64 now = bpf_ktime_get_ns();
	int rc;

	if (parse(skb, &p) != 0)
		return TC_ACT_OK;
	if (hook == MANUL_HOOK_EGRESS) {
		svc_to_pod(&p, &n);
		if (n.after != SVC_REVERSE)
			return TC_ACT_OK;
		return svc_after(skb, &p, &n);
	}
	/* Direct server return from another node: the option names the
	 * frontend. */
	rc = dsr_take_option(skb, &p, now);
	if (rc < 0)
		return TC_ACT_SHOT;
	if (rc > 0) {
		__builtin_memset(&p, 0, sizeof(p));
		if (parse(skb, &p) != 0)
			return TC_ACT_OK;
	}
	rc = svc_in(skb, &p, &n, now, 1);
	return rc >= 0 ? rc : TC_ACT_OK;
}

#include "manul_peer.h"

/* The verdict on a packet its interface's program allowed (`verdict`,
 * after the service NAT's last step): on a workload's ingress, a packet
 * for another workload of this node goes on to that workload's egress
 * logic and straight into its pod (manul_peer.h); on the egress hook, run
 * for such a packet, it is delivered. */
static __always_inline int allowed_out(struct __sk_buff *skb, const struct pkt *p, __u8 hook,
				       int host, int verdict)
{
	if (hook == MANUL_HOOK_EGRESS)
		return peer_finish(skb, p, verdict);
	if (host || verdict != TC_ACT_OK || !peer_arm(skb, p))
		return verdict;
	bpf_tail_call(skb, &manul_peer_prog, 0);
	peer_disarm();
	return verdict;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 hook)
{
	/* The destination's egress run for a packet delivered into its pod
	 * (manul_peer.h) judges as that interface. */
	__u32 peer = hook == MANUL_HOOK_EGRESS ? peer_take() : 0;
	__u32 ifindex = peer ? peer : skb->ifindex;
	struct manul_ep_value *ep;
	struct pkt p = {};
	struct manul_ct_key k = {};
	struct manul_ct_value *ct;
	struct decision d = {};
	struct svc_nat n = {};
	__u32 table, space, generation, decided;
	__u32 h = hook & 1;
	__u64 now;
	int rc, fwd, host;

	count(MANUL_CNT_PACKETS);
	ep = bpf_map_lookup_elem(&manul_ep, &ifindex);
	if (!ep) {
		if (ifindex == MANUL_LOOPBACK_IFINDEX || ifindex == host_svc_ifindex())
			return svc_host_dev(skb, hook, &p, &n);
		if (bpf_map_lookup_elem(&manul_svc_if, &ifindex))
			return svc_host(skb, hook);
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
	/* From a pod: its source must be its own (anti-spoofing), checked
	 * before the service NAT rewrites anything. */
	if (!host && hook == MANUL_HOOK_INGRESS && !source_owned(ifindex, &p)) {
		count(MANUL_CNT_SPOOFED);
		return TC_ACT_SHOT;
	}
	now = bpf_ktime_get_ns();
	if (host) {
		/* Direct server return from another node. */
		if (hook == MANUL_HOOK_INGRESS) {
			rc = dsr_host_in(skb, &p, now);
			if (rc < 0)
				return TC_ACT_SHOT;
			if (rc > 0) {
				__builtin_memset(&p, 0, sizeof(p));
				if (parse(skb, &p) != 0)
					return TC_ACT_SHOT;
			}
		} else {
			dsr_host_reply(&p, &n);
		}
		rc = untracked(ep, hook, &p);
		if (rc >= 0)
			return rc;
	} else if (hook == MANUL_HOOK_INGRESS) {
		/* Only this program sets its mark bits on a pod's packet. */
		skb->mark &= ~MANUL_MARK_MASK;
		rc = svc_in(skb, &p, &n, now, 0);
		if (rc >= 0)
			return rc;
	} else if (!(skb->mark & MANUL_MARK_SVC_FWD) || !skb->ingress_ifindex) {
		/* Not translated forward by a pod's ingress program here: it
		 * may be a backend's reply. */
		svc_to_pod(&p, &n);
	}

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
			return allowed_out(skb, &p, hook, host, svc_after(skb, &p, &n));
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
		__u32 zero = 0;
		struct manul_ct_value *v = bpf_map_lookup_elem(&manul_ct_scratch, &zero);
		int allowed = rc == MANUL_REASON_FAILSAFE || rc == MANUL_REASON_FORWARD_UNPOLICED ||
			      (rc == MANUL_REASON_POLICY && d.rule.action == MANUL_ACTION_ALLOW);

		/* From a workload (its host-side ingress) to its own host. */
		if (allowed && hook == MANUL_HOOK_INGRESS && !host && to_host_dropped() &&
		    to_local_host(skb, &p)) {
			allowed = 0;
			rc = MANUL_REASON_TO_HOST;
		}
		if (!v)
			return TC_ACT_SHOT;
		__builtin_memset(v, 0, sizeof(*v));
		v->created_ns = now;
		v->last_seen_ns = now;
		v->table = generation;
		v->rule_index = d.index;
		v->orig_is_a = fwd;
		v->hook = hook;
		v->state = allowed ? MANUL_CT_ALLOWED : MANUL_CT_DENIED;
		if (allowed) {
			v->packets[0] = 1;
			v->bytes[0] = p.len;
			v->tcp_flags = tcp_bits(&p, 1);
		}
		if (!manul_no_ct_create)
			bpf_map_update_elem(&manul_ct, &k, v, BPF_ANY);
		emit(ifindex, hook, &p, decided, allowed ? MANUL_VERDICT_ALLOW : MANUL_VERDICT_DENY,
		     rc, rc == MANUL_REASON_POLICY ? &d : 0);
		if (allowed) {
			count(MANUL_CNT_NEW_ALLOWED);
			return allowed_out(skb, &p, hook, host, svc_after(skb, &p, &n));
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
