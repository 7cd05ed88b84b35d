//go:build linux

package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/gigapath/gigapath/ebpf/mptcpify"
	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/status"
	"github.com/gigapath/gigapath/internal/testbed"
)

// installBinary puts a copy of src at dst the way install(1) or a package
// manager does: written next to it, then renamed over it, so the running
// process keeps its old (now deleted) file.
func installBinary(t *testing.T, src []byte, dst string) {
	t.Helper()
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// builtBinary is the content of the built gigapath binary (buildBinary),
// for private copies that an upgrade test can replace (installBinary).
func builtBinary(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(buildBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// congestionPolicy writes into dir a policy with congestion: cubic on
// lte0 and path_cgroup cg, and returns its status socket and file.
func congestionPolicy(t *testing.T, dir, cg string) (sock, cfg string) {
	t.Helper()
	sock, cfg = filepath.Join(dir, "status.sock"), filepath.Join(dir, "gigapath.yaml")
	pol := strings.Replace(fmt.Sprintf(basePolicy, "aggregate", sock), "    role: lte\n", "    role: lte\n    congestion: cubic\n", 1) +
		"path_cgroup: " + cg + "\n"
	if err := os.WriteFile(cfg, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	return sock, cfg
}

// sockopsOn returns a function that lists the sockops programs attached
// to cgroup cg (BPF_PROG_QUERY).
func sockopsOn(t *testing.T, cg string) func() []ebpf.ProgramID {
	t.Helper()
	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgf.Close() })
	return func() []ebpf.ProgramID {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(cgf.Fd()), Attach: ebpf.AttachCGroupSockOps})
		if err != nil {
			t.Errorf("BPF_PROG_QUERY %s: %v", cg, err)
			return nil
		}
		var ids []ebpf.ProgramID
		for _, p := range q.Programs {
			ids = append(ids, p.ID)
		}
		return ids
	}
}

// testCgroup creates a cgroup v2 child for the test and removes it at
// cleanup.
func testCgroup(t *testing.T) string {
	t.Helper()
	return testbed.CgroupT(t, "gigapath-ctltest-")
}

