package controller

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// Early creates: a new connection's subflows, sent by the event reader.
//
// On the client side with the userspace PM, a connection's ESTABLISHED is
// what the daemon answers with SUBFLOW_CREATEs, and under a burst that
// answer waits in the queue in front of the one thread (a client's daemon
// runs on one P) that sends them (docs/benchmarks.md, "burst"). Had the
// loop first to take each connection in (its account, metrics and
// decision) before the pool sent its creates, every connection would also
// wait for the loop's work on the connections before it. So the loop
// publishes, whenever what a new connection would get changes, the creates
// it would send for one (earlyPlan, from the same decision as reconcileConn
// makes); the reader sends them as it reads each ESTABLISHED, before it
// hands the batch to the loop; and the loop, taking the connection in,
// records them as its own (applyEarly): pending, or backing off after a
// refusal. Everything after that (retries, the peer's addresses, steering
// changes) is the loop's. A connection that an inventory dump brings to
// the loop around its ESTABLISHED (at the start, or in a resync) may get
// a create from both; the loop then closes the duplicate, as it would
// any (converge).

// earlyPlan is what the loop would create for a new connection, as of
// when it was published.
type earlyPlan struct {
	// until is when, on the decisions' clock, the steering decision may
	// change by itself (a handover hold ending); the reader sends nothing
	// from a plan past it, and the loop publishes another at its tick.
	until time.Time
	// ifindex is the interface of each address of the namespace (as
	// ifindexOf finds a connection's initial subflow's): the loop's
	// addrIndex, which it replaces rather than changes.
	ifindex map[netip.Addr]int
	ifs     []earlyIface
}

// earlyIface is an interface the decision opens a subflow on, with the
// endpoint a create from it uses for each family (a zero Addr: the
// interface has no address of that family).
type earlyIface struct {
	index  int
	v4, v6 pathmgr.Endpoint
}

// earlyCreate is a create the reader sent for the event at index event of
// its batch, and the kernel's answer.
type earlyCreate struct {
	event int
	ep    pathmgr.Endpoint
	err   error
}

// earlyPlanValid is how long a plan stays in use without the loop
// publishing another: the loop publishes one at each tick (and after
// every change that can alter it), so a plan older than this means the
// loop is stalled, and the reader then leaves the creates to it.
const earlyPlanValid = 2 * tickEvery

// publishEarly publishes what a new connection gets now, or withdraws the
// plan where there are no early creates (the in-kernel PM, the server
// side, or no reader's client).
func (c *Controller) publishEarly() {
	if (c.earlyPM == nil && c.rtc == nil) || c.pol.PathManager != policy.PMUserspace || c.pol.Side == policy.SideServer {
		c.publishRT(nil)
		c.early.Store(nil)
		return
	}
	now := c.now()
	avail := c.availableInto(nil)
	wants := c.strat.decide(nil, avail, now)
	p := &earlyPlan{until: now.Add(earlyPlanValid), ifindex: c.addrIndex}
	if h, ok := c.strat.(*handover); ok {
		for _, i := range avail {
			if t := i.availSince.Add(h.thr.hold); t.After(now) && t.Before(p.until) {
				p.until = t
			}
		}
	}
	for n, i := range avail {
		if !wants[n].open {
			continue
		}
		ei := earlyIface{index: i.index}
		for _, probe := range [...]netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			addr, ok := i.addrFor(probe)
			if !ok {
				continue
			}
			// A new connection knows no id but its initial subflow's
			// (0), so the allocator's is the one create would use.
			id, ok := c.ids.get(netip.AddrPortFrom(addr.Unmap(), 0), c.addrLive)
			if !ok {
				continue
			}
			ep := pathmgr.Endpoint{ID: id, Addr: addr, IfIndex: i.index}
			if wants[n].backup {
				ep.Flags = pathmgr.FlagBackup
			}
			if probe.Is4() {
				ei.v4 = ep
			} else {
				ei.v6 = ep
			}
		}
		p.ifs = append(p.ifs, ei)
	}
	c.saveIDs()
	if c.rtc != nil {
		p = c.publishRT(p) // nil if the thread cannot take it
	}
	c.early.Store(p)
}

