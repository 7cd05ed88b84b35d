package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/routing"
	"github.com/gigapath/gigapath/internal/rtcreate"
	"github.com/gigapath/gigapath/internal/status"
	"github.com/gigapath/gigapath/pathmgr"
)

// stopMode is how Run leaves the kernel state it set up.
type stopMode int

const (
	// modeStop undoes it: the rules and routes go, net.mptcp.path_manager
	// is restored, the BPF programs are detached.
	modeStop stopMode = iota
	// modeUpgrade leaves all of it to the binary Run execs next, which
	// adopts it (Upgrade).
	modeUpgrade
)

func (m stopMode) String() string {
	if m == modeUpgrade {
		return "upgrade"
	}
	return "stop"
}

// undoStack is what Run set up, each with how to take it down; shutdown
// runs them last first.
type undoStack []func(stopMode)

func (s *undoStack) push(f func(stopMode)) { *s = append(*s, f) }

// shutdown takes everything down in reverse order of setting it up.
func (s undoStack) shutdown(m stopMode) {
	for i := len(s) - 1; i >= 0; i-- {
		s[i](m)
	}
}

// errUpgrading ends the errgroup when the loop accepted an upgrade.
var errUpgrading = errors.New("upgrading in place")

// inputs are what the loop selects on besides its own tickers.
type inputs struct {
	pm       <-chan pmBatch
	dumps    <-chan dumpResult
	net      <-chan netmon.Event
	failures <-chan createFailure
	rt       <-chan []rtcreate.Report // the real-time create thread's (rtcreates.go)
	health   <-chan healthBatch
	notify   *notifier
}

type pmBatch struct {
	events []pathmgr.Event
	early  []earlyCreate // the creates the reader sent for them (early.go)
	lost   bool
	at     time.Time // when it was read, on the decisions' clock
	read   time.Time // the same on the real clock (loop metrics)
}

// Run starts the daemon and blocks until ctx ends (nil) or a subsystem
// fails (its error). Every goroutine it starts runs under one errgroup and
// is joined before Run returns; then shutdown undoes what Run set up in the
// kernel (the rules and routes it made, net.mptcp.path_manager, the BPF
// programs). After an accepted Upgrade it leaves all of that in place and
// execs the new binary in this process instead: Run returns only when that
// fails.
func (c *Controller) Run(ctx context.Context) (err error) {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("controller: Run may be called once")
	}
	var undo undoStack
	mode := modeStop
	var up *upgrade
	defer func() {
		c.log.Debug("shutting down", "mode", mode)
		c.upgrading = up
		undo.shutdown(mode)
		c.releaseHeld()
		if up == nil {
			return
		}
		if mode != modeUpgrade {
			up.abandon()
			return
		}
		// A stop asked for after the loop handed over (ctx is done) goes
		// to the new binary, which adopts, then stops and cleans up.
		err = up.exec(ctx.Err() != nil)
	}()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	in, err := c.open(gctx, g, &undo)
	if err != nil {
		close(c.loopDone)
		cancel()
		werr := g.Wait()
		switch {
		case ctx.Err() != nil:
			return nil // stopped while starting
		case errors.Is(err, context.Canceled) && werr != nil:
			return werr // a subsystem failed while the start waited for it
		case werr != nil:
			c.log.Warn("while giving up the start", "err", werr)
		}
		return err
	}
	g.Go(func() error {
		defer close(c.loopDone) // Upgrade must not wait for a loop that is gone
		u, err := c.loop(gctx, in)
		if u != nil {
			up = u
			return errUpgrading
		}
		return err
	})
	err = g.Wait()
	if errors.Is(err, errUpgrading) {
		mode, err = modeUpgrade, nil
	}
	return err
}