// query asks the daemon's status socket.
func query(t *testing.T, sock string) *status.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := status.Query(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// SIGUSR2 during a download: a binary on disk that does not run is
// refused and the daemon keeps running; a good one is exec'd in the same
// process, which adopts the connection. Oracles: `ip monitor` in the client
// namespace sees no rule or route deleted and `ip mptcp monitor` no subflow
// closed, the lte subflow is the same socket before and after, the
// announced peer address the kernel cannot list (no subflow goes to it) is
// still known, every byte arrives, and the final SIGTERM removes the rules
// and restores net.mptcp.path_manager to what the first process found.
func TestIntegrationUpgradeInPlace(t *testing.T) {
	// Long enough (about 10 s over both links) that the connection is
	// still open when the monitors are read: its own close would show
	// subflows closing.
	const size = 96 << 20
	good := builtBinary(t)
	e := setup(t, size)
	b := e.bed
	announceLTE(t, b)
	dir := t.TempDir()
	bin := filepath.Join(dir, "gigapath")
	installBinary(t, good, bin)
	sock := filepath.Join(dir, "status.sock")
	cfg := filepath.Join(dir, "gigapath.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(peerPolicy, "ignore", 1, 1, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	pmBefore := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager"))

	log := &testbed.LockedBuffer{}
	d := startDaemonW(t, b, bin, cfg, sock, log, "--metrics-listen", "-")
	if pm := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager")); pm != "userspace" {
		t.Fatalf("path_manager %q with the daemon running", pm)
	}
	wait := e.download(t, size)
	// The lte subflow's local address and port identify the socket.
	lteLocal := func() netip.AddrPort {
		for a := range subflows(t, b) {
			if a.Addr() == b.LTEAddr {
				return a
			}
		}
		return netip.AddrPort{}
	}
	var lteSub netip.AddrPort
	waitFor(t, b, "an established lte subflow", 10*time.Second, func() bool {
		lteSub = lteLocal()
		return lteSub.IsValid()
	})
	peers := func() []netip.AddrPort {
		var out []netip.AddrPort
		for _, c := range query(t, sock).Connections {
			for _, p := range c.PeerAddrs {
				out = append(out, p.Addr)
			}
		}
		return out
	}
	waitFor(t, b, "the announced lte1 address in status", 10*time.Second, func() bool {
		p := peers()
		return len(p) == 1 && p[0].Addr() == b.ProxyLTEAddr
	})

	// Independent witnesses of what happens in the kernel from now on.
	monitor := func(args ...string) *testbed.LockedBuffer {
		out := &testbed.LockedBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := b.Client.Command(ctx, "ip", args...)
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); cmd.Wait() })
		return out
	}
	routeMon := monitor("monitor", "rule", "route")
	mptcpMon := monitor("mptcp", "monitor")
	time.Sleep(200 * time.Millisecond) // the monitors are subscribed

	// A broken binary on disk: refused, nothing changes.
	installBinary(t, []byte("#!/bin/sh\necho this is not gigapath >&2\nexit 3\n"), bin)
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, b, "the refused upgrade logged", 10*time.Second, func() bool {
		return strings.Contains(log.String(), "upgrade refused")
	})
	if !strings.Contains(log.String(), "this is not gigapath") {
		t.Errorf("the refusal does not carry the check's output:\n%s", log)
	}
	if s := query(t, sock); len(s.Connections) != 1 {
		t.Fatalf("after a refused upgrade: %+v", s.Connections)
	}
	// A check killed by the signal (systemctl kill without --kill-whom=main
	// signals every process of the unit): refused, saying so.
	refused := strings.Count(log.String(), "upgrade refused")
	installBinary(t, []byte("#!/bin/sh\nkill -USR2 $$\nsleep 5\n"), bin)
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, b, "the second refused upgrade logged", 10*time.Second, func() bool {
		return strings.Count(log.String(), "upgrade refused") > refused
	})
	if !strings.Contains(log.String(), "--kill-whom=main") {
		t.Errorf("a check killed by SIGUSR2: the refusal does not say how to signal the main process only:\n%s", log)
	}

	installBinary(t, good, bin)
	s0 := query(t, sock)
	if s0.Version == "" || s0.Started.IsZero() || s0.PID != d.cmd.Process.Pid {
		t.Errorf("status before the upgrade: version %q, started %v, pid %d (process %d)", s0.Version, s0.Started, s0.PID, d.cmd.Process.Pid)
	}
	runningBefore := strings.Count(log.String(), "gigapath running")
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, b, "the new binary running", 15*time.Second, func() bool {
		select {
		case <-d.done:
			t.Fatalf("the daemon process exited during the upgrade: %v\n%s", d.err, log)
		default:
		}
		return strings.Count(log.String(), "gigapath running") > runningBefore
	})
	s := query(t, sock)
	if len(s.Connections) != 1 || len(s.Connections[0].Subflows) != 2 {
		t.Fatalf("the new binary adopted %+v, want one connection with 2 subflows", s.Connections)
	}
	if s.PID != s0.PID || !s.Started.After(s0.Started) {
		t.Errorf("after the upgrade: pid %d started %v; before: pid %d started %v (want the same pid, a later start)", s.PID, s.Started, s0.PID, s0.Started)
	}
	if p := peers(); len(p) != 1 || p[0].Addr() != b.ProxyLTEAddr {
		t.Errorf("peer addresses after the upgrade: %v, want [%s:...] handed over", p, b.ProxyLTEAddr)
	}
	if pm := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager")); pm != "userspace" {
		t.Errorf("path_manager %q after the upgrade", pm)
	}
	time.Sleep(time.Second) // anything the new process would undo or redo
	if now := lteLocal(); now != lteSub {
		t.Errorf("lte subflow from %v before, %v after: want the same one", lteSub, now)
	}
	if out := routeMon.String(); strings.Contains(out, "Deleted") {
		t.Errorf("ip monitor saw deletions during the upgrade:\n%s", out)
	}
	if out := mptcpMon.String(); strings.Contains(out, "SF_CLOSED") {
		t.Errorf("ip mptcp monitor saw subflows close during the upgrade:\n%s", out)
	}
	if _, ok := hasFrom(subflows(t, b), b.WiFiAddr); !ok {
		t.Fatal("the download ended before the checks: they saw nothing")
	}
	wait()

	d.term(t)
	if d.err != nil {
		t.Errorf("daemon after SIGTERM: %v", d.err)
	}
	noneLeft(t, b, "after SIGTERM")
	if pm := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager")); pm != pmBefore {
		t.Errorf("path_manager %q after SIGTERM, want %q as before the first process", pm, pmBefore)
	}
}

