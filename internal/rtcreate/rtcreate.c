// The thread of package rtcreate (rtcreate.go says why it is in C). It
// reads the mptcp_pm family's ESTABLISHED events (a socket filter drops
// every other event before it is queued) one at a time in a blocking recv,
// and for each sends the creates the published plan gives the connection,
// each waiting for its acknowledgement, as the controller's early creates
// do (internal/controller/early.go). It reports only what did not go as
// planned, and for each connection what it sent.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nl.h"
#include "rtcreate.h"

// include/uapi/linux/mptcp_pm.h (pathmgr/uapi.go has the same numbers);
// the command's are in nl.h.
enum {
	EV_TOKEN = 1, EV_FAMILY = 2, EV_SADDR4 = 5, EV_SADDR6 = 6, EV_DADDR4 = 7, EV_DADDR6 = 8,
	EV_DPORT = 10, EV_FLAGS = 13, EV_IF_IDX = 15, EV_SERVER_SIDE = 18,
};
enum { EV_FLAG_DENY_JOIN_ID0 = 1, EV_FLAG_SERVER_SIDE = 2 };

// holdMax: the most reports the thread holds (report); GP_BATCH of them
// go in a message.
enum { holdMax = 1024 };

struct gp_rt {
	int events, cmds, reports;
	uint16_t family;
	uint32_t seq;
	pthread_t thread;
	atomic_int stop;
	int pause_ms;    // gp_rt_start's: the reports go after a pause that long
	int64_t hold_ns; // or once the first held is that old (report)
	// For gp_rt_busy and gp_rt_taken: when the thread last took a
	// connection a plan was in force for (CLOCK_MONOTONIC ns), how many
	// it took, and how many reports it holds (with the one it is making).
	_Atomic int64_t last;
	_Atomic uint64_t taken;
	atomic_int held;
	pthread_mutex_t mu; // guards plan and version
	struct gp_plan plan;
	uint64_t version;
	// The thread's own: the reports not sent yet, and when the first of
	// them was made.
	int nbatch;
	int64_t held_since;
	struct gp_report batch[holdMax];
};

