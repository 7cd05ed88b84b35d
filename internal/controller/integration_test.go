//go:build linux

package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// pyServer serves each MPTCP connection SIZE random bytes and prints the
// sha256 of what it sent; pyClient reads to EOF and prints length and sha256.
// In mode "pause" the server sends half, prints "paused" once the peer has
// acknowledged all of it (SIOCOUTQ of the MPTCP socket is 0: the
// connection is idle), and sends the rest once the file RESUME exists.
const pyServer = `
import socket, sys, os, hashlib, threading, time, fcntl, termios, struct
addr, port, size, mode, resume = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
print("listening", flush=True)
def recv(c):
    h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    print("sent", str(n) + ":" + h.hexdigest(), flush=True)
    c.close()
def serve(c):
    if mode == "recv": return recv(c)
    data = os.urandom(size)
    print("sent", hashlib.sha256(data).hexdigest(), flush=True)
    if mode == "pause":
        c.sendall(data[:size//2])
        while struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, bytes(4)))[0] > 0:
            time.sleep(0.01)
        print("paused", flush=True)
        while not os.path.exists(resume):
            time.sleep(0.01)
        data = data[size//2:]
    c.sendall(data); c.shutdown(socket.SHUT_WR)
    c.recv(1); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`

const pyClient = `
import socket, sys, hashlib
import os
addr, port = sys.argv[1], int(sys.argv[2])
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
c.connect((addr, port))
if len(sys.argv) > 3:
    data = os.urandom(int(sys.argv[3]))
    c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
    print(str(len(data)) + ":" + hashlib.sha256(data).hexdigest(), flush=True)
    sys.exit(0)
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
c.close()
`

type env struct {
	bed    *testbed.Bed
	dir    string
	port   int
	sent   chan string   // sha256 of each connection the server served
	paused chan struct{} // mode "pause": a connection's first half is acknowledged
}

// setup builds a bed whose client reaches the proxy's service address by a
// main-table default route via wifi (lte as a worse fallback), with MPTCP
// limits raised on the proxy (in-kernel PM there), and starts the server.
func setup(t *testing.T, size int) *env { t.Helper(); return setupMode(t, size, "send") }

// setupMode is setup with the server sending (download), sending with a
// pause halfway (mode "pause": see pyServer, waitPaused and resume) or
// receiving (upload, mode "recv").
func setupMode(t *testing.T, size int, mode string) *env {
	t.Helper()
	b := testbed.UpT(t, testbed.Spec{WiFiRate: "40mbit", LTERate: "40mbit"})
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyLTEAddr.String(), "dev", testbed.LTEIf, "metric", "200")
	b.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8")
	// The proxy accepts packets for the lte subflow only if the client's
	// lte address came in on lte1: strict reverse-path filtering proves the
	// daemon's source routing.
	b.Proxy.MustRun("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	e := &env{bed: b, dir: t.TempDir(), port: 5201, sent: make(chan string, 64), paused: make(chan struct{}, 64)}
	for name, src := range map[string]string{"server.py": pyServer, "client.py": pyClient} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Bound to every address: MP_JOINs to an address the proxy announces
	// need a listener there.
	cmd := b.Proxy.Command(ctx, "python3", filepath.Join(e.dir, "server.py"), "0.0.0.0", fmt.Sprint(e.port), fmt.Sprint(size), mode, e.resumeFile())
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "listening" {
		t.Fatalf("server did not start: %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "sent" {
				e.sent <- f[1]
			} else if sc.Text() == "paused" {
				e.paused <- struct{}{}
			}
		}
	}()
	return e
}

// resendAddAddrSoon makes the proxy repeat an unechoed ADD_ADDR after 1 s
// instead of up to 120 s (net.mptcp.add_addr_timeout). It is for tests
// whose oracle is an ADD_ADDR sent while a download runs: the bed's tbf
// queues drop segments (other tests rely on that congestion loss), and
// one that carried the ADD_ADDR would otherwise fail the test with
// nothing wrong in the daemon.
func resendAddAddrSoon(b *testbed.Bed) {
	b.Proxy.MustRun("sysctl", "-qw", "net.mptcp.add_addr_timeout=1")
}

