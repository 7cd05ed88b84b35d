package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The shipped systemd unit, pointed at the built binary, passes systemd's
// own checks: `systemd-analyze verify` finds nothing to say, and the
// offline security analysis rates its exposure at most 3.0 ("OK"). Its
// ExecStart, given a bad policy, exits with the status
// RestartPreventExitStatus names, so systemd does not restart it in a
// loop (.ci/vmtest-systemd checks that under a running systemd).
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: .ci/install-deps installs the systemd package")
	}
	bin := pmBinary(t)
	unit, err := os.ReadFile("../../docs/deploy/gigapath.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gigapath.yaml")
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/gigapath", bin)
	text = strings.ReplaceAll(text, "/etc/gigapath/gigapath.yaml", cfg)
	path := filepath.Join(dir, "gigapath.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for gigapath.service: ([0-9.]+) (\S+)`).FindStringSubmatch(string(out))
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security --offline: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(m[1], 64); score > 3.0 {
		t.Errorf("exposure %s %s, want at most 3.0 (OK):\n%s", m[1], m[2], out)
	}
	t.Logf("systemd-analyze security: exposure %s %s", m[1], m[2])

	// A bad policy: ExecStart exits with the status that prevents a
	// restart.
	if err := os.WriteFile(cfg, []byte("steering: sideways\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prevent := regexp.MustCompile(`(?m)^RestartPreventExitStatus=(\d+)$`).FindStringSubmatch(text)
	start := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(text)
	if prevent == nil || start == nil {
		t.Fatal("the unit lacks ExecStart or RestartPreventExitStatus")
	}
	if regexp.MustCompile(`(?m)^ExecStartPre=`).MatchString(text) {
		t.Error("the unit has an ExecStartPre: its failure is restarted in a loop, RestartPreventExitStatus applies to the main process only")
	}
	f := strings.Fields(start[1])
	out, err = exec.Command(f[0], f[1:]...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || strconv.Itoa(ee.ExitCode()) != prevent[1] {
		t.Errorf("ExecStart with a bad policy: %v, want exit %s (RestartPreventExitStatus)\n%s", err, prevent[1], out)
	}
	if !strings.Contains(string(out), "sideways") {
		t.Errorf("ExecStart with a bad policy does not name the bad value:\n%s", out)
	}
}
