package controller

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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
		if got, err := StartedAs(); err != nil || got != want {
			t.Errorf("argv[0] %q: %q, %v; want %q", arg, got, err, want)
		}
	}
	os.Args[0] = "sh"
	if got, err := StartedAs(); err != nil || !filepath.IsAbs(got) || filepath.Base(got) != "sh" {
		t.Errorf("argv[0] sh: %q, %v; want sh's absolute path from $PATH", got, err)
	}
}
