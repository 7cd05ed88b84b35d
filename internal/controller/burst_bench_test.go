//go:build linux

package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/svgplot"
	"github.com/gigapath/gigapath/internal/testbed"
)

// Burst benchmark parameters (BenchmarkBurst).
const (
	burstConns   = 1000
	burstOpeners = 8
	burstPort    = 7100
)

// BenchmarkBurst: how fast a second path comes up when connections arrive
// in a burst, the daemon against the in-kernel PM on the same bed, in one
// run. Each op runs one round of each, alternating which goes first.
//
// A round opens burstConns MPTCP connections from the client namespace by
// burstOpeners concurrent openers as fast as they go (each on a thread of
// its own in the namespace: dial, write one byte, next), to a server in the
// proxy namespace that accepts and keeps them; the byte makes each
// connection fully established. Openers and server are a process of their
// own (the generator). An independent mptcp_pm event listener in this
// process (a socket of its own), which does nothing else, timestamps, per
// connection, its ESTABLISHED and the SUB_ESTABLISHED of its lte subflow;
// the latency is the difference.
//
//   - daemon: the built binary `gigapath run` as a process of its own in
//     the client namespace (userspace PM, aggregate, wifi0 + lte0, managed
//     routing: the example policy), started before the round, warmed up by
//     a burst of a quarter of the size, and stopped (SIGTERM) after it;
//   - daemon-kernel (in BURST_MODES): the same daemon and policy with
//     path_manager: kernel, so the daemon keeps the in-kernel PM's
//     endpoints and limits and the kernel opens the subflows; the
//     daemon's endpoints are flushed after the round;
//   - kernel: no daemon; the in-kernel PM with a `subflow` endpoint on
//     lte0, limits subflow 4, and a source rule for the lte address (what a
//     user sets up by hand), removed after the round;
//   - floor (with BURST_MODES=daemon,kernel,floor; burst_floor_test.go):
//     the least a userspace path manager does, for the lower bound of
//     the daemon's latency on this bed;
//   - floor-c (in BURST_MODES; needs a C compiler): the same floor in C,
//     without Go's runtime;
//   - floor-rt (in BURST_MODES; needs a C compiler): the daemon's own
//     real-time create thread (internal/rtcreate) in a C process without
//     Go, at BENCH_CREATES's priority (the policy's default without it,
//     when the daemon runs without the thread); with
//     BURST_FLOOR_RT=backlog beside a socket that takes every event and
//     is read as the daemon's loop reads its own
//     (testdata/burst_floor_rt.c);
//   - kernel-again (in BURST_MODES): the kernel's round once more, a
//     mode of its own measured against the kernel's like the others: the
//     goals' spread on this bed, what a contender no slower than the
//     in-kernel PM still misses.
//
// BURST_MODES (default daemon,kernel; kernel is required) picks the
// modes; each comes first in turn from round to round. Reported per mode:
// p50/p90/p99/max latency, open-conn/s (connections opened per second of
// the burst), served-conn/s (connections per second from the first dial
// until the last lte subflow), host-cpu-µs/conn (the host's CPU time per
// connection from just before the burst is asked for until the observer
// has seen it served: the openers', the server's and the observer's,
// and the path manager's, in the contender or the kernel's workers; and
// whatever else runs then: BURST_LOAD's and BURST_LISTENER's processes
// in the floors' rounds, BURST_PERF's perf; readHost), and each one's
// ratios to the kernel's.
//
// BURST_PLOT=FILE.svg writes the latency CDF of every mode (a relative
// FILE is from internal/controller, where go test runs);
// BURST_PROFILE=DIR runs the daemon with GIGAPATH_PROFILE_DIR=DIR (CPU
// and heap profiles; with BURST_DAEMON_ENV=GIGAPATH_PROFILE=trace an
// execution trace instead); BURST_DAEMON_ENV="K=V ..." adds to the
// daemon's environment (GOGC=100, GOMAXPROCS=4 for experiments);
// BURST_PERF=FILE records the daemon's and the floor's rounds, until
// their connections are served, with `perf record -g` into FILE-PID;
// BURST_DAEMON_NICE=N runs the daemon and the floor at nice N
// (as systemd's Nice= does), every thread of them, and
// BURST_DAEMON_SCHED=fifo:N|rr:N|slice:DURATION|batch|idle under that policy
// (a thread already real-time keeps its own); BENCH_CREATES=reader or
// realtime[:N] sets the daemon's creates.thread (benchCreates; unset:
// the default, auto), and
// BURST_DAEMON_NO_RT=1 takes the daemon's right to SCHED_FIFO away
// (withoutRT), as the packaged unit's norealtime drop-in does: auto is
// then the reader, and a realtime thread runs at the daemon's scheduling
// (not with a real-time BURST_DAEMON_SCHED);
// BURST_RX=napi receives on the wifi and lte links in NAPI threads (see
// napiReceive; needs ethtool); BURST_TIMELINE=1 logs each round's
// connections per millisecond since its first dial (how many were
// established, the longest latency among them; connections without their
// lte subflow are left out) and the round's start on CLOCK_MONOTONIC, to
// find a stall in `perf record -k mono -e sched:sched_switch -g` or `perf
// sched record -k mono`. BURST_OBSERVER=fifo makes the observer read in
// blocking reads at SCHED_FIFO (BURST_OBSERVER_PRIO, default 50) rather
// than through Go's poller at nice 0 (see observer); BURST_OBSERVER=alternate
// has both, in turn (the real-time one first) for as many ops as there
// are modes (-benchtime of a multiple of twice the modes), and takes the
// latencies from the real-time observer's rounds and the rates from the
// poller's, each from the observer that disturbs it least; each one's
// figure for the other's is reported too (-by-poller, -by-fifo). BURST_LISTENER=nice:N
// or idle gives the floors' rounds one more socket in the client's
// mptcp_pm events group, reading every event: `gigapath monitor`, at nice
// N or SCHED_IDLE (extraListener); BURST_LOAD=churn[:KIB]@P,
// fault[:KIB]@P or spin[:US]@P (P as BURST_LISTENER's) runs a load beside
// them: page faults and unmaps, page faults, or computing (startLoad).
// Each contender's account gives the CPU of its real-time threads apart,
// its minor page faults per connection, and its resident memory at the
// round's end and its peak so far.
func BenchmarkBurst(b *testing.B) {
	modes := burstModes(b)
	if os.Getenv("BURST_OBSERVER") == "alternate" {
		if !wholeTurns(2 * len(modes)) {
			b.Fatalf("BURST_OBSERVER=alternate: -benchtime=%s, want Nx with N a multiple of %d (e.g. %dx): each observer has as many ops in a row as there are modes",
				flag.Lookup("test.benchtime").Value, 2*len(modes), 4*len(modes))
		}
		if b.N == 1 {
			return // Go's first call: the ops come in the next one
		}
	}
	rx := os.Getenv("BURST_RX")
	if rx != "" && rx != "napi" {
		b.Fatalf("BURST_RX=%q: want napi, or unset for the veths' default", rx)
	}
	bin := buildBinary(b)
	bed := manyConnsBed(b)
	if rx == "napi" {
		napiReceive(b, bed)
	}
	addr := netip.AddrPortFrom(bed.ProxyAddr, burstPort).String()
	gen := startGenerator(b, bed, addr, addr)
	observers := newObservers(b, bed)
	obs := observers[0] // the rounds' observer; BURST_OBSERVER=alternate swaps it
	for _, o := range observers {
		b.Logf("the %s observer reads %s", o.kind, o.how)
	}

	dir := b.TempDir()
	cfg, sock, pol := examplePolicy(b, bed, bin, dir)
	var env []string
	if d := os.Getenv("BURST_PROFILE"); d != "" {
		env = append(env, "GIGAPATH_PROFILE_DIR="+d)
	}
	env = append(env, strings.Fields(os.Getenv("BURST_DAEMON_ENV"))...)

	// The same policy on the in-kernel PM: the daemon keeps the
	// endpoints and limits, the kernel opens the subflows.
	kcfg := filepath.Join(dir, "policy-kernel.yaml")
	kpol := strings.Replace(pol, "\npath_manager: userspace\n", "\npath_manager: kernel\n", 1)
	if kpol == pol {
		b.Fatal("the example policy has no path_manager: userspace line to replace")
	}
	if err := os.WriteFile(kcfg, []byte(kpol), 0o600); err != nil {
		b.Fatal(err)
	}

	noRT := os.Getenv("BURST_DAEMON_NO_RT") == "1"
	if noRT {
		if sched := os.Getenv("BURST_DAEMON_SCHED"); strings.HasPrefix(sched, "fifo") || strings.HasPrefix(sched, "rr") {
			b.Fatalf("BURST_DAEMON_NO_RT=1 with BURST_DAEMON_SCHED=%s: this process would give the daemon's threads the real-time class that BURST_DAEMON_NO_RT takes away", sched)
		}
		b.Logf("BURST_DAEMON_NO_RT=1: the daemon runs without the right to SCHED_FIFO (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)")
	}
	// daemonRound starts `gigapath run --config cfg`, warms it up, runs a
	// round and stops the daemon.
	daemonRound := func(mode, cfg string) burstRound {
		args := []string{bin, "run", "--config", cfg}
		if noRT {
			// As under the packaged unit with its norealtime drop-in:
			// auto is the reader, a realtime thread runs at the
			// daemon's scheduling (this process still sets the
			// daemon's nice from outside).
			args = append(withoutRT(), args...)
		}
		cmd := bed.Client.Command(context.Background(), args[0], args[1:]...)
		cmd.Env = append(os.Environ(), env...)
		d := startDaemonCmd(b, cmd, sock, testWriter{b})
		if d.creates != "" {
			b.Logf("daemon: creates by the %s", d.creates)
		}
		// Scrapes (the daemon serves them, curl runs in the namespace)
		// outside the CPU window, and before the warm-up (warmUp).
		gc0 := scrapeCounter(b, bed, "go_gc_duration_seconds_count", 9477)
		prepareContender(b, d.cmd.Process.Pid, gen, obs)
		stopPerf := perfRecord(b, d.cmd.Process.Pid)
		r := burstOnce(b, gen, obs, burstConns, markCPU(b, d.cmd.Process.Pid).account(b, mode, stopPerf))
		r.stages += fmt.Sprintf(", %v GC cycles over the warm-up and the round, its close included", scrapeCounter(b, bed, "go_gc_duration_seconds_count", 9477)-gc0) +
			daemonStages(b, bed)
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		<-d.done
		if d.err != nil {
			b.Fatalf("daemon: %v", d.err)
		}
		return r
	}

	kernelRound := func() burstRound {
		undo := kernelPMOn(b, bed)
		defer undo()
		warmUp(b, gen, obs)
		return burstOnce(b, gen, obs, burstConns, nil)
	}
	rounds := map[string]func() burstRound{
		modeDaemon: func() burstRound { return daemonRound(modeDaemon, cfg) },
		modeDaemonKernel: func() burstRound {
			// The daemon's endpoints stay when it stops (docs/daemon.md);
			// the next round starts without them.
			defer bed.Client.MustRun("ip", "mptcp", "endpoint", "flush")
			return daemonRound(modeDaemonKernel, kcfg)
		},
		modeKernel: kernelRound,
		// The same round again, as a mode of its own: how often the
		// in-kernel PM meets the goals against itself tells what of a
		// miss is this bed's spread.
		modeKernelAgain: kernelRound,
		modeFloor:       func() burstRound { return floorRound(b, bed, bin, gen, obs, modeFloor, "") },
	}
	if slices.Contains(modes, modeFloorC) {
		cFloor := buildCFloor(b, modeFloorC, "burst_floor")
		rounds[modeFloorC] = func() burstRound { return floorRound(b, bed, bin, gen, obs, modeFloorC, cFloor) }
	}
	if slices.Contains(modes, modeFloorRT) {
		rt := buildCFloor(b, modeFloorRT, "burst_floor_rt") + " " + strconv.Itoa(benchCreatesPriority(b))
		if os.Getenv("BURST_FLOOR_RT") == "backlog" {
			rt += " backlog"
		}
		rounds[modeFloorRT] = func() burstRound { return floorRound(b, bed, bin, gen, obs, modeFloorRT, rt) }
	}
	byObserver := map[string]map[string]*burstResult{}
	for _, o := range observers {
		byObserver[o.kind] = map[string]*burstResult{}
		for _, m := range modes {
			byObserver[o.kind][m] = &burstResult{}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Each observer has as many ops in a row as there are modes,
		// so that it sees every mode come first equally often.
		if o := observers[i/len(modes)%len(observers)]; o != obs {
			if err := errors.Join(obs.mute(true), o.mute(false)); err != nil {
				b.Fatal(err)
			}
			// Muted, it still reads what its socket had queued (at
			// once) and counts what it read before; an event it
			// counts after this settling fails the run.
			time.Sleep(250 * time.Millisecond)
			obs.reset()
			obs = o
		}
		// Each mode first in turn (with two: alternated).
		order := append(slices.Clone(modes[i%len(modes):]), modes[:i%len(modes)]...)
		for _, mode := range order {
			r := rounds[mode]()
			byObserver[obs.kind][mode].add(r)
			b.Logf("round %d %s (the %s observer): %s; load average %s", i, mode, obs.kind, r, testbed.LoadAverage())
		}
		for _, o := range observers {
			if n := o.counted(); o != obs && n > 0 {
				b.Fatalf("op %d: the muted %s observer counted %d events", i, o.kind, n)
			}
		}
	}
	b.StopTimer()

	// Each figure from the observer that disturbs it least: latencies
	// from the real-time one, which reads each event at once; rates
	// from the poller, which does not preempt the openers at each event
	// (observer). With one observer, both from it.
	results, rates := byObserver[observers[0].kind], byObserver[observers[len(observers)-1].kind]
	if len(observers) > 1 {
		for _, name := range modes {
			if name == modeKernel {
				continue
			}
			// Each observer's figure for the other's too: what each
			// costs the other's.
			b.ReportMetric(pct99(rates[name])/pct99(rates[modeKernel]), "p99-"+name+"/kernel-by-poller")
			b.ReportMetric(results[name].servedRate()/results[modeKernel].servedRate(), "served-rate-"+name+"/kernel-by-fifo")
		}
	}
	k, kr := results[modeKernel], rates[modeKernel]
	legend := map[string]cdfSeries{
		modeDaemon:       {"gigapath run (userspace PM)", "#1f77b4", nil},
		modeDaemonKernel: {"gigapath run (path_manager: kernel)", "#9467bd", nil},
		modeKernel:       {"in-kernel PM", "#d62728", nil},
		modeFloor:        {"floor: the least a userspace PM does", "#2ca02c", nil},
		modeFloorC:       {"the floor in C", "#17becf", nil},
		modeFloorRT:      {"the daemon's create thread, without Go", "#bcbd22", nil},
		modeKernelAgain:  {"in-kernel PM, a round of its own", "#ff7f0e", nil},
	}
	var series []cdfSeries
	for _, name := range modes {
		r := results[name]
		us := func(p float64) float64 { return float64(pct(r.lat, p)) / float64(time.Microsecond) }
		b.ReportMetric(us(0.5), name+"-p50-µs")
		b.ReportMetric(us(0.9), name+"-p90-µs")
		b.ReportMetric(us(0.99), name+"-p99-µs")
		b.ReportMetric(us(1), name+"-max-µs")
		rr := rates[name]
		b.ReportMetric(rr.openRate(), name+"-open-conn/s")
		b.ReportMetric(rr.servedRate(), name+"-served-conn/s")
		b.ReportMetric(rr.hostPerConn(), name+"-host-cpu-µs/conn")
		served, opened := r.served, r.opened
		if rr != r {
			served, opened = served+rr.served, opened+rr.opened
		}
		b.ReportMetric(float64(served)/float64(opened), name+"-served")
		if name != modeKernel {
			b.ReportMetric(pct99(r)/pct99(k), "p99-"+name+"/kernel")
			b.ReportMetric(rr.servedRate()/kr.servedRate(), "served-rate-"+name+"/kernel")
			b.ReportMetric(rr.openRate()/kr.openRate(), "open-rate-"+name+"/kernel")
			b.ReportMetric(rr.hostPerConn()/kr.hostPerConn(), "host-cpu-"+name+"/kernel")
		}
		s := legend[name]
		s.v = r.lat
		series = append(series, s)
	}
	if p := os.Getenv("BURST_PLOT"); p != "" {
		title := fmt.Sprintf("ESTABLISHED → lte SUB_ESTABLISHED, %d connections by %d openers, %d round(s) each", burstConns, burstOpeners, b.N/len(observers))
		if err := os.WriteFile(p, cdfSVG(title, series), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// examplePolicy writes into dir the policy `gigapath config example`
// prints (userspace PM, aggregate, wifi0 + lte0, managed routing), with
// its status socket in dir: the file, the socket's path and the policy.
func examplePolicy(b *testing.B, bed *testbed.Bed, bin, dir string) (cfg, sock, pol string) {
	sock = filepath.Join(dir, "status.sock")
	cfg = filepath.Join(dir, "policy.yaml")
	example := bed.Client.MustRun(bin, "config", "example")
	pol = strings.Replace(example, "status_socket: /run/gigapath/status.sock", "status_socket: "+sock, 1)
	if pol == example {
		b.Fatal("the example policy has no status_socket line to replace")
	}
	upol := pol
	if c := benchCreates(b); c != "" {
		if upol = createsSection.ReplaceAllLiteralString(pol, c); upol == pol {
			b.Fatal("the example policy has no creates section to replace")
		}
	}
	if err := os.WriteFile(cfg, []byte(upol), 0o600); err != nil {
		b.Fatal(err)
	}
	return cfg, sock, pol
}

// createsSection is the example policy's creates section, its indented
// lines included.
var createsSection = regexp.MustCompile(`(?m)^creates:\n(?:  .*\n)*`)

// benchCreates is the creates section BENCH_CREATES asks for: unset,
// the example's (auto: the real-time thread where it runs at SCHED_FIFO,
// else the reader; the daemon's status says which, and the benchmark
// logs it); "reader", the event reader; "realtime" or "realtime:N", the
// real-time create thread at SCHED_FIFO N (internal/rtcreate) even
// without the right to it. It goes into the userspace PM's policy only.
func benchCreates(b *testing.B) string {
	switch v := os.Getenv("BENCH_CREATES"); {
	case v == "":
		return ""
	case v == "reader":
		return "creates:\n  thread: reader\n"
	}
	return "creates: {thread: realtime, priority: " + strconv.Itoa(benchCreatesPriority(b)) + "}\n"
}

// benchCreatesPriority is BENCH_CREATES's real-time priority (N, else the
// policy's default), which floor-rt's thread takes too.
func benchCreatesPriority(b *testing.B) int {
	v := os.Getenv("BENCH_CREATES")
	if v == "" || v == "reader" {
		return policy.DefaultCreatesPriority
	}
	kind, prio, _ := strings.Cut(v, ":")
	n, err := policy.DefaultCreatesPriority, error(nil)
	if prio != "" {
		n, err = strconv.Atoi(prio)
	}
	if kind != "realtime" || err != nil || n < 1 || n > 99 {
		b.Fatalf("BENCH_CREATES=%q: want reader, realtime or realtime:N (N 1-99), or unset for the policy's default", v)
	}
	return n
}

// The modes of BenchmarkBurst, each named once here.
const (
	modeDaemon       = "daemon"
	modeDaemonKernel = "daemon-kernel"
	modeKernel       = "kernel"
	modeFloor        = "floor"
	modeFloorC       = "floor-c"
	modeFloorRT      = "floor-rt"
	modeKernelAgain  = "kernel-again"
)

var burstModeNames = []string{modeDaemon, modeDaemonKernel, modeKernel, modeFloor, modeFloorC, modeFloorRT, modeKernelAgain}

// napiReceive makes both ends of the wifi and lte links receive in a NAPI
// thread of their own (threaded NAPI, on veth only with GRO on and, for
// TCP, TSO off on the sender), as a NIC receives from its interrupt: not
// inside the sender's system call. A veth otherwise hands a packet to the
// receiver's backlog, which the sending CPU processes as soon as the
// sender re-enables softirqs, so a SUBFLOW_CREATE runs the subflow's
// handshake inline, under the family's mutex (docs/benchmarks.md).
func napiReceive(b *testing.B, bed *testbed.Bed) {
	b.Helper()
	for _, l := range testbed.Links {
		cif, pif, err := testbed.Iface(l)
		if err != nil {
			b.Fatal(err)
		}
		for n, dev := range map[*testbed.NetNS]string{bed.Client: cif, bed.Proxy: pif} {
			if _, err := n.Run("ethtool", "-K", dev, "gro", "on", "tso", "off"); err != nil {
				b.Fatalf("BURST_RX=napi: %v", err)
			}
			if _, err := n.Run("sh", "-c", "echo 1 > /sys/class/net/"+dev+"/threaded"); err != nil {
				b.Fatalf("BURST_RX=napi: threaded NAPI on %s: %v", dev, err)
			}
		}
	}
}

// burstModes is BURST_MODES (default daemon,kernel): each of
// burstModeNames at most once, kernel among them, since the others are
// measured against it. It also checks BURST_FLOOR_RT, before any setup.
func burstModes(b *testing.B) []string {
	v := os.Getenv("BURST_MODES")
	if v == "" {
		v = modeDaemon + "," + modeKernel
	}
	modes := strings.Split(v, ",")
	seen := map[string]bool{}
	for _, m := range modes {
		switch {
		case !slices.Contains(burstModeNames, m):
			b.Fatalf("BURST_MODES=%q: %q is not a mode (%s)", v, m, strings.Join(burstModeNames, ", "))
		case seen[m]:
			b.Fatalf("BURST_MODES=%q: %q twice", v, m)
		}
		seen[m] = true
	}
	if !seen[modeKernel] {
		b.Fatalf("BURST_MODES=%q: kernel is required: the other modes are measured against it", v)
	}
	switch f := os.Getenv("BURST_FLOOR_RT"); {
	case f != "" && f != "backlog":
		b.Fatalf("BURST_FLOOR_RT=%q: want backlog or nothing", f)
	case f != "" && !seen[modeFloorRT]:
		b.Fatalf("BURST_FLOOR_RT is for mode %s, which BURST_MODES=%q lacks", modeFloorRT, v)
	}
	return modes
}

// burstRound is what one round measured.
type burstRound struct {
	lat            []time.Duration // per served connection
	opened, served int
	open, all      time.Duration // opening the burst; first dial until the last lte subflow
	lost           int           // event overruns the observer saw
	stages         string        // the contender's own account (CPU; the daemon's /metrics)
	host           time.Duration // the host's CPU time from the first dial until served (readHost)
}

func (r burstRound) String() string {
	return fmt.Sprintf("%d/%d served, p50 %v p90 %v p99 %v max %v, opened in %v (%.0f/s), all served after %v, host CPU %.0f µs per connection, observer overruns %d",
		r.served, r.opened, pct(r.lat, .5), pct(r.lat, .9), pct(r.lat, .99), pct(r.lat, 1),
		r.open.Round(time.Millisecond), float64(r.opened)/r.open.Seconds(), r.all.Round(time.Millisecond),
		usPerConn(r.host, r.opened), r.lost) + r.stages
}

// daemonStages is where the daemon says the time went, from its /metrics
// (the example policy's listen address): per histogram its count and the
// upper bounds of the buckets holding p50 and p99.
func daemonStages(b *testing.B, bed *testbed.Bed) string {
	out, err := bed.Client.Run("curl", "-sf", "http://127.0.0.1:9477/metrics")
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	for _, h := range []struct{ what, name, label string }{
		{"events wait for the loop", "gigapath_loop_wait_seconds", `input="pm_events"`},
		{"loop busy per batch", "gigapath_loop_busy_seconds", `input="pm_events"`},
		{"create queued", "gigapath_subflow_create_seconds", `stage="queue"`},
		{"create request", "gigapath_subflow_create_seconds", `stage="request"`},
		{"daemon's own ESTABLISHED→SUB_ESTABLISHED", "gigapath_reaction_latency_seconds", ""},
	} {
		n, p50, p99 := histQuantiles(out, h.name, h.label)
		fmt.Fprintf(&sb, "\n\t%s: n=%d p50<=%s p99<=%s", h.what, n, p50, p99)
	}
	return sb.String()
}

// histBucket is one cumulative bucket of a Prometheus histogram.
type histBucket struct {
	le    string
	count float64
}

// histBuckets reads the cumulative buckets of the histogram name (the
// series with label among its labels) from a text exposition, in order.
func histBuckets(text, name, label string) []histBucket {
	var bs []histBucket
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name+"_bucket{") || !strings.Contains(l, label) {
			continue
		}
		i := strings.Index(l, `le="`)
		j := strings.Index(l[i+4:], `"`)
		f := strings.Fields(l)
		c, _ := strconv.ParseFloat(f[len(f)-1], 64)
		bs = append(bs, histBucket{l[i+4 : i+4+j], c})
	}
	return bs
}

// histQuantiles reads a Prometheus histogram (the series with label
// among its labels) from a text exposition: its count and the upper bound
// of the buckets p50 and p99 fall in.
func histQuantiles(text, name, label string) (n int, p50, p99 string) {
	bs := histBuckets(text, name, label)
	if len(bs) == 0 {
		return 0, "?", "?"
	}
	total := bs[len(bs)-1].count
	at := func(q float64) string {
		for _, b := range bs {
			if b.count >= q*total {
				return b.le
			}
		}
		return "+Inf"
	}
	return int(total), at(0.5), at(0.99)
}

// burstResult pools the rounds of one mode.
type burstResult struct {
	lat             []time.Duration
	opened, served  int
	open, all, host time.Duration
}

func (t *burstResult) add(r burstRound) {
	t.lat = append(t.lat, r.lat...)
	t.opened += r.opened
	t.served += r.served
	t.open += r.open
	t.all += r.all
	t.host += r.host
}

// wholeTurns reports whether -benchtime asks for a number of ops (Nx)
// that is a multiple of turn.
func wholeTurns(turn int) bool {
	n := fixedOps()
	return n > 0 && n%turn == 0
}

func (t *burstResult) openRate() float64   { return float64(t.opened) / t.open.Seconds() }
func (t *burstResult) servedRate() float64 { return float64(t.served) / t.all.Seconds() }

// hostPerConn is the host's CPU time per connection opened, in µs.
func (t *burstResult) hostPerConn() float64 { return usPerConn(t.host, t.opened) }

// usPerConn is d per connection of n, in µs (d itself for none).
func usPerConn(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(max(n, 1))
}

// pct99 is t's 99th percentile latency in ns.
func pct99(t *burstResult) float64 { return float64(pct(t.lat, 0.99)) }

// burstOnce opens a burst of n connections, waits (up to 20 s) for every
// connection's lte subflow, then closes the connections and waits for the
// kernel to report them closed.
//
// account (nil: none) gives the contender's account of the round, taken
// once every connection is served and before they are closed: closing
// them makes the kernel send each connection's CLOSED and its subflows'
// SUB_CLOSED, which the daemon reads and the floor does not.
func burstOnce(b *testing.B, gen *generator, obs *observer, n int, account func(opened int) string) burstRound {
	obs.reset()
	host := readHost(b)
	opened, start, open := gen.open(b, n)
	r := burstRound{opened: opened, open: open}
	deadline := time.Now().Add(20 * time.Second)
	for !obs.served(opened) && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	r.host = readHost(b).busySince(host)
	r.lat, r.lost, r.all = obs.result(start)
	if account != nil {
		r.stages = account(opened)
	}
	if os.Getenv("BURST_TIMELINE") != "" {
		var mono unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
		b.Logf("timeline of the round from its first dial at CLOCK_MONOTONIC %.6f s (perf record -k mono) (ms since the first dial: connections established in that millisecond, the longest latency among them):%s",
			time.Duration(mono.Nano()-time.Since(start).Nanoseconds()).Seconds(), obs.timeline(start, time.Millisecond))
	}
	r.served = len(r.lat)
	gen.closeAll(b)
	testbed.Eventually(b, "every connection of the round closed", func() (bool, string) {
		c := obs.closed()
		return c >= opened, fmt.Sprintf("%d of %d CLOSED events", c, opened)
	})
	if r.served < r.opened {
		b.Errorf("only %d of %d connections got their lte subflow", r.served, r.opened)
	}
	return r
}

// The load of BenchmarkBurst runs in a process of its own (this test
// binary again, in helper mode), so that the benchmark process does
// nothing but observe: a server in the proxy namespace that accepts MPTCP
// connections and keeps them (it reads nothing: the kernel acknowledges
// the data all the same), and the openers in the client namespace. It
// reads commands on its standard input: "open N" (answer: "opened COUNT
// START_UNIX_NS DURATION_NS ERROR|-"), "close" (answer: "closed").
// BenchmarkServerLoad runs several, each with a port of its own.
const burstHelperEnv = "GIGAPATH_BURST_HELPER" // client-ns proxy-ns listen-addr:port dial-addr:port

type generator struct{ *testbed.Child }

// startGenerator starts a generator whose server listens on listen in the
// proxy namespace and whose openers dial remote from the client namespace.
func startGenerator(b *testing.B, bed *testbed.Bed, listen, remote string) *generator {
	return &generator{testbed.StartChildT(b, fmt.Sprintf("%s=%s %s %s %s", burstHelperEnv, bed.Client.Name, bed.Proxy.Name, listen, remote), "ready", testWriter{b})}
}

func (g *generator) line(b *testing.B) string {
	l, err := g.Line()
	if err != nil {
		b.Fatalf("generator ended: %v", err)
	}
	return l
}

// open opens a burst of n connections: how many were opened, when the
// first dial began and how long opening them took.
func (g *generator) open(b *testing.B, n int) (opened int, start time.Time, took time.Duration) {
	fmt.Fprintf(g.In, "open %d\n", n)
	var startNs, tookNs int64
	var errMsg string
	if _, err := fmt.Sscanf(g.line(b), "opened %d %d %d %s", &opened, &startNs, &tookNs, &errMsg); err != nil {
		b.Fatalf("generator: %v", err)
	}
	if errMsg != "-" {
		b.Errorf("generator: %s", errMsg)
	}
	return opened, time.Unix(0, startNs), time.Duration(tookNs)
}

// closeAll closes every connection, client and server ends.
func (g *generator) closeAll(b *testing.B) {
	fmt.Fprintln(g.In, "close")
	if l := g.line(b); l != "closed" {
		b.Fatalf("generator: %q", l)
	}
}

// growFileTable grows the process's file table to the open-file limit
// (at most 65,536) now, before any burst. The kernel grows it by doubling as descriptors
// are opened, and in a process with threads each growth waits for an RCU
// grace period (expand_fdtable's synchronize_rcu) while every other thread
// that opens a file waits for it: a burst's openers then all stopped for
// 10-15 ms at a time (perf: alloc_fd < expand_files, the openers asleep,
// a CPU idle), in whichever rounds the table grew, the first of each
// bed's.
func growFileTable() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	top := int(min(lim.Cur, 1<<16)) - 1
	if err := unix.Dup3(0, top, unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("growing the file table to %d: %w", top+1, err)
	}
	return unix.Close(top)
}

// burstHelper is the generator process's main.
func burstHelper(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 4 {
		fmt.Fprintf(os.Stderr, "%s=%q: want client-ns proxy-ns listen-addr:port dial-addr:port\n", burstHelperEnv, spec)
		return 2
	}
	cli, prx, listen, remote := &testbed.NetNS{Name: f[0]}, &testbed.NetNS{Name: f[1]}, f[2], f[3]
	var ln net.Listener
	if err := prx.Do(func() error {
		// No keep-alive, on either end (KeepAlive -1; Go's default is
		// probes every 15 s, Linux's is none): 15 s probes on 100,000
		// sockets made the kernel run their timers in bursts of up to
		// 30 ms of softirq (perf: tcp_keepalive_timer, 56 ms/s), which
		// stop whichever thread has that CPU, the daemon's loop among
		// them. Phones do not probe every 15 s.
		lc := net.ListenConfig{KeepAlive: -1}
		lc.SetMultipathTCP(true)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", listen)
		return err
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := growFileTable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	var accepted, dialled []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var n int
		switch l := in.Text(); {
		case l == "close":
			mu.Lock()
			closeAll(dialled)
			closeAll(accepted)
			dialled, accepted = nil, nil
			mu.Unlock()
			fmt.Println("closed")
		case strings.HasPrefix(l, "open ") && func() bool { _, err := fmt.Sscanf(l, "open %d", &n); return err == nil }():
			start := time.Now()
			conns, err := openBurst(cli, remote, n)
			took := time.Since(start)
			mu.Lock()
			dialled = append(dialled, conns...)
			mu.Unlock()
			msg := "-"
			if err != nil {
				msg = strings.ReplaceAll(err.Error(), " ", "_")
			}
			fmt.Printf("opened %d %d %d %s\n", len(conns), start.UnixNano(), took.Nanoseconds(), msg)
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", l)
			return 2
		}
	}
	return 0
}

// openBurst opens n MPTCP connections to remote from ns by burstOpeners
// openers as fast as they go, each on a thread of its own in the
// namespace (no namespace switch per dial): dial, write one byte, next.
func openBurst(ns *testbed.NetNS, remote string, n int) ([]net.Conn, error) {
	var mu sync.Mutex
	var conns []net.Conn
	var errs []error
	var wg sync.WaitGroup
	for w := 0; w < burstOpeners; w++ {
		per := n / burstOpeners
		if w < n%burstOpeners {
			per++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]net.Conn, 0, per)
			err := ns.Do(func() error {
				d := net.Dialer{KeepAlive: -1} // as the server's
				d.SetMultipathTCP(true)
				for i := 0; i < per; i++ {
					c, err := d.Dial("tcp", remote)
					if err != nil {
						return fmt.Errorf("dial: %w", err)
					}
					mine = append(mine, c)
					if _, err := c.Write([]byte{1}); err != nil {
						return fmt.Errorf("write: %w", err)
					}
				}
				return nil
			})
			mu.Lock()
			conns = append(conns, mine...)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return conns, errors.Join(errs...)
}

// kernelPMOn turns the client namespace to the in-kernel PM as a user
// would for the two-path case: path_manager kernel, limits, a subflow
// endpoint on lte0 and a source rule and table for the lte address. undo
// removes what it added.
func kernelPMOn(b *testing.B, bed *testbed.Bed) (undo func()) {
	undoRule := lteSourceRule(b, bed, "kernel")
	bed.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	bed.Client.MustRun("ip", "mptcp", "endpoint", "add", bed.LTEAddr.String(), "dev", testbed.LTEIf, "subflow")
	return func() {
		bed.Client.MustRun("ip", "mptcp", "endpoint", "flush")
		undoRule()
	}
}

// lteSourceRule puts the client namespace on the path manager pm (kernel
// or userspace) and routes the lte address's traffic by lte0 (a source
// rule and its table), as a user sets up by hand.
func lteSourceRule(b *testing.B, bed *testbed.Bed, pm string) (undo func()) {
	lte, gw := bed.LTEAddr.String(), bed.ProxyLTEAddr.String()
	table := strconv.Itoa(testbed.LTETable)
	bed.Client.MustRun("sysctl", "-qw", "net.mptcp.path_manager="+pm)
	bed.Client.MustRun("ip", "route", "replace", "default", "via", gw, "dev", testbed.LTEIf, "table", table)
	bed.Client.MustRun("ip", "rule", "add", "from", lte, "table", table, "priority", strconv.Itoa(testbed.RulePriority))
	return func() {
		bed.Client.MustRun("ip", "rule", "del", "from", lte, "table", table, "priority", strconv.Itoa(testbed.RulePriority))
		bed.Client.MustRun("ip", "route", "flush", "table", table)
	}
}

// prepareContender readies a contender's process (the daemon on either
// path manager, the floor) for a round: BURST_DAEMON_NICE and
// BURST_DAEMON_SCHED on every thread of pid, then its warm-up, so that the
// round measures a running process, not one that has just started (its
// heap, sockets and threads warm).
func prepareContender(b *testing.B, pid int, gen *generator, obs *observer) {
	if n := os.Getenv("BURST_DAEMON_NICE"); n != "" {
		renice(b, pid, n)
	}
	if s := os.Getenv("BURST_DAEMON_SCHED"); s != "" {
		setSched(b, pid, "BURST_DAEMON_SCHED", s)
	}
	warmUp(b, gen, obs)
}

// warmUp is a burst of a quarter of a round's, not counted, which every
// mode's round follows at once: nothing else runs between them. A process
// started there (a scrape's curl, by ip netns exec in the client's
// namespace) cost the round after it about a tenth of its rate, and for
// seconds after; before a warm-up it cost nothing seen (docs/benchmarks.md,
// "burst", "Since (2026-12-06, 03:00-04:05 UTC)"). A pause there costs
// too: nothing may wait between the two.
func warmUp(b *testing.B, gen *generator, obs *observer) {
	burstOnce(b, gen, obs, burstConns/4, nil)
}

// perfRecord runs `perf record -g` on pid when BURST_PERF names a file
// prefix; stop ends it and waits for it. Its start (a process, and 300 ms
// for perf to attach) comes between the warm-up and the round, which
// slows the round (warmUp): a profiled run's rates are not the others'.
func perfRecord(b *testing.B, pid int) (stop func()) {
	prefix := os.Getenv("BURST_PERF")
	if prefix == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-q", "-g", "-F", "4999", "-p", strconv.Itoa(pid), "-o", fmt.Sprintf("%s-%d", prefix, pid))
	cmd.Stderr = testWriter{b}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
}

// cpuMark is a contender's CPU account (procCPU, ctxSwitches, schedStat)
// when a round began.
type cpuMark struct {
	pid                   int
	cpu                   cpuTime
	cs                    int
	ran, wait, rt, rtWait time.Duration
}

func markCPU(b *testing.B, pid int) cpuMark {
	ran, wait, rt, rtWait := schedStat(b, pid)
	return cpuMark{pid, procCPU(b, pid), ctxSwitches(b, pid), ran, wait, rt, rtWait}
}

// account is burstOnce's account of the contender (mode) for its log:
// what it took from the mark until the round's connections were served,
// per connection opened. The time per connection is the scheduler's
// (schedstat, in nanoseconds); user and system time (in 10 ms ticks) only
// split it. stop, called first, ends the round's perfRecord.
func (m cpuMark) account(b *testing.B, mode string, stop func()) func(opened int) string {
	return func(n int) string {
		stop()
		ran, wait, rt, rtWait := schedStat(b, m.pid)
		ran, wait, rt, rtWait = ran-m.ran, wait-m.wait, rt-m.rt, rtWait-m.rtWait
		cpu, cs := procCPU(b, m.pid).sub(m.cpu), ctxSwitches(b, m.pid)-m.cs
		const mib = 1 << 20
		return fmt.Sprintf("\n\t%s CPU until the round was served: %v on a CPU (%.1f µs per connection, %.1f of them in real-time threads; user %v system %v), %.1f context switches per connection, runnable but waiting for a CPU %v (%v per switch; %v of it in real-time threads), %.2f minor page faults per connection; resident %.1f MiB, at most %.1f MiB so far",
			mode, ran.Round(time.Microsecond), float64(ran.Nanoseconds())/1e3/float64(n), float64(rt.Nanoseconds())/1e3/float64(n), cpu.user, cpu.sys, float64(cs)/float64(n),
			wait.Round(time.Millisecond), (wait / time.Duration(max(cs, 1))).Round(time.Microsecond), rtWait.Round(time.Microsecond), float64(cpu.minflt)/float64(n),
			float64(procRSS(b, m.pid))/mib, float64(procStatusBytes(b, m.pid, "VmHWM"))/mib)
	}
}

// ctxSwitches is the number of context switches of every thread of pid
// so far (voluntary and not).
func ctxSwitches(b *testing.B, pid int) int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(l); len(f) == 2 && strings.HasSuffix(f[0], "ctxt_switches:") {
				v, _ := strconv.Atoi(f[1])
				n += v
			}
		}
	}
	return n
}

