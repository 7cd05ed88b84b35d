package controller

import (
	"context"
	"time"

	"github.com/gigapath/gigapath/internal/reuse"
	"github.com/gigapath/gigapath/pathmgr"
)

// Resyncs and sweeps: a full reconciliation must not stall the event loop
// with tens of thousands of connections (a sock_diag dump of 50,000 takes
// a second or more). While the loop runs, a resync (lost events, a netmon
// resync, a reload, the periodic safety net) asks the inventory reader, a
// goroutine of its own, for a dump; the loop then adopts it and reconciles
// each connection in slices of at most sweepBudget, serving its other
// inputs in between. reconcileAll does the same without a dump when there
// are more than sweepAtOnce connections.
//
// A dump is a snapshot of when it was asked for: a connection that an
// event (or a command of ours) changed since then keeps the newer state,
// one closed since is not brought back, and only connections untouched
// since the dump was asked for are dropped when the dump lacks them.
const (
	sweepAtOnce = 512 // up to this many: all at once
	// sweepBudget is a slice's work. On a host whose CPUs are all busy
	// the loop's thread can lose its CPU in the middle of a slice until
	// the next scheduler tick (4 ms at HZ 250: benchmarks.md, "what a
	// long slice is made of"): a slice of 1 ms that loses its CPU for a
	// tick takes about 5 ms, one of 2 ms took 6.
	sweepBudget = time.Millisecond
	sweepCheck  = 32 // connections between two looks at the clock
)

// dumpReq asks the inventory reader for a dump.
type dumpReq struct {
	reason string
	asked  time.Time // real clock (gigapath_reconcile_duration_seconds)
	clock  uint64    // the controller's change clock when asked
}

// dumpResult is a dump, read off the loop.
type dumpResult struct {
	dumpReq
	list   []pathmgr.Connection
	listen map[uint16]bool // listenPorts(list)
	err    error
	read   time.Time // when it was read, real clock
}

// sweep is a walk over every connection in slices: the adoption of a
// dump (res != nil) and then the removal of what it lacks, or a plain
// reconciliation of the connections there were at its first slice.
type sweep struct {
	res *dumpResult
	i   int
	// gen marks the connections the dump holds (conn.swept), adopted or
	// kept: a mark in the connection, not a set of 50,000 tokens built on
	// the loop for every resync.
	gen uint32
	// tokens are the connections to visit (reconcile, removal), listed
	// by the slice that starts that phase (c.tokenBuf, reused).
	tokens []uint32
	listed bool
	drop   bool // res: the removal phase
	// busy and slices are the loop time the sweep took and in how many
	// slices (the resync's debug line: the rest of its time is the dump
	// and the loop's other inputs).
	busy    time.Duration
	slices  int
	longest time.Duration // the longest slice
}

