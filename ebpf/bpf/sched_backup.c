//go:build ignore

/* gp_backup: backup-aware. Data goes to the first usable non-backup
 * subflow; backup subflows (MP_PRIO backup, or an endpoint flagged backup)
 * carry data only while no non-backup subflow is active at all. */
#include "mptcp_sched.h"

char __license[] SEC("license") = "GPL";

SEC("struct_ops")
void BPF_PROG(gp_backup_init, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
void BPF_PROG(gp_backup_release, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
int BPF_PROG(gp_backup_get_send, struct mptcp_sock *msk)
{
	struct mptcp_subflow_context *subflow, *pick = NULL, *backup = NULL;
	bool nonbackup_active = false;
	int seen = 0;

	gp_begin(msk);

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
		nonbackup_active = true;
		if (gp_usable(subflow)) {
			pick = subflow;
			break;
		}
	}
	if (pick)
		return gp_schedule(pick);
	if (nonbackup_active)
		return -1; /* wait for a regular subflow to drain */
	return gp_schedule(backup);
}

SEC("struct_ops")
int BPF_PROG(gp_backup_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk, false);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_backup = {
	.init = (void *)gp_backup_init,
	.release = (void *)gp_backup_release,
	.get_send = (void *)gp_backup_get_send,
	.get_retrans = (void *)gp_backup_get_retrans,
	.name = "gp_backup",
};
