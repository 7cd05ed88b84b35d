package controller

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// The decision core for userspace-PM connections: per connection, what
// the kernel has (the subflows by interface) against what the policy wants
// (plan: the steering strategy's decision, each interface's destinations),
// and the commands that close the gap (converge).

// available lists the policy interfaces that can carry subflows, by index.
func (c *Controller) available() []*iface { return c.availableInto(nil) }

// availableInto is available written over buf (its capacity reused).
func (c *Controller) availableInto(buf []*iface) []*iface {
	out := buf[:0]
	for _, i := range c.ifs {
		if i.available() {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b *iface) int { return a.index - b.index })
	return out
}

// reconcileAll reconciles every connection: at once when there are few,
// else as a sweep in slices the event loop serves between its other
// inputs (resync.go), so that no input waits for a walk over tens of
// thousands of connections.
func (c *Controller) reconcileAll() {
	if len(c.conns) > sweepAtOnce && c.sweeps {
		c.startSweep(nil)
		return
	}
	c.reconcileEvery()
}

// reconcileEvery reconciles every connection now.
func (c *Controller) reconcileEvery() {
	for _, cn := range c.conns {
		c.reconcileConn(cn)
	}
	c.globalDue = c.nextGlobalDue(c.now())
}

// reconcileConn makes one connection's subflows what the policy wants,
// and arms its timer for what it then waits for (timers.go).
func (c *Controller) reconcileConn(cn *conn) {
	defer c.schedule(cn)
	if !cn.established {
		return
	}
	p := c.pol
	if p.PathManager != policy.PMUserspace {
		return
	}
	if p.Side == policy.SideServer {
		if cn.server {
			c.syncAnnounce(cn)
		}
		return
	}
	if cn.server {
		return // accepted here: the client side of it is the peer's business
	}
	now := c.now()
	rs := &c.scratch
	rs.avail = c.availableInto(rs.avail)
	// The subflows by interface, each group a piece of one array in
	// cn.subs order.
	rs.subs = append(rs.subs[:0], cn.subs...)
	slices.SortStableFunc(rs.subs, func(a, b *sub) int { return a.ifindex - b.ifindex })
	have := map[int][]*sub{}
	for start := 0; start < len(rs.subs); {
		end := start + 1
		for end < len(rs.subs) && rs.subs[end].ifindex == rs.subs[start].ifindex {
			end++
		}
		have[rs.subs[start].ifindex] = rs.subs[start:end:end]
		start = end
	}
	want, keepers := c.plan(cn, rs.avail, have, now)
	c.converge(cn, rs.avail, have, want, keepers, now)
	clear(rs.subs) // no hold on subflows that close
	clear(rs.cur[:cap(rs.cur)])
}

// reconcileScratch is reconcileConn's working memory, kept from call to
// call so that serving a connection does not allocate it anew
// (BenchmarkConnectionEvents). The loop reconciles one connection at a
// time, and nothing built in it outlives the call.
type reconcileScratch struct {
	avail []*iface
	subs  []*sub
	cur   []*sub // converge's subflows of one slot
	dests []netip.AddrPort
	wants []want
	plans []ifPlan
}

// ifPlan is what one interface should have for one connection: the
// strategy's decision and, when it carries subflows, the destinations it
// keeps one each to.
type ifPlan struct {
	want
	dests []netip.AddrPort
}

