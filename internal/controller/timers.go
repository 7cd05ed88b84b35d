package controller

import (
	"container/heap"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
)

// A connection is reconciled when something happens to it (an event, a
// refusal, an interface change, a health change) and when one of its own
// timers comes due: a create's pending window (pendingTimeout), a retry
// back-off, a withdrawn peer address's grace (goneGrace), an announcement
// retry. The tick reconciles only the connections whose timers are due
// (a heap by time), so an idle daemon's second costs O(timers due), not
// O(connections). Beyond them, the steering decision itself changes with
// time only when an interface's handover hold or an announcement's
// hold-down ends (globalDue): every connection is reconciled then.
//
// A timer set anywhere but in reconcileConn must be followed by
// schedule(cn); the periodic resync reconciles everything anyway, so a
// timer missed would fire at most periodicResync late.

// dueEntry is one connection's next timer. An entry is current while it
// matches the connection's due; older ones are skipped when they come up.
type dueEntry struct {
	at    time.Time
	token uint32
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// earliest keeps the earliest of the times it is given that are after now
// (at: zero while there is none).
type earliest struct{ now, at time.Time }

func (e *earliest) add(t time.Time) {
	if t.After(e.now) && (e.at.IsZero() || t.Before(e.at)) {
		e.at = t
	}
}

// nextDue is the earliest of cn's timers after now (zero: none).
func nextDue(cn *conn, now time.Time) time.Time {
	e := earliest{now: now}
	for _, t := range cn.pending {
		e.add(t.val.Add(pendingTimeout))
	}
	for _, t := range cn.backoff {
		e.add(t.val)
	}
	for _, s := range cn.subs {
		if !s.goneAt.IsZero() {
			e.add(s.goneAt.Add(goneGrace))
		}
	}
	for _, t := range cn.annRetry {
		e.add(t.val)
	}
	return e.at
}

// schedule (re)arms cn's timer for its earliest pending deadline.
func (c *Controller) schedule(cn *conn) {
	at := nextDue(cn, c.now())
	if at.IsZero() || at.Equal(cn.due) {
		return
	}
	cn.due = at
	heap.Push(&c.dues, dueEntry{at, cn.token})
}

// runDue reconciles the connections whose timers are due, and every
// connection when the steering decision's own deadline has come.
func (c *Controller) runDue(now time.Time) {
	for len(c.dues) > 0 && !c.dues[0].at.After(now) {
		e := heap.Pop(&c.dues).(dueEntry)
		cn, ok := c.conns[e.token]
		if !ok || !cn.due.Equal(e.at) {
			continue // closed, or re-armed since
		}
		cn.due = time.Time{}
		c.reconcileConn(cn)
	}
	if !c.globalDue.IsZero() && !c.globalDue.After(now) {
		// Cleared first: a reconciliation that becomes a sweep sets it
		// when the sweep ends; until then every tick would ask again.
		c.globalDue = time.Time{}
		c.reconcileAll()
	}
}

// nextGlobalDue is when the steering decision next changes by itself
// (zero: never without an event): the end of an interface's handover
// hold, the end of an announcement's hold-down after its link went down.
func (c *Controller) nextGlobalDue(now time.Time) time.Time {
	e := earliest{now: now}
	if h, ok := c.strat.(*handover); ok {
		for _, i := range c.ifs {
			if !i.availSince.IsZero() {
				e.add(i.availSince.Add(h.thr.hold))
			}
		}
	}
	if c.pol.Side == policy.SideServer {
		for _, t := range c.linkDownAt {
			e.add(t.Add(announceHold))
		}
	}
	return e.at
}
