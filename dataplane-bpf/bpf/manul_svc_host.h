/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after the service NAT's helpers and
 * before svc_in): host-networked processes reaching services without
 * connect-time load balancing.
 *
 * A host process's packet to a service address passes no interface the
 * programs translate at: it leaves by whatever route the host has. So the
 * driver creates a veth device of its own (the host's service device,
 * manul_meta[MANUL_META_HOST_SVC_IF], MAC MANUL_HOST_SVC_MAC_*) and routes
 * every cluster, external and load-balancer IP of both families to it;
 * the programs are attached there. On its egress hook, a host packet to a
 * frontend gets its backend as a pod's does (svc_in with SVC_FROM_HOST,
 * for IPv6 svc6_in and its steps in manul_svc6.h: the same forward entry,
 * the reverse one written as MANUL_NAT_HOST_REV, never masqueraded) and
 * is sent on to the backend as the FIB routes it (bpf_redirect_neigh); a
 * frontend without backends, or a port the cluster IP does not have, is
 * refused with a RST or an ICMP (ICMPv6) port unreachable handed back
 * into the host through the device's ingress. The backend's reply
 * arrives at its own workload interface, whose ingress finds the
 * MANUL_NAT_HOST_REV entry: after the backend's egress policy the source
 * goes back to the frontend and the reply is redirected into the
 * device's ingress, so the host receives it from the interface its route
 * to the service address names (a strict reverse-path filter holds).
 * Anything else sent to the device is dropped (it is routed there only
 * for service addresses); packets arriving on its ingress (those
 * redirected replies) pass.
 *
 * A host process's packet to its own node's node port goes through
 * loopback: the programs are attached there too, and the same step on
 * its egress translates a node port on one of the node's own addresses
 * (never masqueraded) and sends it on; its reply comes back through the
 * device as above (the reply's source is the node's address: the
 * driver sets IPv4's accept_local there; IPv6 needs nothing). Everything else on loopback passes
 * (127.0.0.0/8 and ::1 always), and all of it while no device is
 * named.
 */
#ifndef MANUL_SVC_HOST_H
#define MANUL_SVC_HOST_H

/* Loopback's ifindex in every network namespace. */
#define MANUL_LOOPBACK_IFINDEX 1

/* The host's service device, or 0. */
static __always_inline __u32 host_svc_ifindex(void)
{
	__u32 slot = MANUL_META_HOST_SVC_IF;
	__u64 *v = bpf_map_lookup_elem(&manul_meta, &slot);

	return v ? (__u32)*v : 0;
}

/* A packet leaving a backend's interface that is no service traffic of a
 * pod: is it the reply to a host process's connection? (`key`: the
 * packet's addresses, ports and protocol.) Sets n->after to
 * SVC_HOST_REV with the frontend when it is. */
static __always_inline void svc_host_reply(struct manul_nat_key *key, struct svc_nat *n)
{
	struct manul_nat_value *nv;

	key->dir = MANUL_NAT_HOST_REV;
	nv = bpf_map_lookup_elem(&manul_nat, key);
	if (!nv)
		return;
	n->after = SVC_HOST_REV;
	n->addr = nv->addr;
	n->port = nv->port;
}

/* A pod's packet to a frontend address that would be dropped, refused
 * or taken as a new connection to it: first, as conntrack finds a
 * packet's connection before any DNAT, is it the reply of one the node
 * tracks from that address (a VIP or external IP assigned on the node, a
 * host process's source)? Its connection to a service (the reply gets
 * the frontend back: SVC_HOST_REV in n->after), or to the pod itself (the
 * pod's interface allowed it: the reply goes as it is). 1 when it is;
 * `key` (the packet's tuple) keeps its direction. New connections to the
 * address are judged as before: only a connection opened toward the pod
 * has such entries, and TCP's SYN without ACK, which opens one, is never
 * a reply (nor pays the two lookups). */
static __always_inline int svc_tracked_reply(struct __sk_buff *skb, const struct pkt *p,
					     struct manul_nat_key *key, struct svc_nat *n)
{
	__u8 dir = key->dir;

	if (tcp_syn_only(p))
		return 0;
	svc_host_reply(key, n);
	key->dir = dir;
	return n->after || ct_reply(skb, p);
}

/* Hands a packet for the host (a reply, a refusal) in through the
 * device's ingress, addressed to the device's MAC, so the host takes it
 * as its own and from the interface its route to the cluster IP names. */
static __always_inline int svc_host_deliver(struct __sk_buff *skb)
{
	__u32 ifindex = host_svc_ifindex();
	__u16 hi = bpf_htons(MANUL_HOST_SVC_MAC_HI);
	__u32 lo = bpf_htonl(MANUL_HOST_SVC_MAC_LO);

	/* No device (being removed): the host takes it from here. */
	if (!ifindex)
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, 0, &hi, 2, 0) || bpf_skb_store_bytes(skb, 2, &lo, 4, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

/* After the backend's policy allowed the reply: its source back to the
 * frontend, and into the host through its service device. */
static __always_inline int svc_host_reverse(struct __sk_buff *skb, const struct pkt *p,
					    const struct svc_nat *n)
{
	if (rewrite(skb, p, 1, addr4(p->src), n->addr, p->sport, n->port))
		return TC_ACT_SHOT;
	return svc_host_deliver(skb);
}

/* Whether an IPv6 address is ::1. */
static __always_inline int svc6_loopback(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return !(w[0] | w[1] | w[2]) && w[3] == bpf_htonl(1);
}

static __always_inline int svc_in(struct __sk_buff *skb, struct pkt *p, struct svc_nat *n,
				  __u64 now, int host);

/* The host's service device, or loopback (p, n: the caller's, zeroed).
 * Egress: a host packet (either family) to a service address, or on
 * loopback to a node port on one of the node's own addresses,
 * translated and sent to its backend, or refused; anything else dropped
 * on the device, passed on loopback.
 * Ingress: what the programs redirected into the device for the host,
 * and loopback's own traffic, passed. */
static __always_inline int svc_host_dev(struct __sk_buff *skb, __u8 hook, struct pkt *p,
					struct svc_nat *n)
{
	int lo = skb->ifindex == MANUL_LOOPBACK_IFINDEX;
	int pass = lo ? TC_ACT_OK : TC_ACT_SHOT;
	__u32 frontend;
	int rc;

	if (hook != MANUL_HOOK_EGRESS || (lo && !host_svc_ifindex()))
		return TC_ACT_OK;
	if (parse(skb, p) != 0 || (p->version != 4 && p->version != 6) || !svc_proto(p->proto))
		return pass;
	frontend = addr4(p->dst);
	/* 127.0.0.0/8 and ::1 stay loopback's own. */
	if (lo && (p->version == 4 ? p->dst[0] == 127 || p->src[0] == 127
				   : svc6_loopback(p->dst) || svc6_loopback(p->src)))
		return TC_ACT_OK;
	rc = svc_in(skb, p, n, bpf_ktime_get_ns(), SVC_FROM_HOST);
	if (rc >= 0)
		return rc;
	/* Not translated: no service there (any more). IPv6's translation
	 * sent the packet on itself (svc6_translate). */
	if (p->version != 4 || addr4(p->dst) == frontend)
		return pass;
	return ext_forward(skb, 4, p->src, p->dst, p->sport, p->dport, p->proto);
}

#endif /* MANUL_SVC_HOST_H */