// plan is the want side of a connection: for each available interface
// (in avail's order), the strategy's decision and the destinations
// (targets) of those that carry subflows. keepers counts the subflows the
// plan keeps: while there are none, converge closes nothing, so a
// connection never loses its last subflow.
func (c *Controller) plan(cn *conn, avail []*iface, have map[int][]*sub, now time.Time) ([]ifPlan, int) {
	rs := &c.scratch
	rs.wants = c.strat.decide(rs.wants, avail, now)
	decided := rs.wants
	rs.dests = cn.dests(rs.dests, c.pol.PeerAddresses == policy.PeerUse)
	dests := rs.dests
	// Each plan's destinations are written over the last call's.
	rs.plans = slices.Grow(rs.plans[:0], len(avail))[:len(avail)]
	out := rs.plans
	keepers := 0
	for n, i := range avail {
		w := decided[n]
		pl := ifPlan{want: w, dests: out[n].dests[:0]}
		if w.open {
			held := func(d netip.AddrPort) bool {
				for _, s := range have[i.index] {
					if s.goneAt.IsZero() && norm(s.sf.Remote) == d {
						return true
					}
				}
				t, ok := cn.pending.get(slot{i.index, d})
				return ok && now.Sub(t) < pendingTimeout
			}
			// Backing off after a failure, or the remote address of a
			// connection whose peer set the C flag: never joined, but
			// an interface that holds its subflow (the initial one)
			// keeps it.
			failing := func(d netip.AddrPort) bool {
				if cn.noJoinRemote && d == norm(cn.remote) {
					return true
				}
				t, ok := cn.backoff.get(slot{i.index, d})
				return ok && now.Before(t)
			}
			pl.dests = targets(pl.dests, i, dests, held, failing)
			for _, s := range have[i.index] {
				if s.goneAt.IsZero() && slices.Contains(pl.dests, norm(s.sf.Remote)) {
					keepers++
				}
			}
		}
		out[n] = pl
	}
	return out, keepers
}

// converge sends the commands that turn what the connection has into
// what the plan wants: creates for missing subflows, MP_PRIO for wrong
// backup flags, destroys for subflows no interface should keep (never the
// last one while the plan keeps none).
func (c *Controller) converge(cn *conn, avail []*iface, have map[int][]*sub, want []ifPlan, keepers int, now time.Time) {
	for n, i := range avail {
		pl := want[n]
		subs := have[i.index]
		if !pl.open {
			for _, s := range subs {
				if keepers == 0 {
					break // never close the last subflow
				}
				c.destroy(cn, s, "steering")
			}
			continue
		}
		for _, dst := range pl.dests {
			cur := c.scratch.cur[:0]
			for _, s := range subs {
				if norm(s.sf.Remote) == dst {
					cur = append(cur, s)
				}
			}
			c.scratch.cur = cur
			if len(cur) == 0 {
				c.create(cn, i, dst, pl.backup, now)
				continue
			}
			// Two subflows in one slot (a create that outlived its pending
			// window and then succeeded too): keep one that is not being
			// withdrawn, then the lowest local port.
			slices.SortFunc(cur, func(a, b *sub) int {
				if ga, gb := !a.goneAt.IsZero(), !b.goneAt.IsZero(); ga != gb {
					if ga {
						return 1
					}
					return -1
				}
				return int(a.sf.Local.Port()) - int(b.sf.Local.Port())
			})
			for _, s := range cur[1:] {
				c.destroy(cn, s, "duplicate")
			}
			c.setBackup(cn, i, cur[0], pl.backup)
		}
		// Subflows to destinations this interface no longer keeps: a
		// withdrawn peer address (after the kernel's grace), peer
		// addresses after peer_addresses became ignore, or beyond a
		// lowered max_subflows.
		for _, s := range subs {
			if slices.Contains(pl.dests, norm(s.sf.Remote)) && s.goneAt.IsZero() {
				continue
			}
			if !s.goneAt.IsZero() && now.Sub(s.goneAt) < goneGrace {
				continue // the kernel is closing it
			}
			if keepers == 0 {
				break
			}
			c.destroy(cn, s, "destination not wanted")
		}
	}
	// Subflows on policy interfaces that are gone or down.
	for idx, ss := range have {
		i, isPolicy := c.ifs[idx]
		if isPolicy && i.available() {
			continue
		}
		if !isPolicy {
			if _, exists := c.netSt.Links[idx]; exists {
				continue // not ours to manage
			}
		}
		for _, s := range ss {
			if keepers == 0 {
				break
			}
			c.destroy(cn, s, "interface gone")
		}
	}
}

// setBackup sends MP_PRIO when a subflow's backup flag is not what
// steering wants.
func (c *Controller) setBackup(cn *conn, i *iface, s *sub, backup bool) {
	if s.backup == backup {
		return
	}
	c.sent("subflow_set_backup")
	c.touch(cn)
	if err := c.pm.SetSubflowBackup(cn.token, s.sf, backup); err != nil {
		c.m.CommandErrors.WithLabelValues("subflow_set_backup").Inc()
		c.log.Warn("subflow backup", "token", cn.token, "interface", i.name, "remote", s.sf.Remote, "backup", backup, "err", err)
		return
	}
	s.backup = backup
	c.m.SteeringSwitches.Inc()
}

