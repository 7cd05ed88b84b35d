// Generic netlink helpers shared by the real-time create thread
// (rtcreate.c) and BenchmarkBurst's floor in C
// (internal/controller/testdata/burst_floor.c): building attributes,
// walking them with bounds, opening a socket, and resolving the mptcp_pm
// family and its events group. Static functions: each includer gets its
// own copy.
#ifndef GIGAPATH_NL_H
#define GIGAPATH_NL_H

#include <errno.h>
#include <linux/filter.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// put appends attribute type with len bytes of v at p, padded.
static inline char *put(char *p, uint16_t type, const void *v, uint16_t len) {
	struct nlattr *a = (struct nlattr *)p;
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy(p + NLA_HDRLEN, v, len);
	memset(p + NLA_HDRLEN + len, 0, NLA_ALIGN(len) - len);
	return p + NLA_HDRLEN + NLA_ALIGN(len);
}

// EACH_ATTR walks the attributes in [from, to), stopping at the first that
// does not fit.
#define EACH_ATTR(a, from, to)                                                     \
	for (struct nlattr *a = (struct nlattr *)(from);                           \
	     (char *)a + NLA_HDRLEN <= (char *)(to) && a->nla_len >= NLA_HDRLEN && \
	     (char *)a + a->nla_len <= (char *)(to);                                \
	     a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
#define ATTR_DATA(a) ((char *)(a) + NLA_HDRLEN)
#define ATTR_LEN(a) ((size_t)((a)->nla_len - NLA_HDRLEN))

// get copies attribute a's payload into v if it holds at least len bytes.
static inline int get(const struct nlattr *a, void *v, size_t len) {
	if (ATTR_LEN(a) < len)
		return 0;
	memcpy(v, ATTR_DATA(a), len);
	return 1;
}

// gp_genl_socket opens a generic netlink socket, bound (the kernel picks
// its port id): -1 with errno on failure.
static inline int gp_genl_socket(void) {
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

// gp_resolve asks the generic netlink controller for mptcp_pm's family id and
// the id of its events group.
static int gp_resolve(int fd, uint16_t *family, uint32_t *group, char *err, int errlen) {
	char buf[8192] __attribute__((aligned(4)));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	struct genlmsghdr *g = NLMSG_DATA(h);
	memset(buf, 0, NLMSG_HDRLEN + GENL_HDRLEN);
	h->nlmsg_type = GENL_ID_CTRL;
	h->nlmsg_flags = NLM_F_REQUEST;
	h->nlmsg_seq = 1;
	g->cmd = CTRL_CMD_GETFAMILY;
	g->version = 1;
	h->nlmsg_len = put((char *)(g + 1), CTRL_ATTR_FAMILY_NAME, "mptcp_pm", sizeof "mptcp_pm") - buf;
	if (send(fd, buf, h->nlmsg_len, 0) < 0) {
		snprintf(err, errlen, "looking up mptcp_pm: %s", strerror(errno));
		return -1;
	}
	int n;
	while ((n = recv(fd, buf, sizeof buf, 0)) < 0 && errno == EINTR) {
	}
	if (n < 0) {
		snprintf(err, errlen, "looking up mptcp_pm: %s", strerror(errno));
		return -1;
	}
	if (n < (int)(NLMSG_HDRLEN + GENL_HDRLEN) || h->nlmsg_len > (uint32_t)n || h->nlmsg_type != GENL_ID_CTRL) {
		snprintf(err, errlen, "the kernel has no mptcp_pm generic netlink family");
		return -1;
	}
	EACH_ATTR(a, g + 1, buf + h->nlmsg_len) {
		if (a->nla_type == CTRL_ATTR_FAMILY_ID)
			get(a, family, 2);
		if ((a->nla_type & NLA_TYPE_MASK) != CTRL_ATTR_MCAST_GROUPS)
			continue;
		EACH_ATTR(grp, ATTR_DATA(a), (char *)a + a->nla_len) {
			uint32_t id = 0;
			int events = 0;
			EACH_ATTR(f, ATTR_DATA(grp), (char *)grp + grp->nla_len) {
				if (f->nla_type == CTRL_ATTR_MCAST_GRP_ID)
					get(f, &id, 4);
				if (f->nla_type == CTRL_ATTR_MCAST_GRP_NAME && ATTR_LEN(f) >= sizeof "mptcp_pm_events" &&
				    memcmp(ATTR_DATA(f), "mptcp_pm_events", sizeof "mptcp_pm_events") == 0)
					events = 1;
			}
			if (events)
				*group = id;
		}
	}
	if (!*family || !*group) {
		snprintf(err, errlen, "mptcp_pm has no events group");
		return -1;
	}
	return 0;
}

// include/uapi/linux/mptcp_pm.h (pathmgr/uapi.go has the same numbers):
// what a SUBFLOW_CREATE carries.
enum { CMD_SUBFLOW_CREATE = 10, EVENT_ESTABLISHED = 2 };
enum { ATTR_ADDR = 1, ATTR_TOKEN = 4, ATTR_ADDR_REMOTE = 6 };
enum { ADDR_FAMILY = 1, ADDR_ID = 2, ADDR_ADDR4 = 3, ADDR_ADDR6 = 4, ADDR_PORT = 5, ADDR_FLAGS = 6, ADDR_IF_IDX = 7 };

// gp_put_create writes into req (256 bytes, 4-aligned) the SUBFLOW_CREATE
// of connection token (family_id: mptcp_pm's) from local (id and flags
// left out when 0, on ifindex) to remote:port (host order), both addresses
// of family fam (4 or 16 bytes), and returns its length.
static inline uint32_t gp_put_create(char *req, uint16_t family_id, uint32_t seq, uint32_t token, uint16_t fam,
				     const void *local, uint8_t id, uint32_t flags, int32_t ifindex,
				     const void *remote, uint16_t port) {
	struct nlmsghdr *r = (struct nlmsghdr *)req;
	struct genlmsghdr *g = NLMSG_DATA(r);
	uint16_t alen = fam == AF_INET ? 4 : 16, atype = fam == AF_INET ? ADDR_ADDR4 : ADDR_ADDR6;
	r->nlmsg_type = family_id;
	r->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	r->nlmsg_seq = seq;
	r->nlmsg_pid = 0;
	g->cmd = CMD_SUBFLOW_CREATE;
	g->version = 1;
	g->reserved = 0;
	char *p = put((char *)(g + 1), ATTR_TOKEN, &token, 4);
	struct nlattr *nest = (struct nlattr *)p;
	nest->nla_type = NLA_F_NESTED | ATTR_ADDR;
	p += NLA_HDRLEN;
	p = put(p, ADDR_FAMILY, &fam, 2);
	p = put(p, atype, local, alen);
	if (id)
		p = put(p, ADDR_ID, &id, 1);
	if (flags)
		p = put(p, ADDR_FLAGS, &flags, 4);
	p = put(p, ADDR_IF_IDX, &ifindex, 4);
	nest->nla_len = p - (char *)nest;
	nest = (struct nlattr *)p;
	nest->nla_type = NLA_F_NESTED | ATTR_ADDR_REMOTE;
	p += NLA_HDRLEN;
	p = put(p, ADDR_FAMILY, &fam, 2);
	p = put(p, atype, remote, alen);
	p = put(p, ADDR_PORT, &port, 2);
	nest->nla_len = p - (char *)nest;
	return r->nlmsg_len = p - req;
}

// gp_only_established makes fd, a socket for the mptcp_pm events group,
// queue nothing but ESTABLISHED (event 2): the generic netlink command
// byte, right after the netlink header, is the event type. A burst's
// events wait there while a create is served: room for tens of thousands
// with SO_RCVBUFFORCE (CAP_NET_ADMIN in the namespace's owning user
// namespace), else SO_RCVBUF, capped by rmem_max; *forced says which.
// Then it joins group. -1 and err on failure.
static int gp_only_established(int fd, uint32_t group, int *forced, char *err, int errlen) {
	struct sock_filter only[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, NLMSG_HDRLEN),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_fprog prog = {sizeof only / sizeof only[0], only};
	int rcvbuf = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) {
		snprintf(err, errlen, "event filter: %s", strerror(errno));
		return -1;
	}
	*forced = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) == 0;
	if (!*forced)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
		snprintf(err, errlen, "joining mptcp_pm's events group: %s", strerror(errno));
		return -1;
	}
	return 0;
}

#endif
