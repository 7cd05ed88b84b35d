//go:build linux

package relay_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay"
	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/gigapath/gigapath/internal/svgplot"
	"github.com/gigapath/gigapath/internal/testbed"
)

// bulkServer listens in ns (socket made inside it) and sends size bytes of
// zeros to every connection, then closes it.
func bulkServer(b testing.TB, ns *testbed.NetNS, addr string, size int64) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		buf := make([]byte, 1<<20)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; {
					n, err := c.Write(buf[:min(int64(len(buf)), left)])
					if err != nil {
						return
					}
					left -= int64(n)
				}
			}()
		}
	}()
}

// BenchmarkRelayAggregation: goodput through curl-less chain (Go client →
// local relay → MPTCP wifi+lte → proxy relay → origin) over the shaped
// testbed, steady state (the first second is skipped), divided by the sum
// of the link rates. RELAY_PLOT=FILE.svg writes the per-path throughput.
// Both relays run with --congestion cubic, the setting docs/relay.md
// recommends for the MPTCP hop (BenchmarkRelayAggregationGap compares).
func BenchmarkRelayAggregation(b *testing.B) {
	testbed.NeedRoot(b)
	bin := gigapathBin(b)
	for _, rates := range [][2]int{{100, 50}, {400, 200}} {
		b.Run(fmt.Sprintf("%d+%dmbit", rates[0], rates[1]), func(b *testing.B) {
			bed := testbed.UpT(b, testbed.Spec{ClientRouting: true,
				WiFiRate: fmt.Sprintf("%dmbit", rates[0]), LTERate: fmt.Sprintf("%dmbit", rates[1])})
			if err := bed.EnableKernelPM(); err != nil {
				b.Fatal(err)
			}
			dur := 5 * time.Second
			size := int64(float64(rates[0]+rates[1]) * 1e6 / 8 * dur.Seconds() * 1.5) // more than fits in dur
			bulkServer(b, bed.Origin, bed.OriginAddr.String()+":5001", size)
			start(b, bed.Proxy, bin, "relay", "--listen", bed.ProxyAddr.String()+":1080", "--allow-client", "10.201.0.0/16", "--congestion", "cubic")
			waitListen(b, bed.Proxy, "1080")
			start(b, bed.Client, bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://"+bed.ProxyAddr.String()+":1080", "--congestion", "cubic")
			waitListen(b, bed.Client, "1080")
			// Averages over the b.N runs; link rates are what the client's
			// interfaces received (headers, retransmissions and MPTCP
			// reinjections included), goodput is what the app read.
			var eff, wifi, lte float64
			var k int
			var samples []sample
			for i := 0; i < b.N; i++ {
				var e float64
				e, samples = aggregate(b, bed, dur, float64(rates[0]+rates[1])*1e6)
				eff += e / float64(b.N)
				for _, p := range samples {
					if p.t > time.Second {
						wifi, lte, k = wifi+p.wifi, lte+p.lte, k+1
					}
				}
			}
			b.ReportMetric(eff*100, "%-of-sum")
			if k > 0 {
				b.ReportMetric(wifi/float64(k), "wifi-Mbit/s")
				b.ReportMetric(lte/float64(k), "lte-Mbit/s")
			}
			if p := os.Getenv("RELAY_PLOT"); p != "" && rates[0] == 400 {
				if err := os.WriteFile(p, plotSVG(samples, fmt.Sprintf("through the relay chain, wifi %d + lte %d Mbit/s (tbf)", rates[0], rates[1])), 0o644); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type sample struct {
	t         time.Duration
	wifi, lte float64 // Mbit/s over the last interval
}

// aggregate downloads through the chain for dur and returns the steady-state
// goodput (bytes the client read after the first second) / sumBits.
func aggregate(b *testing.B, bed *testbed.Bed, dur time.Duration, sumBits float64) (float64, []sample) {
	var c net.Conn
	if err := bed.Client.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:1080"); return err }); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	a, _ := socks5.ParseAddr(bed.OriginAddr.String() + ":5001")
	if _, err := relay.ClientHandshake(c, "", "", a); err != nil {
		b.Fatal(err)
	}
	var got int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				atomicAdd(&got, int64(n))
			}
			if err != nil {
				return
			}
		}
	}()
	var samples []sample
	t0 := time.Now()
	prev, _ := bed.Counters()
	var mark int64
	var markT time.Time
	for time.Since(t0) < dur {
		time.Sleep(200 * time.Millisecond)
		cur, err := bed.Counters()
		if err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		dt := 0.2
		if len(samples) > 0 {
			dt = (el - samples[len(samples)-1].t).Seconds()
		}
		samples = append(samples, sample{t: el,
			wifi: float64(cur[testbed.WiFi].RxBytes-prev[testbed.WiFi].RxBytes) * 8 / dt / 1e6,
			lte:  float64(cur[testbed.LTE].RxBytes-prev[testbed.LTE].RxBytes) * 8 / dt / 1e6})
		prev = cur
		if markT.IsZero() && el >= time.Second {
			mark, markT = atomicLoad(&got), time.Now()
		}
	}
	good := float64(atomicLoad(&got)-mark) * 8 / time.Since(markT).Seconds()
	c.Close()
	<-done
	return good / sumBits, samples
}

// plotSVG draws throughput over time per path (and their sum) as an SVG.
func plotSVG(s []sample, title string) []byte {
	const w, h, l, r, top, bot = 720.0, 360.0, 60.0, 20.0, 40.0, 40.0
	maxY, maxT := 1.0, 1.0
	for _, p := range s {
		maxY = max(maxY, p.wifi+p.lte)
		maxT = max(maxT, p.t.Seconds())
	}
	maxY *= 1.1
	x := func(t float64) float64 { return l + t/maxT*(w-l-r) }
	y := func(v float64) float64 { return h - bot - v/maxY*(h-top-bot) }
	sb := svgplot.New(w, h, l, r, top, bot, title)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		sb.HGrid(y(v), 5, fmt.Sprintf("%.0f", v))
	}
	for t := 0.0; t <= maxT; t++ {
		sb.Printf(`<text x="%.0f" y="%.0f">%.0fs</text>`+"\n", x(t)-6, h-bot+16, t)
	}
	sb.Printf(`<text x="5" y="%.0f">Mbit/s</text>`+"\n", top-8)
	for _, series := range []struct {
		name, color string
		v           func(sample) float64
	}{{"wifi0", "#1f77b4", func(p sample) float64 { return p.wifi }}, {"lte0", "#d62728", func(p sample) float64 { return p.lte }},
		{"sum", "#2ca02c", func(p sample) float64 { return p.wifi + p.lte }}} {
		var pts []string
		for _, p := range s {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.t.Seconds()), y(series.v(p))))
		}
		sb.Polyline(series.color, pts)
	}
	for i, n := range []string{"wifi0", "lte0", "sum"} {
		c := []string{"#1f77b4", "#d62728", "#2ca02c"}[i]
		sb.Printf(`<text x="%.0f" y="20" fill="%s">%s</text>`+"\n", w-200+float64(i)*60, c, n)
	}
	return sb.Bytes()
}

