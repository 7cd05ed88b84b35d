// Package controller is gigapath's path-manager daemon: one event loop that
// owns the state of connections and interfaces, fed by the kernel's
// mptcp_pm events, rtnetlink changes (netmon), a periodic tick, reloads and
// status requests. It decides which subflows exist and which are backup,
// and carries the decisions out through pathmgr and routing.
//
// Reconciliation beats bookkeeping: on start, after lost events, after a
// netmon resync and on reload, the controller reads the kernel's inventory
// of connections and subflows, computes what the policy wants and fixes the
// difference, so a missed event is never fatal.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/buildinfo"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/routing"
	"github.com/gigapath/gigapath/internal/status"
	"github.com/gigapath/gigapath/pathmgr"
)

// Timing of retries.
const (
	// pendingTimeout is a safety net only: a create stays pending until its
	// SUB_ESTABLISHED, its SUB_CLOSED (a failed join closes too) or a
	// refusal. A join to an unreachable address keeps retrying its SYN for
	// about two minutes (tcp_syn_retries 6: 127 s); creating again before
	// that would pile up half-open subflows.
	pendingTimeout = 130 * time.Second
	// goneGrace is how long a subflow to a withdrawn peer address is left
	// to the kernel, which closes it on RM_ADDR, before the controller does.
	goneGrace      = 3 * time.Second
	retryBackoff   = 2 * time.Second // after the kernel refused a create
	periodicResync = 30 * time.Second
)

// processStart is when this binary started running (an upgrade in place
// keeps the process, and restarts this clock).
var processStart = time.Now()

// Config is what Run needs.
type Config struct {
	Policy *policy.Policy
	// NetNS is the network namespace to manage (name or path); "" = ours.
	NetNS   string
	Logger  *slog.Logger
	Metrics *metrics.Metrics // nil: a fresh set
	// StatusSocket overrides the policy's status_socket when set.
	StatusSocket string
	// MetricsListen overrides the policy's metrics.listen when set ("-" disables).
	MetricsListen string
	// Handoff is the previous process's Handoff after an upgrade in place
	// (see ErrUpgrade); nil otherwise.
	Handoff []byte
	// HeldLinks are the previous process's HeldLinks (descriptors of BPF
	// links, validated by the caller). Run closes them once its own
	// programs are attached, and in any case before it returns.
	HeldLinks []int
}

// Controller is the daemon. Build it with New and call Run once.
type Controller struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics

	// owned by the loop goroutine
	pol      *policy.Policy
	pm       PM
	kpm      *pathmgr.Client
	inv      *pathmgr.Inventory
	rt       *routing.Manager
	watcher  *netmon.Watcher
	netSt    netmon.State
	ifs      map[int]*iface
	conns    map[uint32]*conn
	prevRx   map[pathmgr.Subflow]rxCount // subflow → counters at the last health sample
	prevRxAt time.Time                   // when prevRx was taken
	primary  int                         // priority steering: the primary's ifindex at the last tick (0: none yet)
	// linkDownAt is when each link that is down went down (as this
	// process saw it), for announcements' hold-down.
	linkDownAt map[int]time.Time

	// pp applies per-interface congestion/mark (nil until needed).
	pp          *pathpolicy.PathPolicy
	mp          *mptcpify.Mptcpify // nil unless attached
	ppSet       map[netip.Addr]pathpolicy.Policy
	ppCollector *metrics.PathPolicyCollector // registered while pp is loaded
	ppFailed    bool

	// peersIn are the announced peer addresses of Config.Handoff by
	// token, used by the start resync only; handoffOut is Handoff's value.
	peersIn    map[uint32][]handoffPeer
	handoffOut []byte
	heldOut    []int

	reloadCh chan reloadReq
	statusCh chan chan status.Snapshot
	ready    chan struct{}
	metrics  chan struct{}
	addrs    struct{ metrics string }
}

type reloadReq struct {
	p   *policy.Policy
	err chan error
}

// New checks cfg and returns a Controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Policy == nil {
		return nil, errors.New("controller: no policy")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	return &Controller{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics, pol: cfg.Policy,
		ifs: map[int]*iface{}, conns: map[uint32]*conn{}, linkDownAt: map[int]time.Time{},
		prevRx:   map[pathmgr.Subflow]rxCount{},
		reloadCh: make(chan reloadReq), statusCh: make(chan chan status.Snapshot),
		ready: make(chan struct{}), metrics: make(chan struct{}),
	}, nil
}

// Ready is closed after the first reconciliation.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// MetricsAddr is the address /metrics listens on ("" if disabled), valid
// once Ready is closed.
func (c *Controller) MetricsAddr() string { <-c.ready; return c.addrs.metrics }

