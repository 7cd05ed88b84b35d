//go:build linux

package main

import (
	"os"
	"path/filepath"
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
