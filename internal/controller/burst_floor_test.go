//go:build linux

package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr"
)

// BenchmarkBurst's floor (BURST_MODES=daemon,kernel,floor): the least any
// userspace path manager does per connection, as a third mode beside the
// daemon and the in-kernel PM. A process of its own (this test binary in
// helper mode) on one P (as a client's daemon runs unless GOMAXPROCS is
// set), in which one goroutine does the work: it reads ESTABLISHED events
// (the kernel filters the rest out) and sends each connection's
// SUBFLOW_CREATE from the lte address at once, on one socket. It keeps no
// state, makes no decision, has no other work and no other thread to wake.
// What it cannot go below is what the kernel makes a userspace PM pay:
// the event's trip to a process that must be scheduled, and a request
// that the family's mutex serializes and that waits for the connection's
// lock. Its latency is the lower bound of a daemon in Go, on one P, at
// the same priority.
//
// floor-c (BURST_MODES=...,floor-c) does the same in C
// (testdata/burst_floor.c, built by the benchmark with the system's C
// compiler), without Go's runtime: a blocking read of one event at a
// time, its create and the create's acknowledgement, then the next. At
// the same priority that is the least any userspace path manager pays on
// this bed, whatever it is written in.
//
// floor-rt (BURST_MODES=...,floor-rt) is the daemon's own create thread
// (internal/rtcreate's C, testdata/burst_floor_rt.c) in a process of its
// own without Go, at the daemon's real-time priority (BENCH_CREATES's):
// what the Go process around the thread adds.
const floorHelperEnv = "GIGAPATH_BURST_FLOOR" // client-ns lte-ifname [C-floor-binary [arg...]]

// helperAnswer bounds how long the floor and BURST_LOAD's load have to
// answer (their pid once started, their account once their input
// closed): a hung helper fails the round rather than hanging it.
const helperAnswer = 10 * time.Second

// floorHelper is the floor's main. It answers "ready", then "pid PID",
// and runs until its input ends; it then prints how many creates the
// kernel refused, and why the first was.
func floorHelper(spec string) int {
	f := strings.Fields(spec)
	if len(f) < 2 {
		fmt.Fprintf(os.Stderr, "%s=%q: want client-ns lte-ifname [C-floor-binary [arg...]]\n", floorHelperEnv, spec)
		return 2
	}
	if len(f) > 2 {
		// The C floor takes this process's place (its pid, its input and
		// output) in the client namespace.
		ip, err := exec.LookPath("ip")
		if err == nil {
			err = syscall.Exec(ip, append([]string{"ip", "netns", "exec", f[0], f[2], f[1]}, f[3:]...), os.Environ())
		}
		fmt.Fprintln(os.Stderr, "the C floor:", err)
		return 1
	}
	runtime.GOMAXPROCS(1) // as a client's daemon runs
	ns := &testbed.NetNS{Name: f[0]}
	var ep pathmgr.Endpoint
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(f[1])
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				ep = pathmgr.Endpoint{ID: 2, Addr: p.Addr(), IfIndex: ifi.Index}
			}
		}
		if !ep.Addr.IsValid() {
			return fmt.Errorf("%s has no IPv4 address", f[1])
		}
		return nil
	}); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	cfg := &pathmgr.Config{NetNS: ns.Name}
	el, err := pathmgr.ListenEvents(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	defer el.Close()
	if err := el.Only(pathmgr.EventEstablished); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	pm, err := pathmgr.Dial(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	defer pm.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("ready\npid %d\n", os.Getpid())
	refused, first := 0, ""
	for {
		evs, err := el.Receive(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "floor: events:", err)
			if !errors.Is(err, pathmgr.ErrEventsLost) {
				return 1
			}
			// Lost events: their connections go without a create, and
			// the round says how many were not served. The events read
			// before the overrun came with the error.
		}
		for _, e := range evs {
			if e.Type != pathmgr.EventEstablished {
				continue
			}
			if err := pm.CreateSubflow(e.Token, ep, e.Remote); err != nil {
				if refused++; first == "" {
					first = err.Error()
				}
			}
		}
	}
	fmt.Printf("refused %d %s\n", refused, strconv.Quote(first))
	return 0
}

