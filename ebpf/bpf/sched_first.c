//go:build ignore

/* gp_first: everything on the first active subflow, in the connection's
 * subflow order (the initial subflow first). When that subflow's send
 * buffer is full the scheduler waits for it rather than spilling onto the
 * next one: single-path behaviour that still fails over, once the first
 * subflow is gone or stale. MPTCP-level retransmissions go to the other
 * subflows only once the first one has stalled (gp_get_retrans). */
#include "mptcp_sched.h"

char __license[] SEC("license") = "GPL";

SEC("struct_ops")
void BPF_PROG(gp_first_init, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
void BPF_PROG(gp_first_release, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
int BPF_PROG(gp_first_get_send, struct mptcp_sock *msk)
{
	struct mptcp_subflow_context *subflow, *pick = NULL;
	int seen = 0;

	gp_begin(msk);

	gp_for_each_subflow(subflow, msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (!mptcp_subflow_active(subflow))
			continue;
		if (gp_usable(subflow))
			pick = subflow;
		break; /* the first active one, or wait for it */
	}
	return gp_schedule(pick);
}

SEC("struct_ops")
int BPF_PROG(gp_first_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk, true);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_first = {
	.init = (void *)gp_first_init,
	.release = (void *)gp_first_release,
	.get_send = (void *)gp_first_get_send,
	.get_retrans = (void *)gp_first_get_retrans,
	.name = "gp_first",
};
