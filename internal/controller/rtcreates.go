package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/rtcreate"
	"github.com/gigapath/gigapath/pathmgr"
)

// Creates from the real-time thread (creates.thread: realtime, or auto
// where the thread can run at SCHED_FIFO: startCreates).
//
// The thread (internal/rtcreate, in C at SCHED_FIFO) does what the
// reader's early creates do (early.go), from a thread of its own: it reads
// each new connection's ESTABLISHED on its own socket and sends the
// creates of the plan publishEarly hands it. The reader, reading the same
// events, sends nothing and takes the plan's creates as sent, so that the
// loop, taking the connection in, records them pending and sends none of
// its own (the connection is assumed, and awaits the thread's account in
// rtAwait). The thread then accounts for every connection it read: each
// refusal, then the interfaces it sent a create from (or that no plan was
// in force). The loop makes its pending creates what the thread sent
// (applyRT): an assumed create the thread did not send (its plan had
// changed, or expired) is dropped and the loop sends it; one it sent that
// the loop did not assume becomes pending; a refusal backs off as the
// loop's own would. An account that comes before the reader's ESTABLISHED
// waits for it in rtLate. A connection whose account never comes (the
// thread lost its event, or stopped, or the loop failed to read its
// report) gets the kernel's account instead (rtSentByKernel): not before
// rtAwaitFor, and then once the thread has accounted for rtReorder
// connections the loop took in after it (assumed or not: rtIntake), or
// has stopped, or after rtAwaitMax (expireRT says why not by the clock
// alone). In a burst the thread holds its accounts until the burst ends
// (or a second into it), and the reader waits for them (awaitBurst): the
// loop takes the burst in after it.

// rtThread is the thread as the controller uses it (a fake in tests).
type rtThread interface {
	Publish(*rtcreate.Plan) error
	Read() ([]rtcreate.Report, error)
	Busy() bool
	Taken() uint64
	Close() error
}

// lateReport is a report that came before its connection's ESTABLISHED.
type lateReport struct {
	r  rtcreate.Report
	at time.Time
}

// rtLateFor is how long a report waits for its connection: far longer
// than any lag of the loop behind the thread, since a report dropped
// while its connection is still to come would make the connection's
// account look missing (expireRT); a report stays only when the reader
// lost the connection's events, which also asks for a resync.
const rtLateFor = 5 * time.Minute

// rtWait is a connection's wait for the thread's account: since when, and
// its place among the connections the thread accounts for (rtSeq).
type rtWait struct {
	since time.Time
	seq   uint64
}

// rtAwaitFor is how long an assumed connection waits for the thread's
// account at least before the loop asks the kernel instead
// (rtSentByKernel): the thread, at SCHED_FIFO, accounts within
// milliseconds of a burst's end, or a second into one that goes on
// (rtcreate.DefaultHold), unless it lost the event or the account was
// lost. rtAwaitMax is how long at most, when no later account comes
// either.
const (
	rtAwaitFor = 5 * time.Second
	rtAwaitMax = 30 * time.Second
)

// rtReorder is how far apart the reader and the thread may see two
// connections' ESTABLISHED, in connections: the kernel sends each event
// to both sockets in turn, so only events sent at the same time from
// different CPUs can reach them in different orders. A margin, not a
// bound (a preemptible kernel widens it); too small, it costs a create
// sent twice, which converge closes.
var rtReorder = uint64(max(8, 2*runtime.NumCPU()))

// How long at most the events reader waits for a burst of the thread's to
// end (awaitBurst) after its last read: rtDeferMax, well within
// rtAwaitFor, and rtDeferConns connections taken by the thread. The
// thread hands its reports over at the latest when it holds 1,024
// (internal/rtcreate), which wakes the reader: it serves at most about
// 2,000 connections between two reads, 8,000 events at four each, well
// within what the reader's socket holds with SO_RCVBUFFORCE (pathmgr:
// about 20,000; the events of connections it skips, and closes, come on
// top; burstWait waits with events queued only while they take at most a
// quarter of it). Without CAP_NET_ADMIN the buffer is rmem_max's, a few
// hundred events: a loss asks for a resync, and the reader reads on at
// once until the socket is empty.
const (
	rtDeferMax   = time.Second
	rtDeferConns = 1024
)

