//go:build ignore

/* Per-path policy and telemetry: a sockops program attached to a cgroup v2.
 *
 * For every TCP socket of the cgroup (MPTCP subflows included: they are TCP
 * sockets in the connection's cgroup) in the scope network namespace
 * (scope_netns, set by the loader: a cgroup's processes can live in many
 * namespaces, and local addresses repeat across them) it looks up the
 * socket's local address
 * in `policies` and, when the connection is established, applies what the
 * entry asks for: the congestion control algorithm, SO_MARK, SO_PRIORITY.
 * For MPTCP subflows it then asks for RTT, retransmission and state
 * callbacks and keeps one `subflows` entry per subflow (keyed by socket
 * cookie) with the latest srtt, retransmits, delivery rate and byte counts,
 * and the receive side the daemon's path health needs (data segments in,
 * out-of-order packets, the receiver's RTT estimate); the entry goes when
 * the socket closes.
 *
 * A subflow that only receives (a phone's download) never gets an RTT
 * callback: it acknowledges, it sends no data. So the program also asks
 * for the header-option length callback (WRITE_HDR_OPT_CB_FLAG), which
 * runs for each segment the socket sends, ACKs included, reserves no
 * option space, and refreshes the entry at most every REFRESH_NS. A
 * socket whose callbacks an earlier instance of the program enabled (the
 * daemon before an upgrade or a restart) gets its entry at its next
 * callback. */
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The network namespace covered: its cookie (SO_NETNS_COOKIE). */
volatile const __u64 scope_netns;

#define POLICY_CONGESTION (1 << 0)
#define POLICY_MARK (1 << 1)
#define POLICY_PRIORITY (1 << 2)

#define GP_TCP_CLOSE 7
#define GP_TCP_ESTABLISHED 1

struct policy {
	char congestion[16];
	__u32 mark;
	__u32 priority;
	__u32 flags;
};

struct subflow_stats {
	struct addr_key local;
	__u32 remote[4];
	__u32 local_port;  /* host order */
	__u32 remote_port; /* host order */
	__u32 srtt_us8;    /* smoothed RTT in 1/8 us, like tcp_sock.srtt_us */
	__u32 rtt_min_us;
	__u32 total_retrans;
	__u32 snd_cwnd;
	__u32 mss_cache;
	__u32 rate_delivered;   /* packets delivered in rate_interval_us */
	__u32 rate_interval_us;
	__u32 state;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 updated_ns;
	__u32 applied; /* POLICY_* bits that were applied successfully */
	__u32 is_mptcp;
	__u64 bytes_retrans;
	__u32 data_segs_in;
	__u32 rcv_ooopack;
	__u32 rcv_rtt_us; /* the receiver's RTT estimate, as tcpi_rcv_rtt */
	__u32 _pad;
};

/* Header-option length callbacks (one per segment sent) refresh an entry
 * at most this often. */
#define REFRESH_NS (50 * 1000 * 1000ULL)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, struct policy);
} policies SEC(".maps");