// open sets up everything the loop needs, in order, pushing how to take
// each down onto undo, and starts the goroutines that feed the loop in g.
// It ends with the first reconciliation: the controller is ready.
func (c *Controller) open(ctx context.Context, g *errgroup.Group, undo *undoStack) (inputs, error) {
	var in inputs
	p := c.pol
	h, err := parseHandoff(c.cfg.Handoff)
	if err != nil {
		// Starting as after a crash loses only what the handoff adds.
		c.log.Warn("ignoring the handoff", "err", err)
	}
	pmWas := ""
	if h != nil {
		pmWas, c.peersIn, c.joinsWas = h.PathManagerWas, h.connsByToken(), h.JoinsWas
		c.telemetryLayoutIn = h.TelemetryLayout
	}
	c.loadIDs(h)

	restorePM, pmWas, err := setPathManager(c.cfg.NetNS, string(p.PathManager), pmWas)
	if err != nil {
		return in, err
	}
	c.pmWas = pmWas
	undo.push(func(m stopMode) {
		if restorePM == nil || m == modeUpgrade {
			return
		}
		if err := restorePM(); err != nil {
			c.log.Warn("restore net.mptcp.path_manager", "err", err)
		}
	})
	if err := c.applyInitialJoins(); err != nil {
		return in, err
	}
	undo.push(func(m stopMode) {
		if m != modeUpgrade {
			c.restoreInitialJoins()
		}
	})
	if err := c.applyScheduler(p.Scheduler); err != nil {
		return in, err
	}

	pmcfg := &pathmgr.Config{NetNS: c.cfg.NetNS}
	client, err := pathmgr.Dial(pmcfg)
	if err != nil {
		return in, fmt.Errorf("path manager: %w", err)
	}
	undo.push(func(stopMode) { client.Close() })
	if c.kpm == nil {
		c.kpm = client
	}
	var pool *asyncPM
	if c.pm == nil {
		pool, err = newAsyncPM(client, createWorkers, func() (PM, func() error, error) {
			cl, err := pathmgr.Dial(pmcfg)
			if err != nil {
				return nil, nil, fmt.Errorf("path manager: %w", err)
			}
			return cl, cl.Close, nil
		}, c.m.CreateSeconds.WithLabelValues("queue"), c.m.CreateSeconds.WithLabelValues("request"))
		if err != nil {
			return in, err
		}
		undo.push(func(stopMode) { pool.Close() })
		c.pm = pool
		in.failures = pool.Failures()
	}
	inv, err := pathmgr.OpenInventory(pmcfg)
	if err != nil {
		return in, fmt.Errorf("inventory: %w", err)
	}
	undo.push(func(stopMode) { inv.Close() })
	if c.inv == nil {
		c.inv = inv
	}
	// Resyncs while the loop runs read the inventory off it and adopt it
	// in slices (resync.go); the start's, below, is done at once.
	c.dumpReq = make(chan dumpReq, 1)
	dumps := make(chan dumpResult)
	in.dumps = dumps
	c.sweeps = true
	// The health sampler (started below) may take the reader's dumps.
	c.sampler = newSampler(c.inv, c.now, func(src string, d time.Duration) {
		c.m.HealthSampleSeconds.WithLabelValues(src).Observe(d.Seconds())
	})
	c.loadFollowed()
	smp := c.sampler
	g.Go(func() error { return c.inventoryReader(ctx, c.dumpReq, dumps, smp) })

	if c.rtc == nil {
		// The thread's sockets are its own: it reads ESTABLISHED itself.
		// Before the reader's, so that the reader assumes no connection
		// whose event the thread never had (its account would never come).
		th, err := c.startCreates(p, rtcreate.Supported)
		if err != nil {
			return in, err
		}
		if th != nil {
			undo.push(func(stopMode) { th.Close() })
			c.rtc = th
		}
	}
	// Events first, so nothing between the inventory read and the loop is
	// missed. With the in-kernel PM (path_manager needs a restart: fixed
	// for this process) or the create thread, paced: a new connection's
	// creates do not wait for the reader.
	var el *pathmgr.EventListener
	if p.PathManager == policy.PMKernel || c.rtc != nil {
		el, err = pathmgr.ListenEventsPaced(pmcfg, eventPace)
	} else {
		el, err = pathmgr.ListenEvents(pmcfg)
	}
	if err != nil {
		return in, fmt.Errorf("path-manager events: %w", err)
	}
	undo.push(func(stopMode) { el.Close() })
	// What the decision core reads; created (a connection is served from
	// its ESTABLISHED) and listener events would only wake the reader.
	if err := el.Only(pathmgr.EventEstablished, pathmgr.EventClosed, pathmgr.EventAnnounced, pathmgr.EventRemoved,
		pathmgr.EventSubEstablished, pathmgr.EventSubClosed, pathmgr.EventSubPriority); err != nil {
		c.log.Debug("every path-manager event is read", "err", err)
	}
	if c.rtc != nil {
		rtCh := make(chan []rtcreate.Report, 64)
		in.rt = rtCh
		rtc := c.rtc
		c.rtFlushed = make(chan struct{}, 1)
		flushed := c.rtFlushed
		g.Go(func() error { return readRT(ctx, rtc, rtCh, flushed) })
	} else if p.PathManager == policy.PMUserspace && p.Side != policy.SideServer {
		// The reader's own socket for a new connection's creates (early.go).
		ec, err := pathmgr.Dial(pmcfg)
		if err != nil {
			return in, fmt.Errorf("path manager: %w", err)
		}
		undo.push(func(stopMode) { ec.Close() })
		c.earlyPM = ec
	}
	pmCh := make(chan pmBatch, 64)
	in.pm = pmCh
	g.Go(func() error { return c.readEvents(ctx, el, pmCh) })

	// Link-local addresses are filtered by the controller (view), so that
	// skip_link_local can change at a reload.
	w, err := netmon.New(netmon.Config{NetNS: c.cfg.NetNS, IncludeLinkLocal: true})
	if err != nil {
		return in, fmt.Errorf("interfaces: %w", err)
	}
	if c.netRaw == nil {
		c.netRaw = w.State
	}
	netCh, unsub := w.Subscribe(1024)
	undo.push(func(stopMode) { unsub() })
	in.net = netCh
	g.Go(func() error {
		if err := w.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("interface watcher stopped: %v", err)
		}
		return nil
	})
	select {
	case <-w.Ready():
	case <-ctx.Done():
		return in, ctx.Err()
	}

	if c.newRouter == nil {
		c.newRouter = func(r policy.Routing) (router, error) {
			return routing.New(routing.Config{NetNS: c.cfg.NetNS, TableBase: r.TableBase, RulePriority: r.RulePriority})
		}
	}
	if p.Routing.Mode == policy.RoutingManaged {
		rt, err := c.newRouter(p.Routing)
		if err != nil {
			return in, fmt.Errorf("routing: %w", err)
		}
		c.rt = rt
	}
	undo.push(func(m stopMode) {
		// c.rt: a reload may have replaced or removed the manager.
		if c.rt == nil {
			return
		}
		if m == modeUpgrade {
			c.log.Info("leaving the routing in place for the new binary")
		} else if err := c.rt.Cleanup(); err != nil {
			c.log.Warn("routing cleanup", "err", err)
		}
		c.rt.Close()
		c.rt = nil
	})
	if pool != nil {
		// Taken down before the routing above: no subflow is created
		// once the source rules are going.
		undo.push(func(stopMode) { pool.Close() })
	}

	statusPath := p.StatusSocket
	if c.cfg.StatusSocket != "" {
		statusPath = c.cfg.StatusSocket
	}
	if statusPath != "" {
		srv, err := status.Listen(statusPath)
		if err != nil {
			return in, err
		}
		g.Go(func() error { return srv.Serve(ctx, c.Snapshot) })
	}
	listen := p.Metrics.Listen
	if c.cfg.MetricsListen != "" {
		listen = c.cfg.MetricsListen
	}
	if listen != "" && listen != "-" {
		srv, err := c.m.Listen(listen)
		if err != nil {
			return in, fmt.Errorf("metrics.listen %s: %w", listen, err)
		}
		c.metricsAddr = srv.Addr().String()
		g.Go(func() error { return srv.Serve(ctx) })
	}

	in.health = c.sampler.out
	g.Go(func() error { return c.sampler.run(ctx) })

	c.netSt = c.view(c.netRaw())
	c.publishAddrs()
	c.noteLinksDown(time.Time{}) // down before we started: no hold
	c.ifs = buildIfaces(p, c.netSt, nil, c.now())
	undo.push(func(stopMode) {
		if c.cgroupRoot != nil {
			c.cgroupRoot.Close()
			c.cgroupRoot = nil
		}
	})
	if needsCgroup(p) {
		if err := c.ensureCgroup2(cgroupUsers(p)); err != nil {
			return in, err
		}
	}
	undo.push(func(m stopMode) {
		// Runs before the routing goes and, at an upgrade, while the
		// links are still held: the duplicates keep the programs attached
		// across the exec. The list of followed subflows is for the next
		// start, and for a new binary that does not keep the telemetry
		// map (another layout of its entries).
		c.saveFollowed()
		if m == modeUpgrade && c.upgrading != nil {
			c.upgrading.held = c.holdLinks()
			c.upgrading.telemetry = c.holdTelemetry()
			c.log.Info("handing over to the new binary", "connections", len(c.conns), "bpf_links", len(c.upgrading.held))
		}
		if c.mp != nil {
			c.mp.Close()
			c.mp = nil
		}
		c.closePathPolicy()
	})
	c.syncPathPolicy()
	c.mp = c.startMptcpify(p.Mptcpify)
	// The new programs are attached: the previous process's may go.
	c.releaseHeld()
	c.ensureRouting(true)
	c.applyKernelPM()
	undo.push(func(m stopMode) {
		if m == modeUpgrade && c.upgrading != nil {
			// Duplicates outlive the exec: the sockets keep listening,
			// and the new binary adopts them.
			c.upgrading.listeners = c.lst.hold()
		}
		c.lst.close()
	})
	c.lst.adopt(c.cfg.HeldListeners)
	c.cfg.HeldListeners = nil
	c.syncListeners()
	c.resync("start")
	c.peersIn = nil
	c.refreshGauges() // and tells the sampler how many subflows there are
	c.sampler.setEvery(c.sampleEvery())
	c.saveIDs()

	in.notify = newNotifier()
	undo.push(func(m stopMode) {
		// First on the way out.
		if m == modeUpgrade {
			// The same PID comes back with READY=1 from the new binary.
			in.notify.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
		} else {
			in.notify.send("STOPPING=1")
		}
	})
	// The first plan for the reader's creates before anything can count
	// on them; the loop publishes the next after each input that can
	// change it.
	c.publishEarly()
	close(c.ready)
	in.notify.send("READY=1")
	c.log.Info("gigapath running", "policy", p.Summary(), "netns", c.cfg.NetNS, "status", statusPath, "metrics", c.metricsAddr,
		"health", c.healthSourceName())
	return in, nil
}