// schedStat is how long the threads of pid have run on a CPU and been
// runnable without one (schedstat's first two fields, summed over the
// threads alive now), and how long of each its real-time threads ran and
// waited
// (SCHED_FIFO or SCHED_RR now: the daemon's create thread, the floor). A
// thread is classed by its policy when read, with all it ran: the
// benchmark sets policies (prepareContender) before its first read.
func schedStat(b *testing.B, pid int) (ran, wait, rt, rtWait time.Duration) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if f := strings.Fields(string(raw)); err == nil && len(f) >= 2 {
			r, _ := strconv.ParseInt(f[0], 10, 64)
			w, _ := strconv.ParseInt(f[1], 10, 64)
			ran += time.Duration(r)
			wait += time.Duration(w)
			if tid, _ := strconv.Atoi(t.Name()); realTime(tid) {
				rt += time.Duration(r)
				rtWait += time.Duration(w)
			}
		}
	}
	return ran, wait, rt, rtWait
}

// realTime reports whether thread tid is at SCHED_FIFO or SCHED_RR.
func realTime(tid int) bool {
	a, err := unix.SchedGetAttr(tid, 0)
	return err == nil && (a.Policy == unix.SCHED_FIFO || a.Policy == unix.SCHED_RR)
}

// renice sets the nice value of every thread of pid (nice is per thread
// on Linux; threads started later inherit it from the one that starts
// them).
func renice(b *testing.B, pid int, nice string) {
	n, err := strconv.Atoi(nice)
	if err != nil || n < -20 || n > 19 {
		b.Fatalf("BURST_DAEMON_NICE=%q: want a number from -20 to 19", nice)
	}
	if tid, err := eachThread(pid, func(tid int) error { return syscall.Setpriority(syscall.PRIO_PROCESS, tid, n) }); err != nil {
		b.Fatalf("nice %d for thread %d of process %d: %v", n, tid, pid, err)
	}
}

