package controller

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"time"

	"github.com/gigapath/gigapath/internal/rtcreate"
)

// Creates from the real-time thread (creates.thread: realtime).
//
// The thread (internal/rtcreate, in C at SCHED_FIFO) does what the
// reader's early creates do (early.go), from a thread of its own: it reads
// each new connection's ESTABLISHED on its own socket and sends the
// creates of the plan publishEarly hands it. The reader, reading the same
// events, sends nothing and takes the plan's creates as sent (earlyCreates
// with no error), so the loop records them pending as it does the
// reader's. What did not go as planned the thread reports, and the loop
// corrects it (rtReport): a refusal is handled as the pool's are
// (createFailed); a connection it sent nothing for (its plan had expired)
// is reconciled at once, the loop sending the creates; lost events ask for
// a resync. A report about a connection the loop has not taken in yet
// waits in rtLate until it does (the thread may be ahead of the reader).

// rtThread is the thread as the controller uses it (a fake in tests).
type rtThread interface {
	Publish(*rtcreate.Plan) error
	Read() (rtcreate.Report, error)
	Close() error
}

// lateReport is a report that came before its connection's ESTABLISHED.
type lateReport struct {
	r  rtcreate.Report
	at time.Time
}

// rtLateFor is how long a report waits for its connection: longer than
// any lag of the reader behind the thread, short enough that the reports
// of connections that closed before the loop saw them do not pile up.
const rtLateFor = 30 * time.Second

// startRT starts the real-time thread in the managed namespace. A thread
// the kernel did not let run at SCHED_FIFO still runs, and the log says
// why.
func (c *Controller) startRT(prio int) (*rtcreate.Thread, error) {
	th, err := rtcreate.Start(rtcreate.Options{NetNS: c.cfg.NetNS, Priority: prio})
	if err != nil {
		if errors.Is(err, rtcreate.ErrUnsupported) {
			return nil, errors.New("creates.thread: realtime: this gigapath was built without cgo; build it with CGO_ENABLED=1 (and a C compiler), or use creates.thread: reader")
		}
		return nil, err
	}
	if fifo, err := th.RealTime(); !fifo {
		c.log.Warn("the create thread runs at the daemon's scheduling, not real-time (needs CAP_SYS_NICE)", "err", err)
	}
	return th, nil
}

// readRT passes the thread's reports to the loop until ctx ends (and then
// stops the thread, which ends its read) or the thread is closed.
func readRT(ctx context.Context, th rtThread, out chan<- rtcreate.Report) error {
	stop := context.AfterFunc(ctx, func() { th.Close() })
	defer stop()
	for {
		r, err := th.Read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			r = rtcreate.Report{Kind: rtcreate.Failed, Err: err}
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return nil
		}
		if r.Kind == rtcreate.Failed {
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
		c.publishEarly()
		return
	}
	cn, ok := c.conns[r.Token]
	if !ok || !cn.established {
		if c.rtLate == nil {
			c.rtLate = map[uint32][]lateReport{}
		}
		c.rtLate[r.Token] = append(c.rtLate[r.Token], lateReport{r, at})
		return
	}
	c.applyRT(cn, r)
}

// applyRT applies a report about a connection the loop has taken in.
func (c *Controller) applyRT(cn *conn, r rtcreate.Report) {
	switch r.Kind {
	case rtcreate.Refused:
		c.createFailed(createFailure{createJob{token: r.Token, local: r.Local, remote: r.Remote}, r.Err})
	case rtcreate.NotSent:
		if !cn.assumed {
			return // the reader took nothing as sent: the loop has sent its own
		}
		cn.assumed = false
		dst := norm(r.Remote)
		cn.pending.deleteFunc(func(k slot, _ time.Time) bool { return k.dst == dst })
		c.log.Debug("subflow create (thread) not sent: no plan in force, the loop sends it", "token", r.Token)
		c.reconcileConn(cn)
	}
}

// takeLate applies the reports that came before cn's ESTABLISHED.
func (c *Controller) takeLate(cn *conn) {
	rs, ok := c.rtLate[cn.token]
	if !ok {
		return
	}
	delete(c.rtLate, cn.token)
	for _, l := range rs {
		c.applyRT(cn, l.r)
	}
}

// expireLate drops the reports whose connection never came (it closed
// before the reader saw it, or its events were lost: a resync's).
func (c *Controller) expireLate(now time.Time) {
	for tok, rs := range c.rtLate {
		if now.Sub(rs[len(rs)-1].at) > rtLateFor {
			delete(c.rtLate, tok)
		}
	}
}
