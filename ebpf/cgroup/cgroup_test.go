package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup`:     "/sys/fs/cgroup",
		`/mnt/my\040cgroups`: "/mnt/my cgroups",
		`/a\134b`:            `/a\b`,
		`/trailing\04`:       `/trailing\04`,
		`/not\999octal`:      `/not\999octal`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIntegrationCreateMoveRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create cgroups")
	}
	root, err := Mount()
	if err != nil {
		t.Skipf("no cgroup v2 hierarchy: %v", err)
	}
	// t.TempDir() is <tmp>/<TestName><random>/001: the random parent
	// makes the name unique across concurrent runs ("001" alone is not).
	name := "gigapath-test-" + filepath.Base(filepath.Dir(t.TempDir()))
	p, err := Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(p) })
	if filepath.Dir(p) != root {
		t.Fatalf("Create(%q) = %s, want it directly under %s", name, p, root)
	}
	if r, err := Resolve(name); err != nil || r != p {
		t.Fatalf("Resolve(%q) = %q, %v; want %q", name, r, err, p)
	}
	if _, err := Resolve("/tmp"); err == nil {
		t.Fatal("Resolve(/tmp) succeeded; /tmp is no cgroup")
	}
	id, err := ID(p)
	if err != nil || id == 0 {
		t.Fatalf("ID = %d, %v", id, err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if err := AddProcess(p, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := Processes(p)
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("Processes = %v, %v; want it to hold %d", pids, err, cmd.Process.Pid)
	}
	// The kernel's own view: /proc/PID/cgroup names the cgroup (0::/name).
	b, err := os.ReadFile(filepath.Join("/proc", itoa(cmd.Process.Pid), "cgroup"))
	if err != nil || !containsLine(string(b), "0::/"+name) {
		t.Fatalf("/proc/%d/cgroup = %q, want a line 0::/%s", cmd.Process.Pid, b, name)
	}
	if err := Remove(p); err == nil {
		t.Fatal("Remove of a cgroup with a live process succeeded")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s still there after Remove: %v", p, err)
	}
}