// A reload that moves the tables (routing.table_base) replaces the routing
// manager; stopping afterwards removes what the new one made (the exit
// cleanup once cleaned only the first, already closed manager, and the new
// tables' rules outlived the daemon). `ip rule` is the oracle.
func TestIntegrationReloadTablesThenStop(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	sock := filepath.Join(t.TempDir(), "status.sock")
	pol := func(extra string) *policy.Policy {
		p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "aggregate", sock) + extra))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctl, stop := runController(t, controller.Config{Policy: pol(""), NetNS: b.Client.Name})
	tables := func() string {
		var ts []string
		for _, l := range strings.Split(b.Client.MustRun("ip", "rule", "show"), "\n") {
			if f := strings.Fields(l); strings.Contains(l, "proto 201") && len(f) > 4 {
				ts = append(ts, f[4])
			}
		}
		return strings.Join(ts, " ")
	}
	before := tables()
	if before == "" {
		t.Fatal("no source rule after start")
	}
	if err := ctl.Reload(context.Background(), pol("routing:\n  table_base: 5000\n")); err != nil {
		t.Fatal(err)
	}
	after := tables()
	if after == "" || after == before {
		t.Fatalf("rules after moving the tables to 5000: %q (before %q)", after, before)
	}
	stop()
	noneLeft(t, b, "after stop")
}

// With `congestion:` set, an upgrade in place never leaves the policy's
// cgroup without the sockops program: polling BPF_PROG_QUERY on the cgroup
// every 0.2 ms during the upgrade never sees it empty, the new binary's
// program replaces the old one (other program id, one attached in the
// end), and SIGTERM detaches it.
func TestIntegrationUpgradeKeepsBPF(t *testing.T) {
	errPolicy, errShare := pathpolicy.Supported()
	if errPolicy != nil {
		t.Skipf("sockops program cannot load here: %v", errPolicy)
	}
	// The daemon's own links: the sockops program's, and the send-share
	// tracepoint's where the kernel has it.
	ownLinks := 1
	if errShare == nil {
		ownLinks = 2
	}
	b := testbed.UpT(t, testbed.Spec{})
	cg := testCgroup(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "gigapath")
	installBinary(t, builtBinary(t), bin)
	sock, cfg := congestionPolicy(t, dir, cg)
	attached := sockopsOn(t, cg)

	log := &testbed.LockedBuffer{}
	// --netns rather than `ip netns exec`, which mounts a sysfs of its own
	// without the cgroup v2 file system.
	d := startDaemonCmd(t, exec.Command(bin, "--netns", b.Client.Name, "run", "--config", cfg, "--metrics-listen", "-"), sock, log)
	waitFor(t, b, "the daemon ready", 10*time.Second, func() bool {
		return strings.Contains(log.String(), "gigapath running")
	})
	before := attached()
	if len(before) != 1 {
		t.Fatalf("sockops programs on %s with the daemon running: %v, want 1\n%s", cg, before, log)
	}
	// What the daemon process holds: BPF links and handoff memfds.
	fds := func() (links, memfds int) {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
		for _, e := range ents {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", d.cmd.Process.Pid, e.Name()))
			if l == "anon_inode:bpf_link" {
				links++
			}
			if strings.HasPrefix(l, "/memfd:gigapath-handoff") {
				memfds++
			}
		}
		return
	}
	prev := before
	for round := 1; round <= 2; round++ {
		var empty, polls int
		stop := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if len(attached()) == 0 {
					empty++
				}
				polls++
				time.Sleep(200 * time.Microsecond)
			}
		}()
		running := strings.Count(log.String(), "gigapath running")
		d.cmd.Process.Signal(syscall.SIGUSR2)
		waitFor(t, b, "the new binary running", 15*time.Second, func() bool {
			return strings.Count(log.String(), "gigapath running") > running
		})
		time.Sleep(100 * time.Millisecond)
		close(stop)
		<-polled
		t.Logf("upgrade %d: %d polls", round, polls)
		if polls < 20 {
			t.Fatalf("upgrade %d: only %d polls, too few to see a gap", round, polls)
		}
		if empty != 0 {
			t.Errorf("upgrade %d: the cgroup had no sockops program in %d of %d polls", round, empty, polls)
		}
		after := attached()
		if len(after) != 1 || after[0] == prev[0] {
			t.Errorf("upgrade %d: sockops programs %v (before %v), want the new binary's only", round, after, prev)
		}
		prev = after
		if links, memfds := fds(); links != ownLinks || memfds != 0 {
			t.Errorf("upgrade %d: the daemon holds %d BPF links and %d handoff memfds, want %d (its own) and 0", round, links, memfds, ownLinks)
		}
	}

	d.term(t)
	if ids := attached(); len(ids) != 0 {
		t.Errorf("sockops programs left after SIGTERM: %v", ids)
	}
}

