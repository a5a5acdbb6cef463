/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of every map key and value shared by the kernel
 * programs (manul_tc.c) and the Rust loader (bindgen reads this file in
 * build.rs). Only fixed-size integer types, no pointers, every padding byte
 * named, so the layouts are identical on both sides and zeroable.
 */
#ifndef MANUL_MAPS_H
#define MANUL_MAPS_H

#include <linux/types.h>

/* Rule bitmaps: one bit per compiled rule of a table. 17 words = 1088 rule
 * slots per (endpoint, hook) table: 1024 user rules plus tier and final
 * sentinels. The kernel loops are bounded by these constants. */
#define MANUL_BITMAP_WORDS 17
#define MANUL_MAX_RULES (MANUL_BITMAP_WORDS * 64)
/* How many Pass rules one packet may follow (tiers and profiles). */
#define MANUL_MAX_PASSES 64

/* Fixed bits in front of the variable part of each LPM key's data (table
 * or space id, side, version/padding); the prefix length of an entry is
 * this plus the bits of the address or port prefix. The Rust side passes the data structs
 * to aya's LpmTrie, which adds the prefix length in front. */
#define MANUL_ADDR_KEY_BASE_BITS 64
#define MANUL_PORT_KEY_BASE_BITS 48
#define MANUL_PROTO_KEY_BASE_BITS 32
#define MANUL_SRC_KEY_BASE_BITS 64

enum manul_side {
	MANUL_SIDE_SRC = 0,
	MANUL_SIDE_DST = 1,
};

enum manul_hook {
	MANUL_HOOK_INGRESS = 0,
	MANUL_HOOK_EGRESS = 1,
};

enum manul_action {
	MANUL_ACTION_ALLOW = 1,
	MANUL_ACTION_DENY = 2,
	MANUL_ACTION_PASS = 3,
	/* The table has no verdict: the next stage of a host endpoint's
	 * policy decides (the end of pre-DNAT and untracked tables). */
	MANUL_ACTION_NEXT = 4,
};

/* A host endpoint's policy besides its normal tiers, one table per hook
 * and stage (manul_ep_value.stage_table); 0 = none of that kind. */
enum manul_stage {
	/* doNotTrack: every packet, before conntrack; an allow skips
	 * conntrack and the other stages, a deny drops. */
	MANUL_STAGE_UNTRACKED = 0,
	/* preDNAT: new flows arriving (ingress hook only), before the
	 * normal or forward tables. */
	MANUL_STAGE_PRE_DNAT = 1,
	/* applyOnForward: new flows forwarded through the host (neither to
	 * nor from the host itself), instead of the normal table. */
	MANUL_STAGE_FORWARD = 2,
	MANUL_STAGE_MAX = 3,
};

/* What a rule slot is, for flow events. */
enum manul_rule_kind {
	MANUL_RULE_POLICY = 0,
	MANUL_RULE_PROFILE = 1,
	MANUL_RULE_TIER_DEFAULT = 2,
	MANUL_RULE_NO_MATCH = 3,
};

enum manul_verdict {
	MANUL_VERDICT_ALLOW = 1,
	MANUL_VERDICT_DENY = 2,
};

/* Why a packet got its verdict (flow events). */
enum manul_reason {
	MANUL_REASON_POLICY = 0,
	MANUL_REASON_NO_ENDPOINT = 1,
	MANUL_REASON_NO_TABLE = 2,
	MANUL_REASON_NO_RULE = 3,
	/* A workload's traffic to its own host, allowed by its policy and
	 * dropped by the endpoint-to-host action. */
	MANUL_REASON_TO_HOST = 4,
	/* A host endpoint's failsafe port. */
	MANUL_REASON_FAILSAFE = 5,
	/* Forwarded through a host endpoint that has no applyOnForward
	 * policy for the direction: allowed. */
	MANUL_REASON_FORWARD_UNPOLICED = 6,
};

enum manul_ct_state {
	MANUL_CT_ALLOWED = 1,
	/* A denied flow, remembered with the table that denied it so that
	 * retransmissions are dropped without an event; re-evaluated as soon
	 * as the endpoint's table id changes. */
	MANUL_CT_DENIED = 2,
};

