//go:build linux

package controller_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSchedPrefix(t *testing.T) {
	for spec, want := range map[string][]string{
		"nice:19":  {"nice", "-n", "19"},
		"nice:-20": {"nice", "-n", "-20"},
		"idle":     {"chrt", "--idle", "0"},
		"nice:20":  nil,
		"nice:x":   nil,
		"fifo:10":  nil,
		"":         nil,
	} {
		if got := schedPrefix(spec); !slices.Equal(got, want) {
			t.Errorf("schedPrefix(%q) = %q, want %q", spec, got, want)
		}
	}
}

func TestBackgroundSize(t *testing.T) {
	for kind, want := range map[string]int{"spin": 0, "churn": 64 << 10, "churn:8": 8 << 10, "churn:65536": 64 << 20, "churn:2": -1, "churn:x": -1, "spin:4": -1, "": -1} {
		n, ok := backgroundSize(kind)
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("backgroundSize(%q) = %d, %v; want %d", kind, n, ok, want)
		}
	}
}

// TestBackgroundHelper runs BURST_BACKGROUND's load as the benchmark does
// and checks it runs at the priority asked for, and that a bad spec is a
// usage error.
func TestBackgroundHelper(t *testing.T) {
	if _, err := exec.LookPath("chrt"); err != nil {
		t.Skip("chrt(1) is not installed (util-linux)")
	}
	bad := exec.Command(os.Args[0], "-test.run=^$")
	bad.Env = append(os.Environ(), backgroundHelperEnv+"=churn fifo:10")
	if err := bad.Run(); err == nil || bad.ProcessState.ExitCode() != 2 {
		t.Errorf("a bad priority: %v, want exit status 2", err)
	}
	for _, tc := range []struct {
		spec   string
		policy int // /proc/PID/stat's 41st field
		nice   int
	}{{"churn idle", 5, 0}, {"spin nice:19", 0, 19}, {"churn:8 nice:5", 0, 5}} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), backgroundHelperEnv+"="+tc.spec)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "ready" {
			in.Close()
			cmd.Wait()
			t.Fatalf("%s: %q, want ready", tc.spec, sc.Text())
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err == nil {
			s := string(raw)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			nice, _ := strconv.Atoi(f[16])   // field 19
			policy, _ := strconv.Atoi(f[38]) // field 41
			if policy != tc.policy || nice != tc.nice {
				t.Errorf("%s: policy %d nice %d, want %d and %d", tc.spec, policy, nice, tc.policy, tc.nice)
			}
		}
		in.Close() // its signal to stop
		if err := errors.Join(err, cmd.Wait()); err != nil {
			t.Errorf("%s: %v", tc.spec, err)
		}
	}
}
