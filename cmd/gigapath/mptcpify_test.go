package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
		{"mptcpify", "attach", "--cgroup", "gigapath-never-created"},
	} {
		code, _, errs := runCaptured(t, args...)
		if code != 1 || !strings.Contains(errs, serr.Error()) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", args, code, errs, serr)
		}
	}
	code, out, errs := runCaptured(t, "-j", "mptcpify", "status")
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
		if code, _, errs := runCaptured(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
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
	code, out, errs := runCaptured(t, "mptcpify", "run", "--", "python3", "-c", protoScript)
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
	code, _, _ = runCaptured(t, "mptcpify", "run", "--", "sh", "-c", "exit 3")
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
	if code, _, errs := runCaptured(t, "mptcpify", "attach", "--cgroup", cg); code != 0 {
		t.Fatalf("attach: exit %d: %s", code, errs)
	}
	t.Cleanup(func() { runCaptured(t, "mptcpify", "detach") })
	code, out, _ := runCaptured(t, "mptcpify", "status", "-j")
	var st mptcpifyState
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Attached || len(st.Cgroups) != 1 || st.Cgroups[0].Path != cg {
		t.Fatalf("status after attach: exit %d %s", code, out)
	}
	if code, _, errs := runCaptured(t, "mptcpify", "detach"); code != 0 {
		t.Fatalf("detach: exit %d: %s", code, errs)
	}
	if mptcpify.Pinned(mptcpify.DefaultPinDir) {
		t.Fatal("still pinned after detach")
	}
}
