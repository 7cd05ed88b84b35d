//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// Server-load benchmark parameters (BenchmarkServerLoad).
const (
	serverLoadPort   = 7200 // generator i listens on serverLoadPort+i
	serverLoadPerGen = 8500 // connections per generator process: 2 descriptors each
	// serverLoadRest is a window at rest: longer than periodicResync, so
	// that it holds one periodic resync.
	serverLoadRest   = controller.PeriodicResync + time.Second
	serverLoadMetric = 9478 // the daemon's /metrics port in the proxy namespace
)

// serverLoadLevels are the numbers of live connections measured, in
// order (SERVER_LOAD_LEVELS=1000,10000 for a quicker look).
func serverLoadLevels(b *testing.B) []int {
	v := os.Getenv("SERVER_LOAD_LEVELS")
	if v == "" {
		return []int{1000, 10000, 50000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			b.Fatalf("SERVER_LOAD_LEVELS=%q: %q is not a positive number", v, f)
		}
		out = append(out, n)
	}
	return out
}

const serverLoadPolicy = `side: server
path_manager: %s
steering: %s
interfaces:
  - name: lte1
    role: lte
%s
routing: off
metrics:
  listen: 127.0.0.1:%d
status_socket: %s
log:
  level: %s
`

// BenchmarkServerLoad: a carrier proxy's daemon (side: server) with
// 1,000, 10,000 and 50,000 live MPTCP connections, with the userspace PM
// (the daemon announces the proxy's lte address to every connection) and
// with the in-kernel PM (a signal endpoint the daemon keeps). The daemon
// is the built binary in the proxy namespace; the clients' in-kernel PM
// accepts the announcement and joins, so each connection has two subflows
// at each end. The connections come from generator processes (this test
// binary in helper mode, each holding the server and client ends of
// serverLoadPerGen connections, within the open-file limit), each sends a
// byte, and the level counts once an independent event listener in the
// client namespace has seen every connection's ANNOUNCED.
//
// At each level, reported (and logged) per mode: the daemon's RSS over
// its idle RSS per MPTCP connection, its CPU per second at rest (10 s,
// steering aggregate: no health sampling) and with steering priority
// (health sampled every second, the daemon started with it, each
// connection given a byte more so that its subflows have telemetry
// entries; the difference is the sampling's cost; userspace PM only), the
// time of a full resync (a reload triggers one: it switches steering, and
// the log level between warn and error so that the in-kernel PM's is a
// change too: inventory dump + reconcile,
// gigapath_reconcile_duration_seconds), the longest the event loop spent
// on one periodic input (tick, health, resync: gigapath_loop_busy_seconds,
// bucket bound, wall clock; how many of the inputs took longer than 5 ms;
// the longest CPU time of the loop's thread on one,
// gigapath_loop_cpu_seconds; and how often the kernel preempted it during
// them, gigapath_loop_preemptions_total), and the time from SIGUSR2 (upgrade in place)
// and from SIGTERM + start (restart) until READY=1. BURST_PERF=FILE
// records each resync with `perf record -g` into FILE-PID (overwritten
// by the next one of the same daemon).
func BenchmarkServerLoad(b *testing.B) {
	for _, pm := range []string{"userspace", "kernel"} {
		b.Run("pm="+pm, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				serverLoad(b, pm, serverLoadLevels(b))
			}
		})
	}
}

