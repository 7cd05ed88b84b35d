//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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

// The daemon sets the Go runtime by its side unless the environment does,
// and says so: a client (also a policy without side:) on one P with the
// GOGC 400, a server with GOGC 50 and every P (the collector's setting as
// the runtime reports it). The namespace does not
// exist, so the daemon stops (exit 1) right after the line.
func TestRunGoRuntimeBySide(t *testing.T) {
	absent := fmt.Sprintf("gp-absent-%d", os.Getpid())
	const ifs = "path_manager: userspace\nsteering: aggregate\ninterfaces:\n  - name: wifi0\n    role: wifi\n"
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       string
	}{
		{"no side", ifs, nil, "gomaxprocs=1 gogc=400"},
		{"client", "side: client\n" + ifs, nil, "gomaxprocs=1 gogc=400"},
		{"server", "side: server\n" + ifs, nil, fmt.Sprintf("gomaxprocs=%d gogc=50", runtime.NumCPU())},
		{"client, environment", "side: client\n" + ifs, []string{"GOMAXPROCS=2", "GOGC=80"}, "gomaxprocs=2 gogc=80"},
		{"server, collector off", "side: server\n" + ifs, []string{"GOGC=off"}, fmt.Sprintf("gomaxprocs=%d gogc=off", runtime.NumCPU())},
		// The runtime takes a value it cannot read for 100: said so.
		{"client, environment unreadable", "side: client\n" + ifs, []string{"GOGC=OFF"}, `gomaxprocs=1 gogc=100`},
	} {
		f := filepath.Join(t.TempDir(), "p.yaml")
		if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pmBinary(t), "--netns", absent, "run", "--config", f, "--state-dir", "", "--metrics-listen", "-")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, tc.env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit 1 (no namespace %s): %s", tc.name, err, absent, out)
		}
		if !strings.Contains(string(out), `msg="Go runtime" `+tc.want) {
			t.Errorf("%s: no %q in the log:\n%s", tc.name, tc.want, out)
		}
		warned := strings.Contains(string(out), `msg="GOGC is neither a whole number nor off: the Go runtime uses 100" GOGC=OFF`)
		if want := tc.name == "client, environment unreadable"; warned != want {
			t.Errorf("%s: warned of GOGC %v, want %v:\n%s", tc.name, warned, want, out)
		}
	}
}
