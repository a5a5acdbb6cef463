/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after the IPv4 service functions and
 * manul_svc_ext.h, whose family-neutral helpers it uses): the service NAT
 * over IPv6, TCP, UDP and SCTP, in maps of its own (manul_svc_fe6,
 * manul_svc_be6, manul_nat6, manul_svc_aff6, manul_svc_src6), with the
 * IPv4 steps. On workload interfaces: a frontend's new connection gets
 * its backend (affinity, Maglev, or random), a forward and a reverse NAT
 * entry, and its destination rewritten before policy; a reply gets its
 * source back after policy; a frontend without backends, or a cluster
 * IP's unknown port, refuses at once (TCP RST, ICMPv6 port unreachable);
 * a pod reaching a service it backs gets its connection from
 * MANUL_HAIRPIN_SNAT_V6. On the host's service device (SVC_FROM_HOST,
 * manul_svc_host.h): a host process's connection, as a pod's but with
 * its reverse entry as MANUL_NAT_HOST_REV, sent on by the FIB from
 * svc6_translate; its reply, found on the backend's interface, goes back
 * into the host through the device (svc6_after). On host interfaces
 * carried for service NAT:
 * node ports (frontend ::, to the node's own addresses), external and
 * load-balancer addresses (with their source ranges), under the Local
 * policy (local backends, client kept) or Cluster: in SNAT mode the
 * client masqueraded to the node's address toward the backend and a port
 * of MANUL_SNAT_PORT_MIN..MAX, as manul_svc_ext.h does for IPv4; in DSR
 * mode a backend on another node gets the client's own address and the
 * frontend in a Destination Options header (MANUL_DSR6_*: TCP's SYN,
 * every UDP datagram that fits its route with it), which the backend's
 * node takes off where the packet arrives, writing the connection's REV
 * entry from it, so it answers the client directly from the frontend.
 *
 * IPv6 has no header checksum: a rewrite patches the TCP or UDP checksum
 * by the difference of the 16-byte addresses (pseudo header) and of the
 * ports; SCTP's CRC32c has no pseudo header, so its addresses are just
 * stored, and a port change patches it (manul_sctp.h). The parser
 * skips extension headers to the L4 header (p->l4_off); the DSR header
 * is added only to a packet that has none of its own.
 *
 * Everything large lives in a per-CPU map value, not on the stack: the
 * verifier's 512 bytes span the calling program and classify's chain.
 * Each entry point is a subprogram (noinline) so its frame is its own.
 */
#ifndef MANUL_SVC6_H
#define MANUL_SVC6_H

/* manul_svc_fe6 and manul_svc_be6 are in manul_svc_maps.h (the
 * connect-time load balancer reads them too). */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct manul_nat6_key);
	__type(value, struct manul_nat6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_nat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_svc_aff6_key);
	__type(value, struct manul_svc_aff6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_aff6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct manul_svc_src6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_src6 SEC(".maps");

#define IP6_SRC_OFF (ETH_HLEN + 8)
#define IP6_DST_OFF (ETH_HLEN + 24)

/* The IPv6 pseudo header of a checksum. */
struct svc6_pseudo {
	__u8 src[16];
	__u8 dst[16];
	__u32 len;
	__u8 zero[3];
	__u8 next;
};

/* What the IPv6 functions keep, in a per-CPU map value: a program runs
 * on one CPU from start to end, so svc6_in or svc6_to_pod leaves the
 * frontend here for svc6_after. */
struct svc6_scratch {
	struct manul_svc_fe6_key fk;
	struct manul_nat6_key key;
	struct manul_nat6_value v;
	struct manul_svc_be6_value be;
	struct manul_svc_aff6_key ak;
	struct manul_svc_aff6_value av;
	struct svc6_pseudo pseudo;
	/* A masqueraded connection's SNAT_REV entry being written. */
	struct manul_nat6_key rkey;
	struct manul_nat6_value rv;
	struct manul_svc_src6_key sk;
	__u8 snat[16];
	__u8 from[16];
	__u8 to[16];
	/* The frontend a reply's source goes back to (SVC_REVERSE,
	 * SVC_HAIRPIN_REV), the client a masqueraded reply's destination
	 * goes back to (SVC_SNAT_REV). */
	__u8 frontend[16];
	/* The node's address toward a new external connection's backend. */
	__u8 node[16];
	/* The DSR header being added or read (MANUL_DSR6_*). */
	__u8 dsr[MANUL_DSR6_HDR_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct svc6_scratch);
} manul_svc6_scratch SEC(".maps");

static __always_inline struct svc6_scratch *svc6_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&manul_svc6_scratch, &zero);
}

static __always_inline int addr6_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Copies an address a word at a time (a byte array's memcpy is 16 byte
 * moves, spilled to the stack). Every address here is 4-byte aligned. */
static __always_inline void addr6_copy(void *dst, const void *src)
{
	__u32 *d = dst;
	const __u32 *x = src;

	d[0] = x[0];
	d[1] = x[1];
	d[2] = x[2];
	d[3] = x[3];
}

