//go:build linux

package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// pyEcho is an MPTCP echo server that keeps every connection open; it runs
// in its own process so the benchmark process holds only the client ends
// (the container's hard limit is 20,000 open files per process).
const pyEcho = `
import asyncio, socket, sys
async def serve(r, w):
    try:
        while True:
            b = await r.read(4096)
            if not b:
                break
            w.write(b)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(8192)
    srv = await asyncio.start_server(serve, sock=s, backlog=8192)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
`

// BenchmarkDaemonCapacity measures how many new connections per second the
// daemon fully serves when it, not the load generator, is the bottleneck.
// The daemon (the built binary, a process of its own) is stopped with
// SIGSTOP while the generator opens n MPTCP connections (each sends a byte
// and waits for the echo, so it is ESTABLISHED); their events queue in the
// daemon's netlink socket. SIGCONT then starts the clock: the rate is n
// divided by the time until an independent event listener has seen the lte
// subflow of every connection established. The daemon's CPU time over that
// drain and its RSS with n live connections come from /proc; its
// gigapath_resyncs_total says whether events were lost on the way.
func BenchmarkDaemonCapacity(b *testing.B) {
	for _, n := range []int{5000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				daemonCapacity(b, n)
			}
		})
	}
}

func daemonCapacity(b *testing.B, n int) {
	b.StopTimer()
	bin := buildBinary(b)
	bed, stopEcho := echoBed(b)
	defer stopEcho()

	cfg, sock := warnPolicy(b)
	// The daemon logs warnings only (log level warn). ip netns exec execs
	// the binary, so the command's pid is the daemon's.
	d := startDaemonW(b, bed, bin, cfg, sock, testWriter{b})
	pid := d.cmd.Process.Pid

	// Independent observer.
	watch, stopWatch := watchLTESubflows(b, bed)
	defer stopWatch()

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		b.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	genStart := time.Now()
	conns := openEchoConns(b, bed, n)
	defer closeAll(conns)
	genTime := time.Since(genStart)
	if b.Failed() {
		return
	}
	if early, _ := watch.counts(); early != 0 {
		b.Fatalf("%d lte subflows appeared while the daemon was stopped", early)
	}

	cpu0 := procCPU(b, pid)
	b.StartTimer()
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		b.Fatal(err)
	}
	stopped = false
	deadline := start.Add(120 * time.Second)
	var s int
	for {
		s, _ = watch.counts()
		if s >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	drain := time.Since(start)
	b.StopTimer()
	cpu := procCPU(b, pid).sub(cpu0)
	if s < n {
		b.Fatalf("only %d of %d connections got their lte subflow within %v", s, n, drain)
	}
	// Settle, then read RSS with all n connections (2 subflows each) live.
	time.Sleep(time.Second)
	rss := procRSS(b, pid)
	resyncs := scrapeCounter(b, bed, "gigapath_resyncs_total", 9464)
	_, lost := watch.counts()
	ssOut := bed.Client.MustRun("ss", "-HMn", "state", "established")
	live := strings.Count(ssOut, "\n")

	b.ReportMetric(float64(n)/drain.Seconds(), "served-conn/s")
	b.ReportMetric(float64(cpu.user.Microseconds())/float64(n), "daemon-user-µs/conn")
	b.ReportMetric(float64(cpu.sys.Microseconds())/float64(n), "daemon-sys-µs/conn")
	b.ReportMetric(float64(rss)/(1<<20), "daemon-RSS-MiB")
	b.ReportMetric(float64(n)/genTime.Seconds(), "generator-conn/s")
	b.Logf("%d connections (ss -M: %d established MPTCP sockets) served in %v after SIGCONT: %.0f conn/s; daemon CPU user %v + system %v (%.1f µs/conn); RSS %.1f MiB; daemon resyncs %v; observer overruns %d; generator %v (%.0f conn/s)",
		n, live, drain.Round(time.Millisecond), float64(n)/drain.Seconds(), cpu.user, cpu.sys,
		float64((cpu.user+cpu.sys).Microseconds())/float64(n), float64(rss)/(1<<20), resyncs, lost, genTime.Round(time.Millisecond), float64(n)/genTime.Seconds())
}

// warnPolicy writes basePolicy (aggregate) at log level warn, with its
// /metrics on 127.0.0.1:9464 and BENCH_CREATES's creates section
// (benchCreates; unset: the default), into a new temporary directory:
// the policy's file and its status socket.
func warnPolicy(b *testing.B) (cfg, sock string) {
	dir := b.TempDir()
	sock = filepath.Join(dir, "status.sock")
	cfg = filepath.Join(dir, "policy.yaml")
	pol := fmt.Sprintf(basePolicy, "aggregate", sock)
	pol = strings.Replace(pol, "level: debug", "level: warn", 1)
	pol = strings.Replace(pol, `listen: ""`, `listen: "127.0.0.1:9464"`, 1) + benchCreates(b)
	if err := os.WriteFile(cfg, []byte(pol), 0o600); err != nil {
		b.Fatal(err)
	}
	return cfg, sock
}

