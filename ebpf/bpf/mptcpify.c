//go:build ignore

/* mptcpify: turn the TCP stream sockets of chosen processes into MPTCP ones.
 *
 * fmod_ret on update_socket_protocol() (kernel >= 6.6), the hook the kernel
 * calls in socket(2) to let BPF pick the protocol. IPv4/IPv6 SOCK_STREAM
 * sockets asking for protocol 0 or IPPROTO_TCP get IPPROTO_MPTCP when the
 * calling task is in one of the cgroups in `cgroups` (or below one of them),
 * or its process is in `pids`. Both maps empty = nothing changes: the
 * program is never system-wide by accident.
 *
 * `pids` holds process ids as the loader sees them: in its PID namespace
 * (`pid_scope`; a process of another namespace never matches), each with
 * the process's start time, so a recycled pid does not inherit the scope. */
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

/* /proc/PID/stat's start time is in USER_HZ ticks since boot. */
#define GP_USER_HZ 100
#define GP_NSEC_PER_TICK (1000000000ULL / GP_USER_HZ)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   /* tgid in the pid_scope namespace */
	__type(value, __u64); /* its start time, ticks since boot (/proc/PID/stat field 22) */
} pids SEC(".maps");

/* The PID namespace the pids are numbered in: dev and inode of the
 * loader's /proc/self/ns/pid; ino 0 = the initial namespace. */
struct pid_scope {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pid_scope);
} pid_scope SEC(".maps");

static __always_inline bool pid_in_scope(void)
{
	struct bpf_pidns_info ns = {};
	struct task_struct *task;
	struct pid_scope *ps;
	__u32 zero = 0, tgid;
	__u64 *start;

	ps = bpf_map_lookup_elem(&pid_scope, &zero);
	if (!ps)
		return false;
	if (ps->ino) {
		/* Fails for a task of any other PID namespace. */
		if (bpf_get_ns_current_pid_tgid(ps->dev, ps->ino, &ns, sizeof(ns)))
			return false;
		tgid = ns.tgid;
	} else {
		tgid = bpf_get_current_pid_tgid() >> 32;
	}
	start = bpf_map_lookup_elem(&pids, &tgid);
	if (!start)
		return false;
	task = bpf_get_current_task_btf();
	return BPF_CORE_READ(task, group_leader, start_boottime) / GP_NSEC_PER_TICK == *start;
}

static __always_inline bool in_scope(void)
{
	__u64 id;
	int level;

	if (pid_in_scope())
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
