package main

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/gigapath/gigapath/ebpf/sched"
	"github.com/gigapath/gigapath/internal/testbed"
)

var ebpfStdioMu sync.Mutex

// ebpfCLIRun runs the CLI in-process and returns its exit code, standard
// output and standard error.
func ebpfCLIRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ebpfStdioMu.Lock()
	defer ebpfStdioMu.Unlock()
	oldOut, oldErr := os.Stdout, os.Stderr
	ro, wo, _ := os.Pipe()
	re, we, _ := os.Pipe()
	os.Stdout, os.Stderr = wo, we
	var out, errb []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out, _ = io.ReadAll(ro) }()
	go func() { defer wg.Done(); errb, _ = io.ReadAll(re) }()
	code := run(append([]string{"gigapath"}, args...))
	wo.Close()
	we.Close()
	wg.Wait()
	os.Stdout, os.Stderr = oldOut, oldErr
	return code, string(out), string(errb)
}

func schedNS(t *testing.T) *testbed.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN)")
	}
	ns, err := testbed.NewNetNS("sch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func nsSysctl(t *testing.T, ns *testbed.NetNS, key string) string {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/mptcp/scheduler"); os.IsNotExist(err) {
		// Before Linux 6.3 only the built-in scheduler exists.
		return "default"
	}
	out, err := ns.Run("sysctl", "-n", key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestIntegrationSchedListJSON(t *testing.T) {
	ns := schedNS(t)
	code, out, errs := ebpfCLIRun(t, "--netns", ns.Name, "sched", "list", "-j")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var entries []schedEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	active := nsSysctl(t, ns, "net.mptcp.scheduler")
	kernel := strings.Fields(nsSysctl(t, ns, "net.mptcp.available_schedulers"))
	ok, reason := sched.Available()
	byName := map[string]schedEntry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	for _, k := range kernel {
		e, found := byName[k]
		if _, ours := sched.Lookup(k); ours {
			continue
		}
		if !found || e.Kind != "kernel" || !e.Available || e.Active != (k == active) {
			t.Errorf("kernel scheduler %s: entry %+v (active in ns: %s)", k, e, active)
		}
	}
	if e := byName["default"]; e.Kind != "kernel" || !e.Active {
		t.Errorf("default: %+v, want a kernel scheduler, active in a fresh namespace", e)
	}
	for _, s := range sched.Shipped() {
		e, found := byName[s.Name]
		if !found || e.Kind != "bpf" || e.Available != ok || e.Reason != reason {
			t.Errorf("bpf scheduler %s: entry %+v, want available=%v reason=%q", s.Name, e, ok, reason)
		}
	}
	if len(entries) != len(byName) {
		t.Errorf("duplicate names in %s", out)
	}
}

func TestIntegrationSchedUse(t *testing.T) {
	ns := schedNS(t)
	if code, _, errs := ebpfCLIRun(t, "sched", "use", "--netns", ns.Name, "default"); code != 0 {
		t.Fatalf("sched use default: exit %d: %s", code, errs)
	}
	if got := nsSysctl(t, ns, "net.mptcp.scheduler"); got != "default" {
		t.Fatalf("net.mptcp.scheduler = %q", got)
	}
	code, _, errs := ebpfCLIRun(t, "--netns", ns.Name, "sched", "use", "nosuch")
	if code != 2 || !strings.Contains(errs, `unknown scheduler "nosuch"`) || !strings.Contains(errs, "gp_minrtt") {
		t.Fatalf("sched use nosuch: exit %d: %s; want 2 and the valid names", code, errs)
	}
	if ok, _ := sched.Available(); ok {
		return
	}
	code, _, errs = ebpfCLIRun(t, "--netns", ns.Name, "sched", "use", "gp_minrtt")
	want := "BTF type bpf_struct_ops_mptcp_sched_ops not found: this kernel has no BPF MPTCP schedulers (no released kernel has them; `make sched-kernel` builds one, see docs/kernels.md)"
	if code != 1 || !strings.Contains(errs, want) {
		t.Fatalf("sched use gp_minrtt: exit %d: %q; want 1 and %q", code, errs, want)
	}
	if got := nsSysctl(t, ns, "net.mptcp.scheduler"); got != "default" {
		t.Fatalf("net.mptcp.scheduler = %q after a refused use", got)
	}
	code, _, errs = ebpfCLIRun(t, "sched", "unload", "gp_rr")
	if code != 1 || !strings.Contains(errs, "not registered") {
		t.Fatalf("sched unload gp_rr: exit %d: %s", code, errs)
	}
}