/* manul_ct_value.tcp_flags */
#define MANUL_TCP_SYN_FWD 0x01
#define MANUL_TCP_SYN_REV 0x02
#define MANUL_TCP_FIN_FWD 0x04
#define MANUL_TCP_FIN_REV 0x08
#define MANUL_TCP_RST 0x10
#define MANUL_TCP_ACK_REV 0x20

/* Per-CPU counters (manul_cnt array index). */
enum manul_counter {
	MANUL_CNT_PACKETS = 0,
	MANUL_CNT_CT_HIT = 1,
	MANUL_CNT_NEW_ALLOWED = 2,
	MANUL_CNT_NEW_DENIED = 3,
	MANUL_CNT_DENIED_CACHED = 4,
	MANUL_CNT_NO_ENDPOINT = 5,
	MANUL_CNT_NO_TABLE = 6,
	MANUL_CNT_NOT_IP = 7,
	MANUL_CNT_EVENTS_LOST = 8,
	MANUL_CNT_ND_ALLOWED = 9,
	/* Packets an untracked (doNotTrack) table allowed or denied. */
	MANUL_CNT_UNTRACKED_ALLOWED = 10,
	MANUL_CNT_UNTRACKED_DENIED = 11,
	/* New connections to a service frontend translated to a backend. */
	MANUL_CNT_SVC_NAT = 12,
	/* New connections to a frontend without backends, rejected (TCP
	 * RST, ICMP port unreachable) or dropped (other protocols). */
	MANUL_CNT_SVC_REJECT = 13,
	/* New connections from a pod to a service it backs (hairpin). */
	MANUL_CNT_SVC_HAIRPIN = 14,
	/* Packets of TCP connections whose backend was removed, answered
	 * with a RST. */
	MANUL_CNT_SVC_RESET = 15,
	/* New connections to a load-balancer address from a client outside
	 * its source ranges, dropped. */
	MANUL_CNT_SVC_SOURCE_DENIED = 16,
	/* External connections (node port, external or load-balancer IP,
	 * externalTrafficPolicy Cluster) masqueraded to a node address. */
	MANUL_CNT_SVC_SNAT = 17,
	/* External connections sent to a backend on another node with the
	 * frontend in an IP option (direct server return). */
	MANUL_CNT_SVC_DSR = 18,
	/* New connections to a Local traffic policy's frontend with no
	 * backend on this node while the service has some elsewhere:
	 * dropped, as kube-proxy does. */
	MANUL_CNT_SVC_LOCAL_DROP = 19,
	/* New external connections dropped because no masquerade port was
	 * free. */
	MANUL_CNT_SVC_SNAT_FULL = 20,
	/* SCTP the program cannot translate, dropped: a fragment (with
	 * more to come) whose port would change (its CRC32c covers bytes
	 * not in it). */
	MANUL_CNT_SVC_UNTRANSLATABLE = 21,
	/* Packets arriving with the DSR option or IPv6 DSR header naming a
	 * frontend no other node sends (not an external Cluster frontend here,
	 * or a node port at an address that is not another cluster node's,
	 * manul_dsr_node), dropped: a forged frontend. */
	MANUL_CNT_DSR_UNTRUSTED = 22,
	/* Packets between two workloads of this node judged by the
	 * destination's egress logic in the source's program run
	 * (manul_peer.h), whatever its verdict. */
	MANUL_CNT_PEER_JUDGED = 23,
	/* Of those, the ones it allowed, delivered straight into the
	 * destination pod: the host's routing skipped. */
	MANUL_CNT_PEER_DELIVERED = 24,
	/* Packets from a pod whose source is none of its endpoint's
	 * addresses (manul_src), dropped at its interface. */
	MANUL_CNT_SPOOFED = 25,
	MANUL_CNT_MAX = 26,
};

/* manul_meta array index. */
enum manul_meta_slot {
	/* The next table id userspace may allocate (survives restarts). */
	MANUL_META_NEXT_TABLE = 0,
	/* 1: drop a workload's traffic to its own host once its policy allowed
	 * it (Felix's defaultEndpointToHostAction Drop); 0: let it through. */
	MANUL_META_TO_HOST_DROP = 1,
	/* enum manul_ext_mode: how external connections reach a backend on
	 * another node. */
	MANUL_META_EXT_MODE = 2,
	/* The ifindex of the host's service device (manul_svc_host.h), 0:
	 * none. */
	MANUL_META_HOST_SVC_IF = 3,
	/* 1: deliver a packet between two workloads of this node straight
	 * into the destination pod (manul_peer.h); otherwise (0, or a map
	 * pinned before the slot existed) the host routes it. */
	MANUL_META_PEER_DELIVERY = 4,
	MANUL_META_MAX = 5,
};

