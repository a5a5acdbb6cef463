/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after the service NAT's helpers):
 * external traffic (node ports, external and load-balancer IPs) under
 * externalTrafficPolicy Cluster, arriving at a host interface the programs
 * carry for service NAT.
 *
 * SNAT (manul_meta[MANUL_META_EXT_MODE] = MANUL_EXT_SNAT, the default):
 * the client is masqueraded to the node's address toward the backend (the
 * FIB's preferred source) and a port of MANUL_SNAT_PORT_MIN..MAX, unique
 * per (backend, node address); the SNAT_REV entry keyed by them gives
 * the reply's destination back (where the reply arrives: the host
 * interface for a backend on another node, the backend's own interface
 * for a local one), and the connection's ordinary REV entry its source
 * back where it leaves the node. The backend sees the node's address.
 *
 * DSR (MANUL_EXT_DSR): a backend on another node gets the packet with the
 * client's source and, in TCP's SYN and in every UDP datagram, the
 * frontend in an IPv4 option (MANUL_DSR_OPT_*); the backend's node takes
 * the option off where the packet arrives, writes the connection's REV
 * entry from it and answers the client directly, its source translated
 * back to the frontend as it leaves. A local backend is reached as under
 * the Local policy (no translation of the source). SCTP to a backend on
 * another node is masqueraded in this mode, as in SNAT mode: none of its
 * packets would carry the option.
 *
 * The source is never rewritten to one of the node's own addresses before
 * routing (the kernel drops a packet arriving with a local source): only
 * destinations are translated where packets arrive, sources where they
 * leave.
 *
 * ext_route, ext_forward and SNAT_ALLOC serve both families: IPv6
 * (manul_svc6.h) masquerades the same way; its DSR carries the frontend
 * in a Destination Options header instead (MANUL_DSR6_*).
 */
#ifndef MANUL_SVC_EXT_H
#define MANUL_SVC_EXT_H

/* Per-CPU scratch for NAT entries being built (the stack is the scarcest
 * resource of the programs): slot 0 for svc_in's and the DSR option's,
 * slot 1 for the masquerade's reverse entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct manul_nat_value);
} manul_nat_scratch SEC(".maps");

/* How a new external connection reaches its backend. */
enum ext_route {
	/* A workload on this node, or this host itself. */
	EXT_LOCAL = 0,
	/* Another node. */
	EXT_REMOTE = 1,
};

static __always_inline __u64 ext_mode(void)
{
	__u32 slot = MANUL_META_EXT_MODE;
	__u64 *v = bpf_map_lookup_elem(&manul_meta, &slot);

	return v ? *v : MANUL_EXT_SNAT;
}

/* Where the backend is, as the FIB routes a packet of the client's
 * arriving on this interface, and the node's source address toward it
 * (`client`, `backend`, `node_addr`: 4 or 16 bytes, IP `version`: a
 * constant, so that a global caller's verification sees one family).
 * -1: no route. */
