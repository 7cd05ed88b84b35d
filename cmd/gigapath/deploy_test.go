package main

import (
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
// ExecStartPre (`config check`) accepts the reference config.
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

	// ExecStartPre runs `config check` on the installed policy: the
	// reference config passes it.
	example, err := exec.Command(bin, "config", "example").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, example, 0o600); err != nil {
		t.Fatal(err)
	}
	pre := regexp.MustCompile(`(?m)^ExecStartPre=(.*)$`).FindStringSubmatch(text)
	if pre == nil {
		t.Fatal("the unit has no ExecStartPre")
	}
	f := strings.Fields(pre[1])
	if out, err := exec.Command(f[0], f[1:]...).CombinedOutput(); err != nil {
		t.Errorf("ExecStartPre %s: %v\n%s", pre[1], err, out)
	}
}