struct manul_bitmap {
	__u64 w[MANUL_BITMAP_WORDS];
};

/* manul_ep: ifindex -> the tables judging its two hooks, and the address
 * space each table's addresses are looked up in. One update flips them
 * all. */
struct manul_ep_value {
	/* Indexed by enum manul_hook; 0 = drop everything on that hook. For
	 * a host endpoint: its normal tiers and profiles, which judge
	 * traffic to or from the host itself. */
	__u32 table[2];
	__u32 space[2];
	__u32 flags; /* MANUL_EP_* */
	__u32 reserved;
	/* Host endpoints: [hook][enum manul_stage]; 0 = no such policy. */
	__u32 stage_table[2][MANUL_STAGE_MAX];
	__u32 stage_space[2][MANUL_STAGE_MAX];
};

/* manul_src (LPM trie): (workload interface, version, address prefix) ->
 * 1: the sources a pod may send from, its endpoint's networks. Written
 * before the interface's manul_ep entry, removed after it. IPv4 addresses
 * use the first 4 bytes of addr. */
struct manul_src_data {
	__u32 ifindex; /* always inside the prefix, with version and pad */
	__u8 version;
	__u8 pad[3];
	__u8 addr[16];
};

struct manul_src_key {
	__u32 prefixlen;
	struct manul_src_data data;
};

/* manul_failsafe: (direction, protocol, port) -> 1: new flows to this port
 * of a host endpoint are allowed whatever its policy says (Felix's failsafe
 * ports), so a bad policy cannot cut a node off. */
struct manul_failsafe_key {
	__u8 outbound; /* 0: to the host (inbound), 1: from it */
	__u8 proto;
	__u16 port; /* host order */
};

/* manul_ep_value.flags */
enum manul_ep_flag {
	MANUL_EP_HOST = 1, /* a host endpoint (else a workload) */
};

/* manul_addr (LPM trie): (space, side, version, address prefix) -> the
 * class of the prefix: which of the space's networks and IP sets contain
 * it. IPv4 addresses use the first 4 bytes of addr. A space is shared by
 * the versions of one table, so an IP-set member change is one entry. */
struct manul_addr_data {
	__u32 space; /* always inside the prefix */
	__u8 side;
	__u8 version;
	__u8 pad[2];
	__u8 addr[16];
};

struct manul_addr_key {
	__u32 prefixlen;
	struct manul_addr_data data;
};

/* manul_class (hash): (table, side, class) -> rules whose address
 * conditions on that side hold for addresses of that class. */
struct manul_class_key {
	__u32 table;
	__u8 side;
	__u8 pad[3];
	__u32 class_id;
};

/* manul_port (LPM trie): (table, side, port prefix) -> rules whose numeric
 * port conditions hold (and whose named-port conditions hold for a triple
 * found in no named-port set). */
struct manul_port_data {
	__u32 table; /* always inside the prefix */
	__u8 side;
	__u8 pad;
	__u8 port[2]; /* big endian */
};

struct manul_port_key {
	__u32 prefixlen;
	struct manul_port_data data;
};

/* manul_proto (LPM trie): (table, version, protocol, ICMP type, ICMP code)
 * -> rules whose ip_version/protocol/ICMP conditions hold. */
struct manul_proto_data {
	__u32 table; /* always inside the prefix */
	__u8 version;
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
};

struct manul_proto_key {
	__u32 prefixlen;
	struct manul_proto_data data;
};

/* manul_np (hash): an exact (address, protocol, port) triple found in a
 * named-port set some rule of the table names -> rules whose port
 * conditions on that side hold for it (replaces the manul_port lookup). */
struct manul_np_key {
	__u32 table;
	__u8 side;
	__u8 version;
	__u8 proto;
	__u8 pad;
	__u16 port; /* host order */
	__u16 pad2;
	__u8 addr[16];
};

/* manul_rule (hash): (table, rule index) -> what the rule does. */
struct manul_rule_key {
	__u32 table;
	__u32 index;
};

