//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkHealthSample: one health sample of every subflow with 10,000
// live MPTCP connections (two subflows each: the in-kernel PM's lte
// endpoint) in the client namespace, read from a sock_diag dump (before:
// on the event loop, every second under handover and priority) and from
// the sockops telemetry map (after: on the sampler's goroutine), and the
// part that stays on the loop now (applying the sample). Compare the
// sub-benchmarks of one run: the ratios, not the absolute numbers.
func BenchmarkHealthSample(b *testing.B) {
	if err, _ := pathpolicy.Supported(); err != nil {
		b.Skipf("sockops program cannot load here: %v", err)
	}
	const n = 10000
	bed, stopEcho := echoBed(b)
	defer stopEcho()
	bed.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "0")
	bed.Client.MustRun("ip", "mptcp", "endpoint", "add", bed.LTEAddr.String(), "dev", "lte0", "subflow")
	pp, err := pathpolicy.Load(pathpolicy.Options{NetNS: bed.Client.Path(), NoSendShare: true, MaxSubflows: controller.TelemetrySubflows})
	if err != nil {
		b.Fatal(err)
	}
	defer pp.Close()
	conns := openEchoConns(b, bed, n)
	defer closeAll(conns)
	inv, err := pathmgr.OpenInventory(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer inv.Close()
	w, err := netmon.New(netmon.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "priority", "")))
	if err != nil {
		b.Fatal(err)
	}
	st := readyState(b, w)
	h := controller.NewHealthBench(p, st, inv, pp)
	// Both sources must see every subflow before timing them.
	waitSubflows(b, h, 2*n)

	for _, tc := range []struct {
		name      string
		telemetry bool
		apply     bool
	}{{"read=sock_diag", false, false}, {"read=telemetry", true, false}, {"apply_on_loop", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			if _, src, err := h.Read(tc.telemetry); err != nil || (tc.telemetry && src != "telemetry") {
				b.Fatalf("source %s: %v", src, err)
			}
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if tc.apply {
					h.Apply()
					continue
				}
				if got, _, err := h.Read(tc.telemetry); err != nil || got < 2*n {
					b.Fatalf("sample of %d subflows, %v; want %d", got, err, 2*n)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(b.N)/(1<<20), "MiB-alloc/op")
		})
	}
}

// readyState runs the watcher until it has the namespace's state.
func readyState(b *testing.B, w *netmon.Watcher) netmon.State {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-w.Ready():
	case err := <-done:
		b.Fatal(err)
	}
	return w.State()
}

// waitSubflows waits until both sources see want subflows.
func waitSubflows(b *testing.B, h *controller.HealthBench, want int) {
	deadline := time.Now().Add(60 * time.Second)
	for _, tel := range []bool{false, true} {
		for {
			got, _, err := h.Read(tel)
			if err != nil {
				b.Fatal(err)
			}
			if got >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("telemetry %v: %d subflows, want %d", tel, got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