/* The packet's own tuple as a manul_nat6 key (direction dir) in the
 * scratch's key. */
static __always_inline void nat6_key_of(struct svc6_scratch *s, const struct pkt *p, __u8 dir)
{
	__builtin_memset(&s->key, 0, sizeof(s->key));
	addr6_copy(s->key.src, p->src);
	addr6_copy(s->key.dst, p->dst);
	s->key.sport = p->sport;
	s->key.dport = p->dport;
	s->key.proto = p->proto;
	s->key.dir = dir;
}

/* MANUL_HAIRPIN_SNAT_V6 into `out`. */
static __always_inline void svc6_hairpin(__u8 *out)
{
	__u32 *w = (__u32 *)out;

	w[0] = bpf_htonl(MANUL_HAIRPIN_SNAT_V6_W0);
	w[1] = 0;
	w[2] = 0;
	w[3] = bpf_htonl(MANUL_HAIRPIN_SNAT_V6_W3);
}

/* Rewrites the source or destination address and port of an IPv6 TCP,
 * UDP or SCTP packet, patching its checksum by the differences. -1: the
 * packet cannot be rewritten (an SCTP fragment's port), dropped. */
static __always_inline int svc6_rewrite(struct __sk_buff *skb, const struct pkt *p,
					struct svc6_scratch *s, int is_src, const __u8 *old_addr,
					const __u8 *new_addr, __u16 old_port, __u16 new_port)
{
	__s64 diff;

	addr6_copy(s->from, old_addr);
	addr6_copy(s->to, new_addr);
	if (p->proto == IPPROTO_SCTP) {
		if (sctp_rewrite_port(skb, p, is_src, old_port, new_port))
			return -1;
		if (!addr6_eq(s->from, s->to) &&
		    bpf_skb_store_bytes(skb, is_src ? IP6_SRC_OFF : IP6_DST_OFF, s->to, 16, 0))
			return -1;
		return 0;
	}
	if (!addr6_eq(s->from, s->to)) {
		diff = bpf_csum_diff((__be32 *)s->from, 16, (__be32 *)s->to, 16, 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, l4_csum_off(p), 0, (__u32)diff,
					BPF_F_PSEUDO_HDR | l4_mangled(p)))
			return -1;
		if (bpf_skb_store_bytes(skb, is_src ? IP6_SRC_OFF : IP6_DST_OFF, s->to, 16, 0))
			return -1;
	}
	return rewrite_port(skb, p, is_src, old_port, new_port);
}

/* Turns a TCP segment over IPv6 into the RST that refuses it (as
 * reject_tcp). */
