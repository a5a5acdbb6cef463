/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after the service maps and before
 * manul_svc_ext.h): whether the backend's node believes a DSR option
 * (IPv4) or IPv6 DSR header. The frontend it names becomes the source of
 * the backend's replies (the connection's REV entry), so it must be one
 * that another node sends: an external frontend under
 * externalTrafficPolicy Cluster that this node knows too, that is a node
 * port at another cluster node's address (manul_dsr_node, written by the
 * driver from the desired state's node addresses), or an external or
 * load-balancer address's port. The packet's own source cannot say who
 * sent it: DSR keeps the client's address. A packet naming any other
 * frontend is dropped and counted (MANUL_CNT_DSR_UNTRUSTED): it was
 * forged (or sent by a node the driver does not know yet, whose client
 * retransmits once the node set is applied), and letting it through
 * without the option would have the backend answer from its own address,
 * which the client could not use either.
 */
#ifndef MANUL_DSR_TRUST_H
#define MANUL_DSR_TRUST_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct manul_dsr_node_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_dsr_node SEC(".maps");

/* Whether the frontend a DSR option or header of packet *p names (`fe`:
 * 4 or 16 bytes as p->version says, `port` in network order) is one
 * another node sends (1), or not (0, counted). A subprogram of its own:
 * its keys are its frame's, not the caller's. */
static __attribute__((noinline)) int dsr_trusted(const struct pkt *p, const __u8 *fe,
						 __u16 port)
{
	/* One key at a time, in one slot: the frame stays within the
	 * verifier's budget for the deepest chain (handle, svc6_in, this). */
	union {
		struct manul_dsr_node_key node;
		struct manul_svc_fe_key fe4;
		struct manul_svc_fe6_key fe6;
	} k;
	struct manul_svc_fe_value *v = 0;
	int node;

	if (!p || !fe)
		return 0;
	__builtin_memset(&k, 0, sizeof(k));
	if (p->version == 4) {
		k.node.addr[10] = 0xff;
		k.node.addr[11] = 0xff;
		__builtin_memcpy(&k.node.addr[12], fe, 4);
	} else {
		__builtin_memcpy(k.node.addr, fe, 16);
	}
	node = bpf_map_lookup_elem(&manul_dsr_node, &k.node) != 0;
	__builtin_memset(&k, 0, sizeof(k));
	if (p->version == 4) {
		k.fe4.port = port;
		k.fe4.proto = p->proto;
		/* A node port's entry has address 0. */
		if (!node)
			__builtin_memcpy(&k.fe4.addr, fe, 4);
		v = bpf_map_lookup_elem(&manul_svc_fe, &k.fe4);
	} else {
		k.fe6.port = port;
		k.fe6.proto = p->proto;
		if (!node)
			__builtin_memcpy(k.fe6.addr, fe, 16);
		v = bpf_map_lookup_elem(&manul_svc_fe6, &k.fe6);
	}
	if (v && (v->flags & MANUL_SVC_FE_EXT_CLUSTER))
		return 1;
	count(MANUL_CNT_DSR_UNTRUSTED);
	return 0;
}

#endif /* MANUL_DSR_TRUST_H */
