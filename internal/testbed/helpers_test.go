//go:build linux

package testbed

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The helpers end to end: two namespaces joined by ConnectT (ip addr is the
// oracle), an MPTCP echo server from ServeT that a DialMPTCPT connection
// round-trips through (ss -M the oracle for MPTCP on both ends), and the
// listener gone after the cleanup.
func TestIntegrationHelpers(t *testing.T) {
	var srvName, port string
	t.Run("bed", func(t *testing.T) {
		cli, srv := NetNST(t, "hcli"), NetNST(t, "hsrv")
		srvName = srv.Name
		ConnectT(t, cli, srv,
			VethLink{A: "wifi0", B: "wifi1", AAddr: "10.66.1.1/24", BAddr: "10.66.1.2/24"},
			VethLink{A: "lte0", B: "lte1", AAddr: "fd00:66:2::1/64", BAddr: "fd00:66:2::2/64"})
		for _, c := range []struct {
			ns        *NetNS
			dev, want string
		}{
			{cli, "wifi0", "10.66.1.1/24"}, {srv, "wifi1", "10.66.1.2/24"},
			{cli, "lte0", "fd00:66:2::1/64"}, {srv, "lte1", "fd00:66:2::2/64"},
		} {
			if out := c.ns.RunT(t, "ip", "addr", "show", "dev", c.dev); !strings.Contains(out, c.want) {
				t.Errorf("ip addr show dev %s in %s = %q, want %s", c.dev, c.ns.Name, out, c.want)
			}
		}

		ln := ServeT(t, srv, "tcp4", "10.66.1.2:0", true, Echo)
		_, port, _ = strings.Cut(ln.Addr().String(), ":")
		c := DialMPTCPT(t, cli, "tcp4", "10.66.1.1", "10.66.1.2:"+port)
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v; want ping", buf, err)
		}
		if out := srv.RunT(t, "ss", "-MtnH", "state", "listening"); !mptcpLine(out, "10.66.1.2:"+port) {
			t.Errorf("ss -Mtn state listening in %s = %q, want an MPTCP listener on 10.66.1.2:%s", srv.Name, out, port)
		}
		if out := cli.RunT(t, "ss", "-MtnH", "state", "established"); !mptcpLine(out, "10.66.1.2:"+port) {
			t.Errorf("ss -Mtn state established in %s = %q, want an MPTCP connection to 10.66.1.2:%s", cli.Name, out, port)
		}
		KeepSending(t, c)
		sinkLn := ServeT(t, srv, "tcp4", "10.66.1.2:0", false, Sink)
		if out := srv.RunT(t, "ss", "-MtnH", "state", "listening"); mptcpLine(out, sinkLn.Addr().String()) {
			t.Errorf("ss -Mtn in %s lists the plain TCP listener %s: %q", srv.Name, sinkLn.Addr(), out)
		}
	})
	// The sub-test's cleanups have run: its namespaces are gone.
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), srvName) {
		t.Errorf("namespace %s still listed after the cleanup: %q", srvName, out)
	}
}

// mptcpLine tells whether ss output has an "mptcp" socket line with addr.
func mptcpLine(ss, addr string) bool {
	for _, l := range strings.Split(ss, "\n") {
		if strings.HasPrefix(l, "mptcp") && strings.Contains(l, addr) {
			return true
		}
	}
	return false
}

// Collect hands on batches and errors, stops when handle says so, and does
// not hand on the error caused by its own stop.
func TestCollect(t *testing.T) {
	src := make(chan int)
	var calls atomic.Int32
	recv := func(ctx context.Context) ([]int, error) {
		calls.Add(1)
		select {
		case v := <-src:
			if v < 0 {
				return nil, errors.New("bad batch")
			}
			return []int{v, v}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	var got []int
	var errs atomic.Int32
	stop := Collect(t, recv, func(b []int, err error) bool {
		if err != nil {
			errs.Add(1)
		}
		got = append(got, b...)
		return true
	})
	src <- 1
	src <- -1
	src <- 2
	stop()
	stop() // idempotent enough for the cleanup to call it again
	if want := []int{1, 1, 2, 2}; len(got) != 4 || got[0] != 1 || got[3] != 2 {
		t.Errorf("batches = %v, want %v", got, want)
	}
	if errs.Load() != 1 {
		t.Errorf("%d errors handed on, want 1 (the receive error; not the cancellation)", errs.Load())
	}

	calls.Store(0)
	stop = Collect(t, recv, func(b []int, err error) bool { return false })
	src <- 3
	stop()
	if n := calls.Load(); n != 1 {
		t.Errorf("receive called %d times, want 1: the loop goes on after handle returned false", n)
	}
}

// Eventually returns as soon as cond holds, not before.
func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, "the third call", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

// cpuBusy reads the host's CPU counters: busy within total, one CPU per
// cpuN line, and the counters move forward.
func TestCPUBusy(t *testing.T) {
	b0, n0, cpus, err := cpuBusy()
	if err != nil {
		t.Fatal(err)
	}
	if cpus < 1 || b0 > n0 {
		t.Fatalf("busy %d of %d ticks over %d CPUs", b0, n0, cpus)
	}
	time.Sleep(50 * time.Millisecond)
	b1, n1, _, err := cpuBusy()
	if err != nil {
		t.Fatal(err)
	}
	if n1 < n0 || b1 < b0 {
		t.Errorf("the counters went back: busy %d -> %d, total %d -> %d", b0, b1, n0, n1)
	}
}
