package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/ebpf/mptcpify"
)

const protoScript = `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))`

func needRootCLI(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_SYS_ADMIN)")
	}
}

// Where the kernel refuses tracing programs (the host: lockdown), every
// mptcpify command that would load says exactly why and exits 1.
func TestIntegrationMptcpifyRefused(t *testing.T) {
	needRootCLI(t)
	serr := mptcpify.Supported()
	if serr == nil {
		t.Skip("this kernel runs mptcpify; TestIntegrationMptcpifyRun covers it")
	}
	for _, args := range [][]string{
		{"mptcpify", "run", "--", "true"},
		{"mptcpify", "attach", "--pid", strconv.Itoa(os.Getpid())},
	} {
		code, _, errs := ebpfCLIRun(t, args...)
		if code != 1 || !strings.Contains(errs, serr.Error()) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", args, code, errs, serr)
		}
	}
	code, out, errs := ebpfCLIRun(t, "-j", "mptcpify", "status")
	var st mptcpifyState
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: exit %d %s %s", code, out, errs)
	}
	if st.Supported || st.Reason != serr.Error() || st.Attached {
		t.Fatalf("status %+v", st)
	}
	t.Logf("refused: %v", serr)
}

func TestMptcpifyUsage(t *testing.T) {
	for _, args := range [][]string{
		{"mptcpify", "run"},
		{"mptcpify", "run", "--", "/no/such/command"},
		{"mptcpify", "attach"},
	} {
		if code, _, errs := ebpfCLIRun(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
	}
}

// attach validates every --cgroup and --pid before it loads or touches the
// pinned maps: one bad argument among good ones is a usage error naming it,
// and nothing is applied (on the host the load would fail with exit 1, so
// exit 2 proves validation ran first).
func TestMptcpifyAttachValidatesAllFirst(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	const noPID = "999999999" // above any pid_max (at most 2^22)
	noCG := "gigapath-never-created-" + strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mptcpify", "attach", "--pid", self, "--pid", noPID}, noPID},
		{[]string{"mptcpify", "attach", "--pid", self, "--cgroup", noCG}, noCG},
		{[]string{"mptcpify", "attach", "--pid", "-3"}, "-3"},
		{[]string{"mptcpify", "attach", "--cgroup", "/"}, "root of the cgroup hierarchy"},
	} {
		code, _, errs := ebpfCLIRun(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %q", tc.args, code, errs, tc.want)
		}
	}
	if err := mptcpifyValidate(nil, []int{os.Getpid()}); err != nil {
		t.Errorf("own pid refused: %v", err)
	}
}

// In a kernel that allows it (e.g. a 6.12 VM): the command's sockets are
// MPTCP, its exit status comes back, and the cgroup and program are gone
// afterwards.
func TestIntegrationMptcpifyRun(t *testing.T) {
	needRootCLI(t)
	if err := mptcpify.Supported(); err != nil {
		t.Skip(err.Error())
	}
	code, out, errs := ebpfCLIRun(t, "mptcpify", "run", "--", "python3", "-c", protoScript)
	if code != 0 || strings.TrimSpace(out) != "262" {
		t.Fatalf("mptcpify run python3: exit %d, stdout %q, stderr %q; want 262", code, out, errs)
	}
	root, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "gigapath-mptcpify-"+strconv.Itoa(os.Getpid()))); !os.IsNotExist(err) {
		t.Fatalf("run left its cgroup behind: %v", err)
	}
	code, _, _ = ebpfCLIRun(t, "mptcpify", "run", "--", "sh", "-c", "exit 3")
	if code != 3 {
		t.Fatalf("mptcpify run sh -c 'exit 3': exit %d, want 3", code)
	}
}

