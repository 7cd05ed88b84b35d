//go:build linux

package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/ebpf/sched"
	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// schedPolicy is basePolicy (active-standby, status socket in dir) with
// scheduler: name.
func schedPolicy(t *testing.T, dir, name string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "active-standby", filepath.Join(dir, "status.sock")) + "scheduler: " + name + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A BPF scheduler the kernel cannot run (no struct_ops mptcp_sched_ops on
// mainline kernels) gives one warning naming the missing BTF type and the
// daemon keeps running with net.mptcp.scheduler untouched; reloading to the
// kernel's "default" selects it.
func TestIntegrationSchedulerUnsupportedWarns(t *testing.T) {
	if ok, why := sched.Available(); ok {
		t.Skipf("this kernel has BPF MPTCP schedulers, so the missing-feature warning cannot be shown here (%s)", why)
	}
	b := testbed.UpT(t, testbed.Spec{})
	before := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.scheduler"))
	var logs testbed.LockedBuffer
	dir := t.TempDir()
	ctl, err := controller.New(controller.Config{Policy: schedPolicy(t, dir, "gp_minrtt"), NetNS: b.Client.Name,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
		t.Log(logs.String())
	})
	select {
	case <-ctl.Ready():
	case err := <-done:
		t.Fatalf("controller exited instead of warning: %v\n%s", err, logs.String())
	}
	out := logs.String()
	var warns []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "scheduler") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 {
		t.Fatalf("want exactly one scheduler warning, got %d:\n%s", len(warns), out)
	}
	for _, want := range []string{"gp_minrtt", sched.StructOpsType, "steering mode stays in charge"} {
		if !strings.Contains(warns[0], want) {
			t.Errorf("warning %q does not mention %q", warns[0], want)
		}
	}
	if after := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.scheduler")); after != before {
		t.Errorf("net.mptcp.scheduler changed from %q to %q", before, after)
	}

	// Reload to the kernel's scheduler: selected, no new warning.
	if err := ctl.Reload(ctx, schedPolicy(t, dir, "default")); err != nil {
		t.Fatal(err)
	}
	out = logs.String()
	if !strings.Contains(out, `msg="scheduler selected" scheduler=default`) {
		t.Errorf("reload to scheduler default did not select it:\n%s", out)
	}
	if n := strings.Count(out, "level=WARN msg=\"scheduler not selected"); n != 1 {
		t.Errorf("%d missing-feature warnings after reload, want still 1", n)
	}
	if got := strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.scheduler")); got != "default" {
		t.Errorf("net.mptcp.scheduler = %q after selecting default", got)
	}
}

// A scheduler name the kernel does not know (neither built in nor one of
// gigapath's BPF ones) is a configuration error: Run fails and says which
// schedulers are registered.
func TestIntegrationSchedulerUnknownFails(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	var logs testbed.LockedBuffer
	ctl, err := controller.New(controller.Config{Policy: schedPolicy(t, t.TempDir(), "nosuchsched"), NetNS: b.Client.Name,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = ctl.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "available_schedulers") {
		t.Fatalf("Run with an unknown scheduler = %v, want an error naming net.mptcp.available_schedulers", err)
	}
}
