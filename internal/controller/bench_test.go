//go:build linux

package controller_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// echoServer accepts MPTCP connections on the proxy's service address and
// echoes; it runs until the bed closes.
func echoServer(b *testing.B, bed *testbed.Bed, port int) {
	testbed.ServeT(b, bed.Proxy, "tcp", netip.AddrPortFrom(bed.ProxyAddr, uint16(port)).String(), true, testbed.Echo)
}

// latencies opens n connections one after the other (each sends a byte and
// waits for the echo, so it reaches ESTABLISHED) and returns, per
// connection, the time from its ESTABLISHED event to the SUB_ESTABLISHED
// event of its lte subflow, as the client namespace's event stream shows.
func latencies(b *testing.B, bed *testbed.Bed, port, n int) []time.Duration {
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer el.Close()
	var mu sync.Mutex
	est := map[uint32]time.Time{}
	var lat []time.Duration
	stop := testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, _ error) bool {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			switch {
			case e.Type == pathmgr.EventEstablished:
				est[e.Token] = now
			case e.Type == pathmgr.EventSubEstablished && e.Local.Addr() == bed.LTEAddr:
				if t, ok := est[e.Token]; ok {
					lat = append(lat, now.Sub(t))
					delete(est, e.Token)
				}
			}
		}
		return true
	})
	defer stop() // before el.Close
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		var c net.Conn
		err := bed.Client.Do(func() error {
			var d net.Dialer
			d.SetMultipathTCP(true)
			var err error
			c, err = d.Dial("tcp", netip.AddrPortFrom(bed.ProxyAddr, uint16(port)).String())
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte{1})
		io.ReadFull(c, make([]byte, 1))
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(lat) >= n
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// lteWatch counts what an mptcp_pm event listener of its own in the
// client namespace sees: the lte subflows established, and its receive
// errors (events lost).
type lteWatch struct {
	mu           sync.Mutex
	served, lost int
}

// watchLTESubflows starts an lteWatch; stop ends it and closes its
// listener (the benchmark's end does too).
func watchLTESubflows(b *testing.B, bed *testbed.Bed) (w *lteWatch, stop func()) {
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	w = &lteWatch{}
	stopCollect := testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.lost++
		}
		for _, e := range evs {
			if e.Type == pathmgr.EventSubEstablished && e.Local.Addr() == bed.LTEAddr {
				w.served++
			}
		}
		return true
	})
	return w, func() { stopCollect(); el.Close() }
}

// counts is how many lte subflows were established and events lost so far.
func (w *lteWatch) counts() (served, lost int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.served, w.lost
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkReactionLatency: ESTABLISHED → lte subflow established, the
// daemon (userspace PM) beside the in-kernel PM on the same topology, in
// one run. Reported as p50/p99 microseconds per mode and their ratio.
func BenchmarkReactionLatency(b *testing.B) {
	const n = 200
	// In-kernel PM: testbed client routing, a subflow endpoint for lte.
	kbed := testbed.UpT(b, testbed.Spec{ClientRouting: true})
	if err := kbed.EnableKernelPM(); err != nil {
		b.Fatal(err)
	}
	echoServer(b, kbed, 7000)
	// Daemon: main-table defaults only, the daemon makes the source routing.
	dbed := testbed.UpT(b, testbed.Spec{})
	dbed.Client.MustRun("ip", "route", "add", "default", "via", dbed.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	dbed.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8")
	echoServer(b, dbed, 7000)
	stop := benchController(b, dbed)
	defer stop()

	b.ResetTimer()
	var k, d []time.Duration
	for i := 0; i < b.N; i++ {
		k = append(k, latencies(b, kbed, 7000, n)...)
		d = append(d, latencies(b, dbed, 7000, n)...)
	}
	b.StopTimer()
	if len(k) == 0 || len(d) == 0 {
		b.Fatalf("no samples: kernel %d, daemon %d", len(k), len(d))
	}
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	b.ReportMetric(us(pct(k, 0.5)), "kernel-p50-µs")
	b.ReportMetric(us(pct(k, 0.99)), "kernel-p99-µs")
	b.ReportMetric(us(pct(d, 0.5)), "daemon-p50-µs")
	b.ReportMetric(us(pct(d, 0.99)), "daemon-p99-µs")
	b.ReportMetric(float64(len(d))/float64(b.N*n), "daemon-served")
	b.ReportMetric(float64(len(k))/float64(b.N*n), "kernel-served")
	b.Logf("kernel p50 %v p99 %v (%d), daemon p50 %v p99 %v (%d), ratio p50 %.2f",
		pct(k, .5), pct(k, .99), len(k), pct(d, .5), pct(d, .99), len(d), float64(pct(d, .5))/float64(pct(k, .5)))
}

// BenchmarkChurn: connections opened by 64 concurrent clients, each sending
// a byte and waiting for the echo, kept open; the rate counts connections
// whose lte subflow the daemon established (all of them must be).
func BenchmarkChurn(b *testing.B) {
	const n = 2000
	bed := manyConnsBed(b)
	echoServer(b, bed, 7001)
	stop := benchController(b, bed)
	defer stop()
	watch, stopWatch := watchLTESubflows(b, bed)
	defer stopWatch()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	per := n / 64
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The whole worker runs on one thread inside the namespace, so
			// each dial costs no namespace switch.
			bed.Client.Do(func() error {
				var d net.Dialer
				d.SetMultipathTCP(true)
				for i := 0; i < per; i++ {
					c, err := d.Dial("tcp", netip.AddrPortFrom(bed.ProxyAddr, 7001).String())
					if err != nil {
						continue
					}
					c.Write([]byte{1})
					io.ReadFull(c, make([]byte, 1))
					cmu.Lock()
					conns = append(conns, c)
					cmu.Unlock()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	total := len(conns)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if s, _ := watch.counts(); s >= total {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	el2 := time.Since(start)
	b.StopTimer()
	served, lost := watch.counts()
	for _, c := range conns {
		c.Close()
	}
	b.ReportMetric(float64(served)/el2.Seconds(), "served-conn/s")
	b.ReportMetric(float64(total)/el2.Seconds(), "opened-conn/s")
	b.Logf("%d connections opened, %d got their lte subflow in %v (%.0f/s), event overruns seen by the observer: %d",
		total, served, el2, float64(served)/el2.Seconds(), lost)
}

var _ = fmt.Sprint
var _ = runtime.NumCPU