// attach pins, status shows the cgroup, detach removes it all.
func TestIntegrationMptcpifyAttachDetach(t *testing.T) {
	needRootCLI(t)
	if err := mptcpify.Supported(); err != nil {
		t.Skip(err.Error())
	}
	if mptcpify.Pinned(mptcpify.DefaultPinDir) {
		t.Skip("mptcpify is attached on this machine already; not touching it")
	}
	cg, err := cgroup.Create("gigapath-test-attach-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgroup.Remove(cg) })
	if code, _, errs := ebpfCLIRun(t, "mptcpify", "attach", "--cgroup", cg); code != 0 {
		t.Fatalf("attach: exit %d: %s", code, errs)
	}
	t.Cleanup(func() { ebpfCLIRun(t, "mptcpify", "detach") })
	code, out, _ := ebpfCLIRun(t, "mptcpify", "status", "-j")
	var st mptcpifyState
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Attached || len(st.Cgroups) != 1 || st.Cgroups[0].Path != cg {
		t.Fatalf("status after attach: exit %d %s", code, out)
	}
	if code, _, errs := ebpfCLIRun(t, "mptcpify", "detach"); code != 0 {
		t.Fatalf("detach: exit %d: %s", code, errs)
	}
	if mptcpify.Pinned(mptcpify.DefaultPinDir) {
		t.Fatal("still pinned after detach")
	}
}

// targetPy: an MPTCP server on 127.0.0.1 that answers each connection with
// "mptcp=N" where N is TCP_IS_MPTCP of that connection (1 = really MPTCP,
// 0 = the peer spoke plain TCP).
const targetPy = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.recv(16)
    c.sendall(b"mptcp=%d" % c.getsockopt(socket.IPPROTO_TCP, 43))
    c.close()
`

// socksClientPy: an MPTCP client through a SOCKS5 proxy to the target;
// prints TCP_IS_MPTCP of its own connection to the proxy, what the target
// says about the proxy's connection to it, and the protocol a plain socket
// of this (unscoped) process gets.
const socksClientPy = `
import socket, struct, sys
proxy, target = int(sys.argv[1]), int(sys.argv[2])
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
c.connect(("127.0.0.1", proxy))
c.sendall(b"\x05\x01\x00"); assert c.recv(2) == b"\x05\x00"
c.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", target))
r = c.recv(10); assert r[1] == 0, r
c.sendall(b"ping")
answer = c.recv(32).decode()
plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
print("client mptcp=%d target %s plain=%d" % (c.getsockopt(socket.IPPROTO_TCP, 43), answer, plain.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)))
`

// TestIntegrationMptcpifyMicrosocks: the check. microsocks (which
// never asks for MPTCP) run under `gigapath mptcpify run` listens with MPTCP
// (ss -Mltn), an MPTCP client through it gets MPTCP on both legs, and
// processes outside its cgroup keep plain TCP.
func TestIntegrationMptcpifyMicrosocks(t *testing.T) {
	needRootCLI(t)
	if err := mptcpify.Supported(); err != nil {
		t.Skip(err.Error())
	}
	if _, err := exec.LookPath("microsocks"); err != nil {
		t.Skip("microsocks not installed (apt-get install microsocks)")
	}
	target := exec.Command("python3", "-c", targetPy)
	tout, err := target.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	var targetPort string
	if _, err := fmt.Fscanln(tout, &targetPort); err != nil {
		t.Fatal(err)
	}

	// A port free right now on loopback (a pid-derived one could be taken
	// by another package's test running in parallel).
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(free.Addr().(*net.TCPAddr).Port)
	free.Close()
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"gigapath", "mptcpify", "run", "--", "microsocks", "-i", "127.0.0.1", "-p", port})
	}()
	root, _ := cgroup.Mount()
	cg := filepath.Join(root, "gigapath-mptcpify-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() {
		pids, _ := cgroup.Processes(cg)
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGTERM)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("mptcpify run did not return after its command was killed")
		}
	})

	// The listener shows up as an MPTCP socket.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ss", "-Mltn", "sport", "= :"+port).Output()
		if strings.Contains(string(out), "127.0.0.1:"+port) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no MPTCP listener on 127.0.0.1:%s (ss -Mltn: %s)", port, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.Command("python3", "-c", socksClientPy, port, targetPort).CombinedOutput()
	if err != nil {
		t.Fatalf("client through microsocks: %v: %s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "client mptcp=1 target mptcp=1 plain=6"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
