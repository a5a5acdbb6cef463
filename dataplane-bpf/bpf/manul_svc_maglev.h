/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Maglev consistent hashing for a service frontend's new connections
 * (external traffic of a Service marked for it). The driver writes each
 * table (dataplane-api's maglev.rs: M slots, M a prime at least 100 x the
 * backends, built the same on every node) under a fresh id; the frontend
 * names the table and its size. The flow hash is dataplane-api's
 * maglev::flow_hash: the same function of the flow on every node, so a
 * flow lands on one backend whichever node it reaches, and a backend
 * going away moves only its own flows (and about 1% of the others').
 *
 * Included by manul_tc.c after its maps and helpers.
 */
#ifndef MANUL_SVC_MAGLEV_H
#define MANUL_SVC_MAGLEV_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 22);
	__type(key, struct manul_svc_mag_key);
	__type(value, struct manul_svc_be6_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_mag SEC(".maps");

/* SplitMix64's finalizer. */
static __always_inline __u64 maglev_mix(__u64 h)
{
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
	return h ^ (h >> 31);
}

/* The flow hash: the client's address (16 bytes, IPv4 in the first 4),
 * the frontend's address as keyed (0 for a node port) as four words in
 * network order, then the ports (network order in, host order hashed) and
 * the protocol. */
static __always_inline __u64 maglev_flow_hash(const __u8 *client, __u32 f0, __u32 f1, __u32 f2,
					      __u32 f3, __u16 sport, __u16 dport, __u8 proto)
{
	__u64 h = MANUL_MAGLEV_FLOW_SEED;
	__u64 ports = ((__u64)bpf_ntohs(sport) << 16) | bpf_ntohs(dport);
	const __u32 *c = (const __u32 *)client;

	h = maglev_mix(h ^ (__u64)bpf_ntohl(c[0]));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(c[1]));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(c[2]));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(c[3]));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(f0));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(f1));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(f2));
	h = maglev_mix(h ^ (__u64)bpf_ntohl(f3));
	return maglev_mix(h ^ ports ^ ((__u64)proto << 32));
}

/* The frontend's Maglev slot for a flow hash: its backend, or NULL when
 * the frontend has no table (or the slot is missing: the caller picks at
 * random). */
static __always_inline struct manul_svc_be6_value *
maglev_slot(const struct manul_svc_fe_value *fe, __u64 hash)
{
	struct manul_svc_mag_key k = { .table = fe->maglev };
	__u32 size = fe->maglev_size;

	if (!fe->maglev || !size)
		return 0;
	k.slot = (__u32)(hash % size);
	return bpf_map_lookup_elem(&manul_svc_mag, &k);
}

#endif /* MANUL_SVC_MAGLEV_H */
