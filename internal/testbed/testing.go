//go:build linux

package testbed

import (
	"context"
	"os"
	"testing"

	"github.com/gigapath/gigapath/ebpf/cgroup"
)

// NeedRoot skips t unless the process is root (CAP_NET_ADMIN is needed for
// namespaces, links and BPF).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN)")
	}
}

// UpT builds a bed for a test or benchmark and closes it in t.Cleanup, even
// when the test fails. It skips the test when not root and fails it when
// the bed cannot be built.
func UpT(t testing.TB, spec Spec) *Bed {
	t.Helper()
	NeedRoot(t)
	b, err := Up(context.Background(), spec)
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return b
}

// CgroupT creates a cgroup v2 child of the hierarchy's root named prefix
// plus a random suffix, for a test's processes, and removes it in
// t.Cleanup (a failure to remove fails the test).
func CgroupT(t testing.TB, prefix string) string {
	t.Helper()
	cg, err := cgroup.Create(UniqueName(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgroup.Remove(cg); err != nil {
			t.Error(err)
		}
	})
	return cg
}
