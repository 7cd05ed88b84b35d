//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
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

	// The origin echoes; the relay listens on the proxy's address.
	originAddr := net.JoinHostPort(bed.OriginAddr.String(), "8080")
	testbed.ServeT(t, bed.Origin, "tcp", originAddr, false, testbed.Echo)
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
	d, err := proxy.SOCKS5("tcp", relayAddr, nil, mptcpDialer{bed.Client})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", originAddr)
	if err != nil {
		t.Fatalf("through the relay to %s: %v", originAddr, err)
	}
	go io.Copy(io.Discard, c)
	testbed.KeepSending(t, c)
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
	// Series that need the connection's subflows and telemetry.
	// Series that need the connection's subflows and telemetry, read while
	// it is open (the per-subflow telemetry goes with the subflows).
	dm := waitMetrics(t, daemon, "gigapath_subflows", "gigapath_path_send_share_ratio", "gigapath_subflow_srtt_seconds", "gigapath_interface_healthy")
	// The relay samples subflows when a connection closes.
	c.Close()
	rm := waitMetrics(t, relay, "gigapath_relay_subflows_count", "gigapath_relay_rejected_total")
	if err != nil {
		t.Fatal(err)
	}
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
			if strings.HasPrefix(name, "gigapath_") && !used[family(name)] {
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

// mptcpDialer dials MPTCP from a namespace (the SOCKS5 client's transport).
type mptcpDialer struct{ n *testbed.NetNS }

func (d mptcpDialer) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := d.n.Do(func() (err error) {
		nd := net.Dialer{Timeout: 5 * time.Second}
		nd.SetMultipathTCP(true)
		c, err = nd.Dial(network, addr)
		return err
	})
	return c, err
}

// scrape returns the sample names on a Prometheus text endpoint, reached
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