// mptcpProbe, run in a cgroup, makes TCP sockets in a loop and counts
// what the kernel made of them (SO_PROTOCOL: 262 MPTCP, 6 TCP) until the
// file argv[1] exists; it prints "ready" after its first MPTCP socket and
// "mptcp=N tcp=M" at the end.
const mptcpProbe = `
import os, socket, sys
stop, ready, counts = sys.argv[1], False, {262: 0, 6: 0}
i = 0
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    p = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    s.close()
    if not ready:
        if p == 262:
            ready = True
            print("ready", flush=True)
        continue
    counts[p] = counts.get(p, 0) + 1
    i += 1
    if i % 50 == 0 and os.path.exists(stop):
        break
print("mptcp=%d tcp=%d" % (counts[262], counts[6]), flush=True)
`

// With `mptcpify:`, every TCP socket a program in the cgroup makes during
// an upgrade in place is still MPTCP (a python loop in the cgroup checks
// SO_PROTOCOL of each), and after SIGTERM a new one is plain TCP again.
// Needs a kernel that loads the fmod_ret program (not this host's lockdown:
// .ci/vmtest runs it on 6.12, where it must pass).
func TestIntegrationUpgradeKeepsMptcpify(t *testing.T) {
	m, err := mptcpify.Load()
	if err != nil {
		t.Skipf("mptcpify cannot load on this kernel: %v", err)
	}
	m.Close()
	ns := testbed.NetNST(t, "upg")
	cg := testCgroup(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "gigapath")
	installBinary(t, builtBinary(t), bin)
	sock := filepath.Join(dir, "status.sock")
	cfg := filepath.Join(dir, "gigapath.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(basePolicy, "aggregate", sock)+"mptcpify: ["+cg+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &testbed.LockedBuffer{}
	d := startDaemonCmd(t, exec.Command(bin, "--netns", ns.Name, "run", "--config", cfg, "--metrics-listen", "-"), sock, log)
	waitFor(t, nil, "mptcpify attached", 20*time.Second, func() bool {
		return strings.Contains(log.String(), "mptcpify attached")
	})

	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	probe := filepath.Join(dir, "probe.py")
	stopFile := filepath.Join(dir, "stop")
	if err := os.WriteFile(probe, []byte(mptcpProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(arg string) (*exec.Cmd, *bufio.Scanner) {
		cmd := exec.Command("python3", probe, arg)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, bufio.NewScanner(out)
	}
	_, sc := run(stopFile)
	lines := make(chan string, 2)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(20 * time.Second):
			t.Fatalf("probe in %s: no %s within 20 s", cg, what)
			return ""
		}
	}
	if l := next("MPTCP socket"); l != "ready" {
		t.Fatalf("probe in %s never got an MPTCP socket: %q", cg, l)
	}
	running := strings.Count(log.String(), "gigapath running")
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, nil, "the new binary running", 20*time.Second, func() bool {
		return strings.Count(log.String(), "gigapath running") > running
	})
	time.Sleep(200 * time.Millisecond)
	os.WriteFile(stopFile, nil, 0o644)
	res := next("result")
	var mp, tcp int
	if _, err := fmt.Sscanf(res, "mptcp=%d tcp=%d", &mp, &tcp); err != nil {
		t.Fatalf("probe: %q", res)
	}
	t.Logf("sockets made in the cgroup during the upgrade: %d MPTCP, %d TCP", mp, tcp)
	if tcp != 0 || mp == 0 {
		t.Errorf("during the upgrade %d of %d sockets were plain TCP, want none", tcp, mp+tcp)
	}

	d.term(t)
	after := exec.Command("python3", "-c", "import socket; s = socket.socket(); print(s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))")
	after.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	if out, err := after.Output(); err != nil || strings.TrimSpace(string(out)) != "6" {
		t.Errorf("a socket in %s after SIGTERM: %q %v, want protocol 6 (TCP)", cg, out, err)
	}
}

// A stop during an upgrade is not lost, whichever binary gets it: exit 0,
// no rule or route of ours left, the path manager setting restored.
//   - "during the check": the binary on disk takes 1 s to answer the
//     check (a wrapper that sleeps), SIGTERM comes 300 ms after SIGUSR2:
//     the old binary stops instead of upgrading.
//   - "pending at the exec": a SIGTERM the old binary took after it
//     stopped its loop is passed on ($GIGAPATH_STOP_AFTER_UPGRADE=1, with
//     the handoff in a memfd as the old binary writes it, over the rules
//     and routes a SIGKILLed first daemon left); the binary started so
//     adopts what it finds, then stops and cleans up on its own.
func TestIntegrationStopDuringUpgrade(t *testing.T) {
	bin := buildBinary(t)
	for _, name := range []string{"during the check", "pending at the exec"} {
		t.Run(name, func(t *testing.T) {
			b := testbed.UpT(t, testbed.Spec{})
			dir := t.TempDir()
			cfg, sock := writeBasePolicy(t, dir)
			pmBefore := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager"))
			log := &testbed.LockedBuffer{}
			var d *daemon
			if name == "during the check" {
				// A copy of our own, so that the wrapper can take its place.
				good := builtBinary(t)
				own, real := filepath.Join(dir, "gigapath"), filepath.Join(dir, "gigapath.real")
				installBinary(t, good, own)
				installBinary(t, good, real)
				d = startDaemonW(t, b, own, cfg, sock, log, "--metrics-listen", "-")
				waitFor(t, b, "the daemon ready", 10*time.Second, func() bool {
					return strings.Contains(log.String(), "gigapath running")
				})
				if rules := b.Client.MustRun("ip", "rule", "show"); !strings.Contains(rules, "proto 201") {
					t.Fatalf("no source rule with the daemon running:\n%s", rules)
				}
				installBinary(t, []byte("#!/bin/sh\nsleep 1\nexec "+real+" \"$@\"\n"), own)
				d.cmd.Process.Signal(syscall.SIGUSR2)
				time.Sleep(300 * time.Millisecond)
				d.cmd.Process.Signal(syscall.SIGTERM)
			} else {
				// What the previous binary left: its rules and routes and
				// the path manager setting (a first daemon, SIGKILLed).
				first := startDaemonW(t, b, bin, cfg, sock, log, "--metrics-listen", "-")
				waitFor(t, b, "the first daemon ready", 10*time.Second, func() bool {
					return strings.Contains(log.String(), "gigapath running")
				})
				first.cmd.Process.Signal(syscall.SIGKILL)
				<-first.done
				if rules := b.Client.MustRun("ip", "rule", "show"); !strings.Contains(rules, "proto 201") {
					t.Fatalf("no source rule left by the first daemon:\n%s", rules)
				}
				// The handoff as the previous binary writes it.
				fd, err := unix.MemfdCreate("gigapath-handoff", 0)
				if err != nil {
					t.Fatal(err)
				}
				memfd := os.NewFile(uintptr(fd), "gigapath-handoff")
				defer memfd.Close()
				fmt.Fprintf(memfd, `{"version":1,"path_manager_was":%q}`, pmBefore)
				memfd.Seek(0, 0)
				cmd := b.Client.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-")
				cmd.ExtraFiles = []*os.File{memfd} // descriptor 3
				cmd.Env = append(os.Environ(), "GIGAPATH_STOP_AFTER_UPGRADE=1", "GIGAPATH_HANDOFF_FD=3")
				cmd.Stdout, cmd.Stderr = log, log
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				d = &daemon{cmd: cmd, done: make(chan struct{})}
				go func() { d.err = cmd.Wait(); close(d.done) }()
				t.Cleanup(func() { cmd.Process.Kill(); <-d.done })
			}
			select {
			case <-d.done:
			case <-time.After(20 * time.Second):
				t.Fatalf("no exit within 20 s:\n%s", log)
			}
			if d.err != nil {
				t.Errorf("exit: %v, want 0\n%s", d.err, log)
			}
			want := map[string]string{"during the check": "stop asked for during the upgrade check", "pending at the exec": "a stop was asked for during the upgrade"}[name]
			if !strings.Contains(log.String(), want) {
				t.Errorf("log without %q:\n%s", want, log)
			}
			noneLeft(t, b, "after the stop", "\n", log)
			if pm := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager")); pm != pmBefore {
				t.Errorf("path_manager %q after the stop, want %q", pm, pmBefore)
			}
		})
	}
}

