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
	"runtime"
	"strconv"
	"strings"
	"testing"

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
// lock. Its latency is the lower bound of the daemon's on this bed.
const floorHelperEnv = "GIGAPATH_BURST_FLOOR" // client-ns lte-ifname

// floorHelper is the floor's main. It answers "ready", then "pid PID",
// and runs until its input ends; it then prints how many creates the
// kernel refused, and why the first was.
func floorHelper(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 2 {
		fmt.Fprintf(os.Stderr, "%s=%q: want client-ns lte-ifname\n", floorHelperEnv, spec)
		return 2
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

// floorRound is one round of the floor: the client namespace on the
// userspace PM with the lte source rule (as the in-kernel PM's rounds have
// it, without their endpoint), the floor started at the daemon's priority,
// warmed by a quarter burst as the daemon is, the round, and the floor
// stopped.
func floorRound(b *testing.B, bed *testbed.Bed, gen *generator, obs *observer) burstRound {
	undo := lteSourceRule(b, bed, "userspace")
	defer undo()
	c := testbed.StartChildT(b, fmt.Sprintf("%s=%s %s", floorHelperEnv, bed.Client.Name, testbed.LTEIf), "ready", testWriter{b})
	l, err := c.Line()
	pid, perr := strconv.Atoi(strings.TrimPrefix(l, "pid "))
	if err != nil || perr != nil {
		b.Fatalf("floor: %q (%v), want its pid", l, err)
	}
	prepareContender(b, pid, gen, obs)
	stopPerf := perfRecord(b, pid)
	r := burstOnce(b, gen, obs, burstConns, markCPU(b, pid).account(b, modeFloor, stopPerf))
	c.In.Close()
	l, err = c.Line()
	if err != nil || !strings.HasPrefix(l, "refused ") {
		b.Fatalf("floor: %q (%v)", l, err)
	}
	if l != `refused 0 ""` {
		b.Errorf("floor: the kernel %s", l)
	}
	c.Close() // collected now, not when the benchmark ends
	return r
}
