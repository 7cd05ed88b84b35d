//go:build linux

package vmtest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// .ci/vmtest-setup refuses to prepare guests for a checkout below a
// directory virtme-ng's init replaces with an empty tmpfs (/var/tmp here):
// such a guest dies at once. It says why, exits 1 (not 3, which CI takes
// for "cannot install here" and skips), and installs nothing first.
func TestSetupRefusesCheckoutUnderTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/vmtest-setup refuses to run without it (exit 3) before it looks at the checkout")
	}
	script, err := filepath.Abs("../../.ci/vmtest-setup")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/var/tmp", 0o1777); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/var/tmp", "gp-vmtest-setup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command("bash", script, "6.12")
	cmd.Dir = dir
	// A private apt directory of its own: were the check missing, the
	// script would start installing there, not in the shared cache.
	cmd.Env = append(os.Environ(), "VMTEST_APT="+filepath.Join(dir, "apt"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), dir) || !strings.Contains(string(out), "empty tmpfs") {
		t.Errorf("the refusal does not name the checkout and why:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "apt")); err == nil {
		t.Error("it created its apt directory before refusing")
	}
}
