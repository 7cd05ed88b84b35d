package controller

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/metrics"
)

// A periodic input's CPU time is its thread's: a tick that computes for
// 20 ms of CPU shows that much, and one that sleeps 20 ms (its thread off
// the CPU, as a preempted one is) shows little of its busy time. Batches
// of events have no CPU series.
func TestLoopCPUIsTheThreads(t *testing.T) {
	runtime.LockOSThread() // the input must stay on one thread to be measured
	defer runtime.UnlockOSThread()
	m := metrics.New()
	s := newLoopStats(m)

	start := s.begin(inTick, time.Time{})
	for _, cpu0, _, _ := threadUsage(); ; {
		if _, cpu, _, _ := threadUsage(); cpu-cpu0 >= 20*time.Millisecond {
			break
		}
	}
	s.end(inTick, start)
	start = s.begin(inResync, time.Time{})
	time.Sleep(20 * time.Millisecond)
	s.end(inResync, start)

	hist := func(vec *prometheus.HistogramVec, input string) *dto.Histogram {
		t.Helper()
		var out dto.Metric
		if err := vec.WithLabelValues(input).(prometheus.Histogram).Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetHistogram()
	}
	sec := func(h *dto.Histogram) time.Duration { return time.Duration(h.GetSampleSum() * float64(time.Second)) }
	for _, c := range []struct {
		input string
		spun  bool
	}{{"tick", true}, {"resync", false}} {
		cpu, busy := hist(m.LoopCPU, c.input), hist(m.LoopBusy, c.input)
		if cpu.GetSampleCount() != 1 || busy.GetSampleCount() != 1 {
			t.Fatalf("%s: %d CPU and %d busy observations, want one each", c.input, cpu.GetSampleCount(), busy.GetSampleCount())
		}
		got, wall := sec(cpu), sec(busy)
		switch {
		case got > wall:
			t.Errorf("%s: CPU %v over busy %v", c.input, got, wall)
		case c.spun && got < 20*time.Millisecond:
			t.Errorf("%s: CPU %v for 20ms of computing", c.input, got)
		case !c.spun && (wall < 20*time.Millisecond || got > wall/2):
			t.Errorf("%s: CPU %v of busy %v for a 20ms sleep", c.input, got, wall)
		}
	}
	if s.cpu[inPMEvents] != nil {
		t.Error("batches of events are timed on the thread's CPU clock too")
	}
}
