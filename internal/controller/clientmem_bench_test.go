//go:build linux

package controller_test

import (
	"context"
	"flag"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// BenchmarkClientMemory: what a client's daemon holds over a long run of
// connections that come and go, with the collector it sets for itself
// (GOGC 400, cmd/gigapath/run.go) and with the Go runtime's default
// (GOGC=100 in its environment), one after the other in every op, in
// turn first, on the same bed and the same load. The daemon is the built
// binary (userspace PM, aggregate, wifi0 + lte0, managed routing). The
// load opens CLIENT_MEMORY_RATE MPTCP connections a second (default 300)
// to an echo server for CLIENT_MEMORY_SECONDS (default 60); each sends a
// byte and waits for its echo, and CLIENT_MEMORY_LIVE of them (default
// 256) stay open, the oldest closed as a new one opens. Every 2 s the
// benchmark reads the daemon's VmRSS and its Go heap in use
// (go_memstats_heap_inuse_bytes on /metrics). Reported per variant, the
// median over the ops, and the ratios of the two: the resident set at the
// end (the last connections still open) and its peak (VmHWM), the heap's
// highest sample, the collections over the run, the daemon's CPU and
// minor page faults per connection; the log has each op's figures and
// the resident set's highest sample too. An independent event listener
// checks that the daemon served every connection (its lte subflow
// established), and /metrics (go_gc_gogc_percent) that each daemon runs
// at the GOGC it should.
func BenchmarkClientMemory(b *testing.B) {
	secs := envInt(b, "CLIENT_MEMORY_SECONDS", 60, 10, 3600)
	// A closed connection's lte subflow holds its port in TIME_WAIT for
	// 60 s, and a subflow's bind skips such ports (tcp_tw_reuse is for
	// connect only): at 500 a second the bed's lte address ran out of
	// ports, so the default keeps 60 s of closes within the half of the
	// port range that bind tries first (manyConnsBed: 10000-65000).
	rate := envInt(b, "CLIENT_MEMORY_RATE", 300, 1, 400)
	live := envInt(b, "CLIENT_MEMORY_LIVE", 256, 8, 4096)
	if b.N == 1 && fixedOps() > 1 {
		return // Go's first call: with -benchtime=2x and up the ops come in the next one
	}
	b.StopTimer()
	bin := buildBinary(b)
	bed, stopEcho := echoBed(b)
	defer stopEcho()
	// The closes leave their client ends in TIME_WAIT for a minute: let
	// a new connection's connect take a port from one.
	bed.Client.MustRun("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")

	type variant struct {
		name string
		env  []string
		gogc float64 // what its /metrics must report
	}
	variants := []variant{{"own", nil, 400}, {"gogc100", []string{"GOGC=100"}, 100}}
	res := map[string][]clientMem{}
	for i := 0; i < b.N; i++ {
		order := slices.Clone(variants)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, v := range order {
			r := clientMemory(b, bed, bin, v.env, v.gogc, time.Duration(secs)*time.Second, rate, live)
			b.Logf("op %d, %s (GOGC %v): %d connections opened (%.0f/s), %d served; RSS at the end %.1f MiB, highest sample %.1f MiB, peak (VmHWM) %.1f MiB; heap in use highest %.1f MiB; %d collections; CPU %.1f µs and %.2f minor page faults per connection",
				i, v.name, r.gogc, r.opened, float64(r.opened)/float64(secs), r.served, inMiB(r.rssLast), inMiB(r.rssMax), inMiB(r.hwm), inMiB(r.heapMax), r.gcs, r.cpuPerConn, r.minfltPerConn)
			res[v.name] = append(res[v.name], r)
		}
	}
	med := func(name string, f func(clientMem) float64) float64 {
		var v []float64
		for _, r := range res[name] {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
	}
	for _, m := range []struct {
		unit string
		f    func(clientMem) float64
	}{
		{"RSS-end-MiB", func(r clientMem) float64 { return inMiB(r.rssLast) }},
		{"RSS-peak-MiB", func(r clientMem) float64 { return inMiB(r.hwm) }},
		{"heap-max-MiB", func(r clientMem) float64 { return inMiB(r.heapMax) }},
		{"GCs", func(r clientMem) float64 { return float64(r.gcs) }},
		{"cpu-µs-per-conn", func(r clientMem) float64 { return r.cpuPerConn }},
		{"minflt-per-conn", func(r clientMem) float64 { return r.minfltPerConn }},
	} {
		own, def := med("own", m.f), med("gogc100", m.f)
		b.ReportMetric(own, "own-"+m.unit)
		b.ReportMetric(def, "gogc100-"+m.unit)
		if def > 0 {
			b.ReportMetric(own/def, m.unit+"-own/gogc100")
		}
	}
}

func inMiB(n int64) float64 { return float64(n) / (1 << 20) }

// fixedOps is N of -benchtime=Nx, else 0.
func fixedOps() int {
	v := flag.Lookup("test.benchtime").Value.String()
	n, err := strconv.Atoi(strings.TrimSuffix(v, "x"))
	if !strings.HasSuffix(v, "x") || err != nil || n < 0 {
		return 0
	}
	return n
}

// clientMem is one daemon's account over one run of BenchmarkClientMemory.
type clientMem struct {
	gogc                 float64 // go_gc_gogc_percent
	opened, served       int
	rssLast, rssMax, hwm int64 // rssLast: at the end, the last connections open
	heapMax              int64
	gcs                  int
	cpuPerConn           float64 // µs
	minfltPerConn        float64 // minor page faults
}

// clientMemory runs the daemon with env added to its environment (GOGC
// removed from it) under the load for dur, and fails unless it runs at
// GOGC gogc.
func clientMemory(b *testing.B, bed *testbed.Bed, bin string, env []string, gogc float64, dur time.Duration, rate, live int) clientMem {
	cfg, sock := warnPolicy(b)
	cmd := bed.Client.Command(context.Background(), bin, "run", "--config", cfg)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") })
	cmd.Env = append(cmd.Env, env...)
	d := startDaemonCmd(b, cmd, sock, testWriter{b})
	pid := d.cmd.Process.Pid
	defer d.term(b)
	b.Logf("daemon: creates by the %s", d.creates)

	watch, stopWatch := watchLTESubflows(b, bed)
	defer stopWatch()

	var r clientMem
	// metric is a series of the daemon's /metrics (no labels).
	metric := func(name string) float64 {
		v, ok := scrapedValue(scrape(b, bed.Client, 9464), name)
		if !ok {
			b.Fatalf("no %s on the daemon's /metrics", name)
		}
		return v
	}
	heap := func() int64 { return int64(metric("go_memstats_heap_inuse_bytes")) }
	gcs := func() int { return int(metric("go_gc_duration_seconds_count")) }
	gc0 := gcs()
	if r.gogc = metric("go_gc_gogc_percent"); r.gogc != gogc {
		b.Fatalf("the daemon runs at GOGC %v (go_gc_gogc_percent), want %v", r.gogc, gogc)
	}
	cpu0 := procCPU(b, pid)

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	tokens := make(chan struct{}, 1)
	go func() {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(tokens)
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default: // the openers are behind: this token is lost
				}
			}
		}
	}()
	const workers = 8
	var wg sync.WaitGroup
	var omu sync.Mutex
	var open []net.Conn // each worker's last connections, once it has ended
	// Whatever ends this run, the workers end before the bed does, and
	// what they left open is closed.
	defer func() {
		cancel()
		wg.Wait()
		closeAll(open)
	}()
	addr := netip.AddrPortFrom(bed.ProxyAddr, 7002).String()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []net.Conn
			defer func() {
				omu.Lock()
				open = append(open, held...)
				omu.Unlock()
			}()
			bed.Client.Do(func() error {
				dl := net.Dialer{Timeout: echoTimeout, KeepAlive: -1}
				dl.SetMultipathTCP(true)
				for range tokens {
					c, err := echoConn(&dl, addr)
					if err != nil {
						b.Error(err)
						return nil
					}
					held = append(held, c)
					omu.Lock()
					r.opened++
					omu.Unlock()
					if len(held) > live/workers {
						held[0].Close()
						held = held[1:]
					}
				}
				return nil
			})
		}()
	}
	b.StartTimer()
	tick := time.NewTicker(2 * time.Second)
