//go:build linux

package testbed

import (
	"context"
	"os"

	"github.com/gigapath/gigapath/ebpf/cgroup"
)

// TB is the part of testing.TB the helpers use (*testing.T and
// *testing.B have it). The helpers take it rather than testing.TB so that
// this package does not import testing: the gigapath binary links the
// package for `gigapath testbed` and `gigapath demo`, and a shipped binary
// has no business carrying the test framework (make lint checks that
// cmd/gigapath does not depend on it).
type TB interface {
	Helper()
	Cleanup(func())
	Error(args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// NeedRoot skips t unless the process is root (CAP_NET_ADMIN is needed for
// namespaces, links and BPF).
func NeedRoot(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN)")
	}
}

// UpT builds a bed for a test or benchmark and closes it in t.Cleanup, even
// when the test fails. It skips the test when not root and fails it when
// the bed cannot be built.
func UpT(t TB, spec Spec) *Bed {
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
func CgroupT(t TB, prefix string) string {
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
