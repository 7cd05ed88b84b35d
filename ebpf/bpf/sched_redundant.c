//go:build ignore

/* gp_redundant: every piece of data on every usable subflow, for the lowest
 * latency and loss resilience at the price of capacity. */
#include "mptcp_sched.h"

char __license[] SEC("license") = "GPL";

SEC("struct_ops")
void BPF_PROG(gp_redundant_init, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
void BPF_PROG(gp_redundant_release, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
int BPF_PROG(gp_redundant_get_send, struct mptcp_sock *msk)
{
	struct mptcp_subflow_context *subflow;
	int seen = 0, n = 0;

	gp_begin(msk);

	gp_for_each_subflow(subflow, (struct sock *)msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (!gp_usable(subflow))
			continue;
		mptcp_subflow_set_scheduled(subflow, true);
		n++;
	}
	return n ? 0 : -1;
}

SEC("struct_ops")
int BPF_PROG(gp_redundant_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_redundant = {
	.init = (void *)gp_redundant_init,
	.release = (void *)gp_redundant_release,
	.get_send = (void *)gp_redundant_get_send,
	.get_retrans = (void *)gp_redundant_get_retrans,
	.name = "gp_redundant",
};
