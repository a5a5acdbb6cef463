// SPDX-License-Identifier: Apache-2.0
/*
 * Connect-time load balancing (Calico's bpfConnectTimeLoadBalancing): cgroup
 * socket-address programs that give a socket its service backend when it
 * connects (TCP, connected UDP) or sends a datagram (unconnected UDP), so
 * the packets leave with the backend's address and no per-packet NAT is
 * needed. They read the TC programs' service maps (manul_svc_fe,
 * manul_svc_be; pinned by name, adopted from manul_tc.o, which is loaded
 * first) and apply to the sockets of the cgroup they are attached to
 * that live in a network namespace the node serves (manul_ctlb_netns: the
 * node's own, for host-networked processes, and its pods'); a socket of
 * any other namespace in the cgroup (a container of its own network that
 * is no pod of this node, a test's client) is left alone and its packets
 * take the TC programs' path (a node port from outside: the node-port
 * path, masqueraded under externalTrafficPolicy Cluster). An empty
 * manul_ctlb_netns translates nothing (the TC programs handle every
 * service packet).
 *
 * - connect4: a frontend (cluster, external or load-balancer IP and port,
 *   or a node port on one of the node's addresses, manul_ctlb_local) gets a
 *   backend: the namespace's affinity entry while it holds, else one at
 *   random; no backend, or a port or protocol the cluster IP does not
 *   have, fails the connect with ECONNREFUSED at once. The choice is
 *   recorded by socket cookie (manul_ctlb_sock; a connected socket's also
 *   in manul_ctlb_conn, until sock_release deletes it).
 * - sendmsg4: the same per datagram of an unconnected UDP socket.
 * - recvmsg4 / getpeername4: the backend's address is answered as the
 *   frontend it stands for, so the application sees the service address.
 * - connect6, sendmsg6, recvmsg6, getpeername6: the same for IPv6 sockets
 *   and the IPv6 service maps (manul_ctlb6.h).
 * - iter/tcp, iter/udp: destroy the sockets the driver lists in
 *   manul_ctlb_kill (their backend left its list) with bpf_sock_destroy,
 *   when the driver reads the iterator in each network namespace: a UDP
 *   socket stuck on a backend that moved gets an error and connects again.
 *
 * A load-balancer address with source ranges is left to the TC programs
 * (the client's address is not known at connect time).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "manul_maps.h"
#include "manul_ctlb.h"

char LICENSE[] SEC("license") = "GPL";

/* Set at load time: translate UDP too (bpfConnectTimeLoadBalancing:
 * Enabled), not only TCP. */
volatile const __u32 manul_ctlb_udp = 0;

#define NS_PER_S 1000000000ULL
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define ECONNREFUSED 111
/* Kernel TCP states the iterator leaves alone. */
#define TCP_TIME_WAIT 6
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12

/* The TC programs' service maps, adopted by name. */
#include "manul_svc_maps.h"

/* This program's own maps (manul_ctlb.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct manul_ctlb_sock_key);
	__type(value, struct manul_ctlb_sock_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct manul_ctlb_conn_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_conn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_ctlb_aff_key);
	__type(value, struct manul_svc_aff_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_aff SEC(".maps");

/* The node's own addresses (network order) -> 1: where node ports are. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_local SEC(".maps");

/* The namespaces served (manul_ctlb.h): netns cookie -> MANUL_CTLB_NETNS_*. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct manul_ctlb_kill_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_kill SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MANUL_CTLB_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_ctlb_cnt SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&manul_ctlb_cnt, &idx);

	if (c)
		*c += 1;
}

/* Whether the socket lives in a namespace the node serves: only those
 * are translated (getpeername and recvmsg answer for whatever was). */
static __always_inline int serves(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&manul_ctlb_netns, &netns) != 0;
}

