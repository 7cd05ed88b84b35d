//go:build linux

package controller_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/metrics"
	"github.com/gigapath/gigapath/internal/testbed"
	"github.com/gigapath/gigapath/pathmgr/netns"
)

// telemetryBed is a client namespace whose connections go to a server that
// keeps them, and the built binary, run with priority steering (health
// sampled every second) and its own /metrics, on the client namespace.
type telemetryBed struct {
	b          *testbed.Bed
	bin, cfg   string
	sock       string
	log        *testbed.LockedBuffer
	d          *daemon
	serverPort int
}

func newTelemetryBed(t *testing.T) *telemetryBed {
	t.Helper()
	if errPolicy, _ := pathpolicy.Supported(); errPolicy != nil {
		t.Skipf("sockops program cannot load here: %v", errPolicy)
	}
	e := &telemetryBed{b: testbed.UpT(t, testbed.Spec{}), log: &testbed.LockedBuffer{}, serverPort: 5203}
	b := e.b
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyWiFiAddr.String(), "dev", testbed.WiFiIf, "metric", "100")
	b.Client.MustRun("ip", "route", "add", "default", "via", b.ProxyLTEAddr.String(), "dev", testbed.LTEIf, "metric", "200")
	b.Proxy.MustRun("ip", "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8")
	testbed.StartEchoServer(t, b.Proxy, e.serverPort)
	dir := t.TempDir()
	e.bin = filepath.Join(dir, "gigapath")
	installBinary(t, builtBinary(t), e.bin)
	e.sock, e.cfg = filepath.Join(dir, "status.sock"), filepath.Join(dir, "gigapath.yaml")
	pol := strings.Replace(fmt.Sprintf(basePolicy, "priority", e.sock), `listen: ""`, `listen: "127.0.0.1:0"`, 1)
	if err := os.WriteFile(e.cfg, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs the daemon and waits until it is running. --netns rather
// than `ip netns exec`, whose sysfs hides the cgroup v2 file system the
// program attaches to.
func (e *telemetryBed) start(t *testing.T) {
	t.Helper()
	running := strings.Count(e.log.String(), "gigapath running")
	e.d = startDaemonCmd(t, exec.Command(e.bin, "--netns", e.b.Client.Name, "run", "--config", e.cfg), e.sock, e.log)
	e.waitRunning(t, running)
}

func (e *telemetryBed) waitRunning(t *testing.T, before int) {
	t.Helper()
	waitFor(t, e.b, "the daemon running", 15*time.Second, func() bool {
		return strings.Count(e.log.String(), "gigapath running") > before
	})
}

// connect opens an idle MPTCP connection from the client namespace: one
// byte to the echo server and back, then nothing for an hour.
func (e *telemetryBed) connect(t *testing.T) {
	t.Helper()
	testbed.StartPyClients(t, e.b.Client, testbed.PyClientsSpec{Dst: e.b.ProxyAddr, Port: e.serverPort, Count: 1, MPTCP: true,
		Chunk: 1, Interval: time.Hour})
}

// connectWithLTE opens an idle connection while the daemon runs and waits
// for the lte subflow the daemon gives it.
func (e *telemetryBed) connectWithLTE(t *testing.T) {
	t.Helper()
	e.connect(t)
	waitFor(t, e.b, "the idle connection's lte subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, e.b), e.b.LTEAddr)
		return ok
	})
}

// samples counts the running daemon's health samples by source.
func (e *telemetryBed) samples(t *testing.T) (tel, diag float64) {
	t.Helper()
	m := regexp.MustCompile(`gigapath running.* metrics=(\S+)`).FindAllStringSubmatch(e.log.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no metrics address in the daemon's log:\n%s", e.log)
	}
	resp, err := http.Get("http://" + m[len(m)-1][1] + "/metrics") // the latest process's
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return counterDelta("", string(body), metrics.HealthSample+"_count", `source="telemetry"`),
		counterDelta("", string(body), metrics.HealthSample+"_count", `source="sock_diag"`)
}

// waitSamples waits until the running daemon has taken n health samples.
func (e *telemetryBed) waitSamples(t *testing.T, n float64) (tel, diag float64) {
	t.Helper()
	waitFor(t, e.b, fmt.Sprintf("%v health samples", n), 15*time.Second, func() bool {
		tel, diag = e.samples(t)
		return tel+diag >= n
	})
	return tel, diag
}

