//go:build linux

package controller_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
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

func TestParseLoad(t *testing.T) {
	for spec, want := range map[string]burstLoad{
		"spin@idle":        {"spin", 0},
		"churn@nice:19":    {"churn", 64 << 10},
		"churn:8@idle":     {"churn", 8 << 10},
		"fault@idle":       {"fault", 8 << 10},
		"fault:65536@idle": {"fault", 64 << 20},
	} {
		if got, sched, err := parseLoad(spec); err != nil || got != want || sched == nil {
			t.Errorf("parseLoad(%q) = %+v, %q, %v; want %+v", spec, got, sched, err, want)
		}
	}
	for _, spec := range []string{"churn:2@idle", "churn:x@idle", "spin:4@idle", "churn", "churn@fifo:10", "@idle", ""} {
		if _, _, err := parseLoad(spec); err == nil {
			t.Errorf("parseLoad(%q): no error", spec)
		}
	}
}

// TestLoadHelper runs BURST_LOAD's load as startLoad does (the test
// binary in helper mode) and checks that it runs at the priority asked
// for, does its work (its "done" line: loops, page faults), stops when its
// input ends, and that a bad spec is a usage error.
func TestLoadHelper(t *testing.T) {
	bad := exec.Command(os.Args[0], "-test.run=^$")
	bad.Env = append(os.Environ(), loadHelperEnv+"=churn@fifo:10")
	if err := bad.Run(); err == nil || bad.ProcessState.ExitCode() != 2 {
		t.Errorf("a bad priority: %v, want exit status 2", err)
	}
	self := procStatFields(t, os.Getpid())
	base, _ := strconv.Atoi(self[16])
	basePolicy, _ := strconv.Atoi(self[38])
	for _, tc := range []struct {
		spec         string
		policy, nice int
		faults       bool
	}{
		{"churn:8@nice:5", basePolicy, min(base+5, 19), true},
		{"fault@nice:5", basePolicy, min(base+5, 19), true},
		{"spin@nice:19", basePolicy, 19, false},
		{"churn@idle", 5, base, true}, // SCHED_IDLE; chrt keeps the nice
	} {
		t.Run(tc.spec, func(t *testing.T) {
			if tc.policy == 5 {
				if _, err := exec.LookPath("chrt"); err != nil {
					t.Skip("chrt(1) is not installed (util-linux)")
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), loadHelperEnv+"="+tc.spec)
			cmd.Stderr = os.Stderr
			cmd.WaitDelay = 10 * time.Second
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			sc := bufio.NewScanner(out)
			if !sc.Scan() || sc.Text() != "ready" {
				t.Fatalf("%q, want ready", sc.Text())
			}
			f := procStatFields(t, cmd.Process.Pid)
			policy, _ := strconv.Atoi(f[38])
			nice, _ := strconv.Atoi(f[16])
			if policy != tc.policy || nice != tc.nice {
				t.Errorf("policy %d nice %d, want %d and %d", policy, nice, tc.policy, tc.nice)
			}
			time.Sleep(100 * time.Millisecond)
			in.Close() // its signal to stop
			if !sc.Scan() {
				t.Fatalf("no done line: %v", sc.Err())
			}
			var loops, user, sys, minflt int64
			if n, _ := fmt.Sscanf(sc.Text(), "done %d %d %d %d", &loops, &user, &sys, &minflt); n != 4 || loops == 0 {
				t.Errorf("%q: want done LOOPS USER SYS MINFLT, some loops", sc.Text())
			}
			// Each churn or fault loop writes at least two new pages;
			// spin's touch none (what the runtime faults meanwhile is
			// far less than a page a loop).
			if tc.faults && minflt < 2*loops {
				t.Errorf("%d loops, %d page faults: the load does not fault", loops, minflt)
			}
			if !tc.faults && minflt >= loops {
				t.Errorf("%d loops, %d page faults: spin faults", loops, minflt)
			}
			if err := cmd.Wait(); err != nil {
				t.Error(err)
			}
		})
	}
}