func (e *env) resumeFile() string { return filepath.Join(e.dir, "resume") }

// waitPaused waits until the server (mode "pause") has sent half and the
// client has acknowledged it: the connection is idle.
func (e *env) waitPaused(t *testing.T) {
	t.Helper()
	select {
	case <-e.paused:
	case <-time.After(30 * time.Second):
		t.Fatal("the server's first half was not acknowledged within 30s")
	}
}

// resume lets the server (mode "pause") send the rest.
func (e *env) resume(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(e.resumeFile(), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// download starts a client; the returned func waits for it and checks
// every byte arrived.
func (e *env) download(t *testing.T, size int) func() {
	t.Helper()
	cmd := e.bed.Client.Command(context.Background(), "python3", filepath.Join(e.dir, "client.py"), e.bed.ProxyAddr.String(), fmt.Sprint(e.port))
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		e.waitClient(t, cmd)
		f := strings.Fields(out.String())
		if len(f) != 2 {
			t.Fatalf("client output %q", out.String())
		}
		var sha string
		select {
		case sha = <-e.sent:
		case <-time.After(10 * time.Second):
			t.Fatal("server reported nothing")
		}
		if f[0] != fmt.Sprint(size) || f[1] != sha {
			t.Fatalf("received %s bytes sha256 %s; server sent %d bytes sha256 %s", f[0], f[1], size, sha)
		}
	}
}

// transferTimeout bounds a test transfer (tens of MiB, a few seconds on
// the bed, flaps included).
const transferTimeout = 2 * time.Minute

// waitClient waits for a transfer's client to exit. One that has not
// after transferTimeout fails the test with both ends' MPTCP sockets and
// subflows (ss -tniM), so that a stalled transfer is seen for what it is
// rather than hanging the test binary until go test's timeout.
func (e *env) waitClient(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client: %v (the connection broke)", err)
		}
	case <-time.After(transferTimeout):
		cli, _ := e.bed.Client.Run("ss", "-tniM")
		prx, _ := e.bed.Proxy.Run("ss", "-tniM")
		cmd.Process.Kill()
		<-done
		t.Fatalf("the transfer did not end within %v; client's sockets:\n%s\nproxy's sockets:\n%s", transferTimeout, cli, prx)
	}
}

// subflows lists the client's established TCP subflows to the proxy as
// `ss -tniH` shows them: local address → the info line.
func subflows(t *testing.T, b *testbed.Bed) map[netip.AddrPort]string {
	t.Helper()
	out, err := b.Client.Run("ss", "-tniH", "state", "established")
	if err != nil {
		t.Fatal(err)
	}
	res := map[netip.AddrPort]string{}
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) < 4 {
			continue
		}
		// A subflow bound to its device shows as ADDR%DEV:PORT.
		local := f[2]
		if i := strings.IndexByte(local, '%'); i >= 0 {
			local = local[:i] + local[strings.LastIndexByte(local, ':'):]
		}
		lp, err := netip.ParseAddrPort(local)
		if err != nil {
			continue
		}
		info := ""
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") || i+1 < len(lines) && strings.HasPrefix(lines[i+1], " ") {
			info = lines[i+1]
			i++
		}
		res[lp] = info
	}
	return res
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, b *testbed.Bed, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b != nil {
		// Always, as CI sets no GP_DEBUG: whether the address signals
		// were sent and arrived, and whether the links' queues dropped
		// anything (-s: nstat's history file left alone).
		for _, n := range []*testbed.NetNS{b.Client, b.Proxy} {
			out, _ := n.Run("sh", "-c", "nstat -asz | grep -E 'MPTcpExt(AddAddr|RmAddr|EchoAdd)|TcpRetransSegs'; tc -s qdisc show | grep -E '^qdisc|dropped'")
			t.Logf("%s: signals, retransmits, queue drops:\n%s", n.Name, out)
		}
	}
	if os.Getenv("GP_DEBUG") != "" && b != nil {
		for _, n := range []string{"ss -tniaM", "ip rule", "ip route show table all", "ip -s link"} {
			out, _ := exec.Command("sh", "-c", "ip netns exec "+b.Client.Name+" "+n).CombinedOutput()
			t.Logf("%s:\n%s", n, out)
		}
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func hasFrom(m map[netip.AddrPort]string, a netip.Addr) (string, bool) {
	for k, v := range m {
		if k.Addr() == a {
			return v, true
		}
	}
	return "", false
}

const basePolicy = `
path_manager: userspace
steering: %s
interfaces:
  - name: wifi0
    role: wifi
  - name: lte0
    role: lte
metrics:
  listen: ""
status_socket: "%s"
log:
  level: debug
`

func startController(t *testing.T, b *testbed.Bed, steering string) (*controller.Controller, *metrics.Metrics, string) {
	t.Helper()
	return startControllerWith(t, b, steering, "")
}

// startControllerWith is startController with more of the policy (keys
// basePolicy does not have).
func startControllerWith(t *testing.T, b *testbed.Bed, steering, more string) (*controller.Controller, *metrics.Metrics, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "status.sock")
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, steering, sock) + more))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	ctl, _ := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name, Metrics: m})
	return ctl, m, sock
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