/* The socket's protocol, or 0 when the programs leave it alone. */
static __always_inline __u8 proto_of(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		return IPPROTO_TCP;
	if (manul_ctlb_udp && ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

/* Fails the call with ECONNREFUSED. */
static __always_inline int refuse(void)
{
	count(MANUL_CTLB_CNT_REJECTED);
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/* The backend for a new connection of the namespace: its affinity entry
 * while it holds, else one at random (remembered when the frontend has
 * affinity). */
static __always_inline int pick(struct bpf_sock_addr *ctx, const struct manul_svc_fe_value *fe,
				struct manul_svc_be_value *out)
{
	struct manul_ctlb_aff_key ak = { .netns = bpf_get_netns_cookie(ctx), .id = fe->id };
	struct manul_svc_be_key bk = { .id = fe->id };
	struct manul_svc_aff_value *av;
	struct manul_svc_be_value *be;
	__u64 now = bpf_ktime_get_ns();

	if (fe->affinity_s) {
		av = bpf_map_lookup_elem(&manul_ctlb_aff, &ak);
		if (av && now - av->ts_ns < (__u64)fe->affinity_s * NS_PER_S) {
			av->ts_ns = now;
			out->addr = av->addr;
			out->port = av->port;
			return 0;
		}
	}
	if (!fe->count)
		return -1;
	bk.index = bpf_get_prandom_u32() % fe->count;
	be = bpf_map_lookup_elem(&manul_svc_be, &bk);
	if (!be)
		return -1;
	out->addr = be->addr;
	out->port = be->port;
	if (fe->affinity_s) {
		struct manul_svc_aff_value nv = { .ts_ns = now, .addr = be->addr, .port = be->port };

		bpf_map_update_elem(&manul_ctlb_aff, &ak, &nv, BPF_ANY);
	}
	return 0;
}

/* Gives the socket's IPv4 destination (*addr, *port: ctx->user_ip4 and
 * user_port, or an IPv4-mapped IPv6 destination's) its backend when it is
 * a frontend, in place. Returns the program's verdict (1: go on). */
static __always_inline int translate4(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port,
				      __u8 proto, __u16 flags)
{
	struct manul_svc_fe_key fk = { .addr = *addr };
	struct manul_svc_be_value be = {};
	struct manul_svc_fe_value *fe;
	__u32 dst = *addr;
	__u16 dport = *port;
	__u32 reject_unknown;

	fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
	fk.port = dport;
	fk.proto = proto;
	if (fe) {
		if (fe->flags & MANUL_SVC_FE_SOURCE_RANGES)
			return 1;
		reject_unknown = fe->flags & MANUL_SVC_FE_REJECT_UNKNOWN;
		fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
		if (!fe)
			return reject_unknown ? refuse() : 1;
	} else {
		/* A node port, on the node's own addresses only. */
		if (!bpf_map_lookup_elem(&manul_ctlb_local, &dst))
			return 1;
		fk.addr = 0;
		fe = bpf_map_lookup_elem(&manul_svc_fe, &fk);
		if (!fe)
			return 1;
	}
	/* Every socket here is the node's or one of its pods': inside the
	 * cluster, so a Local external frontend's in-cluster twin. */
	if (fe->flags & MANUL_SVC_FE_IN_CLUSTER) {
		struct manul_svc_fe_value *in;

		fk.scope = MANUL_SVC_FE_SCOPE_IN_CLUSTER;
		in = bpf_map_lookup_elem(&manul_svc_fe, &fk);
		if (in)
			fe = in;
	}
	/* A Local policy with no backend here: left to the packet path,
	 * which drops it (a connect cannot be dropped), as source ranges. */
	if (pick(ctx, fe, &be))
		return (fe->flags & MANUL_SVC_FE_DROP_EMPTY) ? 1 : refuse();
	{
		struct manul_ctlb_sock_key sk = {
			.cookie = bpf_get_socket_cookie(ctx),
			.addr = be.addr,
			.port = be.port,
			.proto = proto,
		};
		struct manul_ctlb_sock_value sv = {
			.addr = dst,
			.port = dport,
			.flags = flags,
			.id = fe->id,
		};

		bpf_map_update_elem(&manul_ctlb_sock, &sk, &sv, BPF_ANY);
		if (flags & MANUL_CTLB_CONNECTED) {
			struct manul_ctlb_conn_value cv = {
				.addr = be.addr,
				.port = be.port,
				.proto = proto,
				.id = fe->id,
			};

			bpf_map_update_elem(&manul_ctlb_conn, &sk.cookie, &cv, BPF_ANY);
		}
	}
	*addr = be.addr;
	*port = be.port;
	count(MANUL_CTLB_CNT_TRANSLATED);
	return 1;
}

/* The frontend a backend's address (*addr, *port) stands for on this
 * socket, in place; 0 when it stands for none. */
static __always_inline int untranslate4(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port,
					__u8 proto)
{
	struct manul_ctlb_sock_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = *addr,
		.port = *port,
		.proto = proto,
	};
	struct manul_ctlb_sock_value *sv = bpf_map_lookup_elem(&manul_ctlb_sock, &sk);

	if (!sv)
		return 0;
	*addr = sv->addr;
	*port = sv->port;
	return 1;
}

static __always_inline int translate(struct bpf_sock_addr *ctx, __u8 proto, __u16 flags)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	int verdict = translate4(ctx, &addr, &port, proto, flags);

	/* Unchanged unless translated. */
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	return verdict;
}

static __always_inline void untranslate(struct bpf_sock_addr *ctx, __u8 proto)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;

	if (untranslate4(ctx, &addr, &port, proto)) {
		ctx->user_ip4 = addr;
		ctx->user_port = (__u32)port;
	}
}

