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
// 20 ms shows about that much, and one that sleeps 20 ms (its thread off
// the CPU: what a tick that waits for a CPU looks like to this clock)
// shows almost none, while both are 20 ms busy. Batches of events have no CPU series.
func TestLoopCPUIsTheThreads(t *testing.T) {
	runtime.LockOSThread() // the input must stay on one thread to be measured
	defer runtime.UnlockOSThread()
	m := metrics.New()
	s := newLoopStats(m)

	start := s.begin(inTick, time.Time{})
	for t0 := time.Now(); time.Since(t0) < 20*time.Millisecond; {
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
	for _, c := range []struct {
		input          string
		cpuMin, cpuMax time.Duration
	}{
		{"tick", 15 * time.Millisecond, time.Second},
		{"resync", 0, 5 * time.Millisecond},
	} {
		cpu, busy := hist(m.LoopCPU, c.input), hist(m.LoopBusy, c.input)
		got := time.Duration(cpu.GetSampleSum() * float64(time.Second))
		if cpu.GetSampleCount() != 1 || got < c.cpuMin || got > c.cpuMax {
			t.Errorf("%s: %d CPU observations summing to %v, want one in [%v, %v]", c.input, cpu.GetSampleCount(), got, c.cpuMin, c.cpuMax)
		}
		if b := time.Duration(busy.GetSampleSum() * float64(time.Second)); b < 20*time.Millisecond {
			t.Errorf("%s: busy %v, want at least 20ms", c.input, b)
		}
	}
	if s.cpu[inPMEvents] != nil {
		t.Error("batches of events are timed on the thread's CPU clock too")
	}
}