struct manul_rule_value {
	__u8 action; /* enum manul_action */
	__u8 kind;   /* enum manul_rule_kind */
	__u16 reserved;
	/* For Pass: the last index of the tier (or profile) it ends. */
	__u32 end;
	/* Numeric ids the driver maps back to names (flow events). */
	__u32 policy;
	__u32 rule;
};

/* manul_ct (LRU hash): per interface, the flow with its endpoints ordered
 * so both directions find one entry (a = the smaller (address, port)). */
struct manul_ct_key {
	__u32 ifindex;
	__u8 proto;
	__u8 version;
	__u16 reserved;
	__u8 addr_a[16];
	__u8 addr_b[16];
	__u16 port_a; /* network order */
	__u16 port_b; /* network order */
};

struct manul_ct_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	/* [0]: from the originator, [1]: replies. */
	__u64 packets[2];
	__u64 bytes[2];
	__u32 table;
	__u32 rule_index;
	__u8 state;     /* enum manul_ct_state */
	__u8 tcp_flags; /* MANUL_TCP_* */
	__u8 orig_is_a;
	__u8 hook;
	__u32 reserved;
};

/* manul_events (ring buffer): a flow started or was denied. */
struct manul_event {
	__u64 ts_ns;
	__u32 ifindex;
	__u32 table;
	__u32 rule_index;
	__u32 policy;
	__u32 rule;
	__u8 hook;
	__u8 verdict; /* enum manul_verdict */
	__u8 reason;  /* enum manul_reason */
	__u8 kind;    /* enum manul_rule_kind */
	__u8 proto;
	__u8 version;
	__u16 reserved;
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u32 reserved2;
};

/*
 * skb->mark bits the TC programs own; every other bit is left as it is
 * (kube-proxy's 0x4000 and 0x8000, the nftables dataplane's
 * 0x00010000-0x00040000 are outside the mask).
 *
 * MANUL_MARK_SVC_FWD: a workload's ingress program (a packet from the
 * pod) translated the packet to its service backend, forward. Such a
 * packet is never a backend's reply to a client, so the destination
 * workload's egress program skips the reverse-translation lookup
 * (svc_to_pod). It grants nothing: policy and conntrack run at the
 * egress as on every packet, and a false mark could only leave a reply
 * untranslated. The ingress program clears the mask on every packet from
 * a workload before anything else (the kernel also clears skb->mark when
 * a packet crosses from the pod's network namespace into the host's), so
 * only the program sets it; the egress believes it only on a forwarded
 * packet (skb->ingress_ifindex set).
 */
#define MANUL_MARK_SVC_FWD 0x00080000
#define MANUL_MARK_MASK 0x00080000

/*
 * Services (kube-proxy replacement), IPv4. Addresses and ports in these
 * maps are in network byte order, as in the packet. A service change is
 * writes to manul_svc_fe and manul_svc_be, never a program load.
 */

/* The source address of a hairpinned connection (a pod reaching a service
 * it backs), 169.254.1.2 (host order here): the pod sees its own connection
 * come from this link-local address, and its replies, routed to its
 * default gateway, come back through its host-side interface where they
 * are translated back. Never routed: both directions are redirected on
 * the pod's own interface. */
#define MANUL_HAIRPIN_SNAT_V4 0xa9fe0102

/* manul_svc_fe (hash): a frontend (service address, port, protocol) ->
 * the backend list its traffic policy selects. Every service address also
 * has an address entry (port 0, protocol 0; flags MANUL_SVC_FE_ADDRESS),
 * looked up first, so traffic to other addresses costs one lookup, and a
 * cluster IP's says (MANUL_SVC_FE_REJECT_UNKNOWN) that a port or protocol
 * no service has there is refused, as kube-proxy does. */
struct manul_svc_fe_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	/* MANUL_SVC_FE_SCOPE_*: 0, or the in-cluster twin of a port entry
	 * that has MANUL_SVC_FE_IN_CLUSTER. */
	__u8 scope;
};

struct manul_svc_fe_value {
	/* The backend list (manul_svc_be); ids are never reused by a run. */
	__u32 id;
	/* Backends at indices 0..count; 0: new connections are rejected. */
	__u32 count;
	/* sessionAffinity ClientIP: seconds a client keeps its backend; 0:
	 * none. */
	__u32 affinity_s;
	__u32 flags; /* MANUL_SVC_FE_* */
	/* Maglev (external traffic of a Service marked for it): the lookup
	 * table (manul_svc_mag) a new connection's flow hash picks its
	 * backend from, and its size M; 0: random. */
	__u32 maglev;
	__u32 maglev_size;
};