SEC("cgroup/connect4")
int manul_ctlb_connect4(struct bpf_sock_addr *ctx)
{
	__u8 proto = proto_of(ctx);

	if (!proto || !serves(ctx))
		return 1;
	return translate(ctx, proto, MANUL_CTLB_CONNECTED);
}

SEC("cgroup/sendmsg4")
int manul_ctlb_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (proto_of(ctx) != IPPROTO_UDP || !serves(ctx))
		return 1;
	return translate(ctx, IPPROTO_UDP, 0);
}

SEC("cgroup/recvmsg4")
int manul_ctlb_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (proto_of(ctx) == IPPROTO_UDP)
		untranslate(ctx, IPPROTO_UDP);
	return 1;
}

SEC("cgroup/getpeername4")
int manul_ctlb_getpeername4(struct bpf_sock_addr *ctx)
{
	__u8 proto = proto_of(ctx);

	if (proto)
		untranslate(ctx, proto);
	return 1;
}

/* The IPv6 programs and maps. */
#include "manul_ctlb6.h"

/* A socket goes: it is no longer one to destroy. */
SEC("cgroup/sock_release")
int manul_ctlb_release(struct bpf_sock *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	bpf_map_delete_elem(&manul_ctlb_conn, &cookie);
	bpf_map_delete_elem(&manul_ctlb_conn6, &cookie);
	return 1;
}

/* The kernel's socket types, as far as the iterators read them; CO-RE
 * relocates the fields against the running kernel's BTF. */
struct in6_addr___ctlb {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned char skc_state;
	struct in6_addr___ctlb skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

/* Its first member is a struct inet_sock, whose first is a struct sock:
 * the iterator reads it as a struct sock. */
struct udp_sock;

struct bpf_iter_meta {
	void *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

/* bpf_sock_destroy(sk), a kfunc. aya (0.14) does not relocate kfunc
 * calls, so the call is written as a raw instruction (BPF_CALL with
 * src_reg BPF_PSEUDO_KFUNC_CALL) whose immediate is a placeholder the
 * loader replaces with the function's BTF id in the running kernel. */
static __always_inline long sock_destroy(void *sk)
{
	register long r1 asm("r1") = (long)sk;
	register long r0 asm("r0");

	asm volatile(".byte 0x85, 0x20, 0x00, 0x00\n\t.long %[magic]"
		     : "=r"(r0), "+r"(r1)
		     : [magic] "i"(MANUL_CTLB_KFUNC_MAGIC)
		     : "r2", "r3", "r4", "r5", "memory");
	return r0;
}

/* Whether an IPv6 socket is still connected to the backend k. */
static __always_inline int connected6(struct sock_common *c,
				      const struct manul_ctlb_kill6_value *k)
{
	__u32 w[4];

	__builtin_memcpy(w, k->addr, 16);
	return c->skc_dport == k->port && c->skc_v6_daddr.in6_u.u6_addr32[0] == w[0] &&
	       c->skc_v6_daddr.in6_u.u6_addr32[1] == w[1] &&
	       c->skc_v6_daddr.in6_u.u6_addr32[2] == w[2] &&
	       c->skc_v6_daddr.in6_u.u6_addr32[3] == w[3];
}

/* Destroys the socket when the driver listed it (manul_ctlb_kill for an
 * IPv4 backend, manul_ctlb_kill6 for an IPv6 one) and it is still
 * connected to the backend that left. */
static __always_inline void reap(void *sk, struct sock_common *c)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct manul_ctlb_kill_value *k = bpf_map_lookup_elem(&manul_ctlb_kill, &cookie);
	struct manul_ctlb_kill6_value *k6;

	if (k) {
		if (c->skc_daddr != k->addr || c->skc_dport != k->port)
			return;
	} else {
		k6 = bpf_map_lookup_elem(&manul_ctlb_kill6, &cookie);
		if (!k6 || !connected6(c, k6))
			return;
	}
	if (sock_destroy(sk) == 0) {
		count(MANUL_CTLB_CNT_DESTROYED);
		/* The cookie is in one of the two lists. */
		bpf_map_delete_elem(&manul_ctlb_kill, &cookie);
		bpf_map_delete_elem(&manul_ctlb_kill6, &cookie);
	}
}

SEC("iter/tcp")
int manul_ctlb_reap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *c = ctx->sk_common;
	unsigned char state;

	if (!c)
		return 0;
	state = c->skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_LISTEN || state == TCP_NEW_SYN_RECV)
		return 0;
	reap(c, c);
	return 0;
}

SEC("iter/udp")
int manul_ctlb_reap_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *u = ctx->udp_sk;

	if (!u)
		return 0;
	reap(u, &((struct sock *)u)->__sk_common);
	return 0;
}