// Reload applies a new, already validated policy as a diff. Changes that
// need a restart (side, path_manager, metrics.listen, status_socket) are
// refused and the old policy stays.
func (c *Controller) Reload(ctx context.Context, p *policy.Policy) error {
	r := reloadReq{p: p, err: make(chan error, 1)}
	select {
	case c.reloadCh <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReloadFile loads and validates the policy file, then Reloads it. A bad
// file keeps the old policy; the error says why.
func (c *Controller) ReloadFile(ctx context.Context, file string) error {
	p, err := policy.Load(file)
	if err != nil {
		return fmt.Errorf("reload refused, keeping the old policy: %w", err)
	}
	return c.Reload(ctx, p)
}

// Snapshot returns the state for `gigapath status`.
func (c *Controller) Snapshot(ctx context.Context) (status.Snapshot, error) {
	ch := make(chan status.Snapshot, 1)
	select {
	case c.statusCh <- ch:
	case <-ctx.Done():
		return status.Snapshot{}, ctx.Err()
	}
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return status.Snapshot{}, ctx.Err()
	}
}

type pmBatch struct {
	events []pathmgr.Event
	lost   bool
	err    error
	at     time.Time
}

// Run starts the daemon and blocks until ctx ends (nil) or a fatal error.
// On return the routing state it made is removed (Cleanup).
//
// When ctx is cancelled with the cause ErrUpgrade, Run leaves the kernel
// state as it is for the process that takes over, and Handoff returns what
// that process needs.
func (c *Controller) Run(ctx context.Context) (err error) {
	parent := ctx
	upgrading := func() bool { return errors.Is(context.Cause(parent), ErrUpgrade) }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.releaseHeldLinks()
	nt := newNotifier()
	pmcfg := &pathmgr.Config{NetNS: c.cfg.NetNS}
	p := c.pol

	h, err := parseHandoff(c.cfg.Handoff)
	if err != nil {
		// Starting as after a crash loses only what the handoff adds.
		c.log.Warn("ignoring the handoff", "err", err)
	}
	pmWas := ""
	if h != nil {
		pmWas, c.peersIn = h.PathManagerWas, h.peersByToken()
	}
	restorePM, pmWas, err := setPathManager(c.cfg.NetNS, string(p.PathManager), pmWas)
	if err != nil {
		return err
	}
	if restorePM != nil {
		defer func() {
			if upgrading() {
				return
			}
			if err := restorePM(); err != nil {
				c.log.Warn("restore net.mptcp.path_manager", "err", err)
			}
		}()
	}
	if err := c.applyScheduler(p.Scheduler); err != nil {
		return err
	}
	client, err := pathmgr.Dial(pmcfg)
	if err != nil {
		return fmt.Errorf("path manager: %w", err)
	}
	defer client.Close()
	c.kpm = client
	var createFailures <-chan createFailure
	var pool *asyncPM
	if c.pm == nil {
		ap, err := newAsyncPM(client, min(max(runtime.GOMAXPROCS(0), 1), 8), func() (PM, func() error, error) {
			cl, err := pathmgr.Dial(pmcfg)
			if err != nil {
				return nil, nil, fmt.Errorf("path manager: %w", err)
			}
			return cl, cl.Close, nil
		})
		if err != nil {
			return err
		}
		defer ap.Close()
		pool, c.pm = ap, ap
		defer func() { c.pm = nil }()
		createFailures = ap.Failures()
	}
	inv, err := pathmgr.OpenInventory(pmcfg)
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	defer inv.Close()
	c.inv = inv

	// Events first, so nothing between the inventory read and the loop is missed.
	el, err := pathmgr.ListenEvents(pmcfg)
	if err != nil {
		return fmt.Errorf("path-manager events: %w", err)
	}
	defer el.Close()

	w, err := netmon.New(netmon.Config{NetNS: c.cfg.NetNS, IncludeLinkLocal: !p.SkipLinkLocal})
	if err != nil {
		return fmt.Errorf("interfaces: %w", err)
	}
	c.watcher = w
	netCh, unsub := w.Subscribe(1024)
	defer unsub()
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(ctx) }()
	select {
	case <-w.Ready():
	case <-ctx.Done():
		return nil
	}

	if p.Routing.Mode == policy.RoutingManaged {
		rt, err := routing.New(routing.Config{NetNS: c.cfg.NetNS, TableBase: p.Routing.TableBase, RulePriority: p.Routing.RulePriority})
		if err != nil {
			return fmt.Errorf("routing: %w", err)
		}
		c.rt = rt
		defer func() {
			// c.rt: a reload may have replaced the manager.
			if c.rt == nil {
				return
			}
			if upgrading() {
				c.log.Info("leaving the routing in place for the new binary")
			} else if cerr := c.rt.Cleanup(); cerr != nil {
				c.log.Warn("routing cleanup", "err", cerr)
			}
			c.rt.Close()
		}()
	}
	if pool != nil {
		// Runs before the routing cleanup above: no subflow is created
		// once the source rules are going.
		defer pool.Close()
	}

	pmCh := make(chan pmBatch, 64)
	go func() {
		for {
			evs, err := el.Receive(ctx)
			b := pmBatch{events: evs, at: time.Now()}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, pathmgr.ErrEventsLost) {
					b.lost = true
				} else {
					b.err = err
				}
			}
			select {
			case pmCh <- b:
			case <-ctx.Done():
				return
			}
			if b.err != nil {
				return
			}
		}
	}()

	statusPath := p.StatusSocket
	if c.cfg.StatusSocket != "" {
		statusPath = c.cfg.StatusSocket
	}
	if statusPath != "" {
		if err := status.Serve(ctx, statusPath, c.Snapshot); err != nil {
			return err
		}
		defer os.Remove(statusPath)
	}
	listen := p.Metrics.Listen
	if c.cfg.MetricsListen != "" {
		listen = c.cfg.MetricsListen
	}
	if listen != "" && listen != "-" {
		a, _, err := c.m.Serve(ctx, listen)
		if err != nil {
			return fmt.Errorf("metrics.listen %s: %w", listen, err)
		}
		c.addrs.metrics = a.String()
	}

	c.netSt = w.State()
	c.noteLinksDown(time.Time{}) // down before we started: no hold
	c.ifs = buildIfaces(p, c.netSt, nil)
	defer c.closePathPolicy()
	c.syncPathPolicy()
	if c.mp = c.startMptcpify(p.Mptcpify); c.mp != nil {
		defer func() { c.mp.Close(); c.mp = nil }()
	}
	// The new programs are attached: the previous process's may go.
	c.releaseHeldLinks()
	c.ensureRouting(true)
	c.applyKernelPM()
	c.resync("start")
	c.peersIn = nil
	close(c.ready)
	nt.send("READY=1")
	c.log.Info("gigapath running", "policy", p.Summary(), "netns", c.cfg.NetNS, "status", statusPath, "metrics", c.addrs.metrics)

	tickEvery := time.Second
	if p.Steering == policy.SteerHandover && p.Handover.Interval > 0 {
		tickEvery = p.Handover.Interval
	}
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	var wdC <-chan time.Time
	if iv := watchdogInterval(); iv > 0 {
		wd := time.NewTicker(iv)
		defer wd.Stop()
		wdC = wd.C
	}
	lastResync := time.Now()
	defer func() {
		if upgrading() {
			// The same PID comes back with READY=1 from the new binary.
			nt.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
		} else {
			nt.send("STOPPING=1")
		}
	}()

	// Runs first on the way out, while the BPF links are still held,
	// whichever case of the loop returns.
	defer func() {
		if upgrading() {
			c.handoffOut = c.makeHandoff(pmWas)
			c.heldOut = c.holdLinks()
			c.log.Info("handing over to the new binary", "connections", len(c.conns), "bpf_links", len(c.heldOut))
		}
	}()

	for {
		select {
		case <-ctx.Done():
			c.log.Info("stopping")
			return nil
		case err := <-wdone:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("interface watcher stopped: %v", err)
		case b := <-pmCh:
			if b.err != nil {
				return fmt.Errorf("path-manager events: %w", b.err)
			}
			for _, ev := range b.events {
				c.handlePM(ev, b.at)
			}
			if b.lost {
				c.log.Warn("path-manager events lost (netlink buffer overrun), resynchronising")
				c.resync("events_lost")
			}
		case f := <-createFailures:
			c.createFailed(f)
		case ev, ok := <-netCh:
			if !ok {
				netCh = nil
				continue
			}
			c.handleNet(ev)
		case <-tick.C:
			c.tick()
			if time.Since(lastResync) > periodicResync {
				lastResync = time.Now()
				c.resync("periodic")
			}
		case <-wdC:
			nt.send("WATCHDOG=1")
		case r := <-c.reloadCh:
			r.err <- c.reload(r.p)
		case ch := <-c.statusCh:
			ch <- c.snapshot()
		}
	}
}