// floorRound is one round of the floor (mode floor; floor-c and floor-rt
// with cFloor, the C floor's binary and its arguments after the lte
// interface's name): the client namespace on the userspace PM with the
// lte source rule (as the in-kernel PM's rounds have it, without their
// endpoint), the floor started at the daemon's priority, BURST_LISTENER's
// listener (bin's) and BURST_LOAD's load, the floor warmed by a
// quarter burst as the daemon is, the round, and the floor stopped.
func floorRound(b *testing.B, bed *testbed.Bed, bin string, gen *generator, obs *observer, mode, cFloor string) burstRound {
	undo := lteSourceRule(b, bed, "userspace")
	defer undo()
	c := testbed.StartChildT(b, strings.TrimSpace(fmt.Sprintf("%s=%s %s %s", floorHelperEnv, bed.Client.Name, testbed.LTEIf, cFloor)), "ready", testWriter{b})
	l, err := c.LineWithin(helperAnswer)
	pid, perr := strconv.Atoi(strings.TrimPrefix(l, "pid "))
	if err != nil || perr != nil {
		b.Fatalf("%s: %q (%v), want its pid", mode, l, err)
	}
	defer extraListener(b, bed, bin, gen, obs)()
	defer startLoad(b)()
	prepareContender(b, pid, gen, obs)
	stopPerf := perfRecord(b, pid)
	r := burstOnce(b, gen, obs, burstConns, markCPU(b, pid).account(b, mode, stopPerf))
	c.In.Close()
	l, err = c.LineWithin(helperAnswer)
	if err != nil || !strings.HasPrefix(l, "refused ") {
		b.Fatalf("%s: %q (%v)", mode, l, err)
	}
	if l != `refused 0 ""` {
		b.Errorf("%s: the kernel %s", mode, l)
	}
	c.Close() // collected now, not when the benchmark ends
	return r
}