#define MANUL_SVC_FE_ADDRESS 0x01
#define MANUL_SVC_FE_REJECT_UNKNOWN 0x02
/* On an address entry: a load-balancer address with source ranges; a new
 * connection from a client no manul_svc_src prefix of the address holds
 * is dropped. */
#define MANUL_SVC_FE_SOURCE_RANGES 0x04
/* On a port entry of a node port, an external or a load-balancer IP under
 * externalTrafficPolicy Cluster: a new connection arriving at a host
 * interface is masqueraded to the node's address, or, in DSR mode, sent
 * to a backend on another node with the frontend in an IPv4 option or an
 * IPv6 destination option. */
#define MANUL_SVC_FE_EXT_CLUSTER 0x08
/* On a port entry whose list (a Local traffic policy's) is empty while the
 * service has backends on other nodes: new connections are dropped, not
 * refused. */
#define MANUL_SVC_FE_DROP_EMPTY 0x10
/* On a port entry of a node port, an external or a load-balancer IP under
 * externalTrafficPolicy Local: a new connection from inside the cluster
 * (a pod of this node at its interface, the node itself: its service
 * device, loopback, its sockets under connect-time load balancing; or a
 * pod of another node, a manul_pool source at a host interface) takes
 * the entry's in-cluster twin instead (same key, scope
 * MANUL_SVC_FE_SCOPE_IN_CLUSTER: every ready backend, as kube-proxy's
 * short-circuit to the cluster chain); without a twin, the entry itself. */
#define MANUL_SVC_FE_IN_CLUSTER 0x20

/* manul_svc_fe_key.scope */
#define MANUL_SVC_FE_SCOPE_IN_CLUSTER 1

/* manul_pool (LPM trie): the cluster's IP pools (every IPPool's CIDR) ->
 * 1. IPv6 prefixes as they are, IPv4 ones IPv4-mapped (::ffff:a.b.c.d,
 * prefixlen 96 + the pool's length). A new connection arriving at a host
 * interface from a source in a pool (a pod of another node) to a port
 * entry with MANUL_SVC_FE_IN_CLUSTER is from inside the cluster too, as
 * kube-proxy's ClusterCIDR local-traffic detection has it: it takes the
 * in-cluster twin, keeps its address to a backend on this node and is
 * sent to one elsewhere as externalTrafficPolicy Cluster's traffic is
 * (masqueraded, or DSR), so the reply comes back through this node
 * (MANUL_NAT_POOL). Written by the driver from the desired state's pools:
 * map data, no program reload. */
struct manul_pool_data {
	__u8 addr[16];
};

struct manul_pool_key {
	__u32 prefixlen;
	struct manul_pool_data data;
};

/* manul_svc_src (LPM trie): (load-balancer address, client prefix) -> 1:
 * the address's loadBalancerSourceRanges (IPv4). The address is always
 * inside the prefix: prefixlen = 32 + the range's length. */
struct manul_svc_src_data {
	__u32 lb; /* network order */
	__u32 client; /* network order */
};

struct manul_svc_src_key {
	__u32 prefixlen;
	struct manul_svc_src_data data;
};

/* manul_svc_be (hash): (list id, index) -> backend. */
struct manul_svc_be_key {
	__u32 id;
	__u32 index;
};

