//go:build linux

package controller_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/testbed"
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
		"spin@idle":        {"spin", 0, 100 * time.Microsecond},
		"spin:500@nice:19": {"spin", 0, 500 * time.Microsecond},
		"churn@nice:19":    {"churn", 64 << 10, 100 * time.Microsecond},
		"churn:8@idle":     {"churn", 8 << 10, 100 * time.Microsecond},
		"fault@idle":       {"fault", 8 << 10, 100 * time.Microsecond},
		"fault:65536@idle": {"fault", 64 << 20, 100 * time.Microsecond},
	} {
		if got, sched, err := parseLoad(spec); err != nil || got != want || sched == nil {
			t.Errorf("parseLoad(%q) = %+v, %q, %v; want %+v", spec, got, sched, err, want)
		}
	}
	bad := []string{"churn:x@idle", "churn:131072@idle", "spin:0@idle", "spin:x@idle", "churn", "churn@fifo:10", "@idle", ""}
	if page := os.Getpagesize() >> 10; page > 1 {
		bad = append(bad, fmt.Sprintf("churn:%d@idle", page+1), fmt.Sprintf("fault:%d@idle", page/2))
	}
	for _, spec := range bad {
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
	page := os.Getpagesize()
	for _, tc := range []struct {
		spec         string
		policy, nice int
		pages        int // new pages a loop writes; -1: none (spin)
	}{
		{"churn:16@nice:5", basePolicy, min(base+5, 19), max(1, 16<<10/page)},
		{"fault:16@nice:5", basePolicy, min(base+5, 19), max(1, 16<<10/page)},
		{"spin@nice:5", basePolicy, min(base+5, 19), -1},
		// SCHED_IDLE (chrt keeps the nice): it may not run at all on
		// busy CPUs, so only its policy is checked.
		{"churn@idle", 5, base, 0},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			if tc.policy == 5 {
				if _, err := exec.LookPath("chrt"); err != nil {
					t.Skip("chrt(1) is not installed (util-linux)")
				}
			}
			c := testbed.StartChildT(t, loadHelperEnv+"="+tc.spec, "ready", os.Stderr)
			f := procStatFields(t, c.Pid)
			policy, _ := strconv.Atoi(f[38])
			nice, _ := strconv.Atoi(f[16])
			if policy != tc.policy || nice != tc.nice {
				t.Errorf("policy %d nice %d, want %d and %d", policy, nice, tc.policy, tc.nice)
			}
			if tc.pages == 0 {
				// At SCHED_IDLE on busy CPUs it may never read the
				// end of its input: killed, for the cleanup to reap.
				syscall.Kill(c.Pid, syscall.SIGKILL)
				return
			}
			// Until it has run 30 ms of CPU since it was ready (some
			// 100 loops), however busy the machine is; utime and stime
			// are [11] and [12], in 10 ms ticks.
			ticks := func() int {
				f := procStatFields(t, c.Pid)
				u, _ := strconv.Atoi(f[11])
				s, _ := strconv.Atoi(f[12])
				return u + s
			}
			t0 := ticks()
			for deadline := time.Now().Add(20 * time.Second); ticks() < t0+3; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the load ran %d ticks in 20 s at nice %d", ticks()-t0, tc.nice)
				}
			}
			// It answers once its input closes, not before.
			if l, err := c.LineWithin(100 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%q (%v) before its input closed, want nothing", l, err)
			}
			c.In.Close() // its signal to stop
			done, err := c.LineWithin(helperAnswer)
			if err != nil {
				t.Fatalf("no done line: %v", err)
			}
			var loops, user, sys, minflt int64
			if n, _ := fmt.Sscanf(done, "done %d %d %d %d", &loops, &user, &sys, &minflt); n != 4 || loops < 20 {
				t.Errorf("%q: want done LOOPS USER SYS MINFLT, 20 loops or more", done)
			}
			// A churn or fault loop faults each page it writes; spin's
			// fault none (the runtime's own faults meanwhile, a few
			// dozen, are fewer than its loops).
			if tc.pages > 0 && minflt < int64(tc.pages)*loops {
				t.Errorf("%d loops, %d page faults: want %d a loop", loops, minflt, tc.pages)
			}
			if tc.pages < 0 && minflt >= loops {
				t.Errorf("%d loops, %d page faults: spin faults", loops, minflt)
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}
