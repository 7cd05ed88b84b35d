//go:build ignore

/* Share of sends per path under the kernel's own MPTCP scheduler.
 *
 * - raw_tracepoint mptcp_subflow_get_send: the default scheduler fires it
 *   once for every subflow it considers on each decision. We count, per
 *   local address, how often a subflow was considered and how often it could
 *   take more data (send buffer not full) at that moment.
 * - kprobe mptcp_sendmsg_frag(sk, ssk, ...): called with the subflow the
 *   scheduler picked each time a fragment is pushed; we count those per
 *   local address. This is the "share of sends per path". The kprobe is
 *   optional: the function is static and may be inlined on some builds.
 * Both program types load under lockdown=integrity. */
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

struct share {
	__u64 considered;
	__u64 free;
	__u64 sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, struct share);
} shares SEC(".maps");

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

static __always_inline struct share *entry(struct addr_key *k)
{
	struct share *s = bpf_map_lookup_elem(&shares, k);

	if (s)
		return s;
	struct share zero = {};
	bpf_map_update_elem(&shares, k, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&shares, k);
}

SEC("raw_tracepoint/mptcp_subflow_get_send")
int gigapath_get_send(struct bpf_raw_tracepoint_args *ctx)
{
	struct mptcp_subflow_context *subflow = (void *)ctx->args[0];
	struct addr_key k;
	struct sock *ssk;
	struct share *s;

	ssk = BPF_CORE_READ(subflow, tcp_sock);
	if (key_of(ssk, &k))
		return 0;
	s = entry(&k);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->considered, 1);
	if (BPF_CORE_READ(ssk, sk_wmem_queued) < BPF_CORE_READ(ssk, sk_sndbuf))
		__sync_fetch_and_add(&s->free, 1);
	return 0;
}

SEC("kprobe/mptcp_sendmsg_frag")
int BPF_KPROBE(gigapath_sendmsg_frag, struct sock *sk, struct sock *ssk)
{
	struct addr_key k;
	struct share *s;

	if (key_of(ssk, &k))
		return 0;
	s = entry(&k);
	if (s)
		__sync_fetch_and_add(&s->sent, 1);
	return 0;
}