// eventPace is the least time between two reads of the path manager's
// events with path_manager: kernel or the create thread. The kernel, or
// the thread, opens a new connection's subflows, so the events only keep
// the daemon's account (status, metrics, health, what the loop does
// next): in a burst, reading each as it comes would cost a wake-up per
// event, CPU the kernel's path manager, the thread and the applications
// lack (pathmgr.ListenEventsPaced; docs/benchmarks.md, "burst"). With the
// thread the reader also waits for a burst to end (awaitBurst).
const eventPace = 5 * time.Millisecond

// readEvents passes the kernel's path-manager events to the loop until ctx
// ends (nil) or the socket fails (its error), each batch with the creates
// it sent for the new connections in it (early.go).
func (c *Controller) readEvents(ctx context.Context, el *pathmgr.EventListener, out chan<- pmBatch) error {
	early := c.m.CreateSeconds.WithLabelValues("early")
	// The create thread's count when Receive was last called, and when
	// the reader waits for the thread's burst.
	var taken uint64
	var bw burstWait
	for {
		if c.rtc != nil {
			if until, wait := bw.before(el); wait {
				c.awaitBurst(ctx, until, taken, c.rtFlushed)
			}
			taken = c.rtc.Taken()
		}
		evs, err := el.Receive(ctx)
		bw.after(len(evs), err, time.Now())
		if ctx.Err() != nil {
			return nil
		}
		b := pmBatch{events: evs, at: c.now()}
		if c.earlyPM != nil || c.rtc != nil {
			b.early = c.earlyCreates(evs, early)
		}
		b.read = time.Now() // the loop's wait starts after the creates
		if err != nil {
			if !errors.Is(err, pathmgr.ErrEventsLost) {
				return fmt.Errorf("path-manager events: %w", err)
			}
			b.lost = true
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return nil
		}
	}
}

