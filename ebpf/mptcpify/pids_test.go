//go:build linux

package mptcpify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// protoLoopPy answers each line on stdin with SO_PROTOCOL of a plain IPv4
// stream socket, an IPv6 one, one asking for IPPROTO_TCP explicitly, and a
// UDP one, made then.
const protoLoopPy = `
import socket, sys
for _ in sys.stdin:
    out = []
    for fam, typ, proto in ((socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET6, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_STREAM, 6), (socket.AF_INET, socket.SOCK_DGRAM, 0)):
        s = socket.socket(fam, typ, proto)
        out.append(str(s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)))
        s.close()
    print(" ".join(out), flush=True)
`

// asker is a live process that reports, on demand, the protocols its new
// sockets get.
type asker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startAsker() (*asker, error) {
	cmd := exec.Command("python3", "-c", protoLoopPy)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &asker{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

func (a *asker) ask() (string, error) {
	if _, err := io.WriteString(a.in, "?\n"); err != nil {
		return "", err
	}
	line, err := a.out.ReadString('\n')
	return strings.TrimSpace(line), err
}

func (a *asker) stop() {
	a.in.Close()
	a.cmd.Process.Kill()
	a.cmd.Wait()
}

// TestStartTicks: a process's start time, as the program computes it, lies
// between CLOCK_BOOTTIME read just before and just after starting it.
func TestStartTicks(t *testing.T) {
	ticks := func() uint64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
			t.Fatal(err)
		}
		return uint64(ts.Nano()) / (1e9 / userHZ)
	}
	before := ticks()
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	after := ticks()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	got, err := StartTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got < before || got > after {
		t.Fatalf("start of pid %d: %d ticks, want within [%d, %d] (CLOCK_BOOTTIME around its start)", cmd.Process.Pid, got, before, after)
	}
	if _, err := StartTicks(1 << 30); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("StartTicks(missing pid) = %v, want 'no such process'", err)
	}
}

// TestIntegrationPIDScope: a pid in scope makes that process's sockets
// MPTCP, only while the entry's start time is the process's: an entry left
// by an exited process whose pid was recycled (simulated by rewriting the
// start time) does not reach the new process, Stale names it and Prune
// removes it.
func TestIntegrationPIDScope(t *testing.T) {
	needTracing(t)
	m := loadAttached(t)
	a, err := startAsker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	pid := a.cmd.Process.Pid
	const tcp, mptcp = "6 6 6 17", "262 262 262 17"
	if got, err := a.ask(); err != nil || got != tcp {
		t.Fatalf("before AddPID: %q, %v; want %q", got, err, tcp)
	}
	if err := m.AddPID(pid); err != nil {
		t.Fatal(err)
	}
	if got, err := a.ask(); err != nil || got != mptcp {
		t.Fatalf("pid %d in scope: %q, %v; want %q", pid, got, err, mptcp)
	}
	if stale, err := m.Stale(); err != nil || len(stale) != 0 {
		t.Fatalf("Stale() = %v, %v; want none while the process lives", stale, err)
	}
	start, err := StartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.PutPIDStart(pid, start+1); err != nil {
		t.Fatal(err)
	}
	if got, err := a.ask(); err != nil || got != tcp {
		t.Fatalf("entry of another process with pid %d (start %d, this one %d): %q, %v; want %q", pid, start+1, start, got, err, tcp)
	}
	if stale, err := m.Prune(); err != nil || len(stale) != 1 || stale[0] != pid {
		t.Fatalf("Prune() = %v, %v; want [%d]", stale, err, pid)
	}
	if _, pids, err := m.Scope(); err != nil || len(pids) != 0 {
		t.Fatalf("after Prune, Scope() pids = %v, %v; want none", pids, err)
	}
	a.stop()
	if err := m.AddPID(pid); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("AddPID(exited %d) = %v, want 'no such process'", pid, err)
	}
}

// pidnsHelperEnv makes the test binary run pidnsHelper instead of tests.
const pidnsHelperEnv = "GIGAPATH_MPTCPIFY_PIDNS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(pidnsHelperEnv) == "1" {
		if err := pidnsHelper(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pidnsHelper runs as pid 1 of a new PID (and mount) namespace with its
// own /proc: it loads mptcpify there, puts a child process in scope by the
// pid it has in this namespace, and prints what sockets the child and the
// helper itself get.
func pidnsHelper() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	m, err := Load()
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Attach(); err != nil {
		return err
	}
	a, err := startAsker()
	if err != nil {
		return err
	}
	defer a.stop()
	if err := m.AddPID(a.cmd.Process.Pid); err != nil {
		return err
	}
	child, err := a.ask()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	self, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	unix.Close(fd)
	if err != nil {
		return err
	}
	fmt.Printf("pid=%d child=%d child-protocols=%s self-protocol=%d\n", os.Getpid(), a.cmd.Process.Pid, child, self)
	return nil
}

// TestIntegrationPIDNamespace: in a PID namespace of its own, a pid means
// that namespace's process. The helper, pid 1 there, adds its child by the
// child's pid in the namespace (2, say: in the initial namespace that is
// another process): the child's sockets become MPTCP, the helper's own
// stay TCP.
func TestIntegrationPIDNamespace(t *testing.T) {
	needTracing(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pidnsHelperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper in a new PID namespace: %v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	f := regexp.MustCompile(`^pid=(\d+) child=(\d+) child-protocols=([\d ]+) self-protocol=(\d+)$`).FindStringSubmatch(got)
	if f == nil {
		t.Fatalf("helper said %q", got)
	}
	pid, child, protos, self := f[1], f[2], f[3], f[4]
	if pid != "1" {
		t.Fatalf("helper is pid %s, want 1 in its own namespace (%q)", pid, got)
	}
	if protos != "262 262 262 17" {
		t.Errorf("child (pid %s in the namespace) got protocols %q, want MPTCP: %q", child, protos, got)
	}
	if self != "6" {
		t.Errorf("the helper, not in scope, got protocol %s, want 6: %q", self, got)
	}
}

// TestIntegrationInOurPIDNS (root: it starts a process in a new PID
// namespace): a process of a PID namespace nested below ours shows in
// our /proc but cannot be scoped by pid; one of ours can; a missing pid
// is "no such process".
func TestIntegrationInOurPIDNS(t *testing.T) {
	needRoot(t)
	ours := exec.Command("sleep", "5")
	nested := exec.Command("sleep", "5")
	nested.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	for _, c := range []*exec.Cmd{ours, nested} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	if err := inOurPIDNS(ours.Process.Pid); err != nil {
		t.Errorf("a child in our PID namespace: %v", err)
	}
	err := inOurPIDNS(nested.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), "another PID namespace") || !strings.Contains(err.Error(), fmt.Sprint(nested.Process.Pid)) {
		t.Errorf("a child in a nested PID namespace: %v, want a refusal naming it", err)
	}
	if err := inOurPIDNS(1 << 30); !errors.Is(err, errNoProcess) {
		t.Errorf("a missing pid: %v, want errNoProcess", err)
	}
}
