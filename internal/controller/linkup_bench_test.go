//go:build linux

package controller_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkLinkUpReaction: how long the daemon takes to give live
// connections a subflow on an interface that comes back, while
// applications keep both CPUs busy. The daemon's reaction to its links
// (handover) waits for a CPU like any process, so this is what its
// priority buys or costs it.
//
// Each op: with lte0 down, the generator (BenchmarkBurst's) opens
// linkUpConns connections, each with its one subflow on wifi; lte0 comes
// up; an independent mptcp_pm listener timestamps each connection's lte
// SUB_ESTABLISHED, measured from the `ip link set up`. The daemon is the
// built binary with the example policy (userspace PM, aggregate, managed
// routing), at nice LINK_DAEMON_NICE (default -10, the unit's Nice=);
// LINK_HOGS (default 2) processes spin at nice 0 meanwhile, as busy
// applications would. Reported: the share of connections that got their
// lte subflow within linkUpWait (served), and p50/p99/max from link-up to
// it over those.
func BenchmarkLinkUpReaction(b *testing.B) {
	nice := envInt(b, "LINK_DAEMON_NICE", -10, -20, 19)
	hogs := envInt(b, "LINK_HOGS", 2, 0, 64)
	bin := buildBinary(b)
	bed := manyConnsBed(b)
	addr := netip.AddrPortFrom(bed.ProxyAddr, burstPort).String()
	gen := startGenerator(b, bed, addr, addr)

	cfg, sock, _ := examplePolicy(b, bed, bin, b.TempDir())
	d := startDaemonCmd(b, bed.Client.Command(context.Background(), bin, "run", "--config", cfg), sock, testWriter{b})
	defer func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
	}()
	renice(b, d.cmd.Process.Pid, strconv.Itoa(nice))

	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer el.Close()
	var mu sync.Mutex
	var lte []time.Time // each lte SUB_ESTABLISHED, when read
	defer testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			b.Errorf("observer: %v", err)
		}
		for _, e := range evs {
			if e.Type == pathmgr.EventSubEstablished && e.Local.Addr() == bed.LTEAddr {
				lte = append(lte, now)
			}
		}
		return true
	})() // before el.Close

	// The observer is this process: above the spinning processes and the
	// daemon, so that its timestamps are the events', not its own wait
	// for a CPU.
	observerFirst(b)
	spinHogs(b, hogs)
	var lat []time.Duration
	served, opened := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bed.Client.MustRun("ip", "link", "set", testbed.LTEIf, "down")
		interfacesUp(b, bed, 1) // the daemon took lte0 out, however starved
		n, _, _ := gen.open(b, linkUpConns)
		opened += n
		time.Sleep(500 * time.Millisecond) // every connection established, on wifi
		mu.Lock()
		lte = lte[:0]
		mu.Unlock()
		up := time.Now()
		bed.Client.MustRun("ip", "link", "set", testbed.LTEIf, "up")
		// A starved daemon is a result here, not a failure: wait up to
		// linkUpWait and count what came.
		got, deadline := 0, up.Add(linkUpWait)
		for got < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			mu.Lock()
			got = len(lte)
			mu.Unlock()
		}
		mu.Lock()
		for _, t := range lte[:min(len(lte), n)] {
			lat = append(lat, t.Sub(up))
		}
		mu.Unlock()
		served += min(got, n)
		gen.closeAll(b)
	}
	b.StopTimer()
	ms := func(p float64) float64 { return float64(pct(lat, p)) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
	b.ReportMetric(float64(served)/float64(max(opened, 1)), "served")
	b.Logf("daemon at nice %d, %d spinning processes: %d of %d connections got their lte subflow within %v; of those, from link-up p50 %v p99 %v max %v",
		nice, hogs, served, opened, linkUpWait, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1))
}

// linkUpConns is how many live connections wait for lte0 in each op of
// BenchmarkLinkUpReaction.
const linkUpConns = 500

// linkUpWait is how long BenchmarkLinkUpReaction waits for the lte
// subflows after link-up; those that come later count as not served.
const linkUpWait = 30 * time.Second

// interfacesUp waits until the daemon's gigapath_interface_up gauges add
// up to n (at most a minute: a daemon below busy applications may take
// that long).
func interfacesUp(b *testing.B, bed *testbed.Bed, n float64) {
	deadline := time.Now().Add(time.Minute)
	for {
		got := scrapeCounter(b, bed, "gigapath_interface_up", 9477)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the daemon's interfaces up: %v after a minute, want %v", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// observerFirst runs every thread of this process at nice -20 until the
// benchmark ends.
func observerFirst(b *testing.B) {
	old, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		b.Fatal(err)
	}
	old = 20 - old // the raw system call's value is 20 - nice
	set := func(n int) error {
		_, err := eachThread(os.Getpid(), func(tid int) error { return syscall.Setpriority(syscall.PRIO_PROCESS, tid, n) })
		return err
	}
	if err := set(-20); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { set(old) })
}

// spinHogs starts n processes that spin at nice 0 until the benchmark
// ends.
func spinHogs(b *testing.B, n int) {
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// envInt reads the integer environment variable name (def when unset),
// which must be within [lo, hi].
func envInt(b *testing.B, name string, def, lo, hi int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		b.Fatalf("%s=%q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n
}
