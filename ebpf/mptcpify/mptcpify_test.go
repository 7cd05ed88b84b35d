//go:build linux

package mptcpify

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/gigapath/gigapath/ebpf/bpffs"
	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/internal/testbed"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_SYS_ADMIN)")
	}
}

// needTracing skips, naming the missing kernel feature, where the kernel
// refuses fmod_ret programs.
func needTracing(t testing.TB) {
	t.Helper()
	needRoot(t)
	if err := Supported(); err != nil {
		t.Skip(err.Error())
	}
}

func TestTracingRefusedMessage(t *testing.T) {
	err := tracingRefused(ebpf.ErrNotSupported)
	if !errors.Is(err, ErrUnsupported) || err.Error() != "mptcpify needs BPF tracing programs (fmod_ret); this kernel refuses them (not supported)" {
		t.Fatalf("got %v", err)
	}
}

// On a kernel that refuses tracing programs (the host: lockdown=integrity),
// Load says exactly that.
func TestIntegrationLoadRefused(t *testing.T) {
	needRoot(t)
	if err := features.HaveProgramType(ebpf.Tracing); err == nil {
		t.Skip("this kernel allows BPF tracing programs; TestIntegrationMptcpify covers it")
	}
	_, err := Load()
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Load() = %v, want ErrUnsupported", err)
	}
	if level := lockdown(); level == "integrity" {
		want := "mptcpify needs BPF tracing programs (fmod_ret); this kernel refuses them (lockdown=integrity)"
		if err.Error() != want {
			t.Fatalf("Load() = %q, want %q", err, want)
		}
	}
	t.Logf("refused as expected: %v", err)
}

// protocols asks a fresh protoLoopPy once, in the cgroup at cg when cg is
// not "".
func protocols(t *testing.T, cg string) string {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "python3", "-c", protoLoopPy)
	cmd.Stdin = strings.NewReader("?\n")
	if cg != "" {
		f, err := os.Open(cg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// loadAttached loads and attaches mptcpify, detached again at cleanup.
func loadAttached(t *testing.T) *Mptcpify {
	t.Helper()
	m, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Attach(); err != nil {
		t.Fatal(err)
	}
	return m
}

func testCgroup(t *testing.T, name string) string {
	t.Helper()
	return testbed.CgroupT(t, "gigapath-test-"+name+"-")
}

// TestIntegrationMptcpify: inside the cgroup (and a child cgroup of it) a
// plain socket(AF_INET, SOCK_STREAM, 0) becomes protocol 262; outside it
// stays TCP; UDP is left alone; an attached program with an empty scope
// changes nothing.
func TestIntegrationMptcpify(t *testing.T) {
	needTracing(t)
	cg := testCgroup(t, "mptcpify")
	m := loadAttached(t)
	const tcp, mptcp = "6 6 6 17", "262 262 262 17"
	if got := protocols(t, cg); got != tcp {
		t.Fatalf("empty scope: protocols in the cgroup %q, want %q (nothing changes)", got, tcp)
	}
	root, _ := cgroup.Mount()
	if err := m.AddCgroup(root); err == nil {
		t.Fatal("AddCgroup(root of the hierarchy) succeeded: that is system-wide")
	}
	if err := m.AddCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if got := protocols(t, cg); got != mptcp {
		t.Fatalf("in the cgroup: protocols %q, want %q", got, mptcp)
	}
	child := filepath.Join(cg, "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgroup.Remove(child) })
	if got := protocols(t, child); got != mptcp {
		t.Fatalf("in a child cgroup: protocols %q, want %q", got, mptcp)
	}
	if got := protocols(t, ""); got != tcp {
		t.Fatalf("outside the cgroup: protocols %q, want %q", got, tcp)
	}
	if err := m.RemoveCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if got := protocols(t, cg); got != tcp {
		t.Fatalf("after RemoveCgroup: protocols %q, want %q", got, tcp)
	}
}

// Pinned, the program outlives its loader and can be reopened and removed.
func TestIntegrationPin(t *testing.T) {
	needTracing(t)
	cg := testCgroup(t, "pin")
	dir := filepath.Join(bpffs.Dir, testbed.UniqueName("test-mptcpify-"))
	m, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	// Until the explicit Close below, a failure must not leave the program
	// attached (a second Close only reports closed descriptors).
	t.Cleanup(func() { m.Close() })
	if err := m.AddCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(); err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p, err := OpenPinned(dir); err == nil {
			p.Unpin()
			p.Close()
		}
		os.Remove(dir)
	})
	m.Close()
	if got := protocols(t, cg); got != "262 262 262 17" {
		t.Fatalf("after the loader closed, pinned: protocols %q", got)
	}
	p, err := OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids, _, err := p.Scope()
	if err != nil || len(ids) != 1 {
		t.Fatalf("Scope() = %v, %v; want the one cgroup", ids, err)
	}
	if err := p.Unpin(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if got := protocols(t, cg); got != "6 6 6 17" {
		t.Fatalf("after Unpin and Close: protocols %q, want TCP", got)
	}
	if Pinned(dir) {
		t.Fatal("still pinned after Unpin")
	}
}