static int64_t mono_ns(void) {
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

// served_none says whether the thread has taken no connection for its
// pause by now: a burst of its is over (gp_rt_busy, run).
static int served_none(struct gp_rt *rt, int64_t now) {
	return now - atomic_load_explicit(&rt->last, memory_order_relaxed) >= (int64_t)rt->pause_ms * 1000000;
}

// held_too_long says whether the first report the thread holds is its
// hold old by now (report, run).
static int held_too_long(const struct gp_rt *rt, int64_t now) { return now - rt->held_since >= rt->hold_ns; }

static void fail(char *err, int errlen, const char *what, int e) {
	snprintf(err, errlen, "%s: %s", what, strerror(e));
}

// flush hands the held reports to the loop, GP_BATCH to a message. A
// blocking send: when the loop is behind, the thread waits rather than
// lose a report; gp_rt_stop ends the wait by closing the other end
// (EPIPE). Short of memory (ENOBUFS, ENOMEM) it tries again a millisecond
// later, for up to a second over the whole flush, then drops what is left
// (the loop then asks the kernel: rtSentByKernel).
static void flush(struct gp_rt *rt) {
	int tries = 0;
	for (int off = 0; off < rt->nbatch; off += GP_BATCH) {
		int n = rt->nbatch - off < GP_BATCH ? rt->nbatch - off : GP_BATCH;
		// Held no more once sent: none as the last message goes, which
		// wakes the loop's reader (awaitBurst), which then asks.
		atomic_store_explicit(&rt->held, rt->nbatch - off - n, memory_order_relaxed);
		while (send(rt->reports, rt->batch + off, n * sizeof rt->batch[0], MSG_NOSIGNAL) < 0) {
			if (errno == EINTR)
				continue;
			if ((errno != ENOBUFS && errno != ENOMEM) || ++tries > 1000)
				goto out; // the daemon stopped reading, or no memory for a second
			struct timespec ms = {.tv_nsec = 1000000};
			nanosleep(&ms, NULL);
		}
	}
out:
	rt->nbatch = 0;
	atomic_store_explicit(&rt->held, 0, memory_order_relaxed);
}

// report holds r until the burst it belongs to is over: the thread hands
// its reports over when no event has come for its pause (run), or, as one
// comes, once the first it holds is hold_ns old, or when holdMax are
// held, and at once a failure or a loss. The daemon then takes in a
// burst's accounts (and, waiting for them, its connections' events: the
// controller's awaitBurst) after it, and takes no CPU from the
// applications and the thread while it lasts (docs/benchmarks.md,
// "burst").
static void report(struct gp_rt *rt, const struct gp_report *r) {
	int64_t now = mono_ns();
	if (!rt->nbatch)
		rt->held_since = now;
	rt->batch[rt->nbatch++] = *r;
	atomic_store_explicit(&rt->held, rt->nbatch, memory_order_relaxed);
	if (rt->nbatch == holdMax || r->kind == GP_FAILED || r->kind == GP_LOST || held_too_long(rt, now))
		flush(rt);
}

// conn is what the thread reads of an ESTABLISHED event.
struct conn {
	uint32_t token;
	uint16_t family, dport, flags;
	uint8_t saddr[16], daddr[16];
	uint8_t server_side;
	int32_t ifindex;
};

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// parse reads an ESTABLISHED event's attributes into c. IPv6 addresses
// that map IPv4 ones become IPv4, as the controller's norm does.
static int parse(const char *from, const char *to, struct conn *c) {
	memset(c, 0, sizeof *c);
	int have_daddr = 0;
	EACH_ATTR(a, from, to) {
		switch (a->nla_type) {
		case EV_TOKEN: get(a, &c->token, 4); break;
		case EV_FAMILY: get(a, &c->family, 2); break;
		case EV_SADDR4: get(a, c->saddr, 4); break;
		case EV_SADDR6: get(a, c->saddr, 16); break;
		case EV_DADDR4: have_daddr = get(a, c->daddr, 4); break;
		case EV_DADDR6: have_daddr = get(a, c->daddr, 16); break;
		case EV_DPORT: get(a, &c->dport, 2); break;
		case EV_FLAGS: get(a, &c->flags, 2); break;
		case EV_SERVER_SIDE: get(a, &c->server_side, 1); break;
		case EV_IF_IDX: get(a, &c->ifindex, 4); break;
		}
	}
	if (!c->token || !have_daddr || !c->dport || (c->family != AF_INET && c->family != AF_INET6))
		return 0;
	if (c->family == AF_INET6 && memcmp(c->daddr, v4mapped, 12) == 0) {
		memmove(c->daddr, c->daddr + 12, 4);
		memset(c->daddr + 4, 0, 12);
		memmove(c->saddr, c->saddr + 12, 4);
		memset(c->saddr + 4, 0, 12);
		c->family = AF_INET;
	}
	return 1;
}

static size_t addrlen(uint8_t family) { return family == AF_INET ? 4 : 16; }

// initial is the interface of the connection's initial subflow: that of
// its local address in the plan, or the event's.
static int32_t initial(const struct gp_plan *p, const struct conn *c) {
	for (int i = 0; i < p->naddrs; i++)
		if (p->addrs[i].family == c->family && memcmp(p->addrs[i].addr, c->saddr, addrlen(c->family)) == 0)
			return p->addrs[i].index;
	return c->ifindex;
}

// create sends one SUBFLOW_CREATE and waits for its acknowledgement: 0, or
// the kernel's error (positive) with its extack message in msg.
static int create(struct gp_rt *rt, const struct conn *c, const struct gp_ep *ep, int32_t ifindex, char *msg) {
	char req[256] __attribute__((aligned(4)));
	char ack[1024] __attribute__((aligned(4)));
	uint16_t port = ntohs(c->dport); // the event's port is big-endian, the command's host order
	uint32_t len = gp_put_create(req, rt->family, ++rt->seq, c->token, c->family, ep->addr, ep->id, ep->flags, ifindex, c->daddr, port);
	while (send(rt->cmds, req, len, 0) < 0) {
		if (errno != EINTR) {
			snprintf(msg, GP_MSG, "sending the request: %s", strerror(errno));
			return errno;
		}
	}
	for (;;) {
		int m = recv(rt->cmds, ack, sizeof ack, 0);
		if (m < 0) {
			if (errno == EINTR)
				continue;
			snprintf(msg, GP_MSG, "reading the acknowledgement: %s", strerror(errno));
			return errno;
		}
		struct nlmsghdr *a = (struct nlmsghdr *)ack;
		if (m < (int)NLMSG_SPACE(sizeof(struct nlmsgerr)) || a->nlmsg_len > (uint32_t)m ||
		    a->nlmsg_type != NLMSG_ERROR || a->nlmsg_seq != rt->seq)
			continue; // not this request's (a wake-up of gp_rt_stop's is for the events socket)
		struct nlmsgerr *e = NLMSG_DATA(a);
		if (!e->error)
			return 0;
		// With NETLINK_CAP_ACK the request is not copied back: the
		// extack attributes follow the error and the request's header.
		if (a->nlmsg_flags & NLM_F_ACK_TLVS)
			EACH_ATTR(t, (char *)(e + 1), ack + a->nlmsg_len) {
				if (t->nla_type == NLMSGERR_ATTR_MSG && ATTR_LEN(t) > 0)
					snprintf(msg, GP_MSG, "%.*s", (int)ATTR_LEN(t), ATTR_DATA(t));
			}
		return -e->error;
	}
}

// serve sends the creates the plan gives the connection of one ESTABLISHED.
static void serve(struct gp_rt *rt, const struct gp_plan *p, const struct conn *c) {
	int64_t now = mono_ns();
	if (now >= p->deadline) {
		struct gp_report r = {.kind = GP_NOT_SENT, .token = c->token, .family = c->family, .port = ntohs(c->dport)};
		memcpy(r.remote, c->daddr, 16);
		report(rt, &r);
		return;
	}
	// A burst the thread serves (gp_rt_busy); one it sends nothing for
	// is the loop's to serve, which must not wait for it.
	atomic_store_explicit(&rt->last, now, memory_order_relaxed);
	atomic_fetch_add_explicit(&rt->taken, 1, memory_order_relaxed);
	atomic_store_explicit(&rt->held, rt->nbatch + 1, memory_order_relaxed);
	int32_t init = initial(p, c);
	struct gp_report done = {.kind = GP_SENT, .token = c->token, .family = c->family, .port = ntohs(c->dport)};
	memcpy(done.remote, c->daddr, 16);
	for (int i = 0; i < p->nifs; i++) {
		const struct gp_ep *ep = c->family == AF_INET ? &p->ifs[i].v4 : &p->ifs[i].v6;
		if (p->ifs[i].index == init || ep->family != c->family)
			continue;
		struct gp_report r = {0};
		int err = create(rt, c, ep, p->ifs[i].index, r.msg);
		if (!err) {
			done.sent[done.nsent++] = p->ifs[i].index; // nifs <= GP_MAX_IFS
			continue;
		}
		r.kind = GP_REFUSED;
		r.id = ep->id;
		r.family = c->family;
		memcpy(r.local, ep->addr, 16);
		r.token = c->token;
		r.index = p->ifs[i].index;
		r.err = err;
		memcpy(r.remote, c->daddr, 16);
		r.port = ntohs(c->dport);
		report(rt, &r);
	}
	report(rt, &done);
}

static void *run(void *arg) {
	struct gp_rt *rt = arg;
	static const struct gp_plan none;
	struct gp_plan *plan = malloc(sizeof *plan);
	uint64_t have = 0;
	char ev[8192] __attribute__((aligned(4)));
	// Signals are for the daemon's Go threads: a handler run on this
	// thread would run at its priority.
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (!plan) {
		struct gp_report r = {.kind = GP_FAILED, .err = ENOMEM};
		snprintf(r.msg, sizeof r.msg, "the plan's memory");
		report(rt, &r);
		return NULL;
	}
	*plan = none;
	while (!atomic_load(&rt->stop)) {
		int n = recv(rt->events, ev, sizeof ev, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			// Nothing queued. In a burst the next event is usually
			// a fraction of a millisecond away: the reports wait
			// for a pause rather than go one by one.
			struct pollfd p = {.fd = rt->events, .events = POLLIN};
			if (rt->nbatch && poll(&p, 1, rt->pause_ms) == 0)
				flush(rt);
			n = recv(rt->events, ev, sizeof ev, 0);
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue; // EAGAIN: the receive timeout, to look at stop
			struct gp_report r = {.kind = GP_LOST};
			if (errno != ENOBUFS) {
				r.kind = GP_FAILED;
				r.err = errno;
				snprintf(r.msg, sizeof r.msg, "reading events");
			}
			report(rt, &r);
			if (r.kind == GP_FAILED)
				break;
			continue;
		}
		// Events the thread skips (the loop's connections) keep it
		// from pausing: what it holds goes once it has served none for
		// its pause (it is no longer busy) or at its hold.
		if (rt->nbatch) {
			int64_t now = mono_ns();
			if (served_none(rt, now) || held_too_long(rt, now))
				flush(rt);
		}
		struct nlmsghdr *h = (struct nlmsghdr *)ev;
		struct conn c;
		if (n < (int)(NLMSG_HDRLEN + GENL_HDRLEN) || h->nlmsg_type != rt->family || h->nlmsg_len > (uint32_t)n ||
		    !parse(ev + NLMSG_HDRLEN + GENL_HDRLEN, ev + h->nlmsg_len, &c))
			continue; // gp_rt_stop's wake-up, or an event no create answers (the loop reads its own)
		// A connection the peer opened, or whose peer set the C flag,
		// is the loop's to decide. The controller expects an account of
		// every other (earlyServes, internal/controller/early.go).
		if (c.server_side || (c.flags & (EV_FLAG_SERVER_SIDE | EV_FLAG_DENY_JOIN_ID0)))
			continue;
		pthread_mutex_lock(&rt->mu);
		if (rt->version != have) {
			*plan = rt->plan;
			have = rt->version;
		}
		pthread_mutex_unlock(&rt->mu);
		serve(rt, plan, &c);
	}
	flush(rt);
	free(plan);
	return NULL;
}

struct gp_rt *gp_rt_start(int prio, int report_fd, int pause_ms, int hold_ms, int *fifo, int *sched_err, char *err, int errlen) {
	struct gp_rt *rt = calloc(1, sizeof *rt);
	if (!rt) {
		fail(err, errlen, "starting", ENOMEM);
		return NULL;
	}
	rt->reports = report_fd;
	rt->pause_ms = pause_ms;
	rt->hold_ns = (int64_t)hold_ms * 1000000;
	atomic_init(&rt->last, INT64_MIN / 2); // long ago: not busy
	rt->events = gp_genl_socket();
	rt->cmds = gp_genl_socket();
	pthread_mutex_init(&rt->mu, NULL);
	uint32_t group = 0;
	if (rt->events < 0 || rt->cmds < 0) {
		fail(err, errlen, "netlink socket", errno);
		goto out;
	}
	if (gp_resolve(rt->cmds, &rt->family, &group, err, errlen) < 0)
		goto out;
	// gp_rt_stop wakes the thread; should its wake-up be refused, the
	// thread still sees stop within a second.
	struct timeval second = {.tv_sec = 1};
	setsockopt(rt->events, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
	// Without a forced buffer an overrun loses events sooner (GP_LOST:
	// the loop resyncs).
	int one = 1, forced = 0;
	if (gp_only_established(rt->events, group, &forced, err, errlen) < 0)
		goto out;
	// A refusal's acknowledgement without a copy of the request, with the
	// kernel's message.
	setsockopt(rt->cmds, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
	setsockopt(rt->cmds, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	*fifo = 0;
	*sched_err = 0;
	if (prio > 0) {
		struct sched_param sp = {.sched_priority = prio};
		pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
		pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
		pthread_attr_setschedparam(&attr, &sp);
		int e = pthread_create(&rt->thread, &attr, run, rt);
		if (e == 0) {
			*fifo = 1;
			pthread_attr_destroy(&attr);
			return rt;
		}
		// EPERM: no CAP_SYS_NICE (or RLIMIT_RTPRIO); run at the
		// caller's scheduling instead, and say so.
		*sched_err = e;
		pthread_attr_destroy(&attr);
		pthread_attr_init(&attr);
	}
	int e = pthread_create(&rt->thread, &attr, run, rt);
	pthread_attr_destroy(&attr);
	if (e == 0)
		return rt;
	fail(err, errlen, "starting the thread", e);
out:
	if (rt->events >= 0)
		close(rt->events);
	if (rt->cmds >= 0)
		close(rt->cmds);
	pthread_mutex_destroy(&rt->mu);
	free(rt);
	return NULL;
}

void gp_rt_publish(struct gp_rt *rt, const struct gp_plan *p) {
	pthread_mutex_lock(&rt->mu);
	rt->plan = *p;
	if (rt->plan.nifs < 0 || rt->plan.nifs > GP_MAX_IFS)
		rt->plan.nifs = 0; // the Go side never publishes one: send nothing
	if (rt->plan.naddrs < 0 || rt->plan.naddrs > GP_MAX_ADDRS)
		rt->plan.naddrs = 0;
	rt->version++;
	pthread_mutex_unlock(&rt->mu);
}

int gp_rt_busy(struct gp_rt *rt) {
	return atomic_load_explicit(&rt->held, memory_order_relaxed) > 0 && !served_none(rt, mono_ns());
}

uint64_t gp_rt_taken(struct gp_rt *rt) { return atomic_load_explicit(&rt->taken, memory_order_relaxed); }

void gp_rt_stop(struct gp_rt *rt) {
	atomic_store(&rt->stop, 1);
	// Wake the thread in its recv: a datagram to its events socket from
	// the commands socket (in the same namespace; the caller may be in
	// another), which the socket filter lets through (its command byte is
	// ESTABLISHED's) and the thread ignores (it is not mptcp_pm's).
	struct sockaddr_nl self;
	socklen_t len = sizeof self;
	if (getsockname(rt->events, (struct sockaddr *)&self, &len) == 0) {
		struct {
			struct nlmsghdr h;
			uint8_t cmd[4];
		} wake = {.h = {.nlmsg_len = sizeof wake, .nlmsg_type = NLMSG_NOOP}, .cmd = {EVENT_ESTABLISHED}};
		struct sockaddr_nl to = {.nl_family = AF_NETLINK, .nl_pid = self.nl_pid};
		// Never waiting: a queue the thread no longer drains (it
		// stopped on an error, or an overrun left it congested) would
		// block a send; the receive timeout wakes the thread anyway.
		sendto(rt->cmds, &wake, sizeof wake, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to);
	}
	pthread_join(rt->thread, NULL);
	close(rt->events);
	close(rt->cmds);
	pthread_mutex_destroy(&rt->mu);
	free(rt);
}