var _ io.Writer = testWriter{}

// A new connection gets its lte subflow, routed out of lte0 by the
// daemon's source rule (the proxy filters reverse paths strictly); wifi
// going down mid-download loses no byte; wifi coming back gives the old and
// a new connection their wifi subflow again.
func TestIntegrationUserspaceClient(t *testing.T) {
	const size = 24 << 20
	e := setup(t, size)
	b := e.bed
	// The reader's creates: the default (auto) has the real-time thread
	// send them here (TestIntegrationRealtimeCreates, TestIntegrationCreatesAuto).
	_, m, _ := startControllerWith(t, b, "aggregate", "creates: {thread: reader}\n")

	rules, _ := b.Client.Run("ip", "rule", "show")
	if !strings.Contains(rules, "from "+b.LTEAddr.String()+" lookup") {
		t.Fatalf("no source rule for the lte address in ip rule:\n%s", rules)
	}

	wait := e.download(t, size)
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok
	})
	c0, _ := b.Counters()
	time.Sleep(300 * time.Millisecond)
	c1, _ := b.Counters()
	if c1[testbed.LTE].RxBytes-c0[testbed.LTE].RxBytes < 100<<10 {
		t.Errorf("lte0 received only %d bytes in 300ms: the lte subflow carries no data", c1[testbed.LTE].RxBytes-c0[testbed.LTE].RxBytes)
	}
	if n := histCount(t, m, metrics.ReactionLatency); n != 1 {
		t.Errorf("%s counts %d observations, want 1 (one connection)", metrics.ReactionLatency, n)
	}
	// The event reader sent that subflow's create as it read the
	// connection's ESTABLISHED, not the loop through its pool (early.go).
	if e, q := histCount(t, m, metrics.CreateSeconds, "stage", "early"), histCount(t, m, metrics.CreateSeconds, "stage", "queue"); e != 1 || q != 0 {
		t.Errorf("%s counts %d early and %d queued creates, want 1 and 0", metrics.CreateSeconds, e, q)
	}

	if err := b.LinkDown(testbed.WiFi); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := b.LinkUp(testbed.WiFi); err != nil {
		t.Fatal(err)
	}
	b.Client.MustRun("ip", "route", "replace", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	waitFor(t, b, "the old connection's wifi subflow back", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.WiFiAddr)
		return ok
	})
	wait()

	// A new connection after the flap gets both subflows.
	wait2 := e.download(t, size)
	waitFor(t, b, "a new connection with wifi and lte subflows", 10*time.Second, func() bool {
		s := subflows(t, b)
		_, w := hasFrom(s, b.WiFiAddr)
		_, l := hasFrom(s, b.LTEAddr)
		return w && l
	})
	wait2()
}