// handlePM applies one path-manager event.
func (c *Controller) handlePM(ev pathmgr.Event, at time.Time) {
	c.m.Events.WithLabelValues(ev.Type.String()).Inc()
	c.log.Debug("pm event", "event", eventLog(ev))
	switch ev.Type {
	case pathmgr.EventCreated:
		cn := c.conn(ev.Token)
		cn.local, cn.remote, cn.server = ev.Local, ev.Remote, ev.ServerSide
	case pathmgr.EventEstablished:
		cn := c.conn(ev.Token)
		cn.local, cn.remote, cn.server = ev.Local, ev.Remote, ev.ServerSide
		cn.established = true
		cn.estAt = at
		sf := pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}
		if _, ok := cn.subs[sf]; !ok {
			cn.subs[sf] = &sub{sf: sf, ifindex: c.ifindexOf(ev.Local.Addr(), ev.IfIndex), backup: ev.Backup}
		}
		c.m.Connections.Set(float64(len(c.conns)))
		c.reconcileConn(cn)
	case pathmgr.EventClosed:
		delete(c.conns, ev.Token)
		c.m.Connections.Set(float64(len(c.conns)))
	case pathmgr.EventSubEstablished:
		cn, ok := c.conns[ev.Token]
		if !ok {
			return
		}
		sf := pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}
		idx := c.ifindexOf(ev.Local.Addr(), ev.IfIndex)
		cn.subs[sf] = &sub{sf: sf, ifindex: idx, localID: ev.LocalID, backup: ev.Backup}
		if k := (slot{idx, norm(ev.Remote)}); !cn.pending[k].IsZero() {
			delete(cn.pending, k)
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
		delete(cn.subs, sf)
		if k := (slot{idx, norm(ev.Remote)}); !cn.pending[k].IsZero() {
			delete(cn.pending, k)
			cn.backoff[k] = at.Add(retryBackoff)
		}
	case pathmgr.EventAnnounced:
		// ADD_ADDR from the peer. The event may come before the
		// connection is established; reconcileConn waits for that.
		if !ev.Remote.IsValid() {
			return
		}
		cn := c.conn(ev.Token)
		if old, ok := cn.peers[ev.RemoteID]; ok && norm(old.addr) != norm(ev.Remote) {
			c.peerGone(cn, ev.RemoteID, old.addr, at)
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
		if old, ok := cn.peers[ev.RemoteID]; ok {
			delete(cn.peers, ev.RemoteID)
			c.peerGone(cn, ev.RemoteID, old.addr, at)
			c.reconcileConn(cn)
		}
	case pathmgr.EventSubPriority:
		if cn, ok := c.conns[ev.Token]; ok {
			if s, ok := cn.subs[pathmgr.Subflow{Local: ev.Local, Remote: ev.Remote}]; ok {
				s.backup = ev.Backup
			}
		}
	}
}

