//go:build linux

package sched

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/gigapath/gigapath/internal/testbed"
)

// Every shipped object parses and carries one struct_ops map whose value
// registers the scheduler under its documented name.
func TestShippedObjects(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Shipped() {
		if len(s.Name) > 15 || seen[s.Name] {
			t.Errorf("scheduler name %q: longer than 15 bytes or duplicate", s.Name)
		}
		seen[s.Name] = true
		spec, err := s.load()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		m := spec.Maps[s.mapName]
		if m == nil || m.Type != ebpf.StructOpsMap {
			t.Fatalf("%s: no struct_ops map %q (maps %v)", s.Name, s.mapName, spec.Maps)
		}
		if m.Value == nil || m.Value.TypeName() != "mptcp_sched_ops" {
			t.Fatalf("%s: struct_ops map value type %v, want mptcp_sched_ops", s.Name, m.Value)
		}
		if len(m.Contents) != 1 {
			t.Fatalf("%s: struct_ops contents %d", s.Name, len(m.Contents))
		}
		raw, _ := m.Contents[0].Value.([]byte)
		if !bytes.Contains(raw, append([]byte(s.Name), 0)) {
			t.Errorf("%s: struct_ops value does not carry the name %q", s.Name, s.Name)
		}
		for _, op := range []string{"_init", "_release", "_get_send", "_get_retrans"} {
			if spec.Programs[s.Name+op] == nil {
				t.Errorf("%s: no program %s%s", s.Name, s.Name, op)
			}
		}
	}
}

func TestLookup(t *testing.T) {
	if _, ok := Lookup("gp_rr"); !ok {
		t.Error("Lookup(gp_rr) failed")
	}
	if _, ok := Lookup("default"); ok {
		t.Error("Lookup(default) found a BPF scheduler")
	}
	if err := Register("nosuch"); err == nil || !strings.Contains(err.Error(), "gp_minrtt") {
		t.Errorf("Register(nosuch) = %v, want an error listing the valid names", err)
	}
}

// Available agrees with bpftool's reading of the kernel BTF.
func TestAvailableMatchesKernelBTF(t *testing.T) {
	ok, reason := Available()
	if ok != (reason == "") {
		t.Fatalf("Available() = %v, %q", ok, reason)
	}
	if !ok && reason != ErrUnsupported.Error() {
		t.Fatalf("reason %q, want %q", reason, ErrUnsupported)
	}
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("bpftool not installed: cannot cross-check the kernel BTF")
	}
	out, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux").Output()
	if err != nil {
		t.Skipf("bpftool cannot read the kernel BTF: %v", err)
	}
	has := bytes.Contains(out, []byte("'"+StructOpsType+"'"))
	if has != ok {
		t.Fatalf("bpftool finds %s: %v; Available() = %v", StructOpsType, has, ok)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_BPF)")
	}
}