// extraListener starts, when BURST_LISTENER asks for it, one more reader
// of the client's mptcp_pm events: `bin monitor`, at nice N (nice:N) or
// SCHED_IDLE (idle) from its start (nice(1), chrt(1)), its output into a
// file, once it has read an event. It measures what one more socket in
// the events group costs a burst (the kernel copies every event for each,
// some inside a create, under the family's mutex; docs/benchmarks.md,
// "burst"). stop ends it; so does the benchmark's end, should it fail.
func extraListener(b *testing.B, bed *testbed.Bed, bin string, gen *generator, obs *observer) (stop func()) {
	spec := os.Getenv("BURST_LISTENER")
	if spec == "" {
		return func() {}
	}
	sched := schedPrefix(spec)
	if sched == nil {
		b.Fatalf("BURST_LISTENER=%q: want nice:N (N from -20 to 19) or idle", spec)
	}
	out, err := os.Create(filepath.Join(b.TempDir(), "monitor.out"))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := bed.Client.Command(ctx, sched[0], append(sched[1:], bin, "monitor")...)
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		cancel()
		out.Close()
		b.Fatalf("BURST_LISTENER: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			cmd.Wait()
			out.Close()
		})
	}
	b.Cleanup(stop)
	// Subscribed once it has written an event: small bursts of its own.
	for range 50 {
		burstOnce(b, gen, obs, 8, nil)
		if fi, err := out.Stat(); err == nil && fi.Size() > 0 {
			return stop
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("BURST_LISTENER: the monitor wrote no event in 50 tries")
	return nil
}

// schedPrefix is the command that runs another at the priority spec
// names: nice:N (nice(1), N from -20 to 19) or idle (chrt(1),
// SCHED_IDLE); nil for any other spec.
func schedPrefix(spec string) []string {
	if kind, arg, _ := strings.Cut(spec, ":"); kind == "nice" {
		if n, err := strconv.Atoi(arg); err == nil && n >= -20 && n <= 19 {
			return []string{"nice", "-n", arg}
		}
	} else if spec == "idle" {
		return []string{"chrt", "--idle", "0"}
	}
	return nil
}

// BURST_LOAD=KIND@PRIORITY runs a load beside the floors' rounds, as a
// process of its own (this test binary in helper mode), to tell what of a
// daemon's rest costs a burst: its CPU, its page faults, or its unmaps.
// Each kind does its work, then sleeps 1 ms (at SCHED_IDLE on busy CPUs,
// longer):
//   - churn (churn:KIB): map 64 KiB (KIB KiB), write a byte to each
//     page, unmap it: page faults and a TLB flush;
//   - fault (fault:KIB): write a byte to each page of the next 8 KiB
//     (KIB KiB) of a mapping kept (1 GiB; at its end the pages are
//     dropped, MADV_DONTNEED, and it starts again): page faults, no
//     unmap;
//   - spin (spin:US): compute for 100 µs (US µs, 1 to 100,000), no
//     system call.
//
// KIB is a whole number of pages, up to 65,536; the mappings take no huge
// pages (a fault is a page's). PRIORITY is as BURST_LISTENER's (nice:N, N
// added to the benchmark's own, or idle). When the round ends the load
// reports what it did (loops, its CPU, its page faults), and the round
// fails if it stopped before.
const loadHelperEnv = "GIGAPATH_BURST_LOAD" // KIND@PRIORITY

// burstLoad is a parsed BURST_LOAD kind.
type burstLoad struct {
	kind string        // churn, fault or spin
	size int           // bytes a loop maps (churn) or touches (fault)
	spin time.Duration // how long a spin loop computes
}

// parseLoad parses BURST_LOAD's KIND@PRIORITY: the load and the command
// that runs another at PRIORITY.
func parseLoad(spec string) (burstLoad, []string, error) {
	kind, prio, _ := strings.Cut(spec, "@")
	k, arg, has := strings.Cut(kind, ":")
	l := burstLoad{kind: k, size: map[string]int{"churn": 64 << 10, "fault": 8 << 10}[k], spin: 100 * time.Microsecond}
	n, err := strconv.Atoi(arg)
	pageKiB := os.Getpagesize() >> 10
	switch {
	case k != "churn" && k != "fault" && k != "spin":
		return l, nil, fmt.Errorf("%q: want churn, churn:KIB, fault, fault:KIB, spin or spin:US", kind)
	case !has:
	case k == "spin":
		if err != nil || n < 1 || n > 100000 {
			return l, nil, fmt.Errorf("%s: want US from 1 to 100000", kind)
		}
		l.spin = time.Duration(n) * time.Microsecond
	default:
		if err != nil || n < pageKiB || n > 65536 || n%pageKiB != 0 {
			return l, nil, fmt.Errorf("%s: want KIB a multiple of the page (%d KiB), up to 65536", kind, pageKiB)
		}
		l.size = n << 10
	}
	sched := schedPrefix(prio)
	if sched == nil {
		return l, nil, fmt.Errorf("priority %q: want nice:N (N from -20 to 19) or idle", prio)
	}
	return l, sched, nil
}

// loadHelper is the load's main (spec: KIND@PRIORITY). It puts itself at
// its priority (running itself again under nice or chrt, with the same
// pid and output), answers "ready", works until its input ends, then
// answers "done LOOPS USER_US SYS_US MINFLT": what it did since ready.
func loadHelper(spec string) int {
	l, sched, err := parseLoad(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", loadHelperEnv, spec, err)
		return 2
	}
	const atPriority = "GIGAPATH_BURST_LOAD_AT"
	if os.Getenv(atPriority) == "" {
		path, err := exec.LookPath(sched[0])
		if err == nil {
			err = syscall.Exec(path, append(sched, os.Args...), append(os.Environ(), atPriority+"=1"))
		}
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	// A page's fault each, not a huge page's every 512.
	mapping := func(size, flags int) ([]byte, error) {
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|flags)
		if err == nil {
			err = unix.Madvise(m, unix.MADV_NOHUGEPAGE)
		}
		return m, err
	}
	var kept []byte
	if l.kind == "fault" {
		if kept, err = mapping(1<<30, unix.MAP_NORESERVE); err != nil {
			return fail(err)
		}
	}
	var loops atomic.Int64
	var ready unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ready)
	go func() {
		io.Copy(io.Discard, os.Stdin) // the benchmark's signal to stop
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		fmt.Printf("done %d %d %d %d\n", loops.Load(), (ru.Utime.Nano()-ready.Utime.Nano())/1e3,
			(ru.Stime.Nano()-ready.Stime.Nano())/1e3, ru.Minflt-ready.Minflt)
		os.Exit(0)
	}()
	fmt.Println("ready")
	page, at := os.Getpagesize(), 0
	for {
		switch l.kind {
		case "churn":
			m, err := mapping(l.size, 0)
			if err != nil {
				return fail(err)
			}
			for i := 0; i < l.size; i += page {
				m[i] = 1
			}
			if err := unix.Munmap(m); err != nil {
				return fail(err)
			}
		case "fault":
			if at+l.size > len(kept) {
				if err := unix.Madvise(kept, unix.MADV_DONTNEED); err != nil {
					return fail(err)
				}
				at = 0
			}
			for i := 0; i < l.size; i += page {
				kept[at+i] = 1
			}
			at += l.size
		case "spin":
			for end := time.Now().Add(l.spin); time.Now().Before(end); {
			}
		}
		loops.Add(1)
		time.Sleep(time.Millisecond)
	}
}