// BenchmarkRelayIdleConns: 10,000 concurrent idle connections through the
// relay process; reports its RSS growth per connection.
func BenchmarkRelayIdleConns(b *testing.B) {
	testbed.NeedRoot(b)
	bin := gigapathBin(b)
	// A relay holds 2 fds per connection, so 10,000 connections do not fit
	// one process under a 20,000 open-files hard limit (this container's,
	// which cannot be raised). Two relay processes share the port with
	// --reuseport (the kernel spreads the connections), the destination is
	// a python process of its own, and this process holds only the client
	// ends. RSS per connection = the growth of both relays together / n.
	n := 10000
	lim := syscall.Rlimit{Cur: uint64(n) + 1000, Max: uint64(n) + 1000}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatal(err)
		}
		n = min(n, int(lim.Max-1000))
	}
	ns := newNS(b, "bi")
	ns.MustRun("sysctl", "-qw", "net.core.somaxconn=8192")
	start(b, ns, "python3", "-c", pyHold, "127.0.0.1", "5001")
	waitListen(b, ns, "5001")
	relays := []*proc{
		start(b, ns, bin, "relay", "--listen", "127.0.0.1:1080", "--allow-dest", "127.0.0.0/8", "--reuseport"),
		start(b, ns, bin, "relay", "--listen", "127.0.0.1:1080", "--allow-dest", "127.0.0.0/8", "--reuseport"),
	}
	waitListen(b, ns, "1080")
	rss := func() (sum int64) {
		for _, p := range relays {
			sum += rssKiB(b, p.cmd.Process.Pid)
		}
		return sum
	}
	var worst float64
	for i := 0; i < b.N; i++ {
		rss0 := rss()
		conns := make([]net.Conn, 0, n)
		dst, _ := socks5.ParseAddr("127.0.0.1:5001")
		for j := 0; j < n; j++ {
			var c net.Conn
			if err := ns.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:1080"); return err }); err != nil {
				b.Fatalf("conn %d: %v", j, err)
			}
			if _, err := relay.ClientHandshake(c, "", "", dst); err != nil {
				b.Fatalf("conn %d: %v", j, err)
			}
			conns = append(conns, c)
		}
		time.Sleep(500 * time.Millisecond)
		rss1 := rss()
		// The first round (fresh heap) is the honest cost; later rounds
		// reuse memory. Report the largest.
		worst = max(worst, float64(rss1-rss0)*1024/float64(n))
		b.ReportMetric(worst, "B-RSS/conn")
		b.ReportMetric(float64(n), "conns")
		for _, c := range conns {
			c.Close()
		}
		// Let both ends close before the next round.
		for k := 0; k < 100 && openFDs(b) > 1000; k++ {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
	}
}

// pyHold accepts TCP connections and holds each until the peer closes it.
const pyHold = `
import asyncio, sys
async def hold(r, w):
    while await r.read(4096):
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(hold, sys.argv[1], int(sys.argv[2]), backlog=8192)
    await srv.serve_forever()
asyncio.run(main())
`

func rssKiB(b testing.TB, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			k, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return k
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func atomicAdd(p *int64, d int64) { atomic.AddInt64(p, d) }
func atomicLoad(p *int64) int64   { return atomic.LoadInt64(p) }