// manyConnsBed builds a bed for many connections: a main-table default
// route via wifi, raised MPTCP limits on the proxy, a wide local port
// range, a deep accept queue.
func manyConnsBed(b *testing.B) *testbed.Bed {
	bed := testbed.UpT(b, testbed.Spec{})
	bed.Client.MustRun("ip", "route", "add", "default", "via", bed.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	bed.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8")
	bed.Client.MustRun("sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
	bed.Proxy.MustRun("sysctl", "-qw", "net.core.somaxconn=8192")
	return bed
}

// echoBed builds a manyConnsBed and starts pyEcho on the proxy address, port 7002, in
// a process of its own; stop ends it.
func echoBed(b *testing.B) (bed *testbed.Bed, stop func()) {
	bed = manyConnsBed(b)
	ctx, cancel := context.WithCancel(context.Background())
	echo := bed.Proxy.Command(ctx, "python3", "-c", pyEcho, bed.ProxyAddr.String(), "7002")
	out, err := echo.StdoutPipe()
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	echo.Stderr = os.Stderr
	if err := echo.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	stop = func() { cancel(); echo.Wait() }
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		stop()
		b.Fatalf("echo server: %q %v", line, err)
	}
	return bed, stop
}

// openEchoConns opens n MPTCP connections from the client namespace to
// the echo server at the proxy address, port 7002, from 64 goroutines; each
// sends a byte and waits for its echo, so it is ESTABLISHED. The caller
// closes them (closeAll).
func openEchoConns(b *testing.B, bed *testbed.Bed, n int) []net.Conn {
	var wg sync.WaitGroup
	var cmu sync.Mutex
	conns := make([]net.Conn, 0, n)
	const workers = 64
	for w := 0; w < workers; w++ {
		per := n / workers
		if w < n%workers {
			per++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			bed.Client.Do(func() error {
				dl := net.Dialer{Timeout: echoTimeout}
				dl.SetMultipathTCP(true)
				addr := netip.AddrPortFrom(bed.ProxyAddr, 7002).String()
				for i := 0; i < per; i++ {
					c, err := echoConn(&dl, addr)
					if err != nil {
						b.Error(err)
						return nil
					}
					cmu.Lock()
					conns = append(conns, c)
					cmu.Unlock()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	return conns
}

// echoTimeout bounds each step of echoConn.
const echoTimeout = 10 * time.Second

// echoConn dials the echo server at addr with dl (whose Timeout bounds
// the dial), sends a byte and waits for its echo (each within
// echoTimeout), so that the connection is ESTABLISHED.
func echoConn(dl *net.Dialer, addr string) (net.Conn, error) {
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.SetDeadline(time.Now().Add(echoTimeout))
	if _, err := c.Write([]byte{1}); err != nil {
		c.Close()
		return nil, fmt.Errorf("write to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo from %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// procCPU is the process's user and system CPU time, and its minor page
// faults.
func procCPU(tb testing.TB, pid int) cpuTime {
	f := procStatFields(tb, pid)
	mf, _ := strconv.ParseInt(f[7], 10, 64)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return cpuTime{time.Duration(ut) * time.Second / userHZ, time.Duration(st) * time.Second / userHZ, mf}
}

// userHZ is the clock tick /proc counts CPU time in (USER_HZ).
const userHZ = 100

// procStatFields is /proc/PID/stat's fields after the command (which is
// in parentheses and may hold spaces): state is [0], minflt [7], utime
// [11], stime [12], nice [16], policy [38] (proc(5)'s field numbers less
// three).
func procStatFields(tb testing.TB, pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(raw)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

// cpuTime is a process's user and system time, and its minor page faults
// (page-table updates; docs/benchmarks.md, "burst").
type cpuTime struct {
	user, sys time.Duration
	minflt    int64
}

func (a cpuTime) sub(b cpuTime) cpuTime {
	return cpuTime{a.user - b.user, a.sys - b.sys, a.minflt - b.minflt}
}

// procRSS is the process's resident set in bytes.
func procRSS(tb testing.TB, pid int) int64 { return procStatusBytes(tb, pid, "VmRSS") }

// procStatusBytes is a size in /proc/PID/status (VmRSS, VmHWM: the
// resident set's peak) in bytes.
func procStatusBytes(tb testing.TB, pid int, field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// scrapeCounter sums a counter family on the daemon's /metrics at port (read with
// curl inside the namespace: net/http dials from another thread, which is
// not in it).
func scrapeCounter(tb testing.TB, bed *testbed.Bed, name string, port int) float64 {
	out, err := bed.Client.Run("curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, name) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}
