//go:build ignore

/* Share of sends per path under the kernel's own MPTCP scheduler.
 *
 * The default scheduler (mptcp_subflow_get_send) fires the tracepoint
 * mptcp:mptcp_subflow_get_send once for every subflow it considers, in
 * conn_list order, on each decision; the tracepoint does not say which
 * subflow won. This raw tracepoint program re-does the scheduler's choice
 * from what it sees: among active subflows the one with the smallest
 * "linger time" (queued bytes / average pacing rate), backup subflows only
 * when no other is active, and only if that subflow can take data. A
 * decision is committed when the next one starts (the first subflow of a
 * connection, or another connection), so the counters lag by one decision.
 *
 * Per local address it counts: considered (tracepoint hits), free (the
 * subflow could take data then), chosen (the reconstructed decision) and
 * bytes (what the path's subflows carried: tcp_sock.bytes_acked sampled at
 * each hit. Not bytes_sent: that counts every transmit attempt, and where a
 * shaped link's qdisc refuses packets, TCP's retries and retransmissions
 * outnumbered the data the link carried several times over).
 *
 * Only subflows whose socket is in the scope network namespace and belongs
 * to the scope cgroup (or one of its descendants) count, like the sockops
 * policy attached there: the tracepoint fires for every MPTCP connection of
 * the machine, in every network namespace, and local addresses repeat
 * across namespaces. Kernel-created subflows carry their connection's
 * cgroup (mptcp_attach_cgroup) and namespace. The loader sets scope_cgid
 * and scope_netns; the program walks the socket's cgroup ancestors (up to
 * SCOPE_MAX_DEPTH levels) looking for the scope cgroup, so no depth
 * computed from a (possibly namespaced) path is needed. The root of the
 * hierarchy takes every socket of the namespace.
 * raw_tracepoint programs load under lockdown=integrity. */
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define GP_TCPF_ESTABLISHED (1 << 1)
#define GP_TCPF_CLOSE_WAIT (1 << 8)

/* The scope: cgroup id (kernfs node id, the directory's inode number), and
 * the network namespace's cookie (SO_NETNS_COOKIE). */
volatile const __u64 scope_cgid;
volatile const __u64 scope_netns;

/* Scope cgroups deeper than this below the real root never match. */
#define SCOPE_MAX_DEPTH 16