sample:
	for {
		select {
		case <-ctx.Done():
			break sample
		case <-tick.C:
			r.rssMax = max(r.rssMax, procRSS(b, pid))
			r.heapMax = max(r.heapMax, heap())
		}
	}
	tick.Stop()
	wg.Wait()
	b.StopTimer()
	if b.Failed() {
		b.FailNow()
	}
	// The last connections are still open.
	r.rssLast = procRSS(b, pid)
	r.rssMax = max(r.rssMax, r.rssLast)
	r.hwm = procStatusBytes(b, pid, "VmHWM")
	r.heapMax = max(r.heapMax, heap())
	r.gcs = gcs() - gc0
	cpu := procCPU(b, pid).sub(cpu0)
	r.cpuPerConn = usPerConn(cpu.user+cpu.sys, r.opened)
	r.minfltPerConn = float64(cpu.minflt) / float64(max(r.opened, 1))
	// The last connections' lte subflows may still be on their way.
	var lost int
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r.served, lost = watch.counts(); r.served >= r.opened || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.served < r.opened || lost > 0 {
		b.Fatalf("the daemon served %d of %d connections (their lte subflow established, as the event listener saw it; it lost events %d times)", r.served, r.opened, lost)
	}
	return r
}

// scrapedValue is the value of the first series named name (no labels) in
// a /metrics text.
func scrapedValue(text, name string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}
