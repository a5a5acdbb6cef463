/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connect-time load balancing (manul_ctlb.c): the keys and values of its
 * own maps, shared with the Rust side through bindgen (build.rs), as
 * manul_maps.h is for the TC programs. Addresses and ports in network
 * byte order.
 */
#ifndef MANUL_CTLB_H
#define MANUL_CTLB_H

#include <linux/types.h>

/* manul_ctlb_sock (LRU hash): a socket the programs translated, by its
 * cookie and the backend it was given -> the frontend it asked for.
 * getpeername and recvmsg answer with the frontend; the driver finds the
 * connected sockets of a backend that left its list here. */
struct manul_ctlb_sock_key {
	__u64 cookie;
	__u32 addr; /* the backend */
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct manul_ctlb_sock_value {
	__u32 addr; /* the frontend */
	__u16 port;
	__u16 flags; /* MANUL_CTLB_* */
	/* The backend list the backend came from (manul_svc_be). */
	__u32 id;
	__u32 pad;
};

/* Written by connect(): the socket stays on this backend until it
 * connects again (an unconnected UDP socket picks per datagram). */
#define MANUL_CTLB_CONNECTED 0x01

/* manul_ctlb_conn (LRU hash): a socket connected through a frontend, by
 * cookie -> the backend it was given (its latest connect); deleted when
 * the socket is released, so it lists live sockets only. */
struct manul_ctlb_conn_value {
	__u32 addr; /* the backend */
	__u16 port;
	__u8 proto;
	__u8 pad;
	/* The backend list the backend came from. */
	__u32 id;
};

/* manul_ctlb_aff (LRU hash): sessionAffinity ClientIP at connect time,
 * (network namespace cookie, list id) -> the backend (the client's address
 * is not known before the kernel routes the connection; a namespace is
 * one pod, or the node). The value is manul_svc_aff_value. */
struct manul_ctlb_aff_key {
	__u64 netns;
	__u32 id;
	__u32 pad;
};

/* manul_ctlb_netns (hash): the network namespaces whose sockets the
 * programs translate, by namespace cookie (bpf_get_netns_cookie,
 * SO_NETNS_COOKIE) -> MANUL_CTLB_NETNS_*. Written by the driver: the
 * node's own namespace (host processes) and its pods' (the namespaces at
 * the far end of its workload interfaces). A socket of any other
 * namespace that shares the cgroup is left to the packet path; an empty
 * map translates nothing. */
#define MANUL_CTLB_NETNS_NODE 1
#define MANUL_CTLB_NETNS_POD 2

/* manul_ctlb_kill (hash): socket cookie -> the backend it must still be
 * connected to for the socket iterators to destroy it. Filled by the
 * driver when a backend leaves its list, emptied by the iterators. */
struct manul_ctlb_kill_value {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/*
 * IPv6 (manul_ctlb6.h): the same maps for IPv6 sockets, addresses as 16
 * bytes in network order. List ids share one space across families (a
 * list holds one family's backends).
 */

/* manul_ctlb_sock6 (LRU hash): as manul_ctlb_sock. The value is
 * manul_ctlb_sock6_value. */
struct manul_ctlb_sock6_key {
	__u64 cookie;
	__u8 addr[16]; /* the backend */
	__u16 port;
	__u8 proto;
	__u8 pad;
	__u32 pad2;
};

struct manul_ctlb_sock6_value {
	__u8 addr[16]; /* the frontend */
	__u16 port;
	__u16 flags; /* MANUL_CTLB_* */
	__u32 id;
};

/* manul_ctlb_conn6 (LRU hash): as manul_ctlb_conn, cookie -> this. */
struct manul_ctlb_conn6_value {
	__u8 addr[16]; /* the backend */
	__u16 port;
	__u8 proto;
	__u8 pad;
	__u32 id;
};

/* manul_ctlb_aff6 (LRU hash): as manul_ctlb_aff, manul_ctlb_aff_key ->
 * manul_svc_aff6_value. */

/* manul_ctlb_local6 (hash): the node's own IPv6 addresses -> 1. */
struct manul_ctlb_local6_key {
	__u8 addr[16];
};

/* manul_ctlb_kill6 (hash): as manul_ctlb_kill, cookie -> this. */
struct manul_ctlb_kill6_value {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

/* manul_ctlb_cnt (per-CPU array) indices. */
enum manul_ctlb_counter {
	/* A connect or datagram given a backend. */
	MANUL_CTLB_CNT_TRANSLATED = 0,
	/* Refused: no backend, or a port the cluster IP does not have. */
	MANUL_CTLB_CNT_REJECTED = 1,
	/* Sockets destroyed because their backend left. */
	MANUL_CTLB_CNT_DESTROYED = 2,
	MANUL_CTLB_CNT_MAX = 3,
};

/* The immediate of the kfunc call placeholder the loader replaces with
 * the BTF id of bpf_sock_destroy in the running kernel. */
#define MANUL_CTLB_KFUNC_MAGIC 0x4d4e4b46

#endif /* MANUL_CTLB_H */
