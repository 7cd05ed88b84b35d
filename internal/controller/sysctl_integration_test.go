//go:build linux

package controller_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/gigapath/gigapath/internal/controller"
	"github.com/gigapath/gigapath/internal/policy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// The daemon switches the namespace to the userspace path manager while it
// runs and puts the host's value back when it stops; a namespace that was
// already on userspace stays on it.
func TestIntegrationPathManagerRestored(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	get := func() string {
		return strings.TrimSpace(b.Client.MustRun("sysctl", "-n", "net.mptcp.path_manager"))
	}
	if _, err := b.Client.Run("sysctl", "-n", "net.mptcp.path_manager"); err != nil {
		t.Skipf("net.mptcp.path_manager (Linux 6.15) missing: %v", err)
	}
	run := func(during func()) {
		t.Helper()
		p, err := policy.Parse([]byte(fmt.Sprintf(basePolicy, "aggregate", "")))
		if err != nil {
			t.Fatal(err)
		}
		_, stop := runController(t, controller.Config{Policy: p, NetNS: b.Client.Name,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
		during()
		stop()
	}

	if got := get(); got != "kernel" {
		t.Fatalf("fresh namespace has path_manager %q, want kernel", got)
	}
	run(func() {
		if got := get(); got != "userspace" {
			t.Errorf("while running: path_manager %q, want userspace", got)
		}
	})
	if got := get(); got != "kernel" {
		t.Errorf("after stop: path_manager %q, want kernel (restored)", got)
	}

	// Already userspace before start: nothing to restore.
	b.Client.MustRun("sysctl", "-qw", "net.mptcp.path_manager=userspace")
	run(func() {})
	if got := get(); got != "userspace" {
		t.Errorf("started on userspace: path_manager %q after stop, want userspace", got)
	}
}

// initial_address_joins: refuse sets net.mptcp.allow_join_initial_addr_port
// to 0 in the managed namespace while the daemon runs (sysctl is the
// oracle) and puts back what it found when it stops.
func TestIntegrationInitialJoinsRestored(t *testing.T) {
	b := testbed.UpT(t, testbed.Spec{})
	get := func() string {
		return strings.TrimSpace(b.Proxy.MustRun("sysctl", "-n", "net.mptcp.allow_join_initial_addr_port"))
	}
	p, err := policy.Parse([]byte(`side: server
path_manager: userspace
initial_address_joins: refuse
routing: off
interfaces:
  - name: wifi1
    role: wifi
metrics: {listen: ""}
status_socket: ""
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "1" {
		t.Fatalf("fresh namespace: %q, want the kernel's default 1", got)
	}
	_, stop := runController(t, controller.Config{Policy: p, NetNS: b.Proxy.Name})
	if got := get(); got != "0" {
		t.Errorf("while running with refuse: %q, want 0", got)
	}
	stop()
	if got := get(); got != "1" {
		t.Errorf("after stop: %q, want 1 (restored)", got)
	}
}