// burstWait is when the events reader waits for a burst of the create
// thread's to end (awaitBurst) before its next read, and until when.
// After a read that found the socket empty, always, until rtDeferMax
// after that read. With events still queued (the last read was full),
// while they take at most a quarter of the socket's buffer (the rest,
// about 15,000 events with SO_RCVBUFFORCE, holds what a wait lets come:
// about 8,000 at most, some 2,000 connections, with closes and skipped
// connections on top), and never past rtDeferMax after the read that
// last found the socket empty: an event waits for its read about a
// second at most, plus the reading of what came before it. Never after
// a loss until a read finds the socket empty: the kernel drops every
// event for it until then, without a word. A reader still busy with the
// last burst's events (its closes, say) when the next began read that
// burst while it lasted, the CPU the wait is there to leave to the
// thread and the applications (docs/benchmarks.md, "burst", "Since
// (2026-12-06, 03:00-04:05 UTC)").
type burstWait struct {
	read     time.Time // when the last read returned (zero: none yet)
	more     bool      // it was full or found events lost (pathmgr.MoreQueued)
	draining bool      // a read found events lost, and none since found the socket empty
	empty    time.Time // when the last read that found the socket empty returned (zero: none yet)
}

// before says whether to wait before the next read, and until when.
// Without the socket's account (an error) the reader reads on.
func (w *burstWait) before(el backlogger) (until time.Time, wait bool) {
	until = w.read.Add(rtDeferMax)
	if !w.more {
		return until, true
	}
	if w.draining {
		return time.Time{}, false
	}
	if !w.empty.IsZero() && w.empty.Add(rtDeferMax).Before(until) {
		until = w.empty.Add(rtDeferMax)
	}
	if !w.read.Before(until) {
		return time.Time{}, false
	}
	queued, limit, err := el.Backlog()
	if err != nil || queued > limit/4 {
		return time.Time{}, false
	}
	return until, true
}

// after takes in a read's outcome: n events, err, returned at read.
func (w *burstWait) after(n int, err error, read time.Time) {
	w.read, w.more = read, pathmgr.MoreQueued(n, err)
	w.draining = errors.Is(err, pathmgr.ErrEventsLost) || (w.draining && w.more)
	if !w.more {
		w.empty = read
	}
}

// backlogger is what burstWait asks of the events listener.
type backlogger interface {
	Backlog() (queued, limit int, err error)
}

// sampleEvery is the health sampling interval of the steering mode (0:
// the mode needs none).
func (c *Controller) sampleEvery() time.Duration {
	if t := c.strat.thresholds(); t != nil {
		return t.every
	}
	return 0
}