// create asks for a subflow from interface i to dst unless one is pending
// or the slot is backing off after a failure.
func (c *Controller) create(cn *conn, i *iface, dst netip.AddrPort, backup bool, now time.Time) {
	k := slot{i.index, dst}
	if t, ok := cn.pending.get(k); ok && now.Sub(t) < pendingTimeout {
		return
	}
	if t, ok := cn.backoff.get(k); ok && now.Before(t) {
		return
	}
	addr, ok := i.addrFor(dst.Addr())
	if !ok {
		return
	}
	id, ok := c.localID(cn, addr)
	if !ok {
		cn.backoff.set(k, now.Add(retryBackoff))
		c.log.Warn("subflow create: no free address id", "token", cn.token, "interface", i.name, "local", addr)
		return
	}
	ep := pathmgr.Endpoint{ID: id, Addr: addr, IfIndex: i.index}
	if backup {
		ep.Flags = pathmgr.FlagBackup
	}
	c.ls.creates.Inc()
	// For the sweep's clock a create counts as a command even when the
	// pool queues it: when the queue is full, or there is no pool, it is a
	// system call on this thread in which the kernel connects the subflow,
	// and telling the two apart is not worth it (a queued one costs about
	// what a look at the clock does).
	c.cmds++
	if err := c.pm.CreateSubflow(cn.token, ep, dst); err != nil {
		c.m.CommandErrors.WithLabelValues("subflow_create").Inc()
		cn.backoff.set(k, now.Add(retryBackoff))
		c.subflowFailed(i.index, cn.token, addr, dst, err.Error(), now)
		return
	}
	cn.pending.set(k, now)
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("subflow create", "token", cn.token, "interface", i.name, "local", addr, "id", id, "remote", dst, "backup", backup)
	}
}

// localID is the address id a subflow of cn from addr uses: the one the
// connection already knows addr by (one of its subflows has it), else the
// allocator's, unless the connection knows that id with another address
// (its subflows from before a restart that lost the record): then the
// lowest id free in both, for this connection only.
func (c *Controller) localID(cn *conn, addr netip.Addr) (uint8, bool) {
	addr = addr.Unmap()
	for _, s := range cn.subs {
		if s.localID != 0 && s.sf.Local.Addr().Unmap() == addr {
			return s.localID, true
		}
	}
	id, ok := c.ids.get(netip.AddrPortFrom(addr, 0), c.addrLive)
	c.saveIDs()
	if !ok || !idTakenIn(cn, id, addr) {
		return id, ok
	}
	lo, hi := idRange(addr.Is6())
	for x := lo; x <= hi; x++ {
		if !c.ids.foreign[x] && !c.ids.addr[x].IsValid() && !idTakenIn(cn, uint8(x), addr) {
			return uint8(x), true
		}
	}
	return 0, false
}

// idTakenIn reports whether connection cn knows id with an address other
// than addr.
func idTakenIn(cn *conn, id uint8, addr netip.Addr) bool {
	for _, s := range cn.subs {
		if s.localID == id && s.sf.Local.Addr().Unmap() != addr {
			return true
		}
	}
	return false
}

// addrLive reports whether an interface has addr now.
func (c *Controller) addrLive(addr netip.Addr) bool {
	for _, as := range c.netSt.Addrs {
		for _, a := range as {
			if a.Prefix.Addr() == addr {
				return true
			}
		}
	}
	return false
}

// createFailed handles a SUBFLOW_CREATE the kernel refused after the event
// loop went on (asyncPM): that (interface, destination) slot is retried
// after the back-off.
func (c *Controller) createFailed(f createFailure) {
	c.m.CommandErrors.WithLabelValues("subflow_create").Inc()
	cn, ok := c.conns[f.token]
	if !ok {
		c.log.Debug("subflow create for a closed connection", "token", f.token, "local", f.local.Addr, "remote", f.remote, "err", f.err)
		return
	}
	now := c.now()
	k := slot{f.local.IfIndex, norm(f.remote)}
	cn.pending.del(k)
	cn.backoff.set(k, now.Add(retryBackoff))
	c.schedule(cn)
	c.subflowFailed(f.local.IfIndex, f.token, f.local.Addr, f.remote, f.err.Error(), now)
}

