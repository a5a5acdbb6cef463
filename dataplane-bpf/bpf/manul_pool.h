/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, before the service NAT): whether a
 * packet's source is in one of the cluster's IP pools (manul_pool, see
 * manul_maps.h), that is a pod of the cluster, on this node or another.
 */
#ifndef MANUL_POOL_H
#define MANUL_POOL_H

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct manul_pool_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_pool SEC(".maps");

/* 1 when the source of *p (IPv4 or IPv6) is in a pool, else 0. A
 * subprogram of its own: its key is its frame's, not the caller's (whose
 * stack is at the verifier's limit). */
static __attribute__((noinline)) int from_pool(const struct pkt *p)
{
	struct manul_pool_key k;

	if (!p)
		return 0;
	__builtin_memset(&k, 0, sizeof(k));
	k.prefixlen = 128;
	if (p->version == 4) {
		k.data.addr[10] = 0xff;
		k.data.addr[11] = 0xff;
		__builtin_memcpy(&k.data.addr[12], p->src, 4);
	} else if (p->version == 6) {
		__builtin_memcpy(k.data.addr, p->src, 16);
	} else {
		return 0;
	}
	return bpf_map_lookup_elem(&manul_pool, &k) != 0;
}

#endif /* MANUL_POOL_H */
