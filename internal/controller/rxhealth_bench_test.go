//go:build linux

package controller_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkRxHealth measures what the receive-side health signals look like
// on the phone while it downloads over wifi: per 1 s window, the reorder
// share delta(rcv_ooopack)/delta(data_segs_in) and rcv_rtt, as the daemon
// computes them, for a paced light download (~6.5 Mbit/s, 6 windows) and
// a bulk one (30 windows), each on a fresh connection, under 0, 1, 5 and
// 20 % loss on wifi (both directions, tc BPF drop). The link is tbf-shaped
// at 40 Mbit/s (latency 50 ms), as in the integration tests. There is no
// daemon and no second path: each connection stays on its wifi subflow.
// Results are logged as a table (run with -v) and the bulk medians
// reported as metrics.
//
// The loss program drops whole skbs at the receiving end's ingress, and
// veth carries TSO skbs of up to 64 KiB: one drop can lose a burst of
// segments.
func BenchmarkRxHealth(b *testing.B) {
	bed := testbed.UpT(b, testbed.Spec{WiFiRate: "40mbit", LTERate: "40mbit"})
	bed.Client.MustRun("ip", "route", "add", "default", "via", bed.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf)
	var stop atomic.Bool
	b.Cleanup(func() { stop.Store(true) })
	source := func(chunk int, every time.Duration) func(net.Conn) {
		return func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, chunk)
			for !stop.Load() {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write(buf); err != nil {
					if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
						return
					}
				}
				if every > 0 {
					time.Sleep(every)
				}
			}
		}
	}
	const lightPort, bulkPort = 5311, 5312
	testbed.ServeT(b, bed.Proxy, "tcp", "0.0.0.0:"+strconv.Itoa(lightPort), true, source(8<<10, 10*time.Millisecond))
	testbed.ServeT(b, bed.Proxy, "tcp", "0.0.0.0:"+strconv.Itoa(bulkPort), true, source(64<<10, 0))
	inv, err := pathmgr.OpenInventory(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer inv.Close()
	download := func(port int) net.Conn {
		c := testbed.DialMPTCPT(b, bed.Client, "tcp", bed.WiFiAddr.String(), net.JoinHostPort(bed.ProxyAddr.String(), strconv.Itoa(port)))
		go io.Copy(io.Discard, c)
		return c
	}
	// counters returns the wifi subflow's receive counters of the
	// connection from local.
	counters := func(local net.Addr) (segs, ooo uint32, rtt time.Duration, ok bool) {
		list, err := inv.Connections(pathmgr.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		lp := netip.MustParseAddrPort(local.String())
		for _, k := range list {
			for _, s := range k.Subflows {
				if s.Local.Addr().Unmap() == lp.Addr() && s.Local.Port() == lp.Port() {
					return s.DataSegsIn, s.RcvOOOPack, s.RcvRTT, true
				}
			}
		}
		return 0, 0, 0, false
	}
	type stats struct{ reorder, rtt, segs []float64 }
	// measure samples every second, as the daemon does, and keeps the
	// windows in which data arrived.
	measure := func(c net.Conn, windows int) stats {
		var st stats
		s0, o0, _, _ := counters(c.LocalAddr())
		for i := 0; i < windows; i++ {
			time.Sleep(time.Second)
			s1, o1, rtt, ok := counters(c.LocalAddr())
			if !ok {
				b.Fatalf("the download from %v is gone", c.LocalAddr())
			}
			if s1 > s0 {
				st.reorder = append(st.reorder, 100*float64(o1-o0)/float64(s1-s0))
				st.rtt = append(st.rtt, float64(rtt.Microseconds())/1000)
				st.segs = append(st.segs, float64(s1-s0))
			}
			s0, o0 = s1, o1
		}
		return st
	}
	// pct is the p-th percentile (nearest rank) of v.
	pct := func(v []float64, p int) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[(len(v)-1)*p/100]
	}
	share := func(v []float64, above float64) int {
		n := 0
		for _, x := range v {
			if x > above {
				n++
			}
		}
		return n
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		rows := []string{
			"| download | wifi loss | windows | reorder % p50 / p90 / max | windows > 10 / 20 / 30 % | rcv_rtt ms p50 / p90 / max | data segments/s p50 |",
			"|---|---|---|---|---|---|---|",
		}
		row := func(what string, loss float64, st stats) {
			if len(st.segs) == 0 {
				rows = append(rows, fmt.Sprintf("| %s | %g %% | 0 | | | | |", what, loss))
				return
			}
			r := st.reorder
			rows = append(rows, fmt.Sprintf("| %s | %g %% | %d | %.1f / %.1f / %.1f | %d / %d / %d | %.1f / %.1f / %.1f | %.0f |",
				what, loss, len(r), pct(r, 50), pct(r, 90), pct(r, 100), share(r, 10), share(r, 20), share(r, 30),
				pct(st.rtt, 50), pct(st.rtt, 90), pct(st.rtt, 100), pct(st.segs, 50)))
			if what == "bulk" {
				b.ReportMetric(pct(r, 50), fmt.Sprintf("reorder%%p50@%g%%loss", loss))
			}
		}
		for _, loss := range []float64{0, 1, 5, 20} {
			if err := bed.SetLoss(testbed.WiFi, loss); err != nil {
				b.Fatal(err)
			}
			light := download(lightPort)
			time.Sleep(2 * time.Second)
			row("light (6.5 Mbit/s paced)", loss, measure(light, 6))
			light.Close()
			bulk := download(bulkPort)
			time.Sleep(2 * time.Second)
			row("bulk", loss, measure(bulk, 30))
			bulk.Close()
		}
		if err := bed.SetLoss(testbed.WiFi, 0); err != nil {
			b.Fatal(err)
		}
		for _, r := range rows {
			b.Log(r)
		}
	}
}