// eachThread calls set for every thread of pid until one fails, and
// returns that thread and its error. A thread that has exited since the
// listing (ESRCH) needs nothing set.
func eachThread(pid int, set func(tid int) error) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return pid, err
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := set(tid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return tid, err
		}
	}
	return 0, nil
}

// setSched sets the scheduling of every thread of pid from spec:
// "fifo:N" or "rr:N" (real-time priority N, as systemd's
// CPUSchedulingPolicy= and CPUSchedulingPriority= do), or "slice:DURATION"
// (SCHED_OTHER with EEVDF's custom slice, sched_attr.sched_runtime, Linux
// 6.12+: a shorter slice lets a waking thread preempt sooner), "batch"
// (SCHED_BATCH: a waking thread preempts no one) or "idle" (SCHED_IDLE:
// the thread runs only on a CPU nothing else wants), the last three
// keeping the thread's nice.
func setSched(b *testing.B, pid int, env, spec string) {
	kind, arg, _ := strings.Cut(spec, ":")
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr}
	switch kind {
	case "fifo", "rr":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 || n > 99 {
			b.Fatalf("%s=%q: want a priority from 1 to 99", env, spec)
		}
		attr.Policy, attr.Priority = unix.SCHED_FIFO, uint32(n)
		if kind == "rr" {
			attr.Policy = unix.SCHED_RR
		}
	case "slice":
		d, err := time.ParseDuration(arg)
		if err != nil || d < 100*time.Microsecond || d > 100*time.Millisecond {
			b.Fatalf("%s=%q: want a slice from 100us to 100ms", env, spec)
		}
		attr.Policy, attr.Runtime = unix.SCHED_NORMAL, uint64(d)
	case "batch":
		attr.Policy = unix.SCHED_BATCH
	case "idle":
		attr.Policy = unix.SCHED_IDLE
	default:
		b.Fatalf("%s=%q: want fifo:N, rr:N, slice:DURATION, batch or idle", env, spec)
	}
	tid, err := eachThread(pid, func(tid int) error {
		// The daemon's real-time create thread keeps its own.
		if realTime(tid) {
			return nil
		}
		a := attr
		if kind == "slice" || kind == "batch" || kind == "idle" {
			// sched_setattr sets the nice too: keep what renice gave.
			prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil {
				return err
			}
			a.Nice = int32(20 - prio) // the raw syscall returns 20-nice
		}
		return unix.SchedSetAttr(tid, &a, 0)
	})
	if err != nil {
		b.Fatalf("%s=%q for thread %d of process %d: %v", env, spec, tid, pid, err)
	}
}