// awaitBurst holds the events reader back while the thread is in a burst
// (Busy: it took a connection, a plan in force for it, within its pause,
// and holds its reports), until the thread pauses and hands its reports
// over (readRT then wakes it through flushed), and at most until until
// (rtDeferMax after the reader's last read, or sooner: burstWait) or until the thread has taken
// rtDeferConns connections since that read (mark, its Taken then). The
// thread sends a burst's creates; the loop's account, of the burst's
// connections and of every other path-manager event meanwhile, then waits
// for its end, and takes no CPU from the applications and the thread
// while it lasts (docs/benchmarks.md, "burst"). The reader's socket is
// paced, out of Go's poller (eventPace), so the events queued meanwhile
// wake nothing.
func (c *Controller) awaitBurst(ctx context.Context, until time.Time, mark uint64, flushed <-chan struct{}) {
	var timeout <-chan time.Time
	for c.rtc.Busy() && c.rtc.Taken()-mark < rtDeferConns {
		if timeout == nil {
			left := time.Until(until)
			if left <= 0 {
				return
			}
			t := time.NewTimer(left)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-flushed:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// newRT is the thread as startCreates starts it: RealTime says whether
// it runs at SCHED_FIFO, and if not, why.
type newRT interface {
	rtThread
	RealTime() (bool, error)
}

// startRT starts the real-time thread in the managed namespace
// (rtcreate.Start; a variable for the tests).
var startRT = func(o rtcreate.Options) (newRT, error) {
	th, err := rtcreate.Start(o)
	if err != nil {
		return nil, err
	}
	return th, nil
}

// startCreates decides at the start who sends a new connection's creates
// (creates.thread), and starts the real-time thread if that is it: nil
// is the event reader (early.go). With auto, the thread only where it
// runs at SCHED_FIFO: without it the thread measured no better than the
// reader under a burst (docs/benchmarks.md, "burst"), and the reader is
// the simpler path. supported is rtcreate.Supported (the tests'
// stand-in). c.createsBy says who, for status.
func (c *Controller) startCreates(p *policy.Policy, supported bool) (rtThread, error) {
	c.createsBy = ""
	if !p.Threaded() {
		return nil, nil // the daemon sends no creates at a connection's start
	}
	// auto's fallback, loud: the second paths come later under a burst.
	// Writing reader says it is meant.
	fallback := func(why string, args ...any) (rtThread, error) {
		c.createsBy = createsByReader
		c.log.Warn("new connections' creates are sent by the event reader, not the real-time thread: "+why+" (creates.thread: auto; write reader to mean it)", args...)
		return nil, nil
	}
	auto := p.Creates.Thread == policy.CreatesAuto
	switch p.Creates.Thread {
	case policy.CreatesReader:
		c.createsBy = createsByReader
		c.log.Info("new connections' creates are sent by the event reader (creates.thread: reader)")
		return nil, nil
	case policy.CreatesAuto:
		if !supported {
			return fallback("this build has none (built without cgo)")
		}
	case policy.CreatesRealtime:
	default:
		return nil, fmt.Errorf("creates.thread: %q: want auto, reader or realtime", p.Creates.Thread)
	}
	th, err := startRT(rtcreate.Options{NetNS: c.cfg.NetNS, Priority: p.Creates.Priority})
	switch {
	case err != nil && auto:
		return fallback("it did not start", "err", err)
	case errors.Is(err, rtcreate.ErrUnsupported):
		// config check and run refuse it first (cmd/gigapath, buildRefuses).
		return nil, errors.New("creates.thread: realtime: this gigapath was built without cgo; build it with CGO_ENABLED=1 (and a C compiler), or use creates.thread: auto or reader")
	case err != nil:
		return nil, err
	}
	// What it takes, in a warning: a daemon upgraded in place keeps the
	// sandbox and limits it started with (an older unit's).
	const right = "needs CAP_SYS_NICE, or RLIMIT_RTPRIO up to creates.priority and no seccomp filter against it: systemd's LimitRTPRIO= and RestrictRealtime=no, which the unit of docs/deploy.md has; a daemon upgraded in place keeps the ones it started with"
	fifo, why := th.RealTime()
	switch {
	case fifo:
		c.createsBy = fmt.Sprintf("real-time thread, SCHED_FIFO %d", p.Creates.Priority)
		c.log.Info("new connections' creates are sent by the real-time thread", "sched_fifo", p.Creates.Priority)
		return th, nil
	case auto:
		th.Close()
		return fallback("it cannot run at SCHED_FIFO ("+right+")", "err", why)
	}
	c.createsBy = "real-time thread, at the daemon's scheduling"
	c.log.Warn("the create thread runs at the daemon's scheduling, not real-time ("+right+")", "err", why)
	return th, nil
}

// createsByReader is status's word for the event reader's creates.
const createsByReader = "event reader"

// readRT passes the thread's reports to the loop, a batch at a time,
// until ctx ends (and then stops the thread, which ends its read) or the
// thread is closed. After each batch it wakes awaitBurst (flushed, never
// waiting on it).
func readRT(ctx context.Context, th rtThread, out chan<- []rtcreate.Report, flushed chan<- struct{}) error {
	stop := context.AfterFunc(ctx, func() { th.Close() })
	defer stop()
	for {
		rs, err := th.Read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			rs = []rtcreate.Report{{Kind: rtcreate.Failed, Err: err}}
		}
		select {
		case out <- rs:
		case <-ctx.Done():
			return nil
		}
		select {
		case flushed <- struct{}{}:
		default:
		}
		if rs[len(rs)-1].Kind == rtcreate.Failed {
			return nil
		}
	}
}

// publishRT hands the thread the plan (nil: none). A plan the thread
// cannot hold is withdrawn from the reader too: then neither takes a
// create as sent and the loop sends them.
func (c *Controller) publishRT(p *earlyPlan) *earlyPlan {
	if c.rtc == nil || c.rtcFailed {
		return nil
	}
	if p == nil {
		c.rtc.Publish(nil)
		return nil
	}
	rp := &rtcreate.Plan{Valid: p.until.Sub(c.now()), Addrs: map[netip.Addr]int{}}
	for _, ei := range p.ifs {
		rp.Ifaces = append(rp.Ifaces, rtcreate.Iface{Index: ei.index, V4: ei.v4, V6: ei.v6})
	}
	// Only the addresses of planned interfaces matter: the thread skips
	// the interface a connection already uses.
	for a, idx := range p.ifindex {
		for _, ei := range p.ifs {
			if ei.index == idx {
				rp.Addrs[a] = idx
			}
		}
	}
	if err := c.rtc.Publish(rp); err != nil {
		if !c.rtcTooBig {
			c.log.Warn("new connections' creates go through the loop: the create thread cannot hold the plan", "err", err)
			c.rtcTooBig = true
		}
		c.rtc.Publish(nil)
		return nil
	}
	c.rtcTooBig = false
	return p
}

// rtReport corrects the loop's account by one of the thread's reports.
func (c *Controller) rtReport(r rtcreate.Report, at time.Time) {
	switch r.Kind {
	case rtcreate.EventsLost:
		c.log.Warn("the create thread lost path-manager events (netlink buffer overrun), resynchronising")
		c.requestResync("events_lost")
		return
	case rtcreate.Failed:
		c.log.Error("the create thread stopped; new connections' creates go through the loop", "err", r.Err)
		c.rtcFailed = true
		c.rtc.Close() // sends nothing more, whatever stopped it
		c.publishEarly()
		return
	}
	// Until the reader's ESTABLISHED has been taken in (estAt), the
	// loop has not assumed anything of the connection: an adoption from a
	// dump (established, no estAt) is not that.
	if cn, ok := c.conns[r.Token]; ok && !cn.estAt.IsZero() {
		c.applyRT(cn, r, at)
		return
	}
	if c.rtLate == nil {
		c.rtLate = map[uint32][]lateReport{}
	}
	c.rtLate[r.Token] = append(c.rtLate[r.Token], lateReport{r, at})
}

// applyRT applies a report about a connection the loop has taken in.
func (c *Controller) applyRT(cn *conn, r rtcreate.Report, at time.Time) {
	if _, ok := c.rtSettled[cn.token]; ok {
		// Late: the kernel's account settled these creates, and counted
		// them (expireRT). The account ends with its Sent or NotSent.
		if r.Kind != rtcreate.Refused {
			delete(c.rtSettled, cn.token)
		}
		c.log.Debug("an account of the create thread after the kernel's, dropped", "token", cn.token, "kind", r.Kind)
		return
	}
	dst := norm(r.Remote)
	switch r.Kind {
	case rtcreate.Refused:
		c.ls.creates.Inc()
		c.m.CommandErrors.WithLabelValues("subflow_create").Inc()
		k := slot{r.Local.IfIndex, dst}
		cn.pending.del(k)
		// As applyEarly: the refusal of a create the loop would no
		// longer send is not backed off; the loop sends its own.
		if c.early.Load().hasCreate(r.Local) {
			cn.backoff.set(k, at.Add(retryBackoff))
			c.subflowFailed(r.Local.IfIndex, cn.token, r.Local.Addr, dst, r.Err.Error(), at)
		} else {
			c.log.Debug("subflow create (thread) refused, left to the loop", "token", cn.token, "local", r.Local.Addr, "remote", dst, "err", r.Err)
		}
		c.schedule(cn)
	case rtcreate.NotSent, rtcreate.Sent:
		c.rtAccount(cn, dst, r.Sent, at)
	}
}

// rtAccount makes cn's pending creates to dst what the thread sent: from
// the interfaces in sent.
func (c *Controller) rtAccount(cn *conn, dst netip.AddrPort, sent []int, at time.Time) {
	if w, ok := c.rtAwait[cn.token]; ok {
		c.rtDone = max(c.rtDone, w.seq)
		delete(c.rtAwait, cn.token)
	}
	dropped := false
	if cn.assumed {
		cn.pending.deleteFunc(func(k slot, _ time.Time) bool {
			if k.dst == dst && !slices.Contains(sent, k.ifindex) {
				dropped = true
				return true
			}
			return false
		})
		cn.assumed = false
	}
	for _, idx := range sent {
		c.ls.creates.Inc()
		k := slot{idx, dst}
		if _, ok := cn.pending.get(k); !ok && !slices.ContainsFunc(cn.subs, func(s *sub) bool { return s.ifindex == idx && norm(s.sf.Remote) == dst }) {
			cn.pending.set(k, at) // sent by a plan the reader did not assume
		}
	}
	if dropped {
		c.log.Debug("subflow creates assumed and not sent by the thread: the loop sends them", "token", cn.token, "sent", sent)
		c.reconcileConn(cn)
	}
}

// rtIntake puts a connection the loop takes in, whose ESTABLISHED the
// thread reads too, in line for the thread's account: every such
// connection, assumed or not, since the thread accounts for each (a
// NotSent where it sent nothing), and each account read tells how far the
// thread has come (expireRT). The wait is counted from now, not from the
// reader's read: a loop behind its reader has not read the account yet
// either.
func (c *Controller) rtIntake(cn *conn) {
	if c.rtAwait == nil {
		c.rtAwait = map[uint32]rtWait{}
	}
	c.rtSeq++
	c.rtAwait[cn.token] = rtWait{since: c.now(), seq: c.rtSeq}
}

// takeLate applies the reports that came before cn's ESTABLISHED.
func (c *Controller) takeLate(cn *conn) {
	rs, ok := c.rtLate[cn.token]
	if !ok {
		return
	}
	delete(c.rtLate, cn.token)
	for _, l := range rs {
		c.applyRT(cn, l.r, l.at)
	}
}

// expireRT drops the reports whose connection never came (it closed
// before the reader saw it, or its events were lost: a resync's), and
// gives the connections whose account never came the kernel's.
//
// Not by the clock alone: a loop starved of CPU (the rest of the daemon
// at nice 19 on a busy device) can take a connection in seconds after the
// thread accounted for it, and find the clock past rtAwaitFor before it
// has read that account; where the kernel cannot tell (before Linux
// 6.7), the connection would get a second create. The thread accounts in
// the order it reads events, the reader's order but for rtReorder, and
// the loop reads its accounts in that order: so an account is missing,
// not late, once the loop has read the account of a connection it took
// in rtReorder or more after it, or when the thread has stopped. Without
// either, rtAwaitMax ends the wait.
func (c *Controller) expireRT(now time.Time) {
	for tok, rs := range c.rtLate {
		if now.Sub(rs[len(rs)-1].at) > rtLateFor {
			delete(c.rtLate, tok)
		}
	}
	for tok, at := range c.rtSettled {
		if now.Sub(at) > rtLateFor {
			delete(c.rtSettled, tok)
		}
	}
	asked := 0
	for tok, w := range c.rtAwait {
		age := now.Sub(w.since)
		missing := c.rtcFailed || c.rtDone >= w.seq+rtReorder
		if age <= rtAwaitFor || (!missing && age <= rtAwaitMax) {
			continue
		}
		cn, ok := c.conns[tok]
		if !ok || !cn.assumed {
			delete(c.rtAwait, tok)
			continue
		}
		if asked == rtAskPerTick {
			continue // the next tick's
		}
		asked++
		sent, err := c.rtSentByKernel(cn)
		switch {
		case err == nil:
		case errors.Is(err, pathmgr.ErrNotSupported):
			sent = nil // the kernel cannot say: not sent
		case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
			// The kernel has no such connection: its CLOSED, which the
			// reader has not passed on yet, settles it.
			delete(c.rtAwait, tok)
			continue
		case age <= rtAwaitMax:
			c.log.Debug("the kernel's account of a connection's creates not read, asking again", "token", tok, "err", err)
			continue
		default:
			c.log.Warn("no account of a connection's creates, the thread's or the kernel's: taken as not sent", "token", tok, "err", err)
			sent = nil
		}
		// Out of the wait first: rtDone counts the thread's accounts only.
		delete(c.rtAwait, tok)
		c.log.Debug("no account of the create thread for a connection: the kernel's taken", "token", tok, "waited", age, "sent", sent)
		c.rtAccount(cn, norm(cn.remote), sent, now)
		if err == nil {
			// Counted as the kernel says: a late account of the
			// thread's would count them again.
			if c.rtSettled == nil {
				c.rtSettled = map[uint32]time.Time{}
			}
			c.rtSettled[tok] = now
		}
	}
}

// rtAskPerTick is the most connections whose creates a tick asks the
// kernel about (rtSentByKernel): each is a request the loop waits for, and
// a thread that stopped in a burst leaves thousands to ask about.
const rtAskPerTick = 64

// rtSentByKernel is what the kernel says was sent of cn's assumed creates,
// whose account never came: the interfaces of its pending creates that
// the connection's local addresses name. The userspace PM adds a create's
// address, with the interface the create gave, to the connection's list,
// and takes it out again when the connect fails (GET_ADDR with the token,
// Linux 6.7 and later: ConnectionAddrs). An account can go missing after
// the thread sent the creates (its report lost with a read of the loop's
// that failed, say), and a subflow still in its handshake shows nowhere
// else: taken as not sent, it would get a second create. The list holds
// an address once, whatever the remote: a create of the loop's own from
// the same address to another remote keeps a refused one pending (until
// pendingTimeout). An error (pathmgr.ErrNotSupported before Linux 6.7) is
// expireRT's to judge.
func (c *Controller) rtSentByKernel(cn *conn) ([]int, error) {
	eps, err := c.kpm.ConnectionAddrs(cn.token)
	if err != nil {
		return nil, err
	}
	var sent []int
	dst := norm(cn.remote)
	for _, p := range cn.pending {
		if p.key.dst != dst || slices.Contains(sent, p.key.ifindex) {
			continue
		}
		// The create's own interface, as the kernel keeps it: the
		// address may have moved since (a modem that came back).
		if slices.ContainsFunc(eps, func(e pathmgr.Endpoint) bool {
			if e.IfIndex != 0 {
				return e.IfIndex == p.key.ifindex
			}
			return c.ifindexOf(e.Addr, 0) == p.key.ifindex
		}) {
			sent = append(sent, p.key.ifindex)
		}
	}
	return sent, nil
}

// hasCreate reports whether the plan (nil: none) still sends a create
// from ep's address, id and interface (the thread's report has no flags).
func (p *earlyPlan) hasCreate(ep pathmgr.Endpoint) bool {
	if p == nil {
		return false
	}
	for _, ei := range p.ifs {
		for _, e := range [...]pathmgr.Endpoint{ei.v4, ei.v6} {
			if e.Addr == ep.Addr && e.ID == ep.ID && e.IfIndex == ep.IfIndex {
				return true
			}
		}
	}
	return false
}