func (c *Controller) destroy(cn *conn, s *sub, why string) {
	if s.sf.Local.Port() == 0 || s.sf.Remote.Port() == 0 {
		return
	}
	c.sent("subflow_destroy")
	c.touch(cn)
	if err := c.pm.DestroySubflow(cn.token, s.sf); err != nil {
		c.m.CommandErrors.WithLabelValues("subflow_destroy").Inc()
		lvl := slog.LevelWarn
		if !s.goneAt.IsZero() {
			lvl = slog.LevelDebug // the kernel closed it on the peer's RM_ADDR
		}
		c.log.Log(context.Background(), lvl, "subflow destroy", "token", cn.token, "local", s.sf.Local, "remote", s.sf.Remote, "why", why, "err", err)
	}
	c.dropSub(cn, s.sf)
	c.log.Debug("subflow destroyed", "token", cn.token, "local", s.sf.Local, "why", why)
}

// peerGone forgets the retries to a peer address withdrawn (or replaced)
// under id and marks its subflows: the kernel closes them on RM_ADDR, so
// reconcileConn leaves them to it for goneGrace. An address that is still a
// destination — the connection's own remote address, or announced again
// under another id — is not gone.
func (c *Controller) peerGone(cn *conn, id uint8, addr netip.AddrPort, at time.Time) {
	addr = norm(addr)
	if addr == norm(cn.remote) {
		return
	}
	for _, p := range cn.peers {
		if p.key != id && norm(p.val) == addr {
			return
		}
	}
	toAddr := func(k slot, _ time.Time) bool { return k.dst == addr }
	cn.pending.deleteFunc(toAddr)
	cn.backoff.deleteFunc(toAddr)
	for _, s := range cn.subs {
		if norm(s.sf.Remote) == addr {
			s.goneAt = at
		}
	}
}

// adopt makes the connection state the inventory's. The local address ids
// of the subflows it finds are the allocator's from then on (a restart
// without the record keeps them).
func (c *Controller) adopt(list []pathmgr.Connection, now time.Time) {
	listen := listenPorts(list)
	seen := map[uint32]bool{}
	for i := range list {
		k := &list[i]
		if k.Token == 0 || k.State.String() != "established" {
			continue
		}
		seen[k.Token] = true
		c.adoptOne(k, listen[k.Local.Port()])
	}
	for tok, cn := range c.conns {
		// Connections created but not yet established are kept: their
		// ESTABLISHED event is still to come.
		if !seen[tok] && cn.established {
			c.dropConn(tok)
		}
	}
	c.m.Connections.Set(float64(len(c.conns)))
	if c.ids.changed {
		c.saveIDs()
	}
}

// listenPorts are the ports of the inventory's MPTCP listeners: a
// connection on one of them was accepted here (server side).
func listenPorts(list []pathmgr.Connection) map[uint16]bool {
	listen := map[uint16]bool{}
	for _, k := range list {
		if k.State.String() == "listen" {
			listen[k.Local.Port()] = true
		}
	}
	return listen
}