static __always_inline int ext_route(struct __sk_buff *skb, __u8 version, const struct pkt *p,
				     const void *client, const void *backend, __u16 port,
				     void *node_addr)
{
	struct bpf_fib_lookup *f =
		fib_query(skb, version, p->proto, client, backend, p->sport, port);
	struct manul_ep_value *ep;
	__u32 oif;
	long rc;

	if (!f)
		return -1;
	rc = bpf_fib_lookup(skb, f, sizeof(*f), BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		/* A host-networked backend: the node's own address. */
		if (version == 4)
			__builtin_memcpy(node_addr, backend, 4);
		else
			__builtin_memcpy(node_addr, backend, 16);
		return EXT_LOCAL;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	if (version == 4)
		__builtin_memcpy(node_addr, &f->ipv4_src, 4);
	else
		__builtin_memcpy(node_addr, f->ipv6_src, 16);
	oif = f->ifindex;
	ep = bpf_map_lookup_elem(&manul_ep, &oif);
	return ep && !(ep->flags & MANUL_EP_HOST) ? EXT_LOCAL : EXT_REMOTE;
}

/* Allocates a masquerade port in `map` (manul_nat or manul_nat6): writes
 * *v under *k (a SNAT_REV key whose dport is tried at random in
 * MANUL_SNAT_PORT_MIN..MAX) where no entry is. Evaluates to 0 with
 * k->dport the port, or -1 when none of the tries was free. Each
 * family's global function (the verifier checks its loop once) is this. */
#define SNAT_ALLOC(map, k, v)                                                                   \
	({                                                                                      \
		int found_ = -1;                                                                \
		for (int i_ = 0; i_ < 16 && found_; i_++) {                                     \
			__u32 port_ = MANUL_SNAT_PORT_MIN +                                     \
				      bpf_get_prandom_u32() %                                   \
					      (MANUL_SNAT_PORT_MAX - MANUL_SNAT_PORT_MIN + 1);  \
			(k)->dport = bpf_htons((__u16)port_);                                   \
			if (!bpf_map_update_elem(&(map), (k), (v), BPF_NOEXIST))                \
				found_ = 0;                                                     \
		}                                                                               \
		found_;                                                                         \
	})

__attribute__((noinline)) int svc_snat_alloc(struct manul_nat_key *k,
					     const struct manul_nat_value *v)
{
	if (!k || !v)
		return -1;
	return SNAT_ALLOC(manul_nat, k, v);
}

/* A new connection to a frontend with MANUL_SVC_FE_EXT_CLUSTER, arriving
 * at a host interface, given backend *be: sets the forward entry *fwd's
 * flags (MANUL_NAT_SNAT with the masquerade address and port, whose
 * SNAT_REV entry it writes, or MANUL_NAT_DSR). Returns 0, or -1 to drop.
 * A global function, so its stack is not the caller's. */
__attribute__((noinline)) int svc_ext_new(struct __sk_buff *skb, const struct pkt *p,
					  const struct manul_svc_be_value *be,
					  struct manul_nat_value *fwd, __u64 now)
{
	__u32 node_addr = 0;
	int where;

	if (!skb || !p || !be || !fwd)
		return -1;
	where = ext_route(skb, 4, p, p->src, &be->addr, be->port, &node_addr);
	if (where < 0)
		return -1;
	/* A pod of another node to a backend here keeps its address: the
	 * reply leaves through this node, whose REV entry translates it. */
	if (where == EXT_LOCAL && (fwd->flags & MANUL_NAT_POOL))
		return 0;
	/* The DSR option rides on TCP's SYN and every UDP datagram, which
	 * SCTP has no equivalent of: SCTP to another node is masqueraded
	 * (as IPv6's is). So is a connection whose backend is its client
	 * (a pod of another node reaching a node port of its own service):
	 * a packet from its own address would not be taken in. */
	if (ext_mode() == MANUL_EXT_DSR && (where == EXT_LOCAL || p->proto != IPPROTO_SCTP) &&
	    be->addr != addr4(p->src)) {
		if (where == EXT_REMOTE) {
			/* The option goes after a plain 20-byte header. */
			if (p->l4_off != ETH_HLEN + sizeof(struct iphdr))
				return -1;
			fwd->flags |= MANUL_NAT_DSR;
			count(MANUL_CNT_SVC_DSR);
		}
		return 0;
	}
	if (where == EXT_LOCAL && node_addr == be->addr)
		return 0; /* the host itself: nothing to masquerade */
	{
		struct manul_nat_key k = {
			.src = be->addr,
			.dst = node_addr,
			.sport = be->port,
			.proto = p->proto,
			.dir = MANUL_NAT_SNAT_REV,
		};
		__u32 slot = 1;
		struct manul_nat_value *r = bpf_map_lookup_elem(&manul_nat_scratch, &slot);

		if (!r)
			return -1;
		__builtin_memset(r, 0, sizeof(*r));
		r->created_ns = now;
		r->last_seen_ns = now;
		__builtin_memcpy(&r->addr, p->src, 4);
		r->port = p->sport;
		r->id = fwd->id;
		r->flags = MANUL_NAT_SNAT;
		if (svc_snat_alloc(&k, r)) {
			count(MANUL_CNT_SVC_SNAT_FULL);
			return -1;
		}
		fwd->flags |= MANUL_NAT_SNAT;
		fwd->snat_addr = node_addr;
		fwd->snat_port = k.dport;
		count(MANUL_CNT_SVC_SNAT);
	}
	return 0;
}

/* A reply to a masqueraded connection (to a node address and a port of
 * the masquerade range, with a SNAT_REV entry): its destination goes back
 * to the client. On a host interface (`host`) at once; from a local
 * backend after its policy (svc_after), so conntrack sees the packet as
 * it left. Returns 0 when the packet is no such reply, 1 when it is, -1
 * on a failed rewrite. */
static __always_inline int ext_snat_reply(struct __sk_buff *skb, const struct pkt *p,
					  struct svc_nat *n, int host, __u64 now)
{
	struct manul_nat_key key = {
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.dir = MANUL_NAT_SNAT_REV,
	};
	struct manul_nat_value *nv;

	if (bpf_ntohs(p->dport) < MANUL_SNAT_PORT_MIN)
		return 0;
	__builtin_memcpy(&key.src, p->src, 4);
	__builtin_memcpy(&key.dst, p->dst, 4);
	nv = bpf_map_lookup_elem(&manul_nat, &key);
	if (!nv)
		return 0;
	nv->last_seen_ns = now;
	if (host)
		return rewrite(skb, p, 0, key.dst, nv->addr, p->dport, nv->port) ? -1 : 1;
	n->after = SVC_SNAT_REV;
	n->addr = nv->addr;
	n->port = nv->port;
	return 1;
}

/* Sends a translated external packet (masqueraded, or with DSR) of IP
 * `version` toward its backend past the kernel's input path, as the FIB
 * routes it: a packet arriving with one of the node's own addresses as
 * its source would be dropped there as a martian, and DSR's would draw
 * ICMP redirects. (Addresses of the family's size; ports in network
 * order.) */
static __always_inline int ext_forward(struct __sk_buff *skb, __u8 version, const void *src,
				       const void *dst, __u16 sport, __u16 dport, __u8 proto)
{
	struct bpf_fib_lookup *f = fib_query(skb, version, proto, src, dst, sport, dport);

	if (!f)
		return TC_ACT_SHOT;
	if (bpf_fib_lookup(skb, f, sizeof(*f), BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(f->ifindex, 0, 0, 0);
}

/* Puts the DSR option (the frontend) after the 20-byte IPv4 header of a
 * packet sent to a backend on another node. */
static __always_inline int dsr_add_option(struct __sk_buff *skb, __u32 fe_addr, __u16 fe_port)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u8 *opt;

	if (bpf_skb_adjust_room(skb, MANUL_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	opt = (void *)(ip + 1);
	if ((void *)(opt + MANUL_DSR_OPT_LEN) > data_end)
		return -1;
	opt[0] = MANUL_DSR_OPT_TYPE;
	opt[1] = MANUL_DSR_OPT_LEN;
	__builtin_memcpy(opt + 2, &fe_port, 2);
	__builtin_memcpy(opt + 4, &fe_addr, 4);
	ip->ihl = 5 + MANUL_DSR_OPT_LEN / 4;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) + MANUL_DSR_OPT_LEN);
	ip->check = 0;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip,
					    sizeof(*ip) + MANUL_DSR_OPT_LEN, 0));
	return 0;
}

