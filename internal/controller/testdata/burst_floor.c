// BenchmarkBurst's floor in C (BURST_MODES=...,floor-c): the Go floor's
// work (burst_floor_test.go) with no Go runtime, to tell what the kernel
// makes every userspace path manager pay from what Go adds to it.
//
// Usage: burst_floor LTE-IFNAME, run in the client's network namespace
// (`ip netns exec`). It reads the mptcp_pm family's ESTABLISHED events
// (the kernel drops every other event before it is queued) in a blocking
// recv, with no poller between the kernel and the thread, and for each
// sends at once the connection's SUBFLOW_CREATE from the lte address
// (endpoint id 2, as the Go floor) to the connection's remote address and
// port, and waits for its acknowledgement. IPv4 only: the bed's
// connections are. Like the Go floor it prints "ready" and "pid PID", runs
// until its input ends, then prints how many creates the kernel refused
// and why the first was.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "burst_floor.h"
#include "nl.h" // internal/rtcreate's: the benchmark builds with -I there

// include/uapi/linux/mptcp_pm.h (pathmgr/uapi.go has the same numbers).
enum { EV_TOKEN = 1, EV_FAMILY = 2, EV_DADDR4 = 7, EV_DPORT = 10 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int refused, skipped, malformed;
static char first[128];

static void die(const char *what) {
	fprintf(stderr, "floor-c: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int genl_socket(void) {
	int fd = gp_genl_socket();
	if (fd < 0)
		die("netlink socket");
	return fd;
}

// resolve asks for mptcp_pm's family id and events group (nl.h).
static void resolve(int fd, uint16_t *family, uint32_t *group) {
	char err[128];
	if (gp_resolve(fd, family, group, err, sizeof err) < 0) {
		fprintf(stderr, "floor-c: %s\n", err);
		exit(1);
	}
}

// at_end prints the refusals once the input ends (the benchmark's signal
// to stop), from a thread of its own so that the main one never polls.
static void *at_end(void *unused) {
	char b[256];
	ssize_t n;
	(void)unused;
	while ((n = read(0, b, sizeof b)) > 0 || (n < 0 && errno == EINTR)) {
	}
	pthread_mutex_lock(&mu);
	// Each is a connection left without a create; the benchmark's round
	// counts those as not served, and this says why.
	if (skipped)
		fprintf(stderr, "floor-c: %d connections not IPv4, left without a create\n", skipped);
	if (malformed)
		fprintf(stderr, "floor-c: %d events malformed or cut short, left without a create\n", malformed);
	printf("refused %d \"%s\"\n", refused, first);
	fflush(stdout);
	_exit(0);
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: %s LTE-IFNAME\n", argv[0]);
		return 2;
	}
	int ifindex;
	struct in_addr lte;
	if (!lte_of(argv[1], &ifindex, &lte)) {
		fprintf(stderr, "floor-c: %s has no IPv4 address\n", argv[1]);
		return 1;
	}

	int cmds = genl_socket(), events = genl_socket();
	uint16_t family = 0;
	uint32_t group = 0;
	resolve(cmds, &family, &group);
	// Only ESTABLISHED is queued, in a forced buffer (nl.h).
	int one = 1, forced = 0;
	char err[128];
	if (gp_only_established(events, group, &forced, err, sizeof err) < 0) {
		fprintf(stderr, "floor-c: %s\n", err);
		return 1;
	}
	if (!forced) {
		fprintf(stderr, "floor-c: event buffer: SO_RCVBUFFORCE refused\n");
		return 1;
	}
	// A refusal's acknowledgement without a copy of the request.
	setsockopt(cmds, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);

	pthread_t t;
	if (pthread_create(&t, NULL, at_end, NULL) != 0)
		die("thread");
	printf("ready\npid %d\n", getpid());
	fflush(stdout);

	static char ev[8192], req[256], ack[1024];
	uint32_t seq = 1;
	for (;;) {
		int n = recv(events, ev, sizeof ev, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				// As the Go floor: those connections go without a
				// create, and the round says how many.
				fprintf(stderr, "floor-c: events lost (netlink buffer overrun)\n");
				continue;
			}
			die("events");
		}
		struct nlmsghdr *h = (struct nlmsghdr *)ev;
		if (n < (int)(NLMSG_HDRLEN + GENL_HDRLEN) || h->nlmsg_type != family || h->nlmsg_len > (uint32_t)n) {
			pthread_mutex_lock(&mu);
			malformed++;
			pthread_mutex_unlock(&mu);
			continue;
		}
		uint32_t token = 0, daddr = 0;
		uint16_t af = 0, dport = 0;
		EACH_ATTR(a, ev + NLMSG_HDRLEN + GENL_HDRLEN, ev + h->nlmsg_len) {
			switch (a->nla_type) {
			case EV_TOKEN: get(a, &token, 4); break;
			case EV_FAMILY: get(a, &af, 2); break;
			case EV_DADDR4: get(a, &daddr, 4); break;
			case EV_DPORT: get(a, &dport, 2); break;
			}
		}
		if (af != AF_INET || !daddr) {
			pthread_mutex_lock(&mu);
			skipped++;
			pthread_mutex_unlock(&mu);
			continue;
		}

		uint16_t port = ntohs(dport); // the event's port is big-endian, the command's host order
		uint32_t len = gp_put_create(req, family, ++seq, token, AF_INET, &lte, 2, 0, ifindex, &daddr, port);
		if (send(cmds, req, len, 0) < 0)
			die("subflow create");
		for (;;) {
			int m = recv(cmds, ack, sizeof ack, 0);
			if (m < 0) {
				if (errno == EINTR)
					continue;
				die("subflow create's acknowledgement");
			}
			struct nlmsghdr *a = (struct nlmsghdr *)ack;
			if (m < (int)NLMSG_SPACE(sizeof(struct nlmsgerr)) || a->nlmsg_type != NLMSG_ERROR || a->nlmsg_seq != seq)
				continue;
			int err = ((struct nlmsgerr *)NLMSG_DATA(a))->error;
			if (err) {
				pthread_mutex_lock(&mu);
				if (refused++ == 0)
					snprintf(first, sizeof first, "%s", strerror(-err));
				pthread_mutex_unlock(&mu);
			}
			break;
		}
	}
}