// histCount is the sample count of the histogram called name, of its
// series whose label (a name and a value, if given) has that value.
func histCount(t *testing.T, m *metrics.Metrics, name string, label ...string) uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if len(label) == 2 && !slices.ContainsFunc(s.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == label[0] && l.GetValue() == label[1]
			}) {
				continue
			}
			return s.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// localBackup reports whether ss's tcp-ulp-mptcp flags of a subflow carry
// 'b' (MPTCP_SUBFLOW_FLAG_BKUP_LOC: we asked the peer to treat it as backup).
func localBackup(info string) bool {
	for _, f := range strings.Fields(info) {
		if strings.HasPrefix(f, "flags:") {
			return strings.Contains(f, "b")
		}
	}
	return false
}

// aggregate keeps the lte subflow active; a SIGHUP-style reload to
// active-standby marks it backup (MP_PRIO) as ss shows; a new connection
// under active-standby gets its lte subflow as backup from the start; a bad
// reload keeps the policy in force.
func TestIntegrationSteeringActiveStandby(t *testing.T) {
	const size = 32 << 20
	e := setup(t, size)
	b := e.bed
	ctl, m, sock := startController(t, b, "aggregate")

	wait := e.download(t, size)
	var info string
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		var ok bool
		info, ok = hasFrom(subflows(t, b), b.LTEAddr)
		return ok
	})
	if localBackup(info) {
		t.Fatalf("aggregate: the lte subflow is backup: %s", info)
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "standby.yaml")
	os.WriteFile(good, []byte(fmt.Sprintf(basePolicy, "active-standby", sock)), 0o644)
	if err := ctl.ReloadFile(context.Background(), good); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitFor(t, b, "the lte subflow marked backup", 5*time.Second, func() bool {
		info, _ = hasFrom(subflows(t, b), b.LTEAddr)
		return localBackup(info)
	})
	if w, _ := hasFrom(subflows(t, b), b.WiFiAddr); localBackup(w) {
		t.Errorf("active-standby: the wifi subflow is backup: %s", w)
	}
	if n := counter(t, m, metrics.SteeringSwitches); n < 1 {
		t.Errorf("%s = %v after a switch", metrics.SteeringSwitches, n)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(fmt.Sprintf(basePolicy, "active-standby", sock)+"bogus_key: 1\n"), 0o644)
	if err := ctl.ReloadFile(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "bogus_key") {
		t.Errorf("bad reload: err = %v, want one naming bogus_key", err)
	}
	s, err := ctl.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Summary, "active-standby") {
		t.Errorf("after a bad reload the policy in force is %q", s.Summary)
	}
	wait()

	wait = e.download(t, size)
	waitFor(t, b, "a new connection's lte subflow, backup", 10*time.Second, func() bool {
		info, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok && localBackup(info)
	})
	wait()
}

// counter is the value of the counter called name (summed over labels).
func counter(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, x := range mf.GetMetric() {
				v += x.GetCounter().GetValue()
			}
		}
	}
	return v
}

