package controller

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkStateMemory measures the heap the controller's state takes for
// 10,000 connections with two subflows each (adopted from an inventory
// listing, as after a restart), and the time of one adopt+reconcile pass.
func BenchmarkStateMemory(b *testing.B) {
	const n = 10000
	list := make([]pathmgr.Connection, n)
	srv := netip.MustParseAddrPort("10.201.0.1:443")
	for i := range list {
		l1 := netip.AddrPortFrom(netip.MustParseAddr("10.201.1.2"), uint16(10000+i%50000))
		l2 := netip.AddrPortFrom(netip.MustParseAddr("10.201.2.2"), uint16(10000+i%50000))
		var est pathmgr.TCPState = 1 // TCP_ESTABLISHED
		list[i] = pathmgr.Connection{Token: uint32(i + 1), Local: l1, Remote: srv, State: est,
			Subflows: []pathmgr.SubflowInfo{{Local: l1, Remote: srv, State: est}, {Local: l2, Remote: srv, State: est, LocalID: 4}}}
	}
	p := testPolicy(b, "aggregate")
	var heap uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, _ := New(Config{Policy: p, Metrics: metrics.New()})
		c.pm = nopPM{}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		c.adopt(list, time.Now())
		c.reconcileAll()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		heap = m1.HeapAlloc - m0.HeapAlloc
		runtime.KeepAlive(c)
	}
	b.ReportMetric(float64(heap)/(1<<20), "MiB/10k-conns")
	b.ReportMetric(float64(heap)/n, "B/conn")
}

type nopPM struct{}

func (nopPM) CreateSubflow(uint32, pathmgr.Endpoint, netip.AddrPort) error { return nil }
func (nopPM) DestroySubflow(uint32, pathmgr.Subflow) error                 { return nil }
func (nopPM) SetSubflowBackup(uint32, pathmgr.Subflow, bool) error         { return nil }
func (nopPM) Announce(uint32, pathmgr.Endpoint) error                      { return nil }
func (nopPM) Remove(uint32, uint8) error                                   { return nil }
