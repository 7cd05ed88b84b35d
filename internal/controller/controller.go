// Package controller is gigapath's path-manager daemon. It is two things,
// kept apart:
//
//   - the lifecycle (lifecycle.go, upgrade.go): Run opens the kernel
//     clients, the interface watcher, routing, the BPF programs, the status
//     socket and /metrics, runs every goroutine under one errgroup, and on
//     the way out joins them all and undoes what it set up (stop) or
//     leaves it for the binary it execs (upgrade);
//   - the decision core (loop.go, reconcile.go, steering.go, announce.go,
//     kernelpm.go, health.go): one event loop owns the state of
//     connections and interfaces, fed by the kernel's mptcp_pm events,
//     rtnetlink changes (netmon), health samples, a periodic tick, reloads
//     and status requests. Per connection it compares what the kernel has
//     with what the policy wants (steering modes are small strategies) and
//     sends the commands that close the gap. It reads the time from an
//     injected clock and talks to the kernel through small interfaces
//     (PM, kernelPM, inventory, router), so it runs against fakes in
//     tests.
//
// Reconciliation beats bookkeeping: on start, after lost events, after a
// netmon resync and on reload, the controller reads the kernel's inventory
// of connections and subflows, computes what the policy wants and fixes the
// difference, so a missed event is never fatal.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/ebpf/sched"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
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
	tickEvery      = time.Second // retries, announcement hold-downs, gauges
)

// processStart is when this binary started running (an upgrade in place
// keeps the process, and restarts this clock).
var processStart = time.Now()

// Config is what Run needs.
type Config struct {
	Policy *policy.Policy
	// NetNS is the network namespace to manage (name or path); "" = ours.
	NetNS string
	// Logger: nil is NewLogger(os.Stderr, Policy.Log). A reload applies
	// log.level and log.format to a logger made by NewLogger; with any
	// other, a reload that changes them is refused as needing a restart.
	Logger  *slog.Logger
	Metrics *metrics.Metrics // nil: a fresh set
	// StatusSocket overrides the policy's status_socket when set.
	StatusSocket string
	// MetricsListen overrides the policy's metrics.listen when set ("-" disables).
	MetricsListen string
	// StateDir is where the daemon keeps what it must remember across a
	// restart: the local address ids and the in-kernel PM endpoints it
	// made, one file per network namespace (see idFile). "" keeps them in
	// memory only: a restarted daemon then takes the ids of live subflows
	// back and leaves every endpoint alone as not provably its own.
	StateDir string
	// Handoff and HeldLinks are what an upgrading predecessor passed to
	// this process (Inherit). Run closes the held BPF links once its own
	// programs are attached, and in any case before it returns.
	Handoff   []byte
	HeldLinks []int
	// HeldTelemetryFD is the predecessor's telemetry map (a descriptor; 0:
	// none), which the sockops program of this process keeps writing to
	// when its entries have the same layout (the handoff says the
	// predecessor's): idle subflows keep their entries, and health
	// samples keep coming from the map. Run closes it once its own
	// program is loaded, and in any case before it returns.
	HeldTelemetryFD int
	// HeldListeners are the predecessor's join listeners (listeners.go),
	// handed over so that joins to an announced port are not refused
	// while the new binary starts; Run adopts those still wanted and
	// closes the others.
	HeldListeners []int
	// BeforeExec, if set, runs just before an upgrade execs the new
	// binary (an exec that fails is not undone): the caller finishes what
	// must not cross it, such as a CPU profile, whose interval timer
	// (ITIMER_PROF) an exec keeps and whose SIGPROF would kill the new
	// binary before its runtime handles the signal.
	BeforeExec func()
}