func serverLoad(b *testing.B, pm string, levels []int) {
	bin := buildBinary(b)
	bed := manyConnsBed(b)
	// The phones' in-kernel PM joins the address the proxy announces;
	// the proxy's SYN queue takes the bursts without SYN cookies (a
	// cookie's connection may fall back to plain TCP).
	bed.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "1", "add_addr_accepted", "1")
	bed.Proxy.MustRun("sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=65536", "net.core.somaxconn=65535")
	sampling := pm == "userspace" // the in-kernel PM has no steering mode that samples health

	dir := b.TempDir()
	sock := filepath.Join(dir, "status.sock")
	cfg := filepath.Join(dir, "policy.yaml")
	// Each reload changes the log level (warn, error) too, so that it is
	// one for the in-kernel PM as well.
	reloads := 0
	writePolicy := func(steering string) {
		announce := ""
		if pm == "userspace" {
			announce = "announce:\n  - interface: lte1"
		}
		level := []string{"warn", "error"}[reloads%2]
		if l := os.Getenv("SERVER_LOAD_LOG"); l != "" {
			level = []string{l, "debug"}[reloads%2]
		}
		reloads++
		pol := fmt.Sprintf(serverLoadPolicy, pm, steering, announce, serverLoadMetric, sock, level)
		if err := os.WriteFile(cfg, []byte(pol), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	steering := func(sample bool) string {
		if sample && sampling {
			return "priority"
		}
		return "aggregate"
	}
	writePolicy(steering(true))
	nsock := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer notify.Close()
	ready := func() time.Time {
		buf := make([]byte, 256)
		for {
			notify.SetReadDeadline(time.Now().Add(120 * time.Second))
			m, err := notify.Read(buf)
			if err != nil {
				b.Fatalf("no READY=1: %v", err)
			}
			if string(buf[:m]) == "READY=1" {
				return time.Now()
			}
		}
	}
	// Started when READY=1 comes (after the start's reconciliation): a
	// status query would make the daemon list every connection.
	// The daemon runs at the nice of the shipped unit (docs/deploy:
	// Nice=-10), every thread of it from the start; SERVER_LOAD_NICE=N
	// runs it at N (runs A-H ran it at 0).
	nice := "-10"
	if n := os.Getenv("SERVER_LOAD_NICE"); n != "" {
		if v, err := strconv.Atoi(n); err != nil || v < -20 || v > 19 {
			b.Fatalf("SERVER_LOAD_NICE=%q: want a number from -20 to 19", n)
		}
		nice = n
	}
	start := func() *daemon {
		cmd := bed.Proxy.Command(context.Background(), "nice", "-n", nice, bin, "run", "--config", cfg)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsock)
		if p := os.Getenv("SERVER_LOAD_PROFILE"); p != "" {
			cmd.Env = append(cmd.Env, "GIGAPATH_PROFILE_DIR="+p)
		}
		d := spawnDaemon(b, cmd, testWriter{b})
		ready()
		return d
	}
	d := start()
	time.Sleep(2 * time.Second)
	idle := procRSS(b, d.cmd.Process.Pid)
	b.Logf("pm=%s: daemon idle RSS %.1f MiB, nice %s; load average %s", pm, float64(idle)/(1<<20), nice, testbed.LoadAverage())

	// Independent observer: the clients' ANNOUNCED events.
	el, err := pathmgr.ListenEvents(&pathmgr.Config{NetNS: bed.Client.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer el.Close()
	var mu sync.Mutex
	announced := map[uint32]bool{}
	joins := 0 // the phones' subflows to the announced address
	defer testbed.Collect(b, el.Receive, func(evs []pathmgr.Event, _ error) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			switch e.Type {
			case pathmgr.EventAnnounced:
				announced[e.Token] = true
			case pathmgr.EventSubEstablished:
				joins++
			}
		}
		return true
	})()

	var gens []*generator
	defer func() {
		for _, g := range gens {
			g.closeAll(b)
		}
	}()
	total := 0
	for _, n := range levels {
		// Open up to n, spread over generators of serverLoadPerGen each.
		t0 := time.Now()
		for total < n {
			i := total / serverLoadPerGen
			if i == len(gens) {
				port := serverLoadPort + i
				gens = append(gens, startGenerator(b, bed, fmt.Sprintf("0.0.0.0:%d", port),
					netip.AddrPortFrom(bed.ProxyAddr, uint16(port)).String()))
			}
			k := min(n-total, (i+1)*serverLoadPerGen-total)
			opened, _, _ := gens[i].open(b, k)
			total += opened
		}
		// The MPTCP connections the proxy has (a connection that fell
		// back to TCP gets no announcement), each announced to.
		live := 0
		deadline := time.Now().Add(10 * time.Minute)
		for {
			live = strings.Count(bed.Proxy.MustRun("ss", "-HMn", "state", "established"), "\n")
			mu.Lock()
			a := len(announced)
			mu.Unlock()
			if a >= live && live > 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d MPTCP connections announced to", a, live)
			}
			time.Sleep(200 * time.Millisecond)
		}
		b.Logf("pm=%s n=%d: opened, %d MPTCP (%d fell back to TCP), all announced to, in %v",
			pm, n, live, n-live, time.Since(t0).Round(time.Millisecond))
		// The phones' joins go on in the kernel's workqueue after that:
		// each binds a port of the one lte address of the client
		// namespace, and above ~27,000 (half the port range: bind()
		// tries the odd ports first) every join scans the whole range,
		// which kept both CPUs busy for ~30 s at 50,000 (perf:
		// inet_csk_get_port, inet_bind_conflict in kworkers). 50,000
		// real phones have an address each: the measurement waits for
		// the bed to be quiet.
		waited, busy := testbed.WaitQuiet(b, 0.3, 3*time.Minute)
		mu.Lock()
		j := joins
		mu.Unlock()
		b.Logf("pm=%s n=%d: %d joins; the host quiet after %v (%.2f CPUs busy)", pm, n, j, waited.Round(time.Second), busy)
		time.Sleep(3 * time.Second) // settle
		pid := d.cmd.Process.Pid
		rss := procRSS(b, pid)

		// At rest with and without health sampling; each switch of the
		// steering mode is a reload, which resyncs. A window is longer
		// than the periodic resync's interval, so that it holds one.
		rest := func() (cpuEachSecond time.Duration, busy map[string]string, m0, m1 string) {
			m0 = scrape(b, bed.Proxy, serverLoadMetric)
			c0, t0 := procCPU(b, pid), time.Now()
			time.Sleep(serverLoadRest)
			c, el := procCPU(b, pid).sub(c0), time.Since(t0)
			m1 = scrape(b, bed.Proxy, serverLoadMetric)
			busy = map[string]string{}
			for _, in := range []string{"tick", "health", "resync", "pm_events"} {
				busy[in] = maxBucket(m0, m1, "gigapath_loop_busy_seconds", `input="`+in+`"`)
				if slices.Contains(metrics.LoopCPUInputs, in) {
					busy[in+" CPU"] = maxBucket(m0, m1, "gigapath_loop_cpu_seconds", `input="`+in+`"`)
					over, all := countAbove(m0, m1, "gigapath_loop_busy_seconds", `input="`+in+`"`, "0.00512")
					busy[in+" >5.12ms"] = fmt.Sprintf("%d of %d", over, all)
					busy[in+" preempted"] = fmt.Sprint(counterDelta(m0, m1, "gigapath_loop_preemptions_total", `input="`+in+`"`))
				}
			}
			busy["periodic resyncs"] = fmt.Sprint(counterDelta(m0, m1, "gigapath_resyncs_total", `reason="periodic"`))
			// At rest nothing changes: a command sent is a periodic job's
			// work that is not O(changes).
			for _, cmd := range metrics.PMCommands {
				if n := counterDelta(m0, m1, "gigapath_pm_commands_total", `command="`+cmd+`"`); n != 0 {
					busy[cmd+" commands"] = fmt.Sprint(n)
				}
			}
			return (c.user + c.sys) * time.Second / el, busy, m0, m1
		}
		// resync reloads and returns how long the reload's resync took;
		// the longest loop input of the reload and of its resync go into
		// reloadBusy.
		reloadBusy := map[string]string{}
		resync := func(sample bool) time.Duration {
			m0 := scrape(b, bed.Proxy, serverLoadMetric)
			writePolicy(steering(sample))
			stopPerf := perfRecord(b, d.cmd.Process.Pid) // BURST_PERF
			defer stopPerf()
			d.cmd.Process.Signal(syscall.SIGHUP)
			// Waited for up to 2 minutes (a slow resync is a number to
			// report, not a reason to stop measuring), looked for once a
			// second from 1.5 s on: a scrape reads the telemetry map, and
			// its cost must not be what is measured (the resync's
			// duration is the daemon's own histogram, not this poll's; a
			// scrape during the sweep made a slice of 20 ms).
			time.Sleep(1500 * time.Millisecond)
			for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
				m1 := scrape(b, bed.Proxy, serverLoadMetric)
				if counterDelta(m0, m1, "gigapath_reconcile_duration_seconds_count", "") >= 1 {
					for _, in := range []string{"reload", "resync"} {
						reloadBusy[in] = longerBucket(reloadBusy[in], maxBucket(m0, m1, "gigapath_loop_busy_seconds", `input="`+in+`"`))
						reloadBusy[in+" CPU"] = longerBucket(reloadBusy[in+" CPU"], maxBucket(m0, m1, "gigapath_loop_cpu_seconds", `input="`+in+`"`))
					}
					return time.Duration(counterDelta(m0, m1, "gigapath_reconcile_duration_seconds_sum", "") * float64(time.Second))
				}
				if time.Now().After(deadline) {
					b.Fatalf("pm=%s: the reload's resync did not end within 2 minutes", pm)
				}
			}
		}
		var cpuSampling time.Duration
		var busySampling map[string]string
		sampleNote := "no health sampling with the in-kernel PM"
		if sampling {
			var m0, m1 string
			cpuSampling, busySampling, m0, m1 = rest()
			samples := counterDelta(m0, m1, "gigapath_health_sample_seconds_count", `source="telemetry"`)
			diag := counterDelta(m0, m1, "gigapath_health_sample_seconds_count", `source="sock_diag"`)
			read := (counterDelta(m0, m1, "gigapath_health_sample_seconds_sum", `source="telemetry"`) +
				counterDelta(m0, m1, "gigapath_health_sample_seconds_sum", `source="sock_diag"`)) / max(samples+diag, 1)
			apply := counterDelta(m0, m1, "gigapath_loop_busy_seconds_sum", `input="health"`) /
				max(counterDelta(m0, m1, "gigapath_loop_busy_seconds_count", `input="health"`), 1)
			sampleNote = fmt.Sprintf("%v samples from the telemetry map and %v from sock_diag in %v, read in %.1f ms each off the loop, applied in %.3f ms on it",
				samples, diag, serverLoadRest, read*1000, apply*1000)
		}
		resyncTook := resync(false)
		time.Sleep(2 * time.Second)
		cpuRest, busyRest, _, _ := rest()
		resyncBack := resync(true)
		time.Sleep(2 * time.Second)

		t1 := time.Now()
		d.cmd.Process.Signal(syscall.SIGUSR2)
		upgrade := ready().Sub(t1)
		time.Sleep(2 * time.Second)
		t2 := time.Now()
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
		d = start()
		restart := time.Since(t2)
		time.Sleep(time.Second)

		perConn := float64(rss-idle) / float64(live)
		b.ReportMetric(perConn, fmt.Sprintf("n=%d-RSS-B/conn", n))
		b.ReportMetric(float64(cpuRest.Microseconds())/1000, fmt.Sprintf("n=%d-rest-CPU-ms/s", n))
		if sampling {
			b.ReportMetric(float64((cpuSampling-cpuRest).Microseconds())/1000, fmt.Sprintf("n=%d-sampling-CPU-ms/s", n))
		}
		b.ReportMetric(float64(resyncTook.Microseconds())/1000, fmt.Sprintf("n=%d-resync-ms", n))
		b.ReportMetric(float64(upgrade.Microseconds())/1000, fmt.Sprintf("n=%d-upgrade-ms", n))
		b.ReportMetric(float64(restart.Microseconds())/1000, fmt.Sprintf("n=%d-restart-ms", n))
		b.Logf("pm=%s n=%d: RSS %.1f MiB (%.0f B per connection over idle); CPU at rest %v/s, with health sampling %v/s (%s); "+
			"resync %v and %v; upgrade %v, restart %v; longest loop stall per input at rest %v, with sampling %v, in the reloads %v; load average %s",
			pm, live, float64(rss)/(1<<20), perConn, cpuRest, cpuSampling, sampleNote,
			resyncTook.Round(time.Millisecond), resyncBack.Round(time.Millisecond),
			upgrade.Round(time.Millisecond), restart.Round(time.Millisecond), busyRest, busySampling, reloadBusy, testbed.LoadAverage())
	}
}

