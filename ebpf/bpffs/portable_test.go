package bpffs

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The public libraries (ebpf/..., pathmgr/...) build and vet on other
// operating systems: Linux-only calls live in _linux.go files with
// _others.go stubs that say "not supported".
func TestPublicPackagesBuildOnDarwin(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the public packages; skipped with -short")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("no go command next to this test's GOROOT (%s): %v", runtime.GOROOT(), err)
	}
	// vet type-checks the packages and their tests: a Linux-only
	// identifier fails it as it fails go build.
	for _, args := range [][]string{{"vet", "./ebpf/...", "./pathmgr/..."}} {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=darwin go %v: %v\n%s", args, err, out)
		}
	}
}
