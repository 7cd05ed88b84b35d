//go:build ignore

/* gp_redundant: the same data on every active subflow, for the lowest
 * latency and loss resilience at the price of capacity. Marking several
 * subflows in one decision makes the kernel (ebpf/kernel/mptcp-bpf-sched.patch)
 * send a copy of the data on each. The scheduler waits until every active
 * non-backup subflow has room, so each copy goes out whole and the
 * connection runs at the pace of its slowest path; a path that stops
 * answering leaves the set once the kernel marks it stale. Backup subflows
 * carry data only while no other subflow is active. */
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
	struct mptcp_subflow_context *subflow, *backup = NULL;
	int seen = 0, active = 0;

	gp_begin(msk);

	/* First pass: every active non-backup subflow must have room. */
	gp_for_each_subflow(subflow, msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (!mptcp_subflow_active(subflow))
			continue;
		if (gp_is_backup(subflow)) {
			if (!backup && gp_usable(subflow))
				backup = subflow;
			continue;
		}
		if (!gp_usable(subflow))
			return -1; /* wait for the fullest path */
		active++;
	}
	if (!active)
		return gp_schedule(backup);

	seen = 0;
	gp_for_each_subflow(subflow, msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (mptcp_subflow_active(subflow) && !gp_is_backup(subflow))
			mptcp_subflow_set_scheduled(subflow, true);
	}
	return 0;
}

SEC("struct_ops")
int BPF_PROG(gp_redundant_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk, false);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_redundant = {
	.init = (void *)gp_redundant_init,
	.release = (void *)gp_redundant_release,
	.get_send = (void *)gp_redundant_get_send,
	.get_retrans = (void *)gp_redundant_get_retrans,
	.name = "gp_redundant",
};