// eventLog formats an event for the log only when a record is written, so
// the event loop does not format every event for a disabled debug level.
type eventLog pathmgr.Event

func (e eventLog) LogValue() slog.Value { return slog.StringValue(pathmgr.Event(e).String()) }

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
	for pid, p := range cn.peers {
		if pid != id && norm(p.addr) == addr {
			return
		}
	}
	for k := range cn.pending {
		if k.dst == addr {
			delete(cn.pending, k)
		}
	}
	for k := range cn.backoff {
		if k.dst == addr {
			delete(cn.backoff, k)
		}
	}
	for _, s := range cn.subs {
		if norm(s.sf.Remote) == addr {
			s.goneAt = at
		}
	}
}

func (c *Controller) conn(token uint32) *conn {
	cn, ok := c.conns[token]
	if !ok {
		cn = newConn(token)
		c.conns[token] = cn
	}
	return cn
}

// ifindexOf finds the interface holding addr; hint (the kernel's if_idx) is
// used when no policy interface has it.
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

// handleNet applies an interface change: routing first, then subflows.
func (c *Controller) handleNet(ev netmon.Event) {
	c.m.NetEvents.WithLabelValues(ev.Type.String()).Inc()
	c.netSt = c.watcher.State()
	c.noteLinksDown(time.Now())
	c.ifs = buildIfaces(c.pol, c.netSt, c.ifs)
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
		c.resync("netmon")
		return
	}
	if _, ok := c.ifs[idx]; !ok {
		return // announce entries name policy interfaces only (policy.Load)
	}
	c.ensureRouting(false, idx)
	c.applyKernelPM()
	if ev.Type == netmon.LinkUp || ev.Type == netmon.AddrAdded || ev.Type == netmon.RouteAdded {
		for _, cn := range c.conns {
			for k := range cn.backoff {
				if k.ifindex == idx {
					delete(cn.backoff, k)
				}
			}
		}
	}
	c.reconcileAll()
}

// ensureRouting makes the routing tables match the interfaces (all of
// them, pruning leftovers, when all is set).
func (c *Controller) ensureRouting(all bool, only ...int) {
	if c.rt == nil {
		return
	}
	var keep []int
	for idx, i := range c.ifs {
		if !all && !slices.Contains(only, idx) {
			continue
		}
		keep = append(keep, idx)
		if err := c.rt.Ensure(routing.PathFor(c.netSt, idx)); err != nil {
			c.log.Warn("routing", "interface", i.name, "err", err)
		}
	}
	if all {
		if err := c.rt.Prune(keep); err != nil {
			c.log.Warn("routing prune", "err", err)
		}
	}
}

// available lists the policy interfaces that can carry subflows, by index.
func (c *Controller) available() []*iface {
	var out []*iface
	for _, i := range c.ifs {
		if i.available() {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b *iface) int { return a.index - b.index })
	return out
}

func (c *Controller) reconcileAll() {
	for _, cn := range c.conns {
		c.reconcileConn(cn)
	}
}

