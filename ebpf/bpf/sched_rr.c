//go:build ignore

/* gp_rr: round robin. Each decision goes to the next usable subflow after
 * the one used last (by subflow id), wrapping around. */
#include "mptcp_sched.h"

char __license[] SEC("license") = "GPL";

struct rr_state {
	__u32 last_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rr_state);
} gp_rr_state SEC(".maps");

SEC("struct_ops")
void BPF_PROG(gp_rr_init, struct mptcp_sock *msk)
{
	bpf_sk_storage_get(&gp_rr_state, msk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

SEC("struct_ops")
void BPF_PROG(gp_rr_release, struct mptcp_sock *msk)
{
	bpf_sk_storage_delete(&gp_rr_state, msk);
}

SEC("struct_ops")
int BPF_PROG(gp_rr_get_send, struct mptcp_sock *msk)
{
	struct mptcp_subflow_context *subflow, *first = NULL, *next = NULL;
	struct rr_state *st;
	int seen = 0;

	gp_begin(msk);

	st = bpf_sk_storage_get(&gp_rr_state, msk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return -1;
	gp_for_each_subflow(subflow, msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (!gp_usable(subflow))
			continue;
		if (!first)
			first = subflow;
		if (subflow->subflow_id > st->last_id) {
			next = subflow;
			break;
		}
	}
	if (!next)
		next = first;
	if (!next)
		return -1;
	st->last_id = next->subflow_id;
	return gp_schedule(next);
}

SEC("struct_ops")
int BPF_PROG(gp_rr_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk, false);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_rr = {
	.init = (void *)gp_rr_init,
	.release = (void *)gp_rr_release,
	.get_send = (void *)gp_rr_get_send,
	.get_retrans = (void *)gp_rr_get_retrans,
	.name = "gp_rr",
};
