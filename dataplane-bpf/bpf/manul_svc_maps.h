/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The service frontend and backend maps of both families, the one
 * definition both objects use: the TC programs (manul_tc.c) write
 * translations from them, the connect-time load balancer (manul_ctlb.c)
 * adopts the same pins by name.
 * Include after <bpf/bpf_helpers.h> and manul_maps.h.
 */
#ifndef MANUL_SVC_MAPS_H
#define MANUL_SVC_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_svc_fe_key);
	__type(value, struct manul_svc_fe_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_fe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct manul_svc_be_key);
	__type(value, struct manul_svc_be_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_be SEC(".maps");

/* The IPv6 frontends and backends (manul_svc6.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct manul_svc_fe6_key);
	__type(value, struct manul_svc_fe_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_fe6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct manul_svc_be_key);
	__type(value, struct manul_svc_be6_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manul_svc_be6 SEC(".maps");

#endif /* MANUL_SVC_MAPS_H */