static __always_inline int svc6_reject_tcp(struct __sk_buff *skb, struct svc6_scratch *s,
					   int host)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip6 + 1);
	__u32 payload;
	__s64 sum;

	if ((void *)(tcp + 1) > data_end || ip6->nexthdr != IPPROTO_TCP || tcp->rst)
		return TC_ACT_SHOT;
	payload = bpf_ntohs(ip6->payload_len);
	if (payload < tcp->doff * 4)
		return TC_ACT_SHOT;
	rst_header(tcp, payload - tcp->doff * 4);
	__builtin_memcpy(s->from, &ip6->saddr, 16);
	__builtin_memcpy(&ip6->saddr, &ip6->daddr, 16);
	__builtin_memcpy(&ip6->daddr, s->from, 16);
	*(__u32 *)ip6 = bpf_htonl(0x60000000); /* version 6, no class, no label */
	ip6->payload_len = bpf_htons(sizeof(*tcp));
	ip6->hop_limit = 64;
	if (bpf_skb_change_tail(skb, sizeof(*eth) + sizeof(*ip6) + sizeof(*tcp), 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip6 = (void *)(eth + 1);
	tcp = (void *)(ip6 + 1);
	if ((void *)(tcp + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memset(&s->pseudo, 0, sizeof(s->pseudo));
	__builtin_memcpy(s->pseudo.src, &ip6->saddr, 16);
	__builtin_memcpy(s->pseudo.dst, &ip6->daddr, 16);
	s->pseudo.len = bpf_htonl(sizeof(*tcp));
	s->pseudo.next = IPPROTO_TCP;
	sum = bpf_csum_diff(0, 0, (__be32 *)&s->pseudo, sizeof(s->pseudo), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	tcp->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)tcp, sizeof(*tcp), (__u32)sum));
	return back_to_pod(skb, host);
}

/* The invoking packet's bytes an ICMPv6 error carries here: its IPv6
 * header and the first 8 bytes after it (the ports). */
#define SVC6_QUOTE (sizeof(struct ipv6hdr) + 8)

/* Turns a UDP or SCTP packet over IPv6 into an ICMPv6 port unreachable
 * (type 1, code 4) carrying its header and first 8 bytes, from the
 * frontend. */
static __always_inline int svc6_reject_udp(struct __sk_buff *skb, struct svc6_scratch *s,
					   int host)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct ipv6hdr *orig;
	__u8 *icmp;
	__s64 sum;

	if ((void *)(ip6 + 1) > data_end)
		return TC_ACT_SHOT;
	/* Room for the new IPv6 and ICMPv6 headers in front of the original
	 * IPv6 header. */
	if (bpf_skb_adjust_room(skb, sizeof(*ip6) + 8, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, sizeof(*eth) + sizeof(*ip6) + 8 + SVC6_QUOTE, 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip6 = (void *)(eth + 1);
	icmp = (void *)(ip6 + 1);
	orig = (void *)(icmp + 8);
	if ((void *)orig + SVC6_QUOTE > data_end)
		return TC_ACT_SHOT;
	*(__u32 *)ip6 = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(8 + SVC6_QUOTE);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, &orig->daddr, 16);
	__builtin_memcpy(&ip6->daddr, &orig->saddr, 16);
	__builtin_memset(icmp, 0, 8);
	icmp[0] = 1; /* destination unreachable */
	icmp[1] = 4; /* port unreachable */
	__builtin_memset(&s->pseudo, 0, sizeof(s->pseudo));
	__builtin_memcpy(s->pseudo.src, &ip6->saddr, 16);
	__builtin_memcpy(s->pseudo.dst, &ip6->daddr, 16);
	s->pseudo.len = bpf_htonl(8 + SVC6_QUOTE);
	s->pseudo.next = IPPROTO_ICMPV6;
	sum = bpf_csum_diff(0, 0, (__be32 *)&s->pseudo, sizeof(s->pseudo), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	*(__u16 *)(icmp + 2) =
		csum_fold(bpf_csum_diff(0, 0, (__be32 *)icmp, 8 + SVC6_QUOTE, (__u32)sum));
	return back_to_pod(skb, host);
}

/* svc6_in's answer: refuse the packet (svc6_refuse). */
#define SVC6_REFUSE (-2)

/* Turns the packet into its refusal: a TCP RST, else an ICMPv6 port
 * unreachable. Called by svc_in after svc6_in returned, not from it: the
 * two frames never stack. */
static __attribute__((noinline)) int svc6_refuse(struct __sk_buff *skb, const struct pkt *p,
						 int host)
{
	struct svc6_scratch *s = svc6_scratch();

	if (!s || !p)
		return TC_ACT_SHOT;
	if (p->proto == IPPROTO_TCP)
		return svc6_reject_tcp(skb, s, host);
	return svc6_reject_udp(skb, s, host);
}

/* As svc_pick, into s->be: the client's affinity entry while it holds,
 * else the frontend's Maglev slot for the flow when it has a table (the
 * frontend as keyed in s->fk: :: for a node port), else a backend at
 * random (remembered when the frontend has affinity). */
static __always_inline int svc6_pick(const struct manul_svc_fe_value *fe, const struct pkt *p,
				     struct svc6_scratch *s, __u64 now)
{
	struct manul_svc_be_key bk = { .id = fe->id };
	const __u32 *f = (const __u32 *)s->fk.addr;
	struct manul_svc_aff6_value *av;
	struct manul_svc_be6_value *be;

	__builtin_memset(&s->ak, 0, sizeof(s->ak));
	addr6_copy(s->ak.client, p->src);
	s->ak.id = fe->id;
	if (fe->affinity_s) {
		av = bpf_map_lookup_elem(&manul_svc_aff6, &s->ak);
		if (av && affinity_holds(fe, &av->ts_ns, now)) {
			addr6_copy(s->be.addr, av->addr);
			s->be.port = av->port;
			return 0;
		}
	}
	if (!fe->count)
		return -1;
	be = maglev_slot(fe, maglev_flow_hash(p->src, f[0], f[1], f[2], f[3], p->sport, p->dport,
					      p->proto));
	if (!be) {
		bk.index = bpf_get_prandom_u32() % fe->count;
		be = bpf_map_lookup_elem(&manul_svc_be6, &bk);
		if (!be)
			return -1;
	}
	s->be = *be;
	if (fe->affinity_s) {
		__builtin_memset(&s->av, 0, sizeof(s->av));
		s->av.ts_ns = now;
		addr6_copy(s->av.addr, be->addr);
		s->av.port = be->port;
		bpf_map_update_elem(&manul_svc_aff6, &s->ak, &s->av, BPF_ANY);
	}
	return 0;
}

/* svc_snat_alloc for IPv6. */
__attribute__((noinline)) int svc6_snat_alloc(struct manul_nat6_key *k,
					      const struct manul_nat6_value *v)
{
	if (!k || !v)
		return -1;
	return SNAT_ALLOC(manul_nat6, k, v);
}

/* Writes the IPv6 header's payload length (network order) and next
 * header, keeping skb->csum in step (BPF_F_RECOMPUTE_CSUM). */
static __always_inline int svc6_set_next(struct __sk_buff *skb, __u16 payload_len, __u8 next)
{
	if (bpf_skb_store_bytes(skb, ETH_HLEN + 4, &payload_len, 2, BPF_F_RECOMPUTE_CSUM))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN + 6, &next, 1, BPF_F_RECOMPUTE_CSUM) ? -1 : 0;
}

/* Whether a packet of a DSR connection to the backend s->be can carry the
 * DSR header: TCP or UDP (the backend's node takes it off those only; an
 * SCTP connection is masqueraded instead), with no extension headers of
 * its own (the header goes right after the IPv6 header), and the route
 * from the client to the backend takes it grown by MANUL_DSR6_HDR_LEN
 * bytes (the FIB's MTU check; a GSO packet's segments are what is sent:
 * only UDP datagrams and TCP's SYN, never GSO, are asked, hence the 8
 * bytes of a UDP header). */
static __always_inline int svc6_dsr_fits(struct __sk_buff *skb, const struct pkt *p,
					 struct svc6_scratch *s)
{
	struct bpf_fib_lookup *f;
	__u32 len;

	if ((p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) ||
	    p->l4_off != ETH_HLEN + sizeof(struct ipv6hdr))
		return 0;
	len = skb->gso_size ? sizeof(struct ipv6hdr) + 8 + skb->gso_size
			    : skb->len - ETH_HLEN;
	if (len > 0xffff - MANUL_DSR6_HDR_LEN)
		return 0;
	f = fib_query(skb, 6, p->proto, p->src, s->be.addr, p->sport, s->be.port);
	if (!f)
		return 0;
	f->tot_len = len + MANUL_DSR6_HDR_LEN;
	return bpf_fib_lookup(skb, f, sizeof(*f), BPF_FIB_LOOKUP_SKIP_NEIGH) ==
	       BPF_FIB_LKUP_RET_SUCCESS;
}

/* Puts the DSR header (the frontend: the packet's destination and port as
 * the client sent it, p->dst and p->dport) right after the IPv6 header.
 * The L4 checksum stays valid: its pseudo header has the final
 * destination and the L4 length, neither of which changes. */
static __always_inline int svc6_dsr_add(struct __sk_buff *skb, const struct pkt *p,
					struct svc6_scratch *s)
{
	__u8 *h = s->dsr;
	__u16 len;

	__builtin_memset(h, 0, MANUL_DSR6_HDR_LEN);
	h[0] = p->proto;
	h[1] = MANUL_DSR6_HDR_EXT_LEN;
	h[2] = MANUL_DSR6_OPT_TYPE;
	h[3] = MANUL_DSR6_OPT_LEN;
	addr6_copy(h + 4, p->dst);
	__builtin_memcpy(h + 20, &p->dport, 2);
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 4, &len, 2))
		return -1;
	if (bpf_skb_adjust_room(skb, MANUL_DSR6_HDR_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), h, MANUL_DSR6_HDR_LEN,
				BPF_F_RECOMPUTE_CSUM))
		return -1;
	return svc6_set_next(skb, bpf_htons(bpf_ntohs(len) + MANUL_DSR6_HDR_LEN),
			     MANUL_NEXTHDR_DEST);
}

