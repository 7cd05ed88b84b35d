package controller

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/pathmgr"
)

// loop is the event loop: the one goroutine that owns the decision state.
// It returns when ctx ends (nil, nil) or when it accepted an upgrade (the
// upgrade, with the handoff made).
func (c *Controller) loop(ctx context.Context, in inputs) (*upgrade, error) {
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	var wdC <-chan time.Time
	if iv := watchdogInterval(); iv > 0 {
		wd := time.NewTicker(iv)
		defer wd.Stop()
		wdC = wd.C
	}
	lastResync := c.now()
	netCh := in.net
	ls := c.ls
	for {
		select {
		case <-ctx.Done():
			c.early.Store(nil) // no creates for connections no loop takes in
			c.publishRT(nil)
			c.log.Info("stopping")
			return nil, nil
		case b := <-in.pm:
			t := ls.begin(inPMEvents, b.read)
			early := b.early
			for n, ev := range b.events {
				k := 0
				for k < len(early) && early[k].event == n {
					k++
				}
				c.earlySent, early = early[:k], early[k:]
				c.handlePM(ev, b.at)
			}
			c.earlySent = nil
			ls.end(inPMEvents, t)
			if b.lost {
				c.log.Warn("path-manager events lost (netlink buffer overrun), resynchronising")
				c.requestResync("events_lost")
			}
		case rs := <-in.rt:
			t := ls.begin(inCreateFailure, time.Time{})
			now := c.now()
			for _, r := range rs {
				c.rtReport(r, now)
			}
			ls.end(inCreateFailure, t)
		case f := <-in.failures:
			t := ls.begin(inCreateFailure, time.Time{})
			c.createFailed(f)
			ls.end(inCreateFailure, t)
		case ev, ok := <-netCh:
			if !ok {
				netCh = nil
				continue
			}
			t := ls.begin(inInterface, time.Time{})
			c.handleNet(ev)
			c.publishEarly()
			ls.end(inInterface, t)
		case b := <-in.health:
			t := ls.begin(inHealth, b.read)
			c.healthSample(b)
			c.publishEarly()
			ls.end(inHealth, t)
		case at := <-tick.C:
			t := ls.begin(inTick, at)
			c.tick()
			c.publishEarly()
			ls.end(inTick, t)
			if now := c.now(); now.Sub(lastResync) > periodicResync {
				lastResync = now
				c.requestResync("periodic")
			}
		case r := <-in.dumps:
			t := ls.begin(inResync, r.read)
			c.dumped(r)
			c.publishEarly() // an adoption may take ids (ids.adopt)
			ls.end(inResync, t)
		case <-c.sweepReady():
			t := ls.begin(inResync, time.Time{})
			c.sweepStep()
			c.publishEarly()
			ls.end(inResync, t)
		case <-wdC:
			in.notify.send("WATCHDOG=1")
		case r := <-c.reloadCh:
			t := ls.begin(inReload, time.Time{})
			err := c.reload(r.p)
			c.publishEarly()
			r.err <- err
			ls.end(inReload, t)
		case ch := <-c.statusCh:
			t := ls.begin(inStatus, time.Time{})
			ch <- c.snapshot()
			ls.end(inStatus, t)
		case u := <-c.upgradeCh:
			// The new binary takes in what this one leaves; the reader
			// creates nothing for what the handoff does not carry.
			c.early.Store(nil)
			c.publishRT(nil)
			u.handoff = c.makeHandoff()
			return u, nil
		}
	}
}

// tick reconciles the connections whose timers are due (retries,
// pending creates, withdrawn addresses' grace, announcement retries),
// every connection when a hold that steering or announcements wait for
// has ended, and refreshes the gauges: O(what is due), see timers.go.
// It also retries the in-kernel PM endpoints and join listeners that
// failed: O(policy).
func (c *Controller) tick() {
	if len(c.kpmFailed) > 0 {
		c.applyKernelPM()
	}
	c.syncListeners()
	if len(c.rtLate) > 0 || len(c.rtAwait) > 0 || len(c.rtSettled) > 0 {
		c.expireRT(c.now())
	}
	c.runDue(c.now())
	c.refreshGauges()
}

// healthSample applies a health sample the sampler read off the loop and
// steers by it at once.
func (c *Controller) healthSample(b healthBatch) {
	if b.fellBack != "" {
		c.log.Debug("health sample from sock_diag", "why", b.fellBack, "resync_dump", b.shared)
	}
	if b.err != nil {
		c.log.Warn("health sample", "source", b.source, "err", b.err)
		return
	}
	before := c.unhealthyIfaces()
	c.applyTotals(b.per, b.at)
	if p, ok := c.strat.(*priority); ok {
		p.observe(c.available(), b.at)
	}
	c.publishPrimary()
	// Steering reads only which interfaces are unhealthy: connections need
	// a look only when that changed.
	if !slices.Equal(before, c.unhealthyIfaces()) {
		c.reconcileAll()
	}
}