// An upgrade in place of a server daemon with initial_address_joins:
// refuse and an announced port: net.mptcp.allow_join_initial_addr_port
// stays 0 throughout (read in a tight loop in the namespace while the
// upgrade runs), the join listener is the same socket before and after
// (its inode in `ss -Mltne`), a connection made afterwards gets its join
// to the announced port, and SIGTERM closes the listener and puts the
// sysctl back to 1.
func TestIntegrationUpgradeServerKeepsListener(t *testing.T) {
	const size = 16 << 20
	good := builtBinary(t)
	e := setup(t, size)
	b := e.bed
	b.Client.MustRun("ip", "mptcp", "limits", "set", "subflow", "4", "add_addr_accepted", "4")
	dir := t.TempDir()
	bin := filepath.Join(dir, "gigapath")
	installBinary(t, good, bin)
	sock, cfg := filepath.Join(dir, "status.sock"), filepath.Join(dir, "gigapath.yaml")
	pol := strings.Replace(fmt.Sprintf(joinListenerPolicy, b.ProxyLTEAddr), "status_socket: \"\"", "status_socket: "+sock, 1)
	pol = strings.Replace(pol, "side: server", "side: server\ninitial_address_joins: refuse", 1)
	if err := os.WriteFile(cfg, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &testbed.LockedBuffer{}
	d := startDaemonCmd(t, b.Proxy.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-"), sock, log)
	announced := netip.AddrPortFrom(b.ProxyLTEAddr, 7443)
	listener := func() string {
		for _, l := range strings.Split(b.Proxy.MustRun("ss", "-MltneH"), "\n") {
			if f := strings.Fields(l); len(f) > 5 && f[0] == "mptcp" && f[4] == announced.String() {
				for _, x := range f {
					if strings.HasPrefix(x, "ino:") {
						return x
					}
				}
			}
		}
		return ""
	}
	ino := listener()
	if ino == "" {
		t.Fatalf("no listener on %s:\n%s", announced, b.Proxy.MustRun("ss", "-Mltne"))
	}

	var ones, reads atomic.Int64
	stop := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		polled <- b.Proxy.Do(func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				v, err := os.ReadFile("/proc/sys/net/mptcp/allow_join_initial_addr_port")
				if err != nil {
					return err
				}
				reads.Add(1)
				if strings.TrimSpace(string(v)) != "0" {
					ones.Add(1)
				}
			}
		})
	}()
	running := strings.Count(log.String(), "gigapath running")
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, b, "the new binary running", 15*time.Second, func() bool {
		return strings.Count(log.String(), "gigapath running") > running
	})
	close(stop)
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	if ones.Load() != 0 || reads.Load() < 10 {
		t.Errorf("the sysctl read %d times during the upgrade, %d of them not 0", reads.Load(), ones.Load())
	}
	if got := listener(); got != ino {
		t.Errorf("join listener %q after the upgrade, %q before: want the same socket", got, ino)
	}
	if !strings.Contains(log.String(), "join listener taken over from the previous binary") {
		t.Errorf("the new binary did not say it took the listener over:\n%s", log)
	}

	wait := e.download(t, size)
	waitFor(t, b, "the client's join to "+announced.String(), 10*time.Second, func() bool {
		out, _ := b.Client.Run("ss", "-tnH", "state", "established", "dst", announced.String())
		return strings.TrimSpace(out) != ""
	})
	wait()

	d.term(t)
	if got := listener(); got != "" {
		t.Errorf("a listener on %s after SIGTERM (%s)", announced, got)
	}
	if v := strings.TrimSpace(b.Proxy.MustRun("sysctl", "-n", "net.mptcp.allow_join_initial_addr_port")); v != "1" {
		t.Errorf("allow_join_initial_addr_port %q after SIGTERM, want 1 (restored)", v)
	}
}

