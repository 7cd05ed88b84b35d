//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// The Grafana dashboard (docs/deploy/grafana-dashboard.json) asks only for
// metrics a running daemon or relay exports: the built binary runs as the
// phone's daemon (priority steering, so health is sampled; congestion on
// lte0, so the eBPF telemetry and send share load) and as the proxy's
// relay, an MPTCP connection goes through the relay both ways, one client
// offers no acceptable method and one asks for a closed port; then every
// metric name in the dashboard's queries must be a sample name on the
// daemon's or the relay's /metrics.
func TestIntegrationDashboardMetrics(t *testing.T) {
	want := dashboardMetrics(t)
	if errPolicy, errShare := pathpolicy.Supported(); errPolicy != nil || errShare != nil {
		t.Skipf("the dashboard's path telemetry needs the sockops program and the send-share tracepoint: %v %v", errPolicy, errShare)
	}
	bin := pmBinary(t)
	bed := testbed.UpT(t, testbed.Spec{WiFiRate: "50mbit", LTERate: "50mbit"})
	bed.Client.MustRun("ip", "route", "add", "default", "via", bed.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	bed.Client.MustRun("ip", "route", "add", "default", "via", bed.ProxyLTEAddr.String(), "dev", testbed.LTEIf, "metric", "200")
	bed.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")

	// The origin echoes, and keeps its connections for the test to end;
	// the relay listens on the proxy's address.
	originAddr := net.JoinHostPort(bed.OriginAddr.String(), "8080")
	var (
		originMu sync.Mutex
		origins  []net.Conn
	)
	testbed.ServeT(t, bed.Origin, "tcp", originAddr, false, func(c net.Conn) {
		originMu.Lock()
		origins = append(origins, c)
		originMu.Unlock()
		testbed.Echo(c)
	})
	relayAddr := net.JoinHostPort(bed.ProxyAddr.String(), "1080")
	const relayMetrics = "127.0.0.1:9478"
	startLogged(t, "relay", bed.Proxy.Command(context.Background(), bin, "relay", "--listen", relayAddr, "--metrics", relayMetrics,
		"--allow-client", bed.WiFiAddr.String()+"/32", "--allow-client", bed.LTEAddr.String()+"/32"),
		func(string) bool {
			return bed.Proxy.Do(func() error {
				c, err := net.DialTimeout("tcp", relayAddr, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			}) == nil
		})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "gigapath.yaml")
	pol := fmt.Sprintf(`path_manager: userspace
steering: priority
interfaces:
  - name: %s
    role: wifi
  - name: %s
    role: lte
    congestion: cubic
metrics:
  listen: 127.0.0.1:0
status_socket: %s
log: {level: debug}                # each event, in the output a failure shows
`, testbed.WiFiIf, testbed.LTEIf, filepath.Join(dir, "status.sock"))
	if err := os.WriteFile(cfg, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	// --netns: the daemon stays in this mount namespace, where the cgroup
	// v2 hierarchy its sockops program attaches to is mounted (ip netns
	// exec remounts /sys), and serves /metrics here.
	var daemonMetrics string
	metricsAt := regexp.MustCompile(`gigapath running.* metrics=(\S+)`)
	startLogged(t, "daemon", exec.Command(bin, "--netns", bed.Client.Name, "run", "--config", cfg, "--state-dir", t.TempDir()), func(line string) bool {
		if m := metricsAt.FindStringSubmatch(line); m != nil {
			daemonMetrics = m[1]
			return true
		}
		return false
	})

	// Traffic through the relay over MPTCP, both ways.
	md := &mptcpDialer{n: bed.Client}
	d, err := proxy.SOCKS5("tcp", relayAddr, nil, md)
	if err != nil {
		t.Fatal(err)
	}
	// Everything below needs MPTCP: a connection that fell back to TCP
	// gives the daemon no events (no gigapath_subflows) and the relay no
	// sample. The kernel's MPTCP tokens are one table for every namespace
	// (net/mptcp/token.c: a bucket per MB of memory, at most 4 tokens in
	// one): while other tests or benchmarks on the host hold tens of
	// thousands of MPTCP connections, a new one may find no free token
	// in the few it tries and fall back (MPTcpExtMPFallbackTokenInit).
	// Only that is dialed again, and logged; any other fallback fails the
	// test at once, with the counters, rather than after 20 s of waiting
	// for series.
	var c net.Conn
	for attempt := 1; ; attempt++ {
		before := mptcpCounters(t, bed.Client, bed.Proxy)
		c, err = d.Dial("tcp", originAddr)
		if err != nil {
			t.Fatalf("through the relay to %s: %v", originAddr, err)
		}
		if mp, _ := md.last().MultipathTCP(); mp {
			break
		}
		after := mptcpCounters(t, bed.Client, bed.Proxy)
		c.Close()
		if attempt == 3 || after["MPTcpExtMPFallbackTokenInit"] == before["MPTcpExtMPFallbackTokenInit"] {
			t.Fatalf("the connection through the relay is not MPTCP (attempt %d); MPTCP counters of the client and the proxy, before: %v; after: %v", attempt, before, after)
		}
		t.Logf("the connection through the relay fell back to TCP: no free MPTCP token (MPTcpExtMPFallbackTokenInit %d -> %d; other MPTCP connections on the host); dialing again",
			before["MPTcpExtMPFallbackTokenInit"], after["MPTcpExtMPFallbackTokenInit"])
	}
	traffic := sendAndCount(t, c)
	// Errors: no acceptable method, and a refused destination.
	if err := bed.Client.Do(func() error {
		raw, err := net.DialTimeout("tcp", relayAddr, 5*time.Second)
		if err != nil {
			return err
		}
		defer raw.Close()
		raw.Write([]byte{5, 1, 2}) // SOCKS5, one method: username/password
		io.Copy(io.Discard, raw)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rc, err := d.Dial("tcp", net.JoinHostPort(bed.OriginAddr.String(), "9")); err == nil {
		rc.Close()
		t.Fatal("the relay reached a closed port")
	}

	daemon := func() (map[string]bool, error) { return scrape("http://"+daemonMetrics+"/metrics", nil) }
	relay := func() (map[string]bool, error) {
		return scrape("http://"+relayMetrics+"/metrics", func(network, addr string) (c net.Conn, err error) {
			err = bed.Proxy.Do(func() error { c, err = net.DialTimeout(network, addr, 5*time.Second); return err })
			return c, err
		})
	}
	// Series that need the connection's subflows and telemetry, read while
	// it is open (the per-subflow telemetry goes with the subflows).
	// The srtt histogram per interface names the policy's interfaces: the
	// wifi0 subflow the connection started with, and the lte0 one the
	// daemon added.
	dm := waitMetrics(t, daemon, "gigapath_subflows", "gigapath_path_send_share_ratio", "gigapath_subflow_srtt_seconds", "gigapath_interface_healthy",
		fmt.Sprintf(`gigapath_telemetry_srtt_seconds_count{interface=%q,role="wifi"}`, testbed.WiFiIf),
		fmt.Sprintf(`gigapath_telemetry_srtt_seconds_count{interface=%q,role="lte"}`, testbed.LTEIf))
	// The relay samples subflows when the first direction of a connection
	// ends. The origin ends it, once everything sent came back: a TCP FIN
	// the relay reads at once. (The test closed its MPTCP end while the
	// echo still flowed, before: that reset lost the sample; and on a
	// loaded host an MPTCP DATA_FIN was seen to wait more than 10 s
	// before the other end took it in, docs/deploy.md.)
	if err := traffic.stop(10 * time.Second); err != nil {
		var socks []string
		for _, n := range []*testbed.NetNS{bed.Client, bed.Proxy, bed.Origin} {
			out, _ := n.Run("ss", "-tanMie")
			socks = append(socks, n.Name+":\n"+out)
		}
		t.Fatalf("the echo through the relay: %v; sockets:\n%s", err, strings.Join(socks, "\n"))
	}
	originMu.Lock()
	for _, oc := range origins { // ours, and those of connections dialed again
		oc.Close()
	}
	originMu.Unlock()
	rm := waitMetrics(t, relay, "gigapath_relay_subflows_count", "gigapath_relay_rejected_total")
	c.Close()
	var places []string
	for p := range want {
		places = append(places, p)
	}
	sort.Strings(places)
	// family drops a histogram's sample suffixes.
	family := func(name string) string {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			name = strings.TrimSuffix(name, suf)
		}
		return name
	}
	used := map[string]bool{}
	for _, p := range places {
		for _, name := range want[p] {
			used[family(name)] = true
			if !dm[name] && !rm[name] {
				t.Errorf("%s uses %s, which neither the daemon nor the relay exports", p, name)
			}
		}
	}
	unused := map[string]bool{}
	for _, m := range []map[string]bool{dm, rm} {
		for name := range m {
			if strings.HasPrefix(name, "gigapath_") && !strings.Contains(name, "{") && !used[family(name)] {
				unused[family(name)] = true
			}
		}
	}
	var list []string
	for n := range unused {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("the dashboard uses %d metric families; gigapath metrics it does not show: %s", len(used), strings.Join(list, " "))
}

// traffic writes 8 KiB every 2 ms to an echoing connection and counts
// what comes back.
type traffic struct {
	done     chan struct{}
	sent     chan int64 // what the writer wrote, once it returned
	received atomic.Int64
	readErr  chan error
}

// sendAndCount starts the writer and the reader of c.
func sendAndCount(t *testing.T, c net.Conn) *traffic {
	tr := &traffic{done: make(chan struct{}), sent: make(chan int64, 1), readErr: make(chan error, 1)}
	go func() {
		buf := make([]byte, 8<<10)
		var n int64
		defer func() { tr.sent <- n }()
		for {
			select {
			case <-tr.done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			k, err := c.Write(buf)
			n += int64(k)
			var ne net.Error
			if err != nil && (!errors.As(err, &ne) || !ne.Timeout()) {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			k, err := c.Read(buf)
			tr.received.Add(int64(k))
			if err != nil {
				tr.readErr <- err
				return
			}
		}
	}()
	t.Cleanup(func() { tr.halt(); c.Close() })
	return tr
}

// halt stops the writer (again: a no-op) and returns what it wrote.
func (tr *traffic) halt() int64 {
	select {
	case <-tr.done:
	default:
		close(tr.done)
	}
	n := <-tr.sent
	tr.sent <- n
	return n
}

// stop stops the writer and waits up to wait until everything it wrote
// came back.
func (tr *traffic) stop(wait time.Duration) error {
	sent := tr.halt()
	for deadline := time.Now().Add(wait); tr.received.Load() < sent; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-tr.readErr:
			return fmt.Errorf("read after %d of %d bytes: %w", tr.received.Load(), sent, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d bytes back after %v", tr.received.Load(), sent, wait)
		}
	}
	return nil
}

// mptcpDialer dials MPTCP from a namespace (the SOCKS5 client's
// transport), and keeps the last connection it made: the SOCKS5 client's
// wraps it, without CloseWrite.
type mptcpDialer struct {
	n  *testbed.NetNS
	mu sync.Mutex
	c  *net.TCPConn
}

func (d *mptcpDialer) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := d.n.Do(func() (err error) {
		nd := net.Dialer{Timeout: 5 * time.Second}
		nd.SetMultipathTCP(true)
		c, err = nd.Dial(network, addr)
		return err
	})
	if err == nil {
		d.mu.Lock()
		d.c = c.(*net.TCPConn)
		d.mu.Unlock()
	}
	return c, err
}

func (d *mptcpDialer) last() *net.TCPConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// mptcpCounters sums the MPTCP counters of the namespaces that are not
// zero (nstat).
func mptcpCounters(t *testing.T, ns ...*testbed.NetNS) map[string]uint64 {
	sum := map[string]uint64{}
	for _, n := range ns {
		out, err := n.Run("nstat", "-asz", "MPTcpExt*")
		if err != nil {
			t.Fatalf("nstat in %s: %v: %s", n.Name, err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || !strings.HasPrefix(f[0], "MPTcpExt") {
				continue
			}
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil && v != 0 {
				sum[f[0]] += v
			}
		}
	}
	return sum
}

// scrape returns the sample names on a Prometheus text endpoint, and its
// series with labels (name{label="value",...}), reached
// with dial when it is not nil (the HTTP transport dials on goroutines of
// its own, outside a namespace the caller entered).
func scrape(url string, dial func(network, addr string) (net.Conn, error)) (map[string]bool, error) {
	tr := &http.Transport{}
	if dial != nil {
		tr.DialContext = func(_ context.Context, network, addr string) (net.Conn, error) { return dial(network, addr) }
	}
	defer tr.CloseIdleConnections()
	cl := http.Client{Timeout: 5 * time.Second, Transport: tr}
	resp, err := cl.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names[l[:i]] = true
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 && strings.Contains(l[:i], "{") {
			names[l[:i]] = true // the series too: name{label="value",...}
		}
	}
	return names, sc.Err()
}

// waitMetrics waits up to 20 s until every name is a sample on the
// endpoint, and returns the sample names then.
func waitMetrics(t *testing.T, get func() (map[string]bool, error), names ...string) map[string]bool {
	t.Helper()
	var missing []string
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var m map[string]bool
		m, err = get()
		missing = missing[:0]
		for _, n := range names {
			if err != nil || !m[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return m
		}
	}
	t.Fatalf("after 20 s /metrics still lacks %v (last scrape: %v)", missing, err)
	return nil
}

// startLogged starts cmd, hands each line of its standard error (and
// output) to ready until it returns true (10 s at most), and stops it with
// SIGTERM (SIGKILL after 5 s) when the test ends; its output is logged
// when the test fails.
func startLogged(t *testing.T, name string, cmd *exec.Cmd, ready func(line string) bool) {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var mu sync.Mutex
	var out []string
	readyCh, done := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		isReady := false
		for sc.Scan() {
			mu.Lock()
			out = append(out, sc.Text())
			mu.Unlock()
			if !isReady && ready(sc.Text()) {
				isReady = true
				close(readyCh)
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("%s output:\n%s", name, strings.Join(out, "\n"))
			mu.Unlock()
		}
	})
	// A relay's readiness is probed from outside: poll while it runs.
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-readyCh:
			return
		case <-done:
			t.Fatalf("%s exited before it was ready: %v", name, cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if ready("") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 10 s", name)
		}
	}
}