struct manul_svc_be_value {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* A backend of either family (IPv4: the first 4 bytes, zeros after). */
struct manul_svc_be6_value {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

enum manul_nat_dir {
	/* (client, frontend) -> the backend: a connection's later packets. */
	MANUL_NAT_FWD = 0,
	/* (backend, client) as the reply leaves the backend -> the frontend
	 * the reply's source is translated back to. */
	MANUL_NAT_REV = 1,
	/* A packet already translated on the same interface (hairpin), seen
	 * again on the way into the pod: passed. */
	MANUL_NAT_DONE = 2,
	/* (backend, node address) as a reply to a masqueraded connection
	 * arrives, keyed by the port the node allocated -> the client its
	 * destination is translated back to (its source is translated back
	 * to the frontend by the connection's REV entry where it leaves the
	 * node). */
	MANUL_NAT_SNAT_REV = 3,
	/* (backend, host address) as the reply to a connection of a
	 * host-networked process leaves the backend -> the frontend its
	 * source is translated back to (manul_svc_host.h). */
	MANUL_NAT_HOST_REV = 4,
};

/* manul_nat_value.flags */
#define MANUL_NAT_HAIRPIN 0x01
/* Set by the driver on a TCP connection's forward entry when its backend
 * left the list: the client's next packet is answered with a RST and the
 * entry is deleted. */
#define MANUL_NAT_RESET 0x02
/* FWD: the client's source is masqueraded (snat_addr, snat_port). */
#define MANUL_NAT_SNAT 0x04
/* FWD: direct server return to a backend on another node (its packets
 * carry the frontend in an IPv4 option or an IPv6 destination option:
 * TCP's SYN, every UDP datagram); REV: written by the backend's node from
 * that option. */
#define MANUL_NAT_DSR 0x08
/* FWD: a new connection from a pod of another node (a source in
 * manul_pool, arriving at a host interface) to a Local external frontend:
 * not masqueraded to a backend on this node (the reply leaves through
 * this node anyway), masqueraded or sent with DSR to one elsewhere. */
#define MANUL_NAT_POOL 0x10
/* FWD: a connection of a host-networked process, sent through the host's
 * service device; its reverse entry is MANUL_NAT_HOST_REV. */
#define MANUL_NAT_FROM_HOST 0x80

/* The host's service device (manul_svc_host.h): the MAC
 * address the driver gives it (0e:6d:6e:6c:73:76), which a reply
 * redirected into it carries as its destination. */
#define MANUL_HOST_SVC_MAC_HI 0x0e6d
#define MANUL_HOST_SVC_MAC_LO 0x6e6c7376

/* manul_nat (LRU hash): the service NAT's conntrack. A connection has a
 * forward entry (the backend it was given: it keeps it whatever happens
 * to the backend list) and a reverse entry (the frontend its replies come
 * from); a hairpinned one also has DONE entries. */
struct manul_nat_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir; /* enum manul_nat_dir */
	__u16 pad;
};

struct manul_nat_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	/* FWD: the backend; REV: the frontend. */
	__u32 addr;
	__u16 port;
	__u16 pad;
	/* The backend list the connection was given a backend from. */
	__u32 id;
	__u32 flags; /* MANUL_NAT_* */
	/* FWD with MANUL_NAT_SNAT: the node address and port the client is
	 * masqueraded to (network order); 0 otherwise. */
	__u32 snat_addr;
	__u16 snat_port;
	__u16 pad2;
};

/* manul_svc_aff (LRU hash): sessionAffinity ClientIP, (client, list id)
 * -> the client's backend and when it last got it. */
struct manul_svc_aff_key {
	__u32 client;
	__u32 id;
};