// startLoad starts BURST_LOAD's load, if asked for; stop ends it and
// logs what it did (its "done" line), or fails the benchmark if it had
// stopped before or does not answer.
func startLoad(b *testing.B) (stop func()) {
	spec := os.Getenv("BURST_LOAD")
	if spec == "" {
		return func() {}
	}
	if _, _, err := parseLoad(spec); err != nil {
		b.Fatalf("BURST_LOAD=%q: %v", spec, err)
	}
	c := testbed.StartChildT(b, loadHelperEnv+"="+spec, "ready", testWriter{b})
	return func() {
		c.In.Close()
		l, err := c.LineWithin(helperAnswer)
		c.Close()
		if err != nil || !strings.HasPrefix(l, "done ") {
			b.Fatalf("BURST_LOAD=%q stopped before the round's end: %q (%v)", spec, l, err)
		}
		var loops, user, sys, minflt int64
		fmt.Sscanf(l, "done %d %d %d %d", &loops, &user, &sys, &minflt)
		b.Logf("BURST_LOAD=%s: %d loops, CPU %v user %v system, %d page faults, from its warm-up to the round's end", spec, loops,
			time.Duration(user)*time.Microsecond, time.Duration(sys)*time.Microsecond, minflt)
	}
}

// buildCFloor compiles testdata/NAME.c (burst_floor, burst_floor_rt) with
// $CC (a command and its arguments), or the first of cc, gcc and clang on
// the PATH, into a temporary directory, for mode.
func buildCFloor(b testing.TB, mode, name string) string {
	need := mode + " needs a C compiler and the kernel's headers (Debian: apt-get install gcc linux-libc-dev)"
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		for _, c := range []string{"cc", "gcc", "clang"} {
			if _, err := exec.LookPath(c); err == nil {
				cc = []string{c}
				break
			}
		}
	}
	if len(cc) == 0 {
		b.Fatalf("BURST_MODES: %s: none of cc, gcc and clang is on the PATH, and CC is not set", need)
	}
	if _, err := exec.LookPath(cc[0]); err != nil {
		b.Fatalf("BURST_MODES: %s: CC=%q: %v", need, os.Getenv("CC"), err)
	}
	bin := filepath.Join(b.TempDir(), name)
	args := append(append([]string{}, cc[1:]...), "-O2", "-Wall", "-pthread", "-I", filepath.Join("..", "rtcreate"), "-o", bin, filepath.Join("testdata", name+".c"))
	if out, err := exec.Command(cc[0], args...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %s: %v\n%s\n(%s)", mode, strings.Join(cc, " "), err, out, need)
	}
	return bin
}

// The floors in C build (the benchmark builds them only when asked for):
// burst_floor_rt.c compiles internal/rtcreate's C in, so a change there
// must keep it building.
func TestBurstFloorsBuild(t *testing.T) {
	buildCFloor(t, modeFloorC, "burst_floor")
	buildCFloor(t, modeFloorRT, "burst_floor_rt")
}