// reconcileConn makes one connection's subflows what the policy wants.
func (c *Controller) reconcileConn(cn *conn) {
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
	now := time.Now()
	avail := c.available()
	wants := steer(p, avail, now)
	dests := cn.dests(p.PeerAddresses == policy.PeerUse)
	per := map[int][]*sub{}
	for _, s := range cn.subs {
		per[s.ifindex] = append(per[s.ifindex], s)
	}
	// The destinations each carrying interface keeps subflows to, and the
	// subflows that will survive this pass.
	tgt := map[int][]netip.AddrPort{}
	keepers := 0
	for _, i := range avail {
		if !wants[i.index].open {
			continue
		}
		held := func(d netip.AddrPort) bool {
			for _, s := range per[i.index] {
				if s.goneAt.IsZero() && norm(s.sf.Remote) == d {
					return true
				}
			}
			t, ok := cn.pending[slot{i.index, d}]
			return ok && now.Sub(t) < pendingTimeout
		}
		failing := func(d netip.AddrPort) bool {
			t, ok := cn.backoff[slot{i.index, d}]
			return ok && now.Before(t)
		}
		tgt[i.index] = targets(i, dests, held, failing)
		for _, s := range per[i.index] {
			if s.goneAt.IsZero() && slices.Contains(tgt[i.index], norm(s.sf.Remote)) {
				keepers++
			}
		}
	}
	for _, i := range avail {
		w := wants[i.index]
		have := per[i.index]
		if !w.open {
			for _, s := range have {
				if keepers == 0 {
					break // never close the last subflow
				}
				c.destroy(cn, s, "steering")
			}
			continue
		}
		for _, dst := range tgt[i.index] {
			var cur []*sub
			for _, s := range have {
				if norm(s.sf.Remote) == dst {
					cur = append(cur, s)
				}
			}
			if len(cur) == 0 {
				c.create(cn, i, dst, w.backup, now)
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
			cur = cur[:1]
			for _, s := range cur {
				if s.backup == w.backup {
					continue
				}
				c.m.Commands.WithLabelValues("subflow_set_backup").Inc()
				if err := c.pm.SetSubflowBackup(cn.token, s.sf, w.backup); err != nil {
					c.m.CommandErrors.WithLabelValues("subflow_set_backup").Inc()
					c.log.Warn("subflow backup", "token", cn.token, "interface", i.name, "remote", s.sf.Remote, "backup", w.backup, "err", err)
					continue
				}
				s.backup = w.backup
				c.m.SteeringSwitches.Inc()
			}
		}
		// Subflows to destinations this interface no longer keeps: a
		// withdrawn peer address (after the kernel's grace), peer
		// addresses after peer_addresses became ignore, or beyond a
		// lowered max_subflows.
		for _, s := range have {
			if slices.Contains(tgt[i.index], norm(s.sf.Remote)) && s.goneAt.IsZero() {
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
	for idx, ss := range per {
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
	name := ""
	if i, ok := c.ifs[f.local.IfIndex]; ok {
		name = i.name
	}
	c.log.Warn("subflow create", "token", f.token, "interface", name, "local", f.local.Addr, "remote", f.remote, "err", f.err)
	k := slot{f.local.IfIndex, norm(f.remote)}
	delete(cn.pending, k)
	cn.backoff[k] = time.Now().Add(retryBackoff)
}

// create asks for a subflow from interface i to dst unless one is pending
// or the slot is backing off after a refusal.
func (c *Controller) create(cn *conn, i *iface, dst netip.AddrPort, backup bool, now time.Time) {
	k := slot{i.index, dst}
	if t, ok := cn.pending[k]; ok && now.Sub(t) < pendingTimeout {
		return
	}
	if t, ok := cn.backoff[k]; ok && now.Before(t) {
		return
	}
	addr, ok := i.addrFor(dst.Addr())
	if !ok {
		return
	}
	ep := pathmgr.Endpoint{ID: localID(i.index, addr.Is6()), Addr: addr, IfIndex: i.index}
	if backup {
		ep.Flags = pathmgr.FlagBackup
	}
	c.m.Commands.WithLabelValues("subflow_create").Inc()
	if err := c.pm.CreateSubflow(cn.token, ep, dst); err != nil {
		c.m.CommandErrors.WithLabelValues("subflow_create").Inc()
		cn.backoff[k] = now.Add(retryBackoff)
		c.log.Warn("subflow create", "token", cn.token, "interface", i.name, "local", addr, "remote", dst, "err", err)
		return
	}
	cn.pending[k] = now
	c.log.Debug("subflow create", "token", cn.token, "interface", i.name, "local", addr, "remote", dst, "backup", backup)
}

func (c *Controller) destroy(cn *conn, s *sub, why string) {
	if s.sf.Local.Port() == 0 || s.sf.Remote.Port() == 0 {
		return
	}
	c.m.Commands.WithLabelValues("subflow_destroy").Inc()
	if err := c.pm.DestroySubflow(cn.token, s.sf); err != nil {
		c.m.CommandErrors.WithLabelValues("subflow_destroy").Inc()
		lvl := slog.LevelWarn
		if !s.goneAt.IsZero() {
			lvl = slog.LevelDebug // the kernel closed it on the peer's RM_ADDR
		}
		c.log.Log(context.Background(), lvl, "subflow destroy", "token", cn.token, "local", s.sf.Local, "remote", s.sf.Remote, "why", why, "err", err)
	}
	delete(cn.subs, s.sf)
	c.log.Debug("subflow destroyed", "token", cn.token, "local", s.sf.Local, "why", why)
}

// announceWant lists, by local id, what the policy announces to a
// server-side connection now: each fixed address, and for each interface
// entry one address per family while the interface is up, of the
// connection's family and other than the connection's own address. What
// the connection was told stays as long as it is still valid: an
// interface keeps its announced address while it has it (a new, lower one
// does not replace it), and an address keeps the id it was announced with
// (an address moving to another interface is not withdrawn and announced
// again), because every RM_ADDR makes the peer close its subflows to the
// address. Otherwise: a global address before a link-local one, then the
// lowest.
func (c *Controller) announceWant(cn *conn) map[uint8]pathmgr.Endpoint {
	out := map[uint8]pathmgr.Endpoint{}
	v4 := cn.remote.Addr().Unmap().Is4()
	own := cn.local.Addr().Unmap()
	for _, a := range c.pol.Announce {
		var addr netip.Addr
		idx := 0
		if a.Address.IsValid() {
			addr = a.Address.Unmap()
			idx = c.ifindexOf(addr, 0)
		} else if l, ok := c.netSt.LinkByName(a.Interface); ok && c.announceUp(l) {
			idx = l.Index
			var cands []netip.Addr
			for _, x := range c.netSt.Addrs[l.Index] {
				if cand := x.Prefix.Addr().Unmap(); cand.Is4() == v4 && cand != own {
					cands = append(cands, cand)
				}
			}
			if cur, ok := cn.ann[localID(idx, !v4)]; ok && slices.Contains(cands, cur.Addr) {
				addr = cur.Addr
			} else {
				for _, cand := range cands {
					if !addr.IsValid() || better(cand, addr) {
						addr = cand
					}
				}
			}
		}
		if !addr.IsValid() || addr.Is4() != v4 || addr == own {
			continue
		}
		id := localID(idx, addr.Is6())
		for aid, e := range cn.ann {
			if e.Addr == addr && e.Port == a.Port {
				id = aid // announced before under this id: keep it
			}
		}
		if _, dup := out[id]; !dup {
			out[id] = pathmgr.Endpoint{ID: id, Addr: addr, Port: a.Port}
		}
	}
	return out
}

// announceHold is how long an interface may be down before what it
// announced is withdrawn: a carrier blip shorter than this does not make
// every peer close its subflows to the address and open them again.
const announceHold = 3 * time.Second

// announceUp reports whether an announce entry's interface counts as up:
// up, or down for less than announceHold (the tick reconciles, so the
// withdrawal follows within a second of the hold).
func (c *Controller) announceUp(l netmon.Link) bool {
	if l.Up() {
		return true
	}
	at, ok := c.linkDownAt[l.Index]
	return ok && time.Since(at) < announceHold
}

// noteLinksDown records when each link went down (for announceUp).
func (c *Controller) noteLinksDown(now time.Time) {
	for idx, l := range c.netSt.Links {
		if l.Up() {
			delete(c.linkDownAt, idx)
		} else if _, ok := c.linkDownAt[idx]; !ok {
			c.linkDownAt[idx] = now
		}
	}
	for idx := range c.linkDownAt {
		if _, ok := c.netSt.Links[idx]; !ok {
			delete(c.linkDownAt, idx)
		}
	}
}

// better orders the candidates for an interface's announced address.
func better(a, b netip.Addr) bool {
	if la, lb := a.IsLinkLocalUnicast(), b.IsLinkLocalUnicast(); la != lb {
		return lb
	}
	return a.Less(b)
}

// syncAnnounce makes what a server-side connection was told match
// announceWant: RM_ADDR for what is no longer there (an address removed,
// its interface down, a reload), ADD_ADDR for what is new (an address
// added later, its interface back). A refused announce is retried after
// retryBackoff.
func (c *Controller) syncAnnounce(cn *conn) {
	want := c.announceWant(cn)
	now := time.Now()
	for _, id := range slices.Sorted(maps.Keys(cn.ann)) {
		e := cn.ann[id]
		if w, ok := want[id]; ok && w.Addr == e.Addr && w.Port == e.Port {
			continue
		}
		if now.Before(cn.annRetry[id]) {
			continue
		}
		c.m.Commands.WithLabelValues("remove").Inc()
		if err := c.pm.Remove(cn.token, id); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			// Still announced in the kernel: tried again after the
			// back-off (ENOENT/EINVAL: the kernel has no such id).
			c.m.CommandErrors.WithLabelValues("remove").Inc()
			c.log.Warn("withdraw", "token", cn.token, "addr", e.Addr, "id", id, "err", err)
			cn.annRetry[id] = now.Add(retryBackoff)
			continue
		}
		delete(cn.ann, id)
		delete(cn.annRetry, id)
		c.log.Debug("withdrawn", "token", cn.token, "addr", e.Addr, "id", id)
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if _, ok := cn.ann[id]; ok || now.Before(cn.annRetry[id]) {
			continue
		}
		ep := want[id]
		c.m.Commands.WithLabelValues("announce").Inc()
		if err := c.pm.Announce(cn.token, ep); err != nil {
			c.m.CommandErrors.WithLabelValues("announce").Inc()
			c.log.Warn("announce", "token", cn.token, "addr", ep.Addr, "id", id, "err", err)
			cn.annRetry[id] = now.Add(retryBackoff)
			continue
		}
		delete(cn.annRetry, id)
		cn.ann[id] = ep
		c.log.Debug("announced", "token", cn.token, "addr", ep.Addr, "id", id)
	}
}

// adoptAnnounced fills a server-side connection's record of what it was
// announced from the kernel (GET_ADDR with its token, Linux 6.7 and
// later), so an address that went away while no daemon ran is withdrawn.
// Without it (older kernels) everything is announced again.
func (c *Controller) adoptAnnounced(cn *conn) {
	if c.kpm == nil || c.pol.Side != policy.SideServer || c.pol.PathManager != policy.PMUserspace {
		return
	}
	eps, err := c.kpm.ConnectionAddrs(cn.token)
	if err != nil {
		c.log.Debug("announced addresses of an adopted connection unknown", "token", cn.token, "err", err)
		return
	}
	for _, e := range eps {
		if e.Flags&pathmgr.FlagSignal != 0 && e.ID != 0 {
			cn.ann[e.ID] = pathmgr.Endpoint{ID: e.ID, Addr: e.Addr.Unmap(), Port: e.Port}
		}
	}
}

// resync replaces the connection state with the kernel's inventory and
// reconciles every connection.
func (c *Controller) resync(reason string) {
	start := time.Now()
	c.m.Resyncs.WithLabelValues(reason).Inc()
	if c.inv == nil {
		c.reconcileAll()
		return
	}
	list, err := c.inv.Connections(pathmgr.ListOptions{ListenersToo: true})
	if err != nil {
		c.log.Warn("inventory", "reason", reason, "err", err)
		c.reconcileAll()
		return
	}
	c.adopt(list, start)
	c.reconcileAll()
	c.m.ReconcileSeconds.Observe(time.Since(start).Seconds())
}

// adopt makes the connection state the inventory's.
func (c *Controller) adopt(list []pathmgr.Connection, now time.Time) {
	listen := map[uint16]bool{}
	for _, k := range list {
		if k.State.String() == "listen" {
			listen[k.Local.Port()] = true
		}
	}
	seen := map[uint32]bool{}
	for _, k := range list {
		if k.Token == 0 || k.State.String() != "established" {
			continue
		}
		seen[k.Token] = true
		cn, known := c.conns[k.Token]
		if !known {
			cn = newConn(k.Token)
			cn.server = listen[k.Local.Port()]
			c.conns[k.Token] = cn
			c.inheritPeers(cn)
			if cn.server {
				c.adoptAnnounced(cn)
			}
		}
		cn.local, cn.remote, cn.established = k.Local, k.Remote, true
		old := cn.subs
		cn.subs = map[pathmgr.Subflow]*sub{}
		for _, s := range k.Subflows {
			sf := s.Subflow()
			idx := c.ifindexOf(s.Local.Addr(), s.IfIndex)
			ns := &sub{sf: sf, ifindex: idx, localID: s.LocalID, backup: s.Backup, rtt: s.RTT}
			if o, ok := old[sf]; ok && o.backup != s.Backup {
				ns.backup = s.Backup
			}
			cn.subs[sf] = ns
			delete(cn.pending, slot{idx, norm(s.Remote)})
			// The inventory has no list of the peer's announced
			// addresses; a subflow to one (remote id != 0, not the
			// connection's remote) shows it.
			o, known := old[sf]
			if known {
				ns.goneAt = o.goneAt
			}
			// A subflow the kernel is still closing after the peer's
			// RM_ADDR (goneAt set) does not bring its address back.
			if s.RemoteID != 0 && norm(s.Remote) != norm(k.Remote) && ns.goneAt.IsZero() {
				if _, ok := cn.peers[s.RemoteID]; !ok {
					cn.addPeer(s.RemoteID, s.Remote)
				}
			}
		}
	}
	for tok, cn := range c.conns {
		// Connections created but not yet established are kept: their
		// ESTABLISHED event is still to come.
		if !seen[tok] && cn.established {
			delete(c.conns, tok)
		}
	}
	c.m.Connections.Set(float64(len(c.conns)))
}

// reload applies a new policy as a diff.
func (c *Controller) reload(p *policy.Policy) error {
	d := c.pol.Diff(p)
	if len(d.NeedsRestart) > 0 {
		return fmt.Errorf("reload refused, keeping the old policy: %v changed, which needs a restart", d.NeedsRestart)
	}
	if d.Empty() {
		c.log.Info("reload: nothing changed")
		return nil
	}
	for _, line := range policy.Describe(c.pol, p) {
		c.log.Info("reload", "change", line)
	}
	routingWas := c.pol.Routing
	c.pol = p
	c.ifs = buildIfaces(p, c.netSt, c.ifs)
	c.syncPathPolicy()
	if d.RoutingChanged && c.rt != nil && (routingWas.TableBase != p.Routing.TableBase || routingWas.RulePriority != p.Routing.RulePriority || p.Routing.Mode == policy.RoutingOff) {
		if err := c.rt.Cleanup(); err != nil {
			c.log.Warn("routing cleanup", "err", err)
		}
		c.rt.Close()
		c.rt = nil
		if p.Routing.Mode == policy.RoutingManaged {
			rt, err := routing.New(routing.Config{NetNS: c.cfg.NetNS, TableBase: p.Routing.TableBase, RulePriority: p.Routing.RulePriority})
			if err != nil {
				c.log.Warn("routing", "err", err)
			} else {
				c.rt = rt
			}
		}
	}
	if d.SchedulerChanged {
		if err := c.applyScheduler(p.Scheduler); err != nil {
			c.log.Warn("reload: scheduler not changed", "err", err)
		}
	}
	c.ensureRouting(true)
	c.applyKernelPM()
	c.resync("reload")
	return nil
}

// tick samples subflow health (handover, priority), retries what is due and
// refreshes the subflow gauges.
func (c *Controller) tick() {
	if c.pol.Steering == policy.SteerHandover || c.pol.Steering == policy.SteerPriority {
		c.sampleHealth()
	}
	if c.pol.Steering == policy.SteerPriority {
		c.notePrimary(time.Now())
	}
	c.reconcileAll()
	c.refreshGauges()
}

// notePrimary records when priority steering makes another interface the
// primary (health.tookOver).
func (c *Controller) notePrimary(now time.Time) {
	p := primaryOf(c.available())
	if p == nil || p.index == c.primary {
		return
	}
	if c.primary != 0 {
		p.health.tookOver = now
	}
	c.primary = p.index
}

func (c *Controller) refreshGauges() {
	c.refreshInterfaceGauges()
	c.m.Subflows.Reset()
	for _, cn := range c.conns {
		for _, s := range cn.subs {
			name, role := "other", "none"
			if i, ok := c.ifs[s.ifindex]; ok {
				name, role = i.name, string(i.pol.Role)
			} else if l, ok := c.netSt.Links[s.ifindex]; ok {
				name = l.Name
			}
			c.m.Subflows.WithLabelValues(name, role).Inc()
		}
	}
}

// snapshot builds the status reply.
func (c *Controller) snapshot() status.Snapshot {
	pj, _ := json.Marshal(c.pol)
	s := status.Snapshot{Time: time.Now(), PID: os.Getpid(), Version: buildinfo.Version(), Started: processStart,
		NetNS: c.cfg.NetNS, Policy: pj, Summary: c.pol.Summary()}
	var primary *iface
	if c.pol.Steering == policy.SteerPriority {
		primary = primaryOf(c.available())
	}
	for _, i := range c.ifs {
		si := status.Interface{Index: i.index, Name: i.name, Role: string(i.pol.Role), Up: i.up, Backup: i.pol.Backup,
			Healthy: !i.health.unhealthy, Primary: primary == i, Addrs: i.addrs, Loss: i.health.loss}
		if i.health.rtt > 0 {
			si.RTT = i.health.rtt.String()
		}
		if i.health.rxRTT > 0 {
			si.RcvRTT = i.health.rxRTT.String()
		}
		si.Reorder = i.health.reorder
		s.Interfaces = append(s.Interfaces, si)
	}
	slices.SortFunc(s.Interfaces, func(a, b status.Interface) int { return a.Index - b.Index })
	for _, cn := range c.conns {
		sc := status.Connection{Token: cn.token, Local: cn.local, Remote: cn.remote, ServerSide: cn.server}
		for _, x := range cn.subs {
			name := ""
			if l, ok := c.netSt.Links[x.ifindex]; ok {
				name = l.Name
			}
			sc.Subflows = append(sc.Subflows, status.Subflow{Local: x.sf.Local, Remote: x.sf.Remote, Interface: name, LocalID: x.localID, Backup: x.backup})
		}
		slices.SortFunc(sc.Subflows, func(a, b status.Subflow) int {
			if a.LocalID != b.LocalID {
				return int(a.LocalID) - int(b.LocalID)
			}
			return a.Remote.Compare(b.Remote)
		})
		for id, a := range cn.peers {
			sc.PeerAddrs = append(sc.PeerAddrs, status.PeerAddr{ID: id, Addr: a.addr})
		}
		slices.SortFunc(sc.PeerAddrs, func(a, b status.PeerAddr) int { return int(a.ID) - int(b.ID) })
		s.Connections = append(s.Connections, sc)
	}
	slices.SortFunc(s.Connections, func(a, b status.Connection) int { return int(int64(a.Token) - int64(b.Token)) })
	return s
}
