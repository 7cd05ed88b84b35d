//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/status"
	"github.com/gigapath/gigapath/internal/testbed"
)

// buildBinary builds cmd/gigapath (or takes GIGAPATH_TEST_BIN).
func buildBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GIGAPATH_TEST_BIN"); p != "" {
		return p
	}
	bin := filepath.Join(t.TempDir(), "gigapath")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/gigapath/gigapath/cmd/gigapath").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type daemon struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error
	// creates: who sends new connections' creates, as its status said
	// when it answered first (startDaemonCmd).
	creates string
}

// term sends the daemon SIGTERM and waits (10 s at most) until it has
// exited.
func (d *daemon) term(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
}

// startDaemon runs the built binary inside the client namespace and waits
// until its status socket answers.
func startDaemon(t *testing.T, b *testbed.Bed, bin, cfg, sock string) *daemon {
	t.Helper()
	return startDaemonW(t, b, bin, cfg, sock, testWriter{t}, "--metrics-listen", "-")
}

// startDaemonW is startDaemon with the daemon's output going to w and
// extra arguments for `gigapath run`.
func startDaemonW(t testing.TB, b *testbed.Bed, bin, cfg, sock string, w io.Writer, args ...string) *daemon {
	t.Helper()
	return startDaemonCmd(t, b.Client.Command(context.Background(), bin, append([]string{"run", "--config", cfg}, args...)...), sock, w)
}

// startDaemonCmd starts cmd (a `gigapath run`) with its output going to w
// and waits until its status socket answers.
func startDaemonCmd(t testing.TB, cmd *exec.Cmd, sock string, w io.Writer) *daemon {
	t.Helper()
	d := spawnDaemon(t, cmd, w)
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := status.Query(ctx, sock)
		cancel()
		if err == nil {
			d.creates = s.Creates
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited: %v", d.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("daemon's status socket never answered")
	return nil
}

// writeBasePolicy writes basePolicy (aggregate, its status socket in
// dir) to dir/gigapath.yaml, for a daemon started as a process: the
// file and the socket's path.
func writeBasePolicy(t testing.TB, dir string) (cfg, sock string) {
	t.Helper()
	sock, cfg = filepath.Join(dir, "status.sock"), filepath.Join(dir, "gigapath.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(basePolicy, "aggregate", sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, sock
}

// withoutRT is the command prefix that runs a daemon without the right to
// SCHED_FIFO, as the packaged unit with its norealtime drop-in: no
// CAP_SYS_NICE, RLIMIT_RTPRIO 0. (The unit's own right, RLIMIT_RTPRIO 10
// without CAP_SYS_NICE, cannot be made here: raising the limit takes
// CAP_SYS_RESOURCE, which this host's root lacks; .ci/systemd-guest runs
// it under systemd.)
func withoutRT() []string {
	return []string{"prlimit", "--rtprio=0:0", "--", "setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--"}
}

// spawnDaemon starts cmd (a `gigapath run`) with its output going to w; it
// is killed at the end of the test if still running.
func spawnDaemon(t testing.TB, cmd *exec.Cmd, w io.Writer) *daemon {
	t.Helper()
	cmd.Stderr = w
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
	})
	return d
}

// The daemon is SIGKILLed in the middle of a transfer and started again:
// the connection keeps both subflows meanwhile, the new daemon adopts it
// (status lists it), an lte flap afterwards gives it its lte subflow back,
// every byte arrives, and SIGTERM leaves no rule or route of ours.
func TestIntegrationRestartAdopts(t *testing.T) {
	const size = 48 << 20
	bin := buildBinary(t)
	e := setup(t, size)
	b := e.bed
	dir := t.TempDir()
	cfg, sock := writeBasePolicy(t, dir)
	d := startDaemon(t, b, bin, cfg, sock)

	wait := e.download(t, size)
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok
	})
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	if _, ok := hasFrom(subflows(t, b), b.LTEAddr); !ok {
		t.Fatal("the lte subflow died with the daemon")
	}

	d = startDaemon(t, b, bin, cfg, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s, err := status.Query(ctx, sock)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Connections) != 1 || len(s.Connections[0].Subflows) != 2 {
		t.Fatalf("restarted daemon adopted %+v, want one connection with 2 subflows", s.Connections)
	}

	// The CLI renders the same state.
	out, err := exec.Command(bin, "status", "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev lte0") || !strings.Contains(string(out), "connections: 1") {
		t.Errorf("gigapath status: %v\n%s", err, out)
	}

	before, _ := hasFrom(subflows(t, b), b.LTEAddr)
	if err := b.LinkDown(testbed.LTE); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "the lte subflow gone", 5*time.Second, func() bool {
		_, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return !ok
	})
	if err := b.LinkUp(testbed.LTE); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b, "a new lte subflow after the flap", 10*time.Second, func() bool {
		info, ok := hasFrom(subflows(t, b), b.LTEAddr)
		return ok && info != before
	})
	wait()

	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	if d.err != nil {
		t.Errorf("daemon after SIGTERM: %v", d.err)
	}
	noneLeft(t, b, "after SIGTERM")
}

// noneLeft fails the test if the client namespace still has a rule or a
// route of the daemon's (proto 201), as `ip` lists them.
func noneLeft(t *testing.T, b *testbed.Bed, when string, context ...any) {
	t.Helper()
	rules, _ := b.Client.Run("ip", "rule", "show")
	routes, _ := b.Client.Run("ip", "route", "show", "table", "all", "proto", "201")
	if strings.Contains(rules, "proto 201") || strings.TrimSpace(routes) != "" {
		t.Errorf("left %s:\n%s\n%s%s", when, rules, routes, fmt.Sprint(context...))
	}
}