// An upgrade in place of a daemon that records profiles
// (GIGAPATH_PROFILE_DIR) finishes the old process's files before the exec
// and the new binary writes files of its own: the CPU profile's SIGPROF
// timer outlives an exec and killed the new binary at 10,000 connections
// (BenchmarkServerLoad), and the new process, with the same PID, truncated
// the old file.
func TestIntegrationUpgradeWhileProfiling(t *testing.T) {
	good := builtBinary(t)
	b := testbed.UpT(t, testbed.Spec{})
	dir := t.TempDir()
	bin := filepath.Join(dir, "gigapath")
	installBinary(t, good, bin)
	prof := filepath.Join(dir, "profiles")
	if err := os.Mkdir(prof, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, cfg := filepath.Join(dir, "status.sock"), filepath.Join(dir, "gigapath.yaml")
	example := b.Client.MustRun(bin, "config", "example")
	pol := strings.Replace(example, "status_socket: /run/gigapath/status.sock", "status_socket: "+sock, 1)
	if err := os.WriteFile(cfg, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &testbed.LockedBuffer{}
	cmd := b.Client.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-")
	cmd.Env = append(os.Environ(), "GIGAPATH_PROFILE_DIR="+prof)
	d := startDaemonCmd(t, cmd, sock, log)
	pid := d.cmd.Process.Pid
	// Files of this PID by kind, and whether each is a finished profile
	// (gzip; an unfinished CPU profile is empty).
	files := func(kind string) (names []string, finished int) {
		m, _ := filepath.Glob(filepath.Join(prof, fmt.Sprintf("%s-%d-*.pprof", kind, pid)))
		for _, f := range m {
			raw, err := os.ReadFile(f)
			if err == nil && len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
				finished++
			}
		}
		return m, finished
	}
	time.Sleep(200 * time.Millisecond) // some CPU time on the profiler's clock
	running := strings.Count(log.String(), "gigapath running")
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, b, "the new binary running", 15*time.Second, func() bool {
		select {
		case <-d.done:
			t.Fatalf("the daemon died during the upgrade: %v\n%s", d.err, log)
		default:
		}
		return strings.Count(log.String(), "gigapath running") > running
	})
	if s := query(t, sock); s.PID != pid {
		t.Errorf("status PID %d after the upgrade, want %d", s.PID, pid)
	}
	cpu, done := files("cpu")
	if len(cpu) != 2 || done != 1 {
		t.Errorf("CPU profiles after the upgrade: %v, %d finished; want the old one finished and the new one's open", cpu, done)
	}
	if heap, done := files("heap"); len(heap) != 1 || done != 1 {
		t.Errorf("heap profiles after the upgrade: %v, %d finished; want the old process's", heap, done)
	}
	d.term(t)
	if cpu, done := files("cpu"); len(cpu) != 2 || done != 2 {
		t.Errorf("CPU profiles after the stop: %v, %d finished; want both", cpu, done)
	}
}
