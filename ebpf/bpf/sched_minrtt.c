//go:build ignore

/* gp_minrtt: lowest smoothed RTT first, with a threshold. Among the usable
 * non-backup subflows the one with the lowest srtt gets the data, but only
 * if its srtt is within rtt_threshold_pct percent of the lowest srtt of all
 * active non-backup subflows (full ones included). Otherwise the scheduler
 * waits for the fast subflow to drain instead of pushing data onto a much
 * slower path, where it would hold up the receiver (head-of-line blocking).
 * A subflow without an RTT sample yet counts as slowest. Backup subflows
 * are used only when no non-backup subflow is active. */
#include "mptcp_sched.h"

char __license[] SEC("license") = "GPL";

/* Set by the loader before loading (default 150 %: up to 1.5 x the fastest
 * path's RTT). */
const volatile __u32 rtt_threshold_pct = 150;

SEC("struct_ops")
void BPF_PROG(gp_minrtt_init, struct mptcp_sock *msk)
{
}

SEC("struct_ops")
void BPF_PROG(gp_minrtt_release, struct mptcp_sock *msk)
{
}

static __always_inline __u64 srtt_of(struct mptcp_subflow_context *subflow)
{
	struct sock *ssk = bpf_mptcp_subflow_tcp_sock(subflow);
	struct tcp_sock *tp;

	if (!ssk)
		return ~0ULL;
	tp = bpf_skc_to_tcp_sock(ssk);
	if (!tp || !tp->srtt_us)
		return ~0ULL;
	return tp->srtt_us >> 3;
}

SEC("struct_ops")
int BPF_PROG(gp_minrtt_get_send, struct mptcp_sock *msk)
{
	struct mptcp_subflow_context *subflow, *best = NULL, *backup = NULL;
	__u64 best_rtt = ~0ULL, min_rtt = ~0ULL, rtt;
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
		rtt = srtt_of(subflow);
		if (rtt < min_rtt)
			min_rtt = rtt;
		if (gp_usable(subflow) && (!best || rtt < best_rtt)) {
			best = subflow;
			best_rtt = rtt;
		}
	}
	if (best) {
		/* No samples anywhere yet: any usable subflow will do. */
		if (min_rtt == ~0ULL || best_rtt == min_rtt ||
		    (best_rtt != ~0ULL && best_rtt * 100 <= min_rtt * rtt_threshold_pct))
			return gp_schedule(best);
		return -1;
	}
	if (nonbackup_active)
		return -1;
	return gp_schedule(backup);
}

SEC("struct_ops")
int BPF_PROG(gp_minrtt_get_retrans, struct mptcp_sock *msk)
{
	return gp_get_retrans(msk, false);
}

SEC(".struct_ops.link")
struct mptcp_sched_ops gp_minrtt = {
	.init = (void *)gp_minrtt_init,
	.release = (void *)gp_minrtt_release,
	.get_send = (void *)gp_minrtt_get_send,
	.get_retrans = (void *)gp_minrtt_get_retrans,
	.name = "gp_minrtt",
};
