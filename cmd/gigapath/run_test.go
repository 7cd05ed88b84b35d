//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Bad policies stop `gigapath run` before it touches anything: exit 2 and
// a message naming the problem.
func TestRunBadConfigExit2(t *testing.T) {
	head := "path_manager: userspace\nsteering: aggregate\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", head + "interfaces:\n  - name: wifi0\n    role: wifi\nbogus: 1\n", "bogus"},
		{"bad role", head + "interfaces:\n  - name: wifi0\n    role: satellite\n", "satellite"},
		{"missing interface name", head + "interfaces:\n  - role: wifi\n", "interfaces[0]"},
		{"bad address", "side: server\n" + head + "interfaces:\n  - name: wifi0\n    role: wifi\nannounce:\n  - address: 10.0.0.300\n", "10.0.0.300"},
	} {
		f := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := gp(t, "run", "--config", f)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 naming %q", tc.name, code, stderr, tc.want)
		}
	}
	if code, _, stderr := gp(t, "run"); code != 2 || !strings.Contains(stderr, "--config") {
		t.Errorf("no --config: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := gp(t, "run", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != 2 || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}

// takeHandoff reads only gigapath's own memfd, names the variable and the
// descriptor otherwise, and always removes the variable.
func TestTakeHandoff(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "not-a-memfd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for v, want := range map[string]string{
		"x":                       `GIGAPATH_HANDOFF_FD="x": want a descriptor number of 3 or more`,
		"1":                       `want a descriptor number of 3 or more`,
		strconv.Itoa(int(f.Fd())): "not gigapath's handoff memfd",
		"987654":                  "not gigapath's handoff memfd",
	} {
		t.Setenv(handoffEnv, v)
		if _, err := takeHandoff(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%s: %v, want an error with %q", handoffEnv, v, err, want)
		}
		if _, ok := os.LookupEnv(handoffEnv); ok {
			t.Errorf("%s left set", handoffEnv)
		}
	}

	fd, err := unix.MemfdCreate("gigapath-handoff", 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte(`{"version":1}`))
	unix.Seek(fd, 0, 0)
	t.Setenv(handoffEnv, strconv.Itoa(fd))
	b, err := takeHandoff()
	if err != nil || string(b) != `{"version":1}` {
		t.Errorf("takeHandoff = %q, %v", b, err)
	}
	if unix.Close(fd) == nil {
		t.Error("the handoff descriptor was left open")
	}
}

// An upgrade execs the path the process was started as, not what it
// resolved to then: a symlink retargeted since is followed afresh.
func TestStartedAs(t *testing.T) {
	saved := os.Args[0]
	defer func() { os.Args[0] = saved }()
	wd, _ := os.Getwd()
	for arg, want := range map[string]string{
		"/usr/local/bin/gigapath": "/usr/local/bin/gigapath",
		"bin/gigapath":            filepath.Join(wd, "bin/gigapath"),
	} {
		os.Args[0] = arg
		if got, err := startedAs(); err != nil || got != want {
			t.Errorf("argv[0] %q: %q, %v; want %q", arg, got, err, want)
		}
	}
	os.Args[0] = "sh"
	if got, err := startedAs(); err != nil || !filepath.IsAbs(got) || filepath.Base(got) != "sh" {
		t.Errorf("argv[0] sh: %q, %v; want sh's absolute path from $PATH", got, err)
	}
}