type cdfSeries struct {
	name, color string
	v           []time.Duration
}

// cdfPoints is the most steps a CDF curve of cdfSVG has.
const cdfPoints = 400

// cdfSVG draws the empirical CDFs of latency samples on a logarithmic time
// axis.
func cdfSVG(title string, series []cdfSeries) []byte {
	const w, h, l, r, top, bot = 760.0, 400.0, 60.0, 20.0, 50.0, 50.0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s.v {
			us := max(float64(v)/float64(time.Microsecond), 1)
			lo, hi = min(lo, us), max(hi, us)
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	d0, d1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if d1 == d0 {
		d1++
	}
	x := func(us float64) float64 {
		return l + (math.Log10(max(us, 1))-d0)/(d1-d0)*(w-l-r)
	}
	y := func(p float64) float64 { return h - bot - p*(h-top-bot) }
	sb := svgplot.New(w, h, l, r, top, bot, title)
	for i := 0; i <= 4; i++ {
		p := float64(i) / 4
		sb.HGrid(y(p), 20, fmt.Sprintf("%.2f", p))
	}
	for _, p := range []float64{0.5, 0.9, 0.99} {
		sb.Printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#bbb" stroke-dasharray="4 3"/><text x="%.0f" y="%.0f" fill="#888">p%.0f</text>`+"\n",
			l, y(p), w-r, y(p), w-r-28, y(p)-3, p*100)
	}
	for dec := d0; dec <= d1; dec++ {
		us := math.Pow(10, dec)
		label := fmt.Sprintf("%g µs", us)
		if us >= 1000 {
			label = fmt.Sprintf("%g ms", us/1000)
		}
		sb.Printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#ddd"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			x(us), top, x(us), h-bot, x(us)-14, h-bot+16, label)
	}
	sb.Printf(`<text x="%.0f" y="%.0f">latency (log scale)</text><text x="5" y="%.0f">share of connections</text>`+"\n", w/2-50, h-12, top-10)
	for i, s := range series {
		v := slices.Clone(s.v)
		slices.Sort(v)
		// A step per sample, thinned to at most cdfPoints steps (the
		// last sample of each run of equal rounded points is kept).
		var pts []string
		last := ""
		step := max(1, (len(v)+cdfPoints-1)/cdfPoints)
		for j, d := range v {
			if j%step != step-1 && j != len(v)-1 {
				continue
			}
			us := float64(d) / float64(time.Microsecond)
			pt := fmt.Sprintf("%.1f,%.1f", x(us), y(float64(j+1)/float64(len(v))))
			if pt == last {
				continue
			}
			if len(pts) > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(us), y(float64(j+1-step)/float64(len(v)))))
			}
			pts = append(pts, pt)
			last = pt
		}
		sb.Polyline(s.color, pts)
		sb.Printf(`<text x="%.0f" y="%.0f" fill="%s">%s: p50 %v, p99 %v (n=%d)</text>`+"\n",
			l+10, top+16+float64(i)*16, s.color, s.name, pct(s.v, .5).Round(time.Microsecond), pct(s.v, .99).Round(time.Microsecond), len(v))
	}
	return sb.Bytes()
}

