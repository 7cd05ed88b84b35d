package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/ebpf/sched"
)

// sched use gp_minrtt --rtt-threshold registers the scheduler itself; when
// selecting it then fails, it is unregistered again (no struct_ops left
// registered or pinned). The kernel steps are fakes: BPF schedulers do not
// load on every kernel, and the rollback is what is under test.
func TestSchedUseRollsBackRegistration(t *testing.T) {
	if _, err := sched.State(""); err != nil {
		t.Skipf("no net.mptcp sysctls to read: %v", err)
	}
	saved := schedOps
	t.Cleanup(func() { schedOps = saved })
	var calls []string
	schedOps.registered = func(string) bool { return false }
	schedOps.registerOpts = func(n string, o sched.Options) error {
		calls = append(calls, "register "+n)
		return nil
	}
	schedOps.use = func(netns, n string) error {
		calls = append(calls, "use "+n)
		return errors.New("set net.mptcp.scheduler=gp_minrtt: read-only file system")
	}
	schedOps.unregister = func(n string) error {
		calls = append(calls, "unregister "+n)
		return nil
	}
	code, _, errs := ebpfCLIRun(t, "sched", "use", "--rtt-threshold", "50", "gp_minrtt")
	if code != 1 || !strings.Contains(errs, "read-only file system") {
		t.Errorf("exit %d, stderr %q; want 1 with the sysctl error", code, errs)
	}
	if got, want := strings.Join(calls, ", "), "register gp_minrtt, use gp_minrtt, unregister gp_minrtt"; got != want {
		t.Errorf("steps: %s; want %s", got, want)
	}

	// Without --rtt-threshold this call registers nothing itself.
	calls = nil
	code, _, _ = ebpfCLIRun(t, "sched", "use", "gp_minrtt")
	if got, want := strings.Join(calls, ", "), "use gp_minrtt"; code != 1 || got != want {
		t.Errorf("exit %d, steps: %s; want 1 and %s", code, got, want)
	}
}
