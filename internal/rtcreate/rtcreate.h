// The C side of package rtcreate: a thread outside Go's runtime that
// answers each new connection's ESTABLISHED with its SUBFLOW_CREATEs, by
// the plan the daemon's loop publishes. rtcreate.go says why.
#ifndef GIGAPATH_RTCREATE_H
#define GIGAPATH_RTCREATE_H

#include <stdint.h>

// GP_BATCH: reports per message of the thread's (see report in rtcreate.c).
enum { GP_MAX_IFS = 8, GP_MAX_ADDRS = 32, GP_MSG = 96, GP_BATCH = 64 };

// An endpoint a create uses: family 0 is none.
struct gp_ep {
	uint8_t family, id;
	uint8_t addr[16];
	uint32_t flags;
};

// An interface of the plan: its index and its endpoint of each family.
struct gp_iface {
	int32_t index;
	struct gp_ep v4, v6;
};

// An address of the namespace and its interface: a connection's initial
// subflow gets no create on the interface it already uses.
struct gp_addr {
	uint8_t family;
	uint8_t addr[16];
	int32_t index;
};

// What a new connection gets, until deadline (CLOCK_MONOTONIC, ns); a
// plan with no deadline sends nothing.
struct gp_plan {
	int64_t deadline;
	int32_t nifs, naddrs;
	struct gp_iface ifs[GP_MAX_IFS];
	struct gp_addr addrs[GP_MAX_ADDRS];
};

// What the thread tells the loop, for each connection it read: its
// refusals, then what it sent (or that no plan was in force).
enum {
	GP_REFUSED = 1,  // the kernel refused a create: err, msg (extack)
	GP_NOT_SENT = 2, // no plan in force: the connection got no create
	GP_LOST = 3,     // events lost (receive buffer overrun): resync
	GP_FAILED = 4,   // the thread stopped on an error: err, msg
	GP_SENT = 5,     // the creates the kernel accepted: nsent interfaces in sent
};

struct gp_report {
	uint8_t kind, id, family, nsent;
	uint32_t token;
	int32_t index, err;
	uint8_t local[16], remote[16];
	uint16_t port;
	int32_t sent[GP_MAX_IFS];
	char msg[GP_MSG];
};

struct gp_rt;

// gp_rt_start opens the thread's sockets in the calling thread's network
// namespace and starts it, at SCHED_FIFO prio if prio > 0. It returns NULL
// and a message in err on failure. *fifo is 1 if the thread runs at
// SCHED_FIFO, 0 if it was refused (*sched_err, an errno) and inherited
// the caller's scheduling. The thread writes gp_reports to report_fd, up
// to GP_BATCH in a message, when no event has come for pause_ms, or, as
// an event comes, once the first it holds is hold_ms old (report, in
// rtcreate.c).
struct gp_rt *gp_rt_start(int prio, int report_fd, int pause_ms, int hold_ms, int *fifo, int *sched_err, char *err, int errlen);
void gp_rt_publish(struct gp_rt *rt, const struct gp_plan *p);
// gp_rt_busy is 1 if the thread took a connection within its pause, a
// plan in force for it, and holds reports: it waits for more.
int gp_rt_busy(struct gp_rt *rt);
// gp_rt_taken counts the connections the thread took with a plan in force.
uint64_t gp_rt_taken(struct gp_rt *rt);
// gp_rt_stop stops the thread, waits for it and frees rt.
void gp_rt_stop(struct gp_rt *rt);

#endif
