//go:build linux

package pathmgr

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

const (
	dumpHolderEnv   = "GIGAPATH_DUMP_HOLDER" // client-ns proxy-ns proxy-addr port connections
	dumpHolderConns = 9000                   // within an open-file limit of 20,000
)

func init() {
	if spec := os.Getenv(dumpHolderEnv); spec != "" {
		if err := dumpHolder(spec); err != nil {
			fmt.Fprintln(os.Stderr, "dump holder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// dumpHolder listens on every address of the proxy namespace, opens the
// connections to it from the client namespace (each sends a byte: only
// then is it fully established, and announced to), prints "ok", and
// holds them until its stdin ends.
func dumpHolder(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 5 {
		return fmt.Errorf("%s=%q: want client-ns proxy-ns proxy-addr port connections", dumpHolderEnv, spec)
	}
	n, err := strconv.Atoi(f[4])
	if err != nil {
		return err
	}
	var ln net.Listener
	if err := netns.Do(f[1], func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		// On every address: the clients join the announced lte address.
		ln, err = lc.Listen(context.Background(), "tcp", ":"+f[3])
		return err
	}); err != nil {
		return err
	}
	var held, acc []net.Conn // dialed, accepted
	accepted := make(chan error, 1)
	go func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			acc = append(acc, c)
		}
		accepted <- nil
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	d.SetMultipathTCP(true)
	for i := range n {
		if err := netns.Do(f[0], func() error {
			c, err := d.Dial("tcp", net.JoinHostPort(f[2], f[3]))
			if err == nil {
				held = append(held, c)
				_, err = c.Write([]byte{1})
			}
			return err
		}); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	if err := <-accepted; err != nil {
		return err
	}
	fmt.Println("ok")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range append(held, acc...) {
		c.Close()
	}
	return nil
}

// BenchmarkInventoryDump: one listing of a carrier proxy's connections
// (INVENTORY_DUMP_CONNS, default 50,000, each with two subflows: the
// proxy's in-kernel PM announces its lte address and the clients join
// it), with the connections and the subflows dumped one after the other
// on one socket and at the same time on two, alternated in each round of
// the same run. Reported: the median of each and their ratio, and the
// bytes and allocations per listing of the two-socket one.
//
// Both ends of every connection are on this host, so the kernel's
// established hash that the subflow dump walks holds the clients'
// sockets too (skipped, another namespace), as it would not on a proxy.
func BenchmarkInventoryDump(b *testing.B) {
	n := 50000
	if v := os.Getenv("INVENTORY_DUMP_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("INVENTORY_DUMP_CONNS=%q: want a positive number", v)
		}
	}
	bed := testbed.UpT(b, testbed.Spec{})
	bed.Client.RunT(b, "ip", "route", "add", "default", "via", bed.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	bed.Client.RunT(b, "ip", "mptcp", "limits", "set", "subflow", "1", "add_addr_accepted", "1")
	bed.Client.RunT(b, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
	bed.Proxy.RunT(b, "ip", "mptcp", "endpoint", "add", bed.ProxyLTEAddr.String(), "dev", testbed.ProxyLTEIf, "signal")
	bed.Proxy.RunT(b, "ip", "mptcp", "limits", "set", "subflow", "1", "add_addr_accepted", "0")
	// An ADD_ADDR lost in the opening burst is sent again after 1 s, not
	// 120 s.
	bed.Proxy.RunT(b, "sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=65536", "net.core.somaxconn=65535", "net.mptcp.add_addr_timeout=1")

	// Holders: processes of this test binary, each holding both ends of
	// up to dumpHolderConns connections (the open-file limit).
	start := time.Now()
	for i := 0; i*dumpHolderConns < n; i++ {
		k := min(dumpHolderConns, n-i*dumpHolderConns)
		// End of input ends a holder and its connections.
		testbed.StartChildT(b, fmt.Sprintf("%s=%s %s %s %d %d", dumpHolderEnv, bed.Client.Name, bed.Proxy.Name, bed.ProxyAddr, 7300+i, k), "ok", os.Stderr)
	}

	inv, err := OpenInventory(&Config{NetNS: bed.Proxy.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer inv.Close()
	defer func(was bool) { dumpInParallel = was }(dumpInParallel)
	// Measured once the joins stop coming (5 s without a new one): a
	// connection the kernel kept MPTCP (a SYN cookie may fall back to
	// TCP) whose join the opening burst lost has one subflow.
	var mptcp, joined, stable int
	for deadline := time.Now().Add(2 * time.Minute); stable < 5; stable++ {
		list, err := inv.Connections(ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		j := twoSubflows(list)
		if len(list) != mptcp || j != joined {
			mptcp, joined, stable = len(list), j, 0
		}
		if time.Now().After(deadline) {
			b.Fatalf("after 2 min: %d MPTCP connections of %d, %d with two subflows, still changing", mptcp, n, joined)
		}
		time.Sleep(time.Second)
	}
	if mptcp < n*99/100 {
		b.Fatalf("%d MPTCP connections of %d", mptcp, n)
	}
	b.Logf("%d connections opened, %d MPTCP, %d of them with two subflows, in %v", n, mptcp, joined, time.Since(start).Round(time.Millisecond))

	var seq, par []time.Duration
	var allocs, bytes uint64
	var user, sys [2]time.Duration // one socket, two
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, parallel := range []bool{false, true} {
			dumpInParallel = parallel
			var m0, m1 runtimeMem
			m0.read()
			t0 := time.Now()
			list, err := inv.Connections(ListOptions{ListenersToo: true})
			d := time.Since(t0)
			m1.read()
			if err != nil {
				b.Fatal(err)
			}
			if got := twoSubflows(list); got < joined { // joins only ever add
				b.Fatalf("parallel=%v: %d connections with two subflows, want at least %d", parallel, got, joined)
			}
			if parallel {
				user[1] += m1.user - m0.user
				sys[1] += m1.sys - m0.sys
				par = append(par, d)
				allocs, bytes = m1.mallocs-m0.mallocs, m1.bytes-m0.bytes
			} else {
				user[0] += m1.user - m0.user
				sys[0] += m1.sys - m0.sys
				seq = append(seq, d)
			}
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
	ms, mp := med(seq), med(par)
	b.ReportMetric(float64(ms.Microseconds())/1000, "one-socket-ms")
	b.ReportMetric(float64(mp.Microseconds())/1000, "two-sockets-ms")
	b.ReportMetric(float64(mp)/float64(ms), "two/one")
	b.ReportMetric(float64(allocs), "allocs/listing")
	b.ReportMetric(float64(bytes)/float64(mptcp), "B/conn")
	per := func(d time.Duration) time.Duration { return (d / time.Duration(b.N)).Round(time.Millisecond) }
	b.ReportMetric(float64(per(sys[1]).Milliseconds()), "two-sockets-sys-ms")
	b.ReportMetric(float64(per(user[1]).Milliseconds()), "two-sockets-user-ms")
	b.Logf("%d connections, %d subflows: one socket %v (CPU %v in the kernel, %v here), two sockets %v (%v, %v) (%.2f×), %d allocations and %d B per listing; load average %s",
		mptcp, mptcp+joined, ms, per(sys[0]), per(user[0]), mp, per(sys[1]), per(user[1]), float64(mp)/float64(ms), allocs, bytes, testbed.LoadAverage())
}

// twoSubflows counts the connections of list with two subflows.
func twoSubflows(list []Connection) int {
	n := 0
	for _, c := range list {
		if len(c.Subflows) == 2 {
			n++
		}
	}
	return n
}

// runtimeMem is the process's allocation counters and CPU time (the
// connections are held by other processes: this one only lists them).
type runtimeMem struct {
	mallocs, bytes uint64
	user, sys      time.Duration
}

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.mallocs, m.bytes = ms.Mallocs, ms.TotalAlloc
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	m.user, m.sys = time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}
