package policy

import (
	"slices"
	"testing"
)

func TestPathCgroupParsedAndNeedsRestart(t *testing.T) {
	const base = "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: lte\n    congestion: cubic\n"
	a, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(base + "path_cgroup: system.slice/app.service\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.PathCgroup != "" || b.PathCgroup != "system.slice/app.service" {
		t.Fatalf("path_cgroup parsed as %q and %q", a.PathCgroup, b.PathCgroup)
	}
	if d := a.Diff(b); !slices.Contains(d.NeedsRestart, "path_cgroup") {
		t.Fatalf("changing path_cgroup: NeedsRestart = %v, want it listed", d.NeedsRestart)
	}
}