// wifi flaps 50 times during a transfer: no reset, no lost byte; at the end
// the connection has its wifi subflow again, and no rule, route or extra
// subflow is left over.
func TestIntegrationFlap50(t *testing.T) {
	const size = 48 << 20
	e := setup(t, size)
	b := e.bed
	startController(t, b, "aggregate")
	wait := e.download(t, size)
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok
	})
	for i := 0; i < 50; i++ {
		if err := b.LinkDown(testbed.WiFi); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if err := b.LinkUp(testbed.WiFi); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Client.MustRun("ip", "route", "replace", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	waitFor(t, b, "exactly one wifi and one lte subflow after the flaps", 15*time.Second, func() bool {
		var w, l int
		for k := range subflows(t, b) {
			switch k.Addr() {
			case b.WiFiAddr:
				w++
			case b.LTEAddr:
				l++
			}
		}
		return w == 1 && l == 1
	})
	rules, _ := b.Client.Run("ip", "rule", "show")
	if n := strings.Count(rules, "proto 201"); n != 2 {
		t.Errorf("want 2 source rules of ours (wifi, lte), got:\n%s", rules)
	}
	routes, _ := b.Client.Run("ip", "-4", "route", "show", "table", "all", "proto", "201")
	if n := len(strings.Split(strings.TrimSpace(routes), "\n")); n != 4 {
		t.Errorf("want 4 IPv4 routes of ours (a subnet and a default per interface), got:\n%s", routes)
	}
	wait()
}

// upload starts a client sending size bytes; the returned func waits and
// checks the server received every byte.
func (e *env) upload(t *testing.T, size int) func() {
	t.Helper()
	cmd := e.bed.Client.Command(context.Background(), "python3", filepath.Join(e.dir, "client.py"), e.bed.ProxyAddr.String(), fmt.Sprint(e.port), fmt.Sprint(size))
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		e.waitClient(t, cmd)
		var got string
		select {
		case got = <-e.sent:
		case <-time.After(10 * time.Second):
			t.Fatal("server reported nothing")
		}
		if strings.TrimSpace(out.String()) != got {
			t.Fatalf("client sent %s, server received %s", strings.TrimSpace(out.String()), got)
		}
	}
}

// backupFlags reads the local backup flags of the phone's wifi and lte
// subflows from ss; ok is false unless both subflows exist.
func backupFlags(t *testing.T, b *testbed.Bed) (wifi, lte, ok bool) {
	s := subflows(t, b)
	wi, okw := hasFrom(s, b.WiFiAddr)
	li, okl := hasFrom(s, b.LTEAddr)
	return localBackup(wi), localBackup(li), okw && okl
}

// waitPrimary waits until the phone's wifi subflow is active and lte backup
// (wifi), or the other way round.
func waitPrimary(t *testing.T, b *testbed.Bed, what string, wifi bool, d time.Duration) {
	t.Helper()
	waitFor(t, b, what, d, func() bool {
		w, l, ok := backupFlags(t, b)
		return ok && w != wifi && l == wifi
	})
}

// priority: wifi is the primary until its loss (tc BPF drop on wifi)
// crosses the threshold; then lte carries and wifi turns backup; once the
// loss is gone wifi is the primary again.
func TestIntegrationPriorityLoss(t *testing.T) {
	const size = 64 << 20
	e := setupMode(t, size, "recv")
	b := e.bed
	sock := filepath.Join(t.TempDir(), "status.sock")
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "priority", sock) + "priority:\n  loss_percent: 3\n  hold: 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	runController(t, controller.Config{Policy: p, NetNS: b.Client.Name,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})

	wait := e.upload(t, size)
	waitPrimary(t, b, "wifi active, lte backup", true, 10*time.Second)
	if err := b.SetLoss(testbed.WiFi, 20); err != nil {
		t.Fatal(err)
	}
	waitPrimary(t, b, "lte active, wifi backup under 20% wifi loss", false, 10*time.Second)
	if err := b.SetLoss(testbed.WiFi, 0); err != nil {
		t.Fatal(err)
	}
	waitPrimary(t, b, "wifi the primary again after the loss ended", true, 15*time.Second)
	wait()
}