/* A packet arriving at a host interface with the DSR option as its only
 * option: the connection's REV entry (backend, client -> frontend) is
 * written from it, so the backend's replies leave this node from the
 * frontend, and the option is taken off. Returns 1 when it did so (the
 * packet must be parsed again), 0 when the packet has no such option, -1
 * to drop: also when the frontend it names is not one another node could
 * have sent (dsr_trusted, manul_dsr_trust.h). */
static __always_inline int dsr_take_option(struct __sk_buff *skb, const struct pkt *p, __u64 now)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u8 *opt = (void *)(ip + 1);
	struct manul_nat_key key = {
		.sport = p->dport,
		.dport = p->sport,
		.proto = p->proto,
		.dir = MANUL_NAT_REV,
	};
	struct manul_nat_value *v;
	__u32 slot = 0;

	if (p->version != 4 || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return 0;
	if (p->l4_off != ETH_HLEN + sizeof(*ip) + MANUL_DSR_OPT_LEN)
		return 0;
	if ((void *)(opt + MANUL_DSR_OPT_LEN) > data_end)
		return 0;
	if (opt[0] != MANUL_DSR_OPT_TYPE || opt[1] != MANUL_DSR_OPT_LEN)
		return 0;
	v = bpf_map_lookup_elem(&manul_nat_scratch, &slot);
	if (!v)
		return -1;
	__builtin_memset(v, 0, sizeof(*v));
	v->created_ns = now;
	v->last_seen_ns = now;
	v->flags = MANUL_NAT_DSR;
	__builtin_memcpy(&v->port, opt + 2, 2);
	__builtin_memcpy(&v->addr, opt + 4, 4);
	if (!dsr_trusted(p, (const __u8 *)&v->addr, v->port))
		return -1;
	__builtin_memcpy(&key.src, p->dst, 4);
	__builtin_memcpy(&key.dst, p->src, 4);
	if (bpf_map_update_elem(&manul_nat, &key, v, BPF_ANY))
		return -1;
	if (bpf_skb_adjust_room(skb, -MANUL_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -1;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) - MANUL_DSR_OPT_LEN);
	ip->check = 0;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
	return 1;
}

/* A translated packet of a masqueraded or DSR connection (its forward
 * entry *ent: the backend, the masquerade), its destination already the
 * backend's: the source masqueraded, or the DSR option added (TCP's SYN,
 * every UDP datagram), then sent on toward the backend. `fe_addr` and
 * `fe_port`: the frontend. A global function, so its stack is not the
 * caller's. */
__attribute__((noinline)) int svc_ext_send(struct __sk_buff *skb, const struct pkt *p,
					   const struct manul_nat_value *ent, __u32 fe_addr,
					   __u32 fe_port)
{
	__u32 src, dst, sport;

	if (!skb || !p || !ent)
		return TC_ACT_SHOT;
	__builtin_memcpy(&src, p->src, 4);
	dst = ent->addr;
	sport = p->sport;
	if (ent->flags & MANUL_NAT_SNAT) {
		if (rewrite_here(skb, p, 1, src, ent->snat_addr, p->sport, ent->snat_port))
			return TC_ACT_SHOT;
		src = ent->snat_addr;
		sport = ent->snat_port;
	} else if ((p->proto == IPPROTO_UDP || (p->tcp_flags & 0x12) == 0x02) &&
		   dsr_add_option(skb, fe_addr, fe_port)) {
		return TC_ACT_SHOT;
	}
	return ext_forward(skb, 4, &src, &dst, sport, ent->port, p->proto);
}

#endif /* MANUL_SVC_EXT_H */