// scrape is the text of the daemon's /metrics at port inside ns.
func scrape(b *testing.B, ns *testbed.NetNS, port int) string {
	out, err := ns.Run("curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// counterDelta is how much the series name (with label among its
// labels; "" for none) grew between two scrapes.
func counterDelta(before, after, name, label string) float64 {
	val := func(text string) float64 {
		for _, l := range strings.Split(text, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) && strings.Contains(f[0], label) {
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				return v
			}
		}
		return 0
	}
	return val(after) - val(before)
}

// longerBucket is the longer of two maxBucket results ("" or "-": none).
func longerBucket(a, c string) string {
	v := func(s string) float64 {
		switch s {
		case "", "-":
			return -1
		case "+Inf", "?":
			return math.Inf(1)
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(s, "≤"), "s"), 64)
		if err != nil {
			return math.Inf(1)
		}
		return f
	}
	if v(c) > v(a) {
		return c
	}
	return a
}

// countAbove is how many observations of the histogram name (the series
// with label) between the scrapes before and after fell above the bucket
// bound le, and how many there were.
func countAbove(before, after, name, label, le string) (over, all int) {
	b0, b1 := histBuckets(before, name, label), histBuckets(after, name, label)
	if len(b1) == 0 || len(b0) != len(b1) {
		return -1, -1
	}
	all = int(b1[len(b1)-1].count - b0[len(b0)-1].count)
	for i := range b1 {
		if b1[i].le == le {
			return all - int(b1[i].count-b0[i].count), all
		}
	}
	return -1, all
}

// maxBucket is the bound of the smallest bucket of the histogram name
// (series with label) that holds every observation made between two
// scrapes: the longest one was at most that ("-": none).
func maxBucket(before, after, name, label string) string {
	b0, b1 := histBuckets(before, name, label), histBuckets(after, name, label)
	if len(b1) == 0 || len(b0) != len(b1) {
		return "?"
	}
	total := b1[len(b1)-1].count - b0[len(b0)-1].count
	if total == 0 {
		return "-"
	}
	for i := range b1 {
		if b1[i].count-b0[i].count >= total {
			return "≤" + b1[i].le + "s"
		}
	}
	return "+Inf"
}
