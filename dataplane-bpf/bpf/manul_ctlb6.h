/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_ctlb.c (included once, after the IPv4 functions, whose
 * proto_of, serves, refuse, count, translate4 and untranslate4 it
 * uses):
 * connect-time load balancing of IPv6 sockets, with the IPv4 semantics
 * over the IPv6 service maps (manul_svc_fe6, manul_svc_be6) and maps of
 * its own (manul_ctlb.h).
 *
 * - connect6 / sendmsg6 (a socket of a namespace the node serves,
 *   manul_ctlb_netns, as for IPv4): an IPv6 frontend (cluster, external or
 *   load-balancer address and port, or a node port, frontend ::, on one of
 *   the node's own IPv6 addresses, manul_ctlb_local6) gets a backend: the
 *   namespace's affinity entry while it holds, else one at random; no
 *   backend, or a port or protocol the cluster IP does not have, fails the
 *   call with ECONNREFUSED. An address with source ranges is left to the
 *   TC programs.
 * - recvmsg6 / getpeername6: the backend's address answered as the
 *   frontend.
 *
 * An IPv4-mapped destination (::ffff:a.b.c.d: an IPv6 socket, not
 * IPV6_V6ONLY, reaching an IPv4 address; its packets are IPv4 ones) is
 * translated from the IPv4 maps into an IPv4-mapped backend, and
 * recorded in the IPv4 socket maps (the kernel keeps such a socket's
 * destination as an IPv4 address, which the iterators compare).
 *
 * ctx->user_ip6 is read and written a 32-bit word at a time (the width
 * every kernel's verifier accepts); the words hold the address in
 * network order, so their bytes are the maps' 16-byte addresses.
 */
#ifndef MANUL_CTLB6_H
#define MANUL_CTLB6_H

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct manul_ctlb_sock6_key);
	__type(value, struct manul_ctlb_sock6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_sock6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct manul_ctlb_conn6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_conn6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_ctlb_aff_key);
	__type(value, struct manul_svc_aff6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_aff6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct manul_ctlb_local6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_local6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct manul_ctlb_kill6_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_kill6 SEC(".maps");

/* The socket's destination address. */
static __always_inline void user_ip6_get(const struct bpf_sock_addr *ctx, __u8 *out)
{
	__u32 w[4];

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(out, w, 16);
}

static __always_inline void user_ip6_set(struct bpf_sock_addr *ctx, const __u8 *in)
{
	__u32 w[4];

	__builtin_memcpy(w, in, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

/* As pick: the namespace's affinity entry while it holds, else a backend
 * at random (remembered when the frontend has affinity). */
static __always_inline int pick6(struct bpf_sock_addr *ctx, const struct manul_svc_fe_value *fe,
				 struct manul_svc_be6_value *out)
{
	struct manul_ctlb_aff_key ak = { .netns = bpf_get_netns_cookie(ctx), .id = fe->id };
	struct manul_svc_be_key bk = { .id = fe->id };
	struct manul_svc_aff6_value *av;
	struct manul_svc_be6_value *be;
	__u64 now = bpf_ktime_get_ns();

	if (fe->affinity_s) {
		av = bpf_map_lookup_elem(&manul_ctlb_aff6, &ak);
		if (av && now - av->ts_ns < (__u64)fe->affinity_s * NS_PER_S) {
			av->ts_ns = now;
			__builtin_memcpy(out->addr, av->addr, 16);
			out->port = av->port;
			return 0;
		}
	}
	if (!fe->count)
		return -1;
	bk.index = bpf_get_prandom_u32() % fe->count;
	be = bpf_map_lookup_elem(&manul_svc_be6, &bk);
	if (!be)
		return -1;
	__builtin_memcpy(out->addr, be->addr, 16);
	out->port = be->port;
	if (fe->affinity_s) {
		struct manul_svc_aff6_value nv = { .ts_ns = now, .port = be->port };

		__builtin_memcpy(nv.addr, be->addr, 16);
		bpf_map_update_elem(&manul_ctlb_aff6, &ak, &nv, BPF_ANY);
	}
	return 0;
}

/* Records the socket's backend (for getpeername6 and recvmsg6, and a
 * connected socket's for the iterators). */
static __always_inline void remember6(struct bpf_sock_addr *ctx, __u8 proto, __u16 flags,
				      const struct manul_svc_fe6_key *fk, __u32 id,
				      const struct manul_svc_be6_value *be)
{
	struct manul_ctlb_sock6_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.port = be->port,
		.proto = proto,
	};
	struct manul_ctlb_sock6_value sv = {
		.port = fk->port,
		.flags = flags,
		.id = id,
	};

	__builtin_memcpy(sk.addr, be->addr, 16);
	__builtin_memcpy(sv.addr, fk->addr, 16);
	bpf_map_update_elem(&manul_ctlb_sock6, &sk, &sv, BPF_ANY);
	if (flags & MANUL_CTLB_CONNECTED) {
		struct manul_ctlb_conn6_value cv = {
			.port = be->port,
			.proto = proto,
			.id = id,
		};

		__builtin_memcpy(cv.addr, be->addr, 16);
		bpf_map_update_elem(&manul_ctlb_conn6, &sk.cookie, &cv, BPF_ANY);
	}
}

/* The third word of an IPv4-mapped address (::ffff:0:0/96), network
 * order. */
#define V4_MAPPED_W2 bpf_htonl(0x0000ffff)

static __always_inline int v4_mapped(const struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == V4_MAPPED_W2;
}

/* An IPv4-mapped destination translated from the IPv4 maps. */
static __always_inline int translate_mapped(struct bpf_sock_addr *ctx, __u8 proto, __u16 flags)
{
	__u32 addr = ctx->user_ip6[3];
	__u16 port = (__u16)ctx->user_port;
	int verdict = translate4(ctx, &addr, &port, proto, flags);

	/* Unchanged unless translated. */
	ctx->user_ip6[3] = addr;
	ctx->user_port = (__u32)port;
	return verdict;
}

static __always_inline void untranslate_mapped(struct bpf_sock_addr *ctx, __u8 proto)
{
	__u32 addr = ctx->user_ip6[3];
	__u16 port = (__u16)ctx->user_port;

	if (untranslate4(ctx, &addr, &port, proto)) {
		ctx->user_ip6[3] = addr;
		ctx->user_port = (__u32)port;
	}
}

/* A Local external frontend's in-cluster twin when it has one (every
 * socket here is inside the cluster), else `fe`; `fk`: fe's key. */
static __always_inline struct manul_svc_fe_value *in_cluster6(struct manul_svc_fe_value *fe,
							       struct manul_svc_fe6_key *fk)
{
	struct manul_svc_fe_value *in;

	if (!(fe->flags & MANUL_SVC_FE_IN_CLUSTER))
		return fe;
	fk->scope = MANUL_SVC_FE_SCOPE_IN_CLUSTER;
	in = bpf_map_lookup_elem(&manul_svc_fe6, fk);
	fk->scope = 0;
	return in ? in : fe;
}

/* As translate, for ctx->user_ip6/user_port. */
static __always_inline int translate6(struct bpf_sock_addr *ctx, __u8 proto, __u16 flags)
{
	struct manul_svc_fe6_key fk = {};
	struct manul_ctlb_local6_key lk;
	struct manul_svc_be6_value be = {};
	struct manul_svc_fe_value *fe;
	__u16 dport = (__u16)ctx->user_port;
	__u32 reject_unknown;

	if (v4_mapped(ctx))
		return translate_mapped(ctx, proto, flags);
	user_ip6_get(ctx, fk.addr);
	fe = bpf_map_lookup_elem(&manul_svc_fe6, &fk);
	fk.port = dport;
	fk.proto = proto;
	if (fe) {
		if (fe->flags & MANUL_SVC_FE_SOURCE_RANGES)
			return 1;
		reject_unknown = fe->flags & MANUL_SVC_FE_REJECT_UNKNOWN;
		fe = bpf_map_lookup_elem(&manul_svc_fe6, &fk);
		if (!fe)
			return reject_unknown ? refuse() : 1;
		fe = in_cluster6(fe, &fk);
	} else {
		/* A node port (::), on the node's own addresses only. */
		__builtin_memcpy(lk.addr, fk.addr, 16);
		if (!bpf_map_lookup_elem(&manul_ctlb_local6, &lk))
			return 1;
		__builtin_memset(fk.addr, 0, sizeof(fk.addr));
		fe = bpf_map_lookup_elem(&manul_svc_fe6, &fk);
		if (!fe)
			return 1;
		fe = in_cluster6(fe, &fk);
		/* The frontend the socket asked for is the node's address. */
		__builtin_memcpy(fk.addr, lk.addr, 16);
	}
	/* A Local policy with no backend here: left to the packet path,
	 * which drops it (a connect cannot be dropped), as source ranges. */
	if (pick6(ctx, fe, &be))
		return (fe->flags & MANUL_SVC_FE_DROP_EMPTY) ? 1 : refuse();
	remember6(ctx, proto, flags, &fk, fe->id, &be);
	user_ip6_set(ctx, be.addr);
	ctx->user_port = (__u32)be.port;
	count(MANUL_CTLB_CNT_TRANSLATED);
	return 1;
}

/* As untranslate: the frontend a backend's address stands for. */
static __always_inline void untranslate6(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct manul_ctlb_sock6_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.port = (__u16)ctx->user_port,
		.proto = proto,
	};
	struct manul_ctlb_sock6_value *sv;

	if (v4_mapped(ctx)) {
		untranslate_mapped(ctx, proto);
		return;
	}
	user_ip6_get(ctx, sk.addr);
	sv = bpf_map_lookup_elem(&manul_ctlb_sock6, &sk);
	if (!sv)
		return;
	user_ip6_set(ctx, sv->addr);
	ctx->user_port = (__u32)sv->port;
}

SEC("cgroup/connect6")
int manul_ctlb_connect6(struct bpf_sock_addr *ctx)
{
	__u8 proto = proto_of(ctx);

	if (!proto || !serves(ctx))
		return 1;
	return translate6(ctx, proto, MANUL_CTLB_CONNECTED);
}

SEC("cgroup/sendmsg6")
int manul_ctlb_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (proto_of(ctx) != IPPROTO_UDP || !serves(ctx))
		return 1;
	return translate6(ctx, IPPROTO_UDP, 0);
}

SEC("cgroup/recvmsg6")
int manul_ctlb_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (proto_of(ctx) == IPPROTO_UDP)
		untranslate6(ctx, IPPROTO_UDP);
	return 1;
}

SEC("cgroup/getpeername6")
int manul_ctlb_getpeername6(struct bpf_sock_addr *ctx)
{
	__u8 proto = proto_of(ctx);

	if (proto)
		untranslate6(ctx, proto);
	return 1;
}

#endif /* MANUL_CTLB6_H */
