// BenchmarkBurst's floor-rt (BURST_MODES=...,floor-rt): the daemon's own
// create thread, internal/rtcreate's C (compiled in below), in a process
// of its own without Go's runtime, with the floor's plan (a create from
// the lte address, endpoint id 2, for each connection's ESTABLISHED).
// The daemon with BENCH_CREATES=realtime runs the same thread: what sets
// the two apart is the Go process around it (docs/benchmarks.md, burst).
//
// Usage: burst_floor_rt LTE-IFNAME PRIO [backlog], run in the client's
// network namespace; the thread runs at SCHED_FIFO PRIO, as the daemon's
// at creates.priority. With backlog, a second socket takes every event
// of the group, as the daemon's loop does, and is read as the loop reads
// it (backlog). Like burst_floor.c it prints "ready" and "pid PID",
// runs until its input ends, then prints how many creates the kernel
// refused and why the first was. Events lost or a connection with no plan
// go to stderr (the round counts their connections as not served); if
// the thread stopped on an error, it says so and exits 1.
#define _GNU_SOURCE
#include "burst_floor.h"
#include "rtcreate.c" // internal/rtcreate's: the benchmark builds with -I there

static int refused, lost, failed; // the accounts' thread's until it ends
static char first[128], why_failed[160];

// backlog_socket opens the loop's events socket without the loop: it
// takes every event of the group, in pathmgr's buffer (eventBufferBytes,
// forced where it may be, as pathmgr does). -1 and a message on failure.
static int backlog_socket(void) {
	uint16_t family;
	uint32_t group;
	char err[128] = "";
	int fd = gp_genl_socket(), size = 8 << 20;
	if (fd < 0 || gp_resolve(fd, &family, &group, err, sizeof err) < 0 ||
	    setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
		fprintf(stderr, "floor-rt: the backlog's socket: %s %s\n", err, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	return fd;
}

// backlog reads the backlog's socket as the loop reads its own: not while
// the thread is busy with a burst (the controller's awaitBurst), every
// 5 ms otherwise (pathmgr.ListenEventsPaced); until ending is set.
static atomic_int ending;
static struct gp_rt *backlog_rt;
static void *backlog(void *arg) {
	int fd = *(int *)arg;
	static char buf[1 << 16];
	while (!atomic_load(&ending)) {
		usleep(5000);
		if (gp_rt_busy(backlog_rt))
			continue;
		int n;
		while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0 || (n < 0 && (errno == ENOBUFS || errno == EINTR))) {
		}
	}
	return NULL;
}

// accounts reads the thread's reports (what the daemon's loop reads) and
// keeps what went wrong.
static void *accounts(void *arg) {
	int fd = *(int *)arg;
	static struct gp_report r[GP_BATCH];
	ssize_t n;
	while ((n = recv(fd, r, sizeof r, 0)) > 0 || (n < 0 && errno == EINTR)) {
		for (int i = 0; i < n / (ssize_t)sizeof r[0]; i++) {
			if (r[i].kind == GP_REFUSED && refused++ == 0)
				snprintf(first, sizeof first, "%s", r[i].msg[0] ? r[i].msg : strerror(r[i].err));
			else if (r[i].kind == GP_LOST || r[i].kind == GP_NOT_SENT)
				lost++;
			else if (r[i].kind == GP_FAILED && failed++ == 0)
				snprintf(why_failed, sizeof why_failed, "%s: %s", r[i].msg, strerror(r[i].err));
		}
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3 || argc > 4 || atoi(argv[2]) < 1 || atoi(argv[2]) > 99 || (argc == 4 && strcmp(argv[3], "backlog") != 0)) {
		fprintf(stderr, "usage: %s LTE-IFNAME PRIO (1-99) [backlog]\n", argv[0]);
		return 2;
	}
	int ifindex;
	struct in_addr lte;
	if (!lte_of(argv[1], &ifindex, &lte)) {
		fprintf(stderr, "floor-rt: %s has no IPv4 address\n", argv[1]);
		return 1;
	}
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		perror("floor-rt: socketpair");
		return 1;
	}
	char err[256] = "";
	int fifo = 0, serr = 0;
	// The pause and hold are rtcreate's defaults (DefaultPause, DefaultHold).
	struct gp_rt *rt = gp_rt_start(atoi(argv[2]), sp[1], 2, 1000, &fifo, &serr, err, sizeof err);
	if (!rt) {
		fprintf(stderr, "floor-rt: %s\n", err);
		return 1;
	}
	if (!fifo) {
		fprintf(stderr, "floor-rt: SCHED_FIFO %s refused: %s\n", argv[2], strerror(serr));
		return 1;
	}
	struct gp_plan plan = {.deadline = INT64_MAX, .nifs = 1};
	plan.ifs[0].index = ifindex;
	plan.ifs[0].v4.family = AF_INET;
	plan.ifs[0].v4.id = 2;
	memcpy(plan.ifs[0].v4.addr, &lte, 4);
	gp_rt_publish(rt, &plan);
	int bfd = argc == 4 ? backlog_socket() : -1;
	if (argc == 4 && bfd < 0)
		return 1;
	backlog_rt = rt;
	pthread_t t, bl;
	if (pthread_create(&t, NULL, accounts, &sp[0]) != 0 || (argc == 4 && pthread_create(&bl, NULL, backlog, &bfd) != 0)) {
		fprintf(stderr, "floor-rt: starting a thread\n");
		return 1;
	}
	printf("ready\npid %d\n", getpid());
	fflush(stdout);
	char b[256];
	ssize_t n;
	while ((n = read(0, b, sizeof b)) > 0 || (n < 0 && errno == EINTR)) {
	}
	// The backlog's thread looks at rt: it ends first. The thread hands
	// over what it holds as it stops; its end of the pair closed, the
	// accounts' thread has read everything.
	atomic_store(&ending, 1);
	if (argc == 4)
		pthread_join(bl, NULL);
	gp_rt_stop(rt);
	close(sp[1]);
	pthread_join(t, NULL);
	if (lost)
		fprintf(stderr, "floor-rt: %d reports of events lost or connections without a plan\n", lost);
	if (failed) {
		fprintf(stderr, "floor-rt: the thread stopped: %s\n", why_failed);
		return 1;
	}
	printf("refused %d \"%s\"\n", refused, first);
	return 0;
}