// path_manager: kernel — the daemon keeps one `subflow` endpoint per policy
// interface address (lte backup under active-standby) and the limits, as
// `ip mptcp` shows; an interface going down loses its endpoint, coming back
// gets it again; an endpoint made by hand is left alone.
func TestIntegrationKernelPMEndpoints(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	b.Client.MustRun("ip", "mptcp", "endpoint", "add", "10.9.9.9", "id", "250", "signal")
	p, err := policy.Parse([]byte(strings.Replace(fmt.Sprintf(basePolicy, "active-standby", ""), "path_manager: userspace", "path_manager: kernel", 1)))
	if err != nil {
		t.Fatal(err)
	}
	runController(t, controller.Config{Policy: p, NetNS: b.Client.Name, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	endpoints := func() string { out, _ := b.Client.Run("ip", "mptcp", "endpoint", "show"); return out }
	has := func(out string, a netip.Addr, flags string) bool {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, a.String()+" ") && strings.Contains(l, flags) {
				return true
			}
		}
		return false
	}
	waitFor(t, b, "wifi subflow endpoint and lte subflow backup endpoint", 5*time.Second, func() bool {
		out := endpoints()
		return has(out, b.WiFiAddr, "subflow dev wifi0") && has(out, b.LTEAddr, "subflow backup dev lte0")
	})
	if lim, _ := b.Client.Run("ip", "mptcp", "limits", "show"); !strings.Contains(lim, "subflows 4") {
		t.Errorf("limits: %s", lim)
	}
	b.LinkDown(testbed.LTE)
	waitFor(t, b, "the lte endpoint removed while lte0 is down", 5*time.Second, func() bool {
		return !strings.Contains(endpoints(), b.LTEAddr.String())
	})
	b.LinkUp(testbed.LTE)
	waitFor(t, b, "the lte endpoint back", 5*time.Second, func() bool {
		return has(endpoints(), b.LTEAddr, "subflow backup")
	})
	if !strings.Contains(endpoints(), "10.9.9.9 id 250") {
		t.Errorf("the hand-made endpoint was touched:\n%s", endpoints())
	}
}

// side: server — the daemon in the proxy namespace announces its lte1
// address to each accepted connection; the client's in-kernel PM follows
// the ADD_ADDR with a subflow to it (ss on the client is the oracle).
func TestIntegrationServerAnnounce(t *testing.T) {
	const size = 16 << 20
	e := setup(t, size)
	b := e.bed
	resendAddAddrSoon(b)
	b.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	pol := fmt.Sprintf(`
side: server
path_manager: userspace
steering: aggregate
routing: off
interfaces:
  - name: wifi1
    role: wifi
  - name: lte1
    role: lte
announce:
  - address: %s
metrics:
  listen: ""
status_socket: ""
`, b.ProxyLTEAddr)
	p, err := policy.Parse([]byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	runController(t, controller.Config{Policy: p, NetNS: b.Proxy.Name, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	wait := e.download(t, size)
	waitFor(t, b, "a client subflow to the announced lte1 address", 10*time.Second, func() bool {
		out, _ := b.Client.Run("ss", "-tnH", "state", "established", "dst", b.ProxyLTEAddr.String())
		return strings.TrimSpace(out) != ""
	})
	wait()
}

// handover: no lte subflow while wifi is up; wifi down mid-download opens
// the lte subflow (active) and no byte is lost; wifi back gets its subflow
// again and the lte subflow closes once wifi has been up for hold.
func TestIntegrationHandover(t *testing.T) {
	const size = 32 << 20
	e := setup(t, size)
	b := e.bed
	sock := filepath.Join(t.TempDir(), "status.sock")
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "handover", sock) + "handover:\n  hold: 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	runController(t, controller.Config{Policy: p, NetNS: b.Client.Name,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	wait := e.download(t, size)
	waitFor(t, b, "the wifi subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.WiFiAddr)
		return ok
	})
	time.Sleep(500 * time.Millisecond) // the daemon reacts within ~1 ms when it does
	if info, ok := hasFrom(subflows(t, b), b.LTEAddr); ok {
		t.Fatalf("handover opened an lte subflow while wifi is up: %s", info)
	}
	if err := b.LinkDown(testbed.WiFi); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "an active lte subflow while wifi is down", 10*time.Second, func() bool {
		info, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok && !localBackup(info)
	})
	time.Sleep(500 * time.Millisecond)
	if err := b.LinkUp(testbed.WiFi); err != nil {
		t.Fatal(err)
	}
	b.Client.MustRun("ip", "route", "replace", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	waitFor(t, b, "wifi subflow back and the lte subflow closed", 10*time.Second, func() bool {
		s := subflows(t, b)
		_, w := hasFrom(s, b.WiFiAddr)
		_, l := hasFrom(s, b.LTEAddr)
		return w && !l
	})
	wait()
}

// With creates.thread: realtime a new connection's lte subflow comes from
// the real-time thread: neither the reader nor the loop's pool sends a
// create, and the loop's account has the subflow.
func TestIntegrationRealtimeCreates(t *testing.T) {
	const size = 24 << 20
	e := setup(t, size)
	b := e.bed
	_, m, _ := startControllerWith(t, b, "aggregate", "creates: {thread: realtime}\n")

	wait := e.download(t, size)
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok
	})
	if e, q := histCount(t, m, metrics.CreateSeconds, "stage", "early"), histCount(t, m, metrics.CreateSeconds, "stage", "queue"); e != 0 || q != 0 {
		t.Errorf("%s counts %d early and %d queued creates, want none: the thread sends them", metrics.CreateSeconds, e, q)
	}
	// Counted once, from the thread's account of what it sent.
	waitFor(t, b, "the thread's account", 5*time.Second, func() bool { return counter(t, m, metrics.Commands) == 1 })
	if n := histCount(t, m, metrics.ReactionLatency); n != 1 {
		t.Errorf("%s counts %d observations, want 1 (one connection, its subflow in the loop's account)", metrics.ReactionLatency, n)
	}
	wait()
}