// publishPrimary tells the sampler priority steering's primary (none in
// another mode, nor with the peer's passing a path over turned off), by
// which it knows when to pair subflows with their connections
// (sampler.passedOver).
func (c *Controller) publishPrimary() {
	primary := 0
	if p, ok := c.strat.(*priority); ok && p.thr.bypass {
		primary = p.primary
	}
	if c.sampler != nil {
		c.sampler.primary.Store(int64(primary))
	}
}

// publishAddrs maps the interfaces' addresses to their indexes after every
// change of netSt (addrIndex), and gives the map to the sampler, by which
// it assigns subflows to interfaces; the early plan carries it too.
func (c *Controller) publishAddrs() {
	m := map[netip.Addr]int{}
	for idx, as := range c.netSt.Addrs {
		for _, a := range as {
			m[a.Prefix.Addr().Unmap()] = idx
		}
	}
	c.addrIndex = m
	if c.sampler != nil {
		c.sampler.addrs.Store(&m)
	}
}

// handlePM applies one path-manager event.
func (c *Controller) handlePM(ev pathmgr.Event, at time.Time) {
	c.ls.event(c.m, ev.Type).Inc()
	if cn, ok := c.conns[ev.Token]; ok {
		c.touch(cn)
	} else if ev.Type == pathmgr.EventClosed && c.resyncOutstanding() {
		c.clock++
	}
	if ev.Type == pathmgr.EventClosed && c.resyncOutstanding() {
		c.closedAt[ev.Token] = c.clock
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		// Guarded: boxing the event for the call allocates even when the
		// record is dropped.
		c.log.Debug("pm event", "event", eventLog(ev))
	}
	switch ev.Type {
	case pathmgr.EventCreated:
		cn := c.conn(ev.Token)
		cn.local, cn.remote, cn.server = ev.Local, ev.Remote, ev.ServerSide
		cn.noJoinRemote = ev.DenyJoinID0
	case pathmgr.EventEstablished:
		known := false
		if cn, ok := c.conns[ev.Token]; ok {
			known = cn.established
		}
		cn := c.conn(ev.Token)
		cn.local, cn.remote, cn.server = ev.Local, ev.Remote, ev.ServerSide
		cn.noJoinRemote = cn.noJoinRemote || ev.DenyJoinID0
		cn.established = true
		cn.estAt = at
		sf := pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}
		if cn.subOf(sf) == nil {
			c.putSub(cn, &sub{sf: sf, ifindex: c.ifindexOf(ev.Local.Addr(), ev.IfIndex), backup: ev.Backup})
		}
		c.m.Connections.Set(float64(len(c.conns)))
		c.applyEarly(cn, c.earlySent, known, at)
		// After the thread stopped, only an assumed connection (read
		// before the loop knew) still waits, for the kernel's account.
		if cn.assumed || (c.rtc != nil && !c.rtcFailed && earlyServes(ev)) {
			c.rtIntake(cn)
		}
		if c.rtLate != nil {
			c.takeLate(cn)
		}
		c.reconcileConn(cn)
	case pathmgr.EventClosed:
		c.dropConn(ev.Token)
		c.m.Connections.Set(float64(len(c.conns)))
	case pathmgr.EventSubEstablished:
		cn, ok := c.conns[ev.Token]
		if !ok {
			return
		}
		sf := pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}
		idx := c.ifindexOf(ev.Local.Addr(), ev.IfIndex)
		c.putSub(cn, &sub{sf: sf, ifindex: idx, localID: ev.LocalID, backup: ev.Backup})
		if k := (slot{idx, norm(ev.Remote)}); !cn.pending.at(k).IsZero() {
			cn.pending.del(k)
			if !cn.measured && !cn.estAt.IsZero() {
				cn.measured = true
				c.m.ReactionLatency.Observe(at.Sub(cn.estAt).Seconds())
			}
		}
		c.reconcileConn(cn)
	case pathmgr.EventSubClosed:
		cn, ok := c.conns[ev.Token]
		if !ok {
			return
		}
		sf := pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}
		idx := c.ifindexOf(ev.Local.Addr(), ev.IfIndex)
		c.dropSub(cn, sf)
		if k := (slot{idx, norm(ev.Remote)}); !cn.pending.at(k).IsZero() {
			// A subflow this controller created closed before it was
			// established: a failed join.
			cn.pending.del(k)
			cn.backoff.set(k, at.Add(retryBackoff))
			c.schedule(cn)
			why := "closed before it was established"
			if ev.HasError() && ev.Error != 0 {
				why = unix.Errno(ev.Error).Error()
			}
			c.subflowFailed(idx, cn.token, ev.Local.Addr(), ev.Remote, why, at)
		}
	case pathmgr.EventAnnounced:
		// ADD_ADDR from the peer. The event may come before the
		// connection is established; reconcileConn waits for that.
		if !ev.Remote.IsValid() {
			return
		}
		cn := c.conn(ev.Token)
		if old, ok := cn.peers.get(ev.RemoteID); ok && norm(old) != norm(ev.Remote) {
			c.peerGone(cn, ev.RemoteID, old, at)
		}
		cn.addPeer(ev.RemoteID, ev.Remote)
		for _, s := range cn.subs {
			if norm(s.sf.Remote) == norm(ev.Remote) {
				s.goneAt = time.Time{} // announced again
			}
		}
		c.reconcileConn(cn)
	case pathmgr.EventRemoved:
		cn, ok := c.conns[ev.Token]
		if !ok {
			return
		}
		if old, ok := cn.peers.get(ev.RemoteID); ok {
			cn.peers.del(ev.RemoteID)
			c.peerGone(cn, ev.RemoteID, old, at)
			c.reconcileConn(cn)
		}
	case pathmgr.EventSubPriority:
		if cn, ok := c.conns[ev.Token]; ok {
			if s := cn.subOf(pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}); s != nil {
				s.backup = ev.Backup
			}
		}
	}
}