// An upgrade in place hands the sockops program's telemetry map to the
// new binary, whose program keeps writing to it: an idle connection's
// subflows (no callback after their first byte, so no entry in a new
// map) keep their entries, and every health sample after the upgrade
// comes from the map, none from a sock_diag dump. Without the map handed
// over, the new program's map holds none of the two subflows, and the
// samples fall back to sock_diag until a dump has checked the list of
// followed subflows, which the upgrade wrote too (checked against ss).
func TestIntegrationUpgradeKeepsTelemetry(t *testing.T) {
	e := newTelemetryBed(t)
	e.start(t)
	e.connectWithLTE(t)
	// Before: the map has both subflows from their establishment on.
	waitFor(t, e.b, "two health samples from the telemetry map", 10*time.Second, func() bool {
		tel, _ := e.samples(t)
		return tel >= 2
	})

	running := strings.Count(e.log.String(), "gigapath running")
	e.d.cmd.Process.Signal(syscall.SIGUSR2)
	e.waitRunning(t, running)
	// The new process's counters start at 0.
	if tel, diag := e.waitSamples(t, 3); diag != 0 {
		t.Errorf("after the upgrade: %v health samples from sock_diag, %v from the telemetry map; want none from sock_diag\n%s", diag, tel, e.log)
	}
	if !strings.Contains(e.log.String(), "telemetry map kept from the previous binary") {
		t.Errorf("the new binary did not say it kept the telemetry map:\n%s", e.log)
	}
	if _, ok := hasFrom(subflows(t, e.b), e.b.LTEAddr); !ok {
		t.Error("the idle connection lost its lte subflow across the upgrade")
	}
	// The upgrade listed the subflows for a binary that does not keep
	// the map (another layout): both of the idle connection's, by the
	// socket cookies `ss -e` shows.
	ns, err := netns.Cookie(e.b.Client.Name)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := controller.ReadFollowed(os.Getenv("GIGAPATH_STATE_DIR"), ns)
	if err != nil {
		t.Fatal(err)
	}
	ss := e.b.Client.MustRun("ss", "-tenH", "state", "established", "dport", fmt.Sprintf("= :%d", e.serverPort))
	cookies := regexp.MustCompile(`sk:([0-9a-f]+)`).FindAllStringSubmatch(ss, -1)
	if len(cookies) != 2 {
		t.Fatalf("ss -ten shows %d subflows of the idle connection, want 2:\n%s", len(cookies), ss)
	}
	for _, c := range cookies {
		k, _ := strconv.ParseUint(c[1], 16, 64)
		if _, ok := listed[k]; !ok {
			t.Errorf("subflow sk:%s not in the list the upgrade left (%d cookies)\n%s", c[1], len(listed), ss)
		}
	}
	e.d.term(t)
}

// coveredAfterStart checks the health samples of a daemon just started:
// at most two from sock_diag (the first, which checks the list of
// followed subflows against a dump), then none in the next three.
func (e *telemetryBed) coveredAfterStart(t *testing.T, what string) {
	t.Helper()
	tel1, diag1 := e.waitSamples(t, 3)
	tel2, diag2 := e.waitSamples(t, tel1+diag1+3)
	t.Logf("%s: %v samples from the map and %v from sock_diag, then %v and %v", what, tel1, diag1, tel2, diag2)
	if diag2 != diag1 || diag1 > 2 {
		t.Errorf("%s: %v then %v health samples from sock_diag; want at most 2, then no more\n%s", what, diag1, diag2, e.log)
	}
}

// A restart (stop, start) loses the map, but a stopping daemon lists the
// subflows its program followed (--state-dir), and the next start counts
// those that still live as covered: the idle connection's subflows,
// which have no entry in the new map, stop the health samples from
// falling back to sock_diag once a first dump has shown they live.
// Without the list every sample after the restart came from sock_diag.
// The sampler keeps the list while the daemon runs too, so a crash
// (SIGKILL) after a second idle connection loses none of it. A
// connection made while no daemon ran has a subflow no program follows
// (its callbacks were never turned on), so the samples after the next
// start must keep coming from sock_diag.
func TestIntegrationRestartKeepsTelemetryCoverage(t *testing.T) {
	e := newTelemetryBed(t)
	e.start(t)
	e.connectWithLTE(t)
	e.waitSamples(t, 2)
	e.d.term(t)
	e.start(t)
	e.coveredAfterStart(t, "after a restart")

	// Its entries grow by more than a sixteenth: the sampler writes the
	// list at its next sample.
	e.connectWithLTE(t)
	tel, diag := e.samples(t)
	e.waitSamples(t, tel+diag+2)
	e.d.cmd.Process.Kill()
	<-e.d.done
	e.start(t)
	e.coveredAfterStart(t, "after a crash")
	e.d.term(t)

	e.connect(t) // while no daemon runs
	e.start(t)
	tel1, diag1 := e.waitSamples(t, 3)
	tel2, diag2 := e.waitSamples(t, tel1+diag1+3)
	t.Logf("with a connection made while stopped: %v samples from the map and %v from sock_diag, then %v and %v", tel1, diag1, tel2, diag2)
	if diag2-diag1 < 3 {
		t.Errorf("with a subflow no program follows: %v then %v health samples from sock_diag; want every sample from it\n%s", diag1, diag2, e.log)
	}
	e.d.term(t)
}