// earlyCreates sends, on the reader's goroutine, the creates the published
// plan gives each new connection in evs, and returns them; request (nil:
// none) times each. With the real-time thread it sends none and returns
// them as sent: the thread sends them (rtcreates.go).
func (c *Controller) earlyCreates(evs []pathmgr.Event, request prometheus.Observer) []earlyCreate {
	p := c.early.Load()
	if p == nil || !c.now().Before(p.until) {
		return nil
	}
	var out []earlyCreate
	for n, ev := range evs {
		if !earlyServes(ev) {
			continue
		}
		dst := norm(ev.Remote)
		initial, ok := p.ifindex[ev.Local.Addr().Unmap()]
		if !ok {
			initial = ev.IfIndex
		}
		for _, ei := range p.ifs {
			ep := ei.v6
			if dst.Addr().Is4() {
				ep = ei.v4
			}
			if ei.index == initial || !ep.Addr.IsValid() {
				continue
			}
			var err error
			if c.rtc == nil {
				start := time.Now()
				err = c.earlyPM.CreateSubflow(ev.Token, ep, dst)
				if request != nil {
					request.Observe(time.Since(start).Seconds())
				}
			}
			out = append(out, earlyCreate{event: n, ep: ep, err: err})
		}
	}
	return out
}

// earlyServes reports whether ev is an ESTABLISHED whose connection gets
// the early creates (those of the reader or the real-time thread, which
// skips the same: internal/rtcreate/rtcreate.c, run). A connection whose
// peer set the C flag is never joined at its remote address; the loop
// decides what it gets, as it does for those the peer opened.
func earlyServes(ev pathmgr.Event) bool {
	return ev.Type == pathmgr.EventEstablished && !ev.ServerSide && !ev.DenyJoinID0 &&
		ev.Token != 0 && ev.Remote.IsValid() && ev.Remote.Port() != 0
}

// applyEarly records, as the loop takes a connection in, the creates the
// reader sent for it: each is pending, or its slot backs off after the
// kernel's refusal, as create would have it. known says the loop had the
// connection established before this event (adopted from a dump read
// meanwhile): then a create is pending only for a slot with no subflow
// yet, and a refusal (of what was a duplicate) is dropped. So is the
// refusal of a create the loop would no longer send (the plan changed
// since, e.g. an address went): reconcileConn then sends its own at once
// instead of backing off.
func (c *Controller) applyEarly(cn *conn, sent []earlyCreate, known bool, at time.Time) {
	dst := norm(cn.remote)
	if c.rtc != nil && len(sent) > 0 {
		// Taken as sent by the thread, which accounts for them
		// (rtcreates.go), and counts them then.
		cn.assumed = true
	}
	for _, e := range sent {
		k := slot{e.ep.IfIndex, dst}
		if !cn.assumed {
			c.ls.creates.Inc()
		}
		if e.err != nil {
			if known || !c.early.Load().has(e.ep) {
				c.log.Debug("subflow create (early) refused, left to the loop", "token", cn.token, "local", e.ep.Addr, "remote", dst, "err", e.err)
				continue
			}
			c.m.CommandErrors.WithLabelValues("subflow_create").Inc()
			cn.backoff.set(k, at.Add(retryBackoff))
			c.subflowFailed(e.ep.IfIndex, cn.token, e.ep.Addr, dst, e.err.Error(), at)
			continue
		}
		if known && slices.ContainsFunc(cn.subs, func(s *sub) bool { return s.ifindex == e.ep.IfIndex && norm(s.sf.Remote) == dst }) {
			continue // a duplicate, which converge closes once it shows
		}
		cn.pending.set(k, at)
		if c.log.Enabled(context.Background(), slog.LevelDebug) {
			name := ""
			if i := c.ifs[e.ep.IfIndex]; i != nil {
				name = i.name
			}
			c.log.Debug("subflow create (early)", "token", cn.token, "interface", name, "local", e.ep.Addr, "id", e.ep.ID, "remote", dst, "backup", e.ep.Flags&pathmgr.FlagBackup != 0)
		}
	}
}

// has reports whether the plan (nil: none) still sends ep's create.
func (p *earlyPlan) has(ep pathmgr.Endpoint) bool {
	if p == nil {
		return false
	}
	for _, ei := range p.ifs {
		if ei.v4 == ep || ei.v6 == ep {
			return true
		}
	}
	return false
}