/* The backend's node: a TCP or UDP packet arriving at a host interface
 * whose only extension header is the DSR header gets the connection's
 * REV entry (backend, client -> the frontend it names) written, so the
 * backend's replies leave this node from the frontend straight to the
 * client, and the header taken off (p->l4_off following), so the pod
 * sees a plain packet from the client. 1 when it did so, 0 when the
 * packet has no DSR header (left as it is), -1 to drop: also when the
 * frontend it names is not one another node could have sent, as for the
 * IPv4 option (dsr_trusted, manul_dsr_trust.h). */
static __always_inline int svc6_dsr_take(struct __sk_buff *skb, struct pkt *p,
					 struct svc6_scratch *s, __u64 now)
{
	__u8 *h = s->dsr;
	__u16 len;
	__u8 next;

	if ((p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) ||
	    p->l4_off != ETH_HLEN + sizeof(struct ipv6hdr) + MANUL_DSR6_HDR_LEN)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &next, 1) || next != MANUL_NEXTHDR_DEST)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), h, MANUL_DSR6_HDR_LEN))
		return 0;
	if (h[0] != p->proto || h[1] != MANUL_DSR6_HDR_EXT_LEN || h[2] != MANUL_DSR6_OPT_TYPE ||
	    h[3] != MANUL_DSR6_OPT_LEN)
		return 0;
	__builtin_memset(&s->rkey, 0, sizeof(s->rkey));
	addr6_copy(s->rkey.src, p->dst);
	addr6_copy(s->rkey.dst, p->src);
	s->rkey.sport = p->dport;
	s->rkey.dport = p->sport;
	s->rkey.proto = p->proto;
	s->rkey.dir = MANUL_NAT_REV;
	__builtin_memset(&s->rv, 0, sizeof(s->rv));
	s->rv.created_ns = now;
	s->rv.last_seen_ns = now;
	s->rv.flags = MANUL_NAT_DSR;
	addr6_copy(s->rv.addr, h + 4);
	__builtin_memcpy(&s->rv.port, h + 20, 2);
	if (!dsr_trusted(p, s->rv.addr, s->rv.port))
		return -1;
	if (bpf_map_update_elem(&manul_nat6, &s->rkey, &s->rv, BPF_ANY))
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 4, &len, 2))
		return -1;
	if (bpf_skb_adjust_room(skb, -MANUL_DSR6_HDR_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	if (svc6_set_next(skb, bpf_htons(bpf_ntohs(len) - MANUL_DSR6_HDR_LEN), p->proto))
		return -1;
	p->l4_off -= MANUL_DSR6_HDR_LEN;
	return 1;
}

/* svc_ext_new for IPv6, with the backend in s->be and the forward entry
 * in s->v. In DSR mode: a local backend gets nothing (the client kept,
 * as under Local); one on another node MANUL_NAT_DSR, when the first
 * packet can carry the DSR header (svc6_dsr_fits; else the connection is
 * masqueraded, so that its replies still come from the frontend). In
 * SNAT mode, or instead of DSR: sets s->v's MANUL_NAT_SNAT, masquerade
 * address and port, and writes the SNAT_REV entry. Returns 0, or -1 to
 * drop. */
static __always_inline int svc6_ext_new(struct __sk_buff *skb, const struct pkt *p,
					struct svc6_scratch *s, __u64 now)
{
	int where = ext_route(skb, 6, p, p->src, s->be.addr, s->be.port, s->node);

	if (where < 0)
		return -1;
	/* A pod of another node to a backend here keeps its address. */
	if (where == EXT_LOCAL && (s->v.flags & MANUL_NAT_POOL))
		return 0;
	/* A backend that is the client: masqueraded (see svc_ext_new). */
	if (ext_mode() == MANUL_EXT_DSR && !addr6_eq(s->be.addr, p->src)) {
		if (where == EXT_LOCAL)
			return 0;
		if (svc6_dsr_fits(skb, p, s)) {
			s->v.flags |= MANUL_NAT_DSR;
			count(MANUL_CNT_SVC_DSR);
			return 0;
		}
	}
	if (where == EXT_LOCAL && addr6_eq(s->node, s->be.addr))
		return 0; /* the host itself: nothing to masquerade */
	__builtin_memset(&s->rkey, 0, sizeof(s->rkey));
	addr6_copy(s->rkey.src, s->be.addr);
	addr6_copy(s->rkey.dst, s->node);
	s->rkey.sport = s->be.port;
	s->rkey.proto = p->proto;
	s->rkey.dir = MANUL_NAT_SNAT_REV;
	__builtin_memset(&s->rv, 0, sizeof(s->rv));
	s->rv.created_ns = now;
	s->rv.last_seen_ns = now;
	addr6_copy(s->rv.addr, p->src);
	s->rv.port = p->sport;
	s->rv.id = s->v.id;
	s->rv.flags = MANUL_NAT_SNAT;
	if (svc6_snat_alloc(&s->rkey, &s->rv)) {
		count(MANUL_CNT_SVC_SNAT_FULL);
		return -1;
	}
	s->v.flags |= MANUL_NAT_SNAT;
	addr6_copy(s->v.snat_addr, s->node);
	s->v.snat_port = s->rkey.dport;
	count(MANUL_CNT_SVC_SNAT);
	return 0;
}

/* A reply to a masqueraded connection (as ext_snat_reply), the SNAT_REV
 * key in s->key: 0 when it is no such reply, 1 when it is, -1 on a
 * failed rewrite. */
static __always_inline int svc6_snat_reply(struct __sk_buff *skb, const struct pkt *p,
					   struct svc_nat *n, struct svc6_scratch *s, int host,
					   __u64 now)
{
	struct manul_nat6_value *nv;

	if (bpf_ntohs(p->dport) < MANUL_SNAT_PORT_MIN)
		return 0;
	s->key.dir = MANUL_NAT_SNAT_REV;
	nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
	if (!nv)
		return 0;
	nv->last_seen_ns = now;
	if (host)
		return svc6_rewrite(skb, p, s, 0, p->dst, nv->addr, p->dport, nv->port) ? -1 : 1;
	n->after = SVC_SNAT_REV;
	addr6_copy(s->frontend, nv->addr);
	n->port = nv->port;
	return 1;
}

/* Whether a client may reach a load-balancer address with source ranges
 * (the frontend's address entry `fe`). */
static __always_inline int svc6_source_allowed(const struct manul_svc_fe_value *fe,
					       const struct pkt *p, struct svc6_scratch *s)
{
	if (!(fe->flags & MANUL_SVC_FE_SOURCE_RANGES))
		return 1;
	s->sk.prefixlen = 256;
	addr6_copy(s->sk.data.lb, p->dst);
	addr6_copy(s->sk.data.client, p->src);
	return bpf_map_lookup_elem(&manul_svc_src6, &s->sk) != 0;
}

/* svc_tracked_reply for IPv6 (s->key: the packet's tuple, whose
 * direction it keeps). */
static __always_inline int svc6_tracked_reply(struct __sk_buff *skb, const struct pkt *p,
					      struct svc_nat *n, struct svc6_scratch *s)
{
	__u8 dir = s->key.dir;
	struct manul_nat6_value *nv;

	if (tcp_syn_only(p))
		return 0;
	s->key.dir = MANUL_NAT_HOST_REV;
	nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
	s->key.dir = dir;
	if (nv) {
		n->after = SVC_HOST_REV;
		addr6_copy(s->frontend, nv->addr);
		n->port = nv->port;
		return 1;
	}
	return ct_reply(skb, p);
}

/* svc6_in's answers besides -1 and a TC verdict: refuse the packet
 * (svc6_refuse), pick a new connection's backend (svc6_new), translate
 * to the connection's backend in s->be (svc6_translate). svc_in calls
 * each of these after the one before returned, never from it: their
 * frames never stack (the 512 bytes span the calling program too). */
#define SVC6_NEW (-3)
#define SVC6_TRANSLATE (-4)

/* svc_in for IPv6, on a workload interface or (`host`) a host interface
 * carried for service NAT: -1 to go on with *p as it is, SVC6_REFUSE,
 * SVC6_NEW (the frontend's port entry in s->fk, the forward key in
 * s->key), SVC6_TRANSLATE (an established connection: its forward entry
 * in s->v, its backend in s->be), or a TC verdict. */
static __attribute__((noinline)) int svc6_in(struct __sk_buff *skb, struct pkt *p,
					     struct svc_nat *n, __u64 now, int host)
{
	struct svc6_scratch *s = svc6_scratch();
	struct manul_svc_fe_value *fe;
	struct manul_nat6_value *nv;
	__u32 reject_unknown;
	int rc;

	if (!s || !p || !n)
		return TC_ACT_SHOT;
	if (!svc_proto(p->proto))
		return -1;
	/* Direct server return from another node: the header names the
	 * frontend. */
	if (host == 1 && svc6_dsr_take(skb, p, s, now) < 0)
		return TC_ACT_SHOT;
	__builtin_memset(&s->fk, 0, sizeof(s->fk));
	nat6_key_of(s, p, 0);
	/* A reply to a masqueraded external connection. */
	rc = svc6_snat_reply(skb, p, n, s, host, now);
	if (rc < 0)
		return TC_ACT_SHOT;
	if (rc > 0)
		return host ? TC_ACT_OK : -1;
	svc6_hairpin(s->snat);
	if (!host && addr6_eq(p->dst, s->snat)) {
		/* A reply of a hairpinned connection: policy sees it as the
		 * reply of the pod's connection to itself. */
		s->key.dir = MANUL_NAT_REV;
		nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
		if (!nv || !(nv->flags & MANUL_NAT_HAIRPIN))
			return -1;
		n->after = SVC_HAIRPIN_REV;
		addr6_copy(s->frontend, nv->addr);
		n->port = nv->port;
		addr6_copy(p->dst, p->src);
		return -1;
	}
	/* A service address at all? */
	addr6_copy(s->fk.addr, p->dst);
	fe = bpf_map_lookup_elem(&manul_svc_fe6, &s->fk);
	s->fk.port = p->dport;
	s->fk.proto = p->proto;
	/* As IPv4's: a pod's packet to a frontend address is first the
	 * reply of a connection the node tracks from that address, wherever
	 * it would otherwise be dropped, refused or taken as new. */
	if (fe) {
		if (!svc6_source_allowed(fe, p, s)) {
			if (!host && svc6_tracked_reply(skb, p, n, s))
				return -1;
			count(MANUL_CNT_SVC_SOURCE_DENIED);
			return TC_ACT_SHOT;
		}
		reject_unknown = fe->flags & MANUL_SVC_FE_REJECT_UNKNOWN;
		fe = bpf_map_lookup_elem(&manul_svc_fe6, &s->fk);
		if (!fe) {
			/* Not a port of the frontend's (a reply?), or a
			 * cluster IP's port or protocol no service has. */
			if (!host && svc6_tracked_reply(skb, p, n, s))
				return -1;
			if (!reject_unknown)
				return -1;
			count(MANUL_CNT_SVC_REJECT);
			return SVC6_REFUSE;
		}
	} else {
		/* A pod's packet to no service: a reply to a host process
		 * (manul_svc_host.h)? */
		if (!host) {
			s->key.dir = MANUL_NAT_HOST_REV;
			nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
			if (nv) {
				n->after = SVC_HOST_REV;
				addr6_copy(s->frontend, nv->addr);
				n->port = nv->port;
				return -1;
			}
		}
		/* A node port (::), on the node's own addresses only (a
		 * pod's too, as IPv4's). */
		__builtin_memset(s->fk.addr, 0, sizeof(s->fk.addr));
		fe = bpf_map_lookup_elem(&manul_svc_fe6, &s->fk);
		if (!fe || !to_local_host(skb, p))
			return -1;
	}
	s->key.dir = MANUL_NAT_FWD;
	nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
	if (nv && nat_reset(nv->flags, p)) {
		/* Its backend is gone: reset the connection. */
		bpf_map_delete_elem(&manul_nat6, &s->key);
		count(MANUL_CNT_SVC_RESET);
		return SVC6_REFUSE;
	}
	/* A reset-marked entry met by a SYN: a new connection replaces it,
	 * unless the packet is the reply of a connection the node tracks. */
	if (!nv || (nv->flags & MANUL_NAT_RESET) || !nat_current(nv->last_seen_ns, p, now))
		return !host && svc6_tracked_reply(skb, p, n, s) ? -1 : SVC6_NEW;
	nv->last_seen_ns = now;
	/* The connection's forward entry (its backend, the masquerade it
	 * has). */
	s->v = *nv;
	addr6_copy(s->be.addr, nv->addr);
	s->be.port = nv->port;
	return SVC6_TRANSLATE;
}

/* A new connection to the frontend s->fk (svc6_in's SVC6_NEW): its
 * backend, its forward and reverse entries (and a masquerade's), then
 * SVC6_TRANSLATE; or SVC6_REFUSE, or a TC verdict. */
static __attribute__((noinline)) int svc6_new(struct __sk_buff *skb, struct pkt *p,
					      __u64 now, int host)
{
	struct svc6_scratch *s = svc6_scratch();
	struct manul_svc_fe_value *fe;
	int hairpin, pool;

	if (!s || !p)
		return TC_ACT_SHOT;
	fe = bpf_map_lookup_elem(&manul_svc_fe6, &s->fk);
	if (!fe)
		return TC_ACT_SHOT;
	/* From inside the cluster to a Local external frontend: its
	 * in-cluster twin (every ready backend), as IPv4's svc_in. */
	pool = 0;
	if ((fe->flags & MANUL_SVC_FE_IN_CLUSTER) && (host != 1 || from_pool(p))) {
		struct manul_svc_fe_value *in;

		s->fk.scope = MANUL_SVC_FE_SCOPE_IN_CLUSTER;
		in = bpf_map_lookup_elem(&manul_svc_fe6, &s->fk);
		s->fk.scope = 0;
		if (in)
			fe = in;
		pool = host == 1;
	}
	if (svc6_pick(fe, p, s, now)) {
		if (fe->flags & MANUL_SVC_FE_DROP_EMPTY) {
			/* Local policy, no backend here: dropped. */
			count(MANUL_CNT_SVC_LOCAL_DROP);
			return TC_ACT_SHOT;
		}
		count(MANUL_CNT_SVC_REJECT);
		return SVC6_REFUSE;
	}
	hairpin = !host && addr6_eq(s->be.addr, p->src);
	__builtin_memset(&s->v, 0, sizeof(s->v));
	s->v.created_ns = now;
	s->v.last_seen_ns = now;
	s->v.id = fe->id;
	s->v.flags = hairpin ? MANUL_NAT_HAIRPIN : 0;
	if (host == SVC_FROM_HOST)
		s->v.flags = MANUL_NAT_FROM_HOST;
	if (pool)
		s->v.flags = MANUL_NAT_POOL;
	addr6_copy(s->v.addr, s->be.addr);
	s->v.port = s->be.port;
	/* A host process's connection is not masqueraded: its source is
	 * the node's already (its reply comes back through HOST_REV). A pod
	 * of another node: as Cluster's, to a backend elsewhere only. */
	if (host == 1 && ((fe->flags & MANUL_SVC_FE_EXT_CLUSTER) || pool) &&
	    svc6_ext_new(skb, p, s, now))
		return TC_ACT_SHOT;
	if (bpf_map_update_elem(&manul_nat6, &s->key, &s->v, BPF_ANY))
		return TC_ACT_SHOT;
	addr6_copy(s->key.src, s->be.addr);
	if (hairpin)
		addr6_copy(s->key.dst, s->snat);
	else
		addr6_copy(s->key.dst, p->src);
	s->key.sport = s->be.port;
	s->key.dport = p->sport;
	s->key.dir = host == SVC_FROM_HOST ? MANUL_NAT_HOST_REV : MANUL_NAT_REV;
	addr6_copy(s->v.addr, p->dst);
	s->v.port = p->dport;
	/* DSR: the backend's node writes the reverse entry. */
	if (!(s->v.flags & MANUL_NAT_DSR) &&
	    bpf_map_update_elem(&manul_nat6, &s->key, &s->v, BPF_ANY))
		return TC_ACT_SHOT;
	/* The forward entry again, for svc6_translate. */
	addr6_copy(s->v.addr, s->be.addr);
	s->v.port = s->be.port;
	count(MANUL_CNT_SVC_NAT);
	if (hairpin)
		count(MANUL_CNT_SVC_HAIRPIN);
	return SVC6_TRANSLATE;
}

/* A DSR connection's packet at the host interface it arrived at (its
 * backend s->be on another node): the destination translated, the DSR
 * header added to TCP's SYN and to every UDP datagram that fits its route
 * with it (a datagram that does not goes without: the flow's first one
 * did, so the backend's node holds the REV entry), then sent on toward
 * the backend with the client's own source. */
static __always_inline int svc6_dsr_send(struct __sk_buff *skb, const struct pkt *p,
					 struct svc6_scratch *s)
{
	int add = (p->proto == IPPROTO_UDP || (p->tcp_flags & 0x12) == 0x02) &&
		  svc6_dsr_fits(skb, p, s);

	if (svc6_rewrite(skb, p, s, 0, p->dst, s->be.addr, p->dport, s->be.port)) {
		count(MANUL_CNT_SVC_UNTRANSLATABLE);
		return TC_ACT_SHOT;
	}
	if (add && svc6_dsr_add(skb, p, s))
		return TC_ACT_SHOT;
	return ext_forward(skb, 6, p->src, s->be.addr, p->sport, s->be.port, p->proto);
}

/* A connection's packet to its backend (s->be, its forward entry in
 * s->v): the destination translated; a masqueraded one's source too,
 * then sent on past the kernel's input path (as svc_ext_send), a DSR
 * one's with its header (svc6_dsr_send). -1 to go on with *p describing
 * the translated packet, or a TC verdict. */
static __attribute__((noinline)) int svc6_translate(struct __sk_buff *skb, struct pkt *p,
						    struct svc_nat *n, int host)
{
	struct svc6_scratch *s = svc6_scratch();

	if (!s || !p || !n)
		return TC_ACT_SHOT;
	if (host && (s->v.flags & MANUL_NAT_DSR))
		return svc6_dsr_send(skb, p, s);
	if (svc6_rewrite(skb, p, s, 0, p->dst, s->be.addr, p->dport, s->be.port))
		return TC_ACT_SHOT;
	/* A host process's packet (manul_svc_host.h): on to the backend as
	 * the FIB routes it. */
	if (host == SVC_FROM_HOST)
		return ext_forward(skb, 6, p->src, s->be.addr, p->sport, s->be.port, p->proto);
	if (host && (s->v.flags & MANUL_NAT_SNAT)) {
		if (svc6_rewrite(skb, p, s, 1, p->src, s->v.snat_addr, p->sport, s->v.snat_port))
			return TC_ACT_SHOT;
		return ext_forward(skb, 6, s->v.snat_addr, s->v.addr, s->v.snat_port, s->v.port,
				   p->proto);
	}
	addr6_copy(p->dst, s->be.addr);
	p->dport = s->be.port;
	if (s->v.flags & MANUL_NAT_HAIRPIN)
		n->after = SVC_HAIRPIN_FWD;
	else if (!host)
		skb->mark |= MANUL_MARK_SVC_FWD;
	return -1;
}

/* svc_to_pod for IPv6: is it a backend's reply to a client here? */
static __attribute__((noinline)) int svc6_to_pod(const struct pkt *p, struct svc_nat *n)
{
	struct svc6_scratch *s = svc6_scratch();
	struct manul_nat6_value *nv;

	if (!s || !p || !n || !svc_proto(p->proto))
		return 0;
	nat6_key_of(s, p, MANUL_NAT_REV);
	nv = bpf_map_lookup_elem(&manul_nat6, &s->key);
	if (!nv || (nv->flags & MANUL_NAT_HAIRPIN))
		return 0;
	n->after = SVC_REVERSE;
	addr6_copy(s->frontend, nv->addr);
	n->port = nv->port;
	return 0;
}

/* svc_after for IPv6 (the frontend or client n->port goes with is in
 * s->frontend). */
static __attribute__((noinline)) int svc6_after(struct __sk_buff *skb, const struct pkt *p,
						const struct svc_nat *n)
{
	struct svc6_scratch *s = svc6_scratch();

	if (!s || !p || !n)
		return TC_ACT_SHOT;
	svc6_hairpin(s->snat);
	if (n->after == SVC_HOST_REV) {
		/* A backend's reply to a host process: source back to the
		 * frontend, into the host through its service device. */
		if (svc6_rewrite(skb, p, s, 1, p->src, s->frontend, p->sport, n->port))
			return TC_ACT_SHOT;
		return svc_host_deliver(skb);
	}
#define REWRITE6(is_src, old, new, old_port, new_port)                                           \
	svc6_rewrite(skb, p, s, is_src, old, new, old_port, new_port)
	SVC_AFTER(REWRITE6, p->src, p->dst, s->frontend, s->snat)
#undef REWRITE6
}

#endif /* MANUL_SVC6_H */