struct manul_svc_aff_value {
	__u64 ts_ns;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/*
 * Maglev consistent hashing (manul_svc_maglev.h). A table is immutable:
 * a new backend set gets a new table id, written whole before the
 * frontends flip to it, the old one deleted after.
 */

/* The seed of the flow hash (dataplane-api's maglev::FLOW_SEED). */
#define MANUL_MAGLEV_FLOW_SEED 0x6d616e756c5f6d67ULL

/* manul_svc_mag (hash): (table id, slot) -> the slot's backend
 * (manul_svc_be6_value, either family: IPv4 in the first 4 bytes). */
struct manul_svc_mag_key {
	__u32 table;
	__u32 slot;
};

/*
 * External traffic to a backend on another node (externalTrafficPolicy
 * Cluster), manul_meta[MANUL_META_EXT_MODE].
 */
enum manul_ext_mode {
	/* Masquerade to the node's address toward the backend, with a port
	 * from MANUL_SNAT_PORT_MIN..MAX: replies come back through this node
	 * (kube-proxy's behaviour; Calico's bpfExternalServiceMode Tunnel). */
	MANUL_EXT_SNAT = 0,
	/* Direct server return: the client's address is kept, the frontend
	 * travels to the backend's node, which answers the client itself: in
	 * an IPv4 option (MANUL_DSR_OPT_*), or over IPv6 in a Destination
	 * Options header (MANUL_DSR6_*). */
	MANUL_EXT_DSR = 1,
};

/* Masquerade ports: above Linux's default ephemeral range (32768-60999),
 * so a node's own connections do not collide with them. */
#define MANUL_SNAT_PORT_MIN 61000
#define MANUL_SNAT_PORT_MAX 65535

/* The DSR option: type 0x9e (copied, class 0, number 30: the experimental
 * option of RFC 4727), length 8, the frontend's port and address (network
 * order). */
#define MANUL_DSR_OPT_TYPE 0x9e
#define MANUL_DSR_OPT_LEN 8

/* The IPv6 DSR header: a Destination Options header (next header 60, RFC
 * 8200 section 4.6) of MANUL_DSR6_HDR_LEN bytes right after the IPv6
 * header, its next header the L4 protocol, its length field 2 ((2 + 1) x
 * 8 bytes), holding one option: type 0x1e (RFC 4727's experimental type
 * whose two high bits, 00, tell a node that does not know it to skip it,
 * and whose change bit is 0: not rewritten en route), data length 18:
 * the frontend's address (16 bytes) and port (network order), then two
 * Pad1 bytes. */
#define MANUL_DSR6_HDR_LEN 24
#define MANUL_DSR6_HDR_EXT_LEN 2
#define MANUL_DSR6_OPT_TYPE 0x1e
#define MANUL_DSR6_OPT_LEN 18

/* manul_dsr_node (hash, key -> 1): the other cluster nodes' addresses, the
 * only addresses of a node port a DSR option or header may name (see
 * manul_dsr_trust.h; a packet naming another frontend is dropped and
 * counted, MANUL_CNT_DSR_UNTRUSTED). IPv6 addresses as they are, IPv4
 * ones IPv4-mapped (::ffff:a.b.c.d). Written by the driver from the
 * desired state's node addresses: a node joining or leaving is a map
 * write. */
struct manul_dsr_node_key {
	__u8 addr[16];
};

/*
 * Services over IPv6 (manul_svc6.h), on workload and host interfaces:
 * the same model as IPv4 in maps of their own, addresses as 16 bytes
 * (network order); a node port's frontend address is ::. Backend list ids share the IPv4 ones' space (a list holds one
 * family's backends); manul_svc_fe_value, manul_svc_be_key and
 * manul_svc_be6_value serve both families.
 */

/* The source address of a hairpinned IPv6 connection, fd6d:6e6c::2 as
 * four words in host order: a unique local address (RFC 4193). The pod
 * routes it like any off-link address, to its default gateway, so its
 * replies come back through its host-side interface where they are
 * translated back. Never routed. */
#define MANUL_HAIRPIN_SNAT_V6_W0 0xfd6d6e6c
#define MANUL_HAIRPIN_SNAT_V6_W3 0x00000002

/* manul_svc_fe6 (hash): as manul_svc_fe, for IPv6 service addresses. */
struct manul_svc_fe6_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 scope; /* as manul_svc_fe_key's */
};

/* manul_nat6 (LRU hash): as manul_nat. */
struct manul_nat6_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir; /* enum manul_nat_dir */
	__u16 pad;
};

struct manul_nat6_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	/* FWD: the backend; REV: the frontend. */
	__u8 addr[16];
	__u16 port;
	__u16 pad;
	__u32 id;
	__u32 flags; /* MANUL_NAT_* */
	/* FWD with MANUL_NAT_SNAT: the node address and port the client is
	 * masqueraded to (network order); zeros otherwise. */
	__u8 snat_addr[16];
	__u16 snat_port;
	__u16 pad2;
};

/* manul_svc_src6 (LPM trie): as manul_svc_src, for IPv6 load-balancer
 * addresses: prefixlen = 128 + the range's length. */
struct manul_svc_src6_data {
	__u8 lb[16];
	__u8 client[16];
};

struct manul_svc_src6_key {
	__u32 prefixlen;
	struct manul_svc_src6_data data;
};

/* manul_svc_aff6 (LRU hash): as manul_svc_aff. */
struct manul_svc_aff6_key {
	__u8 client[16];
	__u32 id;
};

struct manul_svc_aff6_value {
	__u64 ts_ns;
	__u8 addr[16];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

#endif /* MANUL_MAPS_H */