struct share {
	__u64 considered;
	__u64 free;
	__u64 chosen;
	__u64 bytes; /* bytes carried (tcp_sock.bytes_acked deltas) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, struct share);
} shares SEC(".maps");

/* Last tcp_sock.bytes_acked seen per subflow socket; LRU so that closed
 * subflows age out by themselves. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} last_sent SEC(".maps");

/* The decision in progress on this CPU: [0] active, [1] backup mode. */
struct decision {
	__u64 msk;
	__u64 linger[2];
	struct addr_key best[2];
	__u32 have[2];
	__u32 free[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decision);
} current SEC(".maps");

static __always_inline int key_of(struct sock *ssk, struct addr_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (!ssk)
		return -1;
	k->family = BPF_CORE_READ(ssk, __sk_common.skc_family);
	if (k->family == AF_INET) {
		k->addr[0] = BPF_CORE_READ(ssk, __sk_common.skc_rcv_saddr);
	} else if (k->family == AF_INET6) {
		BPF_CORE_READ_INTO(&k->addr, ssk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32);
	} else {
		return -1;
	}
	return 0;
}

/* in_scope: ssk is in the scope network namespace, and its cgroup is the
 * scope cgroup or below it: one of its ancestors
 * (cgroup->ancestors[0..level], itself included) is the scope. */
static __always_inline int in_scope(struct sock *ssk)
{
	struct cgroup *cg, *anc;
	int level, i;

	if (BPF_CORE_READ(ssk, __sk_common.skc_net.net, net_cookie) != scope_netns)
		return 0;
	cg = BPF_CORE_READ(ssk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	level = BPF_CORE_READ(cg, level);
	for (i = 0; i < SCOPE_MAX_DEPTH; i++) {
		if (i > level)
			break;
		anc = NULL;
		bpf_probe_read_kernel(&anc, sizeof(anc),
				      (void *)cg + bpf_core_field_offset(struct cgroup, ancestors) +
				      i * sizeof(anc));
		if (anc && BPF_CORE_READ(anc, kn, id) == scope_cgid)
			return 1;
	}
	return 0;
}

static __always_inline struct share *entry(struct addr_key *k)
{
	struct share *s = bpf_map_lookup_elem(&shares, k);

	if (s)
		return s;
	struct share zero = {};
	bpf_map_update_elem(&shares, k, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&shares, k);
}

static __always_inline void commit(struct decision *d)
{
	int mode = d->have[0] ? 0 : 1;
	struct share *s;

	if (d->msk && d->have[mode] && d->free[mode]) {
		s = entry(&d->best[mode]);
		if (s)
			__sync_fetch_and_add(&s->chosen, 1);
	}
	__builtin_memset(d, 0, sizeof(*d));
}

SEC("raw_tracepoint/mptcp_subflow_get_send")
int gigapath_get_send(struct bpf_raw_tracepoint_args *ctx)
{
	struct mptcp_subflow_context *subflow = (void *)ctx->args[0];
	struct mptcp_sock *msk;
	struct decision *d;
	struct addr_key k;
	struct share *s;
	struct sock *ssk;
	__u32 zero = 0, state;
	__u64 pace, linger;
	int mode, is_free, active;

	d = bpf_map_lookup_elem(&current, &zero);
	if (!d)
		return 0;
	ssk = BPF_CORE_READ(subflow, tcp_sock);
	msk = (void *)BPF_CORE_READ(subflow, conn);
	if (key_of(ssk, &k) || !in_scope(ssk))
		return 0;

	/* A new decision starts with the connection's first subflow. */
	if ((__u64)msk != d->msk ||
	    (void *)BPF_CORE_READ(msk, conn_list.next) == (void *)&subflow->node) {
		commit(d);
		d->msk = (__u64)msk;
	}

	is_free = BPF_CORE_READ(ssk, sk_wmem_queued) < BPF_CORE_READ(ssk, sk_sndbuf);
	s = entry(&k);
	if (s) {
		__u64 key = (__u64)ssk, sent, *last;

		__sync_fetch_and_add(&s->considered, 1);
		if (is_free)
			__sync_fetch_and_add(&s->free, 1);
		/* Every subflow is seen on every decision, so its bytes_acked
		 * is sampled often: the deltas add up to the bytes each path
		 * carried. The first sample only sets the baseline. */
		sent = BPF_CORE_READ((struct tcp_sock *)ssk, bytes_acked);
		last = bpf_map_lookup_elem(&last_sent, &key);
		if (last) {
			if (sent > *last)
				__sync_fetch_and_add(&s->bytes, sent - *last);
			*last = sent;
		} else {
			bpf_map_update_elem(&last_sent, &key, &sent, BPF_ANY);
		}
	}

	/* mptcp_subflow_active(): can send, and a join has completed. */
	state = BPF_CORE_READ(ssk, __sk_common.skc_state);
	active = (1 << state) & (GP_TCPF_ESTABLISHED | GP_TCPF_CLOSE_WAIT);
	if (BPF_CORE_READ_BITFIELD_PROBED(subflow, request_join) &&
	    !BPF_CORE_READ(subflow, fully_established))
		active = 0;
	if (!active)
		return 0;

	pace = BPF_CORE_READ(subflow, avg_pacing_rate);
	if (!pace)
		pace = BPF_CORE_READ(ssk, sk_pacing_rate);
	if (!pace)
		return 0;
	linger = ((__u64)BPF_CORE_READ(ssk, sk_wmem_queued) << 32) / pace;
	mode = (BPF_CORE_READ_BITFIELD_PROBED(subflow, backup) ||
		BPF_CORE_READ_BITFIELD_PROBED(subflow, request_bkup)) ? 1 : 0;
	if (!d->have[mode] || linger < d->linger[mode]) {
		d->have[mode] = 1;
		d->linger[mode] = linger;
		d->best[mode] = k;
		d->free[mode] = is_free;
	}
	return 0;
}
