//go:build linux

package pathpolicy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
)

// topo is a client namespace with two links ("wifi" 10.0.1.0/24 and "lte"
// 10.0.2.0/24) to a server namespace, MPTCP with the in-kernel path manager
// and a subflow endpoint on the lte address, and a fresh cgroup v2 for the
// client process.
type topo struct {
	cli, srv *testbed.NetNS
	cgroup   string
}

const (
	wifiAddr = "10.0.1.1"
	lteAddr  = "10.0.2.1"
	srvAddr  = "10.0.1.2"
	srvPort  = "5201"
)

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)")
	}
}

func newTopo(tb testing.TB) *topo {
	tb.Helper()
	needRoot(tb)
	t := &topo{}
	var err error
	if t.cli, err = testbed.NewNetNS("cli"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { t.cli.Close() })
	if t.srv, err = testbed.NewNetNS("srv"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { t.srv.Close() })
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(testbed.Veth(t.cli, "wifi0", t.srv, "wifi0s"))
	must(testbed.Veth(t.cli, "lte0", t.srv, "lte0s"))
	must(t.cli.AddAddr("wifi0", wifiAddr+"/24"))
	must(t.cli.AddAddr("lte0", lteAddr+"/24"))
	must(t.srv.AddAddr("wifi0s", srvAddr+"/24"))
	must(t.srv.AddAddr("lte0s", "10.0.2.2/24"))
	for _, ns := range []*testbed.NetNS{t.cli, t.srv} {
		_, err := ns.Run("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
		must(err)
	}
	_, err = t.cli.Run("ip", "mptcp", "endpoint", "add", lteAddr, "dev", "lte0", "subflow")
	must(err)
	t.cgroup = testbed.CgroupT(tb, "gigapath-test-")
	return t
}

const serverPy = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while c.recv(1 << 16):
        pass
    c.close()
`

const clientPy = `
import socket, sys, time
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
c.connect((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
buf = b"x" * 65536
end = time.time() + float(sys.argv[3])
while time.time() < end:
    c.sendall(buf)
c.close()
print("done", flush=True)
`

// startServer runs an MPTCP sink in the server namespace.
func (t *topo) startServer(tb testing.TB) { t.startServerScript(tb, serverPy) }

// startServerScript runs a python server in the server namespace, with
// the port as its argument, until the test ends; it prints "ready".
func (t *topo) startServerScript(tb testing.TB, script string) {
	tb.Helper()
	t.startServerScriptIn(tb, script, "")
}

// startServerScriptIn is startServerScript born in cgroup cg ("" = the
// test's own).
func (t *topo) startServerScriptIn(tb testing.TB, script, cg string) {
	tb.Helper()
	cmd := t.srv.Command(context.Background(), "python3", "-c", script, srvPort)
	bornIn(tb, cmd, cg)
	waitLine(tb, cmd, "ready")
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// startClient runs an MPTCP bulk sender for d in the client namespace, born
// inside the topology's cgroup. It returns once the connection is up; the
// returned channel is closed when the client exits.
func (t *topo) startClient(tb testing.TB, d time.Duration) <-chan struct{} {
	tb.Helper()
	done, _ := t.startClientIn(tb, d, t.cgroup)
	return done
}

// startClientIn is startClient born in cgroup cg ("" = the test's own
// cgroup, outside the topology's); stop kills the client (its socket's
// queued data still goes out) and waits for it.
func (t *topo) startClientIn(tb testing.TB, d time.Duration, cg string) (done <-chan struct{}, stop func()) {
	tb.Helper()
	return t.startClientScript(tb, clientPy, cg, strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
}

// startClientScript runs a python client in the client namespace, born in
// cgroup cg ("" = the test's own), with the server's address and port and
// args as its arguments, and returns once it printed "connected".
func (t *topo) startClientScript(tb testing.TB, script, cg string, args ...string) (done <-chan struct{}, stop func()) {
	tb.Helper()
	cmd := t.cli.Command(context.Background(), "python3", append([]string{"-c", script, srvAddr, srvPort}, args...)...)
	bornIn(tb, cmd, cg)
	out := waitLine(tb, cmd, "connected")
	exited := make(chan struct{})
	go func() {
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(exited)
	}()
	stop = func() { cmd.Process.Kill(); <-exited }
	tb.Cleanup(stop)
	return exited, stop
}

// bornIn makes cmd start in cgroup cg ("" = the test's own). The
// descriptor is closed at the end of the test (after cmd started).
func bornIn(tb testing.TB, cmd *exec.Cmd, cg string) {
	if cg == "" {
		return
	}
	fd, err := os.Open(cg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fd.Close() })
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
}

// waitLine starts cmd and waits for a line on its standard output.
func waitLine(tb testing.TB, cmd *exec.Cmd, want string) io.Reader {
	tb.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	r := bufio.NewReader(pr)
	got := make(chan error, 1)
	go func() {
		l, err := r.ReadString('\n')
		if err == nil && strings.TrimSpace(l) != want {
			err = fmt.Errorf("got %q", l)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			tb.Fatalf("%v: waiting for %q: %v; stderr: %s", cmd.Args, want, err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatalf("%v: no %q within 10s; stderr: %s", cmd.Args, want, stderr.String())
	}
	return r
}

// ssSocket is one TCP socket as `ss -tin` shows it.
type ssSocket struct {
	local, remote string
	cc            string
	rtt           time.Duration
	info          string
}

var ssRTT = regexp.MustCompile(`\brtt:([0-9.]+)/`)

// ssTCP lists the established TCP sockets of ns from `ss -tin`.
func ssTCP(tb testing.TB, ns *testbed.NetNS) []ssSocket {
	tb.Helper()
	out, err := ns.Run("ss", "-tinH", "state", "established")
	if err != nil {
		tb.Fatal(err)
	}
	var socks []ssSocket
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") && len(f) >= 4 {
			// Recv-Q Send-Q Local Peer (state filtered, so no State column).
			socks = append(socks, ssSocket{local: stripDev(f[2]), remote: stripDev(f[3])})
			continue
		}
		if len(socks) == 0 {
			continue
		}
		s := &socks[len(socks)-1]
		s.info = strings.TrimSpace(l)
		// The congestion control name is the first word that is not an
		// option ("ts sack cubic wscale:...").
		for _, w := range f {
			if !strings.Contains(w, ":") && w != "ts" && w != "sack" && w != "ecn" && w != "ecnseen" && w != "fastopen" && w != "app_limited" {
				s.cc = w
				break
			}
		}
		if m := ssRTT.FindStringSubmatch(l); m != nil {
			ms, _ := strconv.ParseFloat(m[1], 64)
			s.rtt = time.Duration(ms * float64(time.Millisecond))
		}
	}
	return socks
}

// stripDev turns ss's "10.0.2.1%lte0:60755" (bound to a device) into
// "10.0.2.1:60755".
func stripDev(s string) string {
	i := strings.Index(s, "%")
	j := strings.LastIndex(s, ":")
	if i < 0 || j < i {
		return s
	}
	return s[:i] + s[j:]
}