// adoptOne makes one established connection of the inventory (k) the
// controller's view of it; server: it was accepted here.
func (c *Controller) adoptOne(k *pathmgr.Connection, server bool) {
	cn, known := c.conns[k.Token]
	if !known {
		cn = newConn(k.Token)
		cn.server = server
		c.conns[k.Token] = cn
		c.inheritPeers(cn)
		if cn.server && !c.inheritAnnounced(cn) {
			c.adoptAnnounced(cn)
		}
	}
	cn.local, cn.remote, cn.established = k.Local, k.Remote, true
	// The same subflows as known (a periodic resync, mostly): updated in
	// place, without a new map and new subflow records.
	old := cn.subs
	same := known && len(old) == len(k.Subflows)
	for i := 0; same && i < len(k.Subflows); i++ {
		s := &k.Subflows[i]
		o := subIn(old, s.Subflow())
		same = o != nil && o.ifindex == c.ifindexOf(s.Local.Addr(), s.IfIndex)
	}
	if !same {
		for _, o := range old {
			c.uncount(o)
		}
		cn.subs = make([]*sub, 0, len(k.Subflows))
	}
	for _, s := range k.Subflows {
		sf := s.Subflow()
		idx := c.ifindexOf(s.Local.Addr(), s.IfIndex)
		ns := subIn(old, sf)
		if same {
			ns.localID, ns.backup, ns.rtt = s.LocalID, s.Backup, s.RTT
		} else {
			o := ns
			ns = &sub{sf: sf, ifindex: idx, localID: s.LocalID, backup: s.Backup, rtt: s.RTT}
			if o != nil {
				ns.goneAt = o.goneAt
			}
			c.putSub(cn, ns)
		}
		if s.LocalID != 0 && !known {
			c.ids.adopt(netip.AddrPortFrom(s.Local.Addr(), 0), s.LocalID)
		}
		cn.pending.del(slot{idx, norm(s.Remote)})
		// The inventory has no list of the peer's announced
		// addresses; a subflow to one (remote id != 0, not the
		// connection's remote) shows it. A subflow the kernel is still
		// closing after the peer's RM_ADDR (goneAt set) does not bring
		// its address back.
		if s.RemoteID != 0 && norm(s.Remote) != norm(k.Remote) && ns.goneAt.IsZero() {
			if _, ok := cn.peers.get(s.RemoteID); !ok {
				cn.addPeer(s.RemoteID, s.Remote)
			}
		}
	}
}

// ifaceLabels are the interface and role labels of the metrics per
// interface for link idx: a policy interface's name and role, another
// link's name and "none", "other" and "none" for a link gone.
func (c *Controller) ifaceLabels(idx int) (name, role string) {
	if i, ok := c.ifs[idx]; ok {
		return i.name, string(i.pol.Role)
	}
	if l, ok := c.netSt.Links[idx]; ok {
		return l.Name, "none"
	}
	return "other", "none"
}

func (c *Controller) refreshGauges() {
	c.refreshInterfaceGauges()
	c.m.Subflows.Reset()
	n := 0
	for idx, k := range c.nsubs {
		name, role := c.ifaceLabels(idx)
		c.m.Subflows.WithLabelValues(name, role).Add(float64(k))
		n += k
	}
	if c.sampler != nil {
		c.sampler.known.Store(int64(n))
	}
}

// The subflow gauges come from counts per interface index that change
// with the state (O(1) per change, not a walk over every connection per
// tick): change cn.subs only with putSub and dropSub, and drop a
// connection with dropConn.

// putSub adds s to cn (replacing the subflow with the same ends).
func (c *Controller) putSub(cn *conn, s *sub) {
	if i := subIndex(cn.subs, s.sf); i >= 0 {
		c.uncount(cn.subs[i])
		cn.subs[i] = s
	} else {
		if cn.subs == nil {
			cn.subs = make([]*sub, 0, 2) // most get a second subflow
		}
		cn.subs = append(cn.subs, s)
	}
	c.nsubs[s.ifindex]++
}

// dropSub removes the subflow sf from cn.
func (c *Controller) dropSub(cn *conn, sf pathmgr.Subflow) {
	if i := subIndex(cn.subs, sf); i >= 0 {
		c.uncount(cn.subs[i])
		cn.subs = slices.Delete(cn.subs, i, i+1)
	}
}

// dropConn forgets the connection tok and its subflows.
func (c *Controller) dropConn(tok uint32) {
	if cn, ok := c.conns[tok]; ok {
		for _, s := range cn.subs {
			c.uncount(s)
		}
		delete(c.conns, tok)
	}
	delete(c.rtAwait, tok) // no account of the real-time thread's is awaited
	delete(c.rtSettled, tok)
}

func (c *Controller) uncount(s *sub) {
	if c.nsubs[s.ifindex]--; c.nsubs[s.ifindex] <= 0 {
		delete(c.nsubs, s.ifindex)
	}
}