// Controller is the daemon. Build it with New and call Run once.
type Controller struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics
	ls  *loopStats
	now func() time.Time // the clock of every decision

	// Buffers the loop reuses, connection after connection (announce.go,
	// reconcile.go).
	annWant  []pathmgr.Endpoint
	annCands []netip.Addr
	scratch  reconcileScratch

	// The kernel, as the decision core sees it: real clients while Run
	// runs, fakes in tests. rt is nil while routing is off.
	pm  PM
	kpm kernelPM
	inv inventory
	rt  router
	// earlyPM sends a new connection's creates from the event reader, by
	// the plan the loop publishes in early; earlySent are those of the
	// event the loop is taking in (early.go). earlyPM is nil where there
	// are none.
	earlyPM   PM
	early     atomic.Pointer[earlyPlan]
	earlySent []earlyCreate
	// rtc is the real-time create thread that sends them instead
	// (creates.thread: realtime or auto; rtcreates.go), nil without one;
	// rtcFailed: it stopped, rtcTooBig: it cannot hold the plan, and
	// rtLate holds its reports about connections not taken in yet,
	// rtAwait the connections taken in whose ESTABLISHED the thread reads
	// too (earlyServes) and not accounted for yet, assumed or not; rtSeq
	// counts those connections, rtDone is the latest of them (in that
	// count) the thread accounted for; rtSettled holds, since when, the
	// connections whose creates the kernel's account settled and counted
	// (expireRT), whose own account, should it come late, is dropped.
	// rtFlushed wakes the events reader waiting for a burst of the
	// thread's to end (awaitBurst) when its reports come (readRT).
	rtc                  rtThread
	rtFlushed            chan struct{}
	rtcFailed, rtcTooBig bool
	rtLate               map[uint32][]lateReport
	rtAwait              map[uint32]rtWait
	rtSettled            map[uint32]time.Time
	rtSeq, rtDone        uint64
	// createsBy says who sends new connections' creates, for status
	// (startCreates); empty where nobody does.
	createsBy string

	// newRouter makes rt for the policy's routing settings.
	newRouter func(policy.Routing) (router, error)
	// netRaw is the interface watcher's state (before view).
	netRaw func() netmon.State
	// useScheduler selects an MPTCP scheduler in a namespace (sched.Use).
	useScheduler func(netns, name string) error
	// sysctl sets a sysctl file in a namespace (swapSysctl).
	sysctl func(netns, file, value, onlyIf string) (prev string, err error)

	// The decision state; only the loop goroutine touches it.
	pol   *policy.Policy
	strat strategy
	netSt netmon.State // the watcher's, without link-local addresses when the policy skips them
	ifs   map[int]*iface
	conns map[uint32]*conn
	// addrIndex is netSt's addresses by interface index (publishAddrs):
	// replaced at each change, never changed, so that the sampler and the
	// event reader (the early plan) read it too.
	addrIndex map[netip.Addr]int
	// nsubs counts the subflows of conns per interface index (the
	// gauges); dues holds the connections' timers and globalDue when the
	// steering decision next changes by itself (timers.go).
	nsubs     map[int]int
	dues      dueHeap
	globalDue time.Time
	// Resyncs through the inventory reader and sweeps (resync.go).
	sweeps    bool              // the loop runs sweeps (Run; tests reconcile at once)
	sw        *sweep            // the sweep in progress
	swAgain   bool              // reconcile everything again after it
	sweepGen  uint32            // the last adoption sweep's mark (conn.swept)
	tokenBuf  []uint32          // connTokens' list, reused by every sweep
	cmds      uint64            // path-manager commands the loop sent (sent), creates among them, queued or not (create)
	clock     uint64            // bumped by every change to a connection (touch)
	closedAt  map[uint32]uint64 // connections closed while a resync is outstanding
	dumpReq   chan dumpReq      // to the inventory reader; nil: resync at once
	dumpBusy  bool              // a dump is asked for and not back yet
	dumpAgain string            // the reason of a resync asked for meanwhile
	ids       *idAlloc
	// idPath is the allocator's record (Config.StateDir), "" for none.
	idPath string
	// agg aggregates health samples applied with applyHealth (tests);
	// the daemon's samples come aggregated by the sampler.
	agg *healthAgg
	// linkDownAt is when each link that is down went down (as this
	// process saw it), for announcements' hold-down.
	linkDownAt map[int]time.Time
	// nextHops is what each interface's table was last said to use, by
	// hopKey (routes.go), so that it is logged once per change.
	nextHops map[int]nextHop
	// failures counts subflows that failed to establish per interface
	// since the last warning about it (failures.go).
	failures map[int]*failureLog

	// kpmFailed are the in-kernel PM endpoints that could not be added,
	// with the kernel's error; while there are any, the tick tries again
	// (an announced address not on the host yet).
	kpmFailed map[netip.AddrPort]string
	// lst are the listeners behind announced ports (listeners.go).
	lst *joinListeners

	// pp applies per-interface congestion/mark and holds the telemetry
	// (nil until needed).
	pp          *pathpolicy.PathPolicy
	mp          *mptcpify.Mptcpify // nil unless attached
	ppSet       map[netip.Addr]pathpolicy.Policy
	ppCollector *metrics.PathPolicyCollector // registered while pp is loaded
	ppFailed    bool
	// ppView is what every ppCollector reads at a scrape and the loop
	// keeps current: metrics.subflow_series and the interface of each
	// local address.
	ppView *metrics.TelemetryView
	// cgroupRoot is the daemon's own cgroup v2 mount where none is
	// visible (cgroup2.go), nil otherwise.
	cgroupRoot *os.File

	// peersIn are the connections of Config.Handoff (announced peer
	// addresses, C flag, what was announced to a server-side one) by
	// token, used by the start resync only.
	peersIn map[uint32]handoffConn
	// telemetryLayoutIn is the layout of Config.HeldTelemetryFD's entries,
	// from the handoff.
	telemetryLayoutIn string
	// pmWas is the path manager setting the first process found.
	pmWas string
	// joinsWas is what net.mptcp.allow_join_initial_addr_port was before
	// this daemon (or the one it upgraded from) set it to 0; "" when it
	// did not.
	joinsWas string

	// Lifecycle.
	running   atomic.Bool
	sampler   *sampler
	reloadCh  chan reloadReq
	statusCh  chan chan status.Snapshot
	upgradeCh chan *upgrade
	ready     chan struct{}
	loopDone  chan struct{} // closed when the loop has returned
	// upgrading is the upgrade the loop accepted, for the shutdown.
	upgrading *upgrade
	// metricsAddr is where /metrics listens ("" if not), set before ready.
	metricsAddr string
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
		cfg.Logger = NewLogger(os.Stderr, cfg.Policy.Log)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	return &Controller{
		lst: newJoinListeners(cfg.NetNS, cfg.Logger, cfg.Metrics),
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics, ls: newLoopStats(cfg.Metrics), now: time.Now, useScheduler: sched.Use, sysctl: swapSysctl,
		pol: cfg.Policy, strat: strategyFor(cfg.Policy),
		ifs: map[int]*iface{}, conns: map[uint32]*conn{}, nsubs: map[int]int{}, closedAt: map[uint32]uint64{}, ids: newIDAlloc(),
		linkDownAt: map[int]time.Time{}, nextHops: map[int]nextHop{}, failures: map[int]*failureLog{},
		agg: newHealthAgg(), ppView: metrics.NewTelemetryView(),
		reloadCh: make(chan reloadReq), statusCh: make(chan chan status.Snapshot), upgradeCh: make(chan *upgrade),
		ready: make(chan struct{}), loopDone: make(chan struct{}),
	}, nil
}

// Ready is closed after the first reconciliation.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// MetricsAddr is the address /metrics listens on ("" if disabled), valid
// once Ready is closed.
func (c *Controller) MetricsAddr() string { <-c.ready; return c.metricsAddr }

// Reload applies a new, already validated policy as a diff. A change of a
// key whose reload fate is policy.Restart (side, path_manager, path_cgroup,
// mptcpify, metrics.listen, status_socket) is refused, naming the key, and
// the old policy stays; everything else takes effect.
func (c *Controller) Reload(ctx context.Context, p *policy.Policy) error {
	r := reloadReq{p: p, err: make(chan error, 1)}
	select {
	case c.reloadCh <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.loopDone:
		return errors.New("reload refused: the daemon is stopping")
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
	case <-c.loopDone:
		return status.Snapshot{}, errors.New("the daemon is stopping")
	}
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return status.Snapshot{}, ctx.Err()
	}
}