// inventoryReader serves dump requests until ctx ends.
// It offers each dump to smp (nil: none), the health sampler. It runs on a
// thread of its own, below the loop's priority (background).
func (c *Controller) inventoryReader(ctx context.Context, req <-chan dumpReq, out chan<- dumpResult, smp *sampler) error {
	defer background()()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-req:
			list, err := c.inv.Connections(pathmgr.ListOptions{ListenersToo: true})
			res := dumpResult{dumpReq: r, list: list, err: err, read: time.Now()}
			if err == nil {
				res.listen = listenPorts(list)
				if smp != nil {
					// Read only, by both the loop and the sampler.
					smp.share(list, c.now(), res.read)
				}
			}
			select {
			case out <- res:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// resync replaces the connection state with the kernel's inventory and
// reconciles every connection, at once (the start, and tests).
func (c *Controller) resync(reason string) {
	start := time.Now()
	c.m.Resyncs.WithLabelValues(reason).Inc()
	if c.inv == nil {
		c.reconcileEvery()
		return
	}
	list, err := c.inv.Connections(pathmgr.ListOptions{ListenersToo: true})
	if err != nil {
		c.log.Warn("inventory", "reason", reason, "err", err)
		c.reconcileEvery()
		return
	}
	c.adopt(list, c.now())
	c.reconcileEvery()
	c.m.ReconcileSeconds.Observe(time.Since(start).Seconds())
}

// requestResync resyncs: through the inventory reader and a sweep while
// the loop runs, at once otherwise. A request while a dump is being read
// is served by another dump after it.
func (c *Controller) requestResync(reason string) {
	if c.dumpReq == nil {
		c.resync(reason)
		return
	}
	c.m.Resyncs.WithLabelValues(reason).Inc()
	if c.dumpBusy {
		c.dumpAgain = reason
		return
	}
	c.askDump(reason)
}

// askDump sends the inventory reader a request (the channel is buffered
// for one: there is never more than one outstanding).
func (c *Controller) askDump(reason string) {
	c.dumpBusy = true
	c.dumpReq <- dumpReq{reason: reason, asked: time.Now(), clock: c.clock}
}

// dumped takes a dump the inventory reader read: it starts the sweep that
// adopts it.
func (c *Controller) dumped(r dumpResult) {
	c.dumpBusy = false
	if r.err != nil {
		c.log.Warn("inventory", "reason", r.reason, "err", r.err)
		c.reconcileAll()
	} else {
		c.startSweep(&r)
	}
	if reason := c.dumpAgain; reason != "" {
		c.dumpAgain = ""
		c.askDump(reason)
	}
}

// touch records that cn changed now (an event, a command of ours), so
// that a dump asked for earlier does not overwrite it.
func (c *Controller) touch(cn *conn) {
	c.clock++
	cn.touched = c.clock
}

// resyncOutstanding reports whether a dump is being read or adopted.
func (c *Controller) resyncOutstanding() bool {
	return c.dumpBusy || (c.sw != nil && c.sw.res != nil)
}

// startSweep starts a sweep: the adoption of res, or (nil) a
// reconciliation of every connection. A reconciliation asked for during
// any sweep runs after it (never instead of an adoption: that would lose
// the dump, its drop phase and its bookkeeping); a newer dump replaces a
// sweep in progress.
func (c *Controller) startSweep(res *dumpResult) {
	if c.sw != nil && (res == nil || c.sw.res == nil) {
		// A reconciliation asked for, or one in progress that the new
		// adoption replaces: everything is reconciled again after it.
		// (A newer dump replacing an adoption covers what it had left.)
		c.swAgain = true
		if res == nil {
			return
		}
	}
	sw := &sweep{res: res}
	if res != nil {
		c.sweepGen++
		sw.gen = c.sweepGen
	}
	c.sw = sw
	c.tellSampler()
}

// tellSampler tells the health sampler whether a sweep is in progress: it
// holds its reads until the sweep ends, so that the sweep's slices keep
// a CPU (sampler.holdForSweep).
func (c *Controller) tellSampler() {
	if c.sampler != nil {
		c.sampler.sweeping.Store(c.sw != nil)
	}
}

// sweepReady is ready while a sweep has work left (for the loop's select).
func (c *Controller) sweepReady() <-chan struct{} {
	if c.sw == nil {
		return nil
	}
	return closedChan
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// sweepStep does the next slice of the sweep, for at most sweepBudget,
// and ends the sweep after its last one.
func (c *Controller) sweepStep() {
	sw := c.sw
	t0 := time.Now()
	done := c.sweepSlice(sw, t0.Add(sweepBudget))
	d := time.Since(t0)
	sw.busy += d
	sw.longest = max(sw.longest, d)
	sw.slices++
	if done {
		c.sweepDone()
	}
}

// sent counts a path-manager command the loop sends, in its metrics and
// for the sweep: a command is a system call in which the kernel does a
// connection's work (an ADD_ADDR or MP_PRIO sent, a subflow closed), a
// hundred times what a connection's bookkeeping costs.
func (c *Controller) sent(cmd string) {
	c.cmds++
	c.m.Commands.WithLabelValues(cmd).Inc()
}

// sweepSlice does the sweep's work until deadline; it reports whether
// the sweep is complete. It looks at the clock every sweepCheck
// connections, and after every connection that sent a command: 32
// connections that each sent one made a slice many times its budget.
func (c *Controller) sweepSlice(sw *sweep, deadline time.Time) bool {
	n, cmds := 0, c.cmds
	more := func() bool {
		n++
		if c.cmds != cmds {
			cmds = c.cmds
			return time.Now().Before(deadline)
		}
		return n%sweepCheck != 0 || time.Now().Before(deadline)
	}
	if sw.res != nil && !sw.drop {
		for sw.i < len(sw.res.list) {
			k := &sw.res.list[sw.i]
			sw.i++
			if k.Token == 0 || k.State.String() != "established" {
				continue
			}
			cn, known := c.conns[k.Token]
			switch {
			case known && cn.touched > sw.res.clock:
				// Changed since the dump was asked for: newer than it.
			case !known && c.closedAt[k.Token] > sw.res.clock:
				// Closed since.
			default:
				c.adoptOne(k, sw.res.listen[k.Local.Port()])
				cn = c.conns[k.Token]
				c.reconcileConn(cn)
			}
			if cn != nil {
				cn.swept = sw.gen
			}
			if !more() {
				return false
			}
		}
		// The removal phase starts with a slice of its own: listing the
		// connections is O(connections) (~0.5 ms at 50,000).
		sw.drop, sw.i = true, 0
		return false
	}
	if !sw.listed {
		sw.tokens, sw.listed = c.connTokens(), true
	}
	for sw.i < len(sw.tokens) {
		tok := sw.tokens[sw.i]
		sw.i++
		if cn, ok := c.conns[tok]; ok {
			switch {
			case !sw.drop:
				c.reconcileConn(cn)
			case cn.swept != sw.gen && cn.established && cn.touched <= sw.res.clock:
				// Not in the dump, and nothing happened to it since it
				// was asked for: gone.
				c.dropConn(tok)
			}
		}
		if !more() {
			return false
		}
	}
	return true
}

// connTokens lists the tokens of every connection into c.tokenBuf, which
// it reuses (reuse.Keep): one sweep runs at a time, and the list is the
// sweep's until it ends or another replaces it.
func (c *Controller) connTokens() []uint32 {
	buf := c.tokenBuf[:0]
	for tok := range c.conns {
		buf = append(buf, tok)
	}
	c.tokenBuf = reuse.Keep(buf)
	return buf
}

// sweepDone ends the sweep.
func (c *Controller) sweepDone() {
	sw := c.sw
	c.sw = nil
	c.globalDue = c.nextGlobalDue(c.now())
	if sw.res != nil {
		clear(c.closedAt)
		c.m.Connections.Set(float64(len(c.conns)))
		if c.ids.changed {
			c.saveIDs()
		}
		c.m.ReconcileSeconds.Observe(time.Since(sw.res.asked).Seconds())
		c.log.Debug("resync done", "reason", sw.res.reason, "connections", len(c.conns),
			"dump", sw.res.read.Sub(sw.res.asked), "sweep_busy", sw.busy, "slices", sw.slices, "longest_slice", sw.longest,
			"total", time.Since(sw.res.asked))
	}
	if c.swAgain {
		c.swAgain = false
		c.startSweep(nil)
	}
	c.tellSampler()
}
