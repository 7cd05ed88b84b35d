package policy

import (
	"slices"
	"strings"
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

func TestMptcpifyParsed(t *testing.T) {
	const base = "path_manager: userspace\ninterfaces:\n  - name: lte0\n    role: lte\n"
	p, err := Parse([]byte(base + "mptcpify: [app.service, /sys/fs/cgroup/x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{MptcpifyCgroup(p.Mptcpify[0]), MptcpifyCgroup(p.Mptcpify[1])}; !slices.Equal(got, []string{"system.slice/app.service", "/sys/fs/cgroup/x"}) {
		t.Fatalf("mptcpify cgroups = %v", got)
	}
	if _, err := Parse([]byte(base + "mptcpify: [\"a/../b\"]\n")); err == nil || !strings.Contains(err.Error(), "mptcpify") {
		t.Fatalf("mptcpify with '..': err = %v, want it refused naming the key", err)
	}
	q, _ := Parse([]byte(base))
	if d := q.Diff(p); !slices.Contains(d.NeedsRestart, "mptcpify") {
		t.Fatalf("changing mptcpify: NeedsRestart = %v", d.NeedsRestart)
	}
}
