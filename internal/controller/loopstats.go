package controller

import (
	"context"
	"runtime/trace"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/pathmgr"
)

// loopInput is what the event loop serves, for its wait and busy metrics
// (metrics.LoopWait, metrics.LoopBusy); the order is metrics.LoopInputs'.
type loopInput int

const (
	inPMEvents loopInput = iota
	inCreateFailure
	inInterface
	inHealth
	inTick
	inResync
	inReload
	inStatus
	nLoopInputs
)

// loopStats times the event loop on the real clock (never the injected
// one, which decisions use): how long each input waited for it and how
// long it spent on each, during which it served nothing else.
type loopStats struct {
	wait, busy [nLoopInputs]prometheus.Observer
	// cpu and preempted: the loop thread's CPU time and the times the
	// kernel preempted it on the inputs of metrics.LoopCPUInputs (nil for
	// the others: two system calls at each end of an input are not spent
	// on every batch of events); tid, cpu0 and pre0 are the thread and
	// its counts when the input began.
	cpu       [nLoopInputs]prometheus.Observer
	preempted [nLoopInputs]prometheus.Counter
	tid       int
	cpu0      time.Duration
	pre0      int64
	// The counters the loop bumps per event and per new connection,
	// resolved once (a label lookup hashes the values every time).
	events  [16]prometheus.Counter // by event type, filled as types come
	creates prometheus.Counter
	// region marks the input being served in an execution trace
	// (GIGAPATH_PROFILE=trace; a no-op otherwise), so that `go tool
	// trace` shows where a long one lost its thread.
	region *trace.Region
}

// event is the events counter of type t.
func (s *loopStats) event(m *metrics.Metrics, t pathmgr.EventType) prometheus.Counter {
	if int(t) >= len(s.events) {
		return m.Events.WithLabelValues(t.String())
	}
	if s.events[t] == nil {
		s.events[t] = m.Events.WithLabelValues(t.String())
	}
	return s.events[t]
}

func newLoopStats(m *metrics.Metrics) *loopStats {
	s := &loopStats{creates: m.Commands.WithLabelValues("subflow_create")}
	for i, name := range metrics.LoopInputs[:nLoopInputs] {
		s.wait[i] = m.LoopWait.WithLabelValues(name)
		s.busy[i] = m.LoopBusy.WithLabelValues(name)
		if slices.Contains(metrics.LoopCPUInputs, name) {
			s.cpu[i] = m.LoopCPU.WithLabelValues(name)
			s.preempted[i] = m.LoopPreempted.WithLabelValues(name)
		}
	}
	return s
}

// begin records how long in waited since it was ready (zero: unknown) and
// returns the time the loop took it up, for end.
func (s *loopStats) begin(in loopInput, ready time.Time) time.Time {
	now := time.Now()
	if !ready.IsZero() {
		s.wait[in].Observe(now.Sub(ready).Seconds())
	}
	s.region = trace.StartRegion(context.Background(), metrics.LoopInputs[in])
	if s.cpu[in] != nil {
		s.tid, s.cpu0, s.pre0, _ = threadUsage()
	}
	return now
}

// end records how long the loop spent on in since start, and for the
// inputs that have them, its thread's CPU time and preemptions. The loop
// goroutine is not locked to its thread: when it changed threads during
// the input (it parked and was resumed elsewhere) nothing is recorded, the
// differences being between two threads, so the CPU histogram's count can
// be lower than busy's; when it parked and came back to the same thread,
// what that thread ran meanwhile counts as the loop's. The loop's inputs
// park only on a full channel, so both are rare.
func (s *loopStats) end(in loopInput, start time.Time) {
	s.region.End()
	// The thread's clocks are read inside the wall-clock interval, at
	// both ends, so that the CPU time never exceeds busy.
	var (
		tid int
		cpu time.Duration
		pre int64
		ok  bool
	)
	if s.cpu[in] != nil {
		tid, cpu, pre, ok = threadUsage()
	}
	wall := time.Since(start)
	s.busy[in].Observe(wall.Seconds())
	// One thread's CPU time over an interval cannot exceed the interval:
	// if it does, the readings are not of one thread's interval.
	if ok && tid == s.tid && cpu >= s.cpu0 && cpu-s.cpu0 <= wall {
		s.cpu[in].Observe((cpu - s.cpu0).Seconds())
		s.preempted[in].Add(float64(pre - s.pre0))
	}
}