/* Telemetry of MPTCP subflows only (plain TCP sockets in the cgroup get
 * their policy but no entry). LRU: when full, the least recently updated
 * entry (a subflow long gone without a CLOSE callback) makes room instead
 * of new subflows silently getting none. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct subflow_stats);
} subflows SEC(".maps");

static __always_inline void local_key(struct bpf_sock_ops *skops, struct addr_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = skops->family;
	if (k->family == AF_INET) {
		k->addr[0] = skops->local_ip4;
	} else {
		k->addr[0] = skops->local_ip6[0];
		k->addr[1] = skops->local_ip6[1];
		k->addr[2] = skops->local_ip6[2];
		k->addr[3] = skops->local_ip6[3];
	}
}

static __always_inline __u32 apply_policy(struct bpf_sock_ops *skops, struct addr_key *k)
{
	struct policy *p = bpf_map_lookup_elem(&policies, k);
	__u32 applied = 0;

	if (!p)
		return 0;
	if (p->flags & POLICY_CONGESTION) {
		char cc[16];

		__builtin_memcpy(cc, p->congestion, sizeof(cc));
		cc[15] = 0;
		if (bpf_setsockopt(skops, SOL_TCP, TCP_CONGESTION, cc, sizeof(cc)) == 0)
			applied |= POLICY_CONGESTION;
	}
	if (p->flags & POLICY_MARK) {
		int v = p->mark;

		if (bpf_setsockopt(skops, SOL_SOCKET, SO_MARK, &v, sizeof(v)) == 0)
			applied |= POLICY_MARK;
	}
	if (p->flags & POLICY_PRIORITY) {
		int v = p->priority;

		if (bpf_setsockopt(skops, SOL_SOCKET, SO_PRIORITY, &v, sizeof(v)) == 0)
			applied |= POLICY_PRIORITY;
	}
	return applied;
}

static __always_inline void fill(struct bpf_sock_ops *skops, struct subflow_stats *s)
{
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;

	if (sk) {
		tp = bpf_skc_to_tcp_sock(sk);
		if (tp) {
			s->bytes_retrans = tp->bytes_retrans;
			s->rcv_ooopack = tp->rcv_ooopack;
			s->rcv_rtt_us = tp->rcv_rtt_est.rtt_us >> 3;
		}
	}
	s->data_segs_in = skops->data_segs_in;
	s->srtt_us8 = skops->srtt_us;
	s->rtt_min_us = skops->rtt_min;
	s->total_retrans = skops->total_retrans;
	s->snd_cwnd = skops->snd_cwnd;
	s->mss_cache = skops->mss_cache;
	s->rate_delivered = skops->rate_delivered;
	s->rate_interval_us = skops->rate_interval_us;
	s->state = skops->state;
	s->bytes_acked = skops->bytes_acked;
	s->bytes_received = skops->bytes_received;
	s->updated_ns = bpf_ktime_get_ns();
}

/* describe fills the socket's addresses and MPTCP flag into s. */
static __always_inline void describe(struct bpf_sock_ops *skops, struct subflow_stats *s)
{
	struct bpf_sock *sk;
	struct tcp_sock *tp;

	if (s->local.family == AF_INET) {
		s->remote[0] = skops->remote_ip4;
	} else {
		s->remote[0] = skops->remote_ip6[0];
		s->remote[1] = skops->remote_ip6[1];
		s->remote[2] = skops->remote_ip6[2];
		s->remote[3] = skops->remote_ip6[3];
	}
	s->local_port = skops->local_port;
	s->remote_port = bpf_ntohl(skops->remote_port);
	sk = skops->sk;
	if (sk) {
		tp = bpf_skc_to_tcp_sock(sk);
		if (tp)
			s->is_mptcp = BPF_CORE_READ_BITFIELD(tp, is_mptcp);
	}
}

static __always_inline void established(struct bpf_sock_ops *skops)
{
	struct subflow_stats s = {};
	__u64 cookie = bpf_get_socket_cookie(skops);

	local_key(skops, &s.local);
	s.applied = apply_policy(skops, &s.local);
	describe(skops, &s);
	if (!s.is_mptcp)
		return;
	fill(skops, &s);
	/* A passive open calls back before the kernel stores the state
	 * (tcp_init_transfer, then tcp_set_state): still SYN_RECV there. */
	s.state = GP_TCP_ESTABLISHED;
	bpf_map_update_elem(&subflows, &cookie, &s, BPF_ANY);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
			BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG |
			BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

/* adopt makes the entry of a subflow whose callbacks an earlier instance
 * of the program enabled (no policy is applied: that happens only when a
 * subflow is established). */
static __always_inline void adopt(struct bpf_sock_ops *skops, __u64 cookie)
{
	struct subflow_stats s = {};

	local_key(skops, &s.local);
	describe(skops, &s);
	if (!s.is_mptcp)
		return;
	fill(skops, &s);
	bpf_map_update_elem(&subflows, &cookie, &s, BPF_NOEXIST);
}

static __always_inline void update(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct subflow_stats *s = bpf_map_lookup_elem(&subflows, &cookie);

	if (!s) {
		adopt(skops, cookie);
		return;
	}
	fill(skops, s);
	/* RTT_CB runs (once per round trip) just before the kernel stores the
	 * new srtt; kernels that pass it give it in args[1]. */
	if (skops->op == BPF_SOCK_OPS_RTT_CB && skops->args[1])
		s->srtt_us8 = skops->args[1];
}

SEC("sockops")
int gigapath_sockops(struct bpf_sock_ops *skops)
{
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	if (bpf_get_netns_cookie(skops) != scope_netns)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		established(skops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
	case BPF_SOCK_OPS_RETRANS_CB:
		update(skops);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB: {
		/* Once per segment sent: refresh now and then only. */
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct subflow_stats *s = bpf_map_lookup_elem(&subflows, &cookie);

		if (!s) {
			adopt(skops, cookie);
		} else if (bpf_ktime_get_ns() - s->updated_ns >= REFRESH_NS) {
			fill(skops, s);
		}
		break;
	}
	case BPF_SOCK_OPS_STATE_CB: {
		__u64 cookie = bpf_get_socket_cookie(skops);

		if (skops->args[1] == GP_TCP_CLOSE) {
			bpf_map_delete_elem(&subflows, &cookie);
		} else {
			struct subflow_stats *s;

			update(skops);
			/* The callback runs before the kernel stores the new
			 * state (args[1]); skops->state is the old one. */
			s = bpf_map_lookup_elem(&subflows, &cookie);
			if (s)
				s->state = skops->args[1];
		}
		break;
	}
	}
	return 1;
}