// The CDF plot of BenchmarkBurst is well-formed SVG, one thinned curve
// per series, with each series' p50 and p99 in its legend.
func TestCDFSVG(t *testing.T) {
	var a, k []time.Duration
	for i := range 5000 {
		a = append(a, time.Duration(i)*time.Microsecond)
		k = append(k, time.Duration(i%100)*time.Millisecond)
	}
	svg := cdfSVG("test", []cdfSeries{{"a", "#111", a}, {"k", "#222", k}})
	d := xml.NewDecoder(bytes.NewReader(svg))
	curves := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			curves++
			for _, at := range se.Attr {
				if n := len(strings.Fields(at.Value)); at.Name.Local == "points" && (n < 10 || n > 2*cdfPoints+2) {
					t.Errorf("a curve of %d points, want 10 to %d", n, 2*cdfPoints+2)
				}
			}
		}
	}
	if curves != 2 {
		t.Errorf("%d curves, want 2", curves)
	}
	for _, want := range []string{"a: p50 2.499ms, p99 4.949ms (n=5000)", "k: p50 49ms, p99 98ms (n=5000)"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("legend lacks %q", want)
		}
	}
}

// hostClock is a reading of the host's CPUs: when, how many, and how
// long they have been idle, waiting for I/O or taken by the hypervisor
// (idle, iowait and steal of /proc/stat's cpu line) since boot.
type hostClock struct {
	at   time.Time
	cpus int
	idle time.Duration
}

// readHost reads the host's CPUs. /proc/stat counts in USER_HZ ticks of
// 10 ms. On a NO_HZ kernel (this host's: CONFIG_NO_HZ_IDLE) its idle time
// comes from the idle accounting, not from sampling at the scheduler's
// tick as its busy counters do, so the busy time between two readings
// (busySince) is within about 10 ms: 10 µs a connection in a round of
// 1,000, the size of the differences between modes, which only the
// figures over many rounds tell apart.
func readHost(b *testing.B) hostClock {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	h := hostClock{at: time.Now()}
	lines := strings.Split(string(raw), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat begins %q, want the cpu line", lines[0])
	}
	for _, i := range []int{4, 5, 8} { // idle, iowait, steal (after user nice system; irq softirq between)
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat's cpu line %q: %v", lines[0], err)
		}
		h.idle += time.Duration(v) * time.Second / userHZ
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			h.cpus++
		}
	}
	return h
}

// busySince is the CPU time the host's work took since the reading h0:
// every CPU's wall time less what it idled (or lost to the hypervisor).
func (h hostClock) busySince(h0 hostClock) time.Duration {
	return time.Duration(h.cpus)*h.at.Sub(h0.at) - (h.idle - h0.idle)
}