// eventLog formats an event for the log only when a record is written, so
// the event loop does not format every event for a disabled debug level.
type eventLog pathmgr.Event

func (e eventLog) LogValue() slog.Value { return slog.StringValue(pathmgr.Event(e).String()) }

// handleNet applies an interface change: routing first, then subflows.
func (c *Controller) handleNet(ev netmon.Event) {
	c.m.NetEvents.WithLabelValues(ev.Type.String()).Inc()
	c.netSt = c.view(c.netRaw())
	c.publishAddrs()
	now := c.now()
	c.noteLinksDown(now)
	c.ifs = buildIfaces(c.pol, c.netSt, c.ifs, now)
	c.syncPathPolicy()
	idx := ev.Link.Index
	if ev.Type == netmon.AddrAdded || ev.Type == netmon.AddrRemoved {
		idx = ev.Addr.Index
	} else if ev.Type == netmon.RouteAdded || ev.Type == netmon.RouteRemoved {
		idx = ev.Route.Index
	}
	if ev.Type == netmon.Resync {
		c.ensureRouting(true)
		c.applyKernelPM()
		c.syncListeners()
		c.requestResync("netmon")
		return
	}
	if _, ok := c.ifs[idx]; !ok {
		return // announce entries name policy interfaces only (policy.Load)
	}
	c.ensureRouting(false, idx)
	c.applyKernelPM()
	c.syncListeners()
	if ev.Type == netmon.LinkUp || ev.Type == netmon.AddrAdded || ev.Type == netmon.RouteAdded {
		for _, cn := range c.conns {
			cn.backoff.deleteFunc(func(k slot, _ time.Time) bool { return k.ifindex == idx })
		}
	}
	c.reconcileAll()
}

// view is the watcher's state as the policy sees it: without link-local
// addresses when skip_link_local is set.
func (c *Controller) view(st netmon.State) netmon.State {
	if !c.pol.SkipLinkLocal {
		return st
	}
	out := st
	out.Addrs = make(map[int][]netmon.Addr, len(st.Addrs))
	for idx, as := range st.Addrs {
		var keep []netmon.Addr
		for _, a := range as {
			if !a.Prefix.Addr().IsLinkLocalUnicast() {
				keep = append(keep, a)
			}
		}
		if len(keep) > 0 {
			out.Addrs[idx] = keep
		}
	}
	return out
}

// ifindexOf finds the interface holding addr; hint (the kernel's if_idx) is
// used when no interface has it.
func (c *Controller) ifindexOf(addr netip.Addr, hint int) int {
	addr = addr.Unmap()
	for idx, as := range c.netSt.Addrs {
		for _, a := range as {
			if a.Prefix.Addr() == addr {
				return idx
			}
		}
	}
	return hint
}

func (c *Controller) conn(token uint32) *conn {
	cn, ok := c.conns[token]
	if !ok {
		cn = newConn(token)
		c.conns[token] = cn
		c.touch(cn)
	}
	return cn
}
