package controller

import (
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
)

// TelemetrySubflows is the daemon's telemetry map size.
const TelemetrySubflows = telemetrySubflows

// PeriodicResync is how often the daemon resyncs at rest.
const PeriodicResync = periodicResync

// HealthBench runs the health sampling of a controller with policy p on
// the namespace state st against real sources, for BenchmarkHealthSample.
type HealthBench struct {
	c    *Controller
	s    *sampler
	last healthBatch
}

func NewHealthBench(p *policy.Policy, st netmon.State, inv inventory, pp *pathpolicy.PathPolicy) *HealthBench {
	c, _ := New(Config{Policy: p, Metrics: metrics.New()})
	c.netSt = st
	c.ifs = buildIfaces(p, st, nil, time.Now())
	s := newSampler(inv, time.Now, func(string, time.Duration) {})
	s.tel.Store(pp)
	return &HealthBench{c: c, s: s}
}

// Read reads one sample from the telemetry map or from sock_diag and
// returns the number of subflows in it and where it came from.
func (h *HealthBench) Read(telemetry bool) (int, string, error) {
	var b healthBatch
	if telemetry {
		b = h.s.sample()
	} else {
		b = h.s.fromDiag(nil)
	}
	h.last = b
	return len(b.subs), b.source, b.err
}

// Apply applies the last sample read as the event loop does.
func (h *HealthBench) Apply() { h.c.applyHealth(h.last.subs, time.Now()) }

// ReadFollowed reads the list of followed subflows a daemon with state
// directory dir left for the namespace whose cookie is ns.
func ReadFollowed(dir string, ns uint64) (map[uint64]struct{}, error) {
	boot, err := bootID()
	if err != nil {
		return nil, err
	}
	return readFollowed(followedFile(dir, ns), boot)
}

// EventPace is the least time between two reads of events with
// path_manager: kernel or the create thread.
const EventPace = eventPace
