/* What gigapath's MPTCP schedulers need from the kernel beyond the host's
 * vmlinux.h: the BPF scheduler API that ebpf/kernel/mptcp-bpf-sched.patch
 * adds to Linux 7.x (`make sched-kernel`), after the one of the MPTCP
 * development tree (multipath-tcp/mptcp_net-next). There,
 * struct mptcp_sched_ops has
 *   int  (*get_send)(struct mptcp_sock *msk);
 *   int  (*get_retrans)(struct mptcp_sock *msk);
 *   void (*init)(struct mptcp_sock *msk);
 *   void (*release)(struct mptcp_sock *msk);
 *   char name[MPTCP_SCHED_NAME_MAX];
 * and a scheduler marks the subflows to send on with
 * mptcp_subflow_set_scheduled(); marking several in one get_send sends the
 * same data on each (redundant sends). Released kernels have the struct (so
 * vmlinux.h describes it and CO-RE relocates against it) but not its
 * struct_ops registration (BTF type bpf_struct_ops_mptcp_sched_ops), so
 * loading fails there; the Go side checks for that type first.
 *
 * The kfuncs are declared weak so the object links everywhere. Those that
 * act on the connection take the struct mptcp_sock * the callback got. */
#ifndef GIGAPATH_MPTCP_SCHED_H
#define GIGAPATH_MPTCP_SCHED_H

#include "common.h"

#define GP_SCHED_SUBFLOWS_MAX 8

extern struct mptcp_subflow_context *
bpf_mptcp_subflow_ctx(const struct sock *sk) __ksym __weak;
extern struct sock *
bpf_mptcp_subflow_tcp_sock(const struct mptcp_subflow_context *subflow) __ksym __weak;
extern void mptcp_subflow_set_scheduled(struct mptcp_subflow_context *subflow,
					bool scheduled) __ksym __weak;
extern bool mptcp_subflow_active(struct mptcp_subflow_context *subflow) __ksym __weak;
extern bool bpf_sk_stream_memory_free(const struct sock *sk) __ksym __weak;
extern void bpf_mptcp_set_timeout(struct mptcp_sock *msk) __ksym __weak;

/* Open-coded iterator over a connection's subflows. */
struct bpf_iter_mptcp_subflow {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

extern int bpf_iter_mptcp_subflow_new(struct bpf_iter_mptcp_subflow *it,
				      struct mptcp_sock *msk) __ksym __weak;
extern struct mptcp_subflow_context *
bpf_iter_mptcp_subflow_next(struct bpf_iter_mptcp_subflow *it) __ksym __weak;
extern void bpf_iter_mptcp_subflow_destroy(struct bpf_iter_mptcp_subflow *it) __ksym __weak;

/* libbpf's bpf_for_each (newer than the libbpf-dev headers used here):
 * for (subflow in msk's subflows), the iterator destroyed on scope exit. */
#define gp_for_each_subflow(cur, msk)                                          \
	for (struct bpf_iter_mptcp_subflow ___it                               \
		     __attribute__((cleanup(bpf_iter_mptcp_subflow_destroy))), \
	     *___p __attribute__((unused)) =                                    \
		     (bpf_iter_mptcp_subflow_new(&___it, (msk)),                \
		      (void)bpf_iter_mptcp_subflow_destroy, (void *)0);         \
	     (((cur) = bpf_iter_mptcp_subflow_next(&___it)));)

static __always_inline bool gp_is_backup(struct mptcp_subflow_context *subflow)
{
	return subflow->backup || subflow->request_bkup;
}

/* Usable for new data: active and with room in its send buffer. */
static __always_inline bool gp_usable(struct mptcp_subflow_context *subflow)
{
	struct sock *ssk = bpf_mptcp_subflow_tcp_sock(subflow);

	return ssk && mptcp_subflow_active(subflow) && bpf_sk_stream_memory_free(ssk);
}

/* Called first in every get_send: the MPTCP-level retransmission timer
 * follows the subflows' RTOs only if the scheduler refreshes it, as the
 * kernel's default scheduler does on each pick; otherwise it stays at the
 * minimum and MPTCP retransmits needlessly on slow paths. */
static __always_inline void gp_begin(struct mptcp_sock *msk)
{
	bpf_mptcp_set_timeout(msk);
}

static __always_inline int gp_schedule(struct mptcp_subflow_context *subflow)
{
	if (!subflow)
		return -1;
	mptcp_subflow_set_scheduled(subflow, true);
	return 0;
}

/* Data still in flight or queued at TCP level on this subflow: its own
 * retransmissions will deliver it (tcp_rtx_and_write_queues_empty() in the
 * kernel: every byte written has been acked). */
static __always_inline bool gp_tcp_busy(struct mptcp_subflow_context *subflow)
{
	struct sock *ssk = bpf_mptcp_subflow_tcp_sock(subflow);
	struct tcp_sock *tp;

	if (!ssk)
		return true;
	tp = bpf_skc_to_tcp_sock(ssk);
	return !tp || tp->write_seq != tp->snd_una;
}

/* MPTCP-level retransmissions (__mptcp_retrans, when the MPTCP
 * retransmission timer fires): the kernel's default rule,
 * mptcp_subflow_get_retrans(). The kernel resends the unacked MPTCP window
 * on the subflow picked here, so one that still has data outstanding at TCP
 * level is never picked: TCP delivers that data itself, and a copy on top
 * only duplicates it (the receiver's MPTcpExtDuplicateData, extra bytes on
 * the link; the timer also fires while every subflow makes progress). The
 * first idle active regular subflow, else an idle spare one once no busy
 * subflow has made progress for more than one timeout (stale_count > 1);
 * else none, and the kernel re-arms the timer. Spare are the backup
 * subflows, or with first_only (gp_first, single-path) every active subflow
 * after the first: a spurious timer then puts nothing on a path the
 * scheduler keeps idle, a stalled first subflow still gets its data moved. */
static __always_inline int gp_get_retrans(struct mptcp_sock *msk, bool first_only)
{
	struct mptcp_subflow_context *subflow, *pick = NULL, *spare_pick = NULL;
	int seen = 0, active = 0, min_stale = 256; /* above any u8 stale_count */
	bool spare;

	gp_for_each_subflow(subflow, msk) {
		if (++seen > GP_SCHED_SUBFLOWS_MAX)
			break;
		if (!mptcp_subflow_active(subflow))
			continue;
		spare = first_only ? active > 0 : gp_is_backup(subflow);
		active++;
		if (gp_tcp_busy(subflow)) {
			if (subflow->stale_count < min_stale)
				min_stale = subflow->stale_count;
			continue;
		}
		if (spare) {
			if (!spare_pick)
				spare_pick = subflow;
			continue;
		}
		pick = subflow;
		break;
	}
	if (!pick && min_stale > 1)
		pick = spare_pick;
	return gp_schedule(pick);
}

#endif
