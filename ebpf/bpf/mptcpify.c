//go:build ignore

/* mptcpify: turn the TCP stream sockets of chosen processes into MPTCP ones.
 *
 * fmod_ret on update_socket_protocol() (kernel >= 6.6), the hook the kernel
 * calls in socket(2) to let BPF pick the protocol. IPv4/IPv6 SOCK_STREAM
 * sockets asking for protocol 0 or IPPROTO_TCP get IPPROTO_MPTCP when the
 * calling task is in one of the cgroups in `cgroups` (or below one of them),
 * or its process id (tgid) is in `pids`. Both maps empty = nothing changes:
 * the program is never system-wide by accident. */
#include "common.h"

char __license[] SEC("license") = "GPL";

#define GP_CGROUP_LEVELS 16
/* socket(2) passes the type with its flags (SOCK_CLOEXEC, SOCK_NONBLOCK) to
 * the hook: compare the type bits only. */
#define GP_SOCK_TYPE_MASK 0xf

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); /* cgroup v2 id */
	__type(value, __u8);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} pids SEC(".maps");

static __always_inline bool in_scope(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 id;
	int level;

	if (bpf_map_lookup_elem(&pids, &tgid))
		return true;
	id = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&cgroups, &id))
		return true;
	/* Descendants of a listed cgroup count too. Level 0 is the root, which
	 * is never listed on purpose: that would be system-wide. */
#pragma unroll
	for (level = 1; level < GP_CGROUP_LEVELS; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		if (bpf_map_lookup_elem(&cgroups, &id))
			return true;
	}
	return false;
}

SEC("fmod_ret/update_socket_protocol")
int BPF_PROG(mptcpify, int family, int type, int protocol)
{
	if ((family != AF_INET && family != AF_INET6) || (type & GP_SOCK_TYPE_MASK) != SOCK_STREAM ||
	    (protocol != 0 && protocol != GP_IPPROTO_TCP))
		return protocol;
	if (!in_scope())
		return protocol;
	return GP_IPPROTO_MPTCP;
}
