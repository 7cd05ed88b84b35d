//go:build linux

package controller_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/ebpf/cgroup"
	"github.com/gigapath/gigapath/ebpf/pathpolicy"
	"github.com/gigapath/gigapath/internal/testbed"
)

// cgroup2Mounts counts the cgroup v2 mounts this process sees.
func cgroup2Mounts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "cgroup2" {
			n++
		}
	}
	return n
}

// Under `ip netns exec` (a mount namespace of its own with a fresh /sys,
// no cgroup v2 in it) a policy with per-path settings used to lose them
// with a warning. Now the daemon mounts a cgroup v2 for its own use (a
// detached mount, attached to no directory) and attaches the sockops
// program: BPF_PROG_QUERY on the policy's path_cgroup, from the host,
// finds it, and the host's mount table has no new mount; SIGTERM detaches
// it. Where it cannot mount one (CAP_SYS_ADMIN dropped), it fails at
// start, naming the keys.
func TestIntegrationNetnsExecCgroup(t *testing.T) {
	if err, _ := pathpolicy.Supported(); err != nil {
		t.Skipf("sockops program cannot load here: %v", err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv not found: .ci/install-deps installs util-linux")
	}
	b := testbed.UpT(t, testbed.Spec{})
	cg := testCgroup(t)
	root, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(cg, root+"/") // the same cgroup in the daemon's own mount
	dir := t.TempDir()
	bin := buildBinary(t)
	sock, cfg := congestionPolicy(t, dir, rel)
	sockops := sockopsOn(t, cg)
	attached := func() int { return len(sockops()) }
	mounts := cgroup2Mounts(t)

	log := &testbed.LockedBuffer{}
	d := startDaemonCmd(t, b.Client.Command(context.Background(), bin, "run", "--config", cfg, "--metrics-listen", "-", "--state-dir", dir), sock, log)
	waitFor(t, b, "the daemon ready", 10*time.Second, func() bool { return strings.Contains(log.String(), "gigapath running") })
	if !strings.Contains(log.String(), "mounted a cgroup v2 for the daemon's own use") {
		t.Errorf("no line about the private cgroup v2 mount:\n%s", log)
	}
	if n := attached(); n != 1 {
		t.Fatalf("sockops programs on %s with the daemon under ip netns exec: %d, want 1\n%s", cg, n, log)
	}
	if n := cgroup2Mounts(t); n != mounts {
		t.Errorf("the host's mount table has %d cgroup v2 mounts, had %d: the daemon's mount leaked", n, mounts)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", log)
	}
	if d.err != nil {
		t.Errorf("exit %v, want 0:\n%s", d.err, log)
	}
	if n := attached(); n != 0 {
		t.Errorf("sockops programs on %s after the stop: %d", cg, n)
	}

	// Without CAP_SYS_ADMIN no cgroup v2 can be mounted: the start fails
	// (exit 1), naming the key that needs it and why.
	cmd := b.Client.Command(context.Background(), "setpriv", "--bounding-set=-sys_admin", bin, "run", "--config", cfg, "--metrics-listen", "-", "--state-dir", dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("without CAP_SYS_ADMIN: %v, want exit 1:\n%s", err, out)
	}
	for _, want := range []string{"interfaces[1].congestion need a cgroup v2", "mounting one for the daemon's own use failed", "--netns NAME"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("without CAP_SYS_ADMIN: output lacks %q:\n%s", want, out)
		}
	}
	if n := attached(); n != 0 {
		t.Errorf("sockops programs on %s after the failed start: %d", cg, n)
	}
}
