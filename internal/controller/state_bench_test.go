package controller

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/netmon"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkStateMemory measures the heap the controller's state takes for
// 10,000 connections (adopted from an inventory listing, as after a
// restart), and the time of one adopt+reconcile pass:
//   - client: two subflows each (side client, nothing to create: the
//     policy's interfaces are not there);
//   - server: a carrier proxy's connection (side server, userspace PM,
//     announce: lte1): two subflows, one of them to an address the peer
//     announced (a peer entry), and the daemon's announcement of lte1's
//     address (an announcement entry).
func BenchmarkStateMemory(b *testing.B) {
	const n = 10000
	b.Run("side=client", func(b *testing.B) {
		list := make([]pathmgr.Connection, n)
		srv := netip.MustParseAddrPort("10.201.0.1:443")
		for i := range list {
			l1 := netip.AddrPortFrom(netip.MustParseAddr("10.201.1.2"), uint16(10000+i%50000))
			l2 := netip.AddrPortFrom(netip.MustParseAddr("10.201.2.2"), uint16(10000+i%50000))
			list[i] = pathmgr.Connection{Token: uint32(i + 1), Local: l1, Remote: srv, State: tcpEstablished,
				Subflows: []pathmgr.SubflowInfo{{Local: l1, Remote: srv, State: tcpEstablished},
					{Local: l2, Remote: srv, State: tcpEstablished, LocalID: 4}}}
		}
		stateMemory(b, testPolicy(b, "aggregate"), netmon.State{}, list, nil)
	})
	b.Run("side=server", func(b *testing.B) {
		p, err := policy.Parse([]byte("side: server\npath_manager: userspace\ninterfaces:\n  - name: lte1\n    role: lte\nannounce:\n  - interface: lte1\n"))
		if err != nil {
			b.Fatal(err)
		}
		st := netmon.State{Links: map[int]netmon.Link{5: {Index: 5, Name: "lte1", AdminUp: true, OperUp: true}},
			Addrs: map[int][]netmon.Addr{5: {{Index: 5, Prefix: netip.MustParsePrefix("10.202.0.1/24")}}}}
		own := netip.MustParseAddrPort("10.201.0.1:443")
		lte := netip.MustParseAddrPort("10.202.0.1:443")
		list := make([]pathmgr.Connection, n, n+1)
		for i := range list {
			port := uint16(10000 + i%50000)
			r1 := netip.AddrPortFrom(netip.MustParseAddr("10.203.1.2"), port) // the phone's first path
			r2 := netip.AddrPortFrom(netip.MustParseAddr("10.203.2.2"), port) // the address it announced
			list[i] = pathmgr.Connection{Token: uint32(i + 1), Local: own, Remote: r1, State: tcpEstablished,
				Subflows: []pathmgr.SubflowInfo{{Local: own, Remote: r1, State: tcpEstablished},
					{Local: lte, Remote: r2, State: tcpEstablished, LocalID: 1, RemoteID: 2}}}
		}
		list = append(list, pathmgr.Connection{Local: netip.AddrPortFrom(netip.IPv4Unspecified(), 443), State: tcpListen})
		stateMemory(b, p, st, list, func(b *testing.B, c *Controller) {
			cn := c.conns[1]
			if cn == nil || !cn.server || len(cn.ann) != 1 || len(cn.peers) != 1 || len(cn.subs) != 2 {
				b.Fatalf("connection 1: %+v, want server side with one announcement, one peer, two subflows", cn)
			}
		})
	})
}

// tcpListen is sock_diag's TCP_LISTEN (include/net/tcp_states.h;
// tcpEstablished is in sampler.go).
const tcpListen pathmgr.TCPState = 10

// stateMemory adopts list into a controller with policy p and network
// state st, reconciles every connection, and reports the heap that takes;
// check looks at the result.
func stateMemory(b *testing.B, p *policy.Policy, st netmon.State, list []pathmgr.Connection, check func(*testing.B, *Controller)) {
	conns := 0
	for _, k := range list {
		if k.State == tcpEstablished {
			conns++
		}
	}
	var heap uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, _ := New(Config{Policy: p, Metrics: metrics.New()})
		c.pm = nopPM{}
		c.netSt = st
		c.ifs = buildIfaces(p, st, nil, time.Now())
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		c.adopt(list, time.Now())
		c.reconcileAll()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		heap = m1.HeapAlloc - m0.HeapAlloc
		if check != nil {
			check(b, c)
		}
		runtime.KeepAlive(c)
	}
	b.ReportMetric(float64(heap)/(1<<20), "MiB/10k-conns")
	b.ReportMetric(float64(heap)/float64(conns), "B/conn")
}

type nopPM struct{}

func (nopPM) CreateSubflow(uint32, pathmgr.Endpoint, netip.AddrPort) error { return nil }
func (nopPM) DestroySubflow(uint32, pathmgr.Subflow) error                 { return nil }
func (nopPM) SetSubflowBackup(uint32, pathmgr.Subflow, bool) error         { return nil }
func (nopPM) Announce(uint32, pathmgr.Endpoint) error                      { return nil }
func (nopPM) Remove(uint32, uint8) error                                   { return nil }