// The built daemon with the policy's default, creates.thread: auto: with
// the right to SCHED_FIFO (root's CAP_SYS_NICE here; the packaged unit's
// RLIMIT_RTPRIO 10 in .ci/systemd-guest) one of its threads runs at
// SCHED_FIFO 10 and sends the creates; without it (withoutRT: what
// docs/deploy/gigapath-norealtime.conf leaves) the event reader sends
// them and the log says why. status says which, ps (the oracle) each
// thread's class; each gives a new connection its lte subflow.
func TestIntegrationCreatesAuto(t *testing.T) {
	for _, tool := range []string{"prlimit", "setpriv", "ps"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: .ci/install-deps installs util-linux and procps", tool)
		}
	}
	const size = 8 << 20
	e := setup(t, size)
	b := e.bed
	bin := buildBinary(t)
	for _, tc := range []struct {
		name    string
		wrap    []string // what the daemon is started under
		creates string   // status's
		fifo    string   // ps -L's classes that must be there ("FF 10") or not ("")
		log     string
	}{
		{"with SCHED_FIFO", nil, "real-time thread, SCHED_FIFO 10", "FF 10", "creates are sent by the real-time thread"},
		{"without SCHED_FIFO", withoutRT(), "event reader", "", "not the real-time thread: it cannot run at SCHED_FIFO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, sock := writeBasePolicy(t, dir)
			args := append(append(tc.wrap, bin), "run", "--config", cfg, "--metrics-listen", "-", "--state-dir", dir)
			log := &testbed.LockedBuffer{}
			d := startDaemonCmd(t, b.Client.Command(context.Background(), args[0], args[1:]...), sock, log)
			defer d.term(t)
			if d.creates != tc.creates {
				t.Errorf("status says creates %q, want %q", d.creates, tc.creates)
			}
			out, err := exec.Command("ps", "-L", "-o", "cls=,rtprio=", "-p", strconv.Itoa(d.cmd.Process.Pid)).Output()
			if err != nil {
				t.Fatalf("ps: %v", err)
			}
			var fifo []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[0] == "FF" {
					fifo = append(fifo, f[0]+" "+f[1])
				}
			}
			if want := []string{tc.fifo}; tc.fifo == "" && len(fifo) != 0 || tc.fifo != "" && !slices.Equal(fifo, want) {
				t.Errorf("threads at SCHED_FIFO: %q, want %q (ps -L:\n%s)", fifo, tc.fifo, out)
			}
			if !strings.Contains(log.String(), tc.log) {
				t.Errorf("the log lacks %q:\n%s", tc.log, log)
			}
			wait := e.download(t, size)
			waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
				_, ok := hasFrom(subflows(t, b), b.LTEAddr)
				return ok
			})
			wait()
		})
	}
}