func sysctlIn(t *testing.T, ns *testbed.NetNS, key string) string {
	t.Helper()
	out, err := ns.Run("sysctl", "-n", key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestIntegrationUseKernelScheduler(t *testing.T) {
	needRoot(t)
	ns, err := testbed.NewNetNS("sch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	st, err := State(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/sys/net/mptcp/scheduler"); os.IsNotExist(err) {
		// Before Linux 6.3: only the built-in scheduler.
		if !st.Fixed || st.Active != "default" {
			t.Fatalf("State() = %+v on a kernel without net.mptcp.scheduler", st)
		}
		if err := Use(ns.Path(), "default"); err != nil {
			t.Fatal(err)
		}
		if err := Use(ns.Path(), "other"); !errors.Is(err, ErrNoSchedulerSysctl) {
			t.Fatalf("Use(other) = %v, want %v", err, ErrNoSchedulerSysctl)
		}
		t.Skip("kernel has no net.mptcp.scheduler sysctl (Linux 6.3 or newer): only its built-in scheduler was checked")
	}
	if st.Fixed {
		t.Fatalf("State().Fixed on a kernel with net.mptcp.scheduler")
	}
	if want := sysctlIn(t, ns, "net.mptcp.scheduler"); st.Active != want {
		t.Fatalf("State().Active = %q, sysctl says %q", st.Active, want)
	}
	if want := strings.Fields(sysctlIn(t, ns, "net.mptcp.available_schedulers")); strings.Join(st.Available, " ") != strings.Join(want, " ") {
		t.Fatalf("State().Available = %v, sysctl says %v", st.Available, want)
	}
	if err := Use(ns.Path(), "default"); err != nil {
		t.Fatal(err)
	}
	if got := sysctlIn(t, ns, "net.mptcp.scheduler"); got != "default" {
		t.Fatalf("net.mptcp.scheduler = %q after Use(default)", got)
	}
	err = Use(ns.Path(), "nosuch")
	if err == nil || !strings.Contains(err.Error(), "available_schedulers") {
		t.Fatalf("Use(nosuch) = %v, want an error naming the available schedulers", err)
	}
	if got := sysctlIn(t, ns, "net.mptcp.scheduler"); got != "default" {
		t.Fatalf("net.mptcp.scheduler = %q after a refused Use", got)
	}
}

// On kernels without BPF MPTCP schedulers every way in says why.
func TestIntegrationUnsupportedKernel(t *testing.T) {
	needRoot(t)
	if ok, _ := Available(); ok {
		t.Skip("this kernel has BPF MPTCP schedulers; TestIntegrationRegister covers it")
	}
	ns, err := testbed.NewNetNS("sch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	for _, s := range Shipped() {
		if err := Register(s.Name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Register(%s) = %v, want %v", s.Name, err, ErrUnsupported)
		}
		if err := Use(ns.Path(), s.Name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Use(%s) = %v, want %v", s.Name, err, ErrUnsupported)
		}
		if Registered(s.Name) {
			t.Errorf("%s pinned after a refused Register", s.Name)
		}
	}
}

// Where the kernel has them, every scheduler registers, can be picked in a
// namespace, carries an MPTCP transfer and unregisters.
func TestIntegrationRegister(t *testing.T) {
	needRoot(t)
	if ok, reason := Available(); !ok {
		t.Skip(reason)
	}
	for _, s := range Shipped() {
		t.Run(s.Name, func(t *testing.T) {
			if Registered(s.Name) {
				t.Skipf("%s is already registered on this machine; not touching it", s.Name)
			}
			if err := Register(s.Name); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Unregister(s.Name) })
			ns, err := testbed.NewNetNS("sch")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ns.Close() })
			if !strings.Contains(" "+sysctlIn(t, ns, "net.mptcp.available_schedulers")+" ", " "+s.Name+" ") {
				t.Fatalf("%s not in net.mptcp.available_schedulers after Register", s.Name)
			}
			if err := Use(ns.Path(), s.Name); err != nil {
				t.Fatal(err)
			}
			if got := sysctlIn(t, ns, "net.mptcp.scheduler"); got != s.Name {
				t.Fatalf("net.mptcp.scheduler = %q", got)
			}
			// An MPTCP transfer over loopback with the scheduler in charge.
			out, err := ns.Command(context.Background(), "python3", "-c", loopbackPy).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "1048576" {
				t.Fatalf("MPTCP transfer with %s: %v: %s", s.Name, err, out)
			}
			if err := Use(ns.Path(), "default"); err != nil {
				t.Fatal(err)
			}
			if err := Unregister(s.Name); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(" "+sysctlIn(t, ns, "net.mptcp.available_schedulers")+" ", " "+s.Name+" ") {
				t.Fatalf("%s still in net.mptcp.available_schedulers after Unregister", s.Name)
			}
		})
	}
}

const loopbackPy = `
import socket, threading
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
def send():
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    c.connect(srv.getsockname()); c.sendall(b"x" * 1048576); c.close()
threading.Thread(target=send).start()
a, _ = srv.accept(); n = 0
while True:
    b = a.recv(65536)
    if not b: break
    n += len(b)
print(n)
`
