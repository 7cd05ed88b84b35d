//go:build linux

package controller_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkLinkUpReaction: how long the daemon takes to give live
// connections a subflow on an interface that comes back, while
// applications keep both CPUs busy. The daemon's reaction to its links
// (handover) waits for a CPU like any process, so this is what its
// priority buys or costs it.
//
// Each op: lte0 goes down and the daemon takes it out (its
// gigapath_interface_up gauges); the generator (BenchmarkBurst's) opens
// linkUpConns connections, each with its one subflow on wifi, and the
// daemon takes them in (gigapath_connections); lte0 comes up, by an ioctl
// of this process; an independent mptcp_pm listener timestamps each
// connection's first lte SUB_ESTABLISHED (when it reads the batch it came
// in), measured from that ioctl. The daemon is the built binary with the
// example policy (userspace PM, aggregate, managed routing), at nice
// LINK_DAEMON_NICE (default -10, the unit's Nice=), LINK_DAEMON_SCHED (as
// BURST_DAEMON_SCHED), BENCH_CREATES (as BenchmarkBurst's); LINK_HOGS (default 2)
// processes spin at nice 0 meanwhile, as busy applications would.
// Reported: the share of connections that got their lte subflow within
// linkUpWait (served), and p50/p99/max from link-up, a connection without
// one counted as linkUpWait.
func BenchmarkLinkUpReaction(b *testing.B) {
	nice := envInt(b, "LINK_DAEMON_NICE", -10, -20, 19)
	hogs := envInt(b, "LINK_HOGS", 2, 0, 64)
	bin := buildBinary(b)
	bed := manyConnsBed(b)
	addr := netip.AddrPortFrom(bed.ProxyAddr, burstPort).String()
	gen := startGenerator(b, bed, addr, addr)

	cfg, sock, _ := examplePolicy(b, bed, bin, b.TempDir())
	d := startDaemonCmd(b, bed.Client.Command(context.Background(), bin, "run", "--config", cfg), sock, testWriter{b})
	// Registered before the spinning processes', so it runs after they
	// are gone: a starved daemon stops in time. (startDaemonCmd kills one
	// still running at the end.)
	b.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
			if d.err != nil {
				b.Errorf("daemon: %v", d.err)
			}
		case <-time.After(10 * time.Second):
			b.Errorf("daemon still running 10s after SIGTERM: killed")
		}
	})
	renice(b, d.cmd.Process.Pid, strconv.Itoa(nice))
	if s := os.Getenv("LINK_DAEMON_SCHED"); s != "" {
		setSched(b, d.cmd.Process.Pid, "LINK_DAEMON_SCHED", s)
	}

	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer el.Close()
	var mu sync.Mutex
	lte := map[uint32]time.Time{} // each connection's first lte SUB_ESTABLISHED, when read
	defer testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, err error) bool {
		now := time.Now() // the batch's read: each event's time, as the observer can know it
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			b.Errorf("observer: %v", err)
		}
		for _, e := range evs {
			if _, seen := lte[e.Token]; !seen && e.Type == pathmgr.EventSubEstablished && e.Local.Addr() == bed.LTEAddr {
				lte[e.Token] = now
			}
		}
		return true
	})() // before el.Close

	spinHogs(b, hogs)
	// The observer is this process: above the spinning processes and the
	// daemon, so that its timestamps are the events', not its own wait
	// for a CPU. After spinHogs: a process takes the nice of the thread
	// that starts it.
	observerFirst(b)
	var lat []time.Duration
	served, opened := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		daemonGauge(b, bed, "gigapath_interface_up", 2) // lte0 back in, every earlier connection gone
		daemonGauge(b, bed, "gigapath_connections", 0)
		setLink(b, bed, testbed.LTEIf, false)
		daemonGauge(b, bed, "gigapath_interface_up", 1) // the daemon took lte0 out, however starved
		n, _, _ := gen.open(b, linkUpConns)
		opened += n
		daemonGauge(b, bed, "gigapath_connections", float64(n)) // and took every connection in, on wifi
		mu.Lock()
		clear(lte)
		mu.Unlock()
		up := setLink(b, bed, testbed.LTEIf, true)
		// A starved daemon is a result here, not a failure: wait up to
		// linkUpWait, and count a connection without its lte subflow by
		// then as linkUpWait.
		got, deadline := 0, up.Add(linkUpWait)
		for got < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			mu.Lock()
			got = len(lte)
			mu.Unlock()
		}
		mu.Lock()
		for _, t := range lte {
			lat = append(lat, t.Sub(up))
		}
		mu.Unlock()
		for range n - min(got, n) {
			lat = append(lat, linkUpWait)
		}
		served += min(got, n)
		gen.closeAll(b)
	}
	b.StopTimer()
	ms := func(p float64) float64 { return float64(pct(lat, p)) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
	b.ReportMetric(float64(served)/float64(max(opened, 1)), "served")
	b.Logf("daemon at nice %d, %d spinning processes at nice 0: %d of %d connections got their lte subflow within %v; from link-up (those without: %v) p50 %v p99 %v max %v",
		nice, hogs, served, opened, linkUpWait, linkUpWait, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1))
}

// setLink sets the client's interface name up or down with an ioctl of
// this process (an `ip` process would put its own start into the time)
// and returns when it did.
func setLink(b *testing.B, bed *testbed.Bed, name string, up bool) (at time.Time) {
	err := bed.Client.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		flags := ifr.Uint16()
		if up {
			flags |= unix.IFF_UP
		} else {
			flags &^= unix.IFF_UP
		}
		ifr.SetUint16(flags)
		at = time.Now()
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	})
	if err != nil {
		b.Fatalf("%s up=%v: %v", name, up, err)
	}
	return at
}

// daemonGauge waits until the daemon's metric name (summed over its
// labels) is want, at most a minute: a daemon below busy applications
// may take that long.
func daemonGauge(b *testing.B, bed *testbed.Bed, name string, want float64) {
	deadline := time.Now().Add(time.Minute)
	for {
		var got float64
		for _, l := range strings.Split(scrape(b, bed.Client, 9477), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				got += v
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the daemon's %s: %v after a minute, want %v", name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linkUpConns is how many live connections wait for lte0 in each op of
// BenchmarkLinkUpReaction.
const linkUpConns = 500

// linkUpWait is how long BenchmarkLinkUpReaction waits for the lte
// subflows after link-up; those that come later count as not served.
const linkUpWait = 30 * time.Second

// observerFirst runs every thread of this process at nice -20 until the
// benchmark ends.
func observerFirst(b *testing.B) {
	old, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		b.Fatal(err)
	}
	renice(b, os.Getpid(), "-20")
	// The raw system call's value is 20 - nice.
	b.Cleanup(func() { renice(b, os.Getpid(), strconv.Itoa(20-old)) })
}

// spinHogs starts n processes that spin at nice 0 until the benchmark
// ends.
func spinHogs(b *testing.B, n int) {
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 0); err != nil {
			cmd.Process.Kill()
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
